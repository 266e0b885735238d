//! The credits function (README §6): balances, allocation, deduction, cost
//! calculation, transactions and streaming-session reservations, and
//! teams with their wallets, all on the shared ledger in PostgreSQL.

use axum::Router;
use shared::http::finish;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod allowances;
pub mod keys;
pub mod routes;
pub mod teams;
pub mod warnings;

/// What the function reads from its environment: the JWT secrets and
/// `DATABASE_URL`.
pub use shared::state::PgApiConfig as Config;
/// The token keys and the pool, built once per cold start.
pub use shared::state::PgApiState as AppState;

/// The function's routes, each with its description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(routes::balance))
        .routes(routes!(routes::total_balance))
        .routes(routes!(routes::balance_of))
        .routes(routes!(routes::allocate))
        .routes(routes!(routes::deduct))
        .routes(routes!(routes::adjust))
        .routes(routes!(routes::calculate))
        .routes(routes!(routes::transactions))
        .routes(routes!(routes::statement))
        .routes(routes!(routes::list_pricing))
        .routes(routes!(routes::put_pricing))
        .routes(routes!(routes::initialize))
        .routes(routes!(routes::finalize))
        .routes(routes!(routes::abort))
        .routes(routes!(routes::active))
        .routes(routes!(keys::list_keys))
        .routes(routes!(keys::revoke_key))
        .routes(routes!(keys::admin_list_keys))
        .routes(routes!(keys::admin_revoke_key))
        .routes(routes!(keys::get_limits, keys::put_limits))
        .routes(routes!(teams::list_teams))
        .routes(routes!(teams::create_team))
        .routes(routes!(teams::change_team, teams::delete_team))
        .routes(routes!(teams::get_team))
        .routes(routes!(teams::add_members))
        .routes(routes!(teams::remove_member))
        .routes(routes!(teams::remove_pending))
        .routes(routes!(teams::wallet))
        .routes(routes!(teams::transfer))
        .routes(routes!(teams::reclaim))
        .routes(routes!(
            allowances::get_role_allowance,
            allowances::put_role_allowance,
            allowances::delete_role_allowance
        ))
        .routes(routes!(
            allowances::get_team_allowance,
            allowances::put_team_allowance,
            allowances::delete_team_allowance
        ))
        .routes(routes!(warnings::get_own, warnings::put_own))
        .routes(routes!(
            warnings::get_team_warnings,
            warnings::put_team_warnings
        ))
        .routes(routes!(warnings::create_webhook, warnings::list_webhooks))
        .routes(routes!(warnings::delete_webhook))
        .routes(routes!(warnings::list_deliveries))
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
