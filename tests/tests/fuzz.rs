//! Property-based fuzzing of every function against `openapi.yaml` with
//! schemathesis (installed by the test command), with a fixed seed and a
//! fixed budget: no 5xx, and every response matches the description.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::process::Stdio;
use std::time::Duration;

use e2e::{Stack, StackOptions};
use shared::flowise_double::{Behaviour, FlowiseDouble};
use shared::token::Role;

/// Examples per operation and phase.
const BUDGET: &str = "12";
const SEED: &str = "20261129";

/// Each function and the paths it serves.
const TARGETS: &[(&str, &str)] = &[
    ("auth", "^/api/(auth|profile|admin/users)"),
    ("credits", "^/api/(credits|streaming-sessions)"),
    ("usage", "^/api/usage"),
    (
        "predict",
        "^/api/v1/(chatflows|chat/(sessions|files|predict$)|admin/chatflows)",
    ),
    // The OpenAI-compatible API: its errors in OpenAI's envelope.
    ("predict-stream", "^/v1/"),
];

#[tokio::test]
async fn every_function_holds_its_description_under_fuzzing() {
    let schemathesis = std::process::Command::new("schemathesis")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        schemathesis.is_ok_and(|s| s.success()),
        "schemathesis is not on PATH: run the tests with `make test`"
    );
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow("fuzz-flow", "Fuzzed", Behaviour::answer("fuzzed answer"));
    let stack = Stack::start_with(StackOptions {
        functions: Some(vec![
            "auth",
            "credits",
            "usage",
            "predict",
            "predict-stream",
        ]),
        env: vec![
            ("FLOWISE_API_URL".into(), flowise.url.clone()),
            ("FLOWISE_TIMEOUT_SECONDS".into(), "5".into()),
            ("RUST_LOG".into(), "warn".into()),
        ],
        ..Default::default()
    })
    .await;
    let admin = stack.token("fuzz-admin", Role::Admin);
    let spec = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi.yaml");
    let work = std::env::temp_dir().join(format!("fuzz-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work).unwrap();
    let mut failures = Vec::new();
    for (function, paths) in TARGETS {
        let run = tokio::process::Command::new("schemathesis")
            .args(["run", spec, "--url"])
            .arg(stack.url(function, ""))
            .args(["--include-path-regex", paths])
            .args(["--header", &format!("Authorization: Bearer {admin}")])
            .args(["--checks", "not_a_server_error,response_schema_conformance"])
            .args(["--phases", "examples,coverage,fuzzing"])
            .args(["--max-examples", BUDGET, "--seed", SEED])
            .args(["--request-timeout", "20"])
            .current_dir(&work)
            .stdin(Stdio::null())
            .output();
        let out = tokio::time::timeout(Duration::from_secs(600), run)
            .await
            .expect("schemathesis finishes within 10 minutes")
            .expect("run schemathesis");
        if !out.status.success() {
            failures.push(format!(
                "{function}:\n{}",
                String::from_utf8_lossy(&out.stdout)
            ));
        }
    }
    let _ = std::fs::remove_dir_all(&work);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
