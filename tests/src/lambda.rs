//! A Lambda emulator: the Runtime API the function binaries poll, and an
//! HTTP front that turns each request into a function-URL event (API
//! Gateway HTTP v2 payload) the way `cargo lambda watch` does, at
//! `/lambda-url/<function>/<path>`.
//!
//! The binaries are the real release artefacts' debug builds, started as
//! processes with `AWS_LAMBDA_RUNTIME_API` pointing here, exactly as Lambda
//! and cargo-lambda start `bootstrap`. Buffered responses come back as the
//! JSON the runtime posts; streamed responses (`Lambda-Runtime-Function-
//! Response-Mode: streaming`) are relayed chunk by chunk after their
//! metadata prelude and its eight NUL bytes, as a function URL does.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use base64::Engine;
use bytes::Bytes;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot, Mutex};

/// How long a request may wait for its function to answer.
pub const INVOKE_TIMEOUT: Duration = Duration::from_secs(120);

/// One event waiting for a function instance.
struct Invocation {
    id: String,
    event: Value,
}

/// What a function instance answered.
enum Outcome {
    /// The buffered response JSON.
    Buffered(Value),
    /// A streamed HTTP response: prelude, then the body's chunks.
    Streaming {
        prelude: Value,
        chunks: mpsc::Receiver<Bytes>,
    },
    /// The function reported an error (or died).
    Error(Value),
}

/// The Runtime API of one function, shared by all its instances.
pub struct RuntimeApi {
    queue_tx: mpsc::Sender<Invocation>,
    queue_rx: Mutex<mpsc::Receiver<Invocation>>,
    pending: Mutex<HashMap<String, oneshot::Sender<Outcome>>>,
    /// Bumped every time an instance asks for work: tells start-up it is ready.
    polls: tokio::sync::watch::Sender<u64>,
    /// `host:port` to put in `AWS_LAMBDA_RUNTIME_API`.
    pub address: SocketAddr,
    function_arn: String,
}

impl RuntimeApi {
    /// Starts the Runtime API for function `name` on a free port.
    pub async fn start(name: &str) -> Arc<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the runtime API");
        let address = listener.local_addr().expect("address");
        let (queue_tx, queue_rx) = mpsc::channel(1024);
        let api = Arc::new(RuntimeApi {
            queue_tx,
            queue_rx: Mutex::new(queue_rx),
            pending: Mutex::new(HashMap::new()),
            polls: tokio::sync::watch::channel(0).0,
            address,
            function_arn: format!("arn:aws:lambda:us-east-1:123456789012:function:{name}"),
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route(
                "/2018-06-01/runtime/invocation/{id}/response",
                post(response),
            )
            .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
            .route("/2018-06-01/runtime/init/error", post(init_error))
            .with_state(api.clone());
        tokio::spawn(shared::http::serve(listener, app));
        api
    }

    /// Waits until `instances` polls have arrived (every instance started).
    pub async fn wait_ready(&self, instances: u64, timeout: Duration) -> bool {
        let mut rx = self.polls.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n >= instances))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    async fn invoke_outcome(&self, event: Value) -> Outcome {
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = oneshot::channel();
        self.pending.lock().await.insert(id.clone(), tx);
        self.queue_tx
            .send(Invocation {
                id: id.clone(),
                event,
            })
            .await
            .expect("queue open");
        match tokio::time::timeout(INVOKE_TIMEOUT, rx).await {
            Ok(Ok(outcome)) => outcome,
            _ => {
                self.pending.lock().await.remove(&id);
                Outcome::Error(json!({"errorType": "Timeout", "errorMessage": "no answer"}))
            }
        }
    }

    /// Invokes the function with a raw event (what `cargo lambda invoke`
    /// does): `Ok(response)` or `Err(error payload)`.
    pub async fn invoke(&self, event: Value) -> Result<Value, Value> {
        match self.invoke_outcome(event).await {
            Outcome::Buffered(v) => Ok(v),
            Outcome::Error(e) => Err(e),
            Outcome::Streaming { .. } => Err(json!({"errorMessage": "unexpected stream"})),
        }
    }
}

async fn next(State(api): State<Arc<RuntimeApi>>) -> Response {
    api.polls.send_modify(|n| *n += 1);
    let invocation = {
        let mut rx = api.queue_rx.lock().await;
        rx.recv().await
    };
    let Some(invocation) = invocation else {
        return StatusCode::GONE.into_response();
    };
    let deadline = chrono::Utc::now().timestamp_millis() + INVOKE_TIMEOUT.as_millis() as i64;
    let mut headers = HeaderMap::new();
    let mut set = |k: &'static str, v: String| {
        headers.insert(k, HeaderValue::from_str(&v).expect("header value"));
    };
    set("lambda-runtime-aws-request-id", invocation.id);
    set("lambda-runtime-deadline-ms", deadline.to_string());
    set(
        "lambda-runtime-invoked-function-arn",
        api.function_arn.clone(),
    );
    set(
        "lambda-runtime-trace-id",
        "Root=1-00000000-000000000000000000000000;Sampled=0".into(),
    );
    set("content-type", "application/json".into());
    (headers, invocation.event.to_string()).into_response()
}

async fn response(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    request: Request,
) -> StatusCode {
    let Some(waiter) = api.pending.lock().await.remove(&id) else {
        return StatusCode::BAD_REQUEST;
    };
    let streaming = request
        .headers()
        .get("lambda-runtime-function-response-mode")
        .is_some_and(|v| v == "streaming");
    let mut body = request.into_body().into_data_stream();
    if !streaming {
        let mut bytes = Vec::new();
        while let Some(Ok(chunk)) = body.next().await {
            bytes.extend_from_slice(&chunk);
        }
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        let _ = waiter.send(Outcome::Buffered(value));
        return StatusCode::ACCEPTED;
    }
    // Streaming: the metadata prelude, eight NUL bytes, then the payload.
    let mut head = Vec::new();
    let mut rest = None;
    while let Some(Ok(chunk)) = body.next().await {
        head.extend_from_slice(&chunk);
        if let Some(at) = head.windows(8).position(|w| w == [0u8; 8]) {
            rest = Some(Bytes::copy_from_slice(&head[at + 8..]));
            head.truncate(at);
            break;
        }
    }
    let prelude: Value = serde_json::from_slice(&head).unwrap_or(Value::Null);
    let (tx, rx) = mpsc::channel(64);
    let _ = waiter.send(Outcome::Streaming {
        prelude,
        chunks: rx,
    });
    if let Some(rest) = rest.filter(|r| !r.is_empty()) {
        let _ = tx.send(rest).await;
    }
    while let Some(Ok(chunk)) = body.next().await {
        if tx.send(chunk).await.is_err() {
            // The client went away: drop the rest, as a function URL does.
            break;
        }
    }
    StatusCode::ACCEPTED
}

async fn error(
    State(api): State<Arc<RuntimeApi>>,
    Path(id): Path<String>,
    body: Bytes,
) -> StatusCode {
    if let Some(waiter) = api.pending.lock().await.remove(&id) {
        let value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let _ = waiter.send(Outcome::Error(value));
    }
    StatusCode::ACCEPTED
}

async fn init_error(body: Bytes) -> StatusCode {
    eprintln!("function init error: {}", String::from_utf8_lossy(&body));
    StatusCode::ACCEPTED
}

/// Builds the function-URL event for an HTTP request.
pub fn http_event(
    method: &str,
    path: &str,
    query: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Value {
    let mut header_map = serde_json::Map::new();
    let mut cookies = Vec::new();
    for (name, value) in headers {
        let value = value.to_str().unwrap_or_default().to_owned();
        if name == "cookie" {
            cookies.extend(value.split(';').map(|c| c.trim().to_owned()));
            continue;
        }
        match header_map.get_mut(name.as_str()) {
            Some(Value::String(existing)) => {
                existing.push(',');
                existing.push_str(&value);
            }
            _ => {
                header_map.insert(name.as_str().to_owned(), Value::String(value));
            }
        }
    }
    let now = chrono::Utc::now();
    let request_id = uuid::Uuid::new_v4().to_string();
    json!({
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": query,
        "cookies": cookies,
        "headers": header_map,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "local",
            "domainName": "localhost",
            "domainPrefix": "localhost",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": headers.get("user-agent").and_then(|v| v.to_str().ok()).unwrap_or("e2e"),
            },
            "requestId": request_id,
            "routeKey": "$default",
            "stage": "$default",
            "time": now.format("%d/%b/%Y:%H:%M:%S %z").to_string(),
            "timeEpoch": now.timestamp_millis(),
        },
        "body": base64::engine::general_purpose::STANDARD.encode(body),
        "isBase64Encoded": true,
    })
}

fn header_pairs(value: &Value) -> Vec<(HeaderName, HeaderValue)> {
    let mut pairs = Vec::new();
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            let values: Vec<&str> = match v {
                Value::String(s) => vec![s.as_str()],
                Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
                _ => vec![],
            };
            for s in values {
                if let (Ok(n), Ok(v)) = (HeaderName::try_from(k.as_str()), HeaderValue::from_str(s))
                {
                    pairs.push((n, v));
                }
            }
        }
    }
    pairs
}

fn http_response(
    status: u16,
    headers: Vec<(HeaderName, HeaderValue)>,
    cookies: &Value,
    body: Body,
) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    for (name, value) in headers {
        response.headers_mut().append(name, value);
    }
    for cookie in cookies
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
    {
        if let Ok(v) = HeaderValue::from_str(cookie) {
            response.headers_mut().append("set-cookie", v);
        }
    }
    response
}

/// Turns a function's outcome into the HTTP response a function URL gives.
fn outcome_response(outcome: Outcome) -> Response {
    match outcome {
        Outcome::Buffered(v) => {
            let status = v["statusCode"].as_u64().unwrap_or(200) as u16;
            let mut headers = header_pairs(&v["headers"]);
            headers.extend(header_pairs(&v["multiValueHeaders"]));
            let text = v["body"].as_str().unwrap_or_default();
            let body = if v["isBase64Encoded"].as_bool().unwrap_or(false) {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .unwrap_or_default()
            } else {
                text.as_bytes().to_vec()
            };
            http_response(status, headers, &v["cookies"], Body::from(body))
        }
        Outcome::Streaming { prelude, chunks } => {
            let status = prelude["statusCode"].as_u64().unwrap_or(200) as u16;
            let stream = futures_util::stream::unfold(chunks, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|chunk| (Ok::<_, std::io::Error>(chunk), rx))
            });
            http_response(
                status,
                header_pairs(&prelude["headers"]),
                &prelude["cookies"],
                Body::from_stream(stream),
            )
        }
        // What a function URL answers when the function fails.
        Outcome::Error(e) => (
            StatusCode::BAD_GATEWAY,
            [("content-type", "application/json")],
            e.to_string(),
        )
            .into_response(),
    }
}

/// The HTTP front: `/lambda-url/<function>/<path>` → that function, on
/// `port` (any free one when 0).
pub async fn serve_front(functions: HashMap<String, Arc<RuntimeApi>>, port: u16) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port))
        .await
        .expect("bind the front");
    let address = listener.local_addr().expect("address");
    let app = Router::new()
        .fallback(front)
        .with_state(Arc::new(functions));
    tokio::spawn(shared::http::serve(listener, app));
    address
}

async fn front(
    State(functions): State<Arc<HashMap<String, Arc<RuntimeApi>>>>,
    request: Request,
) -> Response {
    let uri = request.uri().clone();
    let Some(rest) = uri.path().strip_prefix("/lambda-url/") else {
        return (StatusCode::NOT_FOUND, "use /lambda-url/<function>/<path>").into_response();
    };
    let (name, path) = match rest.split_once('/') {
        Some((name, path)) => (name, format!("/{path}")),
        None => (rest, "/".to_owned()),
    };
    let Some(api) = functions.get(name).cloned() else {
        return (StatusCode::NOT_FOUND, format!("no function {name}")).into_response();
    };
    let method = request.method().as_str().to_owned();
    let headers = request.headers().clone();
    let body = axum::body::to_bytes(request.into_body(), 6 * 1024 * 1024 + 1024)
        .await
        .unwrap_or_default();
    let event = http_event(&method, &path, uri.query().unwrap_or(""), &headers, &body);
    outcome_response(api.invoke_outcome(event).await)
}
