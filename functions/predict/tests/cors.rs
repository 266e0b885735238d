//! CORS on the streaming function's URL (README §8): the console's
//! browsers are answered, preflight included, on every answer (errors
//! too, so a page reads a 402's numbers); any other origin is not.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::{App, CONSOLE_ORIGIN};
use serde_json::json;
use shared::testing::call_with_headers;
use shared::token::Role;

#[tokio::test]
async fn the_consoles_origin_is_answered_and_no_other() {
    let app = App::new().await;
    let preflight = [
        ("origin", CONSOLE_ORIGIN),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, content-type",
        ),
    ];
    let path = "/api/v1/chat/predict/stream";
    let res = call_with_headers(&app.stream, "OPTIONS", path, None, None, &preflight).await;
    assert_eq!(res.status, 204);
    assert_eq!(res.headers["access-control-allow-origin"], CONSOLE_ORIGIN);
    let allowed = res.headers["access-control-allow-headers"]
        .to_str()
        .unwrap();
    assert!(allowed.contains("authorization") && allowed.contains("idempotency-key"));
    assert!(res.headers["access-control-allow-methods"]
        .to_str()
        .unwrap()
        .contains("POST"));
    assert!(!res.headers.contains_key("access-control-allow-credentials"));

    // Another origin's preflight is refused; its plain requests get no
    // CORS headers (the browser keeps the answer from the page).
    let evil = [
        ("origin", "https://evil.test"),
        ("access-control-request-method", "POST"),
    ];
    let res = call_with_headers(&app.stream, "OPTIONS", path, None, None, &evil).await;
    res.assert_error(403, "origin_not_allowed");
    assert!(!res.headers.contains_key("access-control-allow-origin"));

    // A refusal still reaches the console's page, numbers and Retry-After
    // readable.
    let token = app.token("broke", Role::Enduser);
    let body = json!({"chatflow_id": "flow-a", "question": "Hi"});
    let res = call_with_headers(
        &app.stream,
        "POST",
        path,
        Some(body.clone()),
        Some(&token),
        &[("origin", CONSOLE_ORIGIN)],
    )
    .await;
    res.assert_error(402, "insufficient_credits");
    assert_eq!(res.headers["access-control-allow-origin"], CONSOLE_ORIGIN);
    assert!(res.headers["access-control-expose-headers"]
        .to_str()
        .unwrap()
        .contains("retry-after"));
    assert_eq!(res.headers["vary"], "origin");
    let res = call_with_headers(
        &app.stream,
        "POST",
        path,
        Some(body),
        Some(&token),
        &[("origin", "https://evil.test")],
    )
    .await;
    res.assert_error(402, "insufficient_credits");
    assert!(!res.headers.contains_key("access-control-allow-origin"));

    // The OpenAI API too.
    let res = call_with_headers(
        &app.stream,
        "GET",
        "/v1/models",
        None,
        Some(&token),
        &[("origin", CONSOLE_ORIGIN)],
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["access-control-allow-origin"], CONSOLE_ORIGIN);
}
