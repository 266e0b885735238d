//! The changes a client asks for: allocate, deduct, adjust. Each is one
//! database transaction that starts with [`begin_change`] (the account
//! lock, then expiry) and ends by writing its entry and the new total.

use super::accounts::ensure_account_id;
use super::primitives::{
    begin_change, check_balance_limit, debit_locked, insert_allocation, insert_entry, Tx,
};
use super::types::{Adjustment, Allocation, Credits, EntryKind, EntryMeta, LedgerError};
use crate::ids::UserId;

/// The outcome of a grant.
#[derive(Debug, Clone)]
pub struct Allocated {
    /// The new allocation.
    pub allocation: Allocation,
    /// The balance after it.
    pub new_balance: i64,
    /// Whether the account was created by this grant.
    pub account_created: bool,
}

/// Grants `credits` to `user`, expiring after `expiry_days` (`None`:
/// never), creating the account if the ledger has not seen the user; 422
/// `balance_limit` when the balance would pass 2^53 − 1.
pub async fn allocate(
    tx: &mut Tx<'_>,
    user: &UserId,
    credits: Credits,
    expiry_days: Option<i32>,
    notes: Option<&str>,
    meta: &EntryMeta<'_>,
) -> Result<Allocated, LedgerError> {
    let account_created = ensure_account_id(tx, user).await?;
    let done = allocate_existing(tx, user, credits, expiry_days, notes, meta).await?;
    Ok(Allocated {
        account_created,
        ..done
    })
}

/// [`allocate`] to an account that must exist already (404 otherwise): a
/// team's wallet, made with its team.
pub async fn allocate_existing(
    tx: &mut Tx<'_>,
    user: &UserId,
    credits: Credits,
    expiry_days: Option<i32>,
    notes: Option<&str>,
    meta: &EntryMeta<'_>,
) -> Result<Allocated, LedgerError> {
    let account_created = false;
    let total = begin_change(tx, user).await?;
    check_balance_limit(total, credits.get())?;
    let actor = meta.actor_id.unwrap_or("system");
    let allocation = insert_allocation(tx, user, credits, expiry_days, actor, notes).await?;
    let new_balance = total + credits.get();
    let meta = EntryMeta {
        description: meta.description.or(notes),
        ..*meta
    };
    let kind = EntryKind::Allocation;
    insert_entry(
        tx,
        user,
        kind,
        credits.get(),
        new_balance,
        Some(allocation.id),
        &meta,
    )
    .await?;
    Ok(Allocated {
        allocation,
        new_balance,
        account_created,
    })
}

/// Takes `credits` from `user`, soonest-expiring allocations first, all
/// or nothing. Returns the entry's id and the new balance; 402 when the
/// balance is short (nothing changed).
pub async fn deduct(
    tx: &mut Tx<'_>,
    user: &UserId,
    credits: Credits,
    meta: &EntryMeta<'_>,
) -> Result<(uuid::Uuid, i64), LedgerError> {
    let total = begin_change(tx, user).await?;
    debit_locked(tx, user, total, credits.get(), EntryKind::Deduction, meta).await
}

/// An admin's signed correction. A positive amount is granted as a
/// never-expiring allocation (422 `balance_limit` past 2^53 − 1); a
/// negative one is taken like a deduction, and when the balance does not
/// cover it the answer is 422 `would_go_negative` with nothing changed.
/// Returns the new balance.
pub async fn adjust(
    tx: &mut Tx<'_>,
    user: &UserId,
    amount: Adjustment,
    notes: &str,
    meta: &EntryMeta<'_>,
) -> Result<i64, LedgerError> {
    ensure_account_id(tx, user).await?;
    let total = begin_change(tx, user).await?;
    let meta = EntryMeta {
        description: Some(notes),
        ..*meta
    };
    let amount = amount.get();
    if amount < 0 {
        if -amount > total {
            return Err(LedgerError::WouldGoNegative {
                amount,
                balance: total,
            });
        }
        let kind = EntryKind::Adjustment;
        let (_, balance) = debit_locked(tx, user, total, -amount, kind, &meta).await?;
        return Ok(balance);
    }
    check_balance_limit(total, amount)?;
    let credits = Credits::try_from(amount).map_err(LedgerError::Inconsistent)?;
    let actor = meta.actor_id.unwrap_or("system");
    let allocation = insert_allocation(tx, user, credits, None, actor, Some(notes)).await?;
    let balance = total + amount;
    let kind = EntryKind::Adjustment;
    insert_entry(tx, user, kind, amount, balance, Some(allocation.id), &meta).await?;
    Ok(balance)
}
