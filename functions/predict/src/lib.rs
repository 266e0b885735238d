//! The predict function (README §8): buffered chat predictions, chat
//! sessions and history, files, and the chatflow catalogue with its access
//! control. The prediction steps, the configuration and the state live in
//! `shared::prediction`, shared with `predict-stream`.

use axum::extract::DefaultBodyLimit;
use axum::Router;
use shared::http::finish;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod routes;

/// What the predict functions read from their environment.
pub use shared::prediction::PredictConfig as Config;
/// Clients built once per cold start and lent to every request.
pub use shared::prediction::PredictState as AppState;

/// The function's routes, each with its description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(routes::list_chatflows))
        .routes(routes!(routes::get_chatflow))
        .routes(routes!(routes::predict))
        .routes(routes!(routes::stop))
        .routes(routes!(routes::list_sessions))
        .routes(routes!(routes::list_messages))
        .routes(routes!(routes::delete_session))
        .routes(routes!(routes::upload_file))
        .routes(routes!(routes::get_file, routes::delete_file))
        .routes(routes!(routes::sync))
        .routes(routes!(routes::admin_list))
        .routes(routes!(routes::admin_update))
        .routes(routes!(routes::grant_users, routes::revoke_users))
}

/// The function's description.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The function's API routes on `state` (waiting for the indexes), without
/// what every router adds.
pub fn api(state: AppState) -> Router {
    let body_limit = state.body_limit();
    let (api, _) = routes().with_state(state.clone()).split_for_parts();
    state.guarded(api.layer(DefaultBodyLimit::max(body_limit)))
}

/// The function's router: its API, `/health` and what every router adds.
pub fn router(state: AppState) -> Router {
    let health = state.health_checks();
    finish(api(state).merge(health.router()))
}
