//! History and files: the proxy's `file_uploads` (bytes from GridFS),
//! `chat_sessions` and `chat_messages` into the gateway's `files`,
//! `chat_sessions` and `chat_messages`, so that each user finds their
//! conversations as they left them.

use std::collections::HashMap;

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, DateTime as BsonTime, Document};
use futures_util::TryStreamExt;
use mongodb::Collection;
use serde::Deserialize;
use shared::chat::files::{clean_name, sniff, FileDoc};
use shared::chat::sessions::SessionDoc;

use super::{parse, Run};

/// A row of `file_uploads`.
#[derive(Debug, Deserialize)]
pub(crate) struct PlatformUpload {
    #[serde(rename = "_id")]
    id: ObjectId,
    file_id: Option<String>,
    original_name: Option<String>,
    mime_type: Option<String>,
    user_id: Option<String>,
    upload_type: Option<String>,
    uploaded_at: Option<BsonTime>,
}

/// Why a file a message names is not here, and its name: the message
/// keeps a note of it.
#[derive(Debug, Clone)]
pub(crate) struct Note {
    pub(crate) name: String,
    pub(crate) reason: String,
}

/// Files not brought, by their platform id.
pub(crate) type Notes = HashMap<String, Note>;

/// Sessions brought (or already here), by id: their owner and chatflow.
pub(crate) type Sessions = HashMap<String, (String, String)>;

impl Run<'_> {
    pub(crate) async fn files(&mut self) -> anyhow::Result<Notes> {
        let db = self.source.proxy.clone();
        let mut batches = self.read(&db, "file_uploads", doc! {"_id": 1}).await?;
        let mut notes = Notes::new();
        let mut done = HashMap::new();
        while let Some(batch) = self.next(&mut batches).await? {
            let uploads: Vec<PlatformUpload> = batch
                .into_iter()
                .filter_map(|d| parse(d, "file_uploads", &mut self.report.files))
                .collect();
            let ids: Vec<&str> = uploads
                .iter()
                .filter_map(|u| u.file_id.as_deref())
                .collect();
            let keys: Vec<String> = ids.iter().map(|id| format!("files/{id}")).collect();
            let journaled = self.journaled(&keys).await?;
            let mut owners: HashMap<String, String> = self
                .files_here(&ids)
                .await?
                .into_iter()
                .map(|(id, (owner, _, _))| (id, owner))
                .collect();
            for key in &journaled {
                // Brought before (and maybe deleted here since): done.
                let id = key.trim_start_matches("files/").to_owned();
                owners.entry(id).or_default();
            }
            let mut brought = Vec::new();
            for upload in uploads {
                let name = upload.original_name.clone().unwrap_or_default();
                let file_id = upload.file_id.clone().unwrap_or_default();
                match self.file(upload, &owners, &mut done).await? {
                    Ok(new) => {
                        let tally = &mut self.report.files;
                        if new {
                            tally.imported += 1
                        } else {
                            tally.unchanged += 1
                        }
                        brought.push(format!("files/{file_id}"));
                    }
                    Err((source, reason)) => {
                        self.report.files.skip(source, reason.clone());
                        notes.entry(file_id).or_insert(Note { name, reason });
                    }
                }
            }
            self.journal(&brought).await?;
        }
        self.progress.finish();
        Ok(notes)
    }

    /// The owner, name and type of each file among `ids` here.
    pub(crate) async fn files_here<S: AsRef<str>>(
        &self,
        ids: &[S],
    ) -> anyhow::Result<HashMap<String, (String, String, String)>> {
        if ids.is_empty() {
            return Ok(HashMap::new());
        }
        let ids: Vec<&str> = ids.iter().map(AsRef::as_ref).collect();
        let text = |d: &Document, key: &str| d.get_str(key).unwrap_or_default().to_owned();
        Ok(self
            .target
            .mongo
            .chat
            .collection::<Document>("files")
            .find(doc! {"file_id": {"$in": ids}})
            .projection(doc! {"file_id": 1, "owner_id": 1, "name": 1, "mime": 1})
            .await?
            .map_ok(|d| {
                (
                    text(&d, "file_id"),
                    (text(&d, "owner_id"), text(&d, "name"), text(&d, "mime")),
                )
            })
            .try_collect()
            .await?)
    }

    /// Brings one upload's file: `Ok(true)` when stored, `Ok(false)` when
    /// already here, `Err((source, reason))` when skipped.
    async fn file(
        &self,
        upload: PlatformUpload,
        owners: &HashMap<String, String>,
        done: &mut HashMap<String, String>,
    ) -> anyhow::Result<Result<bool, (String, String)>> {
        let source = format!("file_uploads/{}", upload.id.to_hex());
        let skip = |reason: String| Ok(Err((source.clone(), reason)));
        let (Some(file_id), Some(user)) = (upload.file_id.clone(), upload.user_id.clone()) else {
            return skip("it names no file or no user".into());
        };
        if upload.upload_type.as_deref() == Some("url") {
            return skip("a link the user gave, not a stored file".into());
        }
        if !self.users.contains(&user) {
            return skip(super::not_here(&user));
        }
        // The owner here, of this run's or an earlier run's file (an
        // empty owner: brought before and deleted here since).
        match owners.get(&file_id).or(done.get(&file_id)) {
            Some(owner) if *owner == user || owner.is_empty() => return Ok(Ok(false)),
            Some(_) => return skip("another user's file here has its id".into()),
            None => {}
        }
        let bytes = match self.gridfs(&file_id).await? {
            Ok(bytes) => bytes,
            Err(reason) => return skip(reason),
        };
        let file = match file_doc(upload, &file_id, user, bytes) {
            Ok(file) => file,
            Err(reason) => return skip(reason),
        };
        done.insert(file_id.clone(), file.owner_id.clone());
        if !self.dry_run {
            let files: Collection<Document> = self.target.mongo.chat.collection("files");
            files
                .update_one(
                    doc! {"file_id": &file_id},
                    doc! {"$setOnInsert": bson::to_document(&file)?},
                )
                .upsert(true)
                .await?;
        }
        Ok(Ok(true))
    }

    /// The bytes GridFS keeps under `file_id`: its chunks in order, checked
    /// against its length; `Err(reason)` when they are missing, broken or
    /// larger than `MAX_UPLOAD_BYTES` (then not read).
    async fn gridfs(&self, file_id: &str) -> anyhow::Result<Result<Vec<u8>, String>> {
        let Ok(oid) = ObjectId::parse_str(file_id) else {
            return Ok(Err(format!("its file id {file_id:?} is not a GridFS id")));
        };
        let files: Collection<Document> = self.source.proxy.collection("fs.files");
        let Some(meta) = files.find_one(doc! {"_id": oid}).await? else {
            return Ok(Err("its bytes are not in GridFS".into()));
        };
        let length = match meta.get("length") {
            Some(Bson::Int64(n)) => *n,
            Some(Bson::Int32(n)) => i64::from(*n),
            _ => return Ok(Err("its GridFS entry has no length".into())),
        };
        let max = self.target.max_upload_bytes;
        if length > max as i64 {
            return Ok(Err(format!(
                "it is {length} bytes, more than the gateway's MAX_UPLOAD_BYTES ({max})"
            )));
        }
        let chunks: Collection<Document> = self.source.proxy.collection("fs.chunks");
        let mut cursor = chunks
            .find(doc! {"files_id": oid})
            .sort(doc! {"n": 1})
            .await?;
        let mut bytes = Vec::with_capacity(length as usize);
        let mut expected = 0i64;
        while let Some(chunk) = cursor.try_next().await? {
            let n = match chunk.get("n") {
                Some(Bson::Int32(n)) => i64::from(*n),
                Some(Bson::Int64(n)) => *n,
                _ => -1,
            };
            let Ok(data) = chunk.get_binary_generic("data") else {
                return Ok(Err(format!("its GridFS chunk {n} has no bytes")));
            };
            if n != expected || bytes.len() + data.len() > length as usize {
                return Ok(Err("its GridFS chunks are out of order or too long".into()));
            }
            bytes.extend_from_slice(data);
            expected += 1;
        }
        if bytes.len() as i64 != length {
            return Ok(Err(format!(
                "GridFS holds {} of its {length} bytes",
                bytes.len()
            )));
        }
        Ok(Ok(bytes))
    }
}

/// The gateway's file for `upload`'s `bytes`, or why there is none (a
/// type the gateway refuses).
fn file_doc(
    upload: PlatformUpload,
    file_id: &str,
    user: String,
    bytes: Vec<u8>,
) -> Result<FileDoc, String> {
    let name = clean_name(upload.original_name.as_deref().unwrap_or("file"))
        .unwrap_or_else(|_| "file".into());
    let declared = upload
        .mime_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let Some(mime) = sniff(&bytes, declared, &name) else {
        return Err(format!(
            "{name} is not a type the gateway accepts (images, PDF, text, CSV, Office documents)"
        ));
    };
    Ok(FileDoc {
        file_id: file_id.to_owned(),
        owner_id: user,
        // In no session: deleting a conversation keeps its files, as on
        // the platform (one file may have been sent in several).
        session_id: None,
        name,
        mime: mime.to_owned(),
        size: bytes.len() as i64,
        sha256: shared::digest::sha256_hex(&bytes),
        data: Binary {
            subtype: BinarySubtype::Generic,
            bytes,
        },
        created_at: upload.uploaded_at.unwrap_or_else(|| upload.id.timestamp()),
    })
}

/// A session as the proxy stored it.
#[derive(Debug, Deserialize)]
pub(crate) struct PlatformSession {
    session_id: String,
    user_id: String,
    chatflow_id: String,
    topic: Option<String>,
    created_at: Option<BsonTime>,
    last_activity_at: Option<BsonTime>,
}

impl PlatformSession {
    /// The gateway's session (its messages counted as they come).
    fn doc(&self) -> SessionDoc {
        let created_at = self.created_at.unwrap_or_else(BsonTime::now);
        SessionDoc {
            session_id: self.session_id.clone(),
            user_id: self.user_id.clone(),
            chatflow_id: self.chatflow_id.clone(),
            topic: self.topic.clone().unwrap_or_default(),
            created_at,
            updated_at: self.last_activity_at.unwrap_or(created_at),
            message_count: 0,
            transcript: None,
        }
    }
}

impl Run<'_> {
    pub(crate) async fn sessions(&mut self) -> anyhow::Result<Sessions> {
        let db = self.source.proxy.clone();
        let mut batches = self.read(&db, "chat_sessions", doc! {"_id": 1}).await?;
        let mut sessions = Sessions::new();
        while let Some(batch) = self.next(&mut batches).await? {
            self.session_batch(batch, &mut sessions).await?;
        }
        self.progress.finish();
        Ok(sessions)
    }

    async fn session_batch(
        &mut self,
        batch: Vec<Document>,
        sessions: &mut Sessions,
    ) -> anyhow::Result<()> {
        let platform: Vec<PlatformSession> = batch
            .into_iter()
            .filter_map(|d| parse(d, "chat_sessions", &mut self.report.sessions))
            .collect();
        let ids: Vec<&str> = platform.iter().map(|s| s.session_id.as_str()).collect();
        let here = self.sessions_here(ids).await?;
        let keys: Vec<String> = platform
            .iter()
            .map(|s| format!("chat_sessions/{}", s.session_id))
            .collect();
        let journaled = self.journaled(&keys).await?;
        let (mut new, mut brought) = (Vec::new(), Vec::new());
        for s in platform {
            let source = format!("chat_sessions/{}", s.session_id);
            let tally = &mut self.report.sessions;
            if !self.users.contains(&s.user_id) {
                tally.skip(source, super::not_here(&s.user_id));
                continue;
            }
            if let Some(reason) = super::session_id_refusal(&s.session_id) {
                tally.skip(source, reason);
                continue;
            }
            if journaled.contains(&source) && !here.contains_key(&s.session_id) {
                // Brought before and deleted here since: it stays so.
                tally.unchanged += 1;
                continue;
            }
            match here
                .get(&s.session_id)
                .map(|found| &found.user_id)
                .or(sessions.get(&s.session_id).map(|(u, _)| u))
            {
                Some(owner) if *owner == s.user_id => tally.unchanged += 1,
                Some(_) => {
                    tally.skip(source, "another user's session here has its id");
                    continue;
                }
                None => {
                    tally.imported += 1;
                    new.push(s.doc());
                }
            }
            brought.push(source);
            sessions.insert(s.session_id, (s.user_id, s.chatflow_id));
        }
        if !self.dry_run && !new.is_empty() {
            let target: Collection<SessionDoc> = self.target.mongo.chat.collection("chat_sessions");
            target.insert_many(&new).ordered(false).await?;
        }
        self.journal(&brought).await
    }

    /// The sessions among `ids` already here.
    pub(crate) async fn sessions_here(
        &self,
        ids: Vec<&str>,
    ) -> anyhow::Result<HashMap<String, SessionDoc>> {
        let target: Collection<SessionDoc> = self.target.mongo.chat.collection("chat_sessions");
        Ok(target
            .find(doc! {"session_id": {"$in": ids}})
            .await?
            .map_ok(|s| (s.session_id.clone(), s))
            .try_collect()
            .await?)
    }
}
