//! The credits function (SPEC §6): balances, allocation, deduction, cost
//! calculation, transactions and streaming-session reservations, all on
//! the shared ledger in PostgreSQL.

use axum::extract::FromRef;
use axum::routing::{get, post, put};
use axum::Router;
use shared::config::{ConfigError, Env, JwtConfig, Limits, PostgresConfig};
use shared::http::{finish, HealthChecks};

pub mod routes;
use shared::token::JwtKeys;

/// What the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Token verification.
    pub jwt: JwtConfig,
    /// The ledger's database.
    pub postgres: PostgresConfig,
    /// Reservation TTL.
    pub limits: Limits,
}

impl Config {
    /// Parses every variable the function needs.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            jwt: JwtConfig::from_env(env)?,
            postgres: PostgresConfig::from_env(env)?,
            limits: Limits::from_env(env)?,
        })
    }
}

/// Clients built once per cold start and lent to every request.
#[derive(Clone)]
pub struct AppState {
    /// Verifies access tokens.
    pub jwt: JwtKeys,
    /// The ledger's pool.
    pub pg: sqlx::PgPool,
    /// Limits.
    pub limits: Limits,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

impl AppState {
    /// Builds the pool (and migrates when `MIGRATE_ON_START` is true).
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        Ok(AppState {
            jwt: JwtKeys::new(&config.jwt),
            pg: shared::db::postgres::connect_and_migrate(&config.postgres).await?,
            limits: config.limits,
        })
    }
}

/// The function's routes.
pub fn router(state: AppState) -> Router {
    let health = HealthChecks {
        postgres: Some(state.pg.clone()),
        mongodb: None,
    };
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
