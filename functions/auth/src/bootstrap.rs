//! The first admin, from `ADMIN_USERNAME`/`ADMIN_EMAIL`/`ADMIN_PASSWORD`,
//! created once: at every cold start the function makes sure an account
//! with that email or username exists, and creates it (verified, role
//! admin) when neither does. Concurrent cold starts race on the unique
//! indexes, and the loser finds the winner's account.

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
    /// An account with that email or username already existed.
    Existed,
}

/// Ensures the configured first admin exists.
pub async fn ensure_first_admin(
    store: &AuthStore,
    admin: &AdminBootstrap,
) -> Result<Bootstrap, ApiError> {
    let username = Username::parse("ADMIN_USERNAME", &admin.username)?;
    let email = Email::parse("ADMIN_EMAIL", &admin.email)?;
    let password = Password::parse("ADMIN_PASSWORD", admin.password.expose())?;
    if store.user_by_email(email.as_str()).await?.is_some()
        || store.user_by_username(username.as_str()).await?.is_some()
    {
        return Ok(Bootstrap::Existed);
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
