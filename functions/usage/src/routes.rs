//! Handlers of the usage function (README §7).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;
use shared::error::{ApiError, JsonBody, PathParams, QueryParams};
use shared::ids::UserId;
use shared::keys::UserOrKey;
use shared::openapi::{ApiErrors, RangeQuery as RangeParams, TeamQuery as TeamParam};
use shared::query::DateRange;
use shared::teams;
use shared::token::{AuthUser, Role};
use shared::usage::{self, Stats, UsageRecord};
use uuid::Uuid;

use crate::AppState;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

/// Reports cover the last 30 days unless `from` says otherwise.
const DEFAULT_DAYS: i64 = 30;
/// Rows per query while streaming an export.
const EXPORT_CHUNK: i64 = 1000;

/// `POST /api/usage/record`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RecordBody {
    /// The user (the caller when absent).
    user_id: Option<UserId>,
    #[schema(min_length = 1, max_length = 64)]
    service: String,
    #[schema(min_length = 1, max_length = 128)]
    operation: String,
    #[schema(minimum = 0, maximum = 9007199254740991_i64)]
    credits: i64,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
}

/// Records usage (admin; end users cannot write their own usage, the
/// predict functions record theirs in-process).
#[utoipa::path(post, path = "/api/usage/record", tag = "usage",
    request_body = RecordBody,
    responses((status = 201, description = "Recorded", body = UsageRecord), ApiErrors))]
pub async fn record(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<RecordBody>,
) -> Answer<UsageRecord> {
    user.require_admin()?;
    let user_id = req.user_id.unwrap_or_else(|| user.user_id());
    let mut conn = state.pg.acquire().await?;
    let record = usage::record_usage(
        &mut conn,
        &user_id,
        req.service.trim(),
        req.operation.trim(),
        req.credits,
        req.metadata
            .unwrap_or_else(|| Value::Object(Default::default())),
        None,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(record)))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RangeQuery {
    from: Option<String>,
    to: Option<String>,
    /// A team's report: its members' usage while they belonged (the
    /// team's supervisors and admins).
    team_id: Option<Uuid>,
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
) -> Answer<Stats> {
    let range = q.range()?;
    let mut conn = state.pg.acquire().await?;
    let stats = usage::stats(&mut conn, user_id, None, &range, with_users).await?;
    Ok((StatusCode::OK, Json(stats)))
}

/// A team's report, with a line per member (README "Teams"): for its
/// supervisors and admins only (403 `not_your_team` otherwise; other
/// supervisors keep the system-wide reports).
async fn team_stats(
    state: &AppState,
    user: &AuthUser,
    team: Uuid,
    q: &RangeQuery,
) -> Answer<Stats> {
    let range = q.range()?;
    let mut conn = state.pg.acquire().await?;
    teams::lead(&mut conn, user, team).await?;
    let stats = usage::stats(&mut conn, None, Some(team), &range, true).await?;
    Ok((StatusCode::OK, Json(stats)))
}

/// The caller's usage over the range (the last 30 days by default), or
/// with `teamId` a team's (its supervisors, admins), with `byUser` per
/// member.
#[utoipa::path(get, path = "/api/usage/stats", tag = "usage", params(RangeParams, TeamParam),
    responses((status = 200, description = "Usage statistics over the range", body = Stats), ApiErrors))]
pub async fn my_stats(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Answer<Stats> {
    match q.team_id {
        Some(team) => team_stats(&state, &user, team, &q).await,
        None => stats_for(&state, Some(&user.id), &q, false).await,
    }
}

/// A user's usage (admin, supervisor).
#[utoipa::path(get, path = "/api/usage/stats/{userId}", tag = "usage",
    params(("userId" = String, Path, description = "The user"), RangeParams),
    responses((status = 200, description = "Usage statistics over the range", body = Stats), ApiErrors))]
pub async fn user_stats(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(user_id): PathParams<UserId>,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Answer<Stats> {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    stats_for(&state, Some(&user_id), &q, false).await
}

/// Everyone's usage with the top users (admin, supervisor).
#[utoipa::path(get, path = "/api/usage/system-stats", tag = "usage", params(RangeParams),
    responses((status = 200, description = "Usage statistics over the range, with byUser", body = Stats), ApiErrors))]
pub async fn system_stats(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Answer<Stats> {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    stats_for(&state, None, &q, true).await
}

/// Usage records as CSV, streamed in chunks (admin, supervisor; with
/// `teamId`, a team's members' records while they belonged, for its
/// supervisors and admins). A range
/// whose CSV would pass 5 MB (a buffered Lambda answer stops at 6) is 422
/// `export_too_large`, counted before anything is sent.
#[utoipa::path(get, path = "/api/usage/export", tag = "usage", params(RangeParams, TeamParam),
    responses((status = 200, description = "Usage records as CSV", content_type = "text/csv", body = String), ApiErrors))]
pub async fn export(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<RangeQuery>,
) -> Result<Response, ApiError> {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    let range = q.range()?;
    if let Some(team) = q.team_id {
        let mut conn = state.pg.acquire().await?;
        teams::lead(&mut conn, &user, team).await?;
    }
    usage::check_export_size(&state.pg, &range, q.team_id).await?;
    let filename = format!(
        "usage-{}{}-{}.csv",
        q.team_id.map(|t| format!("team-{t}-")).unwrap_or_default(),
        range.from.format("%Y%m%d"),
        range.to.format("%Y%m%d")
    );
    let stream = usage::export_csv(state.pg.clone(), range, q.team_id, EXPORT_CHUNK);
    let body = Body::from_stream(stream);
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
