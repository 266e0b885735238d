//! The PostgreSQL pool and the migration runner for `migrations/`.

use std::str::FromStr;
use std::time::Duration;

use anyhow::Context;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;

use crate::config::PostgresConfig;

/// The migrations of `migrations/`, embedded at build time.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// Builds the pool without connecting: a database that is down at cold
/// start shows up in `/health` (503) instead of killing the function.
pub fn connect_lazy(config: &PostgresConfig) -> anyhow::Result<PgPool> {
    let mut options = PgConnectOptions::from_str(config.url.expose())
        .context("DATABASE_URL is not a valid PostgreSQL URL")?
        .application_name("flowise-gateway");
    if let Some(password) = &config.password {
        options = options.password(password.expose());
    }
    Ok(PgPoolOptions::new()
        .max_connections(config.max_connections.max(1))
        .acquire_timeout(Duration::from_secs(5))
        .idle_timeout(Duration::from_secs(300))
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
