#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let (config, cors) = shared::config::load(|env| {
        Ok((
            predict_stream::Config::from_env(env)?,
            predict_stream::cors::Cors::from_env(env)?,
        ))
    })
    .await?;
    let state = predict_stream::AppState::connect(&config).await?;
    predict_stream::runtime::run(predict_stream::router(state, cors)).await
}
