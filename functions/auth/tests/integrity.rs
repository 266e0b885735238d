//! Attacks on identity and sign-in (issue 9), each sent to the served
//! function: taking an address one does not own, reviving dead links and
//! codes, racing the limits, mail as a weapon, and the first admin.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use std::time::{Duration, Instant};

use bson::doc;
use common::App;
use serde_json::{json, Value};
use shared::config::{AdminBootstrap, Secret};
use shared::testing::{self, call, TestMongo};
use shared::token::Role;

async fn change_email(app: &App, token: &str, email: &str) -> shared::testing::TestResponse {
    app.send(
        "PUT",
        "/api/profile",
        token,
        Some(json!({"email": email, "currentPassword": "liam-password"})),
    )
    .await
}

/// Asks for `email` as the new address and reads the code mailed to it.
async fn pending_code(app: &App, token: &str, email: &str) -> String {
    let res = change_email(app, token, email).await;
    assert_eq!(res.status, 200, "{}", res.body);
    app.code_for(email, 0).await
}

async fn profile(app: &App, token: &str) -> Value {
    app.send("GET", "/api/profile", token, None).await.body["user"].clone()
}

async fn verify(app: &App, email: &str, code: &str) -> shared::testing::TestResponse {
    app.post_public(
        "/api/auth/verify-email",
        json!({"email": email, "code": code}),
    )
    .await
}

fn claims_email(token: &str) -> String {
    testing::jwt_keys().verify_access(token).unwrap().email
}

#[tokio::test]
async fn an_email_change_needs_the_password_and_counts_only_once_proven() {
    let app = App::new().await;
    app.verified_user("liam", "liam-password").await;
    let token = app.token_of("liam", "liam-password").await;
    // No password, a wrong one: 400 and 401, and nothing changes.
    app.send(
        "PUT",
        "/api/profile",
        &token,
        Some(json!({"email": "liam@new.example"})),
    )
    .await
    .assert_error(400, "invalid_input");
    app.send(
        "PUT",
        "/api/profile",
        &token,
        Some(json!({"email": "liam@new.example", "currentPassword": "guess-guess"})),
    )
    .await
    .assert_error(401, "invalid_credentials");
    assert_eq!(profile(&app, &token).await["pendingEmail"], json!(null));
    assert!(app.mails_to("liam@new.example").is_empty());

    let res = change_email(&app, &token, "liam@new.example").await;
    assert_eq!(res.status, 200, "{}", res.body);
    // The old address is told, the new one gets the code.
    let notice = app.smtp.wait_for("liam@example.com", 1).await;
    assert!(notice.data.contains("liam@new.example"), "{}", notice.data);
    let code = app.code_for("liam@new.example", 0).await;
    // Until then the account is its proven address everywhere.
    app.post_public(
        "/api/auth/login",
        json!({"email": "liam@new.example", "password": "liam-password"}),
    )
    .await
    .assert_error(401, "invalid_credentials");
    let session = app.login("liam", "liam-password").await;
    assert_eq!(
        claims_email(session.body["accessToken"].as_str().unwrap()),
        "liam@example.com"
    );
    let refresh = session.body["refreshToken"].as_str().unwrap();
    let rotated = app
        .post_public("/api/auth/refresh", json!({"refreshToken": refresh}))
        .await;
    assert_eq!(
        claims_email(rotated.body["accessToken"].as_str().unwrap()),
        "liam@example.com"
    );
    // The code proves the new address.
    assert_eq!(verify(&app, "liam@new.example", &code).await.status, 200);
    let user = profile(&app, &token).await;
    assert_eq!(
        (user["email"].as_str(), user["pendingEmail"].is_null()),
        (Some("liam@new.example"), true)
    );
    let session = app
        .post_public(
            "/api/auth/login",
            json!({"email": "liam@new.example", "password": "liam-password"}),
        )
        .await;
    assert_eq!(
        claims_email(session.body["accessToken"].as_str().unwrap()),
        "liam@new.example"
    );
}

#[tokio::test]
async fn a_code_for_an_address_no_longer_pending_verifies_nothing() {
    let app = App::new().await;
    app.verified_user("liam", "liam-password").await;
    let token = app.token_of("liam", "liam-password").await;
    let first = pending_code(&app, &token, "first@new.example").await;
    let second = pending_code(&app, &token, "second@new.example").await;
    verify(&app, "first@new.example", &first)
        .await
        .assert_error(400, "invalid_code");
    assert_eq!(profile(&app, &token).await["email"], "liam@example.com");
    // Asking for the own address again cancels the pending change.
    change_email(&app, &token, "liam@example.com").await;
    verify(&app, "second@new.example", &second)
        .await
        .assert_error(400, "invalid_code");
    let user = profile(&app, &token).await;
    assert_eq!(
        (user["email"].as_str(), user["pendingEmail"].is_null()),
        (Some("liam@example.com"), true)
    );
}

#[tokio::test]
async fn a_pending_address_reserves_nothing_and_is_checked_again_when_confirmed() {
    let app = App::new().await;
    app.verified_user("liam", "liam-password").await;
    let token = app.token_of("liam", "liam-password").await;
    let code = pending_code(&app, &token, "wanted@example.com").await;
    // Someone else signs up with that address and proves it first.
    app.pass_mail_pause().await;
    app.signup("wanted", "wanted-password").await;
    let theirs = app.code_for("wanted@example.com", 1).await;
    assert_eq!(
        verify(&app, "wanted@example.com", &theirs).await.status,
        200
    );
    verify(&app, "wanted@example.com", &code)
        .await
        .assert_error(409, "email_taken");
    assert_eq!(profile(&app, &token).await["email"], "liam@example.com");
}

#[tokio::test]
async fn an_admin_verification_never_promotes_a_pending_address_and_tokens_carry_only_proven_ones()
{
    let app = App::new().await;
    let admin = app.admin_token().await;
    let id = app.verified_user("liam", "liam-password").await;
    let token = app.token_of("liam", "liam-password").await;
    change_email(&app, &token, "liam@new.example").await;
    let res = app
        .send(
            "PATCH",
            &format!("/api/admin/users/{id}"),
            &admin,
            Some(json!({"isVerified": true})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["user"]["email"], "liam@example.com");
    assert_eq!(res.body["user"]["pendingEmail"], "liam@new.example");
    // An address an admin marks unverified is in no new token.
    let session = app.login("liam", "liam-password").await;
    app.send(
        "PATCH",
        &format!("/api/admin/users/{id}"),
        &admin,
        Some(json!({"isVerified": false})),
    )
    .await;
    let refused = app
        .post_public(
            "/api/auth/refresh",
            json!({"refreshToken": session.body["refreshToken"]}),
        )
        .await;
    refused.assert_error(403, "email_not_verified");
    assert!(refused.body.get("email").is_none(), "{}", refused.body);
}

#[tokio::test]
async fn a_reset_link_for_an_address_that_left_the_account_is_dead() {
    let app = App::new().await;
    app.verified_user("liam", "liam-password").await;
    let token = app.token_of("liam", "liam-password").await;
    app.post_public(
        "/api/auth/forgot-password",
        json!({"email": "liam@example.com"}),
    )
    .await;
    let link = app
        .smtp
        .wait_for("liam@example.com", 1)
        .await
        .reset_token()
        .unwrap();
    let code = pending_code(&app, &token, "liam@new.example").await;
    assert_eq!(verify(&app, "liam@new.example", &code).await.status, 200);
    app.post_public(
        "/api/auth/reset-password",
        json!({"token": link, "newPassword": "taken-over-password"}),
    )
    .await
    .assert_error(400, "invalid_token");
    assert_eq!(app.login("liam", "liam-password").await.status, 200);
}

#[tokio::test]
async fn a_reset_proves_only_its_own_address_and_signs_in() {
    let app = App::new().await;
    // Signed up, never verified, and with a change to another address pending.
    app.signup("nora", "nora-password").await;
    let id = app
        .state
        .store
        .user_by_username("nora")
        .await
        .unwrap()
        .unwrap()
        .id;
    app.state
        .store
        .update_user(&id, doc! {"pending_email": "nora@elsewhere.example"})
        .await
        .unwrap();
    app.pass_mail_pause().await;
    app.post_public(
        "/api/auth/forgot-password",
        json!({"email": "nora@example.com"}),
    )
    .await;
    let link = app
        .smtp
        .wait_for("nora@example.com", 1)
        .await
        .reset_token()
        .unwrap();
    let res = app
        .post_public(
            "/api/auth/reset-password",
            json!({"token": link, "newPassword": "nora-new-password"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["user"]["email"], "nora@example.com");
    assert_eq!(
        claims_email(res.body["accessToken"].as_str().unwrap()),
        "nora@example.com"
    );
    let refreshed = app
        .post_public(
            "/api/auth/refresh",
            json!({"refreshToken": res.body["refreshToken"]}),
        )
        .await;
    assert_eq!(refreshed.status, 200, "{}", refreshed.body);
    let user = app.state.store.user_by_id(&id).await.unwrap().unwrap();
    assert!(user.is_verified);
    assert_eq!(user.email, "nora@example.com");
    assert_eq!(
        user.pending_email.as_deref(),
        Some("nora@elsewhere.example")
    );
}

#[tokio::test]
async fn thirty_concurrent_wrong_passwords_get_at_most_five_401s() {
    let app = App::new().await;
    app.verified_user("carol", "carol-password").await;
    let attempts = (0..30).map(|_| app.login("carol", "wrong-password"));
    let answers = futures_util::future::join_all(attempts).await;
    let unauthorized = answers.iter().filter(|r| r.status == 401).count();
    let limited = answers.iter().filter(|r| r.status == 429).count();
    assert!(
        (1..=5).contains(&unauthorized),
        "{unauthorized} answers of 401"
    );
    assert_eq!(unauthorized + limited, 30);
    assert!(answers
        .iter()
        .filter(|r| r.status == 429)
        .all(|r| r.headers.contains_key("retry-after")));
    // The right password is locked out too.
    app.login("carol", "carol-password")
        .await
        .assert_error(429, "account_locked");
}

#[tokio::test]
async fn fifty_concurrent_guesses_at_a_code_evaluate_at_most_five() {
    let app = App::new().await;
    app.signup("dave", "dave-password").await;
    let code = app.code_for("dave@example.com", 0).await;
    let wrong = if code == "000000" { "111111" } else { "000000" };
    let guesses = (0..50).map(|_| verify(&app, "dave@example.com", wrong));
    let answers = futures_util::future::join_all(guesses).await;
    assert!(
        answers.iter().all(|r| r.body["error"] == "invalid_code"),
        "a guess passed"
    );
    let stored = app
        .state
        .mongo
        .auth
        .collection::<bson::Document>("email_codes")
        .find_one(doc! {"email": "dave@example.com"})
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.get_i32("attempts").unwrap(), 5, "{stored}");
    // Spent: the right code no longer works.
    verify(&app, "dave@example.com", &code)
        .await
        .assert_error(400, "invalid_code");
    // Fifty copies of the right code verify once.
    let fresh = app.resend_code("dave@example.com", 1).await;
    let copies = (0..50).map(|_| verify(&app, "dave@example.com", &fresh));
    let answers = futures_util::future::join_all(copies).await;
    assert_eq!(answers.iter().filter(|r| r.status == 200).count(), 1);
}

#[tokio::test]
async fn twenty_wrong_codes_a_day_per_address_then_429() {
    let app = App::new().await;
    app.signup("erin", "erin-password").await;
    let mut code = app.code_for("erin@example.com", 0).await;
    for round in 0..4 {
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..5 {
            verify(&app, "erin@example.com", wrong)
                .await
                .assert_error(400, "invalid_code");
        }
        code = app.resend_code("erin@example.com", round + 1).await;
    }
    // Twenty wrong codes in a day: even the right one is refused now.
    let res = verify(&app, "erin@example.com", &code).await;
    res.assert_error(429, "too_many_attempts");
    assert!(res.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn twenty_wrong_codes_a_day_per_account_across_addresses_then_429() {
    let app = App::new().await;
    app.verified_user("liam", "liam-password").await;
    let token = app.token_of("liam", "liam-password").await;
    for n in 0..4 {
        let address = format!("try{n}@new.example");
        app.pass_mail_pause().await;
        let code = pending_code(&app, &token, &address).await;
        let wrong = if code == "000000" { "111111" } else { "000000" };
        for _ in 0..5 {
            verify(&app, &address, wrong).await;
        }
    }
    app.pass_mail_pause().await;
    let code = pending_code(&app, &token, "last@new.example").await;
    verify(&app, "last@new.example", &code)
        .await
        .assert_error(429, "too_many_attempts");
    assert_eq!(profile(&app, &token).await["email"], "liam@example.com");
}

#[tokio::test]
async fn a_lock_mails_its_owner_once_and_a_reset_lifts_it_and_signs_in() {
    let app = App::new().await;
    app.verified_user("carol", "carol-password").await;
    for _ in 0..8 {
        app.login("carol", "wrong-password").await;
    }
    app.login("carol", "carol-password")
        .await
        .assert_error(429, "account_locked");
    // One lock, one mail, with a reset link.
    let mail = app.smtp.wait_for("carol@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.mails_to("carol@example.com").len(), 2);
    let link = mail.reset_token().expect("a reset link in the lock mail");
    assert!(mail.data.contains("http://app.test/reset-password?token="));
    let res = app
        .post_public(
            "/api/auth/reset-password",
            json!({"token": link, "newPassword": "carol-new-password"}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.body["accessToken"].is_string() && res.body["refreshToken"].is_string());
    assert_eq!(app.login("carol", "carol-new-password").await.status, 200);
}

#[tokio::test]
async fn reset_and_code_mails_go_out_at_most_once_a_minute_per_address() {
    let app = App::new().await;
    app.verified_user("gus", "gus-password").await;
    let mut answers = Vec::new();
    for _ in 0..3 {
        answers.push(
            app.post_public(
                "/api/auth/forgot-password",
                json!({"email": "gus@example.com"}),
            )
            .await,
        );
    }
    // The signup code plus one reset mail.
    app.smtp.wait_for("gus@example.com", 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.mails_to("gus@example.com").len(), 2);
    let bodies: Vec<&Value> = answers.iter().map(|r| &r.body).collect();
    assert!(bodies.windows(2).all(|w| w[0] == w[1]));
    // Codes: the signup mail, then the resends of the same minute send nothing.
    app.signup("hal", "hal-password").await;
    for _ in 0..3 {
        let res = app
            .post_public(
                "/api/auth/resend-verification",
                json!({"email": "hal@example.com"}),
            )
            .await;
        assert_eq!(res.status, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(app.mails_to("hal@example.com").len(), 1);
}

async fn timed(app: &App, path: &str, email: &str) -> Duration {
    let started = Instant::now();
    let res = app.post_public(path, json!({ "email": email })).await;
    assert_eq!(res.status, 200, "{}", res.body);
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[tokio::test]
async fn known_and_unknown_addresses_answer_after_the_same_floor() {
    let floor = Duration::from_millis(400);
    let app = App::on(TestMongo::new().await, floor).await;
    app.verified_user("ivy", "ivy-password").await;
    app.signup("jon", "jon-password").await;
    for path in ["/api/auth/forgot-password", "/api/auth/resend-verification"] {
        let known = if path.contains("forgot") {
            "ivy@example.com"
        } else {
            "jon@example.com"
        };
        let (mut with, mut without) = (Vec::new(), Vec::new());
        for _ in 0..4 {
            app.pass_mail_pause().await;
            with.push(timed(&app, path, known).await);
            without.push(timed(&app, path, "nobody@example.com").await);
        }
        assert!(
            with.iter().chain(&without).all(|t| *t >= floor),
            "{path}: {with:?} {without:?}"
        );
        let (a, b) = (median(with.clone()), median(without.clone()));
        let gap = a.abs_diff(b);
        assert!(
            gap < Duration::from_millis(60),
            "{path}: known {with:?}, unknown {without:?}"
        );
    }
    // The known addresses really were mailed.
    assert!(app.mails_to("ivy@example.com").len() > 1);
    assert!(app.mails_to("jon@example.com").len() > 1);
}

#[tokio::test]
async fn disabling_deleting_or_demoting_ends_refresh_tokens_at_once() {
    let app = App::new().await;
    let admin = app.admin_token().await;
    let mut sessions = Vec::new();
    for name in ["kay", "lou", "max"] {
        let id = app.verified_user(name, "long-password").await;
        app.state
            .store
            .update_user(&id, doc! {"role": "supervisor"})
            .await
            .unwrap();
        let refresh = app.login(name, "long-password").await.body["refreshToken"]
            .as_str()
            .unwrap()
            .to_owned();
        sessions.push((id, refresh));
    }
    let changes = [
        ("PATCH", Some(json!({"role": "enduser"}))),
        ("PATCH", Some(json!({"disabled": true}))),
        ("DELETE", None),
    ];
    for ((id, refresh), (method, body)) in sessions.iter().zip(changes) {
        let res = app
            .send(method, &format!("/api/admin/users/{id}"), &admin, body)
            .await;
        assert!(res.status.is_success(), "{}", res.body);
        let res = app
            .post_public("/api/auth/refresh", json!({"refreshToken": refresh}))
            .await;
        assert_eq!(res.status, 401, "{method}: {}", res.body);
    }
}

#[tokio::test]
async fn the_first_admin_is_made_only_while_no_admin_exists_and_never_by_promotion() {
    let app = App::new().await;
    let boss = AdminBootstrap {
        username: "boss".into(),
        email: "boss@example.com".into(),
        password: Secret::new("boss-password"),
    };
    // An account already holds the address and no admin exists: refused.
    app.verified_user("squatter", "squatter-password").await;
    let squatter = AdminBootstrap {
        email: "squatter@example.com".into(),
        ..boss.clone()
    };
    assert_eq!(
        auth::bootstrap::ensure_first_admin(&app.state.store, &squatter)
            .await
            .unwrap(),
        auth::bootstrap::Bootstrap::Refused
    );
    let held = app
        .state
        .store
        .user_by_username("squatter")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(held.role, Role::Enduser);
    // Created once; deleted (by a second admin); not back at the next start.
    assert_eq!(
        auth::bootstrap::ensure_first_admin(&app.state.store, &boss)
            .await
            .unwrap(),
        auth::bootstrap::Bootstrap::Created
    );
    let first = app.token_of("boss", "boss-password").await;
    let second = app.verified_user("second", "second-password").await;
    app.send(
        "PATCH",
        &format!("/api/admin/users/{second}"),
        &first,
        Some(json!({"role": "admin"})),
    )
    .await;
    let second_token = app.token_of("second", "second-password").await;
    let boss_id = testing::jwt_keys().verify_access(&first).unwrap().sub;
    let res = app
        .send(
            "DELETE",
            &format!("/api/admin/users/{boss_id}"),
            &second_token,
            None,
        )
        .await;
    assert_eq!(res.status, 204, "{}", res.body);
    assert_eq!(
        auth::bootstrap::ensure_first_admin(&app.state.store, &boss)
            .await
            .unwrap(),
        auth::bootstrap::Bootstrap::Existed
    );
    app.login("boss", "boss-password")
        .await
        .assert_error(401, "invalid_credentials");
}

#[tokio::test]
async fn missing_indexes_keep_health_at_503_and_are_retried() {
    let mongo = TestMongo::without_indexes().await;
    let users = mongo.stores.auth.collection::<bson::Document>("users");
    // Two accounts with one address: the unique index cannot be built.
    for id in ["a", "b"] {
        users
            .insert_one(doc! {"_id": id, "email": "twin@example.com", "username_key": id})
            .await
            .unwrap();
    }
    let app = App::on(mongo, Duration::from_millis(100)).await;
    let health = call(&app.router, "GET", "/health", None, None).await;
    health.assert_error(503, "store_unavailable");
    // It names the index the duplicates block; the values only go to the
    // log (the probe is public).
    assert_eq!(
        health.body["stores"]["mongodbIndexes"],
        "duplicate values block the unique index users.email_unique"
    );
    assert!(health.body["message"].as_str().unwrap().contains("indexes"));
    assert!(
        !health.body.to_string().contains("twin@"),
        "{}",
        health.body
    );
    app.signup("pat", "pat-password")
        .await
        .assert_error(503, "store_unavailable");
    // Fixed by the operator: the next probe builds the indexes.
    users.delete_one(doc! {"_id": "b"}).await.unwrap();
    let health = call(&app.router, "GET", "/health", None, None).await;
    assert_eq!(health.status, 200, "{}", health.body);
    let signup = |name: &str| {
        app.post_public(
            "/api/auth/signup",
            json!({"username": name, "email": "pat@example.com", "password": "pat-password"}),
        )
    };
    assert_eq!(signup("pat").await.status, 201);
    signup("pat2").await.assert_error(409, "email_taken");
}

#[tokio::test]
async fn concurrent_cold_starts_on_empty_stores_make_one_admin_and_answer_healthy() {
    use shared::config::PostgresConfig;
    let (mongo, pg, smtp) = tokio::join!(
        shared::testing::TestMongo::without_indexes(),
        shared::testing::TestPostgres::new(),
        shared::testing::TestSmtp::start()
    );
    let config = auth::Config {
        jwt: shared::testing::jwt_config(),
        mongo: mongo.config.clone(),
        postgres: PostgresConfig {
            url: Secret::new(pg.url.clone()),
            password: None,
            max_connections: 2,
            migrate_on_start: false,
        },
        smtp: common::smtp_config(smtp.port),
        app_base_url: "http://app.test".into(),
        admin: Some(AdminBootstrap {
            username: "admin".into(),
            email: "admin@example.com".into(),
            password: Secret::new("change-me-please"),
        }),
        mail_floor: Duration::from_millis(100),
    };
    // Eight instances start at once, each answering its first request.
    let starts = (0..8).map(|_| async {
        let state = auth::AppState::connect(&config).await.unwrap();
        let router = auth::router(state);
        shared::testing::call(&router, "GET", "/health", None, None).await
    });
    for health in futures_util::future::join_all(starts).await {
        assert_eq!(health.status, 200, "{}", health.body);
    }
    let admins = mongo
        .stores
        .auth
        .collection::<bson::Document>("users")
        .count_documents(bson::doc! {"role": "admin"})
        .await
        .unwrap();
    assert_eq!(admins, 1);
}

/// The comparisons counted against `key` (`email:<address>` or
/// `user:<id>`) in the code window.
async fn code_comparisons(app: &App, key: &str) -> usize {
    app.state
        .mongo
        .auth
        .collection::<bson::Document>("code_attempts")
        .find_one(doc! {"_id": key})
        .await
        .unwrap()
        .and_then(|d| d.get_array("failures").ok().map(Vec::len))
        .unwrap_or(0)
}

#[tokio::test]
async fn a_guess_compared_with_several_accounts_codes_counts_once_for_each() {
    let app = App::new().await;
    let wanted = "wanted@example.com";
    // Three accounts asked to move to the address (a pending address
    // reserves nothing): each has a live code for it.
    for name in ["bob", "cat", "dan"] {
        app.verified_user(name, &format!("{name}-password")).await;
        let token = app.token_of(name, &format!("{name}-password")).await;
        app.pass_mail_pause().await;
        let body = json!({"email": wanted, "currentPassword": format!("{name}-password")});
        let res = app.send("PUT", "/api/profile", &token, Some(body)).await;
        assert_eq!(res.status, 200, "{}", res.body);
    }
    app.smtp.wait_for(wanted, 2).await;
    let key = format!("email:{wanted}");
    let guess = || verify(&app, wanted, "000000");
    guess().await.assert_error(400, "invalid_code");
    assert_eq!(code_comparisons(&app, &key).await, 3);
    for _ in 0..4 {
        guess().await.assert_error(400, "invalid_code");
    }
    assert_eq!(
        code_comparisons(&app, &key).await,
        15,
        "5 guesses, 3 codes each"
    );
    // Fresh codes, across resends: the address's 20 a day still hold.
    app.resend_code(wanted, 3).await;
    for _ in 0..5 {
        guess().await.assert_error(400, "invalid_code");
    }
    assert_eq!(code_comparisons(&app, &key).await, 20);
    app.resend_code(wanted, 4).await;
    guess().await.assert_error(429, "too_many_attempts");
}
