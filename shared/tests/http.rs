//! The HTTP plumbing every function shares, driven through a router the
//! way a function uses it.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::sync::{Arc, Mutex};

use axum::extract::FromRef;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};
use shared::error::{ApiError, JsonBody};
use shared::http::{finish, not_implemented, HealthChecks};
use shared::testing::{self, call, TestMongo, TestPostgres};
use shared::token::{AuthUser, JwtKeys, Role};

#[derive(Clone)]
struct State {
    jwt: JwtKeys,
    pg: sqlx::PgPool,
}

impl FromRef<State> for JwtKeys {
    fn from_ref(state: &State) -> Self {
        state.jwt.clone()
    }
}

impl FromRef<State> for sqlx::PgPool {
    fn from_ref(state: &State) -> Self {
        state.pg.clone()
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    name: String,
    count: u32,
}

async fn whoami(user: AuthUser) -> Json<Value> {
    Json(json!({"id": user.id, "role": user.role}))
}

async fn admin_only(user: AuthUser) -> Result<Json<Value>, ApiError> {
    user.require_admin()?;
    Ok(Json(json!({"ok": true})))
}

async fn echo(JsonBody(body): JsonBody<Body>) -> Json<Value> {
    Json(json!({"name": body.name, "count": body.count}))
}

/// The router, with no database behind it (for requests refused before
/// a token's session is looked up).
fn app() -> Router {
    let nowhere = sqlx::postgres::PgPoolOptions::new()
        .connect_lazy("postgres://nobody@127.0.0.1:1/nothing")
        .unwrap();
    app_with(nowhere)
}

/// The router on `pg` (a token's session is looked up there).
fn app_with(pg: sqlx::PgPool) -> Router {
    let state = State {
        jwt: testing::jwt_keys(),
        pg,
    };
    finish(
        Router::new()
            .route("/whoami", get(whoami))
            .route("/admin", get(admin_only))
            .route("/echo", post(echo))
            .route("/later", post(not_implemented))
            .with_state(state),
    )
}

#[tokio::test]
async fn an_unknown_route_is_a_json_404() {
    call(&app(), "GET", "/nowhere", None, None)
        .await
        .assert_error(404, "not_found");
}

#[tokio::test]
async fn a_known_route_with_another_method_is_a_json_405() {
    call(&app(), "DELETE", "/echo", None, None)
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn a_route_not_yet_built_answers_501_in_the_error_format() {
    let res = call(&app(), "POST", "/later", None, None).await;
    res.assert_error(501, "not_implemented");
    assert!(res.body["message"]
        .as_str()
        .unwrap()
        .contains("POST /later"));
}

#[tokio::test]
async fn a_request_without_a_token_is_401() {
    call(&app(), "GET", "/whoami", None, None)
        .await
        .assert_error(401, "missing_token");
}

#[tokio::test]
async fn a_request_with_a_bad_token_is_401() {
    call(&app(), "GET", "/whoami", None, Some("not.a.token"))
        .await
        .assert_error(401, "invalid_token");
}

#[tokio::test]
async fn a_refresh_token_is_refused_as_access() {
    let keys = testing::jwt_keys();
    let (refresh, _) = keys.issue_refresh("u1", "fam", chrono::Utc::now().timestamp());
    call(&app(), "GET", "/whoami", None, Some(&refresh))
        .await
        .assert_error(401, "invalid_token");
}

#[tokio::test]
async fn a_valid_token_yields_the_user() {
    let db = TestPostgres::new().await;
    let token = testing::mint_token(&testing::jwt_keys(), "u42", Role::Supervisor);
    let app = app_with(db.pool.clone());
    let res = call(&app, "GET", "/whoami", None, Some(&token)).await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body, json!({"id": "u42", "role": "supervisor"}));
    // Once its user signed out everywhere, the same token is refused.
    sqlx::query("INSERT INTO user_accounts (user_id, session_version) VALUES ('u42', 1)")
        .execute(&db.pool)
        .await
        .unwrap();
    call(&app, "GET", "/whoami", None, Some(&token))
        .await
        .assert_error(401, "session_ended");
}

#[tokio::test]
async fn the_wrong_role_is_403() {
    let db = TestPostgres::new().await;
    let app = app_with(db.pool.clone());
    let keys = testing::jwt_keys();
    let user = testing::mint_token(&keys, "u1", Role::Enduser);
    call(&app, "GET", "/admin", None, Some(&user))
        .await
        .assert_error(403, "forbidden");
    let admin = testing::mint_token(&keys, "u2", Role::Admin);
    assert_eq!(
        call(&app, "GET", "/admin", None, Some(&admin)).await.status,
        200
    );
}

#[tokio::test]
async fn bad_json_bodies_are_400s_naming_the_problem() {
    let app = app();
    let send = |body: &'static str, ct: &'static str| {
        let app = app.clone();
        async move {
            use tower::ServiceExt;
            let req = axum::http::Request::post("/echo")
                .header("content-type", ct)
                .body(axum::body::Body::from(body))
                .unwrap();
            let res = app.oneshot(req).await.unwrap();
            let status = res.status().as_u16();
            let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&bytes).unwrap())
        }
    };
    let (status, body) = send("{\"name\":", "application/json").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_json"))
    );
    let (status, body) = send(r#"{"name":"a"}"#, "application/json").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_input"))
    );
    assert!(body["message"].as_str().unwrap().contains("count"));
    let (status, body) = send(r#"{"name":"a","count":-1}"#, "application/json").await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("count:"));
    let (status, body) = send(r#"{"name":"a","count":1,"extra":1}"#, "application/json").await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().contains("extra"));
    let (status, body) = send("{\"name\":\"\u{fffd}\"}", "application/json").await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = send(r#"{"name":"a","count":1}"#, "text/plain").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let (status, body) = send(r#"{"name":"a","count":1}"#, "application/json").await;
    assert_eq!((status, body), (200, json!({"name": "a", "count": 1})));
}

#[tokio::test]
async fn a_body_that_is_not_utf8_is_a_400() {
    use tower::ServiceExt;
    let req = axum::http::Request::post("/echo")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(vec![0xff, 0xfe, b'{', 0x80]))
        .unwrap();
    let res = app().oneshot(req).await.unwrap();
    assert_eq!(res.status(), 400);
    let bytes = axum::body::to_bytes(res.into_body(), usize::MAX)
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(body["error"], "invalid_json");
}

#[tokio::test]
async fn every_response_carries_a_request_id() {
    let res = call(&app(), "GET", "/nowhere", None, None).await;
    assert!(res.headers.get("x-request-id").is_some());
}

/// Collects log output in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[test]
fn logs_carry_the_request_and_user_but_never_tokens_or_passwords() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = shared::telemetry::subscriber(
        shared::telemetry::LogFormat::Json,
        tracing_subscriber::EnvFilter::new("debug"),
        move || writer.clone(),
    );
    let token = testing::mint_token(&testing::jwt_keys(), "u-logged", Role::Enduser);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    tracing::subscriber::with_default(subscriber, || {
        rt.block_on(async {
            let app = app();
            call(&app, "GET", "/whoami", None, Some(&token)).await;
            call(
                &app,
                "POST",
                "/echo?password=hunter2",
                Some(json!({"name": "hunter2", "count": "bad"})),
                Some(&token),
            )
            .await;
        })
    });
    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("request finished"), "{logs}");
    assert!(logs.contains("\"request_id\""), "{logs}");
    assert!(logs.contains("u-logged"), "the user id is logged: {logs}");
    assert!(!logs.contains(&token), "a token was logged: {logs}");
    assert!(
        !logs.contains("hunter2"),
        "a body or query value was logged: {logs}"
    );
    for line in logs.lines() {
        serde_json::from_str::<Value>(line).expect("every log line is JSON");
    }
}

#[tokio::test]
async fn health_is_200_when_every_store_answers() {
    let pg = TestPostgres::new().await;
    let mongo = TestMongo::new().await;
    let checks = HealthChecks {
        postgres: Some(pg.pool.clone()),
        mongodb: Some(mongo.stores.client.clone()),
        indexes: None,
    };
    let res = call(&finish(checks.router()), "GET", "/health", None, None).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.body["stores"],
        json!({"postgres": "ok", "mongodb": "ok"})
    );
}

#[tokio::test]
async fn health_is_503_naming_the_store_that_is_down() {
    let mongo = TestMongo::new().await;
    let checks = HealthChecks {
        postgres: Some(testing::unreachable_postgres()),
        mongodb: Some(mongo.stores.client.clone()),
        indexes: None,
    };
    let res = call(&finish(checks.router()), "GET", "/health", None, None).await;
    res.assert_error(503, "store_unavailable");
    assert!(res.body["message"].as_str().unwrap().contains("postgres"));
    assert_eq!(
        res.body["stores"],
        json!({"postgres": "unreachable", "mongodb": "ok"})
    );
}
