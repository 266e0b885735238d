//! The whole account journey over HTTP through the served auth function,
//! with codes and links read from the mail it sends.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use e2e::{Stack, StackOptions};
use serde_json::{json, Value};

const ADMIN_PASSWORD: &str = "first-admin-password";

async fn post(stack: &Stack, path: &str, token: Option<&str>, body: Value) -> (u16, Value) {
    match token {
        Some(token) => stack.post("auth", path, token, body).await,
        None => stack.post_public("auth", path, body).await,
    }
}

#[tokio::test]
async fn a_user_signs_up_verifies_logs_in_rotates_resets_and_an_admin_promotes_them() {
    let stack = Stack::start_with(StackOptions {
        functions: Some(vec!["auth"]),
        env: vec![
            ("ADMIN_USERNAME".into(), "admin".into()),
            ("ADMIN_EMAIL".into(), "admin@example.com".into()),
            ("ADMIN_PASSWORD".into(), ADMIN_PASSWORD.into()),
        ],
        ..Default::default()
    })
    .await;

    // Sign up; the code arrives by mail.
    let (status, body) = post(
        &stack,
        "/api/auth/signup",
        None,
        json!({"username": "Paula", "email": "paula@example.com", "password": "paula-password"}),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let user_id = body["userId"].as_str().unwrap().to_owned();
    let code = stack
        .smtp
        .wait_for("paula@example.com", 0)
        .await
        .code()
        .expect("a code");
    let (status, body) = post(
        &stack,
        "/api/auth/login",
        None,
        json!({"username": "paula", "password": "paula-password"}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("email_not_verified"))
    );
    let (status, _) = post(
        &stack,
        "/api/auth/verify-email",
        None,
        json!({"email": "paula@example.com", "code": code}),
    )
    .await;
    assert_eq!(status, 200);

    // Log in, read the profile.
    let (status, login) = post(
        &stack,
        "/api/auth/login",
        None,
        json!({"email": "paula@example.com", "password": "paula-password"}),
    )
    .await;
    assert_eq!(status, 200, "{login}");
    let access = login["accessToken"].as_str().unwrap().to_owned();
    let refresh = login["refreshToken"].as_str().unwrap().to_owned();
    let (status, profile) = stack.get("auth", "/api/profile", &access).await;
    assert_eq!(
        (status, profile["user"]["id"].as_str()),
        (200, Some(user_id.as_str()))
    );

    // Rotate; presenting the old token again kills the family.
    let (status, rotated) = post(
        &stack,
        "/api/auth/refresh",
        None,
        json!({"refreshToken": refresh}),
    )
    .await;
    assert_eq!(status, 200, "{rotated}");
    let (status, body) = post(
        &stack,
        "/api/auth/refresh",
        None,
        json!({"refreshToken": refresh}),
    )
    .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("token_reused"))
    );
    let newest = rotated["refreshToken"].as_str().unwrap();
    let (status, _) = post(
        &stack,
        "/api/auth/refresh",
        None,
        json!({"refreshToken": newest}),
    )
    .await;
    assert_eq!(status, 401);

    // Log in again, log out.
    let (_, login) = post(
        &stack,
        "/api/auth/login",
        None,
        json!({"username": "paula", "password": "paula-password"}),
    )
    .await;
    let session = login["refreshToken"].as_str().unwrap().to_owned();
    let (status, _) = post(
        &stack,
        "/api/auth/logout",
        None,
        json!({"refreshToken": session}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &stack,
        "/api/auth/refresh",
        None,
        json!({"refreshToken": session}),
    )
    .await;
    assert_eq!(status, 401);

    // Forgot the password: the link comes by mail.
    let (status, _) = post(
        &stack,
        "/api/auth/forgot-password",
        None,
        json!({"email": "paula@example.com"}),
    )
    .await;
    assert_eq!(status, 200);
    let token = stack
        .smtp
        .wait_for("paula@example.com", 1)
        .await
        .reset_token()
        .expect("a reset link");
    let (status, _) = post(
        &stack,
        "/api/auth/reset-password",
        None,
        json!({"token": token, "newPassword": "paula-new-password"}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = post(
        &stack,
        "/api/auth/login",
        None,
        json!({"username": "paula", "password": "paula-password"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, login) = post(
        &stack,
        "/api/auth/login",
        None,
        json!({"username": "paula", "password": "paula-new-password"}),
    )
    .await;
    assert_eq!(status, 200);
    let paula_refresh = login["refreshToken"].as_str().unwrap().to_owned();

    // The first admin (from ADMIN_*) lists users and promotes Paula.
    let (status, admin) = post(
        &stack,
        "/api/auth/login",
        None,
        json!({"username": "admin", "password": ADMIN_PASSWORD}),
    )
    .await;
    assert_eq!(status, 200, "{admin}");
    assert_eq!(admin["user"]["role"], "admin");
    let admin_token = admin["accessToken"].as_str().unwrap().to_owned();
    let (status, list) = stack
        .get("auth", "/api/admin/users?search=paula", &admin_token)
        .await;
    assert_eq!((status, list["total"].as_u64()), (200, Some(1)), "{list}");
    let path = format!("/api/admin/users/{user_id}");
    let (status, body) = stack
        .patch("auth", &path, &admin_token, json!({"role": "supervisor"}))
        .await;
    assert_eq!(
        (status, body["user"]["role"].as_str()),
        (200, Some("supervisor"))
    );
    // Her next refresh carries the new role.
    let (status, rotated) = post(
        &stack,
        "/api/auth/refresh",
        None,
        json!({"refreshToken": paula_refresh}),
    )
    .await;
    assert_eq!(status, 200);
    let claims = shared::testing::jwt_keys()
        .verify_access(rotated["accessToken"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.role, shared::token::Role::Supervisor);
    // Nothing in the logs gives a password or a token away.
    let logs = stack.logs("auth");
    for secret in [
        "paula-new-password",
        ADMIN_PASSWORD,
        &admin_token,
        &paula_refresh,
    ] {
        assert!(!logs.contains(secret), "a secret was logged");
    }
}
