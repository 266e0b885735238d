//! The steps every change runs, inside one database transaction ([`Tx`]):
//! lock the account, expire what is due, draw from allocations, refund
//! draws, write an entry (which sets the cached total). A function here
//! never commits; the change that calls it does.

use sqlx::Postgres;
use uuid::Uuid;

use super::types::{Allocation, Credits, EntryKind, EntryMeta, LedgerError, MAX_CREDITS};
use crate::ids::UserId;

/// A database transaction. Every ledger change takes one, so a change
/// cannot be made outside a transaction: it does not compile.
pub type Tx<'c> = sqlx::Transaction<'c, Postgres>;

/// An account locked for the rest of the transaction: its cached total,
/// and whether any of its allocations is due to expire, both read by the
/// statement that took the lock. Only the functions that lock make one,
/// so a step that needs the lock takes a `Locked`.
///
/// The due flag cannot go stale while the lock is held: an allocation
/// becomes due only as time passes (every one is created with an expiry
/// at least a day ahead, a team's transfer included: it gives only wallet
/// credits that last a day more; and `now()` is the transaction's start), so a
/// change that committed while this one waited for the lock cannot have
/// made one due; one that it expired meanwhile is found already expired.
#[derive(Debug, Clone, Copy)]
pub struct Locked {
    total: i64,
    due: bool,
}

impl Locked {
    /// From the locking statement's row.
    pub(super) fn new(total: i64, due: bool) -> Locked {
        Locked { total, due }
    }

    /// The cached total.
    pub fn total(&self) -> i64 {
        self.total
    }

    /// Whether an allocation was due to expire when the lock was taken.
    pub fn due(&self) -> bool {
        self.due
    }
}

/// Locks the account for the rest of the transaction. Every change takes
/// this lock first.
pub async fn lock_account(tx: &mut Tx<'_>, user: &UserId) -> Result<Locked, LedgerError> {
    let row = sqlx::query!(
        r#"SELECT total_credits,
                  EXISTS (SELECT 1 FROM credit_allocations c
                           WHERE c.user_id = a.user_id AND c.expired_at IS NULL
                             AND c.expires_at <= now()) AS "due!"
             FROM user_accounts a WHERE a.user_id = $1 FOR UPDATE"#,
        user.as_str()
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| LedgerError::NoAccount(user.clone()))?;
    Ok(Locked::new(row.total_credits, row.due))
}

/// Like [`lock_account`], but `None` when another transaction holds the
/// account (the job skips it; its next run takes it).
pub async fn try_lock_account(
    tx: &mut Tx<'_>,
    user: &UserId,
) -> Result<Option<Locked>, LedgerError> {
    let row = sqlx::query!(
        r#"SELECT total_credits,
                  EXISTS (SELECT 1 FROM credit_allocations c
                           WHERE c.user_id = a.user_id AND c.expired_at IS NULL
                             AND c.expires_at <= now()) AS "due!"
             FROM user_accounts a WHERE a.user_id = $1 FOR UPDATE SKIP LOCKED"#,
        user.as_str()
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.map(|r| Locked::new(r.total_credits, r.due)))
}

/// Expires the locked account's due allocations: `remaining` goes to 0
/// and one `expiry` entry is written for each that held credits (each
/// storing the total after it); returns (allocations expired, credits
/// lost). Nothing to do (no statement) when none was due. An allocation
/// already expired is never touched again, so overlapping runs cannot
/// expire anything twice.
pub async fn expire_due(
    tx: &mut Tx<'_>,
    user: &UserId,
    locked: Locked,
) -> Result<(u64, i64), LedgerError> {
    if !locked.due {
        return Ok((0, 0));
    }
    let total = locked.total;
    let due = sqlx::query!(
        "SELECT id, remaining FROM credit_allocations
          WHERE user_id = $1 AND expired_at IS NULL AND expires_at <= now()
          ORDER BY expires_at, id
          FOR UPDATE",
        user.as_str()
    )
    .fetch_all(&mut **tx)
    .await?;
    if due.is_empty() {
        return Ok((0, 0));
    }
    let meta = EntryMeta {
        actor_id: Some("system"),
        description: Some("allocation expired"),
        ..EntryMeta::default()
    };
    let (mut balance, mut count) = (total, 0);
    for allocation in due {
        balance = end_allocation(
            tx,
            user,
            allocation.id,
            allocation.remaining,
            balance,
            &meta,
        )
        .await?;
        if allocation.remaining > 0 {
            count += 1;
        }
    }
    Ok((count, total - balance))
}

/// Ends the allocation `id` of the locked account now: what it still
/// held (`remaining`) goes, with an `expiry` entry when that was more
/// than 0. Returns the account's total after it, from `total` before.
pub(super) async fn end_allocation(
    tx: &mut Tx<'_>,
    user: &UserId,
    id: Uuid,
    remaining: i64,
    total: i64,
    meta: &EntryMeta<'_>,
) -> Result<i64, LedgerError> {
    sqlx::query!(
        "UPDATE credit_allocations SET remaining = 0, expired_at = now() WHERE id = $1",
        id
    )
    .execute(&mut **tx)
    .await?;
    if remaining == 0 {
        return Ok(total);
    }
    let after = total - remaining;
    insert_entry(
        tx,
        user,
        EntryKind::Expiry,
        -remaining,
        after,
        Some(id),
        meta,
    )
    .await?;
    Ok(after)
}

/// Locks the account and expires what is due: the start of every change.
/// Returns the spendable total.
pub async fn begin_change(tx: &mut Tx<'_>, user: &UserId) -> Result<i64, LedgerError> {
    let locked = lock_account(tx, user).await?;
    begin_locked(tx, user, locked).await
}

/// [`begin_change`] for an account already locked.
pub async fn begin_locked(
    tx: &mut Tx<'_>,
    user: &UserId,
    locked: Locked,
) -> Result<i64, LedgerError> {
    let (_, expired) = expire_due(tx, user, locked).await?;
    Ok(locked.total - expired)
}

/// Writes one entry (a `credit_transactions` row) and stores its
/// `balance_after` as the account's cached total, in one statement (the
/// total is always the balance after the account's latest entry); returns
/// the entry's id.
pub async fn insert_entry(
    tx: &mut Tx<'_>,
    user: &UserId,
    kind: EntryKind,
    amount: i64,
    balance_after: i64,
    allocation_id: Option<Uuid>,
    meta: &EntryMeta<'_>,
) -> Result<Uuid, LedgerError> {
    let id = Uuid::now_v7();
    sqlx::query!(
        "WITH entry AS (
             INSERT INTO credit_transactions
                 (id, user_id, type, amount, balance_after, actor_id, description, reference,
                  idempotency_key, allocation_id, streaming_session_id, api_key_id, transfer_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
         )
         UPDATE user_accounts SET total_credits = $5, updated_at = now() WHERE user_id = $2",
        id,
        user.as_str(),
        kind.as_str(),
        amount,
        balance_after,
        meta.actor_id,
        meta.description,
        meta.reference,
        meta.idempotency_key,
        allocation_id,
        meta.reservation_id,
        meta.api_key_id,
        meta.transfer_id,
    )
    .execute(&mut **tx)
    .await?;
    Ok(id)
}

/// 422 `balance_limit` unless `balance` plus `amount` stays within
/// [`MAX_CREDITS`].
pub fn check_balance_limit(balance: i64, amount: i64) -> Result<(), LedgerError> {
    if balance
        .checked_add(amount)
        .is_none_or(|sum| sum > MAX_CREDITS)
    {
        return Err(LedgerError::BalanceLimit { balance, amount });
    }
    Ok(())
}

/// Grants `credits` to the locked account as a new allocation that
/// expires after `expiry_days` (`None`: never).
pub async fn insert_allocation(
    tx: &mut Tx<'_>,
    user: &UserId,
    credits: Credits,
    expiry_days: Option<i32>,
    actor: &str,
    notes: Option<&str>,
) -> Result<Allocation, LedgerError> {
    Ok(sqlx::query_as!(
        Allocation,
        r#"INSERT INTO credit_allocations (id, user_id, credits, remaining, expires_at, allocated_by, notes)
           VALUES ($1, $2, $3, $3, now() + make_interval(days => $4), $5, $6)
           RETURNING id, credits, remaining, expires_at, allocated_at,
                     COALESCE((SELECT username FROM user_accounts g WHERE g.user_id = $5), $5)
                       AS "granted_by!""#,
        Uuid::now_v7(),
        user.as_str(),
        credits.get(),
        expiry_days,
        actor,
        notes,
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// Takes `amount` from the user's spendable allocations, soonest-expiring
/// first (never-expiring last), and records each draw against the entry
/// `entry_id`, in one statement: a running sum over the allocations in
/// spending order says how much each gives. The caller holds the account
/// lock (so no other change touches these allocations), has expired what
/// is due, and has checked that the total covers `amount`.
pub async fn draw(
    tx: &mut Tx<'_>,
    user: &UserId,
    amount: i64,
    entry_id: Uuid,
) -> Result<(), LedgerError> {
    draw_lasting(tx, user, amount, entry_id, 0).await
}

/// [`draw`] from only the allocations that last at least `days` more (or
/// never expire); the caller has checked that those cover `amount`.
pub async fn draw_lasting(
    tx: &mut Tx<'_>,
    user: &UserId,
    amount: i64,
    entry_id: Uuid,
    days: i32,
) -> Result<(), LedgerError> {
    let drawn: Vec<i64> = sqlx::query_scalar!(
        r#"WITH spendable AS (
               SELECT id, remaining,
                      (SUM(remaining) OVER (ORDER BY expires_at ASC NULLS LAST, allocated_at, id))::bigint
                        - remaining AS before
                 FROM credit_allocations
                WHERE user_id = $1 AND remaining > 0 AND expired_at IS NULL
                  AND ($4 = 0 OR expires_at IS NULL OR expires_at > now() + make_interval(days => $4))
           ), taken AS (
               SELECT id, LEAST(remaining, $2 - before) AS take FROM spendable WHERE before < $2
           ), drawn AS (
               UPDATE credit_allocations a SET remaining = a.remaining - t.take
                 FROM taken t WHERE a.id = t.id
               RETURNING a.id, t.take
           )
           INSERT INTO credit_draws (transaction_id, allocation_id, amount)
           SELECT $3, id, take FROM drawn
           RETURNING amount"#,
        user.as_str(),
        amount,
        entry_id,
        days
    )
    .fetch_all(&mut **tx)
    .await?;
    let left = amount - drawn.iter().sum::<i64>();
    if left != 0 {
        // The cached total promised more than the allocations hold: never
        // commit that; the transaction rolls back.
        return Err(LedgerError::Inconsistent(format!(
            "{user}: the total covers {amount} but the allocations lack {left}"
        )));
    }
    Ok(())
}

/// Returns up to `amount` credits of the debits `debit_ids` (a
/// reservation's first hold and its top-ups) to the allocations they drew
/// from, latest-expiring first (as if only the rest had been drawn),
/// skipping allocations that have expired: credits are never revived. One
/// statement: a running sum over the draws in refund order says how much
/// each takes back; every draw records its refund, and only the live
/// allocations get theirs. The caller holds the account lock. Returns how
/// many credits went back.
pub async fn refund_draws(
    tx: &mut Tx<'_>,
    debit_ids: &[Uuid],
    amount: i64,
) -> Result<i64, LedgerError> {
    let returned: Vec<i64> = sqlx::query_scalar!(
        r#"WITH refundable AS (
               SELECT d.transaction_id, d.allocation_id, d.amount - d.refunded AS refundable,
                      (a.expired_at IS NULL AND (a.expires_at IS NULL OR a.expires_at > now())) AS live,
                      (SUM(d.amount - d.refunded) OVER (
                          ORDER BY a.expires_at DESC NULLS FIRST, a.allocated_at DESC, a.id DESC,
                                   d.transaction_id DESC
                      ))::bigint - (d.amount - d.refunded) AS before
                 FROM credit_draws d JOIN credit_allocations a ON a.id = d.allocation_id
                WHERE d.transaction_id = ANY($1) AND d.amount > d.refunded
           ), given AS (
               SELECT transaction_id, allocation_id, live, LEAST(refundable, $2 - before) AS give
                 FROM refundable WHERE before < $2
           ), recorded AS (
               -- Expired: the share is forfeited, as it would have been unspent.
               UPDATE credit_draws d SET refunded = d.refunded + g.give
                 FROM given g
                WHERE d.transaction_id = g.transaction_id AND d.allocation_id = g.allocation_id
           ), per_allocation AS (
               SELECT allocation_id, SUM(give)::bigint AS give FROM given WHERE live
                GROUP BY allocation_id
           )
           UPDATE credit_allocations a SET remaining = a.remaining + p.give
             FROM per_allocation p WHERE a.id = p.allocation_id
           RETURNING p.give AS "give!""#,
        debit_ids,
        amount
    )
    .fetch_all(&mut **tx)
    .await?;
    Ok(returned.iter().sum())
}

/// Takes `amount` from the locked account (its spendable `total`) as one
/// entry of `kind` with a negative amount; 402 when the balance is short,
/// nothing changed. Returns the entry's id and the new balance.
pub async fn debit_locked(
    tx: &mut Tx<'_>,
    user: &UserId,
    total: i64,
    amount: i64,
    kind: EntryKind,
    meta: &EntryMeta<'_>,
) -> Result<(Uuid, i64), LedgerError> {
    if amount > total {
        return Err(LedgerError::Insufficient {
            needed: amount,
            available: total,
        });
    }
    let balance = total - amount;
    let entry = insert_entry(tx, user, kind, -amount, balance, None, meta).await?;
    draw(tx, user, amount, entry).await?;
    Ok((entry, balance))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_balance_never_passes_two_to_the_53rd() {
        assert!(check_balance_limit(0, MAX_CREDITS).is_ok());
        assert!(matches!(
            check_balance_limit(1, MAX_CREDITS),
            Err(LedgerError::BalanceLimit { .. })
        ));
        assert!(check_balance_limit(i64::MAX, 1).is_err());
    }
}

/// What a ledger transaction's commit waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// The commit is on disk before it returns (`synchronous_commit` as the
    /// server has it): every change that takes or gives credits for good.
    Flushed,
    /// The commit is visible to every other transaction at once, as any
    /// commit is, but does not wait for the disk: a database crash in the
    /// next fraction of a second can undo it (PostgreSQL's asynchronous
    /// commit; it never leaves the database inconsistent, and any later
    /// flushed commit makes it durable too). Only for a change whose loss
    /// the ledger repairs: a prediction's reservation without an
    /// `Idempotency-Key` (README §6, "Reservations that do not wait for
    /// the disk").
    Relaxed,
}

/// Begins a transaction on `pool` whose commit waits for `durability`
/// (for [`Durability::Relaxed`], `SET LOCAL synchronous_commit` sent with
/// the `BEGIN`, one round trip); the connection's setting is back to the
/// server's when the transaction ends.
///
/// The `BEGIN` runs in a task of its own, so a request dropped while it is
/// under way (a client that hangs up on `gateway-admin serve`) cannot
/// leave the connection inside a transaction sqlx does not know of (sqlx
/// 0.8 counts the transaction only once `BEGIN` has answered, and a
/// connection handed back before that keeps the server's transaction
/// open for the next request to join). The task finishes the `BEGIN`; if
/// nobody waits for it any more, the transaction it made is dropped and
/// rolled back as usual.
pub async fn begin(
    pool: &sqlx::PgPool,
    durability: Durability,
) -> Result<Tx<'static>, LedgerError> {
    let pool = pool.clone();
    let begun = tokio::spawn(async move {
        match durability {
            Durability::Flushed => pool.begin().await,
            Durability::Relaxed => {
                pool.begin_with("BEGIN; SET LOCAL synchronous_commit TO off")
                    .await
            }
        }
    });
    Ok(joined(begun.await)?)
}

/// Commits `tx` in a task of its own, so a request dropped meanwhile can
/// neither leave it half-done nor leave the caller unsure whether it
/// committed: it commits whole, or fails whole.
pub async fn commit(tx: Tx<'static>) -> Result<(), LedgerError> {
    Ok(joined(tokio::spawn(tx.commit()).await)?)
}

/// The result of a task that ran a database step.
fn joined<T>(
    result: Result<Result<T, sqlx::Error>, tokio::task::JoinError>,
) -> Result<T, sqlx::Error> {
    result.map_err(|e| sqlx::Error::Protocol(format!("a database step's task failed: {e}")))?
}
