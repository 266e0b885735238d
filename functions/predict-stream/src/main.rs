#[tokio::main]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let config = shared::config::load(predict_stream::Config::from_env).await?;
    let state = predict_stream::AppState::connect(&config).await?;
    lambda_http::run_with_streaming_response(predict_stream::router(state)).await
}
