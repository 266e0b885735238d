//! What a prediction must pass under the account lock before it reserves
//! (README §11): the account is not disabled, the user's rate limits
//! (predictions begun in the last 60 seconds, predictions running), and
//! the allowance of the API key it came with. Counted from the
//! reservations themselves, under the lock, so every Lambda instance sees
//! one count and concurrent requests cannot pass a limit together.

use super::accounts::Account;
use super::primitives::Tx;
use super::types::LedgerError;
use crate::config::RateLimits;
use crate::ids::UserId;
use crate::keys::KeyGrant;

/// What the counts found: how much the key may still reserve (`None`: no
/// key, or a key without a monthly limit).
pub type KeyAllowance = Option<i64>;

/// Refuses a prediction of the locked `account` that would pass a limit:
/// 403 `account_disabled`, 429 `rate_limited` (with the seconds until a
/// slot frees), else returns the key's allowance: its monthly limit minus
/// what it was charged this calendar month (UTC) and what its open
/// reservations hold. One statement, reading the last minute's rows once.
pub async fn check(
    tx: &mut Tx<'_>,
    user: &UserId,
    account: &Account,
    defaults: &RateLimits,
    key: Option<&KeyGrant>,
) -> Result<KeyAllowance, LedgerError> {
    if account.disabled {
        return Err(LedgerError::AccountDisabled);
    }
    let per_minute = account
        .rate_limit_per_minute
        .map_or(defaults.per_minute, i64::from);
    let concurrent = account
        .max_concurrent
        .map_or(defaults.concurrent, i64::from);
    let running_for = defaults.running_for.as_secs_f64();
    let row = sqlx::query!(
        r#"SELECT
             window_rows.recent AS "recent!",
             ceil(extract(epoch FROM window_rows.oldest + interval '1 minute' - now()))::bigint
               AS frees_in,
             (SELECT count(*) FROM streaming_sessions
               WHERE user_id = $1 AND origin = 'gateway' AND status = 'active'
                 AND created_at > now() - make_interval(secs => $2))
               AS "running!",
             (SELECT COALESCE(SUM(CASE WHEN status = 'active' THEN reserved_credits
                                       ELSE charged_credits END), 0)::bigint
                FROM streaming_sessions
               WHERE api_key_id = $3
                 AND (status = 'active'
                      OR created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'))
               AS "key_spent!"
           FROM (SELECT count(*) AS recent, min(created_at) AS oldest
                   FROM streaming_sessions
                  WHERE user_id = $1 AND origin = 'gateway'
                    AND created_at > now() - interval '1 minute') AS window_rows"#,
        user.as_str(),
        running_for,
        key.map(|k| k.id),
    )
    .fetch_one(&mut **tx)
    .await?;
    if row.recent >= per_minute {
        return Err(LedgerError::RateLimited {
            message: format!("at most {per_minute} predictions a minute; wait for one to age out"),
            retry_after: row.frees_in.unwrap_or(1).clamp(1, 60) as u64,
        });
    }
    if row.running >= concurrent {
        return Err(LedgerError::RateLimited {
            message: format!(
                "at most {concurrent} predictions at once; wait for one of yours to finish"
            ),
            retry_after: 1,
        });
    }
    Ok(key
        .and_then(|k| k.monthly_credit_limit)
        .map(|limit| (limit - row.key_spent).max(0)))
}

/// What the API key `key` may still spend this calendar month (UTC): its
/// monthly limit minus what it was charged by reservations made this
/// month and what its open reservations hold; `None` for a key without a
/// limit. Read under the account lock of the key's user, so no other
/// reservation of the key changes meanwhile.
pub async fn key_allowance(tx: &mut Tx<'_>, key: uuid::Uuid) -> Result<Option<i64>, LedgerError> {
    let row = sqlx::query!(
        r#"SELECT k.monthly_credit_limit,
                  (SELECT COALESCE(SUM(CASE WHEN status = 'active' THEN reserved_credits
                                            ELSE charged_credits END), 0)::bigint
                     FROM streaming_sessions
                    WHERE api_key_id = k.id
                      AND (status = 'active'
                           OR created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'))
                    AS "spent!"
             FROM api_keys k WHERE k.id = $1"#,
        key
    )
    .fetch_optional(&mut **tx)
    .await?;
    Ok(row.and_then(|r| r.monthly_credit_limit.map(|limit| (limit - r.spent).max(0))))
}

/// `user`'s own limits (per minute, at once): `None` where the default
/// applies, or for a user the ledger has not seen.
pub async fn user_limits(
    conn: &mut sqlx::PgConnection,
    user: &UserId,
) -> Result<(Option<i32>, Option<i32>), LedgerError> {
    let row = sqlx::query!(
        "SELECT rate_limit_per_minute, max_concurrent FROM user_accounts WHERE user_id = $1",
        user.as_str()
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map_or((None, None), |r| {
        (r.rate_limit_per_minute, r.max_concurrent)
    }))
}

/// Sets (or, with `None`, clears) `user`'s own limits; creates the account
/// when the ledger has not seen the user. Returns what is stored.
pub async fn set_user_limits(
    conn: &mut sqlx::PgConnection,
    user: &UserId,
    per_minute: Option<i32>,
    concurrent: Option<i32>,
) -> Result<(Option<i32>, Option<i32>), LedgerError> {
    let row = sqlx::query!(
        "INSERT INTO user_accounts (user_id, rate_limit_per_minute, max_concurrent)
         VALUES ($1, $2, $3)
         ON CONFLICT (user_id) DO UPDATE
            SET rate_limit_per_minute = EXCLUDED.rate_limit_per_minute,
                max_concurrent = EXCLUDED.max_concurrent, updated_at = now()
         RETURNING rate_limit_per_minute, max_concurrent",
        user.as_str(),
        per_minute,
        concurrent
    )
    .fetch_one(conn)
    .await?;
    Ok((row.rate_limit_per_minute, row.max_concurrent))
}
