//! The functions as deployed: connected as the role of
//! `deploy/app-role.sql` (rows, no DDL) with `MIGRATE_ON_START=false`,
//! every route family and the job still work, and the role cannot change
//! the schema.

use e2e::{Stack, StackOptions, HTTP_FUNCTIONS};
use serde_json::json;
use shared::flowise_double::{Behaviour, FlowiseDouble};
use shared::token::Role;
use sqlx::Connection;

#[tokio::test]
async fn every_function_works_with_a_role_that_cannot_change_the_schema() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow("flow-d", "Deployed", Behaviour::answer("Hello there"));
    let stack = Stack::start_with(StackOptions {
        env: vec![("FLOWISE_API_URL".into(), flowise.url.clone())],
        app_role: true,
        ..Default::default()
    })
    .await;
    for function in HTTP_FUNCTIONS {
        let (status, body) = stack.get_public(function, "/health").await;
        assert_eq!(status, 200, "{function}: {body}");
    }
    let admin = stack.token("admin-1", Role::Admin);
    let user = stack.token("dora", Role::Enduser);
    stack.sync_chatflows(&admin).await;
    stack.open_chatflow(&admin, "flow-d", None).await;
    stack.allocate(&admin, "dora", 50).await;

    let question = json!({"chatflow_id": "flow-d", "question": "Hi"});
    let (status, answer) = stack.predict(&user, question.clone()).await;
    assert_eq!(status, 200, "{answer}");
    let res = stack.open_stream(&user, &question, &[]).await;
    assert_eq!(res.status(), 200);
    assert!(res.text().await.expect("a stream").contains("event: end"));
    let (status, body) = stack
        .post(
            "credits",
            "/api/credits/deduct",
            &user,
            json!({"credits": 1}),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = stack.get("usage", "/api/usage/stats", &user).await;
    assert_eq!(
        (status, body["totalRecords"].as_i64()),
        (200, Some(2)),
        "{body}"
    );
    let (status, body) = stack.get("usage", "/api/usage/export", &admin).await;
    assert_eq!(status, 200, "{body}");
    let report = stack
        .invoke("credit-expiry", json!({}))
        .await
        .expect("the job runs");
    assert_eq!(report["expiredAllocations"], 0, "{report}");

    // The same URL cannot create, alter or drop anything.
    let url = &stack.functions_database_url;
    let mut conn = sqlx::PgConnection::connect(url)
        .await
        .expect("connect as the role");
    for ddl in [
        "CREATE TABLE intruder (id int)",
        "ALTER TABLE user_accounts ADD COLUMN intruder int",
        "DROP TABLE credit_transactions",
        "SELECT * FROM _sqlx_migrations",
    ] {
        let refused = sqlx::raw_sql(ddl).execute(&mut conn).await;
        assert!(refused.is_err(), "{ddl} was allowed");
    }
}
