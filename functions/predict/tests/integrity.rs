//! Attacks on the money of a prediction (issue 9), sent to the served
//! functions in-process: settling the gateway's reservation, retries and
//! copies, a buffered call past API Gateway's limit, unpriced uploads and
//! usage, upstream text leaking out. Each checks that balances, ledger
//! rows and stored data are what they must be.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use std::time::{Duration, Instant};

use common::{read_until, App};
use serde_json::{json, Value};
use shared::config::FlowiseConfig;
use shared::flowise::FlowiseClient;
use shared::flowise_double::{split_tokens, Behaviour};
use shared::testing::{self, call, SseFrames};
use shared::token::Role;

const KEY: (&str, &str) = ("idempotency-key", "retry-me-1");

fn slow(text: &str, delay_ms: u64) -> Behaviour {
    Behaviour::Answer {
        tokens: split_tokens(text),
        delay: Duration::from_millis(delay_ms),
        usage: None,
        heartbeat: false,
    }
}

fn frame<'a>(frames: &'a [(String, Value)], name: &str) -> &'a Value {
    &frames
        .iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name} frame in {frames:?}"))
        .1
}

async fn transactions_in_progress(app: &App) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM pg_stat_activity
          WHERE datname = current_database() AND state LIKE 'idle in transaction%'",
    )
    .fetch_one(&app.pg.pool)
    .await
    .unwrap()
}

/// A slow streamed answer on "flow-slow" (7 credits: 2 + 5 output
/// tokens) for "u1", granted `credits`, read up to its `session` frame.
struct SlowStream {
    user: String,
    body: axum::body::BodyDataStream,
    reader: SseFrames,
    session: Value,
}

async fn slow_stream(app: &App, credits: i64, headers: &[(&str, &str)]) -> SlowStream {
    // "one two three four" is 18 characters: 5 output tokens.
    app.add_flow("flow-slow", slow("one two three four", 250), (2, 0.0, 1.0))
        .await;
    app.grant("u1", credits).await;
    let user = app.token("u1", Role::Enduser);
    let (status, mut body) = app
        .open_stream_with(
            &user,
            json!({"chatflow_id": "flow-slow", "question": "Hi"}),
            headers,
        )
        .await;
    assert_eq!(status, 200);
    let mut reader = SseFrames::default();
    let first = read_until(&mut body, &mut reader, "session").await;
    let session = frame(&first, "session").clone();
    SlowStream {
        user,
        body,
        reader,
        session,
    }
}

impl SlowStream {
    /// Reads the rest; the `end` frame's data.
    async fn end(&mut self) -> Value {
        let rest = read_until(&mut self.body, &mut self.reader, "end").await;
        frame(&rest, "end").clone()
    }
}

/// Releases every active reservation, as a sweep with a too-short TTL
/// would under a running call.
async fn sweep_everything(app: &App) -> u64 {
    shared::ledger::sweep::run_expiry(&app.pg.pool, Duration::ZERO, 10)
        .await
        .unwrap()
        .settled_reservations
}

#[tokio::test]
async fn a_user_cannot_settle_the_reservation_of_their_running_prediction() {
    let app = App::new().await;
    let mut stream = slow_stream(&app, 100, &[]).await;
    let user = stream.user.clone();
    let message_id = stream.session["message_id"].as_str().unwrap().to_owned();
    let credits = app.credits();
    // The id the session frame showed cannot settle anything.
    for (path, body) in [
        (
            "/api/streaming-sessions/abort",
            json!({"sessionId": message_id}),
        ),
        (
            "/api/streaming-sessions/finalize",
            json!({"sessionId": message_id, "actualCredits": 0}),
        ),
    ] {
        call(&credits, "POST", path, Some(body), Some(&user))
            .await
            .assert_error(403, "gateway_reservation");
    }
    // Nor can it be taken over as a client reservation.
    call(
        &credits,
        "POST",
        "/api/streaming-sessions/initialize",
        Some(json!({"sessionId": message_id, "chatflowId": "flow-slow", "estimatedCredits": 5})),
        Some(&user),
    )
    .await
    .assert_error(409, "session_exists");
    // The user's list does not show it; an admin's does, as the gateway's.
    let mine = call(
        &credits,
        "GET",
        "/api/streaming-sessions/active",
        None,
        Some(&user),
    )
    .await;
    assert_eq!(mine.body["sessions"], json!([]), "{}", mine.body);
    let admin = app.token("admin-1", Role::Admin);
    let all = call(
        &credits,
        "GET",
        "/api/streaming-sessions/active?all=true",
        None,
        Some(&admin),
    )
    .await;
    assert_eq!(all.body["sessions"][0]["sessionId"], message_id.as_str());
    assert_eq!(all.body["sessions"][0]["origin"], "gateway");
    // The answer runs to its end and is paid in full: 2 + 5.
    assert_eq!(stream.end().await["credits"]["charged"], 7);
    assert_eq!(app.balance("u1").await, 93);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn an_answer_whose_reservation_was_swept_meanwhile_pays_its_own_price() {
    let app = App::new().await;
    let mut stream = slow_stream(&app, 100, &[]).await;
    // The sweep takes the live call for a dead one: nothing was recorded as
    // delivered yet, so it charges the whole hold (100, the balance).
    assert_eq!(sweep_everything(&app).await, 1);
    assert_eq!(app.balance("u1").await, 0);
    // The answer's own settlement then corrects it to its price, 2 + 5:
    // the rest goes back, and the balance shown is the balance after it.
    let end = stream.end().await;
    assert_eq!(end["credits"], json!({"charged": 7, "balance": 93}));
    assert_eq!(app.balance("u1").await, 93);
    let back: i64 = sqlx::query_scalar(
        "SELECT amount FROM credit_transactions
          WHERE type = 'refund' AND description LIKE 'prediction refunded what a settlement%'",
    )
    .fetch_one(&app.pg.pool)
    .await
    .unwrap();
    assert_eq!(back, 93);
    let charged: i64 = sqlx::query_scalar("SELECT charged_credits FROM streaming_sessions")
        .fetch_one(&app.pg.pool)
        .await
        .unwrap();
    assert_eq!(charged, 7);
    app.assert_ledger_consistent().await;
}

/// Waits until the relay of the only reservation has recorded its
/// progress; returns what it recorded.
async fn recorded_progress(app: &App) -> i64 {
    for _ in 0..100 {
        let delivered: Option<i64> =
            sqlx::query_scalar("SELECT delivered_credits FROM streaming_sessions")
                .fetch_one(&app.pg.pool)
                .await
                .unwrap();
        if let Some(delivered) = delivered {
            return delivered;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the relay recorded no progress");
}

#[tokio::test]
async fn a_late_charge_takes_what_the_balance_holds_and_records_no_shortfall() {
    let app = App::new().await;
    let mut stream = slow_stream(&app, 10, &[]).await;
    let user = stream.user.clone();
    // The relay records what it delivered; the sweep charges that.
    let delivered = recorded_progress(&app).await;
    assert!((3..7).contains(&delivered), "{delivered}");
    sweep_everything(&app).await;
    assert_eq!(app.balance("u1").await, 10 - delivered);
    // Meanwhile the user spends all but 1 credit elsewhere.
    let credits = app.credits();
    let res = call(
        &credits,
        "POST",
        "/api/credits/deduct",
        Some(json!({"credits": 9 - delivered})),
        Some(&user),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // The answer's price is 7: the last credit is taken, the rest is not
    // owed (no shortfall is recorded for a prediction).
    let end = stream.end().await;
    assert_eq!(
        end["credits"],
        json!({"charged": delivered + 1, "balance": 0})
    );
    assert_eq!(app.balance("u1").await, 0);
    let shortfall: i64 = sqlx::query_scalar("SELECT shortfall_credits FROM streaming_sessions")
        .fetch_one(&app.pg.pool)
        .await
        .unwrap();
    assert_eq!(shortfall, 0);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_retried_buffered_prediction_replays_the_first_answer_and_pays_once() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-a", "question": "Hi there"});
    let first = app.predict_with(&user, body.clone(), &[KEY]).await;
    assert_eq!(first.status, 200, "{}", first.body);
    let balance = app.balance("u1").await;
    let rows = app.ledger_rows().await;
    let again = app.predict_with(&user, body.clone(), &[KEY]).await;
    assert_eq!(again.status, 200, "{}", again.body);
    assert_eq!(again.body, first.body);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(app.flowise.received().len(), 1);
    assert_eq!(
        (app.balance("u1").await, app.ledger_rows().await),
        (balance, rows)
    );
    let session = first.body["session_id"].as_str().unwrap();
    let messages = app
        .send(
            "GET",
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &user,
            None,
        )
        .await;
    assert_eq!(messages.body["total"], 2);
    // Another body under the same key: 409, and nothing happens.
    app.predict_with(
        &user,
        json!({"chatflow_id": "flow-a", "question": "Something else"}),
        &[KEY],
    )
    .await
    .assert_error(409, "idempotency_key_reused");
    assert_eq!(app.flowise.received().len(), 1);
    assert_eq!(app.balance("u1").await, balance);
    // Keys are the caller's: another user's same key is their own.
    app.grant("u2", 100).await;
    let other = app.token("u2", Role::Enduser);
    let theirs = app.predict_with(&other, body, &[KEY]).await;
    assert_eq!(theirs.status, 200);
    assert_ne!(theirs.body["message_id"], first.body["message_id"]);
}

#[tokio::test]
async fn one_key_scope_for_both_routes_replays_a_buffered_answer_as_a_short_stream() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-a", "question": "Hi there"});
    let first = app.predict_with(&user, body.clone(), &[KEY]).await;
    let (status, stream) = app.open_stream_with(&user, body, &[KEY]).await;
    assert_eq!(status, 200);
    let frames: Vec<(String, Value)> = common::frames(stream)
        .await
        .into_iter()
        .map(|(e, d, _)| (e, d))
        .collect();
    let names: Vec<&str> = frames.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["session", "start", "token", "end"]);
    assert_eq!(
        frame(&frames, "session")["message_id"],
        first.body["message_id"]
    );
    assert_eq!(frame(&frames, "token"), &first.body["text"]);
    let end = frame(&frames, "end");
    assert_eq!(end["status"], "complete");
    assert_eq!(end["credits"], first.body["credits"]);
    assert_eq!(end["replayed"], true);
    assert_eq!(app.flowise.received().len(), 1);
}

#[tokio::test]
async fn a_stream_cut_short_replays_as_incomplete_and_is_not_charged_again() {
    let app = App::new().await;
    app.add_flow(
        "flow-slow",
        slow("one two three four five six", 300),
        (2, 0.0, 1.0),
    )
    .await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-slow", "question": "Hi"});
    let (_, mut stream) = app.open_stream_with(&user, body.clone(), &[KEY]).await;
    let mut reader = SseFrames::default();
    read_until(&mut stream, &mut reader, "token").await;
    drop(stream);
    // The relay notices on its next send and settles what was delivered.
    let mut settled = false;
    for _ in 0..100 {
        if app.active_reservations().await == 0 {
            settled = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(settled);
    let balance = app.balance("u1").await;
    assert!(balance < 100);
    let replay = app.predict_with(&user, body.clone(), &[KEY]).await;
    assert_eq!(replay.status, 200, "{}", replay.body);
    assert_eq!(replay.body["status"], "incomplete");
    assert_eq!(replay.body["credits"]["charged"], 100 - balance);
    let (_, stream) = app.open_stream_with(&user, body, &[KEY]).await;
    let frames: Vec<(String, Value)> = common::frames(stream)
        .await
        .into_iter()
        .map(|(e, d, _)| (e, d))
        .collect();
    assert_eq!(frame(&frames, "end")["status"], "incomplete");
    assert_eq!(app.flowise.received().len(), 1);
    assert_eq!(app.balance("u1").await, balance);
}

#[tokio::test]
async fn a_duplicate_while_the_first_runs_is_409_with_retry_after() {
    let app = App::new().await;
    let mut stream = slow_stream(&app, 100, &[KEY]).await;
    let body = json!({"chatflow_id": "flow-slow", "question": "Hi"});
    let busy = app.predict_with(&stream.user, body, &[KEY]).await;
    busy.assert_error(409, "idempotency_in_progress");
    assert!(
        busy.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse::<u64>()
            .unwrap()
            > 0
    );
    assert_eq!(stream.end().await["credits"]["charged"], 7);
    assert_eq!(app.balance("u1").await, 93);
    assert_eq!(app.flowise.received().len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_copies_of_a_keyed_prediction_call_flowise_once_and_pay_once() {
    let app = App::new().await;
    let answer = "one two three four";
    app.add_flow(
        "flow-json",
        Behaviour::Slow {
            text: answer.into(),
            pause: Duration::from_millis(500),
        },
        (2, 0.0, 1.0),
    )
    .await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-json", "question": "Hi"});
    let copies = (0..50).map(|_| app.predict_with(&user, body.clone(), &[KEY]));
    let answers = futures_util::future::join_all(copies).await;
    let ok: Vec<_> = answers.iter().filter(|r| r.status == 200).collect();
    assert!(!ok.is_empty());
    assert!(ok.iter().all(|r| r.body["text"] == answer));
    assert!(answers
        .iter()
        .all(|r| r.status == 200 || r.body["error"] == "idempotency_in_progress"));
    assert_eq!(app.flowise.received().len(), 1);
    assert_eq!(app.balance("u1").await, 93);
    let usage: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM usage_logs")
        .fetch_one(&app.pg.pool)
        .await
        .unwrap();
    assert_eq!(usage, 1);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_first_attempt_that_charged_nothing_frees_its_key() {
    let app = App::new().await;
    app.flowise
        .set_behaviour("flow-a", Behaviour::Fail("LLM down".into()));
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-a", "question": "Hi"});
    app.predict_with(&user, body.clone(), &[KEY])
        .await
        .assert_error(502, "upstream_error");
    assert_eq!(app.balance("u1").await, 100);
    app.flowise
        .set_behaviour("flow-a", Behaviour::answer(common::ANSWER));
    let retry = app.predict_with(&user, body, &[KEY]).await;
    assert_eq!(retry.status, 200, "{}", retry.body);
    assert_eq!(retry.body["text"], common::ANSWER);
    assert_eq!(app.flowise.received().len(), 2);
}

#[tokio::test]
async fn keys_are_purged_after_a_day_and_then_run_anew() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-a", "question": "Hi"});
    app.predict_with(&user, body.clone(), &[KEY]).await;
    sqlx::query("UPDATE idempotency_keys SET created_at = now() - interval '25 hours'")
        .execute(&app.pg.pool)
        .await
        .unwrap();
    let report = shared::ledger::sweep::run_expiry(&app.pg.pool, Duration::from_secs(900), 10)
        .await
        .unwrap();
    assert_eq!(report.purged_idempotency_keys, 1);
    let again = app.predict_with(&user, body, &[KEY]).await;
    assert_eq!(again.status, 200);
    assert!(again.headers.get("idempotent-replayed").is_none());
    assert_eq!(app.flowise.received().len(), 2);
}

#[tokio::test]
async fn the_key_of_a_prediction_that_died_replays_what_the_sweep_charged() {
    let app = App::new().await;
    let stream = slow_stream(&app, 100, &[KEY]).await;
    // The sweep takes the call for a dead one (as it would an instance that
    // died): it charges the hold (nothing was recorded as delivered yet: an
    // answer may have gone out) and keeps the key's replay.
    sweep_everything(&app).await;
    let state: Vec<String> = sqlx::query_scalar("SELECT state FROM idempotency_keys")
        .fetch_all(&app.pg.pool)
        .await
        .unwrap();
    assert_eq!(state, ["done"]);
    let user = app.token("u1", Role::Enduser);
    let (status, body) = app
        .open_stream_with(
            &user,
            json!({"chatflow_id": "flow-slow", "question": "Hi"}),
            &[KEY],
        )
        .await;
    assert_eq!(status, 200);
    let frames = common::frames(body).await;
    let end = &frames.iter().find(|(e, _, _)| e == "end").unwrap().1;
    assert_eq!(end["status"], "incomplete", "{end}");
    assert_eq!(end["reason"], "lapsed");
    assert_eq!(end["replayed"], true);
    assert_eq!(end["credits"]["charged"], 100);
    assert_eq!(app.flowise.received().len(), 1);
    drop(stream);
}

#[tokio::test]
async fn no_database_transaction_is_open_while_flowise_answers() {
    let app = App::new().await;
    app.add_flow("flow-slow", slow("one two three four", 300), (2, 0.0, 1.0))
        .await;
    app.add_flow(
        "flow-json",
        Behaviour::Slow {
            text: "slow".into(),
            pause: Duration::from_millis(800),
        },
        (2, 0.0, 1.0),
    )
    .await;
    app.grant("u1", 5000).await;
    let user = app.token("u1", Role::Enduser);
    let (_, mut stream) = app
        .open_stream_with(
            &user,
            json!({"chatflow_id": "flow-slow", "question": "Hi"}),
            &[KEY],
        )
        .await;
    read_until(&mut stream, &mut SseFrames::default(), "token").await;
    assert_eq!(transactions_in_progress(&app).await, 0);
    let buffered = app.predict_with(
        &user,
        json!({"chatflow_id": "flow-json", "question": "Hi"}),
        &[("idempotency-key", "buffered-1")],
    );
    let probe = async {
        tokio::time::sleep(Duration::from_millis(400)).await;
        transactions_in_progress(&app).await
    };
    let (res, open) = tokio::join!(buffered, probe);
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(open, 0);
}

#[tokio::test]
async fn a_buffered_prediction_past_its_deadline_is_504_free_and_within_api_gateways_limit() {
    let app = App::new().await;
    app.add_flow("flow-stall", Behaviour::Stall, (2, 0.0, 1.0))
        .await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    // A 4-second budget: Flowise gets what remains minus 3 s.
    let short = predict::AppState {
        flowise: FlowiseClient::new(&FlowiseConfig {
            timeout: Duration::from_secs(60),
            buffered_timeout: Duration::from_secs(4),
            ..common::flowise_config(&app.flowise.url)
        })
        .unwrap(),
        ..app.state.clone()
    };
    let started = Instant::now();
    let res = testing::call_with_headers(
        &predict::router(short),
        "POST",
        "/api/v1/chat/predict",
        Some(json!({"chatflow_id": "flow-stall", "question": "Hi"})),
        Some(&user),
        &[KEY],
    )
    .await;
    let took = started.elapsed();
    res.assert_error(504, "upstream_timeout");
    assert!(took < Duration::from_secs(4), "answered after {took:?}");
    assert!(
        took >= Duration::from_millis(900),
        "answered after {took:?}"
    );
    assert_eq!(app.balance("u1").await, 100);
    assert_eq!(app.active_reservations().await, 0);
    let sessions = app.send("GET", "/api/v1/chat/sessions", &user, None).await;
    assert_eq!(sessions.body["total"], 0);
    let recorded: Value = sqlx::query_scalar("SELECT metadata FROM usage_logs")
        .fetch_one(&app.pg.pool)
        .await
        .unwrap();
    assert_eq!(recorded["error"], "upstream_timeout");
    // Free, so its key is free too.
    let keys: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM idempotency_keys")
        .fetch_one(&app.pg.pool)
        .await
        .unwrap();
    assert_eq!(keys, 0);
}

#[tokio::test]
async fn text_inside_uploads_is_priced_as_input() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let app = App::new().await;
    // One credit an input token, nothing else.
    app.add_flow("flow-p", Behaviour::answer("ok"), (0, 1.0, 0.0))
        .await;
    app.grant("u1", 1000).await;
    let user = app.token("u1", Role::Enduser);
    let stored = app
        .send(
            "POST",
            "/api/v1/chat/files",
            &user,
            Some(json!({"name": "notes.txt", "mime": "text/plain", "data": b64(&[b'n'; 80])})),
        )
        .await;
    assert_eq!(stored.status, 201, "{}", stored.body);
    let uploads = json!([
        {"type": "file:full", "name": "doc.txt", "mime": "text/plain", "data": "d".repeat(400)},
        {"type": "file", "name": "t.txt", "mime": "text/plain", "data": format!("data:text/plain;base64,{}", b64(&[b't'; 40]))},
        {"file_id": stored.body["file_id"]},
    ]);
    let res = app
        .predict(
            &user,
            json!({"chatflow_id": "flow-p", "question": "Hi", "uploads": uploads}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // "Hi" 1 + 100 + 10 + 20 tokens.
    assert_eq!(res.body["credits"]["charged"], 131);
    assert_eq!(app.balance("u1").await, 869);
}

#[tokio::test]
async fn every_usage_report_of_a_stream_counts_and_a_missing_side_is_estimated() {
    let app = App::new().await;
    let events = |reports: Vec<Value>| {
        let mut events = vec![
            ("start".to_owned(), json!("")),
            ("token".to_owned(), json!("Hello world")),
        ];
        events.extend(reports.into_iter().map(|r| ("usageMetadata".to_owned(), r)));
        Behaviour::Events {
            events,
            delay: Duration::ZERO,
        }
    };
    app.add_flow(
        "flow-two-calls",
        events(vec![
            json!({"input_tokens": 10, "output_tokens": 3}),
            json!({"input_tokens": 5, "output_tokens": 4}),
        ]),
        (0, 1.0, 1.0),
    )
    .await;
    app.add_flow(
        "flow-output-only",
        events(vec![json!({"output_tokens": 4})]),
        (0, 1.0, 1.0),
    )
    .await;
    app.grant("u1", 1000).await;
    let user = app.token("u1", Role::Enduser);
    let charged = |frames: Vec<(String, Value, Instant)>| {
        frames.into_iter().find(|(e, _, _)| e == "end").unwrap().1["credits"]["charged"].clone()
    };
    let (_, stream) = app
        .open_stream(
            &user,
            json!({"chatflow_id": "flow-two-calls", "question": "Hi there"}),
        )
        .await;
    // (10 + 5) in + (3 + 4) out.
    assert_eq!(charged(common::frames(stream).await), 22);
    let (_, stream) = app
        .open_stream(
            &user,
            json!({"chatflow_id": "flow-output-only", "question": "Hi there"}),
        )
        .await;
    // The input is estimated from "Hi there" (2 tokens), not taken as 0.
    assert_eq!(charged(common::frames(stream).await), 6);
}

#[tokio::test]
async fn flowise_error_text_never_reaches_a_user() {
    let app = App::new().await;
    let secret =
        "Error: connect ECONNREFUSED http://10.0.3.7:8080/v1 at TCPConnectWrap.afterConnect";
    app.add_flow(
        "flow-breaks",
        Behaviour::Events {
            events: vec![
                ("start".into(), json!("")),
                ("token".into(), json!("partial ")),
                ("error".into(), json!(secret)),
            ],
            delay: Duration::ZERO,
        },
        (2, 0.0, 1.0),
    )
    .await;
    app.add_flow("flow-down", Behaviour::Fail(secret.into()), (2, 0.0, 1.0))
        .await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let (_, stream) = app
        .open_stream(
            &user,
            json!({"chatflow_id": "flow-breaks", "question": "Hi"}),
        )
        .await;
    let frames = common::frames(stream).await;
    let session = frames[0].1["session_id"].as_str().unwrap().to_owned();
    let buffered = app
        .predict(&user, json!({"chatflow_id": "flow-down", "question": "Hi"}))
        .await;
    buffered.assert_error(502, "upstream_error");
    let messages = app
        .send(
            "GET",
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &user,
            None,
        )
        .await;
    assert_eq!(
        messages.body["messages"][1]["metadata"]["error"],
        "upstream_error"
    );
    let stored: Vec<Value> = sqlx::query_scalar("SELECT metadata FROM usage_logs")
        .fetch_all(&app.pg.pool)
        .await
        .unwrap();
    assert_eq!(stored.len(), 2);
    let everything = format!("{frames:?} {} {} {stored:?}", buffered.body, messages.body);
    assert!(!everything.contains("10.0.3.7"), "{everything}");
    assert!(!everything.contains("ECONNREFUSED"), "{everything}");
}

#[tokio::test]
async fn inline_uploads_pass_the_stored_files_allow_list() {
    use base64::Engine;
    let app = App::new().await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let exe = base64::engine::general_purpose::STANDARD.encode(b"MZ\x90\0\x03\0\0\0");
    let cases = [
        (
            json!({"type": "file", "name": "x.pdf", "mime": "application/pdf", "data": format!("data:application/pdf;base64,{exe}")}),
            415,
        ),
        (
            json!({"type": "url", "name": "x", "mime": "image/png", "data": "http://169.254.169.254/latest/meta-data"}),
            400,
        ),
        (
            json!({"type": "file", "name": "x.txt", "mime": "text/plain", "data": "not a data url"}),
            400,
        ),
    ];
    for (upload, status) in cases {
        let res = app
            .predict(
                &user,
                json!({"chatflow_id": "flow-a", "question": "Hi", "uploads": [upload]}),
            )
            .await;
        assert_eq!(res.status.as_u16(), status, "{}", res.body);
    }
    assert!(app.flowise.received().is_empty());
    assert_eq!(app.balance("u1").await, 100);
}

#[tokio::test]
async fn an_office_file_must_be_a_zip_whose_directory_says_so() {
    use base64::Engine;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let app = App::new().await;
    let user = app.token("u1", Role::Enduser);
    let upload = |bytes: Vec<u8>| {
        app.send(
            "POST",
            "/api/v1/chat/files",
            &user,
            Some(json!({"name": "report.docx", "mime": "application/octet-stream", "data": b64(&bytes)})),
        )
    };
    // The part names only appear in the bytes: not a document.
    let fake = b"PK\x03\x04 [Content_Types].xml word/document.xml <script>".to_vec();
    upload(fake)
        .await
        .assert_error(415, "unsupported_media_type");
    // A ZIP without [Content_Types].xml, or of no Office kind.
    upload(testing::zip_archive(&["word/document.xml"]))
        .await
        .assert_error(415, "unsupported_media_type");
    upload(testing::zip_archive(&[
        "[Content_Types].xml",
        "payload.exe",
    ]))
    .await
    .assert_error(415, "unsupported_media_type");
    let docx = upload(testing::zip_archive(&[
        "[Content_Types].xml",
        "word/document.xml",
    ]))
    .await;
    assert_eq!(docx.status, 201, "{}", docx.body);
    assert_eq!(
        docx.body["mime"],
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    );
}

#[tokio::test]
async fn a_refused_prediction_rolls_back_the_transaction_opened_beside_its_checks() {
    let app = App::new().await;
    let admin = app.add_private_flow("flow-private").await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let private = json!({"chatflow_id": "flow-private", "question": "Hi"});
    let accounts = || async {
        sqlx::query_scalar::<_, i64>("SELECT COUNT(*) FROM user_accounts")
            .fetch_one(&app.pg.pool)
            .await
            .unwrap()
    };
    let before = (app.ledger_rows().await, accounts().await);
    // The reservation's transaction claimed the key, recorded and locked
    // the account while the access check ran; the 403 rolled it all back.
    app.predict_with(&user, private.clone(), &[KEY])
        .await
        .assert_error(403, "forbidden");
    // A stranger's first request leaves no account behind either.
    let stranger = app.token("stranger", Role::Enduser);
    app.predict(&stranger, private.clone())
        .await
        .assert_error(403, "forbidden");
    assert_eq!((app.ledger_rows().await, accounts().await), before);
    assert_eq!(app.balance("u1").await, 100);
    assert_eq!(app.active_reservations().await, 0);
    assert!(app.flowise.received().is_empty());
    // The key was not kept: once access is granted, the same key runs.
    let open = json!({"userIds": ["u1"]});
    let res = app
        .send(
            "POST",
            "/api/v1/admin/chatflows/flow-private/users",
            &admin,
            Some(open),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app.predict_with(&user, private, &[KEY]).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(app.balance("u1").await < 100);
}

#[tokio::test]
async fn a_refused_prediction_never_waits_for_the_account_lock() {
    let app = App::new().await;
    app.add_private_flow("flow-private").await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    // Another change holds u1's account.
    let mut holder = app.pg.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM user_accounts WHERE user_id = 'u1' FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let private = json!({"chatflow_id": "flow-private", "question": "Hi"});
    let refused = tokio::time::timeout(
        Duration::from_secs(3),
        app.predict_with(&user, private, &[KEY]),
    )
    .await
    .expect("a 403 does not queue behind the account lock");
    refused.assert_error(403, "forbidden");
    holder.rollback().await.unwrap();
    assert_eq!(app.balance("u1").await, 100);
    assert_eq!(app.ledger_rows().await, 1);
}
