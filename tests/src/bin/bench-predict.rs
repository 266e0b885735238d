#![allow(clippy::too_many_lines)]
//! The gateway's own overhead on a prediction: the latency of a buffered
//! prediction through the predict function minus the same call made
//! straight to the Flowise double, at 1 and 16 concurrent clients, and the
//! time to the first token of a streamed answer through predict-stream
//! against straight to the double. Run with `make bench-predict` (needs
//! PostgreSQL and MongoDB, as the tests do); prints Markdown for
//! BENCHMARKS.md.

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use futures_util::StreamExt;
use serde_json::json;
use shared::flowise_double::{Behaviour, FlowiseDouble};
use shared::token::Role;

const FLOW: &str = "bench-flow";
const ANSWER: &str = "Hello from the fake OpenAI server!";

#[derive(Clone, Copy)]
enum Target {
    Direct,
    Gateway,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// `total` requests spread over `clients` concurrent loops; sorted latencies.
async fn measure<F, Fut>(clients: usize, total: usize, op: F) -> Vec<Duration>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Duration> + Send,
{
    let per = total / clients;
    let tasks: Vec<_> = (0..clients)
        .map(|c| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut out = Vec::with_capacity(per);
                for _ in 0..per {
                    out.push(op(c).await);
                }
                out
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("client"));
    }
    all.sort();
    all
}

#[tokio::main]
async fn main() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow(FLOW, "Bench", Behaviour::answer(ANSWER));
    let stack = Stack::start_with(StackOptions {
        functions: Some(vec!["predict", "predict-stream"]),
        instances: 16,
        env: vec![
            ("FLOWISE_API_URL".into(), flowise.url.clone()),
            ("RUST_LOG".into(), "warn".into()),
        ],
    })
    .await;
    let admin = stack.token("admin-1", Role::Admin);
    let (status, _) = stack
        .request(
            reqwest::Method::POST,
            "predict",
            "/api/v1/admin/chatflows/sync",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = stack
        .request(
            reqwest::Method::PUT,
            "predict",
            &format!("/api/v1/admin/chatflows/{FLOW}"),
            Some(&admin),
            Some(json!({"isPublic": true})),
        )
        .await;
    assert_eq!(status, 200);
    let tokens: Vec<String> = (0..16)
        .map(|c| stack.token(&format!("bench-{c}"), Role::Enduser))
        .collect();
    for c in 0..16 {
        shared::testing::grant(&stack.pg.pool, &format!("bench-{c}"), 1_000_000_000).await;
    }
    let http = stack.http.clone();
    let direct_url = format!("{}/api/v1/prediction/{FLOW}", flowise.url);
    let gateway_url = stack.url("predict", "/api/v1/chat/predict");
    let stream_url = stack.url("predict-stream", "/api/v1/chat/predict/stream");

    let buffered = |target: Target| {
        let (http, direct_url, gateway_url, tokens) = (
            http.clone(),
            direct_url.clone(),
            gateway_url.clone(),
            tokens.clone(),
        );
        move |client: usize| {
            let (http, direct_url, gateway_url, token) = (
                http.clone(),
                direct_url.clone(),
                gateway_url.clone(),
                tokens[client].clone(),
            );
            async move {
                let started = Instant::now();
                let res = match target {
                    Target::Direct => {
                        http.post(&direct_url)
                            .json(&json!({"question": "Hi there"}))
                            .send()
                            .await
                    }
                    Target::Gateway => {
                        http.post(&gateway_url)
                            .bearer_auth(token)
                            .json(&json!({"chatflow_id": FLOW, "question": "Hi there"}))
                            .send()
                            .await
                    }
                }
                .expect("send");
                assert_eq!(res.status(), 200);
                res.bytes().await.expect("body");
                started.elapsed()
            }
        }
    };
    let first_token = |target: Target| {
        let (http, direct_url, stream_url, tokens) = (
            http.clone(),
            direct_url.clone(),
            stream_url.clone(),
            tokens.clone(),
        );
        move |client: usize| {
            let (http, direct_url, stream_url, token) = (
                http.clone(),
                direct_url.clone(),
                stream_url.clone(),
                tokens[client].clone(),
            );
            async move {
                let started = Instant::now();
                let res = match target {
                    Target::Direct => {
                        http.post(&direct_url)
                            .json(&json!({"question": "Hi there", "streaming": true}))
                            .send()
                            .await
                    }
                    Target::Gateway => {
                        http.post(&stream_url)
                            .bearer_auth(token)
                            .json(&json!({"chatflow_id": FLOW, "question": "Hi there"}))
                            .send()
                            .await
                    }
                }
                .expect("send");
                assert_eq!(res.status(), 200);
                let mut body = res.bytes_stream();
                let mut seen = String::new();
                let mut first = None;
                while let Some(chunk) = body.next().await {
                    seen.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
                    if seen.contains("\"token\"") || seen.contains("event: token") {
                        first.get_or_insert_with(|| started.elapsed());
                    }
                }
                first.expect("a token arrived")
            }
        }
    };

    // Warm every instance and connection pool first.
    measure(16, 64, buffered(Target::Gateway)).await;
    measure(16, 64, first_token(Target::Gateway)).await;

    println!("| measure | straight to the double | through the gateway | gateway overhead |");
    println!("|---|---|---|---|");
    for clients in [1, 16] {
        let total = if clients == 1 { 200 } else { 800 };
        let direct = measure(clients, total, buffered(Target::Direct)).await;
        let gateway = measure(clients, total, buffered(Target::Gateway)).await;
        for (label, p) in [("p50", 0.5), ("p95", 0.95)] {
            let (d, g) = (percentile(&direct, p), percentile(&gateway, p));
            println!(
                "| buffered prediction, {clients} client{}, {label} | {} | {} | {} |",
                if clients == 1 { "" } else { "s" },
                ms(d),
                ms(g),
                ms(g.saturating_sub(d))
            );
        }
    }
    let direct = measure(1, 200, first_token(Target::Direct)).await;
    let gateway = measure(1, 200, first_token(Target::Gateway)).await;
    for (label, p) in [("p50", 0.5), ("p95", 0.95)] {
        let (d, g) = (percentile(&direct, p), percentile(&gateway, p));
        println!(
            "| time to first token, streamed, 1 client, {label} | {} | {} | {} |",
            ms(d),
            ms(g),
            ms(g.saturating_sub(d))
        );
    }
}
