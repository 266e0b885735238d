#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let config = shared::config::load(credits::Config::from_env).await?;
    let state = credits::AppState::connect(&config).await?;
    lambda_http::run(credits::router(state)).await
}
