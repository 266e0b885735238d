#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let config = shared::config::load(auth::Config::from_env).await?;
    let state = auth::AppState::connect(&config).await?;
    lambda_http::run(auth::router(state)).await
}
