//! The credits function (SPEC §6): balances, allocation, deduction, cost
//! calculation, transactions and streaming-session reservations, all on
//! the shared ledger in PostgreSQL.

use axum::extract::FromRef;
use axum::routing::{get, post, put};
use axum::Router;
use shared::config::{ConfigError, Env, JwtConfig, Limits, PostgresConfig};
use shared::http::{finish, not_implemented, HealthChecks};
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
        .route("/api/credits/balance", get(not_implemented))
        .route("/api/credits/total-balance", get(not_implemented))
        .route("/api/credits/balance/{user_id}", get(not_implemented))
        .route("/api/credits/allocate", post(not_implemented))
        .route("/api/credits/deduct", post(not_implemented))
        .route("/api/credits/adjust", post(not_implemented))
        .route("/api/credits/calculate", post(not_implemented))
        .route("/api/credits/transactions", get(not_implemented))
        .route("/api/credits/pricing", get(not_implemented))
        .route("/api/credits/pricing/{chatflow_id}", put(not_implemented))
        .route("/api/streaming-sessions/initialize", post(not_implemented))
        .route("/api/streaming-sessions/finalize", post(not_implemented))
        .route("/api/streaming-sessions/abort", post(not_implemented))
        .route("/api/streaming-sessions/active", get(not_implemented))
        .with_state(state);
    finish(api.merge(health.router()))
}
