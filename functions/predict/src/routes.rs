//! Handlers of the predict function (README §8). The predict family keeps
//! the seed's snake_case keys. The prediction itself is
//! `shared::prediction`, which the streaming function runs too.

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::chat::chatflows::{self, AdminChatflowView, ChatflowView, SyncReport};
use shared::chat::files::{self, FileView};
use shared::chat::sessions::{self, MessageView, SessionView};
use shared::error::{ApiError, JsonBody, PathParams, QueryParams};
use shared::http::{RequestArrival, RequestId};
use shared::ids::{ChatSessionId, ChatflowId, ReservationId};
use shared::keys::UserOrKey;
use shared::ledger::reservations;
use shared::openapi::{ApiErrors, IdempotencyKeyHeader, PageQuery};
use shared::prediction::{
    self, PredictBody, PredictRequest, PredictionAnswer, Start, FINISH_MARGIN,
};
use shared::pricing::{PriceInput, RuleView};
use shared::query::PageParams;
use shared::token::AuthUser;

use crate::AppState;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

fn ok<T>(body: T) -> Answer<T> {
    Ok((StatusCode::OK, Json(body)))
}

// ---------------------------------------------------------------- chatflows

/// `{chatflows}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatflowsBody {
    /// By name.
    pub chatflows: Vec<ChatflowView>,
}

/// `{chatflow}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ChatflowBody {
    /// The chatflow.
    pub chatflow: ChatflowView,
}

/// The chatflows this user may use.
#[utoipa::path(get, path = "/api/v1/chatflows", tag = "predict",
    responses((status = 200, description = "The chatflows this user may use", body = ChatflowsBody), ApiErrors))]
pub async fn list_chatflows(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
) -> Answer<ChatflowsBody> {
    let flows = chatflows::list_for(&state.mongo.chat, &user).await?;
    let chatflows = flows.iter().map(chatflows::ChatflowDoc::view).collect();
    ok(ChatflowsBody { chatflows })
}

/// One chatflow: 404 unknown or removed, 403 without access.
#[utoipa::path(get, path = "/api/v1/chatflows/{id}", tag = "predict",
    params(("id" = String, Path, description = "The chatflow")),
    responses((status = 200, description = "One chatflow", body = ChatflowBody), ApiErrors))]
pub async fn get_chatflow(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    PathParams(id): PathParams<ChatflowId>,
) -> Answer<ChatflowBody> {
    let flow = chatflows::usable(&state.mongo.chat, &id, &user).await?;
    ok(ChatflowBody {
        chatflow: flow.view(),
    })
}

// ---------------------------------------------------------------- predict

/// Marks a response as the stored answer of an `Idempotency-Key`.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// The five steps, buffered, answered within
/// `FLOWISE_BUFFERED_TIMEOUT_SECONDS` of the request's arrival (API
/// Gateway cuts a request at 30 s): Flowise gets what remains minus
/// [`FINISH_MARGIN`], and past it the answer is 504 and free. With
/// Idempotency-Key (one scope with the streaming route) a retry gets the
/// first answer (header Idempotent-Replayed), 409 idempotency_in_progress
/// with Retry-After while it runs.
#[utoipa::path(post, path = "/api/v1/chat/predict", tag = "predict",
    params(IdempotencyKeyHeader), request_body = PredictBody,
    responses((status = 200, description = "The answer, paid for and stored", body = PredictionAnswer), ApiErrors))]
pub async fn predict(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(RequestArrival(arrival)): Extension<RequestArrival>,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<Value>,
) -> Result<Response, ApiError> {
    let deadline = arrival + state.flowise.buffered_timeout();
    let request = PredictRequest::parse(&headers, raw)?;
    let prepared = match prediction::prepare(&state, &user, request, &request_id).await? {
        Start::Fresh(prepared) => prepared,
        Start::Replay(answer) => {
            return Ok(([(REPLAYED_HEADER, "true")], Json(*answer)).into_response())
        }
    };
    let budget = deadline
        .saturating_duration_since(std::time::Instant::now())
        .saturating_sub(FINISH_MARGIN);
    let answer = prediction::answer_buffered(&state, &prepared, budget).await?;
    Ok(Json(answer).into_response())
}

/// `{message_id, stopping, requested_at}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StopBody {
    /// The answer being stopped.
    pub message_id: String,
    /// Always true: the relay ends the answer at its next check.
    pub stopping: bool,
    /// When the stop was first asked for.
    pub requested_at: chrono::DateTime<chrono::Utc>,
}

/// Stops a streamed answer of the caller's (its `message_id`, as the
/// `session` frame gives it; a `/v1` completion's id without `chatcmpl-`).
/// In AWS a streaming function is never told that its client went away,
/// so this is how an answer ends early. The relay reads the flag between
/// events (every half second) and ends the answer `incomplete`, charged
/// for what was delivered (the `end` frame says so). 202 at once; 404 for
/// an id that is not one of the caller's predictions; 409
/// `already_finished` once it is settled. A buffered answer is not cut
/// short.
#[utoipa::path(post, path = "/api/v1/chat/predict/{message_id}/stop", tag = "predict",
    params(("message_id" = String, Path, description = "The answer's message id")),
    responses((status = 202, description = "The answer will stop", body = StopBody), ApiErrors))]
pub async fn stop(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    PathParams(message_id): PathParams<ReservationId>,
) -> Answer<StopBody> {
    let mut conn = state.pg.acquire().await?;
    let scope = shared::keys::chatflow_scope(&user);
    let requested_at =
        reservations::request_stop(&mut conn, &message_id, &user.user_id(), scope).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(StopBody {
            message_id: message_id.to_string(),
            stopping: true,
            requested_at,
        }),
    ))
}

// ---------------------------------------------------------------- sessions

/// A page of sessions.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct SessionsBody {
    /// Latest activity first.
    pub sessions: Vec<SessionView>,
    /// Page.
    pub page: i64,
    /// Page size.
    pub limit: i64,
    /// All of them.
    pub total: u64,
}

/// The user's sessions.
#[utoipa::path(get, path = "/api/v1/chat/sessions", tag = "predict", params(PageQuery),
    responses((status = 200, description = "The user's sessions", body = SessionsBody), ApiErrors))]
pub async fn list_sessions(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    QueryParams(page): QueryParams<PageParams>,
) -> Answer<SessionsBody> {
    let (page, limit) = page.resolve()?;
    let (items, total) = sessions::list(&state.mongo.chat, &user, page, limit).await?;
    let sessions = items.iter().map(sessions::SessionDoc::view).collect();
    ok(SessionsBody {
        sessions,
        page,
        limit,
        total,
    })
}

/// A page of messages.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MessagesBody {
    /// Oldest first.
    pub messages: Vec<MessageView>,
    /// Page.
    pub page: i64,
    /// Page size.
    pub limit: i64,
    /// All of them.
    pub total: u64,
}

/// A session's messages, oldest first (owner).
#[utoipa::path(get, path = "/api/v1/chat/sessions/{id}/messages", tag = "predict",
    params(("id" = String, Path, description = "The session"), PageQuery),
    responses((status = 200, description = "The session's messages, oldest first", body = MessagesBody), ApiErrors))]
pub async fn list_messages(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    PathParams(id): PathParams<ChatSessionId>,
    QueryParams(page): QueryParams<PageParams>,
) -> Answer<MessagesBody> {
    let (page, limit) = page.resolve()?;
    sessions::visible(&state.mongo.chat, &id, &user).await?;
    let (items, total) = sessions::messages_page(&state.mongo.chat, &id, page, limit).await?;
    let messages = items.iter().map(sessions::MessageDoc::view).collect();
    ok(MessagesBody {
        messages,
        page,
        limit,
        total,
    })
}

/// Deletes a session with its messages and files (owner).
#[utoipa::path(delete, path = "/api/v1/chat/sessions/{id}", tag = "predict",
    params(("id" = String, Path, description = "The session")),
    responses((status = 204, description = "Deleted with its messages and files"), ApiErrors))]
pub async fn delete_session(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    PathParams(id): PathParams<ChatSessionId>,
) -> Result<StatusCode, ApiError> {
    sessions::visible(&state.mongo.chat, &id, &user).await?;
    sessions::delete(&state.mongo.chat, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- files

/// A file sent as JSON.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    name: String,
    mime: String,
    /// The bytes, base64-encoded.
    #[schema(format = Byte)]
    data: String,
}

/// A file sent as a multipart form.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
pub struct FileForm {
    /// The file.
    #[schema(format = Binary, value_type = String)]
    file: Vec<u8>,
}

async fn multipart_file(
    request: Request,
    state: &AppState,
) -> Result<(String, String, Vec<u8>), ApiError> {
    let mut form = axum::extract::Multipart::from_request(request, state)
        .await
        .map_err(|e| ApiError::BadRequest {
            code: "invalid_multipart",
            message: e.body_text(),
        })?;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        if field.name() == Some("file") {
            let name = field.file_name().unwrap_or("upload").to_owned();
            let mime = field
                .content_type()
                .unwrap_or("application/octet-stream")
                .to_owned();
            let bytes = field.bytes().await.map_err(multipart_error)?;
            return Ok((name, mime, bytes.to_vec()));
        }
    }
    Err(ApiError::invalid_field(
        "file",
        "a multipart field named file is required",
    ))
}

/// Stores a file: multipart (field `file`) or JSON `{name, mime, data
/// (base64)}`; 413 past `MAX_UPLOAD_BYTES`, 415 when its bytes are not an
/// allowed type.
#[utoipa::path(post, path = "/api/v1/chat/files", tag = "predict",
    request_body(content((FileForm = "multipart/form-data"), (FileBody = "application/json"))),
    responses((status = 201, description = "Stored", body = FileView), ApiErrors))]
pub async fn upload_file(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    request: Request,
) -> Answer<FileView> {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (name, mime, bytes) = if multipart {
        multipart_file(request, &state).await?
    } else {
        let JsonBody(body) = JsonBody::<FileBody>::from_request(request, &state).await?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.data.trim())
            .map_err(|_| ApiError::invalid_field("data", "must be base64"))?;
        (body.name, body.mime, bytes)
    };
    let limit = state.limits.max_upload_bytes;
    let file = files::store(&state.mongo.chat, &user.id, &name, &mime, bytes, limit).await?;
    Ok((StatusCode::CREATED, Json(file.view())))
}

fn multipart_error(e: axum::extract::multipart::MultipartError) -> ApiError {
    if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge {
            message: "the file is larger than MAX_UPLOAD_BYTES".into(),
        }
    } else {
        ApiError::BadRequest {
            code: "invalid_multipart",
            message: e.body_text(),
        }
    }
}

/// The bytes of a file, with their type (owner).
#[utoipa::path(get, path = "/api/v1/chat/files/{id}", tag = "predict",
    params(("id" = String, Path, description = "The file")),
    responses((status = 200, description = "The bytes, with the type sniffed from them when they were stored (one of the allowed types)",
        content(
            (shared::openapi::Binary = "image/png"), (shared::openapi::Binary = "image/jpeg"),
            (shared::openapi::Binary = "image/gif"), (shared::openapi::Binary = "image/webp"),
            (shared::openapi::Binary = "application/pdf"), (shared::openapi::Binary = "text/plain"),
            (shared::openapi::Binary = "text/csv"),
            (shared::openapi::Binary = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"),
            (shared::openapi::Binary = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"),
            (shared::openapi::Binary = "application/vnd.openxmlformats-officedocument.presentationml.presentation"),
            (shared::openapi::Binary = "application/msword"), (shared::openapi::Binary = "application/vnd.ms-excel"),
            (shared::openapi::Binary = "application/vnd.ms-powerpoint"))), ApiErrors))]
pub async fn get_file(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    PathParams(id): PathParams<String>,
) -> Result<Response, ApiError> {
    let file = sessions::visible_file(&state.mongo.chat, &id, &user).await?;
    let disposition = format!(
        "inline; filename=\"{}\"",
        file.name.replace(['"', '\\'], "_")
    );
    Ok((
        [
            (header::CONTENT_TYPE, file.mime.clone()),
            (header::CONTENT_DISPOSITION, disposition),
            (
                header::HeaderName::from_static("x-content-type-options"),
                "nosniff".to_owned(),
            ),
        ],
        Body::from(file.data.bytes),
    )
        .into_response())
}

/// Deletes a file (owner).
#[utoipa::path(delete, path = "/api/v1/chat/files/{id}", tag = "predict",
    params(("id" = String, Path, description = "The file")),
    responses((status = 204, description = "Deleted"), ApiErrors))]
pub async fn delete_file(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    sessions::visible_file(&state.mongo.chat, &id, &user).await?;
    files::delete(&state.mongo.chat, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- admin

/// Pulls the catalogue from Flowise (admin).
#[utoipa::path(post, path = "/api/v1/admin/chatflows/sync", tag = "predict",
    responses((status = 200, description = "What the sync did", body = SyncReport), ApiErrors))]
pub async fn sync(State(state): State<AppState>, user: AuthUser) -> Answer<SyncReport> {
    user.require_admin()?;
    ok(chatflows::sync_chatflows(&state.mongo.chat, &state.flowise).await?)
}

/// `{chatflows}`, as admins see them.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminChatflowsBody {
    /// By name, removed ones included.
    pub chatflows: Vec<AdminChatflowView>,
}

/// Every chatflow, removed ones included (admin).
#[utoipa::path(get, path = "/api/v1/admin/chatflows", tag = "predict",
    responses((status = 200, description = "Every chatflow", body = AdminChatflowsBody), ApiErrors))]
pub async fn admin_list(
    State(state): State<AppState>,
    user: AuthUser,
) -> Answer<AdminChatflowsBody> {
    user.require_admin()?;
    let flows = chatflows::list_all(&state.mongo.chat).await?;
    let chatflows = flows
        .iter()
        .map(chatflows::ChatflowDoc::admin_view)
        .collect();
    ok(AdminChatflowsBody { chatflows })
}

/// `PUT /api/v1/admin/chatflows/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminChatflowBody {
    is_public: Option<bool>,
    /// User ids or emails.
    allowed_users: Option<Vec<String>>,
    /// The `overrideConfig` keys a request may send (replaces the list;
    /// at most 50; `sessionId` is the gateway's own).
    #[schema(max_items = 50)]
    allowed_overrides: Option<Vec<String>>,
    /// What a system message does: `override` (only where the chatflow's
    /// override settings in Flowise enable its system-prompt input),
    /// `prepend` (the default) or `refuse`.
    system_messages: Option<chatflows::SystemMessages>,
    pricing: Option<PriceInput>,
}

/// `{chatflow, pricing?}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminChatflowAnswer {
    /// The chatflow, as admins see it.
    pub chatflow: AdminChatflowView,
    /// Its pricing rule, when the request set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pricing: Option<RuleView>,
}

/// The public flag, the access list (user ids or emails), the overrides a
/// request may send, what a system message does, and the price of a
/// chatflow (admin).
#[utoipa::path(put, path = "/api/v1/admin/chatflows/{id}", tag = "predict",
    params(("id" = String, Path, description = "The chatflow")),
    request_body = AdminChatflowBody,
    responses((status = 200, description = "The chatflow, as admins see it", body = AdminChatflowAnswer), ApiErrors))]
pub async fn admin_update(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<ChatflowId>,
    JsonBody(body): JsonBody<AdminChatflowBody>,
) -> Answer<AdminChatflowAnswer> {
    user.require_admin()?;
    let allowed = body
        .allowed_users
        .as_deref()
        .map(|u| chatflows::parse_users("allowedUsers", u))
        .transpose()?;
    let overrides = body
        .allowed_overrides
        .as_deref()
        .map(|k| chatflows::parse_overrides("allowedOverrides", k))
        .transpose()?;
    // Checked before anything changes, so a bad price changes nothing.
    if let Some(prices) = &body.pricing {
        prices.micros("pricing.")?;
    }
    let settings = chatflows::Settings {
        is_public: body.is_public,
        allowed_users: allowed,
        allowed_overrides: overrides,
        system_messages: body.system_messages,
    };
    let flow = chatflows::update_settings(&state.mongo.chat, &id, settings).await?;
    let pricing = match &body.pricing {
        Some(prices) => {
            let mut conn = state.pg.acquire().await?;
            Some(
                prices
                    .save(&mut conn, &id, &user.id, "pricing.")
                    .await?
                    .view(),
            )
        }
        None => None,
    };
    ok(AdminChatflowAnswer {
        chatflow: flow.admin_view(),
        pricing,
    })
}

/// `{userIds?, emails?}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsersBody {
    user_ids: Option<Vec<String>>,
    emails: Option<Vec<String>>,
}

/// `{chatflow}`, as admins see it.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AdminChatflowEnvelope {
    /// The chatflow.
    pub chatflow: AdminChatflowView,
}

async fn change_users(
    state: &AppState,
    user: &AuthUser,
    id: &ChatflowId,
    body: UsersBody,
    grant: bool,
) -> Answer<AdminChatflowEnvelope> {
    user.require_admin()?;
    let mut entries = body.user_ids.unwrap_or_default();
    entries.extend(body.emails.unwrap_or_default());
    if entries.is_empty() {
        return Err(ApiError::invalid_field("userIds", "give userIds or emails"));
    }
    let entries = chatflows::parse_users("userIds", &entries)?;
    let flow = chatflows::change_users(&state.mongo.chat, id, entries, grant).await?;
    ok(AdminChatflowEnvelope {
        chatflow: flow.admin_view(),
    })
}

/// Grants users access (admin).
#[utoipa::path(post, path = "/api/v1/admin/chatflows/{id}/users", tag = "predict",
    params(("id" = String, Path, description = "The chatflow")),
    request_body = UsersBody,
    responses((status = 200, description = "The chatflow, as admins see it", body = AdminChatflowEnvelope), ApiErrors))]
pub async fn grant_users(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<ChatflowId>,
    JsonBody(body): JsonBody<UsersBody>,
) -> Answer<AdminChatflowEnvelope> {
    change_users(&state, &user, &id, body, true).await
}

/// Takes users' access away (admin).
#[utoipa::path(delete, path = "/api/v1/admin/chatflows/{id}/users", tag = "predict",
    params(("id" = String, Path, description = "The chatflow")),
    request_body = UsersBody,
    responses((status = 200, description = "The chatflow, as admins see it", body = AdminChatflowEnvelope), ApiErrors))]
pub async fn revoke_users(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<ChatflowId>,
    JsonBody(body): JsonBody<UsersBody>,
) -> Answer<AdminChatflowEnvelope> {
    change_users(&state, &user, &id, body, false).await
}
