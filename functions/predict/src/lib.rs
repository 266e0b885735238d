//! The predict function (SPEC §8): buffered chat predictions, chat
//! sessions and history, files, and the chatflow catalogue with its access
//! control. Its configuration and state are shared with `predict-stream`.

use axum::extract::FromRef;
use axum::routing::{get, post, put};
use axum::Router;
use shared::config::{
    ConfigError, Env, FlowiseConfig, JwtConfig, Limits, MongoConfig, PostgresConfig,
};
use shared::db::mongo::{self, MongoStores};
use shared::http::{finish, not_implemented, HealthChecks};
use shared::token::JwtKeys;

/// What the predict functions read from their environment.
#[derive(Debug, Clone)]
pub struct Config {
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

impl Config {
    /// Parses every variable the function needs.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
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
pub struct AppState {
    /// Verifies access tokens.
    pub jwt: JwtKeys,
    /// MongoDB (chat).
    pub mongo: MongoStores,
    /// PostgreSQL (ledger).
    pub pg: sqlx::PgPool,
    /// Upstream settings.
    pub flowise: FlowiseConfig,
    /// Limits.
    pub limits: Limits,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

impl AppState {
    /// Builds both store clients, migrating and ensuring indexes.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let stores = mongo::connect(&config.mongo).await?;
        let (pg, ()) = tokio::join!(
            shared::db::postgres::connect_and_migrate(&config.postgres),
            mongo::ensure_indexes_logged(&stores, false, true),
        );
        Ok(AppState {
            jwt: JwtKeys::new(&config.jwt),
            mongo: stores,
            pg: pg?,
            flowise: config.flowise.clone(),
            limits: config.limits,
        })
    }

    /// The stores `/health` probes.
    pub fn health_checks(&self) -> HealthChecks {
        HealthChecks {
            postgres: Some(self.pg.clone()),
            mongodb: Some(self.mongo.client.clone()),
        }
    }
}

/// The function's routes.
pub fn router(state: AppState) -> Router {
    let health = state.health_checks();
    let api = Router::new()
        .route("/api/v1/chatflows", get(not_implemented))
        .route("/api/v1/chatflows/{id}", get(not_implemented))
        .route("/api/v1/chat/predict", post(not_implemented))
        .route("/api/v1/chat/sessions", get(not_implemented))
        .route("/api/v1/chat/sessions/{id}/messages", get(not_implemented))
        .route(
            "/api/v1/chat/sessions/{id}",
            axum::routing::delete(not_implemented),
        )
        .route("/api/v1/chat/files", post(not_implemented))
        .route(
            "/api/v1/chat/files/{id}",
            get(not_implemented).delete(not_implemented),
        )
        .route("/api/v1/admin/chatflows/sync", post(not_implemented))
        .route("/api/v1/admin/chatflows", get(not_implemented))
        .route("/api/v1/admin/chatflows/{id}", put(not_implemented))
        .route(
            "/api/v1/admin/chatflows/{id}/users",
            post(not_implemented).delete(not_implemented),
        )
        .with_state(state);
    finish(api.merge(health.router()))
}
