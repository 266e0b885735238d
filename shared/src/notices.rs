//! Warnings and webhooks (README "Allowances and warnings"), the job's
//! side: notices are written once, in the transactions that cause them
//! (the `notify` SQL function; the ledger's entries, grants and this
//! module's look-ahead call it); the job mails those to be mailed and
//! delivers each to every webhook listening for its event, following the
//! Standard Webhooks specification (`webhook-id`, `webhook-timestamp`,
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`,
//! a `whsec_` secret), retrying with backoff for 24 hours. Nothing is sent
//! from a request's own path: a Lambda instance freezes once it answers.

use std::net::{IpAddr, SocketAddr};

use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::error::ApiError;

/// The events a webhook may listen for.
pub const EVENTS: [&str; 6] = [
    "credits.low",
    "credits.expiring",
    "credits.granted",
    "credits.exhausted",
    "team.wallet_low",
    "prediction.refused_402",
];

/// How far ahead credits about to expire are announced.
pub const EXPIRY_NOTICE_DAYS: i32 = 7;
/// The smallest allocation whose expiry is announced.
pub const EXPIRY_NOTICE_CREDITS: i64 = 10;
/// How long a delivery is retried.
pub const RETRY_FOR_HOURS: i64 = 24;

/// The signature header of a delivery: `v1,` and the base64 HMAC-SHA256,
/// keyed by `secret`, of `id.timestamp.body`.
pub fn signature(secret: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp}.{body}").as_bytes());
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    format!("v1,{sig}")
}

/// A new secret: 32 random bytes, and the `whsec_` form shown once.
pub fn new_secret() -> (Vec<u8>, String) {
    let bytes = crate::digest::random_bytes::<32>().to_vec();
    let shown = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(&bytes)
    );
    (bytes, shown)
}

/// How long after attempt `n + 1` failed the next is made (`n` = 0 after
/// the first): 30 seconds, doubling, at most 2 hours.
pub fn backoff(attempts: i32) -> Duration {
    let seconds = 30_i64 << attempts.clamp(0, 8);
    Duration::seconds(seconds.min(7200))
}

/// Announces, once per allocation, credits of at least
/// [`EXPIRY_NOTICE_CREDITS`] that expire within [`EXPIRY_NOTICE_DAYS`] of
/// `at` (`credits.expiring`); returns how many notices were new.
pub async fn look_ahead(pool: &PgPool, at: DateTime<Utc>, batch: i64) -> Result<u64, ApiError> {
    let made = sqlx::query_scalar!(
        r#"SELECT COUNT(*) FILTER (WHERE notify('credits.expiring', c.user_id,
                                   'credits.expiring:' || c.id,
                                   jsonb_build_object('account', c.user_id, 'allocationId', c.id,
                                                      'credits', c.remaining, 'expiresAt', c.expires_at),
                                   true)) AS "made!"
             FROM (SELECT c.id, c.user_id, c.remaining, c.expires_at
                     FROM credit_allocations c JOIN user_accounts a ON a.user_id = c.user_id
                    WHERE a.owner_kind = 'user' AND c.expired_at IS NULL AND c.remaining > 0
                      AND c.allowance IS NULL
                      AND c.credits >= $3 AND c.expires_at > $1
                      AND c.expires_at <= $1 + make_interval(days => $2)
                      AND NOT EXISTS (SELECT 1 FROM notices n
                                       WHERE n.dedupe_key = 'credits.expiring:' || c.id)
                    ORDER BY c.expires_at LIMIT $4) c"#,
        at,
        EXPIRY_NOTICE_DAYS,
        EXPIRY_NOTICE_CREDITS,
        batch
    )
    .fetch_one(pool)
    .await?;
    Ok(made as u64 + short_wallets(pool, at).await?)
}

/// Warns the supervisors, once per team and period, of a wallet whose
/// credits that will still be there when the next period starts cannot
/// give every current member the team's allowance (`team.wallet_low`
/// with `next: true`). Returns how many notices were new.
async fn short_wallets(pool: &PgPool, at: DateTime<Utc>) -> Result<u64, ApiError> {
    let made = sqlx::query_scalar!(
        r#"SELECT COUNT(*) FILTER (WHERE notify('team.wallet_low', t.account_id,
                      'team.wallet_next:' || t.id || ':' || p.period_end,
                      jsonb_build_object('account', t.account_id, 'team', t.id, 'next', true,
                                         'shortfall', n.need - w.have, 'periodStart', p.period_end),
                      true)) AS "made!"
             FROM teams t
             JOIN LATERAL (SELECT v.* FROM allowance_versions v
                            WHERE v.allowance = 'team:' || t.id AND v.effective_from <= $1
                            ORDER BY v.effective_from DESC LIMIT 1) v ON v.active
             CROSS JOIN LATERAL allowance_period(v.period, v.time_zone, $1) p
             CROSS JOIN LATERAL (SELECT v.credits * COUNT(*) AS need FROM team_members m
                                  WHERE m.team_id = t.id AND m.left_at IS NULL) n
             CROSS JOIN LATERAL (SELECT COALESCE(SUM(c.remaining), 0) AS have FROM credit_allocations c
                                  WHERE c.user_id = t.account_id AND c.remaining > 0
                                    AND c.expired_at IS NULL
                                    AND (c.expires_at IS NULL
                                         OR c.expires_at > p.period_end + interval '1 day')) w
            WHERE t.deleted_at IS NULL AND n.need > w.have"#,
        at
    )
    .fetch_one(pool)
    .await?;
    Ok(made as u64)
}

/// A refused prediction's event (`prediction.refused_402`), in a
/// transaction of its own after the refusal rolled back; for webhooks
/// only (never mailed). At most one per user and minute: a user at 0 who
/// keeps asking gets a 402 each time, but their receivers (and this
/// table) are not flooded; the event names the first request refused.
pub async fn refused(
    pool: &PgPool,
    user: &str,
    request: &str,
    needed: i64,
    available: i64,
) -> Result<(), ApiError> {
    sqlx::query_scalar!(
        r#"SELECT notify('prediction.refused_402', $1::text, 'prediction.refused_402:' || $1::text || ':'
                           || to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI'),
                         jsonb_build_object('account', $1::text, 'request', $2::text,
                                            'needed', $3::bigint, 'available', $4::bigint),
                         false) AS "new""#,
        user,
        request,
        needed,
        available
    )
    .fetch_one(pool)
    .await?;
    Ok(())
}

/// A webhook as listed (its secret never again).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Webhook {
    /// Id.
    pub id: Uuid,
    /// Where deliveries go.
    pub url: String,
    /// The events it receives.
    pub events: Vec<String>,
    /// When it was registered.
    pub created_at: DateTime<Utc>,
}

/// A delivery as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Delivery {
    /// The `webhook-id` (the same on every attempt).
    pub id: String,
    /// The event.
    pub event: String,
    /// `pending`, `delivered` or `failed` (gave up after 24 hours).
    pub state: String,
    /// Attempts made.
    pub attempts: i32,
    /// The last answer's status (`null`: none, or no answer).
    pub last_status: Option<i32>,
    /// Why the last attempt failed, when it did.
    pub last_error: Option<String>,
    /// When the last attempt was made.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// When the next one is due (pending only).
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the event happened.
    pub created_at: DateTime<Utc>,
}

/// Whether `url` may receive deliveries: `https`, or `http` to this
/// machine (local use); never an address of a private network, written
/// as one ([`literal_reachable`]; a name is checked when it is resolved,
/// [`PublicOnly`]).
pub fn check_url(url: &str) -> Result<(), ApiError> {
    let parsed = reqwest::Url::parse(url)
        .map_err(|_| ApiError::invalid_field("url", "must be an absolute URL"))?;
    let loopback = matches!(
        parsed.host_str(),
        Some("localhost" | "127.0.0.1" | "[::1]" | "::1")
    );
    if !literal_reachable(&parsed) {
        return Err(ApiError::invalid_field(
            "url",
            "must not be an address of a private network",
        ));
    }
    match parsed.scheme() {
        "https" if parsed.host_str().is_some() => Ok(()),
        "http" if loopback => Ok(()),
        _ => Err(ApiError::invalid_field(
            "url",
            "must use https (or http to localhost, for local use)",
        )),
    }
}

/// Whether deliveries may go to `ip`: a public address, or this machine
/// (local use). Never a private network's (10/8, 172.16/12, 192.168/16,
/// fc00::/7), a link-local one (169.254/16, where cloud metadata services
/// answer; fe80::/10), a shared one (100.64/10), nor an unspecified,
/// broadcast or multicast one: an admin's webhook must not become a way
/// into the network the job runs in.
pub fn reachable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let [a, b, ..] = v4.octets();
            v4.is_loopback()
                || !(v4.is_private()
                    || v4.is_link_local()
                    || v4.is_unspecified()
                    || v4.is_broadcast()
                    || v4.is_multicast()
                    || a == 0
                    || (a == 100 && (b & 0xc0) == 64))
        }
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => reachable(IpAddr::V4(v4)),
            None => {
                let first = v6.segments()[0];
                v6.is_loopback()
                    || !(v6.is_unspecified()
                        || v6.is_multicast()
                        || (first & 0xfe00) == 0xfc00
                        || (first & 0xffc0) == 0xfe80)
            }
        },
    }
}

/// Whether `url`'s host, when written as an address, is [`reachable`]
/// (a name is: it is checked when resolved).
fn literal_reachable(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<IpAddr>().map_or(true, reachable)
}

/// The resolver of the job's webhook client: a name's addresses that are
/// not [`reachable`] are dropped, so a name that resolves (or is made to
/// resolve, later) only to a private network's addresses is refused at
/// the moment of sending.
#[derive(Debug, Clone, Copy, Default)]
pub struct PublicOnly;

impl reqwest::dns::Resolve for PublicOnly {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_owned();
        Box::pin(async move {
            let found = tokio::net::lookup_host((host.as_str(), 0)).await?;
            let kept: Vec<SocketAddr> = found.filter(|a| reachable(a.ip())).collect();
            if kept.is_empty() {
                return Err(format!("{host} has no public address").into());
            }
            Ok(Box::new(kept.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Registers a webhook; returns it and its secret (`whsec_...`), shown once.
pub async fn register(
    pool: &PgPool,
    url: &str,
    events: &[String],
    actor: &str,
) -> Result<(Webhook, String), ApiError> {
    let (bytes, shown) = new_secret();
    let hook = sqlx::query_as!(
        Webhook,
        "INSERT INTO webhooks (id, url, events, secret, created_by) VALUES ($1, $2, $3, $4, $5)
         RETURNING id, url, events, created_at",
        Uuid::now_v7(),
        url,
        events,
        bytes,
        actor
    )
    .fetch_one(pool)
    .await?;
    Ok((hook, shown))
}

/// The live webhooks, newest first.
pub async fn list(pool: &PgPool) -> Result<Vec<Webhook>, ApiError> {
    Ok(sqlx::query_as!(
        Webhook,
        "SELECT id, url, events, created_at FROM webhooks WHERE deleted_at IS NULL
          ORDER BY created_at DESC LIMIT 100"
    )
    .fetch_all(pool)
    .await?)
}

/// Removes a webhook (its pending deliveries stop); false when none.
pub async fn remove(pool: &PgPool, id: Uuid) -> Result<bool, ApiError> {
    let mut tx = crate::ledger::primitives::begin(pool, crate::ledger::Durability::Flushed).await?;
    let removed = sqlx::query!(
        "UPDATE webhooks SET deleted_at = now() WHERE id = $1 AND deleted_at IS NULL",
        id
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    sqlx::query!(
        "UPDATE webhook_deliveries SET state = 'failed', last_error = 'the webhook was removed'
          WHERE webhook_id = $1 AND state = 'pending'",
        id
    )
    .execute(&mut *tx)
    .await?;
    crate::ledger::primitives::commit(tx).await?;
    Ok(removed == 1)
}

/// A page of a webhook's deliveries, newest first, with the total; `None`
/// when there is no such webhook.
pub async fn deliveries(
    pool: &PgPool,
    id: Uuid,
    page: i64,
    limit: i64,
) -> Result<Option<(Vec<Delivery>, i64)>, ApiError> {
    let known = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM webhooks WHERE id = $1) AS "k!""#,
        id
    )
    .fetch_one(pool)
    .await?;
    if !known {
        return Ok(None);
    }
    let rows = sqlx::query!(
        r#"SELECT d.id, n.event, d.state, d.attempts, d.last_status, d.last_error,
                  d.last_attempt_at, d.next_attempt_at, d.created_at, COUNT(*) OVER () AS "total!"
             FROM webhook_deliveries d JOIN notices n ON n.id = d.notice_id
            WHERE d.webhook_id = $1
            ORDER BY d.created_at DESC, d.id LIMIT $2 OFFSET $3"#,
        id,
        limit,
        (page - 1) * limit
    )
    .fetch_all(pool)
    .await?;
    let total = rows.first().map_or(0, |r| r.total);
    let list = rows
        .into_iter()
        .map(|r| Delivery {
            id: r.id,
            event: r.event,
            next_attempt_at: (r.state == "pending").then_some(r.next_attempt_at),
            state: r.state,
            attempts: r.attempts,
            last_status: r.last_status,
            last_error: r.last_error,
            last_attempt_at: r.last_attempt_at,
            created_at: r.created_at,
        })
        .collect();
    Ok(Some((list, total)))
}

/// What one delivery run did.
#[derive(Debug, Clone, Copy, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryReport {
    /// Answered 2xx.
    pub delivered: u64,
    /// Failed, to be retried.
    pub retrying: u64,
    /// Given up after 24 hours.
    pub failed: u64,
}

/// Sends every delivery due at `at` (a batch), each claimed first so that
/// overlapping runs never send one twice at once; a 2xx delivers it, any
/// other answer or none schedules the next attempt with [`backoff`], and
/// after [`RETRY_FOR_HOURS`] it fails for good.
pub async fn deliver(
    pool: &PgPool,
    http: &reqwest::Client,
    at: DateTime<Utc>,
    batch: i64,
) -> Result<DeliveryReport, ApiError> {
    let mut report = DeliveryReport::default();
    let claimed = claim(pool, at, batch).await?;
    // Ten at a time, so one receiver that hangs does not hold up the rest.
    let tried: Vec<(Due, Attempt)> =
        futures_util::stream::iter(claimed.into_iter().map(|due| async move {
            let outcome = attempt(http, &due).await;
            (due, outcome)
        }))
        .buffer_unordered(10)
        .collect()
        .await;
    for (due, error) in tried {
        let state = match (
            &error,
            at - due.created_at >= Duration::hours(RETRY_FOR_HOURS),
        ) {
            (Ok(_), _) => "delivered",
            (Err(_), true) => "failed",
            (Err(_), false) => "pending",
        };
        match state {
            "delivered" => report.delivered += 1,
            "failed" => report.failed += 1,
            _ => report.retrying += 1,
        }
        let (status, error) = match error {
            Ok(status) => (Some(status), None),
            Err((status, why)) => (status, Some(why)),
        };
        sqlx::query!(
            "UPDATE webhook_deliveries SET state = $2, last_status = $3, last_error = $4,
                    next_attempt_at = $5
              WHERE id = $1 AND state = 'pending'",
            due.id,
            state,
            status,
            error,
            at + backoff(due.attempts - 1)
        )
        .execute(pool)
        .await?;
    }
    Ok(report)
}

/// How an attempt went: the status of a 2xx, else the status (when
/// there was an answer) and why it failed.
type Attempt = Result<i32, (Option<i32>, String)>;

/// A delivery claimed for an attempt.
struct Due {
    id: String,
    attempts: i32,
    created_at: DateTime<Utc>,
    event: String,
    data: serde_json::Value,
    happened: DateTime<Utc>,
    url: String,
    secret: Vec<u8>,
}

/// Claims the deliveries due at `at` (their attempt counted, and put off
/// by ten minutes should this run die before it records the outcome).
async fn claim(pool: &PgPool, at: DateTime<Utc>, batch: i64) -> Result<Vec<Due>, ApiError> {
    Ok(sqlx::query_as!(
        Due,
        r#"UPDATE webhook_deliveries d
              SET attempts = d.attempts + 1, last_attempt_at = $1,
                  next_attempt_at = $1 + interval '10 minutes'
             FROM (SELECT id FROM webhook_deliveries
                    WHERE state = 'pending' AND next_attempt_at <= $1
                    ORDER BY next_attempt_at LIMIT $2 FOR UPDATE SKIP LOCKED) due,
                  notices n, webhooks w
            WHERE d.id = due.id AND n.id = d.notice_id AND w.id = d.webhook_id
              AND w.deleted_at IS NULL
        RETURNING d.id, d.attempts, d.created_at, n.event, n.data, n.created_at AS happened,
                  w.url, w.secret"#,
        at,
        batch
    )
    .fetch_all(pool)
    .await?)
}

/// One attempt: the signed POST; the status of a 2xx, else the status
/// (when there was an answer) and why it failed.
async fn attempt(http: &reqwest::Client, due: &Due) -> Attempt {
    let body = serde_json::json!({
        "type": due.event,
        "timestamp": due.happened.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        "data": due.data,
    })
    .to_string();
    let private = reqwest::Url::parse(&due.url).map_or(true, |u| !literal_reachable(&u));
    if private {
        return Err((None, "the address is on a private network".into()));
    }
    // The moment of sending: receivers refuse a timestamp minutes old.
    let timestamp = Utc::now().timestamp();
    let sent = http
        .post(&due.url)
        .header("content-type", "application/json")
        .header("webhook-id", &due.id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "webhook-signature",
            signature(&due.secret, &due.id, timestamp, &body),
        )
        .body(body)
        .send()
        .await;
    match sent {
        Ok(res) if res.status().is_success() => Ok(i32::from(res.status().as_u16())),
        Ok(res) => Err((
            Some(i32::from(res.status().as_u16())),
            format!("answered {}", res.status()),
        )),
        Err(err) => Err((None, format!("no answer: {}", without_url(err)))),
    }
}

/// A request error without its URL (a receiver's URL may carry a token).
fn without_url(err: reqwest::Error) -> String {
    let text = err.without_url().to_string();
    text.chars().take(300).collect()
}

/// One mail to send: to whom, in which language, about what.
#[derive(Debug, Clone)]
struct Mail {
    email: Option<String>,
    username: Option<String>,
    locale: String,
    event: String,
    data: serde_json::Value,
    team: Option<String>,
}

/// Every warning's subject and text, per language and event: `{name}`
/// stands for a value of the notice (`{short}` picks the team wallet's
/// text about a missing allowance).
const TEMPLATES: &[(&str, &str, &str, &str)] = &[
    ("en", "credits.low", "Your credits are running low",
     "You have {balance} credits left, below your warning level of {threshold}."),
    ("en", "credits.exhausted", "You have run out of credits",
     "You have no credits left; new questions are refused until more arrive."),
    ("en", "credits.expiring", "Some of your credits expire soon",
     "{credits} of your credits expire on {expiresAt}."),
    ("en", "credits.granted", "Your allowance has arrived",
     "{credits} credits have arrived; they last until {periodEnd}."),
    ("en", "team.wallet_low", "The wallet of the team {team} is running low",
     "The wallet holds {balance} credits, below its warning level of {threshold}."),
    ("en", "team.wallet_short", "The wallet of the team {team} is running low",
     "The wallet could not give every member this period's allowance: {shortfall} credits were missing."),
    ("en", "team.wallet_next", "The wallet of the team {team} is running low",
     "The wallet cannot give every member the next period's allowance, which starts on {periodStart}: {shortfall} credits are missing."),
    ("zh-CN", "credits.low", "你的额度不多了", "你的额度剩下 {balance}，低于提醒门槛 {threshold}。"),
    ("zh-CN", "credits.exhausted", "你的额度已用完", "你的额度已用完；在获得更多额度前，新的提问会被拒绝。"),
    ("zh-CN", "credits.expiring", "你的部分额度即将过期", "你有 {credits} 额度将于 {expiresAt} 过期。"),
    ("zh-CN", "credits.granted", "你的定期额度已到账", "{credits} 额度已到账，可用至 {periodEnd}。"),
    ("zh-CN", "team.wallet_low", "团队 {team} 的钱包额度不足", "钱包剩下 {balance}，低于提醒门槛 {threshold}。"),
    ("zh-CN", "team.wallet_short", "团队 {team} 的钱包额度不足", "钱包不足以发放本期定期额度，尚缺 {shortfall}。"),
    ("zh-CN", "team.wallet_next", "团队 {team} 的钱包额度不足", "钱包不足以发放 {periodStart} 开始的下一期定期额度，尚缺 {shortfall}。"),
    ("zh-TW", "credits.low", "你的額度不多了", "你的額度剩下 {balance}，低於提醒門檻 {threshold}。"),
    ("zh-TW", "credits.exhausted", "你的額度已用完", "你的額度已用完；在獲得更多額度前，新的提問會被拒絕。"),
    ("zh-TW", "credits.expiring", "你的部分額度即將過期", "你有 {credits} 額度將於 {expiresAt} 過期。"),
    ("zh-TW", "credits.granted", "你的定期額度已入帳", "{credits} 額度已入帳，可用至 {periodEnd}。"),
    ("zh-TW", "team.wallet_low", "團隊 {team} 的錢包額度不足", "錢包剩下 {balance}，低於提醒門檻 {threshold}。"),
    ("zh-TW", "team.wallet_short", "團隊 {team} 的錢包額度不足", "錢包不足以發放本期定期額度，尚缺 {shortfall}。"),
    ("zh-TW", "team.wallet_next", "團隊 {team} 的錢包額度不足", "錢包不足以發放 {periodStart} 開始的下一期定期額度，尚缺 {shortfall}。"),
];

/// A warning's subject and text in the recipient's language (en, zh-CN,
/// zh-TW), with a link to their credits.
fn compose(mail: &Mail, console: &str) -> (String, String) {
    let next = mail.data.get("next").is_some();
    let event = match (mail.event.as_str(), mail.data.get("shortfall")) {
        ("team.wallet_low", Some(_)) if next => "team.wallet_next",
        ("team.wallet_low", Some(_)) => "team.wallet_short",
        (event, _) => event,
    };
    let locale = if ["zh-CN", "zh-TW"].contains(&mail.locale.as_str()) {
        mail.locale.as_str()
    } else {
        "en"
    };
    let (_, _, subject, text) = TEMPLATES
        .iter()
        .find(|(l, e, _, _)| *l == locale && *e == event)
        .or_else(|| {
            TEMPLATES
                .iter()
                .find(|(l, e, _, _)| *l == "en" && *e == event)
        })
        .copied()
        .unwrap_or(("en", "", "A notice about your credits", ""));
    let fill = |template: &str| {
        let mut out = template.replace("{team}", mail.team.as_deref().unwrap_or(""));
        for key in [
            "balance",
            "threshold",
            "credits",
            "shortfall",
            "expiresAt",
            "periodEnd",
            "periodStart",
        ] {
            let value = match &mail.data[key] {
                serde_json::Value::String(s) => s.get(..10).unwrap_or(s).to_owned(),
                other => other.to_string(),
            };
            out = out.replace(&format!("{{{key}}}"), &value);
        }
        out
    };
    let hello = match locale {
        "en" => format!("Hello {},", mail.username.as_deref().unwrap_or("there")),
        _ => format!("{}，你好：", mail.username.as_deref().unwrap_or("")),
    };
    let link = format!("{}/#/credits", console.trim_end_matches('/'));
    (
        fill(subject),
        format!("{hello}\r\n\r\n{}\r\n\r\n{link}\r\n", fill(text)),
    )
}

/// Mails every notice to be mailed (a batch, each claimed before its mail
/// goes out, so two runs never send one twice; a failed mail is logged,
/// not repeated): to the user it is about, or to a team's supervisors for
/// its wallet, in each one's language. Returns how many mails went out.
pub async fn mail_due(
    pool: &PgPool,
    mailer: &crate::mail::Mailer,
    batch: i64,
) -> Result<u64, ApiError> {
    let mails = sqlx::query_as!(
        Mail,
        r#"WITH claimed AS (
               UPDATE notices SET mailed_at = now()
                WHERE id IN (SELECT id FROM notices WHERE mail AND mailed_at IS NULL
                              ORDER BY created_at LIMIT $1 FOR UPDATE SKIP LOCKED)
               RETURNING id, event, account, data
           )
           SELECT a.email, a.username, a.locale AS "locale!", c.event AS "event!",
                  c.data AS "data!", NULL::text AS team
             FROM claimed c JOIN user_accounts a ON a.user_id = c.account AND a.owner_kind = 'user'
            WHERE a.deleted_at IS NULL
           UNION ALL
           SELECT a.email, a.username, a.locale, c.event, c.data, t.name
             FROM claimed c JOIN teams t ON t.account_id = c.account
             JOIN team_supervisors s ON s.team_id = t.id
             JOIN user_accounts a ON a.user_id = s.user_id AND a.deleted_at IS NULL"#,
        batch
    )
    .fetch_all(pool)
    .await?;
    let mut sent = 0;
    for mail in &mails {
        let Some(Ok(to)) = mail
            .email
            .as_deref()
            .map(|e| crate::identity::Email::parse("email", e))
        else {
            continue;
        };
        let (subject, text) = compose(mail, mailer.base_url());
        match mailer.send_warning(&to, &subject, text).await {
            Ok(()) => sent += 1,
            Err(err) => {
                tracing::error!(error = %err, event = %mail.event, "a warning was not mailed")
            }
        }
    }
    Ok(sent)
}

/// An account's warning settings.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WarningSettings {
    /// The balance below which a warning goes out now (0: never).
    pub low_credits: i64,
    /// Whether `lowCredits` is the account's own choice (else the
    /// default: 10% of what it was granted in the last 30 days, else 10).
    pub chosen: bool,
    /// Mail when an allowance arrives (users only).
    pub allowance_mail: bool,
}

/// The settings of `account` (a user's or a wallet's).
pub async fn settings(pool: &PgPool, account: &str) -> Result<WarningSettings, ApiError> {
    let row = sqlx::query!(
        r#"SELECT low_credits_threshold(a) AS "low!", a.low_credits_warning IS NOT NULL AS "chosen!",
                  a.allowance_mail
             FROM user_accounts a WHERE a.user_id = $1"#,
        account
    )
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| ApiError::not_found("no such account"))?;
    Ok(WarningSettings {
        low_credits: row.low,
        chosen: row.chosen,
        allowance_mail: row.allowance_mail,
    })
}

/// Sets `account`'s threshold (`None`: the default; `Some(0)`: never) and,
/// when given, whether an allowance's arrival is mailed.
pub async fn set_settings(
    pool: &PgPool,
    account: &str,
    low_credits: Option<i64>,
    allowance_mail: Option<bool>,
) -> Result<WarningSettings, ApiError> {
    sqlx::query!(
        "UPDATE user_accounts SET low_credits_warning = $2,
                allowance_mail = COALESCE($3, allowance_mail), updated_at = now()
          WHERE user_id = $1",
        account,
        low_credits,
        allowance_mail
    )
    .execute(pool)
    .await?;
    settings(pool, account).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::dns::Resolve;

    #[test]
    fn only_public_addresses_and_this_machine_are_reachable() {
        for ok in [
            "8.8.8.8",
            "127.0.0.1",
            "::1",
            "2606:4700::1111",
            "100.128.0.1",
        ] {
            assert!(reachable(ok.parse().unwrap()), "{ok}");
        }
        for no in [
            "10.1.2.3",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.169.254",
            "100.64.0.1",
            "0.0.0.0",
            "255.255.255.255",
            "224.0.0.1",
            "fd00::1",
            "fe80::1",
            "::",
            "::ffff:10.0.0.1",
        ] {
            assert!(!reachable(no.parse().unwrap()), "{no}");
        }
    }

    #[tokio::test]
    async fn the_resolver_drops_private_addresses_and_keeps_this_machine() {
        let private = PublicOnly.resolve("10.9.8.7".parse().unwrap()).await;
        assert!(private.is_err(), "a private address is refused");
        let local = PublicOnly.resolve("localhost".parse().unwrap()).await;
        assert!(local.unwrap().all(|a| a.ip().is_loopback()));
    }
}
