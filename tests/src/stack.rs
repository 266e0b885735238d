//! The whole product for one test: fresh databases, every function binary
//! running behind the Lambda emulator, and an HTTP client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use serde_json::Value;
use shared::testing::{self, TestMongo, TestPostgres, TestSmtp};
use shared::token::Role;
use tokio::process::{Child, Command};

use crate::lambda::{self, RuntimeApi};

/// The HTTP functions, by binary name.
pub const HTTP_FUNCTIONS: &[&str] = &[
    "auth",
    "predict",
    "predict-stream",
    "credits",
    "usage",
    "console",
];
/// Every function, by binary name.
pub const ALL_FUNCTIONS: &[&str] = &[
    "auth",
    "predict",
    "predict-stream",
    "credits",
    "usage",
    "console",
    "credit-expiry",
];

/// `target/<profile>`, where cargo put this test and the function binaries.
pub fn binary_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // Tests live in target/<profile>/deps/, binaries (the benchmarks) in target/<profile>/.
    let dir = exe.parent().expect("the executable's folder");
    if dir.file_name().is_some_and(|n| n == "deps") {
        dir.parent().expect("target/<profile>").to_path_buf()
    } else {
        dir.to_path_buf()
    }
}

/// Builds the function binaries once per process, unless the test
/// command already did (`E2E_SKIP_BUILD=1`), so that a plain `cargo test`
/// never runs stale binaries.
pub fn ensure_binaries_built() {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if std::env::var_os("E2E_SKIP_BUILD").is_some() {
            return;
        }
        let dir = binary_dir();
        let profile = dir.file_name().and_then(|n| n.to_str()).unwrap_or("debug");
        let target_dir = dir.parent().expect("target dir");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "--quiet", "--target-dir"])
            .arg(target_dir)
            .current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
        for f in ALL_FUNCTIONS.iter().chain(&["gateway-admin"]) {
            cmd.args(["--bin", f]);
        }
        if profile == "release" {
            cmd.arg("--release");
        } else if profile != "debug" {
            cmd.args(["--profile", profile]);
        }
        let status = cmd.status().expect("run cargo build");
        assert!(status.success(), "building the function binaries failed");
    });
}

/// What a test can change in the functions' environment.
#[derive(Debug, Clone, Default)]
pub struct StackOptions {
    /// Extra or overriding variables.
    pub env: Vec<(String, String)>,
    /// Processes per function (Lambda scales out with concurrent requests;
    /// each process serves one request at a time).
    pub instances: usize,
    /// Functions to start (default: all).
    pub functions: Option<Vec<&'static str>>,
    /// Where the binaries are (default: this build's, [`binary_dir`]): a
    /// benchmark's baseline built from another commit.
    pub binaries: Option<PathBuf>,
    /// Serve every HTTP function from one `gateway-admin serve` process
    /// (server-sized pools, API Gateway paths) instead of Lambda instances.
    pub serve: bool,
    /// Reach PostgreSQL at this address instead (a counting proxy).
    pub postgres_at: Option<SocketAddr>,
    /// Reach MongoDB at this address instead (a counting proxy).
    pub mongodb_at: Option<SocketAddr>,
    /// Connect as the deployed functions do: as the role of
    /// `deploy/app-role.sql` (no DDL rights), with `MIGRATE_ON_START=false`.
    pub app_role: bool,
    /// The front's port (default: any free one): a test that must name the
    /// front's origin in the functions' environment (CORS) picks it first.
    pub front_port: u16,
}

/// The value `env` gives `name` (the last one set wins, as in a process).
fn value_of<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a String> {
    env.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v)
}

impl StackOptions {
    /// The functions' environment: the test defaults for these stores, the
    /// deployed role (`role_url`), the options' own variables, and the
    /// stores' addresses moved to the proxies.
    fn environment(
        &self,
        pg: &TestPostgres,
        mongo: Option<&TestMongo>,
        smtp_port: u16,
        role_url: Option<String>,
    ) -> Vec<(String, String)> {
        let mut env = function_env(pg, mongo, smtp_port);
        if let Some(url) = role_url {
            env.push(("DATABASE_URL".into(), url));
            env.push(("MIGRATE_ON_START".into(), "false".into()));
        }
        env.extend(self.env.iter().cloned());
        let moved = self.store_overrides(&env);
        env.extend(moved);
        env
    }

    /// The environment variables pointing the stores at the proxies.
    fn store_overrides(&self, env: &[(String, String)]) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (name, at) in [
            ("DATABASE_URL", self.postgres_at),
            ("MONGODB_URI", self.mongodb_at),
        ] {
            if let (Some(at), Some(url)) = (at, value_of(env, name)) {
                let mut url = reqwest::Url::parse(url).expect("a store URL");
                url.set_ip_host(at.ip()).expect("a host");
                url.set_port(Some(at.port())).expect("a port");
                if name == "MONGODB_URI" && !url.query().unwrap_or("").contains("directConnection")
                {
                    // Stay on the proxy rather than follow the server's own address.
                    url.query_pairs_mut()
                        .append_pair("directConnection", "true");
                }
                out.push((name.to_owned(), url.to_string()));
            }
        }
        out
    }
}

/// A running stack. Processes are killed when it is dropped.
pub struct Stack {
    /// The fresh PostgreSQL database.
    pub pg: TestPostgres,
    /// The fresh MongoDB databases (when a started function uses MongoDB).
    pub mongo: Option<TestMongo>,
    /// The SMTP server the auth function mails to; tests read mail from it.
    pub smtp: TestSmtp,
    /// `http://127.0.0.1:<port>`: `/lambda-url/<function>/...` reaches a function.
    pub base_url: String,
    /// A client for the front.
    pub http: reqwest::Client,
    /// The `DATABASE_URL` the functions were given.
    pub functions_database_url: String,
    runtimes: HashMap<String, Arc<RuntimeApi>>,
    served: bool,
    log_dir: PathBuf,
    children: Vec<Child>,
}

/// The environment every function gets in tests: the stores, the fixed
/// JWT secrets, mail to `smtp_port`, an unreachable Flowise.
pub fn function_env(
    pg: &TestPostgres,
    mongo: Option<&TestMongo>,
    smtp_port: u16,
) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = vec![
        ("DATABASE_URL".into(), pg.url.clone()),
        ("SMTP_PORT".into(), smtp_port.to_string()),
    ];
    if let Some(mongo) = mongo {
        env.extend([
            ("MONGODB_URI".into(), mongo.config.uri.expose().to_owned()),
            ("MONGODB_AUTH_DB".into(), mongo.config.auth_db.clone()),
            ("MONGODB_CHAT_DB".into(), mongo.config.chat_db.clone()),
        ]);
    }
    env.extend([
        (
            "JWT_ACCESS_SECRET".into(),
            testing::TEST_ACCESS_SECRET.into(),
        ),
        (
            "JWT_REFRESH_SECRET".into(),
            testing::TEST_REFRESH_SECRET.into(),
        ),
        ("SMTP_HOST".into(), "127.0.0.1".into()),
        ("SMTP_TLS".into(), "none".into()),
        ("MAIL_FROM".into(), "gateway@example.com".into()),
        ("APP_BASE_URL".into(), "http://localhost:5173".into()),
        // The harness's front serves each function at /lambda-url/<name>.
        ("CONSOLE_LAYOUT".into(), "lambda-url".into()),
        ("FLOWISE_API_URL".into(), "http://127.0.0.1:9".into()),
        ("LOG_FORMAT".into(), "json".into()),
        (
            "RUST_LOG".into(),
            std::env::var("E2E_RUST_LOG").unwrap_or_else(|_| "info".into()),
        ),
    ]);
    env
}

impl Stack {
    /// Starts every function with the default test environment.
    pub async fn start() -> Stack {
        Stack::start_with(StackOptions::default()).await
    }

    /// Starts the functions with `options`.
    pub async fn start_with(options: StackOptions) -> Stack {
        ensure_binaries_built();
        let functions = options
            .functions
            .clone()
            .unwrap_or_else(|| ALL_FUNCTIONS.to_vec());
        let needs_mongo = options.serve
            || functions
                .iter()
                .any(|f| matches!(*f, "auth" | "predict" | "predict-stream"));
        let mut pg = TestPostgres::new().await;
        let role_url = if options.app_role {
            Some(pg.app_role().await)
        } else {
            None
        };
        let mongo = if needs_mongo {
            Some(TestMongo::new().await)
        } else {
            None
        };
        let smtp = TestSmtp::start().await;
        let env = options.environment(&pg, mongo.as_ref(), smtp.port, role_url);
        let functions_database_url = value_of(&env, "DATABASE_URL").cloned().unwrap_or_default();
        let log_dir = std::env::temp_dir().join(format!("e2e-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let binaries = options.binaries.clone().unwrap_or_else(binary_dir);
        let (front, runtimes, children) = if options.serve {
            let (front, child) = serve_all(&binaries, &env, &log_dir).await;
            (front, HashMap::new(), vec![child])
        } else {
            let lambdas = Lambdas {
                binaries: &binaries,
                env: &env,
                log_dir: &log_dir,
                front_port: options.front_port,
            };
            lambdas.start(&functions, options.instances.max(1)).await
        };
        Stack {
            pg,
            mongo,
            smtp,
            base_url: format!("http://{front}"),
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(150))
                .build()
                .expect("client"),
            functions_database_url,
            runtimes,
            served: options.serve,
            log_dir,
            children,
        }
    }

    /// The URL of `path` on function `name`, as `cargo lambda watch` serves
    /// it (or, served from one process, under the API Gateway paths with
    /// health at `/health/<function>`).
    pub fn url(&self, function: &str, path: &str) -> String {
        match (self.served, path) {
            (true, "/health") => format!("{}/health/{function}", self.base_url),
            (true, _) => format!("{}{path}", self.base_url),
            (false, _) => format!("{}/lambda-url/{function}{path}", self.base_url),
        }
    }

    /// Invokes a function with a raw event, as `cargo lambda invoke` does.
    pub async fn invoke(&self, function: &str, event: Value) -> Result<Value, Value> {
        self.runtimes
            .get(function)
            .unwrap_or_else(|| panic!("function {function} is not running"))
            .invoke(event)
            .await
    }

    /// Everything function `name`'s first instance (or the one serving
    /// process) logged so far.
    pub fn logs(&self, function: &str) -> String {
        let name = if self.served {
            SERVE_LOG.to_owned()
        } else {
            format!("{function}-0.log")
        };
        std::fs::read_to_string(self.log_dir.join(name)).unwrap_or_default()
    }

    /// A valid access token (minted with the stack's secret).
    pub fn token(&self, user_id: &str, role: Role) -> String {
        testing::mint_token(&testing::jwt_keys(), user_id, role)
    }

    /// Sends a request and reads the answer as JSON (`Null` when empty).
    pub async fn request(
        &self,
        method: reqwest::Method,
        function: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, self.url(function, path));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        if let Some(body) = body {
            req = req.json(&body);
        }
        let res = req.send().await.expect("the front answers");
        let status = res.status().as_u16();
        let bytes = res.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes)
                .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into()))
        };
        (status, body)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        // Stop the functions before their databases go.
        for child in &mut self.children {
            let _ = child.start_kill();
        }
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

/// The log of the one serving process.
const SERVE_LOG: &str = "gateway-admin-serve.log";

/// Function instances behind the Lambda emulator: where their binaries
/// are, their environment and their logs.
struct Lambdas<'a> {
    binaries: &'a std::path::Path,
    env: &'a [(String, String)],
    log_dir: &'a std::path::Path,
    front_port: u16,
}

impl Lambdas<'_> {
    /// `instances` of each function, each polling its function's Runtime
    /// API, and the function-URL front once all are ready.
    async fn start(
        &self,
        functions: &[&str],
        instances: usize,
    ) -> (SocketAddr, HashMap<String, Arc<RuntimeApi>>, Vec<Child>) {
        let mut runtimes = HashMap::new();
        let mut children = Vec::new();
        for name in functions {
            let api = RuntimeApi::start(name).await;
            for i in 0..instances {
                children.push(spawn_function_from(
                    self.binaries,
                    name,
                    i,
                    &api,
                    self.env,
                    self.log_dir,
                ));
            }
            runtimes.insert((*name).to_owned(), api);
        }
        for name in functions {
            let ready = runtimes[*name]
                .wait_ready(instances as u64, Duration::from_secs(60))
                .await;
            if !ready {
                let log = std::fs::read_to_string(self.log_dir.join(format!("{name}-0.log")))
                    .unwrap_or_default();
                panic!("function {name} did not start; its log:\n{log}");
            }
        }
        let front = lambda::serve_front(runtimes.clone(), self.front_port).await;
        (front, runtimes, children)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago (for a server a
/// child process starts).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

/// `gateway-admin serve` on a free port with `env` (the job off), once
/// every function's health answers.
async fn serve_all(
    binaries: &std::path::Path,
    env: &[(String, String)],
    log_dir: &std::path::Path,
) -> (SocketAddr, Child) {
    let port = free_port();
    let log = std::fs::File::create(log_dir.join(SERVE_LOG)).expect("log file");
    let child = Command::new(binaries.join("gateway-admin"))
        .args(["serve", "--port", &port.to_string()])
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .env("SERVE_JOB_INTERVAL_MINUTES", "0")
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn gateway-admin serve");
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let http = reqwest::Client::new();
    for _ in 0..600 {
        let health = http
            .get(format!("http://{address}/health/predict"))
            .send()
            .await;
        if health.is_ok_and(|r| r.status().is_success()) {
            return (address, child);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = std::fs::read_to_string(log_dir.join(SERVE_LOG)).unwrap_or_default();
    panic!("gateway-admin serve did not start; its log:\n{log}");
}

/// Starts instance `instance` of function `name` as Lambda starts
/// `bootstrap`: polling `api`, with `env`, logging to `log_dir`.
pub fn spawn_function(
    name: &str,
    instance: usize,
    api: &RuntimeApi,
    env: &[(String, String)],
    log_dir: &std::path::Path,
) -> Child {
    spawn_function_from(&binary_dir(), name, instance, api, env, log_dir)
}

/// [`spawn_function`] with the binaries of `binaries`.
fn spawn_function_from(
    binaries: &std::path::Path,
    name: &str,
    instance: usize,
    api: &RuntimeApi,
    env: &[(String, String)],
    log_dir: &std::path::Path,
) -> Child {
    let binary = binaries.join(name);
    assert!(
        binary.exists(),
        "{} is missing: build the functions first (`cargo build --workspace --bins`)",
        binary.display()
    );
    let log =
        std::fs::File::create(log_dir.join(format!("{name}-{instance}.log"))).expect("log file");
    let mut cmd = Command::new(binary);
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("AWS_LAMBDA_RUNTIME_API", api.address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", name)
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", format!("{name}-{instance}"))
        .env("AWS_LAMBDA_LOG_GROUP_NAME", format!("/aws/lambda/{name}"))
        .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        .stdout(log.try_clone().expect("log file"))
        .stderr(log)
        .stdin(Stdio::null())
        .kill_on_drop(true);
    cmd.spawn().expect("spawn the function binary")
}

/// Starts one function binary as Lambda would and waits for it to exit
/// (a start-up failure); returns its exit success and everything it logged.
pub async fn run_until_exit(function: &str, env: &[(&str, &str)]) -> (bool, String) {
    ensure_binaries_built();
    let api = RuntimeApi::start(function).await;
    let log_dir = std::env::temp_dir().join(format!("e2e-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&log_dir).expect("log dir");
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let mut child = spawn_function(function, 0, &api, &env, &log_dir);
    let status = tokio::time::timeout(Duration::from_secs(30), child.wait())
        .await
        .expect("the function exits at start-up")
        .expect("wait");
    let log =
        std::fs::read_to_string(log_dir.join(format!("{function}-0.log"))).unwrap_or_default();
    let _ = std::fs::remove_dir_all(&log_dir);
    (status.success(), log)
}
