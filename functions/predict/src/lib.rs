//! The predict function (SPEC §8): buffered chat predictions, chat
//! sessions and history, files, and the chatflow catalogue with its access
//! control. Its configuration, state and prediction steps are shared with
//! `predict-stream`.

use axum::extract::{DefaultBodyLimit, FromRef};
use axum::routing::{delete, get, post, put};
use axum::Router;
use shared::config::{
    ConfigError, Env, FlowiseConfig, JwtConfig, Limits, MongoConfig, PostgresConfig,
};
use shared::db::mongo::{self, IndexGuard, MongoStores};
use shared::flowise::FlowiseClient;
use shared::http::{finish, require_indexes, HealthChecks};
use shared::token::JwtKeys;

pub mod prediction;
pub mod routes;

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
    /// The `chat` indexes (unique chatflow and session ids), retried until made.
    pub indexes: IndexGuard,
    /// PostgreSQL (ledger).
    pub pg: sqlx::PgPool,
    /// The upstream.
    pub flowise: FlowiseClient,
    /// Limits.
    pub limits: Limits,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

impl AppState {
    /// Builds both store clients and the Flowise client, migrating and
    /// ensuring indexes.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let stores = mongo::connect(&config.mongo).await?;
        let indexes = IndexGuard::new(stores.clone(), false, true);
        // A failure is logged; requests then answer 503 until it succeeds.
        let (pg, _) = tokio::join!(
            shared::db::postgres::connect_and_migrate(&config.postgres),
            indexes.ensure(),
        );
        Ok(AppState {
            jwt: JwtKeys::new(&config.jwt),
            mongo: stores,
            indexes,
            pg: pg?,
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
    pub fn guarded(&self, router: Router) -> Router {
        require_indexes(router, self.indexes.clone())
    }

    /// The largest request body: a file at `MAX_UPLOAD_BYTES`, base64-encoded
    /// in JSON, with room for the rest of the body.
    pub fn body_limit(&self) -> usize {
        self.limits.max_upload_bytes / 3 * 4 + 64 * 1024
    }
}

/// The function's routes.
pub fn router(state: AppState) -> Router {
    let health = state.health_checks();
    let body_limit = state.body_limit();
    let api = Router::new()
        .route("/api/v1/chatflows", get(routes::list_chatflows))
        .route("/api/v1/chatflows/{id}", get(routes::get_chatflow))
        .route("/api/v1/chat/predict", post(routes::predict))
        .route("/api/v1/chat/sessions", get(routes::list_sessions))
        .route(
            "/api/v1/chat/sessions/{id}/messages",
            get(routes::list_messages),
        )
        .route("/api/v1/chat/sessions/{id}", delete(routes::delete_session))
        .route("/api/v1/chat/files", post(routes::upload_file))
        .route(
            "/api/v1/chat/files/{id}",
            get(routes::get_file).delete(routes::delete_file),
        )
        .route("/api/v1/admin/chatflows/sync", post(routes::sync))
        .route("/api/v1/admin/chatflows", get(routes::admin_list))
        .route("/api/v1/admin/chatflows/{id}", put(routes::admin_update))
        .route(
            "/api/v1/admin/chatflows/{id}/users",
            post(routes::grant_users).delete(routes::revoke_users),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state.clone());
    finish(state.guarded(api).merge(health.router()))
}
