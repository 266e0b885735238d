//! Password hashing with argon2id (PHC strings), off the async threads.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use shared::identity::Password;
use shared::ApiError;

/// Hashes a password (argon2id, the crate's recommended parameters:
/// 19 MiB, 2 passes, 1 lane) into a PHC string.
pub async fn hash_password(password: &Password) -> Result<String, ApiError> {
    let password = password.expose().to_owned();
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

/// Whether `password` matches `phc`. A malformed hash never matches.
pub async fn verify_password(password: &str, phc: &str) -> bool {
    let (password, phc) = (password.to_owned(), phc.to_owned());
    tokio::task::spawn_blocking(move || {
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
}
