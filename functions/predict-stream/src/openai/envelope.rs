//! OpenAI's error envelope, `{"error": {"message", "type", "param",
//! "code"}}`, for every answer under `/v1` that is an error: the routes'
//! own, the extractors' rejections (a bad key, a body that is not JSON),
//! unknown routes and methods, and a store that is down. The routes fail
//! with the gateway's [`ApiError`] like every other route; one layer
//! rewrites the body, so no error can leave `/v1` in the other format.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};
use shared::error::{ApiError, ErrorBody};

/// The longest error body the layer reads back (the gateway's are short).
const MAX_ERROR_BODY: usize = 64 * 1024;

/// A route's error, with the request field it is about (`param`) and, when
/// OpenAI has a code of its own for it, that code (`model_not_found`).
#[derive(Debug)]
pub struct V1Error {
    error: ApiError,
    param: Option<String>,
    code: Option<&'static str>,
}

/// What a [`V1Error`] adds to the gateway's error, read by [`layer`].
#[derive(Debug, Clone)]
struct Details {
    param: Option<String>,
    code: Option<&'static str>,
}

impl V1Error {
    /// `error`, about the request field `param`.
    pub fn about(error: ApiError, param: impl Into<String>) -> V1Error {
        V1Error {
            error,
            param: Some(param.into()),
            code: None,
        }
    }

    /// Its status.
    pub fn status(&self) -> StatusCode {
        self.error.status()
    }

    /// The request field it is about.
    pub fn param(&self) -> Option<&str> {
        self.param.as_deref()
    }

    /// 400 about `param`.
    pub fn invalid(param: impl Into<String>, message: impl Into<String>) -> V1Error {
        let error = ApiError::BadRequest {
            code: "invalid_request",
            message: message.into(),
        };
        V1Error::about(error, param)
    }

    /// 404 `model_not_found`.
    pub fn no_model(model: &str) -> V1Error {
        let error = ApiError::not_found(format!(
            "the model `{model}` does not exist or you do not have access to it"
        ));
        V1Error::model(error, "messages")
    }

    /// A prediction's refusal, about the request's field: a 404 is the
    /// chatflow's (`model_not_found`: the prediction reads no other
    /// resource of a `/v1` request), a 403 for the chatflow is about
    /// `model`, and an upload's refusal (400, 413, 415) about `question`,
    /// the content of the message whose images were sent.
    pub fn model(error: ApiError, question: &str) -> V1Error {
        let (param, code) = match &error {
            ApiError::NotFound { .. } => (Some("model".to_owned()), Some("model_not_found")),
            ApiError::Forbidden {
                code: "forbidden" | "key_chatflow_not_allowed",
                ..
            } => (Some("model".to_owned()), None),
            // A system message the chatflow refuses names the messages.
            ApiError::BadRequest { message, .. } if message.starts_with("messages: ") => {
                (Some("messages".to_owned()), None)
            }
            ApiError::BadRequest { .. }
            | ApiError::PayloadTooLarge { .. }
            | ApiError::UnsupportedMediaType { .. } => (Some(question.to_owned()), None),
            _ => (None, None),
        };
        V1Error { error, param, code }
    }

    /// A body that fails to parse: the gateway names the field at the
    /// start of its message (`messages[0].role: ...`), which is the param.
    pub fn parsing(error: ApiError) -> V1Error {
        let param = match &error {
            ApiError::BadRequest {
                code: "invalid_input",
                message,
            } => message
                .split_once(": ")
                .map(|(field, _)| field.to_owned())
                .filter(|field| !field.contains(' ')),
            _ => None,
        };
        V1Error {
            error,
            param,
            code: None,
        }
    }
}

impl From<ApiError> for V1Error {
    fn from(error: ApiError) -> Self {
        V1Error {
            error,
            param: None,
            code: None,
        }
    }
}

impl IntoResponse for V1Error {
    fn into_response(self) -> Response {
        let mut response = self.error.into_response();
        response.extensions_mut().insert(Details {
            param: self.param,
            code: self.code,
        });
        response
    }
}

/// OpenAI's error `type` for a status.
fn error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        401 => "authentication_error",
        402 => "insufficient_quota",
        403 => "permission_error",
        404 => "not_found_error",
        409 => "conflict_error",
        429 => "rate_limit_error",
        500.. => "api_error",
        _ => "invalid_request_error",
    }
}

/// The envelope of an error.
pub fn envelope(status: StatusCode, code: &str, message: &str, param: Option<&str>) -> Value {
    let kind = if code == "model_not_found" {
        "invalid_request_error"
    } else {
        error_type(status)
    };
    json!({"error": {"message": message, "type": kind, "param": param, "code": code}})
}

/// Whether `path` is one of the OpenAI-compatible routes.
pub fn is_v1(path: &str) -> bool {
    path == "/v1" || path.starts_with("/v1/")
}

/// The layer: every error answered under `/v1` in the envelope, with
/// `x-should-retry: false` on a 409 (OpenAI's clients retry a 409
/// otherwise; here it means the same idempotency key is in use, or was
/// used with another body).
pub async fn layer(req: Request, next: Next) -> Response {
    // A HEAD answer has no body to rewrite.
    let v1 = is_v1(req.uri().path()) && req.method() != axum::http::Method::HEAD;
    let response = next.run(req).await;
    let status = response.status();
    if !v1 || !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let ours = serde_json::from_slice::<ErrorBody>(&bytes).unwrap_or_else(|_| ErrorBody {
        error: "error".into(),
        message: status
            .canonical_reason()
            .unwrap_or("the request failed")
            .to_lowercase(),
        needed: None,
        available: None,
        next_credits_at: None,
        next_credits: None,
        expiring_soon: None,
        retry_after_seconds: None,
        email: None,
        field: None,
    });
    let details = parts.extensions.remove::<Details>();
    let (param, code) = details.map_or((None, None), |d| (d.param, d.code));
    let code = code.unwrap_or(&ours.error);
    let body = envelope(status, code, &ours.message, param.as_deref());
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::CONFLICT {
        parts
            .headers
            .insert("x-should-retry", HeaderValue::from_static("false"));
    }
    Response::from_parts(parts, Body::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_status_has_the_type_openai_clients_expect() {
        let kind = |status: u16, code: &str| {
            envelope(StatusCode::from_u16(status).unwrap(), code, "m", None)["error"]["type"]
                .as_str()
                .unwrap()
                .to_owned()
        };
        assert_eq!(kind(400, "invalid_input"), "invalid_request_error");
        assert_eq!(kind(401, "invalid_key"), "authentication_error");
        assert_eq!(kind(402, "insufficient_credits"), "insufficient_quota");
        assert_eq!(kind(403, "forbidden"), "permission_error");
        assert_eq!(kind(404, "model_not_found"), "invalid_request_error");
        assert_eq!(kind(404, "not_found"), "not_found_error");
        assert_eq!(kind(429, "rate_limited"), "rate_limit_error");
        assert_eq!(kind(502, "upstream_error"), "api_error");
    }

    #[test]
    fn a_parse_error_names_its_field_as_the_param() {
        let error = ApiError::invalid_field("messages[2].role", "unknown variant");
        assert_eq!(V1Error::parsing(error).param(), Some("messages[2].role"));
        let whole = ApiError::BadRequest {
            code: "invalid_input",
            message: "missing field `model`".into(),
        };
        assert_eq!(V1Error::parsing(whole).param(), None);
    }
}
