//! Stopping a streamed answer (README §8): in AWS a streaming function is
//! never told that its client went away, so the owner asks for it with
//! `POST /api/v1/chat/predict/{message_id}/stop`; the relay ends the answer
//! `incomplete`, charged for what was delivered. Only the owner's own
//! predictions can be stopped; every refusal changes nothing.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use std::time::Duration;

use common::{completion_chunks, read_until, App, ANSWER};
use serde_json::{json, Value};
use shared::flowise_double::{split_tokens, Behaviour};
use shared::testing::{self, call};
use shared::token::Role;

/// A chatflow answering `ANSWER` a token every 300 ms: 2 credits a
/// request, 1 an input token and 1 an output token.
async fn slow_app() -> App {
    let app = App::new().await;
    let slow = Behaviour::Answer {
        tokens: split_tokens(ANSWER),
        delay: Duration::from_millis(300),
        usage: None,
        heartbeat: false,
    };
    app.add_flow("flow-slow", slow, (2, 1.0, 1.0)).await;
    app.grant("u1", 100).await;
    app.grant("u2", 100).await;
    app
}

async fn stop(app: &App, token: &str, message_id: &str) -> testing::TestResponse {
    let path = format!("/api/v1/chat/predict/{message_id}/stop");
    app.send("POST", &path, token, None).await
}

#[tokio::test]
async fn the_owner_stops_a_stream_midway_and_pays_for_what_was_delivered() {
    let app = slow_app().await;
    let u1 = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-slow", "question": "Hi"});
    let (status, mut stream) = app.open_stream(&u1, body).await;
    assert_eq!(status, 200);
    let mut reader = testing::SseFrames::default();
    let mut frames = read_until(&mut stream, &mut reader, "token").await;
    let message_id = frames[0].1["message_id"].as_str().unwrap().to_owned();

    // Nobody else can stop it, and nothing changes when they try.
    let u2 = app.token("u2", Role::Enduser);
    stop(&app, &u2, &message_id)
        .await
        .assert_error(404, "not_found");
    let admin = app.token("admin-1", Role::Admin);
    stop(&app, &admin, &message_id)
        .await
        .assert_error(404, "not_found");

    let res = stop(&app, &u1, &message_id).await;
    assert_eq!(res.status, 202, "{}", res.body);
    assert_eq!(res.body["stopping"], true);
    let again = stop(&app, &u1, &message_id).await;
    assert_eq!(
        again.body["requested_at"], res.body["requested_at"],
        "the first time is kept"
    );

    frames.extend(read_until(&mut stream, &mut reader, "end").await);
    let delivered: String = frames
        .iter()
        .filter(|(name, _)| name == "token")
        .filter_map(|(_, data)| data.as_str())
        .collect();
    assert!(
        !delivered.is_empty() && delivered.len() < ANSWER.len(),
        "stopped midway: {delivered:?}"
    );
    let end = &frames.last().unwrap().1;
    assert_eq!(end["status"], "incomplete", "{end}");
    let charged = end["credits"]["charged"].as_i64().unwrap();
    let input = shared::pricing::estimate_tokens("Hi");
    assert_eq!(
        charged,
        2 + input + shared::pricing::estimate_tokens(&delivered),
        "perRequest, the input and the delivered tokens: stopping is a choice, not a failure"
    );
    assert_eq!(app.balance("u1").await, 100 - charged);
    assert_eq!(app.balance("u2").await, 100);
    assert_eq!(app.active_reservations().await, 0);

    // Stored as delivered, marked incomplete; the usage record says why.
    let session = frames[0].1["session_id"].as_str().unwrap();
    let path = format!("/api/v1/chat/sessions/{session}/messages");
    let stored = app.send("GET", &path, &u1, None).await;
    let answer = &stored.body["messages"][1];
    assert_eq!(
        (answer["content"].as_str(), answer["status"].as_str()),
        (Some(delivered.as_str()), Some("incomplete"))
    );
    // Shown as stopped, not as the chat service failing.
    assert_eq!(answer["metadata"]["error"], "stopped", "{}", stored.body);
    let why: Value =
        sqlx::query_scalar("SELECT metadata FROM usage_logs WHERE metadata->>'message_id' = $1")
            .bind(&message_id)
            .fetch_one(&app.pg.pool)
            .await
            .unwrap();
    assert_eq!(why["error"], "stopped");

    // Settled: stopping again is 409 and changes nothing.
    let rows = app.ledger_rows().await;
    stop(&app, &u1, &message_id)
        .await
        .assert_error(409, "already_finished");
    assert_eq!(app.ledger_rows().await, rows);
    assert_eq!(app.balance("u1").await, 100 - charged);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn only_the_owners_own_predictions_can_be_stopped() {
    let app = slow_app().await;
    let u1 = app.token("u1", Role::Enduser);
    stop(&app, &u1, "no-such-answer")
        .await
        .assert_error(404, "not_found");
    // A reservation a client made for itself is not a prediction.
    let res = call(
        &app.credits(),
        "POST",
        "/api/streaming-sessions/initialize",
        Some(json!({"sessionId": "mine", "chatflowId": "flow-slow", "estimatedCredits": 5})),
        Some(&u1),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    stop(&app, &u1, "mine").await.assert_error(404, "not_found");
    let stopped: bool = sqlx::query_scalar(
        "SELECT stop_requested_at IS NOT NULL FROM streaming_sessions WHERE session_id = 'mine'",
    )
    .fetch_one(&app.pg.pool)
    .await
    .unwrap();
    assert!(!stopped);
    // A finished buffered answer: 409.
    let res = app
        .predict(&u1, json!({"chatflow_id": "flow-a", "question": "Hi"}))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let id = res.body["message_id"].as_str().unwrap();
    stop(&app, &u1, id)
        .await
        .assert_error(409, "already_finished");
}

#[tokio::test]
async fn a_v1_stream_stopped_by_its_owner_finishes_with_stop_and_its_credits() {
    use futures_util::StreamExt;
    let app = slow_app().await;
    let (key, _) = app.make_key("u1", json!({"name": "bot"})).await;
    let body = json!({"model": "flow-slow", "stream": true,
        "messages": [{"role": "user", "content": "Hi"}]});
    let (status, mut stream) = app.open_completion(&key, body).await;
    assert_eq!(status, 200);
    let mut text = String::new();
    while !text.contains("\"content\":\"Hello") {
        text.push_str(std::str::from_utf8(&stream.next().await.unwrap().unwrap()).unwrap());
    }
    let id = text.split("\"id\":\"chatcmpl-").nth(1).unwrap();
    let message_id = id.split('"').next().unwrap().to_owned();
    let res = stop(&app, &key, &message_id).await;
    assert_eq!(
        res.status, 202,
        "a key stops its user's answers: {}",
        res.body
    );
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let data = completion_chunks(&text);
    assert_eq!(data.last().unwrap(), "[DONE]");
    let last = &data[data.len() - 2];
    assert_eq!(last["choices"][0]["finish_reason"], "stop", "{last}");
    let charged = last["credits"]["charged"].as_i64().unwrap();
    assert!(
        charged < 2 + shared::pricing::estimate_tokens(ANSWER),
        "cut short"
    );
    assert_eq!(app.balance("u1").await, 100 - charged);
}
