//! `user_accounts`: the ledger's record of a user, created from the JWT
//! claims on first sight (no call to the auth function).

use sqlx::PgConnection;

use crate::error::ApiError;
use crate::token::AuthUser;

/// Creates the caller's account, or refreshes its name, email and role
/// when the token says otherwise. Safe under concurrent first requests:
/// one `INSERT ... ON CONFLICT` statement.
pub async fn ensure_account(conn: &mut PgConnection, user: &AuthUser) -> Result<(), ApiError> {
    sqlx::query(
        "INSERT INTO user_accounts (user_id, username, email, role) VALUES ($1, $2, $3, $4)
         ON CONFLICT (user_id) DO UPDATE
            SET username = EXCLUDED.username, email = EXCLUDED.email,
                role = EXCLUDED.role, updated_at = now()
          WHERE (user_accounts.username, user_accounts.email, user_accounts.role)
                IS DISTINCT FROM (EXCLUDED.username, EXCLUDED.email, EXCLUDED.role)",
    )
    .bind(&user.id)
    .bind(&user.username)
    .bind(&user.email)
    .bind(user.role.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// Creates an account known only by id (an admin allocating to a user
/// the ledger has not seen); its name and email come with their first
/// request. Returns whether it was created.
pub async fn ensure_account_id(conn: &mut PgConnection, user_id: &str) -> Result<bool, ApiError> {
    if user_id.is_empty() || user_id.len() > 128 {
        return Err(ApiError::invalid_field(
            "userId",
            "must be 1 to 128 characters",
        ));
    }
    let created = sqlx::query(
        "INSERT INTO user_accounts (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .execute(conn)
    .await?
    .rows_affected();
    Ok(created == 1)
}

/// Locks the account for the rest of the transaction and returns its
/// cached total. Every ledger change takes this lock first.
pub async fn lock_account(conn: &mut PgConnection, user_id: &str) -> Result<i64, ApiError> {
    sqlx::query_scalar("SELECT total_credits FROM user_accounts WHERE user_id = $1 FOR UPDATE")
        .bind(user_id)
        .fetch_optional(conn)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("no credit account for user {user_id}")))
}
