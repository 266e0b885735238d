//! What keeps sign-in and the mail flows from being abused: password
//! checks counted against the lock-out *before* they are made (so
//! concurrent guesses cannot slip past the limit), the lock mail, and the
//! answer floor that makes known and unknown addresses answer alike.

use std::future::Future;
use std::time::Duration as StdDuration;

use chrono::{Duration, Utc};
use shared::identity::Email;
use shared::ApiError;
use tokio::time::Instant;

use crate::password::{equalise_timing, hash_text, needs_rehash, verify_password};
use crate::store::{Attempts, CodePurpose, UserDoc};
use crate::AppState;

/// Failed passwords that lock an account, and the window they count in.
pub const LOCKOUT_FAILURES: usize = 5;
/// The window failures count in, and how long a lock lasts (15 minutes).
pub const LOCKOUT_MINUTES: i64 = 15;
/// How long a reset link is valid.
pub const RESET_MINUTES: i64 = 60;

/// The lock-out key of an account, or of a name that matches none (so a
/// lock says nothing about which accounts exist).
pub fn lock_key(user: Option<&UserDoc>, identifier: &str) -> String {
    match user {
        Some(u) => format!("user:{}", u.id),
        None => format!("name:{}", identifier.to_lowercase()),
    }
}

fn locked(until: chrono::DateTime<Utc>) -> ApiError {
    let seconds = (until - Utc::now()).num_seconds().max(1) as u64;
    ApiError::TooManyRequests {
        code: "account_locked",
        message: format!("too many failed sign-ins; try again in {LOCKOUT_MINUTES} minutes"),
        retry_after: Some(seconds),
    }
}

/// 401 `invalid_credentials`.
pub fn invalid_credentials() -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_credentials",
        message: "the username/email or password is wrong".into(),
    }
}

/// Checks `password` for the account behind `key` (`user` is `None` for a
/// name that matches no account: the same work is done and it fails).
/// The attempt is counted first, atomically: once [`LOCKOUT_FAILURES`]
/// attempts are in the window, every further one is 429 without being
/// checked, however many arrive at once. The failure that reaches the
/// limit locks the key, and the owner is mailed (once per lock). A success
/// forgets the count.
pub async fn check_password(
    state: &AppState,
    key: &str,
    user: Option<&UserDoc>,
    password: &str,
) -> Result<(), ApiError> {
    let window = Duration::minutes(LOCKOUT_MINUTES);
    let attempt = state
        .store
        .count_attempt(Attempts::Login, key, window, LOCKOUT_FAILURES + 1)
        .await?;
    // The lock is read in the same operation that counted, so an attempt
    // counted after a lock (which resets the count) still sees it.
    if let Some(until) = attempt.locked_until {
        return Err(locked(until));
    }
    let count = attempt.count;
    if count > LOCKOUT_FAILURES {
        return Err(locked(Utc::now() + window));
    }
    let matches = match user {
        Some(u) if password.chars().count() <= LONGEST_PASSWORD => {
            verify_password(password, &u.password_hash).await
        }
        _ => {
            equalise_timing().await;
            false
        }
    };
    if matches {
        state.store.clear_attempts(Attempts::Login, key).await?;
        if let Some(u) = user.filter(|u| needs_rehash(&u.password_hash)) {
            rehash(state, u, password).await;
        }
        return Ok(());
    }
    if count == LOCKOUT_FAILURES {
        // Known or not, the locking answer comes after the same floor,
        // although only an owner is mailed.
        answer_after_floor(state, lock_out(state, key, user, window)).await?;
    }
    Err(invalid_credentials())
}

/// Replaces a platform's bcrypt hash, just proven, by argon2id. A failure
/// is logged and leaves the sign-in as it was (the next one tries again).
async fn rehash(state: &AppState, user: &UserDoc, password: &str) {
    let replaced = match hash_text(password).await {
        Ok(argon) => {
            state
                .store
                .replace_hash(&user.id, &user.password_hash, &argon)
                .await
        }
        Err(err) => Err(err),
    };
    match replaced {
        Ok(true) => {
            tracing::info!(user_id = %user.id, "a platform password hash replaced by argon2id")
        }
        Ok(false) => {
            tracing::info!(user_id = %user.id, "a platform password hash changed meanwhile")
        }
        Err(err) => {
            tracing::warn!(user_id = %user.id, error = %err, "a platform password hash was not replaced")
        }
    }
}

/// The longest password checked: passwords set here have at most 128
/// characters, but the platform's had no bound (bcrypt reads 72 bytes of
/// them, argon2id, which replaces it at the first sign-in, all of them).
const LONGEST_PASSWORD: usize = 1024;

async fn lock_out(
    state: &AppState,
    key: &str,
    user: Option<&UserDoc>,
    window: Duration,
) -> Result<(), ApiError> {
    if !state.store.lock(key, window).await? {
        return Ok(());
    }
    tracing::warn!(lock = %key.split(':').next().unwrap_or(""), "sign-in locked after repeated failures");
    let Some(user) = user else {
        return Ok(());
    };
    let token = new_reset_token(state, user).await?;
    // An address the platform took without checking it may not be one
    // mail can go to: the lock holds, unannounced.
    let Ok(email) = Email::parse("email", &user.email) else {
        return Ok(());
    };
    let mail = state
        .mailer
        .send_lock_notice(&email, &user.username, &token, LOCKOUT_MINUTES);
    send_by(mail_deadline(state), mail, "lock notice").await;
    Ok(())
}

/// A fresh single-use reset token for `user`'s current address, stored
/// hashed (it replaces the account's earlier one).
pub async fn new_reset_token(state: &AppState, user: &UserDoc) -> Result<String, ApiError> {
    use base64::Engine;
    let token = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(shared::digest::random_bytes::<32>());
    state
        .store
        .new_code(
            CodePurpose::Reset,
            &user.email,
            &user.id,
            &token,
            Duration::minutes(RESET_MINUTES),
        )
        .await?;
    Ok(token)
}

/// Runs `work` and answers no sooner than `MAIL_ANSWER_FLOOR_MS` after it
/// began, so a route answers after the same time whether or not it
/// mailed anyone (the mails inside are bounded by [`mail_deadline`]).
pub async fn answer_after_floor<T>(state: &AppState, work: impl Future<Output = T>) -> T {
    let until = Instant::now() + state.mail_floor;
    let out = work.await;
    tokio::time::sleep_until(until).await;
    out
}

/// When a mail sent now must have gone for its answer to keep the floor.
pub fn mail_deadline(state: &AppState) -> Instant {
    Instant::now()
        + state
            .mail_floor
            .saturating_sub(StdDuration::from_millis(50))
}

/// Sends a mail inside the request, giving up at `deadline` (nothing may
/// run after a Lambda's response); a failure is logged, never returned.
pub async fn send_by(
    deadline: Instant,
    mail: impl Future<Output = anyhow::Result<()>>,
    what: &'static str,
) {
    match tokio::time::timeout_at(deadline, mail).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(mail = what, error = %format!("{err:#}"), "mail not sent"),
        Err(_) => tracing::warn!(mail = what, "mail not sent in time"),
    }
}
