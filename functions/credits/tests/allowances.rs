//! Allowance routes and the first read of a period (README "Allowances
//! and warnings"), through the credits function's router against real
//! PostgreSQL.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::App;
use serde_json::json;
use shared::testing;
use shared::token::Role;

#[tokio::test]
async fn an_admin_sets_a_role_allowance_and_a_users_first_read_brings_it() {
    let app = App::new().await;
    let admin = app.token("admin-1", Role::Admin);
    let lead = app.token("lead", Role::Supervisor);
    let ann = app.token("ann", Role::Enduser);
    let path = "/api/admin/allowances/enduser";
    // Refusals first: nothing is set by any of them.
    app.send(
        "PUT",
        path,
        &lead,
        Some(json!({"credits": 100, "period": "month"})),
    )
    .await
    .assert_error(403, "forbidden");
    for (body, field) in [
        (json!({"credits": 100, "period": "year"}), "period"),
        (json!({"credits": 0, "period": "month"}), "credits"),
        (
            json!({"credits": 100, "period": "month", "timeZone": "Mars/Olympus"}),
            "timeZone",
        ),
        (
            json!({"credits": 100, "period": "month", "rolloverCap": -1}),
            "rolloverCap",
        ),
    ] {
        let res = app.send("PUT", path, &admin, Some(body)).await;
        res.assert_error(400, "invalid_input");
        assert_eq!(res.body["field"], field, "{}", res.body);
    }
    app.send(
        "PUT",
        "/api/admin/allowances/owner",
        &admin,
        Some(json!({"credits": 1, "period": "day"})),
    )
    .await
    .assert_error(400, "invalid_path");
    app.send("DELETE", path, &admin, None)
        .await
        .assert_error(404, "not_found");

    let res = app
        .send(
            "PUT",
            path,
            &admin,
            Some(json!({"credits": 100, "period": "month", "rolloverCap": 50})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["current"]["credits"], 100);
    assert_eq!(res.body["current"]["timeZone"], "UTC");
    // A change waits for the next month.
    let res = app
        .send(
            "PUT",
            path,
            &admin,
            Some(json!({"credits": 120, "period": "month"})),
        )
        .await;
    assert_eq!(res.body["current"]["credits"], 100, "{}", res.body);
    assert_eq!(res.body["next"]["credits"], 120);
    let changes_at = res.body["changesAt"].as_str().unwrap().to_owned();
    assert!(changes_at.contains("-01T00:00:00"), "{changes_at}");

    // Ann's first read brings this month's 100, once; she sees when the next come.
    let res = app.get("/api/credits/balance", &ann).await;
    assert_eq!(res.body["totalCredits"], 100, "{}", res.body);
    assert_eq!(res.body["nextCredits"], 120);
    assert_eq!(
        res.body["nextCreditsAt"].as_str(),
        Some(changes_at.as_str())
    );
    let res = app.get("/api/credits/total-balance", &ann).await;
    assert_eq!(res.body["totalCredits"], 100);
    let res = app.get("/api/credits/transactions", &ann).await;
    assert_eq!(
        res.body["transactions"][0]["type"], "allowance",
        "{}",
        res.body
    );
    assert_eq!(res.body["total"], 1);
}

#[tokio::test]
async fn fifty_first_reads_racing_the_job_grant_the_month_once() {
    let app = App::new().await;
    let admin = app.token("admin-1", Role::Admin);
    let bob = app.token("bob", Role::Enduser);
    // Bob is known to the ledger before the allowance exists.
    assert_eq!(
        app.get("/api/credits/balance", &bob).await.body["totalCredits"],
        0
    );
    let res = app
        .send(
            "PUT",
            "/api/admin/allowances/enduser",
            &admin,
            Some(json!({"credits": 40, "period": "month"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let mut tasks: Vec<_> = (0..50)
        .map(|_| {
            let (client, token) = (app.client.clone(), bob.clone());
            tokio::spawn(async move {
                client
                    .get("/api/credits/balance", &token)
                    .await
                    .status
                    .as_u16()
            })
        })
        .collect();
    let pool = app.db.pool.clone();
    let job = tokio::spawn(async move {
        shared::ledger::allowances::grant_all(&pool, chrono::Utc::now(), 1)
            .await
            .unwrap();
        200_u16
    });
    tasks.push(job);
    for task in tasks {
        assert_eq!(task.await.unwrap(), 200_u16);
    }
    assert_eq!(testing::balance(&app.db.pool, "bob").await, 40);
    let grants: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM allowance_grants WHERE user_id = 'bob'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(grants, 1);
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);
}

#[tokio::test]
async fn a_teams_supervisors_set_its_allowance_and_no_one_else() {
    let app = App::new().await;
    let admin = app.token("admin-1", Role::Admin);
    let lead = app.token("lead", Role::Supervisor);
    let other = app.token("other", Role::Supervisor);
    let amy = app.token("amy", Role::Enduser);
    for token in [&lead, &other, &amy] {
        assert_eq!(app.get("/api/credits/balance", token).await.status, 200);
    }
    let res = app
        .post(
            "/api/admin/teams",
            &admin,
            json!({"name": "Ops", "supervisorIds": ["lead"]}),
        )
        .await;
    let team = res.body["id"].as_str().unwrap().to_owned();
    let res = app
        .post(
            &format!("/api/teams/{team}/members"),
            &lead,
            json!({"userIds": ["amy"]}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app
        .post(
            "/api/credits/allocate",
            &admin,
            json!({"teamId": team, "credits": 25, "expiryDays": 90}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let path = format!("/api/teams/{team}/allowance");
    let body = json!({"credits": 10, "period": "week"});
    for token in [&other, &amy] {
        app.send("PUT", &path, token, Some(body.clone()))
            .await
            .assert_error(403, "not_your_team");
    }
    // A team's allowance rolls over too (what carries is the wallet's).
    let capped = json!({"credits": 10, "period": "week", "rolloverCap": 5});
    let res = app.send("PUT", &path, &lead, Some(capped)).await;
    assert_eq!(
        (
            res.status.as_u16(),
            res.body["current"]["period"].as_str(),
            res.body["current"]["rolloverCap"].as_i64()
        ),
        (200, Some("week"), Some(5)),
        "{}",
        res.body
    );
    // Amy's first read: 10 from the wallet, as a transfer.
    let res = app.get("/api/credits/balance", &amy).await;
    assert_eq!(res.body["totalCredits"], 10, "{}", res.body);
    assert_eq!(
        testing::balance_of_account(&app.db.pool, &format!("team:{team}")).await,
        15
    );
    let res = app.get(&path, &other).await;
    res.assert_error(403, "not_your_team");
    let res = app.send("DELETE", &path, &lead, None).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(
        res.body["next"].is_null() && res.body["changesAt"].is_string(),
        "{}",
        res.body
    );
}
