//! The local development path: `cargo lambda watch` serves every function
//! at `/lambda-url/<name>/...` exactly as the README says. Needs
//! `cargo lambda` on PATH (the test command installs it).
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::process::Stdio;
use std::time::Duration;

use e2e::stack::{binary_dir, free_port};
use e2e::HTTP_FUNCTIONS;
use shared::flowise_double::{split_tokens, Behaviour, FlowiseDouble};
use shared::testing::{self, TestMongo, TestPostgres};
use shared::token::Role;

/// `unshare` set up to run a command in a PID namespace of its own, which
/// the kernel tears down, with everything in it, when `unshare` dies.
fn in_own_pid_namespace() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new("unshare");
    cmd.args([
        "--user",
        "--map-root-user",
        "--pid",
        "--fork",
        "--kill-child=SIGKILL",
    ]);
    cmd
}

#[tokio::test]
async fn cargo_lambda_watch_serves_every_function_under_lambda_url() {
    let cargo_lambda = std::process::Command::new("cargo-lambda")
        .arg("--help")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
    assert!(
        cargo_lambda.is_ok_and(|s| s.success()),
        "cargo-lambda is not on PATH: run the tests with `make test`"
    );
    let (pg, mongo) = tokio::join!(TestPostgres::new(), TestMongo::new());
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow(
        "flow-watch",
        "Watched",
        Behaviour::Answer {
            tokens: split_tokens("streamed through cargo lambda watch"),
            delay: Duration::from_millis(100),
            usage: None,
            heartbeat: false,
        },
    );
    let port = free_port();
    let target_dir = binary_dir().parent().unwrap().to_path_buf();
    // In a PID namespace of its own, torn down with everything in it when
    // the test ends: stopping cargo-lambda (and the functions it runs) has
    // been seen to signal processes far beyond its own, which here would
    // include the test runner and the databases.
    let mut watch = in_own_pid_namespace()
        .args([
            "cargo",
            "lambda",
            "watch",
            "--quiet",
            "-A",
            "127.0.0.1",
            "-P",
        ])
        .arg(port.to_string())
        .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
        .env("CARGO_TARGET_DIR", &target_dir)
        .env("DATABASE_URL", &pg.url)
        .env("MONGODB_URI", mongo.config.uri.expose())
        .env("MONGODB_AUTH_DB", &mongo.config.auth_db)
        .env("MONGODB_CHAT_DB", &mongo.config.chat_db)
        .env("JWT_ACCESS_SECRET", testing::TEST_ACCESS_SECRET)
        .env("JWT_REFRESH_SECRET", testing::TEST_REFRESH_SECRET)
        .env("SMTP_HOST", "127.0.0.1")
        .env("SMTP_TLS", "none")
        .env("MAIL_FROM", "gateway@example.com")
        .env("APP_BASE_URL", "http://localhost:5173")
        .env("FLOWISE_API_URL", &flowise.url)
        // Never the test runner's stdin: cargo-lambda would read (and close) it.
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("start cargo lambda watch");

    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    let mut up = false;
    for _ in 0..300 {
        if client.get(&base).send().await.is_ok() {
            up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut failures = Vec::new();
    if up {
        // cargo-lambda builds a function on its first request, which on a
        // clean machine takes minutes: retry until a generous deadline.
        let deadline = std::time::Instant::now() + Duration::from_secs(900);
        for function in HTTP_FUNCTIONS {
            let url = format!("{base}/lambda-url/{function}/health");
            let outcome = loop {
                let outcome = match client.get(&url).send().await {
                    Ok(res) if res.status() == 200 => {
                        let body: serde_json::Value = res.json().await.unwrap_or_default();
                        if body["status"] == "ok" {
                            None
                        } else {
                            Some(format!("{function}: {body}"))
                        }
                    }
                    Ok(res) => Some(format!("{function}: {}", res.status())),
                    Err(e) => Some(format!("{function}: {e}")),
                };
                if outcome.is_none() || std::time::Instant::now() > deadline {
                    break outcome;
                }
                tokio::time::sleep(Duration::from_secs(2)).await;
            };
            failures.extend(outcome);
        }
    }
    // A streamed prediction through the watched predict-stream function.
    let streamed = if up {
        stream_through(&client, &base, &pg.pool).await
    } else {
        String::new()
    };
    // The job, by hand, as the README says.
    let invoked = if up {
        let out = in_own_pid_namespace()
            .args(["cargo", "lambda", "invoke", "-A", "127.0.0.1", "-P"])
            .arg(port.to_string())
            .args(["credit-expiry", "--data-ascii", "{}"])
            .stdin(Stdio::null())
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
            .output()
            .await
            .expect("run cargo lambda invoke");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        serde_json::from_str::<serde_json::Value>(text.trim()).unwrap_or(serde_json::Value::String(
            format!("{text}{}", String::from_utf8_lossy(&out.stderr)),
        ))
    } else {
        serde_json::Value::Null
    };
    // Killing unshare kills the namespace's first process, and with it
    // every process in the namespace.
    let _ = watch.start_kill();
    let _ = tokio::time::timeout(Duration::from_secs(10), watch.wait()).await;
    assert!(up, "cargo lambda watch did not open port {port}");
    assert!(failures.is_empty(), "{failures:?}");
    assert_eq!(
        invoked["expiredAllocations"], 0,
        "cargo lambda invoke credit-expiry: {invoked}"
    );
    assert!(streamed.starts_with("event: session"), "{streamed}");
    assert!(
        streamed.contains("event: token\ndata: \"streamed \""),
        "{streamed}"
    );
    assert!(streamed.contains("event: end"), "{streamed}");
}

/// Syncs the catalogue, opens the flow, grants credits, and returns the
/// raw event stream of one streamed prediction.
async fn stream_through(client: &reqwest::Client, base: &str, pool: &sqlx::PgPool) -> String {
    let keys = testing::jwt_keys();
    let admin = testing::mint_token(&keys, "admin-1", Role::Admin);
    let user = testing::mint_token(&keys, "watcher", Role::Enduser);
    let sync = client
        .post(format!(
            "{base}/lambda-url/predict/api/v1/admin/chatflows/sync"
        ))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("sync");
    assert_eq!(sync.status(), 200);
    let open = client
        .put(format!(
            "{base}/lambda-url/predict/api/v1/admin/chatflows/flow-watch"
        ))
        .bearer_auth(&admin)
        .json(&serde_json::json!({"isPublic": true}))
        .send()
        .await
        .expect("open");
    assert_eq!(open.status(), 200);
    shared::testing::grant(pool, "watcher", 50).await;
    let res = client
        .post(format!(
            "{base}/lambda-url/predict-stream/api/v1/chat/predict/stream"
        ))
        .bearer_auth(&user)
        .json(&serde_json::json!({"chatflow_id": "flow-watch", "question": "Hi"}))
        .send()
        .await
        .expect("stream");
    res.text().await.unwrap_or_default()
}
