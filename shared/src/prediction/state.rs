//! The configuration and clients of the functions that predict (`predict`
//! and `predict-stream`), built once per cold start.

use axum::extract::FromRef;

use crate::config::{
    ConfigError, Env, FlowiseConfig, JwtConfig, Limits, MongoConfig, PostgresConfig,
};
use crate::db::mongo::{self, IndexGuard, MongoStores};
use crate::flowise::FlowiseClient;
use crate::http::{require_indexes, HealthChecks};
use crate::token::JwtKeys;

/// What the predict functions read from their environment.
#[derive(Debug, Clone)]
pub struct PredictConfig {
    /// Token verification.
    pub jwt: JwtConfig,
    /// Chat database.
    pub mongo: MongoConfig,
    /// The ledger's database.
    pub postgres: PostgresConfig,
    /// The upstream.
    pub flowise: FlowiseConfig,
    /// Upload size and reservation TTL.
    pub limits: Limits,
}

impl PredictConfig {
    /// Parses every variable the functions need.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(PredictConfig {
            jwt: JwtConfig::from_env(env)?,
            mongo: MongoConfig::from_env(env)?,
            postgres: PostgresConfig::from_env(env)?,
            flowise: FlowiseConfig::from_env(env)?,
            limits: Limits::from_env(env)?,
        })
    }
}

/// Clients built once per cold start and lent to every request.
#[derive(Clone)]
pub struct PredictState {
    /// Verifies access tokens.
    pub jwt: JwtKeys,
    /// MongoDB (chat).
    pub mongo: MongoStores,
    /// The `chat` indexes (unique chatflow and session ids), retried until made.
    pub indexes: IndexGuard,
    /// PostgreSQL (ledger).
    pub pg: sqlx::PgPool,
    /// The upstream.
    pub flowise: FlowiseClient,
    /// Limits.
    pub limits: Limits,
}

impl FromRef<PredictState> for JwtKeys {
    fn from_ref(state: &PredictState) -> Self {
        state.jwt.clone()
    }
}

impl FromRef<PredictState> for sqlx::PgPool {
    fn from_ref(state: &PredictState) -> Self {
        state.pg.clone()
    }
}

impl PredictState {
    /// Builds the clients without waiting for the servers (they connect on
    /// first use; migrations run at cold start only with `MIGRATE_ON_START`);
    /// the indexes are checked on first use (see [`IndexGuard`]).
    pub async fn connect(config: &PredictConfig) -> anyhow::Result<Self> {
        let stores = mongo::connect(&config.mongo).await?;
        Ok(PredictState {
            jwt: JwtKeys::new(&config.jwt),
            indexes: IndexGuard::new(stores.clone(), false, true),
            mongo: stores,
            pg: crate::db::postgres::connect_and_migrate(&config.postgres).await?,
            flowise: FlowiseClient::new(&config.flowise)?,
            limits: config.limits,
        })
    }

    /// The stores `/health` probes.
    pub fn health_checks(&self) -> HealthChecks {
        HealthChecks {
            postgres: Some(self.pg.clone()),
            mongodb: Some(self.mongo.client.clone()),
            indexes: Some(self.indexes.clone()),
        }
    }

    /// Wraps a router of this state so requests wait for the indexes.
    pub fn guarded(&self, router: axum::Router) -> axum::Router {
        require_indexes(router, self.indexes.clone())
    }

    /// The largest request body: a file at `MAX_UPLOAD_BYTES`, base64-encoded
    /// in JSON, with room for the rest of the body.
    pub fn body_limit(&self) -> usize {
        self.limits.max_upload_bytes / 3 * 4 + 64 * 1024
    }
}
