//! The chatflow catalogue: synced from Flowise, with access by a public
//! flag or an access list of user ids or emails. A chatflow gone from
//! Flowise is marked removed, never deleted, so history keeps its name.

use bson::{doc, DateTime as BsonTime};
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};

use super::now;
use crate::flowise::{FlowiseClient, FlowiseError, RemoteChatflow};
use crate::token::{AuthUser, Role};
use crate::ApiError;

/// A chatflow the gateway knows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChatflowDoc {
    /// Flowise's id (unique).
    pub chatflow_id: String,
    /// Name.
    pub name: String,
    /// Description (from Flowise's chatbot config).
    pub description: Option<String>,
    /// Anyone signed in may use it.
    pub is_public: bool,
    /// User ids and lower-cased emails that may use it.
    #[serde(default)]
    pub allowed_users: Vec<String>,
    /// Gone from Flowise.
    #[serde(default)]
    pub removed: bool,
    /// Flowise's own `deployed` flag (informational; real servers leave it false).
    pub deployed: Option<bool>,
    /// Flowise's type (`CHATFLOW`, `AGENTFLOW`, ...).
    pub kind: Option<String>,
    /// Whether Flowise runs it through the prediction API (false for an
    /// agentflow started by a webhook or a schedule: never offered).
    #[serde(default = "invocable_by_default")]
    pub invocable: bool,
    /// The input a request may set its system prompt through, when its
    /// override settings in Flowise enable one (from the last sync).
    #[serde(default)]
    pub system_prompt_input: Option<String>,
    /// The `overrideConfig` keys a request may send (the admin's list;
    /// none by default).
    #[serde(default)]
    pub allowed_overrides: Vec<String>,
    /// What a system message does here (the admin's choice).
    #[serde(default)]
    pub system_messages: SystemMessages,
    /// Last sync that saw it.
    pub synced_at: BsonTime,
}

fn invocable_by_default() -> bool {
    true
}

/// What a request's system message (an OpenAI client's `system` and
/// `developer` messages, the native routes' `systemMessage`) does on a
/// chatflow.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SystemMessages {
    /// Sent as the input the chatflow's node reads its system prompt from,
    /// replacing the operator's prompt (only where its override settings
    /// in Flowise allow it).
    Override,
    /// Placed before the question as a marked block, priced as input.
    #[default]
    Prepend,
    /// Refused: 400 naming the field.
    Refuse,
}

/// A chatflow as end users see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ChatflowView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Anyone signed in may use it.
    pub is_public: bool,
}

/// A chatflow as admins see it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdminChatflowView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Description.
    pub description: Option<String>,
    /// Anyone signed in may use it.
    pub is_public: bool,
    /// User ids and emails that may use it.
    pub allowed_users: Vec<String>,
    /// Gone from Flowise.
    pub removed: bool,
    /// Flowise's own flag (informational).
    pub deployed: Option<bool>,
    /// Flowise's type.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Whether Flowise runs it through the prediction API (false for an
    /// agentflow started by a webhook or a schedule: never offered).
    pub invocable: bool,
    /// The input Flowise lets a request set its system prompt through
    /// (`systemMessagePrompt`, `systemMessage`), if any: `systemMessages`
    /// may be `override` only then.
    pub system_prompt_input: Option<String>,
    /// The `overrideConfig` keys a request may send.
    pub allowed_overrides: Vec<String>,
    /// What a system message does.
    pub system_messages: SystemMessages,
    /// Last sync that saw it.
    pub synced_at: chrono::DateTime<chrono::Utc>,
}

impl ChatflowDoc {
    /// As end users see it.
    pub fn view(&self) -> ChatflowView {
        ChatflowView {
            id: self.chatflow_id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            is_public: self.is_public,
        }
    }

    /// As admins see it.
    pub fn admin_view(&self) -> AdminChatflowView {
        AdminChatflowView {
            id: self.chatflow_id.clone(),
            name: self.name.clone(),
            description: self.description.clone(),
            is_public: self.is_public,
            allowed_users: self.allowed_users.clone(),
            removed: self.removed,
            deployed: self.deployed,
            kind: self.kind.clone(),
            invocable: self.invocable,
            system_prompt_input: self.system_prompt_input.clone(),
            allowed_overrides: self.allowed_overrides.clone(),
            system_messages: self.system_messages,
            synced_at: self.synced_at.to_chrono(),
        }
    }

    /// The system-message setting that applies now: `override` falls back
    /// to `prepend` when the last sync found its input no longer enabled
    /// in Flowise (a system message never vanishes).
    pub fn system_messages_now(&self) -> SystemMessages {
        match self.system_messages {
            SystemMessages::Override if self.system_prompt_input.is_none() => {
                SystemMessages::Prepend
            }
            other => other,
        }
    }

    /// Whether `user` may use it: admins always; others when it is public
    /// or lists their id or email.
    pub fn allows(&self, user: &AuthUser) -> bool {
        user.role == Role::Admin
            || self.is_public
            || self
                .allowed_users
                .iter()
                .any(|u| *u == user.id || *u == user.email.to_lowercase())
    }
}

/// What a sync did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct SyncReport {
    /// New chatflows.
    pub created: u64,
    /// Known chatflows whose name or description changed, or that came back.
    pub updated: u64,
    /// Chatflows gone from Flowise, now marked removed.
    pub removed: u64,
}

fn collection(db: &Database) -> Collection<ChatflowDoc> {
    db.collection("chatflows")
}

/// Pulls `GET /api/v1/chatflows` and reconciles the catalogue: new
/// chatflows are created, known ones updated, and those gone from Flowise
/// marked removed.
pub async fn sync_chatflows(db: &Database, client: &FlowiseClient) -> Result<SyncReport, ApiError> {
    let remote = client
        .list_chatflows()
        .await
        .map_err(|e: FlowiseError| ApiError::from(e))?;
    let flows = collection(db);
    let mut report = SyncReport::default();
    let synced_at = now();
    let mut seen = Vec::new();
    for flow in remote {
        seen.push(flow.id.clone());
        match flows.find_one(doc! {"chatflow_id": &flow.id}).await? {
            None => report.created += create_synced(&flows, &flow, synced_at).await?,
            Some(known) => {
                report.updated += update_synced(&flows, &known, &flow, synced_at).await?
            }
        }
    }
    report.removed = flows
        .update_many(
            doc! {"chatflow_id": {"$nin": seen}, "removed": false},
            doc! {"$set": {"removed": true, "synced_at": synced_at}},
        )
        .await?
        .modified_count;
    tracing::info!(
        created = report.created,
        updated = report.updated,
        removed = report.removed,
        "chatflows synced"
    );
    Ok(report)
}

/// Adds a chatflow Flowise has and the catalogue lacks; 1 when this call
/// created it (0 when a concurrent sync did).
async fn create_synced(
    flows: &Collection<ChatflowDoc>,
    flow: &RemoteChatflow,
    synced_at: BsonTime,
) -> Result<u64, ApiError> {
    let inserted = flows
        .insert_one(ChatflowDoc {
            chatflow_id: flow.id.clone(),
            name: flow.name.clone(),
            description: flow.description(),
            // Flowise's isPublic is nullable; the gateway's flag starts
            // from it and is the admin's afterwards.
            is_public: flow.is_public.unwrap_or(false),
            allowed_users: Vec::new(),
            removed: false,
            deployed: flow.deployed,
            kind: flow.kind.clone(),
            invocable: flow.invocable(),
            system_prompt_input: flow.system_prompt_input(),
            allowed_overrides: Vec::new(),
            system_messages: SystemMessages::default(),
            synced_at,
        })
        .await;
    match inserted {
        Ok(_) => Ok(1),
        Err(e) if crate::db::mongo::is_duplicate_key(&e) => Ok(0),
        Err(e) => Err(e.into()),
    }
}

/// Refreshes a known chatflow from Flowise (keeping the admin's access
/// settings); 1 when its name or description changed or it came back.
async fn update_synced(
    flows: &Collection<ChatflowDoc>,
    known: &ChatflowDoc,
    flow: &RemoteChatflow,
    synced_at: BsonTime,
) -> Result<u64, ApiError> {
    let description = flow.description();
    let changed = known.name != flow.name || known.description != description || known.removed;
    flows
        .update_one(
            doc! {"chatflow_id": &flow.id},
            doc! {"$set": {
                "name": &flow.name, "description": description,
                "deployed": flow.deployed, "kind": flow.kind.clone(),
                "invocable": flow.invocable(),
                "system_prompt_input": flow.system_prompt_input(),
                "removed": false, "synced_at": synced_at,
            }},
        )
        .await?;
    Ok(u64::from(changed))
}

/// One chatflow, removed or not.
pub async fn find(db: &Database, chatflow_id: &str) -> Result<Option<ChatflowDoc>, ApiError> {
    Ok(collection(db)
        .find_one(doc! {"chatflow_id": chatflow_id})
        .await?)
}

/// The chatflow `user` is about to use: 404 when unknown or removed, 403
/// when the user (or the API key they came with) may not use it, 422
/// `chatflow_not_invocable` when Flowise does not run it through the
/// prediction API.
pub async fn usable(
    db: &Database,
    chatflow_id: &str,
    user: &AuthUser,
) -> Result<ChatflowDoc, ApiError> {
    crate::keys::require_chatflow(user, chatflow_id)?;
    let flow = find(db, chatflow_id)
        .await?
        .filter(|f| !f.removed)
        .ok_or_else(|| ApiError::not_found(format!("no chatflow {chatflow_id}")))?;
    if !flow.allows(user) {
        return Err(ApiError::forbidden(
            "you do not have access to this chatflow",
        ));
    }
    if !flow.invocable {
        return Err(ApiError::Unprocessable {
            code: "chatflow_not_invocable",
            message: "this flow is started by a webhook or a schedule in Flowise, not by a chat"
                .into(),
        });
    }
    Ok(flow)
}

/// The chatflows `user` may use (through the key they came with, when
/// they did), by name.
pub async fn list_for(db: &Database, user: &AuthUser) -> Result<Vec<ChatflowDoc>, ApiError> {
    let mut filter = if user.role == Role::Admin {
        doc! {"removed": false, "invocable": {"$ne": false}}
    } else {
        doc! {"removed": false, "invocable": {"$ne": false}, "$or": [
            {"is_public": true},
            {"allowed_users": {"$in": [&user.id, user.email.to_lowercase()]}},
        ]}
    };
    if let Some(only) = user.key.as_ref().and_then(|k| k.chatflows.as_ref()) {
        filter.insert("chatflow_id", doc! {"$in": only});
    }
    crate::db::mongo::collect_all(collection(db).find(filter).sort(doc! {"name": 1}).await?)
        .await
        .map_err(Into::into)
}

/// Every chatflow, removed ones included (admin view).
pub async fn list_all(db: &Database) -> Result<Vec<ChatflowDoc>, ApiError> {
    crate::db::mongo::collect_all(collection(db).find(doc! {}).sort(doc! {"name": 1}).await?)
        .await
        .map_err(Into::into)
}

/// What an admin sets on a chatflow (absent: unchanged).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// The public flag.
    pub is_public: Option<bool>,
    /// The access list (checked by [`parse_users`]).
    pub allowed_users: Option<Vec<String>>,
    /// The `overrideConfig` keys a request may send (checked by
    /// [`parse_overrides`]).
    pub allowed_overrides: Option<Vec<String>>,
    /// What a system message does.
    pub system_messages: Option<SystemMessages>,
}

/// Applies `settings`; 404 when unknown, 400 naming `systemMessages` for
/// `override` on a chatflow whose override settings in Flowise enable no
/// system-prompt input (nothing changes then).
pub async fn update_settings(
    db: &Database,
    chatflow_id: &str,
    settings: Settings,
) -> Result<ChatflowDoc, ApiError> {
    let mut filter = doc! {"chatflow_id": chatflow_id};
    let mut set = doc! {};
    if let Some(p) = settings.is_public {
        set.insert("is_public", p);
    }
    if let Some(users) = settings.allowed_users {
        set.insert("allowed_users", users);
    }
    if let Some(keys) = settings.allowed_overrides {
        set.insert("allowed_overrides", keys);
    }
    if let Some(mode) = settings.system_messages {
        set.insert("system_messages", bson::to_bson(&mode).unwrap_or_default());
        if mode == SystemMessages::Override {
            filter.insert("system_prompt_input", doc! {"$type": "string"});
        }
    }
    let updated = if set.is_empty() {
        find(db, chatflow_id).await?
    } else {
        collection(db)
            .find_one_and_update(filter, doc! {"$set": set})
            .return_document(mongodb::options::ReturnDocument::After)
            .await?
    };
    match updated {
        Some(flow) => Ok(flow),
        None if find(db, chatflow_id).await?.is_some() => Err(ApiError::invalid_field(
            "systemMessages",
            "override needs the chatflow's system prompt input (systemMessagePrompt for chains, \
             systemMessage for agents) enabled in its API override settings in Flowise, then a sync",
        )),
        None => Err(ApiError::not_found("no such chatflow")),
    }
}

/// Checks the `overrideConfig` keys an admin allows: at most 50 names of
/// letters, digits and `_` (1 to 64 characters); `sessionId` is the
/// gateway's own and cannot be allowed.
pub fn parse_overrides(field: &str, keys: &[String]) -> Result<Vec<String>, ApiError> {
    if keys.len() > 50 {
        return Err(ApiError::invalid_field(field, "at most 50 keys"));
    }
    let mut out: Vec<String> = Vec::new();
    for key in keys {
        let key = key.trim();
        let valid = (1..=64).contains(&key.len())
            && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(ApiError::invalid_field(
                field,
                "keys are 1 to 64 letters, digits or underscores",
            ));
        }
        if key == "sessionId" {
            return Err(ApiError::invalid_field(
                field,
                "sessionId is the gateway's own and cannot be allowed",
            ));
        }
        if !out.iter().any(|k| k == key) {
            out.push(key.to_owned());
        }
    }
    Ok(out)
}

/// Adds (`grant`) or removes users from the access list.
pub async fn change_users(
    db: &Database,
    chatflow_id: &str,
    users: Vec<String>,
    grant: bool,
) -> Result<ChatflowDoc, ApiError> {
    let update = if grant {
        doc! {"$addToSet": {"allowed_users": {"$each": users}}}
    } else {
        doc! {"$pull": {"allowed_users": {"$in": users}}}
    };
    collection(db)
        .find_one_and_update(doc! {"chatflow_id": chatflow_id}, update)
        .return_document(mongodb::options::ReturnDocument::After)
        .await?
        .ok_or_else(|| ApiError::not_found("no such chatflow"))
}

/// Checks and normalises access-list entries: user ids as given, emails
/// lower-cased.
pub fn parse_users(field: &str, entries: &[String]) -> Result<Vec<String>, ApiError> {
    if entries.len() > 1000 {
        return Err(ApiError::invalid_field(field, "at most 1000 entries"));
    }
    entries
        .iter()
        .map(|e| {
            let e = e.trim();
            if e.contains('@') {
                crate::identity::Email::parse(field, e).map(|m| m.as_str().to_owned())
            } else if e.is_empty() || e.len() > 128 {
                Err(ApiError::invalid_field(
                    field,
                    "entries must be user ids or emails",
                ))
            } else {
                Ok(e.to_owned())
            }
        })
        .collect()
}
