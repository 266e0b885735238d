//! The credits function's routes, in-process against real PostgreSQL:
//! bodies, statuses, roles and the error format of README §6.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::App;
use serde_json::{json, Value};
use shared::testing::{self, call, call_with_headers};
use shared::token::Role;

impl App {
    /// An admin's allocation, over HTTP.
    async fn grant(&self, user: &str, credits: i64) {
        let admin = self.token("admin-1", Role::Admin);
        let res = self
            .post(
                "/api/credits/allocate",
                &admin,
                json!({"userId": user, "credits": credits}),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.body);
    }
}

#[tokio::test]
async fn an_admin_allocates_and_the_user_sees_the_balance() {
    let app = App::new().await;
    let admin = app.token("admin-1", Role::Admin);
    let res = app
        .post(
            "/api/credits/allocate",
            &admin,
            json!({"userId": "u1", "credits": 100, "expiryDays": 10, "notes": "welcome"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.body["success"], true);
    assert_eq!(res.body["newBalance"], 100);
    assert_eq!(res.body["allocation"]["credits"], 100);
    assert_eq!(res.body["allocation"]["remaining"], 100);
    assert!(res.body["allocation"]["expiresAt"].is_string());
    // Who granted it, by name.
    assert_eq!(res.body["allocation"]["grantedBy"], "user_admin-1");
    let user = app.token("u1", Role::Enduser);
    let balance = app.get("/api/credits/balance", &user).await;
    assert_eq!(balance.status, 200);
    assert_eq!(balance.body["userId"], "u1");
    assert_eq!(balance.body["totalCredits"], 100);
    assert_eq!(balance.body["allocations"].as_array().unwrap().len(), 1);
    assert_eq!(balance.body["allocations"][0]["grantedBy"], "user_admin-1");
    let total = app.get("/api/credits/total-balance", &user).await;
    assert_eq!(total.body, json!({"totalCredits": 100}));
}

#[tokio::test]
async fn expiry_days_default_to_30_and_null_means_never() {
    let app = App::new().await;
    let admin = app.token("admin-1", Role::Admin);
    let never = app
        .post(
            "/api/credits/allocate",
            &admin,
            json!({"userId": "u1", "credits": 5, "expiryDays": null}),
        )
        .await;
    assert_eq!(never.body["allocation"]["expiresAt"], Value::Null);
    let default = app
        .post(
            "/api/credits/allocate",
            &admin,
            json!({"userId": "u1", "credits": 5}),
        )
        .await;
    let expires = chrono::DateTime::parse_from_rfc3339(
        default.body["allocation"]["expiresAt"].as_str().unwrap(),
    )
    .unwrap();
    let days = (expires.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_hours();
    assert!((29 * 24..=30 * 24).contains(&days), "{days} hours");
    for bad in [json!(0), json!(3651), json!("ten")] {
        let res = app
            .post(
                "/api/credits/allocate",
                &admin,
                json!({"userId": "u1", "credits": 5, "expiryDays": bad}),
            )
            .await;
        res.assert_error(400, "invalid_input");
        assert!(
            res.body["message"].as_str().unwrap().contains("expiryDays"),
            "{}",
            res.body
        );
    }
}

#[tokio::test]
async fn only_admins_and_supervisors_allocate_and_read_others() {
    let app = App::new().await;
    let user = app.token("u1", Role::Enduser);
    app.post(
        "/api/credits/allocate",
        &user,
        json!({"userId": "u1", "credits": 5}),
    )
    .await
    .assert_error(403, "forbidden");
    app.get("/api/credits/balance/u2", &user)
        .await
        .assert_error(403, "forbidden");
    let supervisor = app.token("s1", Role::Supervisor);
    let res = app
        .post(
            "/api/credits/allocate",
            &supervisor,
            json!({"userId": "u2", "credits": 5}),
        )
        .await;
    assert_eq!(res.status, 201);
    let other = app.get("/api/credits/balance/u2", &supervisor).await;
    assert_eq!(other.body["totalCredits"], 5);
    // Adjusting is for admins alone.
    app.post(
        "/api/credits/adjust",
        &supervisor,
        json!({"userId": "u2", "amount": 1, "notes": "x"}),
    )
    .await
    .assert_error(403, "forbidden");
}

#[tokio::test]
async fn a_user_deducts_their_own_credits_and_overdrawing_is_402() {
    let app = App::new().await;
    app.grant("u1", 10).await;
    let user = app.token("u1", Role::Enduser);
    let res = app
        .post(
            "/api/credits/deduct",
            &user,
            json!({"credits": 4, "description": "test", "reference": "r1"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["newBalance"], 6);
    assert!(res.body["transactionId"].is_string());
    app.post("/api/credits/deduct", &user, json!({"credits": 7}))
        .await
        .assert_error(402, "insufficient_credits");
    // An end user cannot spend someone else's credits; an admin can.
    app.grant("u2", 10).await;
    app.post(
        "/api/credits/deduct",
        &user,
        json!({"credits": 1, "userId": "u2"}),
    )
    .await
    .assert_error(403, "forbidden");
    let admin = app.token("admin-1", Role::Admin);
    let res = app
        .post(
            "/api/credits/deduct",
            &admin,
            json!({"credits": 1, "userId": "u2"}),
        )
        .await;
    assert_eq!(res.body["newBalance"], 9);
}

#[tokio::test]
async fn bad_amounts_are_400s_naming_the_field() {
    let app = App::new().await;
    let user = app.token("u1", Role::Enduser);
    for (body, field) in [
        (json!({"credits": 0}), "credits"),
        (json!({"credits": -3}), "credits"),
        (json!({"credits": 1.5}), "credits"),
        (json!({"credits": "5"}), "credits"),
        (json!({}), "credits"),
        (json!({"credits": 1, "bogus": true}), "bogus"),
        (json!({"credits": 1, "description": "nul\u{0}byte"}), "NUL"),
    ] {
        let res = app.post("/api/credits/deduct", &user, body).await;
        assert_eq!(res.status, 400, "{}", res.body);
        assert!(
            res.body["message"].as_str().unwrap().contains(field),
            "{}",
            res.body
        );
    }
}

#[tokio::test]
async fn an_idempotency_key_replays_the_first_result_and_refuses_another_body() {
    let app = App::new().await;
    app.grant("u1", 10).await;
    let user = app.token("u1", Role::Enduser);
    let send = |credits: i64| {
        let token = user.clone();
        let router = app.router.clone();
        async move {
            call_with_headers(
                &router,
                "POST",
                "/api/credits/deduct",
                Some(json!({"credits": credits})),
                Some(&token),
                &[("idempotency-key", "order-77")],
            )
            .await
        }
    };
    let first = send(3).await;
    let second = send(3).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.body, second.body, "the replay is the first answer");
    send(4).await.assert_error(409, "idempotency_key_reused");
    let balance = app.get("/api/credits/total-balance", &user).await;
    assert_eq!(balance.body["totalCredits"], 7, "one effect");
    // The key may also come in the body.
    let body_key = json!({"credits": 2, "idempotencyKey": "order-78"});
    let a = app
        .post("/api/credits/deduct", &user, body_key.clone())
        .await;
    let b = app.post("/api/credits/deduct", &user, body_key).await;
    assert_eq!(a.body, b.body);
    assert_eq!(
        app.get("/api/credits/total-balance", &user).await.body["totalCredits"],
        5
    );
}

#[tokio::test]
async fn adjustments_apply_and_never_go_negative() {
    let app = App::new().await;
    app.grant("u1", 10).await;
    let admin = app.token("admin-1", Role::Admin);
    let res = app
        .post(
            "/api/credits/adjust",
            &admin,
            json!({"userId": "u1", "amount": -4, "notes": "correction"}),
        )
        .await;
    assert_eq!(res.body["newBalance"], 6, "{}", res.body);
    app.post(
        "/api/credits/adjust",
        &admin,
        json!({"userId": "u1", "amount": -7, "notes": "too much"}),
    )
    .await
    .assert_error(422, "would_go_negative");
    app.post(
        "/api/credits/adjust",
        &admin,
        json!({"userId": "u1", "amount": 5, "notes": ""}),
    )
    .await
    .assert_error(400, "invalid_input");
    let res = app
        .post(
            "/api/credits/adjust",
            &admin,
            json!({"userId": "u1", "amount": 5, "notes": "bonus"}),
        )
        .await;
    assert_eq!(res.body["newBalance"], 11);
}

#[tokio::test]
async fn transactions_are_listed_newest_first_with_filters_and_pages() {
    let app = App::new().await;
    app.grant("u1", 10).await;
    let user = app.token("u1", Role::Enduser);
    for _ in 0..3 {
        app.post("/api/credits/deduct", &user, json!({"credits": 1}))
            .await;
    }
    let page = app.get("/api/credits/transactions?limit=2", &user).await;
    assert_eq!(page.status, 200, "{}", page.body);
    assert_eq!(
        (
            page.body["page"].clone(),
            page.body["limit"].clone(),
            page.body["total"].clone()
        ),
        (json!(1), json!(2), json!(4))
    );
    let rows = page.body["transactions"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["type"], "deduction");
    assert_eq!(rows[0]["amount"], -1);
    assert_eq!(rows[0]["balanceAfter"], 7);
    assert_eq!(rows[1]["balanceAfter"], 8);
    let allocations = app
        .get("/api/credits/transactions?type=allocation", &user)
        .await;
    assert_eq!(allocations.body["total"], 1);
    app.get("/api/credits/transactions?type=gift", &user)
        .await
        .assert_error(400, "invalid_input");
    app.get("/api/credits/transactions?from=soon", &user)
        .await
        .assert_error(400, "invalid_input");
    app.get("/api/credits/transactions?limit=1000", &user)
        .await
        .assert_error(400, "invalid_input");
    let unbounded = app.get("/api/credits/transactions?from=&to=", &user).await;
    assert_eq!(unbounded.body["total"], 4, "empty bounds count as absent");
    let future = app
        .get("/api/credits/transactions?from=2999-01-01", &user)
        .await;
    assert_eq!(future.body["total"], 0);
    // Another user's history needs a reader role.
    app.get("/api/credits/transactions?userId=u2", &user)
        .await
        .assert_error(403, "forbidden");
    let supervisor = app.token("s1", Role::Supervisor);
    let theirs = app
        .get("/api/credits/transactions?userId=u1", &supervisor)
        .await;
    assert_eq!(theirs.body["total"], 4);
}

#[tokio::test]
async fn pricing_rules_drive_calculate() {
    let app = App::new().await;
    let user = app.token("u1", Role::Enduser);
    // The default rule: 1 + ceil(0.001 x in + 0.002 x out).
    let res = app
        .post(
            "/api/credits/calculate",
            &user,
            json!({"inputTokens": 1500, "outputTokens": 250}),
        )
        .await;
    assert_eq!(res.body["credits"], 3, "{}", res.body);
    assert_eq!(res.body["breakdown"]["rule"], "default");
    let admin = app.token("admin-1", Role::Admin);
    app.call_put(
        "/api/credits/pricing/flow-a",
        &user,
        json!({"perRequest": 2, "perInputToken": 0.5, "perOutputToken": 1}),
    )
    .await
    .assert_error(403, "forbidden");
    let put = app
        .call_put(
            "/api/credits/pricing/flow-a",
            &admin,
            json!({"perRequest": 2, "perInputToken": 0.5, "perOutputToken": 1}),
        )
        .await;
    assert_eq!(put.status, 200, "{}", put.body);
    assert_eq!(put.body["rule"]["perInputToken"], 0.5);
    // "abcdefgh" is 2 estimated tokens: 2 + ceil(0.5 x 2) = 3.
    let res = app
        .post(
            "/api/credits/calculate",
            &user,
            json!({"chatflowId": "flow-a", "question": "abcdefgh"}),
        )
        .await;
    assert_eq!(
        (
            res.body["credits"].clone(),
            res.body["breakdown"]["inputTokens"].clone()
        ),
        (json!(3), json!(2))
    );
    let rules = app.get("/api/credits/pricing", &user).await;
    let names: Vec<&str> = rules.body["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["chatflowId"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["default", "flow-a"]);
    app.call_put(
        "/api/credits/pricing/flow-a",
        &admin,
        json!({"perRequest": 1, "perInputToken": -1, "perOutputToken": 0}),
    )
    .await
    .assert_error(400, "invalid_input");
}

impl App {
    async fn call_put(&self, path: &str, token: &str, body: Value) -> testing::TestResponse {
        call(&self.router, "PUT", path, Some(body), Some(token)).await
    }
}

#[tokio::test]
async fn streaming_sessions_reserve_finalize_and_abort() {
    let app = App::new().await;
    app.grant("u1", 50).await;
    let user = app.token("u1", Role::Enduser);
    let res = app
        .post(
            "/api/streaming-sessions/initialize",
            &user,
            json!({"sessionId": "s1", "chatflowId": "flow", "estimatedCredits": 20}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(
        res.body,
        json!({"sessionId": "s1", "reservedCredits": 20, "status": "active"})
    );
    assert_eq!(
        app.get("/api/credits/total-balance", &user).await.body["totalCredits"],
        30
    );
    let active = app.get("/api/streaming-sessions/active", &user).await;
    assert_eq!(active.body["sessions"][0]["sessionId"], "s1");
    // Another user can neither settle it nor see it.
    let other = app.token("u2", Role::Enduser);
    app.post(
        "/api/streaming-sessions/finalize",
        &other,
        json!({"sessionId": "s1", "actualCredits": 1}),
    )
    .await
    .assert_error(403, "forbidden");
    assert_eq!(
        app.get("/api/streaming-sessions/active", &other).await.body["sessions"],
        json!([])
    );
    app.get("/api/streaming-sessions/active?all=true", &other)
        .await
        .assert_error(403, "forbidden");
    let done = app
        .post(
            "/api/streaming-sessions/finalize",
            &user,
            json!({"sessionId": "s1", "actualCredits": 12}),
        )
        .await;
    assert_eq!(
        done.body,
        json!({"sessionId": "s1", "chargedCredits": 12, "refundedCredits": 8, "shortfallCredits": 0, "status": "completed"})
    );
    let again = app
        .post(
            "/api/streaming-sessions/abort",
            &user,
            json!({"sessionId": "s1"}),
        )
        .await;
    assert_eq!(
        again.body["status"], "completed",
        "the first outcome stands"
    );
    assert_eq!(
        app.get("/api/credits/total-balance", &user).await.body["totalCredits"],
        38
    );
    app.post(
        "/api/streaming-sessions/initialize",
        &user,
        json!({"sessionId": "s2", "chatflowId": "flow", "estimatedCredits": 39}),
    )
    .await
    .assert_error(402, "insufficient_credits");
    app.post(
        "/api/streaming-sessions/initialize",
        &user,
        json!({"sessionId": "s3", "chatflowId": "flow", "estimatedCredits": 5}),
    )
    .await;
    let aborted = app
        .post(
            "/api/streaming-sessions/abort",
            &user,
            json!({"sessionId": "s3", "partialCredits": 2}),
        )
        .await;
    assert_eq!(
        (
            aborted.body["chargedCredits"].clone(),
            aborted.body["status"].clone()
        ),
        (json!(2), json!("aborted"))
    );
    app.post(
        "/api/streaming-sessions/abort",
        &user,
        json!({"sessionId": "missing"}),
    )
    .await
    .assert_error(404, "not_found");
}

#[tokio::test]
async fn every_route_needs_a_valid_token() {
    let app = App::new().await;
    for (method, path) in [
        ("GET", "/api/credits/balance"),
        ("POST", "/api/credits/deduct"),
        ("GET", "/api/credits/transactions"),
        ("GET", "/api/streaming-sessions/active"),
    ] {
        call(&app.router, method, path, Some(json!({})), None)
            .await
            .assert_error(401, "missing_token");
        call(&app.router, method, path, Some(json!({})), Some("x.y.z"))
            .await
            .assert_error(401, "invalid_token");
    }
    drop(app.db);
}

/// 2^53 − 1: JavaScript's largest exact integer.
const MAX_SAFE: i64 = 9_007_199_254_740_991;

#[tokio::test]
async fn amounts_past_two_to_the_53rd_are_400s_naming_the_field_and_change_nothing() {
    let app = App::new().await;
    app.grant("u1", 50).await;
    let admin = app.token("admin-1", Role::Admin);
    let user = app.token("u1", Role::Enduser);
    let huge = [
        json!(MAX_SAFE + 1),
        json!(i64::MAX),
        json!(i64::MIN),
        json!(u64::MAX),
        json!(1e30),
        json!(-1e30),
    ];
    let rows_before: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM credit_transactions")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    for value in &huge {
        let cases = [
            (
                "/api/credits/allocate",
                &admin,
                json!({"userId": "u1", "credits": value}),
                "credits",
            ),
            (
                "/api/credits/adjust",
                &admin,
                json!({"userId": "u1", "amount": value, "notes": "x"}),
                "amount",
            ),
            (
                "/api/credits/deduct",
                &user,
                json!({"credits": value}),
                "credits",
            ),
            (
                "/api/streaming-sessions/initialize",
                &user,
                json!({"sessionId": "s1", "chatflowId": "f", "estimatedCredits": value}),
                "estimatedCredits",
            ),
            (
                "/api/streaming-sessions/finalize",
                &user,
                json!({"sessionId": "s1", "actualCredits": value}),
                "actualCredits",
            ),
            (
                "/api/streaming-sessions/abort",
                &user,
                json!({"sessionId": "s1", "partialCredits": value}),
                "partialCredits",
            ),
            (
                "/api/credits/calculate",
                &user,
                json!({"inputTokens": value}),
                "inputTokens",
            ),
        ];
        for (path, token, body, field) in cases {
            let res = app.post(path, token, body).await;
            assert_eq!(res.status, 400, "{path} {value}: {}", res.body);
            assert!(
                res.body["message"].as_str().unwrap().contains(field),
                "{path} {value}: {}",
                res.body
            );
        }
        let res = call(
            &app.router,
            "PUT",
            "/api/credits/pricing/f",
            Some(json!({"perRequest": value, "perInputToken": 0, "perOutputToken": 0})),
            Some(&admin),
        )
        .await;
        assert_eq!(res.status, 400, "pricing {value}: {}", res.body);
    }
    let rows_after: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM credit_transactions")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows_after, rows_before);
    let balance = app.get("/api/credits/total-balance", &user).await;
    assert_eq!(balance.body["totalCredits"], 50);
}

#[tokio::test]
async fn a_balance_that_would_pass_two_to_the_53rd_is_422_balance_limit() {
    let app = App::new().await;
    let admin = app.token("admin-1", Role::Admin);
    let user = app.token("u1", Role::Enduser);
    // The largest exact amount is accepted, and read back exactly.
    let res = app
        .post(
            "/api/credits/allocate",
            &admin,
            json!({"userId": "u1", "credits": MAX_SAFE - 10}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let res = app
        .post(
            "/api/credits/allocate",
            &admin,
            json!({"userId": "u1", "credits": 11}),
        )
        .await;
    res.assert_error(422, "balance_limit");
    assert!(res.body["message"]
        .as_str()
        .unwrap()
        .starts_with("credits:"));
    let res = app
        .post(
            "/api/credits/adjust",
            &admin,
            json!({"userId": "u1", "amount": 11, "notes": "bonus"}),
        )
        .await;
    res.assert_error(422, "balance_limit");
    assert!(res.body["message"].as_str().unwrap().starts_with("amount:"));
    let balance = app.get("/api/credits/balance", &user).await;
    assert_eq!(balance.body["totalCredits"], MAX_SAFE - 10);
    let rows: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM credit_transactions")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 1);
    // Up to the limit itself is fine.
    let res = app
        .post(
            "/api/credits/adjust",
            &admin,
            json!({"userId": "u1", "amount": 10, "notes": "to the brim"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["newBalance"], MAX_SAFE);
}

#[tokio::test]
async fn the_statement_folds_each_answer_into_one_line_and_reads_only_ones_own() {
    let app = App::new().await;
    app.grant("u1", 50).await;
    let user = app.token("u1", Role::Enduser);
    for (session, estimate, actual) in [("s1", 20, 12), ("s2", 5, 9)] {
        let held = app
            .post(
                "/api/streaming-sessions/initialize",
                &user,
                json!({"sessionId": session, "chatflowId": "flow-a", "estimatedCredits": estimate}),
            )
            .await;
        assert_eq!(held.status, 201, "{}", held.body);
        let done = app
            .post(
                "/api/streaming-sessions/finalize",
                &user,
                json!({"sessionId": session, "actualCredits": actual}),
            )
            .await;
        assert_eq!(done.status, 200, "{}", done.body);
    }
    app.post("/api/credits/deduct", &user, json!({"credits": 3}))
        .await;
    let res = app.get("/api/credits/statement?limit=10", &user).await;
    assert_eq!(res.status, 200, "{}", res.body);
    let lines = res.body["lines"].as_array().unwrap();
    let shape: Vec<(&str, i64, i64)> = lines
        .iter()
        .map(|l| {
            let kind = l["kind"].as_str().unwrap();
            (
                kind,
                l["amount"].as_i64().unwrap(),
                l["balanceAfter"].as_i64().unwrap(),
            )
        })
        .collect();
    // Newest first: the deduction, the answer that went past its hold,
    // the answer refunded part of its hold, the grant.
    assert_eq!(
        shape,
        [
            ("deduction", -3, 26),
            ("answer", -9, 29),
            ("answer", -12, 38),
            ("allocation", 50, 50)
        ]
    );
    assert_eq!(res.body["total"], 4);
    let first = &lines[2];
    assert_eq!(first["chatflowId"], "flow-a");
    assert_eq!(first["status"], "completed");
    let parts: Vec<&str> = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(parts[0], "reservation", "{parts:?}");
    let sum: i64 = first["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(sum, -12, "the line is the sum of its entries");
    // A page never splits an answer: one line a page, all of its entries.
    let page = app
        .get("/api/credits/statement?limit=1&page=3", &user)
        .await;
    assert_eq!(page.body["lines"][0]["amount"], -12);
    assert_eq!(page.body["lines"][0]["entries"], first["entries"]);

    // Someone else's statement: an admin or supervisor only.
    let other = app.token("u2", Role::Enduser);
    app.get("/api/credits/statement?userId=u1", &other)
        .await
        .assert_error(403, "forbidden");
    let supervisor = app.token("sup", Role::Supervisor);
    let read = app
        .get("/api/credits/statement?userId=u1", &supervisor)
        .await;
    assert_eq!(read.body["total"], 4);
    app.get("/api/credits/statement?limit=0", &user)
        .await
        .assert_error(400, "invalid_input");
}
