//! What allowances and warnings add to every prediction (README
//! "Allowances and warnings"), against real PostgreSQL:
//!
//! 1. the allowance check in the reservation's transaction
//!    (`allowances::grant_due` when nothing is due, the case of every
//!    prediction but a period's first): one client, 2,000 calls each for a
//!    user with no allowance, with their role's, and with their role's and
//!    three teams' (the SQL function `allowances_of` behind it);
//! 2. the warning trigger on every entry (`warn_on_entry`, run as the
//!    transaction commits): deductions per second at 16 clients, each on
//!    its own account, with the trigger and with it disabled.
//!
//! Run with `make bench-allowances`; it prints Markdown for BENCHMARKS.md.

use std::time::{Duration, Instant};

use chrono::Utc;
use shared::ids::UserId;
use shared::ledger::allowances::{self, AllowanceSetting, Granter};
use shared::ledger::primitives::lock_account;
use shared::ledger::{changes, Credits, EntryMeta};
use shared::testing::TestPostgres;
use sqlx::PgPool;

const CALLS: usize = 2_000;
const CLIENTS: usize = 16;
const SECONDS: u64 = 10;

fn uid(user: &str) -> UserId {
    UserId::parse("userId", user).expect("user id")
}

fn monthly(credits: i64) -> AllowanceSetting {
    AllowanceSetting {
        credits,
        period: "month".into(),
        rollover_cap: None,
        time_zone: "UTC".into(),
    }
}

async fn set(pool: &PgPool, key: &str, credits: i64) {
    let mut tx = pool.begin().await.expect("begin");
    allowances::set(&mut tx, key, Some(&monthly(credits)), Utc::now(), "bench")
        .await
        .expect("set");
    tx.commit().await.expect("commit");
}

async fn enduser(pool: &PgPool, user: &str) {
    shared::testing::grant(pool, user, 100_000_000).await;
    sqlx::query("UPDATE user_accounts SET role = 'enduser' WHERE user_id = $1")
        .bind(user)
        .execute(pool)
        .await
        .expect("role");
}

/// One reservation-like transaction: lock, the allowance check, commit;
/// returns how long the check took.
async fn check(pool: &PgPool, user: &UserId) -> Duration {
    let mut tx = pool.begin().await.expect("begin");
    let locked = lock_account(&mut tx, user).await.expect("lock");
    let started = Instant::now();
    allowances::grant_due(&mut tx, user, locked, Utc::now(), Granter::Request)
        .await
        .expect("grant_due");
    let took = started.elapsed();
    tx.commit().await.expect("commit");
    took
}

/// p50 and p95 of `CALLS` checks for `user` (after 100 to warm up; the
/// first also makes the period's grants, so the rest find nothing due).
async fn checks(pool: &PgPool, user: &str) -> (f64, f64) {
    let user = uid(user);
    for _ in 0..100 {
        check(pool, &user).await;
    }
    let mut times: Vec<f64> = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        times.push(check(pool, &user).await.as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    (times[CALLS / 2], times[CALLS * 95 / 100])
}

/// Deductions of 1 per second at `CLIENTS` clients, each on its own account.
async fn deductions(pool: &PgPool) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(SECONDS);
    let started = Instant::now();
    let tasks: Vec<_> = (0..CLIENTS)
        .map(|client| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let user = uid(&format!("spender-{client}"));
                let one = Credits::try_from(1).expect("credits");
                let mut done = 0u64;
                while Instant::now() < deadline {
                    let mut tx = pool.begin().await.expect("begin");
                    changes::deduct(&mut tx, &user, one, &EntryMeta::default())
                        .await
                        .expect("deduct");
                    tx.commit().await.expect("commit");
                    done += 1;
                }
                done
            })
        })
        .collect();
    let mut total = 0;
    for task in tasks {
        total += task.await.expect("client");
    }
    total as f64 / started.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let db = TestPostgres::new().await;
    let pool = &db.pool;
    for user in ["none", "role", "teams"] {
        enduser(pool, user).await;
    }
    sqlx::query("UPDATE user_accounts SET role = 'supervisor' WHERE user_id = 'none'")
        .execute(pool)
        .await
        .expect("role");
    set(pool, "role:enduser", 100).await;
    for (i, name) in ["Alpha", "Beta", "Gamma"].iter().enumerate() {
        let team = format!("0190f000-0000-7000-8000-0000000be{i:03}");
        shared::testing::team(pool, &team, name, &["teams"], 1_000_000).await;
        set(pool, &format!("team:{team}"), 10).await;
    }
    println!("| the allowance check of a reservation (1 client, {CALLS} calls) | p50 | p95 |");
    println!("|---|---|---|");
    for (user, who) in [
        ("none", "no allowance"),
        ("role", "their role's allowance"),
        ("teams", "their role's and three teams'"),
    ] {
        let (p50, p95) = checks(pool, user).await;
        println!("| a user with {who} | {p50:.3} ms | {p95:.3} ms |");
    }

    for client in 0..CLIENTS {
        shared::testing::grant(pool, &format!("spender-{client}"), 100_000_000).await;
    }
    // Two rounds, alternating, so what drifts over the run (the tables
    // growing, the machine) falls on both alike.
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        for (on, rates) in [(true, &mut with), (false, &mut without)] {
            let switch = if on { "ENABLE" } else { "DISABLE" };
            sqlx::query(&format!(
                "ALTER TABLE credit_transactions {switch} TRIGGER credit_transactions_warn"
            ))
            .execute(pool)
            .await
            .expect("switch");
            rates.push(format!("{:.0}/s", deductions(pool).await));
        }
    }
    let (with, without) = (with.join(", "), without.join(", "));
    println!();
    println!(
        "| deductions of 1 ({CLIENTS} clients, own accounts, {SECONDS} s a round) | per second, round 1, round 2 |"
    );
    println!("|---|---|");
    println!("| with the warning trigger | {with} |");
    println!("| with it disabled | {without} |");
}
