//! Warning settings and webhooks (README "Allowances and warnings"): a
//! user chooses below which balance they are warned (or never) and
//! whether an allowance's arrival is mailed; a team's supervisors choose
//! the wallet's; admins register webhooks (the secret is shown once) and
//! read their deliveries.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde::{Deserialize, Serialize};
use shared::error::{double_option, ApiError, JsonBody, PathParams, QueryParams};
use shared::ledger::accounts::ensure_account;
use shared::ledger::MAX_CREDITS;
use shared::notices::{self, Delivery, WarningSettings, Webhook, EVENTS};
use shared::openapi::{ApiErrors, PageQuery};
use shared::query::PageParams;
use shared::teams;
use shared::token::AuthUser;
use uuid::Uuid;

use crate::AppState;

type Answer<T> = Result<(StatusCode, Json<T>), ApiError>;

/// `PUT .../warnings`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WarningsBody {
    /// Warn below this balance (`null`: the default; 0: never).
    #[serde(default, deserialize_with = "double_option")]
    #[schema(value_type = Option<i64>, minimum = 0, maximum = 9007199254740991_i64, nullable = true)]
    low_credits: Option<Option<i64>>,
    /// Mail when an allowance arrives (users only).
    allowance_mail: Option<bool>,
}

impl WarningsBody {
    fn low_credits(&self) -> Result<Option<i64>, ApiError> {
        match self.low_credits {
            Some(Some(n)) if !(0..=MAX_CREDITS).contains(&n) => Err(ApiError::invalid_field(
                "lowCredits",
                format!("must be from 0 to {MAX_CREDITS}, or null"),
            )),
            Some(value) => Ok(value),
            None => Err(ApiError::invalid_field(
                "lowCredits",
                "is required (null for the default, 0 for never)",
            )),
        }
    }
}

/// The caller's warning settings.
#[utoipa::path(get, path = "/api/credits/warnings", tag = "warnings",
    responses((status = 200, description = "When the caller is warned", body = WarningSettings), ApiErrors))]
pub async fn get_own(State(state): State<AppState>, user: AuthUser) -> Answer<WarningSettings> {
    ensure_account(&mut *state.pg.acquire().await?, &user).await?;
    Ok((
        StatusCode::OK,
        Json(notices::settings(&state.pg, &user.id).await?),
    ))
}

/// Sets the caller's warning settings.
#[utoipa::path(put, path = "/api/credits/warnings", tag = "warnings", request_body = WarningsBody,
    responses((status = 200, description = "When the caller is warned now", body = WarningSettings), ApiErrors))]
pub async fn put_own(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<WarningsBody>,
) -> Answer<WarningSettings> {
    let low = body.low_credits()?;
    ensure_account(&mut *state.pg.acquire().await?, &user).await?;
    let set = notices::set_settings(&state.pg, &user.id, low, body.allowance_mail).await?;
    Ok((StatusCode::OK, Json(set)))
}

/// The team wallet's warning (its supervisors, admins).
#[utoipa::path(get, path = "/api/teams/{id}/warnings", tag = "warnings",
    params(("id" = Uuid, Path, description = "The team")),
    responses((status = 200, description = "When the supervisors are warned", body = WarningSettings), ApiErrors))]
pub async fn get_team_warnings(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
) -> Answer<WarningSettings> {
    teams::lead(&mut *state.pg.acquire().await?, &user, team).await?;
    let settings = notices::settings(&state.pg, &format!("team:{team}")).await?;
    Ok((StatusCode::OK, Json(settings)))
}

/// Sets below which balance the team's supervisors are warned (its
/// supervisors, admins).
#[utoipa::path(put, path = "/api/teams/{id}/warnings", tag = "warnings",
    params(("id" = Uuid, Path, description = "The team")), request_body = WarningsBody,
    responses((status = 200, description = "When the supervisors are warned now", body = WarningSettings), ApiErrors))]
pub async fn put_team_warnings(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(team): PathParams<Uuid>,
    JsonBody(body): JsonBody<WarningsBody>,
) -> Answer<WarningSettings> {
    let low = body.low_credits()?;
    teams::lead(&mut *state.pg.acquire().await?, &user, team).await?;
    let account = format!("team:{team}");
    let set = notices::set_settings(&state.pg, &account, low, None).await?;
    Ok((StatusCode::OK, Json(set)))
}

/// `POST /api/admin/webhooks`.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebhookBody {
    /// `https://...` (or `http://localhost...` for local use).
    #[schema(max_length = 2000)]
    url: String,
    /// Some of `credits.low`, `credits.expiring`, `credits.granted`,
    /// `credits.exhausted`, `team.wallet_low`, `prediction.refused_402`.
    events: Vec<String>,
}

/// A registered webhook and its secret, shown this once.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Registered {
    /// The webhook.
    pub webhook: Webhook,
    /// `whsec_...`: verify deliveries with it (Standard Webhooks).
    pub secret: String,
}

/// Registers a webhook (admin).
#[utoipa::path(post, path = "/api/admin/webhooks", tag = "webhooks", request_body = WebhookBody,
    responses((status = 201, description = "Registered; the secret is shown once", body = Registered), ApiErrors))]
pub async fn create_webhook(
    State(state): State<AppState>,
    user: AuthUser,
    JsonBody(body): JsonBody<WebhookBody>,
) -> Answer<Registered> {
    user.require_admin()?;
    let url = body.url.trim();
    if url.len() > 2000 {
        return Err(ApiError::invalid_field(
            "url",
            "must be at most 2000 characters",
        ));
    }
    notices::check_url(url)?;
    let mut events = body.events;
    events.sort();
    events.dedup();
    if events.is_empty() || events.iter().any(|e| !EVENTS.contains(&e.as_str())) {
        return Err(ApiError::invalid_field(
            "events",
            format!("must name some of {}", EVENTS.join(", ")),
        ));
    }
    let (webhook, secret) = notices::register(&state.pg, url, &events, &user.id).await?;
    tracing::info!(webhook = %webhook.id, actor = %user.id, "webhook registered");
    Ok((StatusCode::CREATED, Json(Registered { webhook, secret })))
}

/// `{webhooks}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhooksBody {
    /// Newest first.
    pub webhooks: Vec<Webhook>,
}

/// The webhooks (admin).
#[utoipa::path(get, path = "/api/admin/webhooks", tag = "webhooks",
    responses((status = 200, description = "The webhooks", body = WebhooksBody), ApiErrors))]
pub async fn list_webhooks(State(state): State<AppState>, user: AuthUser) -> Answer<WebhooksBody> {
    user.require_admin()?;
    let webhooks = notices::list(&state.pg).await?;
    Ok((StatusCode::OK, Json(WebhooksBody { webhooks })))
}

/// `{success}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct WebhookRemoved {
    /// Always true.
    pub success: bool,
}

/// Removes a webhook (admin); its pending deliveries stop.
#[utoipa::path(delete, path = "/api/admin/webhooks/{id}", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The webhook")),
    responses((status = 200, description = "WebhookRemoved", body = WebhookRemoved), ApiErrors))]
pub async fn delete_webhook(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<Uuid>,
) -> Answer<WebhookRemoved> {
    user.require_admin()?;
    if !notices::remove(&state.pg, id).await? {
        return Err(ApiError::not_found("no such webhook"));
    }
    Ok((StatusCode::OK, Json(WebhookRemoved { success: true })))
}

/// `{deliveries, page, limit, total}`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct DeliveriesBody {
    /// Newest first.
    pub deliveries: Vec<Delivery>,
    /// Page.
    pub page: i64,
    /// Page size.
    pub limit: i64,
    /// Deliveries in all.
    pub total: i64,
}

/// A webhook's deliveries with their last status (admin).
#[utoipa::path(get, path = "/api/admin/webhooks/{id}/deliveries", tag = "webhooks",
    params(("id" = Uuid, Path, description = "The webhook"), PageQuery),
    responses((status = 200, description = "Its deliveries", body = DeliveriesBody), ApiErrors))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    user: AuthUser,
    PathParams(id): PathParams<Uuid>,
    QueryParams(q): QueryParams<PageParams>,
) -> Answer<DeliveriesBody> {
    user.require_admin()?;
    let (page, limit) = q.resolve()?;
    let (deliveries, total) = notices::deliveries(&state.pg, id, page, limit)
        .await?
        .ok_or_else(|| ApiError::not_found("no such webhook"))?;
    let body = DeliveriesBody {
        deliveries,
        page,
        limit,
        total,
    };
    Ok((StatusCode::OK, Json(body)))
}
