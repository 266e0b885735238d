//! No code outside the ledger's primitives begins or commits a database
//! transaction itself (issue 22, point 12): `ledger::primitives::begin`
//! and `commit` run the `BEGIN` and the `COMMIT` in tasks of their own, so
//! a request dropped half-way (a client hanging up on `gateway-admin
//! serve`) can never hand a connection back to the pool inside a
//! transaction sqlx does not know of. This test reads every source file of
//! the workspace's crates (tests and test helpers aside) and fails on a
//! `.begin()`, `.begin_with(..)` or `.commit()` called anywhere else; a
//! planted one is shown to be caught.

use std::path::{Path, PathBuf};

use syn::visit::Visit;

/// Where the calls are allowed: the primitives themselves, and the
/// settlement's savepoint (nested in a transaction the primitives began;
/// a savepoint dropped half-way makes sqlx close the connection).
const ALLOWED: &[&str] = &[
    "shared/src/ledger/primitives.rs",
    "shared/src/prediction/mod.rs",
];

struct Calls {
    found: Vec<String>,
}

impl<'ast> Visit<'ast> for Calls {
    fn visit_item_mod(&mut self, item: &'ast syn::ItemMod) {
        let is_test = item.attrs.iter().any(|a| {
            a.path().is_ident("cfg")
                && a.parse_args::<syn::Meta>()
                    .is_ok_and(|m| m.path().is_ident("test"))
        });
        if !is_test {
            syn::visit::visit_item_mod(self, item);
        }
    }

    fn visit_expr_method_call(&mut self, call: &'ast syn::ExprMethodCall) {
        let name = call.method.to_string();
        if matches!(name.as_str(), "begin" | "begin_with" | "commit") {
            self.found.push(name);
        }
        syn::visit::visit_expr_method_call(self, call);
    }
}

/// The transaction calls in `source`.
fn calls_in(source: &str) -> Vec<String> {
    let file = syn::parse_file(source).expect("the source parses");
    let mut calls = Calls { found: Vec::new() };
    calls.visit_file(&file);
    calls.found
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("a source directory") {
        let path = entry.expect("an entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn only_the_ledger_primitives_begin_or_commit_a_transaction() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut sources = Vec::new();
    for crate_dir in ["shared", "functions", "tools"] {
        let base = root.join(crate_dir);
        let dirs: Vec<PathBuf> = if crate_dir == "shared" {
            vec![base.join("src")]
        } else {
            std::fs::read_dir(&base)
                .expect("a crates directory")
                .map(|e| e.expect("an entry").path().join("src"))
                .filter(|p| p.is_dir())
                .collect()
        };
        for dir in dirs {
            rust_files(&dir, &mut sources);
        }
    }
    assert!(
        sources.len() > 40,
        "the sources were found: {}",
        sources.len()
    );
    let mut offenders = Vec::new();
    for path in sources {
        let relative = path
            .strip_prefix(&root)
            .expect("under the root")
            .to_string_lossy()
            .replace('\\', "/");
        if ALLOWED.contains(&relative.as_str())
            || relative.ends_with("/testing.rs")
            || relative.ends_with("/flowise_double.rs")
        {
            continue;
        }
        let source = std::fs::read_to_string(&path).expect("a source file");
        for call in calls_in(&source) {
            offenders.push(format!("{relative}: .{call}()"));
        }
    }
    assert!(
        offenders.is_empty(),
        "begin and commit through shared::ledger::primitives: {offenders:?}"
    );
}

#[test]
fn a_planted_begin_is_caught_and_a_test_module_is_not() {
    let planted =
        "async fn f(pool: &sqlx::PgPool) { let tx = pool.begin().await; tx.commit().await; }";
    assert_eq!(calls_in(planted), ["begin", "commit"]);
    let in_tests = "#[cfg(test)] mod tests { async fn f(p: &P) { p.begin().await; } }";
    assert!(calls_in(in_tests).is_empty());
}

/// Whether the pool's connection is inside a transaction block: in a
/// statement of its own, `now()` (the transaction's start) is the
/// statement's start; inside an older transaction it is earlier. Sent with
/// the simple protocol, so it is one statement on its own.
async fn in_transaction(pool: &sqlx::PgPool) -> bool {
    use sqlx::Row;
    sqlx::raw_sql("SELECT now() <> statement_timestamp()")
        .fetch_one(pool)
        .await
        .expect("the probe answers")
        .get::<bool, _>(0)
}

/// A pool of one connection that is not pinged before use (the step
/// between the checkout and the `BEGIN` is then no I/O at all).
async fn one_connection(url: &str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .test_before_acquire(false)
        .connect(url)
        .await
        .expect("connect")
}

#[tokio::test]
async fn a_begin_dropped_half_way_leaves_no_connection_inside_a_transaction() {
    use futures_util::FutureExt;
    use shared::ledger::primitives::begin;
    use shared::ledger::Durability;
    let db = shared::testing::TestPostgres::new().await;
    // The window: sqlx's own BEGIN, dropped once sent (its first poll sends
    // it and waits for the answer), hands its connection back to the pool
    // inside the transaction, for the next user to join.
    // (A BEGIN answered within its first poll shows no window: try again.)
    let mut tries = 0;
    let raw = loop {
        let raw = one_connection(&db.url).await;
        if raw.begin().now_or_never().is_none() {
            break raw;
        }
        raw.close().await;
        tries += 1;
        assert!(tries < 50, "the BEGIN was never under way when dropped");
    };
    assert!(in_transaction(&raw).await, "sqlx's window is not shown");
    raw.close().await;
    // The ledger's begin runs in a task of its own: dropped at the same
    // point, it finishes, and the transaction it made is rolled back.
    let pool = one_connection(&db.url).await;
    for durability in [Durability::Flushed, Durability::Relaxed] {
        let dropped = begin(&pool, durability).now_or_never();
        assert!(dropped.is_none(), "the BEGIN was under way when dropped");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert!(!in_transaction(&pool).await, "{durability:?}");
    }
}
