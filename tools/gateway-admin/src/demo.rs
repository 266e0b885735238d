//! What `make run` puts in empty stores so a newcomer chats at once
//! (`gateway-admin seed-demo`, local runs only: the SAM template never
//! runs it): the first admin, a verified demo user with credits, and the
//! chatflows of the Flowise at `FLOWISE_API_URL` (the stand-in's demo
//! chatflow is listed there as public, so everyone may use it).
//!
//! Idempotent, and it never hands anything to an account it did not make:
//! an existing account holding the demo name or address is used only when
//! both match (a seed before made it); the credits are granted in the
//! transaction that opens the demo user's ledger account, so a second run,
//! or a demo user who has already spent, gets none.

use auth::bootstrap::{ensure_first_admin, Bootstrap};
use auth::routes::account::new_user;
use auth::store::AuthStore;
use shared::config::{AdminBootstrap, Env, Secret};
use shared::db::mongo::MongoStores;
use shared::flowise::FlowiseClient;
use shared::identity::{Email, Password, Username};
use shared::ids::UserId;
use shared::ledger::changes::allocate;
use shared::ledger::primitives::{begin, commit};
use shared::ledger::{Credits, Durability, EntryMeta};
use shared::token::Role;
use shared::ApiError;

/// Credits the demo user starts with (no expiry; a default-priced demo
/// answer costs 2).
pub const DEMO_CREDITS: i64 = 100;

/// `DEMO_USERNAME`, `DEMO_EMAIL`, `DEMO_PASSWORD` (`demo`,
/// `demo@example.com`, `demo-password` when unset).
#[derive(Debug, Clone)]
pub struct DemoUser {
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// Password.
    pub password: Secret,
}

impl DemoUser {
    /// Reads the three variables, with their defaults.
    pub fn from_env(env: &Env) -> DemoUser {
        let or = |name: &str, default: &str| env.optional(name).unwrap_or_else(|| default.into());
        DemoUser {
            username: or("DEMO_USERNAME", "demo"),
            email: or("DEMO_EMAIL", "demo@example.com"),
            password: Secret::new(or("DEMO_PASSWORD", DEFAULT_PASSWORD)),
        }
    }

    /// The password as `make run` prints it: the well-known default
    /// itself, never one the operator chose.
    pub fn password_hint(&self) -> &str {
        match self.password.expose() {
            DEFAULT_PASSWORD => DEFAULT_PASSWORD,
            _ => "DEMO_PASSWORD",
        }
    }
}

const DEFAULT_PASSWORD: &str = "demo-password";

/// What a seed found or did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seeded {
    /// The first admin's fate (`None`: no `ADMIN_*` set).
    pub admin: Option<Bootstrap>,
    /// The demo user's id (`None`: another account holds the name or
    /// address; nothing was granted).
    pub demo_user: Option<String>,
    /// Credits granted by this run (0 after the first).
    pub granted: i64,
    /// Why the chatflows could not be synced, when they could not.
    pub sync_failed: Option<String>,
}

/// Seeds the stores (see the module's comment).
pub async fn seed(
    stores: &MongoStores,
    pool: &sqlx::PgPool,
    flowise: &FlowiseClient,
    admin: Option<&AdminBootstrap>,
    demo: &DemoUser,
) -> Result<Seeded, shared::BoxError> {
    let store = AuthStore::new(stores.auth.clone());
    let admin = match admin {
        Some(admin) => Some(ensure_first_admin(&store, admin).await?),
        None => None,
    };
    let demo_user = demo_account(&store, demo).await?;
    let granted = match &demo_user {
        Some(id) => grant_once(pool, &UserId::parse("userId", id)?).await?,
        None => 0,
    };
    let sync_failed = shared::chat::chatflows::sync_chatflows(&stores.chat, flowise)
        .await
        .err()
        .map(|e| e.to_string());
    Ok(Seeded {
        admin,
        demo_user,
        granted,
        sync_failed,
    })
}

/// The demo user's id: made verified now, or found (name and address
/// both matching); `None` when another account holds either.
async fn demo_account(
    store: &AuthStore,
    demo: &DemoUser,
) -> Result<Option<String>, shared::BoxError> {
    let username = Username::parse("DEMO_USERNAME", &demo.username)?;
    let email = Email::parse("DEMO_EMAIL", &demo.email)?;
    let password = Password::parse("DEMO_PASSWORD", demo.password.expose())?;
    // Twice at most: a concurrent seed may insert between the look-up and
    // the insert (the unique indexes refuse the second); then it is found.
    for _ in 0..2 {
        let by_name = store.user_by_username(username.as_str()).await?;
        let by_email = store.user_by_email(email.as_str()).await?;
        match (by_name, by_email) {
            (Some(a), Some(b)) if a.id == b.id => return Ok(Some(a.id)),
            (None, None) => {
                let doc = new_user(&username, &email, &password, Role::Enduser, true).await?;
                match store.insert_user(&doc).await {
                    Ok(()) => return Ok(Some(doc.id)),
                    Err(ApiError::Conflict { .. }) => continue,
                    Err(other) => return Err(other.into()),
                }
            }
            _ => break,
        }
    }
    tracing::error!("another account holds DEMO_USERNAME or DEMO_EMAIL: no demo user, no credits");
    Ok(None)
}

/// Grants [`DEMO_CREDITS`] in the transaction that opens `user`'s ledger
/// account; rolls back (0) when the account existed.
async fn grant_once(pool: &sqlx::PgPool, user: &UserId) -> Result<i64, shared::BoxError> {
    let mut tx = begin(pool, Durability::Flushed).await?;
    let meta = EntryMeta {
        actor_id: Some("system"),
        description: Some("Demo credits from make run"),
        ..EntryMeta::default()
    };
    let credits = Credits::parse("credits", DEMO_CREDITS)?;
    let granted = allocate(&mut tx, user, credits, None, None, &meta).await?;
    if !granted.account_created {
        return Ok(0); // Dropped: rolled back.
    }
    commit(tx).await?;
    Ok(DEMO_CREDITS)
}
