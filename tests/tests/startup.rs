//! A function with a missing or malformed variable stops at start-up with a
//! message naming it, and never prints the secret it was given.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use e2e::stack::run_until_exit;

const ACCESS: &str = "e2e-access-secret-0123456789abcdef0123";
const REFRESH: &str = "e2e-refresh-secret-0123456789abcdef012";

#[tokio::test]
async fn a_missing_variable_stops_start_up_naming_it() {
    let (ok, log) = run_until_exit(
        "credits",
        &[
            ("JWT_ACCESS_SECRET", ACCESS),
            ("JWT_REFRESH_SECRET", REFRESH),
        ],
    )
    .await;
    assert!(!ok);
    assert!(log.contains("DATABASE_URL"), "{log}");
}

#[tokio::test]
async fn a_short_jwt_secret_stops_start_up_without_printing_it() {
    let short = "only-twenty-nine-bytes-secret";
    let (ok, log) = run_until_exit(
        "usage",
        &[
            ("JWT_ACCESS_SECRET", short),
            ("JWT_REFRESH_SECRET", REFRESH),
            (
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
        ],
    )
    .await;
    assert!(!ok);
    assert!(
        log.contains("JWT_ACCESS_SECRET") && log.contains("32 bytes"),
        "{log}"
    );
    assert!(!log.contains(short), "the secret was printed: {log}");
}

#[tokio::test]
async fn a_malformed_timeout_stops_the_predict_function_naming_it() {
    let (ok, log) = start_predict_with("FLOWISE_TIMEOUT_SECONDS", "two minutes").await;
    assert!(!ok);
    assert!(log.contains("FLOWISE_TIMEOUT_SECONDS"), "{log}");
}

/// The predict function's environment with one variable changed.
async fn start_predict_with(name: &str, value: &str) -> (bool, String) {
    run_until_exit(
        "predict",
        &[
            ("JWT_ACCESS_SECRET", ACCESS),
            ("JWT_REFRESH_SECRET", REFRESH),
            (
                "DATABASE_URL",
                "postgres://postgres@127.0.0.1:5432/postgres",
            ),
            ("MONGODB_URI", "mongodb://127.0.0.1:1"),
            ("FLOWISE_API_URL", "http://127.0.0.1:3000"),
            (name, value),
        ],
    )
    .await
}

#[tokio::test]
async fn limits_that_would_lose_money_or_payloads_stop_start_up() {
    // The sweep could release a running prediction's reservation.
    let (ok, log) = start_predict_with("RESERVATION_TTL_MINUTES", "2").await;
    assert!(!ok);
    assert!(log.contains("RESERVATION_TTL_MINUTES"), "{log}");
    // API Gateway would cut the request before the answer.
    let (ok, log) = start_predict_with("FLOWISE_BUFFERED_TIMEOUT_SECONDS", "30").await;
    assert!(!ok);
    assert!(log.contains("FLOWISE_BUFFERED_TIMEOUT_SECONDS"), "{log}");
    // Base64 of the file would not fit Lambda's 6 MB payload.
    let (ok, log) = start_predict_with("MAX_UPLOAD_BYTES", "5242880").await;
    assert!(!ok);
    assert!(log.contains("MAX_UPLOAD_BYTES"), "{log}");
}

/// One Lambda instance serves one request at a time, so every function
/// runs tokio's single-threaded runtime: its I/O wakes the one thread
/// that polls it, never a worker on another core (BENCHMARKS.md,
/// "Predictions"). `gateway-admin serve`, a server, keeps the
/// multi-threaded one.
#[test]
fn every_function_runs_the_single_threaded_runtime() {
    for function in e2e::ALL_FUNCTIONS {
        let path = format!(
            "{}/../functions/{function}/src/main.rs",
            env!("CARGO_MANIFEST_DIR")
        );
        let main = std::fs::read_to_string(&path).expect("the function's main.rs");
        assert!(
            main.contains("#[tokio::main(flavor = \"current_thread\")]"),
            "{path} must start a current_thread runtime"
        );
    }
}

/// AWS-LC, the TLS clients' crypto, is built without its CPU-jitter
/// entropy source (`AWS_LC_SYS_NO_JITTER_ENTROPY` in `.cargo/config.toml`):
/// collecting it held every cold start's first TLS handshake for about
/// 30 ms. Every function links the same build, so one binary tells.
#[test]
fn no_function_times_cpu_jitter_before_its_first_handshake() {
    e2e::stack::ensure_binaries_built();
    let path = e2e::stack::binary_dir().join("credits");
    let binary = std::fs::read(&path).expect("the credits binary");
    let has = |needle: &[u8]| binary.windows(needle.len()).any(|w| w == needle);
    // Only a binary with its symbols can tell (release builds strip them).
    assert!(has(b".symtab"), "{} has no symbol table", path.display());
    let linked = has(b"jent_entropy_init");
    assert!(!linked, "{} links AWS-LC's jitter entropy", path.display());
}
