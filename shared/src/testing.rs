//! Test helpers (feature `test-util`): a fresh PostgreSQL database with
//! migrations applied and fresh MongoDB databases for every test, fixed JWT
//! keys and a token minting helper.
//!
//! The servers come from `DATABASE_URL` (default: the local PostgreSQL on
//! 127.0.0.1:5432 as `postgres`) and `MONGODB_URI` (set by the test command,
//! which starts a MongoDB wire-protocol server when none is given). Each
//! database is dropped when its guard goes out of scope.

use std::str::FromStr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Connection, PgPool};

use crate::config::{JwtConfig, MongoConfig, Secret};
use crate::db::mongo::{self, MongoStores};
use crate::token::{JwtKeys, Role, TokenSubject};

/// Access secret used by every test.
pub const TEST_ACCESS_SECRET: &str = "test-access-secret-0123456789abcdef0123";
/// Refresh secret used by every test.
pub const TEST_REFRESH_SECRET: &str = "test-refresh-secret-0123456789abcdef012";

/// The PostgreSQL server tests create their databases on.
pub fn postgres_base_url() -> String {
    std::env::var("DATABASE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The MongoDB server tests use. Panics with the fix when unset: tests must
/// not pass by silently skipping their store.
pub fn mongodb_base_uri() -> String {
    std::env::var("MONGODB_URI")
        .ok()
        .filter(|v| !v.is_empty())
        .expect("MONGODB_URI is not set: run the tests with the README's test command (make test)")
}

/// JWT configuration with the fixed test secrets.
pub fn jwt_config() -> JwtConfig {
    JwtConfig {
        access_secret: Secret::new(TEST_ACCESS_SECRET),
        refresh_secret: Secret::new(TEST_REFRESH_SECRET),
        access_ttl: Duration::from_secs(900),
        refresh_ttl: Duration::from_secs(604_800),
    }
}

/// JWT keys with the fixed test secrets.
pub fn jwt_keys() -> JwtKeys {
    JwtKeys::new(&jwt_config())
}

/// A valid access token for `user_id` with `role` (username and email are
/// derived from the id).
pub fn mint_token(keys: &JwtKeys, user_id: &str, role: Role) -> String {
    let username = format!("user_{user_id}");
    let email = format!("{user_id}@example.com");
    keys.issue_access(
        &TokenSubject {
            user_id,
            username: &username,
            email: &email,
            role,
            session_version: 0,
        },
        chrono::Utc::now().timestamp(),
    )
}

/// Replaces the database name of a PostgreSQL URL.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(i) => &base[..scheme_end + i],
        None => base,
    };
    match query {
        Some(q) => format!("{host_part}/{database}?{q}"),
        None => format!("{host_part}/{database}"),
    }
}

fn unique_name(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh, migrated PostgreSQL database, dropped on drop.
pub struct TestPostgres {
    /// Pool on the new database.
    pub pool: PgPool,
    /// URL of the new database (for child processes).
    pub url: String,
    name: String,
    admin_url: String,
    roles: Vec<String>,
}

/// `deploy/app-role.sql`: the deployed functions' role.
const APP_ROLE_SQL: &str = include_str!("../../deploy/app-role.sql");

/// `url` with its user (and password) replaced by `user`.
pub fn with_user(url: &str, user: &str) -> String {
    let scheme_end = url.find("://").map(|i| i + 3).unwrap_or(0);
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let host = match rest[..authority_end].rfind('@') {
        Some(at) => &rest[at + 1..],
        None => rest,
    };
    format!("{}{user}@{host}", &url[..scheme_end])
}

impl TestPostgres {
    /// Creates the database and applies `migrations/`.
    pub async fn new() -> Self {
        let admin_url = postgres_base_url();
        let name = unique_name("fgw_test");
        let mut admin = PgConnectOptions::from_str(&admin_url)
            .expect("DATABASE_URL is a PostgreSQL URL")
            .connect()
            .await
            .unwrap_or_else(|e| panic!("cannot reach PostgreSQL at DATABASE_URL: {e}"));
        sqlx::query(&format!(r#"CREATE DATABASE "{name}""#))
            .execute(&mut admin)
            .await
            .expect("create the test database");
        admin.close().await.ok();
        let url = with_database(&admin_url, &name);
        let pool = PgPoolOptions::new()
            .max_connections(20)
            .acquire_timeout(Duration::from_secs(30))
            .connect(&url)
            .await
            .expect("connect to the test database");
        crate::db::postgres::migrate(&pool)
            .await
            .expect("migrations apply to a fresh database");
        TestPostgres {
            pool,
            url,
            name,
            admin_url,
            roles: Vec::new(),
        }
    }

    /// A login role made by `deploy/app-role.sql` (rows, no DDL: the role
    /// the deployed functions use), dropped after the database; returns
    /// the URL that connects as it.
    pub async fn app_role(&mut self) -> String {
        let role = unique_name("fgw_app");
        sqlx::raw_sql(&APP_ROLE_SQL.replace("gateway_app", &role))
            .execute(&self.pool)
            .await
            .expect("deploy/app-role.sql applies");
        self.roles.push(role.clone());
        with_user(&self.url, &role)
    }
}

/// The shortfall predictions recorded in the database at `url`: always 0
/// (README, Decisions, "An answer stops where the payer's means end").
async fn prediction_shortfall(url: &str) -> i64 {
    let Ok(mut conn) = sqlx::PgConnection::connect(url).await else {
        return 0;
    };
    sqlx::query_scalar(
        "SELECT COALESCE(SUM(shortfall_credits), 0)::BIGINT FROM streaming_sessions
          WHERE origin = 'gateway'",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap_or(0)
}

impl Drop for TestPostgres {
    /// Drops the database, after checking, for every test that used one
    /// (the end-to-end suite's included), that no prediction recorded a
    /// shortfall: a test that made one fails here.
    fn drop(&mut self) {
        if !std::thread::panicking() {
            let (url, found) = (self.url.clone(), std::sync::Arc::new(AtomicI64::new(0)));
            let seen = found.clone();
            run_to_completion(async move {
                seen.store(prediction_shortfall(&url).await, Ordering::SeqCst);
            });
            let shortfall = found.load(Ordering::SeqCst);
            assert_eq!(
                shortfall, 0,
                "predictions recorded a shortfall of {shortfall} credits"
            );
        }
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        let roles = std::mem::take(&mut self.roles);
        // The pool belongs to the test's runtime, which this blocks, so it
        // is not closed here: FORCE ends its connections instead. Roles go
        // once the database that holds their grants has.
        run_to_completion(async move {
            if let Ok(mut admin) = sqlx::PgConnection::connect(&admin_url).await {
                let _ = sqlx::query(&format!(r#"DROP DATABASE IF EXISTS "{name}" WITH (FORCE)"#))
                    .execute(&mut admin)
                    .await;
                for role in roles {
                    let _ = sqlx::query(&format!(r#"DROP ROLE IF EXISTS "{role}""#))
                        .execute(&mut admin)
                        .await;
                }
            }
        });
    }
}

/// Runs `work` to completion from a `Drop`, which cannot await: on a
/// short-lived thread with its own runtime.
pub fn run_to_completion(work: impl std::future::Future<Output = ()> + Send + 'static) {
    let thread = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(work)
    });
    let _ = thread.join();
}

/// Fresh `auth` and `chat` databases with their indexes, dropped on drop.
pub struct TestMongo {
    /// Client and databases.
    pub stores: MongoStores,
    /// Configuration naming the fresh databases (for child processes).
    pub config: MongoConfig,
}

impl TestMongo {
    /// Creates the databases' indexes on the server of `MONGODB_URI`.
    pub async fn new() -> Self {
        let mongo = TestMongo::without_indexes().await;
        mongo::ensure_auth_indexes(&mongo.stores.auth)
            .await
            .expect("auth indexes");
        mongo::ensure_chat_indexes(&mongo.stores.chat)
            .await
            .expect("chat indexes");
        mongo
    }

    /// Fresh databases with no index yet (for tests of what happens when
    /// they cannot be made).
    pub async fn without_indexes() -> Self {
        let prefix = unique_name("t");
        let config = MongoConfig {
            uri: Secret::new(mongodb_base_uri()),
            password: None,
            auth_db: format!("{prefix}_auth"),
            chat_db: format!("{prefix}_chat"),
            max_pool_size: 20,
        };
        let stores = mongo::connect(&config).await.expect("MongoDB client");
        TestMongo { stores, config }
    }
}

impl Drop for TestMongo {
    fn drop(&mut self) {
        let config = self.config.clone();
        run_to_completion(async move {
            if let Ok(stores) = mongo::connect(&config).await {
                let _ = stores.auth.drop().await;
                let _ = stores.chat.drop().await;
            }
        });
    }
}

/// A response read whole: status, headers and body parsed as JSON
/// (`Value::Null` for an empty body, a JSON string for a non-JSON one).
#[derive(Debug)]
pub struct TestResponse {
    /// Status.
    pub status: axum::http::StatusCode,
    /// Headers.
    pub headers: axum::http::HeaderMap,
    /// Body.
    pub body: serde_json::Value,
}

impl TestResponse {
    /// Asserts the spec's error format with `status` and `code`.
    #[track_caller]
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status.as_u16(), status, "body: {}", self.body);
        assert_eq!(self.body["error"], code, "body: {}", self.body);
        assert!(
            self.body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "error without a message: {}",
            self.body
        );
    }
}

/// Sends one request through a router in-process (`oneshot`). A `body`
/// is sent as JSON; `token` as a bearer token.
pub async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
) -> TestResponse {
    call_with_headers(router, method, path, body, token, &[]).await
}

/// [`call`] with extra request headers.
pub async fn call_with_headers(
    router: &axum::Router,
    method: &str,
    path: &str,
    body: Option<serde_json::Value>,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> TestResponse {
    use tower::ServiceExt;
    let mut request = axum::http::Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    let request = match body {
        Some(json) => request
            .header("content-type", "application/json")
            .body(axum::body::Body::from(json.to_string())),
        None => request.body(axum::body::Body::empty()),
    }
    .expect("a valid request");
    let response = router.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let headers = response.headers().clone();
    let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
        .await
        .expect("body");
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| serde_json::Value::String(String::from_utf8_lossy(&bytes).into()))
    };
    TestResponse {
        status,
        headers,
        body,
    }
}

/// Grants `credits` never-expiring credits to `user` through the ledger,
/// creating the account (the admin's allocation, without HTTP).
pub async fn grant(pool: &PgPool, user: &str, credits: i64) {
    let user = crate::ids::UserId::parse("userId", user).expect("a valid user id");
    let credits = crate::ledger::Credits::parse("credits", credits).expect("valid credits");
    let mut tx = pool.begin().await.expect("begin");
    let meta = crate::ledger::EntryMeta::default();
    crate::ledger::changes::allocate(&mut tx, &user, credits, None, None, &meta)
        .await
        .expect("allocate");
    tx.commit().await.expect("commit");
}

/// A team `id` named `name` made straight in the stores, with `members`
/// (current, added by an admin) and a wallet granted `credits` that never
/// expire (none when 0): the fixture of the ledger's team tests.
pub async fn team(pool: &PgPool, id: &str, name: &str, members: &[&str], credits: i64) {
    sqlx::query(
        "WITH wallet AS (
             INSERT INTO user_accounts (user_id, owner_kind) VALUES ('team:' || $1, 'team')
         ), made AS (
             INSERT INTO teams (id, name, account_id, created_by)
             VALUES ($1::uuid, $2, 'team:' || $1, 'admin') RETURNING id
         )
         INSERT INTO team_members (id, team_id, user_id, added_by)
         SELECT gen_random_uuid(), made.id, u, 'admin' FROM made, unnest($3::text[]) u",
    )
    .bind(id)
    .bind(name)
    .bind(members)
    .execute(pool)
    .await
    .expect("the team is made");
    let Ok(credits) = crate::ledger::Credits::try_from(credits) else {
        return;
    };
    let wallet = crate::ids::UserId::stored(format!("team:{id}"));
    let mut tx = pool.begin().await.expect("begin");
    let meta = crate::ledger::EntryMeta::default();
    crate::ledger::changes::allocate_existing(&mut tx, &wallet, credits, None, None, &meta)
        .await
        .expect("the wallet is granted");
    tx.commit().await.expect("commit");
}

/// A key of `user` (with `role` in its claims) made straight in the
/// store, as the auth function makes one once the owner's password is
/// checked. `body` takes the route's optional fields (`name`,
/// `expiresInDays`, `chatflows`, `monthlyCreditLimit`).
pub async fn make_key(
    pool: &PgPool,
    user: &str,
    role: Role,
    body: serde_json::Value,
) -> crate::keys::store::CreatedKey {
    use crate::keys::store::{self, KeySpec, DEFAULT_KEY_DAYS};
    let claims = crate::token::AuthUser {
        id: user.into(),
        username: user.into(),
        email: format!("{user}@example.com"),
        role,
        key: None,
        session_version: 0,
    };
    let spec = KeySpec {
        name: body["name"].as_str().unwrap_or("test key").to_owned(),
        expires_in_days: body["expiresInDays"]
            .as_i64()
            .map_or(DEFAULT_KEY_DAYS, |d| d as i32),
        chatflows: body["chatflows"].as_array().map(|c| {
            c.iter()
                .filter_map(|f| f.as_str().map(str::to_owned))
                .collect()
        }),
        monthly_credit_limit: body["monthlyCreditLimit"].as_i64(),
    };
    let mut tx = pool.begin().await.expect("begin");
    let made = store::create(&mut tx, &claims, spec, None)
        .await
        .expect("a key is made");
    tx.commit().await.expect("commit");
    made
}

/// Accounts whose cached total disagrees with their unexpired
/// allocations or with their entries (0 when the ledger is consistent).
pub async fn inconsistent_accounts(pool: &PgPool) -> i64 {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM user_accounts u
          WHERE u.total_credits <> (SELECT COALESCE(SUM(remaining), 0) FROM credit_allocations a
                                     WHERE a.user_id = u.user_id AND a.expired_at IS NULL)
             OR u.total_credits <> (SELECT COALESCE(SUM(amount), 0) FROM credit_transactions t
                                     WHERE t.user_id = u.user_id)",
    )
    .fetch_one(pool)
    .await
    .expect("the ledger is read")
}

/// `user`'s spendable credits, read from the ledger.
pub async fn balance(pool: &PgPool, user: &str) -> i64 {
    let user = crate::ids::UserId::parse("userId", user).expect("a valid user id");
    let mut conn = pool.acquire().await.expect("connection");
    crate::ledger::queries::total_balance(&mut conn, &user)
        .await
        .expect("balance")
}

/// The total of any account, a user's or a team's wallet (`team:<id>`),
/// read from the ledger's cache.
pub async fn balance_of_account(pool: &PgPool, account: &str) -> i64 {
    sqlx::query_scalar("SELECT total_credits FROM user_accounts WHERE user_id = $1")
        .bind(account)
        .fetch_one(pool)
        .await
        .expect("the account exists")
}

/// One in-process client for a function's router, the one every test of
/// every function uses: requests with a bearer token (or none), JSON
/// bodies, extra headers, and tokens minted with the test secrets.
#[derive(Clone)]
pub struct TestClient {
    /// The router under test.
    pub router: axum::Router,
}

impl TestClient {
    /// A client of `router`.
    pub fn new(router: axum::Router) -> Self {
        TestClient { router }
    }

    /// A valid access token for `user` with `role`.
    pub fn token(&self, user: &str, role: Role) -> String {
        mint_token(&jwt_keys(), user, role)
    }

    /// `method path` with `token` and an optional JSON body.
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: Option<serde_json::Value>,
    ) -> TestResponse {
        call(&self.router, method, path, body, Some(token)).await
    }

    /// `GET path` with `token`.
    pub async fn get(&self, path: &str, token: &str) -> TestResponse {
        self.send("GET", path, token, None).await
    }

    /// `POST path` with `token` and a JSON body.
    pub async fn post(&self, path: &str, token: &str, body: serde_json::Value) -> TestResponse {
        self.send("POST", path, token, Some(body)).await
    }

    /// `POST path` with a JSON body and no token (the public routes).
    pub async fn post_public(&self, path: &str, body: serde_json::Value) -> TestResponse {
        call(&self.router, "POST", path, Some(body), None).await
    }

    /// Any request, with extra headers.
    pub async fn send_with(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<serde_json::Value>,
        headers: &[(&str, &str)],
    ) -> TestResponse {
        call_with_headers(&self.router, method, path, body, token, headers).await
    }
}

/// A pool on a port where nothing listens: every query fails fast, as when
/// the database is down.
pub fn unreachable_postgres() -> PgPool {
    PgPoolOptions::new()
        .acquire_timeout(Duration::from_millis(500))
        .connect_lazy("postgres://postgres@127.0.0.1:1/none")
        .expect("lazy pool")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn with_user_replaces_only_the_user() {
        assert_eq!(
            with_user("postgres://postgres@127.0.0.1:5432/db", "app"),
            "postgres://app@127.0.0.1:5432/db"
        );
        assert_eq!(
            with_user("postgres://u:p@h/db?sslmode=disable", "app"),
            "postgres://app@h/db?sslmode=disable"
        );
        assert_eq!(
            with_user("postgres://h:5432/db", "app"),
            "postgres://app@h:5432/db"
        );
    }

    #[test]
    fn with_database_replaces_only_the_name() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5432/postgres", "x"),
            "postgres://postgres@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h/db?sslmode=disable", "y"),
            "postgres://u:p@h/y?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h:5432", "z"),
            "postgres://h:5432/z"
        );
    }

    #[test]
    fn minted_tokens_verify() {
        let keys = jwt_keys();
        let claims = keys
            .verify_access(&mint_token(&keys, "u9", Role::Admin))
            .unwrap();
        assert_eq!((claims.sub.as_str(), claims.role), ("u9", Role::Admin));
    }
}

/// A mail received by [`TestSmtp`].
#[derive(Debug, Clone)]
pub struct ReceivedMail {
    /// `MAIL FROM`.
    pub from: String,
    /// `RCPT TO` addresses.
    pub to: Vec<String>,
    /// Headers and body, dot-stuffing undone.
    pub data: String,
}

impl ReceivedMail {
    /// The first line that is exactly six digits (the verification code).
    pub fn code(&self) -> Option<String> {
        self.data
            .lines()
            .map(str::trim)
            .find(|l| l.len() == 6 && l.bytes().all(|b| b.is_ascii_digit()))
            .map(str::to_owned)
    }

    /// The value of the first `token=` parameter in the mail (the reset link).
    pub fn reset_token(&self) -> Option<String> {
        let at = self.data.find("reset-password?token=")? + "reset-password?token=".len();
        let token: String = self.data[at..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
            .collect();
        Some(token).filter(|t| !t.is_empty())
    }
}

/// A minimal SMTP server for tests (plain text, no auth): it accepts every
/// mail and keeps it, so tests read codes and links exactly as a user would.
pub struct TestSmtp {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    mails: std::sync::Arc<std::sync::Mutex<Vec<ReceivedMail>>>,
}

impl TestSmtp {
    /// Starts the server on a free port.
    pub async fn start() -> TestSmtp {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind SMTP");
        let port = listener.local_addr().expect("address").port();
        let mails = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let store = mails.clone();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let store = store.clone();
                tokio::spawn(async move {
                    let _ = smtp_session(socket, store).await;
                });
            }
        });
        TestSmtp { port, mails }
    }

    /// Every mail received so far.
    pub fn mails(&self) -> Vec<ReceivedMail> {
        self.mails.lock().expect("mails").clone()
    }

    /// Waits (up to 10 s) for the `nth` (0-based) mail to `to`.
    pub async fn wait_for(&self, to: &str, nth: usize) -> ReceivedMail {
        for _ in 0..200 {
            let found: Vec<ReceivedMail> = self
                .mails()
                .into_iter()
                .filter(|m| m.to.iter().any(|t| t.eq_ignore_ascii_case(to)))
                .collect();
            if let Some(mail) = found.get(nth) {
                return mail.clone();
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("no mail #{nth} to {to} arrived");
    }
}

type Mails = std::sync::Arc<std::sync::Mutex<Vec<ReceivedMail>>>;

/// The address of `MAIL FROM:<a>` / `RCPT TO:<a>`.
fn smtp_address(command: &str) -> String {
    command
        .split_once(':')
        .map(|(_, a)| {
            a.trim()
                .trim_start_matches('<')
                .split('>')
                .next()
                .unwrap_or("")
                .to_owned()
        })
        .unwrap_or_default()
}

/// Reads a mail's data up to the lone `.` line, undoing dot-stuffing;
/// `None` when the client went away.
async fn smtp_data<R>(lines: &mut R) -> std::io::Result<Option<String>>
where
    R: tokio::io::AsyncBufRead + Unpin,
{
    use tokio::io::AsyncBufReadExt;
    let (mut data, mut line) = (String::new(), String::new());
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(None);
        }
        let text = line.trim_end_matches(['\r', '\n']);
        if text == "." {
            return Ok(Some(data));
        }
        data.push_str(text.strip_prefix('.').unwrap_or(text));
        data.push('\n');
    }
}

async fn smtp_session(socket: tokio::net::TcpStream, store: Mails) -> std::io::Result<()> {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let (read, mut write) = socket.into_split();
    let mut lines = BufReader::new(read);
    write.write_all(b"220 test-smtp ready\r\n").await?;
    let (mut from, mut to) = (String::new(), Vec::new());
    let mut line = String::new();
    loop {
        line.clear();
        if lines.read_line(&mut line).await? == 0 {
            return Ok(());
        }
        let command = line.trim_end().to_owned();
        let upper = command.to_ascii_uppercase();
        let reply: &[u8] = if upper.starts_with("EHLO") {
            b"250-test-smtp\r\n250 8BITMIME\r\n"
        } else if upper.starts_with("HELO") {
            b"250 test-smtp\r\n"
        } else if upper.starts_with("MAIL FROM") {
            from = smtp_address(&command);
            to.clear();
            b"250 OK\r\n"
        } else if upper.starts_with("RCPT TO") {
            to.push(smtp_address(&command));
            b"250 OK\r\n"
        } else if upper == "DATA" {
            write.write_all(b"354 end with <CRLF>.<CRLF>\r\n").await?;
            let Some(data) = smtp_data(&mut lines).await? else {
                return Ok(());
            };
            let mail = ReceivedMail {
                from: from.clone(),
                to: to.clone(),
                data,
            };
            store.lock().expect("mails").push(mail);
            b"250 OK queued\r\n"
        } else if upper == "QUIT" {
            write.write_all(b"221 bye\r\n").await?;
            return Ok(());
        } else {
            // RSET, NOOP and the rest.
            b"250 OK\r\n"
        };
        write.write_all(reply).await?;
    }
}

/// Splits the gateway's `event: <name>\ndata: <json>\n\n` frames out of a
/// streamed body, chunk by chunk.
#[derive(Debug, Default)]
pub struct SseFrames {
    buffer: String,
}

impl SseFrames {
    /// Adds a chunk; returns the frames it completed, as (event, data).
    pub fn push(&mut self, chunk: &[u8]) -> Vec<(String, serde_json::Value)> {
        self.buffer.push_str(&String::from_utf8_lossy(chunk));
        let mut out = Vec::new();
        while let Some(end) = self.buffer.find("\n\n") {
            let frame: String = self.buffer.drain(..end + 2).collect();
            let event = frame
                .lines()
                .find_map(|l| l.strip_prefix("event: "))
                .unwrap_or("")
                .to_owned();
            let data = frame
                .lines()
                .find_map(|l| l.strip_prefix("data: "))
                .unwrap_or("null");
            out.push((event, serde_json::from_str(data).expect("JSON data")));
        }
        out
    }
}

/// A minimal ZIP archive (stored entries, no data) with these entry names
/// in its central directory: an OOXML document when they say so.
pub fn zip_archive(names: &[&str]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut directory = Vec::new();
    for name in names {
        let offset = out.len() as u32;
        out.extend_from_slice(b"PK\x03\x04");
        out.extend_from_slice(&[0; 22]);
        out.extend_from_slice(&(name.len() as u16).to_le_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(name.as_bytes());
        directory.extend_from_slice(b"PK\x01\x02");
        directory.extend_from_slice(&[0; 24]);
        directory.extend_from_slice(&(name.len() as u16).to_le_bytes());
        directory.extend_from_slice(&[0; 12]);
        directory.extend_from_slice(&offset.to_le_bytes());
        directory.extend_from_slice(name.as_bytes());
    }
    let start = out.len() as u32;
    out.extend_from_slice(&directory);
    out.extend_from_slice(b"PK\x05\x06");
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&(names.len() as u16).to_le_bytes());
    out.extend_from_slice(&(names.len() as u16).to_le_bytes());
    out.extend_from_slice(&(directory.len() as u32).to_le_bytes());
    out.extend_from_slice(&start.to_le_bytes());
    out.extend_from_slice(&[0, 0]);
    out
}
