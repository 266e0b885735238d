//! Reservations (README §6): credits held for a streamed answer until it is
//! settled, once. Finalize charges the actual cost and refunds the rest
//! (or charges the excess as far as the balance goes, recording the
//! shortfall); abort charges the partial cost. A second settlement
//! returns the first outcome.
//!
//! A reservation has an [`Origin`]: a client's (made through
//! `/api/streaming-sessions`, settled by that client) or the gateway's
//! (made for a prediction, settled only by the prediction itself through
//! [`settle_prediction`]). A client can never settle the gateway's: that
//! would let it abort a running prediction at no charge.

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use super::primitives::{
    begin_change, begin_locked, debit_locked, insert_entry, lock_account, refund_draws, Locked, Tx,
};
use super::types::{Charge, Credits, EntryKind, EntryMeta, LedgerError};
use crate::ids::{ChatflowId, ReservationId, UserId};

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
    /// The answer completed: charge the actual cost.
    Finalize,
    /// The answer was cut short: charge the partial cost.
    Abort,
}

impl Settlement {
    fn status(self) -> &'static str {
        match self {
            Settlement::Finalize => "completed",
            Settlement::Abort => "aborted",
        }
    }

    fn description(self) -> &'static str {
        match self {
            Settlement::Finalize => "streaming session finalized",
            Settlement::Abort => "streaming session aborted",
        }
    }
}

/// An active reservation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Reservation {
    /// The reservation (session) id.
    pub session_id: ReservationId,
    /// Credits held.
    pub reserved_credits: i64,
    /// Always `active` when returned by [`reserve`].
    pub status: String,
}

/// How a reservation was settled.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionOutcome {
    /// The reservation (session) id.
    pub session_id: ReservationId,
    /// Credits charged in all.
    pub charged_credits: i64,
    /// Credits returned to their allocations.
    pub refunded_credits: i64,
    /// Credits the actual cost exceeded what could be charged.
    pub shortfall_credits: i64,
    /// `completed` or `aborted`.
    #[schema(value_type = crate::openapi::SettlementStatus)]
    pub status: String,
    /// What a prediction's price came to beyond what its payer could pay
    /// at settlement (never recorded as a shortfall: see
    /// [`settle_prediction`]).
    #[serde(skip)]
    pub uncovered_credits: i64,
    /// False when this call found the session already settled.
    #[serde(skip)]
    pub settled_now: bool,
    /// The spendable total after this call (`None` when it found the
    /// session already settled and changed nothing).
    #[serde(skip)]
    pub balance_after: Option<i64>,
}

/// An active reservation as listed.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
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
    #[schema(value_type = crate::openapi::ReservationOrigin)]
    pub origin: String,
    /// When it was reserved.
    pub created_at: DateTime<Utc>,
}

/// A client's reservation (`POST /api/streaming-sessions/initialize`):
/// holds `estimate` credits for `id` (402 when short). Calling it again
/// for the same session with the same user, chatflow and estimate returns
/// the reservation; any other reuse of the id (a gateway reservation's id
/// included) is 409.
pub async fn reserve(
    tx: &mut Tx<'_>,
    user: &UserId,
    id: &ReservationId,
    chatflow: &ChatflowId,
    estimate: Credits,
    meta: &EntryMeta<'_>,
) -> Result<Reservation, LedgerError> {
    let total = begin_change(tx, user).await?;
    let existing = sqlx::query!(
        "SELECT user_id, chatflow_id, reserved_credits, status, origin FROM streaming_sessions
          WHERE session_id = $1",
        id.as_str()
    )
    .fetch_optional(&mut **tx)
    .await?;
    if let Some(found) = existing {
        let same = found.user_id == user.as_str()
            && found.chatflow_id == chatflow.as_str()
            && found.reserved_credits == estimate.get();
        if same && found.origin == Origin::Client.as_str() {
            return Ok(Reservation {
                session_id: id.clone(),
                reserved_credits: found.reserved_credits,
                status: found.status,
            });
        }
        return Err(LedgerError::ReservationTaken(id.clone()));
    }
    let hold = Hold {
        user,
        id,
        chatflow,
        origin: Origin::Client,
    };
    hold.take(tx, total, estimate.get(), meta).await
}

/// The gateway's reservation for a prediction, on the account the caller
/// has `locked` (with the account's record, in one statement: see
/// [`super::accounts::lock_from_claims`]) and checked against the limits
/// ([`super::limits::check`], which gives the key's `allowance`): 402
/// `insufficient_credits` unless the balance covers `minimum` (the part of
/// the price known before the answer), 402 `key_limit_reached` unless the
/// allowance does; else holds `wanted` capped at both (never below
/// `minimum`). `id` is fresh (the answer's message id).
pub async fn reserve_prediction(
    tx: &mut Tx<'_>,
    (user, locked, allowance): (&UserId, Locked, Option<i64>),
    id: &ReservationId,
    chatflow: &ChatflowId,
    (minimum, wanted): (Credits, Credits),
    meta: &EntryMeta<'_>,
) -> Result<Reservation, LedgerError> {
    let total = begin_locked(tx, user, locked).await?;
    if total < minimum.get() {
        return Err(LedgerError::Insufficient {
            needed: minimum.get(),
            available: total,
        });
    }
    let cap = allowance.map_or(total, |left| left.min(total));
    if let Some(left) = allowance.filter(|left| *left < minimum.get()) {
        return Err(LedgerError::KeyLimit {
            needed: minimum.get(),
            allowance: left,
        });
    }
    let amount = wanted.get().min(cap).max(minimum.get());
    let hold = Hold {
        user,
        id,
        chatflow,
        origin: Origin::Gateway,
    };
    hold.take(tx, total, amount, meta).await
}

/// A reservation about to be written.
struct Hold<'a> {
    user: &'a UserId,
    id: &'a ReservationId,
    chatflow: &'a ChatflowId,
    origin: Origin,
}

impl Hold<'_> {
    /// Debits `amount` from the locked account (its spendable `total`) as
    /// a `reservation` entry and records the reservation.
    async fn take(
        &self,
        tx: &mut Tx<'_>,
        total: i64,
        amount: i64,
        meta: &EntryMeta<'_>,
    ) -> Result<Reservation, LedgerError> {
        let meta = EntryMeta {
            reservation_id: Some(self.id.as_str()),
            ..*meta
        };
        let kind = EntryKind::Reservation;
        let (entry, _) = debit_locked(tx, self.user, total, amount, kind, &meta).await?;
        if !self
            .record(tx, amount, Some(entry), meta.api_key_id)
            .await?
        {
            // Another user reserved the same id at the same moment.
            return Err(LedgerError::ReservationTaken(self.id.clone()));
        }
        Ok(Reservation {
            session_id: self.id.clone(),
            reserved_credits: amount,
            status: "active".into(),
        })
    }

    /// Records the reservation of `amount`, taken by the entry `entry`;
    /// false when the id is another reservation's (nothing written, and
    /// the transaction still usable).
    async fn record(
        &self,
        tx: &mut Tx<'_>,
        amount: i64,
        entry: Option<Uuid>,
        api_key_id: Option<Uuid>,
    ) -> Result<bool, LedgerError> {
        let inserted = sqlx::query!(
            "INSERT INTO streaming_sessions
                (session_id, user_id, chatflow_id, reserved_credits, reservation_transaction_id,
                 origin, api_key_id)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT DO NOTHING",
            self.id.as_str(),
            self.user.as_str(),
            self.chatflow.as_str(),
            amount,
            entry,
            self.origin.as_str(),
            api_key_id,
        )
        .execute(&mut **tx)
        .await?
        .rows_affected();
        Ok(inserted == 1)
    }
}

/// Settles the client reservation `id` for its owner `caller` (403 for
/// anyone else and for a reservation the gateway made, 404 when
/// unknown), charging `charge`.
pub async fn settle(
    tx: &mut Tx<'_>,
    id: &ReservationId,
    caller: &UserId,
    how: Settlement,
    charge: Charge,
) -> Result<SessionOutcome, LedgerError> {
    let found = sqlx::query!(
        "SELECT user_id, origin FROM streaming_sessions WHERE session_id = $1",
        id.as_str()
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| LedgerError::NoReservation(id.clone()))?;
    if found.user_id != caller.as_str() {
        return Err(LedgerError::NotOwner);
    }
    if found.origin != Origin::Client.as_str() {
        return Err(LedgerError::GatewayReservation);
    }
    let locked = lock_account(tx, caller).await?;
    let target = Target {
        id,
        owner: caller,
        locked,
        origin: Some(Origin::Client),
    };
    settle_locked(tx, &target, how, charge, caller.as_str()).await
}

/// The gateway's reservation for one prediction, as its settlement names
/// it.
pub struct PredictionHold<'a> {
    /// The reservation (the answer's message id).
    pub id: &'a ReservationId,
    /// Whose prediction it is.
    pub user: &'a UserId,
    /// The chatflow it asked.
    pub chatflow: &'a ChatflowId,
    /// The API key it came with, if any.
    pub api_key_id: Option<Uuid>,
}

/// Settles the gateway's reservation for a prediction, charging `charge`.
///
/// Finding it already settled is an anomaly (the sweep released a live
/// call, or a bug): it is logged at error and the actual cost is charged
/// again through a deduction, as far as the balance goes, with the rest
/// recorded as a shortfall. Finding none means its commit was lost (a
/// reservation without an `Idempotency-Key` does not wait for the disk,
/// [`super::Durability::Relaxed`], and the database crashed before it got
/// there): it is recreated holding nothing and settled as usual, so the
/// charge comes from the balance as far as it goes, the rest a shortfall.
/// Either way the answer is never free.
pub async fn settle_prediction(
    tx: &mut Tx<'_>,
    hold: &PredictionHold<'_>,
    how: Settlement,
    charge: Charge,
) -> Result<SessionOutcome, LedgerError> {
    let (id, user) = (hold.id, hold.user);
    let locked = lock_account(tx, user).await?;
    let target = Target {
        id,
        owner: user,
        locked,
        origin: Some(Origin::Gateway),
    };
    let outcome = match settle_locked(tx, &target, how, charge, user.as_str()).await {
        Err(LedgerError::NoReservation(_)) => {
            tracing::error!(
                reservation = %id,
                charge = charge.get(),
                "a prediction's reservation was lost (a database crash before it reached the disk); charging it from the balance"
            );
            let lost = Hold {
                user,
                id,
                chatflow: hold.chatflow,
                origin: Origin::Gateway,
            };
            if !lost.record(tx, 0, None, hold.api_key_id).await? {
                return charge_without_reservation(tx, hold, how, charge).await;
            }
            settle_locked(tx, &target, how, charge, user.as_str()).await?
        }
        // The id is someone else's reservation now (possible only once
        // the prediction's own was lost): that row is not ours to touch.
        Err(LedgerError::NotOwner) => {
            return charge_without_reservation(tx, hold, how, charge).await
        }
        settled => settled?,
    };
    if outcome.settled_now {
        return Ok(outcome);
    }
    tracing::error!(
        reservation = %id,
        status = %outcome.status,
        charge = charge.get(),
        swept = outcome.charged_credits,
        "a prediction found its reservation already settled; correcting what it was charged"
    );
    settle_late(tx, hold, charge, outcome.charged_credits).await
}

/// The anomaly path of [`settle_prediction`]: the reservation was settled
/// elsewhere (the sweep took a live call for a dead one), charging
/// `already`. The answer's own price is what it pays: the difference is
/// charged by a deduction (as far as the balance goes) or refunded to the
/// allocations the hold drew from.
async fn settle_late(
    tx: &mut Tx<'_>,
    hold: &PredictionHold<'_>,
    charge: Charge,
    already: i64,
) -> Result<SessionOutcome, LedgerError> {
    if charge.get() >= already {
        return charge_late(tx, hold, Charge::capped(charge.get() - already), already).await;
    }
    let total = begin_change(tx, hold.user).await?;
    let debits = sqlx::query_scalar!(
        r#"SELECT array_remove(array_prepend(reservation_transaction_id, top_up_transaction_ids), NULL)
                  AS "debits!"
             FROM streaming_sessions WHERE session_id = $1"#,
        hold.id.as_str()
    )
    .fetch_one(&mut **tx)
    .await?;
    let returned = refund_draws(tx, &debits, already - charge.get()).await?;
    let after = total + returned;
    if returned > 0 {
        let meta = EntryMeta {
            actor_id: Some("system"),
            description: Some("prediction refunded what a settlement elsewhere overcharged"),
            reservation_id: Some(hold.id.as_str()),
            api_key_id: hold.api_key_id,
            ..EntryMeta::default()
        };
        insert_entry(
            tx,
            hold.user,
            EntryKind::Refund,
            returned,
            after,
            None,
            &meta,
        )
        .await?;
    }
    let status = sqlx::query_scalar!(
        "UPDATE streaming_sessions
            SET charged_credits = charged_credits - $2, refunded_credits = refunded_credits + $2
          WHERE session_id = $1 RETURNING status",
        hold.id.as_str(),
        returned
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(deducted(hold.id, status, (already - returned, 0, after)))
}

/// What a charge by plain deduction came to: taken, what the balance
/// could not cover, and the balance after.
type Deducted = (i64, i64, i64);

/// Takes `charge` from `user`'s balance by a plain deduction, as far as
/// it goes.
async fn deduct_what_it_can(
    tx: &mut Tx<'_>,
    user: &UserId,
    charge: Charge,
    meta: &EntryMeta<'_>,
) -> Result<Deducted, LedgerError> {
    let total = begin_change(tx, user).await?;
    let taken = charge.get().min(total);
    if taken > 0 {
        debit_locked(tx, user, total, taken, EntryKind::Deduction, meta).await?;
    }
    let uncovered = charge.get() - taken;
    if uncovered > 0 {
        tracing::error!(user = %user, uncovered, "a prediction charged by deduction was not covered");
    }
    Ok((taken, uncovered, total - taken))
}

/// The outcome of reservation `id` charged by a plain deduction
/// ([`deduct_what_it_can`]) rather than by its own settlement.
fn deducted(
    id: &ReservationId,
    status: String,
    (taken, uncovered, after): Deducted,
) -> SessionOutcome {
    SessionOutcome {
        session_id: id.clone(),
        charged_credits: taken,
        refunded_credits: 0,
        shortfall_credits: 0,
        status,
        uncovered_credits: uncovered,
        settled_now: false,
        balance_after: Some(after),
    }
}

/// A prediction whose reservation id another reservation holds (its own
/// was lost in a crash, and a client reserved the id meanwhile): the
/// answer is charged by a deduction, the other row left alone.
async fn charge_without_reservation(
    tx: &mut Tx<'_>,
    hold: &PredictionHold<'_>,
    how: Settlement,
    charge: Charge,
) -> Result<SessionOutcome, LedgerError> {
    tracing::error!(
        reservation = %hold.id,
        charge = charge.get(),
        "a prediction's lost reservation id is another reservation's; charging it by deduction"
    );
    let meta = EntryMeta {
        actor_id: Some("system"),
        description: Some("prediction charged without its reservation, lost in a database crash"),
        api_key_id: hold.api_key_id,
        ..EntryMeta::default()
    };
    let charged = deduct_what_it_can(tx, hold.user, charge, &meta).await?;
    Ok(deducted(hold.id, how.status().to_owned(), charged))
}

/// [`settle_late`] for an answer dearer than what was charged already: a
/// deduction of the difference `charge` (as far as the balance goes)
/// added to the settled reservation's record.
async fn charge_late(
    tx: &mut Tx<'_>,
    hold: &PredictionHold<'_>,
    charge: Charge,
    already: i64,
) -> Result<SessionOutcome, LedgerError> {
    let meta = EntryMeta {
        actor_id: Some("system"),
        description: Some("prediction charged after its reservation was settled elsewhere"),
        reservation_id: Some(hold.id.as_str()),
        api_key_id: hold.api_key_id,
        ..EntryMeta::default()
    };
    let (taken, uncovered, after) = deduct_what_it_can(tx, hold.user, charge, &meta).await?;
    let status = sqlx::query_scalar!(
        "UPDATE streaming_sessions SET charged_credits = charged_credits + $2
          WHERE session_id = $1 RETURNING status",
        hold.id.as_str(),
        taken
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(deducted(
        hold.id,
        status,
        (already + taken, uncovered, after),
    ))
}

/// A reservation's row, locked.
struct Held {
    user: UserId,
    origin: String,
    reserved: i64,
    /// The entries that took the hold: the first, then its top-ups.
    debits: Vec<Uuid>,
    api_key_id: Option<Uuid>,
}

/// The reservation a settlement is for: its id, whose it must be (the
/// account the caller has `locked`), and the origin it must have, if any.
pub(crate) struct Target<'a> {
    pub(crate) id: &'a ReservationId,
    pub(crate) owner: &'a UserId,
    pub(crate) locked: Locked,
    pub(crate) origin: Option<Origin>,
}

/// Settles the reservation `target` names (`NotOwner` when its row is
/// another user's, or of another origin, changing nothing). Idempotent: a
/// settled reservation returns its outcome. The steps: read the
/// reservation, expire what is due, charge (refunding the rest, or
/// charging the excess as far as the payer's means go), record the
/// outcome.
pub(crate) async fn settle_locked(
    tx: &mut Tx<'_>,
    target: &Target<'_>,
    how: Settlement,
    charge: Charge,
    actor: &str,
) -> Result<SessionOutcome, LedgerError> {
    let id = target.id;
    let row = sqlx::query!(
        "SELECT user_id, origin, reserved_credits, charged_credits, refunded_credits,
                shortfall_credits, status, reservation_transaction_id, top_up_transaction_ids,
                api_key_id
           FROM streaming_sessions WHERE session_id = $1 FOR UPDATE",
        id.as_str()
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| LedgerError::NoReservation(id.clone()))?;
    let wrong_origin = target.origin.is_some_and(|o| o.as_str() != row.origin);
    if row.user_id != target.owner.as_str() || wrong_origin {
        return Err(LedgerError::NotOwner);
    }
    if row.status != "active" {
        return Ok(SessionOutcome {
            session_id: id.clone(),
            charged_credits: row.charged_credits.unwrap_or(0),
            refunded_credits: row.refunded_credits.unwrap_or(0),
            shortfall_credits: row.shortfall_credits,
            status: row.status,
            uncovered_credits: 0,
            settled_now: false,
            balance_after: None,
        });
    }
    let held = Held {
        user: UserId::stored(row.user_id),
        origin: row.origin,
        reserved: row.reserved_credits,
        debits: row
            .reservation_transaction_id
            .into_iter()
            .chain(row.top_up_transaction_ids)
            .collect(),
        api_key_id: row.api_key_id,
    };
    let balance = begin_locked(tx, &held.user, target.locked).await?;
    let meta = EntryMeta {
        actor_id: Some(actor),
        reservation_id: Some(id.as_str()),
        description: Some(how.description()),
        api_key_id: row.api_key_id,
        ..EntryMeta::default()
    };
    let charged = charge_reservation(tx, &held, balance, charge.get(), &meta).await?;
    record_settlement(tx, id, how, charged).await
}

/// What a settlement came to.
struct Charged {
    charged: i64,
    refunded: i64,
    /// A client reservation's excess over its balance, recorded.
    shortfall: i64,
    /// A prediction's excess over its payer's means, never recorded as
    /// owed (see [`settle_prediction`]).
    uncovered: i64,
    /// The spendable total after.
    after: i64,
}

/// Charges `charge` against the reservation: the rest goes back to the
/// allocations it drew from, or the excess is debited as far as the
/// `balance` (and, for a prediction made with an API key, the key's
/// monthly allowance) goes. What remains is a client reservation's
/// shortfall, or a prediction's uncovered part.
async fn charge_reservation(
    tx: &mut Tx<'_>,
    held: &Held,
    balance: i64,
    charge: i64,
    meta: &EntryMeta<'_>,
) -> Result<Charged, LedgerError> {
    let user = &held.user;
    if charge > held.reserved {
        let excess = charge - held.reserved;
        let gateway = held.origin == Origin::Gateway.as_str();
        let allowance = match held.api_key_id {
            Some(key) if gateway => super::limits::key_allowance(tx, key).await?,
            _ => None,
        };
        let extra = excess
            .min(balance)
            .min(allowance.unwrap_or(i64::MAX))
            .max(0);
        if extra > 0 {
            debit_locked(tx, user, balance, extra, EntryKind::Settlement, meta).await?;
        } else {
            judge_without_entry(tx, user, balance, meta).await?;
        }
        let (shortfall, uncovered) = if gateway {
            (0, excess - extra)
        } else {
            (excess - extra, 0)
        };
        return Ok(Charged {
            charged: held.reserved + extra,
            refunded: 0,
            shortfall,
            uncovered,
            after: balance - extra,
        });
    }
    let returned = if charge < held.reserved && !held.debits.is_empty() {
        refund_draws(tx, &held.debits, held.reserved - charge).await?
    } else {
        0
    };
    let after = balance + returned;
    if returned > 0 {
        insert_entry(tx, user, EntryKind::Refund, returned, after, None, meta).await?;
    } else {
        judge_without_entry(tx, user, after, meta).await?;
    }
    Ok(Charged {
        charged: charge,
        refunded: returned,
        shortfall: 0,
        uncovered: 0,
        after,
    })
}

/// A settlement that wrote no entry (it cost exactly what was held, or
/// nothing more could be taken) is judged for warnings as an entry would
/// have been, from before the hold to `after` (README "Allowances and
/// warnings"): a user paying fixed prices is told too.
async fn judge_without_entry(
    tx: &mut Tx<'_>,
    user: &UserId,
    after: i64,
    meta: &EntryMeta<'_>,
) -> Result<(), LedgerError> {
    sqlx::query_scalar!(
        r#"SELECT warn_on_settlement($1, $2, $3) AS "judged""#,
        user.as_str(),
        meta.reservation_id,
        after
    )
    .fetch_one(&mut **tx)
    .await?;
    Ok(())
}

async fn record_settlement(
    tx: &mut Tx<'_>,
    id: &ReservationId,
    how: Settlement,
    charged: Charged,
) -> Result<SessionOutcome, LedgerError> {
    sqlx::query!(
        "UPDATE streaming_sessions
            SET status = $2, charged_credits = $3, refunded_credits = $4,
                shortfall_credits = $5, settled_at = now()
          WHERE session_id = $1",
        id.as_str(),
        how.status(),
        charged.charged,
        charged.refunded,
        charged.shortfall
    )
    .execute(&mut **tx)
    .await?;
    if charged.shortfall > 0 {
        tracing::warn!(reservation = %id, shortfall = charged.shortfall, "a reservation cost more than the balance");
    }
    if charged.uncovered > 0 {
        tracing::warn!(reservation = %id, uncovered = charged.uncovered, "a prediction's price passed its payer's means at settlement");
    }
    Ok(SessionOutcome {
        session_id: id.clone(),
        charged_credits: charged.charged,
        refunded_credits: charged.refunded,
        shortfall_credits: charged.shortfall,
        status: how.status().to_owned(),
        uncovered_credits: charged.uncovered,
        settled_now: true,
        balance_after: Some(charged.after),
    })
}

/// Tops up the gateway's reservation for a prediction by up to `wanted`
/// credits, as far as the balance and the monthly allowance of the key it
/// came with go: one short transaction under the account lock, which
/// writes one `reservation` entry (listed on the reservation, so the
/// settlement refunds from it too). Returns the hold after it, unchanged
/// when the reservation is settled already or nothing was left to take.
pub async fn top_up(
    pool: &sqlx::PgPool,
    hold: &PredictionHold<'_>,
    wanted: i64,
) -> Result<i64, LedgerError> {
    let mut tx = super::primitives::begin(pool, super::Durability::Flushed).await?;
    let total = begin_change(&mut tx, hold.user).await?;
    let row = sqlx::query!(
        "SELECT reserved_credits, status, api_key_id FROM streaming_sessions
          WHERE session_id = $1 AND user_id = $2 AND origin = 'gateway' FOR UPDATE",
        hold.id.as_str(),
        hold.user.as_str()
    )
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| LedgerError::NoReservation(hold.id.clone()))?;
    let allowance = match row.api_key_id {
        Some(key) => super::limits::key_allowance(&mut tx, key).await?,
        None => None,
    };
    let take = wanted.min(total).min(allowance.unwrap_or(i64::MAX)).max(0);
    if row.status != "active" || take == 0 {
        tx.rollback().await?;
        return Ok(row.reserved_credits);
    }
    let meta = EntryMeta {
        actor_id: Some("system"),
        description: Some("prediction hold topped up"),
        reference: None,
        reservation_id: Some(hold.id.as_str()),
        api_key_id: row.api_key_id,
        ..EntryMeta::default()
    };
    let kind = EntryKind::Reservation;
    let (entry, _) = debit_locked(&mut tx, hold.user, total, take, kind, &meta).await?;
    let reserved = sqlx::query_scalar!(
        "UPDATE streaming_sessions
            SET reserved_credits = reserved_credits + $2,
                top_up_transaction_ids = array_append(top_up_transaction_ids, $3)
          WHERE session_id = $1 RETURNING reserved_credits",
        hold.id.as_str(),
        take,
        entry
    )
    .fetch_one(&mut *tx)
    .await?;
    super::primitives::commit(tx).await?;
    Ok(reserved)
}

/// Records what a prediction's relay has delivered so far (its price in
/// credits), so that the sweep charges it should the instance die; one
/// statement outside any transaction. Answers whether its owner asked it
/// to stop (the relay's regular check, in the same round trip).
pub async fn record_progress(
    pool: &sqlx::PgPool,
    id: &ReservationId,
    delivered: i64,
) -> Result<bool, LedgerError> {
    Ok(sqlx::query_scalar!(
        r#"UPDATE streaming_sessions
              SET delivered_credits = GREATEST(COALESCE(delivered_credits, 0), $2),
                  progress_at = now()
            WHERE session_id = $1 AND status = 'active'
        RETURNING stop_requested_at IS NOT NULL AS "stop!""#,
        id.as_str(),
        delivered
    )
    .fetch_optional(pool)
    .await?
    .unwrap_or(false))
}

/// Active reservations: the user's, or everyone's when `user` is `None`;
/// the gateway's own only when `with_gateway` (admins), so an end user
/// never learns the id of a prediction's reservation.
pub async fn active_sessions(
    conn: &mut sqlx::PgConnection,
    user: Option<&UserId>,
    with_gateway: bool,
) -> Result<Vec<ActiveSession>, LedgerError> {
    Ok(sqlx::query_as!(
        ActiveSession,
        "SELECT session_id, user_id, chatflow_id, reserved_credits, origin, created_at
           FROM streaming_sessions
          WHERE status = 'active' AND ($1::text IS NULL OR user_id = $1)
            AND ($2 OR origin = 'client')
          ORDER BY created_at DESC LIMIT 500",
        user.map(UserId::as_str),
        with_gateway
    )
    .fetch_all(conn)
    .await?)
}

/// Asks the prediction `id` of `user` to stop (its relay reads the flag
/// between events): 404 for an id that is not one of this user's
/// predictions (another user's included, so none is confirmed, and one of
/// a chatflow outside `scope`, a key's list), 409
/// `already_finished` once it is settled (the row is left as it was).
/// Asking twice keeps the first time.
pub async fn request_stop(
    conn: &mut sqlx::PgConnection,
    id: &ReservationId,
    user: &UserId,
    scope: Option<&[String]>,
) -> Result<DateTime<Utc>, LedgerError> {
    let row = sqlx::query!(
        r#"UPDATE streaming_sessions
              SET stop_requested_at = CASE WHEN status = 'active'
                                           THEN COALESCE(stop_requested_at, now())
                                           ELSE stop_requested_at END
            WHERE session_id = $1 AND user_id = $2 AND origin = 'gateway'
              AND ($3::text[] IS NULL OR chatflow_id = ANY($3))
        RETURNING status, stop_requested_at"#,
        id.as_str(),
        user.as_str(),
        scope
    )
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| LedgerError::NoReservation(id.clone()))?;
    match (row.status.as_str(), row.stop_requested_at) {
        ("active", Some(at)) => Ok(at),
        _ => Err(LedgerError::AlreadySettled),
    }
}

/// Whether the owner of prediction `id` asked it to stop.
pub async fn stop_requested(pool: &sqlx::PgPool, id: &ReservationId) -> Result<bool, LedgerError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT stop_requested_at IS NOT NULL AS "stop!" FROM streaming_sessions WHERE session_id = $1"#,
        id.as_str()
    )
    .fetch_optional(pool)
    .await?
    .unwrap_or(false))
}
