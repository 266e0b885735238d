//! Usage records and statistics (README §7). The predict functions record
//! usage in-process through [`record_usage`]; the usage function serves
//! the reports. Statistics are computed in SQL over a date range.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::ApiError;
use crate::query::DateRange;

/// A stored usage record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageRecord {
    /// Id.
    pub id: Uuid,
    /// The user it is for.
    pub user_id: String,
    /// Service (`chat` for predictions).
    pub service: String,
    /// Operation (the chatflow id for predictions).
    pub operation: String,
    /// Credits charged.
    pub credits: i64,
    /// Free-form details (tokens, latency, session...).
    #[schema(value_type = Object)]
    pub metadata: Value,
    /// The API key the prediction was made with, if any.
    pub api_key_id: Option<Uuid>,
    /// When.
    pub created_at: DateTime<Utc>,
}

fn check_text(field: &str, value: &str, max: usize) -> Result<(), ApiError> {
    if value.is_empty() || value.chars().count() > max {
        return Err(ApiError::invalid_field(
            field,
            format!("must be 1 to {max} characters"),
        ));
    }
    if value.contains('\0') {
        return Err(ApiError::invalid_field(
            field,
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

fn check_record(
    service: &str,
    operation: &str,
    credits: i64,
    metadata: &Value,
) -> Result<(), ApiError> {
    check_text("service", service, 64)?;
    check_text("operation", operation, 128)?;
    if !(0..=crate::ledger::MAX_CREDITS).contains(&credits) {
        return Err(ApiError::invalid_field(
            "credits",
            format!("must be from 0 to {}", crate::ledger::MAX_CREDITS),
        ));
    }
    if !metadata.is_object() {
        return Err(ApiError::invalid_field("metadata", "must be an object"));
    }
    // JSONB cannot hold \u0000 anywhere, keys included.
    if metadata.to_string().contains("\\u0000") {
        return Err(ApiError::invalid_field(
            "metadata",
            "must not contain NUL characters",
        ));
    }
    Ok(())
}

/// Stores one usage record (made with the API key `api_key_id`, if any).
pub async fn record_usage(
    conn: &mut PgConnection,
    user_id: &str,
    service: &str,
    operation: &str,
    credits: i64,
    metadata: Value,
    api_key_id: Option<Uuid>,
) -> Result<UsageRecord, ApiError> {
    check_text("userId", user_id, 128)?;
    check_record(service, operation, credits, &metadata)?;
    Ok(sqlx::query_as!(
        UsageRecord,
        "INSERT INTO usage_logs (id, user_id, service, operation, credits, metadata, api_key_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING id, user_id, service, operation, credits, metadata, api_key_id, created_at",
        Uuid::now_v7(),
        user_id,
        service,
        operation,
        credits,
        metadata,
        api_key_id
    )
    .fetch_one(conn)
    .await?)
}

/// A report's group by service.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ByService {
    /// The service.
    pub service: String,
    /// Records.
    pub records: i64,
    /// Credits (saturating at 2^53 − 1).
    pub credits: i64,
}

/// A report's group by day (UTC).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ByDay {
    /// `YYYY-MM-DD`.
    pub day: String,
    /// Records.
    pub records: i64,
    /// Credits (saturating at 2^53 − 1).
    pub credits: i64,
}

/// A report's group by chatflow: the record's `metadata.chatflow_id`,
/// else the operation of a `chat` record.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByChatflow {
    /// The chatflow.
    pub chatflow_id: String,
    /// Records.
    pub records: i64,
    /// Credits (saturating at 2^53 − 1).
    pub credits: i64,
}

/// A report's group by user (system statistics: the top users).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByUser {
    /// The user.
    pub user_id: String,
    /// Their username, when the ledger knows it (charts show people by
    /// name).
    pub username: Option<String>,
    /// Records.
    pub records: i64,
    /// Credits (saturating at 2^53 − 1).
    pub credits: i64,
}

/// A report's group by API key (records made with a token are not in it).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ByKey {
    /// The key.
    pub key_id: Uuid,
    /// `fgw_` and its public id (`null` when the key is gone).
    pub prefix: Option<String>,
    /// Its name (`null` when the key is gone).
    pub name: Option<String>,
    /// Records.
    pub records: i64,
    /// Credits (saturating at 2^53 − 1).
    pub credits: i64,
}

/// Usage statistics over a range.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Start (inclusive).
    pub from: DateTime<Utc>,
    /// End (exclusive).
    pub to: DateTime<Utc>,
    /// Records in the range.
    pub total_records: i64,
    /// Credits in the range (saturating at 2^53 − 1).
    pub total_credits: i64,
    /// By service, most credits first.
    pub by_service: Vec<ByService>,
    /// By day, in order.
    pub by_day: Vec<ByDay>,
    /// By chatflow, most credits first.
    pub by_chatflow: Vec<ByChatflow>,
    /// By API key, most credits first.
    pub by_key: Vec<ByKey>,
    /// The ten latest records.
    pub recent: Vec<UsageRecord>,
    /// The top users (system statistics only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_user: Option<Vec<ByUser>>,
}

/// Statistics over `range`, for one user or (with `None`) everyone, and
/// only of `team`'s members while they belonged when a team is given;
/// `with_users` adds the top users (system statistics). Sums saturate at
/// 2^53 − 1 (past it a sum would not fit a JavaScript number, nor, far
/// enough, a `bigint`: never a 500).
pub async fn stats(
    conn: &mut PgConnection,
    user_id: Option<&str>,
    team: Option<Uuid>,
    range: &DateRange,
    with_users: bool,
) -> Result<Stats, ApiError> {
    let (from, to) = (range.from, range.to);
    let overall = sqlx::query!(
        r#"SELECT COUNT(*) AS "records!",
                  LEAST(COALESCE(SUM(credits), 0), 9007199254740991)::bigint AS "credits!"
             FROM usage_logs
            WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR user_id = $3)
              AND in_team($4, user_id, created_at)"#,
        from,
        to,
        user_id,
        team
    )
    .fetch_one(&mut *conn)
    .await?;
    let by_service = by_service(conn, user_id, team, range).await?;
    let by_day = by_day(conn, user_id, team, range).await?;
    let by_chatflow = by_chatflow(conn, user_id, team, range).await?;
    let by_key = by_key(conn, user_id, team, range).await?;
    let recent = sqlx::query_as!(
        UsageRecord,
        "SELECT id, user_id, service, operation, credits, metadata, api_key_id, created_at
           FROM usage_logs
          WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR user_id = $3)
              AND in_team($4, user_id, created_at)
          ORDER BY created_at DESC, id DESC LIMIT 10",
        from,
        to,
        user_id,
        team
    )
    .fetch_all(&mut *conn)
    .await?;
    let by_user = match with_users {
        true => Some(by_user(conn, team, range).await?),
        false => None,
    };
    Ok(Stats {
        from,
        to,
        total_records: overall.records,
        total_credits: overall.credits,
        by_service,
        by_day,
        by_chatflow,
        by_key,
        recent,
        by_user,
    })
}

async fn by_service(
    conn: &mut PgConnection,
    user_id: Option<&str>,
    team: Option<Uuid>,
    range: &DateRange,
) -> Result<Vec<ByService>, ApiError> {
    Ok(sqlx::query!(
        r#"SELECT service, COUNT(*) AS records,
                  LEAST(SUM(credits), 9007199254740991)::bigint AS credits
             FROM usage_logs
            WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR user_id = $3)
              AND in_team($4, user_id, created_at)
            GROUP BY service ORDER BY credits DESC, service LIMIT 100"#,
        range.from,
        range.to,
        user_id,
        team
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| ByService {
        service: r.service,
        records: r.records.unwrap_or(0),
        credits: r.credits.unwrap_or(0),
    })
    .collect())
}

async fn by_day(
    conn: &mut PgConnection,
    user_id: Option<&str>,
    team: Option<Uuid>,
    range: &DateRange,
) -> Result<Vec<ByDay>, ApiError> {
    Ok(sqlx::query!(
        r#"SELECT to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD') AS "day!",
                  COUNT(*) AS records, LEAST(SUM(credits), 9007199254740991)::bigint AS credits
             FROM usage_logs
            WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR user_id = $3)
              AND in_team($4, user_id, created_at)
            GROUP BY 1 ORDER BY 1 LIMIT 3660"#,
        range.from,
        range.to,
        user_id,
        team
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| ByDay {
        day: r.day,
        records: r.records.unwrap_or(0),
        credits: r.credits.unwrap_or(0),
    })
    .collect())
}

async fn by_chatflow(
    conn: &mut PgConnection,
    user_id: Option<&str>,
    team: Option<Uuid>,
    range: &DateRange,
) -> Result<Vec<ByChatflow>, ApiError> {
    Ok(sqlx::query!(
        r#"SELECT k AS "chatflow!", COUNT(*) AS records,
                  LEAST(SUM(credits), 9007199254740991)::bigint AS credits
             FROM (SELECT COALESCE(metadata->>'chatflow_id', metadata->>'chatflowId',
                                   CASE WHEN service = 'chat' THEN operation END) AS k, credits
                     FROM usage_logs
                    WHERE created_at >= $1 AND created_at < $2
                      AND ($3::text IS NULL OR user_id = $3)
              AND in_team($4, user_id, created_at)) t
            WHERE k IS NOT NULL GROUP BY k ORDER BY credits DESC, k LIMIT 100"#,
        range.from,
        range.to,
        user_id,
        team
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| ByChatflow {
        chatflow_id: r.chatflow,
        records: r.records.unwrap_or(0),
        credits: r.credits.unwrap_or(0),
    })
    .collect())
}

async fn by_key(
    conn: &mut PgConnection,
    user_id: Option<&str>,
    team: Option<Uuid>,
    range: &DateRange,
) -> Result<Vec<ByKey>, ApiError> {
    Ok(sqlx::query_as!(
        ByKey,
        r#"SELECT u.api_key_id AS "key_id!", 'fgw_' || k.public_id AS prefix, k.name,
                  COUNT(*) AS "records!",
                  LEAST(SUM(u.credits), 9007199254740991)::bigint AS "credits!"
             FROM usage_logs u LEFT JOIN api_keys k ON k.id = u.api_key_id
            WHERE u.created_at >= $1 AND u.created_at < $2 AND u.api_key_id IS NOT NULL
              AND ($3::text IS NULL OR u.user_id = $3)
              AND in_team($4, u.user_id, u.created_at)
            GROUP BY u.api_key_id, k.public_id, k.name
            ORDER BY 5 DESC, 1 LIMIT 100"#,
        range.from,
        range.to,
        user_id,
        team
    )
    .fetch_all(conn)
    .await?)
}

/// The top users, most credits first: twenty of everyone, or (for a
/// team's report) up to 500 of its members, each counted only while
/// they belonged.
async fn by_user(
    conn: &mut PgConnection,
    team: Option<Uuid>,
    range: &DateRange,
) -> Result<Vec<ByUser>, ApiError> {
    Ok(sqlx::query!(
        r#"SELECT t.user_id AS "user_id!", t.records, t.credits, a.username
             FROM (SELECT user_id, COUNT(*) AS records,
                          LEAST(SUM(credits), 9007199254740991)::bigint AS credits
                     FROM usage_logs WHERE created_at >= $1 AND created_at < $2
              AND in_team($3, user_id, created_at)
                    GROUP BY user_id ORDER BY credits DESC, user_id
                    LIMIT CASE WHEN $3::uuid IS NULL THEN 20 ELSE 500 END) t
             LEFT JOIN user_accounts a ON a.user_id = t.user_id
            ORDER BY t.credits DESC, t.user_id"#,
        range.from,
        range.to,
        team
    )
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| ByUser {
        user_id: r.user_id,
        username: r.username,
        records: r.records.unwrap_or(0),
        credits: r.credits.unwrap_or(0),
    })
    .collect())
}

/// The CSV header of an export.
pub const CSV_HEADER: &str = "id,created_at,user_id,service,operation,credits,metadata\n";

/// One CSV cell. A cell a spreadsheet would run as a formula (beginning
/// with `=`, `+`, `-`, `@`, a tab or a carriage return) is prefixed with a
/// single quote, so an export opened in Excel or Sheets never executes
/// what a user put in a field; then the cell is quoted when needed.
fn csv_field(value: &str) -> String {
    let neutral = if value.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{value}")
    } else {
        value.to_owned()
    };
    if neutral.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", neutral.replace('"', "\"\""))
    } else {
        neutral
    }
}

/// One record as a CSV line.
pub fn csv_line(r: &UsageRecord) -> String {
    format!(
        "{},{},{},{},{},{},{}\n",
        r.id,
        r.created_at.to_rfc3339(),
        csv_field(&r.user_id),
        csv_field(&r.service),
        csv_field(&r.operation),
        r.credits,
        csv_field(&r.metadata.to_string()),
    )
}

/// The most an export may weigh: a buffered Lambda answer stops at 6 MB.
pub const MAX_EXPORT_BYTES: i64 = 5_000_000;

/// Refuses an export of `range` that would not fit in one answer (422
/// `export_too_large`, asking for a shorter range): its records and the
/// size their CSV lines will have, give or take the quoting, counted
/// before anything is sent.
pub async fn check_export_size(
    pool: &PgPool,
    range: &DateRange,
    team: Option<Uuid>,
) -> Result<(), ApiError> {
    let row = sqlx::query!(
        r#"SELECT count(*) AS "rows!",
                  COALESCE(SUM(120 + octet_length(user_id) + octet_length(service)
                               + octet_length(operation) + octet_length(metadata::text)), 0)::bigint
                    AS "bytes!"
             FROM usage_logs WHERE created_at >= $1 AND created_at < $2
              AND in_team($3, user_id, created_at)"#,
        range.from,
        range.to,
        team
    )
    .fetch_one(pool)
    .await?;
    if row.bytes > MAX_EXPORT_BYTES {
        return Err(ApiError::Unprocessable {
            code: "export_too_large",
            message: format!(
                "the {} records of this range make about {} MB of CSV, more than the {} MB one answer can carry; ask for a shorter range",
                row.rows,
                (row.bytes + 999_999) / 1_000_000,
                MAX_EXPORT_BYTES / 1_000_000
            ),
        });
    }
    Ok(())
}

/// The records of `range` (of `team`'s members while they belonged,
/// when given), oldest first, as a stream of CSV chunks (one
/// query per `chunk` rows, keyset-paginated, so memory stays flat).
pub fn export_csv(
    pool: PgPool,
    range: DateRange,
    team: Option<Uuid>,
    chunk: i64,
) -> impl futures_util::Stream<Item = Result<String, ApiError>> + Send + 'static {
    struct State {
        pool: PgPool,
        after: Option<(DateTime<Utc>, Uuid)>,
        header_sent: bool,
        done: bool,
    }
    let state = State {
        pool,
        after: None,
        header_sent: false,
        done: false,
    };
    futures_util::stream::unfold(state, move |mut s| async move {
        if s.done {
            return None;
        }
        if !s.header_sent {
            s.header_sent = true;
            return Some((Ok(CSV_HEADER.to_owned()), s));
        }
        let (after_time, after_id) = s
            .after
            .map(|(t, id)| (Some(t), Some(id)))
            .unwrap_or((None, None));
        let rows: Result<Vec<UsageRecord>, sqlx::Error> = sqlx::query_as!(
            UsageRecord,
            "SELECT id, user_id, service, operation, credits, metadata, api_key_id, created_at
           FROM usage_logs
              WHERE created_at >= $1 AND created_at < $2
                AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4::uuid))
                AND in_team($6, user_id, created_at)
              ORDER BY created_at, id LIMIT $5",
            range.from,
            range.to,
            after_time,
            after_id,
            chunk,
            team
        )
        .fetch_all(&s.pool)
        .await;
        match rows {
            Err(e) => {
                s.done = true;
                Some((Err(ApiError::from(e)), s))
            }
            Ok(rows) if rows.is_empty() => None,
            Ok(rows) => {
                if (rows.len() as i64) < chunk {
                    s.done = true;
                }
                s.after = rows.last().map(|r| (r.created_at, r.id));
                Some((Ok(rows.iter().map(csv_line).collect()), s))
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_a_spreadsheet_would_run_are_neutralised() {
        assert_eq!(
            csv_field("=HYPERLINK(\"http://x\")"),
            "\"'=HYPERLINK(\"\"http://x\"\")\""
        );
        assert_eq!(csv_field("+1+1"), "'+1+1");
        assert_eq!(csv_field("-2+3"), "'-2+3");
        assert_eq!(csv_field("@SUM(A1)"), "'@SUM(A1)");
        assert_eq!(csv_field("\tcmd"), "'\tcmd");
        assert_eq!(csv_field("\rcmd"), "\"'\rcmd\"");
        assert_eq!(csv_field("a=b"), "a=b");
    }

    #[test]
    fn csv_fields_are_quoted_when_needed() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
    }
}
