//! The usage function (README §7): usage records and statistics in PostgreSQL.

use axum::Router;
use shared::http::finish;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod routes;

/// What the function reads from its environment: the JWT secrets and
/// `DATABASE_URL`.
pub use shared::state::PgApiConfig as Config;
/// The token keys and the pool, built once per cold start.
pub use shared::state::PgApiState as AppState;

/// The function's routes, each with its description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(routes::record))
        .routes(routes!(routes::my_stats))
        .routes(routes!(routes::user_stats))
        .routes(routes!(routes::system_stats))
        .routes(routes!(routes::export))
}

/// The function's description.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The function's API routes on `state`, without what every router adds.
pub fn api(state: AppState) -> Router {
    routes().with_state(state).split_for_parts().0
}

/// The function's router: its API, `/health` and what every router adds.
pub fn router(state: AppState) -> Router {
    let health = state.health_checks();
    finish(api(state).merge(health.router()))
}
