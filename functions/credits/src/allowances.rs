//! Allowance routes (README "Allowances and warnings"): an admin's
//! allowance per role (new credits every period) and a team's allowance
//! (each member's share of the team's wallet every period, set by the
//! team's supervisors). A change applies from the next period.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use chrono::Utc;
use serde::Deserialize;
use shared::error::{ApiError, JsonBody, PathParams};
use shared::ledger::allowances::{self, AllowanceSetting, AllowanceStanding};
use shared::ledger::primitives::{begin, commit};
use shared::ledger::{Credits, Durability, MAX_CREDITS};
use shared::openapi::ApiErrors;
use shared::teams;
use shared::token::{AuthUser, Role};
use uuid::Uuid;

use crate::AppState;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

/// `PUT .../allowance(s)`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllowanceBody {
    credits: Credits,
    /// `day`, `week` (from Monday) or `month`.
    #[schema(pattern = "^(day|week|month)$")]
    period: String,
    /// What may roll over into the next period (`null`: nothing).
    #[schema(minimum = 0, maximum = 9007199254740991_i64)]
    rollover_cap: Option<i64>,
    /// An IANA time zone (`UTC` when absent).
    #[schema(max_length = 64)]
    time_zone: Option<String>,
}

impl AllowanceBody {
    /// The checked setting.
    async fn setting(self, state: &AppState) -> Result<AllowanceSetting, ApiError> {
        if !matches!(self.period.as_str(), "day" | "week" | "month") {
            return Err(ApiError::invalid_field(
                "period",
                "must be day, week or month",
            ));
        }
        if self
            .rollover_cap
            .is_some_and(|c| !(0..=MAX_CREDITS).contains(&c))
        {
            return Err(ApiError::invalid_field(
                "rolloverCap",
                format!("must be from 0 to {MAX_CREDITS}"),
            ));
        }
        let time_zone = self.time_zone.unwrap_or_else(|| "UTC".into());
        let mut conn = state.pg.acquire().await?;
        if time_zone.len() > 64 || !allowances::known_time_zone(&mut conn, &time_zone).await? {
            return Err(ApiError::invalid_field(
                "timeZone",
                "must be an IANA time zone, such as UTC or Asia/Shanghai",
            ));
        }
        Ok(AllowanceSetting {
            credits: self.credits.get(),
            period: self.period,
            rollover_cap: self.rollover_cap,
            time_zone,
        })
    }
}

/// The allowance key of `role` (400 for another word).
fn role_key(role: &str) -> Result<String, ApiError> {
    match role {
        "admin" | "supervisor" | "enduser" => Ok(format!("role:{role}")),
        _ => Err(ApiError::BadRequest {
            code: "invalid_path",
            message: "role: must be admin, supervisor or enduser".into(),
        }),
    }
}

/// Sets (or, with `None`, ends) `key` and answers how it stands.
async fn change(
    state: &AppState,
    user: &AuthUser,
    key: &str,
    setting: Option<AllowanceSetting>,
) -> Answer<AllowanceStanding> {
    let now = Utc::now();
    let mut tx = begin(&state.pg, Durability::Flushed).await?;
    let changed = allowances::set(&mut tx, key, setting.as_ref(), now, &user.id).await?;
    if !changed {
        return Err(ApiError::not_found("no allowance is set here"));
    }
    commit(tx).await?;
    show(state, key).await
}

async fn show(state: &AppState, key: &str) -> Answer<AllowanceStanding> {
    let mut conn = state.pg.acquire().await?;
    let standing = allowances::standing(&mut conn, key, Utc::now()).await?;
    Ok((StatusCode::OK, Json(standing)))
}

/// A role's allowance (admin).
#[utoipa::path(get, path = "/api/admin/allowances/{role}", tag = "allowances",
    params(("role" = String, Path, description = "admin, supervisor or enduser")),
    responses((status = 200, description = "In force, and a change waiting for the next period", body = AllowanceStanding), ApiErrors))]
pub async fn get_role_allowance(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(role): PathParams<String>,
) -> Answer<AllowanceStanding> {
    user.require_admin()?;
    show(&state, &role_key(&role)?).await
}

/// Sets a role's allowance (admin): every user of the role gets `credits`
/// at the start of every period, new credits that expire at its end (or
/// roll over up to `rolloverCap`). Applies at once when none is set, else
/// from the next period.
#[utoipa::path(put, path = "/api/admin/allowances/{role}", tag = "allowances",
    params(("role" = String, Path, description = "admin, supervisor or enduser")),
    request_body = AllowanceBody,
    responses((status = 200, description = "How it stands now", body = AllowanceStanding), ApiErrors))]
pub async fn put_role_allowance(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(role): PathParams<String>,
    JsonBody(body): JsonBody<AllowanceBody>,
) -> Answer<AllowanceStanding> {
    user.require_admin()?;
    let key = role_key(&role)?;
    let setting = body.setting(&state).await?;
    change(&state, &user, &key, Some(setting)).await
}

/// Ends a role's allowance at the end of its period (admin).
#[utoipa::path(delete, path = "/api/admin/allowances/{role}", tag = "allowances",
    params(("role" = String, Path, description = "admin, supervisor or enduser")),
    responses((status = 200, description = "How it stands now", body = AllowanceStanding), ApiErrors))]
pub async fn delete_role_allowance(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(role): PathParams<String>,
) -> Answer<AllowanceStanding> {
    user.require_admin()?;
    change(&state, &user, &role_key(&role)?, None).await
}

/// The team's allowance (its supervisors, admins).
#[utoipa::path(get, path = "/api/teams/{id}/allowance", tag = "allowances",
    params(("id" = Uuid, Path, description = "The team")),
    responses((status = 200, description = "In force, and a change waiting for the next period", body = AllowanceStanding), ApiErrors))]
pub async fn get_team_allowance(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
) -> Answer<AllowanceStanding> {
    teams::lead(&mut *state.pg.acquire().await?, &user, team).await?;
    show(&state, &format!("team:{team}")).await
}

/// Sets the team's allowance (its supervisors, admins): each member gets
/// `credits` from the wallet at the start of every period, expiring at
/// its end (or rolling over up to `rolloverCap`, never past the wallet
/// credits it came from); a wallet that cannot cover everyone gives what
/// it holds.
#[utoipa::path(put, path = "/api/teams/{id}/allowance", tag = "allowances",
    params(("id" = Uuid, Path, description = "The team")), request_body = AllowanceBody,
    responses((status = 200, description = "How it stands now", body = AllowanceStanding), ApiErrors))]
pub async fn put_team_allowance(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
    JsonBody(body): JsonBody<AllowanceBody>,
) -> Answer<AllowanceStanding> {
    teams::lead(&mut *state.pg.acquire().await?, &user, team).await?;
    let setting = body.setting(&state).await?;
    change(&state, &user, &format!("team:{team}"), Some(setting)).await
}

/// Ends the team's allowance at the end of its period (its supervisors, admins).
#[utoipa::path(delete, path = "/api/teams/{id}/allowance", tag = "allowances",
    params(("id" = Uuid, Path, description = "The team")),
    responses((status = 200, description = "How it stands now", body = AllowanceStanding), ApiErrors))]
pub async fn delete_team_allowance(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
) -> Answer<AllowanceStanding> {
    teams::lead(&mut *state.pg.acquire().await?, &user, team).await?;
    change(&state, &user, &format!("team:{team}"), None).await
}

/// Whether `role` is one of the roles an allowance can name.
pub fn is_role(role: Role) -> bool {
    matches!(role, Role::Admin | Role::Supervisor | Role::Enduser)
}
