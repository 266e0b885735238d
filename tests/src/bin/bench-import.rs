//! `gateway-admin import-platform` at a realistic size: 10,000 users,
//! 50,000 allocations (5 each, a third past their expiry), 50,000 usage
//! records and 100,000 messages (one session of 10 each), generated as
//! the platform writes them (`e2e::platform`). Runs the import, then runs
//! it again (everything already here), and reports each run's time and the
//! importer's peak resident memory, read from `/proc` while it runs; fails
//! when the peak passes `MAX_PEAK_MIB` (the import streams and writes in
//! batches: no store is ever held whole). Run with `make bench-import`
//! (`BENCH_IMPORT_USERS` sets a smaller size); it prints a Markdown table
//! for BENCHMARKS.md.

use std::time::{Duration, Instant};

use e2e::platform::{target_env, Platform, Size};
use shared::testing::{inconsistent_accounts, TestMongo, TestPostgres};

/// The importer's peak resident memory may not pass this.
const MAX_PEAK_MIB: u64 = 256;

/// The peak resident memory (`VmHWM`) of process `pid`, in KiB.
fn peak_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Runs the import; its time, peak memory and report.
async fn run(p: &Platform, env: &[(String, String)]) -> (Duration, u64, serde_json::Value) {
    let started = Instant::now();
    let mut child = p
        .import_command(env, &["--json"])
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("gateway-admin starts");
    let pid = child.id().expect("a pid");
    let mut stdout = child.stdout.take().expect("stdout");
    let reader = tokio::spawn(async move {
        let mut out = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut stdout, &mut out)
            .await
            .map(|_| out)
    });
    let mut peak = 0;
    loop {
        peak = peak.max(peak_kib(pid).unwrap_or(0));
        if let Some(status) = child.try_wait().expect("the child") {
            assert!(status.success(), "the import failed");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let elapsed = started.elapsed();
    let out = reader.await.expect("reader").expect("stdout read");
    let report = serde_json::from_slice(&out).expect("the JSON report");
    (elapsed, peak / 1024, report)
}

fn imported(report: &serde_json::Value, kind: &str) -> u64 {
    report[kind]["imported"].as_u64().unwrap_or(0)
}

/// The Markdown table BENCHMARKS.md keeps.
fn table(users: usize, runs: [(&str, Duration, u64); 2]) {
    println!("| run | users | allocations | usage records | messages | time | peak memory |");
    println!("|---|---|---|---|---|---|---|");
    for (name, time, mib) in runs {
        println!(
            "| {name} | {users} | {} | {} | {} | {:.1} s | {mib} MiB |",
            users * 5,
            users * 5,
            users * 10,
            time.as_secs_f64()
        );
    }
}

#[tokio::main]
async fn main() {
    let users: usize = std::env::var("BENCH_IMPORT_USERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let size = Size {
        users,
        allocations_per_user: 5,
        messages_per_user: 10,
    };
    e2e::stack::ensure_binaries_built();
    let p = Platform::empty().await;
    let generating = Instant::now();
    p.generate(size).await;
    eprintln!(
        "generated {size:?} in {:.1} s",
        generating.elapsed().as_secs_f64()
    );
    let (pg, mongo) = tokio::join!(TestPostgres::new(), TestMongo::new());
    let env = target_env(&pg.url, &mongo.config);
    let (first, first_peak, report) = run(&p, &env).await;
    assert_eq!(imported(&report, "users"), users as u64);
    assert_eq!(imported(&report, "allocations"), (users * 5) as u64);
    assert_eq!(imported(&report, "messages"), (users * 10) as u64);
    assert_eq!(
        inconsistent_accounts(&pg.pool).await,
        0,
        "every balance adds up"
    );
    let (second, second_peak, again) = run(&p, &env).await;
    for kind in [
        "users",
        "allocations",
        "usage",
        "messages",
        "sessions",
        "access",
    ] {
        assert_eq!(
            imported(&again, kind),
            0,
            "{kind}: nothing new on the second run"
        );
    }
    let peak = first_peak.max(second_peak);
    table(
        users,
        [
            ("first", first, first_peak),
            ("again (all here)", second, second_peak),
        ],
    );
    assert!(
        peak <= MAX_PEAK_MIB,
        "the importer's peak memory was {peak} MiB, over {MAX_PEAK_MIB}"
    );
}
