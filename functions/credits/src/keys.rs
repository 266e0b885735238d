//! API keys and per-user rate limits (README §11): listing and revoking
//! keys with an access token (a key never lists or revokes keys). Keys are
//! made by the auth function, which checks the owner's password.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::error::{ApiError, JsonBody, PathParams, QueryParams};
use shared::ids::UserId;
use shared::keys::store::{self, KeyView};
use shared::ledger::limits;
use shared::openapi::{ApiErrors, PageQuery};
use shared::query::PageParams;
use shared::token::{AuthUser, Role};
use uuid::Uuid;

use crate::AppState;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

/// A page of keys.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct KeysBody {
    /// Newest first.
    pub keys: Vec<KeyView>,
    /// The page.
    pub page: i64,
    /// Its size.
    pub limit: i64,
    /// Keys in all.
    pub total: i64,
}

async fn page_of(state: &AppState, user: Option<&UserId>, page: PageParams) -> Answer<KeysBody> {
    let (page, limit) = page.resolve()?;
    let mut conn = state.pg.acquire().await?;
    let (keys, total) = store::list(&mut conn, user, (page, limit)).await?;
    let body = KeysBody {
        keys,
        page,
        limit,
        total,
    };
    Ok((StatusCode::OK, Json(body)))
}

/// The caller's keys, revoked and expired ones included, without secrets.
#[utoipa::path(get, path = "/api/keys", tag = "keys", params(PageQuery),
    responses((status = 200, description = "A page of the caller's keys", body = KeysBody), ApiErrors))]
pub async fn list_keys(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(page): QueryParams<PageParams>,
) -> Answer<KeysBody> {
    page_of(&state, Some(&user.user_id()), page).await
}

/// Revokes one of the caller's keys (404 for anyone else's); the next
/// request made with it is 401.
#[utoipa::path(delete, path = "/api/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "The key")),
    responses((status = 204, description = "Revoked"), ApiErrors))]
pub async fn revoke_key(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<Uuid>,
) -> Result<StatusCode, ApiError> {
    let mut conn = state.pg.acquire().await?;
    store::revoke(&mut conn, id, Some(&user.user_id()), &user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `?userId&page&limit`.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct AdminKeysQuery {
    /// Only this user's keys.
    user_id: Option<String>,
    /// 1-based page (1).
    page: Option<i64>,
    /// Items per page (20, at most 100).
    limit: Option<i64>,
}

/// Every user's keys, or one user's (admin).
#[utoipa::path(get, path = "/api/admin/keys", tag = "keys", params(AdminKeysQuery),
    responses((status = 200, description = "A page of keys", body = KeysBody), ApiErrors))]
pub async fn admin_list_keys(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<AdminKeysQuery>,
) -> Answer<KeysBody> {
    user.require_admin()?;
    let target = q
        .user_id
        .as_deref()
        .map(|id| UserId::parse("userId", id))
        .transpose()?;
    let page = PageParams {
        page: q.page,
        limit: q.limit,
    };
    page_of(&state, target.as_ref(), page).await
}

/// Revokes any user's key (admin).
#[utoipa::path(delete, path = "/api/admin/keys/{id}", tag = "keys",
    params(("id" = Uuid, Path, description = "The key")),
    responses((status = 204, description = "Revoked"), ApiErrors))]
pub async fn admin_revoke_key(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<Uuid>,
) -> Result<StatusCode, ApiError> {
    user.require_admin()?;
    let mut conn = state.pg.acquire().await?;
    store::revoke(&mut conn, id, None, &user.id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/admin/users/{id}/limits`: each `null` (or absent) goes back
/// to the default.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LimitsBody {
    /// Predictions begun in any 60 seconds, 1 to 10000 (`null`:
    /// `RATE_LIMIT_PER_MINUTE`).
    #[schema(minimum = 1, maximum = 10000, nullable = true)]
    rate_limit_per_minute: Option<i32>,
    /// Predictions running at once, 1 to 100 (`null`:
    /// `MAX_CONCURRENT_STREAMS`).
    #[schema(minimum = 1, maximum = 100, nullable = true)]
    max_concurrent_streams: Option<i32>,
}

/// A user's own limits (`null`: the default applies).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserLimits {
    /// The user.
    pub user_id: String,
    /// Predictions a minute.
    pub rate_limit_per_minute: Option<i32>,
    /// Predictions at once.
    pub max_concurrent_streams: Option<i32>,
}

fn limit(field: &str, value: Option<i32>, max: i32) -> Result<Option<i32>, ApiError> {
    match value {
        Some(v) if !(1..=max).contains(&v) => Err(ApiError::invalid_field(
            field,
            format!("must be from 1 to {max}, or null for the default"),
        )),
        other => Ok(other),
    }
}

/// A user's own rate limits (admin, supervisor): `null` where the default
/// applies, both `null` for a user the ledger has not seen.
#[utoipa::path(get, path = "/api/admin/users/{id}/limits", tag = "keys",
    params(("id" = String, Path, description = "The user")),
    responses((status = 200, description = "The user's limits", body = UserLimits), ApiErrors))]
pub async fn get_limits(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(target): PathParams<UserId>,
) -> Answer<UserLimits> {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    let mut conn = state.pg.acquire().await?;
    limits_answer(&target, limits::user_limits(&mut conn, &target).await?)
}

/// Sets a user's own rate limits (admin); they apply from the next
/// prediction on.
#[utoipa::path(put, path = "/api/admin/users/{id}/limits", tag = "keys",
    params(("id" = String, Path, description = "The user")),
    request_body = LimitsBody,
    responses((status = 200, description = "The user's limits", body = UserLimits), ApiErrors))]
pub async fn put_limits(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(target): PathParams<UserId>,
    JsonBody(body): JsonBody<LimitsBody>,
) -> Answer<UserLimits> {
    user.require_admin()?;
    let per_minute = limit("rateLimitPerMinute", body.rate_limit_per_minute, 10_000)?;
    let concurrent = limit("maxConcurrentStreams", body.max_concurrent_streams, 100)?;
    let mut conn = state.pg.acquire().await?;
    let stored = limits::set_user_limits(&mut conn, &target, per_minute, concurrent).await?;
    tracing::info!(target = %target, "rate limits set by an admin");
    limits_answer(&target, stored)
}

/// The answer of both limits routes: `target`'s stored limits (per minute,
/// at once).
fn limits_answer(
    target: &UserId,
    (per_minute, concurrent): (Option<i32>, Option<i32>),
) -> Answer<UserLimits> {
    let body = UserLimits {
        user_id: target.to_string(),
        rate_limit_per_minute: per_minute,
        max_concurrent_streams: concurrent,
    };
    Ok((StatusCode::OK, Json(body)))
}
