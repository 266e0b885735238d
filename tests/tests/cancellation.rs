//! Requests cut off half-way (issue 22, point 12). Clients hang up at
//! random points of money requests (allocations, deductions, predictions)
//! under load, served from one process (`gateway-admin serve`, where a
//! dropped connection drops the request's work) and by the Lambda
//! emulator. Afterwards every account's total equals its allocations and
//! its entries, no connection sits idle inside a transaction, and the
//! server logged none of PostgreSQL's "there is already a transaction in
//! progress" or "there is no transaction in progress". (The window itself,
//! a `BEGIN` dropped before it answered, is shown deterministically in
//! `shared/tests/transactions.rs`.)

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use serde_json::json;
use shared::flowise_double::{split_tokens, Behaviour, FlowiseDouble};
use shared::token::Role;

/// A small deterministic generator: the same cut-off points every run.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self, below: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % below
    }
}

async fn stack(serve: bool, flowise: &FlowiseDouble) -> Stack {
    Stack::start_with(StackOptions {
        serve,
        functions: (!serve).then(|| vec!["credits", "predict"]),
        env: vec![("FLOWISE_API_URL".into(), flowise.url.clone())],
        ..Default::default()
    })
    .await
}

/// 240 money requests at once, each from a client that gives up after a
/// random time: half within 4 ms, in steps of a microsecond (where the
/// work's first transactions begin), half within 40 ms (anywhere in it).
async fn cut_off_under_load(stack: &Stack, seed: u64) {
    let admin = stack.token("admin-1", Role::Admin);
    let mut rng = Lcg(seed);
    let requests = (0..240).map(|n| {
        let user = format!("cut-{}", n % 8);
        let token = stack.token(&user, Role::Enduser);
        let (url, body, bearer) = match n % 3 {
            0 => (
                stack.url("credits", "/api/credits/allocate"),
                json!({"userId": user, "credits": 5}),
                admin.clone(),
            ),
            1 => (
                stack.url("credits", "/api/credits/deduct"),
                json!({"credits": 1}),
                token,
            ),
            _ => (
                stack.url("predict", "/api/v1/chat/predict"),
                json!({"chatflow_id": "flow-cut", "question": "Hi"}),
                token,
            ),
        };
        let wait = if n % 2 == 0 {
            Duration::from_micros(rng.next(4_000))
        } else {
            Duration::from_millis(rng.next(40))
        };
        let key = format!("cut-{n}");
        async move {
            let client = reqwest::Client::builder().timeout(wait).build().unwrap();
            let _ = client
                .post(url)
                .bearer_auth(bearer)
                .header("idempotency-key", key)
                .json(&body)
                .send()
                .await;
        }
    });
    futures_util::future::join_all(requests).await;
}

/// Connections of the functions' database left inside a transaction.
async fn idle_in_transaction(stack: &Stack) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
          WHERE datname = current_database() AND state LIKE 'idle in transaction%'
            AND pid <> pg_backend_pid()",
    )
    .fetch_one(&stack.pg.pool)
    .await
    .unwrap()
}

async fn hang_ups_leave_nothing_half_done(serve: bool) {
    let flowise = FlowiseDouble::start().await;
    let answer = Behaviour::Answer {
        tokens: split_tokens("a short answer"),
        delay: Duration::from_millis(5),
        usage: None,
        heartbeat: false,
    };
    flowise.add_flow("flow-cut", "Cut", answer);
    let stack = stack(serve, &flowise).await;
    let admin = stack.token("admin-1", Role::Admin);
    stack.sync_chatflows(&admin).await;
    stack.open_chatflow(&admin, "flow-cut", None).await;
    for n in 0..8 {
        stack.allocate(&admin, &format!("cut-{n}"), 50).await;
    }
    for seed in 1..=2 {
        cut_off_under_load(&stack, seed).await;
    }
    // Work a dropped request left running finishes; nothing stays open.
    let deadline = Instant::now() + Duration::from_secs(10);
    while idle_in_transaction(&stack).await > 0 {
        assert!(
            Instant::now() < deadline,
            "a connection sits idle inside a transaction"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        shared::testing::inconsistent_accounts(&stack.pg.pool).await,
        0
    );
    // The server still answers, from every pooled connection.
    for n in 0..8 {
        let token = stack.token(&format!("cut-{n}"), Role::Enduser);
        let (status, body) = stack.get("credits", "/api/credits/balance", &token).await;
        assert_eq!(status, 200, "{body}");
    }
    let logs = format!("{}{}", stack.logs("credits"), stack.logs("predict"));
    for warning in [
        "there is already a transaction in progress",
        "there is no transaction in progress",
    ] {
        assert!(!logs.contains(warning), "the server logged {warning:?}");
    }
}

#[tokio::test]
async fn hang_ups_under_serve_leave_no_connection_in_a_transaction_and_no_money_half_moved() {
    hang_ups_leave_nothing_half_done(true).await;
}

#[tokio::test]
async fn hang_ups_through_the_emulator_leave_no_connection_in_a_transaction_and_no_money_half_moved(
) {
    hang_ups_leave_nothing_half_done(false).await;
}
