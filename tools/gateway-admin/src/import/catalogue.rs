//! Chatflows and who may use them: the proxy's `Chatflow` documents into
//! the catalogue (as a sync would make them), and its active
//! `UserChatflow` grants into each chatflow's allowed users.

use std::collections::{HashMap, HashSet};

use bson::oid::ObjectId;
use bson::{doc, Bson, DateTime as BsonTime, Document};
use futures_util::TryStreamExt;
use mongodb::Collection;
use serde::Deserialize;
use shared::chat::chatflows::{ChatflowDoc, SystemMessages};
use shared::flowise::RemoteChatflow;

use super::{parse, Run};

/// A chatflow as the proxy's sync stored it.
#[derive(Debug, Deserialize)]
pub(crate) struct PlatformChatflow {
    #[serde(rename = "_id")]
    id: ObjectId,
    flowise_id: String,
    name: String,
    description: Option<String>,
    deployed: Option<bool>,
    #[serde(rename = "type")]
    kind: Option<String>,
    category: Option<String>,
    flow_data: Option<Bson>,
    chatbot_config: Option<Bson>,
    api_config: Option<Bson>,
    sync_status: Option<String>,
    synced_at: Option<BsonTime>,
}

/// The proxy kept Flowise's JSON strings parsed; Flowise sends them as
/// strings, which is what the sync's reading of them takes.
fn json_text(value: &Option<Bson>) -> Option<String> {
    match value {
        None | Some(Bson::Null) => None,
        Some(Bson::String(s)) => Some(s.clone()),
        Some(other) => Some(other.clone().into_relaxed_extjson().to_string()),
    }
}

impl PlatformChatflow {
    /// The catalogue's entry: what a sync of the same Flowise chatflow
    /// makes, with the name and status it had, open to nobody but the
    /// users granted it (the platform's only access rule: its `is_public`
    /// granted nothing).
    fn entry(&self) -> ChatflowDoc {
        let remote = RemoteChatflow {
            id: self.flowise_id.clone(),
            name: self.name.clone(),
            deployed: self.deployed,
            is_public: Some(false),
            kind: self.kind.clone(),
            chatbot_config: json_text(&self.chatbot_config),
            category: self.category.clone(),
            updated_date: None,
            flow_data: json_text(&self.flow_data),
            api_config: json_text(&self.api_config),
        };
        let description = self.description.clone().filter(|d| !d.is_empty());
        ChatflowDoc {
            chatflow_id: self.flowise_id.clone(),
            name: self.name.clone(),
            description: description.or_else(|| remote.description()),
            is_public: false,
            allowed_users: Vec::new(),
            removed: self.sync_status.as_deref() == Some("deleted"),
            deployed: self.deployed,
            kind: self.kind.clone(),
            invocable: remote.invocable(),
            system_prompt_input: remote.system_prompt_input(),
            allowed_overrides: Vec::new(),
            system_messages: SystemMessages::default(),
            synced_at: self.synced_at.unwrap_or_else(BsonTime::now),
        }
    }
}

/// A grant as the proxy stored it.
#[derive(Debug, Deserialize)]
pub(crate) struct PlatformGrant {
    #[serde(rename = "_id")]
    id: ObjectId,
    external_user_id: Option<String>,
    chatflow_id: Option<String>,
    is_active: Option<bool>,
}

/// Chatflow document ids (hex) to Flowise ids: how grants name them.
pub(crate) type Flows = HashMap<String, String>;

impl Run<'_> {
    pub(crate) async fn chatflows(&mut self) -> anyhow::Result<Flows> {
        let db = self.source.proxy.clone();
        let mut batches = self.read(&db, "Chatflow", doc! {"_id": 1}).await?;
        let mut flows = Flows::new();
        while let Some(batch) = self.next(&mut batches).await? {
            let tally = &mut self.report.chatflows;
            let platform: Vec<PlatformChatflow> = batch
                .into_iter()
                .filter_map(|d| parse(d, "Chatflow", tally))
                .collect();
            for flow in &platform {
                flows.insert(flow.id.to_hex(), flow.flowise_id.clone());
            }
            self.chatflow_batch(platform).await?;
        }
        self.progress.finish();
        Ok(flows)
    }

    /// Brings the chatflows the catalogue lacks. One a sync already put
    /// there keeps the admin's settings, except that the platform's access
    /// rule holds: the first run closes it to all but its granted users.
    async fn chatflow_batch(&mut self, platform: Vec<PlatformChatflow>) -> anyhow::Result<()> {
        let target: Collection<ChatflowDoc> = self.target.mongo.chat.collection("chatflows");
        let keys: Vec<String> = platform
            .iter()
            .map(|f| format!("Chatflow/{}", f.flowise_id))
            .collect();
        let journaled = self.journaled(&keys).await?;
        let ids: Vec<&str> = platform.iter().map(|f| f.flowise_id.as_str()).collect();
        let here: HashMap<String, bool> = target
            .find(doc! {"chatflow_id": {"$in": ids}})
            .await?
            .map_ok(|f| (f.chatflow_id, f.is_public))
            .try_collect()
            .await?;
        let tally = &mut self.report.chatflows;
        let (mut new, mut close) = (Vec::new(), Vec::new());
        for (flow, key) in platform.iter().zip(&keys) {
            let done = journaled.contains(key)
                || new
                    .iter()
                    .any(|n: &ChatflowDoc| n.chatflow_id == flow.flowise_id);
            match here.get(&flow.flowise_id) {
                _ if done => tally.unchanged += 1,
                Some(true) => {
                    tally.imported += 1;
                    close.push(flow.flowise_id.clone());
                }
                Some(false) => tally.unchanged += 1,
                None => {
                    tally.imported += 1;
                    new.push(flow.entry());
                }
            }
        }
        if self.dry_run {
            return Ok(());
        }
        if !new.is_empty() {
            target.insert_many(&new).ordered(false).await?;
        }
        if !close.is_empty() {
            target
                .update_many(
                    doc! {"chatflow_id": {"$in": close}},
                    doc! {"$set": {"is_public": false}},
                )
                .await?;
        }
        self.journal(&keys).await
    }

    /// The active grants of `UserChatflow` (gathered whole: a chatflow's
    /// users are one list); the rows of `user_chatflows` are reported, not
    /// granted (the platform never read them).
    pub(crate) async fn access(&mut self, flows: &Flows) -> anyhow::Result<()> {
        let db = self.source.proxy.clone();
        let mut batches = self.read(&db, "UserChatflow", doc! {"_id": 1}).await?;
        let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
        let mut granted: HashSet<(String, String)> = HashSet::new();
        while let Some(batch) = self.next(&mut batches).await? {
            self.grant_batch(batch, flows, &mut granted, &mut wanted);
        }
        for (flow, users) in wanted {
            for chunk in users.chunks(5000) {
                self.grant(&flow, chunk).await?;
            }
        }
        self.progress.finish();
        let unread: Collection<Document> = self.source.proxy.collection("user_chatflows");
        let mut rows = unread.find(doc! {}).projection(doc! {"_id": 1}).await?;
        while let Some(row) = rows.try_next().await? {
            let id = row.get("_id").map(super::source_id).unwrap_or_default();
            self.report.access.skip(
                format!("user_chatflows/{id}"),
                "the platform never read user_chatflows: it grants nothing",
            );
        }
        Ok(())
    }

    fn grant_batch(
        &mut self,
        batch: Vec<Document>,
        flows: &Flows,
        granted: &mut HashSet<(String, String)>,
        wanted: &mut HashMap<String, Vec<String>>,
    ) {
        let tally = &mut self.report.access;
        let grants: Vec<PlatformGrant> = batch
            .into_iter()
            .filter_map(|d| parse(d, "UserChatflow", tally))
            .collect();
        for grant in grants {
            let source = format!("UserChatflow/{}", grant.id.to_hex());
            let user = grant.external_user_id.unwrap_or_default();
            let flow = grant.chatflow_id.as_ref().and_then(|id| flows.get(id));
            if grant.is_active != Some(true) {
                tally.skip(source, "revoked on the platform (is_active is false)");
            } else if !self.users.contains(&user) {
                tally.skip(source, super::not_here(&user));
            } else if let Some(flow) = flow {
                if granted.insert((flow.clone(), user.clone())) {
                    wanted.entry(flow.clone()).or_default().push(user);
                } else {
                    // Granted again: the platform's rows are not unique.
                    tally.unchanged += 1;
                }
            } else {
                tally.skip(
                    source,
                    "it names no chatflow of the platform's Chatflow collection",
                );
            }
        }
    }

    /// Adds `users` to `flow`'s allowed users, but those already there
    /// and those an earlier run granted (a grant revoked here since stays
    /// revoked).
    async fn grant(&mut self, flow: &str, users: &[String]) -> anyhow::Result<()> {
        let target: Collection<ChatflowDoc> = self.target.mongo.chat.collection("chatflows");
        let keys: Vec<String> = users.iter().map(|u| format!("access/{flow}/{u}")).collect();
        let journaled = self.journaled(&keys).await?;
        let allowed: HashSet<String> = target
            .find_one(doc! {"chatflow_id": flow})
            .await?
            .map(|f| f.allowed_users.into_iter().collect())
            .unwrap_or_default();
        let tally = &mut self.report.access;
        let mut new = Vec::new();
        for (user, key) in users.iter().zip(&keys) {
            if journaled.contains(key) || allowed.contains(user) {
                tally.unchanged += 1;
            } else {
                tally.imported += 1;
                new.push(user.clone());
            }
        }
        if self.dry_run {
            return Ok(());
        }
        if !new.is_empty() {
            target
                // `$push`, not `$addToSet`: `new` holds none already there
                // (read just above), and `$addToSet` compares every one
                // with the whole list (a chatflow may be granted to
                // thousands).
                .update_one(
                    doc! {"chatflow_id": flow},
                    doc! {"$push": {"allowed_users": {"$each": new}}},
                )
                .await?;
        }
        self.journal(&keys).await
    }
}
