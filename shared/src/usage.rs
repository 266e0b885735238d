//! Usage records and statistics (SPEC §7). The predict functions record
//! usage in-process through [`record_usage`]; the usage function serves
//! the reports. Statistics are computed in SQL over a date range.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::error::ApiError;
use crate::query::DateRange;

/// A stored usage record.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
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
    pub metadata: Value,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Stores one usage record.
pub async fn record_usage(
    conn: &mut PgConnection,
    user_id: &str,
    service: &str,
    operation: &str,
    credits: i64,
    metadata: Value,
) -> Result<UsageRecord, ApiError> {
    let checks = [
        ("userId", user_id, 128),
        ("service", service, 64),
        ("operation", operation, 128),
    ];
    for (field, value, max) in checks {
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
    }
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
    Ok(sqlx::query_as(
        "INSERT INTO usage_logs (id, user_id, service, operation, credits, metadata)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, user_id, service, operation, credits, metadata, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(service)
    .bind(operation)
    .bind(credits)
    .bind(metadata)
    .fetch_one(conn)
    .await?)
}

/// The chatflow a record is about: its metadata's `chatflow_id` (or
/// `chatflowId`), else the operation of a `chat` record.
const CHATFLOW_OF: &str = "COALESCE(metadata->>'chatflow_id', metadata->>'chatflowId', \
                           CASE WHEN service = 'chat' THEN operation END)";

/// The sum of `credits`, saturating at 2^53 − 1 (a sum past it would not
/// fit a JavaScript number, nor, far enough, a `bigint`: never a 500).
const SUM_CREDITS: &str = "LEAST(COALESCE(SUM(credits), 0), 9007199254740991)::bigint";

async fn grouped(
    conn: &mut PgConnection,
    key_sql: &str,
    key_name: &str,
    user_id: Option<&str>,
    range: &DateRange,
    order_by_key: bool,
    limit: i64,
) -> Result<Vec<Value>, ApiError> {
    let order = if order_by_key { "k" } else { "credits DESC, k" };
    let sql = format!(
        "SELECT k, COUNT(*) AS records, {SUM_CREDITS} AS credits FROM (
             SELECT {key_sql} AS k, credits FROM usage_logs
              WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR user_id = $3)
         ) t WHERE k IS NOT NULL GROUP BY k ORDER BY {order} LIMIT $4"
    );
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(&sql)
        .bind(range.from)
        .bind(range.to)
        .bind(user_id)
        .bind(limit)
        .fetch_all(conn)
        .await?;
    Ok(rows
        .into_iter()
        .map(|(k, records, credits)| json!({ key_name: k, "records": records, "credits": credits }))
        .collect())
}

/// Statistics over `range`, for one user or (with `None`) everyone;
/// `with_users` adds the top users (system statistics).
pub async fn stats(
    conn: &mut PgConnection,
    user_id: Option<&str>,
    range: &DateRange,
    with_users: bool,
) -> Result<Value, ApiError> {
    let (total_records, total_credits): (i64, i64) = sqlx::query_as(&format!(
        "SELECT COUNT(*), {SUM_CREDITS} FROM usage_logs
              WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR user_id = $3)"
    ))
    .bind(range.from)
    .bind(range.to)
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await?;
    let by_service = grouped(conn, "service", "service", user_id, range, false, 100).await?;
    let day = "to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')";
    let by_day = grouped(conn, day, "day", user_id, range, true, 3660).await?;
    let by_chatflow = grouped(conn, CHATFLOW_OF, "chatflowId", user_id, range, false, 100).await?;
    let recent: Vec<UsageRecord> = sqlx::query_as(
        "SELECT id, user_id, service, operation, credits, metadata, created_at FROM usage_logs
          WHERE created_at >= $1 AND created_at < $2 AND ($3::text IS NULL OR user_id = $3)
          ORDER BY created_at DESC, id DESC LIMIT 10",
    )
    .bind(range.from)
    .bind(range.to)
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut out = json!({
        "from": range.from,
        "to": range.to,
        "totalRecords": total_records,
        "totalCredits": total_credits,
        "byService": by_service,
        "byDay": by_day,
        "byChatflow": by_chatflow,
        "recent": recent,
    });
    if with_users {
        out["byUser"] = json!(grouped(conn, "user_id", "userId", user_id, range, false, 20).await?);
    }
    Ok(out)
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

/// The records of `range`, oldest first, as a stream of CSV chunks (one
/// query per `chunk` rows, keyset-paginated, so memory stays flat).
pub fn export_csv(
    pool: PgPool,
    range: DateRange,
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
        let rows: Result<Vec<UsageRecord>, sqlx::Error> = sqlx::query_as(
            "SELECT id, user_id, service, operation, credits, metadata, created_at FROM usage_logs
              WHERE created_at >= $1 AND created_at < $2
                AND ($3::timestamptz IS NULL OR (created_at, id) > ($3, $4))
              ORDER BY created_at, id LIMIT $5",
        )
        .bind(range.from)
        .bind(range.to)
        .bind(after_time)
        .bind(after_id)
        .bind(chunk)
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
