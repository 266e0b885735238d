//! The caller's own account (SPEC §5).

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use shared::error::{ApiError, JsonBody};
use shared::identity::{Email, Password, Username};
use shared::token::AuthUser;

use super::account::{issue_pair, send_verification};
use crate::password::{hash_password, verify_password};
use crate::store::UserDoc;
use crate::AppState;

type ApiResult = Result<Response, ApiError>;

async fn current(state: &AppState, user: &AuthUser) -> Result<UserDoc, ApiError> {
    state
        .store
        .user_by_id(&user.id)
        .await?
        .ok_or_else(|| ApiError::not_found("this account no longer exists"))
}

/// `GET /api/profile`
pub async fn get_profile(State(state): State<AppState>, user: AuthUser) -> ApiResult {
    let doc = current(&state, &user).await?;
    Ok(Json(json!({ "user": doc.to_json() })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileBody {
    username: Option<String>,
    email: Option<String>,
}

/// `PUT /api/profile`: 409 when the username or email is taken; a new
/// email must be verified again (a code is mailed to it).
pub async fn put_profile(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<ProfileBody>,
) -> ApiResult {
    let before = current(&state, &user).await?;
    let mut set = bson::Document::new();
    if let Some(raw) = &body.username {
        let username = Username::parse("username", raw)?;
        if username.as_str() != before.username {
            set.insert("username", username.as_str());
            set.insert("username_key", username.key());
        }
    }
    let mut email_changed = false;
    if let Some(raw) = &body.email {
        let email = Email::parse("email", raw)?;
        if email.as_str() != before.email {
            set.insert("email", email.as_str());
            set.insert("is_verified", false);
            email_changed = true;
        }
    }
    let after = if set.is_empty() {
        before
    } else {
        state.store.update_user(&user.id, set).await?
    };
    if email_changed {
        send_verification(&state, &after).await?;
    }
    Ok(Json(json!({ "user": after.to_json() })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangePasswordBody {
    current_password: String,
    new_password: String,
    refresh_token: Option<String>,
}

/// `POST /api/profile/change-password`: needs the current password;
/// revokes every refresh token except the one sent, and answers with a
/// fresh pair.
pub async fn change_password(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<ChangePasswordBody>,
) -> ApiResult {
    let new_password = Password::parse("newPassword", &body.new_password)?;
    let doc = current(&state, &user).await?;
    if !verify_password(&body.current_password, &doc.password_hash).await {
        return Err(ApiError::Unauthorized {
            code: "invalid_credentials",
            message: "the current password is wrong".into(),
        });
    }
    let hash = hash_password(&new_password).await?;
    let doc = state
        .store
        .update_user(&user.id, bson::doc! {"password_hash": hash})
        .await?;
    state
        .store
        .revoke_user_tokens(&user.id, body.refresh_token.as_deref())
        .await?;
    let (access, refresh) = issue_pair(&state, &doc, None).await?;
    Ok(Json(json!({
        "message": "password changed",
        "accessToken": access,
        "refreshToken": refresh,
    }))
    .into_response())
}
