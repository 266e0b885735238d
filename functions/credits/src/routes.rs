//! Handlers of the credits function. Each parses and checks its input,
//! enforces the caller's role, and calls the shared ledger; every
//! mutating route honours `Idempotency-Key` through
//! [`shared::ledger::idempotency::run_once`].

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::error::{double_option, from_json_value, ApiError, JsonBody, PathParams, QueryParams};
use shared::ledger::accounts::ensure_account;
use shared::ledger::idempotency::{request_hash, request_key, run_once, Answer};
use shared::ledger::ops::{self, Context};
use shared::ledger::queries::{self, TransactionFilter};
use shared::ledger::reservations::{self, Settlement};
use shared::ledger::{Credits, TransactionKind};
use shared::pricing::{self, estimate_tokens, PriceInput};
use shared::query::{parse_instant, PageParams};
use shared::token::{AuthUser, Role};

use crate::AppState;

type ApiResult = Result<Response, ApiError>;

fn answer((status, body): Answer) -> Response {
    (status, Json(body)).into_response()
}

/// Who is calling a mutating route, with the request's idempotency key.
struct Call {
    user: AuthUser,
    key: Option<String>,
}

/// Runs a mutating route once per idempotency key: parses `body` into `T`,
/// then runs `effect` in one transaction after recording the caller's
/// account from their claims.
async fn mutate<T, F>(
    state: &AppState,
    user: AuthUser,
    headers: &HeaderMap,
    endpoint: &'static str,
    body: Value,
    effect: F,
) -> ApiResult
where
    T: serde::de::DeserializeOwned + Send + 'static,
    F: for<'c> FnOnce(
            &'c mut sqlx::PgConnection,
            Call,
            T,
        ) -> futures_util::future::BoxFuture<'c, Result<Answer, ApiError>>
        + Send
        + 'static,
{
    let key = request_key(headers, &body)?;
    let hash = request_hash(endpoint, &body);
    let request: T = from_json_value(body)?;
    let caller = user.id.clone();
    let stored_key = key.clone();
    let outcome = run_once(
        &state.pg,
        &caller,
        key.as_deref(),
        endpoint,
        &hash,
        move |conn| {
            Box::pin(async move {
                ensure_account(conn, &user).await?;
                effect(
                    conn,
                    Call {
                        user,
                        key: stored_key,
                    },
                    request,
                )
                .await
            })
        },
    )
    .await?;
    Ok(answer(outcome))
}

// ---------------------------------------------------------------- balances

/// `GET /api/credits/balance`
pub async fn balance(State(state): State<AppState>, user: AuthUser) -> ApiResult {
    let mut conn = state.pg.acquire().await?;
    ensure_account(&mut conn, &user).await?;
    Ok(Json(queries::balance(&mut conn, &user.id).await?).into_response())
}

/// `GET /api/credits/total-balance`
pub async fn total_balance(State(state): State<AppState>, user: AuthUser) -> ApiResult {
    let mut conn = state.pg.acquire().await?;
    ensure_account(&mut conn, &user).await?;
    let total = queries::total_balance(&mut conn, &user.id).await?;
    Ok(Json(json!({ "totalCredits": total })).into_response())
}

/// `GET /api/credits/balance/{userId}` (admin, supervisor)
pub async fn balance_of(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(user_id): PathParams<String>,
) -> ApiResult {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    let mut conn = state.pg.acquire().await?;
    Ok(Json(queries::balance(&mut conn, &user_id).await?).into_response())
}

// ---------------------------------------------------------------- changes

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AllocateBody {
    user_id: String,
    credits: i64,
    #[serde(default, deserialize_with = "double_option")]
    expiry_days: Option<Option<i32>>,
    notes: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// `POST /api/credits/allocate` (admin, supervisor)
pub async fn allocate(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    user.require_role(&[Role::Admin, Role::Supervisor])?;
    mutate(
        &state,
        user,
        &headers,
        "POST /api/credits/allocate",
        body,
        move |conn, call, req: AllocateBody| {
            Box::pin(async move {
                let credits = Credits::parse("credits", req.credits)?;
                let expiry_days = match req.expiry_days {
                    None => Some(30),
                    Some(None) => None,
                    Some(Some(days)) if (1..=3650).contains(&days) => Some(days),
                    Some(Some(_)) => {
                        return Err(ApiError::invalid_field(
                            "expiryDays",
                            "must be from 1 to 3650, or null",
                        ))
                    }
                };
                let notes = req.notes.filter(|n| !n.trim().is_empty());
                if notes.as_deref().is_some_and(|n| n.chars().count() > 1000) {
                    return Err(ApiError::invalid_field(
                        "notes",
                        "must be at most 1000 characters",
                    ));
                }
                let ctx = Context {
                    actor_id: Some(&call.user.id),
                    idempotency_key: call.key.as_deref(),
                    ..Context::default()
                };
                let done = ops::allocate(
                    conn,
                    req.user_id.trim(),
                    credits,
                    expiry_days,
                    notes.as_deref(),
                    &ctx,
                )
                .await?;
                Ok((
                    StatusCode::CREATED,
                    json!({
                        "success": true,
                        "allocation": done.allocation,
                        "newBalance": done.new_balance,
                        "accountCreated": done.account_created,
                    }),
                ))
            })
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DeductBody {
    credits: i64,
    user_id: Option<String>,
    description: Option<String>,
    reference: Option<String>,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

fn optional_text(
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

/// `POST /api/credits/deduct` (the caller's own credits; an admin may name `userId`)
pub async fn deduct(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    mutate(&state, user, &headers, "POST /api/credits/deduct", body, move |conn, call, req: DeductBody| {
        Box::pin(async move {
            let credits = Credits::parse("credits", req.credits)?;
            let target = match req.user_id {
                Some(id) if id != call.user.id => {
                    call.user.require_admin()?;
                    id
                }
                _ => call.user.id.clone(),
            };
            let description = optional_text("description", req.description, 1000)?;
            let reference = optional_text("reference", req.reference, 255)?;
            let ctx = Context {
                actor_id: Some(&call.user.id),
                description: description.as_deref(),
                reference: reference.as_deref(),
                idempotency_key: call.key.as_deref(),
                ..Context::default()
            };
            let (transaction_id, balance) = ops::deduct(conn, &target, credits, &ctx).await?;
            Ok((
                StatusCode::OK,
                json!({ "success": true, "newBalance": balance, "transactionId": transaction_id }),
            ))
        })
    })
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AdjustBody {
    user_id: String,
    amount: i64,
    notes: String,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// `POST /api/credits/adjust` (admin)
pub async fn adjust(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    user.require_admin()?;
    mutate(
        &state,
        user,
        &headers,
        "POST /api/credits/adjust",
        body,
        move |conn, call, req: AdjustBody| {
            Box::pin(async move {
                let notes = req.notes.trim();
                if notes.is_empty() || notes.chars().count() > 1000 {
                    return Err(ApiError::invalid_field(
                        "notes",
                        "must be 1 to 1000 characters",
                    ));
                }
                let ctx = Context {
                    actor_id: Some(&call.user.id),
                    idempotency_key: call.key.as_deref(),
                    ..Context::default()
                };
                let balance =
                    ops::adjust(conn, req.user_id.trim(), req.amount, notes, &ctx).await?;
                Ok((
                    StatusCode::OK,
                    json!({ "success": true, "newBalance": balance }),
                ))
            })
        },
    )
    .await
}

// ---------------------------------------------------------------- pricing

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CalculateBody {
    chatflow_id: Option<String>,
    question: Option<String>,
    input_tokens: Option<i64>,
    output_tokens: Option<i64>,
}

/// `POST /api/credits/calculate`
pub async fn calculate(
    State(state): State<AppState>,
    _user: AuthUser,
    JsonBody(req): JsonBody<CalculateBody>,
) -> ApiResult {
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
    Ok(Json(rule.cost(input, req.output_tokens.unwrap_or(0))).into_response())
}

/// `GET /api/credits/pricing`
pub async fn list_pricing(State(state): State<AppState>, _user: AuthUser) -> ApiResult {
    let mut conn = state.pg.acquire().await?;
    let rules: Vec<Value> = pricing::list_rules(&mut conn)
        .await?
        .iter()
        .map(pricing::PricingRule::to_json)
        .collect();
    Ok(Json(json!({ "rules": rules })).into_response())
}

/// `PUT /api/credits/pricing/{chatflowId or "default"}` (admin)
pub async fn put_pricing(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(chatflow_id): PathParams<String>,
    JsonBody(prices): JsonBody<PriceInput>,
) -> ApiResult {
    user.require_admin()?;
    let mut conn = state.pg.acquire().await?;
    let rule = prices.save(&mut conn, &chatflow_id, &user.id, "").await?;
    Ok(Json(json!({ "rule": rule.to_json() })).into_response())
}

// ---------------------------------------------------------------- history

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TransactionsQuery {
    page: Option<i64>,
    limit: Option<i64>,
    #[serde(rename = "type")]
    kind: Option<String>,
    from: Option<String>,
    to: Option<String>,
    user_id: Option<String>,
}

/// `GET /api/credits/transactions` (own; admin and supervisor may name `userId`)
pub async fn transactions(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<TransactionsQuery>,
) -> ApiResult {
    let (page, limit) = PageParams {
        page: q.page,
        limit: q.limit,
    }
    .resolve()?;
    let target = match q.user_id {
        Some(id) if id != user.id => {
            user.require_role(&[Role::Admin, Role::Supervisor])?;
            id
        }
        _ => user.id.clone(),
    };
    let filter = TransactionFilter {
        kind: q
            .kind
            .map(|k| k.parse::<TransactionKind>())
            .transpose()
            .map_err(|e| ApiError::invalid_field("type", e))?,
        // An empty parameter (`?from=`) counts as absent.
        from: q
            .from
            .filter(|f| !f.is_empty())
            .map(|f| parse_instant("from", &f, false))
            .transpose()?,
        to: q
            .to
            .filter(|t| !t.is_empty())
            .map(|t| parse_instant("to", &t, true))
            .transpose()?,
    };
    let mut conn = state.pg.acquire().await?;
    let (rows, total) = queries::transactions(&mut conn, &target, &filter, page, limit).await?;
    Ok(
        Json(json!({ "transactions": rows, "page": page, "limit": limit, "total": total }))
            .into_response(),
    )
}

// ---------------------------------------------------------------- reservations

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct InitializeBody {
    session_id: String,
    chatflow_id: String,
    estimated_credits: i64,
    #[allow(dead_code)]
    idempotency_key: Option<String>,
}

/// `POST /api/streaming-sessions/initialize`
pub async fn initialize(
    State(state): State<AppState>,
    user: AuthUser,
    headers: HeaderMap,
    JsonBody(body): JsonBody<Value>,
) -> ApiResult {
    let endpoint = "POST /api/streaming-sessions/initialize";
    mutate(
        &state,
        user,
        &headers,
        endpoint,
        body,
        move |conn, call, req: InitializeBody| {
            Box::pin(async move {
                let estimate = Credits::parse("estimatedCredits", req.estimated_credits)?;
                let ctx = Context {
                    actor_id: Some(&call.user.id),
                    idempotency_key: call.key.as_deref(),
                    ..Context::default()
                };
                let reservation = reservations::reserve(
                    conn,
                    &call.user.id,
                    &req.session_id,
                    &req.chatflow_id,
                    estimate,
                    &ctx,
                )
                .await?;
                Ok((
                    StatusCode::CREATED,
                    serde_json::to_value(reservation).unwrap_or_default(),
                ))
            })
        },
    )
    .await
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FinalizeBody {
    session_id: String,
    actual_credits: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AbortBody {
    session_id: String,
    partial_credits: Option<i64>,
}

async fn settle(
    state: &AppState,
    user: &AuthUser,
    session_id: &str,
    how: Settlement,
    charge: i64,
) -> ApiResult {
    let mut tx = state.pg.begin().await?;
    let outcome = reservations::settle(&mut tx, session_id, &user.id, how, charge).await?;
    tx.commit().await?;
    Ok(Json(outcome).into_response())
}

/// `POST /api/streaming-sessions/finalize` (owner)
pub async fn finalize(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<FinalizeBody>,
) -> ApiResult {
    settle(
        &state,
        &user,
        &req.session_id,
        Settlement::Finalize,
        req.actual_credits,
    )
    .await
}

/// `POST /api/streaming-sessions/abort` (owner)
pub async fn abort(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(req): JsonBody<AbortBody>,
) -> ApiResult {
    settle(
        &state,
        &user,
        &req.session_id,
        Settlement::Abort,
        req.partial_credits.unwrap_or(0),
    )
    .await
}

#[derive(Deserialize)]
pub struct ActiveQuery {
    all: Option<bool>,
}

/// `GET /api/streaming-sessions/active` (own; admin with `?all=true`).
/// Reservations the gateway holds for running predictions are listed to
/// admins only: an end user never learns their ids.
pub async fn active(
    State(state): State<AppState>,
    user: AuthUser,
    QueryParams(q): QueryParams<ActiveQuery>,
) -> ApiResult {
    let scope = if q.all.unwrap_or(false) {
        user.require_admin()?;
        None
    } else {
        Some(user.id.as_str())
    };
    let mut conn = state.pg.acquire().await?;
    let with_gateway = user.role == Role::Admin;
    let sessions = reservations::active_sessions(&mut conn, scope, with_gateway).await?;
    Ok(Json(json!({ "sessions": sessions })).into_response())
}
