//! Operator commands that are not requests.
//!
//! `gateway-admin migrate`: creates the database of `DATABASE_URL` when
//! missing and applies `migrations/` to it, and
//! creates the MongoDB indexes on `MONGODB_URI` (both idempotent). The
//! functions do the same at cold start (`MIGRATE_ON_START`); this runs it
//! ahead of time, e.g. from `make run` or after a deploy.

use shared::config::{Env, MongoConfig, PostgresConfig};
use shared::db::{mongo, postgres};

#[tokio::main]
async fn main() -> Result<(), shared::BoxError> {
    shared::telemetry::init();
    let command = std::env::args().nth(1).unwrap_or_default();
    match command.as_str() {
        "migrate" => migrate().await,
        _ => {
            eprintln!("usage: gateway-admin migrate");
            std::process::exit(2);
        }
    }
}

async fn migrate() -> Result<(), shared::BoxError> {
    let env = Env::load().await?;
    let pg = PostgresConfig::from_env(&env)?;
    let mongo_config = MongoConfig::from_env(&env)?;
    postgres::create_database_if_missing(&pg).await?;
    let pool = postgres::connect_lazy(&pg)?;
    postgres::migrate(&pool).await?;
    tracing::info!("PostgreSQL migrations applied");
    let stores = mongo::connect(&mongo_config).await?;
    mongo::ensure_auth_indexes(&stores.auth).await?;
    mongo::ensure_chat_indexes(&stores.chat).await?;
    tracing::info!("MongoDB indexes ensured");
    Ok(())
}
