//! Reservations for streaming predictions (SPEC §6): initialize holds the
//! estimate; finalize charges the actual cost and refunds the rest (or
//! charges the excess as far as the balance goes, recording the
//! shortfall); abort charges the partial cost. Finalize and abort are
//! idempotent per session: a second call returns the first outcome.
//!
//! A reservation has an [`Origin`]: a client's (made through
//! `/api/streaming-sessions`, settled by that client) or the gateway's
//! (made for a prediction, settled only by the prediction itself through
//! [`settle_prediction`]). A client can never settle the gateway's: that
//! would let it abort a running prediction at no charge.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use super::expiry::expire_due_for_user;
use super::ops::{
    begin_change, debit_locked, insert_transaction, refund_draws, set_total, Context,
};
use super::{accounts::lock_account, insufficient, Credits, TransactionKind};
use crate::error::ApiError;

/// Who made a reservation, and so who may settle it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Origin {
    /// A client, through `POST /api/streaming-sessions/initialize`.
    Client,
    /// The gateway, for a prediction it is making.
    Gateway,
}

impl Origin {
    fn as_str(self) -> &'static str {
        match self {
            Origin::Client => "client",
            Origin::Gateway => "gateway",
        }
    }
}

/// How a reservation ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settlement {
    /// The stream completed: charge the actual cost.
    Finalize,
    /// The stream was cut short: charge the partial cost.
    Abort,
}

impl Settlement {
    fn status(self) -> &'static str {
        match self {
            Settlement::Finalize => "completed",
            Settlement::Abort => "aborted",
        }
    }
}

/// An active reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The session id.
    pub session_id: String,
    /// Credits held.
    pub reserved_credits: i64,
    /// Always `active` when returned by [`reserve`].
    pub status: String,
}

/// How a reservation was settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionOutcome {
    /// The session id.
    pub session_id: String,
    /// Credits charged in all.
    pub charged_credits: i64,
    /// Credits returned to their allocations.
    pub refunded_credits: i64,
    /// Credits the actual cost exceeded what could be charged.
    pub shortfall_credits: i64,
    /// `completed` or `aborted`.
    pub status: String,
    /// False when this call found the session already settled.
    #[serde(skip)]
    pub settled_now: bool,
}

/// An active session as listed.
#[derive(Debug, Clone, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct ActiveSession {
    /// Session id.
    pub session_id: String,
    /// Owner.
    pub user_id: String,
    /// Chatflow.
    pub chatflow_id: String,
    /// Credits held.
    pub reserved_credits: i64,
    /// `client` or `gateway` (only admins see the gateway's).
    pub origin: String,
    /// When it was reserved.
    pub created_at: DateTime<Utc>,
}

fn check_ids(session_id: &str, chatflow_id: &str) -> Result<(), ApiError> {
    if session_id.is_empty() || session_id.len() > 128 {
        return Err(ApiError::invalid_field(
            "sessionId",
            "must be 1 to 128 characters",
        ));
    }
    if chatflow_id.is_empty() || chatflow_id.len() > 128 {
        return Err(ApiError::invalid_field(
            "chatflowId",
            "must be 1 to 128 characters",
        ));
    }
    Ok(())
}

/// A client's reservation (`POST /api/streaming-sessions/initialize`):
/// holds `estimate` credits for `session_id` (402 when short). Calling it
/// again for the same session with the same user, chatflow and estimate
/// returns the reservation; any other reuse of the id (a gateway
/// reservation's id included) is 409.
pub async fn reserve(
    conn: &mut PgConnection,
    user_id: &str,
    session_id: &str,
    chatflow_id: &str,
    estimate: Credits,
    ctx: &Context<'_>,
) -> Result<Reservation, ApiError> {
    check_ids(session_id, chatflow_id)?;
    let total = begin_change(conn, user_id).await?;
    let existing: Option<(String, String, i64, String, String)> = sqlx::query_as(
        "SELECT user_id, chatflow_id, reserved_credits, status, origin FROM streaming_sessions
          WHERE session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((owner, flow, reserved, status, origin)) = existing {
        let same = owner == user_id && flow == chatflow_id && reserved == estimate.get();
        if same && origin == Origin::Client.as_str() {
            return Ok(Reservation {
                session_id: session_id.to_owned(),
                reserved_credits: reserved,
                status,
            });
        }
        return Err(session_taken(session_id));
    }
    let hold = Hold {
        user_id,
        session_id,
        chatflow_id,
        origin: Origin::Client,
    };
    hold.take(conn, total, estimate.get(), ctx).await
}

/// The gateway's reservation for a prediction: under the account lock,
/// 402 unless the balance covers `minimum` (the part of the price known
/// before the answer); else holds `wanted` capped at the balance (never
/// below `minimum`). `session_id` is fresh (the answer's message id).
pub async fn reserve_prediction(
    conn: &mut PgConnection,
    user_id: &str,
    session_id: &str,
    chatflow_id: &str,
    minimum: Credits,
    wanted: Credits,
    ctx: &Context<'_>,
) -> Result<Reservation, ApiError> {
    check_ids(session_id, chatflow_id)?;
    let total = begin_change(conn, user_id).await?;
    if total < minimum.get() {
        return Err(insufficient(minimum.get(), total));
    }
    let amount = wanted.get().min(total).max(minimum.get());
    let hold = Hold {
        user_id,
        session_id,
        chatflow_id,
        origin: Origin::Gateway,
    };
    hold.take(conn, total, amount, ctx).await
}

/// A reservation about to be written.
struct Hold<'a> {
    user_id: &'a str,
    session_id: &'a str,
    chatflow_id: &'a str,
    origin: Origin,
}

impl Hold<'_> {
    /// Debits `amount` from the locked account (its spendable `total`) as
    /// a `reservation` entry and records the reservation.
    async fn take(
        &self,
        conn: &mut PgConnection,
        total: i64,
        amount: i64,
        ctx: &Context<'_>,
    ) -> Result<Reservation, ApiError> {
        let ctx = Context {
            streaming_session_id: Some(self.session_id),
            ..*ctx
        };
        let kind = TransactionKind::Reservation;
        let (entry, _) = debit_locked(conn, self.user_id, total, amount, kind, &ctx).await?;
        sqlx::query(
            "INSERT INTO streaming_sessions
                (session_id, user_id, chatflow_id, reserved_credits, reservation_transaction_id, origin)
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(self.session_id)
        .bind(self.user_id)
        .bind(self.chatflow_id)
        .bind(amount)
        .bind(entry)
        .bind(self.origin.as_str())
        .execute(&mut *conn)
        .await
        .map_err(|e| match &e {
            // Another user reserved the same id at the same moment.
            sqlx::Error::Database(db) if db.is_unique_violation() => {
                session_taken(self.session_id)
            }
            _ => ApiError::from(e),
        })?;
        Ok(Reservation {
            session_id: self.session_id.to_owned(),
            reserved_credits: amount,
            status: "active".into(),
        })
    }
}

fn session_taken(session_id: &str) -> ApiError {
    ApiError::Conflict {
        code: "session_exists",
        message: format!("streaming session {session_id} already exists with other values"),
    }
}

/// Settles the client reservation `session_id` for its owner `caller_id`
/// (403 for anyone else and for a reservation the gateway made, 404 when
/// unknown), charging `charge` credits.
pub async fn settle(
    conn: &mut PgConnection,
    session_id: &str,
    caller_id: &str,
    how: Settlement,
    charge: i64,
) -> Result<SessionOutcome, ApiError> {
    if !(0..=super::MAX_CREDITS).contains(&charge) {
        let field = match how {
            Settlement::Finalize => "actualCredits",
            Settlement::Abort => "partialCredits",
        };
        return Err(ApiError::invalid_field(
            field,
            "must be a whole number of 0 or more",
        ));
    }
    let found: Option<(String, String)> =
        sqlx::query_as("SELECT user_id, origin FROM streaming_sessions WHERE session_id = $1")
            .bind(session_id)
            .fetch_optional(&mut *conn)
            .await?;
    let (owner, origin) =
        found.ok_or_else(|| ApiError::not_found(format!("no streaming session {session_id}")))?;
    if owner != caller_id {
        return Err(ApiError::forbidden(
            "this streaming session belongs to another user",
        ));
    }
    if origin != Origin::Client.as_str() {
        return Err(ApiError::Forbidden {
            code: "gateway_reservation",
            message: "this reservation belongs to a prediction the gateway is making; \
                      it is settled when the answer ends"
                .into(),
        });
    }
    let total = lock_account(conn, &owner).await?;
    settle_locked(conn, session_id, total, how, charge, caller_id).await
}

/// Settles the gateway's reservation for a prediction of `user_id`,
/// charging `charge`. Finding it already settled is an anomaly (the sweep
/// released a live call, or a bug): it is logged at error and the actual
/// cost is charged again through a deduction, as far as the balance goes,
/// with the rest recorded as a shortfall. The answer is never free.
pub async fn settle_prediction(
    conn: &mut PgConnection,
    session_id: &str,
    user_id: &str,
    how: Settlement,
    charge: i64,
) -> Result<SessionOutcome, ApiError> {
    let total = lock_account(conn, user_id).await?;
    let outcome = settle_locked(conn, session_id, total, how, charge, user_id).await?;
    if outcome.settled_now {
        return Ok(outcome);
    }
    tracing::error!(
        session_id,
        status = %outcome.status,
        charge,
        "a prediction found its reservation already settled; charging it by deduction"
    );
    charge_late(conn, session_id, user_id, charge).await
}

/// The anomaly path of [`settle_prediction`]: a deduction of `charge`
/// (as far as the balance goes) added to the settled session's record.
async fn charge_late(
    conn: &mut PgConnection,
    session_id: &str,
    user_id: &str,
    charge: i64,
) -> Result<SessionOutcome, ApiError> {
    let total = begin_change(conn, user_id).await?;
    let taken = charge.min(total).max(0);
    if taken > 0 {
        let ctx = Context {
            actor_id: Some("system"),
            description: Some("prediction charged after its reservation was settled elsewhere"),
            streaming_session_id: Some(session_id),
            ..Context::default()
        };
        debit_locked(
            conn,
            user_id,
            total,
            taken,
            TransactionKind::Deduction,
            &ctx,
        )
        .await?;
    }
    let shortfall = charge.max(0) - taken;
    let (status,): (String,) = sqlx::query_as(
        "UPDATE streaming_sessions
            SET charged_credits = charged_credits + $2, shortfall_credits = shortfall_credits + $3
          WHERE session_id = $1 RETURNING status",
    )
    .bind(session_id)
    .bind(taken)
    .bind(shortfall)
    .fetch_one(&mut *conn)
    .await?;
    if shortfall > 0 {
        tracing::error!(session_id, shortfall, "a late prediction charge was short");
    }
    Ok(SessionOutcome {
        session_id: session_id.to_owned(),
        charged_credits: taken,
        refunded_credits: 0,
        shortfall_credits: shortfall,
        status,
        settled_now: false,
    })
}

/// Settles a session whose owner's account the caller has locked (with its
/// cached `total`). Idempotent: a settled session returns its outcome.
pub(crate) async fn settle_locked(
    conn: &mut PgConnection,
    session_id: &str,
    total: i64,
    how: Settlement,
    charge: i64,
    actor_id: &str,
) -> Result<SessionOutcome, ApiError> {
    #[derive(sqlx::FromRow)]
    struct Row {
        user_id: String,
        reserved_credits: i64,
        charged_credits: Option<i64>,
        refunded_credits: Option<i64>,
        shortfall_credits: i64,
        status: String,
        reservation_transaction_id: Option<Uuid>,
    }
    let row: Row = sqlx::query_as(
        "SELECT user_id, reserved_credits, charged_credits, refunded_credits, shortfall_credits,
                status, reservation_transaction_id
           FROM streaming_sessions WHERE session_id = $1 FOR UPDATE",
    )
    .bind(session_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found(format!("no streaming session {session_id}")))?;
    if row.status != "active" {
        return Ok(SessionOutcome {
            session_id: session_id.to_owned(),
            charged_credits: row.charged_credits.unwrap_or(0),
            refunded_credits: row.refunded_credits.unwrap_or(0),
            shortfall_credits: row.shortfall_credits,
            status: row.status,
            settled_now: false,
        });
    }
    let user_id = row.user_id.as_str();
    let (_, expired) = expire_due_for_user(conn, user_id, total).await?;
    let mut balance = total - expired;
    let ctx = Context {
        actor_id: Some(actor_id),
        streaming_session_id: Some(session_id),
        description: Some(match how {
            Settlement::Finalize => "streaming session finalized",
            Settlement::Abort => "streaming session aborted",
        }),
        ..Context::default()
    };
    let reserved = row.reserved_credits;
    let (charged, refunded, shortfall) = if charge <= reserved {
        let returned = match row.reservation_transaction_id {
            Some(debit) if charge < reserved => {
                refund_draws(conn, debit, reserved - charge).await?
            }
            _ => 0,
        };
        if returned > 0 {
            balance += returned;
            insert_transaction(
                conn,
                user_id,
                TransactionKind::Refund,
                returned,
                balance,
                None,
                &ctx,
            )
            .await?;
            set_total(conn, user_id, balance).await?;
        }
        (charge, returned, 0)
    } else {
        let excess = charge - reserved;
        let extra = excess.min(balance);
        if extra > 0 {
            debit_locked(
                conn,
                user_id,
                balance,
                extra,
                TransactionKind::Settlement,
                &ctx,
            )
            .await?;
        }
        (reserved + extra, 0, excess - extra)
    };
    sqlx::query(
        "UPDATE streaming_sessions
            SET status = $2, charged_credits = $3, refunded_credits = $4,
                shortfall_credits = $5, settled_at = now()
          WHERE session_id = $1",
    )
    .bind(session_id)
    .bind(how.status())
    .bind(charged)
    .bind(refunded)
    .bind(shortfall)
    .execute(&mut *conn)
    .await?;
    if shortfall > 0 {
        tracing::warn!(
            session_id,
            shortfall,
            "streaming session cost more than the balance"
        );
    }
    Ok(SessionOutcome {
        session_id: session_id.to_owned(),
        charged_credits: charged,
        refunded_credits: refunded,
        shortfall_credits: shortfall,
        status: how.status().to_owned(),
        settled_now: true,
    })
}

/// Active reservations: the user's, or everyone's when `user_id` is `None`;
/// the gateway's own only when `with_gateway` (admins), so an end user
/// never learns the id of a prediction's reservation.
pub async fn active_sessions(
    conn: &mut PgConnection,
    user_id: Option<&str>,
    with_gateway: bool,
) -> Result<Vec<ActiveSession>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT session_id, user_id, chatflow_id, reserved_credits, origin, created_at
           FROM streaming_sessions
          WHERE status = 'active' AND ($1::text IS NULL OR user_id = $1)
            AND ($2 OR origin = 'client')
          ORDER BY created_at DESC LIMIT 500",
    )
    .bind(user_id)
    .bind(with_gateway)
    .fetch_all(conn)
    .await?)
}
