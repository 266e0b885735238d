//! Handlers of the credits function. Each parses its input at the edge
//! (typed bodies, newtypes for ids and amounts), enforces the caller's
//! role, and calls the shared ledger. Every mutating route honours
//! `Idempotency-Key` straight through: [`idempotency::begin`] answers a
//! fresh transaction or the stored answer, the change runs in that
//! transaction, and its answer is saved there before the commit.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shared::error::{double_option, from_json_value, ApiError, JsonBody, PathParams, QueryParams};
use shared::ids::{ChatflowId, ReservationId, UserId};
use shared::keys::UserOrKey;
use shared::ledger::accounts::ensure_account;
use shared::ledger::allowances::{self, Granter};
use shared::ledger::idempotency::{self, Begun, RequestKey};
use shared::ledger::primitives::{begin, commit};
use shared::ledger::queries::{self, Balance, EntryFilter, EntryRecord, StatementLine};
use shared::ledger::reservations::{self, ActiveSession, Reservation, SessionOutcome, Settlement};
use shared::ledger::transfers::Wallet;
use shared::ledger::{
    changes, Adjustment, Allocation, Charge, Credits, Durability, EntryKind, EntryMeta, Tx,
};
use shared::openapi::{ApiErrors, IdempotencyKeyHeader};
use shared::pricing::{self, estimate_tokens, Cost, PriceInput, RuleView};
use shared::query::{parse_instant, PageParams};
use shared::token::{AuthUser, Role};

use crate::AppState;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

/// A change that honours `Idempotency-Key`: what [`start`] found.
pub(crate) enum Change<T> {
    /// Do it in this transaction, then [`finish`].
    Fresh(Tx<'static>, Option<RequestKey>),
    /// The first answer of this key and body.
    Replay(StatusCode, T),
}

/// The key of a request to `endpoint` (header or body field), then (the
/// caller's account recorded first) a fresh transaction, or the stored
/// answer of that key.
pub(crate) async fn start<T: serde::de::DeserializeOwned>(
    state: &AppState,
    user: &AuthUser,
    headers: &HeaderMap,
    endpoint: &str,
    raw: &Value,
) -> Result<Change<T>, ApiError> {
    let key =
        shared::http::idempotency_key(headers, raw)?.map(|key| RequestKey::new(key, endpoint, raw));
    // The caller's account is recorded before the change's transaction, not
    // in it: that upsert locks the caller's row, and a change that held it
    // while locking another account (a supervisor giving credits to a
    // fellow supervisor who is giving to them) could wait in a circle.
    ensure_account(&mut *state.pg.acquire().await?, user).await?;
    match idempotency::begin(&state.pg, &user.user_id(), key.as_ref(), endpoint).await? {
        Begun::Replay((status, body)) => {
            let body = serde_json::from_value(body).map_err(|e| {
                ApiError::Internal(anyhow::Error::new(e).context("a stored answer"))
            })?;
            Ok(Change::Replay(status, body))
        }
        Begun::Fresh(tx) => Ok(Change::Fresh(tx, key)),
    }
}

/// What every entry of a change records: who made it, and its key.
pub(crate) fn entry_meta<'a>(user: &'a AuthUser, key: Option<&'a RequestKey>) -> EntryMeta<'a> {
    EntryMeta {
        actor_id: Some(&user.id),
        idempotency_key: key.map(|k| k.key.as_str()),
        ..EntryMeta::default()
    }
}

/// Saves the answer with its key and commits the change.
pub(crate) async fn finish<T: Serialize>(
    mut tx: Tx<'static>,
    user: &AuthUser,
    key: Option<RequestKey>,
    status: StatusCode,
    body: T,
) -> Answer<T> {
    let stored = (
        status,
        serde_json::to_value(&body).map_err(|e| ApiError::Internal(e.into()))?,
    );
    idempotency::save(&mut tx, &user.user_id(), key.as_ref(), &stored).await?;
    commit(tx).await?;
    Ok((status, Json(body)))
}

pub(crate) fn optional_text(
    field: &str,
    value: Option<String>,
    max: usize,
) -> Result<Option<String>, ApiError> {
    match value {
        Some(v) if v.chars().count() > max => Err(ApiError::invalid_field(
            field,
            format!("must be at most {max} characters"),
        )),
        Some(v) if v.contains('\0') => Err(ApiError::invalid_field(
            field,
            "must not contain NUL characters",
        )),
        other => Ok(other.filter(|v| !v.trim().is_empty())),
    }
}

// ---------------------------------------------------------------- balances

/// `{totalCredits}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TotalBody {
    /// Spendable credits.
    pub total_credits: i64,
}

/// The caller's balance and the allocations holding it.
#[utoipa::path(get, path = "/api/credits/balance", tag = "credits",
    responses((status = 200, description = "Spendable credits and the allocations holding them", body = Balance), ApiErrors))]
pub async fn balance(State(state): State<AppState>, UserOrKey(user): UserOrKey) -> Answer<Balance> {
    let now = chrono::Utc::now();
    let mut conn = arrive(&state, &user, now).await?;
    let mut balance = queries::balance(&mut conn, &user.user_id()).await?;
    if let Some((at, credits)) = allowances::next_credits(&mut conn, &user.user_id(), now).await? {
        (balance.next_credits_at, balance.next_credits) = (Some(at), Some(credits));
    }
    let soon = queries::expiring_soon(&mut conn, &user.user_id(), now).await?;
    balance.expiring_soon = soon.map(|(expires_at, credits)| shared::error::ExpiringSoon {
        credits,
        expires_at,
    });
    Ok((StatusCode::OK, Json(balance)))
}

/// The caller's account recorded, and the period's allowances granted
/// when this is their first read of it (README "Allowances and
/// warnings"); a connection to read on.
async fn arrive(
    state: &AppState,
    user: &AuthUser,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<sqlx::pool::PoolConnection<sqlx::Postgres>, ApiError> {
    let mut conn = state.pg.acquire().await?;
    ensure_account(&mut conn, user).await?;
    let user_id = user.user_id();
    if allowances::any_due(&mut conn, &user_id, now).await? {
        // Back to the pool first: a request never holds two connections.
        drop(conn);
        let mut tx = begin(&state.pg, Durability::Flushed).await?;
        let locked = shared::ledger::primitives::lock_account(&mut tx, &user_id).await?;
        allowances::grant_due(&mut tx, &user_id, locked, now, Granter::Request).await?;
        commit(tx).await?;
        conn = state.pg.acquire().await?;
    }
    Ok(conn)
}

/// The caller's spendable total.
#[utoipa::path(get, path = "/api/credits/total-balance", tag = "credits",
    responses((status = 200, description = "Spendable credits", body = TotalBody), ApiErrors))]
pub async fn total_balance(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
) -> Answer<TotalBody> {
    let mut conn = arrive(&state, &user, chrono::Utc::now()).await?;
    let total_credits = queries::total_balance(&mut conn, &user.user_id()).await?;
    Ok((StatusCode::OK, Json(TotalBody { total_credits })))
}

/// Another user's balance (admin, supervisor).
#[utoipa::path(get, path = "/api/credits/balance/{userId}", tag = "credits",
    params(("userId" = String, Path, description = "The user")),
    responses((status = 200, description = "Spendable credits and the allocations holding them", body = Balance), ApiErrors))]
pub async fn balance_of(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(target): PathParams<UserId>,
) -> Answer<Balance> {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    let mut conn = state.pg.acquire().await?;
    Ok((
        StatusCode::OK,
        Json(queries::balance(&mut conn, &target).await?),
    ))
}

// ---------------------------------------------------------------- changes

/// `POST /api/credits/allocate`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AllocateBody {
    /// The user (or `teamId`).
    user_id: Option<UserId>,
    /// A team's wallet instead of a user (admins only).
    team_id: Option<uuid::Uuid>,
    credits: Credits,
    /// 1 to 3650 days (30 when absent; `null`: never).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i32>, minimum = 1, maximum = 3650, nullable = true)]
    expiry_days: Option<Option<i32>>,
    notes: Option<String>,
    #[allow(dead_code)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
}

impl AllocateBody {
    fn expiry_days(&self) -> Result<Option<i32>, ApiError> {
        match self.expiry_days {
            None => Ok(Some(30)),
            Some(None) => Ok(None),
            Some(Some(days)) if (1..=3650).contains(&days) => Ok(Some(days)),
            Some(Some(_)) => Err(ApiError::invalid_field(
                "expiryDays",
                "must be from 1 to 3650, or null",
            )),
        }
    }
}

/// What an allocation answers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllocatedBody {
    /// Always true.
    pub success: bool,
    /// The new allocation.
    pub allocation: Allocation,
    /// The balance after it.
    pub new_balance: i64,
    /// Whether the ledger saw the user for the first time.
    pub account_created: bool,
}

/// Grants credits to a user (admin, supervisor) or to a team's wallet
/// (`teamId`, admin).
#[utoipa::path(post, path = "/api/credits/allocate", tag = "credits",
    params(IdempotencyKeyHeader), request_body = AllocateBody,
    responses((status = 201, description = "Granted", body = AllocatedBody), ApiErrors))]
pub async fn allocate(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<Value>,
) -> Answer<AllocatedBody> {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    const ENDPOINT: &str = "POST /api/credits/allocate";
    let body: AllocateBody = from_json_value(raw.clone())?;
    let expiry_days = body.expiry_days()?;
    let notes = optional_text("notes", body.notes.clone(), 1000)?;
    let account = match (&body.user_id, body.team_id) {
        (Some(user_id), None) => user_id.clone(),
        (None, Some(team)) => {
            user.require_admin()?;
            Wallet::of(team).account
        }
        _ => {
            return Err(ApiError::invalid_field(
                "userId",
                "name a user (userId) or a team (teamId), not both",
            ))
        }
    };
    let (mut tx, key) = match start(&state, &user, &headers, ENDPOINT, &raw).await? {
        Change::Replay(status, answer) => return Ok((status, Json(answer))),
        Change::Fresh(tx, key) => (tx, key),
    };
    let meta = entry_meta(&user, key.as_ref());
    let (credits, notes) = (body.credits, notes.as_deref());
    let done = match body.team_id {
        // The wallet exists while the team does: no account is made for
        // a team id that names none, and a deleted team takes no grant
        // (checked under the wallet's lock, which deleting takes too).
        Some(team) => {
            let done =
                changes::allocate_existing(&mut tx, &account, credits, expiry_days, notes, &meta)
                    .await
                    .map_err(|e| match e {
                        shared::ledger::LedgerError::NoAccount(_) => {
                            ApiError::not_found("no such team")
                        }
                        other => other.naming("credits"),
                    })?;
            shared::teams::require_live(&mut tx, team).await?;
            done
        }
        None => changes::allocate(&mut tx, &account, credits, expiry_days, notes, &meta)
            .await
            .map_err(|e| e.naming("credits"))?,
    };
    let answer = AllocatedBody {
        success: true,
        allocation: done.allocation,
        new_balance: done.new_balance,
        account_created: done.account_created,
    };
    finish(tx, &user, key, StatusCode::CREATED, answer).await
}

/// `POST /api/credits/deduct`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeductBody {
    credits: Credits,
    /// Another user's (admins only).
    user_id: Option<UserId>,
    #[schema(max_length = 1000)]
    description: Option<String>,
    #[schema(max_length = 255)]
    reference: Option<String>,
    #[allow(dead_code)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
}

/// What a deduction answers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeductedBody {
    /// Always true.
    pub success: bool,
    /// The balance after it.
    pub new_balance: i64,
    /// The entry written.
    pub transaction_id: uuid::Uuid,
}

/// Spends the caller's credits (an admin may name `userId`); 402 when short.
#[utoipa::path(post, path = "/api/credits/deduct", tag = "credits",
    params(IdempotencyKeyHeader), request_body = DeductBody,
    responses((status = 200, description = "Deducted", body = DeductedBody), ApiErrors))]
pub async fn deduct(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<Value>,
) -> Answer<DeductedBody> {
    const ENDPOINT: &str = "POST /api/credits/deduct";
    let body: DeductBody = from_json_value(raw.clone())?;
    let target = match body.user_id {
        Some(id) if id.as_str() != user.id => {
            user.require_admin()?;
            id
        }
        _ => user.user_id(),
    };
    let description = optional_text("description", body.description, 1000)?;
    let reference = optional_text("reference", body.reference, 255)?;
    let (mut tx, key) = match start(&state, &user, &headers, ENDPOINT, &raw).await? {
        Change::Replay(status, answer) => return Ok((status, Json(answer))),
        Change::Fresh(tx, key) => (tx, key),
    };
    let meta = EntryMeta {
        description: description.as_deref(),
        reference: reference.as_deref(),
        ..entry_meta(&user, key.as_ref())
    };
    let (entry, new_balance) = changes::deduct(&mut tx, &target, body.credits, &meta).await?;
    let answer = DeductedBody {
        success: true,
        new_balance,
        transaction_id: entry,
    };
    finish(tx, &user, key, StatusCode::OK, answer).await
}

/// `POST /api/credits/adjust`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AdjustBody {
    user_id: UserId,
    amount: Adjustment,
    #[schema(min_length = 1, max_length = 1000)]
    notes: String,
    #[allow(dead_code)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
}

/// What an adjustment answers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AdjustedBody {
    /// Always true.
    pub success: bool,
    /// The balance after it.
    pub new_balance: i64,
}

/// An admin's signed correction; a negative one below zero is 422
/// `would_go_negative`, nothing changed.
#[utoipa::path(post, path = "/api/credits/adjust", tag = "credits",
    params(IdempotencyKeyHeader), request_body = AdjustBody,
    responses((status = 200, description = "Adjusted", body = AdjustedBody), ApiErrors))]
pub async fn adjust(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<Value>,
) -> Answer<AdjustedBody> {
    user.require_admin()?;
    const ENDPOINT: &str = "POST /api/credits/adjust";
    let body: AdjustBody = from_json_value(raw.clone())?;
    let notes = body.notes.trim();
    if notes.is_empty() || notes.chars().count() > 1000 || notes.contains('\0') {
        return Err(ApiError::invalid_field(
            "notes",
            "must be 1 to 1000 characters",
        ));
    }
    let (mut tx, key) = match start(&state, &user, &headers, ENDPOINT, &raw).await? {
        Change::Replay(status, answer) => return Ok((status, Json(answer))),
        Change::Fresh(tx, key) => (tx, key),
    };
    let meta = entry_meta(&user, key.as_ref());
    let new_balance = changes::adjust(&mut tx, &body.user_id, body.amount, notes, &meta)
        .await
        .map_err(|e| e.naming("amount"))?;
    let answer = AdjustedBody {
        success: true,
        new_balance,
    };
    finish(tx, &user, key, StatusCode::OK, answer).await
}

// ---------------------------------------------------------------- pricing

/// `POST /api/credits/calculate`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CalculateBody {
    chatflow_id: Option<ChatflowId>,
    question: Option<String>,
    #[schema(minimum = 0, maximum = 1000000000)]
    input_tokens: Option<i64>,
    #[schema(minimum = 0, maximum = 1000000000)]
    output_tokens: Option<i64>,
}

/// The price of a prediction with these token counts (or this question).
#[utoipa::path(post, path = "/api/credits/calculate", tag = "credits",
    request_body = CalculateBody,
    responses((status = 200, description = "The cost and how it was computed", body = Cost), ApiErrors))]
pub async fn calculate(
    State(state): State<AppState>,
    _user: AuthUser,
    JsonBody(req): JsonBody<CalculateBody>,
) -> Answer<Cost> {
    for (field, value) in [
        ("inputTokens", req.input_tokens),
        ("outputTokens", req.output_tokens),
    ] {
        if value.is_some_and(|v| !(0..=1_000_000_000).contains(&v)) {
            return Err(ApiError::invalid_field(
                field,
                "must be from 0 to 1000000000",
            ));
        }
    }
    let input = req
        .input_tokens
        .unwrap_or_else(|| estimate_tokens(req.question.as_deref().unwrap_or("")));
    let mut conn = state.pg.acquire().await?;
    let rule = pricing::rule_for(&mut conn, req.chatflow_id.as_deref()).await?;
    let cost = rule.cost(input, req.output_tokens.unwrap_or(0));
    Ok((StatusCode::OK, Json(cost)))
}

/// `{rules}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RulesBody {
    /// Every rule, the default first.
    pub rules: Vec<RuleView>,
}

/// Every pricing rule.
#[utoipa::path(get, path = "/api/credits/pricing", tag = "credits",
    responses((status = 200, description = "Pricing rules", body = RulesBody), ApiErrors))]
pub async fn list_pricing(State(state): State<AppState>, _user: AuthUser) -> Answer<RulesBody> {
    let mut conn = state.pg.acquire().await?;
    let rules = pricing::list_rules(&mut conn).await?;
    let rules = rules.iter().map(pricing::PricingRule::view).collect();
    Ok((StatusCode::OK, Json(RulesBody { rules })))
}

/// `{rule}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct RuleBody {
    /// The rule.
    pub rule: RuleView,
}

/// Sets the price of a chatflow, or the default (admin).
#[utoipa::path(put, path = "/api/credits/pricing/{chatflowId}", tag = "credits",
    params(("chatflowId" = String, Path, description = "A chatflow id, or `default`")),
    request_body = PriceInput,
    responses((status = 200, description = "The rule", body = RuleBody), ApiErrors))]
pub async fn put_pricing(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(chatflow_id): PathParams<ChatflowId>,
    JsonBody(prices): JsonBody<PriceInput>,
) -> Answer<RuleBody> {
    user.require_admin()?;
    let mut conn = state.pg.acquire().await?;
    let rule = prices.save(&mut conn, &chatflow_id, &user.id, "").await?;
    Ok((StatusCode::OK, Json(RuleBody { rule: rule.view() })))
}

// ---------------------------------------------------------------- history

/// `?page&limit&type&from&to&userId`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct TransactionsQuery {
    /// 1-based page (1).
    #[param(minimum = 1, default = 1)]
    page: Option<i64>,
    /// Items per page (20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// Only this kind.
    #[serde(rename = "type")]
    #[param(rename = "type", value_type = Option<EntryKind>)]
    kind: Option<String>,
    /// RFC 3339 or YYYY-MM-DD.
    from: Option<String>,
    /// RFC 3339 or YYYY-MM-DD (the whole day).
    to: Option<String>,
    /// Another user's (admin, supervisor).
    user_id: Option<String>,
}

impl TransactionsQuery {
    fn filter(&self) -> Result<EntryFilter, ApiError> {
        Ok(EntryFilter {
            kind: self
                .kind
                .as_deref()
                .map(str::parse::<EntryKind>)
                .transpose()
                .map_err(|e| ApiError::invalid_field("type", e))?,
            // An empty parameter (`?from=`) counts as absent.
            from: self
                .from
                .as_deref()
                .filter(|f| !f.is_empty())
                .map(|f| parse_instant("from", f, false))
                .transpose()?,
            to: self
                .to
                .as_deref()
                .filter(|t| !t.is_empty())
                .map(|t| parse_instant("to", t, true))
                .transpose()?,
        })
    }
}

/// A page of entries.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TransactionsBody {
    /// Newest first.
    pub transactions: Vec<EntryRecord>,
    /// Page.
    pub page: i64,
    /// Page size.
    pub limit: i64,
    /// All matching.
    pub total: i64,
}

/// The caller's history (admin and supervisor may name `userId`).
#[utoipa::path(get, path = "/api/credits/transactions", tag = "credits",
    params(TransactionsQuery),
    responses((status = 200, description = "A page of the history, newest first", body = TransactionsBody), ApiErrors))]
pub async fn transactions(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    QueryParams(q): QueryParams<TransactionsQuery>,
) -> Answer<TransactionsBody> {
    let (page, limit) = PageParams {
        page: q.page,
        limit: q.limit,
    }
    .resolve()?;
    let target = history_of(&user, q.user_id.as_deref())?;
    let filter = q.filter()?;
    let mut conn = state.pg.acquire().await?;
    let (transactions, total) = queries::entries(&mut conn, &target, &filter, page, limit).await?;
    let body = TransactionsBody {
        transactions,
        page,
        limit,
        total,
    };
    Ok((StatusCode::OK, Json(body)))
}

/// Whose history a request reads: the caller's, or (admin, supervisor)
/// the user `user_id` names.
fn history_of(user: &AuthUser, user_id: Option<&str>) -> Result<UserId, ApiError> {
    match user_id {
        Some(id) if id != user.id => {
            user.require_role(&[Role::Admin, Role::Supervisor])?;
            Ok(UserId::parse("userId", id)?)
        }
        _ => Ok(user.user_id()),
    }
}

/// `?page&limit&userId`.
#[derive(Deserialize, utoipa::IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct StatementQuery {
    /// 1-based page (1).
    #[param(minimum = 1, default = 1)]
    page: Option<i64>,
    /// Lines per page (20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
    /// Another user's (admin, supervisor).
    user_id: Option<String>,
}

/// A page of a statement.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StatementBody {
    /// Newest first.
    pub lines: Vec<StatementLine>,
    /// Page.
    pub page: i64,
    /// Page size.
    pub limit: i64,
    /// All lines.
    pub total: i64,
}

/// The caller's history as people read it (admin and supervisor may name
/// `userId`): one line per answer with its net cost, chatflow and
/// conversation, its hold, top-ups, settlement and refund folded in.
#[utoipa::path(get, path = "/api/credits/statement", tag = "credits",
    params(StatementQuery),
    responses((status = 200, description = "A page of the statement, newest first", body = StatementBody), ApiErrors))]
pub async fn statement(
    State(state): State<AppState>,
    UserOrKey(user): UserOrKey,
    QueryParams(q): QueryParams<StatementQuery>,
) -> Answer<StatementBody> {
    let (page, limit) = PageParams {
        page: q.page,
        limit: q.limit,
    }
    .resolve()?;
    let target = history_of(&user, q.user_id.as_deref())?;
    let mut conn = state.pg.acquire().await?;
    let (lines, total) = queries::statement(&mut conn, &target, page, limit).await?;
    let body = StatementBody {
        lines,
        page,
        limit,
        total,
    };
    Ok((StatusCode::OK, Json(body)))
}

// ---------------------------------------------------------------- reservations

/// `POST /api/streaming-sessions/initialize`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InitializeBody {
    session_id: ReservationId,
    chatflow_id: ChatflowId,
    estimated_credits: Credits,
    #[allow(dead_code)]
    #[schema(min_length = 1, max_length = 255, pattern = "^[!-~]+$")]
    idempotency_key: Option<String>,
}

/// A reservation as initialize answers it (for replays).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReservationBody {
    /// The session id.
    pub session_id: String,
    /// Credits held.
    pub reserved_credits: i64,
    /// `active`.
    #[schema(pattern = "^active$")]
    pub status: String,
}

impl From<Reservation> for ReservationBody {
    fn from(r: Reservation) -> Self {
        ReservationBody {
            session_id: r.session_id.to_string(),
            reserved_credits: r.reserved_credits,
            status: r.status,
        }
    }
}

/// Reserves an estimate for a client's streamed answer; 402 when short.
#[utoipa::path(post, path = "/api/streaming-sessions/initialize", tag = "credits",
    params(IdempotencyKeyHeader), request_body = InitializeBody,
    responses((status = 201, description = "Reserved", body = ReservationBody), ApiErrors))]
pub async fn initialize(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(raw): JsonBody<Value>,
) -> Answer<ReservationBody> {
    const ENDPOINT: &str = "POST /api/streaming-sessions/initialize";
    let body: InitializeBody = from_json_value(raw.clone())?;
    let (mut tx, key) = match start(&state, &user, &headers, ENDPOINT, &raw).await? {
        Change::Replay(status, answer) => return Ok((status, Json(answer))),
        Change::Fresh(tx, key) => (tx, key),
    };
    let meta = entry_meta(&user, key.as_ref());
    let (id, flow, estimate) = (&body.session_id, &body.chatflow_id, body.estimated_credits);
    let reserved =
        reservations::reserve(&mut tx, &user.user_id(), id, flow, estimate, &meta).await?;
    finish(tx, &user, key, StatusCode::CREATED, reserved.into()).await
}

/// `POST /api/streaming-sessions/finalize`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinalizeBody {
    session_id: ReservationId,
    actual_credits: Charge,
}

/// `POST /api/streaming-sessions/abort`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortBody {
    session_id: ReservationId,
    partial_credits: Option<Charge>,
}

async fn settle(
    state: &AppState,
    user: &AuthUser,
    id: &ReservationId,
    how: Settlement,
    charge: Charge,
) -> Answer<SessionOutcome> {
    let mut tx = begin(&state.pg, Durability::Flushed).await?;
    let outcome = reservations::settle(&mut tx, id, &user.user_id(), how, charge).await?;
    commit(tx).await?;
    Ok((StatusCode::OK, Json(outcome)))
}

/// Charges the actual cost of the caller's reservation (idempotent; 403
/// for another user's or the gateway's).
#[utoipa::path(post, path = "/api/streaming-sessions/finalize", tag = "credits",
    request_body = FinalizeBody,
    responses((status = 200, description = "How the reservation was settled (a second call returns the first outcome)", body = SessionOutcome), ApiErrors))]
pub async fn finalize(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<FinalizeBody>,
) -> Answer<SessionOutcome> {
    settle(
        &state,
        &user,
        &req.session_id,
        Settlement::Finalize,
        req.actual_credits,
    )
    .await
}

/// Charges the partial cost (0 by default) of the caller's reservation.
#[utoipa::path(post, path = "/api/streaming-sessions/abort", tag = "credits",
    request_body = AbortBody,
    responses((status = 200, description = "How the reservation was settled (a second call returns the first outcome)", body = SessionOutcome), ApiErrors))]
pub async fn abort(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<AbortBody>,
) -> Answer<SessionOutcome> {
    let charge = req.partial_credits.unwrap_or(Charge::ZERO);
    settle(&state, &user, &req.session_id, Settlement::Abort, charge).await
}

/// `?all`.
#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ActiveQuery {
    /// Everyone's (admins).
    all: Option<bool>,
}

/// `{sessions}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ActiveBody {
    /// Newest first.
    pub sessions: Vec<ActiveSession>,
}

/// The caller's active reservations (admins: `?all=true`). Reservations
/// the gateway holds for running predictions are listed to admins only:
/// an end user never learns their ids.
#[utoipa::path(get, path = "/api/streaming-sessions/active", tag = "credits",
    params(ActiveQuery),
    responses((status = 200, description = "Active reservations (the gateway's own, for running predictions, to admins only)", body = ActiveBody), ApiErrors))]
pub async fn active(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<ActiveQuery>,
) -> Answer<ActiveBody> {
    let me = user.user_id();
    let scope = if q.all.unwrap_or(false) {
        user.require_admin()?;
        None
    } else {
        Some(&me)
    };
    let mut conn = state.pg.acquire().await?;
    let with_gateway = user.role == Role::Admin;
    let sessions = reservations::active_sessions(&mut conn, scope, with_gateway).await?;
    Ok((StatusCode::OK, Json(ActiveBody { sessions })))
}
