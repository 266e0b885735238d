//! The auth function (README §5): accounts, tokens, email flows and admin
//! user management, on MongoDB.

use axum::extract::FromRef;
use axum::Router;
use shared::config::{
    self, AdminBootstrap, ConfigError, Env, JwtConfig, MongoConfig, PostgresConfig, SmtpConfig,
};
use shared::db::mongo::{self, IndexGuard, MongoStores};
use shared::http::{finish, require_indexes, HealthChecks};
use shared::token::JwtKeys;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub mod accounts;
pub mod bootstrap;
pub mod cookie;
pub mod guard;
pub use shared::mail;
pub mod password;
pub mod routes;
pub mod store;

use routes::{account, admin, keys, profile};

/// What the function reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// Token issue and verification.
    pub jwt: JwtConfig,
    /// Accounts database.
    pub mongo: MongoConfig,
    /// The ledger's database (`DATABASE_URL`): the auth function keeps the
    /// users' records there current and revokes their API keys.
    pub postgres: PostgresConfig,
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
            postgres: PostgresConfig::from_env(env)?,
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
    /// PostgreSQL: the users' records and API keys (connected on first use).
    pub pg: sqlx::PgPool,
    /// The `auth` indexes (usernames and emails unique), retried until made.
    pub indexes: IndexGuard,
    /// The `auth` collections.
    pub store: store::AuthStore,
    /// Outgoing mail.
    pub mailer: mail::Mailer,
    /// The answer floor of the routes that may mail (`MAIL_ANSWER_FLOOR_MS`).
    pub mail_floor: std::time::Duration,
}

impl FromRef<AppState> for sqlx::PgPool {
    fn from_ref(state: &AppState) -> Self {
        state.pg.clone()
    }
}

impl FromRef<AppState> for JwtKeys {
    fn from_ref(state: &AppState) -> Self {
        state.jwt.clone()
    }
}

impl AppState {
    /// Builds the client and the mailer. The `auth` indexes are made on
    /// the first request (or health probe), and the first admin once they
    /// exist, by that same call (logged, not failed, when it cannot be).
    pub async fn connect(config: &Config) -> anyhow::Result<Self> {
        let stores = mongo::connect(&config.mongo).await?;
        let store = store::AuthStore::new(stores.auth.clone());
        // Checked on first use (requests answer 503 until they exist). The
        // first admin is made only once they exist: before, concurrent
        // cold starts could each make one, and the unique index then could
        // never be built.
        let mut indexes = IndexGuard::new(stores.clone(), true, false);
        if let Some(admin) = config.admin.clone() {
            let store = store.clone();
            indexes = indexes.on_ready(std::sync::Arc::new(move || {
                let (store, admin) = (store.clone(), admin.clone());
                Box::pin(async move {
                    match bootstrap::ensure_first_admin(&store, &admin).await {
                        Ok(_) => true,
                        Err(err) => {
                            tracing::error!(error = %err, "the first admin could not be ensured");
                            false
                        }
                    }
                })
            }));
        }
        let state = AppState {
            jwt: JwtKeys::new(&config.jwt),
            indexes,
            store,
            mongo: stores,
            pg: shared::db::postgres::connect_lazy(&config.postgres)?,
            mailer: mail::Mailer::new(&config.smtp, &config.app_base_url)?,
            mail_floor: config.mail_floor,
        };
        Ok(state)
    }
}

/// The function's routes, each with its description.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(account::signup))
        .routes(routes!(account::verify_email))
        .routes(routes!(account::resend_verification))
        .routes(routes!(account::login))
        .routes(routes!(account::refresh))
        .routes(routes!(account::logout))
        .routes(routes!(account::logout_all))
        .routes(routes!(account::forgot_password))
        .routes(routes!(account::reset_password))
        .routes(routes!(profile::get_profile, profile::put_profile))
        .routes(routes!(profile::change_password))
        .routes(routes!(keys::create_key))
        .routes(routes!(admin::list_users, admin::create_user))
        .routes(routes!(
            admin::get_user,
            admin::patch_user,
            admin::delete_user
        ))
}

/// The function's description.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The function's API routes on `state` (waiting for the indexes), without
/// what every router adds.
pub fn api(state: AppState) -> Router {
    let indexes = state.indexes.clone();
    let refresh_ttl = state.jwt.refresh_ttl();
    let (api, _) = routes().with_state(state).split_for_parts();
    let api = api.layer(axum::middleware::from_fn_with_state(
        refresh_ttl,
        cookie::layer,
    ));
    require_indexes(api, indexes)
}

impl AppState {
    /// The stores `/health` probes.
    pub fn health_checks(&self) -> HealthChecks {
        HealthChecks {
            postgres: None,
            mongodb: Some(self.mongo.client.clone()),
            indexes: Some(self.indexes.clone()),
        }
    }
}

/// The function's router: its API, `/health` and what every router adds.
pub fn router(state: AppState) -> Router {
    let health = state.health_checks();
    finish(api(state).merge(health.router()))
}
