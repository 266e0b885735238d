//! Reads: balances and the history of entries. A balance excludes an
//! allocation the moment its `expires_at` passes, before any job runs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::types::{Allocation, EntryKind, LedgerError};
use crate::ids::UserId;

/// A user's spendable credits and the allocations holding them.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// The user.
    pub user_id: UserId,
    /// Σ `remaining` over allocations not expired.
    pub total_credits: i64,
    /// Unexpired allocations with credits left, soonest-expiring first
    /// (the order they are spent in).
    pub allocations: Vec<Allocation>,
    /// When the caller's next allowance credits arrive (their own
    /// balance only; absent when no allowance applies).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_credits_at: Option<chrono::DateTime<chrono::Utc>>,
    /// How many arrive then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_credits: Option<i64>,
    /// Credits that expire within a week, and when the first do.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expiring_soon: Option<crate::error::ExpiringSoon>,
}

/// Days ahead within which expiring credits are "soon" (README
/// "Allowances and warnings").
pub const SOON_DAYS: i32 = 7;

/// The user's credits that expire within [`SOON_DAYS`] of `at`, and the
/// first expiry among them; `None` when there are none.
pub async fn expiring_soon(
    conn: &mut PgConnection,
    user: &UserId,
    at: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, i64)>, LedgerError> {
    let row = sqlx::query!(
        r#"SELECT MIN(expires_at) AS first, SUM(remaining)::bigint AS credits
             FROM credit_allocations
            WHERE user_id = $1 AND remaining > 0 AND expired_at IS NULL
              AND expires_at > $2 AND expires_at <= $2 + make_interval(days => $3)"#,
        user.as_str(),
        at,
        SOON_DAYS
    )
    .fetch_one(conn)
    .await?;
    Ok(row.first.zip(row.credits))
}

/// The user's spendable total.
pub async fn total_balance(conn: &mut PgConnection, user: &UserId) -> Result<i64, LedgerError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT COALESCE(SUM(remaining), 0)::bigint AS "total!" FROM credit_allocations
            WHERE user_id = $1 AND remaining > 0 AND expired_at IS NULL
              AND (expires_at IS NULL OR expires_at > now())"#,
        user.as_str()
    )
    .fetch_one(conn)
    .await?)
}

/// The user's balance with its allocations (zero for an unknown user).
pub async fn balance(conn: &mut PgConnection, user: &UserId) -> Result<Balance, LedgerError> {
    let allocations = sqlx::query_as!(
        Allocation,
        r#"SELECT a.id, a.credits, a.remaining, a.expires_at, a.allocated_at,
                  COALESCE(g.username, a.allocated_by) AS "granted_by!"
             FROM credit_allocations a LEFT JOIN user_accounts g ON g.user_id = a.allocated_by
            WHERE a.user_id = $1 AND a.remaining > 0 AND a.expired_at IS NULL
              AND (a.expires_at IS NULL OR a.expires_at > now())
            ORDER BY a.expires_at ASC NULLS LAST, a.allocated_at, a.id"#,
        user.as_str()
    )
    .fetch_all(conn)
    .await?;
    Ok(Balance {
        user_id: user.clone(),
        total_credits: allocations.iter().map(|a| a.remaining).sum(),
        allocations,
        next_credits_at: None,
        next_credits: None,
        expiring_soon: None,
    })
}

/// What an admin's user list shows of each user's credits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreditSummary {
    /// Spendable now (as [`balance`]).
    pub balance: i64,
    /// Spent this calendar month (UTC): what the ledger took this month for
    /// answers (holds net of their refunds; an unfinished answer counts
    /// what it holds) and by deduction. Grants, expiries and an admin's
    /// adjustments are not spending.
    pub spent_this_month: i64,
}

/// [`CreditSummary`] of each of `users`, in one statement (zero for a user
/// the ledger has not seen).
pub async fn summaries(
    conn: &mut PgConnection,
    users: &[String],
) -> Result<std::collections::HashMap<String, CreditSummary>, LedgerError> {
    let rows = sqlx::query!(
        r#"WITH month AS (SELECT date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start)
           SELECT u.id AS "user_id!",
                  (SELECT COALESCE(SUM(remaining), 0) FROM credit_allocations a
                    WHERE a.user_id = u.id AND remaining > 0 AND expired_at IS NULL
                      AND (expires_at IS NULL OR expires_at > now()))::bigint AS "balance!",
                  (SELECT COALESCE(-SUM(amount), 0) FROM credit_transactions t, month
                    WHERE t.user_id = u.id AND t.created_at >= month.start
                      AND t.type IN ('reservation', 'settlement', 'refund', 'deduction'))::bigint
                    AS "spent!"
             FROM unnest($1::text[]) AS u(id)"#,
        users
    )
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            let summary = CreditSummary {
                balance: r.balance,
                spent_this_month: r.spent,
            };
            (r.user_id, summary)
        })
        .collect())
}

/// One entry of a user's history (the API calls them transactions).
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EntryRecord {
    /// Id.
    pub id: Uuid,
    /// Kind.
    #[serde(rename = "type")]
    pub kind: String,
    /// Signed amount.
    pub amount: i64,
    /// Balance after the change.
    pub balance_after: i64,
    /// Description.
    pub description: Option<String>,
    /// Reference.
    pub reference: Option<String>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Filters of a history page.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    /// Only this kind.
    pub kind: Option<EntryKind>,
    /// From (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// To (exclusive).
    pub to: Option<DateTime<Utc>>,
}

/// A page of the user's history, newest first (in the order the changes
/// happened), and the total count.
pub async fn entries(
    conn: &mut PgConnection,
    user: &UserId,
    filter: &EntryFilter,
    page: i64,
    limit: i64,
) -> Result<(Vec<EntryRecord>, i64), LedgerError> {
    let kind = filter.kind.map(EntryKind::as_str);
    let total = sqlx::query_scalar!(
        r#"SELECT COUNT(*) AS "count!" FROM credit_transactions
            WHERE user_id = $1 AND ($2::text IS NULL OR type = $2)
              AND ($3::timestamptz IS NULL OR created_at >= $3)
              AND ($4::timestamptz IS NULL OR created_at < $4)"#,
        user.as_str(),
        kind,
        filter.from,
        filter.to
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as!(
        EntryRecord,
        r#"SELECT id, type AS kind, amount, balance_after, description, reference, created_at
             FROM credit_transactions
            WHERE user_id = $1 AND ($2::text IS NULL OR type = $2)
              AND ($3::timestamptz IS NULL OR created_at >= $3)
              AND ($4::timestamptz IS NULL OR created_at < $4)
            ORDER BY seq DESC
            LIMIT $5 OFFSET $6"#,
        user.as_str(),
        kind,
        filter.from,
        filter.to,
        limit,
        (page - 1) * limit
    )
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

/// One line of a statement: an answer with its hold, top-ups, settlement
/// and refund folded into one net amount, or one other entry.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatementLine {
    /// `answer` for the entries of one answer (or of a client's
    /// reservation); otherwise the one entry's type.
    pub kind: String,
    /// The net amount: what the answer cost, as a negative number.
    pub amount: i64,
    /// The balance after the line's last entry.
    pub balance_after: i64,
    /// When the line began.
    pub created_at: DateTime<Utc>,
    /// The chatflow an answer was for.
    pub chatflow_id: Option<String>,
    /// The conversation (chat session) an answer belongs to, when the
    /// gateway made it.
    pub conversation_id: Option<String>,
    /// An answer's state: `active` (still held), `completed`, `aborted`.
    pub status: Option<String>,
    /// The entries folded into the line, oldest first.
    pub entries: Vec<EntryRecord>,
}

/// Adds `entry` to the last line when it belongs to it (`key`), else
/// begins a line; `answer` holds the chatflow and state of the answer an
/// entry belongs to.
fn fold(
    lines: &mut Vec<(String, StatementLine)>,
    key: String,
    entry: EntryRecord,
    answer: Option<(Option<String>, Option<String>)>,
) {
    let hold = entry.kind == EntryKind::Reservation.as_str();
    match lines.last_mut() {
        Some((last, line)) if *last == key => {
            line.amount += entry.amount;
            line.balance_after = entry.balance_after;
            if hold && entry.reference.is_some() {
                line.conversation_id.clone_from(&entry.reference);
            }
            line.entries.push(entry);
        }
        _ => {
            let is_answer = answer.is_some();
            let (chatflow_id, status) = answer.unwrap_or_default();
            let line = StatementLine {
                kind: if is_answer {
                    "answer".into()
                } else {
                    entry.kind.clone()
                },
                amount: entry.amount,
                balance_after: entry.balance_after,
                created_at: entry.created_at,
                chatflow_id,
                conversation_id: (is_answer && hold)
                    .then(|| entry.reference.clone())
                    .flatten(),
                status,
                entries: vec![entry],
            };
            lines.push((key, line));
        }
    }
}

/// A page of `user`'s statement, newest line first, and how many lines
/// there are. Lines are grouped in the database, so a page never splits
/// an answer.
pub async fn statement(
    conn: &mut PgConnection,
    user: &UserId,
    page: i64,
    limit: i64,
) -> Result<(Vec<StatementLine>, i64), LedgerError> {
    let total = sqlx::query_scalar!(
        r#"SELECT COUNT(DISTINCT COALESCE(streaming_session_id, id::text)) AS "count!"
             FROM credit_transactions WHERE user_id = $1"#,
        user.as_str()
    )
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query!(
        r#"WITH lines AS (
               SELECT COALESCE(streaming_session_id, id::text) AS line, MAX(seq) AS last_seq
                 FROM credit_transactions WHERE user_id = $1
                GROUP BY 1 ORDER BY last_seq DESC LIMIT $2 OFFSET $3)
           SELECT l.line AS "line!", t.id, t.type AS kind, t.amount, t.balance_after,
                  t.description, t.reference, t.created_at,
                  t.streaming_session_id AS "reservation?",
                  s.chatflow_id AS "chatflow_id?", s.status AS "status?"
             FROM lines l
             JOIN credit_transactions t
               ON t.user_id = $1 AND COALESCE(t.streaming_session_id, t.id::text) = l.line
             LEFT JOIN streaming_sessions s ON s.session_id = t.streaming_session_id
            ORDER BY l.last_seq DESC, t.seq"#,
        user.as_str(),
        limit,
        (page - 1) * limit
    )
    .fetch_all(&mut *conn)
    .await?;
    let mut lines: Vec<(String, StatementLine)> = Vec::new();
    for r in rows {
        let entry = EntryRecord {
            id: r.id,
            kind: r.kind,
            amount: r.amount,
            balance_after: r.balance_after,
            description: r.description,
            reference: r.reference,
            created_at: r.created_at,
        };
        let answer = r.reservation.is_some().then_some((r.chatflow_id, r.status));
        fold(&mut lines, r.line, entry, answer);
    }
    Ok((lines.into_iter().map(|(_, l)| l).collect(), total))
}
