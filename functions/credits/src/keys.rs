//! API keys and per-user rate limits (README §11). Keys are made with an
//! access token only (a key never makes, lists or revokes keys), and this
//! route ignores `Idempotency-Key`: a replay would show the secret again.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::error::{ApiError, JsonBody, PathParams, QueryParams};
use shared::ids::{ChatflowId, UserId};
use shared::keys::store::{self, CreatedKey, KeySpec, KeyView};
use shared::ledger::limits;
use shared::openapi::{ApiErrors, PageQuery};
use shared::query::PageParams;
use shared::token::{AuthUser, Role};
use uuid::Uuid;

use crate::AppState;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

/// `POST /api/keys`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateKeyBody {
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// 1 to 365 (absent or `null`: the key never expires).
    #[schema(minimum = 1, maximum = 365, nullable = true)]
    expires_in_days: Option<i32>,
    /// The chatflows the key may use, 1 to 100 (absent or `null`: every
    /// one its user may use).
    #[schema(value_type = Option<Vec<String>>, max_items = 100, nullable = true)]
    chatflows: Option<Vec<ChatflowId>>,
    /// Credits the key may spend a calendar month, UTC (absent or `null`:
    /// no limit).
    #[schema(minimum = 1, maximum = 9007199254740991_i64, nullable = true)]
    monthly_credit_limit: Option<i64>,
}

impl CreateKeyBody {
    fn check(self) -> Result<KeySpec, ApiError> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(ApiError::invalid_field(
                "name",
                "must be 1 to 100 characters, without control characters",
            ));
        }
        if self
            .expires_in_days
            .is_some_and(|d| !(1..=365).contains(&d))
        {
            return Err(ApiError::invalid_field(
                "expiresInDays",
                "must be from 1 to 365, or absent for a key that never expires",
            ));
        }
        let chatflows = match self.chatflows {
            None => None,
            Some(list) if list.is_empty() || list.len() > 100 => {
                return Err(ApiError::invalid_field(
                    "chatflows",
                    "must list 1 to 100 chatflow ids, or be absent for all",
                ))
            }
            Some(list) => {
                let mut ids: Vec<String> =
                    list.into_iter().map(|c| c.as_str().to_owned()).collect();
                ids.sort();
                ids.dedup();
                Some(ids)
            }
        };
        if self
            .monthly_credit_limit
            .is_some_and(|l| !(1..=shared::ledger::MAX_CREDITS).contains(&l))
        {
            return Err(ApiError::invalid_field(
                "monthlyCreditLimit",
                format!("must be from 1 to {}", shared::ledger::MAX_CREDITS),
            ));
        }
        Ok(KeySpec {
            name,
            expires_in_days: self.expires_in_days,
            chatflows,
            monthly_credit_limit: self.monthly_credit_limit,
        })
    }
}

/// Makes an API key for the caller (at most 20 live ones). The secret is
/// in this answer only.
#[utoipa::path(post, path = "/api/keys", tag = "keys",
    request_body = CreateKeyBody,
    responses((status = 201, description = "The key, with its secret (shown this once)", body = CreatedKey), ApiErrors))]
pub async fn create_key(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<CreateKeyBody>,
) -> Answer<CreatedKey> {
    let spec = body.check()?;
    let mut tx = state.pg.begin().await?;
    let created = store::create(&mut tx, &user, spec).await?;
    tx.commit().await?;
    tracing::info!(key = %created.id, "API key made");
    Ok((StatusCode::CREATED, Json(created)))
}

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
