//! The credit-expiry job (README §9): runs on an EventBridge schedule and by
//! hand (`cargo lambda invoke credit-expiry`). The money part is
//! [`shared::ledger::sweep::run_expiry`]. When `FLOWISE_API_URL` and
//! `MONGODB_URI` are set, each run also syncs the chatflow catalogue from
//! Flowise (README §8: "on a schedule in the same job binary"); a Flowise
//! outage is reported in the result and never fails the expiry. When
//! `SMTP_HOST` is set, each run also mails the owners of API keys that
//! expire within 7 days, once per key.

use serde_json::{json, Value};
use shared::chat::chatflows::sync_chatflows;
use shared::config::{
    self, ConfigError, Env, FlowiseConfig, Limits, MongoConfig, PostgresConfig, SmtpConfig,
};
use shared::error::ApiError;
use shared::flowise::FlowiseClient;
use shared::identity::Email;
use shared::keys::store;
use shared::ledger::allowances::{grant_all_by, Clock};
use shared::ledger::sweep::run_expiry;
use shared::mail::{KeyMail, Mailer};
use shared::notices;

/// What the job reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// The ledger's database.
    pub postgres: PostgresConfig,
    /// Reservation TTL.
    pub limits: Limits,
    /// The chat database and Flowise, when the job also syncs chatflows.
    pub catalogue: Option<(MongoConfig, FlowiseConfig)>,
    /// Outgoing mail and `APP_BASE_URL`, when the job warns of keys about
    /// to expire.
    pub mail: Option<(SmtpConfig, String)>,
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
        let mail = match env.optional("SMTP_HOST") {
            Some(_) => Some((SmtpConfig::from_env(env)?, config::app_base_url(env)?)),
            None => None,
        };
        Ok(Config {
            postgres: PostgresConfig::from_env(env)?,
            limits: Limits::from_env(env)?,
            catalogue,
            mail,
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
    mailer: Option<Mailer>,
    /// Webhook deliveries (10 s per attempt).
    http: reqwest::Client,
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
        let mailer = match &config.mail {
            Some((smtp, base)) => Some(Mailer::new(smtp, base)?),
            None => None,
        };
        Ok(Job {
            pool,
            limits: config.limits,
            catalogue,
            mailer,
            http: webhook_client()?,
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
            mailer: None,
            http: webhook_client().expect("an HTTP client"),
        }
    }

    /// The same job, mailing the owners of keys about to expire.
    pub fn with_mailer(mut self, mailer: Mailer) -> Job {
        self.mailer = Some(mailer);
        self
    }

    /// One run: `{expiredAllocations, expiredCredits, settledReservations,
    /// purgedIdempotencyKeys}`, plus `keyExpiryWarnings` when the job mails
    /// and `chatflowSync` when it syncs the catalogue.
    pub async fn run(&self) -> Result<Value, ApiError> {
        self.run_by(&chrono::Utc::now).await
    }

    /// [`Job::run`] with the clock stopped at `at` (tests move it).
    pub async fn run_at(&self, at: chrono::DateTime<chrono::Utc>) -> Result<Value, ApiError> {
        self.run_by(&move || at).await
    }

    /// One run on `clock`, read afresh by every step: the period's
    /// allowances are granted first (before the expiry, so a rollover is
    /// made before the old allowance expires), then the rest.
    async fn run_by(&self, clock: Clock<'_>) -> Result<Value, ApiError> {
        let granted = grant_all_by(&self.pool, clock, BATCH).await?;
        let report = run_expiry(&self.pool, self.limits.reservation_ttl, BATCH).await?;
        let mut out = serde_json::to_value(report).map_err(|e| ApiError::Internal(e.into()))?;
        out["allowances"] = json!(granted);
        out["expiryNotices"] = json!(notices::look_ahead(&self.pool, clock(), BATCH).await?);
        let delivered = notices::deliver(&self.pool, &self.http, clock(), BATCH).await?;
        out["webhooks"] = json!(delivered);
        if let Some(mailer) = &self.mailer {
            out["warningMails"] = json!(notices::mail_due(&self.pool, mailer, BATCH).await?);
        }
        if let Some(mailer) = &self.mailer {
            out["keyExpiryWarnings"] = json!(warn_expiring_keys(&self.pool, mailer).await?);
        }
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

/// The client webhook deliveries go out on: 10 s per attempt, no
/// redirects (a receiver answers where it was registered), and only to
/// public addresses or this machine ([`notices::PublicOnly`]).
fn webhook_client() -> anyhow::Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(10))
        .redirect(reqwest::redirect::Policy::none())
        .dns_resolver(std::sync::Arc::new(notices::PublicOnly))
        .build()?)
}

/// Mails the owner of every live key that expires within 7 days, once per
/// key (each is marked before its mail goes out, so two runs never send
/// it twice; a mail that fails is logged, not repeated). Returns how many
/// went out.
pub async fn warn_expiring_keys(pool: &sqlx::PgPool, mailer: &Mailer) -> Result<u64, ApiError> {
    let mut sent = 0;
    loop {
        let mut conn = pool.acquire().await?;
        let due = store::claim_expiry_warnings(&mut conn, BATCH).await?;
        drop(conn);
        for key in &due {
            let to = key.email.as_deref().map(|e| Email::parse("email", e));
            let Some(Ok(to)) = to else { continue };
            let mail = KeyMail {
                name: &key.name,
                prefix: &key.prefix,
                chatflows: key.chatflows.as_deref(),
                monthly_credit_limit: key.monthly_credit_limit,
                expires_at: key.expires_at,
            };
            let username = key.username.as_deref().unwrap_or("there");
            match mailer.send_key_expiring(&to, username, &mail).await {
                Ok(()) => sent += 1,
                Err(err) => {
                    tracing::error!(error = %err, key = %key.prefix, "a key's expiry warning was not sent")
                }
            }
        }
        if (due.len() as i64) < BATCH {
            return Ok(sent);
        }
    }
}
