//! The API error type and the JSON error format of README §4.
//!
//! Every error a handler returns becomes `{"error": "<snake_case_code>",
//! "message": "<text for a person>"}` with the status its variant names.
//! Server-side causes (database, upstream, bugs) are logged with their
//! details; the client only ever sees a clean message.

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Credits that expire within a week, and when the first of them do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExpiringSoon {
    /// How many.
    pub credits: i64,
    /// The first expiry among them.
    pub expires_at: chrono::DateTime<chrono::Utc>,
}

/// What comes next for a refused caller's credits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Outlook {
    /// When an allowance brings more, and how many.
    pub next: Option<NextCredits>,
    /// Credits that expire within a week: how many, and the first expiry.
    pub expiring: Option<NextCredits>,
}

/// When an allowance brings a refused caller more credits, and how many.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextCredits {
    /// When.
    pub at: chrono::DateTime<chrono::Utc>,
    /// How many.
    pub credits: i64,
}

/// The body of every error response.
#[derive(Debug, Serialize, serde::Deserialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct ErrorBody {
    /// Machine-readable snake_case code.
    #[schema(pattern = "^[a-z_]+$")]
    pub error: String,
    /// Text for a person; names the field for invalid input.
    pub message: String,
    /// 402: the credits the request needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub needed: Option<i64>,
    /// 402: the credits that were available (the balance, or what an API
    /// key may still spend this month).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub available: Option<i64>,
    /// 402: when an allowance brings the caller more credits.
    #[serde(
        default,
        rename = "nextCreditsAt",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_credits_at: Option<chrono::DateTime<chrono::Utc>>,
    /// 402: how many it brings then.
    #[serde(
        default,
        rename = "nextCredits",
        skip_serializing_if = "Option::is_none"
    )]
    pub next_credits: Option<i64>,
    /// 402: credits that expire within a week, and when the first do.
    #[serde(
        default,
        rename = "expiringSoon",
        skip_serializing_if = "Option::is_none"
    )]
    pub expiring_soon: Option<ExpiringSoon>,
    /// 409 `idempotency_in_progress` and 429: seconds to wait before
    /// retrying (also in `Retry-After`).
    #[serde(
        default,
        rename = "retryAfterSeconds",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after_seconds: Option<u64>,
    /// 403 `email_not_verified` at sign-in, once the password was right:
    /// the account's address, where its code goes (so a person who signed
    /// in with their username can confirm on the spot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// 400 `invalid_input`: the field the message names (`username`,
    /// `pricing.perRequest`, `messages[2].role`), so a client can show the
    /// problem next to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

/// Every way a request can fail. Each variant documents its status.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// 400: invalid input. `code` is `invalid_input` for a field that fails
    /// validation (the message names the field), or something more specific
    /// such as `invalid_json` or `invalid_code`.
    #[error("{message}")]
    BadRequest {
        /// Error code.
        code: &'static str,
        /// Message naming the field.
        message: String,
    },
    /// 401: missing or invalid token, or wrong credentials.
    #[error("{message}")]
    Unauthorized {
        /// Error code (`missing_token`, `invalid_token`, `token_expired`, `invalid_credentials`).
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 402: the balance (`insufficient_credits`) or an API key's monthly
    /// limit (`key_limit_reached`) does not cover the amount.
    #[error("{message}")]
    PaymentRequired {
        /// Error code.
        code: &'static str,
        /// Message (how much was needed and available).
        message: String,
        /// Credits needed.
        needed: i64,
        /// Credits available.
        available: i64,
        /// What comes next for the caller's credits (README "Allowances
        /// and warnings"), when anything does.
        outlook: Option<Box<Outlook>>,
    },
    /// 403: wrong role or not your resource.
    #[error("{message}")]
    Forbidden {
        /// Error code (`forbidden`, `email_not_verified`, ...).
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 403 `email_not_verified`: the account's address is not proven;
    /// `email` is that address when the caller proved the password.
    #[error("verify your email first (POST /api/auth/verify-email)")]
    NotVerified {
        /// The account's address, for a caller who gave the password.
        email: Option<String>,
    },
    /// 404: no such resource or route.
    #[error("{message}")]
    NotFound {
        /// Message.
        message: String,
    },
    /// 405: the route exists but not with this method.
    #[error("method not allowed")]
    MethodNotAllowed,
    /// 409: conflict (duplicate, idempotency key reused with another body).
    #[error("{message}")]
    Conflict {
        /// Error code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 409: the same request is still being worked on (an idempotency key
    /// whose first request has not finished); answered with `Retry-After`.
    #[error("{message}")]
    Busy {
        /// Error code (`idempotency_in_progress`).
        code: &'static str,
        /// Message.
        message: String,
        /// Seconds to wait before retrying.
        retry_after: u64,
    },
    /// 413: body or file too large.
    #[error("{message}")]
    PayloadTooLarge {
        /// Message.
        message: String,
    },
    /// 415: content whose type is not accepted.
    #[error("{message}")]
    UnsupportedMediaType {
        /// Message.
        message: String,
    },
    /// 422: well-formed but unacceptable.
    #[error("{message}")]
    Unprocessable {
        /// Error code.
        code: &'static str,
        /// Message.
        message: String,
    },
    /// 429: rate limited or locked out; `Retry-After` when the wait is known.
    #[error("{message}")]
    TooManyRequests {
        /// Error code.
        code: &'static str,
        /// Message.
        message: String,
        /// Seconds to wait before retrying, when known.
        retry_after: Option<u64>,
    },
    /// 502: Flowise failed. The detail is logged, not returned.
    #[error("upstream failed: {detail}")]
    BadGateway {
        /// What went wrong (logged only).
        detail: String,
    },
    /// 504: Flowise timed out.
    #[error("upstream timed out: {detail}")]
    GatewayTimeout {
        /// What went wrong (logged only).
        detail: String,
    },
    /// 503: a database is unreachable. The cause is logged, not returned.
    #[error("{store} unavailable: {detail}")]
    StoreUnavailable {
        /// `postgres` or `mongodb`.
        store: &'static str,
        /// Cause (logged only).
        detail: String,
    },
    /// 501: the route is part of the contract but its issue has not landed.
    #[error("{route} is not implemented yet")]
    NotImplemented {
        /// Method and path template.
        route: String,
    },
    /// 500: a bug or an unexpected failure. Logged with its chain.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// 400 `invalid_input` for one field; the message names it.
    pub fn invalid_field(field: &str, problem: impl std::fmt::Display) -> Self {
        ApiError::BadRequest {
            code: "invalid_input",
            message: format!("{field}: {problem}"),
        }
    }

    /// 403 `forbidden`.
    pub fn forbidden(message: impl Into<String>) -> Self {
        ApiError::Forbidden {
            code: "forbidden",
            message: message.into(),
        }
    }

    /// 404 `not_found`.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::NotFound {
            message: message.into(),
        }
    }

    /// The HTTP status of this error.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Unauthorized { .. } => StatusCode::UNAUTHORIZED,
            ApiError::PaymentRequired { .. } => StatusCode::PAYMENT_REQUIRED,
            ApiError::Forbidden { .. } | ApiError::NotVerified { .. } => StatusCode::FORBIDDEN,
            ApiError::NotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict { .. } | ApiError::Busy { .. } => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::BadGateway { .. } => StatusCode::BAD_GATEWAY,
            ApiError::GatewayTimeout { .. } => StatusCode::GATEWAY_TIMEOUT,
            ApiError::StoreUnavailable { .. } => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::NotImplemented { .. } => StatusCode::NOT_IMPLEMENTED,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The snake_case code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::BadRequest { code, .. }
            | ApiError::Unauthorized { code, .. }
            | ApiError::PaymentRequired { code, .. }
            | ApiError::Forbidden { code, .. }
            | ApiError::Conflict { code, .. }
            | ApiError::Busy { code, .. }
            | ApiError::Unprocessable { code, .. }
            | ApiError::TooManyRequests { code, .. } => code,
            ApiError::NotVerified { .. } => "email_not_verified",
            ApiError::NotFound { .. } => "not_found",
            ApiError::MethodNotAllowed => "method_not_allowed",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::BadGateway { .. } => "upstream_error",
            ApiError::GatewayTimeout { .. } => "upstream_timeout",
            ApiError::StoreUnavailable { .. } => "store_unavailable",
            ApiError::NotImplemented { .. } => "not_implemented",
            ApiError::Internal(_) => "internal_error",
        }
    }

    /// The message a client sees: server-side details are never in it.
    pub fn public_message(&self) -> String {
        match self {
            ApiError::BadGateway { .. } => "the chat service failed to answer".into(),
            ApiError::GatewayTimeout { .. } => "the chat service did not answer in time".into(),
            ApiError::StoreUnavailable { store, .. } => {
                format!("{store} is unreachable; try again shortly")
            }
            ApiError::Internal(_) => "internal error".into(),
            other => other.to_string(),
        }
    }

    /// Seconds the client should wait before retrying (`Retry-After`).
    pub fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::Busy { retry_after, .. } => Some(*retry_after),
            ApiError::TooManyRequests { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// The request field a 400 `invalid_input` names: the text before the
    /// first `": "` of its message ([`ApiError::invalid_field`] writes
    /// `field: problem`), when that is a field path.
    pub fn field(&self) -> Option<&str> {
        let ApiError::BadRequest {
            code: "invalid_input",
            message,
        } = self
        else {
            return None;
        };
        let (field, _) = message.split_once(": ")?;
        let path = field.len() <= 100
            && field.starts_with(|c: char| c.is_ascii_alphabetic())
            && field
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.[]-".contains(c));
        path.then_some(field)
    }

    /// The JSON body of this error.
    pub fn body(&self) -> ErrorBody {
        let (needed, available, outlook) = match self {
            ApiError::PaymentRequired {
                needed,
                available,
                outlook,
                ..
            } => (Some(*needed), Some(*available), outlook.as_deref().copied()),
            _ => (None, None, None),
        };
        let next = outlook.and_then(|o| o.next);
        let expiring = outlook.and_then(|o| o.expiring);
        ErrorBody {
            error: self.code().to_owned(),
            message: self.public_message(),
            needed,
            available,
            next_credits_at: next.map(|n| n.at),
            next_credits: next.map(|n| n.credits),
            expiring_soon: expiring.map(|e| ExpiringSoon {
                credits: e.credits,
                expires_at: e.at,
            }),
            retry_after_seconds: self.retry_after(),
            email: match self {
                ApiError::NotVerified { email } => email.clone(),
                _ => None,
            },
            field: self.field().map(str::to_owned),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        match &self {
            ApiError::Internal(cause) => tracing::error!(error = ?cause, "request failed"),
            ApiError::StoreUnavailable { .. }
            | ApiError::BadGateway { .. }
            | ApiError::GatewayTimeout { .. } => tracing::warn!(error = %self, "request failed"),
            _ => tracing::debug!(
                status = status.as_u16(),
                code = self.code(),
                "request rejected"
            ),
        }
        let mut response = (status, axum::Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after() {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, axum::http::HeaderValue::from(seconds));
        }
        response
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(err: sqlx::Error) -> Self {
        match err {
            sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_) => ApiError::StoreUnavailable {
                store: "postgres",
                detail: err.to_string(),
            },
            // Two transactions that waited for each other (PostgreSQL ends
            // one) or a serialization failure: nothing was changed, and the
            // same request succeeds when sent again.
            sqlx::Error::Database(ref db)
                if matches!(db.code().as_deref(), Some("40P01") | Some("40001")) =>
            {
                ApiError::StoreUnavailable {
                    store: "postgres",
                    detail: err.to_string(),
                }
            }
            // Text PostgreSQL cannot store (a NUL character): bad input, not a bug.
            sqlx::Error::Database(ref db)
                if matches!(db.code().as_deref(), Some("22021") | Some("22P05")) =>
            {
                ApiError::BadRequest {
                    code: "invalid_input",
                    message: "a text value contains a NUL character, which cannot be stored".into(),
                }
            }
            other => {
                ApiError::Internal(anyhow::Error::new(other).context("PostgreSQL query failed"))
            }
        }
    }
}

impl From<mongodb::error::Error> for ApiError {
    fn from(err: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match *err.kind {
            ErrorKind::ServerSelection { .. }
            | ErrorKind::Io(_)
            | ErrorKind::ConnectionPoolCleared { .. } => ApiError::StoreUnavailable {
                store: "mongodb",
                detail: err.to_string(),
            },
            _ => ApiError::Internal(anyhow::Error::new(err).context("MongoDB operation failed")),
        }
    }
}

/// Parses a JSON request body into `T`, turning every failure into a 400
/// whose message says what is wrong and, for a data error, names the field.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::BadRequest {
            code: "invalid_json",
            message: "the request body is empty; a JSON object is expected".into(),
        });
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
    de.end().map_err(|e| ApiError::BadRequest {
        code: "invalid_json",
        message: format!("the request body is not valid JSON: {e}"),
    })?;
    Ok(value)
}

/// Deserialises an already-parsed JSON body into `T`, with the same
/// field-naming 400s as [`parse_json`].
pub fn from_json_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(json_error)
}

/// For `Option<Option<T>>` fields: absent stays `None`, `null` becomes
/// `Some(None)` (e.g. `expiryDays: null` means "never").
pub fn double_option<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: serde::Deserialize<'de>,
{
    <Option<T> as serde::Deserialize>::deserialize(deserializer).map(Some)
}

fn json_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let path = err.path().to_string();
    let inner = err.into_inner();
    if inner.is_data() {
        // serde's message carries "at line L column C"; the field path says more.
        let text = inner.to_string();
        let text = text.split(" at line ").next().unwrap_or(&text).to_owned();
        if path == "." {
            ApiError::BadRequest {
                code: "invalid_input",
                message: text,
            }
        } else {
            ApiError::invalid_field(&path, text)
        }
    } else {
        ApiError::BadRequest {
            code: "invalid_json",
            message: format!("the request body is not valid JSON: {inner}"),
        }
    }
}

/// A JSON request body. Unlike `axum::Json`, every rejection is an
/// [`ApiError`] in the spec's format and names the offending field.
#[derive(Debug, Clone, Copy, Default)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if let Some(ct) = req.headers().get(header::CONTENT_TYPE) {
            let ct = ct.to_str().unwrap_or_default().to_ascii_lowercase();
            if !(ct.starts_with("application/json") || ct.contains("+json")) {
                return Err(ApiError::UnsupportedMediaType {
                    message: "the request body must be JSON (Content-Type: application/json)"
                        .into(),
                });
            }
        }
        let bytes = bytes::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::PayloadTooLarge {
                        message: "the request body is too large".into(),
                    }
                } else {
                    ApiError::BadRequest {
                        code: "invalid_body",
                        message: "the request body could not be read".into(),
                    }
                }
            })?;
        parse_json(&bytes).map(JsonBody)
    }
}

/// Query parameters whose rejection is a 400 in the spec's format.
#[derive(Debug, Clone, Copy, Default)]
pub struct QueryParams<T>(pub T);

impl<S, T> FromRequestParts<S> for QueryParams<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| QueryParams(q.0))
            .map_err(|rejection: QueryRejection| ApiError::BadRequest {
                code: "invalid_query",
                message: rejection.body_text(),
            })
    }
}

/// Path parameters whose rejection is a 400 in the spec's format.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathParams<T>(pub T);

impl<S, T> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| PathParams(p.0))
            .map_err(|rejection: PathRejection| ApiError::BadRequest {
                code: "invalid_path",
                message: rejection.body_text(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Signup {
        username: String,
        age: u32,
    }

    fn bad_request_message(result: Result<Signup, ApiError>) -> (String, String) {
        match result.unwrap_err() {
            ApiError::BadRequest { code, message } => (code.to_owned(), message),
            other => panic!("expected a 400, got {other:?}"),
        }
    }

    #[test]
    fn malformed_json_is_a_400_invalid_json() {
        let (code, _) = bad_request_message(parse_json(b"{\"username\": "));
        assert_eq!(code, "invalid_json");
    }

    #[test]
    fn empty_body_is_a_400_invalid_json() {
        let (code, message) = bad_request_message(parse_json(b""));
        assert_eq!(code, "invalid_json");
        assert!(message.contains("empty"));
    }

    #[test]
    fn trailing_garbage_is_rejected() {
        let (code, _) = bad_request_message(parse_json(br#"{"username":"a","age":1} x"#));
        assert_eq!(code, "invalid_json");
    }

    #[test]
    fn a_missing_field_is_named() {
        let (code, message) = bad_request_message(parse_json(br#"{"username":"ann"}"#));
        assert_eq!(code, "invalid_input");
        assert!(message.contains("age"), "{message}");
    }

    #[test]
    fn a_field_of_the_wrong_type_is_named() {
        let (code, message) = bad_request_message(parse_json(br#"{"username":"ann","age":"x"}"#));
        assert_eq!(code, "invalid_input");
        assert!(message.starts_with("age:"), "{message}");
        assert!(!message.contains("line"), "{message}");
    }

    #[test]
    fn a_400_names_its_field_in_the_body() {
        let err = parse_json::<Signup>(br#"{"username":"ann","age":"x"}"#).unwrap_err();
        assert_eq!(err.body().field.as_deref(), Some("age"));
        let nested =
            ApiError::invalid_field("pricing.perInputToken", "must have at most six decimals");
        assert_eq!(
            nested.body().field.as_deref(),
            Some("pricing.perInputToken")
        );
        let indexed = ApiError::invalid_field("messages[2].role", "unknown variant");
        assert_eq!(indexed.body().field.as_deref(), Some("messages[2].role"));
        // No field: a sentence that merely holds a colon, another code.
        for err in [
            ApiError::BadRequest {
                code: "invalid_input",
                message: "a text value contains a NUL character: it cannot be stored".into(),
            },
            ApiError::BadRequest {
                code: "invalid_code",
                message: "code: wrong".into(),
            },
            ApiError::forbidden("role: admin only"),
        ] {
            assert_eq!(err.body().field, None, "{err}");
        }
        let body = serde_json::to_value(ApiError::forbidden("no").body()).unwrap();
        assert!(body.get("field").is_none(), "absent, not null: {body}");
    }

    #[test]
    fn internal_errors_hide_their_cause() {
        let err = ApiError::Internal(anyhow::anyhow!("password=hunter2 leaked"));
        let body = err.body();
        assert_eq!(err.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body.error, "internal_error");
        assert!(!body.message.contains("hunter2"));
    }

    #[test]
    fn store_errors_are_503_and_name_the_store_only() {
        let err = ApiError::from(sqlx::Error::PoolTimedOut);
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(err.code(), "store_unavailable");
        assert!(err.body().message.starts_with("postgres"));
    }

    #[test]
    fn every_status_has_a_snake_case_code() {
        let errors = [
            ApiError::invalid_field("email", "is not an email address"),
            ApiError::PaymentRequired {
                code: "insufficient_credits",
                message: "x".into(),
                needed: 2,
                available: 1,
                outlook: None,
            },
            ApiError::forbidden("x"),
            ApiError::not_found("x"),
            ApiError::MethodNotAllowed,
            ApiError::PayloadTooLarge {
                message: "x".into(),
            },
            ApiError::UnsupportedMediaType {
                message: "x".into(),
            },
            ApiError::BadGateway { detail: "x".into() },
            ApiError::GatewayTimeout { detail: "x".into() },
            ApiError::NotImplemented {
                route: "GET /x".into(),
            },
        ];
        for err in errors {
            let code = err.code();
            assert!(
                code.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{code}"
            );
            assert!(err.status().is_client_error() || err.status().is_server_error());
        }
    }
}
