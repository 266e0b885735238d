//! What every HTTP function's router shares: the request span with its
//! request id, JSON 404/405 answers, the 501 answer of a route whose issue
//! has not landed yet, `GET /openapi.yaml`, and `GET /health`.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tracing::Instrument;

use crate::error::ApiError;

/// Header carrying the request id back to the client.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Wraps a function's router with what every function shares: JSON 404 for
/// unknown routes, JSON 405 for a known route with another method, and a
/// log span per request carrying `request_id` (Lambda's, else the client's
/// `x-request-id`, else a new one) and, once the token is verified, `user_id`.
pub fn finish(router: Router) -> Router {
    router
        .route("/openapi.yaml", get(openapi))
        .fallback(unknown_route)
        .method_not_allowed_fallback(|| async { ApiError::MethodNotAllowed })
        .layer(middleware::from_fn(request_span))
}

/// The OpenAPI 3 description of every route of every function
/// (`openapi.yaml` at the root of the repository, checked against the
/// routes by the e2e tests).
pub const OPENAPI: &str = include_str!("../../openapi.yaml");

/// This description.
#[utoipa::path(get, path = "/openapi.yaml", tag = "every function", security(()),
    responses((status = 200, description = "OpenAPI YAML", content_type = "application/yaml", body = String)))]
async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/yaml")],
        OPENAPI,
    )
}

/// The stores' state, as every function's `GET /health` reports it.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct HealthBody {
    /// `ok`.
    status: String,
    /// Each store: `ok`, `unreachable` (or, for the indexes, `missing`, or
    /// which unique index duplicate values block).
    stores: std::collections::BTreeMap<String, String>,
}

/// The description of what [`finish`] and [`HealthChecks::router`] add
/// to every function: `GET /health` and `GET /openapi.yaml`.
pub fn common_openapi() -> utoipa::openapi::OpenApi {
    let (_, health) = utoipa_axum::router::OpenApiRouter::<HealthChecks>::new()
        .routes(utoipa_axum::routes!(health))
        .split_for_parts();
    let (_, description) = utoipa_axum::router::OpenApiRouter::<()>::new()
        .routes(utoipa_axum::routes!(openapi))
        .split_for_parts();
    let mut doc = health;
    doc.merge(description);
    doc
}

async fn unknown_route(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::not_found(format!("no route for {method} {}", uri.path()))
}

/// The answer of a route whose implementation has not landed: 501 in the
/// error format, never a fake success.
pub async fn not_implemented(method: axum::http::Method, path: Option<MatchedPath>) -> ApiError {
    let path = path.map(|p| p.as_str().to_owned()).unwrap_or_default();
    ApiError::NotImplemented {
        route: format!("{method} {path}"),
    }
}

fn request_id(req: &Request) -> String {
    if let Some(ctx) = req.extensions().get::<lambda_http::Context>() {
        if !ctx.request_id.is_empty() {
            return ctx.request_id.clone();
        }
    }
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128 && v.bytes().all(|b| b.is_ascii_graphic()))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

/// The id of the request being served (Lambda's request id when there is
/// one), available to handlers as an extension.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// When the request reached the function, available to handlers as an
/// extension: deadlines (the buffered prediction's) count from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestArrival(pub Instant);

async fn request_span(mut req: Request, next: Next) -> Response {
    let request_id = request_id(&req);
    req.extensions_mut().insert(RequestId(request_id.clone()));
    req.extensions_mut().insert(RequestArrival(Instant::now()));
    let span = tracing::info_span!(
        "request",
        request_id = %request_id,
        method = %req.method(),
        // The path only: query strings are never logged.
        path = %req.uri().path(),
        user_id = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(req).instrument(span.clone()).await;
    let status = response.status().as_u16();
    span.in_scope(|| {
        tracing::info!(
            status,
            latency_ms = started.elapsed().as_millis() as u64,
            "request finished"
        )
    });
    if let Ok(value) = request_id.parse() {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

/// `scheme://host[:port]` of an `http(s)` URL, lower-cased: what CORS
/// compares and a Content-Security-Policy names.
pub fn origin_of(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    let host = rest.split(['/', '?', '#']).next()?;
    (!host.is_empty() && matches!(scheme, "http" | "https"))
        .then(|| format!("{scheme}://{host}").to_ascii_lowercase())
}

/// Checks a client's idempotency key: 1 to 255 visible ASCII characters.
pub fn parse_idempotency_key(field: &str, raw: &str) -> Result<String, ApiError> {
    let key = raw.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field(
            field,
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

/// The `Idempotency-Key` of a request: the header, else the body's
/// `idempotencyKey` field (`Value::Null` for none); both at once must
/// agree.
pub fn idempotency_key(
    headers: &axum::http::HeaderMap,
    body: &serde_json::Value,
) -> Result<Option<String>, ApiError> {
    let header = match headers.get("idempotency-key") {
        Some(v) => {
            let text = v
                .to_str()
                .map_err(|_| ApiError::invalid_field("Idempotency-Key", "must be visible ASCII"))?;
            Some(parse_idempotency_key("Idempotency-Key", text)?)
        }
        None => None,
    };
    let field = match body.get("idempotencyKey") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(parse_idempotency_key("idempotencyKey", s)?),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "idempotencyKey",
                "must be a string",
            ))
        }
    };
    match (header, field) {
        (Some(h), Some(f)) if h != f => Err(ApiError::invalid_field(
            "idempotencyKey",
            "differs from the Idempotency-Key header",
        )),
        (h, f) => Ok(h.or(f)),
    }
}

/// The stores a function depends on, for `GET /health`.
#[derive(Clone, Default)]
pub struct HealthChecks {
    /// PostgreSQL, when the function uses it.
    pub postgres: Option<sqlx::PgPool>,
    /// MongoDB, when the function uses it.
    pub mongodb: Option<mongodb::Client>,
    /// The MongoDB indexes the function needs, when it uses MongoDB.
    pub indexes: Option<crate::db::mongo::IndexGuard>,
}

/// Answers 503 naming the missing MongoDB indexes until `guard` has seen
/// them created (retrying on every request), so no request runs without
/// the unique indexes it relies on.
pub fn require_indexes(router: Router, guard: crate::db::mongo::IndexGuard) -> Router {
    router.layer(middleware::from_fn(move |req: Request, next: Next| {
        let guard = guard.clone();
        async move {
            match guard.ensure().await {
                Ok(()) => next.run(req).await,
                Err(missing) => ApiError::StoreUnavailable {
                    store: "mongodb",
                    detail: missing,
                }
                .into_response(),
            }
        }
    }))
}

/// How long one store may take to answer a health probe.
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);

impl HealthChecks {
    /// `GET /health`: 200 with each store `ok`, or 503 naming the failing store.
    pub fn router(self) -> Router {
        self.router_at("/health")
    }

    /// The same check at `path` (the serve mode's `/health/<function>`).
    pub fn router_at(self, path: &str) -> Router {
        Router::new().route(path, get(health)).with_state(self)
    }

    /// Probes every store concurrently; `(name, ok)` in a fixed order.
    pub async fn probe(&self) -> Vec<(&'static str, bool)> {
        let pg = async {
            match &self.postgres {
                None => None,
                Some(pool) => Some(
                    tokio::time::timeout(
                        PROBE_TIMEOUT,
                        sqlx::query!("SELECT 1 AS one").fetch_one(pool),
                    )
                    .await
                    .map(|r| r.is_ok())
                    .unwrap_or(false),
                ),
            }
        };
        let mongo = async {
            match &self.mongodb {
                None => None,
                Some(client) => Some(
                    tokio::time::timeout(
                        PROBE_TIMEOUT,
                        client.database("admin").run_command(bson::doc! {"ping": 1}),
                    )
                    .await
                    .map(|r| r.is_ok())
                    .unwrap_or(false),
                ),
            }
        };
        let indexes = async {
            match &self.indexes {
                None => None,
                Some(guard) => Some(guard.ensure().await.is_ok()),
            }
        };
        let (pg, mongo, indexes) = tokio::join!(pg, mongo, indexes);
        [
            ("postgres", pg),
            ("mongodb", mongo),
            ("mongodbIndexes", indexes),
        ]
        .into_iter()
        .filter_map(|(name, ok)| ok.map(|ok| (name, ok)))
        .collect()
    }
}

/// The state of the function's stores: 200 when they answer, 503 naming
/// the failing one.
#[utoipa::path(get, path = "/health", tag = "every function", security(()),
    responses((status = 200, description = "Every store answers", body = HealthBody),
              (status = 503, description = "A store is unreachable (named)", body = crate::error::ErrorBody)))]
async fn health(State(checks): State<HealthChecks>) -> Response {
    let results = checks.probe().await;
    let why_missing = checks
        .indexes
        .as_ref()
        .and_then(|g| g.failure())
        .unwrap_or_else(|| "missing".to_owned());
    let stores: serde_json::Map<String, serde_json::Value> = results
        .iter()
        .map(|(name, ok)| {
            let failed = if *name == "mongodbIndexes" {
                why_missing.as_str()
            } else {
                "unreachable"
            };
            ((*name).to_owned(), json!(if *ok { "ok" } else { failed }))
        })
        .collect();
    let failing: Vec<&str> = results
        .iter()
        .filter(|(_, ok)| !ok)
        .map(|(n, _)| *n)
        .collect();
    if failing.is_empty() {
        (
            StatusCode::OK,
            Json(json!({"status": "ok", "stores": stores})),
        )
            .into_response()
    } else {
        tracing::warn!(failing = ?failing, "health check failed");
        (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "error": "store_unavailable",
                "message": failing
                    .iter()
                    .map(|n| if *n == "mongodbIndexes" {
                        format!("the MongoDB indexes are missing: {why_missing}")
                    } else {
                        format!("{n} is unreachable")
                    })
                    .collect::<Vec<_>>()
                    .join("; "),
                "stores": stores,
            })),
        )
            .into_response()
    }
}

/// Serves `router` on `listener` until the process ends, with Nagle's
/// algorithm off on every connection: a streamed answer's small frames
/// (an SSE token) go out at once instead of waiting up to 40 ms for the
/// client's delayed acknowledgement.
#[cfg(feature = "serve")]
pub async fn serve(listener: tokio::net::TcpListener, router: Router) -> std::io::Result<()> {
    use axum::serve::ListenerExt;
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::warn!(error = %err, "TCP_NODELAY could not be set");
        }
    });
    axum::serve(listener, router).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn idempotency_keys_come_from_the_header_or_the_body_and_must_agree() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(idempotency_key(&headers, &json!({})).unwrap(), None);
        assert_eq!(
            idempotency_key(&headers, &json!({"idempotencyKey": "b1"}))
                .unwrap()
                .as_deref(),
            Some("b1")
        );
        headers.insert("idempotency-key", "h1".parse().unwrap());
        assert_eq!(
            idempotency_key(&headers, &json!({})).unwrap().as_deref(),
            Some("h1")
        );
        assert!(idempotency_key(&headers, &json!({"idempotencyKey": "b1"})).is_err());
        let none = axum::http::HeaderMap::new();
        assert!(idempotency_key(&none, &json!({"idempotencyKey": 5})).is_err());
        assert!(parse_idempotency_key("k", "has space").is_err());
        assert!(parse_idempotency_key("k", &"k".repeat(256)).is_err());
    }
}
