//! The MongoDB client, the two databases (`auth`, `chat`) and their indexes
//! (README §10): made by `gateway-admin migrate` at deploy, checked (and
//! made when missing) on a function's first request.

use std::time::Duration;

use anyhow::Context;
use bson::{doc, Document};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Database, IndexModel};

use crate::config::MongoConfig;

/// The client and both databases.
#[derive(Clone, Debug)]
pub struct MongoStores {
    /// The client (a pool; cheap to clone).
    pub client: Client,
    /// `MONGODB_AUTH_DB`: users, refresh tokens, email codes.
    pub auth: Database,
    /// `MONGODB_CHAT_DB`: users from claims, chatflows, sessions, messages, files.
    pub chat: Database,
}

/// Builds the client without waiting for the server (the driver connects
/// on first use), with short timeouts so a down server is reported quickly.
pub async fn connect(config: &MongoConfig) -> anyhow::Result<MongoStores> {
    let mut options = ClientOptions::parse(config.uri.expose())
        .await
        .context("MONGODB_URI is not a valid MongoDB URI")?;
    if let Some(password) = &config.password {
        let credential = options
            .credential
            .as_mut()
            .context("MONGODB_PASSWORD is set but MONGODB_URI names no user")?;
        credential.password = Some(password.expose().to_owned());
    }
    options
        .app_name
        .get_or_insert_with(|| "flowise-gateway".into());
    options
        .server_selection_timeout
        .get_or_insert(Duration::from_secs(5));
    options
        .connect_timeout
        .get_or_insert(Duration::from_secs(5));
    // One Lambda instance serves one request at a time.
    options.max_pool_size.get_or_insert(config.max_pool_size);
    let client = Client::with_options(options).context("Failed to build the MongoDB client")?;
    Ok(MongoStores {
        auth: client.database(&config.auth_db),
        chat: client.database(&config.chat_db),
        client,
    })
}

fn index(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(IndexOptions::builder().name(name.to_owned()).build())
        .build()
}

fn unique(keys: Document, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(keys)
        .options(
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(true)
                .build(),
        )
        .build()
}

/// A TTL index: MongoDB deletes the document once `field` is in the past.
fn expires(field: &str, name: &str) -> IndexModel {
    IndexModel::builder()
        .keys(doc! { field: 1 })
        .options(
            IndexOptions::builder()
                .name(name.to_owned())
                .expire_after(Duration::ZERO)
                .build(),
        )
        .build()
}

/// Creates those of `models` that `collection` lacks (by name): one
/// `listIndexes`, and a `createIndexes` only when one is missing.
async fn create(db: &Database, collection: &str, models: Vec<IndexModel>) -> anyhow::Result<()> {
    let coll = db.collection::<Document>(collection);
    let existing: Vec<String> = match coll.list_index_names().await {
        Ok(names) => names,
        // A collection that does not exist yet has no index.
        Err(e) if matches!(*e.kind, mongodb::error::ErrorKind::Command(ref c) if c.code == 26) => {
            Vec::new()
        }
        Err(e) => {
            return Err(anyhow::Error::new(e)).with_context(|| {
                format!("Failed to list the indexes of {}.{collection}", db.name())
            })
        }
    };
    let missing: Vec<IndexModel> = models
        .into_iter()
        .filter(|m| {
            let name = m.options.as_ref().and_then(|o| o.name.as_deref());
            !name.is_some_and(|n| existing.iter().any(|e| e == n))
        })
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    coll.create_indexes(missing)
        .await
        .with_context(|| format!("Failed to create the indexes of {}.{collection}", db.name()))?;
    Ok(())
}

/// Ensures every `(collection, indexes)` of `table`, concurrently.
async fn ensure_all(
    db: &Database,
    table: Vec<(&'static str, Vec<IndexModel>)>,
) -> anyhow::Result<()> {
    let work = table
        .into_iter()
        .map(|(collection, models)| create(db, collection, models));
    futures_util::future::try_join_all(work).await?;
    Ok(())
}

/// Indexes of the `auth` database. Usernames are unique case-insensitively
/// through `username_key` (the lower-cased username), emails through the
/// lower-cased `email`.
pub async fn ensure_auth_indexes(db: &Database) -> anyhow::Result<()> {
    ensure_all(
        db,
        vec![
            (
                "users",
                vec![
                    unique(doc! {"username_key": 1}, "username_key_unique"),
                    unique(doc! {"email": 1}, "email_unique"),
                    index(doc! {"role": 1, "created_at": -1}, "role_created_at"),
                    index(doc! {"pending_email": 1}, "pending_email"),
                ],
            ),
            (
                "refresh_tokens",
                vec![
                    unique(doc! {"token_hash": 1}, "token_hash_unique"),
                    index(doc! {"family_id": 1}, "family_id"),
                    index(doc! {"user_id": 1}, "user_id"),
                    expires("expires_at", "expires_at_ttl"),
                ],
            ),
            (
                "login_failures",
                vec![expires("expires_at", "expires_at_ttl")],
            ),
            (
                "code_attempts",
                vec![expires("expires_at", "expires_at_ttl")],
            ),
            (
                "mail_throttle",
                vec![expires("expires_at", "expires_at_ttl")],
            ),
            (
                "email_codes",
                vec![
                    index(doc! {"email": 1, "purpose": 1}, "email_purpose"),
                    index(doc! {"user_id": 1, "purpose": 1}, "user_purpose"),
                    index(doc! {"code_hash": 1}, "code_hash"),
                    expires("expires_at", "expires_at_ttl"),
                ],
            ),
        ],
    )
    .await
}

/// Indexes of the `chat` database.
pub async fn ensure_chat_indexes(db: &Database) -> anyhow::Result<()> {
    ensure_all(
        db,
        vec![
            (
                "chatflows",
                vec![unique(doc! {"chatflow_id": 1}, "chatflow_id_unique")],
            ),
            (
                "chat_sessions",
                vec![
                    unique(doc! {"session_id": 1}, "session_id_unique"),
                    index(doc! {"user_id": 1, "updated_at": -1}, "user_updated_at"),
                    index(doc! {"user_id": 1, "transcript": 1}, "user_transcript"),
                ],
            ),
            (
                "chat_messages",
                vec![
                    index(
                        doc! {"session_id": 1, "created_at": 1},
                        "session_created_at",
                    ),
                    index(doc! {"message_id": 1}, "message_id"),
                ],
            ),
            (
                "files",
                vec![
                    index(doc! {"owner_id": 1, "created_at": -1}, "owner_created_at"),
                    index(doc! {"session_id": 1}, "session_id"),
                ],
            ),
        ],
    )
    .await
}

/// The indexes a function needs, checked on its first request and, while any is
/// missing, retried before every request and health probe: uniqueness
/// (usernames, emails, sessions) is never silently missing. Until they
/// exist, requests answer 503 naming them and `/health` is 503, saying
/// which unique index duplicate values block, when that is why.
#[derive(Clone)]
pub struct IndexGuard {
    stores: MongoStores,
    auth: bool,
    chat: bool,
    ready: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Why the last attempt failed, for `/health`.
    failure: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    /// Run once every index is made, until it succeeds; requests wait for
    /// it (503) as they do for the indexes.
    on_ready: Option<OnReady>,
}

/// Work that needs the indexes and that requests need done (the first
/// admin: see the auth function); answers whether it is done.
pub type OnReady = std::sync::Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync,
>;

impl std::fmt::Debug for IndexGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexGuard")
            .field("auth", &self.auth)
            .field("chat", &self.chat)
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl IndexGuard {
    /// A guard for the `auth` and/or `chat` indexes (nothing is created yet).
    pub fn new(stores: MongoStores, auth: bool, chat: bool) -> Self {
        IndexGuard {
            stores,
            auth,
            chat,
            ready: Default::default(),
            failure: Default::default(),
            on_ready: None,
        }
    }

    /// The same guard, running `work` once every index is made and until
    /// it succeeds; until then the guard is not ready, so requests answer
    /// 503 as they do while an index is missing (a public route never runs
    /// before the work is done).
    pub fn on_ready(mut self, work: OnReady) -> Self {
        self.on_ready = Some(work);
        self
    }

    /// Whether every index was seen created.
    pub fn is_ready(&self) -> bool {
        self.ready.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Why the indexes are missing, as `/health` says it: `missing`, or
    /// which unique index duplicate values block.
    pub fn failure(&self) -> Option<String> {
        self.failure.lock().ok().and_then(|f| f.clone())
    }

    /// Creates the indexes unless they were seen created; `Err` names the
    /// database whose indexes are missing (the cause is logged, with the
    /// duplicate values when they are the cause).
    pub async fn ensure(&self) -> Result<(), String> {
        if self.is_ready() {
            return Ok(());
        }
        let mut missing = Vec::new();
        let mut blocked = Vec::new();
        let wanted = [
            (self.auth, &self.stores.auth, "auth"),
            (self.chat, &self.stores.chat, "chat"),
        ];
        for (wanted, db, kind) in wanted {
            if !wanted {
                continue;
            }
            let made = if kind == "auth" {
                ensure_auth_indexes(db).await
            } else {
                ensure_chat_indexes(db).await
            };
            if let Err(err) = made {
                tracing::error!(error = ?err, database = %db.name(), "MongoDB indexes are missing");
                missing.push(db.name().to_owned());
                blocked.extend(duplicate_of(&err));
            }
        }
        let done = match (&self.on_ready, missing.is_empty()) {
            (Some(work), true) => work().await,
            (_, ready) => ready,
        };
        if done {
            self.ready.store(true, std::sync::atomic::Ordering::Release);
            return Ok(());
        }
        let why = if missing.is_empty() {
            "the work that waits for them failed (see the log)".to_owned()
        } else if blocked.is_empty() {
            "missing".to_owned()
        } else {
            format!(
                "duplicate values block the unique index {}",
                blocked.join(", ")
            )
        };
        if let Ok(mut failure) = self.failure.lock() {
            *failure = Some(why.clone());
        }
        Err(if missing.is_empty() {
            format!("the MongoDB indexes are made, but {why}")
        } else {
            format!(
                "the MongoDB indexes of {} could not be created ({why})",
                missing.join(" and ")
            )
        })
    }
}

/// The unique index an index build failed on because of duplicate values
/// (`collection.index`), when that is why it failed. The duplicate value
/// itself is only logged: `/health` is public.
fn duplicate_of(err: &anyhow::Error) -> Option<String> {
    let mongo = err
        .chain()
        .find_map(|e| e.downcast_ref::<mongodb::error::Error>())?;
    let text = mongo.to_string();
    if !is_duplicate_key(mongo) && !text.contains("E11000") && !text.contains("duplicate key") {
        return None;
    }
    let after = |marker: &str| {
        text.split_once(marker)
            .map(|(_, rest)| {
                rest.split_whitespace()
                    .next()
                    .unwrap_or("")
                    .trim_matches(|c| c == ':' || c == ',')
                    .to_owned()
            })
            .filter(|s| !s.is_empty())
    };
    let collection = after("collection:").map(|c| c.rsplit('.').next().unwrap_or(&c).to_owned());
    let index = after("index:");
    Some(match (collection, index) {
        (Some(c), Some(i)) => format!("{c}.{i}"),
        (Some(c), None) => c,
        (None, Some(i)) => i,
        (None, None) => "of a collection (see the log)".to_owned(),
    })
}

/// Reads every document a cursor yields.
pub async fn collect_all<T>(mut cursor: mongodb::Cursor<T>) -> Result<Vec<T>, mongodb::error::Error>
where
    T: serde::de::DeserializeOwned + Send + Sync,
{
    let mut out = Vec::new();
    while cursor.advance().await? {
        out.push(cursor.deserialize_current()?);
    }
    Ok(out)
}

/// Whether a MongoDB error is a duplicate-key violation (code 11000),
/// whatever shape the driver wraps it in.
pub fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|e| e.code == 11000)),
        ErrorKind::BulkWrite(e) => e.write_errors.values().any(|e| e.code == 11000),
        _ => err.to_string().contains("E11000"),
    }
}
