#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let config = shared::config::load(console::Config::from_env).await?;
    lambda_http::run(console::router(console::Console::new(config))).await
}
