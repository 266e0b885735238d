//! Chat sessions and their messages. A session belongs to one user; every
//! read and delete checks it.

use bson::{bson, doc, DateTime as BsonTime, Document};
use mongodb::options::UpdateModifications;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::now;
use crate::db::batch::{self, Write};
use crate::token::AuthUser;
use crate::ApiError;

/// A chat session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SessionDoc {
    /// Id (also Flowise's `sessionId`).
    pub session_id: String,
    /// Owner.
    pub user_id: String,
    /// The chatflow it talks to.
    pub chatflow_id: String,
    /// The first 50 characters of the first question.
    pub topic: String,
    /// Created.
    pub created_at: BsonTime,
    /// Last message.
    pub updated_at: BsonTime,
    /// Messages stored.
    pub message_count: i64,
    /// The digest of its messages, in order ([`transcript_after`]): how an
    /// OpenAI-style request, which sends the whole conversation, finds the
    /// session it continues. `None` when unknown (a session stored before
    /// digests were kept, or two predictions raced in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transcript: Option<String>,
}

/// The digest of a transcript that was `previous` (`""` for none) after
/// `turns` (role, text) were added: each turn is hashed onto the digest
/// before it, with its length, so no two transcripts share a digest.
pub fn transcript_after<'a>(
    previous: &str,
    turns: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> String {
    turns
        .into_iter()
        .fold(previous.to_owned(), |digest, (role, text)| {
            let turn = format!("{digest}\n{role}\n{}\n{text}", text.len());
            crate::digest::sha256_hex(turn.as_bytes())
        })
}

/// The latest session of `user_id` on `chatflow_id` whose messages are
/// exactly the turns of `transcript` (see [`transcript_after`]).
pub async fn continued(
    db: &Database,
    user_id: &str,
    chatflow_id: &str,
    transcript: &str,
) -> Result<Option<SessionDoc>, ApiError> {
    let filter = doc! {"user_id": user_id, "chatflow_id": chatflow_id, "transcript": transcript};
    Ok(sessions(db)
        .find_one(filter)
        .sort(doc! {"updated_at": -1})
        .await?)
}

/// A session as the API shows it (snake_case, as the predict family does).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct SessionView {
    /// Id.
    pub session_id: String,
    /// The chatflow.
    pub chatflow_id: String,
    /// The first 50 characters of the first question.
    pub topic: String,
    /// Created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last message.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// Messages stored.
    pub message_count: i64,
}

impl SessionDoc {
    /// As the API shows it.
    pub fn view(&self) -> SessionView {
        SessionView {
            session_id: self.session_id.clone(),
            chatflow_id: self.chatflow_id.clone(),
            topic: self.topic.clone(),
            created_at: self.created_at.to_chrono(),
            updated_at: self.updated_at.to_chrono(),
            message_count: self.message_count,
        }
    }
}

/// A stored message.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MessageDoc {
    /// Id.
    pub message_id: String,
    /// Session.
    pub session_id: String,
    /// Owner.
    pub user_id: String,
    /// `user` or `assistant`.
    pub role: String,
    /// Text.
    pub content: String,
    /// `complete`, or `incomplete` for a stream cut short.
    pub status: String,
    /// Files sent with it.
    #[serde(default)]
    pub file_ids: Vec<String>,
    /// Tokens, credits, sources...
    #[serde(default)]
    pub metadata: Document,
    /// Position in the session.
    pub position: i64,
    /// Stored.
    pub created_at: BsonTime,
}

/// The codes a message's `metadata.error` may hold (every
/// `prediction::Failure`, a test checks); anything else (Flowise's own
/// text, stored by older versions) is shown as `upstream_error`, so no
/// upstream detail ever reaches a user.
pub const FAILURE_CODES: &[&str] = &[
    "upstream_error",
    "upstream_timeout",
    "client_disconnected",
    "stopped",
    "credits_exhausted",
];

/// A message as the API shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct MessageView {
    /// Id.
    pub message_id: String,
    /// `user` or `assistant`.
    #[schema(pattern = "^(user|assistant)$")]
    pub role: String,
    /// Text.
    pub content: String,
    /// `complete` or `incomplete`.
    #[schema(value_type = crate::openapi::AnswerStatus)]
    pub status: String,
    /// Stored.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Files sent with it.
    pub file_ids: Vec<String>,
    /// Tokens, credits, sources, a failure code...
    #[schema(value_type = Object)]
    pub metadata: Value,
}

impl MessageDoc {
    /// As the API shows it.
    pub fn view(&self) -> MessageView {
        let mut metadata = self.metadata.clone();
        if let Ok(error) = metadata.get_str("error") {
            if !FAILURE_CODES.contains(&error) {
                metadata.insert("error", "upstream_error");
            }
        }
        MessageView {
            message_id: self.message_id.clone(),
            role: self.role.clone(),
            content: self.content.clone(),
            status: self.status.clone(),
            created_at: self.created_at.to_chrono(),
            file_ids: self.file_ids.clone(),
            metadata: bson::Bson::Document(metadata).into_relaxed_extjson(),
        }
    }
}

const SESSIONS: &str = "chat_sessions";
const MESSAGES: &str = "chat_messages";

fn sessions(db: &Database) -> Collection<SessionDoc> {
    db.collection(SESSIONS)
}

fn messages(db: &Database) -> Collection<MessageDoc> {
    db.collection(MESSAGES)
}

/// The session, if `user_id` owns it: 404 when unknown, 403 when another
/// user's.
pub async fn owned(db: &Database, session_id: &str, user_id: &str) -> Result<SessionDoc, ApiError> {
    let session = sessions(db)
        .find_one(doc! {"session_id": session_id})
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no session {session_id}")))?;
    if session.user_id != user_id {
        return Err(ApiError::forbidden("this session belongs to another user"));
    }
    Ok(session)
}

/// The session `session_id`, whoever's it is.
pub async fn find(db: &Database, session_id: &str) -> Result<Option<SessionDoc>, ApiError> {
    Ok(sessions(db)
        .find_one(doc! {"session_id": session_id})
        .await?)
}

/// The session `session_id` as `user` may see it: theirs (403 for
/// another's), and, for a key limited to chatflows, one of those
/// chatflows' (404 for any other, as if it did not exist).
pub async fn visible(
    db: &Database,
    session_id: &str,
    user: &AuthUser,
) -> Result<SessionDoc, ApiError> {
    let session = owned(db, session_id, &user.id).await?;
    if !in_scope(user, &session.chatflow_id) {
        return Err(ApiError::not_found(format!("no session {session_id}")));
    }
    Ok(session)
}

/// The stored file `file_id` as `user` may see or use it: theirs (403 for
/// another's), and, for a key limited to chatflows, not attached to a
/// session of another chatflow (404 for such a file, as if it did not
/// exist: neither its bytes nor a prediction reach it).
pub async fn visible_file(
    db: &Database,
    file_id: &str,
    user: &AuthUser,
) -> Result<super::files::FileDoc, ApiError> {
    let file = super::files::owned(db, file_id, &user.id).await?;
    if let (Some(_), Some(session)) = (crate::keys::chatflow_scope(user), &file.session_id) {
        let hidden = match find(db, session).await? {
            Some(found) => !in_scope(user, &found.chatflow_id),
            None => false,
        };
        if hidden {
            return Err(ApiError::not_found(format!("no file {file_id}")));
        }
    }
    Ok(file)
}

/// Whether `user` (through a key limited to chatflows, if any) may see
/// what belongs to `chatflow_id`.
pub fn in_scope(user: &AuthUser, chatflow_id: &str) -> bool {
    crate::keys::chatflow_scope(user).is_none_or(|scope| scope.iter().any(|c| c == chatflow_id))
}

/// A new session whose topic is the first 50 characters of `question`
/// (not stored yet: see [`record`]).
pub fn new_session(user_id: &str, chatflow_id: &str, question: &str) -> SessionDoc {
    let at = now();
    SessionDoc {
        session_id: uuid::Uuid::new_v4().to_string(),
        user_id: user_id.to_owned(),
        chatflow_id: chatflow_id.to_owned(),
        topic: question.chars().take(50).collect(),
        created_at: at,
        updated_at: at,
        message_count: 0,
        transcript: Some(String::new()),
    }
}

/// A message to store.
#[derive(Debug, Clone)]
pub struct NewMessage {
    /// Id.
    pub message_id: String,
    /// `user` or `assistant`.
    pub role: &'static str,
    /// Text.
    pub content: String,
    /// `complete` or `incomplete`.
    pub status: &'static str,
    /// Files.
    pub file_ids: Vec<String>,
    /// Details.
    pub metadata: Document,
}

/// Stores a turn: the session itself when `created` (with its count),
/// else its counters and transcript moved on ([`moved_on`]); the messages
/// `new`; and the stored `files` they used, attached to the session. One
/// batch ([`crate::db::batch`]): one command on MongoDB 8.0 and later.
/// Messages sort by time, then position; positions continue from the count
/// read when the session was checked, so two predictions racing in one
/// session can share a position (their times still order them). A session
/// deleted meanwhile takes its messages and its files' attachment back out
/// (404).
pub async fn record(
    db: &Database,
    session: &SessionDoc,
    created: bool,
    new: Vec<NewMessage>,
    files: &[String],
) -> Result<(), ApiError> {
    let count = new.len() as i64;
    let at = now();
    let docs: Vec<MessageDoc> = new
        .into_iter()
        .enumerate()
        .map(|(i, m)| MessageDoc {
            message_id: m.message_id,
            session_id: session.session_id.clone(),
            user_id: session.user_id.clone(),
            role: m.role.to_owned(),
            content: m.content,
            status: m.status.to_owned(),
            file_ids: m.file_ids,
            metadata: m.metadata,
            position: session.message_count + i as i64,
            created_at: at,
        })
        .collect();
    let ids: Vec<String> = docs.iter().map(|d| d.message_id.clone()).collect();
    let transcript = session.transcript.as_deref().map(|previous| {
        let turns = docs.iter().map(|d| (d.role.as_str(), d.content.as_str()));
        transcript_after(previous, turns)
    });
    let counters = if created {
        let stored = SessionDoc {
            updated_at: at,
            message_count: count,
            transcript,
            ..session.clone()
        };
        Write::insert(SESSIONS, [&stored])?
    } else {
        moved_on(session, count, at, transcript)
    };
    let mut writes = vec![counters, Write::insert(MESSAGES, &docs)?];
    let (owner, id) = (&session.user_id, &session.session_id);
    writes.extend(
        files
            .iter()
            .map(|file| super::files::attachment(file, owner, id)),
    );
    let done = batch::write(db, &writes).await?;
    if done[0] == 0 {
        messages(db)
            .delete_many(doc! {"message_id": {"$in": ids}})
            .await?;
        super::files::detach(db, files, id).await?;
        return Err(ApiError::not_found("the session was deleted"));
    }
    Ok(())
}

/// The update that moves an existing session on by `count` messages at
/// `at`: its transcript becomes `next` when it still is the one read with
/// the session; when another prediction moved it meanwhile (or it is
/// unknown), the transcript is dropped, so no request continues a session
/// whose digest does not match its messages. One pipeline update: the
/// check and the move are one atomic step. It matches nothing when the
/// session was deleted.
fn moved_on(session: &SessionDoc, count: i64, at: BsonTime, next: Option<String>) -> Write {
    let transcript = match (&session.transcript, next) {
        (Some(previous), Some(next)) => bson!({"$cond": [
            {"$eq": ["$transcript", {"$literal": previous.as_str()}]},
            {"$literal": next},
            "$$REMOVE",
        ]}),
        _ => bson!("$$REMOVE"),
    };
    let set = doc! {
        "message_count": {"$add": ["$message_count", count]},
        "updated_at": at,
        "transcript": transcript,
    };
    Write::Update {
        collection: SESSIONS,
        filter: doc! {"session_id": &session.session_id, "user_id": &session.user_id},
        update: UpdateModifications::Pipeline(vec![doc! {"$set": set}]),
    }
}

/// Marks a stored message `incomplete` (its answer was not paid for: the
/// settlement failed after the history was written).
pub async fn mark_incomplete(db: &Database, message_id: &str) -> Result<(), ApiError> {
    messages(db)
        .update_one(
            doc! {"message_id": message_id},
            doc! {"$set": {"status": "incomplete"}},
        )
        .await?;
    Ok(())
}

/// A page of the user's sessions, latest activity first, and the total.
pub async fn list(
    db: &Database,
    user: &AuthUser,
    page: i64,
    limit: i64,
) -> Result<(Vec<SessionDoc>, u64), ApiError> {
    let mut filter = doc! {"user_id": &user.id};
    if let Some(scope) = crate::keys::chatflow_scope(user) {
        filter.insert("chatflow_id", doc! {"$in": scope});
    }
    let total = sessions(db).count_documents(filter.clone()).await?;
    let cursor = sessions(db)
        .find(filter)
        .sort(doc! {"updated_at": -1, "session_id": 1})
        .skip(((page - 1) * limit) as u64)
        .limit(limit)
        .await?;
    Ok((crate::db::mongo::collect_all(cursor).await?, total))
}

/// A page of a session's messages, oldest first, and the total.
pub async fn messages_page(
    db: &Database,
    session_id: &str,
    page: i64,
    limit: i64,
) -> Result<(Vec<MessageDoc>, u64), ApiError> {
    let filter = doc! {"session_id": session_id};
    let total = messages(db).count_documents(filter.clone()).await?;
    let cursor = messages(db)
        .find(filter)
        .sort(doc! {"created_at": 1, "position": 1})
        .skip(((page - 1) * limit) as u64)
        .limit(limit)
        .await?;
    Ok((crate::db::mongo::collect_all(cursor).await?, total))
}

/// Deletes a session with its messages and its files.
pub async fn delete(db: &Database, session_id: &str) -> Result<(), ApiError> {
    messages(db)
        .delete_many(doc! {"session_id": session_id})
        .await?;
    super::files::delete_attached(db, session_id).await?;
    sessions(db)
        .delete_one(doc! {"session_id": session_id})
        .await?;
    Ok(())
}
