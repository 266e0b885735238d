//! Cold start and memory of every release `bootstrap` (the function
//! binaries), run as `template.yaml` deploys them (`MIGRATE_ON_START=false`,
//! against migrated databases): the time from starting the process to its
//! first answered request (the HTTP functions: `GET /health`, which also
//! opens the database connections; the job: one invocation), to the
//! answer's head and to its whole body, over five starts, and
//! the resident memory after 1,000 requests. Run with `make bench-coldstart`
//! (starts the stores as `make test` does); prints Markdown for
//! BENCHMARKS.md.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use e2e::lambda::{self, RuntimeApi};
use e2e::stack::{ensure_binaries_built, function_env, spawn_function};
use e2e::ALL_FUNCTIONS;
use serde_json::json;
use shared::testing::{TestMongo, TestPostgres};

const STARTS: usize = 5;
const REQUESTS: usize = 1_000;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

/// One request; returns when its head (status and headers) arrived,
/// measured from `started`. The whole answer has arrived when it returns.
async fn first_answer(
    name: &str,
    api: &std::sync::Arc<RuntimeApi>,
    http: &reqwest::Client,
    front: &str,
    started: Instant,
) -> Duration {
    if name == "credit-expiry" {
        api.invoke(json!({})).await.expect("the job answers");
        return started.elapsed();
    }
    let res = http
        .get(format!("{front}/lambda-url/{name}/health"))
        .send()
        .await
        .expect("health");
    let head = started.elapsed();
    assert_eq!(res.status(), 200, "{name} is not healthy");
    res.bytes().await.expect("the health body");
    head
}

#[tokio::main]
async fn main() {
    ensure_binaries_built();
    let (pg, mongo) = tokio::join!(TestPostgres::new(), TestMongo::new());
    // Migrations and indexes exist already, as after a deploy, and the
    // functions run as template.yaml deploys them: no migration at start.
    let mut env = function_env(&pg, Some(&mongo), 9);
    env.push(("RUST_LOG".into(), "warn".into()));
    env.push(("MIGRATE_ON_START".into(), "false".into()));
    let log_dir = std::env::temp_dir().join(format!("coldstart-{}", std::process::id()));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let http = reqwest::Client::new();
    println!("| function | its head after start (median of {STARTS}) | the whole first answer (median) | slowest whole answer | RSS after {REQUESTS} requests |");
    println!("|---|---|---|---|---|");
    for name in ALL_FUNCTIONS {
        let (mut starts, mut heads) = (Vec::new(), Vec::new());
        let mut rss = None;
        for round in 0..STARTS {
            let api = RuntimeApi::start(name).await;
            let front = format!(
                "http://{}",
                lambda::serve_front(HashMap::from([(name.to_string(), api.clone())]), 0).await
            );
            let started = Instant::now();
            let mut child = spawn_function(name, round, &api, &env, &log_dir);
            heads.push(first_answer(name, &api, &http, &front, started).await);
            starts.push(started.elapsed());
            if round == STARTS - 1 {
                for _ in 0..REQUESTS {
                    first_answer(name, &api, &http, &front, Instant::now()).await;
                }
                rss = child.id().and_then(rss_kib);
            }
            let _ = child.kill().await;
        }
        starts.sort();
        heads.sort();
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {name} | {} | {} | {} | {} |",
            ms(heads[STARTS / 2]),
            ms(starts[STARTS / 2]),
            ms(*starts.last().expect("starts")),
            rss.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
                .unwrap_or_else(|| "n/a".into()),
        );
    }
    let _ = std::fs::remove_dir_all(&log_dir);
}
