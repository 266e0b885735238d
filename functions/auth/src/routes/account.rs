//! Public account routes: signup, email verification, login, token
//! rotation, logout and password reset (SPEC §5).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::Engine;
use chrono::Duration;
use serde::Deserialize;
use serde_json::json;
use shared::digest::random_bytes;
use shared::error::{ApiError, JsonBody};
use shared::identity::{Email, Password, Username};
use shared::token::{AuthUser, Role};

use crate::password::{equalise_timing, hash_password, verify_password};
use crate::store::{CodePurpose, UserDoc};
use crate::AppState;

type ApiResult = Result<Response, ApiError>;

/// Failed logins that lock an account, and the window they count in.
pub const LOCKOUT_FAILURES: usize = 5;
/// The window failures count in, and how long a lock lasts (15 minutes).
pub const LOCKOUT_MINUTES: i64 = 15;
/// Wrong tries a verification code survives.
pub const CODE_ATTEMPTS: i32 = 5;
/// How long a verification code is valid.
pub const CODE_MINUTES: i64 = 15;
/// How long a reset link is valid.
pub const RESET_MINUTES: i64 = 60;
/// A new verification code is mailed at most this often per address.
pub const RESEND_SECONDS: i64 = 60;

fn message(status: StatusCode, text: &str) -> Response {
    (status, Json(json!({ "message": text }))).into_response()
}

fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_credentials",
        message: "the username/email or password is wrong".into(),
    }
}

fn invalid_code() -> ApiError {
    ApiError::BadRequest {
        code: "invalid_code",
        message: "the code is wrong or has expired".into(),
    }
}

/// A new six-digit code, mailed; a mail failure is logged, not returned
/// (the account stays, the user can ask again).
pub async fn send_verification(state: &AppState, user: &UserDoc) -> Result<(), ApiError> {
    let n = u64::from_le_bytes(random_bytes::<8>()) % 1_000_000;
    let code = format!("{n:06}");
    state
        .store
        .new_code(
            CodePurpose::Verify,
            &user.email,
            &user.id,
            &code,
            Duration::minutes(CODE_MINUTES),
        )
        .await?;
    let email = Email::parse("email", &user.email)?;
    if let Err(err) = state
        .mailer
        .send_verification_code(&email, &user.username, &code)
        .await
    {
        tracing::warn!(user_id = %user.id, error = %format!("{err:#}"), "verification mail not sent");
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    username: String,
    email: String,
    password: String,
}

/// Builds a new account document (not stored).
pub async fn new_user(
    username: &Username,
    email: &Email,
    password: &Password,
    role: Role,
    verified: bool,
) -> Result<UserDoc, ApiError> {
    let now = bson::DateTime::now();
    Ok(UserDoc {
        id: uuid::Uuid::now_v7().to_string(),
        username: username.as_str().to_owned(),
        username_key: username.key(),
        email: email.as_str().to_owned(),
        password_hash: hash_password(password).await?,
        role,
        is_verified: verified,
        disabled: false,
        created_at: now,
        updated_at: now,
    })
}

/// `POST /api/auth/signup`
pub async fn signup(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SignupBody>,
) -> ApiResult {
    let username = Username::parse("username", &body.username)?;
    let email = Email::parse("email", &body.email)?;
    let password = Password::parse("password", &body.password)?;
    let user = new_user(&username, &email, &password, Role::Enduser, false).await?;
    state.store.insert_user(&user).await?;
    tracing::info!(user_id = %user.id, "account created");
    send_verification(&state, &user).await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "userId": user.id,
            "message": "account created; the verification code is on its way by email",
        })),
    )
        .into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    email: String,
    code: String,
}

/// `POST /api/auth/verify-email`
pub async fn verify_email(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<VerifyBody>,
) -> ApiResult {
    let email = Email::parse("email", &body.email)?;
    let code = body.code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_code());
    }
    let used = state
        .store
        .use_code(CodePurpose::Verify, email.as_str(), code, CODE_ATTEMPTS)
        .await?
        .ok_or_else(invalid_code)?;
    state
        .store
        .update_user(&used.user_id, bson::doc! {"is_verified": true})
        .await?;
    Ok(message(StatusCode::OK, "email verified"))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailBody {
    email: String,
}

/// `POST /api/auth/resend-verification`: the same answer whether or not
/// the address belongs to an unverified account.
pub async fn resend_verification(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<EmailBody>,
) -> ApiResult {
    let email = Email::parse("email", &body.email)?;
    if let Some(user) = state.store.user_by_email(email.as_str()).await? {
        let recent = state
            .store
            .last_code_at(CodePurpose::Verify, email.as_str())
            .await?
            .is_some_and(|t| chrono::Utc::now() - t < Duration::seconds(RESEND_SECONDS));
        if !user.is_verified && !user.disabled && !recent {
            send_verification(&state, &user).await?;
        }
    }
    Ok(message(
        StatusCode::OK,
        "if an unverified account uses this address, a new code has been sent",
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginBody {
    username: Option<String>,
    email: Option<String>,
    password: String,
}

/// Issues an access token and a refresh token in `family` (a new family
/// when `None`), storing the refresh token's hash.
pub async fn issue_pair(
    state: &AppState,
    user: &UserDoc,
    family: Option<String>,
) -> Result<(String, String), ApiError> {
    let now = chrono::Utc::now().timestamp();
    let access = state.jwt.issue_access(
        &shared::token::TokenSubject {
            user_id: &user.id,
            username: &user.username,
            email: &user.email,
            role: user.role,
        },
        now,
    );
    let family = family.unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let (refresh, claims) = state.jwt.issue_refresh(&user.id, &family, now);
    state
        .store
        .store_refresh(&refresh, &claims.jti, &user.id, &family, claims.exp)
        .await?;
    Ok((access, refresh))
}

fn locked() -> ApiError {
    ApiError::TooManyRequests {
        code: "account_locked",
        message: format!("too many failed logins; try again in {LOCKOUT_MINUTES} minutes"),
    }
}

/// `POST /api/auth/login`: the same 401 for an unknown account and a wrong
/// password (and the same time spent); 5 failures in 15 minutes lock the
/// account (or, for an unknown name, that name) for 15 minutes.
pub async fn login(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LoginBody>,
) -> ApiResult {
    let identifier = match (&body.email, &body.username) {
        (Some(e), _) if !e.trim().is_empty() => e.trim().to_lowercase(),
        (_, Some(u)) if !u.trim().is_empty() => u.trim().to_owned(),
        _ => {
            return Err(ApiError::invalid_field(
                "username",
                "a username or an email is required",
            ))
        }
    };
    if body.password.is_empty() {
        return Err(ApiError::invalid_field("password", "is required"));
    }
    let user = if identifier.contains('@') {
        state.store.user_by_email(&identifier).await?
    } else {
        state.store.user_by_username(&identifier).await?
    };
    let key = match &user {
        Some(u) => format!("user:{}", u.id),
        None => format!("name:{}", identifier.to_lowercase()),
    };
    if state.store.locked_until(&key).await?.is_some() {
        return Err(locked());
    }
    let verified = match &user {
        Some(u) if body.password.chars().count() <= 128 => {
            verify_password(&body.password, &u.password_hash).await
        }
        _ => {
            equalise_timing().await;
            false
        }
    };
    let Some(user) = user.filter(|_| verified) else {
        let window = Duration::minutes(LOCKOUT_MINUTES);
        if state
            .store
            .record_failure(&key, LOCKOUT_FAILURES, window, window)
            .await?
        {
            tracing::warn!(lock = %key.split(':').next().unwrap_or(""), "login locked after repeated failures");
        }
        return Err(invalid_credentials());
    };
    state.store.clear_failures(&key).await?;
    if user.disabled {
        return Err(ApiError::Forbidden {
            code: "account_disabled",
            message: "this account is disabled".into(),
        });
    }
    if !user.is_verified {
        return Err(ApiError::Forbidden {
            code: "email_not_verified",
            message: "verify your email first (POST /api/auth/verify-email)".into(),
        });
    }
    let (access, refresh) = issue_pair(&state, &user, None).await?;
    tracing::info!(user_id = %user.id, "logged in");
    Ok(Json(json!({
        "accessToken": access,
        "refreshToken": refresh,
        "user": {
            "id": user.id,
            "username": user.username,
            "email": user.email,
            "role": user.role,
            "isVerified": user.is_verified,
        },
    }))
    .into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
}

/// `POST /api/auth/refresh`: rotation. Presenting a token that was already
/// rotated revokes its whole family (theft detection). The user is read
/// again, so a role change or a disabled account takes effect here.
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> ApiResult {
    let claims = state.jwt.verify_refresh(&body.refresh_token)?;
    let record = match state.store.use_refresh(&body.refresh_token).await? {
        Ok(record) => record,
        Err(Some(record)) => {
            state.store.revoke_family(&record.family_id).await?;
            tracing::warn!(user_id = %record.user_id, "refresh token reused: family revoked");
            return Err(ApiError::Unauthorized {
                code: "token_reused",
                message: "this refresh token was already used; sign in again".into(),
            });
        }
        Err(None) => {
            return Err(ApiError::Unauthorized {
                code: "invalid_token",
                message: "unknown refresh token".into(),
            })
        }
    };
    if record.user_id != claims.sub || record.family_id != claims.fam {
        state.store.revoke_family(&record.family_id).await?;
        return Err(ApiError::Unauthorized {
            code: "invalid_token",
            message: "the refresh token does not match its record".into(),
        });
    }
    let user = state.store.user_by_id(&record.user_id).await?;
    let Some(user) = user.filter(|u| !u.disabled) else {
        state.store.revoke_family(&record.family_id).await?;
        return Err(ApiError::Unauthorized {
            code: "account_disabled",
            message: "this account is disabled or gone".into(),
        });
    };
    let (access, refresh) = issue_pair(&state, &user, Some(record.family_id)).await?;
    Ok(Json(json!({ "accessToken": access, "refreshToken": refresh })).into_response())
}

/// `POST /api/auth/logout`: revokes the refresh token. An expired one is
/// already useless, so it is accepted too.
pub async fn logout(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> ApiResult {
    match state.jwt.verify_refresh(&body.refresh_token) {
        Ok(_) => state.store.revoke_refresh(&body.refresh_token).await?,
        Err(err) if err.code() == "token_expired" => {}
        Err(err) => return Err(err),
    }
    Ok(message(StatusCode::OK, "logged out"))
}

/// `POST /api/auth/logout-all`
pub async fn logout_all(State(state): State<AppState>, user: AuthUser) -> ApiResult {
    state.store.revoke_user_tokens(&user.id, None).await?;
    Ok(message(StatusCode::OK, "every session is logged out"))
}

/// `POST /api/auth/forgot-password`: always 200; mails a single-use reset
/// link valid for one hour when the address belongs to an account.
pub async fn forgot_password(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<EmailBody>,
) -> ApiResult {
    let email = Email::parse("email", &body.email)?;
    if let Some(user) = state
        .store
        .user_by_email(email.as_str())
        .await?
        .filter(|u| !u.disabled)
    {
        let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(random_bytes::<32>());
        state
            .store
            .new_code(
                CodePurpose::Reset,
                email.as_str(),
                &user.id,
                &token,
                Duration::minutes(RESET_MINUTES),
            )
            .await?;
        if let Err(err) = state
            .mailer
            .send_reset_link(&email, &user.username, &token)
            .await
        {
            tracing::warn!(user_id = %user.id, error = %format!("{err:#}"), "reset mail not sent");
        }
    }
    Ok(message(
        StatusCode::OK,
        "if an account uses this address, a reset link has been sent",
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetBody {
    token: String,
    new_password: String,
}

/// `POST /api/auth/reset-password`: single use; revokes every refresh
/// token of the account and lifts a lock-out.
pub async fn reset_password(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ResetBody>,
) -> ApiResult {
    let password = Password::parse("newPassword", &body.new_password)?;
    let used = state
        .store
        .use_reset_token(body.token.trim())
        .await?
        .ok_or(ApiError::BadRequest {
            code: "invalid_token",
            message: "the reset link is invalid, used or expired".into(),
        })?;
    let hash = hash_password(&password).await?;
    // Following the mailed link proves the address, too.
    state
        .store
        .update_user(
            &used.user_id,
            bson::doc! {"password_hash": hash, "is_verified": true},
        )
        .await?;
    state.store.revoke_user_tokens(&used.user_id, None).await?;
    state
        .store
        .clear_failures(&format!("user:{}", used.user_id))
        .await?;
    Ok(message(StatusCode::OK, "password changed; sign in again"))
}
