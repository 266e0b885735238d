use lambda_runtime::{service_fn, LambdaEvent};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let config = shared::config::load(credit_expiry::Config::from_env).await?;
    let job = credit_expiry::Job::connect(&config).await?;
    // The event (EventBridge's scheduled event, or `{}` by hand) carries nothing we use.
    lambda_runtime::run(service_fn(|_event: LambdaEvent<serde_json::Value>| {
        let job = job.clone();
        async move { job.run().await.map_err(shared::BoxError::from) }
    }))
    .await
}
