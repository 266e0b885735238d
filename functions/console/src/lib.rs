//! The web console (README, "Console"): a page and its files, embedded in
//! this binary at build time (`build.rs`), so nothing but cargo builds or
//! tests the product. The HTTP API routes exactly `GET /`,
//! `/assets/{proxy+}`, `/config.json` and `/reset-password` here; every
//! JSON route keeps its own 404 and 405, and none of these is in
//! `openapi.yaml`.
//!
//! - `/` and `/reset-password`: `index.html`, `no-cache`, with the
//!   Content-Security-Policy and the other security headers. The app uses
//!   hash routes; `/reset-password?token=` is where the reset mail links.
//! - `/assets/<hash>/<path>`: the embedded files, `immutable` (the hash
//!   changes with any file); another hash is 404.
//! - `/config.json`: where each family answers, for the page.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde_json::{json, Value};
use shared::config::{ConfigError, Env};
use shared::http::{finish, origin_of, HealthChecks};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/assets.rs"));
}

pub use embedded::{ASSETS, BUILD_HASH};

/// The API families the page calls, by the function that serves them.
const FAMILIES: &[&str] = &["auth", "credits", "usage", "predict"];

/// Where the page finds each family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Behind the HTTP API: every family on the console's origin; the
    /// stream on the function URL `STREAM_URL` (empty: the same origin).
    Gateway {
        /// The streaming function's base URL.
        stream: String,
    },
    /// Under `cargo lambda watch`: each function at `/lambda-url/<name>`
    /// on the console's origin, the stream too unless `STREAM_URL` names
    /// another base.
    LambdaUrl {
        /// The streaming function's base URL, when not the default.
        stream: Option<String>,
    },
}

/// What the console reads from its environment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Where the families answer.
    pub layout: Layout,
    /// `CONSOLE_STAND_IN` (false): `make run` sets it when Flowise is the
    /// local stand-in, and every page then says so in a banner.
    pub stand_in: bool,
}

impl Config {
    /// `CONSOLE_LAYOUT` (`gateway`, the default, or `lambda-url`) and, for
    /// the gateway layout, `STREAM_URL`.
    pub fn from_env(env: &Env) -> Result<Config, ConfigError> {
        let layout = match env.optional("CONSOLE_LAYOUT").as_deref() {
            None | Some("gateway") => Layout::Gateway {
                stream: match env.optional("STREAM_URL") {
                    Some(_) => env.http_url("STREAM_URL")?,
                    None => String::new(),
                },
            },
            Some("lambda-url") => Layout::LambdaUrl {
                stream: match env.optional("STREAM_URL") {
                    Some(_) => Some(env.http_url("STREAM_URL")?),
                    None => None,
                },
            },
            Some(other) => {
                return Err(ConfigError::Malformed {
                    name: "CONSOLE_LAYOUT".into(),
                    reason: format!("{other}: must be gateway or lambda-url"),
                })
            }
        };
        let stand_in = env.parse_or("CONSOLE_STAND_IN", false)?;
        Ok(Config { layout, stand_in })
    }

    /// `/config.json`: each family's base, and the stream's.
    pub fn page_config(&self) -> Value {
        let mut bases = serde_json::Map::new();
        for family in FAMILIES {
            let base = match self.layout {
                Layout::Gateway { .. } => String::new(),
                Layout::LambdaUrl { .. } => format!("/lambda-url/{family}"),
            };
            bases.insert((*family).into(), json!(base));
        }
        let stream = match &self.layout {
            Layout::Gateway { stream }
            | Layout::LambdaUrl {
                stream: Some(stream),
            } => stream.clone(),
            Layout::LambdaUrl { stream: None } => "/lambda-url/predict-stream".into(),
        };
        bases.insert("stream".into(), json!(stream));
        if self.stand_in {
            bases.insert("standIn".into(), json!(true));
        }
        Value::Object(bases)
    }

    /// The page's Content-Security-Policy: its own files only, and
    /// connections to its origin and the stream's.
    pub fn content_security_policy(&self) -> String {
        let stream = match &self.layout {
            Layout::Gateway { stream }
            | Layout::LambdaUrl {
                stream: Some(stream),
            } => origin_of(stream),
            Layout::LambdaUrl { stream: None } => None,
        };
        let connect = match stream {
            Some(origin) => format!("'self' {origin}"),
            None => "'self'".into(),
        };
        format!(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
             font-src 'self'; connect-src {connect}; base-uri 'none'; frame-ancestors 'none'; \
             form-action 'self'"
        )
    }
}

/// The content type of an embedded file, by its extension.
fn content_type(path: &str) -> &'static str {
    match path.rsplit('.').next().unwrap_or_default() {
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" => "application/json",
        "svg" => "image/svg+xml",
        "png" => "image/png",
        "woff2" => "font/woff2",
        "woff" => "font/woff",
        "ttf" => "font/ttf",
        _ => "text/plain; charset=utf-8",
    }
}

/// The console's state: its configuration and the page, built once.
#[derive(Debug, Clone)]
pub struct Console {
    config: Config,
    csp: HeaderValue,
    index: String,
}

impl Console {
    /// The console of `config`.
    pub fn new(config: Config) -> Console {
        let csp =
            HeaderValue::from_str(&config.content_security_policy()).expect("the policy is ASCII");
        let index = embedded::INDEX_HTML.replace("{{assets}}", &format!("assets/{BUILD_HASH}"));
        Console { config, csp, index }
    }

    fn secured(&self, mut response: Response) -> Response {
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_SECURITY_POLICY, self.csp.clone());
        headers.insert(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        );
        headers.insert(
            header::REFERRER_POLICY,
            HeaderValue::from_static("no-referrer"),
        );
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
        response
    }
}

fn cached(kind: &'static str, cache: &'static str, body: impl IntoResponse) -> Response {
    let mut headers = HeaderMap::new();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(kind));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    (headers, body).into_response()
}

async fn index(State(console): State<Console>) -> Response {
    let page = cached(
        "text/html; charset=utf-8",
        "no-cache",
        console.index.clone(),
    );
    console.secured(page)
}

async fn config(State(console): State<Console>) -> Response {
    let body = console.config.page_config().to_string();
    console.secured(cached("application/json", "no-cache", body))
}

async fn asset(State(console): State<Console>, Path(path): Path<String>) -> Response {
    let found = path
        .split_once('/')
        .filter(|(hash, _)| *hash == BUILD_HASH)
        .and_then(|(_, name)| ASSETS.iter().find(|(n, _)| *n == name));
    let response = match found {
        Some((name, bytes)) => cached(
            content_type(name),
            "public, max-age=31536000, immutable",
            *bytes,
        ),
        None => (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": "not_found", "message": format!("no asset {path}")})),
        )
            .into_response(),
    };
    console.secured(response)
}

/// The console's four routes (what `gateway-admin serve` mounts).
pub fn routes(console: Console) -> Router {
    Router::new()
        .route("/", get(index))
        .route("/reset-password", get(index))
        .route("/config.json", get(config))
        .route("/assets/{*path}", get(asset))
        .with_state(console)
}

/// The console's router: its four routes, `/health` and what every
/// router adds.
pub fn router(console: Console) -> Router {
    finish(routes(console).merge(HealthChecks::default().router()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_policy_allows_the_stream_origin_and_nothing_inline() {
        let config = Config {
            layout: Layout::Gateway {
                stream: "https://abc.lambda-url.eu-west-1.on.aws/".into(),
            },
            stand_in: false,
        };
        let csp = config.content_security_policy();
        assert!(csp.contains("connect-src 'self' https://abc.lambda-url.eu-west-1.on.aws;"));
        assert!(csp.contains("script-src 'self';") && !csp.contains("unsafe"));
        assert!(csp.contains("frame-ancestors 'none'") && csp.contains("base-uri 'none'"));
        assert_eq!(
            config.page_config()["stream"],
            "https://abc.lambda-url.eu-west-1.on.aws/"
        );
        assert_eq!(config.page_config()["auth"], "");
        assert!(config.page_config().get("standIn").is_none());
    }

    #[test]
    fn under_cargo_lambda_watch_each_family_has_its_prefix() {
        let config = Config::from_env(&Env::from_pairs([
            ("CONSOLE_LAYOUT", "lambda-url"),
            ("CONSOLE_STAND_IN", "true"),
        ]))
        .unwrap();
        assert_eq!(config.page_config()["standIn"], true);
        assert_eq!(config.page_config()["credits"], "/lambda-url/credits");
        assert_eq!(config.page_config()["stream"], "/lambda-url/predict-stream");
        assert!(config
            .content_security_policy()
            .contains("connect-src 'self';"));
    }
}
