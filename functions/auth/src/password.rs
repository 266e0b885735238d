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

/// Whether `stored` is one of the platform's bcrypt hashes.
pub fn needs_rehash(stored: &str) -> bool {
    ["$2a$", "$2b$", "$2y$"]
        .iter()
        .any(|prefix| stored.starts_with(prefix))
}

/// Whether `password` matches `phc` (argon2id, or a platform's bcrypt hash:
/// [`needs_rehash`]). Both compare in constant time. A malformed hash
/// never matches.
pub async fn verify_password(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_owned(), phc.to_owned());
    tokio::task::spawn_blocking(move || {
        if needs_rehash(&phc) {
            // The crate's `verify` truncates at 72 bytes, as bcryptjs does.
            return bcrypt::verify(password.as_bytes(), &phc).unwrap_or(false);
        }
        PasswordHash::new(&phc)
            .map(|hash| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &hash)
                    .is_ok()
            })
            .unwrap_or(false)
    })
    .await
    .unwrap_or(false)
}

/// Does the work of one verification without an account to verify
/// against, so that a login for an unknown user takes as long as one with
/// a wrong password.
pub async fn equalise_timing() {
    if let Ok(password) = Password::parse("password", "no-such-account-password") {
        let _ = hash_password(&password).await;
    }
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
    }
}
