//! Making an API key (README §11). Here, not beside the other key routes
//! in the credits function, because a key is a lasting credential: making
//! one needs the owner's current password (checked against the sign-in
//! lock-out), so a stolen 15-minute access token cannot mint one, and the
//! owner is mailed about every key made. The route ignores
//! `Idempotency-Key`: a replay would show the secret again.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::Deserialize;
use shared::error::{ApiError, JsonBody};
use shared::identity::Email;
use shared::ids::ChatflowId;
use shared::keys::store::{self, CreatedKey, KeySpec, DEFAULT_KEY_DAYS};
use shared::mail::KeyMail;
use shared::openapi::ApiErrors;
use shared::token::AuthUser;

use super::profile::{current, require_password};
use super::Answer;
use crate::guard::send_by;
use crate::AppState;

/// `POST /api/keys`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyBody {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// The owner's current password (401 when wrong; counted like a
    /// sign-in, so repeated failures lock the account for a while).
    current_password: String,
    /// 1 to 365 (absent or `null`: 90). No key lives forever.
    #[schema(minimum = 1, maximum = 365, nullable = true)]
    expires_in_days: Option<i32>,
    /// The chatflows the key may use, 1 to 100 (absent or `null`: every
    /// one its user may use).
    #[schema(value_type = Option<Vec<String>>, max_items = 100, nullable = true)]
    chatflows: Option<Vec<ChatflowId>>,
    /// Credits the key may spend a calendar month, UTC (absent or `null`:
    /// no limit).
    #[schema(minimum = 1, maximum = 9007199254740991_i64, nullable = true)]
    monthly_credit_limit: Option<i64>,
}

impl CreateKeyBody {
    fn check(&self) -> Result<KeySpec, ApiError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "name",
                "must be 1 to 100 characters, without control characters",
            ));
        }
        let days = self.expires_in_days.unwrap_or(DEFAULT_KEY_DAYS);
        if !(1..=365).contains(&days) {
            return Err(ApiError::invalid_field(
                "expiresInDays",
                "must be from 1 to 365 (90 when absent)",
            ));
        }
        let chatflows = match &self.chatflows {
            None => None,
            Some(list) if list.is_empty() || list.len() > 100 => {
                return Err(ApiError::invalid_field(
                    "chatflows",
                    "must list 1 to 100 chatflow ids, or be absent for all",
                ))
            }
            Some(list) => {
                let mut ids: Vec<String> = list.iter().map(|c| c.as_str().to_owned()).collect();
                ids.sort();
                ids.dedup();
                Some(ids)
            }
        };
        if self
            .monthly_credit_limit
            .is_some_and(|l| !(1..=shared::ledger::MAX_CREDITS).contains(&l))
        {
            return Err(ApiError::invalid_field(
                "monthlyCreditLimit",
                format!("must be from 1 to {}", shared::ledger::MAX_CREDITS),
            ));
        }
        Ok(KeySpec {
            name,
            expires_in_days: days,
            chatflows,
            monthly_credit_limit: self.monthly_credit_limit,
        })
    }
}

/// Makes an API key for the caller (at most 20 live ones), once their
/// current password is checked, and mails them about it (never its
/// secret). The secret is in this answer only.
#[utoipa::path(post, path = "/api/keys", tag = "keys",
    request_body = CreateKeyBody,
    responses((status = 201, description = "The key, with its secret (shown this once)", body = CreatedKey), ApiErrors))]
pub async fn create_key(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<CreateKeyBody>,
) -> Answer<CreatedKey> {
    let spec = body.check()?;
    // Taken before the password is read: a reset that revokes the keys
    // after this point refuses the key (the old password may have been
    // read), see `store::create`.
    let checked_since = store::database_now(&state.pg).await?;
    let owner = current(&state, &user).await?;
    let given = Some(body.current_password.as_str());
    require_password(&state, &owner, given, "currentPassword").await?;
    let mut tx =
        shared::ledger::primitives::begin(&state.pg, shared::ledger::Durability::Flushed).await?;
    let created = store::create(&mut tx, &user, spec, Some(checked_since)).await?;
    shared::ledger::primitives::commit(tx).await?;
    tracing::info!(key = %created.id, "API key made");
    if let Ok(to) = Email::parse("email", &owner.email) {
        let key = KeyMail {
            name: &created.name,
            prefix: &created.prefix,
            chatflows: created.chatflows.as_deref(),
            monthly_credit_limit: created.monthly_credit_limit,
            expires_at: created.expires_at,
        };
        let mail = state.mailer.send_key_made(&to, &owner.username, &key);
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        send_by(deadline, mail, "key made notice").await;
    }
    Ok((StatusCode::CREATED, Json(created)))
}
