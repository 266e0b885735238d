//! Deductions per second at 16 concurrent clients, four ways:
//!
//! 1. over HTTP through the credits function (16 function instances behind
//!    the Lambda emulator, as Lambda scales out to 16 concurrent requests);
//! 2. over HTTP through `gateway-admin serve` (every router in one process);
//! 3. directly through the shared ledger code (`ledger::changes::deduct`);
//! 4. the same SQL statements driven by `pgbench`: the database's ceiling.
//!
//! Each runs twice: every client on its own account (the usual case), and
//! all clients on one account (the worst case: the account lock serialises
//! them). Run with `make bench-ledger` (needs PostgreSQL, as the tests do);
//! it prints a Markdown table for BENCHMARKS.md.

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use serde_json::json;
use shared::ledger::Credits;
use shared::ledger::{changes, EntryMeta};
use shared::testing::TestPostgres;
use shared::token::Role;
use sqlx::PgPool;

const CLIENTS: usize = 16;
const SECONDS: u64 = 10;
const GRANT: i64 = 100_000_000;

fn user_of(client: usize, shared_account: bool) -> String {
    if shared_account {
        "bench-shared".to_owned()
    } else {
        format!("bench-{client}")
    }
}

async fn grant(pool: &PgPool, user: &str) {
    shared::testing::grant(pool, user, GRANT).await;
}

async fn grant_all(pool: &PgPool, shared_account: bool) {
    for c in 0..CLIENTS {
        grant(pool, &user_of(c, shared_account)).await;
        if shared_account {
            break;
        }
    }
}

/// Runs `CLIENTS` loops of `op` for `SECONDS`; returns operations per second.
async fn drive<F, Fut>(op: F) -> f64
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = bool> + Send,
{
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let op = op.clone();
            tokio::spawn(async move {
                let mut done = 0u64;
                while Instant::now() < deadline {
                    assert!(op(client).await, "a deduction failed");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for t in tasks {
        total += t.await.expect("client");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

async fn direct(shared_account: bool) -> f64 {
    let db = TestPostgres::new().await;
    grant_all(&db.pool, shared_account).await;
    let pool = db.pool.clone();
    drive(move |client| {
        let pool = pool.clone();
        async move {
            let user = user_of(client, shared_account);
            let mut tx = pool.begin().await.expect("begin");
            let one = Credits::parse("credits", 1).expect("credits");
            let user = shared::ids::UserId::parse("userId", &user).expect("user id");
            let ok = changes::deduct(&mut tx, &user, one, &EntryMeta::default())
                .await
                .is_ok();
            tx.commit().await.expect("commit");
            ok
        }
    })
    .await
}

/// Through the credits function: `CLIENTS` instances behind the Lambda
/// emulator, or (`serve`) every router in one `gateway-admin serve`.
async fn over_http(shared_account: bool, serve: bool) -> f64 {
    let stack = Stack::start_with(StackOptions {
        functions: Some(vec!["credits"]),
        instances: CLIENTS,
        env: vec![("RUST_LOG".into(), "warn".into())],
        serve,
        ..Default::default()
    })
    .await;
    grant_all(&stack.pg.pool, shared_account).await;
    let tokens: Vec<String> = (0..CLIENTS)
        .map(|c| stack.token(&user_of(c, shared_account), Role::Enduser))
        .collect();
    let url = stack.url("credits", "/api/credits/deduct");
    let http = stack.http.clone();
    drive(move |client| {
        let (http, url, token) = (http.clone(), url.clone(), tokens[client].clone());
        async move {
            let res = http
                .post(&url)
                .bearer_auth(token)
                .json(&json!({"credits": 1}))
                .send()
                .await
                .expect("send");
            res.status() == 200
        }
    })
    .await
}

/// One deduction as the ledger runs it, in pgbench's script language:
/// the account locked (with the due-expiry flag), the entry, the draw in
/// one statement, the total.
const PGBENCH_SCRIPT: &str = r#"
\set uid :client_id
BEGIN;
SELECT total_credits, EXISTS (SELECT 1 FROM credit_allocations c WHERE c.user_id = a.user_id AND c.expired_at IS NULL AND c.expires_at <= now()) FROM user_accounts a WHERE a.user_id = :acct FOR UPDATE;
INSERT INTO credit_transactions (id, user_id, type, amount, balance_after) VALUES (gen_random_uuid(), :acct, 'deduction', -1, 0);
WITH spendable AS (SELECT id, remaining, (SUM(remaining) OVER (ORDER BY expires_at ASC NULLS LAST, allocated_at, id))::bigint - remaining AS before FROM credit_allocations WHERE user_id = :acct AND remaining > 0 AND expired_at IS NULL), taken AS (SELECT id, LEAST(remaining, 1 - before) AS take FROM spendable WHERE before < 1), drawn AS (UPDATE credit_allocations a SET remaining = a.remaining - t.take FROM taken t WHERE a.id = t.id RETURNING a.id, t.take) INSERT INTO credit_draws (transaction_id, allocation_id, amount) SELECT (SELECT id FROM credit_transactions WHERE user_id = :acct ORDER BY seq DESC LIMIT 1), id, take FROM drawn RETURNING amount;
UPDATE user_accounts SET total_credits = total_credits - 1, updated_at = now() WHERE user_id = :acct;
COMMIT;
"#;

async fn pgbench(shared_account: bool) -> Option<f64> {
    let db = TestPostgres::new().await;
    grant_all(&db.pool, shared_account).await;
    let script = std::env::temp_dir().join(format!("bench-ledger-{}.sql", std::process::id()));
    let acct = if shared_account {
        "'bench-shared'".to_owned()
    } else {
        "('bench-' || :uid)".to_owned()
    };
    std::fs::write(&script, PGBENCH_SCRIPT.replace(":acct", &acct)).ok()?;
    let out = tokio::process::Command::new("pgbench")
        .args([
            "-n",
            "-M",
            "prepared",
            "-c",
            &CLIENTS.to_string(),
            "-j",
            "2",
            "-T",
            &SECONDS.to_string(),
            "-f",
        ])
        .arg(&script)
        .arg(&db.url)
        .output()
        .await
        .ok()?;
    let _ = std::fs::remove_file(&script);
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        eprintln!(
            "pgbench failed: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        return None;
    }
    // "tps = 1234.567 (without initial connection time)"
    text.lines()
        .find_map(|l| l.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

#[tokio::main]
async fn main() {
    println!("| path (16 clients, {SECONDS} s each) | own account each | one shared account |");
    println!("|---|---|---|");
    let http = (over_http(false, false).await, over_http(true, false).await);
    println!(
        "| HTTP through the credits function (16 instances, Lambda emulator) | {:.0}/s | {:.0}/s |",
        http.0, http.1
    );
    let served = (over_http(false, true).await, over_http(true, true).await);
    println!(
        "| HTTP through `gateway-admin serve` (one process) | {:.0}/s | {:.0}/s |",
        served.0, served.1
    );
    let direct = (direct(false).await, direct(true).await);
    println!(
        "| shared ledger code, in-process | {:.0}/s | {:.0}/s |",
        direct.0, direct.1
    );
    let show = |v: Option<f64>| {
        v.map(|v| format!("{v:.0}/s"))
            .unwrap_or_else(|| "n/a".into())
    };
    let pg = (pgbench(false).await, pgbench(true).await);
    println!(
        "| the same SQL through pgbench | {} | {} |",
        show(pg.0),
        show(pg.1)
    );
}
