//! Handlers of the usage function (SPEC §7).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use shared::error::{ApiError, JsonBody, PathParams, QueryParams};
use shared::query::DateRange;
use shared::token::{AuthUser, Role};
use shared::usage;

use crate::AppState;

type ApiResult = Result<Response, ApiError>;

/// Reports cover the last 30 days unless `from` says otherwise.
const DEFAULT_DAYS: i64 = 30;
/// Rows per query while streaming an export.
const EXPORT_CHUNK: i64 = 1000;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordBody {
    user_id: Option<String>,
    service: String,
    operation: String,
    credits: i64,
    metadata: Option<Value>,
}

/// `POST /api/usage/record` (admin; end users cannot write their own usage)
pub async fn record(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<RecordBody>,
) -> ApiResult {
    user.require_admin()?;
    let user_id = req.user_id.unwrap_or_else(|| user.id.clone());
    let mut conn = state.pg.acquire().await?;
    let record = usage::record_usage(
        &mut conn,
        user_id.trim(),
        req.service.trim(),
        req.operation.trim(),
        req.credits,
        req.metadata
            .unwrap_or_else(|| Value::Object(Default::default())),
    )
    .await?;
    Ok((StatusCode::CREATED, Json(record)).into_response())
}

#[derive(Deserialize)]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
}

impl RangeQuery {
    fn range(&self) -> Result<DateRange, ApiError> {
        DateRange::parse(self.from.as_deref(), self.to.as_deref(), DEFAULT_DAYS)
    }
}

async fn stats_for(
    state: &AppState,
    user_id: Option<&str>,
    q: &RangeQuery,
    with_users: bool,
) -> ApiResult {
    let range = q.range()?;
    let mut conn = state.pg.acquire().await?;
    Ok(Json(usage::stats(&mut conn, user_id, &range, with_users).await?).into_response())
}

/// `GET /api/usage/stats` (own)
pub async fn my_stats(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<RangeQuery>,
) -> ApiResult {
    stats_for(&state, Some(&user.id), &q, false).await
}

/// `GET /api/usage/stats/{userId}` (admin, supervisor)
pub async fn user_stats(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(user_id): PathParams<String>,
    QueryParams(q): QueryParams<RangeQuery>,
) -> ApiResult {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    stats_for(&state, Some(&user_id), &q, false).await
}

/// `GET /api/usage/system-stats` (admin, supervisor)
pub async fn system_stats(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<RangeQuery>,
) -> ApiResult {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    stats_for(&state, None, &q, true).await
}

/// `GET /api/usage/export` (admin, supervisor): CSV, streamed in chunks.
pub async fn export(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<RangeQuery>,
) -> ApiResult {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    let range = q.range()?;
    let filename = format!(
        "usage-{}-{}.csv",
        range.from.format("%Y%m%d"),
        range.to.format("%Y%m%d")
    );
    let body = Body::from_stream(usage::export_csv(state.pg.clone(), range, EXPORT_CHUNK));
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response())
}
