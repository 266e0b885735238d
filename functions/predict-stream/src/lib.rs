//! The streaming prediction (SPEC §8), served through Lambda response
//! streaming (a function URL with invoke mode RESPONSE_STREAM). It shares
//! configuration, state and the prediction steps with the `predict`
//! function; errors decided before the stream starts (400, 401, 402, 403,
//! 404, and 502/504 when Flowise fails before answering) are plain JSON.

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::post;
use axum::{Extension, Router};
use futures_util::stream;
use serde_json::{json, Value};
use shared::error::{ApiError, JsonBody};
use shared::flowise::{StreamEvent, StreamStart};
use shared::http::{finish, RequestId};
use shared::token::AuthUser;

use predict::prediction::{self, PredictRequest, Start};
pub use predict::{AppState, Config};

/// The function's routes.
pub fn router(state: AppState) -> Router {
    let health = state.health_checks();
    let api = Router::new()
        .route("/api/v1/chat/predict/stream", post(predict_stream))
        .with_state(state.clone());
    finish(state.guarded(api).merge(health.router()))
}

/// A flow that cannot stream answers JSON: its answer is relayed as the
/// events a stream would have carried.
fn events_of_json(answer: shared::flowise::Prediction) -> Vec<StreamEvent> {
    let event = |name: &str, data: Value| StreamEvent {
        event: name.to_owned(),
        data,
    };
    let mut events = vec![
        event("start", json!("")),
        event("token", json!(answer.text)),
    ];
    if let Some(sources) = answer.source_documents {
        events.push(event("sourceDocuments", sources));
    }
    if let Some(tools) = answer.used_tools {
        events.push(event("usedTools", tools));
    }
    if let Some(usage) = answer.usage {
        events.push(event(
            "usageMetadata",
            json!({"input_tokens": usage.input, "output_tokens": usage.output}),
        ));
    }
    events.push(event("end", json!("[DONE]")));
    events
}

/// `POST /api/v1/chat/predict/stream`: `text/event-stream` of
/// `event: <session|start|token|metadata|sourceDocuments|usedTools|end|error>`
/// frames, relayed as Flowise sends them. A request whose
/// `Idempotency-Key` was used before gets the stored answer as a short
/// stream, with no second call to Flowise and no second charge.
pub async fn predict_stream(
    State(state): State<AppState>,
    user: AuthUser,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let request = PredictRequest::parse(&headers, raw)?;
    let prepared = match prediction::prepare(&state, &user, request, &request_id).await? {
        Start::Fresh(prepared) => *prepared,
        Start::Replay(answer) => {
            let frames = prediction::replay_frames(&answer);
            let body = stream::iter(frames.into_iter().map(Ok::<_, std::convert::Infallible>));
            return Ok(event_stream(Body::from_stream(body)));
        }
    };
    let started = state
        .flowise
        .predict_stream(&prepared.chatflow_id, &prepared.request)
        .await;
    let events: std::pin::Pin<Box<dyn futures_util::Stream<Item = _> + Send>> = match started {
        Ok(StreamStart::Events(events)) => events,
        Ok(StreamStart::Json(answer)) => {
            Box::pin(stream::iter(events_of_json(answer).into_iter().map(Ok)))
        }
        Err(e) => return Err(prediction::fail(&state, &user, &prepared, e).await),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(64);
    tokio::spawn(prediction::relay_stream(state, user, prepared, events, tx));
    let body = stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, std::convert::Infallible>(frame), rx))
    });
    Ok(event_stream(Body::from_stream(body)))
}

fn event_stream(body: Body) -> Response {
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
