//! The changes: allocate, deduct, adjust, and the building blocks that
//! reservations and expiry share (drawing from allocations, refunding
//! draws, writing transactions). Every public function expects to run
//! inside a database transaction (`&mut PgConnection` of a `sqlx::Transaction`).

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::accounts::{ensure_account_id, lock_account};
use super::expiry::expire_due_for_user;
use super::{check_balance_limit, insufficient, Credits, TransactionKind};
use crate::error::ApiError;

/// An allocation as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Id.
    pub id: Uuid,
    /// Credits granted.
    pub credits: i64,
    /// Credits left.
    pub remaining: i64,
    /// When it expires (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was granted.
    pub allocated_at: DateTime<Utc>,
}

/// Who changed the ledger, and why: stored on the transaction row.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    /// The user or system that made the change.
    pub actor_id: Option<&'a str>,
    /// Free text.
    pub description: Option<&'a str>,
    /// Caller's reference (an order id, a chat message id...).
    pub reference: Option<&'a str>,
    /// The idempotency key the request carried.
    pub idempotency_key: Option<&'a str>,
    /// The streaming session the change belongs to.
    pub streaming_session_id: Option<&'a str>,
}

/// Writes one `credit_transactions` row and returns its id.
pub(crate) async fn insert_transaction(
    conn: &mut PgConnection,
    user_id: &str,
    kind: TransactionKind,
    amount: i64,
    balance_after: i64,
    allocation_id: Option<Uuid>,
    ctx: &Context<'_>,
) -> Result<Uuid, ApiError> {
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO credit_transactions
            (id, user_id, type, amount, balance_after, actor_id, description, reference,
             idempotency_key, allocation_id, streaming_session_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id)
    .bind(user_id)
    .bind(kind.as_str())
    .bind(amount)
    .bind(balance_after)
    .bind(ctx.actor_id)
    .bind(ctx.description)
    .bind(ctx.reference)
    .bind(ctx.idempotency_key)
    .bind(allocation_id)
    .bind(ctx.streaming_session_id)
    .execute(conn)
    .await?;
    Ok(id)
}

/// Stores the account's new cached total.
pub(crate) async fn set_total(
    conn: &mut PgConnection,
    user_id: &str,
    total: i64,
) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE user_accounts SET total_credits = $2, updated_at = now() WHERE user_id = $1",
    )
    .bind(user_id)
    .bind(total)
    .execute(conn)
    .await?;
    Ok(())
}

/// Takes `amount` from the user's spendable allocations, soonest-expiring
/// first (never-expiring last), and records each draw against
/// `transaction_id`. The caller holds the account lock, has expired what
/// is due, and has checked that the total covers `amount`.
pub(crate) async fn draw(
    conn: &mut PgConnection,
    user_id: &str,
    amount: i64,
    transaction_id: Uuid,
) -> Result<(), ApiError> {
    let allocations: Vec<(Uuid, i64)> = sqlx::query_as(
        "SELECT id, remaining FROM credit_allocations
          WHERE user_id = $1 AND remaining > 0 AND expired_at IS NULL
          ORDER BY expires_at ASC NULLS LAST, allocated_at, id
          FOR UPDATE",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut left = amount;
    for (allocation_id, remaining) in allocations {
        if left == 0 {
            break;
        }
        let take = remaining.min(left);
        sqlx::query("UPDATE credit_allocations SET remaining = remaining - $2 WHERE id = $1")
            .bind(allocation_id)
            .bind(take)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "INSERT INTO credit_draws (transaction_id, allocation_id, amount) VALUES ($1, $2, $3)",
        )
        .bind(transaction_id)
        .bind(allocation_id)
        .bind(take)
        .execute(&mut *conn)
        .await?;
        left -= take;
    }
    if left != 0 {
        // The cached total promised more than the allocations hold: never
        // commit that; the transaction rolls back.
        return Err(ApiError::Internal(anyhow::anyhow!(
            "ledger inconsistency for {user_id}: total covers {amount} but allocations lack {left}"
        )));
    }
    Ok(())
}

/// Returns up to `amount` credits of debit `debit_id` to the allocations it
/// drew from, latest-expiring first (as if only the rest had been drawn),
/// skipping allocations that have expired: credits are never revived.
/// Returns how many credits went back.
pub(crate) async fn refund_draws(
    conn: &mut PgConnection,
    debit_id: Uuid,
    amount: i64,
) -> Result<i64, ApiError> {
    let draws: Vec<(Uuid, i64, bool)> = sqlx::query_as(
        "SELECT d.allocation_id, d.amount - d.refunded,
                a.expired_at IS NULL AND (a.expires_at IS NULL OR a.expires_at > now())
           FROM credit_draws d JOIN credit_allocations a ON a.id = d.allocation_id
          WHERE d.transaction_id = $1 AND d.amount > d.refunded
          ORDER BY a.expires_at DESC NULLS FIRST, a.allocated_at DESC, a.id DESC
          FOR UPDATE OF d, a",
    )
    .bind(debit_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut left = amount;
    let mut returned = 0;
    for (allocation_id, refundable, live) in draws {
        if left == 0 {
            break;
        }
        let give = refundable.min(left);
        left -= give;
        // Expired: the share is forfeited, as it would have been unspent.
        sqlx::query(
            "UPDATE credit_draws SET refunded = refunded + $3
              WHERE transaction_id = $1 AND allocation_id = $2",
        )
        .bind(debit_id)
        .bind(allocation_id)
        .bind(give)
        .execute(&mut *conn)
        .await?;
        if live {
            sqlx::query("UPDATE credit_allocations SET remaining = remaining + $2 WHERE id = $1")
                .bind(allocation_id)
                .bind(give)
                .execute(&mut *conn)
                .await?;
            returned += give;
        }
    }
    Ok(returned)
}

/// Takes `amount` from the locked account as one transaction of `kind`
/// (with a negative amount). 402 when the balance is short, nothing changed.
pub(crate) async fn debit_locked(
    conn: &mut PgConnection,
    user_id: &str,
    total: i64,
    amount: i64,
    kind: TransactionKind,
    ctx: &Context<'_>,
) -> Result<(Uuid, i64), ApiError> {
    if amount > total {
        return Err(insufficient(amount, total));
    }
    let balance = total - amount;
    let transaction_id =
        insert_transaction(conn, user_id, kind, -amount, balance, None, ctx).await?;
    draw(conn, user_id, amount, transaction_id).await?;
    set_total(conn, user_id, balance).await?;
    Ok((transaction_id, balance))
}

/// Locks the account and expires what is due: the start of every change.
/// Returns the spendable total.
pub(crate) async fn begin_change(conn: &mut PgConnection, user_id: &str) -> Result<i64, ApiError> {
    let total = lock_account(conn, user_id).await?;
    let (_, expired) = expire_due_for_user(conn, user_id, total).await?;
    Ok(total - expired)
}

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

/// Grants `credits` to `user_id`, expiring after `expiry_days` (`None`:
/// never), creating the account if the ledger has not seen the user.
pub async fn allocate(
    conn: &mut PgConnection,
    user_id: &str,
    credits: Credits,
    expiry_days: Option<i32>,
    notes: Option<&str>,
    ctx: &Context<'_>,
) -> Result<Allocated, ApiError> {
    let account_created = ensure_account_id(conn, user_id).await?;
    let total = begin_change(conn, user_id).await?;
    check_balance_limit("credits", total, credits.get())?;
    let actor = ctx.actor_id.unwrap_or("system");
    let allocation: Allocation = sqlx::query_as(
        "INSERT INTO credit_allocations (id, user_id, credits, remaining, expires_at, allocated_by, notes)
         VALUES ($1, $2, $3, $3, now() + make_interval(days => $4), $5, $6)
         RETURNING id, credits, remaining, expires_at, allocated_at",
    )
    .bind(Uuid::now_v7())
    .bind(user_id)
    .bind(credits.get())
    .bind(expiry_days)
    .bind(actor)
    .bind(notes)
    .fetch_one(&mut *conn)
    .await?;
    let new_balance = total + credits.get();
    let ctx = Context {
        description: ctx.description.or(notes),
        ..*ctx
    };
    insert_transaction(
        conn,
        user_id,
        TransactionKind::Allocation,
        credits.get(),
        new_balance,
        Some(allocation.id),
        &ctx,
    )
    .await?;
    set_total(conn, user_id, new_balance).await?;
    Ok(Allocated {
        allocation,
        new_balance,
        account_created,
    })
}

/// Takes `credits` from `user_id`, soonest-expiring allocations first, all
/// or nothing. Returns the transaction id and the new balance; 402 when
/// the balance is short (nothing changed).
pub async fn deduct(
    conn: &mut PgConnection,
    user_id: &str,
    credits: Credits,
    ctx: &Context<'_>,
) -> Result<(Uuid, i64), ApiError> {
    let total = begin_change(conn, user_id).await?;
    debit_locked(
        conn,
        user_id,
        total,
        credits.get(),
        TransactionKind::Deduction,
        ctx,
    )
    .await
}

/// An admin's signed correction. A positive amount is granted as a
/// never-expiring allocation; a negative one is taken like a deduction,
/// and when the balance does not cover it the answer is 422
/// `would_go_negative` with nothing changed. Returns the new balance.
pub async fn adjust(
    conn: &mut PgConnection,
    user_id: &str,
    amount: i64,
    notes: &str,
    ctx: &Context<'_>,
) -> Result<i64, ApiError> {
    // `unsigned_abs`: `i64::MIN` has no positive counterpart.
    if amount == 0 || amount.unsigned_abs() > super::MAX_CREDITS as u64 {
        return Err(ApiError::invalid_field(
            "amount",
            format!(
                "must be a non-zero whole number between -{0} and {0}",
                super::MAX_CREDITS
            ),
        ));
    }
    ensure_account_id(conn, user_id).await?;
    let total = begin_change(conn, user_id).await?;
    let ctx = Context {
        description: Some(notes),
        ..*ctx
    };
    if amount > 0 {
        check_balance_limit("amount", total, amount)?;
        let allocation_id: Uuid = sqlx::query_scalar(
            "INSERT INTO credit_allocations (id, user_id, credits, remaining, expires_at, allocated_by, notes)
             VALUES ($1, $2, $3, $3, NULL, $4, $5) RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(user_id)
        .bind(amount)
        .bind(ctx.actor_id.unwrap_or("system"))
        .bind(notes)
        .fetch_one(&mut *conn)
        .await?;
        let balance = total + amount;
        insert_transaction(
            conn,
            user_id,
            TransactionKind::Adjustment,
            amount,
            balance,
            Some(allocation_id),
            &ctx,
        )
        .await?;
        set_total(conn, user_id, balance).await?;
        return Ok(balance);
    }
    if -amount > total {
        return Err(ApiError::Unprocessable {
            code: "would_go_negative",
            message: format!("the adjustment of {amount} exceeds the balance of {total}"),
        });
    }
    let (_, balance) = debit_locked(
        conn,
        user_id,
        total,
        -amount,
        TransactionKind::Adjustment,
        &ctx,
    )
    .await?;
    Ok(balance)
}
