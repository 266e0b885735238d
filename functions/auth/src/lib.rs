//! The auth function (SPEC §5): accounts, tokens, email flows and admin
//! user management, on MongoDB.

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::Router;
use shared::config::{self, AdminBootstrap, ConfigError, Env, JwtConfig, MongoConfig, SmtpConfig};
use shared::db::mongo::{self, IndexGuard, MongoStores};
use shared::http::{finish, require_indexes, HealthChecks};
use shared::token::JwtKeys;

pub mod bootstrap;
pub mod guard;
pub mod mail;
pub mod password;
pub mod routes;
pub mod store;

use routes::{account, admin, profile};

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
    /// `MAIL_ANSWER_FLOOR_MS` (1500): the routes that may mail someone
    /// (forgot-password, resend-verification) answer no sooner than this,
    /// so a known and an unknown address take the same time.
    pub mail_floor: std::time::Duration,
}

/// The longest `MAIL_ANSWER_FLOOR_MS` accepted.
pub const MAX_MAIL_FLOOR_MS: u64 = 10_000;

impl Config {
    /// Parses every variable the function needs.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        Ok(Config {
            jwt: JwtConfig::from_env(env)?,
            mongo: MongoConfig::from_env(env)?,
            smtp: SmtpConfig::from_env(env)?,
            app_base_url: config::app_base_url(env)?,
            admin: AdminBootstrap::from_env(env)?,
            mail_floor: mail_floor(env)?,
        })
    }
}

fn mail_floor(env: &Env) -> Result<std::time::Duration, ConfigError> {
    let ms: u64 = env.parse_or("MAIL_ANSWER_FLOOR_MS", 1500)?;
    if ms > MAX_MAIL_FLOOR_MS {
        return Err(ConfigError::Malformed {
            name: "MAIL_ANSWER_FLOOR_MS".into(),
            reason: format!("must be at most {MAX_MAIL_FLOOR_MS}"),
        });
    }
    Ok(std::time::Duration::from_millis(ms))
}

/// Clients built once per cold start and lent to every request.
#[derive(Clone)]
pub struct AppState {
    /// Issues and verifies tokens.
    pub jwt: JwtKeys,
    /// MongoDB.
    pub mongo: MongoStores,
    /// The `auth` indexes (usernames and emails unique), retried until made.
    pub indexes: IndexGuard,
    /// The `auth` collections.
    pub store: store::AuthStore,
    /// Outgoing mail.
    pub mailer: mail::Mailer,
    /// The answer floor of the routes that may mail (`MAIL_ANSWER_FLOOR_MS`).
    pub mail_floor: std::time::Duration,
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

impl AppState {
    /// Builds the client and the mailer, ensures the `auth` indexes and
    /// the first admin (logging, not failing, when MongoDB is down).
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let stores = mongo::connect(&config.mongo).await?;
        let indexes = IndexGuard::new(stores.clone(), true, false);
        // A failure is logged; requests then answer 503 until it succeeds.
        let _ = indexes.ensure().await;
        let state = AppState {
            jwt: JwtKeys::new(&config.jwt),
            indexes,
            store: store::AuthStore::new(stores.auth.clone()),
            mongo: stores,
            mailer: mail::Mailer::new(&config.smtp, &config.app_base_url)?,
            mail_floor: config.mail_floor,
        };
        if let Some(admin) = &config.admin {
            if let Err(err) = bootstrap::ensure_first_admin(&state.store, admin).await {
                tracing::error!(error = %err, "the first admin could not be ensured");
            }
        }
        Ok(state)
    }
}

/// The function's routes.
pub fn router(state: AppState) -> Router {
    let health = HealthChecks {
        postgres: None,
        mongodb: Some(state.mongo.client.clone()),
        indexes: Some(state.indexes.clone()),
    };
    let indexes = state.indexes.clone();
    let api = Router::new()
        .route("/api/auth/signup", post(account::signup))
        .route("/api/auth/verify-email", post(account::verify_email))
        .route(
            "/api/auth/resend-verification",
            post(account::resend_verification),
        )
        .route("/api/auth/login", post(account::login))
        .route("/api/auth/refresh", post(account::refresh))
        .route("/api/auth/logout", post(account::logout))
        .route("/api/auth/logout-all", post(account::logout_all))
        .route("/api/auth/forgot-password", post(account::forgot_password))
        .route("/api/auth/reset-password", post(account::reset_password))
        .route(
            "/api/profile",
            get(profile::get_profile).put(profile::put_profile),
        )
        .route(
            "/api/profile/change-password",
            post(profile::change_password),
        )
        .route(
            "/api/admin/users",
            get(admin::list_users).post(admin::create_user),
        )
        .route(
            "/api/admin/users/{id}",
            get(admin::get_user)
                .patch(admin::patch_user)
                .delete(admin::delete_user),
        )
        .with_state(state);
    finish(require_indexes(api, indexes).merge(health.router()))
}
