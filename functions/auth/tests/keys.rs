//! The auth function's part in API keys (README §11): it keeps the
//! ledger's record of each user current and revokes a user's keys in
//! PostgreSQL before it disables, deletes or demotes them in MongoDB; when
//! PostgreSQL cannot be written, MongoDB is left as it was.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::App;
use serde_json::json;
use shared::keys::store::{self, KeySpec};
use shared::token::{AuthUser, Role};

/// A key made for `user_id` as the credits function makes it.
async fn key_for(app: &App, user_id: &str, role: Role) -> String {
    let user = AuthUser {
        id: user_id.into(),
        username: "someone".into(),
        email: "someone@example.com".into(),
        role,
        key: None,
    };
    let spec = KeySpec {
        name: "script".into(),
        expires_in_days: None,
        chatflows: None,
        monthly_credit_limit: None,
    };
    let mut tx = app.pg.pool.begin().await.unwrap();
    let made = store::create(&mut tx, &user, spec).await.unwrap();
    tx.commit().await.unwrap();
    made.key
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
