//! The OpenAI-compatible API (README §12), on the streaming function's URL
//! so that buffered and streamed completions share one base URL:
//! `GET /v1/models`, `GET /v1/models/{id}` and `POST /v1/chat/completions`.
//! A completion is a prediction: the same steps (access, limits, pricing,
//! reservation, settlement, history, usage, refunds) through
//! `shared::prediction`, read from OpenAI's request ([`request`]) and
//! written in OpenAI's objects ([`response`]), every error in OpenAI's
//! envelope ([`envelope`]). It takes an API key or an access token, and
//! honours `Idempotency-Key` as the prediction routes do (one scope).

pub mod envelope;
pub mod request;
pub mod response;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde_json::Value;
use shared::chat::chatflows;
use shared::chat::sessions::{self, SessionDoc};
use shared::error::{from_json_value, ApiError, JsonBody, PathParams};
use shared::http::RequestId;
use shared::keys::UserOrKey;
use shared::openapi::IdempotencyKeyHeader;
use shared::prediction::{self, PredictRequest, Start, WholeConversation};
use shared::token::AuthUser;

use crate::AppState;
use envelope::V1Error;
use request::{CompletionRequest, Mapped};
use response::{Chunks, Completion, Model, ModelList};

/// Every `/v1` error: OpenAI's envelope.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
#[response(
    status = "default",
    description = "Any error, in OpenAI's envelope: 400 (param names the field), 401, 402 (insufficient_credits, key_limit_reached), 403, 404 (model_not_found), 409 (x-should-retry: false), 429 (Retry-After), 502, 503, 504."
)]
pub struct OpenAiErrors(#[to_schema] OpenAiErrorBody);

/// `{"error": {...}}`.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OpenAiErrorBody {
    #[schema(inline)]
    error: OpenAiError,
}

/// OpenAI's error object.
#[derive(serde::Serialize, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct OpenAiError {
    /// Text for a person.
    message: String,
    /// `invalid_request_error`, `authentication_error`, `insufficient_quota`,
    /// `permission_error`, `not_found_error`, `conflict_error`,
    /// `rate_limit_error` or `api_error`.
    #[serde(rename = "type")]
    kind: String,
    /// The request field it is about.
    param: Option<String>,
    /// The gateway's snake_case code (`model_not_found` for a model).
    code: String,
}

/// The chatflows the caller may use, as models (`id` = chatflow id).
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "The models", body = ModelList), OpenAiErrors))]
pub async fn list_models(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
) -> Result<Json<ModelList>, V1Error> {
    let flows = chatflows::list_for(&state.mongo.chat, &user).await?;
    Ok(Json(ModelList {
        object: "list",
        data: flows.iter().map(Model::of).collect(),
    }))
}

/// One model the caller may use (404 `model_not_found` otherwise).
#[utoipa::path(get, path = "/v1/models/{id}", tag = "openai",
    params(("id" = String, Path, description = "A chatflow id")),
    responses((status = 200, description = "The model", body = Model), OpenAiErrors))]
pub async fn get_model(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    PathParams(id): PathParams<String>,
) -> Result<Json<Model>, V1Error> {
    // A model the caller may not use is as unknown to them as one that
    // does not exist: 404, never a 403 that confirms it.
    let flow = chatflows::usable(&state.mongo.chat, &id, &user)
        .await
        .map_err(|e| match e {
            ApiError::Forbidden { .. } | ApiError::Unprocessable { .. } => V1Error::no_model(&id),
            other => V1Error::model(other, "model"),
        })?;
    Ok(Json(Model::of(&flow)))
}

/// A chat completion over a chatflow: `chat.completion`, or with `stream:
/// true` `data: {chat.completion.chunk}` events and `data: [DONE]` (a
/// last chunk with `usage` when `stream_options.include_usage`). Priced,
/// reserved and settled as a prediction; `credits` and `session_id` are
/// extension fields. A stream that fails after it started ends with an
/// error chunk and `[DONE]`, charged for what was delivered.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai",
    params(IdempotencyKeyHeader), request_body = CompletionRequest,
    responses((status = 200, description = "`chat.completion`, or with `stream: true` `data: {chat.completion.chunk}` events then `data: [DONE]`",
        content((Completion = "application/json"), (String = "text/event-stream"))), OpenAiErrors))]
pub async fn chat_completions(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<Value>,
) -> Result<Response, V1Error> {
    let key = PredictRequest::key(&headers, &raw)?;
    let request: CompletionRequest = from_json_value(raw).map_err(V1Error::parsing)?;
    let Mapped {
        body,
        optional_overrides,
        transcript,
        stream,
        include_usage,
        question_param,
    } = request::map(request)?;
    let continues = continued(&state, &user, &body.chatflow_id, transcript).await?;
    let conversation = Some(WholeConversation {
        continues,
        optional_overrides,
    });
    let request =
        PredictRequest::new(body, key, conversation).map_err(|e| V1Error::about(e, "messages"))?;
    let model = request.body.chatflow_id.to_string();
    // A model the caller may not use is as unknown to them as one that
    // does not exist (as for GET /v1/models/{id}): 404, never a 403 that
    // confirms it.
    let started = prediction::prepare(&state, &user, request, &request_id)
        .await
        .map_err(|e| match e {
            ApiError::Forbidden {
                code: "forbidden" | "key_chatflow_not_allowed",
                ..
            } => V1Error::no_model(&model),
            other => V1Error::model(other, &question_param),
        })?;
    let prepared = match (started, stream) {
        (Start::Fresh(prepared), _) => *prepared,
        (Start::Replay(answer), false) => {
            return Ok(Json(Completion::of(&answer, &model)).into_response())
        }
        (Start::Replay(answer), true) => {
            let frames = Chunks::new(&answer.message_id, &model, include_usage).replay(&answer);
            return Ok(crate::event_stream(crate::frames_body(frames)));
        }
    };
    if !stream {
        // No API Gateway cuts a function URL's request at 30 s: Flowise
        // gets `FLOWISE_TIMEOUT_SECONDS`, which the function's timeout
        // exceeds by 30 s.
        let budget = state.flowise.timeout();
        let answer = prediction::answer_buffered(&state, &prepared, budget).await?;
        return Ok(Json(Completion::of(&answer, &model)).into_response());
    }
    let wire = Chunks::new(&prepared.message_id, &model, include_usage);
    Ok(crate::stream_answer(state, prepared, wire).await?)
}

/// The session a conversation continues: the user's latest of this
/// chatflow whose messages are the conversation's earlier turns.
async fn continued(
    state: &AppState,
    user: &AuthUser,
    chatflow: &str,
    transcript: Option<String>,
) -> Result<Option<SessionDoc>, V1Error> {
    let Some(transcript) = transcript else {
        return Ok(None);
    };
    Ok(sessions::continued(&state.mongo.chat, &user.id, chatflow, &transcript).await?)
}
