//! `api_keys` in PostgreSQL: creating keys under the account lock, finding
//! one for a request, listing and revoking them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{NewKey, KEY_PREFIX};
use crate::error::ApiError;
use crate::ids::UserId;
use crate::ledger::accounts::lock_from_claims;
use crate::ledger::Tx;
use crate::token::AuthUser;

/// The most live (neither revoked nor expired) keys a user holds.
pub const MAX_LIVE_KEYS: i64 = 20;

/// Days a key lives unless its owner chose 1 to 365: no key lives forever.
pub const DEFAULT_KEY_DAYS: i32 = 90;

/// How long before a key expires its owner is mailed.
pub const EXPIRY_WARNING_DAYS: i32 = 7;

/// A key's row as a request made with it reads it, with its user's state.
pub(super) struct Found {
    pub id: Uuid,
    pub user_id: String,
    pub secret_hash: Vec<u8>,
    pub chatflows: Option<Vec<String>>,
    pub monthly_credit_limit: Option<i64>,
    pub username: Option<String>,
    pub email: Option<String>,
    revoked: bool,
    expired: bool,
    account_disabled: bool,
    /// Its last use was recorded over a minute ago (or never).
    pub stale_use: bool,
}

impl Found {
    /// Why the key no longer works (the 401's code and message), if it
    /// does not.
    pub fn refusal(&self) -> Option<(&'static str, &'static str)> {
        if self.revoked {
            Some(("key_revoked", "the API key has been revoked"))
        } else if self.account_disabled {
            Some((
                "account_disabled",
                "the account of this API key is disabled",
            ))
        } else if self.expired {
            Some(("key_expired", "the API key has expired"))
        } else {
            None
        }
    }
}

/// The key whose public id is `public_id`, with its user's state.
pub(super) async fn find(
    conn: &mut PgConnection,
    public_id: &str,
) -> Result<Option<Found>, sqlx::Error> {
    sqlx::query_as!(
        Found,
        r#"SELECT k.id, k.user_id, k.secret_hash, k.chatflows, k.monthly_credit_limit,
                  a.username, a.email,
                  k.revoked_at IS NOT NULL AS "revoked!",
                  (k.expires_at IS NOT NULL AND k.expires_at <= now()) AS "expired!",
                  (a.disabled OR a.deleted_at IS NOT NULL) AS "account_disabled!",
                  (k.last_used_at IS NULL OR k.last_used_at < now() - interval '1 minute') AS "stale_use!"
             FROM api_keys k JOIN user_accounts a ON a.user_id = k.user_id
            WHERE k.public_id = $1"#,
        public_id
    )
    .fetch_optional(conn)
    .await
}

/// Records that key `id` was used now.
pub(super) async fn touch(conn: &mut PgConnection, id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query!("UPDATE api_keys SET last_used_at = now() WHERE id = $1", id)
        .execute(conn)
        .await?;
    Ok(())
}

/// What `POST /api/keys` asks for, checked.
#[derive(Debug, Clone)]
pub struct KeySpec {
    /// 1 to 100 characters.
    pub name: String,
    /// 1 to 365.
    pub expires_in_days: i32,
    /// 1 to 100 chatflow ids, without repeats (`None`: all).
    pub chatflows: Option<Vec<String>>,
    /// Above 0 (`None`: no limit).
    pub monthly_credit_limit: Option<i64>,
}

/// A key as its owner and admins see it (never its secret).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeyView {
    /// The key's id.
    pub id: Uuid,
    /// Its owner.
    pub user_id: String,
    /// `fgw_` and the public id: how to tell the key in a list.
    pub prefix: String,
    /// Its name.
    pub name: String,
    /// `active`, `revoked` or `expired`.
    #[schema(value_type = crate::openapi::KeyStatus)]
    pub status: String,
    /// The chatflows it may use (`null`: every one its user may use).
    pub chatflows: Option<Vec<String>>,
    /// Credits it may spend a calendar month, UTC (`null`: no limit).
    pub monthly_credit_limit: Option<i64>,
    /// Credits its predictions were charged this calendar month (UTC).
    pub credits_this_month: i64,
    /// When it stops working (`null` only for a key made before every key
    /// expired, until the scheduled job gives it 90 days).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was last used, to the minute.
    pub last_used_at: Option<DateTime<Utc>>,
    /// When it was revoked.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// A key just made: the only answer that carries its secret.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedKey {
    /// The key's id.
    pub id: Uuid,
    /// The whole key: shown this once, never stored.
    pub key: String,
    /// `fgw_` and the public id.
    pub prefix: String,
    /// Its name.
    pub name: String,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// The chatflows it may use (`null`: all).
    pub chatflows: Option<Vec<String>>,
    /// Credits it may spend a calendar month (`null`: no limit).
    pub monthly_credit_limit: Option<i64>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
}

/// The user's live keys, counted under the account lock: 409
/// `credentials_changed` when their keys were revoked at or after
/// `checked_since` (see [`create`]).
async fn live_keys_unless_revoked(
    tx: &mut Tx<'_>,
    user: &AuthUser,
    checked_since: Option<DateTime<Utc>>,
) -> Result<i64, ApiError> {
    let found = sqlx::query!(
        r#"SELECT (SELECT count(*) FROM api_keys
                    WHERE user_id = $1 AND revoked_at IS NULL
                      AND (expires_at IS NULL OR expires_at > now())) AS "live!",
                  (SELECT keys_revoked_at >= $2 FROM user_accounts WHERE user_id = $1)
                    AS "revoked_since""#,
        user.id,
        checked_since,
    )
    .fetch_one(&mut **tx)
    .await?;
    if found.revoked_since == Some(true) {
        return Err(ApiError::Conflict {
            code: "credentials_changed",
            message: "your keys were revoked (a password reset, or signing out everywhere) \
                      while this one was being made; sign in again to make one"
                .into(),
        });
    }
    Ok(found.live)
}

/// Makes a key for `user` (who signed in with a token, and proved their
/// password from `checked_since` on, the database's time before the
/// password was read). Under the account lock: 403 when the account is
/// disabled, 409 `credentials_changed` when the user's keys were revoked
/// since (a reset racing the request: the key would outlive it), 409
/// `too_many_keys` at [`MAX_LIVE_KEYS`] live keys, so concurrent requests
/// cannot pass it.
pub async fn create(
    tx: &mut Tx<'_>,
    user: &AuthUser,
    spec: KeySpec,
    checked_since: Option<DateTime<Utc>>,
) -> Result<CreatedKey, ApiError> {
    let account = lock_from_claims(tx, user).await?;
    if account.disabled {
        return Err(ApiError::Forbidden {
            code: "account_disabled",
            message: "a disabled account cannot make API keys".into(),
        });
    }
    let live = live_keys_unless_revoked(tx, user, checked_since).await?;
    if live >= MAX_LIVE_KEYS {
        return Err(ApiError::Conflict {
            code: "too_many_keys",
            message: format!(
                "you already have {MAX_LIVE_KEYS} live API keys; revoke one before making another"
            ),
        });
    }
    let (id, new) = (Uuid::now_v7(), NewKey::generate());
    let row = sqlx::query!(
        r#"INSERT INTO api_keys (id, user_id, public_id, secret_hash, name, chatflows,
                                 monthly_credit_limit, expires_at)
           VALUES ($1, $2, $3, $4, $5, $6, $7, now() + make_interval(days => $8))
           RETURNING expires_at AS "expires_at!", created_at"#,
        id,
        user.id,
        new.public_id,
        &new.hash[..],
        spec.name,
        spec.chatflows.as_deref(),
        spec.monthly_credit_limit,
        spec.expires_in_days,
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(CreatedKey {
        id,
        prefix: format!("{KEY_PREFIX}{}", new.public_id),
        key: new.key,
        name: spec.name,
        expires_at: row.expires_at,
        chatflows: spec.chatflows,
        monthly_credit_limit: spec.monthly_credit_limit,
        created_at: row.created_at,
    })
}

/// A page of keys: `user`'s, or everyone's when `None`; newest first.
pub async fn list(
    conn: &mut PgConnection,
    user: Option<&UserId>,
    (page, limit): (i64, i64),
) -> Result<(Vec<KeyView>, i64), ApiError> {
    let user = user.map(UserId::as_str);
    let keys = sqlx::query_as!(
        KeyView,
        r#"SELECT k.id, k.user_id, 'fgw_' || k.public_id AS "prefix!", k.name,
                  CASE WHEN k.revoked_at IS NOT NULL THEN 'revoked'
                       WHEN k.expires_at <= now() THEN 'expired'
                       ELSE 'active' END AS "status!",
                  k.chatflows, k.monthly_credit_limit,
                  COALESCE((SELECT SUM(s.charged_credits) FROM streaming_sessions s
                             WHERE s.api_key_id = k.id AND s.status <> 'active'
                               AND s.created_at >= date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'),
                           0)::bigint AS "credits_this_month!",
                  k.expires_at, k.last_used_at, k.revoked_at, k.created_at
             FROM api_keys k
            WHERE ($1::text IS NULL OR k.user_id = $1)
            ORDER BY k.created_at DESC, k.id DESC
            LIMIT $2 OFFSET $3"#,
        user,
        limit,
        (page - 1) * limit
    )
    .fetch_all(&mut *conn)
    .await?;
    let total = sqlx::query_scalar!(
        r#"SELECT count(*) AS "n!" FROM api_keys WHERE ($1::text IS NULL OR user_id = $1)"#,
        user
    )
    .fetch_one(conn)
    .await?;
    Ok((keys, total))
}

/// Revokes key `id`, when it is `owner`'s (any user's when `None`), on
/// behalf of `actor`. Revoking a revoked key changes nothing. 404 when
/// there is no such key (or it is someone else's).
pub async fn revoke(
    conn: &mut PgConnection,
    id: Uuid,
    owner: Option<&UserId>,
    actor: &str,
) -> Result<(), ApiError> {
    let found = sqlx::query!(
        "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, now()),
                             revoked_by = COALESCE(revoked_by, $3)
          WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)",
        id,
        owner.map(UserId::as_str),
        actor
    )
    .execute(conn)
    .await?
    .rows_affected();
    if found == 0 {
        return Err(ApiError::not_found("no such API key"));
    }
    tracing::info!(key = %id, "API key revoked");
    Ok(())
}

/// Records that `user` signed out everywhere: the session version
/// `version` (never lowered), so the ledger refuses access tokens issued
/// under an older one ([`crate::ledger::accounts::lock_from_claims`]).
pub async fn end_sessions(pool: &sqlx::PgPool, user: &str, version: i64) -> Result<(), ApiError> {
    sqlx::query!(
        "INSERT INTO user_accounts (user_id, session_version) VALUES ($1, $2)
         ON CONFLICT (user_id) DO UPDATE
            SET session_version = GREATEST(user_accounts.session_version, EXCLUDED.session_version),
                updated_at = now()",
        user,
        version
    )
    .execute(pool)
    .await?;
    Ok(())
}

/// Revokes every live key of `user` (in the caller's transaction), and
/// keeps the time on the user's record, so that a key whose password check
/// began before it is never made ([`create`]); returns how many.
pub async fn revoke_all(tx: &mut Tx<'_>, user: &str, actor: &str) -> Result<u64, sqlx::Error> {
    sqlx::query!(
        "UPDATE user_accounts SET keys_revoked_at = now() WHERE user_id = $1",
        user
    )
    .execute(&mut **tx)
    .await?;
    Ok(sqlx::query!(
        "UPDATE api_keys SET revoked_at = now(), revoked_by = $2
          WHERE user_id = $1 AND revoked_at IS NULL",
        user,
        actor
    )
    .execute(&mut **tx)
    .await?
    .rows_affected())
}

/// The database's time now: what a key's password check is measured from
/// (the functions' clocks and the database's may differ).
pub async fn database_now(pool: &sqlx::PgPool) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar!(r#"SELECT clock_timestamp() AS "now!""#)
        .fetch_one(pool)
        .await
}

/// A key about to expire, as its owner's warning names it.
#[derive(Debug, Clone)]
pub struct Expiring {
    /// Its name.
    pub name: String,
    /// `fgw_` and its public id.
    pub prefix: String,
    /// The chatflows it may use.
    pub chatflows: Option<Vec<String>>,
    /// Credits it may spend a month.
    pub monthly_credit_limit: Option<i64>,
    /// When it stops working.
    pub expires_at: DateTime<Utc>,
    /// Its owner's name and address, as the ledger last heard them.
    pub username: Option<String>,
    /// The owner's proven address.
    pub email: Option<String>,
}

/// Claims the warnings due: live keys that expire within
/// [`EXPIRY_WARNING_DAYS`] and whose owner was not warned yet, `batch` at
/// most, each marked warned in the same statement (so a warning goes out
/// once, even from two runs at once; one whose mail then fails is logged,
/// not repeated). A key made without an expiry by an older deploy is given
/// [`DEFAULT_KEY_DAYS`] first.
pub async fn claim_expiry_warnings(
    conn: &mut PgConnection,
    batch: i64,
) -> Result<Vec<Expiring>, sqlx::Error> {
    sqlx::query!(
        "UPDATE api_keys SET expires_at = GREATEST(now(), created_at) + make_interval(days => $1)
          WHERE expires_at IS NULL",
        DEFAULT_KEY_DAYS
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query_as!(
        Expiring,
        r#"WITH due AS (
               SELECT id FROM api_keys
                WHERE revoked_at IS NULL AND expiry_warned_at IS NULL AND expires_at > now()
                  AND expires_at <= now() + make_interval(days => $1)
                ORDER BY expires_at LIMIT $2 FOR UPDATE SKIP LOCKED
           )
           UPDATE api_keys k SET expiry_warned_at = now()
             FROM due, user_accounts a
            WHERE k.id = due.id AND a.user_id = k.user_id
        RETURNING k.name, 'fgw_' || k.public_id AS "prefix!", k.chatflows,
                  k.monthly_credit_limit, k.expires_at AS "expires_at!", a.username, a.email"#,
        EXPIRY_WARNING_DAYS,
        batch
    )
    .fetch_all(conn)
    .await
}

/// A sign-in's word to the ledger: `user` has proven `email` (a live,
/// recorded account only; nothing else of it changes). When that is news,
/// teams waiting for the address take them in, in the same transaction.
pub async fn record_proof(
    pool: &sqlx::PgPool,
    user: &str,
    email: &str,
) -> Result<(), crate::ledger::LedgerError> {
    use crate::ledger::primitives::{begin, commit};
    let mut tx = begin(pool, crate::ledger::Durability::Flushed).await?;
    let news = sqlx::query!(
        "UPDATE user_accounts SET email = $2, email_verified = true, updated_at = now()
          WHERE user_id = $1 AND owner_kind = 'user' AND deleted_at IS NULL
            AND (NOT email_verified OR email IS DISTINCT FROM $2)",
        user,
        email
    )
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if news == 1 {
        crate::teams::join_pending(&mut tx, user, email).await?;
    }
    commit(tx).await
}

/// A user as the auth function knows them, for [`sync_account`].
#[derive(Debug, Clone, Copy)]
pub struct AccountRecord<'a> {
    /// User id.
    pub user_id: &'a str,
    /// Username.
    pub username: &'a str,
    /// Email.
    pub email: &'a str,
    /// Role.
    pub role: crate::token::Role,
    /// Disabled.
    pub disabled: bool,
    /// Deleted.
    pub deleted: bool,
    /// Whether `email` is proven.
    pub verified: bool,
    /// The console's language (mail follows it).
    pub locale: &'a str,
}

/// The auth function's write (README §11): records `record` in the
/// account (from now on the auth function keeps it current), and, when
/// `revoke_keys`, revokes the user's live API keys, in one transaction
/// under the account lock (so a key being made meanwhile is either
/// revoked here or refused for the disabled account). In the same
/// transaction (README "Teams"): a proven address joins the teams that
/// were waiting for it, and a deleted user's unspent team credits go
/// back to their teams' wallets. Returns how many keys it revoked.
pub async fn sync_account(
    pool: &sqlx::PgPool,
    record: AccountRecord<'_>,
    revoke_keys: bool,
    actor: &str,
) -> Result<u64, crate::ledger::LedgerError> {
    use crate::ledger::primitives::{begin, commit};
    let mut tx = begin(pool, crate::ledger::Durability::Flushed).await?;
    sqlx::query!(
        "INSERT INTO user_accounts AS a
             (user_id, username, email, role, disabled, deleted_at, synced_at, email_verified, locale)
         VALUES ($1, $2, $3, $4, $5, CASE WHEN $6 THEN now() END, now(), $7,
                 CASE WHEN $8 IN ('en', 'zh-CN', 'zh-TW') THEN $8 ELSE 'en' END)
         ON CONFLICT (user_id) DO UPDATE
            SET username = EXCLUDED.username, email = EXCLUDED.email, role = EXCLUDED.role,
                disabled = EXCLUDED.disabled,
                deleted_at = CASE WHEN $6 THEN COALESCE(a.deleted_at, now()) ELSE a.deleted_at END,
                email_verified = EXCLUDED.email_verified, locale = EXCLUDED.locale,
                synced_at = now(), updated_at = now()",
        record.user_id,
        record.username,
        record.email,
        record.role.as_str(),
        record.disabled,
        record.deleted,
        record.verified,
        record.locale,
    )
    .execute(&mut *tx)
    .await?;
    let user = crate::ids::UserId::stored(record.user_id.to_owned());
    if record.deleted {
        // The account's lock, so a transfer to it waits and then sees it
        // deleted (README "Teams").
        crate::ledger::primitives::lock_account(&mut tx, &user).await?;
        let meta = crate::ledger::EntryMeta {
            actor_id: Some(actor),
            description: Some("member deleted"),
            ..Default::default()
        };
        crate::ledger::transfers::return_all(&mut tx, &user, &meta).await?;
        // Gone from every team: nobody gives a closed account credits.
        sqlx::query!(
            "UPDATE team_members SET left_at = clock_timestamp()
              WHERE user_id = $1 AND left_at IS NULL",
            record.user_id
        )
        .execute(&mut *tx)
        .await?;
    } else if record.verified {
        crate::teams::join_pending(&mut tx, record.user_id, record.email).await?;
    }
    let revoked = if revoke_keys {
        revoke_all(&mut tx, record.user_id, actor).await?
    } else {
        0
    };
    commit(tx).await?;
    Ok(revoked)
}
