//! Messages: the proxy's `chat_messages`, a session at a time (read in the
//! order of its index: chatflow, session), into the gateway's
//! `chat_messages`, in the order and at the times they were written, the
//! answers flattened to the text the user saw; each session's count and
//! transcript then follow what it holds.

use std::collections::{HashMap, HashSet};

use bson::oid::ObjectId;
use bson::{doc, Bson, DateTime as BsonTime, Document};
use futures_util::TryStreamExt;
use serde::Deserialize;
use shared::chat::sessions::{transcript_after, MessageDoc, SessionDoc};
use shared::db::batch::{self, Write};

use super::history::{Notes, Sessions};
use super::{parse, Run, BATCH};

/// A message as the proxy stored it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct PlatformMessage {
    #[serde(rename = "_id")]
    id: ObjectId,
    chatflow_id: String,
    session_id: String,
    user_id: String,
    role: String,
    content: Option<String>,
    metadata: Option<Vec<Document>>,
    file_ids: Option<Vec<String>>,
    created_at: BsonTime,
}

/// The text an answer showed: the proxy kept its token events as JSON
/// text (`[{"event": "token", "data": "…"}]`); the text is their data, in
/// order. Text that is not such a list is kept as it is.
pub(crate) fn shown_text(content: &str) -> String {
    match serde_json::from_str::<Vec<serde_json::Value>>(&mend_surrogates(content)) {
        Ok(events) => joined(
            &events
                .iter()
                .filter(|e| e["event"] == "token")
                .filter_map(|e| e["data"].as_str())
                .collect::<String>(),
        ),
        Err(_) => content.to_owned(),
    }
}

/// The text with the halves [`mend_surrogates`] kept made whole again: a
/// high half followed by a low half is their character (as the browser
/// showed it), any other half U+FFFD.
fn joined(text: &str) -> String {
    let half = |s: &str| -> Option<u16> {
        let hex = s.strip_prefix('\u{ffff}')?.get(..4)?;
        if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
        u16::from_str_radix(hex, 16)
            .ok()
            .filter(|u| (0xD800..=0xDFFF).contains(u))
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(c) = rest.chars().next() {
        let Some(first) = half(rest) else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
            continue;
        };
        rest = &rest[7..];
        match half(rest).map(|second| char::decode_utf16([first, second]).next()) {
            Some(Some(Ok(whole))) => {
                out.push(whole);
                rest = &rest[7..];
            }
            _ => out.push('\u{fffd}'),
        }
    }
    out
}

/// `text` (JSON) with every `\\u` escape of a lone UTF-16 surrogate (half
/// of a character a token boundary split, which Python's `json.dumps`
/// writes as it is, and JSON parsers refuse) kept as U+FFFF followed by
/// its four hex digits.
fn mend_surrogates(text: &str) -> String {
    let unit = |at: usize| -> Option<u32> {
        let hex = text.get(at + 2..at + 6)?;
        (text.get(at..at + 2) == Some("\\u")).then(|| u32::from_str_radix(hex, 16).ok())?
    };
    let high = |u: u32| (0xD800..0xDC00).contains(&u);
    let low = |u: u32| (0xDC00..0xE000).contains(&u);
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < text.len() {
        let rest = &text[i..];
        if !rest.starts_with('\\') {
            let c = rest.chars().next().unwrap_or_default();
            out.push(c);
            i += c.len_utf8();
            continue;
        }
        match unit(i) {
            Some(u) if high(u) && unit(i + 6).is_some_and(low) => {
                out.push_str(&text[i..i + 12]);
                i += 12;
            }
            Some(u) if high(u) || low(u) => {
                // Kept as U+FFFF and its four hex digits: [`joined`] puts
                // the halves tokens split back together.
                out.push_str("\\uffff");
                out.push_str(&text[i + 2..i + 6]);
                i += 6;
            }
            _ => {
                // Any other escape, as it is (two characters: `\\\\` too).
                let len = rest.chars().take(2).map(char::len_utf8).sum::<usize>();
                out.push_str(&rest[..len]);
                i += len;
            }
        }
    }
    out
}

/// An answer's status and metadata from the proxy's other events: its
/// sources and tools kept, an `error` event marking it incomplete.
fn answer_metadata(events: &[Document]) -> (&'static str, Document) {
    let mut metadata = Document::new();
    let mut status = "complete";
    for event in events {
        match event.get_str("event") {
            Ok(name @ ("sourceDocuments" | "usedTools")) => {
                metadata.insert(name, event.get("data").cloned().unwrap_or(Bson::Null));
            }
            Ok("error") => {
                status = "incomplete";
                metadata.insert("error", "upstream_error");
            }
            _ => {}
        }
    }
    (status, metadata)
}

/// One session's messages, as read.
struct Group {
    chatflow_id: String,
    session_id: String,
    messages: Vec<PlatformMessage>,
}

/// A session a batch wrote to: whether it is new, and the platform's
/// turns it holds, in order (role, text).
struct Touched {
    session: SessionDoc,
    created: bool,
    /// Messages this batch added to it.
    new: i64,
    turns: Vec<(String, String)>,
}

/// What a batch writes: new messages, and the keys of every message and
/// session brought.
#[derive(Default)]
struct Out {
    messages: Vec<MessageDoc>,
    brought: Vec<String>,
}

/// What the target holds for one batch of groups.
struct Here {
    sessions: HashMap<String, SessionDoc>,
    /// Sessions an earlier run brought that were deleted here since.
    deleted: HashSet<String>,
    /// Messages here, or brought by an earlier run (and deleted since).
    messages: HashSet<String>,
    files: HashMap<String, (String, String, String)>,
}

impl Run<'_> {
    pub(crate) async fn messages(
        &mut self,
        sessions: &Sessions,
        notes: &Notes,
    ) -> anyhow::Result<()> {
        let db = self.source.proxy.clone();
        let order = doc! {"chatflow_id": 1, "session_id": 1, "role": 1, "created_at": 1};
        let mut batches = self.read(&db, "chat_messages", order).await?;
        let mut sessions = sessions.clone();
        let mut groups: Vec<Group> = Vec::new();
        let mut pending = 0;
        while let Some(batch) = self.next(&mut batches).await? {
            let parsed: Vec<PlatformMessage> = batch
                .into_iter()
                .filter_map(|d| parse(d, "chat_messages", &mut self.report.messages))
                .collect();
            for message in parsed {
                let same = groups.last().is_some_and(|g| {
                    g.chatflow_id == message.chatflow_id && g.session_id == message.session_id
                });
                if !same {
                    if pending >= BATCH {
                        // Every group but the last is whole.
                        let last = groups.pop();
                        self.message_batch(std::mem::take(&mut groups), &mut sessions, notes)
                            .await?;
                        groups.extend(last);
                        pending = groups.iter().map(|g| g.messages.len()).sum();
                    }
                    groups.push(Group {
                        chatflow_id: message.chatflow_id.clone(),
                        session_id: message.session_id.clone(),
                        messages: Vec::new(),
                    });
                }
                pending += 1;
                if let Some(group) = groups.last_mut() {
                    group.messages.push(message);
                }
            }
        }
        self.message_batch(groups, &mut sessions, notes).await?;
        self.progress.finish();
        Ok(())
    }

    async fn here(&self, groups: &[Group]) -> anyhow::Result<Here> {
        let chat = &self.target.mongo.chat;
        let ids: Vec<&str> = groups.iter().map(|g| g.session_id.as_str()).collect();
        let sessions = self.sessions_here(ids).await?;
        let keys: Vec<String> = groups
            .iter()
            .map(|g| format!("chat_sessions/{}", g.session_id))
            .collect();
        let deleted: HashSet<String> = self
            .journaled(&keys)
            .await?
            .into_iter()
            .map(|k| k.trim_start_matches("chat_sessions/").to_owned())
            .filter(|id| !sessions.contains_key(id))
            .collect();
        let all = groups.iter().flat_map(|g| &g.messages);
        let ids: Vec<String> = all.clone().map(|m| m.id.to_hex()).collect();
        let keys: Vec<String> = ids.iter().map(|id| format!("chat_messages/{id}")).collect();
        let journaled = self.journaled(&keys).await?;
        let mut messages: HashSet<String> = chat
            .collection::<Document>("chat_messages")
            .find(doc! {"message_id": {"$in": ids}})
            .projection(doc! {"message_id": 1})
            .await?
            .map_ok(|d| d.get_str("message_id").unwrap_or_default().to_owned())
            .try_collect()
            .await?;
        messages.extend(
            journaled
                .iter()
                .map(|k| k.trim_start_matches("chat_messages/").to_owned()),
        );
        let file_ids: Vec<&String> = all.flat_map(|m| m.file_ids.iter().flatten()).collect();
        Ok(Here {
            sessions,
            deleted,
            messages,
            files: self.files_here(&file_ids).await?,
        })
    }

    async fn message_batch(
        &mut self,
        groups: Vec<Group>,
        sessions: &mut Sessions,
        notes: &Notes,
    ) -> anyhow::Result<()> {
        if groups.is_empty() {
            return Ok(());
        }
        let here = self.here(&groups).await?;
        let mut out = Out::default();
        let mut touched = Vec::new();
        for mut group in groups {
            group
                .messages
                .sort_by_key(|m| (m.created_at, m.role != "user", m.id));
            touched.extend(self.group(&group, &here, sessions, notes, &mut out));
        }
        if self.dry_run {
            return Ok(());
        }
        // The messages and the sessions made from them, in one batch.
        let new_sessions = touched.iter().filter(|t| t.created).map(|t| &t.session);
        let mut writes = Vec::new();
        if !out.messages.is_empty() {
            writes.push(Write::insert("chat_messages", &out.messages)?);
        }
        if touched.iter().any(|t| t.created) {
            writes.push(Write::insert("chat_sessions", new_sessions)?);
        }
        batch::write(&self.target.mongo.chat, &writes).await?;
        self.settle_sessions(touched).await?;
        self.journal(&out.brought).await
    }

    /// Decides one session's messages: those to insert go to `out`;
    /// returns the session and the turns it holds from the platform.
    fn group(
        &mut self,
        group: &Group,
        here: &Here,
        sessions: &mut Sessions,
        notes: &Notes,
        out: &mut Out,
    ) -> Option<Touched> {
        let (session, created) = match self.session_for(group, here, sessions)? {
            Ok(found) => found,
            Err(reason) => {
                for m in &group.messages {
                    let source = format!("chat_messages/{}", m.id.to_hex());
                    self.report.messages.skip(source, reason.clone());
                }
                return None;
            }
        };
        let owner = session.user_id.clone();
        out.brought
            .push(format!("chat_sessions/{}", session.session_id));
        let tally = &mut self.report.messages;
        let (mut stored, mut new) = (Vec::new(), 0);
        for (position, m) in group.messages.iter().enumerate() {
            let source = format!("chat_messages/{}", m.id.to_hex());
            if m.user_id != owner {
                tally.skip(source, "another user's message in this session");
                continue;
            }
            if m.role != "user" && m.role != "assistant" {
                tally.skip(
                    source,
                    format!("its role {:?} is neither user nor assistant", m.role),
                );
                continue;
            }
            let doc = message(m, position as i64, &owner, here, notes);
            stored.push((doc.role.clone(), doc.content.clone()));
            out.brought.push(source);
            if here.messages.contains(&doc.message_id) {
                tally.unchanged += 1;
                continue;
            }
            tally.imported += 1;
            new += 1;
            out.messages.push(doc);
        }
        // A session read again with nothing new is left as it is (unless
        // a stopped run left it counting fewer of them than it holds).
        let short = session.message_count < stored.len() as i64;
        (created || new > 0 || short).then_some(Touched {
            session,
            created,
            new,
            turns: stored,
        })
    }

    /// The session `group` goes to (made from its messages when neither
    /// the proxy nor the gateway has it) and whether it is new here, or
    /// why its messages cannot come.
    fn session_for(
        &mut self,
        group: &Group,
        here: &Here,
        sessions: &mut Sessions,
    ) -> Option<Result<(SessionDoc, bool), String>> {
        let first = group.messages.first()?;
        let known = here
            .sessions
            .get(&group.session_id)
            .map(|s| (s.user_id.clone(), s.chatflow_id.clone()))
            .or_else(|| sessions.get(&group.session_id).cloned());
        let (owner, chatflow) = known
            .clone()
            .unwrap_or_else(|| (first.user_id.clone(), group.chatflow_id.clone()));
        if !self.users.contains(&owner) {
            return Some(Err(super::not_here(&owner)));
        }
        if let Some(reason) = super::session_id_refusal(&group.session_id) {
            return Some(Err(reason));
        }
        if here.deleted.contains(&group.session_id) && !sessions.contains_key(&group.session_id) {
            let reason = "its session was brought before and deleted here since";
            return Some(Err(reason.into()));
        }
        if chatflow != group.chatflow_id {
            let id = &group.session_id;
            return Some(Err(format!(
                "its session {id} talks to another chatflow here"
            )));
        }
        if !sessions.contains_key(&group.session_id) {
            // A session only messages name: made from them (or made so
            // by an earlier run).
            if known.is_none() {
                self.report.sessions.imported += 1;
            } else {
                self.report.sessions.unchanged += 1;
            }
            sessions.insert(group.session_id.clone(), (owner.clone(), chatflow.clone()));
        }
        if let Some(session) = here.sessions.get(&group.session_id) {
            return Some(Ok((session.clone(), false)));
        }
        let topic = group.messages.iter().find(|m| m.role == "user");
        let topic = topic.and_then(|m| m.content.as_deref()).unwrap_or_default();
        Some(Ok((
            SessionDoc {
                session_id: group.session_id.clone(),
                user_id: owner,
                chatflow_id: chatflow,
                topic: topic.chars().take(50).collect(),
                created_at: first.created_at,
                updated_at: first.created_at,
                message_count: 0,
                transcript: None,
            },
            true,
        )))
    }

    /// Inserts the sessions made from messages, and sets every touched
    /// session's count, last time and transcript from what it now holds.
    async fn settle_sessions(&self, touched: Vec<Touched>) -> anyhow::Result<()> {
        let chat = &self.target.mongo.chat;
        let ids: Vec<&str> = touched
            .iter()
            .map(|t| t.session.session_id.as_str())
            .collect();
        let pipeline = vec![
            doc! {"$match": {"session_id": {"$in": ids}}},
            doc! {"$group": {"_id": "$session_id", "count": {"$sum": 1}, "last": {"$max": "$created_at"}}},
        ];
        let counts: HashMap<String, (i64, BsonTime)> = chat
            .collection::<Document>("chat_messages")
            .aggregate(pipeline)
            .await?
            .map_ok(|d| {
                let count = d
                    .get_i32("count")
                    .map(i64::from)
                    .or_else(|_| d.get_i64("count"))
                    .unwrap_or(0);
                let last = d.get_datetime("last").copied().unwrap_or(BsonTime::MIN);
                (
                    d.get_str("_id").unwrap_or_default().to_owned(),
                    (count, last),
                )
            })
            .try_collect()
            .await?;
        // Counts move on by what was added (`$inc`: a live prediction's
        // own `$inc` in the meantime is kept), or up to what the session
        // holds when a stopped run left it short.
        let mut updates = Vec::new();
        let mut transcripts = Vec::new();
        for Touched {
            session,
            new,
            turns,
            ..
        } in touched
        {
            let id = &session.session_id;
            let (count, last) = counts.get(id).copied().unwrap_or((0, BsonTime::MIN));
            let counted = if session.message_count + new < count {
                doc! {"$max": {"message_count": count, "updated_at": session.updated_at.max(last)}}
            } else {
                doc! {"$inc": {"message_count": new}, "$max": {"updated_at": session.updated_at.max(last)}}
            };
            updates.push(session_update(id, doc! {}, counted));
            // The transcript is known when the session holds the
            // platform's turns only (and nothing was added here since).
            if count == turns.len() as i64 {
                let digest =
                    transcript_after("", turns.iter().map(|(r, c)| (r.as_str(), c.as_str())));
                let set = doc! {"$set": {"transcript": digest}};
                transcripts.push(session_update(id, doc! {"message_count": count}, set));
            }
        }
        batch::write(chat, &updates).await?;
        batch::write(chat, &transcripts).await?;
        Ok(())
    }
}

/// An update of session `id` (and `also`), for a batch.
fn session_update(id: &str, also: Document, update: Document) -> Write {
    let mut filter = doc! {"session_id": id};
    filter.extend(also);
    Write::Update {
        collection: "chat_sessions",
        filter,
        update: update.into(),
    }
}

/// The gateway's message for the platform's `m`, at `position`.
fn message(
    m: &PlatformMessage,
    position: i64,
    owner: &str,
    here: &Here,
    notes: &Notes,
) -> MessageDoc {
    let content = m.content.clone().unwrap_or_default();
    let (content, status, file_ids, metadata) = if m.role == "assistant" {
        let (status, metadata) = answer_metadata(m.metadata.as_deref().unwrap_or_default());
        (shown_text(&content), status, Vec::new(), metadata)
    } else {
        let (file_ids, files) = attachments(m, owner, here, notes);
        let metadata = if files.is_empty() {
            doc! {}
        } else {
            doc! {"files": files}
        };
        (content, "complete", file_ids, metadata)
    };
    MessageDoc {
        message_id: m.id.to_hex(),
        session_id: m.session_id.clone(),
        user_id: owner.to_owned(),
        role: m.role.clone(),
        content,
        status: status.into(),
        file_ids,
        metadata,
        position,
        created_at: m.created_at,
    }
}

/// A question's files: the ids of those brought, and each file's name and
/// type, or the note of why it was not brought.
fn attachments(
    m: &PlatformMessage,
    owner: &str,
    here: &Here,
    notes: &Notes,
) -> (Vec<String>, Vec<Document>) {
    let mut ids = Vec::new();
    let mut files = Vec::new();
    for id in m.file_ids.iter().flatten() {
        match here.files.get(id) {
            Some((file_owner, name, mime)) if file_owner == owner => {
                ids.push(id.clone());
                files.push(doc! {"name": name, "mime": mime});
            }
            _ => {
                let (name, reason) = match notes.get(id) {
                    Some(note) => (note.name.clone(), note.reason.clone()),
                    None => (id.clone(), "the platform holds no such file".to_owned()),
                };
                files.push(doc! {"name": name, "not_imported": reason});
            }
        }
    }
    (ids, files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_shows_its_tokens_data_in_order() {
        // As Python's json.dumps wrote it: non-ASCII escaped, emoji as a
        // surrogate pair.
        let stored = r#"[{"event": "token", "data": "Inertia is r\u00e9sistance "}, {"event": "token", "data": "\ud83d\ude00"}]"#;
        assert_eq!(shown_text(stored), "Inertia is résistance 😀");
        // A token boundary split an emoji: the halves join again, as the
        // browser joined them; a half alone is U+FFFD.
        let split = r#"[{"event": "token", "data": "a\ud83d"}, {"event": "token", "data": "\ude00b \\ud83d \ude00"}]"#;
        assert_eq!(shown_text(split), "a😀b \\ud83d \u{fffd}");
        assert_eq!(shown_text("[]"), "");
        assert_eq!(shown_text("plain text"), "plain text");
        let (status, metadata) = answer_metadata(&[
            doc! {"event": "start", "data": "Inertia"},
            doc! {"event": "sourceDocuments", "data": [{"pageContent": "p"}]},
            doc! {"event": "end", "data": "[DONE]"},
        ]);
        assert_eq!(status, "complete");
        assert!(metadata.contains_key("sourceDocuments"));
        let (status, metadata) = answer_metadata(&[doc! {"event": "error", "data": "boom"}]);
        assert_eq!(status, "incomplete");
        assert_eq!(metadata.get_str("error").unwrap(), "upstream_error");
    }
}
