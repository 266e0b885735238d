//! Public account routes: signup, email verification, login, token
//! rotation, logout and password reset (README §5).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Duration;
use serde::{Deserialize, Serialize};
use shared::digest::random_bytes;
use shared::error::{ApiError, JsonBody};
use shared::identity::{Email, Password, Username};
use shared::openapi::ApiErrors;
use shared::token::{AuthUser, Role};

use super::{done, Answer, MessageBody, SignedIn, TokenPair};
use crate::accounts::Change;
use crate::guard::{self, answer_after_floor, lock_key, mail_deadline, send_by};
use crate::password::hash_password;
use crate::store::{code_matches, Attempts, CodeDoc, CodePurpose, UserDoc};
use crate::AppState;

/// Wrong tries a verification code survives.
pub const CODE_ATTEMPTS: i32 = 5;
/// How long a verification code is valid.
pub const CODE_MINUTES: i64 = 15;
/// A code mail and a reset mail go out at most this often per address.
pub const RESEND_SECONDS: i64 = 60;
/// Wrong codes allowed per address and per account in 24 hours, across
/// resends; past them, 429.
pub const DAILY_CODE_ATTEMPTS: usize = 20;

fn invalid_code() -> ApiError {
    ApiError::BadRequest {
        code: "invalid_code",
        message: "the code is wrong or has expired".into(),
    }
}

fn too_many_codes() -> ApiError {
    ApiError::TooManyRequests {
        code: "too_many_attempts",
        message: format!(
            "more than {DAILY_CODE_ATTEMPTS} codes were tried in 24 hours; try again tomorrow"
        ),
        retry_after: Some(24 * 3600),
    }
}

/// Mails a new six-digit code to `address` (the account's own, or the one
/// it has pending), bound to the account and that address; at most one
/// code mail per address per minute (a second request in the minute sends
/// nothing and says nothing). A mail failure is logged, not returned: the
/// user can ask again.
pub async fn send_verification(
    state: &AppState,
    user: &UserDoc,
    address: &str,
) -> Result<(), ApiError> {
    let every = Duration::seconds(RESEND_SECONDS);
    if !state.store.claim_mail_slot("code", address, every).await? {
        return Ok(());
    }
    let n = u64::from_le_bytes(random_bytes::<8>()) % 1_000_000;
    let code = format!("{n:06}");
    state
        .store
        .new_code(
            CodePurpose::Verify,
            address,
            &user.id,
            &code,
            Duration::minutes(CODE_MINUTES),
        )
        .await?;
    let email = Email::parse("email", address)?;
    let mail = state
        .mailer
        .send_verification_code(&email, &user.username, &code);
    send_by(mail_deadline(state), mail, "verification code").await;
    Ok(())
}

/// `POST /api/auth/signup`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignupBody {
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.-]+$")]
    username: String,
    email: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
}

/// `{userId, message}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SignedUp {
    /// The new account's id.
    pub user_id: String,
    /// What happens next.
    pub message: String,
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
        pending_email: None,
        password_hash: hash_password(password).await?,
        role,
        is_verified: verified,
        disabled: false,
        session_version: 0,
        locale: None,
        created_at: now,
        updated_at: now,
    })
}

/// Creates an account and mails its verification code.
#[utoipa::path(post, path = "/api/auth/signup", tag = "auth", security(()),
    request_body = SignupBody,
    responses((status = 201, description = "Created; the code is on its way", body = SignedUp), ApiErrors))]
pub async fn signup(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<SignupBody>,
) -> Answer<SignedUp> {
    let username = Username::parse("username", &body.username)?;
    let email = Email::parse("email", &body.email)?;
    let password = Password::parse("password", &body.password)?;
    let user = new_user(&username, &email, &password, Role::Enduser, false).await?;
    state.store.insert_user(&user).await?;
    crate::accounts::record_after(&state, &user).await;
    tracing::info!(user_id = %user.id, "account created");
    send_verification(&state, &user, &user.email).await?;
    let answer = SignedUp {
        user_id: user.id,
        message: "account created; the verification code is on its way by email".into(),
    };
    Ok((StatusCode::CREATED, Json(answer)))
}

/// `POST /api/auth/verify-email`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    email: String,
    code: String,
}

/// `POST /api/auth/verify-email`: proves the address a code was mailed
/// to, for the account it was mailed for: the account's own address, or
/// the one it has pending (which then becomes its address, if no other
/// account took it meanwhile: 409). Every try is counted before the code
/// is compared: at most [`CODE_ATTEMPTS`] per code, however many arrive at
/// once, and [`DAILY_CODE_ATTEMPTS`] per address and per account in 24
/// hours, across resends (then 429).
#[utoipa::path(post, path = "/api/auth/verify-email", tag = "auth", security(()),
    request_body = VerifyBody,
    responses((status = 200, description = "Verified", body = MessageBody), ApiErrors))]
pub async fn verify_email(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<VerifyBody>,
) -> Answer<MessageBody> {
    let email = Email::parse("email", &body.email)?;
    let code = body.code.trim();
    if code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return Err(invalid_code());
    }
    let used = take_code(&state, email.as_str(), code).await?;
    prove_address(&state, &used).await?;
    for key in [
        format!("email:{}", used.email),
        format!("user:{}", used.user_id),
    ] {
        state.store.clear_attempts(Attempts::Code, &key).await?;
    }
    done("email verified")
}

/// Counts one evaluated code for `key` (24-hour window); true while under
/// the daily limit.
async fn under_daily_limit(state: &AppState, key: &str) -> Result<bool, ApiError> {
    let attempt = state
        .store
        .count_attempt(
            Attempts::Code,
            key,
            Duration::hours(24),
            DAILY_CODE_ATTEMPTS + 1,
        )
        .await?;
    Ok(attempt.count <= DAILY_CODE_ATTEMPTS)
}

/// The live code for `email` that `code` matches, used once. A code's
/// attempt is taken before it is compared (a guess that gets none is not
/// compared at all); each comparison counts against the address and the
/// code's account for the day (429 once either is past its limit): a
/// guess at an address several accounts want is compared with each of
/// their codes, and counts once for each.
async fn take_code(state: &AppState, email: &str, code: &str) -> Result<CodeDoc, ApiError> {
    let candidates = state
        .store
        .take_code_attempts(CodePurpose::Verify, email, CODE_ATTEMPTS)
        .await?;
    if candidates.is_empty() {
        return Err(invalid_code());
    }
    let mut limited = false;
    let address_key = format!("email:{email}");
    for candidate in candidates {
        let account_key = format!("user:{}", candidate.user_id);
        let (address, account) = tokio::try_join!(
            under_daily_limit(state, &address_key),
            under_daily_limit(state, &account_key),
        )?;
        if !(address && account) {
            limited = true;
            continue;
        }
        if code_matches(CodePurpose::Verify, &candidate, code)
            && state.store.mark_code_used(&candidate.id).await?
        {
            return Ok(candidate);
        }
    }
    Err(if limited {
        too_many_codes()
    } else {
        invalid_code()
    })
}

/// What a used code proves: the address it was mailed to, for its
/// account, if the account still has that address (as its own or
/// pending). A code for an address that has left the account is dead.
async fn prove_address(state: &AppState, used: &CodeDoc) -> Result<(), ApiError> {
    let user = state
        .store
        .user_by_id(&used.user_id)
        .await?
        .ok_or_else(invalid_code)?;
    if user.email == used.email {
        if !user.is_verified {
            state
                .store
                .update_user(&user.id, bson::doc! {"is_verified": true})
                .await?;
            // The ledger learns the address is proven (teams waiting
            // for it take the user in).
            let proven = UserDoc {
                is_verified: true,
                ..user
            };
            crate::accounts::record_after(state, &proven).await;
        }
        return Ok(());
    }
    if user.pending_email.as_deref() == Some(used.email.as_str()) {
        let moved = state
            .store
            .confirm_pending_email(&user.id, &used.email)
            .await?;
        if let Some(moved) = moved {
            crate::accounts::record_after(state, &moved).await;
            tracing::info!(user_id = %user.id, "email address changed");
            return Ok(());
        }
    }
    Err(invalid_code())
}

/// `{email}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EmailBody {
    email: String,
}

/// `POST /api/auth/resend-verification`: a new code for an unverified
/// account's address, or for an address an account has pending. The same
/// answer, after the same time, whether or not anything was sent.
#[utoipa::path(post, path = "/api/auth/resend-verification", tag = "auth", security(()),
    request_body = EmailBody,
    responses((status = 200, description = "The same answer whether or not the address is known", body = MessageBody), ApiErrors))]
pub async fn resend_verification(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<EmailBody>,
) -> Answer<MessageBody> {
    let email = Email::parse("email", &body.email)?;
    answer_after_floor(&state, async {
        let own = state
            .store
            .user_by_email(email.as_str())
            .await?
            .filter(|u| !u.is_verified && !u.disabled);
        let target = match own {
            Some(user) => Some(user),
            None => state.store.user_with_pending(email.as_str()).await?,
        };
        if let Some(user) = target {
            send_verification(&state, &user, email.as_str()).await?;
        }
        Ok::<_, ApiError>(())
    })
    .await?;
    done("if an unverified account uses this address, a new code has been sent")
}

/// `POST /api/auth/login`: a username or an email, and the password.
#[derive(Deserialize, utoipa::ToSchema)]
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
            session_version: user.session_version,
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

/// The identifier signed in with, trimmed: as the lock and the email
/// lookup key it (lower-cased when it came as an email), and as typed.
fn login_identifier(body: &LoginBody) -> Result<(String, String), ApiError> {
    let identifier = match (&body.email, &body.username) {
        (Some(e), _) if !e.trim().is_empty() => (e.trim().to_lowercase(), e.trim().to_owned()),
        (_, Some(u)) if !u.trim().is_empty() => (u.trim().to_owned(), u.trim().to_owned()),
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
    Ok(identifier)
}

/// `POST /api/auth/login`: the same 401 for an unknown account and a wrong
/// password (and the same time spent); 5 failures in 15 minutes lock the
/// account (or, for an unknown name, that name) for 15 minutes, counted
/// before each password is checked (see [`guard::check_password`]).
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", security(()),
    request_body = LoginBody,
    responses((status = 200, description = "Signed in", body = SignedIn), ApiErrors))]
pub async fn login(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<LoginBody>,
) -> Answer<SignedIn> {
    let (identifier, typed) = login_identifier(&body)?;
    let user = if identifier.contains('@') {
        // A username moved in from the platform may hold an `@`. Both are
        // always looked up, so the time taken tells nothing of which
        // addresses are registered.
        let (by_email, by_name) = tokio::join!(
            state.store.user_by_email(&identifier),
            state.store.user_by_username(&typed)
        );
        by_email?.or(by_name?)
    } else {
        state.store.user_by_username(&identifier).await?
    };
    let key = lock_key(user.as_ref(), &identifier);
    guard::check_password(&state, &key, user.as_ref(), &body.password).await?;
    let user = user.ok_or_else(guard::invalid_credentials)?;
    if user.disabled {
        return Err(ApiError::Forbidden {
            code: "account_disabled",
            message: "this account is disabled".into(),
        });
    }
    if !user.is_verified {
        // The password was right: the person may learn where the code went.
        return Err(ApiError::NotVerified {
            email: Some(user.email),
        });
    }
    let pair = issue_pair(&state, &user, None).await?;
    // Every sign-in tells the ledger the address is proven (accounts
    // recorded before the ledger kept that learn it here, and teams
    // waiting for the address take them in). Only that: a sign-in never
    // rewrites a role, a disabled flag or a deletion, which the admin
    // routes record before MongoDB and a sign-in could otherwise undo.
    if let Err(err) = shared::keys::store::record_proof(&state.pg, &user.id, &user.email).await {
        tracing::error!(error = %err, user_id = %user.id, "the ledger did not learn a proven address");
    }
    tracing::info!(user_id = %user.id, "logged in");
    Ok((StatusCode::OK, Json(SignedIn::new(&user, pair))))
}

/// `{refreshToken}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshBody {
    refresh_token: String,
}

/// `POST /api/auth/refresh`: rotation. Presenting a token that was already
/// rotated revokes its whole family (theft detection). The user is read
/// again, so a role change or a disabled account takes effect here.
#[utoipa::path(post, path = "/api/auth/refresh", tag = "auth", security(()),
    request_body = RefreshBody,
    responses((status = 200, description = "A new pair (the old refresh token is used up)", body = TokenPair), ApiErrors))]
pub async fn refresh(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Answer<TokenPair> {
    let claims = state.jwt.verify_refresh(&body.refresh_token)?;
    let record = match state.store.use_refresh(&body.refresh_token).await? {
        Ok(record) => record,
        Err(Some(record)) => {
            state.store.revoke_family(&record.family_id).await?;
            let user = state.store.user_by_id(&record.user_id).await?;
            if user.is_none_or(|u| u.disabled) {
                // Disabling or deleting revoked it: say why.
                return Err(disabled_or_gone());
            }
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
        return Err(disabled_or_gone());
    };
    // A token never carries an address that is not proven.
    if !user.is_verified {
        state.store.revoke_family(&record.family_id).await?;
        return Err(ApiError::NotVerified { email: None });
    }
    let (access_token, refresh_token) = issue_pair(&state, &user, Some(record.family_id)).await?;
    let pair = TokenPair {
        access_token,
        refresh_token,
        message: None,
    };
    Ok((StatusCode::OK, Json(pair)))
}

fn disabled_or_gone() -> ApiError {
    ApiError::Unauthorized {
        code: "account_disabled",
        message: "this account is disabled or gone".into(),
    }
}

/// `POST /api/auth/logout`: revokes the refresh token. An expired one is
/// already useless, so it is accepted too.
#[utoipa::path(post, path = "/api/auth/logout", tag = "auth", security(()),
    request_body = RefreshBody,
    responses((status = 200, description = "Logged out", body = MessageBody), ApiErrors))]
pub async fn logout(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<RefreshBody>,
) -> Answer<MessageBody> {
    match state.jwt.verify_refresh(&body.refresh_token) {
        Ok(_) => state.store.revoke_refresh(&body.refresh_token).await?,
        Err(err) if err.code() == "token_expired" => {}
        Err(err) => return Err(err),
    }
    done("logged out")
}

/// `POST /api/auth/logout-all` (the body is optional).
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LogoutAllBody {
    /// Revoke every API key of the account too (false when absent).
    #[serde(default)]
    revoke_keys: bool,
}

/// Ends every session of the caller, and with `revokeKeys: true` every
/// API key of theirs (the keys go first: should PostgreSQL fail, the
/// sessions are left as they were and the answer is 503).
#[utoipa::path(post, path = "/api/auth/logout-all", tag = "auth",
    request_body(content = Option<LogoutAllBody>, description = "Optional: `{revokeKeys: true}` revokes every API key too"),
    responses((status = 200, description = "Every refresh token revoked (and every API key, when asked)", body = MessageBody), ApiErrors))]
pub async fn logout_all(
    State(state): State<AppState>,
    user: AuthUser,
    body: axum::body::Bytes,
) -> Answer<MessageBody> {
    let body: LogoutAllBody = if body.iter().all(u8::is_ascii_whitespace) {
        LogoutAllBody::default()
    } else {
        shared::error::parse_json(&body)?
    };
    if body.revoke_keys {
        let doc = state
            .store
            .user_by_id(&user.id)
            .await?
            .ok_or_else(|| ApiError::not_found("this account no longer exists"))?;
        crate::accounts::record(&state, &doc, Change::RevokeKeys, &user.id).await?;
    }
    state.store.revoke_user_tokens(&user.id, None).await?;
    // Access tokens already out end too, at their next prediction.
    let version = state.store.end_sessions(&user.id).await?;
    shared::keys::store::end_sessions(&state.pg, &user.id, version).await?;
    if body.revoke_keys {
        done("every session is logged out and every API key revoked")
    } else {
        done("every session is logged out")
    }
}

/// `POST /api/auth/forgot-password`: always 200, after the same time;
/// mails a single-use reset link valid for one hour when the address
/// belongs to an enabled account (at most one reset mail per address per
/// minute).
#[utoipa::path(post, path = "/api/auth/forgot-password", tag = "auth", security(()),
    request_body = EmailBody,
    responses((status = 200, description = "The same answer whether or not the address is known", body = MessageBody), ApiErrors))]
pub async fn forgot_password(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<EmailBody>,
) -> Answer<MessageBody> {
    let email = Email::parse("email", &body.email)?;
    answer_after_floor(&state, async {
        let user = state
            .store
            .user_by_email(email.as_str())
            .await?
            .filter(|u| !u.disabled);
        let Some(user) = user else {
            return Ok(());
        };
        let every = Duration::seconds(RESEND_SECONDS);
        if !state
            .store
            .claim_mail_slot("reset", email.as_str(), every)
            .await?
        {
            return Ok(());
        }
        let token = guard::new_reset_token(&state, &user).await?;
        let mail = state.mailer.send_reset_link(&email, &user.username, &token);
        send_by(mail_deadline(&state), mail, "reset link").await;
        Ok::<_, ApiError>(())
    })
    .await?;
    done("if an account uses this address, a reset link has been sent")
}

/// `POST /api/auth/reset-password`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResetBody {
    token: String,
    #[schema(min_length = 8, max_length = 128)]
    new_password: String,
}

fn invalid_reset_token() -> ApiError {
    ApiError::BadRequest {
        code: "invalid_token",
        message: "the reset link is invalid, used or expired".into(),
    }
}

/// `POST /api/auth/reset-password`: single use, and only for the account
/// and address the link was mailed to (a link for an address that has
/// since left the account is dead). Sets the password, proves that
/// address (and nothing else), revokes every refresh token, lifts a
/// lock-out, and signs the owner in with a fresh token pair.
#[utoipa::path(post, path = "/api/auth/reset-password", tag = "auth", security(()),
    request_body = ResetBody,
    responses((status = 200, description = "Signed in with the new password", body = SignedIn), ApiErrors))]
pub async fn reset_password(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<ResetBody>,
) -> Answer<SignedIn> {
    let password = Password::parse("newPassword", &body.new_password)?;
    let used = state
        .store
        .use_reset_token(body.token.trim())
        .await?
        .ok_or_else(invalid_reset_token)?;
    let user = state
        .store
        .user_by_id(&used.user_id)
        .await?
        .filter(|u| !u.disabled && u.email == used.email)
        .ok_or_else(invalid_reset_token)?;
    // Whoever held the account may have made keys: none outlives the
    // recovery. Revoked before the password changes (should PostgreSQL
    // fail, the password stays as it was; the link is used, and another
    // is asked for), and again after it, so that a key whose password
    // check read the old password meanwhile is refused (`store::create`).
    let revoked = crate::accounts::record(&state, &user, Change::RevokeKeys, "system").await?;
    let hash = hash_password(&password).await?;
    let user = state
        .store
        .update_user(
            &user.id,
            bson::doc! {"password_hash": hash, "is_verified": true},
        )
        .await?;
    state.store.revoke_user_tokens(&user.id, None).await?;
    let again = crate::accounts::record(&state, &user, Change::RevokeKeys, "system").await;
    if let Err(err) = again {
        tracing::error!(error = %err, user_id = %user.id, "the keys were not revoked a second time after a reset");
    }
    let key = lock_key(Some(&user), "");
    state.store.clear_attempts(Attempts::Login, &key).await?;
    if let Ok(to) = Email::parse("email", &user.email) {
        let mail = state.mailer.send_reset_notice(&to, &user.username, revoked);
        send_by(mail_deadline(&state), mail, "reset notice").await;
    }
    let mut answer = SignedIn::new(&user, issue_pair(&state, &user, None).await?);
    answer.message = Some("password changed; you are signed in".into());
    Ok((StatusCode::OK, Json(answer)))
}
