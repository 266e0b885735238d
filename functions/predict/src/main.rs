#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let config = shared::config::load(predict::Config::from_env).await?;
    let state = predict::AppState::connect(&config).await?;
    lambda_http::run(predict::router(state)).await
}
