//! The auth function (SPEC §5): accounts, tokens, email flows and admin
//! user management, on MongoDB.

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use shared::config::{self, AdminBootstrap, ConfigError, Env, JwtConfig, MongoConfig, SmtpConfig};
use shared::db::mongo::{self, MongoStores};
use shared::http::{finish, not_implemented, HealthChecks};
use shared::token::JwtKeys;

/// What the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Token issue and verification.
    pub jwt: JwtConfig,
    /// Accounts database.
    pub mongo: MongoConfig,
    /// Outgoing mail.
    pub smtp: SmtpConfig,
    /// `APP_BASE_URL`: base of links in mails.
    pub app_base_url: String,
    /// The first admin, when configured.
    pub admin: Option<AdminBootstrap>,
}

impl Config {
    /// Parses every variable the function needs.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            jwt: JwtConfig::from_env(env)?,
            mongo: MongoConfig::from_env(env)?,
            smtp: SmtpConfig::from_env(env)?,
            app_base_url: config::app_base_url(env)?,
            admin: AdminBootstrap::from_env(env)?,
        })
    }
}

/// Clients built once per cold start and lent to every request.
#[derive(Clone)]
pub struct AppState {
    /// Issues and verifies tokens.
    pub jwt: JwtKeys,
    /// MongoDB.
    pub mongo: MongoStores,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

impl AppState {
    /// Builds the client and ensures the `auth` indexes.
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let stores = mongo::connect(&config.mongo).await?;
        mongo::ensure_indexes_logged(&stores, true, false).await;
        Ok(AppState {
            jwt: JwtKeys::new(&config.jwt),
            mongo: stores,
        })
    }
}

/// The function's routes.
pub fn router(state: AppState) -> Router {
    let health = HealthChecks {
        postgres: None,
        mongodb: Some(state.mongo.client.clone()),
    };
    let api = Router::new()
        .route("/api/auth/signup", post(not_implemented))
        .route("/api/auth/verify-email", post(not_implemented))
        .route("/api/auth/resend-verification", post(not_implemented))
        .route("/api/auth/login", post(not_implemented))
        .route("/api/auth/refresh", post(not_implemented))
        .route("/api/auth/logout", post(not_implemented))
        .route("/api/auth/logout-all", post(not_implemented))
        .route("/api/auth/forgot-password", post(not_implemented))
        .route("/api/auth/reset-password", post(not_implemented))
        .route("/api/profile", get(not_implemented).put(not_implemented))
        .route("/api/profile/change-password", post(not_implemented))
        .route(
            "/api/admin/users",
            get(not_implemented).post(not_implemented),
        )
        .route(
            "/api/admin/users/{id}",
            get(not_implemented)
                .patch(not_implemented)
                .delete(not_implemented),
        )
        .with_state(state);
    finish(api.merge(health.router()))
}
