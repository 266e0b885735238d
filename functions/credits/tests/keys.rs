//! API keys and per-user limits on the credits function (README §11),
//! in-process against real PostgreSQL, each refusal sent as the attack it
//! stops. Keys are made by the auth function (its tests check the
//! password and the bodies); here they are made straight in the store.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::App;
use serde_json::{json, Value};
use shared::testing::{self, call};
use shared::token::Role;

impl App {
    /// A new key of `user`: (key, id).
    async fn key_of(&self, user: &str) -> (String, String) {
        self.key_with(user, Role::Enduser, json!({"name": "ci"}))
            .await
    }

    /// A new key of `user` with `body`'s fields: (key, id).
    async fn key_with(&self, user: &str, role: Role, body: Value) -> (String, String) {
        let made = testing::make_key(&self.db.pool, user, role, body).await;
        (made.key, made.id.to_string())
    }

    async fn live_keys(&self, user: &str) -> i64 {
        sqlx::query_scalar(
            "SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL",
        )
        .bind(user)
        .fetch_one(&self.db.pool)
        .await
        .unwrap()
    }
}

fn is_key(value: &str) -> bool {
    let parts: Vec<&str> = value.splitn(3, '_').collect();
    parts.len() == 3
        && parts[0] == "fgw"
        && parts[1].len() == 12
        && parts[2].len() == 43
        && parts[1..]
            .iter()
            .all(|p| p.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[tokio::test]
async fn keys_are_listed_without_their_secret_and_their_use_is_recorded() {
    let app = App::new().await;
    let ann = app.token("ann", Role::Enduser);
    let (first, first_id) = app.key_of("ann").await;
    let (second, _) = app.key_of("ann").await;
    assert!(is_key(&first) && is_key(&second));
    // Only a hash is stored.
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(row_to_json(k)::text, '') FROM api_keys k")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert!(!dump.contains(&first[17..]), "the secret is stored");
    // The list shows both, newest first, with no secret.
    let list = app.get("/api/keys", &ann).await;
    assert_eq!(list.status, 200, "{}", list.body);
    assert_eq!(list.body["total"], 2);
    let text = list.body.to_string();
    assert!(
        !text.contains(&first[17..]) && !text.contains("\"key\""),
        "{text}"
    );
    let listed = &list.body["keys"][1];
    assert_eq!(listed["id"], first_id.as_str());
    assert_eq!(listed["status"], "active");
    assert_eq!(listed["creditsThisMonth"], 0);
    assert_eq!(listed["lastUsedAt"], Value::Null);
    assert!(listed["expiresAt"].is_string(), "no key lives forever");
    // A key works as its user for the routes a program needs.
    let balance = app.get("/api/credits/balance", &first).await;
    assert_eq!(balance.status, 200, "{}", balance.body);
    let list = app.get("/api/keys", &ann).await;
    assert!(
        list.body["keys"][1]["lastUsedAt"].is_string(),
        "{}",
        list.body
    );
    // Nobody makes a key here: the route is the auth function's.
    let made = call(
        &app.router,
        "POST",
        "/api/keys",
        Some(json!({"name": "x"})),
        Some(&ann),
    )
    .await;
    assert_eq!(made.status, 405, "{}", made.body);
}

#[tokio::test]
async fn fifty_concurrent_makings_give_twenty_live_keys_at_most() {
    let app = App::new().await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let pool = app.db.pool.clone();
            tokio::spawn(async move {
                let claims = shared::token::AuthUser {
                    id: "ann".into(),
                    username: "ann".into(),
                    email: "ann@example.com".into(),
                    role: Role::Enduser,
                    key: None,
                    session_version: 0,
                };
                let spec = shared::keys::store::KeySpec {
                    name: format!("k{i}"),
                    expires_in_days: 90,
                    chatflows: None,
                    monthly_credit_limit: None,
                };
                let mut tx = pool.begin().await.unwrap();
                let made = shared::keys::store::create(&mut tx, &claims, spec, None).await;
                tx.commit().await.unwrap();
                made.map(|k| k.id)
            })
        })
        .collect();
    let mut made = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(id) => made.push(id),
            Err(err) => assert_eq!(err.code(), "too_many_keys"),
        }
    }
    assert_eq!(made.len(), 20);
    assert_eq!(app.live_keys("ann").await, 20);
    // Revoking one frees a place, and only one.
    let ann = app.token("ann", Role::Enduser);
    let res = app
        .send("DELETE", &format!("/api/keys/{}", made[0]), &ann, None)
        .await;
    assert_eq!(res.status, 204, "{}", res.body);
    assert_eq!(app.live_keys("ann").await, 19);
}

#[tokio::test]
async fn a_key_reads_its_users_balance_and_history_and_nothing_else() {
    let app = App::new().await;
    let (key, id) = app.key_of("ann").await;
    for path in [
        "/api/credits/balance",
        "/api/credits/total-balance",
        "/api/credits/transactions",
    ] {
        let res = app.get(path, &key).await;
        assert_eq!(res.status, 200, "{path}: {}", res.body);
    }
    // Everything else answers 403 key_not_allowed, before any change.
    for (method, path, body) in [
        ("POST", "/api/credits/deduct", Some(json!({"amount": 1}))),
        (
            "POST",
            "/api/credits/allocate",
            Some(json!({"userId": "ann", "credits": 5})),
        ),
        (
            "POST",
            "/api/credits/calculate",
            Some(json!({"chatflowId": "f"})),
        ),
        (
            "POST",
            "/api/streaming-sessions/initialize",
            Some(json!({"sessionId": "s1", "chatflowId": "f", "estimatedCredits": 1})),
        ),
        ("GET", "/api/streaming-sessions/active", None),
        ("GET", "/api/keys", None),
        ("DELETE", &format!("/api/keys/{id}"), None),
        ("GET", "/api/admin/keys", None),
        ("PUT", "/api/admin/users/ann/limits", Some(json!({}))),
        ("GET", "/api/credits/balance/ann", None),
    ] {
        let res = call(&app.router, method, path, body, Some(&key)).await;
        res.assert_error(403, "key_not_allowed");
    }
    assert_eq!(app.live_keys("ann").await, 1);
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM credit_transactions")
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
    assert_eq!(rows, 0);
}

#[tokio::test]
async fn an_admins_key_acts_as_an_enduser() {
    let app = App::new().await;
    let (key, _) = app
        .key_with("root", Role::Admin, json!({"name": "admin script"}))
        .await;
    app.get("/api/credits/transactions?userId=ann", &key)
        .await
        .assert_error(403, "forbidden");
    // The admin's own record keeps its role: a key never rewrites it.
    let role: Option<String> =
        sqlx::query_scalar("SELECT role FROM user_accounts WHERE user_id = 'root'")
            .fetch_one(&app.db.pool)
            .await
            .unwrap();
    assert_eq!(role.as_deref(), Some("admin"));
}

#[tokio::test]
async fn a_revoked_expired_forged_or_disabled_key_is_401_at_once() {
    let app = App::new().await;
    let (key, id) = app.key_of("ann").await;
    assert_eq!(app.get("/api/credits/balance", &key).await.status, 200);
    // Forged: a known public id with another secret, an unknown id, junk.
    let forged = format!("{}{}", &key[..17], "A".repeat(43));
    let unknown = format!("fgw_{}_{}", "Z".repeat(12), &key[17..]);
    for bad in [forged.as_str(), unknown.as_str(), "fgw_short", "fgw_"] {
        app.get("/api/credits/balance", bad)
            .await
            .assert_error(401, "invalid_key");
    }
    // Revoked by its owner: the very next request is 401.
    let ann = app.token("ann", Role::Enduser);
    assert_eq!(
        app.send("DELETE", &format!("/api/keys/{id}"), &ann, None)
            .await
            .status,
        204
    );
    app.get("/api/credits/balance", &key)
        .await
        .assert_error(401, "key_revoked");
    // Revoking again changes nothing.
    assert_eq!(
        app.send("DELETE", &format!("/api/keys/{id}"), &ann, None)
            .await
            .status,
        204
    );
    // Expired.
    let (old, old_id) = app.key_of("ann").await;
    sqlx::query("UPDATE api_keys SET created_at = now() - interval '2 days', expires_at = now() - interval '1 second' WHERE id = $1::uuid")
        .bind(&old_id)
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.get("/api/credits/balance", &old)
        .await
        .assert_error(401, "key_expired");
    let list = app.get("/api/keys", &ann).await;
    let statuses: Vec<&str> = list.body["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["revoked", "expired"]);
    // A disabled account's key, and a disabled account making one.
    let (live, _) = app.key_of("bob").await;
    sqlx::query("UPDATE user_accounts SET disabled = true WHERE user_id = 'bob'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    app.get("/api/credits/balance", &live)
        .await
        .assert_error(401, "account_disabled");
}

#[tokio::test]
async fn a_user_never_sees_or_revokes_another_users_key_but_an_admin_does() {
    let app = App::new().await;
    let (ann_key, ann_id) = app.key_of("ann").await;
    let (_, bob_id) = app.key_of("bob").await;
    let bob = app.token("bob", Role::Enduser);
    app.send("DELETE", &format!("/api/keys/{ann_id}"), &bob, None)
        .await
        .assert_error(404, "not_found");
    app.send("DELETE", "/api/keys/not-a-uuid", &bob, None)
        .await
        .assert_error(400, "invalid_path");
    assert_eq!(app.get("/api/credits/balance", &ann_key).await.status, 200);
    let listed = app.get("/api/keys", &bob).await;
    assert_eq!(listed.body["total"], 1);
    assert_eq!(listed.body["keys"][0]["id"], bob_id.as_str());
    // Admin routes: admins only.
    for role in [Role::Enduser, Role::Supervisor] {
        let token = app.token("someone", role);
        app.get("/api/admin/keys", &token)
            .await
            .assert_error(403, "forbidden");
        app.send("DELETE", &format!("/api/admin/keys/{ann_id}"), &token, None)
            .await
            .assert_error(403, "forbidden");
    }
    let admin = app.token("root", Role::Admin);
    let all = app.get("/api/admin/keys", &admin).await;
    assert_eq!(all.body["total"], 2, "{}", all.body);
    let ann_only = app.get("/api/admin/keys?userId=ann", &admin).await;
    assert_eq!(ann_only.body["total"], 1);
    assert_eq!(ann_only.body["keys"][0]["userId"], "ann");
    let res = app
        .send("DELETE", &format!("/api/admin/keys/{ann_id}"), &admin, None)
        .await;
    assert_eq!(res.status, 204, "{}", res.body);
    app.get("/api/credits/balance", &ann_key)
        .await
        .assert_error(401, "key_revoked");
}

#[tokio::test]
async fn an_admin_sets_and_clears_a_users_limits() {
    let app = App::new().await;
    let admin = app.token("root", Role::Admin);
    let put = |body: Value, token: String| {
        let router = app.router.clone();
        async move {
            call(
                &router,
                "PUT",
                "/api/admin/users/ann/limits",
                Some(body),
                Some(&token),
            )
            .await
        }
    };
    let res = put(
        json!({"rateLimitPerMinute": 5, "maxConcurrentStreams": 1}),
        admin.clone(),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.body,
        json!({"userId": "ann", "rateLimitPerMinute": 5, "maxConcurrentStreams": 1})
    );
    let stored: (Option<i32>, Option<i32>) = sqlx::query_as(
        "SELECT rate_limit_per_minute, max_concurrent FROM user_accounts WHERE user_id = 'ann'",
    )
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(stored, (Some(5), Some(1)));
    for (body, field) in [
        (json!({"rateLimitPerMinute": 0}), "rateLimitPerMinute"),
        (json!({"rateLimitPerMinute": 10_001}), "rateLimitPerMinute"),
        (json!({"maxConcurrentStreams": -1}), "maxConcurrentStreams"),
        (json!({"maxConcurrentStreams": 101}), "maxConcurrentStreams"),
        (json!({"burst": 3}), "burst"),
    ] {
        let res = put(body, admin.clone()).await;
        assert_eq!(res.status, 400, "{}", res.body);
        assert!(
            res.body["message"].as_str().unwrap().contains(field),
            "{}",
            res.body
        );
    }
    put(
        json!({"rateLimitPerMinute": 9}),
        app.token("sup", Role::Supervisor),
    )
    .await
    .assert_error(403, "forbidden");
    // Read back by an admin or a supervisor, never by the user.
    let get = |token: String| {
        let router = app.router.clone();
        async move {
            call(
                &router,
                "GET",
                "/api/admin/users/ann/limits",
                None,
                Some(&token),
            )
            .await
        }
    };
    let res = get(app.token("sup", Role::Supervisor)).await;
    assert_eq!(
        res.body,
        json!({"userId": "ann", "rateLimitPerMinute": 5, "maxConcurrentStreams": 1})
    );
    get(app.token("ann", Role::Enduser))
        .await
        .assert_error(403, "forbidden");
    // Absent or null: back to the defaults.
    let res = put(json!({"maxConcurrentStreams": null}), admin.clone()).await;
    assert_eq!(
        res.body,
        json!({"userId": "ann", "rateLimitPerMinute": null, "maxConcurrentStreams": null})
    );
    assert_eq!(get(admin.clone()).await.body, res.body);
    let unknown = call(
        &app.router,
        "GET",
        "/api/admin/users/nobody/limits",
        None,
        Some(&admin),
    )
    .await;
    assert_eq!(
        unknown.body,
        json!({"userId": "nobody", "rateLimitPerMinute": null, "maxConcurrentStreams": null})
    );
}
