//! `gateway-admin import-platform`: moves the replaced platform's users,
//! passwords, credits, usage, chatflows, access, history and files into
//! the gateway's stores (README, "Moving in from the platform"; the
//! platform's stores are described in `PLATFORM_STORES.md`).
//!
//! Every record is keyed by its id on the platform: a user keeps its id,
//! a session its id, a message and a file the hex of their ObjectId, and
//! the PostgreSQL rows made from the platform's rows have ids derived from
//! `table/id` ([`derived_id`]). Each key brought is recorded in the
//! journal (`platform_imports`) after its record is written. So a second
//! run, or a run after an interrupted one, writes only what is new: a key
//! in the journal is done even if its record was deleted here since (a
//! user, a grant, a conversation), and a record found here but not yet in
//! the journal (a run stopped between the two) is recorded then. The one
//! thing a later run changes is money: what the platform spent of an
//! allocation after it was brought (or a row it replaced) is taken here
//! too, from what is left of it.
//!
//! Records are read as streams and written in batches. What a run keeps
//! in memory is ids, never documents: the users brought (what every later
//! record's owner must be), the usernames and emails claimed, the
//! sessions brought, the files not brought (a message notes them), and a
//! chatflow's granted users (written as one list).
//!
//! A dry run reads and checks everything the same way and writes nothing
//! (it does not migrate either: it needs a migrated gateway). Two imports
//! never run at once: the first holds a PostgreSQL advisory lock for its
//! whole run, on a connection of its own.

mod accounts;
mod catalogue;
mod history;
mod ledger;
mod messages;
pub mod progress;
pub mod report;

use std::collections::HashSet;

use anyhow::Context;
use mongodb::options::ClientOptions;
use mongodb::{Client, Database};
use shared::db::mongo::MongoStores;
use sqlx::{ConnectOptions, PgPool};

pub use progress::Progress;
pub use report::{Report, Skip, Tally};

/// The platform's three stores.
#[derive(Clone, Debug)]
pub struct Source {
    /// The auth service's database (`auth_db`).
    pub auth: Database,
    /// The proxy's database (`flowise_proxy`).
    pub proxy: Database,
    /// The accounting service's database.
    pub accounting: PgPool,
}

impl Source {
    /// Closes the connections (before the runtime stops, so that no
    /// driver task outlives it).
    pub async fn close(self) {
        self.auth.client().clone().shutdown().await;
        self.proxy.client().clone().shutdown().await;
        self.accounting.close().await;
    }

    /// Connects to the three stores; each MongoDB URI names its database
    /// in its path.
    pub async fn connect(
        auth_uri: &str,
        proxy_uri: &str,
        accounting_url: &str,
    ) -> anyhow::Result<Self> {
        let auth = database(auth_uri, "--auth-mongodb").await?;
        let proxy = database(proxy_uri, "--proxy-mongodb").await?;
        let accounting = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(accounting_url)
            .await
            .context("cannot reach --accounting-postgres")?;
        Ok(Source {
            auth,
            proxy,
            accounting,
        })
    }
}

async fn database(uri: &str, flag: &str) -> anyhow::Result<Database> {
    let options = ClientOptions::parse(uri)
        .await
        .with_context(|| format!("{flag} is not a MongoDB URI"))?;
    let name = options.default_database.clone().with_context(|| {
        format!("{flag} must name its database in its path (mongodb://host/auth_db)")
    })?;
    let client = Client::with_options(options).with_context(|| format!("{flag}: bad options"))?;
    Ok(client.database(&name))
}

/// The gateway's stores, as its functions use them.
#[derive(Clone, Debug)]
pub struct Target {
    /// `auth` and `chat`.
    pub mongo: MongoStores,
    /// The ledger.
    pub pool: PgPool,
    /// `MAX_UPLOAD_BYTES`: larger files are not brought.
    pub max_upload_bytes: usize,
}

/// One run's state: what it read so far and what it decided.
pub(crate) struct Run<'a> {
    source: &'a Source,
    target: &'a Target,
    dry_run: bool,
    progress: &'a mut Progress,
    report: Report,
    /// Users brought (or already here): what every later record's owner
    /// must be.
    users: HashSet<String>,
}

/// Imports everything from `source` into `target` (nothing written when
/// `dry_run`), in the order the records depend on each other.
pub async fn run(
    source: &Source,
    target: &Target,
    dry_run: bool,
    progress: &mut Progress,
) -> anyhow::Result<Report> {
    // Its own connection, held for the run: the pool may be as small as
    // one.
    let mut lock = target
        .pool
        .connect_options()
        .connect()
        .await
        .context("the gateway's PostgreSQL")?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(IMPORT_LOCK)
        .fetch_one(&mut lock)
        .await?;
    anyhow::ensure!(
        locked,
        "another import-platform is running against these stores"
    );
    let mut run = Run {
        source,
        target,
        dry_run,
        progress,
        report: Report::default(),
        users: HashSet::new(),
    };
    let result = run.everything().await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(IMPORT_LOCK)
        .execute(&mut lock)
        .await;
    result.map(|()| run.report)
}

/// The advisory lock an import holds ("fgw-import" as a number).
const IMPORT_LOCK: i64 = 0x6667_772d_696d_7074;

impl Run<'_> {
    async fn everything(&mut self) -> anyhow::Result<()> {
        self.users().await.context("importing users")?;
        self.allocations()
            .await
            .context("importing credit allocations")?;
        self.usage().await.context("importing usage records")?;
        let flows = self.chatflows().await.context("importing chatflows")?;
        self.access(&flows)
            .await
            .context("importing chatflow access")?;
        let notes = self.files().await.context("importing files")?;
        let sessions = self.sessions().await.context("importing chat sessions")?;
        self.messages(&sessions, &notes)
            .await
            .context("importing chat messages")?;
        Ok(())
    }
}

/// The id of the row made from the platform's `source` (`table/id` and,
/// for a ledger entry, its part): the same on every run.
pub fn derived_id(source: &str) -> uuid::Uuid {
    let hex = shared::digest::sha256_hex(format!("platform:{source}").as_bytes());
    let bits = u128::from_str_radix(&hex[..32], 16).unwrap_or_default();
    uuid::Builder::from_custom_bytes(bits.to_be_bytes()).into_uuid()
}

/// How many records a batch reads before it writes.
pub(crate) const BATCH: usize = 500;

impl Run<'_> {
    /// The keys among `keys` an earlier run brought (`platform_imports`).
    pub(crate) async fn journaled(&self, keys: &[String]) -> anyhow::Result<HashSet<String>> {
        if keys.is_empty() {
            return Ok(HashSet::new());
        }
        let found: Vec<String> =
            sqlx::query_scalar("SELECT source FROM platform_imports WHERE source = ANY($1)")
                .bind(keys)
                .fetch_all(&self.target.pool)
                .await?;
        Ok(found.into_iter().collect())
    }

    /// Records `keys` as brought (nothing in a dry run). Written after the
    /// records themselves: a run stopped in between finds them here and
    /// records them then.
    pub(crate) async fn journal(&self, keys: &[String]) -> anyhow::Result<()> {
        if self.dry_run || keys.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "INSERT INTO platform_imports (source) SELECT unnest($1::text[])
             ON CONFLICT (source) DO NOTHING",
        )
        .bind(keys)
        .execute(&self.target.pool)
        .await?;
        Ok(())
    }
}

/// Reads a collection's cursor [`BATCH`] documents at a time.
pub(crate) struct Batches {
    cursor: mongodb::Cursor<bson::Document>,
}

/// Reads a table [`BATCH`] rows at a time, in the order of its integer
/// `id` (a page per query: no cursor held between batches).
pub(crate) struct Pages {
    sql: &'static str,
    after: i32,
}

/// A platform row's integer id.
pub(crate) trait Keyed {
    fn key(&self) -> i32;
}

impl Run<'_> {
    /// Starts the step that reads `collection` of `db` in `sort` order.
    pub(crate) async fn read(
        &mut self,
        db: &Database,
        collection: &str,
        sort: bson::Document,
    ) -> anyhow::Result<Batches> {
        let source = db.collection::<bson::Document>(collection);
        let total = source.count_documents(bson::doc! {}).await?;
        self.progress.start(collection, total);
        // The cursor is read to its end; a batch's work (a file's bytes)
        // may outlast the server's idle timeout.
        let cursor = source
            .find(bson::doc! {})
            .sort(sort)
            .no_cursor_timeout(true)
            .allow_disk_use(true)
            // A batch's worth at a time (the server would send up to
            // 16 MiB per round trip).
            .batch_size(BATCH as u32)
            .await?;
        Ok(Batches { cursor })
    }

    /// The next documents, `None` once every one was read.
    pub(crate) async fn next(
        &mut self,
        batches: &mut Batches,
    ) -> anyhow::Result<Option<Vec<bson::Document>>> {
        use futures_util::TryStreamExt;
        let mut batch = Vec::with_capacity(BATCH);
        while batch.len() < BATCH {
            match batches.cursor.try_next().await? {
                Some(doc) => batch.push(doc),
                None => break,
            }
        }
        self.progress.add(batch.len() as u64);
        Ok((!batch.is_empty()).then_some(batch))
    }

    /// Starts the step that reads `table` with `sql` (`$1`: the last id
    /// read, `$2`: how many).
    pub(crate) async fn read_table(
        &mut self,
        table: &str,
        sql: &'static str,
    ) -> anyhow::Result<Pages> {
        let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {table}"))
            .fetch_one(&self.source.accounting)
            .await?;
        self.progress.start(table, total as u64);
        Ok(Pages {
            sql,
            after: i32::MIN,
        })
    }

    /// The next rows, `None` once every one was read.
    pub(crate) async fn next_rows<T>(&mut self, pages: &mut Pages) -> anyhow::Result<Option<Vec<T>>>
    where
        T: for<'r> sqlx::FromRow<'r, sqlx::postgres::PgRow> + Keyed + Send + Unpin,
    {
        let rows: Vec<T> = sqlx::query_as(pages.sql)
            .bind(pages.after)
            .bind(BATCH as i64)
            .fetch_all(&self.source.accounting)
            .await?;
        let Some(last) = rows.last() else {
            return Ok(None);
        };
        pages.after = last.key();
        self.progress.add(rows.len() as u64);
        Ok(Some(rows))
    }
}

/// `doc` read as the platform writes `collection`'s documents; skipped in
/// `tally`, with what is wrong, when it is not.
pub(crate) fn parse<T: serde::de::DeserializeOwned>(
    doc: bson::Document,
    collection: &str,
    tally: &mut Tally,
) -> Option<T> {
    let id = doc.get("_id").map(source_id).unwrap_or_default();
    bson::from_document(doc)
        .map_err(|e| {
            let reason = format!("it is not as the platform writes {collection}: {e}");
            tally.skip(format!("{collection}/{id}"), reason);
        })
        .ok()
}

/// Why a session id the gateway could not serve (its ids are 1 to 128
/// characters, no control characters, no surrounding spaces) does not
/// come, if it does not.
pub(crate) fn session_id_refusal(id: &str) -> Option<String> {
    match shared::ids::check_id(id) {
        Ok(checked) if checked == id => None,
        Ok(_) => {
            Some("its session id has spaces around it, which the gateway's ids may not".into())
        }
        Err(problem) => Some(format!("its session id {problem}, as the gateway's do")),
    }
}

/// Why a record of user `id` does not come: its user is not here.
pub(crate) fn not_here(id: &str) -> String {
    format!("its user {id:?} is not here (not brought: see users; or deleted since)")
}

/// An id as the report names it: an ObjectId's hex, a string as it is.
pub(crate) fn source_id(id: &bson::Bson) -> String {
    match id {
        bson::Bson::ObjectId(oid) => oid.to_hex(),
        bson::Bson::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_ids_are_stable_and_distinct() {
        let a = derived_id("credit_allocations/12");
        assert_eq!(a, derived_id("credit_allocations/12"));
        assert_ne!(a, derived_id("credit_allocations/13"));
        assert_ne!(a, derived_id("usage_records/12"));
        assert_eq!(a.get_version_num(), 8);
    }
}
