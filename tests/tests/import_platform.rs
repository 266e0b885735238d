//! `gateway-admin import-platform` against the platform's own shapes
//! (`e2e::platform`): a dry run writes nothing, a run brings everything a
//! user had, a second run changes nothing, an interrupted run finishes on
//! the next; and through the HTTP API every user finds their password,
//! credits, usage, chatflows, history and files as they left them.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod browser;

use bson::oid::ObjectId;
use bson::{doc, Bson, Document};
use e2e::platform::{at, python_json_tokens, target_env, user_doc, Platform, Size};
use e2e::{Stack, StackOptions};
use futures_util::TryStreamExt;
use serde_json::{json, Value};
use shared::testing::{inconsistent_accounts, TestMongo, TestPostgres};

// Made by bcryptjs (`bcrypt.hashSync(password, 10)`): 3.0.2 writes `$2b$`,
// 2.4.3 `$2a$`.
const ALICE_HASH: &str = "$2b$10$OnZInSAwxXg.now4eVSWzu.Qt9FzUR9RL1vvu4whOeU2UxuLXTXwS"; // alice-platform-1
const BOSS_HASH: &str = "$2b$10$mo02/fVDVqanUR3C/0areudX73szFWKZVv.SipYPEXnHR689mSXrO"; // boss-platform-1
const BOB_HASH: &str = "$2a$10$zqRim8ieiScFgBM6Mo/0cuVx5bkOTJ3wXOlxQukFaebVBSuH5b8fu"; // bob-platform-1 (bcryptjs 2)
const DAVE_HASH: &str = "$2b$10$dO97v7WJeuz.uU1i0EvF..VhStaEeTBQlwStU3VUDu5rX2eGpIUhq"; // dave-platform-1
const ANN_HASH: &str = "$2b$10$QykAsie1TWbaB5kcuMo5NeM7E3Fnmn3fa0fUhHvAOegXNnbHzcRUe"; // ann-platform-1
/// `erin-` + 40 × `long-` + `end` (208 characters: longer than passwords
/// set here may be).
const ERIN_HASH: &str = "$2b$10$VcPNMlbk2JKKoQUXCyk7e.9ogf8NFW5mPrxBIR2Fs7U6VxhFTGXku";
const FRANK_HASH: &str = "$2b$10$yWvOx7UaOvXI5VoF6z6ZEuLbzyBhv3gxA2QoKn4dX0NRUnmQq3aOG"; // frank-platform-1
/// `carol-` + 70 × `x` + `-tail` (81 bytes: only the first 72 count).
const CAROL_HASH: &str = "$2b$10$hraYq/8jS22n5XzY7xhBJ.u0F61jmySkJoVzm62HJhV0t77GiUXrq";

const ALICE: &str = "6650f1a2b3c4d5e6f7a8b9c0";
const BOSS: &str = "6650f1a2b3c4d5e6f7a8b9aa";
const BOB: &str = "6650f1a2b3c4d5e6f7a8b9c1";
const CAROL: &str = "6650f1a2b3c4d5e6f7a8b9c2";
const ANN: &str = "6650f1a2b3c4d5e6f7a8b9c3";
const DAVE: &str = "6650f1a2b3c4d5e6f7a8b9c4";
const ERIN: &str = "6650f1a2b3c4d5e6f7a8b9c5";
/// Whose username holds an `@` (the platform had no rule for usernames).
const FRANK: &str = "6650f1a2b3c4d5e6f7a8b9c6";
/// Who changes her password on the platform after the move, before
/// signing in here.
const GINA: &str = "6650f1a2b3c4d5e6f7a8b9c7";
/// Whose username is Alice's email.
const HANK: &str = "6650f1a2b3c4d5e6f7a8b9c8";
/// A session id longer than the gateway's ids may be.
fn long_session() -> String {
    format!("s-{}", "x".repeat(200))
}
/// In the accounting rows, not in `auth_db`.
const GHOST: &str = "6650f1a2b3c4d5e6f7a8b9ff";
const FLOW_A: &str = "0b9d1f3e-8c55-4a63-9d0e-2f6a7b8c9d10";
const FLOW_B: &str = "5c1e0d2a-7b3f-4e8d-9a1b-2c3d4e5f6a7b";
const FLOW_A_DOC: &str = "6650f1a2b3c4d5e6f7a8b9d0";
const FLOW_B_DOC: &str = "6650f1a2b3c4d5e6f7a8b9d9";
const S1: &str = "cf857303-5b8e-567d-9a26-206d83837359";
const S2: &str = "a0e1b2c3-d4e5-4f60-8a7b-8c9d0e1f2a3b";

/// Every kind of record the report counts.
const KINDS: [&str; 8] = [
    "users",
    "allocations",
    "usage",
    "chatflows",
    "access",
    "sessions",
    "messages",
    "files",
];

fn oid(hex: &str) -> ObjectId {
    ObjectId::parse_str(hex).expect("an ObjectId")
}

/// The file ids the fixture stored.
struct Files {
    png: ObjectId,
    png_bytes: Vec<u8>,
    csv: ObjectId,
    big: ObjectId,
    exe: ObjectId,
}

async fn users(p: &Platform) {
    let mut ann = user_doc(
        oid(ANN),
        "alice_smith",
        "alice2@example.com",
        ANN_HASH,
        Some("user"),
        Some(true),
    );
    ann.insert("createdAt", at("2025-04-01T08:00:00.000Z"));
    let carol_y = format!("$2y${}", &CAROL_HASH[4..]);
    Platform::insert(
        &p.auth,
        "users",
        vec![
            user_doc(
                oid(ALICE),
                "Alice_Smith",
                "alice@example.com",
                ALICE_HASH,
                Some("user"),
                Some(true),
            ),
            user_doc(
                oid(BOSS),
                "Boss",
                "boss@example.com",
                BOSS_HASH,
                Some("admin"),
                Some(true),
            ),
            user_doc(
                oid(BOB),
                "bob",
                "bob@example.com",
                BOB_HASH,
                Some("supervisor"),
                Some(true),
            ),
            // An old document: no role (an end user), no isVerified (not verified).
            user_doc(
                oid(CAROL),
                "carol",
                "carol@example.com",
                &carol_y,
                None,
                None,
            ),
            ann,
            user_doc(
                oid(DAVE),
                "dave",
                "taken@example.com",
                DAVE_HASH,
                Some("enduser"),
                Some(true),
            ),
            user_doc(
                oid(ERIN),
                "erin",
                "erin@example.com",
                ERIN_HASH,
                Some("user"),
                Some(true),
            ),
            user_doc(
                oid(FRANK),
                "frank@work",
                "frank@example.com",
                FRANK_HASH,
                Some("user"),
                Some(true),
            ),
            user_doc(
                oid(GINA),
                "gina",
                "gina@example.com",
                ANN_HASH,
                Some("user"),
                Some(true),
            ),
            user_doc(
                oid(HANK),
                "alice@example.com",
                "hank@example.com",
                ANN_HASH,
                Some("user"),
                Some(true),
            ),
        ],
    )
    .await;
}

async fn accounting(p: &Platform) {
    let now = chrono::Utc::now();
    let future = (now + chrono::Duration::days(30)).to_rfc3339();
    let sql = format!(
        "INSERT INTO user_accounts (user_id, email, username, role, jwt_sub, created_at, updated_at) VALUES
           ('{ALICE}', 'alice@example.com', 'Alice_Smith', 'user', '{ALICE}', now(), now()),
           ('{BOB}', 'bob@example.com', 'bob', 'supervisor', '{BOB}', now(), now()),
           ('{CAROL}', 'carol@example.com', 'carol', 'user', '{CAROL}', now(), now()),
           ('{GHOST}', 'unknown@example.com', 'unknown', 'enduser', NULL, now(), now());
         INSERT INTO credit_allocations (id, user_id, total_credits, remaining_credits, allocated_by, allocated_at, expires_at, notes) VALUES
           (12, '{ALICE}', 500, 376, '{BOSS}', '2025-03-01 08:00:00.123+00', '{future}', 'term 1'),
           (13, '{ALICE}', 100, 40, '{BOSS}', '2025-03-01 08:00:00+00', '2025-03-31 08:00:00+00', ''),
           (14, '{ALICE}', 20, 20, 'system-refund', '2025-03-05 08:00:00+00', '{future}', 'Refund from streaming session s-9'),
           (15, '{BOB}', 50, 50, '{BOSS}', '2025-03-01 08:00:00+00', '{future}', ''),
           (16, '{GHOST}', 70, 70, '{BOSS}', '2025-03-01 08:00:00+00', '{future}', ''),
           (17, '{ALICE}', 10, 10, '{BOSS}', '2025-03-01 08:00:00+00', '2025-02-28 08:00:00+00', 'negative expiryDays'),
           (18, '{CAROL}', 30, 30, '{BOSS}', '2025-03-01 08:00:00+00', '{future}', NULL);
         INSERT INTO usage_records (id, user_id, \"timestamp\", service, operation, credits, metadata) VALUES
           (40, '{ALICE}', '2025-03-04 11:00:03.5+00', 'chat', '{FLOW_A}', 1,
            '{{\"success\": true, \"user_id_source\": \"{ALICE}\", \"original_operation_details\": \"{FLOW_A}\"}}'),
           (41, '{ALICE}', '2025-03-04 11:01:02+00', 'chat', '{FLOW_A}', 1,
            '{{\"success\": false, \"user_id_source\": \"{ALICE}\", \"original_operation_details\": \"{FLOW_A}\"}}'),
           (42, '{ALICE}', '2025-03-05 09:00:00+00', 'chat-streaming', 'gpt-4o', 3,
            '{{\"sessionId\": \"s-9\", \"tokens\": 120, \"streamingDuration\": 2300}}'),
           (43, '{ALICE}', '2025-03-06 09:00:00+00', 'chat', '{FLOW_A}', 1, NULL),
           (44, '{GHOST}', '2025-03-06 10:00:00+00', 'chat', '{FLOW_A}', 1, NULL);
         INSERT INTO streaming_sessions (session_id, user_id, model_id, estimated_credits, allocated_credits, status, started_at) VALUES
           ('s-open', '{ALICE}', 'gpt-4o', 5, 5, 'active', now()),
           ('s-done', '{ALICE}', 'gpt-4o', 5, 5, 'completed', now());"
    );
    sqlx::raw_sql(&sql)
        .execute(&p.accounting)
        .await
        .expect("accounting rows");
}

fn chatflow(id: &str, flowise: &str, name: &str, status: &str) -> Document {
    doc! {
        "_id": oid(id), "flowise_id": flowise, "name": name, "description": "", "deployed": false,
        // Flowise's flag: it granted nothing on the platform.
        "is_public": true, "category": Bson::Null, "type": "CHATFLOW", "api_key_id": Bson::Null,
        "flow_data": {"nodes": [], "edges": []}, "chatbot_config": Bson::Null,
        "api_config": Bson::Null, "analytic_config": Bson::Null, "speech_to_text_config": Bson::Null,
        "created_date": at("2025-02-01T00:00:00Z"), "updated_date": Bson::Null,
        "synced_at": at("2025-03-04T10:57:00Z"), "sync_status": status, "sync_error": Bson::Null,
    }
}

fn grant(user: &str, flow_doc: &str, active: bool) -> Document {
    doc! {"external_user_id": user, "chatflow_id": flow_doc, "is_active": active,
    "assigned_at": at("2025-03-03T10:00:00Z"), "assigned_by": BOSS}
}

async fn catalogue(p: &Platform) {
    Platform::insert(
        &p.proxy,
        "Chatflow",
        vec![
            chatflow(FLOW_A_DOC, FLOW_A, "Physics tutor", "active"),
            chatflow(FLOW_B_DOC, FLOW_B, "Old helper", "deleted"),
        ],
    )
    .await;
    Platform::insert(
        &p.proxy,
        "UserChatflow",
        vec![
            grant(ALICE, FLOW_A_DOC, true),
            // Granted again: the rows are not unique.
            grant(ALICE, FLOW_A_DOC, true),
            grant(BOB, FLOW_A_DOC, false),
            grant(ALICE, FLOW_B_DOC, true),
            grant(CAROL, "6650f1a2b3c4d5e6f7a8b9ee", true),
            grant(GHOST, FLOW_A_DOC, true),
        ],
    )
    .await;
    // The maintenance script's rows, which the platform never read.
    Platform::insert(&p.proxy, "user_chatflows", vec![doc! {
        "user_id": BOB, "chatflow_id": FLOW_A, "assigned_at": at("2025-03-03T10:00:00Z"), "is_active": true,
    }])
    .await;
}

fn upload(
    file_id: &str,
    name: &str,
    mime: &str,
    session: &str,
    message: &str,
    kind: &str,
) -> Document {
    doc! {
        "file_id": file_id, "original_name": name, "mime_type": mime, "message_id": message,
        "session_id": session, "user_id": ALICE, "chatflow_id": FLOW_A, "file_size": 0_i32,
        "upload_type": kind, "file_hash": Bson::Null, "processed": true, "processing_error": Bson::Null,
        "uploaded_at": at("2025-03-04T11:00:00.100Z"), "processed_at": Bson::Null, "metadata": Bson::Null,
    }
}

async fn files(p: &Platform, question: ObjectId) -> Files {
    // Over one GridFS chunk, so that the bytes are two chunks in order.
    let mut png_bytes = b"\x89PNG\r\n\x1a\n".to_vec();
    png_bytes.extend((0..300_000u32).map(|i| (i % 251) as u8));
    let png = p
        .gridfs("diagram.png", "image/png", ALICE, S1, &png_bytes)
        .await;
    let csv = p
        .gridfs("marks.csv", "text/csv", ALICE, S1, b"name,mark\nalice,18\n")
        .await;
    // Over the gateway's MAX_UPLOAD_BYTES (4 MiB by default).
    let big = p
        .gridfs(
            "scan.pdf",
            "application/pdf",
            ALICE,
            S1,
            &[b"%PDF-".as_slice(), &vec![b'x'; 4_500_000]].concat(),
        )
        .await;
    let exe = p
        .gridfs(
            "tool.pdf",
            "application/pdf",
            ALICE,
            S1,
            b"MZ\x90\x00\x03\x00\x00\x00binary",
        )
        .await;
    let m = question.to_hex();
    let mut dedup = upload(&png.to_hex(), "diagram.png", "image/png", S1, &m, "file");
    dedup.insert(
        "metadata",
        doc! {"deduplicated": true, "original_file_id": png.to_hex()},
    );
    let mut link = upload("url_-4242", "photo.png", "image/png", S1, &m, "url");
    link.insert("metadata", doc! {"url": "https://example.com/photo.png"});
    Platform::insert(
        &p.proxy,
        "file_uploads",
        vec![
            upload(&png.to_hex(), "diagram.png", "image/png", S1, &m, "file"),
            dedup,
            link,
            upload(
                &csv.to_hex(),
                "marks.csv",
                "text/csv",
                S1,
                "temp_user_message",
                "file",
            ),
            upload(&big.to_hex(), "scan.pdf", "application/pdf", S1, &m, "file"),
            upload(&exe.to_hex(), "tool.pdf", "application/pdf", S1, &m, "file"),
        ],
    )
    .await;
    Files {
        png,
        png_bytes,
        csv,
        big,
        exe,
    }
}

fn message(
    id: ObjectId,
    session: &str,
    user: &str,
    role: &str,
    content: &str,
    time: &str,
) -> Document {
    doc! {
        "_id": id, "chatflow_id": FLOW_A, "session_id": session, "user_id": user, "role": role,
        "content": content, "metadata": Bson::Null, "file_ids": Bson::Null, "has_files": false,
        "created_at": at(time),
    }
}

/// Alice's two conversations (one without a session document), and a
/// message of someone else's in hers; returns her first question's id.
async fn history(p: &Platform) -> (ObjectId, Files) {
    let session = |id: &str, topic: &str| {
        doc! {
            "session_id": id, "user_id": ALICE, "chatflow_id": FLOW_A, "topic": topic,
            "is_active": true, "created_at": at("2025-03-04T11:00:03.200Z"), "last_activity_at": Bson::Null,
        }
    };
    Platform::insert(
        &p.proxy,
        "chat_sessions",
        vec![
            session(S1, "What is inertia?"),
            session(&long_session(), "In a session whose id is too long"),
        ],
    )
    .await;
    let q1 = ObjectId::new();
    let f = files(p, q1).await;
    let mut first = message(
        q1,
        S1,
        ALICE,
        "user",
        "What is inertia?",
        "2025-03-04T11:00:00.000Z",
    );
    first.insert(
        "file_ids",
        vec![
            f.png.to_hex(),
            "url_-4242".into(),
            f.big.to_hex(),
            f.exe.to_hex(),
        ],
    );
    first.insert("has_files", true);
    let mut a1 = message(
        ObjectId::new(),
        S1,
        ALICE,
        "assistant",
        &python_json_tokens(&["Inertia is r", "ésistance to change 😀"]),
        "2025-03-04T11:00:03.120Z",
    );
    a1.insert("metadata", vec![
        Bson::Document(doc! {"event": "start", "data": "Inertia is r"}),
        Bson::Document(doc! {"event": "metadata", "data": {"chatId": "c1", "chatMessageId": "m1", "sessionId": S1}}),
        Bson::Document(doc! {"event": "sourceDocuments", "data": [{"pageContent": "Newton's first law"}]}),
        Bson::Document(doc! {"event": "end", "data": "[DONE]"}),
    ]);
    let mut a2 = message(
        ObjectId::new(),
        S1,
        ALICE,
        "assistant",
        "[]",
        "2025-03-04T11:01:02.000Z",
    );
    a2.insert(
        "metadata",
        vec![Bson::Document(
            doc! {"event": "error", "data": "model overloaded"},
        )],
    );
    Platform::insert(
        &p.proxy,
        "chat_messages",
        vec![
            // Stored out of order: the import orders them by time.
            a2,
            message(
                ObjectId::new(),
                S1,
                ALICE,
                "user",
                "And mass?",
                "2025-03-04T11:01:00.000Z",
            ),
            a1,
            first,
            message(
                ObjectId::new(),
                S1,
                BOB,
                "user",
                "Not Alice's",
                "2025-03-04T11:02:00.000Z",
            ),
            message(
                ObjectId::new(),
                S2,
                ALICE,
                "user",
                "A second chat",
                "2025-03-05T09:00:00.000Z",
            ),
            message(
                ObjectId::new(),
                S2,
                ALICE,
                "assistant",
                &python_json_tokens(&["Hello"]),
                "2025-03-05T09:00:01.000Z",
            ),
            message(
                ObjectId::new(),
                "ghost-session",
                GHOST,
                "user",
                "Boo",
                "2025-03-05T09:00:00.000Z",
            ),
            message(
                ObjectId::new(),
                &long_session(),
                ALICE,
                "user",
                "In a session whose id is too long",
                "2025-03-06T09:00:00.000Z",
            ),
        ],
    )
    .await;
    (q1, f)
}

async fn platform() -> (Platform, ObjectId, Files) {
    let p = Platform::empty().await;
    users(&p).await;
    accounting(&p).await;
    catalogue(&p).await;
    let (q1, files) = history(&p).await;
    (p, q1, files)
}

/// Every account's cached total is what its unexpired allocations hold and
/// what its entries add up to, and every entry's `balance_after` follows.
async fn ledger_adds_up(pool: &sqlx::PgPool) {
    assert_eq!(
        inconsistent_accounts(pool).await,
        0,
        "every balance adds up"
    );
    assert_eq!(chain_breaks(pool).await, 0, "every balance_after follows");
}

/// Ledger entries whose `balance_after` is not the running sum of their
/// account's entries (0 when every one is).
async fn chain_breaks(pool: &sqlx::PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM (
           SELECT balance_after, sum(amount) OVER (PARTITION BY user_id ORDER BY seq) AS running
             FROM credit_transactions) t
          WHERE balance_after <> running",
    )
    .fetch_one(pool)
    .await
    .expect("the ledger is read")
}

/// Everything the import writes, as text (times the import sets itself
/// and generated `_id`s left out), to compare two states of the stores.
async fn fingerprint(pool: &sqlx::PgPool, mongo: &shared::db::mongo::MongoStores) -> String {
    let tables = [
        "SELECT user_id, username, email, role, total_credits FROM user_accounts ORDER BY 1",
        "SELECT id, user_id, credits, remaining, expires_at, expired_at, allocated_by, notes, allocated_at FROM credit_allocations ORDER BY 1",
        "SELECT id, user_id, type, amount, balance_after, actor_id, description, reference, allocation_id, created_at FROM credit_transactions ORDER BY 1",
        "SELECT id, user_id, service, operation, credits, metadata, created_at FROM usage_logs ORDER BY 1",
    ];
    let mut out = String::new();
    for sql in tables {
        let rows: Vec<String> = sqlx::query_scalar(&format!("SELECT t::text FROM ({sql}) t"))
            .fetch_all(pool)
            .await
            .expect("a table");
        out.push_str(&rows.join("\n"));
        out.push('\n');
    }
    for (db, collection, key) in [
        (&mongo.auth, "users", "_id"),
        (&mongo.chat, "chatflows", "chatflow_id"),
        (&mongo.chat, "chat_sessions", "session_id"),
        (&mongo.chat, "chat_messages", "message_id"),
        (&mongo.chat, "files", "file_id"),
    ] {
        let docs: Vec<Document> = db
            .collection::<Document>(collection)
            .find(doc! {})
            .sort(doc! {key: 1})
            .projection(if key == "_id" {
                doc! {}
            } else {
                doc! {"_id": 0}
            })
            .await
            .expect("a collection")
            .try_collect()
            .await
            .expect("its documents");
        for d in docs {
            out.push_str(&Bson::Document(d).into_relaxed_extjson().to_string());
            out.push('\n');
        }
    }
    out
}

fn served() -> StackOptions {
    StackOptions {
        serve: true,
        ..Default::default()
    }
}

fn skipped(report: &Value, kind: &str) -> Vec<(String, String)> {
    report[kind]["skipped"]
        .as_array()
        .expect("a skipped list")
        .iter()
        .map(|s| {
            (
                s["source"].as_str().unwrap().to_owned(),
                s["reason"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn reason_of(report: &Value, kind: &str, source: &str) -> String {
    skipped(report, kind)
        .into_iter()
        .find(|(s, _)| s == source)
        .unwrap_or_else(|| panic!("{source} is skipped in {kind}: {report:#}"))
        .1
}

fn counts(report: &Value, kind: &str) -> (u64, u64, usize) {
    let t = &report[kind];
    (
        t["imported"].as_u64().unwrap(),
        t["unchanged"].as_u64().unwrap(),
        t["skipped"].as_array().unwrap().len(),
    )
}

async fn an_account_of_the_gateway(mongo: &TestMongo, email: &str) {
    let now = bson::DateTime::now();
    auth::store::AuthStore::new(mongo.stores.auth.clone())
        .insert_user(&auth::store::UserDoc {
            id: "gateway-dana".into(),
            username: "dana".into(),
            username_key: "dana".into(),
            email: email.into(),
            pending_email: None,
            password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2hoYXNoaGFzaA"
                .into(),
            role: shared::token::Role::Enduser,
            is_verified: true,
            disabled: false,
            locale: None,
            session_version: 0,
            created_at: now,
            updated_at: now,
        })
        .await
        .expect("dana signed up");
}

/// FLOW_A in the catalogue before the move, public as Flowise listed it
/// (what a sync makes of it).
async fn a_synced_public_chatflow(mongo: &TestMongo) {
    mongo
        .stores
        .chat
        .collection::<Document>("chatflows")
        .insert_one(doc! {
            "chatflow_id": FLOW_A, "name": "Physics tutor", "description": Bson::Null,
            "is_public": true, "allowed_users": [], "removed": false, "deployed": false,
            "kind": "CHATFLOW", "invocable": true, "system_prompt_input": Bson::Null,
            "allowed_overrides": [], "system_messages": "prepend", "synced_at": bson::DateTime::now(),
        })
        .await
        .expect("a synced chatflow");
}

async fn login(stack: &Stack, body: Value) -> (u16, Value) {
    stack.post_public("auth", "/api/auth/login", body).await
}

/// Signs in by `field`, checks the token's user is `id`; returns the token.
async fn signs_in(stack: &Stack, field: &str, who: &str, password: &str, id: &str) -> String {
    let (status, body) = login(stack, json!({field: who, "password": password})).await;
    assert_eq!(status, 200, "{who} signs in by {field}: {body}");
    assert_eq!(body["user"]["id"], id, "{body}");
    let token = body["accessToken"].as_str().unwrap().to_owned();
    let claims: Value = {
        use base64::Engine;
        let payload = token.split('.').nth(1).unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(payload)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(claims["sub"], id, "the token's sub is the platform's id");
    token
}

async fn stored_hash(mongo: &TestMongo, id: &str) -> String {
    let user = auth::store::AuthStore::new(mongo.stores.auth.clone())
        .user_by_id(id)
        .await
        .unwrap()
        .expect("the user is here");
    user.password_hash
}

async fn bytes_of(stack: &Stack, path: &str, token: &str) -> (u16, Vec<u8>) {
    let res = stack
        .http
        .get(stack.url("predict", path))
        .bearer_auth(token)
        .send()
        .await
        .expect("an answer");
    (
        res.status().as_u16(),
        res.bytes().await.expect("bytes").to_vec(),
    )
}

#[tokio::test]
async fn the_platform_moves_in_and_its_users_find_everything_as_they_left_it() {
    let (p, q1, files) = platform().await;
    let stack = Stack::start_with(served()).await;
    let mongo = stack.mongo.as_ref().expect("MongoDB");
    an_account_of_the_gateway(mongo, "taken@example.com").await;
    a_synced_public_chatflow(mongo).await;
    let env = target_env(&stack.pg.url, &mongo.config);

    // A dry run reads and checks everything, and writes nothing.
    let empty = fingerprint(&stack.pg.pool, &mongo.stores).await;
    let summary = p.import_text(&env, &["--dry-run"]).await;
    eprintln!("{summary}");
    assert!(
        summary.starts_with("Dry run: nothing was written."),
        "{summary}"
    );
    assert!(
        summary.contains("users        would import        7"),
        "{summary}"
    );
    let dry = p.import(&env, &["--dry-run"]).await;
    assert_eq!(
        fingerprint(&stack.pg.pool, &mongo.stores).await,
        empty,
        "a dry run writes nothing"
    );

    let first = p.import(&env, &[]).await;
    assert_eq!(dry, first, "the dry run reported what the run did");
    assert_eq!(counts(&first, "users"), (7, 0, 3), "{first:#}");
    assert!(reason_of(&first, "users", &format!("users/{HANK}")).contains("is account"));
    assert!(reason_of(&first, "users", &format!("users/{ANN}")).contains("compared without case"));
    assert!(reason_of(&first, "users", &format!("users/{DAVE}")).contains("taken@example.com"));
    // 17 expired when it was made: it comes expired.
    assert_eq!(counts(&first, "allocations"), (6, 0, 1), "{first:#}");
    assert!(reason_of(&first, "allocations", "credit_allocations/16").contains(GHOST));
    assert_eq!(counts(&first, "usage"), (4, 0, 2), "{first:#}");
    assert!(reason_of(&first, "usage", "usage_records/44").contains(GHOST));
    assert!(reason_of(&first, "usage", "streaming_sessions/s-open").contains("not carried over"));
    assert_eq!(counts(&first, "chatflows"), (2, 0, 0));
    assert_eq!(counts(&first, "access"), (2, 1, 4), "{first:#}");
    assert!(skipped(&first, "access")
        .iter()
        .any(|(s, r)| s.starts_with("user_chatflows/") && r.contains("grants nothing")));
    assert_eq!(counts(&first, "files"), (2, 1, 3), "{first:#}");
    assert_eq!(counts(&first, "sessions"), (2, 0, 1), "{first:#}");
    let long = format!("chat_sessions/{}", long_session());
    assert!(reason_of(&first, "sessions", &long).contains("128 characters"));
    assert_eq!(counts(&first, "messages"), (6, 0, 3), "{first:#}");
    ledger_adds_up(&stack.pg.pool).await;
    let imported = fingerprint(&stack.pg.pool, &mongo.stores).await;

    // Again: everything is already here, nothing changes.
    let second = p.import(&env, &[]).await;
    for kind in KINDS {
        let (i, u, s) = counts(&first, kind);
        assert_eq!(
            counts(&second, kind),
            (0, i + u, s),
            "{kind} on the second run: {second:#}"
        );
    }
    assert_eq!(
        fingerprint(&stack.pg.pool, &mongo.stores).await,
        imported,
        "a second run changes nothing"
    );

    // Passwords: the platform's, by username and by email; the platform's
    // id is the token's sub; argon2id replaces bcrypt at the first sign-in.
    assert!(stored_hash(mongo, ALICE).await.starts_with("$2b$"));
    let alice = signs_in(&stack, "username", "Alice_Smith", "alice-platform-1", ALICE).await;
    assert!(
        stored_hash(mongo, ALICE).await.starts_with("$argon2id$"),
        "no bcrypt hash survives a sign-in"
    );
    signs_in(
        &stack,
        "email",
        "ALICE@example.com",
        "alice-platform-1",
        ALICE,
    )
    .await;
    let bob = signs_in(&stack, "email", "bob@example.com", "bob-platform-1", BOB).await;
    assert!(stored_hash(mongo, BOB).await.starts_with("$argon2id$"));
    signs_in(&stack, "username", "bob", "bob-platform-1", BOB).await;
    let boss = signs_in(&stack, "username", "Boss", "boss-platform-1", BOSS).await;
    signs_in(&stack, "email", "boss@example.com", "boss-platform-1", BOSS).await;
    let (status, body) = login(
        &stack,
        json!({"username": "bob", "password": "bob-platform-2"}),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    let (status, body) = stack.get("auth", "/api/admin/users", &boss).await;
    assert_eq!(status, 200, "the platform's admin is an admin here: {body}");

    // Carol's 81-byte password: as bcryptjs, only its first 72 bytes
    // count. She was never verified: the right password is told so, and
    // she can ask for a code.
    let other_tail = format!("carol-{}-other", "x".repeat(70));
    let (status, body) = login(&stack, json!({"username": "carol", "password": other_tail})).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("email_not_verified")),
        "{body}"
    );
    let (status, _) = stack
        .post_public(
            "auth",
            "/api/auth/resend-verification",
            json!({"email": "carol@example.com"}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        stack
            .smtp
            .wait_for("carol@example.com", 0)
            .await
            .code()
            .is_some(),
        "a code is mailed"
    );
    let (status, body) = login(
        &stack,
        json!({"username": "Alice_smith", "password": "ann-platform-1"}),
    )
    .await;
    assert_eq!(status, 401, "the clashing account was not brought: {body}");

    // Credits as they stood: 376 + 20 left on unexpired allocations.
    let (status, balance) = stack.get("credits", "/api/credits/balance", &alice).await;
    assert_eq!(
        (status, balance["totalCredits"].as_i64()),
        (200, Some(396)),
        "{balance}"
    );
    let allocation = balance["allocations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["credits"] == 500)
        .expect("allocation 12");
    assert_eq!(allocation["remaining"], 376);
    assert_eq!(allocation["allocatedAt"], "2025-03-01T08:00:00.123Z");
    assert_eq!(
        allocation["grantedBy"], "Boss",
        "the platform's admin gave it"
    );
    let expires: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("SELECT expires_at FROM credit_allocations WHERE id = 12")
            .fetch_one(&p.accounting)
            .await
            .unwrap();
    let shown: chrono::DateTime<chrono::Utc> =
        allocation["expiresAt"].as_str().unwrap().parse().unwrap();
    assert_eq!(shown, expires, "{allocation}");
    let (notes, by): (Option<String>, String) =
        sqlx::query_as("SELECT notes, allocated_by FROM credit_allocations WHERE credits = 500")
            .fetch_one(&stack.pg.pool)
            .await
            .unwrap();
    assert_eq!((notes.as_deref(), by.as_str()), (Some("term 1"), BOSS));
    assert_eq!(stack.balance(&bob).await, 50);
    let (_, history) = stack
        .get("credits", "/api/credits/transactions?limit=100", &alice)
        .await;
    let kinds: Vec<&str> = history["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds.iter().filter(|k| **k == "import").count(),
        4,
        "{history}"
    );
    assert!(
        kinds.contains(&"deduction") && kinds.contains(&"expiry"),
        "{kinds:?}"
    );

    // Usage: her four records in March 2025, six credits.
    let (status, stats) = stack
        .get(
            "usage",
            "/api/usage/stats?from=2025-03-01&to=2025-03-31",
            &alice,
        )
        .await;
    assert_eq!(status, 200, "{stats}");
    assert_eq!(
        (
            stats["totalRecords"].as_i64(),
            stats["totalCredits"].as_i64()
        ),
        (Some(4), Some(6)),
        "{stats}"
    );
    assert!(stats["byChatflow"].to_string().contains(FLOW_A), "{stats}");

    // Chatflows: Alice's active grant; Bob's was revoked, and Flowise's
    // isPublic granted nothing on the platform.
    let (_, flows) = stack.get("predict", "/api/v1/chatflows", &alice).await;
    let ids: Vec<&str> = flows["chatflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![FLOW_A], "{flows}");
    let (_, flows) = stack.get("predict", "/api/v1/chatflows", &bob).await;
    assert_eq!(flows["chatflows"], json!([]), "{flows}");

    // History as she left it, files byte for byte.
    let (_, sessions) = stack.get("predict", "/api/v1/chat/sessions", &alice).await;
    let sessions = sessions["sessions"].as_array().unwrap().clone();
    assert_eq!(sessions.len(), 2, "{sessions:?}");
    let s1 = sessions.iter().find(|s| s["session_id"] == S1).expect("S1");
    assert_eq!(
        (s1["topic"].as_str(), s1["message_count"].as_i64()),
        (Some("What is inertia?"), Some(4))
    );
    assert!(sessions
        .iter()
        .any(|s| s["session_id"] == S2 && s["topic"] == "A second chat"));
    let (_, page) = stack
        .get(
            "predict",
            &format!("/api/v1/chat/sessions/{S1}/messages"),
            &alice,
        )
        .await;
    let messages = page["messages"].as_array().unwrap();
    let shown: Vec<(&str, &str)> = messages
        .iter()
        .map(|m| {
            (
                m["content"].as_str().unwrap(),
                m["status"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        shown,
        vec![
            ("What is inertia?", "complete"),
            ("Inertia is résistance to change 😀", "complete"),
            ("And mass?", "complete"),
            ("", "incomplete"),
        ]
    );
    assert_eq!(messages[0]["message_id"], q1.to_hex());
    assert_eq!(messages[0]["created_at"], "2025-03-04T11:00:00Z");
    assert_eq!(messages[0]["file_ids"], json!([files.png.to_hex()]));
    let attached = messages[0]["metadata"]["files"].as_array().unwrap();
    let names: Vec<&str> = attached
        .iter()
        .map(|f| f["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["diagram.png", "photo.png", "scan.pdf", "tool.pdf"]
    );
    assert!(attached[0].get("not_imported").is_none());
    assert!(
        attached[2]["not_imported"]
            .as_str()
            .unwrap()
            .contains("MAX_UPLOAD_BYTES"),
        "{attached:?}"
    );
    assert!(
        messages[1]["metadata"]["sourceDocuments"].is_array(),
        "{}",
        messages[1]
    );
    assert_eq!(messages[3]["metadata"]["error"], "upstream_error");
    let (status, bytes) = bytes_of(
        &stack,
        &format!("/api/v1/chat/files/{}", files.png.to_hex()),
        &alice,
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        bytes == files.png_bytes,
        "the file comes back byte for byte"
    );
    let (status, bytes) = bytes_of(
        &stack,
        &format!("/api/v1/chat/files/{}", files.csv.to_hex()),
        &alice,
    )
    .await;
    assert_eq!(
        (status, bytes.as_slice()),
        (200, b"name,mark\nalice,18\n".as_slice())
    );
    let (status, _) = bytes_of(
        &stack,
        &format!("/api/v1/chat/files/{}", files.png.to_hex()),
        &bob,
    )
    .await;
    assert_eq!(status, 403, "a file stays its owner's");
    for missing in [files.big, files.exe] {
        let (status, _) = bytes_of(
            &stack,
            &format!("/api/v1/chat/files/{}", missing.to_hex()),
            &alice,
        )
        .await;
        assert_eq!(status, 404);
    }

    // A password longer than passwords set here, and a username with an
    // `@`: both sign in, before and after the rehash.
    let erin_password = format!("erin-{}end", "long-".repeat(40));
    for field in ["username", "email"] {
        let (erin, frank) = match field {
            "username" => ("erin", "frank@work"),
            _ => ("erin@example.com", "frank@example.com"),
        };
        signs_in(&stack, field, erin, &erin_password, ERIN).await;
        signs_in(&stack, field, frank, "frank-platform-1", FRANK).await;
    }
    assert!(stored_hash(mongo, ERIN).await.starts_with("$argon2id$"));

    after_the_move(&p, &stack, &env, &alice, &boss).await;
}

/// Between two runs, the gateway deletes a user, revokes a grant and loses
/// a conversation; the platform spends 76 of allocation 12, replaces
/// allocation 14 (20 left) by a new one of 10 (a balance set there), and
/// stores a late answer. The next run brings the platform's changes and
/// none of the gateway's deletions back.
async fn after_the_move(
    p: &Platform,
    stack: &Stack,
    env: &[(String, String)],
    alice: &str,
    boss: &str,
) {
    let delete = reqwest::Method::DELETE;
    let (status, body) = stack
        .request(
            delete.clone(),
            "auth",
            &format!("/api/admin/users/{BOB}"),
            Some(boss),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let revoke = json!({"userIds": [ALICE]});
    let path = format!("/api/v1/admin/chatflows/{FLOW_A}/users");
    let (status, body) = stack
        .request(delete.clone(), "predict", &path, Some(boss), Some(revoke))
        .await;
    assert!(status < 300, "{status} {body}");
    let path = format!("/api/v1/chat/sessions/{S2}");
    let (status, body) = stack
        .request(delete, "predict", &path, Some(alice), None)
        .await;
    assert_eq!(status, 204, "{body}");
    sqlx::raw_sql(&format!(
        "UPDATE credit_allocations SET remaining_credits = 300 WHERE id = 12;
         DELETE FROM credit_allocations WHERE id = 14;
         INSERT INTO credit_allocations (id, user_id, total_credits, remaining_credits, allocated_by, allocated_at, expires_at, notes)
           VALUES (19, '{ALICE}', 10, 10, '{BOSS}', now(), now() + interval '30 days', 'balance set');"
    ))
    .execute(&p.accounting)
    .await
    .expect("the platform moves on");
    Platform::insert(
        &p.proxy,
        "chat_messages",
        vec![message(
            ObjectId::new(),
            S1,
            ALICE,
            "user",
            "One more late question",
            "2025-03-04T11:05:00.000Z",
        )],
    )
    .await;

    // Gina changes her password on the platform (to dave-platform-1's hash)
    // before she ever signs in here.
    p.auth
        .collection::<Document>("users")
        .update_one(
            doc! {"_id": oid(GINA)},
            doc! {"$set": {"password": DAVE_HASH}},
        )
        .await
        .unwrap();

    let third = p.import(env, &[]).await;
    assert_eq!(
        counts(&third, "users").0,
        1,
        "Gina's new password, and Bob stays deleted: {third:#}"
    );
    signs_in(stack, "username", "gina", "dave-platform-1", GINA).await;
    let (status, _) = login(
        stack,
        json!({"username": "bob", "password": "bob-platform-1"}),
    )
    .await;
    assert_eq!(status, 401);
    // 12 spent 76 more, 14 is gone, 19 is new.
    assert_eq!(counts(&third, "allocations").0, 3, "{third:#}");
    assert_eq!(stack.balance(alice).await, 396 - 76 - 20 + 10);
    assert_eq!(
        counts(&third, "access").0,
        0,
        "a revoked grant stays revoked: {third:#}"
    );
    let (_, flows) = stack.get("predict", "/api/v1/chatflows", alice).await;
    assert_eq!(flows["chatflows"], json!([]), "{flows}");
    assert_eq!(counts(&third, "messages").0, 1, "{third:#}");
    let (_, sessions) = stack.get("predict", "/api/v1/chat/sessions", alice).await;
    let ids: Vec<&str> = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec![S1],
        "a deleted conversation stays deleted: {sessions}"
    );
    assert_eq!(sessions["sessions"][0]["message_count"], 5);
    ledger_adds_up(&stack.pg.pool).await;
    // And once more: nothing new.
    let fourth = p.import(env, &[]).await;
    for kind in KINDS {
        assert_eq!(counts(&fourth, kind).0, 0, "{kind}: {fourth:#}");
    }
}

#[tokio::test]
async fn a_platform_password_is_locked_out_like_any_other() {
    let p = Platform::empty().await;
    Platform::insert(
        &p.auth,
        "users",
        vec![user_doc(
            oid(DAVE),
            "dave",
            "dave@example.com",
            DAVE_HASH,
            Some("user"),
            Some(true),
        )],
    )
    .await;
    let stack = Stack::start_with(served()).await;
    let mongo = stack.mongo.as_ref().expect("MongoDB");
    p.import(&target_env(&stack.pg.url, &mongo.config), &[])
        .await;
    for _ in 0..5 {
        let (status, body) = login(
            &stack,
            json!({"username": "dave", "password": "wrong-password"}),
        )
        .await;
        assert_eq!(status, 401, "{body}");
    }
    let (status, body) = login(
        &stack,
        json!({"username": "dave", "password": "dave-platform-1"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (429, Some("account_locked")),
        "{body}"
    );
    assert!(
        stored_hash(mongo, DAVE).await.starts_with("$2b$"),
        "a locked sign-in proves nothing"
    );
}

/// A generated platform of `size`, and fresh gateway stores.
async fn generated(size: Size) -> (Platform, TestPostgres, TestMongo) {
    let p = Platform::empty().await;
    p.generate(size).await;
    let (pg, mongo) = tokio::join!(TestPostgres::new(), TestMongo::new());
    (p, pg, mongo)
}

#[tokio::test]
async fn an_interrupted_import_finishes_on_the_next_run_with_nothing_doubled() {
    let size = Size {
        users: 300,
        allocations_per_user: 5,
        messages_per_user: 10,
    };
    let (p, pg, mongo) = generated(size).await;
    let env = target_env(&pg.url, &mongo.config);
    e2e::stack::ensure_binaries_built();

    // Killed once it is writing messages (progress goes to standard error).
    let mut child = p
        .import_command(&env, &[])
        .spawn()
        .expect("gateway-admin starts");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(child.stderr.take().unwrap()));
    while let Some(line) = lines.next_line().await.expect("its standard error") {
        if line.starts_with("chat_messages:") {
            break;
        }
    }
    let messages = mongo.stores.chat.collection::<Document>("chat_messages");
    while messages.count_documents(doc! {}).await.unwrap() == 0 {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    child.kill().await.expect("killed");
    let written: u64 = mongo
        .stores
        .chat
        .collection::<Document>("chat_messages")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert!(
        written > 0 && written < (size.users * size.messages_per_user) as u64,
        "killed before the end ({written} written)"
    );

    let report = p.import(&env, &[]).await;
    let total = |kind: &str| {
        let (i, u, s) = counts(&report, kind);
        i + u + s as u64
    };
    assert_eq!(total("users"), size.users as u64, "{report:#}");
    assert_eq!(
        total("allocations"),
        (size.users * size.allocations_per_user) as u64
    );
    assert_eq!(
        total("messages"),
        (size.users * size.messages_per_user) as u64
    );
    assert_eq!(counts(&report, "users").2, 0, "{report:#}");
    ledger_adds_up(&pg.pool).await;

    // The same stores as one uninterrupted run makes.
    let (pg2, mongo2) = tokio::join!(TestPostgres::new(), TestMongo::new());
    let clean = p.import(&target_env(&pg2.url, &mongo2.config), &[]).await;
    for kind in KINDS {
        let (i, u, s) = counts(&clean, kind);
        let (i2, u2, s2) = counts(&report, kind);
        assert_eq!(
            (i + u, s),
            (i2 + u2, s2),
            "{kind}: {:?}",
            skipped(&clean, kind).first()
        );
    }
    assert_eq!(
        fingerprint(&pg.pool, &mongo.stores).await,
        fingerprint(&pg2.pool, &mongo2.stores).await,
        "an interrupted run and its rerun leave what one run leaves"
    );
    // Each user's balance: what remains on the unexpired allocations.
    let expected: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(remaining_credits), 0)::bigint FROM credit_allocations WHERE expires_at > now()",
    )
    .fetch_one(&p.accounting)
    .await
    .unwrap();
    let total: i64 =
        sqlx::query_scalar("SELECT COALESCE(SUM(total_credits), 0)::bigint FROM user_accounts")
            .fetch_one(&pg.pool)
            .await
            .unwrap();
    assert_eq!(total, expected);
}

#[tokio::test]
async fn a_dry_run_writes_nothing_not_even_the_migrations() {
    use sqlx::{ConnectOptions, Connection};
    use std::str::FromStr;
    let p = Platform::empty().await;
    let base = shared::testing::postgres_base_url();
    let name = format!("fgw_unmigrated_{}", uuid::Uuid::new_v4().simple());
    let mut admin = sqlx::postgres::PgConnectOptions::from_str(&base)
        .unwrap()
        .connect()
        .await
        .unwrap();
    sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
        .execute(&mut admin)
        .await
        .unwrap();
    let url = shared::testing::with_database(&base, &name);
    let mongo = TestMongo::new().await;
    e2e::stack::ensure_binaries_built();
    let out = p
        .import_command(&target_env(&url, &mongo.config), &["--dry-run", "--json"])
        .output()
        .await
        .expect("gateway-admin runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("gateway-admin migrate"),
        "it says what to do: {stderr}"
    );
    let mut conn = sqlx::PgConnection::connect(&url).await.unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 0, "the dry run made no table");
    conn.close().await.ok();
    sqlx::query(&format!(r#"DROP DATABASE "{name}" WITH (FORCE)"#))
        .execute(&mut admin)
        .await
        .unwrap();
}

#[tokio::test]
async fn in_the_console_alice_finds_her_conversation_as_she_left_it() {
    use browser::{console_stack, sign_in, Browser};
    let (p, _, _) = platform().await;
    let flowise = shared::flowise_double::FlowiseDouble::start().await;
    let (stack, base) = console_stack(&flowise).await;
    let mongo = stack.mongo.as_ref().expect("MongoDB");
    p.import(&target_env(&stack.pg.url, &mongo.config), &[])
        .await;

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, "Alice_Smith", "alice-platform-1").await;
    browser.open(&base, &format!("chat?session={S1}")).await;
    browser
        .wait_text("#main", "Inertia is résistance to change 😀")
        .await;
    browser.wait_text("#main", "And mass?").await;
    let files = browser.wait_text(".attachments", "scan.pdf").await;
    assert!(files.contains("diagram.png"), "{files}");
    assert!(
        files.contains("not brought from the old platform"),
        "{files}"
    );
    browser.assert_accessible("imported conversation").await;
    for (locale, note) in [("zh-CN", "未从旧平台转入"), ("zh-TW", "未從舊平台轉入")] {
        browser.select("#locale", locale).await;
        browser.wait_text(".attachments", note).await;
        browser
            .shot(&format!("imported conversation {locale}"))
            .await;
    }
    browser.select("#locale", "en").await;
    browser.open(&base, "credits").await;
    browser.wait_text("#main", "396").await;

    // On a phone: the conversation and its notes fit the width.
    let phone = Browser::start(375, 800).await;
    sign_in(&phone, &base, "Alice_Smith", "alice-platform-1").await;
    phone.open(&base, &format!("chat?session={S1}")).await;
    phone
        .wait_text(".attachments", "not brought from the old platform")
        .await;
    assert!(
        phone.no_horizontal_scroll().await,
        "the conversation fits a phone"
    );
    phone.shot("imported conversation phone").await;
}

#[tokio::test]
async fn two_imports_never_run_at_once() {
    use sqlx::Connection;
    let p = Platform::empty().await;
    users(&p).await;
    let (pg, mongo) = tokio::join!(TestPostgres::new(), TestMongo::new());
    // Another import holds the lock (the one `gateway-admin` takes).
    let mut other = sqlx::PgConnection::connect(&pg.url).await.unwrap();
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(0x6667_772d_696d_7074_i64)
        .execute(&mut other)
        .await
        .unwrap();
    e2e::stack::ensure_binaries_built();
    let out = p
        .import_command(&target_env(&pg.url, &mongo.config), &["--json"])
        .output()
        .await
        .expect("gateway-admin runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("another import-platform is running"),
        "{stderr}"
    );
    let users: u64 = mongo
        .stores
        .auth
        .collection::<Document>("users")
        .count_documents(doc! {})
        .await
        .unwrap();
    assert_eq!(users, 0, "the refused run wrote nothing");
    // Once the other is done, it runs.
    other.close().await.unwrap();
    let report = p.import(&target_env(&pg.url, &mongo.config), &[]).await;
    assert_eq!(counts(&report, "users").0, 8, "{report:#}");
}
