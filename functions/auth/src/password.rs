//! Password hashing with argon2id (PHC strings), off the async threads.
//!
//! Accounts moved in from the platform (`gateway-admin import-platform`)
//! arrive with its bcrypt hashes (`$2a$`, `$2b$`, `$2y$`, cost 10, made by
//! bcryptjs). They verify as bcryptjs did (only the first 72 bytes of the
//! password count), and the first sign-in that proves one replaces it with
//! argon2id ([`needs_rehash`]), so no bcrypt hash outlives its owner's
//! first sign-in here.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use shared::identity::Password;
use shared::ApiError;

/// Hashes a password (argon2id, the crate's recommended parameters:
/// 19 MiB, 2 passes, 1 lane) into a PHC string.
pub async fn hash_password(password: &Password) -> Result<String, ApiError> {
    hash_text(password.expose()).await
}

/// [`hash_password`] of a password already proven against its old hash
/// (whatever its length: the platform set no upper bound).
pub async fn hash_text(password: &str) -> Result<String, ApiError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut salt = [0u8; 16];
        getrandom::fill(&mut salt).map_err(|e| anyhow::anyhow!("no randomness: {e}"))?;
        let salt = SaltString::encode_b64(&salt).map_err(|e| anyhow::anyhow!("salt: {e}"))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(|e| anyhow::anyhow!("hashing failed: {e}"))
    })
    .await
    .map_err(|e| ApiError::Internal(anyhow::anyhow!("hashing task failed: {e}")))?
    .map_err(ApiError::Internal)
}

/// Whether `stored` is one of the platform's bcrypt hashes: `$2a$`, `$2b$`
/// or `$2y$`, a cost from 4 to 12 (the platform's is 10; a higher one would
/// let one sign-in occupy a thread for minutes), and 53 characters of salt
/// and hash.
pub fn needs_rehash(stored: &str) -> bool {
    let bytes = stored.as_bytes();
    let cost = stored.get(4..6).and_then(|c| c.parse::<u32>().ok());
    bytes.len() == 60
        && ["$2a$", "$2b$", "$2y$"]
            .iter()
            .any(|p| stored.starts_with(p))
        && cost.is_some_and(|c| (4..=12).contains(&c))
        && bytes[6] == b'$'
        && bytes[7..]
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'/'))
}

/// A bcrypt hash of cost 10 (the platform's) that no password is checked
/// against for real: the other half of every verification.
const DUMMY_BCRYPT: &str = "$2b$10$tdXu//UWPsGYF1x2WgddMuZMZapzHC9kjNA0vmIQLf.AtER0n39RO";

/// An argon2id hash with the parameters passwords are hashed with here,
/// made once: the other half of a bcrypt account's verification.
fn dummy_argon() -> &'static str {
    static DUMMY: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    DUMMY.get_or_init(|| {
        let salt = SaltString::encode_b64(&[7u8; 16]).expect("a fixed salt");
        Argon2::default()
            .hash_password(b"no password is this one", &salt)
            .map(|h| h.to_string())
            .unwrap_or_default()
    })
}

/// Whether `password` matches `stored` (argon2id, or a platform's bcrypt
/// hash: [`needs_rehash`]). Every verification runs both an argon2id and a
/// cost-10 bcrypt comparison (the one the account holds, and one against
/// a dummy hash), so its time tells neither whether the account exists
/// nor which kind of hash it holds. Both compare in constant time. A
/// malformed hash never matches.
pub async fn verify_password(password: &str, stored: &str) -> bool {
    let (password, stored) = (password.to_owned(), stored.to_owned());
    tokio::task::spawn_blocking(move || {
        let platform = needs_rehash(&stored);
        // The crate's `verify` truncates at 72 bytes, as bcryptjs does.
        let bcrypt_hash = if platform {
            stored.as_str()
        } else {
            DUMMY_BCRYPT
        };
        let bcrypt_ok = bcrypt::verify(password.as_bytes(), bcrypt_hash).unwrap_or(false);
        let argon_hash = if platform {
            dummy_argon()
        } else {
            stored.as_str()
        };
        let argon_ok = PasswordHash::new(argon_hash)
            .map(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
            .unwrap_or(false);
        if platform {
            bcrypt_ok
        } else {
            argon_ok
        }
    })
    .await
    .unwrap_or(false)
}

/// Does the work of one verification without an account to verify
/// against, so that a sign-in for an unknown user takes as long as one
/// with a wrong password.
pub async fn equalise_timing() {
    verify_password("no-such-account-password", dummy_argon()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let password = Password::parse("password", "correct horse battery").unwrap();
        let hash = hash_password(&password).await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password("correct horse battery", &hash).await);
        assert!(!verify_password("wrong horse battery", &hash).await);
        assert!(!verify_password("anything", "not a hash").await);
    }

    #[tokio::test]
    async fn a_platform_bcrypt_hash_verifies_like_bcryptjs() {
        // Made by bcryptjs (`bcrypt.hashSync("platform-pass-1", 10)`): 3.0.2
        // writes `$2b$`, 2.4.3 `$2a$`, as the platform's auth service stored
        // them; PHP's `$2y$` is the same algorithm.
        let v3 = "$2b$10$tdXu//UWPsGYF1x2WgddMuZMZapzHC9kjNA0vmIQLf.AtER0n39RO";
        let v2 = "$2a$10$S8ZUUb2bCI98Shi.X1nyOugba.U0yjUe5dA/y4EgGWR4xEt90xv7K";
        let y = format!("$2y${}", &v3[4..]);
        for hash in [v3, v2, y.as_str()] {
            assert!(needs_rehash(hash));
            assert!(verify_password("platform-pass-1", hash).await, "{hash}");
            assert!(!verify_password("platform-pass-2", hash).await, "{hash}");
        }
        // Only the first 72 bytes count (é is two bytes: 36 of them fill
        // 72). bcryptjs 3.0.2 made this of "é" × 36 + "tail one".
        let long = "é".repeat(36);
        let hash = "$2b$10$t7Jxg/xOZSAXV/VLazHe0un1ztHYN3a5Z6oMWxOqqxAJr9x.Ogq4a";
        assert!(verify_password(&format!("{long}tail two"), hash).await);
        assert!(!verify_password(&"é".repeat(35), hash).await);
        assert!(!needs_rehash("$argon2id$v=19$m=19456,t=2,p=1$x$y"));
        // Not the platform's shape: refused, never verified.
        let slow = format!("$2b$31${}", &v3[7..]);
        assert!(!needs_rehash(&slow) && !verify_password("platform-pass-1", &slow).await);
        assert!(!needs_rehash("$2b$10$short"));
        assert!(!verify_password("platform-pass-1", "$2b$10$short").await);
    }
}
