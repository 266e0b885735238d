//! The scheduled job's ledger work (README §9): expire the allocations of
//! users who are not active (every change expires its own user's), settle
//! reservations left active past the TTL, purge old idempotency keys.
//! Each user or reservation is handled in its own transaction, so a crash
//! leaves every row either fully processed or untouched; one whose
//! account another transaction holds is skipped (`SKIP LOCKED`) and taken
//! by the next run. Two runs at once never expire or settle anything twice.

use std::time::Duration;

use serde::Serialize;
use sqlx::PgPool;

use super::idempotency::{complete_for_reservation, purge_old_keys, release_for_reservation};
use super::primitives::{begin, commit, expire_due, try_lock_account, Durability, Tx};
use super::reservations::{settle_locked, Settlement, Target};
use super::types::{Charge, LedgerError};
use crate::ids::{ReservationId, UserId};

/// What one run did.
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

/// One run of the job, `batch` users or reservations per query:
/// allocations, then reservations older than `reservation_ttl`, then keys.
pub async fn run_expiry(
    pool: &PgPool,
    reservation_ttl: Duration,
    batch: i64,
) -> Result<ExpiryReport, LedgerError> {
    let mut report = ExpiryReport::default();
    expire_due_users(pool, batch, &mut report).await?;
    settle_stale_reservations(pool, reservation_ttl, batch, &mut report).await?;
    report.purged_idempotency_keys = purge_old_keys(pool, batch).await?;
    tracing::info!(
        expired_allocations = report.expired_allocations,
        expired_credits = report.expired_credits,
        settled_reservations = report.settled_reservations,
        purged_idempotency_keys = report.purged_idempotency_keys,
        "credit expiry run finished"
    );
    Ok(report)
}

/// Expires every user's due allocations, visiting each user once
/// (keyset pagination over user ids).
async fn expire_due_users(
    pool: &PgPool,
    batch: i64,
    report: &mut ExpiryReport,
) -> Result<(), LedgerError> {
    let mut after = String::new();
    loop {
        let users = sqlx::query_scalar!(
            "SELECT DISTINCT user_id FROM credit_allocations
              WHERE expired_at IS NULL AND expires_at <= now() AND user_id > $1
              ORDER BY user_id LIMIT $2",
            after,
            batch
        )
        .fetch_all(pool)
        .await?;
        let Some(last) = users.last().cloned() else {
            return Ok(());
        };
        for user in users {
            let user = UserId::stored(user);
            let mut tx = begin(pool, Durability::Flushed).await?;
            let Some(locked) = try_lock_account(&mut tx, &user).await? else {
                continue;
            };
            let (count, credits) = expire_due(&mut tx, &user, locked).await?;
            commit(tx).await?;
            report.expired_allocations += count;
            report.expired_credits += credits;
        }
        after = last;
    }
}

/// Settles the reservations active for longer than `ttl`, whose
/// prediction or client died before settling ([`lapsed_charge`] says what
/// each pays), and frees the in-progress idempotency key of each that
/// charged nothing (a retry may then run anew); the key of one that was
/// charged keeps a replay of what is known of it.
async fn settle_stale_reservations(
    pool: &PgPool,
    ttl: Duration,
    batch: i64,
    report: &mut ExpiryReport,
) -> Result<(), LedgerError> {
    let mut after = String::new();
    loop {
        let stale = sqlx::query!(
            "SELECT session_id, user_id FROM streaming_sessions
              WHERE status = 'active' AND created_at < now() - make_interval(secs => $1)
                AND session_id > $2
              ORDER BY session_id LIMIT $3",
            ttl.as_secs_f64(),
            after,
            batch
        )
        .fetch_all(pool)
        .await?;
        let Some(last) = stale.last().map(|s| s.session_id.clone()) else {
            return Ok(());
        };
        for reservation in stale {
            let id = ReservationId::stored(reservation.session_id);
            let user = UserId::stored(reservation.user_id);
            if settle_lapsed(pool, &id, &user).await? {
                report.settled_reservations += 1;
            }
        }
        after = last;
    }
}

/// Settles one lapsed reservation in its own transaction (skipped when
/// another holds its account); whether this call settled it.
async fn settle_lapsed(
    pool: &PgPool,
    id: &ReservationId,
    user: &UserId,
) -> Result<bool, LedgerError> {
    let mut tx = begin(pool, Durability::Flushed).await?;
    let Some(locked) = try_lock_account(&mut tx, user).await? else {
        return Ok(false);
    };
    let charge = lapsed_charge(&mut tx, id).await?;
    let target = Target {
        id,
        owner: user,
        locked,
        origin: None,
    };
    let how = Settlement::Abort;
    let outcome = settle_locked(&mut tx, &target, how, charge, "system").await?;
    if outcome.settled_now && outcome.charged_credits > 0 {
        let lapsed = lapsed_answer(&mut tx, id, outcome.charged_credits).await?;
        complete_for_reservation(&mut tx, id, &lapsed).await?;
    } else {
        release_for_reservation(&mut tx, id).await?;
    }
    commit(tx).await?;
    Ok(outcome.settled_now)
}

/// What a lapsed reservation pays, read under its account's lock (so no
/// top-up changes it meanwhile). A client's reservation: nothing (its
/// client never said what it used). The gateway's, for a prediction whose
/// instance died or was cut off: what its relay last recorded as
/// delivered, or, when it recorded nothing, the whole hold: the
/// reservation is committed just before Flowise is called, so an answer
/// may have gone out, and what went out is never given away.
async fn lapsed_charge(tx: &mut Tx<'_>, id: &ReservationId) -> Result<Charge, LedgerError> {
    let row = sqlx::query!(
        "SELECT origin, reserved_credits, delivered_credits FROM streaming_sessions
          WHERE session_id = $1",
        id.as_str()
    )
    .fetch_one(&mut **tx)
    .await?;
    if row.origin != "gateway" {
        return Ok(Charge::ZERO);
    }
    let due = row.delivered_credits.unwrap_or(row.reserved_credits);
    Ok(Charge::capped(due.min(row.reserved_credits)))
}

/// The replay a lapsed prediction's `Idempotency-Key` keeps: no text (the
/// instance that had it died), `incomplete`, with what it was charged.
async fn lapsed_answer(
    tx: &mut Tx<'_>,
    id: &ReservationId,
    charged: i64,
) -> Result<serde_json::Value, LedgerError> {
    let session = sqlx::query_scalar!(
        "SELECT t.reference FROM streaming_sessions s
           JOIN credit_transactions t ON t.id = s.reservation_transaction_id
          WHERE s.session_id = $1",
        id.as_str()
    )
    .fetch_optional(&mut **tx)
    .await?
    .flatten();
    Ok(serde_json::json!({
        "session_id": session.unwrap_or_default(),
        "message_id": id.as_str(),
        "text": "",
        "status": "incomplete",
        "reason": "lapsed",
        "credits": {"charged": charged, "balance": null},
    }))
}
