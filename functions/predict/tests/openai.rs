//! The OpenAI-compatible API of the streaming function (README §12), sent
//! in-process against real PostgreSQL and MongoDB and the Flowise double:
//! models are the chatflows the caller may use, a completion (buffered or
//! streamed) is a prediction paid for and stored, a conversation continues
//! the session whose transcript it repeats while Flowise gets a fresh
//! session, and every error is in OpenAI's envelope and changes nothing.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use std::time::Duration;

use common::{completion_chunks, delivered, App, ANSWER};
use serde_json::{json, Value};
use shared::flowise_double::{split_tokens, Behaviour};
use shared::testing::{call, call_with_headers, TestResponse};
use shared::token::Role;

async fn v1(app: &App, method: &str, path: &str, body: Option<Value>, key: &str) -> TestResponse {
    call(&app.stream, method, path, body, Some(key)).await
}

async fn complete(app: &App, key: &str, body: Value) -> TestResponse {
    v1(app, "POST", "/v1/chat/completions", Some(body), key).await
}

/// The `data:` payloads of a streamed completion, `[DONE]` as a string.
fn chunks(res: &TestResponse) -> Vec<Value> {
    completion_chunks(res.body.as_str().expect("an event stream"))
}

/// Asserts OpenAI's envelope with `status`, `type` and `code`.
#[track_caller]
fn assert_envelope(res: &TestResponse, status: u16, kind: &str, code: &str) {
    assert_eq!(res.status.as_u16(), status, "{}", res.body);
    let error = &res.body["error"];
    assert_eq!(error["type"], kind, "{}", res.body);
    assert_eq!(error["code"], code, "{}", res.body);
    assert!(error["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(
        error.get("param").is_some(),
        "param is always there: {}",
        res.body
    );
}

fn ask(model: &str, question: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": question}]})
}

#[tokio::test]
async fn models_are_the_chatflows_the_caller_may_use() {
    let app = App::new().await;
    app.add_flow("flow-b", Behaviour::answer("b"), (1, 0.0, 0.0))
        .await;
    app.add_private_flow("flow-secret").await;
    let (all, _) = app.make_key("u1", json!({"name": "all"})).await;
    let (only_a, _) = app
        .make_key("u1", json!({"name": "a", "chatflows": ["flow-a"]}))
        .await;

    let res = v1(&app, "GET", "/v1/models", None, &all).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["object"], "list");
    let ids: Vec<&str> = res.body["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["flow-a", "flow-b"],
        "by name, without the private flow"
    );
    let model = &res.body["data"][0];
    assert_eq!(
        (model["object"].as_str(), model["name"].as_str()),
        (Some("model"), Some("Support bot"))
    );
    assert!(model["created"].as_i64().unwrap() > 1_700_000_000);

    let res = v1(&app, "GET", "/v1/models", None, &only_a).await;
    assert_eq!(
        res.body["data"].as_array().unwrap().len(),
        1,
        "{}",
        res.body
    );

    let res = v1(&app, "GET", "/v1/models/flow-a", None, &only_a).await;
    assert_eq!(
        (res.status.as_u16(), res.body["id"].as_str()),
        (200, Some("flow-a"))
    );
    // One the caller may not use is as unknown as one that does not exist.
    let res = v1(&app, "GET", "/v1/models/flow-b", None, &only_a).await;
    assert_envelope(&res, 404, "invalid_request_error", "model_not_found");
    let res = v1(&app, "GET", "/v1/models/flow-secret", None, &all).await;
    assert_envelope(&res, 404, "invalid_request_error", "model_not_found");
    let res = v1(&app, "GET", "/v1/models/nope", None, &all).await;
    assert_envelope(&res, 404, "invalid_request_error", "model_not_found");
    assert_eq!(res.body["error"]["param"], "model");
}

#[tokio::test]
async fn a_buffered_completion_is_a_prediction_paid_for_and_stored_under_the_key() {
    let app = App::new().await;
    let usage = Behaviour::Answer {
        tokens: split_tokens(ANSWER),
        delay: Duration::ZERO,
        usage: Some((10, 12)),
        heartbeat: false,
    };
    app.add_flow("flow-u", usage, (2, 0.0, 1.0)).await;
    let admin = app.token("admin-1", Role::Admin);
    let allow = json!({"allowedOverrides": ["temperature"]});
    let res = app
        .send("PUT", "/api/v1/admin/chatflows/flow-u", &admin, Some(allow))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    app.grant("u1", 100).await;
    let (key, key_id) = app.make_key("u1", json!({"name": "bot"})).await;

    let body = json!({"model": "flow-u", "messages": [{"role": "user", "content": "Hi there"}],
        "temperature": 0.5, "user": "someone-else", "logit_bias": {}, "seed": 1});
    let res = complete(&app, &key, body).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let answer = &res.body;
    assert_eq!(answer["object"], "chat.completion");
    assert_eq!(answer["model"], "flow-u");
    assert!(answer["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(
        answer["choices"][0]["message"],
        json!({"role": "assistant", "content": ANSWER})
    );
    assert_eq!(answer["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        answer["usage"],
        json!({"prompt_tokens": 10, "completion_tokens": 12, "total_tokens": 22})
    );
    assert_eq!(answer["credits"], json!({"charged": 14, "balance": 86}));
    assert_eq!(app.balance("u1").await, 86);

    // Charged to u1 (not the `user` field), under the key; stored in u1's history.
    let spent: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(credits), 0)::BIGINT FROM usage_logs WHERE user_id = 'u1' AND api_key_id::TEXT = $1",
    )
    .bind(&key_id)
    .fetch_one(&app.pg.pool)
    .await
    .unwrap();
    assert_eq!(spent, 14);
    let session = answer["session_id"].as_str().unwrap();
    let token = app.token("u1", Role::Enduser);
    let messages = app
        .send(
            "GET",
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &token,
            None,
        )
        .await;
    assert_eq!(messages.status, 200, "{}", messages.body);
    let contents: Vec<&str> = messages.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(contents, ["Hi there", ANSWER]);

    // Flowise got the question, the override, and a session id of its own.
    let sent = app.flowise.received().pop().unwrap().body;
    assert_eq!(sent["question"], "Hi there");
    assert_eq!(sent["overrideConfig"]["temperature"], 0.5);
    let upstream = sent["overrideConfig"]["sessionId"].as_str().unwrap();
    assert_ne!(upstream, session);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_conversation_continues_the_session_whose_transcript_it_repeats() {
    let app = App::new().await;
    app.grant("u1", 1_000).await;
    app.grant("u2", 1_000).await;
    let (key, _) = app.make_key("u1", json!({"name": "chat"})).await;
    let (other, _) = app.make_key("u2", json!({"name": "chat"})).await;
    let user = |text: &str| json!({"role": "user", "content": text});
    let assistant = |text: &str| json!({"role": "assistant", "content": text});

    let first = complete(&app, &key, ask("flow-a", "My name is Sarah")).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let session = first.body["session_id"].as_str().unwrap().to_owned();

    let next = json!({"model": "flow-a", "messages": [
        {"role": "system", "content": "Be brief."},
        user("My name is Sarah"), assistant(ANSWER), user("What is my name?")]});
    let second = complete(&app, &key, next.clone()).await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(
        second.body["session_id"],
        session.as_str(),
        "the same conversation"
    );
    let sent = app.flowise.received().pop().unwrap().body;
    assert_eq!(
        sent["history"],
        json!([{"role": "userMessage", "content": "My name is Sarah"}, {"role": "apiMessage", "content": ANSWER}])
    );
    // The system message is placed before the question (the default).
    assert_eq!(
        sent["question"],
        "<system>\nBe brief.\n</system>\n\nWhat is my name?"
    );
    let upstream: Vec<String> = app
        .flowise
        .received()
        .iter()
        .map(|r| {
            r.body["overrideConfig"]["sessionId"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_ne!(
        upstream[0], upstream[1],
        "a fresh Flowise session per request"
    );

    // Three turns on: still the same session, with six messages.
    let third = json!({"model": "flow-a", "messages": [
        user("My name is Sarah"), assistant(ANSWER), user("What is my name?"), assistant(ANSWER), user("Thanks")]});
    let res = complete(&app, &key, third).await;
    assert_eq!(res.body["session_id"], session.as_str(), "{}", res.body);
    let token = app.token("u1", Role::Enduser);
    let stored = app
        .send(
            "GET",
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &token,
            None,
        )
        .await;
    assert_eq!(stored.body["total"], 6, "{}", stored.body);

    // A transcript that differs anywhere, or another user's, is a new session.
    let edited = json!({"model": "flow-a", "messages": [user("My name is Sarah"), assistant("Hi!"), user("What is my name?")]});
    let res = complete(&app, &key, edited).await;
    assert_ne!(res.body["session_id"], session.as_str());
    let res = complete(&app, &other, next).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_ne!(
        res.body["session_id"],
        session.as_str(),
        "never another user's session"
    );
}

#[tokio::test]
async fn a_streamed_completion_sends_chunks_then_done_with_usage_when_asked() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let (key, _) = app.make_key("u1", json!({"name": "bot"})).await;
    let mut body = ask("flow-a", "Hi there");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});

    let res = complete(&app, &key, body.clone()).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["content-type"], "text/event-stream");
    let chunks = chunks(&res);
    assert_eq!(chunks.last().unwrap(), "[DONE]");
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(first["choices"][0]["delta"]["role"], "assistant");
    let text = delivered(&chunks);
    assert_eq!(text, ANSWER, "read token by token");
    assert!(chunks.len() > 6, "one chunk per token: {chunks:?}");
    let finish = &chunks[chunks.len() - 3];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let charged = finish["credits"]["charged"].as_i64().unwrap();
    assert!(charged > 2);
    assert_eq!(app.balance("u1").await, 100 - charged);
    let usage = &chunks[chunks.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert!(
        usage["usage"]["completion_tokens"].as_i64().unwrap() > 0,
        "{usage}"
    );
    assert!(chunks
        .iter()
        .all(|c| c == "[DONE]" || c["id"] == first["id"]));

    // Without include_usage there is no usage chunk.
    body["stream_options"] = Value::Null;
    let chunks = self::chunks(&complete(&app, &key, body).await);
    assert!(chunks.iter().all(|c| c.get("usage").is_none()));
    assert_eq!(
        chunks[chunks.len() - 2]["choices"][0]["finish_reason"],
        "stop"
    );
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_stream_that_fails_midway_ends_with_an_error_chunk_and_charges_what_was_delivered() {
    let app = App::new().await;
    let events = vec![
        ("start".to_owned(), json!("")),
        ("token".to_owned(), json!("Half an ")),
        ("error".to_owned(), json!("LLM fell over")),
    ];
    app.add_flow(
        "flow-x",
        Behaviour::Events {
            events,
            delay: Duration::ZERO,
        },
        (2, 0.0, 1.0),
    )
    .await;
    app.grant("u1", 100).await;
    let (key, _) = app.make_key("u1", json!({"name": "bot"})).await;
    let mut body = ask("flow-x", "Hi");
    body["stream"] = json!(true);
    let chunks = chunks(&complete(&app, &key, body).await);
    let n = chunks.len();
    assert_eq!(chunks[n - 1], "[DONE]");
    let error = &chunks[n - 2]["error"];
    assert_eq!(error["code"], "upstream_error", "{chunks:?}");
    assert!(
        !error["message"].as_str().unwrap().contains("LLM fell over"),
        "Flowise's text is not shown"
    );
    let delivered = delivered(&chunks);
    assert_eq!(delivered, "Half an ");
    let charged = 100 - app.balance("u1").await;
    assert_eq!(
        charged,
        2 + shared::pricing::estimate_tokens("Half an "),
        "perRequest and the delivered tokens"
    );
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains(&format!("{charged} credits")));
    assert_eq!(app.active_reservations().await, 0);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn every_error_is_in_openais_envelope_and_changes_nothing() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let (key, key_id) = app
        .make_key("u1", json!({"name": "bot", "monthlyCreditLimit": 1}))
        .await;
    let (broke, _) = app.make_key("poor", json!({"name": "bot"})).await;
    let rows = app.ledger_rows().await;

    // The extractors' rejections, unknown routes and methods.
    let res = call(&app.stream, "GET", "/v1/models", None, None).await;
    assert_envelope(&res, 401, "authentication_error", "missing_token");
    let res = v1(
        &app,
        "GET",
        "/v1/models",
        None,
        "fgw_AAAAAAAAAAAA_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
    )
    .await;
    assert_envelope(&res, 401, "authentication_error", "invalid_key");
    let res = v1(&app, "GET", "/v1/embeddings", None, &key).await;
    assert_envelope(&res, 404, "not_found_error", "not_found");
    let res = v1(&app, "GET", "/v1/chat/completions", None, &key).await;
    assert_envelope(&res, 405, "invalid_request_error", "method_not_allowed");
    let res = call_with_headers(
        &app.stream,
        "POST",
        "/v1/chat/completions",
        None,
        Some(&key),
        &[("content-type", "text/plain")],
    )
    .await;
    assert_envelope(&res, 415, "invalid_request_error", "unsupported_media_type");
    let res = complete(&app, &key, json!({"model": "flow-a"})).await;
    assert_envelope(&res, 400, "invalid_request_error", "invalid_input");
    let res = complete(
        &app,
        &key,
        json!({"model": "flow-a", "messages": [{"role": 7}]}),
    )
    .await;
    assert_envelope(&res, 400, "invalid_request_error", "invalid_input");
    assert_eq!(res.body["error"]["param"], "messages[0].role");
    let mut two = ask("flow-a", "hi");
    two["n"] = json!(2);
    let res = complete(&app, &key, two).await;
    assert_envelope(&res, 400, "invalid_request_error", "invalid_request");
    assert_eq!(res.body["error"]["param"], "n");
    let long = "x".repeat(shared::prediction::MAX_QUESTION_CHARS + 1);
    let res = complete(&app, &key, ask("flow-a", &long)).await;
    assert_envelope(&res, 400, "invalid_request_error", "invalid_input");
    assert_eq!(res.body["error"]["param"], "messages");
    let res = complete(&app, &key, ask("no-such-flow", "hi")).await;
    assert_envelope(&res, 404, "invalid_request_error", "model_not_found");
    let image = json!({"model": "flow-a", "messages": [{"role": "user", "content": [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "http://plain.example/a.png"}}]}]});
    let res = complete(&app, &key, image).await;
    assert_envelope(&res, 400, "invalid_request_error", "invalid_input");
    assert_eq!(res.body["error"]["param"], "messages[0].content");

    // Money: no credits, then a key's limit below the price.
    let res = complete(&app, &broke, ask("flow-a", "hi")).await;
    assert_envelope(&res, 402, "insufficient_quota", "insufficient_credits");
    let res = complete(&app, &key, ask("flow-a", "hi")).await;
    assert_envelope(&res, 402, "insufficient_quota", "key_limit_reached");
    assert_eq!(
        app.ledger_rows().await,
        rows,
        "no refusal wrote a ledger row"
    );
    assert_eq!(app.balance("u1").await, 100);
    assert!(app.flowise.received().is_empty(), "nothing reached Flowise");

    // 409: the same Idempotency-Key with another body; never retried.
    let (open, _) = app.make_key("u1", json!({"name": "open"})).await;
    let headers = [("idempotency-key", "k-1")];
    let res = call_with_headers(
        &app.stream,
        "POST",
        "/v1/chat/completions",
        Some(ask("flow-a", "one")),
        Some(&open),
        &headers,
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let again = call_with_headers(
        &app.stream,
        "POST",
        "/v1/chat/completions",
        Some(ask("flow-a", "one")),
        Some(&open),
        &headers,
    )
    .await;
    assert_eq!(
        again.body["choices"], res.body["choices"],
        "a replay, not a second charge"
    );
    assert_eq!(again.body["credits"], res.body["credits"]);
    let res = call_with_headers(
        &app.stream,
        "POST",
        "/v1/chat/completions",
        Some(ask("flow-a", "two")),
        Some(&open),
        &headers,
    )
    .await;
    assert_envelope(&res, 409, "conflict_error", "idempotency_key_reused");
    assert_eq!(res.headers["x-should-retry"], "false");
    assert_eq!(app.flowise.received().len(), 1);

    // 429 past the per-minute limit, with Retry-After.
    let admin = app.token("admin-1", Role::Admin);
    let limits = json!({"rateLimitPerMinute": 2, "maxConcurrentStreams": null});
    let set = call(
        &app.credits(),
        "PUT",
        "/api/admin/users/u1/limits",
        Some(limits),
        Some(&admin),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
    let _ = complete(&app, &open, ask("flow-a", "three")).await;
    let res = complete(&app, &open, ask("flow-a", "four")).await;
    assert_envelope(&res, 429, "rate_limit_error", "rate_limited");
    assert!(res.headers.contains_key("retry-after"));

    // A revoked key: 401 at once.
    let token = app.token("u1", Role::Enduser);
    let revoked = call(
        &app.credits(),
        "DELETE",
        &format!("/api/keys/{key_id}"),
        None,
        Some(&token),
    )
    .await;
    assert_eq!(revoked.status, 204);
    let res = v1(&app, "GET", "/v1/models", None, &key).await;
    assert_envelope(&res, 401, "authentication_error", "key_revoked");

    // Flowise failing before it answers: 502, free.
    app.flowise
        .set_behaviour("flow-a", Behaviour::Fail("down".into()));
    set_free(&app).await;
    let before = app.balance("u1").await;
    let res = complete(&app, &open, ask("flow-a", "five")).await;
    assert_envelope(&res, 502, "api_error", "upstream_error");
    assert_eq!(app.balance("u1").await, before);
    assert_eq!(app.active_reservations().await, 0);
    app.assert_ledger_consistent().await;
}

/// Lifts u1's rate limit again.
async fn set_free(app: &App) {
    let admin = app.token("admin-1", Role::Admin);
    let limits = json!({"rateLimitPerMinute": null, "maxConcurrentStreams": null});
    let set = call(
        &app.credits(),
        "PUT",
        "/api/admin/users/u1/limits",
        Some(limits),
        Some(&admin),
    )
    .await;
    assert_eq!(set.status, 200, "{}", set.body);
}

#[tokio::test]
async fn thirty_concurrent_completions_never_overdraw_and_pay_for_exactly_what_they_answer() {
    let app = App::new().await;
    app.grant("u1", 40).await;
    let (key, key_id) = app.make_key("u1", json!({"name": "burst"})).await;
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (router, key) = (app.stream.clone(), key.clone());
            let mut body = ask("flow-a", &format!("question {i}"));
            body["stream"] = json!(i % 2 == 0);
            tokio::spawn(async move {
                call(
                    &router,
                    "POST",
                    "/v1/chat/completions",
                    Some(body),
                    Some(&key),
                )
                .await
            })
        })
        .collect();
    let (mut charged, mut answered, mut refused) = (0, 0, 0);
    for task in tasks {
        let res = task.await.unwrap();
        match res.status.as_u16() {
            200 if res.body.is_string() => {
                let chunks = chunks(&res);
                assert_eq!(chunks.last().unwrap(), "[DONE]");
                charged += chunks[chunks.len() - 2]["credits"]["charged"]
                    .as_i64()
                    .unwrap();
                answered += 1;
            }
            200 => {
                charged += res.body["credits"]["charged"].as_i64().unwrap();
                answered += 1;
            }
            _ => {
                assert_envelope(&res, 402, "insufficient_quota", "insufficient_credits");
                refused += 1;
            }
        }
    }
    assert_eq!(answered + refused, 30);
    assert!(
        answered >= 1 && refused >= 1,
        "{answered} answered, {refused} refused"
    );
    let balance = app.balance("u1").await;
    assert!(balance >= 0);
    assert_eq!(40 - balance, charged, "every credit charged is an answer's");
    let recorded: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(credits), 0)::BIGINT FROM usage_logs WHERE api_key_id::TEXT = $1",
    )
    .bind(&key_id)
    .fetch_one(&app.pg.pool)
    .await
    .unwrap();
    assert_eq!(recorded, charged);
    assert_eq!(app.active_reservations().await, 0);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_stream_running_when_its_key_is_revoked_finishes_and_the_next_request_is_401() {
    use futures_util::StreamExt;
    let app = App::new().await;
    let slow = Behaviour::Answer {
        tokens: split_tokens(ANSWER),
        delay: Duration::from_millis(100),
        usage: None,
        heartbeat: false,
    };
    app.add_flow("flow-slow", slow, (2, 0.0, 1.0)).await;
    app.grant("u1", 100).await;
    let (key, key_id) = app.make_key("u1", json!({"name": "bot"})).await;
    let mut body = ask("flow-slow", "Hi");
    body["stream"] = json!(true);
    let (status, mut stream) = app.open_completion(&key, body).await;
    assert_eq!(status, 200);
    let mut text = String::from_utf8(stream.next().await.unwrap().unwrap().to_vec()).unwrap();

    let token = app.token("u1", Role::Enduser);
    let path = format!("/api/keys/{key_id}");
    let revoked = call(&app.credits(), "DELETE", &path, None, Some(&token)).await;
    assert_eq!(revoked.status, 204);
    while let Some(chunk) = stream.next().await {
        text.push_str(std::str::from_utf8(&chunk.unwrap()).unwrap());
    }
    let chunks = completion_chunks(&text);
    let delivered = delivered(&chunks);
    assert_eq!(delivered, ANSWER, "the running stream finished");
    let charged = chunks[chunks.len() - 2]["credits"]["charged"]
        .as_i64()
        .unwrap();
    assert_eq!(app.balance("u1").await, 100 - charged);
    let next = complete(&app, &key, ask("flow-slow", "again")).await;
    assert_envelope(&next, 401, "authentication_error", "key_revoked");
}

#[tokio::test]
async fn flowises_start_event_repeats_the_first_token_and_is_not_sent_twice() {
    let app = App::new().await;
    let events = vec![
        ("start".to_owned(), json!("Hello ")),
        ("token".to_owned(), json!("Hello ")),
        ("token".to_owned(), json!("world")),
    ];
    app.add_flow(
        "flow-s",
        Behaviour::Events {
            events,
            delay: Duration::ZERO,
        },
        (1, 0.0, 0.0),
    )
    .await;
    app.grant("u1", 100).await;
    let (key, _) = app.make_key("u1", json!({"name": "bot"})).await;
    let mut body = ask("flow-s", "Hi");
    body["stream"] = json!(true);
    let chunks = chunks(&complete(&app, &key, body).await);
    let delivered = delivered(&chunks);
    assert_eq!(delivered, "Hello world");
    let session = chunks[chunks.len() - 2]["session_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let token = app.token("u1", Role::Enduser);
    let path = format!("/api/v1/chat/sessions/{session}/messages");
    let stored = app.send("GET", &path, &token, None).await;
    assert_eq!(
        stored.body["messages"][1]["content"], "Hello world",
        "{}",
        stored.body
    );
}

#[tokio::test]
async fn a_stream_that_times_out_midway_ends_with_a_504_chunk() {
    let app = App::new().await;
    let slow = Behaviour::Answer {
        tokens: split_tokens("one two three four"),
        delay: Duration::from_millis(1_200),
        usage: None,
        heartbeat: true,
    };
    app.add_flow("flow-t", slow, (2, 0.0, 1.0)).await;
    app.grant("u1", 100).await;
    let (key, _) = app.make_key("u1", json!({"name": "bot"})).await;
    let mut body = ask("flow-t", "Hi");
    body["stream"] = json!(true);
    let chunks = chunks(&complete(&app, &key, body).await);
    let n = chunks.len();
    assert_eq!(chunks[n - 1], "[DONE]");
    assert_eq!(
        chunks[n - 2]["error"]["code"],
        "upstream_timeout",
        "{chunks:?}"
    );
    let delivered = delivered(&chunks);
    assert!(
        !delivered.is_empty() && delivered != "one two three four",
        "{delivered}"
    );
    let charged = 100 - app.balance("u1").await;
    assert_eq!(charged, 2 + shared::pricing::estimate_tokens(&delivered));
    app.assert_ledger_consistent().await;
}
