//! Every route of README §5–§8 and §11 is registered on its function and answers in
//! the error format through Lambda, never 404/405 (and never a fake
//! success: without a token or body every one of them is an error).
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use e2e::Stack;
use reqwest::Method;

/// (function, method, path template) for every route of the spec.
const ROUTES: &[(&str, &str, &str)] = &[
    ("auth", "POST", "/api/auth/signup"),
    ("auth", "POST", "/api/auth/verify-email"),
    ("auth", "POST", "/api/auth/resend-verification"),
    ("auth", "POST", "/api/auth/login"),
    ("auth", "POST", "/api/keys"),
    ("auth", "POST", "/api/auth/refresh"),
    ("auth", "POST", "/api/auth/logout"),
    ("auth", "POST", "/api/auth/logout-all"),
    ("auth", "POST", "/api/auth/forgot-password"),
    ("auth", "POST", "/api/auth/reset-password"),
    ("auth", "GET", "/api/profile"),
    ("auth", "PUT", "/api/profile"),
    ("auth", "POST", "/api/profile/change-password"),
    ("auth", "GET", "/api/admin/users"),
    ("auth", "GET", "/api/admin/users/{id}"),
    ("auth", "POST", "/api/admin/users"),
    ("auth", "PATCH", "/api/admin/users/{id}"),
    ("auth", "DELETE", "/api/admin/users/{id}"),
    ("credits", "GET", "/api/credits/balance"),
    ("credits", "GET", "/api/credits/total-balance"),
    ("credits", "GET", "/api/credits/balance/{userId}"),
    ("credits", "POST", "/api/credits/allocate"),
    ("credits", "POST", "/api/credits/deduct"),
    ("credits", "POST", "/api/credits/adjust"),
    ("credits", "POST", "/api/credits/calculate"),
    ("credits", "GET", "/api/credits/transactions"),
    ("credits", "GET", "/api/credits/statement"),
    ("credits", "GET", "/api/credits/pricing"),
    ("credits", "PUT", "/api/credits/pricing/{chatflowId}"),
    ("credits", "POST", "/api/streaming-sessions/initialize"),
    ("credits", "POST", "/api/streaming-sessions/finalize"),
    ("credits", "POST", "/api/streaming-sessions/abort"),
    ("credits", "GET", "/api/streaming-sessions/active"),
    ("credits", "GET", "/api/keys"),
    ("credits", "DELETE", "/api/keys/{id}"),
    ("credits", "GET", "/api/admin/keys"),
    ("credits", "DELETE", "/api/admin/keys/{id}"),
    ("credits", "GET", "/api/admin/users/{id}/limits"),
    ("credits", "PUT", "/api/admin/users/{id}/limits"),
    ("credits", "POST", "/api/admin/teams"),
    ("credits", "PATCH", "/api/admin/teams/{id}"),
    ("credits", "DELETE", "/api/admin/teams/{id}"),
    ("credits", "GET", "/api/teams"),
    ("credits", "GET", "/api/teams/{id}"),
    ("credits", "POST", "/api/teams/{id}/members"),
    ("credits", "DELETE", "/api/teams/{id}/members/{userId}"),
    ("credits", "DELETE", "/api/teams/{id}/pending/{email}"),
    ("credits", "GET", "/api/teams/{id}/credits"),
    ("credits", "POST", "/api/teams/{id}/transfers"),
    ("credits", "POST", "/api/teams/{id}/reclaims"),
    ("credits", "GET", "/api/admin/allowances/{role}"),
    ("credits", "PUT", "/api/admin/allowances/{role}"),
    ("credits", "DELETE", "/api/admin/allowances/{role}"),
    ("credits", "GET", "/api/teams/{id}/allowance"),
    ("credits", "PUT", "/api/teams/{id}/allowance"),
    ("credits", "DELETE", "/api/teams/{id}/allowance"),
    ("credits", "GET", "/api/credits/warnings"),
    ("credits", "PUT", "/api/credits/warnings"),
    ("credits", "GET", "/api/teams/{id}/warnings"),
    ("credits", "PUT", "/api/teams/{id}/warnings"),
    ("credits", "POST", "/api/admin/webhooks"),
    ("credits", "GET", "/api/admin/webhooks"),
    ("credits", "DELETE", "/api/admin/webhooks/{id}"),
    ("credits", "GET", "/api/admin/webhooks/{id}/deliveries"),
    ("usage", "POST", "/api/usage/record"),
    ("usage", "GET", "/api/usage/stats"),
    ("usage", "GET", "/api/usage/stats/{userId}"),
    ("usage", "GET", "/api/usage/system-stats"),
    ("usage", "GET", "/api/usage/export"),
    ("predict", "GET", "/api/v1/chatflows"),
    ("predict", "GET", "/api/v1/chatflows/{id}"),
    ("predict", "POST", "/api/v1/chat/predict"),
    ("predict", "POST", "/api/v1/chat/predict/{message_id}/stop"),
    ("predict", "GET", "/api/v1/chat/sessions"),
    ("predict", "GET", "/api/v1/chat/sessions/{id}/messages"),
    ("predict", "DELETE", "/api/v1/chat/sessions/{id}"),
    ("predict", "POST", "/api/v1/chat/files"),
    ("predict", "GET", "/api/v1/chat/files/{id}"),
    ("predict", "DELETE", "/api/v1/chat/files/{id}"),
    ("predict", "POST", "/api/v1/admin/chatflows/sync"),
    ("predict", "GET", "/api/v1/admin/chatflows"),
    ("predict", "PUT", "/api/v1/admin/chatflows/{id}"),
    ("predict", "POST", "/api/v1/admin/chatflows/{id}/users"),
    ("predict", "DELETE", "/api/v1/admin/chatflows/{id}/users"),
    ("predict-stream", "POST", "/api/v1/chat/predict/stream"),
    // The OpenAI-compatible API, on the same function URL.
    ("predict-stream", "GET", "/v1/models"),
    ("predict-stream", "GET", "/v1/models/{id}"),
    ("predict-stream", "POST", "/v1/chat/completions"),
];

/// The console's routes on the HTTP API (`functions/console`): not in
/// `openapi.yaml`, which describes the JSON API.
const CONSOLE_ROUTES: &[&str] = &["/", "/assets/{proxy+}", "/config.json", "/reset-password"];

#[tokio::test]
async fn the_console_answers_its_routes_and_is_not_in_the_description() {
    let stack = Stack::start_with(e2e::StackOptions {
        functions: Some(vec!["console"]),
        ..Default::default()
    })
    .await;
    let page = stack
        .http
        .get(stack.url("console", "/"))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.headers().contains_key("content-security-policy"));
    let (status, config) = stack.get_public("console", "/config.json").await;
    assert_eq!(status, 200);
    assert_eq!(config["auth"], "/lambda-url/auth");
    let text = shared::http::OPENAPI;
    for path in CONSOLE_ROUTES {
        assert!(
            !text.contains(&format!("\n  {path}:")),
            "{path} is in openapi.yaml"
        );
    }
}

#[tokio::test]
async fn every_spec_route_is_registered_and_answers_in_the_error_format() {
    let stack = Stack::start().await;
    for (function, method, template) in ROUTES {
        let path = concrete(template);
        let path = path.as_str();
        let method = Method::from_bytes(method.as_bytes()).unwrap();
        let (status, body) = stack
            .request(method.clone(), function, path, None, None)
            .await;
        assert!(
            status != 404 && status != 405,
            "{method} {path} on {function} is not routed ({status}): {body}"
        );
        assert!(
            (400..600).contains(&status),
            "{method} {path} answered {status} without a token or body: {body}"
        );
        let error_format = if path.starts_with("/v1/") {
            // OpenAI's envelope.
            body["error"]["message"].is_string() && body["error"]["type"].is_string()
        } else {
            body["error"].is_string() && body["message"].is_string()
        };
        assert!(
            error_format,
            "{method} {path}: not the error format: {body}"
        );
    }
    // Every function serves the description.
    for function in e2e::HTTP_FUNCTIONS {
        let res = stack
            .http
            .get(stack.url(function, "/openapi.yaml"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{function}");
        assert_eq!(
            res.text().await.unwrap(),
            shared::http::OPENAPI,
            "{function}"
        );
    }
}

#[test]
fn the_openapi_description_lists_exactly_the_spec_routes() {
    let text = shared::http::OPENAPI;
    let paths = &text[text.find("\npaths:\n").unwrap()..text.find("\ncomponents:\n").unwrap()];
    let mut described = Vec::new();
    let mut current = String::new();
    for line in paths.lines() {
        if let Some(path) = line.strip_prefix("  /") {
            current = format!("/{}", path.trim_end_matches(':'));
        } else if let Some(rest) = line.strip_prefix("    ") {
            let key = rest.split(':').next().unwrap_or("");
            if ["get", "put", "post", "patch", "delete"].contains(&key) {
                described.push((key.to_uppercase(), current.clone()));
            }
        }
    }
    described.sort();
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(_, m, p)| (m.to_string(), p.to_string()))
        .chain([
            ("GET".to_owned(), "/health".to_owned()),
            ("GET".to_owned(), "/openapi.yaml".to_owned()),
        ])
        .collect();
    expected.sort();
    assert_eq!(described, expected);
}

#[tokio::test]
async fn a_route_on_the_wrong_function_is_404() {
    let stack = Stack::start_with(e2e::StackOptions {
        functions: Some(vec!["usage"]),
        ..Default::default()
    })
    .await;
    let (status, body) = stack.get_public("usage", "/api/credits/balance").await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

/// A path template with every `{param}` filled in.
fn concrete(template: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in template.chars() {
        match c {
            '{' => in_param = true,
            '}' => {
                in_param = false;
                out.push_str("x1");
            }
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn the_sam_template_routes_exactly_the_spec_routes() {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
    let mut declared: Vec<(String, String)> = template
        .lines()
        .filter(|l| l.contains("Path: \"") && l.contains("Method: "))
        .map(|l| {
            let path = l
                .split("Path: \"")
                .nth(1)
                .unwrap()
                .split('"')
                .next()
                .unwrap()
                .to_owned();
            let method = l
                .split("Method: ")
                .nth(1)
                .unwrap()
                .trim_end_matches('}')
                .trim()
                .to_owned();
            (method, path)
        })
        .collect();
    declared.sort();
    // The streamed prediction and the OpenAI-compatible API are the
    // function URL's (the `StreamUrl` output lists them), not HttpApi routes;
    // the console's four routes are the HttpApi's but not the spec's.
    let mut expected: Vec<(String, String)> = ROUTES
        .iter()
        .filter(|(f, _, _)| *f != "predict-stream")
        .map(|(_, m, p)| (m.to_string(), p.to_string()))
        .chain(
            CONSOLE_ROUTES
                .iter()
                .map(|p| ("GET".to_owned(), (*p).to_owned())),
        )
        .collect();
    expected.sort();
    assert_eq!(declared, expected);
    assert!(template.contains("InvokeMode: RESPONSE_STREAM"));
    let stream_url = &template[template.find("  StreamUrl:").expect("the StreamUrl output")..];
    let stream_url = &stream_url[..stream_url.find("\n\n").unwrap_or(stream_url.len())];
    for (_, method, path) in ROUTES.iter().filter(|(f, _, _)| *f == "predict-stream") {
        assert!(
            stream_url.contains(&format!("{method} {path}")),
            "StreamUrl does not list {method} {path}: {stream_url}"
        );
    }
}

/// The (method, path) pairs of a description, path parameters
/// normalised to `{}`.
fn operations(api: &utoipa::openapi::OpenApi) -> Vec<(String, String)> {
    let value = serde_json::to_value(api).unwrap();
    let mut out = Vec::new();
    for (path, item) in value["paths"].as_object().unwrap() {
        for method in ["get", "post", "put", "patch", "delete"] {
            if item.get(method).is_some() {
                out.push((method.to_uppercase(), normalise(path)));
            }
        }
    }
    out
}

fn normalise(path: &str) -> String {
    let mut out = String::new();
    let mut in_param = false;
    for c in path.chars() {
        match c {
            '{' => {
                in_param = true;
                out.push('{');
            }
            '}' => {
                in_param = false;
                out.push('}');
            }
            _ if !in_param => out.push(c),
            _ => {}
        }
    }
    out
}

#[test]
fn every_route_the_routers_register_is_a_spec_route_and_the_reverse() {
    // Each function's router is built from the declarations its
    // description comes from (utoipa-axum), so these are its routes.
    let mut registered = Vec::new();
    for api in [
        auth::openapi(),
        credits::openapi(),
        usage::openapi(),
        predict::openapi(),
        predict_stream::openapi(),
        shared::http::common_openapi(),
    ] {
        registered.extend(operations(&api));
    }
    registered.sort();
    registered.dedup();
    let mut described: Vec<(String, String)> = ROUTES
        .iter()
        .map(|(_, m, p)| (m.to_string(), normalise(p)))
        .chain([
            ("GET".to_owned(), "/health".to_owned()),
            ("GET".to_owned(), "/openapi.yaml".to_owned()),
        ])
        .collect();
    described.sort();
    assert_eq!(
        registered, described,
        "routers and the spec's routes differ"
    );
}
