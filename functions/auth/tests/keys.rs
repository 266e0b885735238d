//! The auth function's part in API keys (README §11): it keeps the
//! ledger's record of each user current and revokes a user's keys in
//! PostgreSQL before it disables, deletes or demotes them in MongoDB; when
//! PostgreSQL cannot be written, MongoDB is left as it was.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::App;
use serde_json::json;
use shared::token::{AuthUser, Role};

/// A key made for `user_id` straight in the store.
async fn key_for(app: &App, user_id: &str, role: Role) -> String {
    shared::testing::make_key(&app.pg.pool, user_id, role, json!({"name": "script"}))
        .await
        .key
}

async fn refusal(app: &App, key: &str) -> Option<&'static str> {
    shared::keys::authenticate(&app.pg.pool, key)
        .await
        .err()
        .map(|e| e.code())
}

async fn record(app: &App, user_id: &str) -> (Option<String>, Option<String>, bool, bool) {
    sqlx::query_as(
        "SELECT email, role, disabled, deleted_at IS NOT NULL FROM user_accounts WHERE user_id = $1",
    )
    .bind(user_id)
    .fetch_one(&app.pg.pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn the_ledger_record_follows_the_account_and_a_token_no_longer_rewrites_it() {
    let app = App::new().await;
    let id = app.verified_user("kim", "kim-password").await;
    assert_eq!(
        record(&app, &id).await,
        (
            Some("kim@example.com".into()),
            Some("enduser".into()),
            false,
            false
        )
    );
    let admin = app.admin_token().await;
    let res = app
        .send(
            "PATCH",
            &format!("/api/admin/users/{id}"),
            &admin,
            Some(json!({"role": "supervisor"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(record(&app, &id).await.1.as_deref(), Some("supervisor"));
    // An older token's claims (admin) do not undo what auth recorded.
    let stale = AuthUser {
        id: id.clone(),
        username: "kim".into(),
        email: "old@example.com".into(),
        role: Role::Admin,
        key: None,
        session_version: 0,
    };
    let mut conn = app.pg.pool.acquire().await.unwrap();
    shared::ledger::accounts::ensure_account(&mut conn, &stale)
        .await
        .unwrap();
    assert_eq!(
        record(&app, &id).await,
        (
            Some("kim@example.com".into()),
            Some("supervisor".into()),
            false,
            false
        )
    );
}

#[tokio::test]
async fn disabling_demoting_or_deleting_a_user_revokes_their_keys_first() {
    let app = App::new().await;
    let admin = app.admin_token().await;
    // Disabled: keys revoked, the record says so.
    let kim = app.verified_user("kim", "kim-password").await;
    let kim_key = key_for(&app, &kim, Role::Enduser).await;
    assert_eq!(refusal(&app, &kim_key).await, None);
    let res = app
        .send(
            "PATCH",
            &format!("/api/admin/users/{kim}"),
            &admin,
            Some(json!({"disabled": true})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(refusal(&app, &kim_key).await, Some("key_revoked"));
    assert!(record(&app, &kim).await.2);
    // Enabled again: the old key stays dead.
    let res = app
        .send(
            "PATCH",
            &format!("/api/admin/users/{kim}"),
            &admin,
            Some(json!({"disabled": false})),
        )
        .await;
    assert_eq!(res.status, 200);
    assert!(!record(&app, &kim).await.2);
    assert_eq!(refusal(&app, &kim_key).await, Some("key_revoked"));
    // Demoted: revoked; a promotion or a verification change keeps keys.
    let lee = app.verified_user("lee", "lee-password").await;
    let res = app
        .send(
            "PATCH",
            &format!("/api/admin/users/{lee}"),
            &admin,
            Some(json!({"role": "supervisor"})),
        )
        .await;
    assert_eq!(res.status, 200);
    let lee_key = key_for(&app, &lee, Role::Supervisor).await;
    let res = app
        .send(
            "PATCH",
            &format!("/api/admin/users/{lee}"),
            &admin,
            Some(json!({"isVerified": true})),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(refusal(&app, &lee_key).await, None);
    let res = app
        .send(
            "PATCH",
            &format!("/api/admin/users/{lee}"),
            &admin,
            Some(json!({"role": "enduser"})),
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(refusal(&app, &lee_key).await, Some("key_revoked"));
    // Deleted: revoked, recorded as deleted.
    let max = app.verified_user("max", "max-password").await;
    let max_key = key_for(&app, &max, Role::Enduser).await;
    let res = app
        .send("DELETE", &format!("/api/admin/users/{max}"), &admin, None)
        .await;
    assert_eq!(res.status, 204, "{}", res.body);
    assert_eq!(refusal(&app, &max_key).await, Some("key_revoked"));
    assert!(record(&app, &max).await.3);
}

#[tokio::test]
async fn when_postgresql_is_down_a_user_is_not_disabled_or_deleted_behind_their_keys() {
    let app = App::new().await;
    let admin = app.admin_token().await;
    let kim = app.verified_user("kim", "kim-password").await;
    let key = key_for(&app, &kim, Role::Enduser).await;
    let down = auth::AppState {
        pg: shared::testing::unreachable_postgres(),
        ..app.state.clone()
    };
    let router = auth::router(down);
    for (method, body) in [("PATCH", Some(json!({"disabled": true}))), ("DELETE", None)] {
        let res = shared::testing::call(
            &router,
            method,
            &format!("/api/admin/users/{kim}"),
            body,
            Some(&admin),
        )
        .await;
        res.assert_error(503, "store_unavailable");
    }
    // MongoDB is as it was: the user still signs in, the key still works.
    assert_eq!(app.login("kim", "kim-password").await.status, 200);
    assert_eq!(refusal(&app, &key).await, None);
}

/// `POST /api/keys` as `token`.
async fn make(app: &App, token: &str, body: serde_json::Value) -> shared::testing::TestResponse {
    app.send("POST", "/api/keys", token, Some(body)).await
}

async fn live_keys(app: &App, user_id: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM api_keys WHERE user_id = $1 AND revoked_at IS NULL")
        .bind(user_id)
        .fetch_one(&app.pg.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn making_a_key_needs_the_current_password_and_the_owner_is_mailed_without_its_secret() {
    let app = App::new().await;
    let kim = app.verified_user("kim", "kim-password").await;
    let token = app.token_of("kim", "kim-password").await;
    // A stolen access token alone mints nothing.
    let res = make(&app, &token, json!({"name": "job"})).await;
    res.assert_error(400, "invalid_input");
    assert!(
        res.body["message"]
            .as_str()
            .unwrap()
            .contains("currentPassword"),
        "{}",
        res.body
    );
    make(
        &app,
        &token,
        json!({"name": "job", "currentPassword": "guess-1234"}),
    )
    .await
    .assert_error(401, "invalid_credentials");
    assert_eq!(live_keys(&app, &kim).await, 0);
    // With it: 90 days unless chosen, shown once, only a hash stored; an
    // Idempotency-Key is ignored (a replay would show the secret again).
    let body = json!({"name": "  nightly job ", "currentPassword": "kim-password",
        "chatflows": ["flow-b", "flow-a", "flow-a"], "monthlyCreditLimit": 500});
    let headers = [("idempotency-key", "k-1")];
    let first = app
        .send_with(
            "POST",
            "/api/keys",
            Some(&token),
            Some(body.clone()),
            &headers,
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let again = app
        .send_with("POST", "/api/keys", Some(&token), Some(body), &headers)
        .await;
    assert_eq!(again.status, 201, "{}", again.body);
    let key = first.body["key"].as_str().unwrap();
    assert_ne!(key, again.body["key"].as_str().unwrap());
    assert!(
        key.starts_with("fgw_") && key.len() == 4 + 12 + 1 + 43,
        "{key}"
    );
    assert_eq!(first.body["prefix"], key[..16]);
    assert_eq!(first.body["name"], "nightly job");
    assert_eq!(first.body["chatflows"], json!(["flow-a", "flow-b"]));
    let expires: chrono::DateTime<chrono::Utc> =
        first.body["expiresAt"].as_str().unwrap().parse().unwrap();
    let days = (expires - chrono::Utc::now()).num_hours() as f64 / 24.0;
    assert!((89.9..=90.1).contains(&days), "{days}");
    let dump: String =
        sqlx::query_scalar("SELECT string_agg(row_to_json(k)::text, '') FROM api_keys k")
            .fetch_one(&app.pg.pool)
            .await
            .unwrap();
    assert!(!dump.contains(&key[17..]), "the secret is stored");
    // Each key made is mailed to its owner: name, prefix, chatflows,
    // limit and expiry, never the secret.
    let mail = app.smtp.wait_for("kim@example.com", 1).await;
    assert!(mail.data.contains("nightly job"), "{}", mail.data);
    assert!(mail.data.contains(&key[..16]));
    assert!(mail.data.contains("flow-a, flow-b"));
    assert!(mail.data.contains("500 credits a month"));
    assert!(!mail.data.contains(&key[17..]), "the secret was mailed");
    // A key never makes a key.
    make(
        &app,
        key,
        json!({"name": "child", "currentPassword": "kim-password"}),
    )
    .await
    .assert_error(403, "key_not_allowed");
    assert_eq!(live_keys(&app, &kim).await, 2);
}

#[tokio::test]
async fn bad_key_bodies_are_400s_naming_the_field_and_make_nothing() {
    let app = App::new().await;
    let kim = app.verified_user("kim", "kim-password").await;
    let token = app.token_of("kim", "kim-password").await;
    let with = |extra: serde_json::Value| {
        let mut body = json!({"name": "k", "currentPassword": "kim-password"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (body, field) in [
        (with(json!({"name": ""})), "name"),
        (with(json!({"name": "x".repeat(101)})), "name"),
        (with(json!({"name": "a\u{7}b"})), "name"),
        (with(json!({"expiresInDays": 0})), "expiresInDays"),
        (with(json!({"expiresInDays": 366})), "expiresInDays"),
        (with(json!({"chatflows": []})), "chatflows"),
        (with(json!({"chatflows": [""]})), "chatflows"),
        (with(json!({"monthlyCreditLimit": 0})), "monthlyCreditLimit"),
        (
            with(json!({"monthlyCreditLimit": -5})),
            "monthlyCreditLimit",
        ),
        (
            with(json!({"monthlyCreditLimit": 9_007_199_254_740_992_i64})),
            "monthlyCreditLimit",
        ),
        (with(json!({"role": "admin"})), "role"),
    ] {
        let res = make(&app, &token, body.clone()).await;
        assert_eq!(res.status, 400, "{body}: {}", res.body);
        assert!(
            res.body["message"].as_str().unwrap().contains(field),
            "{body}: {}",
            res.body
        );
    }
    assert_eq!(live_keys(&app, &kim).await, 0);
}

#[tokio::test]
async fn guessing_the_password_at_the_key_route_locks_the_account_like_a_sign_in() {
    let app = App::new().await;
    let kim = app.verified_user("kim", "kim-password").await;
    let token = app.token_of("kim", "kim-password").await;
    let guesses = futures_util::future::join_all((0..30).map(|n| {
        make(
            &app,
            &token,
            json!({"name": "k", "currentPassword": format!("guess-{n:04}")}),
        )
    }))
    .await;
    let wrong = guesses.iter().filter(|r| r.status == 401).count();
    let locked = guesses.iter().filter(|r| r.status == 429).count();
    assert_eq!((wrong, locked), (5, 25));
    // Locked: even the right password waits.
    make(
        &app,
        &token,
        json!({"name": "k", "currentPassword": "kim-password"}),
    )
    .await
    .assert_error(429, "account_locked");
    assert_eq!(live_keys(&app, &kim).await, 0);
}

#[tokio::test]
async fn a_reset_through_the_mailed_link_revokes_every_key_and_the_mail_says_so() {
    let app = App::new().await;
    let kim = app.verified_user("kim", "kim-password").await;
    let first = key_for(&app, &kim, Role::Enduser).await;
    let second = key_for(&app, &kim, Role::Enduser).await;
    assert_eq!(refusal(&app, &first).await, None);
    app.post_public(
        "/api/auth/forgot-password",
        json!({"email": "kim@example.com"}),
    )
    .await;
    let link = app.smtp.wait_for("kim@example.com", 1).await;
    let token = link.reset_token().expect("a reset link");
    let res = app
        .post_public(
            "/api/auth/reset-password",
            json!({"token": token, "newPassword": "a-new-password"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(refusal(&app, &first).await, Some("key_revoked"));
    assert_eq!(refusal(&app, &second).await, Some("key_revoked"));
    let notice = app.smtp.wait_for("kim@example.com", 2).await;
    assert!(
        notice.data.contains("Your 2 API keys were revoked"),
        "{}",
        notice.data
    );
}

#[tokio::test]
async fn signing_out_everywhere_revokes_the_keys_only_when_asked() {
    let app = App::new().await;
    let kim = app.verified_user("kim", "kim-password").await;
    let key = key_for(&app, &kim, Role::Enduser).await;
    let token = app.token_of("kim", "kim-password").await;
    let res = app.send("POST", "/api/auth/logout-all", &token, None).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(refusal(&app, &key).await, None);
    // That session ended with the others: sign in again.
    app.send("POST", "/api/auth/logout-all", &token, None)
        .await
        .assert_error(401, "session_ended");
    let token = app.token_of("kim", "kim-password").await;
    let res = app
        .send(
            "POST",
            "/api/auth/logout-all",
            &token,
            Some(json!({"revokeKeys": true})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(refusal(&app, &key).await, Some("key_revoked"));
    let token = app.token_of("kim", "kim-password").await;
    app.send(
        "POST",
        "/api/auth/logout-all",
        &token,
        Some(json!({"revokeKeys": "yes"})),
    )
    .await
    .assert_error(400, "invalid_input");
}

#[tokio::test]
async fn a_key_whose_password_check_began_before_a_revocation_is_never_made() {
    let app = App::new().await;
    let kim = app.verified_user("kim", "kim-password").await;
    let claims = AuthUser {
        id: kim.clone(),
        username: "kim".into(),
        email: "kim@example.com".into(),
        role: Role::Enduser,
        key: None,
        session_version: 0,
    };
    let spec = || shared::keys::store::KeySpec {
        name: "racer".into(),
        expires_in_days: 90,
        chatflows: None,
        monthly_credit_limit: None,
    };
    // A request read the old password, then the owner's reset revoked the
    // keys: the key it goes on to make is refused.
    let since = shared::keys::store::database_now(&app.pg.pool)
        .await
        .unwrap();
    let user = app.state.store.user_by_id(&kim).await.unwrap().unwrap();
    auth::accounts::record(
        &app.state,
        &user,
        auth::accounts::Change::RevokeKeys,
        "system",
    )
    .await
    .unwrap();
    let mut tx = app.pg.pool.begin().await.unwrap();
    let refused = shared::keys::store::create(&mut tx, &claims, spec(), Some(since)).await;
    assert_eq!(refused.unwrap_err().code(), "credentials_changed");
    drop(tx);
    // A check that began after it makes one.
    let since = shared::keys::store::database_now(&app.pg.pool)
        .await
        .unwrap();
    let mut tx = app.pg.pool.begin().await.unwrap();
    shared::keys::store::create(&mut tx, &claims, spec(), Some(since))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(live_keys(&app, &kim).await, 1);
}
