//! The first admin, from `ADMIN_USERNAME`/`ADMIN_EMAIL`/`ADMIN_PASSWORD`,
//! created only while no admin exists at all: deleting it (once another
//! admin exists) does not bring it back at the next cold start. An
//! existing account holding that name or address is never promoted (that
//! would hand an admin role to whoever registered it first): it is logged
//! at error instead. Concurrent cold starts race on the unique indexes,
//! and the loser finds the winner's account.

use shared::config::AdminBootstrap;
use shared::identity::{Email, Password, Username};
use shared::token::Role;
use shared::ApiError;

use crate::routes::account::new_user;
use crate::store::AuthStore;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// The admin was created now.
    Created,
    /// An admin exists already: nothing to do.
    Existed,
    /// No admin exists, but another account holds the name or address:
    /// nothing was created or promoted (logged at error).
    Refused,
}

/// Ensures the configured first admin exists.
pub async fn ensure_first_admin(
    store: &AuthStore,
    admin: &AdminBootstrap,
) -> Result<Bootstrap, ApiError> {
    let username = Username::parse("ADMIN_USERNAME", &admin.username)?;
    let email = Email::parse("ADMIN_EMAIL", &admin.email)?;
    let password = Password::parse("ADMIN_PASSWORD", admin.password.expose())?;
    if store.admin_count().await? > 0 {
        return Ok(Bootstrap::Existed);
    }
    if store.user_by_email(email.as_str()).await?.is_some()
        || store.user_by_username(username.as_str()).await?.is_some()
    {
        tracing::error!(
            "no admin exists, and ADMIN_USERNAME or ADMIN_EMAIL names an existing account; \
             it is not promoted: choose other ADMIN_USERNAME and ADMIN_EMAIL values"
        );
        return Ok(Bootstrap::Refused);
    }
    let doc = new_user(&username, &email, &password, Role::Admin, true).await?;
    match store.insert_user(&doc).await {
        Ok(()) => {
            tracing::info!(user_id = %doc.id, "first admin created");
            Ok(Bootstrap::Created)
        }
        Err(ApiError::Conflict { .. }) => Ok(Bootstrap::Existed),
        Err(other) => Err(other),
    }
}
