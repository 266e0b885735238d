//! Allowances through the prediction path (README "Allowances and
//! warnings"): a user's first prediction of the period brings the
//! allowance in its own transaction and spends from it, and the 402 that
//! follows says when more arrive.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use chrono::{DateTime, Datelike, TimeZone, Utc};
use e2e::{Stack, StackOptions};
use serde_json::json;
use shared::flowise_double::{Behaviour, FlowiseDouble};
use shared::token::Role;

/// Flowise's double with `flow` at 4 credits a request, the predict and
/// credits functions, and every end user's allowance of `credits` a month:
/// (the double, kept alive; the stack; an admin's token).
async fn priced_with_allowance(flow: &str, credits: i64) -> (FlowiseDouble, Stack, String) {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow(flow, "Helper", Behaviour::answer("Hi."));
    let stack = Stack::start_with(StackOptions {
        functions: Some(vec!["predict", "credits"]),
        env: vec![("FLOWISE_API_URL".into(), flowise.url.clone())],
        ..Default::default()
    })
    .await;
    let admin = stack.token("admin-1", Role::Admin);
    stack.sync_chatflows(&admin).await;
    let price = json!({"perRequest": 4, "perInputToken": 0, "perOutputToken": 0});
    stack.open_chatflow(&admin, flow, Some(price)).await;
    let allowance = json!({"credits": credits, "period": "month"});
    let path = "/api/admin/allowances/enduser";
    let (status, body) = stack.put("credits", path, &admin, allowance).await;
    assert_eq!(status, 200, "{body}");
    (flowise, stack, admin)
}

#[tokio::test]
async fn the_first_prediction_of_a_period_brings_the_allowance_and_a_402_says_when_more_come() {
    let (_flowise, stack, _) = priced_with_allowance("flow-a", 8).await;
    let kim = stack.token("kim", Role::Enduser);

    // Kim has never been seen: her first prediction brings this month's 8.
    let question = json!({"chatflow_id": "flow-a", "question": "hello"});
    let (status, body) = stack.predict(&kim, question.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stack.balance(&kim).await, 4);
    // Her second costs exactly what it held: nothing comes back, and no
    // settlement entry is written; she has run out, and is told.
    let (status, body) = stack.predict(&kim, question.clone()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(stack.balance(&kim).await, 0);
    let (status, body) = stack.predict(&kim, question.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("insufficient_credits")),
        "{body}"
    );
    let now = Utc::now();
    let index = now.year() * 12 + now.month0() as i32 + 1;
    let next = Utc
        .with_ymd_and_hms(index / 12, (index % 12) as u32 + 1, 1, 0, 0, 0)
        .unwrap();
    let at: DateTime<Utc> = serde_json::from_value(body["nextCreditsAt"].clone()).unwrap();
    assert_eq!(
        (at, body["nextCredits"].as_i64()),
        (next, Some(8)),
        "{body}"
    );
    // Four more refusals within seconds: webhooks hear of a user's
    // refusals at most once a minute (two only if a minute turned between).
    for _ in 0..4 {
        assert_eq!(stack.predict(&kim, question.clone()).await.0, 402);
    }
    let events: Vec<(String, i64)> = sqlx::query_as(
        "SELECT event, COUNT(*) FROM notices WHERE account = 'kim' GROUP BY event ORDER BY event",
    )
    .fetch_all(&stack.pg.pool)
    .await
    .unwrap();
    let count = |event: &str| events.iter().find(|e| e.0 == event).map_or(0, |e| e.1);
    assert_eq!(count("credits.exhausted"), 1, "{events:?}");
    assert!(
        (1..=2).contains(&count("prediction.refused_402")),
        "{events:?}"
    );
    let grants: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM allowance_grants WHERE user_id = 'kim'")
            .fetch_one(&stack.pg.pool)
            .await
            .unwrap();
    assert_eq!(grants, 1);
}

#[tokio::test]
async fn fifty_first_predictions_at_once_share_one_grant_and_a_402_names_credits_about_to_expire() {
    let (_flowise, stack, admin) = priced_with_allowance("flow-b", 500).await;
    let lea = stack.token("lea", Role::Enduser);
    // Fifty first predictions of the month at once: one grant, 50 paid.
    let asks = (0..50).map(|_| {
        let (stack, lea) = (&stack, lea.clone());
        async move {
            let question = json!({"chatflow_id": "flow-b", "question": "hello"});
            stack.predict(&lea, question).await.0
        }
    });
    let statuses = futures_util::future::join_all(asks).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(stack.balance(&lea).await, 300);
    let grants: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM allowance_grants WHERE user_id = 'lea'")
            .fetch_one(&stack.pg.pool)
            .await
            .unwrap();
    assert_eq!(grants, 1);
    assert_eq!(
        shared::testing::inconsistent_accounts(&stack.pg.pool).await,
        0
    );

    // Max has 3 credits that expire in 3 days and no allowance of his
    // role: the 402 names them, and so does his balance.
    let max = stack.token("max", Role::Supervisor);
    let (status, body) = stack
        .post(
            "credits",
            "/api/credits/allocate",
            &admin,
            json!({"userId": "max", "credits": 3, "expiryDays": 3}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    let question = json!({"chatflow_id": "flow-b", "question": "hello"});
    let (status, body) = stack.predict(&max, question).await;
    assert_eq!(status, 402, "{body}");
    assert_eq!(body["expiringSoon"]["credits"], 3, "{body}");
    assert!(
        body.get("nextCreditsAt").is_none(),
        "no allowance comes: {body}"
    );
    let (_, balance) = stack.get("credits", "/api/credits/balance", &max).await;
    assert_eq!(balance["expiringSoon"], body["expiringSoon"], "{balance}");
}
