//! The auth function in-process for tests: a real MongoDB wire-protocol
//! server and a real SMTP server the tests read mail from, exactly as a
//! user would.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.
#![allow(dead_code)]

use std::time::Duration;

use auth::mail::Mailer;
use auth::store::AuthStore;
use bson::doc;
use serde_json::json;
use shared::config::{SmtpConfig, SmtpTls};
use shared::db::mongo::IndexGuard;
use shared::testing::{self, TestClient, TestMongo, TestPostgres, TestResponse, TestSmtp};

pub struct App {
    pub client: TestClient,
    pub state: auth::AppState,
    pub smtp: TestSmtp,
    pub mongo: TestMongo,
    pub pg: TestPostgres,
}

impl std::ops::Deref for App {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

pub fn smtp_config(port: u16) -> SmtpConfig {
    SmtpConfig {
        host: "127.0.0.1".into(),
        port,
        username: None,
        password: None,
        tls: SmtpTls::None,
        from: "gateway@example.com".into(),
    }
}

impl App {
    pub async fn new() -> App {
        App::on(TestMongo::new().await, Duration::from_millis(100)).await
    }

    /// The function on `mongo`, answering mail routes after `mail_floor`.
    pub async fn on(mongo: TestMongo, mail_floor: Duration) -> App {
        let (smtp, pg) = tokio::join!(TestSmtp::start(), TestPostgres::new());
        let state = auth::AppState {
            jwt: testing::jwt_keys(),
            store: AuthStore::new(mongo.stores.auth.clone()),
            indexes: IndexGuard::new(mongo.stores.clone(), true, false),
            mongo: mongo.stores.clone(),
            pg: pg.pool.clone(),
            mailer: Mailer::new(&smtp_config(smtp.port), "http://app.test").unwrap(),
            mail_floor,
        };
        App {
            client: TestClient::new(auth::router(state.clone())),
            state,
            smtp,
            mongo,
            pg,
        }
    }

    /// Signs up `username` with `{username}@example.com` (not verified).
    pub async fn signup(&self, username: &str, password: &str) -> TestResponse {
        let email = format!("{username}@example.com");
        self.post_public(
            "/api/auth/signup",
            json!({"username": username, "email": email, "password": password}),
        )
        .await
    }

    /// The code in the `nth` mail to `email`.
    pub async fn code_for(&self, email: &str, nth: usize) -> String {
        self.smtp
            .wait_for(email, nth)
            .await
            .code()
            .expect("a code in the mail")
    }

    /// Signs up, reads the code from the mail and verifies; returns the user id.
    pub async fn verified_user(&self, username: &str, password: &str) -> String {
        let email = format!("{username}@example.com");
        let res = self.signup(username, password).await;
        assert_eq!(res.status, 201, "{}", res.body);
        let code = self.code_for(&email, 0).await;
        let res = self
            .post_public(
                "/api/auth/verify-email",
                json!({"email": email, "code": code}),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        self.state
            .store
            .user_by_email(&email)
            .await
            .unwrap()
            .unwrap()
            .id
    }

    /// Lets a minute pass for the mail throttle: the next code or reset
    /// mail to any address may go out.
    pub async fn pass_mail_pause(&self) {
        self.state
            .mongo
            .auth
            .collection::<bson::Document>("mail_throttle")
            .update_many(
                doc! {},
                doc! {"$set": {"until": bson::DateTime::from_millis(0)}},
            )
            .await
            .unwrap();
    }

    /// Asks for a new code once the resend pause is over and reads the
    /// `nth` mail to `email`.
    pub async fn resend_code(&self, email: &str, nth: usize) -> String {
        self.pass_mail_pause().await;
        self.post_public("/api/auth/resend-verification", json!({"email": email}))
            .await;
        self.smtp.wait_for(email, nth).await.code().expect("a code")
    }

    pub async fn login(&self, username: &str, password: &str) -> TestResponse {
        self.post_public(
            "/api/auth/login",
            json!({"username": username, "password": password}),
        )
        .await
    }

    /// An access token of `username` (which must be able to sign in).
    pub async fn token_of(&self, username: &str, password: &str) -> String {
        let res = self.login(username, password).await;
        assert_eq!(res.status, 200, "{}", res.body);
        res.body["accessToken"].as_str().unwrap().to_owned()
    }

    /// The mails to `to` so far.
    pub fn mails_to(&self, to: &str) -> Vec<shared::testing::ReceivedMail> {
        self.smtp
            .mails()
            .into_iter()
            .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
            .collect()
    }

    pub async fn admin_token(&self) -> String {
        let id = self.verified_user("root", "root-password").await;
        self.state
            .store
            .update_user(&id, doc! {"role": "admin"})
            .await
            .unwrap();
        self.login("root", "root-password").await.body["accessToken"]
            .as_str()
            .unwrap()
            .to_owned()
    }
}
