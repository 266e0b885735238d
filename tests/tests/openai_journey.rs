//! The API-key journey through the served functions (README §11, §12): a
//! user creates a key, a program uses it through the official `openai`
//! Python package and through `curl -N`, the user watches the key's
//! spend, revokes it, and the program is refused at once.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::process::Stdio;
use std::time::Duration;

use e2e::{Stack, StackOptions};
use reqwest::Method;
use serde_json::{json, Value};
use shared::flowise_double::{split_tokens, Behaviour, FlowiseDouble};
use shared::token::Role;

const ANSWER: &str = "Hello from the fake OpenAI server!";
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/openai/sdk_check.py");

/// Runs the SDK script in `mode`; returns the JSON line it printed.
async fn sdk(stack: &Stack, mode: &str, env: &[(&str, &str)]) -> Value {
    let run = tokio::process::Command::new("python3")
        .arg(SCRIPT)
        .arg(mode)
        .env("GATEWAY_V1", stack.url("predict-stream", "/v1"))
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(120), run)
        .await
        .expect("the SDK script finishes")
        .expect("python3 runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the SDK script failed (is the tools venv with `openai` on PATH? run `make test`):\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_str(stdout.trim()).expect("one JSON line")
}

/// The key `id` as `GET /api/keys` lists it to its user.
async fn listed_key(stack: &Stack, token: &str, id: &str) -> Value {
    let (status, keys) = stack.get("credits", "/api/keys", token).await;
    assert_eq!(status, 200, "{keys}");
    keys["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .cloned()
        .unwrap_or_else(|| panic!("the key is not listed: {keys}"))
}

#[tokio::test]
async fn a_key_is_made_used_through_the_openai_sdk_watched_and_revoked() {
    let flowise = FlowiseDouble::start().await;
    let answer = Behaviour::Answer {
        tokens: split_tokens(ANSWER),
        delay: Duration::from_millis(20),
        usage: None,
        heartbeat: false,
    };
    flowise.add_flow("flow-sdk", "Support bot", answer);
    let stack = Stack::start_with(StackOptions {
        functions: Some(vec![
            "auth",
            "predict",
            "predict-stream",
            "credits",
            "usage",
        ]),
        env: vec![("FLOWISE_API_URL".into(), flowise.url.clone())],
        ..Default::default()
    })
    .await;
    let admin = stack.token("admin-1", Role::Admin);
    stack.sync_chatflows(&admin).await;
    let pricing = json!({"perRequest": 2, "perInputToken": 0, "perOutputToken": 1});
    stack.open_chatflow(&admin, "flow-sdk", Some(pricing)).await;
    // Zoe signs up, and makes a key with her password.
    let (zoe_id, zoe) = stack.signed_up("zoe", "zoe-password").await;
    stack.allocate(&admin, &zoe_id, 500).await;
    let (key, key_id) = stack
        .make_key(&zoe, "zoe-password", json!({"name": "my script"}))
        .await;
    let (_, poor) = stack.signed_up("poor", "poor-password").await;
    let (poor_key, _) = stack
        .make_key(&poor, "poor-password", json!({"name": "x"}))
        .await;

    // The program: models, a buffered and a streamed completion, errors.
    let seen = sdk(
        &stack,
        "use",
        &[
            ("KEY", &key),
            ("POOR_KEY", &poor_key),
            ("MODEL", "flow-sdk"),
        ],
    )
    .await;
    assert_eq!(seen["models"], json!(["flow-sdk"]), "{seen}");
    assert_eq!(seen["retrieved"], "flow-sdk");
    assert_eq!(seen["buffered"], ANSWER);
    assert!(seen["buffered_usage"].as_i64().unwrap() > 0);
    assert_eq!(seen["streamed"], ANSWER, "{seen}");
    assert!(
        seen["pieces"].as_i64().unwrap() >= 6,
        "read token by token: {seen}"
    );
    assert!(seen["streamed_usage"].as_i64().unwrap() > 0, "{seen}");
    assert_eq!(
        seen["unknown_model"],
        json!([404, "model_not_found", "invalid_request_error"])
    );
    assert_eq!(
        seen["poor"],
        json!([402, "insufficient_credits", "APIStatusError"])
    );

    // The user watches the key's spend: what the SDK saw charged.
    let charged = seen["charged"].as_i64().unwrap();
    assert!(charged > 4);
    assert_eq!(stack.balance(&zoe).await, 500 - charged);
    let listed = listed_key(&stack, &zoe, &key_id).await;
    assert_eq!(listed["creditsThisMonth"], charged, "{listed}");
    assert!(listed["lastUsedAt"].is_string(), "{listed}");
    let (status, stats) = stack.get("usage", "/api/usage/stats", &zoe).await;
    assert_eq!(status, 200, "{stats}");
    let by_key = stats["byKey"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["keyId"] == key_id.as_str())
        .unwrap_or_else(|| panic!("no byKey row for the key: {stats}"));
    assert_eq!(by_key["credits"], charged, "{stats}");

    // curl -N: the stream as it comes, chunk by chunk, then [DONE].
    let body = json!({"model": "flow-sdk", "stream": true,
        "messages": [{"role": "user", "content": "Hi from curl"}]});
    let curl = tokio::process::Command::new("curl")
        .args(["-sS", "-N", "--max-time", "30", "-H"])
        .arg(format!("Authorization: Bearer {key}"))
        .args(["-H", "Content-Type: application/json", "-d"])
        .arg(body.to_string())
        .arg(stack.url("predict-stream", "/v1/chat/completions"))
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&curl.stdout);
    assert!(curl.status.success(), "{text}");
    let data: Vec<&str> = text
        .split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .collect();
    assert_eq!(data.last(), Some(&"[DONE]"), "{text}");
    let streamed: String = data
        .iter()
        .filter_map(|d| serde_json::from_str::<Value>(d).ok())
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(streamed, ANSWER, "{text}");

    // Revoked: the program is refused on its next request.
    let path = format!("/api/keys/{key_id}");
    let (status, body) = stack
        .request(Method::DELETE, "credits", &path, Some(&zoe), None)
        .await;
    assert_eq!(status, 204, "{body}");
    let seen = sdk(&stack, "revoked", &[("KEY", &key)]).await;
    assert_eq!(seen["revoked"], json!([401, "key_revoked"]));
    let listed = listed_key(&stack, &zoe, &key_id).await;
    assert_eq!(listed["status"], "revoked", "{listed}");
    assert!(
        stack.balance(&zoe).await < 500 - charged,
        "curl's stream was paid for too"
    );
}
