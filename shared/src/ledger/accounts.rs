//! `user_accounts`: the ledger's record of a user, created from the JWT
//! claims on first sight (no call to the auth function).

use sqlx::PgConnection;

use super::primitives::{Locked, Tx};
use super::types::LedgerError;
use crate::ids::UserId;
use crate::token::AuthUser;

/// Creates the caller's account, or refreshes its name, email and role
/// when the token says otherwise. Safe under concurrent first requests:
/// one `INSERT ... ON CONFLICT` statement.
pub async fn ensure_account(conn: &mut PgConnection, user: &AuthUser) -> Result<(), LedgerError> {
    sqlx::query!(
        "INSERT INTO user_accounts (user_id, username, email, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE
            SET username = EXCLUDED.username, email = EXCLUDED.email,
                role = EXCLUDED.role, updated_at = now()
          WHERE (user_accounts.username, user_accounts.email, user_accounts.role)
                IS DISTINCT FROM (EXCLUDED.username, EXCLUDED.email, EXCLUDED.role)",
        user.id,
        user.username,
        user.email,
        user.role.as_str(),
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// [`ensure_account`] and [`super::primitives::lock_account`] in one
/// statement: creates the caller's account, or records its name, email
/// and role (rewritten even when unchanged, since the change that follows
/// rewrites the row anyway), and locks it for the rest of the transaction.
pub async fn lock_from_claims(tx: &mut Tx<'_>, user: &AuthUser) -> Result<Locked, LedgerError> {
    let row = sqlx::query!(
        r#"INSERT INTO user_accounts AS a (user_id, username, email, role) VALUES ($1, $2, $3, $4)
           ON CONFLICT (user_id) DO UPDATE
              SET username = EXCLUDED.username, email = EXCLUDED.email,
                  role = EXCLUDED.role, updated_at = now()
           RETURNING total_credits,
                     EXISTS (SELECT 1 FROM credit_allocations c
                              WHERE c.user_id = a.user_id AND c.expired_at IS NULL
                                AND c.expires_at <= now()) AS "due!""#,
        user.id,
        user.username,
        user.email,
        user.role.as_str(),
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(Locked::new(row.total_credits, row.due))
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
