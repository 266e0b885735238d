//! The caller's own account (README §5).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use shared::error::{ApiError, JsonBody};
use shared::identity::{Email, Password, Username};
use shared::openapi::ApiErrors;
use shared::token::AuthUser;

use super::account::{issue_pair, send_verification};
use super::{Answer, TokenPair, UserEnvelope};
use crate::guard::{self, lock_key, send_by};
use crate::password::hash_password;
use crate::store::UserDoc;
use crate::AppState;

pub(super) async fn current(state: &AppState, user: &AuthUser) -> Result<UserDoc, ApiError> {
    state
        .store
        .user_by_id(&user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("this account no longer exists"))
}

/// The caller's account.
#[utoipa::path(get, path = "/api/profile", tag = "auth",
    responses((status = 200, description = "A user", body = UserEnvelope), ApiErrors))]
pub async fn get_profile(State(state): State<AppState>, user: AuthUser) -> Answer<UserEnvelope> {
    UserEnvelope::of(&current(&state, &user).await?)
}

/// `PUT /api/profile`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProfileBody {
    username: Option<String>,
    email: Option<String>,
    current_password: Option<String>,
    /// The console's language: `en`, `zh-CN` or `zh-TW` (mail follows it).
    #[schema(pattern = "^(en|zh-CN|zh-TW)$")]
    locale: Option<String>,
}

/// The current password, checked against the lock-out like a sign-in (a
/// stolen access token cannot be used to guess it): 400 when missing, 401
/// when wrong, 429 when locked.
pub(super) async fn require_password(
    state: &AppState,
    user: &UserDoc,
    given: Option<&str>,
    field: &str,
) -> Result<(), ApiError> {
    let password = given
        .filter(|p| !p.is_empty())
        .ok_or_else(|| ApiError::invalid_field(field, "is required"))?;
    guard::check_password(state, &lock_key(Some(user), ""), Some(user), password)
        .await
        .map_err(|e| match e {
            ApiError::Unauthorized { .. } => wrong_password(),
            other => other,
        })
}

fn wrong_password() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_credentials",
        message: "the current password is wrong".into(),
    }
}

/// `PUT /api/profile`: 409 when the username or email is taken. A new
/// email needs `currentPassword` and is only *pending*: the account keeps
/// its proven address (in the profile, tokens, access lists and login)
/// until the code mailed to the new one is entered at
/// `POST /api/auth/verify-email`; the old address is told. Asking for the
/// current address again cancels a pending change.
#[utoipa::path(put, path = "/api/profile", tag = "auth",
    request_body = ProfileBody,
    responses((status = 200, description = "A user", body = UserEnvelope), ApiErrors))]
pub async fn put_profile(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<ProfileBody>,
) -> Answer<UserEnvelope> {
    let before = current(&state, &user).await?;
    let mut set = bson::Document::new();
    let mut unset = bson::Document::new();
    if let Some(locale) = &body.locale {
        if !["en", "zh-CN", "zh-TW"].contains(&locale.as_str()) {
            return Err(ApiError::invalid_field(
                "locale",
                "must be en, zh-CN or zh-TW",
            ));
        }
        set.insert("locale", locale.as_str());
    }
    if let Some(raw) = &body.username {
        let username = Username::parse("username", raw)?;
        if username.as_str() != before.username {
            set.insert("username", username.as_str());
            set.insert("username_key", username.key());
        }
    }
    let mut pending = None;
    if let Some(raw) = &body.email {
        let email = Email::parse("email", raw)?;
        if email.as_str() == before.email {
            if before.pending_email.is_some() {
                unset.insert("pending_email", "");
            }
        } else if before.pending_email.as_deref() != Some(email.as_str()) {
            let given = body.current_password.as_deref();
            require_password(&state, &before, given, "currentPassword").await?;
            if state.store.user_by_email(email.as_str()).await?.is_some() {
                return Err(ApiError::Conflict {
                    code: "email_taken",
                    message: "this email is already registered".into(),
                });
            }
            set.insert("pending_email", email.as_str());
            pending = Some(email);
        }
    }
    let after = state.store.change_user(&user.id, set, unset).await?;
    if after.username != before.username || after.locale != before.locale {
        crate::accounts::record_after(&state, &after).await;
    }
    if let Some(new) = pending {
        send_verification(&state, &after, new.as_str()).await?;
        tell_old_address(&state, &after, new.as_str()).await;
        tracing::info!(user_id = %after.id, "email change asked for");
    }
    UserEnvelope::of(&after)
}

async fn tell_old_address(state: &AppState, user: &UserDoc, new_address: &str) {
    let Ok(old) = Email::parse("email", &user.email) else {
        return;
    };
    let mail = state
        .mailer
        .send_email_change_notice(&old, &user.username, new_address);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    send_by(deadline, mail, "email change notice").await;
}

/// `POST /api/profile/change-password`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangePasswordBody {
    current_password: String,
    new_password: String,
    refresh_token: Option<String>,
}

/// `POST /api/profile/change-password`: needs the current password;
/// revokes every refresh token except the one sent, and answers with a
/// fresh pair.
#[utoipa::path(post, path = "/api/profile/change-password", tag = "auth",
    request_body = ChangePasswordBody,
    responses((status = 200, description = "Changed; a fresh pair", body = TokenPair), ApiErrors))]
pub async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<ChangePasswordBody>,
) -> Answer<TokenPair> {
    let new_password = Password::parse("newPassword", &body.new_password)?;
    let doc = current(&state, &user).await?;
    require_password(
        &state,
        &doc,
        Some(&body.current_password),
        "currentPassword",
    )
    .await?;
    let hash = hash_password(&new_password).await?;
    let doc = state
        .store
        .update_user(&user.id, bson::doc! {"password_hash": hash})
        .await?;
    state
        .store
        .revoke_user_tokens(&user.id, body.refresh_token.as_deref())
        .await?;
    let (access_token, refresh_token) = issue_pair(&state, &doc, None).await?;
    let pair = TokenPair {
        access_token,
        refresh_token,
        message: Some("password changed".into()),
    };
    Ok((StatusCode::OK, Json(pair)))
}
