//! Team routes (README "Teams"): admins make, rename and delete teams and
//! name their supervisors; supervisors add and remove members and move
//! the wallet's credits to them and back; members see their teams. Every
//! route checks who the caller is to the team first ([`teams::standing`])
//! and, for a change of credits, does the rest in one transaction that
//! honours `Idempotency-Key` (keyed to the team, so a key replayed at
//! another team is 409 `idempotency_key_reused`).

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::error::{double_option, from_json_value, ApiError, JsonBody, PathParams, QueryParams};
use shared::identity::Email;
use shared::ids::UserId;
use shared::ledger::primitives::{begin, commit};
use shared::ledger::queries::{self, EntryFilter, EntryRecord};
use shared::ledger::transfers::{self, Wallet};
use shared::ledger::{Allocation, Credits, Durability};
use shared::openapi::{ApiErrors, IdempotencyKeyHeader, PageQuery};
use shared::query::PageParams;
use shared::teams::{self, Added, Member, Pending, Team, MAX_ADD};
use shared::token::AuthUser;
use uuid::Uuid;

use crate::routes::{entry_meta, finish, optional_text, start, Change};
use crate::AppState;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

// ---------------------------------------------------------------- admins

/// `POST /api/admin/teams`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewTeamBody {
    /// 1 to 100 characters, unique among teams (any case).
    #[schema(min_length = 1, max_length = 100)]
    name: String,
    /// Its supervisors: users with the supervisor or admin role (none when absent).
    #[serde(default)]
    #[schema(max_items = 100)]
    supervisor_ids: Vec<UserId>,
}

/// Makes a team with an empty wallet (admin).
#[utoipa::path(post, path = "/api/admin/teams", tag = "teams", request_body = NewTeamBody,
    responses((status = 201, description = "Made", body = Team), ApiErrors))]
pub async fn create_team(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<NewTeamBody>,
) -> Answer<Team> {
    user.require_admin()?;
    let name = teams::check_name(&body.name)?;
    check_supervisors(&body.supervisor_ids)?;
    let mut tx = begin(&state.pg, Durability::Flushed).await?;
    let id = teams::create(&mut tx, &name, &body.supervisor_ids, &user.id).await?;
    commit(tx).await?;
    let mut conn = state.pg.acquire().await?;
    Ok((
        StatusCode::CREATED,
        Json(teams::one(&mut conn, &user, id).await?),
    ))
}

fn check_supervisors(ids: &[UserId]) -> Result<(), ApiError> {
    if ids.len() > 100 {
        return Err(ApiError::invalid_field(
            "supervisorIds",
            "must name at most 100 supervisors",
        ));
    }
    Ok(())
}

/// `PATCH /api/admin/teams/{id}`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TeamChangeBody {
    /// A new name.
    #[schema(min_length = 1, max_length = 100)]
    name: Option<String>,
    /// Exactly these supervisors from now on.
    #[schema(max_items = 100)]
    supervisor_ids: Option<Vec<UserId>>,
}

/// Renames a team or names its supervisors (admin).
#[utoipa::path(patch, path = "/api/admin/teams/{id}", tag = "teams",
    params(("id" = Uuid, Path, description = "The team")), request_body = TeamChangeBody,
    responses((status = 200, description = "Changed", body = Team), ApiErrors))]
pub async fn change_team(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
    JsonBody(body): JsonBody<TeamChangeBody>,
) -> Answer<Team> {
    user.require_admin()?;
    let name = body.name.as_deref().map(teams::check_name).transpose()?;
    let mut tx = begin(&state.pg, Durability::Flushed).await?;
    teams::require_live(&mut tx, team).await?;
    if let Some(name) = name {
        teams::rename(&mut tx, team, &name).await?;
    }
    if let Some(ids) = &body.supervisor_ids {
        check_supervisors(ids)?;
        teams::set_supervisors(&mut tx, team, ids).await?;
    }
    commit(tx).await?;
    let mut conn = state.pg.acquire().await?;
    Ok((
        StatusCode::OK,
        Json(teams::one(&mut conn, &user, team).await?),
    ))
}

/// `{success}`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Done {
    /// Always true.
    pub success: bool,
}

/// Deletes a team whose wallet is empty (admin); 409 `team_has_credits`
/// otherwise. Its members keep what it gave them.
#[utoipa::path(delete, path = "/api/admin/teams/{id}", tag = "teams",
    params(("id" = Uuid, Path, description = "The team")),
    responses((status = 200, description = "Deleted", body = Done), ApiErrors))]
pub async fn delete_team(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
) -> Answer<Done> {
    user.require_admin()?;
    let mut tx = begin(&state.pg, Durability::Flushed).await?;
    teams::delete(&mut tx, team).await?;
    commit(tx).await?;
    tracing::info!(team_id = %team, actor = %user.id, "team deleted");
    Ok((StatusCode::OK, Json(Done { success: true })))
}

// ---------------------------------------------------------------- everyone

/// `{teams, page, limit, total}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TeamsBody {
    /// By name.
    pub teams: Vec<Team>,
    /// Page.
    pub page: i64,
    /// Page size.
    pub limit: i64,
    /// Teams in all.
    pub total: i64,
}

/// The caller's teams: an admin's every team, a supervisor's own, a
/// member's own (name and supervisors, and what each gave them).
#[utoipa::path(get, path = "/api/teams", tag = "teams", params(PageQuery),
    responses((status = 200, description = "The caller's teams", body = TeamsBody), ApiErrors))]
pub async fn list_teams(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<PageParams>,
) -> Answer<TeamsBody> {
    let (page, limit) = q.resolve()?;
    let mut conn = state.pg.acquire().await?;
    let (teams, total) = teams::list(&mut conn, &user, page, limit).await?;
    let body = TeamsBody {
        teams,
        page,
        limit,
        total,
    };
    Ok((StatusCode::OK, Json(body)))
}

/// `?page&limit&search`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MembersQuery {
    /// 1-based page (1).
    #[param(minimum = 1, default = 1)]
    page: Option<i64>,
    /// Items per page (20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// Part of a member's username, email or id.
    search: Option<String>,
}

/// A team, and to those who lead it a page of its members and its
/// pending addresses.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TeamBody {
    /// The team.
    pub team: Team,
    /// A page of its current members (to those who lead it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub members: Option<Vec<Member>>,
    /// Addresses awaiting their owner (to those who lead it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pending: Option<Vec<Pending>>,
    /// Page.
    pub page: i64,
    /// Page size.
    pub limit: i64,
    /// Members matching the search, in all.
    pub total: i64,
}

/// A team: its members to its supervisors and admins, its name and
/// supervisors to its members.
#[utoipa::path(get, path = "/api/teams/{id}", tag = "teams",
    params(("id" = Uuid, Path, description = "The team"), MembersQuery),
    responses((status = 200, description = "The team", body = TeamBody), ApiErrors))]
pub async fn get_team(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
    QueryParams(q): QueryParams<MembersQuery>,
) -> Answer<TeamBody> {
    let (page, limit) = PageParams {
        page: q.page,
        limit: q.limit,
    }
    .resolve()?;
    let search = optional_text("search", q.search, 100)?;
    let mut conn = state.pg.acquire().await?;
    let team = teams::one(&mut conn, &user, team).await?;
    let mut body = TeamBody {
        page,
        limit,
        total: 0,
        members: None,
        pending: None,
        team,
    };
    if body.team.standing.leads() {
        let (members, total, pending) =
            teams::members(&mut conn, body.team.id, search.as_deref(), page, limit).await?;
        (body.members, body.pending, body.total) = (Some(members), Some(pending), total);
    }
    Ok((StatusCode::OK, Json(body)))
}

// ---------------------------------------------------------------- members

/// `POST /api/teams/{id}/members`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AddBody {
    /// Users by id.
    #[serde(default)]
    user_ids: Vec<UserId>,
    /// Users by proven address; an address nobody has proven yet is kept
    /// pending until someone does.
    #[serde(default)]
    emails: Vec<String>,
}

/// Adds members by id or address, up to 500 in one request (the team's
/// supervisors, admins).
#[utoipa::path(post, path = "/api/teams/{id}/members", tag = "teams",
    params(("id" = Uuid, Path, description = "The team")), request_body = AddBody,
    responses((status = 200, description = "Who was added, who already belonged, which addresses wait and which ids match nobody", body = Added), ApiErrors))]
pub async fn add_members(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
    JsonBody(body): JsonBody<AddBody>,
) -> Answer<Added> {
    if body.user_ids.len() + body.emails.len() > MAX_ADD {
        return Err(ApiError::invalid_field(
            "userIds",
            format!("at most {MAX_ADD} users and addresses together in one request"),
        ));
    }
    if body.user_ids.is_empty() && body.emails.is_empty() {
        return Err(ApiError::invalid_field(
            "userIds",
            "name at least one user or address",
        ));
    }
    let mut emails = Vec::with_capacity(body.emails.len());
    for (i, raw) in body.emails.iter().enumerate() {
        let email = Email::parse(&format!("emails[{i}]"), raw)?;
        if !emails.contains(&email) {
            emails.push(email);
        }
    }
    let mut ids = body.user_ids;
    ids.sort();
    ids.dedup();
    let mut tx = begin(&state.pg, Durability::Flushed).await?;
    teams::lead(&mut tx, &user, team).await?;
    let added = teams::add_members(&mut tx, team, &ids, &emails, &user.id).await?;
    commit(tx).await?;
    Ok((StatusCode::OK, Json(added)))
}

/// `?reclaim`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct RemoveQuery {
    /// Take back, in the same transaction, everything the team gave the
    /// member that is still unspent (false: they keep it).
    reclaim: Option<bool>,
}

/// What a removal did.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Removed {
    /// Always true.
    pub success: bool,
    /// Credits returned to the wallet (0 unless `reclaim`).
    pub reclaimed: i64,
}

/// Removes a member (the team's supervisors, admins); they keep what the
/// team gave them unless `reclaim=true`.
#[utoipa::path(delete, path = "/api/teams/{id}/members/{userId}", tag = "teams",
    params(("id" = Uuid, Path, description = "The team"),
           ("userId" = String, Path, description = "The member"), RemoveQuery),
    responses((status = 200, description = "Removed", body = Removed), ApiErrors))]
pub async fn remove_member(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams((team, member)): PathParams<(Uuid, UserId)>,
    QueryParams(q): QueryParams<RemoveQuery>,
) -> Answer<Removed> {
    let mut tx = begin(&state.pg, Durability::Flushed).await?;
    teams::lead(&mut tx, &user, team).await?;
    if teams::require_member(&mut tx, team, &member).await.is_err() {
        return Err(ApiError::not_found(format!(
            "{member} is not a member of this team"
        )));
    }
    let wallet = Wallet::of(team);
    let meta = entry_meta(&user, None);
    let reclaimed = match q.reclaim.unwrap_or(false) {
        true => {
            transfers::reclaim(&mut tx, &wallet, &member, None, false, &meta)
                .await?
                .credits
        }
        false => 0,
    };
    if !teams::remove_member(&mut tx, team, &member).await? {
        return Err(ApiError::not_found(format!(
            "{member} is not a member of this team"
        )));
    }
    commit(tx).await?;
    let body = Removed {
        success: true,
        reclaimed,
    };
    Ok((StatusCode::OK, Json(body)))
}

/// Forgets a pending address (the team's supervisors, admins).
#[utoipa::path(delete, path = "/api/teams/{id}/pending/{email}", tag = "teams",
    params(("id" = Uuid, Path, description = "The team"),
           ("email" = String, Path, description = "The address")),
    responses((status = 200, description = "Forgotten", body = Done), ApiErrors))]
pub async fn remove_pending(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams((team, email)): PathParams<(Uuid, String)>,
) -> Answer<Done> {
    let email = Email::parse("email", &email)?;
    let mut tx = begin(&state.pg, Durability::Flushed).await?;
    teams::lead(&mut tx, &user, team).await?;
    if !teams::remove_pending(&mut tx, team, &email).await? {
        return Err(ApiError::not_found(
            "this address is not waiting to join the team",
        ));
    }
    commit(tx).await?;
    Ok((StatusCode::OK, Json(Done { success: true })))
}

// ---------------------------------------------------------------- credits

/// The wallet: its balance, allocations and a page of its history.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WalletBody {
    /// The team.
    pub team_id: Uuid,
    /// Spendable credits.
    pub total_credits: i64,
    /// Unexpired allocations with credits left, in spending order.
    pub allocations: Vec<Allocation>,
    /// Its entries, newest first: grants, transfers out (`reference`: the
    /// member), reclaims back, expiries.
    pub transactions: Vec<EntryRecord>,
    /// Page.
    pub page: i64,
    /// Page size.
    pub limit: i64,
    /// Entries in all.
    pub total: i64,
}

/// The team's wallet (its supervisors, admins).
#[utoipa::path(get, path = "/api/teams/{id}/credits", tag = "teams",
    params(("id" = Uuid, Path, description = "The team"), PageQuery),
    responses((status = 200, description = "The wallet", body = WalletBody), ApiErrors))]
pub async fn wallet(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
    QueryParams(q): QueryParams<PageParams>,
) -> Answer<WalletBody> {
    let (page, limit) = q.resolve()?;
    let mut conn = state.pg.acquire().await?;
    teams::lead(&mut conn, &user, team).await?;
    let wallet = Wallet::of(team);
    let balance = queries::balance(&mut conn, &wallet.account).await?;
    let filter = EntryFilter::default();
    let (transactions, total) =
        queries::entries(&mut conn, &wallet.account, &filter, page, limit).await?;
    let body = WalletBody {
        team_id: team,
        total_credits: balance.total_credits,
        allocations: balance.allocations,
        transactions,
        page,
        limit,
        total,
    };
    Ok((StatusCode::OK, Json(body)))
}

/// A move of credits between a team's wallet and a member.
struct Moving<'a> {
    team: Uuid,
    /// `transfers` or `reclaims`.
    what: &'static str,
    member: &'a UserId,
}

impl Moving<'_> {
    /// [`start`] keyed to this team's route, then (in the transaction)
    /// 403 unless the caller leads the team and the member belongs to it.
    async fn start<T: serde::de::DeserializeOwned>(
        &self,
        state: &AppState,
        user: &AuthUser,
        headers: &HeaderMap,
        raw: &Value,
    ) -> Result<Change<T>, ApiError> {
        let endpoint = format!("POST /api/teams/{}/{}", self.team, self.what);
        let mut change = start(state, user, headers, &endpoint, raw).await?;
        if let Change::Fresh(tx, _) = &mut change {
            teams::lead(tx, user, self.team).await?;
            teams::require_member(tx, self.team, self.member).await?;
        }
        Ok(change)
    }
}

/// `POST /api/teams/{id}/transfers`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TransferBody {
    /// The member.
    user_id: UserId,
    credits: Credits,
    /// 1 to 3650 days, and never later than the wallet credits it is
    /// drawn from (absent or `null`: as late as they allow).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 3650, nullable = true)]
    expiry_days: Option<Option<i32>>,
    #[schema(max_length = 1000)]
    notes: Option<String>,
    #[allow(dead_code)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
}

/// What a transfer answers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TransferredBody {
    /// The id both entries carry.
    pub transfer_id: Uuid,
    /// The member's new allocation.
    pub allocation: Allocation,
    /// The wallet's balance after it.
    pub wallet_credits: i64,
    /// The member's balance after it.
    pub member_credits: i64,
}

/// Gives a member credits from the wallet (the team's supervisors,
/// admins): 402 `team_insufficient_credits` past what it holds, 403
/// `not_team_member` for anyone else.
#[utoipa::path(post, path = "/api/teams/{id}/transfers", tag = "teams",
    params(("id" = Uuid, Path, description = "The team"), IdempotencyKeyHeader),
    request_body = TransferBody,
    responses((status = 201, description = "Moved", body = TransferredBody), ApiErrors))]
pub async fn transfer(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    PathParams(team): PathParams<Uuid>,
    JsonBody(raw): JsonBody<Value>,
) -> Answer<TransferredBody> {
    let body: TransferBody = from_json_value(raw.clone())?;
    let expiry_days = match body.expiry_days.flatten() {
        Some(days) if !(1..=3650).contains(&days) => {
            return Err(ApiError::invalid_field(
                "expiryDays",
                "must be from 1 to 3650, or null",
            ))
        }
        days => days,
    };
    let notes = optional_text("notes", body.notes.clone(), 1000)?;
    let moving = Moving {
        team,
        what: "transfers",
        member: &body.user_id,
    };
    let (mut tx, key) = match moving.start(&state, &user, &headers, &raw).await? {
        Change::Replay(status, answer) => return Ok((status, Json(answer))),
        Change::Fresh(tx, key) => (tx, key),
    };
    let meta = shared::ledger::EntryMeta {
        description: notes.as_deref(),
        ..entry_meta(&user, key.as_ref())
    };
    let wallet = Wallet::of(team);
    let done = transfers::transfer(
        &mut tx,
        &wallet,
        &body.user_id,
        body.credits,
        transfers::Expiry {
            days: expiry_days,
            until: None,
        },
        &meta,
    )
    .await
    .map_err(|e| e.naming("credits"))?;
    let answer = TransferredBody {
        transfer_id: done.transfer_id,
        allocation: done.allocation,
        wallet_credits: done.wallet_balance,
        member_credits: done.member_balance,
    };
    finish(tx, &user, key, StatusCode::CREATED, answer).await
}

/// `POST /api/teams/{id}/reclaims`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReclaimBody {
    /// The member.
    user_id: UserId,
    /// At most what is unspent of what the team gave them (all of it when absent).
    credits: Option<Credits>,
    #[allow(dead_code)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
}

/// What a reclaim answers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReclaimedBody {
    /// The id both entries carry (`null` when nothing was unspent).
    pub transfer_id: Option<Uuid>,
    /// Credits returned to the wallet.
    pub reclaimed: i64,
    /// The wallet's balance after it.
    pub wallet_credits: i64,
    /// The member's balance after it.
    pub member_credits: i64,
}

/// Takes back what is unspent of what the team gave a member, to the
/// wallet with its original expiry (the team's supervisors, admins).
#[utoipa::path(post, path = "/api/teams/{id}/reclaims", tag = "teams",
    params(("id" = Uuid, Path, description = "The team"), IdempotencyKeyHeader),
    request_body = ReclaimBody,
    responses((status = 200, description = "Taken back", body = ReclaimedBody), ApiErrors))]
pub async fn reclaim(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    PathParams(team): PathParams<Uuid>,
    JsonBody(raw): JsonBody<Value>,
) -> Answer<ReclaimedBody> {
    let body: ReclaimBody = from_json_value(raw.clone())?;
    let moving = Moving {
        team,
        what: "reclaims",
        member: &body.user_id,
    };
    let (mut tx, key) = match moving.start(&state, &user, &headers, &raw).await? {
        Change::Replay(status, answer) => return Ok((status, Json(answer))),
        Change::Fresh(tx, key) => (tx, key),
    };
    let meta = entry_meta(&user, key.as_ref());
    let wallet = Wallet::of(team);
    let done = transfers::reclaim(&mut tx, &wallet, &body.user_id, body.credits, false, &meta)
        .await
        .map_err(|e| e.naming("credits"))?;
    let answer = ReclaimedBody {
        transfer_id: done.transfer_id,
        reclaimed: done.credits,
        wallet_credits: done.wallet_balance,
        member_credits: done.member_balance,
    };
    finish(tx, &user, key, StatusCode::OK, answer).await
}
