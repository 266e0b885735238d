//! What every function's API description shares: the error response,
//! the `Idempotency-Key` header, paging and date-range parameters, the
//! bearer scheme, and the document the functions' descriptions are merged
//! into. Each route's description is declared once, on its handler
//! (`#[utoipa::path]`), and the router is built from the same declarations
//! (`utoipa_axum`), so a route cannot exist without its description.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::OpenApi;
use utoipa::{IntoParams, IntoResponses, Modify};

use crate::error::ErrorBody;

/// Every error: `{"error": "<snake_case_code>", "message": "<text>"}`.
#[derive(IntoResponses)]
#[allow(dead_code)]
#[response(
    status = "default",
    description = "Any error: 400 invalid input (the message names the field), 401, 402, 403, 404, 405, 409, 413, 415, 422, 429, 502, 503, 504. 409 idempotency_in_progress and 429 carry Retry-After.",
    headers(("Retry-After" = u64, description = "Seconds to wait before retrying (409 idempotency_in_progress, 429)"))
)]
pub struct ApiErrors(#[to_schema] ErrorBody);

/// The `Idempotency-Key` header of a mutating route.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)]
pub struct IdempotencyKeyHeader {
    /// The same key with the same body returns the first answer; with
    /// another body it is 409.
    #[param(
        rename = "Idempotency-Key",
        min_length = 1,
        max_length = 255,
        pattern = "^[!-~]+$"
    )]
    idempotency_key: Option<String>,
}

/// `?page&limit`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct PageQuery {
    /// 1-based page (1).
    #[param(minimum = 1, default = 1)]
    page: Option<i64>,
    /// Items per page (20).
    #[param(minimum = 1, maximum = 100, default = 20)]
    limit: Option<i64>,
}

/// `?from&to`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct RangeQuery {
    /// RFC 3339 or YYYY-MM-DD.
    from: Option<String>,
    /// RFC 3339 or YYYY-MM-DD (the whole day).
    to: Option<String>,
}

/// `?teamId`.
#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct TeamQuery {
    /// A team's report: its members' usage while they belonged (the
    /// team's supervisors and admins).
    #[param(rename = "teamId")]
    team_id: Option<uuid::Uuid>,
}

/// How a reservation was settled (`status` of a settlement's answer).
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub enum SettlementStatus {
    /// Finalized.
    Completed,
    /// Aborted.
    Aborted,
}

/// Who made a reservation.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub enum ReservationOrigin {
    /// A client, through `/api/streaming-sessions/initialize`.
    Client,
    /// The gateway, for a prediction it is making.
    Gateway,
}

/// Whether an API key works.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub enum KeyStatus {
    /// It does.
    Active,
    /// Its owner or an admin revoked it.
    Revoked,
    /// Its time ran out.
    Expired,
}

/// Whether an answer ran to its end.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "lowercase")]
pub enum AnswerStatus {
    /// It did.
    Complete,
    /// It was cut short.
    Incomplete,
}

/// Who said a `history` item.
#[derive(utoipa::ToSchema)]
#[allow(dead_code)]
#[schema(rename_all = "camelCase")]
pub enum HistoryRole {
    /// The user.
    UserMessage,
    /// The chatflow.
    ApiMessage,
}

/// Raw bytes (a stored file's content).
pub struct Binary;

impl utoipa::PartialSchema for Binary {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
                utoipa::openapi::KnownFormat::Binary,
            )))
            .into()
    }
}

impl utoipa::ToSchema for Binary {}

/// Adds the bearer scheme every protected route names.
pub struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document every function's description is merged into.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Flowise gateway",
        version = "0.1.0",
        description = "Credit-metered gateway in front of Flowise. Every error is `{\"error\": \"<snake_case_code>\", \"message\": \"<text>\"}`. Every function also answers `GET /health`. The streamed prediction is served by the predict-stream function URL; everything else by the HTTP API."
    ),
    security(("bearer" = [])),
    // Named by parameters only, which do not register their schemas.
    components(schemas(crate::ledger::EntryKind, crate::token::Role)),
    modifiers(&BearerScheme)
)]
pub struct Base;

/// The whole gateway's description: the base document with every
/// function's paths and schemas merged in.
pub fn merged(parts: impl IntoIterator<Item = OpenApi>) -> OpenApi {
    let mut doc = <Base as utoipa::OpenApi>::openapi();
    for part in parts {
        doc.merge(part);
    }
    doc
}
