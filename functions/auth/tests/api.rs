//! The auth function's routes and rules (README §5), in-process against a
//! real MongoDB wire-protocol server and a real SMTP server the test reads
//! mail from, exactly as a user would.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use auth::mail::Mailer;
use bson::doc;
use common::{smtp_config, App};
use serde_json::json;
use shared::config::{AdminBootstrap, Secret};
use shared::testing::{self, call, TestResponse};
use shared::token::Role;

#[tokio::test]
async fn signup_verify_login_and_profile() {
    let app = App::new().await;
    let res = app
        .post_public(
            "/api/auth/signup",
            json!({"username": "Ann", "email": "Ann@Example.com", "password": "correct horse"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert!(res.body["userId"].is_string() && res.body["message"].is_string());
    // Not verified yet: the right password gets 403, not a token, with the
    // address the code went to (the console offers the code field there);
    // a wrong one learns nothing of the account.
    let refused = app.login("ann", "correct horse").await;
    refused.assert_error(403, "email_not_verified");
    assert_eq!(refused.body["email"], "ann@example.com");
    let wrong = app.login("ann", "wrong horse").await;
    wrong.assert_error(401, "invalid_credentials");
    assert!(wrong.body.get("email").is_none(), "{}", wrong.body);
    let mail = app.smtp.wait_for("ann@example.com", 0).await;
    let code = mail.code().expect("the code stands on a line of its own");
    let res = app
        .post_public(
            "/api/auth/verify-email",
            json!({"email": "ANN@example.com", "code": code}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let res = app
        .post_public(
            "/api/auth/login",
            json!({"email": "ann@EXAMPLE.com", "password": "correct horse"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["user"]["username"], "Ann");
    assert_eq!(res.body["user"]["email"], "ann@example.com");
    assert_eq!(res.body["user"]["role"], "enduser");
    assert_eq!(res.body["user"]["isVerified"], true);
    let access = res.body["accessToken"].as_str().unwrap();
    let claims = testing::jwt_keys().verify_access(access).unwrap();
    assert_eq!(claims.username, "Ann");
    let profile = app.send("GET", "/api/profile", access, None).await;
    assert_eq!(profile.body["user"]["email"], "ann@example.com");
    // Usernames and emails are unique case-insensitively.
    app.post_public(
        "/api/auth/signup",
        json!({"username": "ANN", "email": "other@example.com", "password": "12345678"}),
    )
    .await
    .assert_error(409, "username_taken");
    app.post_public(
        "/api/auth/signup",
        json!({"username": "ann2", "email": "ANN@example.com", "password": "12345678"}),
    )
    .await
    .assert_error(409, "email_taken");
}

#[tokio::test]
async fn login_reveals_nothing_about_which_accounts_exist() {
    let app = App::new().await;
    app.verified_user("bob", "bob-password").await;
    let unknown = app.login("nobody", "bob-password").await;
    let wrong = app.login("bob", "wrong-password").await;
    assert_eq!((unknown.status, &unknown.body), (wrong.status, &wrong.body));
    unknown.assert_error(401, "invalid_credentials");
    for path in ["/api/auth/resend-verification", "/api/auth/forgot-password"] {
        let known = app
            .post_public(path, json!({"email": "bob@example.com"}))
            .await;
        let missing = app
            .post_public(path, json!({"email": "ghost@example.com"}))
            .await;
        assert_eq!(
            (known.status.as_u16(), &known.body),
            (200, &missing.body),
            "{path}"
        );
    }
}

#[tokio::test]
async fn five_failures_lock_an_account_for_fifteen_minutes() {
    let app = App::new().await;
    let id = app.verified_user("carol", "carol-password").await;
    for _ in 0..5 {
        app.login("carol", "nope-nope")
            .await
            .assert_error(401, "invalid_credentials");
    }
    // Locked: even the right password is refused, whatever the address.
    app.login("carol", "carol-password")
        .await
        .assert_error(429, "account_locked");
    app.post_public(
        "/api/auth/login",
        json!({"email": "carol@example.com", "password": "carol-password"}),
    )
    .await
    .assert_error(429, "account_locked");
    // Fifteen minutes later the lock is gone.
    app.state
        .mongo
        .auth
        .collection::<bson::Document>("login_failures")
        .update_one(
            doc! {"_id": format!("user:{id}")},
            doc! {"$set": {"locked_until": bson::DateTime::from_millis(0)}},
        )
        .await
        .unwrap();
    assert_eq!(app.login("carol", "carol-password").await.status, 200);
    // Unknown names lock the same way, so a lock says nothing either.
    for _ in 0..5 {
        app.login("mallory", "x-x-x-x-x").await;
    }
    app.login("mallory", "x-x-x-x-x")
        .await
        .assert_error(429, "account_locked");
}

#[tokio::test]
async fn verification_codes_are_hashed_expire_and_allow_five_attempts() {
    let app = App::new().await;
    app.signup("dave", "dave-password").await;
    let code = app.code_for("dave@example.com", 0).await;
    let stored = app
        .state
        .mongo
        .auth
        .collection::<bson::Document>("email_codes")
        .find_one(doc! {"email": "dave@example.com"})
        .await
        .unwrap()
        .unwrap();
    assert!(
        !stored.to_string().contains(&code),
        "the code is stored in the clear: {stored}"
    );
    // The code works only with its own email.
    app.verified_user("erin", "erin-password").await;
    app.post_public(
        "/api/auth/verify-email",
        json!({"email": "erin@example.com", "code": code}),
    )
    .await
    .assert_error(400, "invalid_code");
    // Five wrong tries spend the code.
    let wrong = if code == "000000" { "111111" } else { "000000" };
    for _ in 0..4 {
        app.post_public(
            "/api/auth/verify-email",
            json!({"email": "dave@example.com", "code": wrong}),
        )
        .await
        .assert_error(400, "invalid_code");
    }
    app.post_public(
        "/api/auth/verify-email",
        json!({"email": "dave@example.com", "code": wrong}),
    )
    .await;
    app.post_public(
        "/api/auth/verify-email",
        json!({"email": "dave@example.com", "code": code}),
    )
    .await
    .assert_error(400, "invalid_code");
    // A new code (resend) works, but not once expired.
    let fresh = app.resend_code("dave@example.com", 1).await;
    app.state
        .mongo
        .auth
        .collection::<bson::Document>("email_codes")
        .update_many(
            doc! {"email": "dave@example.com"},
            doc! {"$set": {"expires_at": bson::DateTime::now()}},
        )
        .await
        .unwrap();
    app.post_public(
        "/api/auth/verify-email",
        json!({"email": "dave@example.com", "code": fresh}),
    )
    .await
    .assert_error(400, "invalid_code");
}

#[tokio::test]
async fn a_reused_refresh_token_revokes_its_whole_family() {
    let app = App::new().await;
    app.verified_user("frank", "frank-password").await;
    let first = app.login("frank", "frank-password").await.body["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let rotated = app
        .post_public("/api/auth/refresh", json!({"refreshToken": first}))
        .await;
    assert_eq!(rotated.status, 200, "{}", rotated.body);
    let second = rotated.body["refreshToken"].as_str().unwrap().to_owned();
    assert_ne!(first, second);
    assert!(rotated.body["accessToken"].is_string());
    // The thief (or the victim) presents the used token again...
    app.post_public("/api/auth/refresh", json!({"refreshToken": first}))
        .await
        .assert_error(401, "token_reused");
    // ...and the whole family is dead, the newest token included.
    app.post_public("/api/auth/refresh", json!({"refreshToken": second}))
        .await
        .assert_error(401, "token_reused");
    // An access token is not a refresh token.
    let access = app.login("frank", "frank-password").await.body["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    app.post_public("/api/auth/refresh", json!({"refreshToken": access}))
        .await
        .assert_error(401, "invalid_token");
}

#[tokio::test]
async fn logout_and_logout_all_revoke_refresh_tokens() {
    let app = App::new().await;
    app.verified_user("gina", "gina-password").await;
    let a = app.login("gina", "gina-password").await;
    let b = app.login("gina", "gina-password").await;
    let c = app.login("gina", "gina-password").await;
    let token = |r: &TestResponse, k: &str| r.body[k].as_str().unwrap().to_owned();
    assert_eq!(
        app.post_public(
            "/api/auth/logout",
            json!({"refreshToken": token(&a, "refreshToken")})
        )
        .await
        .status,
        200
    );
    app.post_public(
        "/api/auth/refresh",
        json!({"refreshToken": token(&a, "refreshToken")}),
    )
    .await
    .assert_error(401, "token_reused");
    let res = app
        .send(
            "POST",
            "/api/auth/logout-all",
            &token(&b, "accessToken"),
            None,
        )
        .await;
    assert_eq!(res.status, 200);
    for r in [&b, &c] {
        assert_eq!(
            app.post_public(
                "/api/auth/refresh",
                json!({"refreshToken": token(r, "refreshToken")})
            )
            .await
            .status,
            401
        );
    }
}

#[tokio::test]
async fn password_reset_by_mailed_link_is_single_use_and_revokes_sessions() {
    let app = App::new().await;
    app.verified_user("hank", "hank-password").await;
    let session = app.login("hank", "hank-password").await.body["refreshToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.post_public(
            "/api/auth/forgot-password",
            json!({"email": "hank@example.com"})
        )
        .await
        .status,
        200
    );
    let mail = app.smtp.wait_for("hank@example.com", 1).await;
    assert!(
        mail.data.contains("http://app.test/reset-password?token="),
        "{}",
        mail.data
    );
    let token = mail.reset_token().unwrap();
    app.post_public(
        "/api/auth/reset-password",
        json!({"token": token, "newPassword": "short"}),
    )
    .await
    .assert_error(400, "invalid_input");
    let res = app
        .post_public(
            "/api/auth/reset-password",
            json!({"token": token, "newPassword": "brand-new-password"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    app.post_public(
        "/api/auth/reset-password",
        json!({"token": token, "newPassword": "another-password"}),
    )
    .await
    .assert_error(400, "invalid_token");
    app.post_public("/api/auth/refresh", json!({"refreshToken": session}))
        .await
        .assert_error(401, "token_reused");
    app.login("hank", "hank-password")
        .await
        .assert_error(401, "invalid_credentials");
    assert_eq!(app.login("hank", "brand-new-password").await.status, 200);
}

#[tokio::test]
async fn change_password_needs_the_current_one_and_keeps_only_this_session() {
    let app = App::new().await;
    app.verified_user("ivy", "ivy-password").await;
    let mine = app.login("ivy", "ivy-password").await;
    let other = app.login("ivy", "ivy-password").await;
    let access = mine.body["accessToken"].as_str().unwrap().to_owned();
    let keep = mine.body["refreshToken"].as_str().unwrap().to_owned();
    app.send(
        "POST",
        "/api/profile/change-password",
        &access,
        Some(json!({"currentPassword": "wrong-one", "newPassword": "ivy-new-password"})),
    )
    .await
    .assert_error(401, "invalid_credentials");
    let res = app
        .send(
            "POST",
            "/api/profile/change-password",
            &access,
            Some(json!({"currentPassword": "ivy-password", "newPassword": "ivy-new-password", "refreshToken": keep})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.body["accessToken"].is_string() && res.body["refreshToken"].is_string());
    assert_eq!(
        app.post_public("/api/auth/refresh", json!({"refreshToken": keep}))
            .await
            .status,
        200
    );
    let other_refresh = other.body["refreshToken"].as_str().unwrap();
    assert_eq!(
        app.post_public("/api/auth/refresh", json!({"refreshToken": other_refresh}))
            .await
            .status,
        401
    );
    assert_eq!(app.login("ivy", "ivy-new-password").await.status, 200);
}

#[tokio::test]
async fn a_role_change_or_a_disabled_account_takes_effect_at_the_next_refresh() {
    let app = App::new().await;
    let admin = app.admin_token().await;
    let id = app.verified_user("jack", "jack-password").await;
    let session = app.login("jack", "jack-password").await;
    let refresh = session.body["refreshToken"].as_str().unwrap().to_owned();
    let res = app
        .send(
            "PATCH",
            &format!("/api/admin/users/{id}"),
            &admin,
            Some(json!({"role": "supervisor"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["user"]["role"], "supervisor");
    let rotated = app
        .post_public("/api/auth/refresh", json!({"refreshToken": refresh}))
        .await;
    let claims = testing::jwt_keys()
        .verify_access(rotated.body["accessToken"].as_str().unwrap())
        .unwrap();
    assert_eq!(claims.role, Role::Supervisor);
    app.send(
        "PATCH",
        &format!("/api/admin/users/{id}"),
        &admin,
        Some(json!({"disabled": true})),
    )
    .await;
    let next = rotated.body["refreshToken"].as_str().unwrap();
    app.post_public("/api/auth/refresh", json!({"refreshToken": next}))
        .await
        .assert_error(401, "account_disabled");
    app.login("jack", "jack-password")
        .await
        .assert_error(403, "account_disabled");
}

#[tokio::test]
async fn an_admin_cannot_delete_themselves_or_the_last_admin() {
    let app = App::new().await;
    let admin = app.admin_token().await;
    let root_id = testing::jwt_keys().verify_access(&admin).unwrap().sub;
    app.send(
        "DELETE",
        &format!("/api/admin/users/{root_id}"),
        &admin,
        None,
    )
    .await
    .assert_error(422, "cannot_delete_self");
    app.send(
        "PATCH",
        &format!("/api/admin/users/{root_id}"),
        &admin,
        Some(json!({"role": "enduser"})),
    )
    .await
    .assert_error(422, "last_admin");
    // Two admins deleting each other at once: exactly one goes.
    let second = app
        .send(
            "POST",
            "/api/admin/users",
            &admin,
            Some(json!({"username": "second", "email": "second@example.com", "password": "second-password", "role": "admin", "verified": true})),
        )
        .await;
    assert_eq!(second.status, 201, "{}", second.body);
    let second_id = second.body["user"]["id"].as_str().unwrap().to_owned();
    let second_token = app.login("second", "second-password").await.body["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    let (delete_second, delete_root) = (
        format!("/api/admin/users/{second_id}"),
        format!("/api/admin/users/{root_id}"),
    );
    let (a, b) = tokio::join!(
        app.send("DELETE", &delete_second, &admin, None),
        app.send("DELETE", &delete_root, &second_token, None),
    );
    let mut statuses = [a.status.as_u16(), b.status.as_u16()];
    statuses.sort();
    assert_eq!(statuses, [204, 422], "{} {}", a.body, b.body);
    let admins = app
        .state
        .store
        .users()
        .count_documents(doc! {"role": "admin"})
        .await
        .unwrap();
    assert_eq!(admins, 1);
}

#[tokio::test]
async fn concurrent_signups_with_one_name_have_one_winner() {
    let app = App::new().await;
    let attempts: Vec<_> = (0..8)
        .map(|i| {
            let router = app.router.clone();
            tokio::spawn(async move {
                let body = json!({"username": if i % 2 == 0 { "Same" } else { "same" }, "email": format!("s{i}@example.com"), "password": "same-password"});
                call(&router, "POST", "/api/auth/signup", Some(body), None).await.status.as_u16()
            })
        })
        .collect();
    let mut statuses = Vec::new();
    for a in attempts {
        statuses.push(a.await.unwrap());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 409).count(),
        7,
        "{statuses:?}"
    );
}

#[tokio::test]
async fn a_mail_server_that_is_down_does_not_lose_the_account() {
    let app = App::new().await;
    let dead = auth::AppState {
        mailer: Mailer::new(&smtp_config(1), "http://app.test").unwrap(),
        ..app.state.clone()
    };
    let res = call(
        &auth::router(dead),
        "POST",
        "/api/auth/signup",
        Some(json!({"username": "kim", "email": "kim@example.com", "password": "kim-password"})),
        None,
    )
    .await;
    assert_eq!(res.status, 201, "{}", res.body);
    // Later the user asks again, and this time the mail arrives.
    let code = app.resend_code("kim@example.com", 0).await;
    assert_eq!(
        app.post_public(
            "/api/auth/verify-email",
            json!({"email": "kim@example.com", "code": code})
        )
        .await
        .status,
        200
    );
}

#[tokio::test]
async fn bad_input_is_a_400_naming_the_field() {
    let app = App::new().await;
    let long = "x".repeat(300);
    for (body, field) in [
        (
            json!({"email": "a@b.io", "password": "12345678"}),
            "username",
        ),
        (
            json!({"username": 5, "email": "a@b.io", "password": "12345678"}),
            "username",
        ),
        (
            json!({"username": "ab", "email": "a@b.io", "password": "12345678"}),
            "username",
        ),
        (
            json!({"username": long, "email": "a@b.io", "password": "12345678"}),
            "username",
        ),
        (
            json!({"username": "abc", "email": "not-an-email", "password": "12345678"}),
            "email",
        ),
        (
            json!({"username": "abc", "email": "a@b.io", "password": "short"}),
            "password",
        ),
        (
            json!({"username": "abc", "email": "a@b.io", "password": "x".repeat(129)}),
            "password",
        ),
        (
            json!({"username": "abc", "email": "a@b.io", "password": "12345678", "admin": true}),
            "admin",
        ),
    ] {
        let res = app.post_public("/api/auth/signup", body).await;
        assert_eq!(res.status, 400, "{}", res.body);
        assert!(
            res.body["message"].as_str().unwrap().contains(field),
            "{field}: {}",
            res.body
        );
    }
    let res = app
        .post_public("/api/auth/login", json!({"password": "x"}))
        .await;
    assert!(
        res.body["message"].as_str().unwrap().contains("username"),
        "{}",
        res.body
    );
    // Malformed JSON.
    use tower::ServiceExt;
    let req = axum::http::Request::post("/api/auth/login")
        .header("content-type", "application/json")
        .body(axum::body::Body::from("{\"username\": "))
        .unwrap();
    let res = app.router.clone().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 400);
}

#[tokio::test]
async fn the_first_admin_is_created_once() {
    let app = App::new().await;
    let admin = AdminBootstrap {
        username: "boss".into(),
        email: "Boss@Example.com".into(),
        password: Secret::new("boss-password"),
    };
    let (a, b) = tokio::join!(
        auth::bootstrap::ensure_first_admin(&app.state.store, &admin),
        auth::bootstrap::ensure_first_admin(&app.state.store, &admin),
    );
    let mut outcomes = [a.unwrap(), b.unwrap()];
    outcomes.sort_by_key(|o| *o == auth::bootstrap::Bootstrap::Existed);
    assert_eq!(
        outcomes,
        [
            auth::bootstrap::Bootstrap::Created,
            auth::bootstrap::Bootstrap::Existed
        ]
    );
    let again = auth::bootstrap::ensure_first_admin(&app.state.store, &admin)
        .await
        .unwrap();
    assert_eq!(again, auth::bootstrap::Bootstrap::Existed);
    let res = app.login("boss", "boss-password").await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["user"]["role"], "admin");
}

#[tokio::test]
async fn profile_changes_check_uniqueness_and_reverify_a_new_email() {
    let app = App::new().await;
    app.verified_user("liam", "liam-password").await;
    app.verified_user("mia", "mia-password").await;
    let token = app.token_of("liam", "liam-password").await;
    app.send(
        "PUT",
        "/api/profile",
        &token,
        Some(json!({"username": "MIA"})),
    )
    .await
    .assert_error(409, "username_taken");
    app.send(
        "PUT",
        "/api/profile",
        &token,
        Some(json!({"email": "MIA@example.com", "currentPassword": "liam-password"})),
    )
    .await
    .assert_error(409, "email_taken");
    let res = app
        .send(
            "PUT",
            "/api/profile",
            &token,
            Some(json!({"email": "liam.new@example.com", "currentPassword": "liam-password"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // The new address is pending until its code is entered.
    assert_eq!(res.body["user"]["email"], "liam@example.com");
    assert_eq!(res.body["user"]["pendingEmail"], "liam.new@example.com");
    assert_eq!(res.body["user"]["isVerified"], true);
    let code = app.code_for("liam.new@example.com", 0).await;
    assert_eq!(
        app.post_public(
            "/api/auth/verify-email",
            json!({"email": "liam.new@example.com", "code": code})
        )
        .await
        .status,
        200
    );
    let profile = app.send("GET", "/api/profile", &token, None).await;
    assert_eq!(profile.body["user"]["email"], "liam.new@example.com");
    assert_eq!(profile.body["user"]["pendingEmail"], json!(null));
}

#[tokio::test]
async fn admins_list_and_manage_users_and_supervisors_only_read() {
    let app = App::new().await;
    let admin = app.admin_token().await;
    for name in ["nina", "noah", "olga"] {
        app.verified_user(name, "long-password").await;
    }
    let res = app
        .send("GET", "/api/admin/users?search=NO&limit=10", &admin, None)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let names: Vec<&str> = res.body["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["username"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["noah"]);
    let page = app
        .send("GET", "/api/admin/users?limit=2&page=2", &admin, None)
        .await;
    assert_eq!(
        (
            page.body["total"].as_u64(),
            page.body["users"].as_array().unwrap().len()
        ),
        (Some(4), 2)
    );
    let admins = app
        .send("GET", "/api/admin/users?role=admin", &admin, None)
        .await;
    assert_eq!(admins.body["total"], 1);
    app.send("GET", "/api/admin/users?role=king", &admin, None)
        .await
        .assert_error(400, "invalid_input");
    let id = app
        .state
        .store
        .user_by_username("nina")
        .await
        .unwrap()
        .unwrap()
        .id;
    app.send(
        "PATCH",
        &format!("/api/admin/users/{id}"),
        &admin,
        Some(json!({"role": "supervisor"})),
    )
    .await;
    let supervisor = app.login("nina", "long-password").await.body["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(
        app.send("GET", "/api/admin/users", &supervisor, None)
            .await
            .status,
        200
    );
    assert_eq!(
        app.send("GET", &format!("/api/admin/users/{id}"), &supervisor, None)
            .await
            .status,
        200
    );
    app.send("POST", "/api/admin/users", &supervisor, Some(json!({"username": "zed", "email": "z@example.com", "password": "12345678", "role": "enduser"})))
        .await
        .assert_error(403, "forbidden");
    app.send(
        "DELETE",
        &format!("/api/admin/users/{id}"),
        &supervisor,
        None,
    )
    .await
    .assert_error(403, "forbidden");
    let user = app.login("olga", "long-password").await.body["accessToken"]
        .as_str()
        .unwrap()
        .to_owned();
    app.send("GET", "/api/admin/users", &user, None)
        .await
        .assert_error(403, "forbidden");
    let noah = app
        .state
        .store
        .user_by_username("noah")
        .await
        .unwrap()
        .unwrap()
        .id;
    assert_eq!(
        app.send("DELETE", &format!("/api/admin/users/{noah}"), &admin, None)
            .await
            .status,
        204
    );
    app.send("GET", &format!("/api/admin/users/{noah}"), &admin, None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn the_consoles_language_is_kept_on_the_profile_for_mail() {
    let app = App::new().await;
    app.verified_user("noor", "noor-password").await;
    let token = app.token_of("noor", "noor-password").await;
    let res = app
        .send("PUT", "/api/profile", &token, Some(json!({"locale": "fr"})))
        .await;
    res.assert_error(400, "invalid_input");
    assert_eq!(res.body["field"], "locale");
    let res = app
        .send(
            "PUT",
            "/api/profile",
            &token,
            Some(json!({"locale": "zh-TW"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let locale: String =
        sqlx::query_scalar("SELECT locale FROM user_accounts WHERE username = 'noor'")
            .fetch_one(&app.pg.pool)
            .await
            .unwrap();
    assert_eq!(
        locale, "zh-TW",
        "the ledger's record, which the job's mail reads"
    );
}
