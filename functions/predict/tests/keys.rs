//! Predictions made with API keys, and the rate limits (README §11), sent
//! to the served functions in-process against real PostgreSQL and MongoDB:
//! a key's chatflows, its monthly limit under concurrency, what it spends
//! recorded against it, and the per-minute and concurrency limits counted
//! atomically. Each refusal checks that nothing changed.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use std::time::Duration;

use common::App;
use serde_json::{json, Value};
use shared::flowise_double::Behaviour;
use shared::testing::{call, TestResponse};
use shared::token::Role;

async fn count(app: &App, sql: &str, id: &str) -> i64 {
    sqlx::query_scalar(sql)
        .bind(id)
        .fetch_one(&app.pg.pool)
        .await
        .unwrap()
}

/// `n` buffered predictions of `body` sent at once with `credential`.
async fn at_once(app: &App, credential: &str, body: &Value, n: usize) -> Vec<TestResponse> {
    let tasks: Vec<_> = (0..n)
        .map(|_| {
            let (router, credential, body) =
                (app.router.clone(), credential.to_owned(), body.clone());
            tokio::spawn(async move {
                call(
                    &router,
                    "POST",
                    "/api/v1/chat/predict",
                    Some(body),
                    Some(&credential),
                )
                .await
            })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    answers
}

async fn set_limits(app: &App, user: &str, per_minute: Option<i32>, concurrent: Option<i32>) {
    let admin = app.token("admin-1", Role::Admin);
    let body = json!({"rateLimitPerMinute": per_minute, "maxConcurrentStreams": concurrent});
    let path = format!("/api/admin/users/{user}/limits");
    let res = call(&app.credits(), "PUT", &path, Some(body), Some(&admin)).await;
    assert_eq!(res.status, 200, "{}", res.body);
}

#[tokio::test]
async fn a_key_predicts_only_on_its_chatflows_and_what_it_spends_carries_its_id() {
    let app = App::new().await;
    app.add_flow("flow-b", Behaviour::answer("other"), (1, 0.0, 0.0))
        .await;
    app.grant("u1", 1_000).await;
    let (key, id) = app
        .make_key("u1", json!({"name": "bot", "chatflows": ["flow-a"]}))
        .await;
    let res = app
        .predict(&key, json!({"chatflow_id": "flow-a", "question": "hi"}))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let charged = res.body["credits"]["charged"].as_i64().unwrap();
    assert!(charged > 0);
    // The reservation, every entry and the usage record name the key.
    let keyed = "SELECT count(*) FROM credit_transactions WHERE api_key_id = $1::uuid";
    assert_eq!(count(&app, keyed, &id).await, 2, "reservation and refund");
    let unkeyed = "SELECT count(*) FROM credit_transactions WHERE api_key_id IS NULL AND type <> 'allocation' AND $1 <> ''";
    assert_eq!(count(&app, unkeyed, &id).await, 0);
    let usage = "SELECT count(*) FROM usage_logs WHERE api_key_id = $1::uuid";
    assert_eq!(count(&app, usage, &id).await, 1);
    // Its list shows what it spent this month.
    let token = app.token("u1", Role::Enduser);
    let listed = call(&app.credits(), "GET", "/api/keys", None, Some(&token)).await;
    assert_eq!(listed.body["keys"][0]["creditsThisMonth"], charged);
    // Another chatflow: 403 before anything happens.
    let (rows, calls, balance) = (
        app.ledger_rows().await,
        app.flowise.received().len(),
        app.balance("u1").await,
    );
    let res = app
        .predict(&key, json!({"chatflow_id": "flow-b", "question": "hi"}))
        .await;
    res.assert_error(403, "key_chatflow_not_allowed");
    let res = app
        .send("GET", "/api/v1/chatflows/flow-b", &key, None)
        .await;
    res.assert_error(403, "key_chatflow_not_allowed");
    assert_eq!(
        (
            app.ledger_rows().await,
            app.flowise.received().len(),
            app.balance("u1").await
        ),
        (rows, calls, balance)
    );
    // The chatflow list is the key's.
    let flows = app.send("GET", "/api/v1/chatflows", &key, None).await;
    let ids: Vec<&str> = flows.body["chatflows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["flow-a"], "{}", flows.body);
    // A key is not for managing chatflows.
    app.send("POST", "/api/v1/admin/chatflows/sync", &key, None)
        .await
        .assert_error(403, "key_not_allowed");
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_revoked_key_is_refused_on_the_next_prediction() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    let (key, id) = app.make_key("u1", json!({"name": "bot"})).await;
    let body = json!({"chatflow_id": "flow-a", "question": "hi"});
    assert_eq!(app.predict(&key, body.clone()).await.status, 200);
    let token = app.token("u1", Role::Enduser);
    let res = call(
        &app.credits(),
        "DELETE",
        &format!("/api/keys/{id}"),
        None,
        Some(&token),
    )
    .await;
    assert_eq!(res.status, 204);
    let (rows, calls) = (app.ledger_rows().await, app.flowise.received().len());
    app.predict(&key, body.clone())
        .await
        .assert_error(401, "key_revoked");
    let (status, _) = app.open_stream(&key, body).await;
    assert_eq!(status, 401);
    assert_eq!(
        (app.ledger_rows().await, app.flowise.received().len()),
        (rows, calls)
    );
}

#[tokio::test]
async fn a_key_past_its_monthly_limit_is_402_and_concurrency_cannot_pass_it() {
    let app = App::new().await;
    app.grant("u1", 100_000).await;
    // flow-a costs 2 a request and 1 an output token: the answer, 9
    // tokens, costs 11.
    let (key, id) = app
        .make_key("u1", json!({"name": "capped", "monthlyCreditLimit": 50}))
        .await;
    let body = json!({"chatflow_id": "flow-a", "question": "hi"});
    let answers = at_once(&app, &key, &body, 20).await;
    let mut ok = 0;
    for res in answers {
        match res.status.as_u16() {
            200 => ok += 1,
            _ => res.assert_error(402, "key_limit_reached"),
        }
    }
    assert!(ok >= 1, "none passed");
    // Then one at a time until the limit refuses.
    for _ in 0..20 {
        let res = app.predict(&key, body.clone()).await;
        if res.status == 402 {
            res.assert_error(402, "key_limit_reached");
            break;
        }
        assert_eq!(res.status, 200, "{}", res.body);
    }
    let spent = "SELECT COALESCE(SUM(charged_credits), 0)::bigint FROM streaming_sessions WHERE api_key_id = $1::uuid";
    let spent = count(&app, spent, &id).await;
    // The limit caps every reservation; an answer dearer than what was
    // left is charged in full from the balance (README §11), so the key
    // passes its limit by at most one answer's excess, then is refused.
    assert!(spent <= 50 + 11, "the key spent {spent} of 50");
    assert!(spent >= 50, "the key was refused early, at {spent} of 50");
    // Refused: nothing sent, nothing changed.
    let (rows, calls, balance) = (
        app.ledger_rows().await,
        app.flowise.received().len(),
        app.balance("u1").await,
    );
    let res = app.predict(&key, body.clone()).await;
    res.assert_error(402, "key_limit_reached");
    assert_eq!(res.body["available"], (50 - spent).max(0), "{}", res.body);
    assert!(res.body["needed"].as_i64().unwrap() > 0, "{}", res.body);
    assert_eq!(
        (
            app.ledger_rows().await,
            app.flowise.received().len(),
            app.balance("u1").await
        ),
        (rows, calls, balance)
    );
    // The user's own token is not held by the key's limit.
    let token = app.token("u1", Role::Enduser);
    assert_eq!(app.predict(&token, body).await.status, 200);
    assert_eq!(app.active_reservations().await, 0);
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn past_the_per_minute_limit_predictions_are_429_with_retry_after_and_change_nothing() {
    let app = App::new().await;
    app.grant("u1", 10_000).await;
    set_limits(&app, "u1", Some(5), None).await;
    let token = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-a", "question": "hi"});
    let answers = at_once(&app, &token, &body, 12).await;
    let (mut ok, mut limited) = (0, 0);
    for res in answers {
        if res.status == 200 {
            ok += 1;
        } else {
            res.assert_error(429, "rate_limited");
            let wait: u64 = res.headers["retry-after"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            assert!((1..=60).contains(&wait), "{wait}");
            assert_eq!(res.body["retryAfterSeconds"], wait, "{}", res.body);
            limited += 1;
        }
    }
    assert_eq!((ok, limited), (5, 7));
    assert_eq!(app.flowise.received().len(), 5);
    let reservations = "SELECT count(*) FROM streaming_sessions WHERE user_id = $1";
    assert_eq!(count(&app, reservations, "u1").await, 5);
    // The stream counts in the same window.
    let (status, _) = app.open_stream(&token, body.clone()).await;
    assert_eq!(status, 429);
    // Another user has their own count.
    app.grant("u2", 100).await;
    assert_eq!(
        app.predict(&app.token("u2", Role::Enduser), body)
            .await
            .status,
        200
    );
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn past_the_concurrency_limit_predictions_are_429_and_a_finished_one_frees_its_place() {
    let app = App::new().await;
    let slow = Behaviour::Slow {
        text: "done".into(),
        pause: Duration::from_millis(700),
    };
    app.add_flow("flow-slow", slow, (1, 0.0, 0.0)).await;
    app.grant("u1", 10_000).await;
    set_limits(&app, "u1", None, Some(2)).await;
    let token = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-slow", "question": "hi"});
    let answers = at_once(&app, &token, &body, 6).await;
    let mut statuses = Vec::new();
    for res in answers {
        if res.status != 200 {
            res.assert_error(429, "rate_limited");
            assert_eq!(res.headers["retry-after"], "1");
        }
        statuses.push(res.status.as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        2,
        "{statuses:?}"
    );
    assert_eq!(app.flowise.received().len(), 2);
    // Both finished: the next ones run.
    assert_eq!(app.predict(&token, body).await.status, 200);
    // A reservation older than FLOWISE_TIMEOUT_SECONDS + 30 s (a crashed
    // instance's) no longer counts.
    sqlx::query("UPDATE streaming_sessions SET status = 'active', settled_at = NULL, charged_credits = NULL, refunded_credits = NULL, created_at = now() - interval '151 seconds'")
        .execute(&app.pg.pool)
        .await
        .unwrap();
    let quick = json!({"chatflow_id": "flow-a", "question": "hi"});
    assert_eq!(app.predict(&token, quick).await.status, 200);
}

#[tokio::test]
async fn replays_of_an_idempotency_key_do_not_count_against_the_rate() {
    let app = App::new().await;
    app.grant("u1", 1_000).await;
    set_limits(&app, "u1", Some(2), None).await;
    let token = app.token("u1", Role::Enduser);
    let body = json!({"chatflow_id": "flow-a", "question": "hi"});
    let headers = [("idempotency-key", "once")];
    for _ in 0..5 {
        let res = app.predict_with(&token, body.clone(), &headers).await;
        assert_eq!(res.status, 200, "{}", res.body);
    }
    assert_eq!(app.predict(&token, body.clone()).await.status, 200);
    app.predict(&token, body)
        .await
        .assert_error(429, "rate_limited");
}

#[tokio::test]
async fn a_disabled_account_cannot_predict_even_with_a_live_token() {
    let app = App::new().await;
    app.grant("u1", 100).await;
    sqlx::query("UPDATE user_accounts SET disabled = true WHERE user_id = 'u1'")
        .execute(&app.pg.pool)
        .await
        .unwrap();
    let (rows, calls) = (app.ledger_rows().await, app.flowise.received().len());
    let token = app.token("u1", Role::Enduser);
    app.predict(&token, json!({"chatflow_id": "flow-a", "question": "hi"}))
        .await
        .assert_error(403, "account_disabled");
    assert_eq!(
        (app.ledger_rows().await, app.flowise.received().len()),
        (rows, calls)
    );
    assert_eq!(app.balance("u1").await, 100);
}
