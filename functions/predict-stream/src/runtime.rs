//! The function's Runtime API loop: the same protocol `lambda_http`'s
//! `run_with_streaming_response` speaks, over connections with
//! `TCP_NODELAY`.
//!
//! Why ours: `lambda_runtime` 1.5 builds its own HTTP connector and leaves
//! Nagle's algorithm on. A streamed answer reaches the Runtime API as
//! several small writes (the request head, the metadata prelude, the first
//! bytes); with Nagle on, each write after the first waits for the
//! acknowledgement of the one before, and the receiver delays that by up to
//! 40 ms. That cost every streamed answer's head, `/health` on a cold start
//! included (80 ms against 34 ms without it, BENCHMARKS.md). Everything else
//! is the crates' own: `lambda_runtime`'s [`Config`] and [`Context`] and its
//! request span, `lambda_http`'s [`StreamAdapter`] (event to request, the
//! X-Ray header, response to prelude and body).
//!
//! The protocol ([AWS: custom runtimes, response streaming]): `GET
//! /invocation/next` gives an event and its request id; the answer is one
//! chunked `POST /invocation/{id}/response` with
//! `Lambda-Runtime-Function-Response-Mode: streaming`, whose body is the
//! prelude's JSON, eight NUL bytes, then the response body; a body that fails
//! midway ends with the `Lambda-Runtime-Function-Error-Type` and `-Body`
//! trailers. An event that cannot be read, or a handler that panics, is
//! reported to `POST /invocation/{id}/error`. One invocation at a time, as
//! a Lambda instance serves them (no `AWS_LAMBDA_MAX_CONCURRENCY`).
//!
//! [AWS: custom runtimes, response streaming]: https://docs.aws.amazon.com/lambda/latest/dg/runtimes-custom.html#runtimes-custom-response-streaming

use std::convert::Infallible;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use axum::Router;
use base64::Engine;
use bytes::Bytes;
use futures_util::{stream, FutureExt, Stream, StreamExt};
use http::{HeaderMap, HeaderValue, Method, Request, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use lambda_http::lambda_runtime::layers::trace::request_span;
use lambda_http::lambda_runtime::{Config, Context, Diagnostic, LambdaEvent, MetadataPrelude};
use lambda_http::request::LambdaRequest;
use lambda_http::tower::ServiceExt;
use lambda_http::{Service, StreamAdapter};
use shared::BoxError;
use tracing::Instrument;

/// The Runtime API's version prefix.
const API: &str = "/2018-06-01/runtime";
/// What separates the metadata prelude from the response body.
const PRELUDE_END: [u8; 8] = [0; 8];
const ERROR_TYPE: &str = "lambda-runtime-function-error-type";
const ERROR_BODY: &str = "lambda-runtime-function-error-body";

type ApiBody = UnsyncBoxBody<Bytes, BoxError>;

/// Serves `router` to the Runtime API at `AWS_LAMBDA_RUNTIME_API`, one
/// invocation after another, until the Runtime API cannot be reached.
pub async fn run(router: Router) -> Result<(), BoxError> {
    let address =
        std::env::var("AWS_LAMBDA_RUNTIME_API").map_err(|_| "AWS_LAMBDA_RUNTIME_API is not set")?;
    serve(
        &RuntimeApi::new(&address)?,
        Arc::new(Config::from_env()),
        router,
    )
    .await
}

/// Serves `router` to `api`, as the function `config` describes.
async fn serve(api: &RuntimeApi, config: Arc<Config>, router: Router) -> Result<(), BoxError> {
    let mut handler = StreamAdapter::from(router);
    loop {
        let invocation = api.next().await?;
        let context = Context::new(&invocation.id, config.clone(), &invocation.headers)?;
        let span = request_span(&context);
        api.invoke(&mut handler, &invocation, context)
            .instrument(span)
            .await?;
    }
}

/// A connection pool to one Runtime API.
struct RuntimeApi {
    base: String,
    client: Client<HttpConnector, ApiBody>,
}

/// One event the Runtime API handed out.
struct Invocation {
    /// `Lambda-Runtime-Aws-Request-Id`: where the answer goes.
    id: String,
    /// `Lambda-Runtime-Invocation-Id`, when there is one: sent back with
    /// the answer, as `lambda_runtime` does.
    invocation_id: Option<HeaderValue>,
    headers: HeaderMap,
    event: Bytes,
}

/// `lambda_http`'s adapter around the function's router.
type Adapter = StreamAdapter<'static, Router, axum::body::Body>;

/// The handler's answer, or that it panicked.
type Handled = Result<<Adapter as Service<LambdaEvent<LambdaRequest>>>::Response, ()>;

impl RuntimeApi {
    /// A client for the Runtime API at `address`: `host:port` in AWS, a
    /// URL with a scheme and a base path under `cargo lambda watch`
    /// (`http://127.0.0.1:9000/.rt`).
    fn new(address: &str) -> Result<Self, BoxError> {
        let uri: Uri = address.parse()?;
        let authority = uri
            .authority()
            .ok_or("AWS_LAMBDA_RUNTIME_API has no host")?;
        let scheme = uri.scheme_str().unwrap_or("http");
        let prefix = uri.path().trim_end_matches('/');
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Ok(Self {
            base: format!("{scheme}://{authority}{prefix}{API}"),
            client,
        })
    }

    /// Waits for the next event. A `204` (no event, which `cargo lambda
    /// watch` answers to keep the connection alive) asks again.
    async fn next(&self) -> Result<Invocation, BoxError> {
        loop {
            let uri = format!("{}/invocation/next", self.base);
            let request = self.request(Method::GET, &uri, None, empty())?;
            let (parts, body) = self.client.request(request).await?.into_parts();
            let event = body.collect().await?.to_bytes();
            if parts.status == http::StatusCode::NO_CONTENT {
                continue;
            }
            if !parts.status.is_success() {
                let status = parts.status;
                return Err(format!("the Runtime API answered {status} for the next event").into());
            }
            let id = parts
                .headers
                .get("lambda-runtime-aws-request-id")
                .and_then(|v| v.to_str().ok())
                .ok_or("the next event came without a request id")?
                .to_owned();
            let invocation_id = parts.headers.get("lambda-runtime-invocation-id").cloned();
            return Ok(Invocation {
                id,
                invocation_id,
                headers: parts.headers,
                event,
            });
        }
    }

    /// Runs one event through `handler` and sends its answer (or the reason
    /// there is none) back.
    async fn invoke(
        &self,
        handler: &mut Adapter,
        invocation: &Invocation,
        context: Context,
    ) -> Result<(), BoxError> {
        let event: LambdaRequest = match serde_json::from_slice(&invocation.event) {
            Ok(event) => event,
            Err(e) => {
                let message = e.to_string();
                return self
                    .fail(invocation, "Runtime.UnmarshalError", &message)
                    .await;
            }
        };
        let Ok(response) = handle(handler, LambdaEvent::new(event, context)).await else {
            tracing::error!("the handler panicked");
            return self
                .fail(invocation, "Runtime.Panic", "the handler panicked")
                .await;
        };
        let body = streamed_body(response.metadata_prelude, response.stream)?;
        let uri = format!("{}/invocation/{}/response", self.base, invocation.id);
        let mut request = self.request(Method::POST, &uri, Some(invocation), body)?;
        let headers = request.headers_mut();
        headers.insert(
            "lambda-runtime-function-response-mode",
            HeaderValue::from_static("streaming"),
        );
        headers.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/vnd.awslambda.http-integration-response"),
        );
        headers.insert(
            http::header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        headers.append(http::header::TRAILER, HeaderValue::from_static(ERROR_TYPE));
        headers.append(http::header::TRAILER, HeaderValue::from_static(ERROR_BODY));
        self.accepted(request).await
    }

    /// Reports that `invocation` has no answer.
    async fn fail(
        &self,
        invocation: &Invocation,
        error_type: &str,
        message: &str,
    ) -> Result<(), BoxError> {
        let diagnostic = Diagnostic {
            error_type: error_type.to_owned(),
            error_message: message.to_owned(),
        };
        let body = Full::new(Bytes::from(serde_json::to_vec(&diagnostic)?))
            .map_err(|never| match never {})
            .boxed_unsync();
        let uri = format!("{}/invocation/{}/error", self.base, invocation.id);
        let mut request = self.request(Method::POST, &uri, Some(invocation), body)?;
        request
            .headers_mut()
            .insert(ERROR_TYPE, HeaderValue::from_static("unhandled"));
        self.accepted(request).await
    }

    /// A request to `uri`, about `invocation` when it is for one.
    fn request(
        &self,
        method: Method,
        uri: &str,
        invocation: Option<&Invocation>,
        body: ApiBody,
    ) -> Result<Request<ApiBody>, BoxError> {
        let mut request = Request::builder()
            .method(method)
            .uri(uri.parse::<Uri>()?)
            .header(
                http::header::USER_AGENT,
                concat!("flowise-gateway/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(id) = invocation.and_then(|i| i.invocation_id.clone()) {
            request = request.header("lambda-runtime-invocation-id", id);
        }
        Ok(request.body(body)?)
    }

    /// Sends `request` and reads the Runtime API's (empty) answer.
    async fn accepted(&self, request: Request<ApiBody>) -> Result<(), BoxError> {
        let response = self.client.request(request).await?;
        let status = response.status();
        response.into_body().collect().await?;
        if status.is_success() {
            Ok(())
        } else {
            // As `lambda_runtime` does: the invocation is over either way
            // (timed out, or answered already); the next one can still come.
            tracing::error!(%status, "the Runtime API refused an answer");
            Ok(())
        }
    }
}

/// Calls `handler` with `event`, catching a panic both in the call itself
/// (`lambda_http` turns the event into a request there, and panics on some
/// malformed events) and in the future it returns.
async fn handle(handler: &mut Adapter, event: LambdaEvent<LambdaRequest>) -> Handled {
    let Ok(ready) = handler.ready().await;
    let call = std::panic::catch_unwind(AssertUnwindSafe(|| ready.call(event))).map_err(|_| ())?;
    match AssertUnwindSafe(call).catch_unwind().await {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(never)) => match never {},
        Err(_) => Err(()),
    }
}

fn empty() -> ApiBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The streamed answer's body: the prelude, its end, then the response's
/// bytes; a response body that fails ends the answer with the error
/// trailers. The prelude and its end are chunks of their own, as
/// `lambda_runtime` sends them: AWS reads the bytes, but `cargo lambda
/// watch` reads the prelude from the first chunk alone.
fn streamed_body<S, E>(mut prelude: MetadataPrelude, body: S) -> Result<ApiBody, BoxError>
where
    S: Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: Into<BoxError>,
{
    prelude
        .headers
        .entry(http::header::CONTENT_TYPE)
        .or_insert(HeaderValue::from_static("application/octet-stream"));
    let head = [
        Bytes::from(serde_json::to_vec(&prelude)?),
        Bytes::from_static(&PRELUDE_END),
    ];
    let head = stream::iter(head.map(Frame::data));
    let rest = body.scan(false, |failed, chunk| {
        let frame = match (*failed, chunk) {
            (true, _) => None,
            (false, Ok(bytes)) => Some(Frame::data(bytes)),
            (false, Err(e)) => {
                *failed = true;
                Some(Frame::trailers(error_trailers(&e.into())))
            }
        };
        std::future::ready(frame)
    });
    let frames = head.chain(rest).map(Ok::<_, Infallible>);
    Ok(StreamBody::new(frames)
        .map_err(|never| match never {})
        .boxed_unsync())
}

/// The trailers that tell the Runtime API a streamed answer failed midway.
fn error_trailers(error: &BoxError) -> HeaderMap {
    let mut trailers = HeaderMap::new();
    trailers.insert(ERROR_TYPE, HeaderValue::from_static("Runtime.StreamError"));
    let body = base64::engine::general_purpose::STANDARD.encode(error.to_string());
    if let Ok(value) = HeaderValue::from_str(&body) {
        trailers.insert(ERROR_BODY, value);
    }
    trailers
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::extract::{Path, State};
    use axum::http::StatusCode;
    use axum::response::IntoResponse;
    use axum::routing::{get, post};
    use serde_json::{json, Value};
    use tokio::sync::{mpsc, Mutex};

    /// What the fake Runtime API was sent for one invocation.
    #[derive(Debug)]
    struct Sent {
        path: String,
        headers: HeaderMap,
        body: Bytes,
        trailers: Option<HeaderMap>,
    }

    /// A Runtime API that answers `204` to the first poll (as `cargo
    /// lambda watch` can), then hands out `events` (then waits forever),
    /// and reports every answer.
    struct FakeApi {
        polls: std::sync::atomic::AtomicUsize,
        events: Mutex<Vec<(String, Bytes)>>,
        sent: mpsc::UnboundedSender<Sent>,
    }

    async fn next(State(api): State<Arc<FakeApi>>) -> axum::response::Response {
        if api.polls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 0 {
            return StatusCode::NO_CONTENT.into_response();
        }
        let Some((id, event)) = api.events.lock().await.pop() else {
            return std::future::pending().await;
        };
        axum::response::Response::builder()
            .header("lambda-runtime-aws-request-id", id)
            .header("lambda-runtime-invocation-id", "inv-1")
            .header("lambda-runtime-deadline-ms", "4102444800000")
            .header("lambda-runtime-invoked-function-arn", "arn:aws:lambda:test")
            .body(axum::body::Body::from(event))
            .expect("response")
    }

    async fn answered(
        State(api): State<Arc<FakeApi>>,
        Path((id, kind)): Path<(String, String)>,
        request: axum::extract::Request,
    ) -> StatusCode {
        let (parts, body) = request.into_parts();
        let collected = body.collect().await.expect("body");
        let trailers = collected.trailers().cloned();
        let _ = api.sent.send(Sent {
            path: format!("{id}/{kind}"),
            headers: parts.headers,
            body: collected.to_bytes(),
            trailers,
        });
        StatusCode::ACCEPTED
    }

    /// Runs `router` against a fake Runtime API that sends `event` once as
    /// invocation `req-1`, and returns what came back.
    async fn invoke(router: Router, event: Bytes) -> Sent {
        let (sent, mut answers) = mpsc::unbounded_channel();
        let fake = Arc::new(FakeApi {
            polls: std::sync::atomic::AtomicUsize::new(0),
            events: Mutex::new(vec![("req-1".to_owned(), event)]),
            sent,
        });
        let app = Router::new()
            .route("/2018-06-01/runtime/invocation/next", get(next))
            .route("/2018-06-01/runtime/invocation/{id}/{kind}", post(answered))
            .with_state(fake);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address").to_string();
        let server = tokio::spawn(shared::http::serve(listener, app));
        let config = Arc::new(Config {
            function_name: "predict-stream".into(),
            memory: 256,
            version: "$LATEST".into(),
            ..Config::default()
        });
        // The loop's future is not `Send` (lambda_http's adapter), so it
        // runs here, beside the wait for the answer, rather than spawned.
        let api = RuntimeApi::new(&address).expect("the fake's address");
        let answer = tokio::select! {
            answer = answers.recv() => answer.expect("an answer"),
            ended = serve(&api, config, router) => panic!("the loop ended: {ended:?}"),
        };
        server.abort();
        answer
    }

    fn http_event(path: &str) -> Bytes {
        http_event_for(path, "stream.example")
    }

    fn http_event_for(path: &str, host: &str) -> Bytes {
        Bytes::from(
            json!({
                "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
                "headers": {"host": host},
                "requestContext": {
                    "accountId": "123456789012", "apiId": "url", "domainName": "stream.example",
                    "domainPrefix": "stream", "requestId": "ctx-1", "routeKey": "$default",
                    "stage": "$default", "time": "01/Dec/2026:00:00:00 +0000", "timeEpoch": 0,
                    "http": {"method": "GET", "path": path, "protocol": "HTTP/1.1",
                             "sourceIp": "127.0.0.1", "userAgent": "test"}
                },
                "isBase64Encoded": false
            })
            .to_string(),
        )
    }

    /// Splits a streamed answer into its prelude and its body.
    fn prelude_and_body(body: &[u8]) -> (Value, &[u8]) {
        let at = body
            .windows(8)
            .position(|w| w == PRELUDE_END)
            .expect("the prelude's end");
        (
            serde_json::from_slice(&body[..at]).expect("prelude JSON"),
            &body[at + 8..],
        )
    }

    #[test]
    fn the_runtime_api_is_found_at_aws_and_cargo_lambda_addresses() {
        let base = |address: &str| RuntimeApi::new(address).map(|api| api.base);
        assert_eq!(
            base("127.0.0.1:9001").unwrap(),
            "http://127.0.0.1:9001/2018-06-01/runtime"
        );
        assert_eq!(
            base("http://[::1]:9000/.rt/").unwrap(),
            "http://[::1]:9000/.rt/2018-06-01/runtime"
        );
        assert!(base("/no-host").is_err());
    }

    #[tokio::test]
    async fn an_answer_is_streamed_as_its_prelude_eight_nuls_and_its_body() {
        let router = Router::new().route(
            "/hello",
            get(|| async {
                (
                    [("x-answer", "yes"), ("set-cookie", "a=1")],
                    "streamed body",
                )
            }),
        );
        let sent = invoke(router, http_event("/hello")).await;
        assert_eq!(
            sent.path, "req-1/response",
            "after a 204, the next poll's event"
        );
        assert_eq!(sent.headers["lambda-runtime-invocation-id"], "inv-1");
        assert_eq!(
            sent.headers["lambda-runtime-function-response-mode"],
            "streaming"
        );
        assert_eq!(
            sent.headers["content-type"],
            "application/vnd.awslambda.http-integration-response"
        );
        let (prelude, body) = prelude_and_body(&sent.body);
        assert_eq!(prelude["statusCode"], 200);
        assert_eq!(prelude["headers"]["x-answer"], "yes");
        assert_eq!(prelude["cookies"], json!(["a=1"]));
        assert_eq!(body, b"streamed body");
        assert_eq!(sent.trailers, None);
    }

    #[tokio::test]
    async fn a_body_that_fails_midway_ends_with_the_error_trailers() {
        let router = Router::new().route(
            "/fails",
            get(|| async {
                let chunks: Vec<Result<Bytes, std::io::Error>> = vec![
                    Ok(Bytes::from_static(b"first part")),
                    Err(std::io::Error::other("Flowise went away")),
                    Ok(Bytes::from_static(b"never sent")),
                ];
                axum::body::Body::from_stream(stream::iter(chunks))
            }),
        );
        let sent = invoke(router, http_event("/fails")).await;
        let (_, body) = prelude_and_body(&sent.body);
        assert_eq!(body, b"first part");
        let trailers = sent.trailers.expect("the error trailers");
        assert_eq!(trailers[ERROR_TYPE], "Runtime.StreamError");
        let message = base64::engine::general_purpose::STANDARD
            .decode(trailers[ERROR_BODY].as_bytes())
            .expect("base64");
        assert!(String::from_utf8_lossy(&message).contains("Flowise went away"));
    }

    #[tokio::test]
    async fn an_event_that_cannot_be_read_is_reported_as_an_error() {
        let router = Router::new().route("/", get(|| async { "unreachable" }));
        let sent = invoke(router, Bytes::from_static(b"{\"not\": \"an http event\"")).await;
        assert_eq!(sent.path, "req-1/error");
        let diagnostic: Value = serde_json::from_slice(&sent.body).expect("JSON");
        assert_eq!(diagnostic["errorType"], "Runtime.UnmarshalError");
    }

    #[tokio::test]
    async fn an_event_the_adapter_cannot_turn_into_a_request_is_an_error_not_a_crash() {
        // lambda_http panics building the URL of a host with a space.
        let router = Router::new().route("/", get(|| async { "unreachable" }));
        let sent = invoke(router, http_event_for("/", "bad host")).await;
        assert_eq!(sent.path, "req-1/error");
        assert_eq!(sent.headers["lambda-runtime-invocation-id"], "inv-1");
        let diagnostic: Value = serde_json::from_slice(&sent.body).expect("JSON");
        assert_eq!(diagnostic["errorType"], "Runtime.Panic");
    }

    #[tokio::test]
    async fn a_handler_that_panics_is_reported_as_an_error() {
        let router = Router::new().route(
            "/panics",
            get(|| async {
                if true {
                    panic!("a bug");
                }
                "unreachable"
            }),
        );
        let sent = invoke(router, http_event("/panics")).await;
        assert_eq!(sent.path, "req-1/error");
        let diagnostic: Value = serde_json::from_slice(&sent.body).expect("JSON");
        assert_eq!(diagnostic["errorType"], "Runtime.Panic");
    }
}
