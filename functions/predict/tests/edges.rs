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
