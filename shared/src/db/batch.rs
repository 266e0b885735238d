//! Writes to several collections at once: one `bulkWrite` command where
//! the server takes it (MongoDB 8.0 and later), else one command a write,
//! all sent together. A prediction's history (the session, its messages,
//! the files they used) is one such batch, so it costs one round trip
//! instead of one per collection.
//!
//! The writes are unordered and not a transaction: each stands alone, as
//! the separate commands they replace did, and none may depend on another
//! (they can run in any order). A server without the command (the driver
//! refuses it below MongoDB 8.0, before sending anything; or the server
//! turns it away before running any write) is remembered for the rest of
//! the process, which then sends one command a write.

use std::sync::atomic::{AtomicBool, Ordering};

use bson::Document;
use mongodb::error::{Error, ErrorKind};
use mongodb::options::{InsertOneModel, UpdateModifications, UpdateOneModel, WriteModel};
use mongodb::{Database, Namespace};

/// One write of a batch.
#[derive(Debug, Clone)]
pub enum Write {
    /// `documents` inserted into `collection`.
    Insert {
        /// The collection.
        collection: &'static str,
        /// What is inserted.
        documents: Vec<Document>,
    },
    /// The first document of `collection` matching `filter` updated.
    Update {
        /// The collection.
        collection: &'static str,
        /// Which document.
        filter: Document,
        /// Update operators or a pipeline.
        update: UpdateModifications,
    },
}

impl Write {
    /// `documents`, serialised, inserted into `collection`.
    pub fn insert<'a, T: serde::Serialize + 'a>(
        collection: &'static str,
        documents: impl IntoIterator<Item = &'a T>,
    ) -> Result<Write, Error> {
        let documents = documents
            .into_iter()
            .map(|d| bson::to_document(d).map_err(Error::from))
            .collect::<Result<_, _>>()?;
        Ok(Write::Insert {
            collection,
            documents,
        })
    }
}

/// How a batch reaches the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Batching {
    /// One `bulkWrite` command (MongoDB 8.0 and later).
    OneCommand,
    /// One command a write (`insert` or `update`), sent at once.
    PerWrite,
}

/// Set once the server was found to lack `bulkWrite`.
static ONE_COMMAND_REFUSED: AtomicBool = AtomicBool::new(false);

/// How this process sends a batch: one command until the server refused it.
pub fn batching() -> Batching {
    if ONE_COMMAND_REFUSED.load(Ordering::Relaxed) {
        Batching::PerWrite
    } else {
        Batching::OneCommand
    }
}

/// Runs `writes` in `db` as [`batching`] says, falling back to one command
/// a write (for good) when the server lacks `bulkWrite`. Returns, for each
/// write, the documents it inserted or the documents its filter matched.
pub async fn write(db: &Database, writes: &[Write]) -> Result<Vec<u64>, Error> {
    if batching() == Batching::OneCommand {
        match write_as(db, writes, Batching::OneCommand).await {
            Err(err) if lacks_bulk_write(&err) => {
                ONE_COMMAND_REFUSED.store(true, Ordering::Relaxed);
                tracing::info!(error = %err, "MongoDB lacks bulkWrite; writing one command a collection");
            }
            done => return done,
        }
    }
    write_as(db, writes, Batching::PerWrite).await
}

/// Runs `writes` in `db` the way `batching` names (see [`write`]).
pub async fn write_as(
    db: &Database,
    writes: &[Write],
    batching: Batching,
) -> Result<Vec<u64>, Error> {
    match batching {
        Batching::OneCommand => one_command(db, writes).await,
        Batching::PerWrite => {
            let each = writes.iter().map(|write| one_write(db, write));
            futures_util::future::try_join_all(each).await
        }
    }
}

async fn one_command(db: &Database, writes: &[Write]) -> Result<Vec<u64>, Error> {
    let namespace = |collection: &str| Namespace::new(db.name(), collection);
    let mut models: Vec<WriteModel> = Vec::new();
    // The write each model belongs to.
    let mut owner = Vec::new();
    for (i, write) in writes.iter().enumerate() {
        match write {
            Write::Insert {
                collection,
                documents,
            } => models.extend(documents.iter().map(|document| {
                InsertOneModel::builder()
                    .namespace(namespace(collection))
                    .document(document.clone())
                    .build()
                    .into()
            })),
            Write::Update {
                collection,
                filter,
                update,
            } => models.push(
                UpdateOneModel::builder()
                    .namespace(namespace(collection))
                    .filter(filter.clone())
                    .update(update.clone())
                    .build()
                    .into(),
            ),
        }
        owner.resize(models.len(), i);
    }
    let mut counts = vec![0; writes.len()];
    if models.is_empty() {
        return Ok(counts);
    }
    let done = db
        .client()
        .bulk_write(models)
        .ordered(false)
        .verbose_results()
        .await?;
    for model in done.insert_results.keys() {
        counts[owner[*model]] += 1;
    }
    for (model, updated) in &done.update_results {
        counts[owner[*model]] += updated.matched_count;
    }
    Ok(counts)
}

async fn one_write(db: &Database, write: &Write) -> Result<u64, Error> {
    match write {
        Write::Insert { documents, .. } if documents.is_empty() => Ok(0),
        Write::Insert {
            collection,
            documents,
        } => {
            let coll = db.collection::<Document>(collection);
            let inserted = coll.insert_many(documents).await?;
            Ok(inserted.inserted_ids.len() as u64)
        }
        Write::Update {
            collection,
            filter,
            update,
        } => {
            let coll = db.collection::<Document>(collection);
            let updated = coll.update_one(filter.clone(), update.clone()).await?;
            Ok(updated.matched_count)
        }
    }
}

/// Whether `err` says the server has no `bulkWrite`, so that nothing was
/// written: the driver refuses it below MongoDB 8.0, before anything is
/// sent; a server that says 8.0 but turns the command away (a proxy, a
/// restricted tier) answers `CommandNotFound` (59), `CommandNotSupported`
/// (115) or, for a field it does not know, 40415, all before running any
/// write.
pub fn lacks_bulk_write(err: &Error) -> bool {
    match err.kind.as_ref() {
        ErrorKind::IncompatibleServer { .. } => true,
        ErrorKind::Command(refused) => matches!(refused.code, 59 | 115 | 40415),
        _ => false,
    }
}
