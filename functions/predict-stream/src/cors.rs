//! CORS for the streaming function's URL, answered by the function itself
//! (README §8): the console is served from the HTTP API's origin and
//! streams from the function URL's, so the browser asks first. Origins
//! come from `CORS_ALLOWED_ORIGINS` (comma-separated; default: the
//! origin of `APP_BASE_URL`, the console's URL). Requests carry a bearer
//! token, never a cookie, so credentials are not allowed. Every answer to
//! an allowed origin, errors included, carries the headers, so the page
//! can read a 402's numbers and a 429's `Retry-After`.

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use shared::config::{ConfigError, Env};
use shared::error::ApiError;
use shared::http::origin_of;

/// The request headers a page may send.
const ALLOWED_HEADERS: &str = "authorization, content-type, idempotency-key, x-request-id";
/// The answer headers a page may read.
const EXPOSED_HEADERS: &str = "retry-after, x-request-id, idempotent-replayed";
/// How long a browser may keep a preflight's answer.
const MAX_AGE_SECONDS: &str = "600";

/// The origins allowed to call the function from a browser.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cors {
    origins: Vec<String>,
}

impl Cors {
    /// These origins (URLs are cut to their origin).
    pub fn allowing<'a>(origins: impl IntoIterator<Item = &'a str>) -> Result<Cors, String> {
        let origins = origins
            .into_iter()
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(|o| origin_of(o).ok_or_else(|| format!("{o} is not an http(s) origin")))
            .collect::<Result<_, _>>()?;
        Ok(Cors { origins })
    }

    /// `CORS_ALLOWED_ORIGINS`, else the origin of `APP_BASE_URL`, else
    /// none (no browser may call).
    pub fn from_env(env: &Env) -> Result<Cors, ConfigError> {
        let malformed = |name: &str, reason: String| ConfigError::Malformed {
            name: name.to_owned(),
            reason,
        };
        match (
            env.optional("CORS_ALLOWED_ORIGINS"),
            env.optional("APP_BASE_URL"),
        ) {
            (Some(list), _) => {
                Cors::allowing(list.split(',')).map_err(|e| malformed("CORS_ALLOWED_ORIGINS", e))
            }
            (None, Some(console)) => {
                Cors::allowing([console.as_str()]).map_err(|e| malformed("APP_BASE_URL", e))
            }
            (None, None) => Ok(Cors::default()),
        }
    }

    fn allows(&self, origin: &str) -> bool {
        self.origins.iter().any(|o| o.eq_ignore_ascii_case(origin))
    }

    /// The layer: preflights answered here, every other answer to an
    /// allowed origin given the headers.
    pub async fn layer(self, req: Request, next: Next) -> Response {
        let origin = req
            .headers()
            .get(header::ORIGIN)
            .and_then(|o| o.to_str().ok())
            .map(str::to_owned);
        let Some(origin) = origin else {
            return next.run(req).await;
        };
        let preflight = req.method() == Method::OPTIONS
            && req
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD);
        let allowed = self.allows(&origin);
        if preflight && !allowed {
            return ApiError::Forbidden {
                code: "origin_not_allowed",
                message: format!("{origin} may not call this function from a browser"),
            }
            .into_response();
        }
        let mut response = if preflight {
            let mut response = Response::new(Body::empty());
            *response.status_mut() = StatusCode::NO_CONTENT;
            let headers = response.headers_mut();
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_METHODS,
                HeaderValue::from_static("GET, POST, OPTIONS"),
            );
            headers.insert(
                header::ACCESS_CONTROL_ALLOW_HEADERS,
                HeaderValue::from_static(ALLOWED_HEADERS),
            );
            headers.insert(
                header::ACCESS_CONTROL_MAX_AGE,
                HeaderValue::from_static(MAX_AGE_SECONDS),
            );
            response
        } else {
            next.run(req).await
        };
        let headers = response.headers_mut();
        headers.append(header::VARY, HeaderValue::from_static("origin"));
        if allowed {
            if let Ok(value) = HeaderValue::from_str(&origin) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, value);
            }
            headers.insert(
                header::ACCESS_CONTROL_EXPOSE_HEADERS,
                HeaderValue::from_static(EXPOSED_HEADERS),
            );
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_are_cut_from_urls_and_bad_ones_refused() {
        let cors = Cors::allowing([
            "https://Console.example.com/app/",
            " http://127.0.0.1:9000 ",
        ])
        .unwrap();
        assert!(cors.allows("https://console.example.com"));
        assert!(cors.allows("http://127.0.0.1:9000"));
        assert!(!cors.allows("https://console.example.com.evil.test"));
        assert!(!cors.allows("null"));
        assert!(Cors::allowing(["ftp://x"]).is_err());
        assert!(Cors::allowing(["*"]).is_err());
    }
}
