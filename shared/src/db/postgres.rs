//! The PostgreSQL pool and the migration runner for `migrations/`.

use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection, PgPool};

use crate::config::PostgresConfig;

/// The migrations of `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A connection used less than this long ago is handed out without a
/// ping first.
const FRESH: Duration = Duration::from_secs(10);

/// Milliseconds since the epoch, by the wall clock.
fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Whether a connection must be pinged before use: it sat idle for
/// [`FRESH`] or more, or the pool as a whole did by the wall clock (a
/// Lambda instance is frozen between requests, and its monotonic clock,
/// which `idle_for` reads, need not count the time frozen). A warm
/// instance saves a round trip per acquire; a connection that died while
/// idle is still caught before a statement is sent on it.
fn needs_ping(idle_for: Duration, last_use_ms: &AtomicU64) -> bool {
    let now = wall_clock_ms();
    let before = last_use_ms.swap(now, Ordering::Relaxed);
    idle_for >= FRESH || now.saturating_sub(before) >= FRESH.as_millis() as u64
}

/// Builds the pool without connecting: a database that is down at cold
/// start shows up in `/health` (503) instead of killing the function.
pub fn connect_lazy(config: &PostgresConfig) -> anyhow::Result<PgPool> {
    let mut options = PgConnectOptions::from_str(config.url.expose())
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .application_name("flowise-gateway");
    if let Some(password) = &config.password {
        options = options.password(password.expose());
    }
    let last_use_ms = Arc::new(AtomicU64::new(0));
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
        .test_before_acquire(false)
        .before_acquire(move |conn, meta| {
            let ping = needs_ping(meta.idle_for, &last_use_ms);
            Box::pin(async move { Ok(!ping || conn.ping().await.is_ok()) })
        })
        .connect_lazy_with(options))
}

/// Creates the database `DATABASE_URL` names when it does not exist (a
/// fresh local server). Deployed databases are created by their operator.
pub async fn create_database_if_missing(config: &PostgresConfig) -> anyhow::Result<()> {
    let options = PgConnectOptions::from_str(config.url.expose())
        .context("DATABASE_URL is not a valid PostgreSQL URL")?;
    let Some(name) = options.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = options.database("postgres");
    if let Some(password) = &config.password {
        admin = admin.password(password.expose());
    }
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(admin)
        .await
        .context("Failed to connect to the PostgreSQL server")?;
    let exists = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1) AS "exists!""#,
        name
    )
    .fetch_one(&pool)
    .await
    .context("Failed to look the database up")?;
    if !exists {
        // An identifier, which cannot be a bound parameter: quoted instead.
        sqlx::query(&format!(
            r#"CREATE DATABASE "{}""#,
            name.replace('"', "\"\"")
        ))
        .execute(&pool)
        .await
        .with_context(|| format!("Failed to create the database {name}"))?;
        tracing::info!(database = %name, "database created");
    }
    pool.close().await;
    Ok(())
}

/// Applies pending migrations. Safe when several cold starts race: sqlx
/// holds an advisory lock while it migrates.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    MIGRATOR
        .run(pool)
        .await
        .context("Failed to apply the PostgreSQL migrations")
}

/// Builds the pool and, when `MIGRATE_ON_START` is true, migrates. A
/// failed migration is logged and the function starts anyway: `/health`
/// then reports the database, and queries fail with 503 rather than the
/// function failing to start in a loop.
pub async fn connect_and_migrate(config: &PostgresConfig) -> anyhow::Result<PgPool> {
    let pool = connect_lazy(config)?;
    if config.migrate_on_start {
        if let Err(err) = migrate(&pool).await {
            tracing::error!(error = ?err, "PostgreSQL migrations not applied at start-up");
        }
    }
    Ok(pool)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_is_pinged_after_an_idle_spell_by_either_clock() {
        let last = AtomicU64::new(0);
        assert!(needs_ping(Duration::ZERO, &last), "the first use");
        assert!(!needs_ping(Duration::from_millis(5), &last), "warm");
        assert!(needs_ping(FRESH, &last), "idle by the monotonic clock");
        last.store(wall_clock_ms() - 60_000, Ordering::Relaxed);
        assert!(
            needs_ping(Duration::ZERO, &last),
            "frozen: idle by the wall clock"
        );
        assert!(!needs_ping(Duration::ZERO, &last), "warm again");
    }
}
