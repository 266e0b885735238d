//! The console's refresh token, kept in a cookie the page cannot read
//! (README §5). A request with `X-Console: 1` to a route that hands out or
//! takes a refresh token is the console's: every refresh token its answer
//! would carry (sign-in, refresh, email proof, password reset and change)
//! goes into `__Host-fgw_refresh` instead (HttpOnly, Secure,
//! SameSite=Strict, Path=/, living as long as the token), and `refresh` and
//! `logout` without a token in the body read it from there; `logout`,
//! `logout-all` and a refused refresh clear it. Without the header nothing changes: programs keep the token in the
//! body, and a cookie alone is never read, so a page of another site
//! cannot spend it (it cannot send the header without a preflight the API
//! does not grant, and SameSite=Strict keeps the cookie off its requests).
//! The handlers know nothing of this: one layer moves the token between
//! the body and the cookie.

use std::time::Duration;

use axum::body::{to_bytes, Body};
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use shared::error::ApiError;

/// The cookie's name (`__Host-`: Secure, Path=/, no Domain, or the
/// browser refuses it).
pub const COOKIE: &str = "__Host-fgw_refresh";
/// The header that makes a request the console's.
pub const CONSOLE_HEADER: &str = "x-console";
/// The largest body the layer reads (sign-in and token bodies are small).
const MAX_BODY: usize = 64 * 1024;
/// The routes whose answers carry a refresh token, or that take one.
const TOKEN_ROUTES: &[&str] = &[
    "/api/auth/login",
    "/api/auth/refresh",
    "/api/auth/logout",
    "/api/auth/logout-all",
    "/api/auth/verify-email",
    "/api/auth/reset-password",
    "/api/profile/change-password",
];

fn is_console(headers: &HeaderMap) -> bool {
    headers.get(CONSOLE_HEADER).and_then(|v| v.to_str().ok()) == Some("1")
}

/// The refresh token in the request's cookies, if any.
fn cookie_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.to_owned())
        .filter(|value| !value.is_empty())
}

fn set_cookie(token: &str, max_age: u64) -> Option<HeaderValue> {
    HeaderValue::from_str(&format!(
        "{COOKIE}={token}; HttpOnly; Secure; SameSite=Strict; Path=/; Max-Age={max_age}"
    ))
    .ok()
}

/// A body that names no refresh token: empty, or a JSON object without
/// `refreshToken`.
fn names_no_token(bytes: &[u8]) -> bool {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return true;
    }
    serde_json::from_slice::<Value>(bytes)
        .is_ok_and(|v| v.is_object() && v.get("refreshToken").is_none())
}

/// The layer; `ttl` is the refresh token's lifetime, the cookie's too.
pub async fn layer(State(ttl): State<Duration>, req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    if !is_console(req.headers()) || !TOKEN_ROUTES.contains(&path.as_str()) {
        return next.run(req).await;
    }
    let reads_token = matches!(path.as_str(), "/api/auth/refresh" | "/api/auth/logout");
    let req = if reads_token {
        match with_cookie_token(req).await {
            Ok(req) => req,
            Err(refused) => return refused,
        }
    } else {
        req
    };
    let response = next.run(req).await;
    // A refused refresh leaves nothing worth keeping.
    let ends_session = matches!(path.as_str(), "/api/auth/logout" | "/api/auth/logout-all")
        || (path == "/api/auth/refresh" && response.status() == StatusCode::UNAUTHORIZED);
    let (mut parts, body) = response.into_parts();
    let is_json = parts
        .headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !is_json {
        return Response::from_parts(parts, body);
    }
    // A token route's answer is small; one that is not is an error of ours.
    let Ok(bytes) = to_bytes(body, MAX_BODY).await else {
        tracing::error!(
            path,
            "a token route answered more than the cookie layer reads"
        );
        return ApiError::Internal(anyhow::anyhow!("oversized token answer")).into_response();
    };
    let mut json: Value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    let token = json
        .as_object_mut()
        .and_then(|o| o.remove("refreshToken"))
        .and_then(|t| t.as_str().map(str::to_owned));
    let ends =
        ends_session && (parts.status.is_success() || parts.status == StatusCode::UNAUTHORIZED);
    let cookie = match (&token, ends) {
        (Some(token), _) => set_cookie(token, ttl.as_secs()),
        (None, true) => set_cookie("", 0),
        (None, false) => None,
    };
    let Some(cookie) = cookie else {
        return Response::from_parts(parts, Body::from(bytes));
    };
    parts.headers.append(header::SET_COOKIE, cookie);
    parts.headers.remove(header::CONTENT_LENGTH);
    let body = if token.is_some() {
        Body::from(json.to_string())
    } else {
        Body::from(bytes)
    };
    Response::from_parts(parts, body)
}

/// `req` with the cookie's token as its body's `refreshToken`, when the
/// body names none and the cookie holds one (413 for a body too large to
/// be a token's).
async fn with_cookie_token(req: Request) -> Result<Request, Response> {
    let (mut parts, body) = req.into_parts();
    let bytes = to_bytes(body, MAX_BODY).await.map_err(|_| {
        ApiError::PayloadTooLarge {
            message: format!("the request body is larger than {MAX_BODY} bytes"),
        }
        .into_response()
    })?;
    let Some(token) = cookie_token(&parts.headers).filter(|_| names_no_token(&bytes)) else {
        return Ok(Request::from_parts(parts, Body::from(bytes)));
    };
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    let body = serde_json::json!({"refreshToken": token}).to_string();
    Ok(Request::from_parts(parts, Body::from(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cookie_is_found_among_others_and_an_empty_one_is_none() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; __Host-fgw_refresh=tok.en; b=2"),
        );
        assert_eq!(cookie_token(&headers).as_deref(), Some("tok.en"));
        headers.insert(
            header::COOKIE,
            HeaderValue::from_static("__Host-fgw_refresh="),
        );
        assert_eq!(cookie_token(&headers), None);
        headers.insert(header::COOKIE, HeaderValue::from_static("fgw_refresh=x"));
        assert_eq!(cookie_token(&headers), None);
    }

    #[test]
    fn a_body_naming_a_token_wins_over_the_cookie() {
        assert!(names_no_token(b""));
        assert!(names_no_token(b" {} "));
        assert!(!names_no_token(br#"{"refreshToken": "x"}"#));
        assert!(!names_no_token(b"not json"));
    }
}
