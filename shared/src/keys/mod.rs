//! API keys (README §11): what a program uses instead of a password and a
//! 15-minute token.
//!
//! A key is `fgw_<12 base62>_<43 base62>`: a public id that finds its row,
//! then 43 characters drawn uniformly from 62 (more than 256 random bits).
//! Only the SHA-256 of the whole key is stored, and the comparison is
//! constant-time. A key acts as its user with the role capped at
//! `enduser`, and only where a program needs it: the routes whose handlers
//! take [`UserOrKey`]. Everywhere else [`crate::token::AuthUser`] answers a
//! key with 403 `key_not_allowed`.
//!
//! Every request made with a key reads its row and its user's account in
//! PostgreSQL: nothing is cached, so a revocation (or a disabled, deleted
//! or demoted user, whose keys the auth function revokes first) is 401 on
//! the very next request.

pub mod store;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::token::{bearer_token, AuthUser, JwtKeys, Role};
pub use crate::token::{key_not_allowed, looks_like_key, KeyGrant, KEY_PREFIX};

/// Characters of the public id.
pub const PUBLIC_ID_LEN: usize = 12;
/// Characters of the secret: 43 × log2(62) ≈ 256.03 bits.
pub const SECRET_LEN: usize = 43;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// `n` characters drawn uniformly from [`BASE62`] (bytes of 248 and more
/// are dropped, so that `b % 62` favours no character).
fn base62(n: usize) -> String {
    let mut out = String::with_capacity(n);
    while out.len() < n {
        for b in crate::digest::random_bytes::<64>() {
            if b < 248 && out.len() < n {
                out.push(BASE62[usize::from(b % 62)] as char);
            }
        }
    }
    out
}

/// A key as created: shown to its owner once, then only its hash is kept.
pub struct NewKey {
    /// The whole key.
    pub key: String,
    /// The public id (after `fgw_`).
    pub public_id: String,
    /// SHA-256 of the whole key.
    pub hash: [u8; 32],
}

impl NewKey {
    /// A fresh random key.
    pub fn generate() -> NewKey {
        let public_id = base62(PUBLIC_ID_LEN);
        let key = format!("{KEY_PREFIX}{public_id}_{}", base62(SECRET_LEN));
        NewKey {
            hash: hash(&key),
            key,
            public_id,
        }
    }
}

impl std::fmt::Debug for NewKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NewKey({KEY_PREFIX}{}_***)", self.public_id)
    }
}

fn hash(key: &str) -> [u8; 32] {
    use sha2::{Digest, Sha256};
    Sha256::digest(key.as_bytes()).into()
}

/// The public id of a well-formed key; `None` for anything else.
pub fn public_id(key: &str) -> Option<&str> {
    let rest = key.strip_prefix(KEY_PREFIX)?;
    let (id, secret) = rest.split_once('_')?;
    let base62 = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_alphanumeric());
    (base62(id, PUBLIC_ID_LEN) && base62(secret, SECRET_LEN)).then_some(id)
}

/// Whether `key` hashes to `stored`, in constant time.
fn matches(key: &str, stored: &[u8]) -> bool {
    bool::from(hash(key).as_slice().ct_eq(stored))
}

/// The chatflows `user` is limited to, when they came with a key that
/// has a list: the history they see is only these chatflows'.
pub fn chatflow_scope(user: &AuthUser) -> Option<&[String]> {
    user.key.as_ref().and_then(|k| k.chatflows.as_deref())
}

/// 403 unless `user` (when acting through a key) may use `chatflow`.
pub fn require_chatflow(user: &AuthUser, chatflow: &str) -> Result<(), ApiError> {
    match &user.key {
        Some(grant) if !grant.allows(chatflow) => Err(ApiError::Forbidden {
            code: "key_chatflow_not_allowed",
            message: "this API key may not use this chatflow".into(),
        }),
        _ => Ok(()),
    }
}

fn invalid_key(message: &str) -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_key",
        message: message.into(),
    }
}

/// The caller of a route open to programs: a verified access token, or a
/// live API key (its user, role capped at `enduser`, with the key's
/// [`KeyGrant`]).
#[derive(Debug, Clone)]
pub struct UserOrKey(pub AuthUser);

impl<S> FromRequestParts<S> for UserOrKey
where
    JwtKeys: FromRef<S>,
    sqlx::PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let bearer = bearer_token(parts)?;
        if !looks_like_key(bearer) {
            return AuthUser::from_request_parts(parts, state)
                .await
                .map(UserOrKey);
        }
        let pool = sqlx::PgPool::from_ref(state);
        let user = authenticate(&pool, bearer).await?;
        tracing::Span::current().record("user_id", user.id.as_str());
        Ok(UserOrKey(user))
    }
}

/// The user a key acts as: 401 `invalid_key` unless it is well formed,
/// known and its hash matches; 401 `key_revoked`, `key_expired` or
/// `account_disabled` when it no longer works. Records its use (to the
/// minute).
pub async fn authenticate(pool: &sqlx::PgPool, key: &str) -> Result<AuthUser, ApiError> {
    let unknown = || invalid_key("the API key is not valid");
    let public = public_id(key).ok_or_else(unknown)?;
    let mut conn = pool.acquire().await?;
    let Some(found) = store::find(&mut conn, public).await? else {
        // The same work as for a known key, so timing tells nothing.
        let _ = matches(key, &[0u8; 32]);
        return Err(unknown());
    };
    if !matches(key, &found.secret_hash) {
        return Err(unknown());
    }
    if let Some((code, message)) = found.refusal() {
        return Err(ApiError::Unauthorized {
            code,
            message: message.into(),
        });
    }
    if found.stale_use {
        store::touch(&mut conn, found.id).await?;
    }
    Ok(AuthUser {
        id: found.user_id,
        username: found.username.unwrap_or_default(),
        email: found.email.unwrap_or_default(),
        role: Role::Enduser,
        key: Some(KeyGrant {
            id: found.id,
            chatflows: found.chatflows,
            monthly_credit_limit: found.monthly_credit_limit,
        }),
        session_version: 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn a_generated_key_has_the_documented_shape_and_hash() {
        let k = NewKey::generate();
        assert_eq!(k.key.len(), 4 + 12 + 1 + 43);
        assert_eq!(public_id(&k.key), Some(k.public_id.as_str()));
        assert!(matches(&k.key, &k.hash));
        assert!(!format!("{k:?}").contains(&k.key[17..]));
        let other = NewKey::generate();
        assert_ne!(k.key, other.key);
        assert!(!matches(&other.key, &k.hash));
    }

    #[test]
    fn only_well_formed_keys_have_a_public_id() {
        let good = format!("fgw_{}_{}", "a".repeat(12), "B".repeat(43));
        assert_eq!(public_id(&good), Some("aaaaaaaaaaaa"));
        for bad in [
            "fgw_",
            "fgw_aaaaaaaaaaaa",
            &format!("fgw_{}_{}", "a".repeat(11), "B".repeat(43)),
            &format!("fgw_{}_{}", "a".repeat(12), "B".repeat(42)),
            &format!("fgw_{}_{}x", "a".repeat(12), "B".repeat(43)),
            &format!("fgw_{}-{}", "a".repeat(12), "B".repeat(43)),
            &format!("fgw_{}_{}", "a".repeat(12), "é".repeat(43)),
            &format!("xyz_{}_{}", "a".repeat(12), "B".repeat(43)),
        ] {
            assert_eq!(public_id(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_secret_characters_are_uniform_over_base62() {
        let sample = base62(62 * 400);
        let mut counts = [0usize; 62];
        for b in sample.bytes() {
            counts[BASE62.iter().position(|c| *c == b).unwrap()] += 1;
        }
        // Each character is expected 400 times; a biased `% 62` would give
        // the first 8 about 5% more.
        assert!(
            counts.iter().all(|&n| (300..500).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn a_grant_narrows_the_chatflows() {
        let all = KeyGrant {
            id: Uuid::nil(),
            chatflows: None,
            monthly_credit_limit: None,
        };
        assert!(all.allows("any"));
        let one = KeyGrant {
            chatflows: Some(vec!["a".into()]),
            ..all
        };
        assert!(one.allows("a") && !one.allows("b"));
    }
}
