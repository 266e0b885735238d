//! The configuration and state of a function that serves the API from
//! PostgreSQL alone (credits, usage): token verification and the pool.

use axum::extract::FromRef;

use crate::config::{ConfigError, Env, JwtConfig, PostgresConfig};
use crate::http::HealthChecks;
use crate::token::JwtKeys;

/// What such a function reads from its environment.
#[derive(Debug, Clone)]
pub struct PgApiConfig {
    /// Token verification.
    pub jwt: JwtConfig,
    /// The accounting database.
    pub postgres: PostgresConfig,
}

impl PgApiConfig {
    /// Parses every variable the function needs.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(PgApiConfig {
            jwt: JwtConfig::from_env(env)?,
            postgres: PostgresConfig::from_env(env)?,
        })
    }
}

/// Clients built once per cold start and lent to every request.
#[derive(Clone)]
pub struct PgApiState {
    /// Verifies access tokens.
    pub jwt: JwtKeys,
    /// The accounting pool.
    pub pg: sqlx::PgPool,
}

impl FromRef<PgApiState> for JwtKeys {
    fn from_ref(state: &PgApiState) -> Self {
        state.jwt.clone()
    }
}

impl FromRef<PgApiState> for sqlx::PgPool {
    fn from_ref(state: &PgApiState) -> Self {
        state.pg.clone()
    }
}

impl PgApiState {
    /// Builds the pool (and migrates when `MIGRATE_ON_START` is true).
    pub async fn connect(config: &PgApiConfig) -> anyhow::Result<Self> {
        Ok(PgApiState {
            jwt: JwtKeys::new(&config.jwt),
            pg: crate::db::postgres::connect_and_migrate(&config.postgres).await?,
        })
    }

    /// `GET /health` probes PostgreSQL.
    pub fn health_checks(&self) -> HealthChecks {
        HealthChecks {
            postgres: Some(self.pg.clone()),
            mongodb: None,
            indexes: None,
        }
    }
}
