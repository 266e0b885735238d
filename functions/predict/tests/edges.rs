//! Money at the edges (issue 22), sent to the served functions in-process:
//! answers that no settlement may lose, answers that stop where the payer's
//! means end, input that must be priced. Each attack checks the balances,
//! the ledger and the stored data afterwards.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use std::time::Duration;

use common::{frames, App};
use serde_json::{json, Value};
use shared::flowise_double::Behaviour;
use shared::token::Role;

/// Sweeps as the job would long after: every reservation still open is
/// settled by it.
async fn sweep_everything(app: &App) -> u64 {
    shared::ledger::sweep::run_expiry(&app.pg.pool, Duration::ZERO, 10)
        .await
        .unwrap()
        .settled_reservations
}

/// An answer that quotes a web page holding U+0000, in its text, its
/// sources (a value and a key) and its tools' output.
fn poisoned() -> Behaviour {
    Behaviour::Events {
        events: vec![
            ("start".into(), json!("")),
            ("token".into(), json!("the page says \u{0}")),
            ("token".into(), json!(" and more")),
            (
                "sourceDocuments".into(),
                json!([{"pageContent": "a page \u{0} quoted", "metadata": {"source\u{0}": "web\u{0}"}}]),
            ),
            (
                "usedTools".into(),
                json!([{"tool": "browser", "toolInput": {"url": "x"}, "toolOutput": "out\u{0}put"}]),
            ),
        ],
        delay: Duration::ZERO,
    }
}

/// The answer text of the poisoned flow: 24 characters, 6 output tokens.
const POISONED_TEXT: &str = "the page says \u{0} and more";

#[tokio::test]
async fn an_answer_holding_nul_settles_buffered_and_streamed_and_the_sweep_leaves_the_charge() {
    let app = App::new().await;
    // 2 per request and 1 per output token: 2 + 6 = 8 credits an answer.
    app.add_flow("flow-nul", poisoned(), (2, 0.0, 1.0)).await;
    let body = json!({"chatflow_id": "flow-nul", "question": "Quote it"});
    for (n, (streamed, key)) in [
        (false, None),
        (false, Some("nul-1")),
        (true, None),
        (true, Some("nul-2")),
    ]
    .into_iter()
    .enumerate()
    {
        let user_id = format!("nul-user-{n}");
        app.grant(&user_id, 100).await;
        let user = app.token(&user_id, Role::Enduser);
        let headers: Vec<(&str, &str)> = key.map(|k| ("idempotency-key", k)).into_iter().collect();
        let (text, charged, session) = if streamed {
            let (status, stream) = app.open_stream_with(&user, body.clone(), &headers).await;
            assert_eq!(status, 200);
            let frames = frames(stream).await;
            let text: String = frames
                .iter()
                .filter(|(e, _, _)| e == "token")
                .filter_map(|(_, d, _)| d.as_str())
                .collect();
            let end = &frames
                .iter()
                .find(|(e, _, _)| e == "end")
                .expect("an end frame")
                .1;
            assert_eq!(end["status"], "complete", "{end}");
            let session = frames[0].1["session_id"].as_str().unwrap().to_owned();
            (text, end["credits"]["charged"].as_i64().unwrap(), session)
        } else {
            let res = app.predict_with(&user, body.clone(), &headers).await;
            assert_eq!(res.status, 200, "{}", res.body);
            assert_eq!(
                res.body["sourceDocuments"][0]["pageContent"],
                "a page \u{0} quoted"
            );
            assert_eq!(res.body["usedTools"][0]["toolOutput"], "out\u{0}put");
            (
                res.body["text"].as_str().unwrap().to_owned(),
                res.body["credits"]["charged"].as_i64().unwrap(),
                res.body["session_id"].as_str().unwrap().to_owned(),
            )
        };
        assert_eq!(text, POISONED_TEXT, "case {n}");
        assert_eq!(charged, 8, "case {n}");
        // The job runs long after: the charge stands.
        sweep_everything(&app).await;
        assert_eq!(
            app.balance(&user_id).await,
            92,
            "case {n}: the answer was given away"
        );
        assert_eq!(app.active_reservations().await, 0);
        // The history holds the answer as it was sent.
        let messages = app
            .send(
                "GET",
                &format!("/api/v1/chat/sessions/{session}/messages"),
                &user,
                None,
            )
            .await;
        assert_eq!(messages.status, 200, "{}", messages.body);
        let answer = &messages.body["messages"][1];
        assert_eq!(
            answer["content"], POISONED_TEXT,
            "case {n}: {}",
            messages.body
        );
        assert_eq!(answer["status"], "complete");
        // A retry with the key replays the same answer, charging nothing more.
        if let Some(key) = key {
            let replay = app
                .predict_with(&user, body.clone(), &[("idempotency-key", key)])
                .await;
            assert_eq!(replay.status, 200, "{}", replay.body);
            assert_eq!(replay.body["text"], POISONED_TEXT);
            assert_eq!(replay.body["usedTools"][0]["toolOutput"], "out\u{0}put");
            assert_eq!(app.balance(&user_id).await, 92);
        }
    }
    app.assert_ledger_consistent().await;
    // Every answer was recorded for reporting.
    let usage: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs WHERE credits = 8")
        .fetch_one(&app.pg.pool)
        .await
        .unwrap();
    assert_eq!(usage, 4);
}

#[tokio::test]
async fn a_record_the_store_refuses_beside_the_charge_never_undoes_it() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    // Any usage record now breaks a constraint: the charge must still stand.
    sqlx::query("ALTER TABLE usage_logs ADD CONSTRAINT refuse_all CHECK (credits < 0) NOT VALID")
        .execute(&app.pg.pool)
        .await
        .unwrap();
    let res = app
        .predict_with(
            &user,
            json!({"chatflow_id": "flow-a", "question": "Hi"}),
            &[("idempotency-key", "refused-usage")],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let charged = res.body["credits"]["charged"].as_i64().unwrap();
    assert!(charged > 0);
    sweep_everything(&app).await;
    assert_eq!(app.balance("u1").await, 100 - charged);
    // The replay was still stored (it was retried on its own).
    let replay = app
        .predict_with(
            &user,
            json!({"chatflow_id": "flow-a", "question": "Hi"}),
            &[("idempotency-key", "refused-usage")],
        )
        .await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["message_id"], res.body["message_id"]);
    assert_eq!(app.balance("u1").await, 100 - charged);
    app.assert_ledger_consistent().await;
    let _: Value = json!(null);
}

/// An answer far longer than anyone pays for: `words` pieces of "word "
/// (5 characters each), streamed as fast as they come.
fn endless(words: usize) -> Behaviour {
    Behaviour::Answer {
        tokens: vec!["word ".to_owned(); words],
        delay: Duration::ZERO,
        usage: None,
        heartbeat: false,
    }
}

/// The delivered text and the `end` frame of a stream read to its end.
async fn read_stream(app: &App, token: &str, body: Value) -> (String, Value) {
    let (status, stream) = app.open_stream(token, body).await;
    assert_eq!(status, 200);
    let frames = frames(stream).await;
    let text = frames
        .iter()
        .filter(|(e, _, _)| e == "token")
        .filter_map(|(_, d, _)| d.as_str())
        .collect();
    let end = frames
        .iter()
        .find(|(e, _, _)| e == "end")
        .unwrap_or_else(|| panic!("no end frame: {frames:?}"))
        .1
        .clone();
    (text, end)
}

/// Whole credits the text's output costs at 0.01 a token (ceil(chars / 4)
/// tokens).
fn price_of(text: &str) -> i64 {
    let tokens = (text.chars().count() as i64 + 3) / 4;
    (tokens + 99) / 100
}

#[tokio::test]
async fn concurrent_streams_of_one_user_stop_where_the_balance_ends_and_pay_exactly_it() {
    let app = App::new().await;
    // 0.01 a token: 1 credit for 100 tokens (400 characters); a hold
    // starts at 1,000 tokens' worth (10 credits) and is topped up as the
    // answer grows.
    app.add_flow("flow-long", endless(40_000), (0, 0.0, 0.01))
        .await;
    app.grant("u1", 50).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-long", "question": "Tell me everything"});
    let ends =
        futures_util::future::join_all((0..3).map(|_| read_stream(&app, &user, body.clone())))
            .await;
    let mut charged = 0;
    for (text, end) in &ends {
        assert_eq!(end["status"], "incomplete", "{end}");
        assert_eq!(end["reason"], "credits_exhausted", "{end}");
        assert_eq!(end["truncated"], true);
        let paid = end["credits"]["charged"].as_i64().unwrap();
        // What was delivered is exactly what was paid for.
        assert_eq!(price_of(text), paid, "{end}");
        charged += paid;
    }
    assert_eq!(charged, 50, "{ends:?}");
    assert_eq!(app.balance("u1").await, 0);
    assert_eq!(app.active_reservations().await, 0);
    app.assert_ledger_consistent().await;
    // The history keeps each answer as delivered, incomplete.
    let incomplete: Vec<String> = sqlx::query_scalar(
        "SELECT metadata->>'error' FROM usage_logs WHERE user_id = 'u1' ORDER BY created_at",
    )
    .fetch_all(&app.pg.pool)
    .await
    .unwrap();
    assert_eq!(incomplete, ["credits_exhausted"; 3]);
}

#[tokio::test]
async fn concurrent_completions_under_one_key_stop_at_its_monthly_limit() {
    let app = App::new().await;
    app.add_flow("flow-long", endless(40_000), (0, 0.0, 0.01))
        .await;
    app.grant("u1", 1_000).await;
    let (key, _) = app
        .make_key("u1", json!({"name": "bot", "monthlyCreditLimit": 25}))
        .await;
    let body = json!({"model": "flow-long", "stream": true,
        "messages": [{"role": "user", "content": "Tell me everything"}]});
    let runs = futures_util::future::join_all((0..4).map(|_| async {
        let (status, stream) = app.open_completion(&key, body.clone()).await;
        (status, frames_text(stream).await)
    }))
    .await;
    let mut charged = 0;
    for (status, text) in &runs {
        if *status == 402 {
            continue;
        }
        assert_eq!(*status, 200);
        let chunks = common::completion_chunks(text);
        let last = chunks
            .iter()
            .rev()
            .find(|c| c.get("credits").is_some())
            .unwrap_or_else(|| panic!("no finishing chunk: {text}"));
        assert_eq!(last["choices"][0]["finish_reason"], "length", "{last}");
        let paid = last["credits"]["charged"].as_i64().unwrap();
        assert_eq!(price_of(&common::delivered(&chunks)), paid);
        charged += paid;
    }
    assert_eq!(charged, 25, "the key's limit, exactly");
    assert_eq!(app.balance("u1").await, 975);
    app.assert_ledger_consistent().await;
}

/// A body read whole as text.
async fn frames_text(mut body: axum::body::BodyDataStream) -> String {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend_from_slice(&chunk.unwrap());
    }
    String::from_utf8(out).unwrap()
}

#[tokio::test]
async fn an_error_event_ends_the_relay_and_the_answer_still_pays_its_input() {
    let app = App::new().await;
    // 2 a request, 1 an input and 1 an output token; "Hi there" is 2
    // input tokens, "partial " 2 output tokens.
    let events = |first: &str| Behaviour::Events {
        events: vec![
            ("start".into(), json!("")),
            (first.into(), json!("partial ")),
            ("error".into(), json!("Error: the LLM fell over")),
            ("token".into(), json!("never delivered")),
        ],
        delay: Duration::ZERO,
    };
    app.add_flow("flow-err", events("token"), (2, 1.0, 1.0))
        .await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-err", "question": "Hi there"});
    let (text, end) = read_stream(&app, &user, body.clone()).await;
    assert_eq!(text, "partial ");
    assert_eq!(end["status"], "incomplete");
    assert_eq!(end["reason"], "upstream_error");
    assert_eq!(end["credits"]["charged"], 2 + 2 + 2);
    assert_eq!(app.balance("u1").await, 94);
    // Flowise began (its start event) but delivered nothing before the
    // error: the request and the input are paid all the same.
    app.flowise.set_behaviour("flow-err", events("metadata"));
    let (text, end) = read_stream(&app, &user, body.clone()).await;
    assert_eq!(text, "");
    assert_eq!(end["credits"]["charged"], 2 + 2);
    // An error before Flowise began is free.
    app.flowise.set_behaviour(
        "flow-err",
        Behaviour::Events {
            events: vec![("error".into(), json!("Error: down"))],
            delay: Duration::ZERO,
        },
    );
    let (_, end) = read_stream(&app, &user, body).await;
    assert_eq!(end["credits"]["charged"], 0);
    assert_eq!(app.balance("u1").await, 90);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn output_is_priced_at_the_larger_of_the_report_and_the_estimate_when_cut_short() {
    let app = App::new().await;
    // Flowise reports 50 output tokens for 8 characters, then fails.
    let events = Behaviour::Events {
        events: vec![
            ("token".into(), json!("partial ")),
            (
                "usageMetadata".into(),
                json!({"input_tokens": 1, "output_tokens": 50}),
            ),
            ("error".into(), json!("Error: boom")),
        ],
        delay: Duration::ZERO,
    };
    app.add_flow("flow-rep", events, (2, 1.0, 1.0)).await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-rep", "question": "Hi there"});
    let (_, end) = read_stream(&app, &user, body).await;
    // 2 + max(1, 2) input + max(50, 2) output.
    assert_eq!(end["credits"]["charged"], 2 + 2 + 50);
}

#[tokio::test]
async fn a_client_that_does_not_read_cannot_hold_the_relay_past_the_flowise_timeout() {
    let app = App::new().await;
    // Big pieces, fast: the relay's buffer fills once the client stops
    // reading. FLOWISE_TIMEOUT_SECONDS is 3 in these tests.
    let piece = "x".repeat(4_000);
    let flood = Behaviour::Answer {
        tokens: vec![piece; 2_000],
        delay: Duration::ZERO,
        usage: None,
        heartbeat: false,
    };
    app.add_flow("flow-flood", flood, (1, 0.0, 0.0)).await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let started = std::time::Instant::now();
    let (status, body) = app
        .open_stream(
            &user,
            json!({"chatflow_id": "flow-flood", "question": "Hi"}),
        )
        .await;
    assert_eq!(status, 200);
    // The client reads nothing.
    let mut settled = false;
    while started.elapsed() < Duration::from_secs(6) {
        if app.active_reservations().await == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(settled, "the relay was held past its deadline");
    assert!(started.elapsed() >= Duration::from_secs(2));
    // Flowise began: the request is paid.
    assert_eq!(app.balance("u1").await, 99);
    drop(body);
}

#[tokio::test]
async fn a_key_limited_to_chatflows_sees_nothing_of_the_others_history() {
    let app = App::new().await;
    app.add_flow(
        "flow-b",
        Behaviour::Answer {
            tokens: shared::flowise_double::split_tokens("one two three four five six seven"),
            delay: Duration::from_millis(200),
            usage: None,
            heartbeat: false,
        },
        (1, 0.0, 0.0),
    )
    .await;
    app.grant("u1", 100).await;
    let token = app.token("u1", Role::Enduser);
    // With the token: a session on each chatflow, a file used on flow-b.
    let on_a = app
        .predict(&token, json!({"chatflow_id": "flow-a", "question": "On a"}))
        .await;
    assert_eq!(on_a.status, 200, "{}", on_a.body);
    let pixel = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";
    let stored = app
        .send(
            "POST",
            "/api/v1/chat/files",
            &token,
            Some(json!({"name": "p.png", "mime": "image/png", "data": pixel})),
        )
        .await;
    assert_eq!(stored.status, 201, "{}", stored.body);
    let file = stored.body["file_id"].as_str().unwrap().to_owned();
    let keyed =
        json!({"chatflow_id": "flow-b", "question": "On b", "uploads": [{"file_id": file}]});
    let on_b = app
        .predict_with(&token, keyed.clone(), &[("idempotency-key", "b-1")])
        .await;
    assert_eq!(on_b.status, 200, "{}", on_b.body);
    let (session_a, session_b) = (
        on_a.body["session_id"].as_str().unwrap(),
        on_b.body["session_id"].as_str().unwrap(),
    );
    let (key, _) = app
        .make_key("u1", json!({"name": "a only", "chatflows": ["flow-a"]}))
        .await;
    // The list shows flow-a's session only.
    let list = app.send("GET", "/api/v1/chat/sessions", &key, None).await;
    let ids: Vec<&str> = list.body["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["session_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [session_a], "{}", list.body);
    assert_eq!(list.body["total"], 1);
    // Anything of flow-b is 404, and stays as it was.
    let messages = format!("/api/v1/chat/sessions/{session_b}/messages");
    app.send("GET", &messages, &key, None)
        .await
        .assert_error(404, "not_found");
    app.send(
        "DELETE",
        &format!("/api/v1/chat/sessions/{session_b}"),
        &key,
        None,
    )
    .await
    .assert_error(404, "not_found");
    let file_path = format!("/api/v1/chat/files/{file}");
    app.send("GET", &file_path, &key, None)
        .await
        .assert_error(404, "not_found");
    app.send("DELETE", &file_path, &key, None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(
        app.send("GET", &messages, &token, None).await.body["total"],
        2
    );
    assert_eq!(app.send("GET", &file_path, &token, None).await.status, 200);
    // A replay of flow-b's answer under its Idempotency-Key is refused too.
    app.predict_with(&key, keyed, &[("idempotency-key", "b-1")])
        .await
        .assert_error(403, "key_chatflow_not_allowed");
    // Nor can the key send flow-b's file to a chatflow it may use.
    let reuse =
        json!({"chatflow_id": "flow-a", "question": "Read it", "uploads": [{"file_id": file}]});
    let sent = app.flowise.received().len();
    app.predict(&key, reuse)
        .await
        .assert_error(404, "not_found");
    assert_eq!(app.flowise.received().len(), sent);
    // Its running answers cannot be stopped through the key.
    let (status, mut stream) = app
        .open_stream(&token, json!({"chatflow_id": "flow-b", "question": "Long"}))
        .await;
    assert_eq!(status, 200);
    let mut reader = shared::testing::SseFrames::default();
    let first = common::read_until(&mut stream, &mut reader, "session").await;
    let message_id = first[0].1["message_id"].as_str().unwrap().to_owned();
    let stop = format!("/api/v1/chat/predict/{message_id}/stop");
    app.send("POST", &stop, &key, None)
        .await
        .assert_error(404, "not_found");
    let rest = common::frames(stream).await;
    let end = &rest.iter().find(|(e, _, _)| e == "end").unwrap().1;
    assert_eq!(end["status"], "complete", "{end}");
}

#[tokio::test]
async fn a_usage_report_past_the_hold_is_held_at_once_so_a_second_stream_cannot_spend_it() {
    let app = App::new().await;
    // 0.01 a token: a hold starts at 1,000 tokens' worth, 10 credits.
    // Flowise reports 5,000 output tokens (50 credits) early, then pauses.
    let reported = Behaviour::Events {
        events: vec![
            ("start".into(), json!("")),
            ("usageMetadata".into(), json!({"output_tokens": 5_000})),
            ("token".into(), json!("x")),
        ],
        delay: Duration::from_millis(300),
    };
    app.add_flow("flow-report", reported, (0, 0.0, 0.01)).await;
    app.add_flow("flow-long", endless(40_000), (0, 0.0, 0.01))
        .await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let first = read_stream(
        &app,
        &user,
        json!({"chatflow_id": "flow-report", "question": "Hi"}),
    );
    let second = async {
        // Starts once the report is in: what it may spend is what is left.
        tokio::time::sleep(Duration::from_millis(750)).await;
        read_stream(
            &app,
            &user,
            json!({"chatflow_id": "flow-long", "question": "Go on"}),
        )
        .await
    };
    let ((_, reported_end), (_, long_end)) = tokio::join!(first, second);
    assert_eq!(reported_end["credits"]["charged"], 50, "{reported_end}");
    assert_eq!(reported_end["status"], "complete");
    assert_eq!(long_end["reason"], "credits_exhausted", "{long_end}");
    assert_eq!(long_end["credits"]["charged"], 50, "{long_end}");
    assert_eq!(app.balance("u1").await, 0);
    let uncovered: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs WHERE metadata ? 'uncovered_credits'")
            .fetch_one(&app.pg.pool)
            .await
            .unwrap();
    assert_eq!(
        uncovered, 0,
        "the report's price was held before it could be spent"
    );
}
