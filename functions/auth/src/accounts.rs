//! The auth function's part in API keys (README §11): it keeps the
//! ledger's record of each user (`user_accounts`: name, email, role,
//! disabled or deleted) current, because a request made with an API key
//! reads it there, and it revokes a user's keys in PostgreSQL *before* it
//! disables, deletes or demotes them in MongoDB, so no key outlives the
//! change (the write fails closed: MongoDB is not touched when it fails).

use shared::error::ApiError;
use shared::keys::store::{sync_account, AccountRecord};
use shared::token::Role;

use crate::store::UserDoc;
use crate::AppState;

/// What happens to the user next in MongoDB.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Created or renamed, or a new address proven: recorded, keys kept.
    Record,
    /// Disabled, or demoted: recorded, every key revoked.
    RevokeKeys,
    /// Deleted: recorded as deleted, every key revoked.
    Delete,
}

/// Records `user` as it is about to be (or has just been) stored;
/// returns how many API keys it revoked.
pub async fn record(
    state: &AppState,
    user: &UserDoc,
    change: Change,
    actor: &str,
) -> Result<u64, ApiError> {
    let record = AccountRecord {
        user_id: &user.id,
        username: &user.username,
        email: &user.email,
        role: user.role,
        disabled: user.disabled || change == Change::Delete,
        deleted: change == Change::Delete,
        verified: user.is_verified,
        locale: user.locale.as_deref().unwrap_or("en"),
    };
    let revoked = sync_account(&state.pg, record, change != Change::Record, actor).await?;
    if revoked > 0 {
        tracing::info!(user_id = %user.id, revoked, "API keys revoked");
    }
    Ok(revoked)
}

/// [`record`] after a change MongoDB already holds (a new account, name
/// or address): a failure is logged, not answered, since the change is
/// made; the row is rewritten by the user's next change.
pub async fn record_after(state: &AppState, user: &UserDoc) {
    if let Err(err) = record(state, user, Change::Record, &user.id).await {
        tracing::error!(error = %err, user_id = %user.id, "the ledger's record of a user was not updated");
    }
}

/// How much a role may do, for telling a demotion.
pub fn rank(role: Role) -> u8 {
    match role {
        Role::Admin => 2,
        Role::Supervisor => 1,
        Role::Enduser => 0,
    }
}
