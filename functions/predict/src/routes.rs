//! Handlers of the predict function (SPEC §8). The predict family keeps
//! the seed's snake_case keys.

use axum::body::Body;
use axum::extract::{FromRequest, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use base64::Engine;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::chat::{chatflows, files, sessions};
use shared::error::{ApiError, JsonBody, PathParams, QueryParams};
use shared::http::{RequestArrival, RequestId};
use shared::query::PageParams;
use shared::token::AuthUser;

use crate::prediction::{self, Outcome, PredictRequest, Start, FINISH_MARGIN};
use crate::AppState;

type ApiResult = Result<Response, ApiError>;

// ---------------------------------------------------------------- chatflows

/// `GET /api/v1/chatflows`: the chatflows this user may use.
pub async fn list_chatflows(State(state): State<AppState>, user: AuthUser) -> ApiResult {
    let flows: Vec<Value> = chatflows::list_for(&state.mongo.chat, &user)
        .await?
        .iter()
        .map(chatflows::ChatflowDoc::to_public_json)
        .collect();
    Ok(Json(json!({ "chatflows": flows })).into_response())
}

/// `GET /api/v1/chatflows/{id}`: 404 unknown or removed, 403 without access.
pub async fn get_chatflow(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let flow = chatflows::usable(&state.mongo.chat, &id, &user).await?;
    Ok(Json(json!({ "chatflow": flow.to_public_json() })).into_response())
}

// ---------------------------------------------------------------- predict

/// Marks a response as the stored answer of an `Idempotency-Key`.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// `POST /api/v1/chat/predict`: the five steps, buffered, answered within
/// `FLOWISE_BUFFERED_TIMEOUT_SECONDS` of the request's arrival (API
/// Gateway cuts a request at 30 s): Flowise gets what remains minus
/// [`FINISH_MARGIN`], and past it the answer is 504 and free.
pub async fn predict(
    State(state): State<AppState>,
    user: AuthUser,
    Extension(RequestId(request_id)): Extension<RequestId>,
    Extension(RequestArrival(arrival)): Extension<RequestArrival>,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<Value>,
) -> ApiResult {
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
    let answer = match state
        .flowise
        .predict(&prepared.chatflow_id, &prepared.request, budget)
        .await
    {
        Ok(answer) => answer,
        Err(e) => return Err(prediction::fail(&state, &user, &prepared, e).await),
    };
    let outcome = Outcome::answered(&prepared, answer);
    let answer = prediction::finish(&state, &user, &prepared, &outcome).await?;
    Ok(Json(answer).into_response())
}

// ---------------------------------------------------------------- sessions

/// `GET /api/v1/chat/sessions`
pub async fn list_sessions(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(page): QueryParams<PageParams>,
) -> ApiResult {
    let (page, limit) = page.resolve()?;
    let (items, total) = sessions::list(&state.mongo.chat, &user.id, page, limit).await?;
    let items: Vec<Value> = items.iter().map(sessions::SessionDoc::to_json).collect();
    Ok(
        Json(json!({ "sessions": items, "page": page, "limit": limit, "total": total }))
            .into_response(),
    )
}

/// `GET /api/v1/chat/sessions/{id}/messages` (owner)
pub async fn list_messages(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    QueryParams(page): QueryParams<PageParams>,
) -> ApiResult {
    let (page, limit) = page.resolve()?;
    sessions::owned(&state.mongo.chat, &id, &user.id).await?;
    let (items, total) = sessions::messages_page(&state.mongo.chat, &id, page, limit).await?;
    let items: Vec<Value> = items.iter().map(sessions::MessageDoc::to_json).collect();
    Ok(
        Json(json!({ "messages": items, "page": page, "limit": limit, "total": total }))
            .into_response(),
    )
}

/// `DELETE /api/v1/chat/sessions/{id}` (owner): messages and files go too.
pub async fn delete_session(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    sessions::owned(&state.mongo.chat, &id, &user.id).await?;
    sessions::delete(&state.mongo.chat, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- files

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileBody {
    name: String,
    mime: String,
    data: String,
}

/// `POST /api/v1/chat/files`: multipart (field `file`) or JSON
/// `{name, mime, data (base64)}`.
pub async fn upload_file(
    State(state): State<AppState>,
    user: AuthUser,
    request: Request,
) -> ApiResult {
    let multipart = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    let (name, mime, bytes) = if multipart {
        let mut form = axum::extract::Multipart::from_request(request, &state)
            .await
            .map_err(|e| ApiError::BadRequest {
                code: "invalid_multipart",
                message: e.body_text(),
            })?;
        let mut found = None;
        while let Some(field) = form.next_field().await.map_err(multipart_error)? {
            if field.name() == Some("file") {
                let name = field.file_name().unwrap_or("upload").to_owned();
                let mime = field
                    .content_type()
                    .unwrap_or("application/octet-stream")
                    .to_owned();
                let bytes = field.bytes().await.map_err(multipart_error)?;
                found = Some((name, mime, bytes.to_vec()));
                break;
            }
        }
        found.ok_or_else(|| {
            ApiError::invalid_field("file", "a multipart field named file is required")
        })?
    } else {
        let JsonBody(body) = JsonBody::<FileBody>::from_request(request, &state).await?;
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(body.data.trim())
            .map_err(|_| ApiError::invalid_field("data", "must be base64"))?;
        (body.name, body.mime, bytes)
    };
    let file = files::store(
        &state.mongo.chat,
        &user.id,
        &name,
        &mime,
        bytes,
        state.limits.max_upload_bytes,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(file.to_json())).into_response())
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

/// `GET /api/v1/chat/files/{id}` (owner): the bytes with their type.
pub async fn get_file(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    let file = files::owned(&state.mongo.chat, &id, &user.id).await?;
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

/// `DELETE /api/v1/chat/files/{id}` (owner)
pub async fn delete_file(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    files::owned(&state.mongo.chat, &id, &user.id).await?;
    files::delete(&state.mongo.chat, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------- admin

/// `POST /api/v1/admin/chatflows/sync` (admin)
pub async fn sync(State(state): State<AppState>, user: AuthUser) -> ApiResult {
    user.require_admin()?;
    let report = chatflows::sync_chatflows(&state.mongo.chat, &state.flowise).await?;
    Ok(Json(report).into_response())
}

/// `GET /api/v1/admin/chatflows` (admin): removed ones included.
pub async fn admin_list(State(state): State<AppState>, user: AuthUser) -> ApiResult {
    user.require_admin()?;
    let flows: Vec<Value> = chatflows::list_all(&state.mongo.chat)
        .await?
        .iter()
        .map(chatflows::ChatflowDoc::to_admin_json)
        .collect();
    Ok(Json(json!({ "chatflows": flows })).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdminChatflowBody {
    is_public: Option<bool>,
    allowed_users: Option<Vec<String>>,
    pricing: Option<shared::pricing::PriceInput>,
}

/// `PUT /api/v1/admin/chatflows/{id}` (admin): public flag, access list
/// (user ids or emails) and the chatflow's pricing rule.
pub async fn admin_update(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<AdminChatflowBody>,
) -> ApiResult {
    user.require_admin()?;
    let allowed = body
        .allowed_users
        .as_deref()
        .map(|u| chatflows::parse_users("allowedUsers", u))
        .transpose()?;
    // Checked before anything changes, so a bad price changes nothing.
    if let Some(prices) = &body.pricing {
        prices.micros("pricing.")?;
    }
    let flow = chatflows::update_access(&state.mongo.chat, &id, body.is_public, allowed).await?;
    let mut out = json!({ "chatflow": flow.to_admin_json() });
    if let Some(prices) = &body.pricing {
        let mut conn = state.pg.acquire().await?;
        out["pricing"] = prices
            .save(&mut conn, &id, &user.id, "pricing.")
            .await?
            .to_json();
    }
    Ok(Json(out).into_response())
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsersBody {
    user_ids: Option<Vec<String>>,
    emails: Option<Vec<String>>,
}

async fn change_users(
    state: &AppState,
    user: &AuthUser,
    id: &str,
    body: UsersBody,
    grant: bool,
) -> ApiResult {
    user.require_admin()?;
    let mut entries = body.user_ids.unwrap_or_default();
    entries.extend(body.emails.unwrap_or_default());
    if entries.is_empty() {
        return Err(ApiError::invalid_field("userIds", "give userIds or emails"));
    }
    let entries = chatflows::parse_users("userIds", &entries)?;
    let flow = chatflows::change_users(&state.mongo.chat, id, entries, grant).await?;
    Ok(Json(json!({ "chatflow": flow.to_admin_json() })).into_response())
}

/// `POST /api/v1/admin/chatflows/{id}/users` (admin): grant access.
pub async fn grant_users(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<UsersBody>,
) -> ApiResult {
    change_users(&state, &user, &id, body, true).await
}

/// `DELETE /api/v1/admin/chatflows/{id}/users` (admin): revoke access.
pub async fn revoke_users(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<UsersBody>,
) -> ApiResult {
    change_users(&state, &user, &id, body, false).await
}
