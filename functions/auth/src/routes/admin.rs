//! Admin user management (SPEC §5). Supervisors may read.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use bson::doc;
use serde::Deserialize;
use serde_json::json;
use shared::error::{ApiError, JsonBody, PathParams, QueryParams};
use shared::identity::{Email, Password, Username};
use shared::query::PageParams;
use shared::token::{AuthUser, Role};

use super::account::new_user;
use crate::store::UserDoc;
use crate::AppState;

type ApiResult = Result<Response, ApiError>;

const ADMIN_LEASE: &str = "admin-changes";

#[derive(Deserialize)]
pub struct ListQuery {
    page: Option<i64>,
    limit: Option<i64>,
    role: Option<String>,
    search: Option<String>,
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

/// `GET /api/admin/users` (admin, supervisor): `?page&limit&role&search`,
/// `search` matching part of the username or the email.
pub async fn list_users(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    let (page, limit) = PageParams {
        page: q.page,
        limit: q.limit,
    }
    .resolve()?;
    let mut filter = doc! {};
    if let Some(role) = q.role.filter(|r| !r.is_empty()) {
        let role: Role = role
            .parse()
            .map_err(|e: String| ApiError::invalid_field("role", e))?;
        filter.insert("role", role.as_str());
    }
    if let Some(search) = q
        .search
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
    let users = state.store.users();
    let total = users.count_documents(filter.clone()).await?;
    let cursor = users
        .find(filter)
        .sort(doc! {"created_at": -1, "_id": 1})
        .skip(((page - 1) * limit) as u64)
        .limit(limit)
        .await?;
    let items: Vec<serde_json::Value> = shared::db::mongo::collect_all::<UserDoc>(cursor)
        .await?
        .iter()
        .map(UserDoc::to_json)
        .collect();
    Ok(
        Json(json!({ "users": items, "page": page, "limit": limit, "total": total }))
            .into_response(),
    )
}

/// `GET /api/admin/users/{id}` (admin, supervisor)
pub async fn get_user(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
) -> ApiResult {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    let doc = state
        .store
        .user_by_id(&id)
        .await?
        .ok_or_else(|| ApiError::not_found("no such user"))?;
    Ok(Json(json!({ "user": doc.to_json() })).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBody {
    username: String,
    email: String,
    password: String,
    role: Role,
    verified: Option<bool>,
}

/// `POST /api/admin/users` (admin)
pub async fn create_user(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<CreateBody>,
) -> ApiResult {
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
    tracing::info!(created = %doc.id, role = doc.role.as_str(), "account created by an admin");
    Ok((StatusCode::CREATED, Json(json!({ "user": doc.to_json() }))).into_response())
}

#[derive(Deserialize)]
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

/// How much a role may do, for telling a demotion.
fn rank(role: Role) -> u8 {
    match role {
        Role::Admin => 2,
        Role::Supervisor => 1,
        Role::Enduser => 0,
    }
}

/// `PATCH /api/admin/users/{id}` (admin): role, verification, disabling.
/// Disabling or demoting ends the user's refresh tokens at once; access
/// tokens already issued live out their 15 minutes. `isVerified` concerns
/// the account's own address only, never a pending one.
pub async fn patch_user(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<String>,
    JsonBody(body): JsonBody<PatchBody>,
) -> ApiResult {
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
            if demoted || (body.disabled == Some(true) && !target.disabled) {
                store.revoke_user_tokens(&id, None).await?;
            }
            store.update_user(&id, set).await
        })
        .await?;
    tracing::info!(target = %id, "account changed by an admin");
    Ok(Json(json!({ "user": updated.to_json() })).into_response())
}

/// `DELETE /api/admin/users/{id}` (admin): never yourself, never the last admin.
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
