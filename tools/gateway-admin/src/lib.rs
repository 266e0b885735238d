//! What `gateway-admin` does, as a library its tests drive.

pub mod demo;
pub mod import;

use std::time::Duration;

use axum::Router;
use shared::config::{AdminBootstrap, Env, FlowiseConfig, MongoConfig, PostgresConfig};
use shared::db::{mongo, postgres};
use shared::http::{finish, HealthChecks};

/// Applies the migrations and makes the indexes (the deploy step).
pub async fn migrate() -> Result<(), shared::BoxError> {
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

/// The whole gateway's description: every function's routes, from the
/// declarations their routers are built from.
pub fn openapi() -> utoipa::openapi::OpenApi {
    shared::openapi::merged([
        shared::http::common_openapi(),
        auth::openapi(),
        credits::openapi(),
        usage::openapi(),
        predict::openapi(),
        predict_stream::openapi(),
    ])
}

/// The description as the committed `openapi.yaml`.
pub fn openapi_yaml() -> Result<String, shared::BoxError> {
    let yaml = openapi().to_yaml()?;
    Ok(format!(
        "# Written by `gateway-admin openapi` (make openapi) from the routes' declarations; do not edit.\n{yaml}"
    ))
}

/// Server-sized pools, unless the environment says otherwise.
fn server_env(mut env: Env) -> Env {
    for (name, value) in [
        ("DATABASE_MAX_CONNECTIONS", "20"),
        ("MONGODB_MAX_POOL_SIZE", "20"),
    ] {
        if env.optional(name).is_none() {
            env = env.with(name, value);
        }
    }
    env
}

/// Every function's router on one axum app: the API Gateway paths, the
/// streaming route included, `/health/<function>` for each function, one
/// description (`/openapi.yaml`) and one fallback.
pub async fn app(env: &Env) -> Result<Router, shared::BoxError> {
    let auth = auth::AppState::connect(&auth::Config::from_env(env)?).await?;
    let ledger = credits::AppState::connect(&credits::Config::from_env(env)?).await?;
    let predict = predict::AppState::connect(&predict::Config::from_env(env)?).await?;
    let health = |checks: HealthChecks, name: &str| checks.router_at(&format!("/health/{name}"));
    let api = Router::new()
        .merge(auth::api(auth.clone()))
        .merge(credits::api(ledger.clone()))
        .merge(usage::api(ledger.clone()))
        .merge(predict::api(predict.clone()))
        .merge(predict_stream::api(predict.clone()))
        // Every family and the stream on this one origin.
        .merge(console::routes(console::Console::new(console::Config {
            layout: console::Layout::Gateway {
                stream: String::new(),
            },
            stand_in: env.parse_or("CONSOLE_STAND_IN", false)?,
        })))
        .merge(health(auth.health_checks(), "auth"))
        .merge(health(ledger.health_checks(), "credits"))
        .merge(health(ledger.health_checks(), "usage"))
        .merge(health(predict.health_checks(), "predict"))
        .merge(health(predict.health_checks(), "predict-stream"))
        .merge(health(HealthChecks::default(), "console"));
    // As the streaming function answers: every error under /v1 in
    // OpenAI's envelope.
    Ok(finish(api).layer(axum::middleware::from_fn(
        predict_stream::openai::envelope::layer,
    )))
}

/// Serves [`app`] on `port` (127.0.0.1 unless `SERVE_ADDRESS` says
/// otherwise) and runs the credit-expiry job every
/// `SERVE_JOB_INTERVAL_MINUTES` (15; 0 turns it off), as EventBridge does
/// in AWS.
pub async fn serve(port: u16) -> Result<(), shared::BoxError> {
    let env = server_env(Env::load().await?);
    let app = app(&env).await?;
    let minutes: u64 = env.parse_or("SERVE_JOB_INTERVAL_MINUTES", 15)?;
    if minutes > 0 {
        let job = credit_expiry::Job::connect(&credit_expiry::Config::from_env(&env)?).await?;
        tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_secs(minutes * 60));
            loop {
                every.tick().await;
                if let Err(err) = job.run().await {
                    tracing::error!(error = %err, "the credit-expiry job failed");
                }
            }
        });
    }
    let address = env
        .optional("SERVE_ADDRESS")
        .unwrap_or_else(|| "127.0.0.1".into());
    let listener = tokio::net::TcpListener::bind((address.as_str(), port)).await?;
    tracing::info!(address = %listener.local_addr()?, "serving every function");
    shared::http::serve(listener, app).await?;
    Ok(())
}

/// Runs the Flowise stand-in on `port` until stopped (`make run` starts
/// it when no Flowise answers; see [`shared::flowise_double::FlowiseDouble::stand_in`]).
pub async fn stand_in(port: u16) -> Result<(), shared::BoxError> {
    let double = shared::flowise_double::FlowiseDouble::stand_in(port).await?;
    tracing::warn!(
        url = %double.url,
        "a local stand-in answers as Flowise: its answers are canned, not a model's"
    );
    std::future::pending::<()>().await;
    Ok(())
}

/// Seeds empty stores for a local run ([`demo::seed`]) and says what it
/// did, on standard output.
pub async fn seed_demo() -> Result<(), shared::BoxError> {
    let env = Env::load().await?;
    let stores = mongo::connect(&MongoConfig::from_env(&env)?).await?;
    mongo::ensure_auth_indexes(&stores.auth).await?;
    mongo::ensure_chat_indexes(&stores.chat).await?;
    let pool = postgres::connect_lazy(&PostgresConfig::from_env(&env)?)?;
    let flowise = shared::flowise::FlowiseClient::new(&FlowiseConfig::from_env(&env)?)?;
    let admin = AdminBootstrap::from_env(&env)?;
    let user = demo::DemoUser::from_env(&env);
    let seeded = demo::seed(&stores, &pool, &flowise, admin.as_ref(), &user).await?;
    if let Some(admin) = &admin {
        println!("  First admin: {} (ADMIN_PASSWORD)", admin.email);
    }
    match &seeded.demo_user {
        Some(_) => println!(
            "  Demo user:   {} / {} ({} credits granted now)",
            user.email,
            user.password_hint(),
            seeded.granted
        ),
        None => println!("  Demo user:   none (another account holds DEMO_USERNAME or DEMO_EMAIL)"),
    }
    if let Some(why) = &seeded.sync_failed {
        println!("  Chatflows:   not synced ({why})");
    }
    Ok(())
}

/// Fails, saying what to do, when the gateway's database lacks a
/// migration (what a dry run finds instead of applying it).
async fn pending_migrations(pool: &sqlx::PgPool) -> anyhow::Result<()> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .unwrap_or_default();
    let missing = postgres::MIGRATOR
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .count();
    anyhow::ensure!(
        missing == 0,
        "the gateway's database lacks {missing} migration(s): run `gateway-admin migrate` \
         (or the import without --dry-run, which migrates first); a dry run writes nothing"
    );
    Ok(())
}

/// `gateway-admin import-platform`: migrates the gateway's stores (those of
/// its usual environment), imports the platform's three stores into them
/// ([`import::run`]), and prints the report (one JSON object with `json`,
/// else a summary). Progress goes to standard error.
pub async fn import_platform(
    auth_uri: &str,
    proxy_uri: &str,
    accounting_url: &str,
    dry_run: bool,
    json: bool,
) -> Result<(), shared::BoxError> {
    use anyhow::Context;
    let env = Env::load().await?;
    let pool = postgres::connect_lazy(&PostgresConfig::from_env(&env)?)?;
    if dry_run {
        // A dry run writes nothing, migrations included.
        pending_migrations(&pool).await?;
    } else {
        migrate()
            .await
            .map_err(|e| anyhow::anyhow!("migrating the gateway's stores: {e}"))?;
    }
    let stores = mongo::connect(&MongoConfig::from_env(&env)?).await?;
    let target = import::Target {
        mongo: stores,
        pool,
        max_upload_bytes: shared::config::Limits::from_env(&env)?.max_upload_bytes,
    };
    let source = import::Source::connect(auth_uri, proxy_uri, accounting_url).await?;
    let mut progress = import::Progress::stderr();
    let report = import::run(&source, &target, dry_run, &mut progress).await;
    source.close().await;
    target.mongo.client.clone().shutdown().await;
    let report = report.context("the import stopped")?;
    if json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.summary(dry_run));
    }
    Ok(())
}
