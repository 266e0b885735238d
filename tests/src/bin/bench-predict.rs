//! The gateway's own overhead on a prediction, and what one costs in
//! round trips to the stores. Run with `make bench-predict` (needs
//! PostgreSQL and MongoDB, as the tests do); prints Markdown for
//! BENCHMARKS.md.
//!
//! - **Round trips**: one buffered prediction at a time through one
//!   instance whose PostgreSQL and MongoDB connections pass through
//!   counting proxies ([`e2e::wire`]); the median of 30 after a warm-up.
//! - **Overhead**: a buffered prediction's latency through the gateway
//!   minus the same call made straight to the Flowise double, and the
//!   time to the first token of a streamed answer against straight to the
//!   double; through the Lambda emulator and through `gateway-admin
//!   serve`. At 1 client, every variant runs one warm instance of each
//!   function at the same time and the requests take turns, so drift over
//!   the run is shared; at 16 clients, each variant runs 16 instances in
//!   rounds that start every variant afresh in a rotating order.
//!
//! `bench-predict round-trips` prints the round trips alone.
//!
//! With `BENCH_BASELINE=<folder>` (release `predict` and `predict-stream`
//! of another commit; `make bench-predict` builds them with
//! `local/baseline.sh`), the baseline is measured the same way in the
//! same run, and `BENCH_BASELINE_NAME` labels it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use e2e::wire::CountingProxy;
use e2e::{Stack, StackOptions};
use futures_util::StreamExt;
use serde_json::json;
use shared::flowise_double::{Behaviour, FlowiseDouble};
use shared::token::Role;

const FLOW: &str = "bench-flow";
const ANSWER: &str = "Hello from the fake OpenAI server!";
const CLIENTS: usize = 16;
/// Predictions counted, one at a time, for the round trips.
const COUNTED: usize = 30;

/// A build of the gateway and how it is run.
#[derive(Clone)]
struct Variant {
    label: String,
    /// Release binaries of another build (`None`: this build's).
    binaries: Option<PathBuf>,
    serve: bool,
}

/// Where requests go: the gateway (with a token per client) or straight
/// to the double.
#[derive(Clone)]
struct Endpoint {
    http: reqwest::Client,
    buffered: String,
    stream: String,
    /// `None`: straight to the double.
    tokens: Option<Arc<Vec<String>>>,
}

#[derive(Clone, Copy)]
enum Kind {
    Buffered,
    FirstToken,
}

impl Endpoint {
    fn direct(flowise: &FlowiseDouble) -> Endpoint {
        let url = format!("{}/api/v1/prediction/{FLOW}", flowise.url);
        Endpoint {
            http: reqwest::Client::new(),
            buffered: url.clone(),
            stream: url,
            tokens: None,
        }
    }

    fn gateway(stack: &Stack) -> Endpoint {
        let tokens = (0..CLIENTS)
            .map(|c| stack.token(&format!("bench-{c}"), Role::Enduser))
            .collect();
        Endpoint {
            http: stack.http.clone(),
            buffered: stack.url("predict", "/api/v1/chat/predict"),
            stream: stack.url("predict-stream", "/api/v1/chat/predict/stream"),
            tokens: Some(Arc::new(tokens)),
        }
    }

    fn request(&self, kind: Kind, client: usize) -> reqwest::RequestBuilder {
        let (url, streaming) = match kind {
            Kind::Buffered => (&self.buffered, false),
            Kind::FirstToken => (&self.stream, true),
        };
        match &self.tokens {
            None => self
                .http
                .post(url)
                .json(&json!({"question": "Hi there", "streaming": streaming})),
            Some(tokens) => self
                .http
                .post(url)
                .bearer_auth(&tokens[client])
                .json(&json!({"chatflow_id": FLOW, "question": "Hi there"})),
        }
    }

    /// One request: the whole buffered answer, or the first token.
    async fn once(&self, kind: Kind, client: usize) -> Duration {
        let started = Instant::now();
        let res = self.request(kind, client).send().await.expect("send");
        assert_eq!(res.status(), 200);
        if let Kind::Buffered = kind {
            res.bytes().await.expect("body");
            return started.elapsed();
        }
        let mut body = res.bytes_stream();
        let (mut seen, mut first) = (String::new(), None);
        while let Some(chunk) = body.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
            if seen.contains("\"token\"") || seen.contains("event: token") {
                first.get_or_insert_with(|| started.elapsed());
            }
        }
        first.expect("a token arrived")
    }

    /// `total` requests over `clients` concurrent loops; their latencies.
    async fn measure(&self, kind: Kind, clients: usize, total: usize) -> Vec<Duration> {
        let loops = (0..clients).map(|client| async move {
            let mut out = Vec::new();
            for _ in 0..total / clients {
                out.push(self.once(kind, client).await);
            }
            out
        });
        futures_util::future::join_all(loops)
            .await
            .into_iter()
            .flatten()
            .collect()
    }
}

/// A stack of `variant` with the bench flow open and every bench user
/// funded; the stores reached through `proxies` when given.
async fn start(
    flowise: &FlowiseDouble,
    variant: &Variant,
    instances: usize,
    proxies: Option<(SocketAddr, SocketAddr)>,
) -> Stack {
    let stack = Stack::start_with(StackOptions {
        functions: Some(vec!["predict", "predict-stream"]),
        instances,
        env: vec![
            ("FLOWISE_API_URL".into(), flowise.url.clone()),
            ("RUST_LOG".into(), "warn".into()),
            // As deployed: the stack's database is migrated already, by
            // this build. A baseline that tried would find migrations it
            // does not know, fail, and (sqlx keeping its advisory lock on
            // the pooled connection) leave its other function waiting.
            ("MIGRATE_ON_START".into(), "false".into()),
            // One client sends far more than a person would; the baseline
            // had no rate limit, so this build runs at its highest.
            ("RATE_LIMIT_PER_MINUTE".into(), "10000".into()),
        ],
        binaries: variant.binaries.clone(),
        serve: variant.serve,
        postgres_at: proxies.map(|p| p.0),
        mongodb_at: proxies.map(|p| p.1),
        ..Default::default()
    })
    .await;
    let admin = stack.token("admin-1", Role::Admin);
    stack.sync_chatflows(&admin).await;
    stack.open_chatflow(&admin, FLOW, None).await;
    for c in 0..CLIENTS {
        shared::testing::grant(&stack.pg.pool, &format!("bench-{c}"), 1_000_000_000).await;
    }
    stack
}

fn store_address(url: &str) -> SocketAddr {
    let url = reqwest::Url::parse(url).expect("a store URL");
    let host = url.host_str().expect("a host");
    let port = url.port().expect("a port");
    format!("{host}:{port}").parse().expect("an IP address")
}

/// What one buffered prediction cost, through the counting proxies.
struct Counted {
    pg: u64,
    mongo: u64,
    pg_waited: Duration,
    mongo_waited: Duration,
    whole: Duration,
}

/// Median PostgreSQL and MongoDB round trips of one buffered prediction,
/// the median time spent waiting on each store, and the median latency.
async fn round_trips(flowise: &FlowiseDouble, variant: &Variant) -> Counted {
    let pg = CountingProxy::start(store_address(&shared::testing::postgres_base_url())).await;
    let mongo = CountingProxy::start(store_address(&shared::testing::mongodb_base_uri())).await;
    let stack = start(flowise, variant, 1, Some((pg.address, mongo.address))).await;
    let gateway = Endpoint::gateway(&stack);
    gateway.measure(Kind::Buffered, 1, 5).await;
    let mut counted = Vec::new();
    for _ in 0..COUNTED {
        let before = (pg.round_trips(), mongo.round_trips());
        let waited = (pg.waited(), mongo.waited());
        let whole = gateway.once(Kind::Buffered, 0).await;
        counted.push(Counted {
            pg: pg.round_trips() - before.0,
            mongo: mongo.round_trips() - before.1,
            pg_waited: pg.waited() - waited.0,
            mongo_waited: mongo.waited() - waited.1,
            whole,
        });
    }
    Counted {
        pg: median(counted.iter().map(|c| c.pg)),
        mongo: median(counted.iter().map(|c| c.mongo)),
        pg_waited: median(counted.iter().map(|c| c.pg_waited)),
        mongo_waited: median(counted.iter().map(|c| c.mongo_waited)),
        whole: median(counted.iter().map(|c| c.whole)),
    }
}

fn median<T: Ord + Copy>(values: impl Iterator<Item = T>) -> T {
    let mut values: Vec<T> = values.collect();
    values.sort_unstable();
    percentile(&values, 0.5)
}

fn percentile<T: Copy>(sorted: &[T], p: f64) -> T {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

/// The rows of the overhead table measured one request at a time: what
/// is measured, and how.
const ONE_CLIENT: &[(&str, Kind)] = &[
    ("buffered prediction, 1 client", Kind::Buffered),
    ("time to first token, streamed, 1 client", Kind::FirstToken),
];
/// Requests per variant in each one-client row.
const ONE_CLIENT_REQUESTS: usize = 200;
/// Requests each variant gets before the one-client rows are measured.
const WARM_UP: usize = 20;

/// The one-client rows. One client's requests, one after another, need
/// one instance of each function, warm (as Lambda keeps one for a steady
/// client): every variant's stack runs with one instance at the same time,
/// each is warmed, and then the requests take turns (every variant's
/// first, straight to the double included, then every variant's second,
/// the order rotating), so whatever drifts over the run (the machine, the
/// MongoDB server) falls on every variant alike, and every variant's
/// stores hold as much at every step.
async fn one_client(flowise: &FlowiseDouble, variants: &[Variant]) -> Vec<Vec<Vec<Duration>>> {
    let mut stacks = Vec::new();
    for variant in variants {
        stacks.push(start(flowise, variant, 1, None).await);
    }
    let endpoints: Vec<Endpoint> = std::iter::once(Endpoint::direct(flowise))
        .chain(stacks.iter().map(Endpoint::gateway))
        .collect();
    for endpoint in &endpoints {
        for &(_, kind) in ONE_CLIENT {
            endpoint.measure(kind, 1, WARM_UP).await;
        }
    }
    let mut latencies = vec![vec![Vec::new(); ONE_CLIENT.len()]; endpoints.len()];
    for (row, &(_, kind)) in ONE_CLIENT.iter().enumerate() {
        for i in 0..ONE_CLIENT_REQUESTS {
            for turn in 0..endpoints.len() {
                let e = (i + turn) % endpoints.len();
                latencies[e][row].push(endpoints[e].once(kind, 0).await);
            }
        }
    }
    latencies
}

/// The concurrent rows: what is measured, at what concurrency and how many
/// requests.
const CONCURRENT: &[(&str, Kind, usize, usize)] = &[(
    "buffered prediction, 16 clients",
    Kind::Buffered,
    CLIENTS,
    800,
)];

/// Rounds the concurrent rows are split into. Each round starts every
/// variant's stack afresh (16 instances of each function, as Lambda
/// scales out to 16 concurrent requests), one at a time (they each hold
/// connections), in an order that rotates, and measures a share of every
/// row: whatever drifts over a run falls on every variant alike.
const ROUNDS: usize = 4;

/// The concurrent rows, straight to the double and through each variant.
async fn concurrent(flowise: &FlowiseDouble, variants: &[Variant]) -> Vec<Vec<Vec<Duration>>> {
    let mut latencies = vec![vec![Vec::new(); CONCURRENT.len()]; variants.len() + 1];
    for round in 0..ROUNDS {
        share(&mut latencies[0], &Endpoint::direct(flowise)).await;
        for turn in 0..variants.len() {
            let v = (round + turn) % variants.len();
            let stack = start(flowise, &variants[v], CLIENTS, None).await;
            let gateway = Endpoint::gateway(&stack);
            gateway.measure(Kind::Buffered, CLIENTS, 32).await;
            share(&mut latencies[v + 1], &gateway).await;
        }
    }
    latencies
}

/// One round's share of every concurrent row through `endpoint`.
async fn share(into: &mut [Vec<Duration>], endpoint: &Endpoint) {
    for (row, &(_, kind, clients, total)) in CONCURRENT.iter().enumerate() {
        into[row].extend(endpoint.measure(kind, clients, total / ROUNDS).await);
    }
}

/// Prints the overhead table: straight to the double, then each
/// variant's latency with its overhead.
async fn overhead(flowise: &FlowiseDouble, variants: &[Variant]) {
    let one = one_client(flowise, variants).await;
    let many = concurrent(flowise, variants).await;
    let labels: Vec<&str> = variants.iter().map(|v| v.label.as_str()).collect();
    println!(
        "| measure | straight to the double | {} |",
        labels.join(" | ")
    );
    println!("|---|---|{}", "---|".repeat(variants.len()));
    let rows = ONE_CLIENT
        .iter()
        .map(|r| r.0)
        .enumerate()
        .map(|(row, label)| (label, &one, row))
        .chain(
            CONCURRENT
                .iter()
                .enumerate()
                .map(|(row, r)| (r.0, &many, row)),
        );
    for (label, measured, row) in rows {
        let mut sorted: Vec<Vec<Duration>> = measured.iter().map(|m| m[row].clone()).collect();
        for latencies in &mut sorted {
            latencies.sort();
        }
        for (p_label, p) in [("p50", 0.5), ("p95", 0.95)] {
            let d = percentile(&sorted[0], p);
            let cells: Vec<String> = sorted[1..]
                .iter()
                .map(|g| {
                    let g = percentile(g, p);
                    format!("{} (+{})", ms(g), ms(g.saturating_sub(d)))
                })
                .collect();
            println!("| {label}, {p_label} | {} | {} |", ms(d), cells.join(" | "));
        }
    }
}

fn variants() -> Vec<Variant> {
    let mut out = Vec::new();
    if let Some(binaries) = std::env::var_os("BENCH_BASELINE") {
        let name = std::env::var("BENCH_BASELINE_NAME").unwrap_or_else(|_| "baseline".into());
        out.push(Variant {
            label: format!("{name}, Lambda emulator"),
            binaries: Some(binaries.into()),
            serve: false,
        });
    }
    out.push(Variant {
        label: "this build, Lambda emulator".into(),
        binaries: None,
        serve: false,
    });
    out.push(Variant {
        label: "this build, gateway-admin serve".into(),
        binaries: None,
        serve: true,
    });
    out
}

#[tokio::main]
async fn main() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow(FLOW, "Bench", Behaviour::answer(ANSWER));
    let variants = variants();
    println!(
        "| build | PostgreSQL round trips | MongoDB round trips | waiting on PostgreSQL | waiting on MongoDB | whole prediction |"
    );
    println!("|---|---|---|---|---|---|");
    for variant in variants.iter().filter(|v| !v.serve) {
        let c = round_trips(&flowise, variant).await;
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            variant.label,
            c.pg,
            c.mongo,
            ms(c.pg_waited),
            ms(c.mongo_waited),
            ms(c.whole)
        );
    }
    if std::env::args().nth(1).as_deref() == Some("round-trips") {
        return;
    }
    println!();
    overhead(&flowise, &variants).await;
}
