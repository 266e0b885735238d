#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let config = shared::config::load(usage::Config::from_env).await?;
    let state = usage::AppState::connect(&config).await?;
    lambda_http::run(usage::router(state)).await
}
