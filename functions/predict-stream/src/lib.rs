//! The streaming prediction (README §8) and the OpenAI-compatible API
//! (README §12, [`openai`]), served through Lambda response streaming (a
//! function URL with invoke mode RESPONSE_STREAM). Both run the prediction
//! steps of `shared::prediction`, as the `predict` function does; errors
//! decided before a stream starts (400, 401, 402, 403, 404, and 502/504
//! when Flowise fails before answering) are plain JSON.

pub mod cors;
pub mod openai;
pub mod runtime;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::{Extension, Router};
use futures_util::stream;
use serde_json::Value;
use shared::error::{ApiError, JsonBody};
use shared::flowise::StreamStart;
use shared::flowise::{FlowiseError, StreamEvent};
use shared::http::{finish, RequestId};
use shared::keys::UserOrKey;
use shared::openapi::{ApiErrors, IdempotencyKeyHeader};
use shared::prediction::stream::{events_of_json, relay_stream, replay_frames, Frames, Wire};
use shared::prediction::{self, PredictBody, PredictRequest, Prepared, Start};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

/// What the predict functions read from their environment.
pub use shared::prediction::PredictConfig as Config;
/// Clients built once per cold start and lent to every request.
pub use shared::prediction::PredictState as AppState;

/// The function's routes, with their descriptions.
pub fn routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(predict_stream))
        .routes(routes!(openai::list_models))
        .routes(routes!(openai::get_model))
        .routes(routes!(openai::chat_completions))
}

/// The function's description.
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes().split_for_parts().1
}

/// The function's API route on `state` (waiting for the indexes), without
/// what every router adds.
pub fn api(state: AppState) -> Router {
    let (api, _) = routes().with_state(state.clone()).split_for_parts();
    let body_limit = state.body_limit();
    state.guarded(api.layer(axum::extract::DefaultBodyLimit::max(body_limit)))
}

/// The function's router: its API, `/health` and what every router adds,
/// with every error under `/v1` in OpenAI's envelope, and CORS for the
/// browsers of `cors`'s origins.
pub fn router(state: AppState, cors: cors::Cors) -> Router {
    let health = state.health_checks();
    finish(api(state).merge(health.router()))
        .layer(axum::middleware::from_fn(openai::envelope::layer))
        .layer(axum::middleware::from_fn(move |req, next| {
            cors.clone().layer(req, next)
        }))
}

/// Flowise's events, as the relay reads them.
type Events =
    std::pin::Pin<Box<dyn futures_util::Stream<Item = Result<StreamEvent, FlowiseError>> + Send>>;

/// `text/event-stream` of `event: <session|start|token|metadata|
/// sourceDocuments|usedTools|end|error>` frames, relayed as Flowise sends
/// them. Served by the predict-stream function URL (Lambda response
/// streaming). A request whose `Idempotency-Key` was used before gets the
/// stored answer as a short stream (session, start, token, end with
/// replayed: true), with no second call to Flowise and no second charge.
#[utoipa::path(post, path = "/api/v1/chat/predict/stream", tag = "predict",
    params(IdempotencyKeyHeader), request_body = PredictBody,
    responses((status = 200, description = "`event: session|start|token|metadata|sourceDocuments|usedTools|end|error` frames", content_type = "text/event-stream", body = String), ApiErrors))]
pub async fn predict_stream(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let request = PredictRequest::parse(&headers, raw)?;
    let prepared = match prediction::prepare(&state, &user, request, &request_id).await? {
        Start::Fresh(prepared) => *prepared,
        Start::Replay(answer) => return Ok(event_stream(frames_body(replay_frames(&answer)))),
    };
    let wire = Frames::new(&prepared);
    stream_answer(state, prepared, wire).await
}

/// Steps (4) and (5) streamed, for both routes: opens Flowise's stream (a
/// flow that cannot stream answers JSON, relayed as its events; Flowise
/// failing before it answers is 502/504 and free), then relays it as it
/// comes, written by `wire`, from a task of its own.
pub async fn stream_answer<W: Wire>(
    state: AppState,
    prepared: Prepared,
    wire: W,
) -> Result<Response, ApiError> {
    let flow = prepared.chatflow_id.as_str();
    let events: Events = match state.flowise.predict_stream(flow, &prepared.request).await {
        Ok(StreamStart::Events(events)) => events,
        Ok(StreamStart::Json(answer)) => {
            Box::pin(stream::iter(events_of_json(answer).into_iter().map(Ok)))
        }
        Err(e) => return Err(prediction::fail(&state, &prepared, e).await),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    tokio::spawn(relay_stream(state, prepared, events, wire, tx));
    Ok(event_stream(channel_body(rx)))
}

/// A body of frames known in advance.
pub fn frames_body(frames: Vec<bytes::Bytes>) -> Body {
    Body::from_stream(stream::iter(
        frames.into_iter().map(Ok::<_, std::convert::Infallible>),
    ))
}

/// A body of the frames the relay sends as they come.
fn channel_body(rx: tokio::sync::mpsc::Receiver<bytes::Bytes>) -> Body {
    Body::from_stream(stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, std::convert::Infallible>(frame), rx))
    }))
}

/// A `text/event-stream` answer of `body`.
pub fn event_stream(body: Body) -> Response {
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::OK;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    headers.insert("x-accel-buffering", header::HeaderValue::from_static("no"));
    response
}
