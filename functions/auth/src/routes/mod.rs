//! The auth function's handlers, and the bodies they answer.

pub mod account;
pub mod admin;
pub mod keys;
pub mod profile;

use axum::http::StatusCode;
use axum::Json;
use serde::Serialize;
use shared::token::Role;
use shared::ApiError;

use crate::store::UserDoc;

/// A handler's answer: a status and a typed body.
pub type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

/// `{message}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessageBody {
    /// What happened, for a person.
    pub message: String,
}

/// 200 with `{message}`.
pub fn done(message: &str) -> Answer<MessageBody> {
    Ok((
        StatusCode::OK,
        Json(MessageBody {
            message: message.to_owned(),
        }),
    ))
}

/// An account as the API shows it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserView {
    /// Id (the JWT `sub`).
    pub id: String,
    /// Username.
    pub username: String,
    /// The proven address.
    pub email: String,
    /// A new address asked for, not yet proven.
    pub pending_email: Option<String>,
    /// Role.
    pub role: Role,
    /// Whether the address is proven.
    pub is_verified: bool,
    /// The console's language as last chosen (`en`, `zh-CN`, `zh-TW`;
    /// `null`: never chosen, and mail is in English). The console adopts
    /// it at sign-in.
    pub locale: Option<String>,
    /// Whether the account is disabled.
    pub disabled: bool,
    /// Created.
    pub created_at: chrono::DateTime<chrono::Utc>,
    /// Last changed.
    pub updated_at: chrono::DateTime<chrono::Utc>,
    /// In the admin's list only: its balance and what it spent this month.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub credits: Option<shared::ledger::queries::CreditSummary>,
}

impl From<&UserDoc> for UserView {
    fn from(u: &UserDoc) -> Self {
        UserView {
            id: u.id.clone(),
            username: u.username.clone(),
            email: u.email.clone(),
            pending_email: u.pending_email.clone(),
            role: u.role,
            is_verified: u.is_verified,
            locale: u.locale.clone(),
            disabled: u.disabled,
            created_at: u.created_at.to_chrono(),
            updated_at: u.updated_at.to_chrono(),
            credits: None,
        }
    }
}

/// `{user}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UserEnvelope {
    /// The account.
    pub user: UserView,
}

impl UserEnvelope {
    /// 200 with the account.
    pub fn of(user: &UserDoc) -> Answer<UserEnvelope> {
        Ok((StatusCode::OK, Json(UserEnvelope { user: user.into() })))
    }
}

/// The user a sign-in is for.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedInUser {
    /// Id.
    pub id: String,
    /// Username.
    pub username: String,
    /// The proven address.
    pub email: String,
    /// Role.
    pub role: Role,
    /// Always true for a sign-in.
    pub is_verified: bool,
    /// The console's language as last chosen (`null`: never).
    pub locale: Option<String>,
}

/// A sign-in: the token pair and the user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedIn {
    /// Access token (15 minutes).
    pub access_token: String,
    /// Refresh token (7 days, rotated on every use).
    pub refresh_token: String,
    /// The user.
    pub user: SignedInUser,
    /// What happened, when there is more to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

impl SignedIn {
    /// The sign-in of `user` with this pair.
    pub fn new(user: &UserDoc, (access, refresh): (String, String)) -> Self {
        SignedIn {
            access_token: access,
            refresh_token: refresh,
            user: SignedInUser {
                id: user.id.clone(),
                username: user.username.clone(),
                email: user.email.clone(),
                role: user.role,
                is_verified: user.is_verified,
                locale: user.locale.clone(),
            },
            message: None,
        }
    }
}

/// A fresh token pair.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TokenPair {
    /// Access token.
    pub access_token: String,
    /// Refresh token.
    pub refresh_token: String,
    /// What happened, when there is more to say.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
