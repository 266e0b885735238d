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
        let target: Collection<ChatflowDoc> = self.target.mongo.chat.collection("chatflows");
        while let Some(batch) = self.next(&mut batches).await? {
            let tally = &mut self.report.chatflows;
            let platform: Vec<PlatformChatflow> = batch
                .into_iter()
                .filter_map(|d| parse(d, "Chatflow", tally))
                .collect();
            let ids: Vec<&str> = platform.iter().map(|f| f.flowise_id.as_str()).collect();
            let here: HashSet<String> = target
                .find(doc! {"chatflow_id": {"$in": ids}})
                .await?
                .map_ok(|f| f.chatflow_id)
                .try_collect()
                .await?;
            let mut new = Vec::new();
            for flow in &platform {
                flows.insert(flow.id.to_hex(), flow.flowise_id.clone());
                if here.contains(&flow.flowise_id)
                    || new
                        .iter()
                        .any(|n: &ChatflowDoc| n.chatflow_id == flow.flowise_id)
                {
                    tally.unchanged += 1;
                } else {
                    tally.imported += 1;
                    new.push(flow.entry());
                }
            }
            if !self.dry_run && !new.is_empty() {
                target.insert_many(&new).ordered(false).await?;
            }
        }
        self.progress.finish();
        Ok(flows)
    }

    /// The active grants of `UserChatflow`; the rows of `user_chatflows`
    /// are reported, not granted (the platform never read them).
    pub(crate) async fn access(&mut self, flows: &Flows) -> anyhow::Result<()> {
        let db = self.source.proxy.clone();
        let mut batches = self.read(&db, "UserChatflow", doc! {"_id": 1}).await?;
        let mut granted: HashSet<(String, String)> = HashSet::new();
        while let Some(batch) = self.next(&mut batches).await? {
            self.grant_batch(batch, flows, &mut granted).await?;
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

    async fn grant_batch(
        &mut self,
        batch: Vec<Document>,
        flows: &Flows,
        granted: &mut HashSet<(String, String)>,
    ) -> anyhow::Result<()> {
        let tally = &mut self.report.access;
        let mut wanted: HashMap<String, Vec<String>> = HashMap::new();
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
                tally.skip(
                    source,
                    format!("its user {user:?} was not brought (see users)"),
                );
            } else if let Some(flow) = flow {
                if granted.insert((flow.clone(), user.clone())) {
                    wanted.entry(flow.clone()).or_default().push(user);
                } else {
                    tally.unchanged += 1;
                }
            } else {
                tally.skip(
                    source,
                    "it names no chatflow of the platform's Chatflow collection",
                );
            }
        }
        let target: Collection<ChatflowDoc> = self.target.mongo.chat.collection("chatflows");
        let ids: Vec<&String> = wanted.keys().collect();
        let allowed: HashMap<String, Vec<String>> = target
            .find(doc! {"chatflow_id": {"$in": ids}})
            .await?
            .map_ok(|f| (f.chatflow_id, f.allowed_users))
            .try_collect()
            .await?;
        for (flow, users) in wanted {
            let (already, new): (Vec<String>, Vec<String>) = users
                .into_iter()
                .partition(|u| allowed.get(&flow).is_some_and(|a| a.contains(u)));
            tally.unchanged += already.len() as u64;
            tally.imported += new.len() as u64;
            if !self.dry_run && !new.is_empty() {
                target
                    .update_one(
                        doc! {"chatflow_id": &flow},
                        doc! {"$addToSet": {"allowed_users": {"$each": new}}},
                    )
                    .await?;
            }
        }
        Ok(())
    }
}
