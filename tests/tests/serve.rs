//! `gateway-admin serve`: every function's router on one port, under the
//! API Gateway paths (the prediction journey runs through it too, in
//! `predict_journey.rs`).

use e2e::{Stack, StackOptions, HTTP_FUNCTIONS};
use serde_json::json;
use shared::token::Role;

async fn served() -> Stack {
    Stack::start_with(StackOptions {
        serve: true,
        ..Default::default()
    })
    .await
}

#[tokio::test]
async fn one_port_serves_each_functions_health_one_description_and_one_fallback() {
    let stack = served().await;
    for function in HTTP_FUNCTIONS {
        let (status, body) = stack.get_public(function, "/health").await;
        assert_eq!(status, 200, "{function}: {body}");
        assert_eq!(body["status"], "ok", "{function}: {body}");
    }
    let res = stack
        .http
        .get(format!("{}/openapi.yaml", stack.base_url))
        .send()
        .await
        .expect("answer");
    assert_eq!(res.status(), 200);
    let description = res.text().await.expect("text");
    for path in [
        "/api/auth/login:",
        "/api/credits/total-balance:",
        "/api/usage/stats:",
        "/api/v1/chat/predict:",
        "/api/v1/chat/predict/stream:",
    ] {
        assert!(description.contains(path), "{path} is described");
    }
    let (status, body) = stack.get_public("auth", "/api/nowhere").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    // Routes of different functions answer on the same port, roles and all.
    let user = stack.token("u1", Role::Enduser);
    let (status, body) = stack.get("credits", "/api/usage/system-stats", &user).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("forbidden")));
    let (status, body) = stack
        .post_public(
            "auth",
            "/api/auth/login",
            json!({"email": "nobody@example.com", "password": "wrong password"}),
        )
        .await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(stack.balance(&user).await, 0);
}

/// More concurrent connections than `cargo lambda watch` survives (about
/// 120 wedge it): every one answered.
#[tokio::test]
async fn a_burst_of_two_hundred_connections_is_served() {
    let stack = served().await;
    let url = stack.url("credits", "/health");
    let burst = (0..200).map(|_| {
        // A client each: a connection each.
        let http = reqwest::Client::new();
        let url = url.clone();
        async move { http.get(url).send().await.map(|r| r.status().as_u16()) }
    });
    let statuses = futures_util::future::join_all(burst).await;
    let ok = statuses.iter().filter(|s| matches!(s, Ok(200))).count();
    assert_eq!(ok, 200, "{statuses:?}");
}

/// Under `/v1`, every error is in OpenAI's envelope here too, as the
/// streaming function answers it.
#[tokio::test]
async fn v1_errors_are_in_openais_envelope_as_the_function_answers_them() {
    let stack = served().await;
    let (status, body) = stack.get_public("predict-stream", "/v1/models").await;
    assert_eq!(status, 401, "{body}");
    assert_eq!(body["error"]["type"], "authentication_error", "{body}");
    let user = stack.token("u1", Role::Enduser);
    let (status, body) = stack
        .post(
            "predict-stream",
            "/v1/chat/completions",
            &user,
            json!({"model": "x", "messages": [], "n": 2}),
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
    assert_eq!(body["error"]["param"], "n");
    let (status, body) = stack.get("predict-stream", "/v1/nowhere", &user).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"]["message"].is_string(), "{body}");
    // Elsewhere, the gateway's own shape.
    let (status, body) = stack.get("credits", "/api/nowhere", &user).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}
