//! The usage function (SPEC §7): usage records and statistics in PostgreSQL.

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use shared::config::{ConfigError, Env, JwtConfig, PostgresConfig};
use shared::http::{finish, HealthChecks};

pub mod routes;
use shared::token::JwtKeys;

/// What the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Token verification.
    pub jwt: JwtConfig,
    /// The accounting database.
    pub postgres: PostgresConfig,
}

impl Config {
    /// Parses every variable the function needs.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            jwt: JwtConfig::from_env(env)?,
            postgres: PostgresConfig::from_env(env)?,
        })
    }
}

/// Clients built once per cold start and lent to every request.
#[derive(Clone)]
pub struct AppState {
    /// Verifies access tokens.
    pub jwt: JwtKeys,
    /// The accounting pool.
    pub pg: sqlx::PgPool,
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
        .route("/api/usage/record", post(routes::record))
        .route("/api/usage/stats", get(routes::my_stats))
        .route("/api/usage/stats/{user_id}", get(routes::user_stats))
        .route("/api/usage/system-stats", get(routes::system_stats))
        .route("/api/usage/export", get(routes::export))
        .with_state(state);
    finish(api.merge(health.router()))
}
