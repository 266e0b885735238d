//! Route helpers the scenarios call instead of spelling out requests: one
//! per method, and the steps journeys repeat (sync and open a chatflow,
//! grant credits, read a balance, predict, stream).

use reqwest::Method;
use serde_json::{json, Value};

use crate::Stack;

impl Stack {
    /// `GET path` on `function` with `token`.
    pub async fn get(&self, function: &str, path: &str, token: &str) -> (u16, Value) {
        self.request(Method::GET, function, path, Some(token), None)
            .await
    }

    /// `GET path` on `function` without a token.
    pub async fn get_public(&self, function: &str, path: &str) -> (u16, Value) {
        self.request(Method::GET, function, path, None, None).await
    }

    /// `POST path` on `function` with `token` and a JSON body.
    pub async fn post(&self, function: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.request(Method::POST, function, path, Some(token), Some(body))
            .await
    }

    /// `POST path` on `function` with a JSON body and no token.
    pub async fn post_public(&self, function: &str, path: &str, body: Value) -> (u16, Value) {
        self.request(Method::POST, function, path, None, Some(body))
            .await
    }

    /// `PUT path` on `function` with `token` and a JSON body.
    pub async fn put(&self, function: &str, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.request(Method::PUT, function, path, Some(token), Some(body))
            .await
    }

    /// `PATCH path` on `function` with `token` and a JSON body.
    pub async fn patch(
        &self,
        function: &str,
        path: &str,
        token: &str,
        body: Value,
    ) -> (u16, Value) {
        self.request(Method::PATCH, function, path, Some(token), Some(body))
            .await
    }

    /// Signs `username` up with `{username}@example.com` and `password`
    /// through the auth function, enters the mailed code and signs in:
    /// (the user's id, an access token).
    pub async fn signed_up(&self, username: &str, password: &str) -> (String, String) {
        let email = format!("{username}@example.com");
        let body = json!({"username": username, "email": email, "password": password});
        let (status, made) = self.post_public("auth", "/api/auth/signup", body).await;
        assert_eq!(status, 201, "{made}");
        let mails = self
            .smtp
            .mails()
            .iter()
            .filter(|m| m.to.contains(&email))
            .count();
        let code = self
            .smtp
            .wait_for(&email, mails.saturating_sub(1))
            .await
            .code();
        let code = code.expect("a code in the mail");
        let proof = json!({"email": email, "code": code});
        let (status, body) = self
            .post_public("auth", "/api/auth/verify-email", proof)
            .await;
        assert_eq!(status, 200, "{body}");
        let login = json!({"username": username, "password": password});
        let (status, body) = self.post_public("auth", "/api/auth/login", login).await;
        assert_eq!(status, 200, "{body}");
        let token = body["accessToken"].as_str().unwrap_or_default().to_owned();
        (
            made["userId"].as_str().unwrap_or_default().to_owned(),
            token,
        )
    }

    /// Makes an API key through the auth function (which checks the
    /// owner's `password`) with `body`'s fields: (the key, its id).
    pub async fn make_key(&self, token: &str, password: &str, mut body: Value) -> (String, String) {
        body["currentPassword"] = json!(password);
        let (status, made) = self.post("auth", "/api/keys", token, body).await;
        assert_eq!(status, 201, "{made}");
        let field = |name: &str| made[name].as_str().unwrap_or_default().to_owned();
        (field("key"), field("id"))
    }

    /// The admin syncs the catalogue from Flowise; returns the report.
    pub async fn sync_chatflows(&self, admin: &str) -> Value {
        let (status, body) = self
            .request(
                Method::POST,
                "predict",
                "/api/v1/admin/chatflows/sync",
                Some(admin),
                None,
            )
            .await;
        assert_eq!(status, 200, "sync: {body}");
        body
    }

    /// The admin opens `chatflow` to everyone, with `pricing` when given.
    pub async fn open_chatflow(&self, admin: &str, chatflow: &str, pricing: Option<Value>) {
        let mut body = json!({"isPublic": true});
        if let Some(pricing) = pricing {
            body["pricing"] = pricing;
        }
        let path = format!("/api/v1/admin/chatflows/{chatflow}");
        let (status, answer) = self.put("predict", &path, admin, body).await;
        assert_eq!(status, 200, "open {chatflow}: {answer}");
    }

    /// The admin grants `user` credits (30 days); returns the answer.
    pub async fn allocate(&self, admin: &str, user: &str, credits: i64) -> Value {
        let body = json!({"userId": user, "credits": credits});
        let (status, answer) = self
            .post("credits", "/api/credits/allocate", admin, body)
            .await;
        assert_eq!(status, 201, "allocate: {answer}");
        answer
    }

    /// The caller's spendable credits.
    pub async fn balance(&self, token: &str) -> i64 {
        let (status, body) = self
            .get("credits", "/api/credits/total-balance", token)
            .await;
        assert_eq!(status, 200, "balance: {body}");
        body["totalCredits"].as_i64().expect("a total")
    }

    /// A buffered prediction.
    pub async fn predict(&self, token: &str, body: Value) -> (u16, Value) {
        self.post("predict", "/api/v1/chat/predict", token, body)
            .await
    }

    /// Opens a streamed prediction (with extra headers) on the streaming
    /// function's URL.
    pub async fn open_stream(
        &self,
        token: &str,
        body: &Value,
        headers: &[(&str, &str)],
    ) -> reqwest::Response {
        let mut req = self
            .http
            .post(self.url("predict-stream", "/api/v1/chat/predict/stream"))
            .bearer_auth(token)
            .json(body);
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        req.send().await.expect("the front answers")
    }
}
