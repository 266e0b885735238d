use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let config = shared::config::load(credit_expiry::Config::from_env).await?;
    let pool = shared::db::postgres::connect_and_migrate(&config.postgres).await?;
    let limits = config.limits;
    // The event (EventBridge's scheduled event, or `{}` by hand) carries nothing we use.
    lambda_runtime::run(service_fn(|_event: LambdaEvent<serde_json::Value>| {
        let pool = pool.clone();
        async move {
            credit_expiry::run_job(&pool, &limits)
                .await
                .map_err(shared::BoxError::from)
        }
    }))
    .await
}
