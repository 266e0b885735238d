//! Expiry (SPEC §9): allocations whose `expires_at` has passed lose their
//! `remaining`, one `expiry` transaction each. Every ledger change does
//! this for its user under the account lock; the scheduled job does it for
//! everyone else, and settles reservations left active too long.

use std::time::Duration;

use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::ops::{insert_transaction, set_total, Context};
use super::reservations::{settle_locked, Settlement};
use super::TransactionKind;
use crate::error::ApiError;

/// Expires the user's due allocations. The caller holds the account lock
/// and passes the cached total; returns (allocations expired, credits
/// lost) and stores the new total. An allocation already expired is never
/// touched again, so overlapping runs cannot expire anything twice.
pub async fn expire_due_for_user(
    conn: &mut PgConnection,
    user_id: &str,
    total: i64,
) -> Result<(u64, i64), ApiError> {
    let due: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, remaining FROM credit_allocations
          WHERE user_id = $1 AND expired_at IS NULL AND expires_at <= now()
          ORDER BY expires_at, id
          FOR UPDATE",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    if due.is_empty() {
        return Ok((0, 0));
    }
    let mut balance = total;
    let mut count = 0;
    let ctx = Context {
        actor_id: Some("system"),
        description: Some("allocation expired"),
        ..Context::default()
    };
    for (allocation_id, remaining) in due {
        sqlx::query(
            "UPDATE credit_allocations SET remaining = 0, expired_at = now() WHERE id = $1",
        )
        .bind(allocation_id)
        .execute(&mut *conn)
        .await?;
        if remaining > 0 {
            balance -= remaining;
            insert_transaction(
                conn,
                user_id,
                TransactionKind::Expiry,
                -remaining,
                balance,
                Some(allocation_id),
                &ctx,
            )
            .await?;
            count += 1;
        }
    }
    set_total(conn, user_id, balance).await?;
    Ok((count, total - balance))
}

/// What one run of the job did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ExpiryReport {
    /// Allocations expired (with credits left in them).
    pub expired_allocations: u64,
    /// Credits those allocations held.
    pub expired_credits: i64,
    /// Stale reservations settled as aborts charging nothing.
    pub settled_reservations: u64,
    /// Idempotency keys older than 24 hours, deleted.
    pub purged_idempotency_keys: u64,
}

/// One run of the job: expires every due allocation and settles every
/// reservation active for longer than `reservation_ttl`, `batch` users or
/// sessions per query. Each user is handled in its own transaction, so a
/// crash leaves every row either fully processed or untouched; a user
/// whose account another transaction holds is skipped (`SKIP LOCKED`)
/// and picked up by the next run. Two runs at once never expire or settle
/// anything twice.
pub async fn run_expiry(
    pool: &PgPool,
    reservation_ttl: Duration,
    batch: i64,
) -> Result<ExpiryReport, ApiError> {
    let mut report = ExpiryReport::default();
    // Keyset pagination over due users: each user is visited once per run.
    let mut after = String::new();
    loop {
        let users: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT user_id FROM credit_allocations
              WHERE expired_at IS NULL AND expires_at <= now() AND user_id > $1
              ORDER BY user_id LIMIT $2",
        )
        .bind(&after)
        .bind(batch)
        .fetch_all(pool)
        .await?;
        let Some(last) = users.last().cloned() else {
            break;
        };
        for user_id in users {
            let mut tx = pool.begin().await?;
            let Some(total) = try_lock_account(&mut tx, &user_id).await? else {
                continue;
            };
            let (count, credits) = expire_due_for_user(&mut tx, &user_id, total).await?;
            tx.commit().await?;
            report.expired_allocations += count;
            report.expired_credits += credits;
        }
        after = last;
    }

    let ttl_seconds = reservation_ttl.as_secs_f64();
    let mut after = String::new();
    loop {
        let sessions: Vec<(String, String)> = sqlx::query_as(
            "SELECT session_id, user_id FROM streaming_sessions
              WHERE status = 'active' AND created_at < now() - make_interval(secs => $1)
                AND session_id > $2
              ORDER BY session_id LIMIT $3",
        )
        .bind(ttl_seconds)
        .bind(&after)
        .bind(batch)
        .fetch_all(pool)
        .await?;
        let Some((last, _)) = sessions.last().cloned() else {
            break;
        };
        for (session_id, user_id) in sessions {
            let mut tx = pool.begin().await?;
            let Some(total) = try_lock_account(&mut tx, &user_id).await? else {
                continue;
            };
            let outcome =
                settle_locked(&mut tx, &session_id, total, Settlement::Abort, 0, "system").await?;
            // A prediction that died before settling charged nothing: its
            // key is free for a retry.
            super::idempotency::release_for_reservation(&mut tx, &session_id).await?;
            tx.commit().await?;
            if outcome.settled_now {
                report.settled_reservations += 1;
            }
        }
        after = last;
    }
    report.purged_idempotency_keys = super::idempotency::purge_old_keys(pool, batch).await?;
    tracing::info!(
        expired_allocations = report.expired_allocations,
        expired_credits = report.expired_credits,
        settled_reservations = report.settled_reservations,
        purged_idempotency_keys = report.purged_idempotency_keys,
        "credit expiry run finished"
    );
    Ok(report)
}

async fn try_lock_account(conn: &mut PgConnection, user_id: &str) -> Result<Option<i64>, ApiError> {
    let total: Option<i64> = sqlx::query_scalar(
        "SELECT total_credits FROM user_accounts WHERE user_id = $1 FOR UPDATE SKIP LOCKED",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(total)
}
