//! JWT issue and verification (README §3) and the [`AuthUser`] extractor.
//!
//! Access and refresh tokens are HS256 JWTs signed with two different
//! secrets. Every function verifies access tokens locally; nothing calls the
//! auth function. Verification pins the algorithm to HS256 (so `alg: none`
//! and algorithm confusion fail), checks the signature, the expiry with no
//! leeway, the token type, and that every claim is present.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::JwtConfig;
use crate::error::ApiError;

/// A user's role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything.
    Admin,
    /// Reads any user's balance, usage and reports; allocates credits.
    Supervisor,
    /// Own data only.
    Enduser,
}

impl Role {
    /// The name used in tokens and documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Supervisor => "supervisor",
            Role::Enduser => "enduser",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "supervisor" => Ok(Role::Supervisor),
            "enduser" => Ok(Role::Enduser),
            other => Err(format!(
                "{other:?} is not one of admin, supervisor, enduser"
            )),
        }
    }
}

/// What a token is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TokenType {
    /// Authorises API calls for 15 minutes.
    Access,
    /// Buys a new pair at `/api/auth/refresh`.
    Refresh,
}

/// The claims of an access token. Every field is required.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessClaims {
    /// User id.
    pub sub: String,
    /// Username.
    pub username: String,
    /// Email (lower case).
    pub email: String,
    /// Role.
    pub role: Role,
    /// Always `access`.
    #[serde(rename = "type")]
    pub token_type: TokenType,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Token id.
    pub jti: String,
    /// The account's session version when issued: signing out everywhere
    /// raises it, and a prediction made with an older token is refused.
    /// (0 in tokens issued before it existed.)
    #[serde(default)]
    pub sv: i64,
}

/// The claims of a refresh token. `fam` is the rotation family (README §5).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefreshClaims {
    /// User id.
    pub sub: String,
    /// Always `refresh`.
    #[serde(rename = "type")]
    pub token_type: TokenType,
    /// Family id shared by every token rotated from one login.
    pub fam: String,
    /// Issued at (Unix seconds).
    pub iat: i64,
    /// Expires at (Unix seconds).
    pub exp: i64,
    /// Token id.
    pub jti: String,
}

/// The identity an access token is issued for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenSubject<'a> {
    /// User id.
    pub user_id: &'a str,
    /// Username.
    pub username: &'a str,
    /// Email.
    pub email: &'a str,
    /// Role.
    pub role: Role,
    /// The account's session version ([`AccessClaims::sv`]).
    pub session_version: i64,
}

struct Keys {
    access_encoding: EncodingKey,
    access_decoding: DecodingKey,
    refresh_encoding: EncodingKey,
    refresh_decoding: DecodingKey,
    access_ttl: Duration,
    refresh_ttl: Duration,
    validation: Validation,
}

/// Signing and verification keys, built once per cold start and cheap to clone.
#[derive(Clone)]
pub struct JwtKeys(Arc<Keys>);

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("JwtKeys(***)")
    }
}

impl JwtKeys {
    /// Builds the keys from checked configuration.
    pub fn new(config: &JwtConfig) -> Self {
        let access = config.access_secret.expose().as_bytes();
        let refresh = config.refresh_secret.expose().as_bytes();
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp", "iat", "sub", "jti"]);
        // Secrets are checked non-empty (32 bytes) by JwtConfig, so these cannot fail.
        let key = |secret: &[u8]| {
            (
                EncodingKey::from_secret(secret).expect("non-empty HMAC secret"),
                DecodingKey::from_secret(secret).expect("non-empty HMAC secret"),
            )
        };
        let (access_encoding, access_decoding) = key(access);
        let (refresh_encoding, refresh_decoding) = key(refresh);
        JwtKeys(Arc::new(Keys {
            access_encoding,
            access_decoding,
            refresh_encoding,
            refresh_decoding,
            access_ttl: config.access_ttl,
            refresh_ttl: config.refresh_ttl,
            validation,
        }))
    }

    /// Lifetime of a refresh token.
    pub fn refresh_ttl(&self) -> Duration {
        self.0.refresh_ttl
    }

    /// Lifetime of an access token.
    pub fn access_ttl(&self) -> Duration {
        self.0.access_ttl
    }

    /// Issues an access token for `subject`, valid for the access TTL from `now`.
    pub fn issue_access(&self, subject: &TokenSubject<'_>, now: i64) -> String {
        let claims = AccessClaims {
            sub: subject.user_id.to_owned(),
            username: subject.username.to_owned(),
            email: subject.email.to_owned(),
            role: subject.role,
            token_type: TokenType::Access,
            iat: now,
            exp: now + self.0.access_ttl.as_secs() as i64,
            jti: uuid::Uuid::new_v4().to_string(),
            sv: subject.session_version,
        };
        self.sign(&claims, &self.0.access_encoding)
    }

    /// Issues a refresh token in family `family`; returns it with its claims
    /// (the caller stores a hash of the token and the `jti`).
    pub fn issue_refresh(&self, user_id: &str, family: &str, now: i64) -> (String, RefreshClaims) {
        let claims = RefreshClaims {
            sub: user_id.to_owned(),
            token_type: TokenType::Refresh,
            fam: family.to_owned(),
            iat: now,
            exp: now + self.0.refresh_ttl.as_secs() as i64,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        (self.sign(&claims, &self.0.refresh_encoding), claims)
    }

    fn sign<T: Serialize>(&self, claims: &T, key: &EncodingKey) -> String {
        // HS256 signing of a serialisable struct does not fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, key)
            .expect("HS256 signing of plain claims")
    }

    /// Verifies an access token: signature, algorithm, expiry, type, claims.
    pub fn verify_access(&self, token: &str) -> Result<AccessClaims, ApiError> {
        let claims: AccessClaims = self.verify(token, &self.0.access_decoding)?;
        if claims.token_type != TokenType::Access {
            return Err(invalid_token("not an access token"));
        }
        Ok(claims)
    }

    /// Verifies a refresh token: signature, algorithm, expiry, type, claims.
    pub fn verify_refresh(&self, token: &str) -> Result<RefreshClaims, ApiError> {
        let claims: RefreshClaims = self.verify(token, &self.0.refresh_decoding)?;
        if claims.token_type != TokenType::Refresh {
            return Err(invalid_token("not a refresh token"));
        }
        Ok(claims)
    }

    fn verify<T: serde::de::DeserializeOwned>(
        &self,
        token: &str,
        key: &DecodingKey,
    ) -> Result<T, ApiError> {
        jsonwebtoken::decode::<T>(token, key, &self.0.validation)
            .map(|data| data.claims)
            .map_err(|err| match err.kind() {
                ErrorKind::ExpiredSignature => ApiError::Unauthorized {
                    code: "token_expired",
                    message: "the token has expired".into(),
                },
                ErrorKind::InvalidSignature => invalid_token("the token's signature is invalid"),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    invalid_token("the token's algorithm is not accepted")
                }
                ErrorKind::MissingRequiredClaim(_) | ErrorKind::Json(_) => {
                    invalid_token("the token's claims are incomplete")
                }
                _ => invalid_token("the token is malformed"),
            })
    }
}

fn invalid_token(message: &str) -> ApiError {
    ApiError::Unauthorized {
        code: "invalid_token",
        message: message.into(),
    }
}

/// The caller, from a verified `Authorization: Bearer <access token>`.
///
/// Extracting it rejects with 401 before the handler runs (and with 403
/// `key_not_allowed` for an API key: routes open to keys take
/// `UserOrKey` of the keys module), and records the user id on the request's
/// log span.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// User id (`sub`).
    pub id: String,
    /// Username.
    pub username: String,
    /// Email.
    pub email: String,
    /// Role (`enduser` at most for a key's caller).
    pub role: Role,
    /// The API key the request came with (`None`: an access token).
    pub key: Option<KeyGrant>,
    /// The access token's session version (`sv`; 0 for a key's caller,
    /// whose keys signing out everywhere revokes on its own).
    pub session_version: i64,
}

impl AuthUser {
    /// The caller's id as the ledger takes it (checked when the token was
    /// extracted).
    pub fn user_id(&self) -> crate::ids::UserId {
        crate::ids::UserId::try_from(self.id.clone())
            .unwrap_or_else(|_| unreachable!("the extractor checked the token's sub"))
    }

    /// 403 unless the caller has one of `roles`.
    pub fn require_role(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.role) {
            Ok(())
        } else {
            let names: Vec<&str> = roles.iter().map(|r| r.as_str()).collect();
            Err(ApiError::forbidden(format!(
                "this action needs the role {}",
                names.join(" or ")
            )))
        }
    }

    /// 403 unless the caller is an admin.
    pub fn require_admin(&self) -> Result<(), ApiError> {
        self.require_role(&[Role::Admin])
    }

    /// Whether the caller may read other users' data (admin, supervisor).
    pub fn can_read_any_user(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Supervisor)
    }

    /// 403 unless `user_id` is the caller or the caller may read any user.
    pub fn require_self_or_reader(&self, user_id: &str) -> Result<(), ApiError> {
        if self.id == user_id || self.can_read_any_user() {
            Ok(())
        } else {
            Err(ApiError::forbidden("you may only read your own data"))
        }
    }
}

impl From<AccessClaims> for AuthUser {
    fn from(c: AccessClaims) -> Self {
        AuthUser {
            id: c.sub,
            username: c.username,
            email: c.email,
            role: c.role,
            key: None,
            session_version: c.sv,
        }
    }
}

/// 401 `session_ended` when `user` signed out everywhere after the access
/// token of session version `version` was issued: one primary-key read of
/// the ledger's record, so every request with such a token is refused, not
/// only predictions (which check again in the statement that locks the
/// account, closing the race with a sign-out made meanwhile).
async fn check_session(pool: &sqlx::PgPool, user: &str, version: i64) -> Result<(), ApiError> {
    let current = sqlx::query_scalar!(
        "SELECT session_version FROM user_accounts WHERE user_id = $1",
        user
    )
    .fetch_optional(pool)
    .await?;
    match current {
        Some(current) if current > version => Err(session_ended()),
        _ => Ok(()),
    }
}

/// 401 `session_ended`: the token was issued before its user signed out
/// everywhere (here, and in the ledger's lock).
pub fn session_ended() -> ApiError {
    ApiError::Unauthorized {
        code: "session_ended",
        message: "this session ended when the account signed out everywhere; sign in again".into(),
    }
}

/// Reads the bearer token of a request's headers.
pub fn bearer_token(parts: &Parts) -> Result<&str, ApiError> {
    let missing = || ApiError::Unauthorized {
        code: "missing_token",
        message: "an Authorization: Bearer <access token or API key> header is required".into(),
    };
    let value = parts.headers.get(AUTHORIZATION).ok_or_else(missing)?;
    let value = value.to_str().map_err(|_| missing())?;
    let (scheme, token) = value.split_once(' ').ok_or_else(missing)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(missing());
    }
    Ok(token.trim())
}

impl<S> FromRequestParts<S> for AuthUser
where
    JwtKeys: FromRef<S>,
    sqlx::PgPool: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = JwtKeys::from_ref(state);
        let bearer = bearer_token(parts)?;
        if looks_like_key(bearer) {
            return Err(key_not_allowed());
        }
        let claims = keys.verify_access(bearer)?;
        // An id the stores cannot hold is no identity (only a token signed
        // with our secret can carry one, but it is checked all the same).
        if crate::ids::check_user_id(&claims.sub).as_deref() != Ok(claims.sub.as_str()) {
            return Err(invalid_token("the token's subject is not a valid user id"));
        }
        tracing::Span::current().record("user_id", claims.sub.as_str());
        // Signed out everywhere since: every request ends such a session.
        let pool = sqlx::PgPool::from_ref(state);
        check_session(&pool, &claims.sub, claims.sv).await?;
        Ok(claims.into())
    }
}

// ---------------------------------------------------------------- API keys
// What an access token's extractor must know of API keys (the rest is
// keys module).

/// What every key starts with.
pub const KEY_PREFIX: &str = "fgw_";
/// Whether a bearer credential is shaped as an API key (a JWT never starts
/// with `fgw_`: its first part is base64url of `{"`).
pub fn looks_like_key(bearer: &str) -> bool {
    bearer.starts_with(KEY_PREFIX)
}

/// What a key allows, carried by the [`AuthUser`] it acts as (README §11).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyGrant {
    /// The key's id.
    pub id: uuid::Uuid,
    /// The chatflows it may use (`None`: every one its user may use).
    pub chatflows: Option<Vec<String>>,
    /// Credits it may spend in a calendar month (UTC).
    pub monthly_credit_limit: Option<i64>,
}

impl KeyGrant {
    /// Whether the key may use `chatflow`.
    pub fn allows(&self, chatflow: &str) -> bool {
        self.chatflows
            .as_ref()
            .is_none_or(|list| list.iter().any(|c| c == chatflow))
    }
}

/// 403 `key_not_allowed`: a route a key may not call.
pub fn key_not_allowed() -> ApiError {
    ApiError::Forbidden {
        code: "key_not_allowed",
        message: "an API key cannot be used for this route; sign in and use an access token".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn keys() -> JwtKeys {
        JwtKeys::new(&JwtConfig {
            access_secret: Secret::new("access-secret-access-secret-0123456789"),
            refresh_secret: Secret::new("refresh-secret-refresh-secret-012345678"),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(604_800),
        })
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn subject() -> TokenSubject<'static> {
        TokenSubject {
            user_id: "u1",
            username: "ann",
            email: "ann@example.com",
            role: Role::Enduser,
            session_version: 0,
        }
    }

    fn code(err: ApiError) -> &'static str {
        assert_eq!(
            err.status(),
            axum::http::StatusCode::UNAUTHORIZED,
            "{err:?}"
        );
        err.code()
    }

    #[test]
    fn an_issued_access_token_verifies_with_all_claims() {
        let k = keys();
        let t = now();
        let claims = k.verify_access(&k.issue_access(&subject(), t)).unwrap();
        assert_eq!(claims.sub, "u1");
        assert_eq!(claims.role, Role::Enduser);
        assert_eq!(claims.token_type, TokenType::Access);
        assert_eq!(claims.exp - claims.iat, 900);
        assert!(!claims.jti.is_empty());
    }

    #[test]
    fn a_token_signed_with_another_secret_is_rejected() {
        let other = JwtKeys::new(&JwtConfig {
            access_secret: Secret::new("another-access-secret-0123456789abcdef"),
            refresh_secret: Secret::new("another-refresh-secret-0123456789abcde"),
            access_ttl: Duration::from_secs(900),
            refresh_ttl: Duration::from_secs(900),
        });
        let token = other.issue_access(&subject(), now());
        assert_eq!(
            code(keys().verify_access(&token).unwrap_err()),
            "invalid_token"
        );
    }

    #[test]
    fn a_tampered_payload_is_rejected() {
        let k = keys();
        let token = k.issue_access(&subject(), now());
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let forged = serde_json::json!({
            "sub":"u1","username":"ann","email":"ann@example.com","role":"admin",
            "type":"access","iat":now(),"exp":now()+900,"jti":"x"
        });
        parts[1] = URL_SAFE_NO_PAD.encode(forged.to_string().as_bytes());
        assert_eq!(
            code(k.verify_access(&parts.join(".")).unwrap_err()),
            "invalid_token"
        );
    }

    #[test]
    fn alg_none_is_rejected() {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = serde_json::json!({
            "sub":"u1","username":"ann","email":"ann@example.com","role":"admin",
            "type":"access","iat":now(),"exp":now()+900,"jti":"x"
        });
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string().as_bytes());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            assert_eq!(
                code(keys().verify_access(&token).unwrap_err()),
                "invalid_token"
            );
        }
    }

    #[test]
    fn an_expired_token_is_rejected_as_expired() {
        let k = keys();
        let token = k.issue_access(&subject(), now() - 901);
        assert_eq!(code(k.verify_access(&token).unwrap_err()), "token_expired");
    }

    #[test]
    fn a_refresh_token_is_not_an_access_token() {
        let k = keys();
        let (refresh, _) = k.issue_refresh("u1", "fam1", now());
        assert_eq!(
            code(k.verify_access(&refresh).unwrap_err()),
            "invalid_token"
        );
        // Even when signed with the access secret, the type claim gives it away.
        let claims = RefreshClaims {
            sub: "u1".into(),
            token_type: TokenType::Refresh,
            fam: "f".into(),
            iat: now(),
            exp: now() + 900,
            jti: "j".into(),
        };
        let forged = k.sign(&claims, &k.0.access_encoding);
        assert_eq!(code(k.verify_access(&forged).unwrap_err()), "invalid_token");
    }

    #[test]
    fn an_access_token_is_not_a_refresh_token() {
        let k = keys();
        let access = k.issue_access(&subject(), now());
        assert_eq!(
            code(k.verify_refresh(&access).unwrap_err()),
            "invalid_token"
        );
        let (refresh, claims) = k.issue_refresh("u1", "fam1", now());
        assert_eq!(k.verify_refresh(&refresh).unwrap(), claims);
    }

    #[test]
    fn a_token_with_missing_claims_is_rejected() {
        let k = keys();
        for missing in [
            "sub", "role", "type", "exp", "jti", "email", "username", "iat",
        ] {
            let mut claims = serde_json::json!({
                "sub":"u1","username":"ann","email":"ann@example.com","role":"enduser",
                "type":"access","iat":now(),"exp":now()+900,"jti":"x"
            });
            claims.as_object_mut().unwrap().remove(missing);
            let token = k.sign(&claims, &k.0.access_encoding);
            assert_eq!(
                code(k.verify_access(&token).unwrap_err()),
                "invalid_token",
                "{missing}"
            );
        }
    }

    #[test]
    fn garbage_is_rejected() {
        for token in ["", "abc", "a.b.c", "...."] {
            assert_eq!(
                code(keys().verify_access(token).unwrap_err()),
                "invalid_token"
            );
        }
    }

    #[test]
    fn roles_are_enforced() {
        let user = AuthUser {
            id: "u1".into(),
            username: "ann".into(),
            email: "a@x.io".into(),
            role: Role::Supervisor,
            key: None,
            session_version: 0,
        };
        assert!(user.require_role(&[Role::Admin, Role::Supervisor]).is_ok());
        let err = user.require_admin().unwrap_err();
        assert_eq!(err.status(), axum::http::StatusCode::FORBIDDEN);
        assert!(user.require_self_or_reader("someone-else").is_ok());
        let enduser = AuthUser {
            role: Role::Enduser,
            ..user
        };
        assert!(enduser.require_self_or_reader("u1").is_ok());
        assert_eq!(
            enduser.require_self_or_reader("u2").unwrap_err().status(),
            axum::http::StatusCode::FORBIDDEN
        );
    }
}
