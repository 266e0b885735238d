//! Every function starts as Lambda starts it and answers `/health` over HTTP.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use e2e::{Stack, HTTP_FUNCTIONS};
use serde_json::json;

#[tokio::test]
async fn every_http_function_answers_health_with_its_stores() {
    let stack = Stack::start().await;
    for function in HTTP_FUNCTIONS {
        let (status, body) = stack.get_public(function, "/health").await;
        assert_eq!(status, 200, "{function}: {body}");
        assert_eq!(body["status"], "ok", "{function}: {body}");
        let expected = match *function {
            "auth" => json!({"mongodb": "ok", "mongodbIndexes": "ok"}),
            "credits" | "usage" => json!({"postgres": "ok"}),
            "console" => json!({}),
            _ => json!({"postgres": "ok", "mongodb": "ok", "mongodbIndexes": "ok"}),
        };
        assert_eq!(body["stores"], expected, "{function}");
    }
}

#[tokio::test]
async fn unknown_routes_answer_404_in_the_error_format_through_lambda() {
    let stack = Stack::start_with(e2e::StackOptions {
        functions: Some(vec!["credits"]),
        ..Default::default()
    })
    .await;
    let (status, body) = stack.get_public("credits", "/api/nothing-here").await;
    assert_eq!(status, 404);
    assert_eq!(body["error"], "not_found");
}

#[tokio::test]
async fn a_function_whose_database_is_down_reports_503_naming_it() {
    let stack = Stack::start_with(e2e::StackOptions {
        functions: Some(vec!["usage"]),
        env: vec![(
            "DATABASE_URL".into(),
            "postgres://postgres@127.0.0.1:1/nothing".into(),
        )],
        ..Default::default()
    })
    .await;
    let (status, body) = stack.get_public("usage", "/health").await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "store_unavailable");
    assert_eq!(body["stores"]["postgres"], "unreachable");
}
