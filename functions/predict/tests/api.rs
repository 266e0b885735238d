//! The predict family in-process, against real PostgreSQL and MongoDB and
//! the Flowise double (README §8).
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use std::time::{Duration, Instant};

use axum::body::Body;
use common::{flowise_config, frames, names, App, ANSWER};
use futures_util::StreamExt;
use serde_json::{json, Value};
use shared::flowise::FlowiseClient;
use shared::flowise_double::{split_tokens, Behaviour};
use shared::testing::call;
use shared::token::Role;
use tower::ServiceExt;

#[tokio::test]
async fn a_buffered_prediction_is_priced_paid_stored_and_recorded() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let admin = app.token("admin-1", Role::Admin);
    let allow = json!({"allowedOverrides": ["vars"]});
    let res = app
        .send("PUT", "/api/v1/admin/chatflows/flow-a", &admin, Some(allow))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app.predict(&user, json!({"chatflow_id": "flow-a", "question": "Hi there", "overrideConfig": {"vars": {"x": 1}}})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["text"], ANSWER);
    // 2 per request + 1 x ceil(34 / 4) = 9 output tokens.
    assert_eq!(res.body["credits"], json!({"charged": 11, "balance": 89}));
    let session = res.body["session_id"].as_str().unwrap().to_owned();
    // Flowise got our session id, the key and the caller's overrides.
    let sent = app.flowise.received().pop().unwrap();
    assert_eq!(sent.body["overrideConfig"]["sessionId"], session.as_str());
    assert_eq!(sent.body["overrideConfig"]["vars"]["x"], 1);
    assert_eq!(sent.body["streaming"], false);
    assert_eq!(sent.authorization.as_deref(), Some("Bearer flowise-key"));
    // History holds both messages.
    let messages = app
        .send(
            "GET",
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &user,
            None,
        )
        .await;
    let roles: Vec<&str> = messages.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, ["user", "assistant"]);
    assert_eq!(messages.body["messages"][1]["status"], "complete");
    let sessions = app.send("GET", "/api/v1/chat/sessions", &user, None).await;
    assert_eq!(sessions.body["sessions"][0]["topic"], "Hi there");
    assert_eq!(sessions.body["sessions"][0]["message_count"], 2);
    // Usage is recorded in the same database as the ledger.
    let (credits, operation, output): (i64, String, i64) = sqlx::query_as(
        "SELECT credits, operation, (metadata->>'output_tokens')::bigint FROM usage_logs WHERE user_id = 'u1'",
    )
    .fetch_one(&app.pg.pool)
    .await
    .unwrap();
    assert_eq!((credits, operation.as_str(), output), (11, "flow-a", 9));
    assert_eq!(app.active_reservations().await, 0);
    // The same session continues.
    let again = app
        .predict(
            &user,
            json!({"chatflow_id": "flow-a", "question": "More", "session_id": session}),
        )
        .await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body["session_id"], session.as_str());
}

#[tokio::test]
async fn reported_token_counts_price_the_answer() {
    let app = App::new().await;
    app.flowise.set_behaviour(
        "flow-a",
        Behaviour::Answer {
            tokens: split_tokens(ANSWER),
            delay: Duration::ZERO,
            usage: Some((40, 25)),
            heartbeat: false,
        },
    );
    app.grant("u1", 100).await;
    let res = app
        .predict(
            &app.token("u1", Role::Enduser),
            json!({"chatflow_id": "flow-a", "question": "Hi"}),
        )
        .await;
    assert_eq!(res.body["credits"]["charged"], 2 + 25, "{}", res.body);
}

/// flow-a with Flowise reporting `output` tokens for its answer.
fn reporting(app: &App, output: i64) {
    app.flowise.set_behaviour(
        "flow-a",
        Behaviour::Answer {
            tokens: split_tokens(ANSWER),
            delay: Duration::ZERO,
            usage: Some((10, output)),
            heartbeat: false,
        },
    );
}

#[tokio::test]
async fn an_answer_dearer_than_its_hold_tops_it_up_and_one_past_the_means_is_cut() {
    let app = App::new().await;
    let question = json!({"chatflow_id": "flow-a", "question": "Hi"});
    // Reserved: 2 + 1,000 output tokens; the answer costs 2 + 1,500: the
    // hold is topped up from the balance.
    reporting(&app, 1_500);
    app.grant("u1", 2_000).await;
    let res = app
        .predict(&app.token("u1", Role::Enduser), question.clone())
        .await;
    assert_eq!(
        res.body["credits"],
        json!({"charged": 1_502, "balance": 498})
    );
    assert_eq!(res.body["status"], "complete");
    assert_eq!(app.balance("u1").await, 498);
    // Dearer than the whole balance: the answer is cut to the part the 498
    // pay for, each character at its share of Flowise's count (5,000 tokens
    // for 34 characters: 3 characters are 442 tokens, 4 would be 589).
    reporting(&app, 5_000);
    let res = app.predict(&app.token("u1", Role::Enduser), question).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["text"], &ANSWER[..3]);
    assert_eq!(res.body["status"], "incomplete");
    assert_eq!(res.body["reason"], "credits_exhausted");
    assert_eq!(res.body["truncated"], true);
    assert_eq!(res.body["credits"], json!({"charged": 444, "balance": 54}));
    assert_eq!(app.balance("u1").await, 54);
    let shortfall: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(shortfall_credits), 0)::BIGINT FROM streaming_sessions",
    )
    .fetch_one(&app.pg.pool)
    .await
    .unwrap();
    assert_eq!(shortfall, 0);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn short_credits_are_402_and_nothing_reaches_flowise() {
    let app = App::new().await;
    let user = app.token("broke", Role::Enduser);
    let res = app
        .predict(&user, json!({"chatflow_id": "flow-a", "question": "Hi"}))
        .await;
    res.assert_error(402, "insufficient_credits");
    // What a person is told is built from numbers, not the server's text:
    // the known part of the price (2 per request) against a balance of 0.
    assert_eq!(
        (res.body["needed"].as_i64(), res.body["available"].as_i64()),
        (Some(2), Some(0)),
        "{}",
        res.body
    );
    assert!(app.flowise.received().is_empty());
}

#[tokio::test]
async fn chatflow_access_and_session_ownership_are_enforced() {
    let app = App::new().await;
    let admin = app.add_private_flow("flow-private").await;
    app.grant("u1", 100).await;
    app.grant("u2", 100).await;
    let u1 = app.token("u1", Role::Enduser);
    let u2 = app.token("u2", Role::Enduser);
    app.predict(
        &u1,
        json!({"chatflow_id": "flow-private", "question": "Hi"}),
    )
    .await
    .assert_error(403, "forbidden");
    app.send("GET", "/api/v1/chatflows/flow-private", &u1, None)
        .await
        .assert_error(403, "forbidden");
    let listed = app.send("GET", "/api/v1/chatflows", &u1, None).await;
    assert_eq!(listed.body["chatflows"].as_array().unwrap().len(), 1);
    // Granted by email (u1's token says u1@example.com).
    let res = app
        .send(
            "POST",
            "/api/v1/admin/chatflows/flow-private/users",
            &admin,
            Some(json!({"emails": ["U1@example.com"]})),
        )
        .await;
    assert_eq!(
        res.body["chatflow"]["allowedUsers"],
        json!(["u1@example.com"])
    );
    let ok = app
        .predict(
            &u1,
            json!({"chatflow_id": "flow-private", "question": "Hi"}),
        )
        .await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    // u2 may not use u1's session, nor read it.
    let session = ok.body["session_id"].as_str().unwrap();
    app.predict(
        &u2,
        json!({"chatflow_id": "flow-a", "question": "Hi", "session_id": session}),
    )
    .await
    .assert_error(403, "forbidden");
    app.send(
        "GET",
        &format!("/api/v1/chat/sessions/{session}/messages"),
        &u2,
        None,
    )
    .await
    .assert_error(403, "forbidden");
    app.send(
        "DELETE",
        &format!("/api/v1/chat/sessions/{session}"),
        &u2,
        None,
    )
    .await
    .assert_error(403, "forbidden");
    assert_eq!(
        app.send("GET", "/api/v1/chat/sessions", &u2, None)
            .await
            .body["total"],
        0
    );
    app.predict(
        &u1,
        json!({"chatflow_id": "flow-a", "question": "Hi", "session_id": "nope"}),
    )
    .await
    .assert_error(404, "not_found");
    // Revoked again.
    app.send(
        "DELETE",
        "/api/v1/admin/chatflows/flow-private/users",
        &admin,
        Some(json!({"emails": ["u1@example.com"]})),
    )
    .await;
    app.predict(
        &u1,
        json!({"chatflow_id": "flow-private", "question": "Hi"}),
    )
    .await
    .assert_error(403, "forbidden");
    // Only admins manage chatflows.
    app.send("POST", "/api/v1/admin/chatflows/sync", &u1, None)
        .await
        .assert_error(403, "forbidden");
}

#[tokio::test]
async fn sync_creates_updates_and_marks_removed() {
    let app = App::new().await;
    let admin = app.token("admin-1", Role::Admin);
    app.flowise
        .add_flow("flow-b", "Second", Behaviour::answer("b"));
    let res = app
        .send("POST", "/api/v1/admin/chatflows/sync", &admin, None)
        .await;
    assert_eq!(res.body, json!({"created": 1, "updated": 0, "removed": 0}));
    app.flowise
        .add_flow("flow-a", "Support bot v2", Behaviour::answer(ANSWER));
    app.flowise.remove_flow("flow-b");
    let res = app
        .send("POST", "/api/v1/admin/chatflows/sync", &admin, None)
        .await;
    assert_eq!(res.body, json!({"created": 0, "updated": 1, "removed": 1}));
    let all = app
        .send("GET", "/api/v1/admin/chatflows", &admin, None)
        .await;
    let b = all.body["chatflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "flow-b")
        .cloned()
        .unwrap();
    assert_eq!(b["removed"], true);
    assert_eq!(b["name"], "Second", "a removed chatflow keeps its name");
    app.send("GET", "/api/v1/chatflows/flow-b", &admin, None)
        .await
        .assert_error(404, "not_found");
    // The admin's public flag survives a sync.
    let a = all.body["chatflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "flow-a")
        .cloned()
        .unwrap();
    assert_eq!(
        (a["isPublic"].clone(), a["name"].clone()),
        (json!(true), json!("Support bot v2"))
    );
}

#[tokio::test]
async fn a_flowise_failure_releases_the_whole_reservation() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    app.flowise.set_behaviour(
        "flow-a",
        Behaviour::Fail("Error: predictionsServices.buildChatflow - Connection error.".into()),
    );
    let res = app
        .predict(&user, json!({"chatflow_id": "flow-a", "question": "Hi"}))
        .await;
    res.assert_error(502, "upstream_error");
    assert!(
        !res.body["message"]
            .as_str()
            .unwrap()
            .contains("predictionsServices"),
        "internal detail leaked"
    );
    app.flowise.set_behaviour("flow-a", Behaviour::Stall);
    app.predict(&user, json!({"chatflow_id": "flow-a", "question": "Hi"}))
        .await
        .assert_error(504, "upstream_timeout");
    assert_eq!(app.balance("u1").await, 100, "the user pays nothing");
    assert_eq!(app.active_reservations().await, 0);
    let failures: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM usage_logs WHERE credits = 0 AND metadata->>'status' = 'failed'",
    )
    .fetch_one(&app.pg.pool)
    .await
    .unwrap();
    assert_eq!(failures, 2, "each failure is recorded");
    assert_eq!(
        app.send("GET", "/api/v1/chat/sessions", &user, None)
            .await
            .body["total"],
        0
    );
    // Flowise unreachable.
    let down = predict::AppState {
        flowise: FlowiseClient::new(&flowise_config("http://127.0.0.1:9")).unwrap(),
        ..app.state.clone()
    };
    call(
        &predict::router(down),
        "POST",
        "/api/v1/chat/predict",
        Some(json!({"chatflow_id": "flow-a", "question": "Hi"})),
        Some(&user),
    )
    .await
    .assert_error(502, "upstream_error");
    assert_eq!(app.balance("u1").await, 100);
}

#[tokio::test]
async fn stored_files_go_to_flowise_as_data_url_uploads() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let b64 = base64_encode(png);
    let stored = app
        .send(
            "POST",
            "/api/v1/chat/files",
            &user,
            Some(json!({"name": "pixel.png", "mime": "image/png", "data": b64})),
        )
        .await;
    assert_eq!(stored.status, 201, "{}", stored.body);
    let file_id = stored.body["file_id"].as_str().unwrap().to_owned();
    assert_eq!(stored.body["size"], png.len());
    let res = app
        .predict(&user, json!({"chatflow_id": "flow-a", "question": "What is this?", "uploads": [{"file_id": file_id}, {"type": "url", "name": "cat", "mime": "image/png", "data": "https://example.com/cat.png"}]}))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let sent = app.flowise.received().pop().unwrap();
    assert_eq!(sent.body["uploads"][0]["type"], "file");
    assert_eq!(
        sent.body["uploads"][0]["data"],
        format!("data:image/png;base64,{b64}")
    );
    assert_eq!(sent.body["uploads"][1]["type"], "url");
    // Another user's file cannot be sent.
    let other = app.token("u2", Role::Enduser);
    app.grant("u2", 100).await;
    app.predict(
        &other,
        json!({"chatflow_id": "flow-a", "question": "x", "uploads": [{"file_id": file_id}]}),
    )
    .await
    .assert_error(403, "forbidden");
    // Deleting the session deletes its messages and the file used in it.
    let session = res.body["session_id"].as_str().unwrap();
    assert_eq!(
        app.send(
            "DELETE",
            &format!("/api/v1/chat/sessions/{session}"),
            &user,
            None
        )
        .await
        .status,
        204
    );
    app.send("GET", &format!("/api/v1/chat/files/{file_id}"), &user, None)
        .await
        .assert_error(404, "not_found");
    app.send(
        "GET",
        &format!("/api/v1/chat/sessions/{session}/messages"),
        &user,
        None,
    )
    .await
    .assert_error(404, "not_found");
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[tokio::test]
async fn files_are_size_limited_sniffed_and_owner_only() {
    let app = App::new().await;
    let user = app.token("u1", Role::Enduser);
    let other = app.token("u2", Role::Enduser);
    let big = base64_encode(&vec![b'a'; 64 * 1024 + 1]);
    app.send(
        "POST",
        "/api/v1/chat/files",
        &user,
        Some(json!({"name": "big.txt", "mime": "text/plain", "data": big})),
    )
    .await
    .assert_error(413, "payload_too_large");
    let exe = base64_encode(b"MZ\x90\0\x03\0\0\0\x04\0");
    app.send(
        "POST",
        "/api/v1/chat/files",
        &user,
        Some(json!({"name": "doc.pdf", "mime": "application/pdf", "data": exe})),
    )
    .await
    .assert_error(415, "unsupported_media_type");
    // Multipart works too; the type comes from the bytes, not the claim.
    let boundary = "XyZ";
    let form = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"notes.csv\"\r\nContent-Type: application/octet-stream\r\n\r\na,b\n1,2\n\r\n--{boundary}--\r\n"
    );
    let req = axum::http::Request::post("/api/v1/chat/files")
        .header("authorization", format!("Bearer {user}"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(Body::from(form))
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = serde_json::from_slice(
        &axum::body::to_bytes(res.into_body(), usize::MAX)
            .await
            .unwrap(),
    )
    .unwrap();
    assert_eq!(body["mime"], "text/csv");
    let id = body["file_id"].as_str().unwrap();
    let got = app
        .send("GET", &format!("/api/v1/chat/files/{id}"), &user, None)
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.headers["content-type"], "text/csv");
    assert_eq!(got.body, json!("a,b\n1,2\n"));
    app.send("GET", &format!("/api/v1/chat/files/{id}"), &other, None)
        .await
        .assert_error(403, "forbidden");
    app.send("DELETE", &format!("/api/v1/chat/files/{id}"), &other, None)
        .await
        .assert_error(403, "forbidden");
    assert_eq!(
        app.send("DELETE", &format!("/api/v1/chat/files/{id}"), &user, None)
            .await
            .status,
        204
    );
    app.send("GET", &format!("/api/v1/chat/files/{id}"), &user, None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn bad_prediction_input_is_a_400_naming_the_field() {
    let app = App::new().await;
    let user = app.token("u1", Role::Enduser);
    for (body, field) in [
        (json!({"chatflow_id": "flow-a"}), "question"),
        (json!({"question": "hi"}), "chatflow_id"),
        (json!({"chatflow_id": "flow-a", "question": ""}), "question"),
        (
            json!({"chatflow_id": "flow-a", "question": "hi", "history": [{"role": "system", "content": "x"}]}),
            "history",
        ),
        (
            json!({"chatflow_id": "flow-a", "question": "hi", "overrideConfig": [1]}),
            "overrideConfig",
        ),
        (
            json!({"chatflow_id": "flow-a", "question": "hi", "extra": 1}),
            "extra",
        ),
    ] {
        let res = app.predict(&user, body).await;
        assert_eq!(res.status, 400, "{}", res.body);
        assert!(
            res.body["message"].as_str().unwrap().contains(field),
            "{field}: {}",
            res.body
        );
    }
}

#[tokio::test]
async fn a_stream_relays_tokens_as_they_arrive_and_settles_at_the_end() {
    let app = App::new().await;
    app.flowise.set_behaviour(
        "flow-a",
        Behaviour::Answer {
            tokens: split_tokens(ANSWER),
            delay: Duration::from_millis(150),
            usage: None,
            heartbeat: true,
        },
    );
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let started = Instant::now();
    let (status, body) = app
        .open_stream(
            &user,
            json!({"chatflow_id": "flow-a", "question": "Hi there"}),
        )
        .await;
    assert_eq!(status, 200);
    let got = frames(body).await;
    let finished = Instant::now();
    assert_eq!(
        names(&got),
        [
            "session", "start", "token", "token", "token", "token", "token", "token", "metadata",
            "end"
        ]
    );
    let first_token = got.iter().find(|f| f.0 == "token").unwrap().2;
    // Six tokens 150 ms apart: the first arrives long before the last.
    assert!(
        finished - first_token >= Duration::from_millis(600),
        "tokens were buffered"
    );
    assert!(first_token - started < Duration::from_millis(600));
    let text: String = got
        .iter()
        .filter(|f| f.0 == "token")
        .map(|f| f.1.as_str().unwrap())
        .collect();
    assert_eq!(text, ANSWER);
    let end = &got.last().unwrap().1;
    assert_eq!(end["credits"], json!({"charged": 11, "balance": 89}));
    let session = got[0].1["session_id"].as_str().unwrap();
    let sent = app.flowise.received().pop().unwrap();
    assert_eq!(
        (
            sent.body["streaming"].clone(),
            sent.body["overrideConfig"]["sessionId"].as_str()
        ),
        (json!(true), Some(session))
    );
    let messages = app
        .send(
            "GET",
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &user,
            None,
        )
        .await;
    assert_eq!(messages.body["messages"][1]["content"], ANSWER);
    assert_eq!(messages.body["messages"][1]["status"], "complete");
    assert_eq!(app.active_reservations().await, 0);
}

#[tokio::test]
async fn an_error_event_in_a_stream_releases_the_reservation() {
    let app = App::new().await;
    app.flowise.set_behaviour(
        "flow-a",
        Behaviour::Fail("Error: predictionsServices.buildChatflow - Connection error.".into()),
    );
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let (status, body) = app
        .open_stream(&user, json!({"chatflow_id": "flow-a", "question": "Hi"}))
        .await;
    assert_eq!(status, 200);
    let got = frames(body).await;
    assert_eq!(names(&got), ["session", "error", "end"]);
    assert!(!got[1].1.to_string().contains("predictionsServices"));
    assert_eq!(got[2].1["credits"]["charged"], 0);
    assert_eq!(app.balance("u1").await, 100);
    assert_eq!(app.active_reservations().await, 0);
}

#[tokio::test]
async fn a_flow_that_cannot_stream_answers_json_which_is_relayed() {
    let app = App::new().await;
    app.flowise
        .set_behaviour("flow-a", Behaviour::JsonOnly(ANSWER.into()));
    app.grant("u1", 100).await;
    let (status, body) = app
        .open_stream(
            &app.token("u1", Role::Enduser),
            json!({"chatflow_id": "flow-a", "question": "Hi"}),
        )
        .await;
    assert_eq!(status, 200);
    let got = frames(body).await;
    assert_eq!(names(&got), ["session", "start", "token", "end"]);
    assert_eq!(got[2].1, json!(ANSWER));
    assert_eq!(got[3].1["credits"]["charged"], 11);
}

#[tokio::test]
async fn a_stream_that_never_answers_times_out_and_costs_nothing() {
    let app = App::new().await;
    app.flowise.set_behaviour("flow-a", Behaviour::Stall);
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let started = Instant::now();
    let (status, _) = app
        .open_stream(&user, json!({"chatflow_id": "flow-a", "question": "Hi"}))
        .await;
    assert_eq!(status, 504);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "the first-byte timeout (1 s) applies"
    );
    // A chatflow deleted in Flowise but still in the catalogue hangs the same way.
    app.flowise.remove_flow("flow-a");
    let (status, _) = app
        .open_stream(&user, json!({"chatflow_id": "flow-a", "question": "Hi"}))
        .await;
    assert_eq!(status, 504);
    assert_eq!(app.balance("u1").await, 100);
    assert_eq!(app.active_reservations().await, 0);
}

#[tokio::test]
async fn errors_before_a_stream_are_plain_json() {
    let app = App::new().await;
    let (status, body) = app
        .open_stream(
            &app.token("broke", Role::Enduser),
            json!({"chatflow_id": "flow-a", "question": "Hi"}),
        )
        .await;
    assert_eq!(status, 402);
    let bytes: Vec<u8> = body.map(|c| c.unwrap().to_vec()).concat().await;
    let error: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(error["error"], "insufficient_credits");
}

#[tokio::test]
async fn a_client_that_disconnects_pays_for_what_was_delivered() {
    let app = App::new().await;
    app.flowise.set_behaviour(
        "flow-a",
        Behaviour::Answer {
            tokens: split_tokens(ANSWER),
            delay: Duration::from_millis(200),
            usage: None,
            heartbeat: false,
        },
    );
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let (status, mut body) = app
        .open_stream(&user, json!({"chatflow_id": "flow-a", "question": "Hi"}))
        .await;
    assert_eq!(status, 200);
    // Read up to the first token, then hang up.
    let mut seen = String::new();
    while !seen.contains("event: token") {
        seen.push_str(&String::from_utf8_lossy(
            &body.next().await.unwrap().unwrap(),
        ));
    }
    let session = seen
        .split("\"session_id\":\"")
        .nth(1)
        .unwrap()
        .split('"')
        .next()
        .unwrap()
        .to_owned();
    drop(body);
    // The relay notices at its next send and settles.
    let mut charged = None;
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if app.active_reservations().await == 0 {
            charged = Some(100 - app.balance("u1").await);
            break;
        }
    }
    // perRequest (2) + 1 per delivered output token ("Hello " = 2 tokens),
    // or a little more when the next token went out before the hang-up.
    let charged = charged.expect("the reservation was settled");
    assert!((3..=6).contains(&charged), "charged {charged}");
    // The history is written just after the settlement commits.
    let path = format!("/api/v1/chat/sessions/{session}/messages");
    let mut messages = app.send("GET", &path, &user, None).await;
    for _ in 0..50 {
        if messages.status == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        messages = app.send("GET", &path, &user, None).await;
    }
    let answer = &messages.body["messages"][1];
    assert_eq!(answer["status"], "incomplete", "{}", messages.body);
    assert!(ANSWER.starts_with(answer["content"].as_str().unwrap()));
}
