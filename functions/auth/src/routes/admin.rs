//! Admin user management (README §5). Supervisors may read.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use bson::doc;
use serde::{Deserialize, Serialize};
use shared::error::{ApiError, JsonBody, PathParams, QueryParams};
use shared::identity::{Email, Password, Username};
use shared::openapi::ApiErrors;
use shared::query::PageParams;
use shared::token::{AuthUser, Role};

use super::account::new_user;
use super::{Answer, UserEnvelope, UserView};
use crate::accounts::{self, rank, Change};
use crate::store::UserDoc;
use crate::AppState;

const ADMIN_LEASE: &str = "admin-changes";

/// `?page&limit&role&search`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// 1-based page (1).
    #[param(minimum = 1, default = 1)]
    page: Option<i64>,
    /// Items per page (20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// Only this role.
    #[param(value_type = Option<Role>)]
    role: Option<String>,
    /// Part of the username or the email.
    #[param(max_length = 100)]
    search: Option<String>,
}

/// A page of accounts.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct UsersPage {
    /// Newest first, each with its balance and this month's spend
    /// (`credits`).
    pub users: Vec<UserView>,
    /// Page.
    pub page: i64,
    /// Page size.
    pub limit: i64,
    /// All matching.
    pub total: u64,
}

fn escape_regex(text: &str) -> String {
    text.chars()
        .flat_map(|c| {
            let special = "\\^$.|?*+()[]{}".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

impl ListQuery {
    /// The store filter of `?role&search`.
    fn filter(&self) -> Result<bson::Document, ApiError> {
        let mut filter = doc! {};
        if let Some(role) = self.role.as_deref().filter(|r| !r.is_empty()) {
            let role: Role = role
                .parse()
                .map_err(|e: String| ApiError::invalid_field("role", e))?;
            filter.insert("role", role.as_str());
        }
        if let Some(search) = self
            .search
            .as_deref()
            .map(|s| s.trim().to_lowercase())
            .filter(|s| !s.is_empty())
        {
            if search.chars().count() > 100 {
                return Err(ApiError::invalid_field(
                    "search",
                    "must be at most 100 characters",
                ));
            }
            let pattern = escape_regex(&search);
            filter.insert(
                "$or",
                vec![
                    doc! {"username_key": {"$regex": &pattern}},
                    doc! {"email": {"$regex": &pattern}},
                ],
            );
        }
        Ok(filter)
    }
}

/// `GET /api/admin/users` (admin, supervisor): `?page&limit&role&search`,
/// `search` matching part of the username or the email.
#[utoipa::path(get, path = "/api/admin/users", tag = "auth", params(ListQuery),
    responses((status = 200, description = "A page of accounts", body = UsersPage), ApiErrors))]
pub async fn list_users(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<ListQuery>,
) -> Answer<UsersPage> {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    let (page, limit) = PageParams {
        page: q.page,
        limit: q.limit,
    }
    .resolve()?;
    let filter = q.filter()?;
    let users = state.store.users();
    let total = users.count_documents(filter.clone()).await?;
    let cursor = users
        .find(filter)
        .sort(doc! {"created_at": -1, "_id": 1})
        .skip(((page - 1) * limit) as u64)
        .limit(limit)
        .await?;
    let users: Vec<UserView> = shared::db::mongo::collect_all::<UserDoc>(cursor)
        .await?
        .iter()
        .map(UserView::from)
        .collect();
    let ids: Vec<String> = users.iter().map(|u| u.id.clone()).collect();
    let mut conn = state.pg.acquire().await?;
    let mut credits = shared::ledger::queries::summaries(&mut conn, &ids).await?;
    let users = users
        .into_iter()
        .map(|user| UserView {
            credits: Some(credits.remove(&user.id).unwrap_or_default()),
            ..user
        })
        .collect();
    let body = UsersPage {
        users,
        page,
        limit,
        total,
    };
    Ok((StatusCode::OK, Json(body)))
}

/// One account (admin, supervisor).
#[utoipa::path(get, path = "/api/admin/users/{id}", tag = "auth",
    params(("id" = String, Path, description = "The user")),
    responses((status = 200, description = "A user", body = UserEnvelope), ApiErrors))]
pub async fn get_user(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Answer<UserEnvelope> {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    let doc = state
        .store
        .user_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    UserEnvelope::of(&doc)
}

/// `POST /api/admin/users`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    #[schema(min_length = 3, max_length = 32, pattern = "^[A-Za-z0-9_.-]+$")]
    username: String,
    email: String,
    #[schema(min_length = 8, max_length = 128)]
    password: String,
    role: Role,
    verified: Option<bool>,
}

/// Creates an account (admin).
#[utoipa::path(post, path = "/api/admin/users", tag = "auth",
    request_body = CreateBody,
    responses((status = 201, description = "A user", body = UserEnvelope), ApiErrors))]
pub async fn create_user(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<CreateBody>,
) -> Answer<UserEnvelope> {
    user.require_admin()?;
    let username = Username::parse("username", &body.username)?;
    let email = Email::parse("email", &body.email)?;
    let password = Password::parse("password", &body.password)?;
    let doc = new_user(
        &username,
        &email,
        &password,
        body.role,
        body.verified.unwrap_or(false),
    )
    .await?;
    state.store.insert_user(&doc).await?;
    accounts::record_after(&state, &doc).await;
    tracing::info!(created = %doc.id, role = doc.role.as_str(), "account created by an admin");
    Ok((
        StatusCode::CREATED,
        Json(UserEnvelope {
            user: (&doc).into(),
        }),
    ))
}

/// `PATCH /api/admin/users/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PatchBody {
    role: Option<Role>,
    is_verified: Option<bool>,
    disabled: Option<bool>,
}

fn last_admin() -> ApiError {
    ApiError::Unprocessable {
        code: "last_admin",
        message: "the last active admin cannot be removed, demoted or disabled".into(),
    }
}

/// `PATCH /api/admin/users/{id}` (admin): role, verification, disabling.
/// Disabling or demoting revokes the user's API keys (first, in
/// PostgreSQL) and ends their refresh tokens at once; access tokens
/// already issued live out their 15 minutes. `isVerified` concerns
/// the account's own address only, never a pending one.
#[utoipa::path(patch, path = "/api/admin/users/{id}", tag = "auth",
    params(("id" = String, Path, description = "The user")),
    request_body = PatchBody,
    responses((status = 200, description = "A user", body = UserEnvelope), ApiErrors))]
pub async fn patch_user(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<PatchBody>,
) -> Answer<UserEnvelope> {
    user.require_admin()?;
    if id == user.id && body.disabled == Some(true) {
        return Err(ApiError::Unprocessable {
            code: "cannot_disable_self",
            message: "an admin cannot disable their own account".into(),
        });
    }
    let mut set = bson::Document::new();
    if let Some(role) = body.role {
        set.insert("role", role.as_str());
    }
    if let Some(verified) = body.is_verified {
        set.insert("is_verified", verified);
    }
    if let Some(disabled) = body.disabled {
        set.insert("disabled", disabled);
    }
    let removes_admin = body.role.is_some_and(|r| r != Role::Admin) || body.disabled == Some(true);
    let store = state.store.clone();
    let updated = store
        .with_lease(ADMIN_LEASE, async {
            let target = store
                .user_by_id(&id)
                .await?
                .ok_or_else(|| ApiError::not_found("no such user"))?;
            if removes_admin
                && target.role == Role::Admin
                && !target.disabled
                && store.other_active_admins(&id).await? == 0
            {
                return Err(last_admin());
            }
            if set.is_empty() {
                return Ok(target);
            }
            let demoted = body.role.is_some_and(|r| rank(r) < rank(target.role));
            let disables = body.disabled == Some(true) && !target.disabled;
            let after = UserDoc {
                role: body.role.unwrap_or(target.role),
                disabled: body.disabled.unwrap_or(target.disabled),
                ..target
            };
            let change = match demoted || disables {
                true => Change::RevokeKeys,
                false => Change::Record,
            };
            accounts::record(&state, &after, change, &user.id).await?;
            if change == Change::RevokeKeys {
                store.revoke_user_tokens(&id, None).await?;
            }
            store.update_user(&id, set).await
        })
        .await?;
    tracing::info!(target = %id, "account changed by an admin");
    UserEnvelope::of(&updated)
}

/// Deletes an account (admin): never yourself, never the last admin.
#[utoipa::path(delete, path = "/api/admin/users/{id}", tag = "auth",
    params(("id" = String, Path, description = "The user")),
    responses((status = 204, description = "Deleted"), ApiErrors))]
pub async fn delete_user(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> Result<StatusCode, ApiError> {
    user.require_admin()?;
    if id == user.id {
        return Err(ApiError::Unprocessable {
            code: "cannot_delete_self",
            message: "an admin cannot delete their own account".into(),
        });
    }
    let store = state.store.clone();
    store
        .with_lease(ADMIN_LEASE, async {
            let target = store
                .user_by_id(&id)
                .await?
                .ok_or_else(|| ApiError::not_found("no such user"))?;
            if target.role == Role::Admin
                && !target.disabled
                && store.other_active_admins(&id).await? == 0
            {
                return Err(last_admin());
            }
            accounts::record(&state, &target, Change::Delete, &user.id).await?;
            store.delete_user(&id).await
        })
        .await?;
    tracing::info!(target = %id, "account deleted by an admin");
    Ok(StatusCode::NO_CONTENT)
}

#[cfg(test)]
mod tests {
    use super::escape_regex;

    #[test]
    fn search_text_is_matched_literally() {
        assert_eq!(escape_regex("a.b*c"), "a\\.b\\*c");
        assert_eq!(escape_regex("plain"), "plain");
    }
}
