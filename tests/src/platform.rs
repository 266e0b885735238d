//! The replaced platform's three stores, built exactly as
//! `PLATFORM_STORES.md` describes them (the accounting DDL as its ORM
//! creates it, documents with the BSON types its services write, GridFS as
//! pymongo writes it), on fresh databases of the test servers, dropped on
//! drop. What `gateway-admin import-platform` is proven against.

use std::str::FromStr;

use bson::oid::ObjectId;
use bson::spec::BinarySubtype;
use bson::{doc, Binary, Bson, DateTime as BsonTime, Document};
use mongodb::{Client, Database};
use shared::testing::{mongodb_base_uri, postgres_base_url, with_database};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, PgPool};

/// The accounting service's schema, as `sequelize.sync()` makes it
/// (`pg_dump --schema-only`, condensed as PLATFORM_STORES.md gives it).
pub const ACCOUNTING_DDL: &str = r#"
CREATE TYPE enum_streaming_sessions_status AS ENUM ('active', 'completed', 'failed');
CREATE TABLE user_accounts (
  user_id varchar(50) PRIMARY KEY, email varchar(255) NOT NULL UNIQUE,
  username varchar(100) NOT NULL, role varchar(50) NOT NULL DEFAULT 'user',
  jwt_sub varchar(255) UNIQUE, created_at timestamptz NOT NULL, updated_at timestamptz NOT NULL);
CREATE TABLE credit_allocations (
  id serial PRIMARY KEY, user_id varchar(50) NOT NULL REFERENCES user_accounts(user_id),
  total_credits integer NOT NULL, remaining_credits integer NOT NULL,
  allocated_by varchar(50) NOT NULL, allocated_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL, notes text);
CREATE INDEX idx_credit_user_expiry ON credit_allocations (user_id, expires_at);
CREATE TABLE usage_records (
  id serial PRIMARY KEY, user_id varchar(50) NOT NULL REFERENCES user_accounts(user_id),
  "timestamp" timestamptz NOT NULL, service varchar(50) NOT NULL,
  operation varchar(100) NOT NULL, credits integer NOT NULL, metadata jsonb);
CREATE INDEX idx_usage_user_timestamp ON usage_records (user_id, "timestamp");
CREATE INDEX idx_usage_service ON usage_records (service);
CREATE TABLE streaming_sessions (
  id serial PRIMARY KEY, session_id varchar(100) NOT NULL UNIQUE,
  user_id varchar(50) NOT NULL REFERENCES user_accounts(user_id),
  model_id varchar(100) NOT NULL, estimated_credits integer NOT NULL,
  allocated_credits integer NOT NULL, used_credits integer NOT NULL DEFAULT 0,
  status enum_streaming_sessions_status NOT NULL DEFAULT 'active',
  started_at timestamptz NOT NULL, completed_at timestamptz);
CREATE INDEX idx_streaming_user_status ON streaming_sessions (user_id, status);
CREATE INDEX idx_streaming_status_started ON streaming_sessions (status, started_at);
"#;

/// GridFS's chunk size as pymongo writes it.
pub const CHUNK_SIZE: usize = 261_120;

/// The platform's stores.
pub struct Platform {
    /// `auth_db`.
    pub auth: Database,
    /// `flowise_proxy`.
    pub proxy: Database,
    /// The accounting database.
    pub accounting: PgPool,
    /// `--auth-mongodb`.
    pub auth_uri: String,
    /// `--proxy-mongodb`.
    pub proxy_uri: String,
    /// `--accounting-postgres`.
    pub accounting_url: String,
    pg_name: String,
}

/// `uri` with `database` as its path.
fn mongo_uri_of(database: &str) -> String {
    let mut url = reqwest::Url::parse(&mongodb_base_uri()).expect("MONGODB_URI is a URL");
    url.set_path(&format!("/{database}"));
    url.to_string()
}

impl Platform {
    /// Empty stores: the accounting schema, no documents.
    pub async fn empty() -> Platform {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let pg_name = format!("platform_{suffix}");
        let admin_url = postgres_base_url();
        let mut admin = PgConnectOptions::from_str(&admin_url)
            .expect("a PostgreSQL URL")
            .connect()
            .await
            .expect("PostgreSQL answers");
        sqlx::query(&format!(r#"CREATE DATABASE "{pg_name}""#))
            .execute(&mut admin)
            .await
            .expect("create the accounting database");
        let accounting_url = with_database(&admin_url, &pg_name);
        let accounting = PgPoolOptions::new()
            .max_connections(4)
            .connect(&accounting_url)
            .await
            .expect("connect to the accounting database");
        sqlx::raw_sql(ACCOUNTING_DDL)
            .execute(&accounting)
            .await
            .expect("the platform's DDL applies");
        let auth_uri = mongo_uri_of(&format!("p{suffix}_auth_db"));
        let proxy_uri = mongo_uri_of(&format!("p{suffix}_flowise_proxy"));
        let client = Client::with_uri_str(&auth_uri)
            .await
            .expect("MongoDB client");
        Platform {
            auth: client.database(&format!("p{suffix}_auth_db")),
            proxy: client.database(&format!("p{suffix}_flowise_proxy")),
            accounting,
            auth_uri,
            proxy_uri,
            accounting_url,
            pg_name,
        }
    }

    /// Inserts `docs` into `collection` of `db`.
    pub async fn insert(db: &Database, collection: &str, docs: Vec<Document>) {
        if docs.is_empty() {
            return;
        }
        db.collection::<Document>(collection)
            .insert_many(docs)
            .await
            .unwrap_or_else(|e| panic!("insert into {collection}: {e}"));
    }

    /// Stores `bytes` in GridFS as pymongo does (chunks of [`CHUNK_SIZE`]),
    /// with the proxy's metadata; returns the file id.
    pub async fn gridfs(
        &self,
        name: &str,
        mime: &str,
        user: &str,
        session: &str,
        bytes: &[u8],
    ) -> ObjectId {
        let id = ObjectId::new();
        let now = BsonTime::now();
        let chunks: Vec<Document> = bytes
            .chunks(CHUNK_SIZE)
            .enumerate()
            .map(|(n, data)| {
                doc! {"_id": ObjectId::new(), "files_id": id, "n": n as i32,
                "data": Binary { subtype: BinarySubtype::Generic, bytes: data.to_vec() }}
            })
            .collect();
        Platform::insert(&self.proxy, "fs.chunks", chunks).await;
        let file = doc! {
            "_id": id, "filename": name, "length": bytes.len() as i64,
            "chunkSize": CHUNK_SIZE as i32, "uploadDate": now,
            "metadata": {
                "user_id": user, "session_id": session, "chatflow_id": Bson::Null,
                "message_id": "temp_user_message", "upload_type": "file",
                "file_hash": shared::digest::sha256_hex(bytes), "mime_type": mime,
                "uploaded_at": "2025-03-04T11:00:00.123456",
            },
        };
        Platform::insert(&self.proxy, "fs.files", vec![file]).await;
        id
    }
}

impl Drop for Platform {
    fn drop(&mut self) {
        // Fresh clients on the drop's own runtime: the test's runtime,
        // which runs this one's background tasks, waits for the drop.
        let (auth_uri, proxy_uri) = (self.auth_uri.clone(), self.proxy_uri.clone());
        let (auth, proxy) = (self.auth.name().to_owned(), self.proxy.name().to_owned());
        let pg_name = self.pg_name.clone();
        shared::testing::run_to_completion(async move {
            for (uri, name) in [(auth_uri, auth), (proxy_uri, proxy)] {
                if let Ok(client) = Client::with_uri_str(&uri).await {
                    let _ = client.database(&name).drop().await;
                }
            }
            if let Ok(mut admin) = PgConnectOptions::from_str(&postgres_base_url())
                .expect("a PostgreSQL URL")
                .connect()
                .await
            {
                let _ = sqlx::query(&format!(
                    r#"DROP DATABASE IF EXISTS "{pg_name}" WITH (FORCE)"#
                ))
                .execute(&mut admin)
                .await;
            }
        });
    }
}

/// A BSON date from an RFC 3339 time.
pub fn at(time: &str) -> BsonTime {
    BsonTime::parse_rfc3339_str(time).expect("an RFC 3339 time")
}

/// A user document as the auth service (Mongoose) writes it.
pub fn user_doc(
    id: ObjectId,
    username: &str,
    email: &str,
    hash: &str,
    role: Option<&str>,
    verified: Option<bool>,
) -> Document {
    let mut user = doc! {
        "_id": id, "username": username, "email": email, "password": hash,
        "createdAt": at("2025-03-01T08:00:00.000Z"), "updatedAt": at("2025-03-02T09:30:00.000Z"),
        "__v": 0_i32,
    };
    if let Some(role) = role {
        user.insert("role", role);
    }
    if let Some(verified) = verified {
        user.insert("isVerified", verified);
    }
    user
}

/// An assistant message's `content` as the proxy writes it: its token
/// events as JSON text, dumped with Python's defaults (`", "` and `": "`,
/// non-ASCII escaped, astral characters as surrogate pairs).
pub fn python_json_tokens(tokens: &[&str]) -> String {
    let escape = |text: &str| {
        let mut out = String::new();
        for c in text.chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                c if c.is_ascii() && !c.is_ascii_control() => out.push(c),
                c => {
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        out.push_str(&format!("\\u{unit:04x}"));
                    }
                }
            }
        }
        out
    };
    let events: Vec<String> = tokens
        .iter()
        .map(|t| format!("{{\"event\": \"token\", \"data\": \"{}\"}}", escape(t)))
        .collect();
    format!("[{}]", events.join(", "))
}

/// The sizes of a generated platform ([`Platform::generate`]).
#[derive(Debug, Clone, Copy)]
pub struct Size {
    /// Users, each verified, with one session.
    pub users: usize,
    /// Allocations per user (a third of them past their expiry).
    pub allocations_per_user: usize,
    /// Messages per user (questions and answers, in one session).
    pub messages_per_user: usize,
}

/// The id of generated user `i`.
pub fn generated_user(i: usize) -> ObjectId {
    let mut bytes = [0u8; 12];
    bytes[0] = 0x66;
    bytes[4..].copy_from_slice(&(i as u64).to_be_bytes());
    ObjectId::from_bytes(bytes)
}

/// The Flowise id of the generated platform's one chatflow.
pub const GENERATED_FLOW: &str = "9d2c1e4f-0a6b-4c5d-8e7f-102132435465";

impl Platform {
    /// Fills the stores with `size` worth of users, allocations, usage,
    /// grants, sessions and messages (written in large batches; every
    /// user's password is `generated-pass-1`, hashed once by bcrypt).
    pub async fn generate(&self, size: Size) {
        let hash = bcrypt::hash("generated-pass-1", 10).expect("bcrypt");
        let ids: Vec<String> = (0..size.users)
            .map(|i| generated_user(i).to_hex())
            .collect();
        let users: Vec<Document> = (0..size.users)
            .map(|i| {
                let name = format!("user{i:06}");
                user_doc(
                    generated_user(i),
                    &name,
                    &format!("{name}@example.com"),
                    &hash,
                    Some("user"),
                    Some(true),
                )
            })
            .collect();
        for chunk in users.chunks(5000) {
            Platform::insert(&self.auth, "users", chunk.to_vec()).await;
        }
        self.generate_accounting(&ids, size).await;
        let flow = ObjectId::new();
        Platform::insert(&self.proxy, "Chatflow", vec![doc! {
            "_id": flow, "flowise_id": GENERATED_FLOW, "name": "Generated", "description": "",
            "deployed": false, "is_public": false, "category": Bson::Null, "type": "CHATFLOW",
            "api_key_id": Bson::Null, "flow_data": {"nodes": [], "edges": []},
            "chatbot_config": Bson::Null, "api_config": Bson::Null, "analytic_config": Bson::Null,
            "speech_to_text_config": Bson::Null, "created_date": Bson::Null, "updated_date": Bson::Null,
            "synced_at": at("2025-03-01T00:00:00Z"), "sync_status": "active", "sync_error": Bson::Null,
        }])
        .await;
        let grants: Vec<Document> = ids
            .iter()
            .map(|u| {
                doc! {"external_user_id": u, "chatflow_id": flow.to_hex(), "is_active": true,
                "assigned_at": at("2025-03-01T00:00:00Z"), "assigned_by": Bson::Null}
            })
            .collect();
        for chunk in grants.chunks(5000) {
            Platform::insert(&self.proxy, "UserChatflow", chunk.to_vec()).await;
        }
        self.generate_history(&ids, size).await;
    }

    async fn generate_accounting(&self, ids: &[String], size: Size) {
        let statements = [
            "INSERT INTO user_accounts (user_id, email, username, role, jwt_sub, created_at, updated_at)
             SELECT u, u || '@example.com', u, 'user', u, now(), now() FROM unnest($1::text[]) u",
            "INSERT INTO credit_allocations (user_id, total_credits, remaining_credits, allocated_by,
                                             allocated_at, expires_at, notes)
             SELECT u, 100, 100 - g % 50, 'admin', now() - interval '40 days',
                    now() + CASE WHEN g % 3 = 0 THEN interval '-5 days' ELSE interval '30 days' END, ''
               FROM unnest($1::text[]) u, generate_series(1, $2) g",
            "INSERT INTO usage_records (user_id, \"timestamp\", service, operation, credits, metadata)
             SELECT u, now() - g * interval '1 hour', 'chat', $3, 1,
                    jsonb_build_object('success', true, 'user_id_source', u)
               FROM unnest($1::text[]) u, generate_series(1, $2) g",
        ];
        for sql in statements {
            sqlx::query(sql)
                .bind(ids)
                .bind(size.allocations_per_user as i32)
                .bind(GENERATED_FLOW)
                .execute(&self.accounting)
                .await
                .expect("generated accounting rows");
        }
    }

    async fn generate_history(&self, ids: &[String], size: Size) {
        let mut sessions = Vec::new();
        let mut messages = Vec::new();
        for (i, user) in ids.iter().enumerate() {
            let session = format!("00000000-0000-4000-8000-{i:012}");
            sessions.push(
                doc! {"session_id": &session, "user_id": user, "chatflow_id": GENERATED_FLOW,
                "topic": "Question 0", "is_active": true, "created_at": at("2025-03-04T11:00:00Z"),
                "last_activity_at": Bson::Null},
            );
            for m in 0..size.messages_per_user {
                let answer = m % 2 == 1;
                let content = if answer {
                    python_json_tokens(&["Answer ", "to question ", &(m / 2).to_string()])
                } else {
                    format!("Question {}", m / 2)
                };
                let ms = 1_741_086_000_000 + (m as i64) * 1000;
                messages.push(doc! {"chatflow_id": GENERATED_FLOW, "session_id": &session, "user_id": user,
                    "role": if answer { "assistant" } else { "user" }, "content": content,
                    "metadata": if answer { Bson::Array(vec![Bson::Document(doc! {"event": "end", "data": "[DONE]"})]) } else { Bson::Null },
                    "file_ids": Bson::Null, "has_files": false, "created_at": BsonTime::from_millis(ms)});
            }
            if messages.len() >= 5000 {
                Platform::insert(&self.proxy, "chat_messages", std::mem::take(&mut messages)).await;
                Platform::insert(&self.proxy, "chat_sessions", std::mem::take(&mut sessions)).await;
            }
        }
        Platform::insert(&self.proxy, "chat_messages", messages).await;
        Platform::insert(&self.proxy, "chat_sessions", sessions).await;
    }
}

/// What `gateway-admin import-platform` needs from its environment to
/// write into `pg` and `mongo` (the gateway's stores).
pub fn target_env(pg_url: &str, mongo: &shared::config::MongoConfig) -> Vec<(String, String)> {
    vec![
        ("DATABASE_URL".into(), pg_url.to_owned()),
        ("MONGODB_URI".into(), mongo.uri.expose().to_owned()),
        ("MONGODB_AUTH_DB".into(), mongo.auth_db.clone()),
        ("MONGODB_CHAT_DB".into(), mongo.chat_db.clone()),
        ("RUST_LOG".into(), "warn".into()),
    ]
}

impl Platform {
    /// `gateway-admin import-platform` of these stores, with `extra`
    /// flags, as a command ready to run.
    pub fn import_command(
        &self,
        env: &[(String, String)],
        extra: &[&str],
    ) -> tokio::process::Command {
        let mut cmd =
            tokio::process::Command::new(crate::stack::binary_dir().join("gateway-admin"));
        cmd.arg("import-platform")
            .args(["--auth-mongodb", &self.auth_uri])
            .args(["--proxy-mongodb", &self.proxy_uri])
            .args(["--accounting-postgres", &self.accounting_url])
            .args(extra)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        cmd
    }

    /// Runs the import to its end with `--json`; its report. Panics with
    /// its standard error when it failed.
    pub async fn import(&self, env: &[(String, String)], extra: &[&str]) -> serde_json::Value {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.import_text(env, &args).await;
        serde_json::from_str(&out)
            .unwrap_or_else(|e| panic!("the report is one JSON object ({e}): {out}"))
    }

    /// Runs the import to its end with `args`; what it printed. Panics
    /// with its standard error when it failed.
    pub async fn import_text(&self, env: &[(String, String)], args: &[&str]) -> String {
        crate::stack::ensure_binaries_built();
        let out = self
            .import_command(env, args)
            .output()
            .await
            .expect("gateway-admin runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "the import failed: {stderr}");
        String::from_utf8(out.stdout).expect("UTF-8")
    }
}
