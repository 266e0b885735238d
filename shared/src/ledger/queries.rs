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
        "SELECT id, credits, remaining, expires_at, allocated_at FROM credit_allocations
          WHERE user_id = $1 AND remaining > 0 AND expired_at IS NULL
            AND (expires_at IS NULL OR expires_at > now())
          ORDER BY expires_at ASC NULLS LAST, allocated_at, id",
        user.as_str()
    )
    .fetch_all(conn)
    .await?;
    Ok(Balance {
        user_id: user.clone(),
        total_credits: allocations.iter().map(|a| a.remaining).sum(),
        allocations,
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
