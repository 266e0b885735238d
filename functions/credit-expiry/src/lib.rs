//! The credit-expiry job (README §9): runs on an EventBridge schedule and by
//! hand (`cargo lambda invoke credit-expiry`). The money part is
//! [`shared::ledger::sweep::run_expiry`]. When `FLOWISE_API_URL` and
//! `MONGODB_URI` are set, each run also syncs the chatflow catalogue from
//! Flowise (README §8: "on a schedule in the same job binary"); a Flowise
//! outage is reported in the result and never fails the expiry.

use serde_json::{json, Value};
use shared::chat::chatflows::sync_chatflows;
use shared::config::{ConfigError, Env, FlowiseConfig, Limits, MongoConfig, PostgresConfig};
use shared::error::ApiError;
use shared::flowise::FlowiseClient;
use shared::ledger::sweep::run_expiry;

/// What the job reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ledger's database.
    pub postgres: PostgresConfig,
    /// Reservation TTL.
    pub limits: Limits,
    /// The chat database and Flowise, when the job also syncs chatflows.
    pub catalogue: Option<(MongoConfig, FlowiseConfig)>,
}

impl Config {
    /// Parses every variable the job needs.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let catalogue = match (env.optional("FLOWISE_API_URL"), env.optional("MONGODB_URI")) {
            (Some(_), Some(_)) => {
                Some((MongoConfig::from_env(env)?, FlowiseConfig::from_env(env)?))
            }
            _ => None,
        };
        Ok(Config {
            postgres: PostgresConfig::from_env(env)?,
            limits: Limits::from_env(env)?,
            catalogue,
        })
    }
}

/// Allocations (users) or sessions handled per query.
pub const BATCH: i64 = 500;

/// Clients built once per cold start.
#[derive(Clone)]
pub struct Job {
    pool: sqlx::PgPool,
    limits: Limits,
    catalogue: Option<(mongodb::Database, FlowiseClient)>,
}

impl Job {
    /// Builds the clients.
    pub async fn connect(config: &Config) -> anyhow::Result<Job> {
        let pool = shared::db::postgres::connect_and_migrate(&config.postgres).await?;
        let catalogue = match &config.catalogue {
            Some((mongo, flowise)) => {
                let stores = shared::db::mongo::connect(mongo).await?;
                Some((stores.chat, FlowiseClient::new(flowise)?))
            }
            None => None,
        };
        Ok(Job {
            pool,
            limits: config.limits,
            catalogue,
        })
    }

    /// Builds a job from ready clients (tests).
    pub fn new(
        pool: sqlx::PgPool,
        limits: Limits,
        catalogue: Option<(mongodb::Database, FlowiseClient)>,
    ) -> Job {
        Job {
            pool,
            limits,
            catalogue,
        }
    }

    /// One run: `{expiredAllocations, expiredCredits, settledReservations}`,
    /// plus `chatflowSync` when the job syncs the catalogue.
    pub async fn run(&self) -> Result<Value, ApiError> {
        let report = run_expiry(&self.pool, self.limits.reservation_ttl, BATCH).await?;
        let mut out = serde_json::to_value(report).map_err(|e| ApiError::Internal(e.into()))?;
        if let Some((db, flowise)) = &self.catalogue {
            out["chatflowSync"] = match sync_chatflows(db, flowise).await {
                Ok(sync) => json!(sync),
                Err(err) => {
                    tracing::warn!(error = %err, "chatflow sync failed; expiry ran");
                    json!({ "error": err.public_message() })
                }
            };
        }
        Ok(out)
    }
}
