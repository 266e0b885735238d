//! The predict functions in-process for tests, against real PostgreSQL
//! and MongoDB and the Flowise double.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use axum::body::Body;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};
use shared::config::{FlowiseConfig, Limits, Secret};
use shared::db::mongo::IndexGuard;
use shared::flowise::FlowiseClient;
use shared::flowise_double::{Behaviour, FlowiseDouble};
use shared::testing::{self, TestClient, TestMongo, TestPostgres, TestResponse};
use shared::token::Role;
use tower::ServiceExt;

pub const ANSWER: &str = "Hello from the fake OpenAI server!";

/// The console's origin in these tests: the streaming function answers
/// its browsers' CORS.
pub const CONSOLE_ORIGIN: &str = "https://console.test";

fn console_cors() -> predict_stream::cors::Cors {
    predict_stream::cors::Cors::allowing([CONSOLE_ORIGIN]).unwrap()
}

pub struct App {
    pub client: TestClient,
    pub stream: Router,
    pub state: predict::AppState,
    pub flowise: FlowiseDouble,
    pub pg: TestPostgres,
    pub mongo: TestMongo,
}

impl std::ops::Deref for App {
    type Target = TestClient;
    fn deref(&self) -> &TestClient {
        &self.client
    }
}

pub fn flowise_config(url: &str) -> FlowiseConfig {
    FlowiseConfig {
        api_url: url.to_owned(),
        api_key: Some(Secret::new("flowise-key")),
        timeout: Duration::from_secs(3),
        first_byte_timeout: Duration::from_secs(1),
        buffered_timeout: Duration::from_secs(25),
    }
}

impl App {
    pub async fn new() -> App {
        let (pg, mongo) = tokio::join!(TestPostgres::new(), TestMongo::new());
        let flowise = FlowiseDouble::start().await;
        flowise.add_flow("flow-a", "Support bot", Behaviour::answer(ANSWER));
        let state = predict::AppState {
            jwt: testing::jwt_keys(),
            indexes: IndexGuard::new(mongo.stores.clone(), false, true),
            mongo: mongo.stores.clone(),
            pg: pg.pool.clone(),
            flowise: FlowiseClient::new(&flowise_config(&flowise.url)).unwrap(),
            limits: Limits {
                max_upload_bytes: 64 * 1024,
                reservation_ttl: Duration::from_secs(900),
                rate: shared::config::RateLimits {
                    per_minute: 10_000,
                    concurrent: 100,
                    running_for: Duration::from_secs(150),
                },
            },
        };
        let app = App {
            client: TestClient::new(predict::router(state.clone())),
            stream: predict_stream::router(state.clone(), console_cors()),
            state,
            flowise,
            pg,
            mongo,
        };
        // The admin syncs, makes flow-a public and prices it: 2 per request
        // plus 1 per output token.
        let admin = app.token("admin-1", Role::Admin);
        assert_eq!(
            app.send("POST", "/api/v1/admin/chatflows/sync", &admin, None)
                .await
                .status,
            200
        );
        let res = app
            .send(
                "PUT",
                "/api/v1/admin/chatflows/flow-a",
                &admin,
                Some(json!({"isPublic": true, "pricing": {"perRequest": 2, "perInputToken": 0, "perOutputToken": 1}})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
        app
    }

    /// Adds a chatflow to the double, syncs it, opens it to everyone and
    /// prices it: `per_request` plus `per_input` and `per_output` credits a
    /// token.
    pub async fn add_flow(
        &self,
        id: &str,
        behaviour: Behaviour,
        (per_request, per_input, per_output): (i64, f64, f64),
    ) {
        self.flowise.add_flow(id, id, behaviour);
        let admin = self.token("admin-1", Role::Admin);
        let sync = self
            .send("POST", "/api/v1/admin/chatflows/sync", &admin, None)
            .await;
        assert_eq!(sync.status, 200, "{}", sync.body);
        let pricing = json!({"perRequest": per_request, "perInputToken": per_input, "perOutputToken": per_output});
        let res = self
            .send(
                "PUT",
                &format!("/api/v1/admin/chatflows/{id}"),
                &admin,
                Some(json!({"isPublic": true, "pricing": pricing})),
            )
            .await;
        assert_eq!(res.status, 200, "{}", res.body);
    }

    /// Adds a chatflow to the double and syncs it, open to no one (only
    /// admins may use it); returns an admin's token.
    pub async fn add_private_flow(&self, id: &str) -> String {
        self.flowise
            .add_flow(id, "Finance bot", Behaviour::answer("ok"));
        let admin = self.token("admin-1", Role::Admin);
        let sync = self
            .send("POST", "/api/v1/admin/chatflows/sync", &admin, None)
            .await;
        assert_eq!(sync.status, 200, "{}", sync.body);
        admin
    }

    /// A key of `user` with `body`'s fields: (the secret, its id).
    pub async fn make_key(&self, user: &str, body: Value) -> (String, String) {
        let made = testing::make_key(&self.pg.pool, user, Role::Enduser, body).await;
        (made.key, made.id.to_string())
    }

    pub async fn grant(&self, user: &str, credits: i64) {
        testing::grant(&self.pg.pool, user, credits).await;
    }

    pub async fn balance(&self, user: &str) -> i64 {
        testing::balance(&self.pg.pool, user).await
    }

    pub async fn predict(&self, token: &str, body: Value) -> TestResponse {
        self.send("POST", "/api/v1/chat/predict", token, Some(body))
            .await
    }

    pub async fn active_reservations(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM streaming_sessions WHERE status = 'active'")
            .fetch_one(&self.pg.pool)
            .await
            .unwrap()
    }

    /// A buffered prediction with extra headers (an `Idempotency-Key`).
    pub async fn predict_with(
        &self,
        token: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        self.send_with(
            "POST",
            "/api/v1/chat/predict",
            Some(token),
            Some(body),
            headers,
        )
        .await
    }

    /// The credits function on the same database (the routes a client
    /// would use to settle a reservation).
    pub fn credits(&self) -> Router {
        credits::router(credits::AppState {
            jwt: testing::jwt_keys(),
            pg: self.pg.pool.clone(),
        })
    }

    /// Rows of `credit_transactions`, for checks that nothing changed.
    pub async fn ledger_rows(&self) -> i64 {
        sqlx::query_scalar("SELECT COUNT(*) FROM credit_transactions")
            .fetch_one(&self.pg.pool)
            .await
            .unwrap()
    }

    /// Whether the ledger's totals agree: every cached total equals the
    /// sum of its unexpired allocations and of its entries.
    pub async fn assert_ledger_consistent(&self) {
        let bad = testing::inconsistent_accounts(&self.pg.pool).await;
        assert_eq!(bad, 0, "an account's total disagrees with its ledger");
    }

    /// Opens a stream; returns the status and a reader of its frames.
    pub async fn open_stream(&self, token: &str, body: Value) -> (u16, axum::body::BodyDataStream) {
        self.open_stream_with(token, body, &[]).await
    }

    /// Opens a stream with extra headers.
    pub async fn open_stream_with(
        &self,
        token: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, axum::body::BodyDataStream) {
        self.open_stream_at("/api/v1/chat/predict/stream", token, body, headers)
            .await
    }

    /// Opens a streamed `/v1` completion.
    pub async fn open_completion(
        &self,
        key: &str,
        body: Value,
    ) -> (u16, axum::body::BodyDataStream) {
        self.open_stream_at("/v1/chat/completions", key, body, &[])
            .await
    }

    /// Opens a stream on the streaming function's `path`.
    async fn open_stream_at(
        &self,
        path: &str,
        token: &str,
        body: Value,
        headers: &[(&str, &str)],
    ) -> (u16, axum::body::BodyDataStream) {
        let mut req = axum::http::Request::post(path)
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json");
        for (name, value) in headers {
            req = req.header(*name, *value);
        }
        let req = req.body(Body::from(body.to_string())).unwrap();
        let res = self.stream.clone().oneshot(req).await.unwrap();
        (res.status().as_u16(), res.into_body().into_data_stream())
    }
}

/// The `data:` payloads of a streamed `/v1` completion, `[DONE]` as a
/// string.
pub fn completion_chunks(text: &str) -> Vec<Value> {
    text.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let data = frame.strip_prefix("data: ").expect("data: lines only");
            serde_json::from_str(data).unwrap_or_else(|_| json!(data))
        })
        .collect()
}

/// The text the content deltas of `chunks` delivered.
pub fn delivered(chunks: &[Value]) -> String {
    chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect()
}

/// Reads the frames until the stream ends, with arrival times.
pub async fn frames(mut body: axum::body::BodyDataStream) -> Vec<(String, Value, Instant)> {
    let mut reader = testing::SseFrames::default();
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        let now = Instant::now();
        out.extend(
            reader
                .push(&chunk.unwrap())
                .into_iter()
                .map(|(e, d)| (e, d, now)),
        );
    }
    out
}

/// Reads a stream chunk by chunk until a chunk brings `event` (or the
/// stream ends); returns every frame read.
pub async fn read_until(
    body: &mut axum::body::BodyDataStream,
    reader: &mut testing::SseFrames,
    event: &str,
) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    while let Some(chunk) = body.next().await {
        out.extend(reader.push(&chunk.unwrap()));
        if out.iter().any(|(name, _)| name == event) {
            break;
        }
    }
    out
}

pub fn names(frames: &[(String, Value, Instant)]) -> Vec<&str> {
    frames.iter().map(|(e, _, _)| e.as_str()).collect()
}
