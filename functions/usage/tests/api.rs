//! The usage function's routes, in-process against real PostgreSQL (README §7).
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use serde_json::{json, Value};
use shared::testing::{self, TestClient, TestPostgres};
use shared::token::Role;

async fn app() -> (TestClient, TestPostgres) {
    let db = TestPostgres::new().await;
    let router = usage::router(usage::AppState {
        jwt: testing::jwt_keys(),
        pg: db.pool.clone(),
    });
    (TestClient::new(router), db)
}

async fn record(client: &TestClient, body: Value) -> testing::TestResponse {
    let admin = client.token("admin-1", Role::Admin);
    client.post("/api/usage/record", &admin, body).await
}

#[tokio::test]
async fn an_admin_records_usage_and_an_end_user_cannot() {
    let (client, _db) = app().await;
    let res = record(
        &client,
        json!({"userId": "u1", "service": "chat", "operation": "flow-a", "credits": 3, "metadata": {"tokens": 10}}),
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.body["userId"], "u1");
    assert_eq!(res.body["credits"], 3);
    assert_eq!(res.body["metadata"], json!({"tokens": 10}));
    assert!(res.body["id"].is_string() && res.body["createdAt"].is_string());
    let user = client.token("u1", Role::Enduser);
    client
        .post(
            "/api/usage/record",
            &user,
            json!({"service": "chat", "operation": "x", "credits": 1}),
        )
        .await
        .assert_error(403, "forbidden");
    for bad in [
        json!({"service": "chat", "operation": "x", "credits": -1}),
        json!({"service": "", "operation": "x", "credits": 1}),
        json!({"service": "chat", "operation": "x", "credits": 1, "metadata": [1]}),
        json!({"service": "chat", "credits": 1}),
        json!({"service": "ch\u{0}at", "operation": "x", "credits": 1}),
        json!({"service": "chat", "operation": "x", "credits": 1, "metadata": {"k\u{0}": 1}}),
    ] {
        let res = record(&client, bad).await;
        assert_eq!(res.status, 400, "{}", res.body);
    }
}

#[tokio::test]
async fn statistics_group_by_service_day_chatflow_and_user() {
    let (client, db) = app().await;
    // u1 is known to the ledger by name; u2 is not.
    sqlx::query("INSERT INTO user_accounts (user_id, username) VALUES ('u1', 'ann')")
        .execute(&db.pool)
        .await
        .unwrap();
    for (user, service, op, credits) in [
        ("u1", "chat", "flow-a", 3),
        ("u1", "chat", "flow-a", 2),
        ("u1", "chat", "flow-b", 4),
        ("u1", "export", "pdf", 1),
        ("u2", "chat", "flow-a", 11),
    ] {
        let res = record(
            &client,
            json!({"userId": user, "service": service, "operation": op, "credits": credits}),
        )
        .await;
        assert_eq!(res.status, 201);
    }
    let mine = client
        .get("/api/usage/stats", &client.token("u1", Role::Enduser))
        .await;
    assert_eq!(mine.status, 200, "{}", mine.body);
    assert_eq!(mine.body["totalRecords"], 4);
    assert_eq!(mine.body["totalCredits"], 10);
    assert_eq!(
        mine.body["byService"],
        json!([{"service": "chat", "records": 3, "credits": 9}, {"service": "export", "records": 1, "credits": 1}])
    );
    assert_eq!(
        mine.body["byChatflow"],
        json!([{"chatflowId": "flow-a", "records": 2, "credits": 5}, {"chatflowId": "flow-b", "records": 1, "credits": 4}])
    );
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(
        mine.body["byDay"],
        json!([{"day": today, "records": 4, "credits": 10}])
    );
    assert_eq!(mine.body["recent"].as_array().unwrap().len(), 4);
    assert!(mine.body.get("byUser").is_none());

    let user = client.token("u1", Role::Enduser);
    client
        .get("/api/usage/stats/u2", &user)
        .await
        .assert_error(403, "forbidden");
    client
        .get("/api/usage/system-stats", &user)
        .await
        .assert_error(403, "forbidden");
    let supervisor = client.token("s1", Role::Supervisor);
    let theirs = client.get("/api/usage/stats/u2", &supervisor).await;
    assert_eq!(theirs.body["totalCredits"], 11);
    let system = client.get("/api/usage/system-stats", &supervisor).await;
    assert_eq!(system.body["totalCredits"], 21);
    assert_eq!(
        system.body["byUser"],
        json!([
            {"userId": "u2", "username": null, "records": 1, "credits": 11},
            {"userId": "u1", "username": "ann", "records": 4, "credits": 10}
        ])
    );
}

#[tokio::test]
async fn the_date_range_filters_and_is_validated() {
    let (client, _db) = app().await;
    record(
        &client,
        json!({"userId": "u1", "service": "chat", "operation": "f", "credits": 1}),
    )
    .await;
    let user = client.token("u1", Role::Enduser);
    let past = client
        .get("/api/usage/stats?from=2020-01-01&to=2020-12-31", &user)
        .await;
    assert_eq!(past.body["totalRecords"], 0);
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let now = client
        .get(&format!("/api/usage/stats?from={today}&to={today}"), &user)
        .await;
    assert_eq!(
        now.body["totalRecords"], 1,
        "`to` as a date includes that whole day"
    );
    client
        .get("/api/usage/stats?from=tomorrow", &user)
        .await
        .assert_error(400, "invalid_input");
    client
        .get("/api/usage/stats?from=2026-12-01&to=2026-01-01", &user)
        .await
        .assert_error(400, "invalid_input");
}

#[tokio::test]
async fn an_export_too_large_for_one_answer_asks_for_a_shorter_range() {
    let (client, db) = app().await;
    // 700 records of 8 kB each, yesterday, and one today.
    sqlx::query(
        "INSERT INTO usage_logs (id, user_id, service, operation, credits, metadata, created_at)
         SELECT gen_random_uuid(), 'u1', 'chat', 'flow', 1,
                jsonb_build_object('note', repeat('x', 8000)), now() - interval '1 day'
           FROM generate_series(1, 700)",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let res = record(
        &client,
        json!({"userId": "u1", "service": "chat", "operation": "flow", "credits": 1}),
    )
    .await;
    assert_eq!(res.status, 201);
    let admin = client.token("admin-1", Role::Admin);
    let res = client.get("/api/usage/export", &admin).await;
    res.assert_error(422, "export_too_large");
    assert!(
        res.body["message"]
            .as_str()
            .unwrap()
            .contains("shorter range"),
        "{}",
        res.body
    );
    let today = chrono::Utc::now().format("%Y-%m-%d");
    let res = client
        .get(&format!("/api/usage/export?from={today}"), &admin)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.body.as_str().unwrap().lines().count(),
        2,
        "the header and today's record"
    );
}

#[tokio::test]
async fn export_streams_csv_with_escaped_fields() {
    let (client, _db) = app().await;
    for i in 0..2500 {
        let op = if i == 0 { "flow, \"quoted\"" } else { "flow" };
        let res = record(&client, json!({"userId": format!("u{}", i % 3), "service": "chat", "operation": op, "credits": 1})).await;
        assert_eq!(res.status, 201);
    }
    let user = client.token("u1", Role::Enduser);
    client
        .get("/api/usage/export", &user)
        .await
        .assert_error(403, "forbidden");
    let admin = client.token("admin-1", Role::Admin);
    let res = client.get("/api/usage/export", &admin).await;
    assert_eq!(res.status, 200);
    assert!(res.headers["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/csv"));
    assert!(res.headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains("attachment"));
    let text = res.body.as_str().unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "id,created_at,user_id,service,operation,credits,metadata"
    );
    assert_eq!(
        lines.len(),
        2501,
        "a header and every record, across chunks"
    );
    assert!(
        lines[1].contains(",\"flow, \"\"quoted\"\"\",1,{}"),
        "{}",
        lines[1]
    );
}

#[tokio::test]
async fn usage_credits_past_two_to_the_53rd_are_400s_and_sums_never_overflow() {
    let (client, db) = app().await;
    for credits in [json!(9_007_199_254_740_992_i64), json!(i64::MAX), json!(-1)] {
        let res = record(
            &client,
            json!({"userId": "u1", "service": "chat", "operation": "f", "credits": credits}),
        )
        .await;
        assert_eq!(res.status, 400, "{credits}: {}", res.body);
        assert!(res.body["message"].as_str().unwrap().contains("credits"));
    }
    // Many records at the largest amount: the statistics saturate, never 500.
    for _ in 0..3 {
        let res = record(
            &client,
            json!({"userId": "u1", "service": "chat", "operation": "f", "credits": 9_007_199_254_740_991_i64}),
        )
        .await;
        assert_eq!(res.status, 201, "{}", res.body);
    }
    sqlx::query("INSERT INTO usage_logs (id, user_id, service, operation, credits) SELECT gen_random_uuid(), 'u1', 'chat', 'f', 9007199254740991 FROM generate_series(1, 2000)")
        .execute(&db.pool)
        .await
        .unwrap();
    let stats = client
        .get(
            "/api/usage/system-stats",
            &client.token("admin-1", Role::Admin),
        )
        .await;
    assert_eq!(stats.status, 200, "{}", stats.body);
    assert_eq!(stats.body["totalCredits"], 9_007_199_254_740_991_i64);
}

#[tokio::test]
async fn an_export_never_hands_a_spreadsheet_a_formula() {
    let (client, _db) = app().await;
    for (user, operation) in [
        ("=HYPERLINK(\"http://evil.example\",\"x\")", "flow"),
        ("u2", "+cmd|' /C calc'!A0"),
        ("u3", "-1+1"),
        ("u4", "@SUM(A1:A9)"),
        ("u5", "\tlead"),
    ] {
        let res = record(
            &client,
            json!({"userId": user, "service": "chat", "operation": operation, "credits": 1}),
        )
        .await;
        assert_eq!(res.status, 201, "{}", res.body);
    }
    let admin = client.token("admin-1", Role::Admin);
    let res = client.get("/api/usage/export", &admin).await;
    let text = res.body.as_str().unwrap();
    let cells: Vec<String> = text
        .lines()
        .skip(1)
        .flat_map(|line| {
            // user_id and operation are the third and fifth cells.
            let mut fields = Vec::new();
            let (mut cell, mut quoted) = (String::new(), false);
            for c in line.chars() {
                match c {
                    '"' => quoted = !quoted,
                    ',' if !quoted => fields.push(std::mem::take(&mut cell)),
                    _ => cell.push(c),
                }
            }
            fields.push(cell);
            [fields[2].clone(), fields[4].clone()]
        })
        .collect();
    for cell in &cells {
        assert!(
            !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
            "a live formula cell: {cell:?} in {text}"
        );
    }
    assert!(
        cells.iter().any(|c| c.starts_with("'=HYPERLINK")),
        "{cells:?}"
    );
    assert!(cells.iter().any(|c| c == "'-1+1"), "{cells:?}");
}
