//! The credits journey over HTTP through the served functions, and the
//! expiry job invoked as Lambda invokes it.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use e2e::{Stack, StackOptions};
use serde_json::json;
use shared::token::Role;

fn stack_options() -> StackOptions {
    StackOptions {
        functions: Some(vec!["credits", "usage", "credit-expiry"]),
        ..Default::default()
    }
}

#[tokio::test]
async fn admin_allocates_user_spends_reserves_and_reads_history() {
    let stack = Stack::start_with(stack_options()).await;
    let admin = stack.token("admin-1", Role::Admin);
    let user = stack.token("alice", Role::Enduser);

    let (status, body) = stack
        .post(
            "credits",
            "/api/credits/allocate",
            &admin,
            json!({"userId": "alice", "credits": 40, "expiryDays": 30}),
        )
        .await;
    assert_eq!(status, 201, "{body}");

    let (status, body) = stack.get("credits", "/api/credits/balance", &user).await;
    assert_eq!(
        (status, body["totalCredits"].as_i64()),
        (200, Some(40)),
        "{body}"
    );

    let (status, body) = stack
        .post(
            "credits",
            "/api/credits/deduct",
            &user,
            json!({"credits": 15, "description": "report"}),
        )
        .await;
    assert_eq!(
        (status, body["newBalance"].as_i64()),
        (200, Some(25)),
        "{body}"
    );

    let (status, body) = stack
        .post(
            "credits",
            "/api/credits/deduct",
            &user,
            json!({"credits": 26}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("insufficient_credits")),
        "{body}"
    );

    let reserve = |session: &'static str, estimate: i64| {
        stack.post(
            "credits",
            "/api/streaming-sessions/initialize",
            &user,
            json!({"sessionId": session, "chatflowId": "flow", "estimatedCredits": estimate}),
        )
    };
    let (status, body) = reserve("s-final", 10).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = stack
        .post(
            "credits",
            "/api/streaming-sessions/finalize",
            &user,
            json!({"sessionId": "s-final", "actualCredits": 6}),
        )
        .await;
    assert_eq!(
        (
            status,
            body["chargedCredits"].as_i64(),
            body["refundedCredits"].as_i64()
        ),
        (200, Some(6), Some(4))
    );
    let (status, _) = reserve("s-abort", 5).await;
    assert_eq!(status, 201);
    let (status, body) = stack
        .post(
            "credits",
            "/api/streaming-sessions/abort",
            &user,
            json!({"sessionId": "s-abort"}),
        )
        .await;
    assert_eq!(
        (
            status,
            body["status"].as_str(),
            body["chargedCredits"].as_i64()
        ),
        (200, Some("aborted"), Some(0))
    );

    let (status, body) = stack
        .get("credits", "/api/credits/transactions?limit=100", &user)
        .await;
    assert_eq!(status, 200);
    let kinds: Vec<&str> = body["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "refund",
            "reservation",
            "refund",
            "reservation",
            "deduction",
            "allocation"
        ]
    );
    assert_eq!(body["transactions"][0]["balanceAfter"], 19);

    let (_, body) = stack
        .get("credits", "/api/credits/total-balance", &user)
        .await;
    assert_eq!(body["totalCredits"], 19);
    // The other family answers too: an admin records usage for alice.
    let (status, _) = stack
        .post(
            "usage",
            "/api/usage/record",
            &admin,
            json!({"userId": "alice", "service": "chat", "operation": "flow", "credits": 6}),
        )
        .await;
    assert_eq!(status, 201);
    let (_, stats) = stack.get("usage", "/api/usage/stats", &user).await;
    assert_eq!(stats["totalCredits"], 6);
}

#[tokio::test]
async fn the_invoked_expiry_job_expires_an_allocation_made_to_expire() {
    let stack = Stack::start_with(stack_options()).await;
    let admin = stack.token("admin-1", Role::Admin);
    let user = stack.token("bob", Role::Enduser);
    for days in [30, 1] {
        let (status, _) = stack
            .post(
                "credits",
                "/api/credits/allocate",
                &admin,
                json!({"userId": "bob", "credits": 10, "expiryDays": days}),
            )
            .await;
        assert_eq!(status, 201);
    }
    // Make the 1-day allocation one granted long ago.
    sqlx::query(
        "UPDATE credit_allocations SET allocated_at = now() - interval '2 days',
                expires_at = now() - interval '1 minute'
          WHERE user_id = 'bob' AND expires_at < now() + interval '2 days'",
    )
    .execute(&stack.pg.pool)
    .await
    .unwrap();
    // Reads exclude it before the job has run.
    let (_, body) = stack
        .get("credits", "/api/credits/total-balance", &user)
        .await;
    assert_eq!(body["totalCredits"], 10);

    // What EventBridge sends on the schedule.
    let scheduled = json!({
        "version": "0", "id": "e2e", "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-11-29T00:00:00Z", "region": "us-east-1",
        "resources": [], "detail": {}
    });
    let report = stack
        .invoke("credit-expiry", scheduled)
        .await
        .expect("the job succeeds");
    assert_eq!(
        report,
        json!({
            "expiredAllocations": 1, "expiredCredits": 10, "settledReservations": 0,
            "purgedIdempotencyKeys": 0, "keyExpiryWarnings": 0,
            "allowances": {"recipients": 0, "busy": 0, "failed": 0},
            "expiryNotices": 0, "warningMails": 0,
            "webhooks": {"delivered": 0, "retrying": 0, "failed": 0}
        })
    );
    let again = stack
        .invoke("credit-expiry", json!({}))
        .await
        .expect("the job succeeds");
    assert_eq!(again["expiredAllocations"], 0, "nothing is expired twice");

    let (_, body) = stack
        .get("credits", "/api/credits/transactions?type=expiry", &user)
        .await;
    assert_eq!(body["total"], 1);
    assert_eq!(body["transactions"][0]["amount"], -10);
    assert_eq!(body["transactions"][0]["balanceAfter"], 10);
}
