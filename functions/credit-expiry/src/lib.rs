//! The credit-expiry job (SPEC §9): runs on an EventBridge schedule and by
//! hand (`cargo lambda invoke credit-expiry`). The work is
//! [`shared::ledger::expiry::run_expiry`]; the event carries nothing it uses.

use shared::config::{ConfigError, Env, Limits, PostgresConfig};
use shared::error::ApiError;
use shared::ledger::expiry::{run_expiry, ExpiryReport};

/// What the job reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ledger's database.
    pub postgres: PostgresConfig,
    /// Reservation TTL.
    pub limits: Limits,
}

impl Config {
    /// Parses every variable the job needs.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            postgres: PostgresConfig::from_env(env)?,
            limits: Limits::from_env(env)?,
        })
    }
}

/// Allocations (users) or sessions handled per query.
pub const BATCH: i64 = 500;

/// One run of the job: expire due allocations, settle stale reservations.
pub async fn run_job(pool: &sqlx::PgPool, limits: &Limits) -> Result<ExpiryReport, ApiError> {
    run_expiry(pool, limits.reservation_ttl, BATCH).await
}
