//! The usage function (SPEC §7): usage records and statistics in PostgreSQL.

use axum::routing::{get, post};
use axum::Router;
use shared::http::finish;

pub mod routes;

/// What the function reads from its environment: the JWT secrets and
/// `DATABASE_URL`.
pub use shared::state::PgApiConfig as Config;
/// The token keys and the pool, built once per cold start.
pub use shared::state::PgApiState as AppState;

/// The function's routes.
pub fn router(state: AppState) -> Router {
    let health = state.health_checks();
    let api = Router::new()
        .route("/api/usage/record", post(routes::record))
        .route("/api/usage/stats", get(routes::my_stats))
        .route("/api/usage/stats/{user_id}", get(routes::user_stats))
        .route("/api/usage/system-stats", get(routes::system_stats))
        .route("/api/usage/export", get(routes::export))
        .with_state(state);
    finish(api.merge(health.router()))
}
