//! `user_accounts`: the ledger's record of a user, created from the JWT
//! claims on first sight (no call to the auth function).

use sqlx::PgConnection;

use super::primitives::{Locked, Tx};
use super::types::LedgerError;
use crate::ids::UserId;
use crate::token::AuthUser;

/// Creates the caller's account, or refreshes its name, email and role
/// when the token says otherwise and the auth function has not taken the
/// row over ([`sync_account`]; a key's caller, whose role is capped, never
/// rewrites it). Safe under concurrent first requests: one `INSERT ... ON
/// CONFLICT` statement.
pub async fn ensure_account(conn: &mut PgConnection, user: &AuthUser) -> Result<(), LedgerError> {
    sqlx::query!(
        "INSERT INTO user_accounts (user_id, username, email, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE
            SET username = EXCLUDED.username, email = EXCLUDED.email,
                role = EXCLUDED.role, updated_at = now()
          WHERE user_accounts.synced_at IS NULL AND $5
            AND (user_accounts.username, user_accounts.email, user_accounts.role)
                IS DISTINCT FROM (EXCLUDED.username, EXCLUDED.email, EXCLUDED.role)",
        user.id,
        user.username,
        user.email,
        user.role.as_str(),
        user.key.is_none(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// The caller's account, locked, as [`lock_from_claims`] read it.
#[derive(Debug, Clone, Copy)]
pub struct Account {
    /// The lock, the cached total and the due flag.
    pub locked: Locked,
    /// Disabled or deleted (the auth function says so before MongoDB does).
    pub disabled: bool,
    /// The user's own `RATE_LIMIT_PER_MINUTE`, when an admin set one.
    pub rate_limit_per_minute: Option<i32>,
    /// The user's own `MAX_CONCURRENT_STREAMS`, when an admin set one.
    pub max_concurrent: Option<i32>,
}

/// [`ensure_account`] and [`super::primitives::lock_account`] in one
/// statement: creates the caller's account, or records its name, email
/// and role (as [`ensure_account`] would), and locks it for the rest of
/// the transaction.
pub async fn lock_from_claims(tx: &mut Tx<'_>, user: &AuthUser) -> Result<Account, LedgerError> {
    let row = sqlx::query!(
        r#"INSERT INTO user_accounts AS a (user_id, username, email, role) VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id) DO UPDATE
              SET username = CASE WHEN a.synced_at IS NULL AND $5 THEN EXCLUDED.username ELSE a.username END,
                  email = CASE WHEN a.synced_at IS NULL AND $5 THEN EXCLUDED.email ELSE a.email END,
                  role = CASE WHEN a.synced_at IS NULL AND $5 THEN EXCLUDED.role ELSE a.role END,
                  updated_at = now()
           RETURNING total_credits, (disabled OR deleted_at IS NOT NULL) AS "disabled!",
                     session_version,
                     rate_limit_per_minute, max_concurrent,
                     EXISTS (SELECT 1 FROM credit_allocations c
                              WHERE c.user_id = a.user_id AND c.expired_at IS NULL
                                AND c.expires_at <= now()) AS "due!""#,
        user.id,
        user.username,
        user.email,
        user.role.as_str(),
        user.key.is_none(),
    )
    .fetch_one(&mut **tx)
    .await?;
    // A token issued before its user signed out everywhere (a key's caller
    // is ended by revoking the key instead).
    if user.key.is_none() && user.session_version < row.session_version {
        return Err(LedgerError::SessionEnded);
    }
    Ok(Account {
        locked: Locked::new(row.total_credits, row.due),
        disabled: row.disabled,
        rate_limit_per_minute: row.rate_limit_per_minute,
        max_concurrent: row.max_concurrent,
    })
}

/// Creates an account known only by id (an admin allocating to a user
/// the ledger has not seen); its name and email come with their first
/// request. Returns whether it was created.
pub async fn ensure_account_id(tx: &mut Tx<'_>, user: &UserId) -> Result<bool, LedgerError> {
    let created = sqlx::query!(
        "INSERT INTO user_accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
        user.as_str()
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(created == 1)
}
