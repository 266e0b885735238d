//! The credits function (SPEC §6): balances, allocation, deduction, cost
//! calculation, transactions and streaming-session reservations, all on
//! the shared ledger in PostgreSQL.

use axum::routing::{get, post, put};
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
        .route("/api/credits/balance", get(routes::balance))
        .route("/api/credits/total-balance", get(routes::total_balance))
        .route("/api/credits/balance/{user_id}", get(routes::balance_of))
        .route("/api/credits/allocate", post(routes::allocate))
        .route("/api/credits/deduct", post(routes::deduct))
        .route("/api/credits/adjust", post(routes::adjust))
        .route("/api/credits/calculate", post(routes::calculate))
        .route("/api/credits/transactions", get(routes::transactions))
        .route("/api/credits/pricing", get(routes::list_pricing))
        .route(
            "/api/credits/pricing/{chatflow_id}",
            put(routes::put_pricing),
        )
        .route(
            "/api/streaming-sessions/initialize",
            post(routes::initialize),
        )
        .route("/api/streaming-sessions/finalize", post(routes::finalize))
        .route("/api/streaming-sessions/abort", post(routes::abort))
        .route("/api/streaming-sessions/active", get(routes::active))
        .with_state(state);
    finish(api.merge(health.router()))
}
