//! The streaming prediction (SPEC §8), served through Lambda response
//! streaming (a function URL with invoke mode RESPONSE_STREAM). It shares
//! configuration and state with the `predict` function.

use axum::routing::post;
use axum::Router;
use shared::http::{finish, not_implemented};

pub use predict::{AppState, Config};

/// The function's routes.
pub fn router(state: AppState) -> Router {
    let health = state.health_checks();
    let api = Router::new()
        .route("/api/v1/chat/predict/stream", post(not_implemented))
        .with_state(state);
    finish(api.merge(health.router()))
}
