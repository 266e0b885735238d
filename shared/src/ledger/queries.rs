//! Reads: balances and transaction history. A balance excludes an
//! allocation the moment its `expires_at` passes, before any job runs.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::ops::Allocation;
use super::TransactionKind;
use crate::error::ApiError;

/// A user's spendable credits and the allocations holding them.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    /// The user.
    pub user_id: String,
    /// Σ `remaining` over allocations not expired.
    pub total_credits: i64,
    /// Unexpired allocations with credits left, soonest-expiring first
    /// (the order they are spent in).
    pub allocations: Vec<Allocation>,
}

/// The user's spendable total.
pub async fn total_balance(conn: &mut PgConnection, user_id: &str) -> Result<i64, ApiError> {
    Ok(sqlx::query_scalar(
        "SELECT COALESCE(SUM(remaining), 0)::bigint FROM credit_allocations
          WHERE user_id = $1 AND remaining > 0 AND expired_at IS NULL
            AND (expires_at IS NULL OR expires_at > now())",
    )
    .bind(user_id)
    .fetch_one(conn)
    .await?)
}

/// The user's balance with its allocations (zero for an unknown user).
pub async fn balance(conn: &mut PgConnection, user_id: &str) -> Result<Balance, ApiError> {
    let allocations: Vec<Allocation> = sqlx::query_as(
        "SELECT id, credits, remaining, expires_at, allocated_at FROM credit_allocations
          WHERE user_id = $1 AND remaining > 0 AND expired_at IS NULL
            AND (expires_at IS NULL OR expires_at > now())
          ORDER BY expires_at ASC NULLS LAST, allocated_at, id",
    )
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(Balance {
        user_id: user_id.to_owned(),
        total_credits: allocations.iter().map(|a| a.remaining).sum(),
        allocations,
    })
}

/// One row of a user's history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct TransactionRecord {
    /// Id.
    pub id: Uuid,
    /// Kind.
    #[serde(rename = "type")]
    #[sqlx(rename = "type")]
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
pub struct TransactionFilter {
    /// Only this kind.
    pub kind: Option<TransactionKind>,
    /// From (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// To (exclusive).
    pub to: Option<DateTime<Utc>>,
}

/// A page of the user's history, newest first (in the order the changes
/// happened), and the total count.
pub async fn transactions(
    conn: &mut PgConnection,
    user_id: &str,
    filter: &TransactionFilter,
    page: i64,
    limit: i64,
) -> Result<(Vec<TransactionRecord>, i64), ApiError> {
    let kind = filter.kind.map(TransactionKind::as_str);
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM credit_transactions
          WHERE user_id = $1 AND ($2::text IS NULL OR type = $2)
            AND ($3::timestamptz IS NULL OR created_at >= $3)
            AND ($4::timestamptz IS NULL OR created_at < $4)",
    )
    .bind(user_id)
    .bind(kind)
    .bind(filter.from)
    .bind(filter.to)
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as(
        "SELECT id, type, amount, balance_after, description, reference, created_at
           FROM credit_transactions
          WHERE user_id = $1 AND ($2::text IS NULL OR type = $2)
            AND ($3::timestamptz IS NULL OR created_at >= $3)
            AND ($4::timestamptz IS NULL OR created_at < $4)
          ORDER BY seq DESC
          LIMIT $5 OFFSET $6",
    )
    .bind(user_id)
    .bind(kind)
    .bind(filter.from)
    .bind(filter.to)
    .bind(limit)
    .bind((page - 1) * limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}
