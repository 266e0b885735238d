//! The first run, as a newcomer meets it (README, "First run"): `make run`
//! (`local/run.sh`) on empty stores, on a machine with no Docker and no
//! Flowise, starts the labelled stand-in, seeds the first admin and a demo
//! user with credits, and the demo user's question gets a streamed answer
//! in a real browser, under a banner that says it is not Flowise.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod browser;

use std::os::unix::process::CommandExt;
use std::process::Stdio;
use std::time::{Duration, Instant};

use browser::Browser;
use e2e::stack::{binary_dir, free_port};
use shared::flowise_double::DEMO_CHATFLOW_ID;
use shared::testing::{mongodb_base_uri, postgres_base_url, with_database};
use sqlx::Connection;

/// `local/run.sh` in a process group of its own, stopped (Ctrl-C's
/// SIGINT, then SIGKILL) with everything it started when dropped, and its
/// database dropped after it.
struct MakeRun {
    child: std::process::Child,
    log: std::path::PathBuf,
    database: String,
}

impl Drop for MakeRun {
    fn drop(&mut self) {
        let group = format!("-{}", self.child.id());
        let kill = |signal: &str| {
            let _ = std::process::Command::new("kill")
                .args(["-s", signal, "--", &group])
                .status();
        };
        kill("INT");
        std::thread::sleep(Duration::from_secs(3));
        kill("KILL");
        let _ = self.child.wait();
        let name = self.database.clone();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&postgres_base_url()).await {
                    let drop = format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#);
                    let _ = sqlx::query(&drop).execute(&mut admin).await;
                }
            });
        })
        .join()
        .ok();
    }
}

impl MakeRun {
    fn output(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts `local/run.sh` as a newcomer's machine would run it: no Docker,
/// nothing at `FLOWISE_API_URL`, stores with nothing in them.
fn make_run(port: u16) -> MakeRun {
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let database = format!("fgw_first_run_{suffix}");
    let log = std::env::temp_dir().join(format!("first-run-{suffix}.log"));
    let out = std::fs::File::create(&log).unwrap();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let target_dir = binary_dir().parent().unwrap().to_path_buf();
    let console = format!("http://127.0.0.1:{port}/lambda-url/console");
    let child = std::process::Command::new("bash")
        .arg("local/run.sh")
        .current_dir(root)
        .env("FGW_NO_DOCKER", "1")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env(
            "DATABASE_URL",
            with_database(&postgres_base_url(), &database),
        )
        .env("MONGODB_URI", mongodb_base_uri())
        .env("MONGODB_AUTH_DB", format!("auth_{suffix}"))
        .env("MONGODB_CHAT_DB", format!("chat_{suffix}"))
        .env("PORT", port.to_string())
        .env("SMTP_PORT", free_port().to_string())
        .env("STAND_IN_PORT", free_port().to_string())
        // Nothing listens there.
        .env(
            "FLOWISE_API_URL",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("APP_BASE_URL", &console)
        .env_remove("CONSOLE_STAND_IN")
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0)
        .spawn()
        .expect("bash runs local/run.sh");
    MakeRun {
        child,
        log,
        database,
    }
}

#[tokio::test]
async fn make_run_on_empty_stores_without_docker_or_flowise_reaches_a_streamed_answer() {
    let port = free_port();
    let run = make_run(port);
    let base = format!("http://127.0.0.1:{port}/lambda-url/console/");
    // Ready when it has said what it started.
    let deadline = Instant::now() + Duration::from_secs(600);
    while !run.output().contains("Ctrl-C stops everything") {
        assert!(
            Instant::now() < deadline,
            "make run did not start; it said:\n{}",
            run.output()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let said = run.output();
    assert!(
        said.contains("FLOWISE IS A LOCAL STAND-IN"),
        "it says so loudly:\n{said}"
    );
    assert!(
        said.contains("Demo user:   demo@example.com / demo-password (100 credits granted now)"),
        "{said}"
    );
    assert!(said.contains("First admin: admin@example.com"), "{said}");

    let browser = Browser::start(1280, 900).await;
    browser.open(&base, "signin").await;
    let banner = browser.wait_text("#stand-in", "not Flowise").await;
    assert!(banner.contains("FLOWISE_API_URL"), "{banner}");
    browser.assert_accessible("sign-in, stand-in").await;
    browser.fill("input[name=username]", "demo").await;
    browser.fill("input[name=password]", "demo-password").await;
    browser.click("form button[type=submit]").await;
    browser.css("#question").await;
    browser.wait_text("#balance", "100").await;
    browser.select("#chatflow", DEMO_CHATFLOW_ID).await;
    browser.fill("#question", "What is 2 + 2?").await;
    browser.click("#send").await;
    // Streamed: its first words are on screen before its end.
    let first = browser
        .wait_text("#messages article.assistant", "You asked")
        .await;
    assert!(
        !first.contains("It still shows"),
        "still streaming: {first}"
    );
    browser.wait_text("#messages", "This answer cost").await;
    let answer = browser
        .wait_text("#messages article.assistant", "What is 2 + 2?")
        .await;
    assert!(answer.contains("local stand-in"), "{answer}");
    let katex = browser
        .script("return document.querySelectorAll('#messages .katex').length")
        .await;
    assert!(katex.as_u64().unwrap() >= 2, "maths rendered");
    let balance = browser.css("#balance").await.text().await.unwrap();
    assert!(!balance.contains("100"), "it was paid for: {balance}");
    browser.wait_text("#stand-in", "not Flowise").await;
    browser.assert_accessible("chat, stand-in answered").await;

    // The first admin is there too.
    browser.click("#signout").await;
    browser.fill("input[name=username]", "admin").await;
    browser
        .fill("input[name=password]", "change-me-please")
        .await;
    browser.click("form button[type=submit]").await;
    browser.css("a[href='#/admin/users']").await;
    drop(browser);
    drop(run);
}

/// The stand-in and the demo user are for local runs only: the deployed
/// stack never names them.
#[test]
fn the_template_never_seeds_a_demo_or_claims_a_stand_in() {
    let template =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
    for local_only in [
        "CONSOLE_STAND_IN",
        "DEMO_",
        "seed-demo",
        "stand-in",
        "STAND_IN",
    ] {
        assert!(
            !template.contains(local_only),
            "template.yaml names {local_only}"
        );
    }
}
