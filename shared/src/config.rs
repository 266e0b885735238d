//! Typed configuration, read once at cold start (README §2).
//!
//! Values come from the process environment. When `SECRETS_ARN` is set, the
//! keys listed in [`SECRET_KEYS`] come from that Secrets Manager secret (one
//! JSON object) instead, and the environment's values for them are ignored,
//! so a stale variable can never shadow a rotated secret. Each function
//! composes the sections it needs; a missing or malformed variable stops
//! start-up with a [`ConfigError`] that names it.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The keys a Secrets Manager secret may hold. `DATABASE_PASSWORD` and
/// `MONGODB_PASSWORD` are spliced into `DATABASE_URL` / `MONGODB_URI`, so
/// the URLs themselves can be plain template parameters.
pub const SECRET_KEYS: &[&str] = &[
    "JWT_ACCESS_SECRET",
    "JWT_REFRESH_SECRET",
    "FLOWISE_API_KEY",
    "SMTP_PASSWORD",
    "DATABASE_PASSWORD",
    "MONGODB_PASSWORD",
    "ADMIN_PASSWORD",
];

/// Minimum length of an HS256 secret, in bytes.
pub const MIN_JWT_SECRET_BYTES: usize = 32;

/// Why the configuration could not be loaded. The message names the variable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    /// A required variable is unset or empty.
    #[error("configuration: {0} is required but not set")]
    Missing(String),
    /// A variable is set but unusable.
    #[error("configuration: {name} is malformed: {reason}")]
    Malformed {
        /// The variable.
        name: String,
        /// What is wrong with it (never its value, which may be a secret).
        reason: String,
    },
    /// The secret named by `SECRETS_ARN` could not be read or parsed.
    #[error("configuration: SECRETS_ARN could not be used: {0}")]
    Secret(String),
}

/// A value that must never be printed: `Debug` and `Display` show `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }
    /// The value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// The variables configuration is read from: the environment, overlaid by
/// the secret when there is one.
#[derive(Clone, Default)]
pub struct Env {
    vars: HashMap<String, String>,
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Names only: values may be secrets.
        let mut names: Vec<&String> = self.vars.keys().collect();
        names.sort();
        f.debug_struct("Env").field("names", &names).finish()
    }
}

impl Env {
    /// Variables from the given pairs (tests, tools).
    pub fn from_pairs<I, K, V>(pairs: I) -> Self
    where
        I: IntoIterator<Item = (K, V)>,
        K: Into<String>,
        V: Into<String>,
    {
        Env {
            vars: pairs
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }

    /// This environment with `name` set to `value`.
    pub fn with(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }

    /// The process environment, with the secret overlaid when `SECRETS_ARN`
    /// is set. Called once per cold start.
    pub async fn load() -> Result<Self, ConfigError> {
        let mut env = Env::from_pairs(std::env::vars());
        if let Some(arn) = env.optional("SECRETS_ARN") {
            let secret = crate::secrets::fetch_secret_string(&arn)
                .await
                .map_err(|e| ConfigError::Secret(format!("{e:#}")))?;
            env.overlay_secret(&secret)?;
        }
        Ok(env)
    }

    /// Replaces every key of [`SECRET_KEYS`] with the secret's value (or
    /// removes it when the secret lacks it). Other keys in the secret are
    /// refused, so a typo does not pass silently.
    pub fn overlay_secret(&mut self, secret_json: &str) -> Result<(), ConfigError> {
        let values: HashMap<String, serde_json::Value> = serde_json::from_str(secret_json)
            .map_err(|e| {
                ConfigError::Secret(format!(
                    "the secret is not a JSON object of strings (line {}, column {})",
                    e.line(),
                    e.column()
                ))
            })?;
        for key in SECRET_KEYS {
            self.vars.remove(*key);
        }
        for (key, value) in values {
            if !SECRET_KEYS.contains(&key.as_str()) {
                return Err(ConfigError::Secret(format!(
                    "the secret holds an unknown key {key}; allowed: {}",
                    SECRET_KEYS.join(", ")
                )));
            }
            let value = match value {
                serde_json::Value::String(s) => s,
                _ => {
                    return Err(ConfigError::Secret(format!(
                        "the secret's key {key} must be a string"
                    )))
                }
            };
            self.vars.insert(key, value);
        }
        Ok(())
    }

    /// A variable, `None` when unset or empty.
    pub fn optional(&self, name: &str) -> Option<String> {
        self.vars
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    }

    /// A variable that must be set.
    pub fn required(&self, name: &str) -> Result<String, ConfigError> {
        self.optional(name)
            .ok_or_else(|| ConfigError::Missing(name.to_owned()))
    }

    /// A secret that must be set.
    pub fn required_secret(&self, name: &str) -> Result<Secret, ConfigError> {
        self.required(name).map(Secret)
    }

    /// A parsed variable with a default when unset.
    pub fn parse_or<T>(&self, name: &str, default: T) -> Result<T, ConfigError>
    where
        T: FromStr,
        T::Err: fmt::Display,
    {
        match self.optional(name) {
            None => Ok(default),
            Some(raw) => raw.parse().map_err(|e: T::Err| ConfigError::Malformed {
                name: name.to_owned(),
                reason: e.to_string(),
            }),
        }
    }

    /// A whole number of seconds (at least 1), with a default.
    pub fn seconds_or(&self, name: &str, default: u64) -> Result<Duration, ConfigError> {
        let secs: u64 = self.parse_or(name, default)?;
        if secs == 0 {
            return Err(ConfigError::Malformed {
                name: name.to_owned(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Duration::from_secs(secs))
    }

    /// An `http(s)://` URL, without its trailing slash.
    pub fn http_url(&self, name: &str) -> Result<String, ConfigError> {
        let url = self.required(name)?;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(ConfigError::Malformed {
                name: name.to_owned(),
                reason: "must start with http:// or https://".into(),
            });
        }
        Ok(url.trim_end_matches('/').to_owned())
    }
}

/// Loads the environment (with the secret when `SECRETS_ARN` is set) and
/// parses a function's configuration from it, logging the error, which
/// names the variable, before start-up stops.
pub async fn load<C>(parse: fn(&Env) -> Result<C, ConfigError>) -> Result<C, ConfigError> {
    let result = match Env::load().await {
        Ok(env) => parse(&env),
        Err(err) => Err(err),
    };
    if let Err(err) = &result {
        tracing::error!(error = %err, "start-up failed");
    }
    result
}

/// `APP_BASE_URL`: base of links in mails.
pub fn app_base_url(env: &Env) -> Result<String, ConfigError> {
    env.http_url("APP_BASE_URL")
}

/// `ADMIN_USERNAME`, `ADMIN_EMAIL`, `ADMIN_PASSWORD`: the first admin.
#[derive(Debug, Clone)]
pub struct AdminBootstrap {
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// Password.
    pub password: Secret,
}

impl AdminBootstrap {
    /// `None` when none of the three is set; an error when only some are.
    pub fn from_env(env: &Env) -> Result<Option<Self>, ConfigError> {
        let names = ["ADMIN_USERNAME", "ADMIN_EMAIL", "ADMIN_PASSWORD"];
        let values: Vec<Option<String>> = names.iter().map(|n| env.optional(n)).collect();
        if values.iter().all(Option::is_none) {
            return Ok(None);
        }
        if let Some(i) = values.iter().position(Option::is_none) {
            return Err(ConfigError::Missing(format!(
                "{} (ADMIN_USERNAME, ADMIN_EMAIL and ADMIN_PASSWORD go together)",
                names[i]
            )));
        }
        let mut values = values.into_iter().flatten();
        let (username, email, password) = (
            values.next().unwrap_or_default(),
            values.next().unwrap_or_default(),
            values.next().unwrap_or_default(),
        );
        Ok(Some(AdminBootstrap {
            username,
            email,
            password: Secret(password),
        }))
    }
}

/// `JWT_*`: token secrets and lifetimes (README §3).
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Signs access tokens.
    pub access_secret: Secret,
    /// Signs refresh tokens.
    pub refresh_secret: Secret,
    /// `ACCESS_TOKEN_TTL_SECONDS` (900).
    pub access_ttl: Duration,
    /// `REFRESH_TOKEN_TTL_SECONDS` (604800).
    pub refresh_ttl: Duration,
}

impl JwtConfig {
    /// Reads and checks the section; secrets under 32 bytes are refused.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let access_secret = jwt_secret(env, "JWT_ACCESS_SECRET")?;
        let refresh_secret = jwt_secret(env, "JWT_REFRESH_SECRET")?;
        if access_secret == refresh_secret {
            return Err(ConfigError::Malformed {
                name: "JWT_REFRESH_SECRET".into(),
                reason: "must differ from JWT_ACCESS_SECRET".into(),
            });
        }
        Ok(JwtConfig {
            access_secret,
            refresh_secret,
            access_ttl: env.seconds_or("ACCESS_TOKEN_TTL_SECONDS", 900)?,
            refresh_ttl: env.seconds_or("REFRESH_TOKEN_TTL_SECONDS", 604_800)?,
        })
    }
}

fn jwt_secret(env: &Env, name: &str) -> Result<Secret, ConfigError> {
    let secret = env.required_secret(name)?;
    if secret.expose().len() < MIN_JWT_SECRET_BYTES {
        return Err(ConfigError::Malformed {
            name: name.to_owned(),
            reason: format!("must be at least {MIN_JWT_SECRET_BYTES} bytes"),
        });
    }
    Ok(secret)
}

/// `DATABASE_URL` (+ `DATABASE_PASSWORD` from the secret): PostgreSQL.
#[derive(Debug, Clone)]
pub struct PostgresConfig {
    /// The URL (may carry a password, hence secret).
    pub url: Secret,
    /// `DATABASE_PASSWORD`, when kept out of the URL.
    pub password: Option<Secret>,
    /// `DATABASE_MAX_CONNECTIONS` (2): one Lambda instance serves one
    /// request at a time; two let a prediction's concurrent reads and its
    /// settlement overlap.
    pub max_connections: u32,
    /// `MIGRATE_ON_START` (true): apply `migrations/` at cold start.
    pub migrate_on_start: bool,
}

impl PostgresConfig {
    /// Reads the section.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let url = env.required("DATABASE_URL")?;
        if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(ConfigError::Malformed {
                name: "DATABASE_URL".into(),
                reason: "must start with postgres:// or postgresql://".into(),
            });
        }
        Ok(PostgresConfig {
            url: Secret(url),
            password: env.optional("DATABASE_PASSWORD").map(Secret),
            max_connections: env.parse_or("DATABASE_MAX_CONNECTIONS", 2)?,
            migrate_on_start: env.parse_or("MIGRATE_ON_START", true)?,
        })
    }
}

/// `MONGODB_URI` and the two database names.
#[derive(Debug, Clone)]
pub struct MongoConfig {
    /// The URI (may carry a password, hence secret).
    pub uri: Secret,
    /// `MONGODB_PASSWORD`, when kept out of the URI.
    pub password: Option<Secret>,
    /// `MONGODB_AUTH_DB` (`auth`).
    pub auth_db: String,
    /// `MONGODB_CHAT_DB` (`chat`).
    pub chat_db: String,
    /// `MONGODB_MAX_POOL_SIZE` (2): connections per instance, which serves
    /// one request at a time (a URI's `maxPoolSize` wins).
    pub max_pool_size: u32,
}

impl MongoConfig {
    /// Reads the section.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let uri = env.required("MONGODB_URI")?;
        if !uri.starts_with("mongodb://") {
            return Err(ConfigError::Malformed {
                name: "MONGODB_URI".into(),
                reason: "must start with mongodb:// (the seed-list form; mongodb+srv:// \
                         needs DNS SRV lookups this build leaves out)"
                    .into(),
            });
        }
        Ok(MongoConfig {
            uri: Secret(uri),
            password: env.optional("MONGODB_PASSWORD").map(Secret),
            auth_db: env
                .optional("MONGODB_AUTH_DB")
                .unwrap_or_else(|| "auth".into()),
            chat_db: env
                .optional("MONGODB_CHAT_DB")
                .unwrap_or_else(|| "chat".into()),
            max_pool_size: env.parse_or("MONGODB_MAX_POOL_SIZE", 2)?,
        })
    }
}

/// How to talk to the SMTP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpTls {
    /// Plain text (a local mail catcher).
    None,
    /// Upgrade with STARTTLS (SES on 587).
    StartTls,
    /// TLS from the first byte (SES on 465).
    Tls,
}

impl FromStr for SmtpTls {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(SmtpTls::None),
            "starttls" => Ok(SmtpTls::StartTls),
            "tls" => Ok(SmtpTls::Tls),
            other => Err(format!("{other:?} is not one of none, starttls, tls")),
        }
    }
}

/// `SMTP_*`, `MAIL_FROM`: outgoing mail.
#[derive(Debug, Clone)]
pub struct SmtpConfig {
    /// `SMTP_HOST`.
    pub host: String,
    /// `SMTP_PORT` (587 with STARTTLS, 465 with TLS, 25 otherwise).
    pub port: u16,
    /// `SMTP_USERNAME` (optional).
    pub username: Option<String>,
    /// `SMTP_PASSWORD` (optional).
    pub password: Option<Secret>,
    /// `SMTP_TLS` (`starttls`).
    pub tls: SmtpTls,
    /// `MAIL_FROM`.
    pub from: String,
}

impl SmtpConfig {
    /// Reads the section.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let tls: SmtpTls = env.parse_or("SMTP_TLS", SmtpTls::StartTls)?;
        let default_port = match tls {
            SmtpTls::None => 25,
            SmtpTls::StartTls => 587,
            SmtpTls::Tls => 465,
        };
        let from = env.required("MAIL_FROM")?;
        if !from.contains('@') {
            return Err(ConfigError::Malformed {
                name: "MAIL_FROM".into(),
                reason: "must be an email address".into(),
            });
        }
        Ok(SmtpConfig {
            host: env.required("SMTP_HOST")?,
            port: env.parse_or("SMTP_PORT", default_port)?,
            username: env.optional("SMTP_USERNAME"),
            password: env.optional("SMTP_PASSWORD").map(Secret),
            tls,
            from,
        })
    }
}

/// `FLOWISE_*`: the upstream.
#[derive(Debug, Clone)]
pub struct FlowiseConfig {
    /// `FLOWISE_API_URL`, without a trailing slash.
    pub api_url: String,
    /// `FLOWISE_API_KEY` (optional: flows without a bound key need none).
    pub api_key: Option<Secret>,
    /// `FLOWISE_TIMEOUT_SECONDS` (120): bounds a whole call.
    pub timeout: Duration,
    /// `FLOWISE_FIRST_BYTE_TIMEOUT_SECONDS` (30): bounds the wait for the
    /// first data event of a stream.
    pub first_byte_timeout: Duration,
    /// `FLOWISE_BUFFERED_TIMEOUT_SECONDS` (25, at most 29): a buffered
    /// prediction answers within this, counted from the request's arrival,
    /// because API Gateway cuts an HTTP API request off at 30 s.
    pub buffered_timeout: Duration,
}

/// The longest `FLOWISE_BUFFERED_TIMEOUT_SECONDS`: under API Gateway's 30 s.
pub const MAX_BUFFERED_TIMEOUT_SECONDS: u64 = 29;

impl FlowiseConfig {
    /// Reads the section.
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let buffered_timeout = env.seconds_or("FLOWISE_BUFFERED_TIMEOUT_SECONDS", 25)?;
        if buffered_timeout.as_secs() > MAX_BUFFERED_TIMEOUT_SECONDS {
            return Err(ConfigError::Malformed {
                name: "FLOWISE_BUFFERED_TIMEOUT_SECONDS".into(),
                reason: format!(
                    "must be at most {MAX_BUFFERED_TIMEOUT_SECONDS} (API Gateway ends a request at 30 s)"
                ),
            });
        }
        Ok(FlowiseConfig {
            api_url: env.http_url("FLOWISE_API_URL")?,
            api_key: env.optional("FLOWISE_API_KEY").map(Secret),
            timeout: flowise_timeout(env)?,
            first_byte_timeout: env.seconds_or("FLOWISE_FIRST_BYTE_TIMEOUT_SECONDS", 30)?,
            buffered_timeout,
        })
    }
}

/// `FLOWISE_TIMEOUT_SECONDS` (120): bounds a whole call to Flowise.
fn flowise_timeout(env: &Env) -> Result<Duration, ConfigError> {
    env.seconds_or("FLOWISE_TIMEOUT_SECONDS", 120)
}

/// The default `MAX_UPLOAD_BYTES`: 4 MiB, which base64-encoded (4/3) with
/// the rest of the request still fits Lambda's 6 MB payload.
pub const DEFAULT_MAX_UPLOAD_BYTES: usize = 4_194_304;
/// The largest `MAX_UPLOAD_BYTES` accepted.
pub const MAX_UPLOAD_BYTES_LIMIT: usize = 4_400_000;
// Base64 (4/3) of the largest upload, with room for the rest of a body,
// stays under Lambda's 6 MB payload.
const _: () = assert!(MAX_UPLOAD_BYTES_LIMIT * 4 / 3 < 6_000_000 - 100_000);

/// The rate limits of predictions (README §11), per user, with the
/// overrides an admin sets per user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimits {
    /// `RATE_LIMIT_PER_MINUTE` (60): predictions begun in any 60 seconds.
    pub per_minute: i64,
    /// `MAX_CONCURRENT_STREAMS` (3): predictions running at once.
    pub concurrent: i64,
    /// A prediction counts as running while its reservation is open and
    /// younger than this (`FLOWISE_TIMEOUT_SECONDS` + 30 s), so one that
    /// died with its instance stops counting soon.
    pub running_for: Duration,
}

impl RateLimits {
    /// Reads the section (and `FLOWISE_TIMEOUT_SECONDS`).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let positive = |name: &str, default: i64, max: i64| {
            let value: i64 = env.parse_or(name, default)?;
            if !(1..=max).contains(&value) {
                return Err(ConfigError::Malformed {
                    name: name.into(),
                    reason: format!("must be from 1 to {max}"),
                });
            }
            Ok(value)
        };
        Ok(RateLimits {
            per_minute: positive("RATE_LIMIT_PER_MINUTE", 60, 10_000)?,
            concurrent: positive("MAX_CONCURRENT_STREAMS", 3, 100)?,
            running_for: flowise_timeout(env)? + Duration::from_secs(30),
        })
    }
}

/// `MAX_UPLOAD_BYTES`, `RESERVATION_TTL_MINUTES` and the rate limits.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `MAX_UPLOAD_BYTES` (4,194,304; at most 4,400,000).
    pub max_upload_bytes: usize,
    /// `RESERVATION_TTL_MINUTES` (15): never shorter than a Flowise call
    /// (`FLOWISE_TIMEOUT_SECONDS`) plus 30 s, so the sweep cannot release
    /// the reservation of a prediction that is still running.
    pub reservation_ttl: Duration,
    /// Predictions per minute and at once, per user.
    pub rate: RateLimits,
}

impl Limits {
    /// Reads the section (and `FLOWISE_TIMEOUT_SECONDS`, which bounds the TTL).
    pub fn from_env(env: &Env) -> Result<Self, ConfigError> {
        let minutes: u64 = env.parse_or("RESERVATION_TTL_MINUTES", 15)?;
        let reservation_ttl = Duration::from_secs(minutes.saturating_mul(60));
        let call = flowise_timeout(env)? + Duration::from_secs(30);
        if reservation_ttl < call {
            return Err(ConfigError::Malformed {
                name: "RESERVATION_TTL_MINUTES".into(),
                reason: format!(
                    "must cover FLOWISE_TIMEOUT_SECONDS + 30 s ({} s), so the sweep never releases a running prediction",
                    call.as_secs()
                ),
            });
        }
        let max_upload_bytes = env.parse_or("MAX_UPLOAD_BYTES", DEFAULT_MAX_UPLOAD_BYTES)?;
        if max_upload_bytes == 0 || max_upload_bytes > MAX_UPLOAD_BYTES_LIMIT {
            return Err(ConfigError::Malformed {
                name: "MAX_UPLOAD_BYTES".into(),
                reason: format!(
                    "must be from 1 to {MAX_UPLOAD_BYTES_LIMIT} (base64 in a request must fit Lambda's 6 MB payload)"
                ),
            });
        }
        Ok(Limits {
            max_upload_bytes,
            reservation_ttl,
            rate: RateLimits::from_env(env)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "0123456789abcdef0123456789abcdef";
    const OTHER: &str = "fedcba9876543210fedcba9876543210";

    fn env(pairs: &[(&str, &str)]) -> Env {
        Env::from_pairs(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn jwt_section_reads_secrets_and_defaults() {
        let cfg = JwtConfig::from_env(&env(&[
            ("JWT_ACCESS_SECRET", GOOD),
            ("JWT_REFRESH_SECRET", OTHER),
        ]))
        .unwrap();
        assert_eq!(cfg.access_ttl, Duration::from_secs(900));
        assert_eq!(cfg.refresh_ttl, Duration::from_secs(604_800));
        assert_eq!(cfg.access_secret.expose(), GOOD);
    }

    #[test]
    fn a_missing_jwt_secret_is_named() {
        let err = JwtConfig::from_env(&env(&[("JWT_ACCESS_SECRET", GOOD)])).unwrap_err();
        assert_eq!(err, ConfigError::Missing("JWT_REFRESH_SECRET".into()));
        assert!(err.to_string().contains("JWT_REFRESH_SECRET"));
    }

    #[test]
    fn a_jwt_secret_under_32_bytes_is_refused() {
        let err = JwtConfig::from_env(&env(&[
            ("JWT_ACCESS_SECRET", "short-secret-31-bytes-long-xxxx"),
            ("JWT_REFRESH_SECRET", OTHER),
        ]))
        .unwrap_err();
        assert!(
            matches!(err, ConfigError::Malformed { ref name, .. } if name == "JWT_ACCESS_SECRET")
        );
    }

    #[test]
    fn a_malformed_number_is_named_without_its_value() {
        let err = JwtConfig::from_env(&env(&[
            ("JWT_ACCESS_SECRET", GOOD),
            ("JWT_REFRESH_SECRET", OTHER),
            ("ACCESS_TOKEN_TTL_SECONDS", "fifteen"),
        ]))
        .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("ACCESS_TOKEN_TTL_SECONDS"), "{text}");
        assert!(!text.contains("fifteen"), "{text}");
    }

    #[test]
    fn zero_timeouts_are_refused() {
        let err = FlowiseConfig::from_env(&env(&[
            ("FLOWISE_API_URL", "http://localhost:3000"),
            ("FLOWISE_TIMEOUT_SECONDS", "0"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("FLOWISE_TIMEOUT_SECONDS"));
    }

    #[test]
    fn flowise_section_has_the_spec_defaults() {
        let cfg = FlowiseConfig::from_env(&env(&[("FLOWISE_API_URL", "http://f:3000/")])).unwrap();
        assert_eq!(cfg.api_url, "http://f:3000");
        assert_eq!(cfg.timeout, Duration::from_secs(120));
        assert_eq!(cfg.first_byte_timeout, Duration::from_secs(30));
        assert!(cfg.api_key.is_none());
    }

    #[test]
    fn a_url_without_scheme_is_malformed() {
        let err =
            FlowiseConfig::from_env(&env(&[("FLOWISE_API_URL", "flowise:3000")])).unwrap_err();
        assert!(
            matches!(err, ConfigError::Malformed { ref name, .. } if name == "FLOWISE_API_URL")
        );
        let err = PostgresConfig::from_env(&env(&[("DATABASE_URL", "mysql://x")])).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { ref name, .. } if name == "DATABASE_URL"));
        let err = MongoConfig::from_env(&env(&[("MONGODB_URI", "localhost")])).unwrap_err();
        assert!(matches!(err, ConfigError::Malformed { ref name, .. } if name == "MONGODB_URI"));
    }

    #[test]
    fn the_reservation_ttl_must_outlive_a_flowise_call() {
        // 2 minutes < 120 s + 30 s.
        let err = Limits::from_env(&env(&[("RESERVATION_TTL_MINUTES", "2")])).unwrap_err();
        assert!(err.to_string().contains("RESERVATION_TTL_MINUTES"), "{err}");
        let err = Limits::from_env(&env(&[
            ("RESERVATION_TTL_MINUTES", "15"),
            ("FLOWISE_TIMEOUT_SECONDS", "900"),
        ]))
        .unwrap_err();
        assert!(err.to_string().contains("FLOWISE_TIMEOUT_SECONDS"), "{err}");
        assert!(Limits::from_env(&env(&[
            ("RESERVATION_TTL_MINUTES", "3"),
            ("FLOWISE_TIMEOUT_SECONDS", "150")
        ]))
        .is_ok());
        assert!(Limits::from_env(&env(&[("RESERVATION_TTL_MINUTES", "0")])).is_err());
    }

    #[test]
    fn uploads_must_fit_a_lambda_payload_once_encoded() {
        let err = Limits::from_env(&env(&[("MAX_UPLOAD_BYTES", "4400001")])).unwrap_err();
        assert!(err.to_string().contains("MAX_UPLOAD_BYTES"), "{err}");
        assert!(Limits::from_env(&env(&[("MAX_UPLOAD_BYTES", "4400000")])).is_ok());
    }

    #[test]
    fn a_buffered_prediction_fits_under_api_gateways_30_seconds() {
        let base = ("FLOWISE_API_URL", "http://f:3000");
        let cfg = FlowiseConfig::from_env(&env(&[base])).unwrap();
        assert_eq!(cfg.buffered_timeout, Duration::from_secs(25));
        let err =
            FlowiseConfig::from_env(&env(&[base, ("FLOWISE_BUFFERED_TIMEOUT_SECONDS", "30")]))
                .unwrap_err();
        assert!(
            err.to_string().contains("FLOWISE_BUFFERED_TIMEOUT_SECONDS"),
            "{err}"
        );
        assert!(
            FlowiseConfig::from_env(&env(&[base, ("FLOWISE_BUFFERED_TIMEOUT_SECONDS", "29")]))
                .is_ok()
        );
    }

    #[test]
    fn limits_and_mongo_have_the_spec_defaults() {
        let limits = Limits::from_env(&env(&[])).unwrap();
        assert_eq!(limits.max_upload_bytes, 4_194_304);
        assert_eq!(limits.reservation_ttl, Duration::from_secs(15 * 60));
        assert_eq!(
            limits.rate,
            RateLimits {
                per_minute: 60,
                concurrent: 3,
                running_for: Duration::from_secs(150),
            }
        );
        for bad in [
            ("RATE_LIMIT_PER_MINUTE", "0"),
            ("MAX_CONCURRENT_STREAMS", "-1"),
            ("MAX_CONCURRENT_STREAMS", "101"),
        ] {
            let err = Limits::from_env(&env(&[bad])).unwrap_err();
            assert!(err.to_string().contains(bad.0), "{err}");
        }
        let mongo = MongoConfig::from_env(&env(&[("MONGODB_URI", "mongodb://h:27017")])).unwrap();
        assert_eq!(
            (mongo.auth_db.as_str(), mongo.chat_db.as_str()),
            ("auth", "chat")
        );
    }

    #[test]
    fn smtp_tls_mode_is_checked_and_picks_the_port() {
        let base = [("SMTP_HOST", "mail"), ("MAIL_FROM", "noreply@example.com")];
        let cfg = SmtpConfig::from_env(&env(&[base[0], base[1], ("SMTP_TLS", "none")])).unwrap();
        assert_eq!((cfg.tls, cfg.port), (SmtpTls::None, 25));
        let err = SmtpConfig::from_env(&env(&[base[0], base[1], ("SMTP_TLS", "ssl")])).unwrap_err();
        assert!(err.to_string().contains("SMTP_TLS"));
    }

    #[test]
    fn the_secret_replaces_the_environment_for_secret_keys() {
        let mut e = env(&[
            ("JWT_ACCESS_SECRET", "from-the-environment-ignored-000000"),
            ("JWT_REFRESH_SECRET", "from-the-environment-ignored-111111"),
            ("DATABASE_URL", "postgres://app@db/accounting"),
        ]);
        e.overlay_secret(&format!(
            r#"{{"JWT_ACCESS_SECRET":"{GOOD}","DATABASE_PASSWORD":"pw"}}"#
        ))
        .unwrap();
        assert_eq!(e.optional("JWT_ACCESS_SECRET").as_deref(), Some(GOOD));
        // Absent from the secret: not taken from the environment either.
        assert_eq!(
            JwtConfig::from_env(&e).unwrap_err(),
            ConfigError::Missing("JWT_REFRESH_SECRET".into())
        );
        let pg = PostgresConfig::from_env(&e).unwrap();
        assert_eq!(pg.password.unwrap().expose(), "pw");
    }

    #[test]
    fn a_secret_with_unknown_keys_or_bad_json_is_refused() {
        let mut e = Env::default();
        assert!(matches!(
            e.overlay_secret(r#"{"JWT_ACESS_SECRET":"typo"}"#),
            Err(ConfigError::Secret(m)) if m.contains("JWT_ACESS_SECRET")
        ));
        assert!(matches!(
            e.overlay_secret("not json"),
            Err(ConfigError::Secret(_))
        ));
        assert!(matches!(
            e.overlay_secret(r#"{"SMTP_PASSWORD": 5}"#),
            Err(ConfigError::Secret(_))
        ));
    }

    #[test]
    fn admin_bootstrap_is_all_or_nothing() {
        assert!(AdminBootstrap::from_env(&env(&[])).unwrap().is_none());
        let err = AdminBootstrap::from_env(&env(&[("ADMIN_EMAIL", "a@b.c")])).unwrap_err();
        assert!(err.to_string().contains("ADMIN_USERNAME"), "{err}");
        let admin = AdminBootstrap::from_env(&env(&[
            ("ADMIN_EMAIL", "a@b.c"),
            ("ADMIN_USERNAME", "root"),
            ("ADMIN_PASSWORD", "correct horse"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (admin.username.as_str(), admin.password.expose()),
            ("root", "correct horse")
        );
    }

    #[test]
    fn secrets_never_print() {
        let cfg = JwtConfig::from_env(&env(&[
            ("JWT_ACCESS_SECRET", GOOD),
            ("JWT_REFRESH_SECRET", OTHER),
        ]))
        .unwrap();
        let printed = format!("{cfg:?} {}", cfg.access_secret);
        assert!(
            !printed.contains(GOOD) && !printed.contains(OTHER),
            "{printed}"
        );
        let e = env(&[("SMTP_PASSWORD", "hunter2")]);
        assert!(!format!("{e:?}").contains("hunter2"));
    }
}
