//! Warning settings and webhook registration (README "Allowances and
//! warnings") through the credits function's router.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::App;
use serde_json::json;
use shared::token::Role;

#[tokio::test]
async fn a_user_chooses_when_to_be_warned_and_a_teams_supervisors_the_wallets() {
    let app = App::new().await;
    let ann = app.token("ann", Role::Enduser);
    let res = app.get("/api/credits/warnings", &ann).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        (
            res.body["lowCredits"].as_i64(),
            res.body["chosen"].as_bool(),
            res.body["allowanceMail"].as_bool()
        ),
        (Some(10), Some(false), Some(false)),
        "the default: 10 credits when nothing was granted lately"
    );
    let res = app
        .send(
            "PUT",
            "/api/credits/warnings",
            &ann,
            Some(json!({"lowCredits": 50, "allowanceMail": true})),
        )
        .await;
    assert_eq!(
        (
            res.body["lowCredits"].as_i64(),
            res.body["chosen"].as_bool()
        ),
        (Some(50), Some(true))
    );
    assert_eq!(res.body["allowanceMail"], true);
    for (body, field) in [
        (json!({"lowCredits": -1}), "lowCredits"),
        (json!({"allowanceMail": true}), "lowCredits"),
        (
            json!({"lowCredits": 9_007_199_254_740_992_i64}),
            "lowCredits",
        ),
    ] {
        let res = app
            .send("PUT", "/api/credits/warnings", &ann, Some(body))
            .await;
        res.assert_error(400, "invalid_input");
        assert_eq!(res.body["field"], field, "{}", res.body);
    }
    let res = app
        .send(
            "PUT",
            "/api/credits/warnings",
            &ann,
            Some(json!({"lowCredits": 0})),
        )
        .await;
    assert_eq!(res.body["lowCredits"], 0, "off");
    let res = app
        .send(
            "PUT",
            "/api/credits/warnings",
            &ann,
            Some(json!({"lowCredits": null})),
        )
        .await;
    assert_eq!(
        (
            res.body["lowCredits"].as_i64(),
            res.body["chosen"].as_bool()
        ),
        (Some(10), Some(false))
    );

    let admin = app.token("admin-1", Role::Admin);
    let lead = app.token("lead", Role::Supervisor);
    let other = app.token("other", Role::Supervisor);
    for token in [&lead, &other] {
        app.get("/api/credits/balance", token).await;
    }
    let res = app
        .post(
            "/api/admin/teams",
            &admin,
            json!({"name": "Warned", "supervisorIds": ["lead"]}),
        )
        .await;
    let team = res.body["id"].as_str().unwrap().to_owned();
    let path = format!("/api/teams/{team}/warnings");
    let res = app
        .send("PUT", &path, &lead, Some(json!({"lowCredits": 200})))
        .await;
    assert_eq!(res.body["lowCredits"], 200, "{}", res.body);
    app.send("PUT", &path, &other, Some(json!({"lowCredits": 1})))
        .await
        .assert_error(403, "not_your_team");
    app.get(&path, &ann)
        .await
        .assert_error(403, "not_your_team");
    let stored: Option<i64> =
        sqlx::query_scalar("SELECT low_credits_warning FROM user_accounts WHERE user_id = $1")
            .bind(format!("team:{team}"))
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(stored, Some(200), "the wallet's own threshold");
}

#[tokio::test]
async fn only_admins_register_webhooks_over_https_and_the_secret_is_shown_once() {
    let app = App::new().await;
    let admin = app.token("admin-1", Role::Admin);
    let lead = app.token("lead", Role::Supervisor);
    let body = json!({"url": "https://hooks.example.com/in", "events": ["credits.low", "team.wallet_low"]});
    app.post("/api/admin/webhooks", &lead, body.clone())
        .await
        .assert_error(403, "forbidden");
    for (bad, field) in [
        (
            json!({"url": "http://hooks.example.com/in", "events": ["credits.low"]}),
            "url",
        ),
        (
            json!({"url": "ftp://x/y", "events": ["credits.low"]}),
            "url",
        ),
        (
            json!({"url": "not a url", "events": ["credits.low"]}),
            "url",
        ),
        // Addresses of a private network, a cloud's metadata service and
        // the like are refused as written (a name is checked when resolved).
        (
            json!({"url": "https://10.0.0.5/hook", "events": ["credits.low"]}),
            "url",
        ),
        (
            json!({"url": "https://169.254.169.254/latest/meta-data", "events": ["credits.low"]}),
            "url",
        ),
        (
            json!({"url": "https://[fd00::1]/hook", "events": ["credits.low"]}),
            "url",
        ),
        (
            json!({"url": "https://[::ffff:192.168.1.1]/hook", "events": ["credits.low"]}),
            "url",
        ),
        (
            json!({"url": "https://100.64.0.1/hook", "events": ["credits.low"]}),
            "url",
        ),
        (
            json!({"url": "https://hooks.example.com/in", "events": []}),
            "events",
        ),
        (
            json!({"url": "https://hooks.example.com/in", "events": ["credits.stolen"]}),
            "events",
        ),
    ] {
        let res = app.post("/api/admin/webhooks", &admin, bad).await;
        res.assert_error(400, "invalid_input");
        assert_eq!(res.body["field"], field, "{}", res.body);
    }
    let res = app.post("/api/admin/webhooks", &admin, body).await;
    assert_eq!(res.status, 201, "{}", res.body);
    let secret = res.body["secret"].as_str().unwrap();
    assert!(
        secret.starts_with("whsec_") && secret.len() > 40,
        "{secret}"
    );
    let id = res.body["webhook"]["id"].as_str().unwrap().to_owned();
    let local = json!({"url": "http://localhost:9000/hook", "events": ["credits.low"]});
    assert_eq!(
        app.post("/api/admin/webhooks", &admin, local).await.status,
        201
    );
    let res = app.get("/api/admin/webhooks", &admin).await;
    assert_eq!(res.body["webhooks"].as_array().unwrap().len(), 2);
    assert!(
        !res.body.to_string().contains("whsec_"),
        "the secret is never shown again"
    );
    let res = app
        .get(&format!("/api/admin/webhooks/{id}/deliveries"), &admin)
        .await;
    assert_eq!(
        (res.status.as_u16(), res.body["total"].as_i64()),
        (200, Some(0))
    );
    app.get(&format!("/api/admin/webhooks/{id}/deliveries"), &lead)
        .await
        .assert_error(403, "forbidden");
    let path = format!("/api/admin/webhooks/{id}");
    assert_eq!(app.send("DELETE", &path, &admin, None).await.status, 200);
    app.send("DELETE", &path, &admin, None)
        .await
        .assert_error(404, "not_found");
    app.get(
        "/api/admin/webhooks/0190f000-0000-7000-8000-000000000009/deliveries",
        &admin,
    )
    .await
    .assert_error(404, "not_found");
}
