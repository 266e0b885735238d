//! The ledger's vocabulary: amounts checked at the edge ([`Credits`],
//! [`Charge`], [`Adjustment`]), the kinds of entry, an allocation, what an
//! entry records about its change ([`EntryMeta`]), and the ledger's own
//! errors ([`LedgerError`]), which name no request field: the handler that
//! knows the field names it.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ApiError;
use crate::ids::{ReservationId, UserId};

/// The most credits one amount may hold, and the highest balance: 2^53 − 1
/// (JavaScript's `Number.MAX_SAFE_INTEGER`), so every client reads every
/// amount and balance exactly. Sums of two such amounts stay far from
/// `i64` overflow.
pub const MAX_CREDITS: i64 = 9_007_199_254_740_991;

fn at_most_max() -> String {
    format!("must be at most {MAX_CREDITS}")
}

/// A positive whole number of credits, at most [`MAX_CREDITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Credits(i64);

impl Credits {
    /// Checks `value` as the field `field`: 1 to [`MAX_CREDITS`].
    pub fn parse(field: &str, value: i64) -> Result<Self, ApiError> {
        Credits::try_from(value).map_err(|problem| ApiError::invalid_field(field, problem))
    }

    /// The amount.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Credits {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        if value <= 0 {
            return Err("must be a whole number above 0".into());
        }
        if value > MAX_CREDITS {
            return Err(at_most_max());
        }
        Ok(Credits(value))
    }
}

/// An integer schema from `minimum` to `maximum`.
fn integer_schema(
    minimum: i64,
    maximum: i64,
) -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
    utoipa::openapi::ObjectBuilder::new()
        .schema_type(utoipa::openapi::schema::Type::Integer)
        .format(Some(utoipa::openapi::SchemaFormat::KnownFormat(
            utoipa::openapi::KnownFormat::Int64,
        )))
        .minimum(Some(minimum as f64))
        .maximum(Some(maximum as f64))
        .into()
}

impl utoipa::PartialSchema for Credits {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        integer_schema(1, MAX_CREDITS)
    }
}
impl utoipa::ToSchema for Credits {}

impl utoipa::PartialSchema for Charge {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        integer_schema(0, MAX_CREDITS)
    }
}
impl utoipa::ToSchema for Charge {}

impl utoipa::PartialSchema for Adjustment {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        integer_schema(-MAX_CREDITS, MAX_CREDITS)
    }
}
impl utoipa::ToSchema for Adjustment {}

impl From<Credits> for i64 {
    fn from(c: Credits) -> i64 {
        c.0
    }
}

/// What a settlement charges: 0 to [`MAX_CREDITS`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Charge(i64);

impl Charge {
    /// Nothing.
    pub const ZERO: Charge = Charge(0);

    /// A computed cost, capped at [`MAX_CREDITS`] (a cost is never negative).
    pub fn capped(value: i64) -> Charge {
        Charge(value.clamp(0, MAX_CREDITS))
    }

    /// The amount.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Charge {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        if !(0..=MAX_CREDITS).contains(&value) {
            return Err(format!("must be a whole number from 0 to {MAX_CREDITS}"));
        }
        Ok(Charge(value))
    }
}

impl From<Charge> for i64 {
    fn from(c: Charge) -> i64 {
        c.0
    }
}

/// An admin's signed correction: not 0, magnitude at most [`MAX_CREDITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Adjustment(i64);

impl Adjustment {
    /// The signed amount.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Adjustment {
    type Error = String;
    fn try_from(value: i64) -> Result<Self, String> {
        // `unsigned_abs`: `i64::MIN` has no positive counterpart.
        if value == 0 || value.unsigned_abs() > MAX_CREDITS as u64 {
            return Err(format!(
                "must be a non-zero whole number between -{MAX_CREDITS} and {MAX_CREDITS}"
            ));
        }
        Ok(Adjustment(value))
    }
}

impl From<Adjustment> for i64 {
    fn from(a: Adjustment) -> i64 {
        a.0
    }
}

/// The kind of a ledger entry (the `type` column of `credit_transactions`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    /// Credits granted.
    Allocation,
    /// Credits spent.
    Deduction,
    /// Reserved credits returned.
    Refund,
    /// Credits held for a streaming prediction.
    Reservation,
    /// A reservation's excess charge.
    Settlement,
    /// Credits lost to an allocation's expiry.
    Expiry,
    /// An admin's correction (either sign).
    Adjustment,
    /// An allocation brought from the platform (`gateway-admin
    /// import-platform`): its total, as it was granted there.
    Import,
    /// Credits moved from a team's wallet to a member: negative on the
    /// wallet, positive on the member, both with the same `transfer_id`.
    Transfer,
    /// Unspent team credits taken back from a member to the wallet.
    Reclaim,
    /// A role's allowance: credits the system grants every period.
    Allowance,
}

impl EntryKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Allocation => "allocation",
            EntryKind::Deduction => "deduction",
            EntryKind::Refund => "refund",
            EntryKind::Reservation => "reservation",
            EntryKind::Settlement => "settlement",
            EntryKind::Expiry => "expiry",
            EntryKind::Adjustment => "adjustment",
            EntryKind::Import => "import",
            EntryKind::Transfer => "transfer",
            EntryKind::Reclaim => "reclaim",
            EntryKind::Allowance => "allowance",
        }
    }
}

impl std::str::FromStr for EntryKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!(
                "{s:?} is not one of allocation, deduction, refund, reservation, \
                 settlement, expiry, adjustment, import, transfer, reclaim, allowance"
            )
        })
    }
}

/// An allocation as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Allocation {
    /// Id.
    pub id: Uuid,
    /// Credits granted.
    pub credits: i64,
    /// Credits left.
    pub remaining: i64,
    /// When it expires (`None`: never).
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was granted.
    pub allocated_at: DateTime<Utc>,
    /// Who granted it: their username when the ledger knows it, else
    /// their id (`system` for the gateway itself).
    #[serde(default)]
    pub granted_by: String,
}

/// Who changed the ledger, and why: stored on the entry.
#[derive(Debug, Clone, Copy, Default)]
pub struct EntryMeta<'a> {
    /// The user or system that made the change.
    pub actor_id: Option<&'a str>,
    /// Free text.
    pub description: Option<&'a str>,
    /// Caller's reference (an order id, a chat session id...).
    pub reference: Option<&'a str>,
    /// The idempotency key the request carried.
    pub idempotency_key: Option<&'a str>,
    /// The reservation the change belongs to.
    pub reservation_id: Option<&'a str>,
    /// The API key the change was made with.
    pub api_key_id: Option<uuid::Uuid>,
    /// The transfer (or reclaim) between a team's wallet and a member
    /// that the entry is one side of.
    pub transfer_id: Option<uuid::Uuid>,
}

/// Why a ledger operation refused or failed. None names a request field;
/// [`LedgerError::naming`] lets the handler add the one it knows.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The balance does not cover the amount.
    #[error("insufficient credits: {needed} credits needed, {available} available")]
    Insufficient {
        /// Credits the change needs.
        needed: i64,
        /// Credits the balance holds.
        available: i64,
    },
    /// The balance would pass [`MAX_CREDITS`].
    #[error(
        "the balance of {balance} plus {amount} would pass the highest balance, {MAX_CREDITS}"
    )]
    BalanceLimit {
        /// The balance.
        balance: i64,
        /// What was to be added.
        amount: i64,
    },
    /// A negative adjustment larger than the balance.
    #[error("the adjustment of {amount} exceeds the balance of {balance}")]
    WouldGoNegative {
        /// The adjustment.
        amount: i64,
        /// The balance.
        balance: i64,
    },
    /// The ledger has not seen this user.
    #[error("no credit account for user {0}")]
    NoAccount(UserId),
    /// No reservation has this id.
    #[error("no streaming session {0}")]
    NoReservation(ReservationId),
    /// Another user's reservation.
    #[error("this streaming session belongs to another user")]
    NotOwner,
    /// A reservation the gateway made, which only its prediction settles.
    #[error(
        "this reservation belongs to a prediction the gateway is making; \
         it is settled when the answer ends"
    )]
    GatewayReservation,
    /// The reservation is settled already.
    #[error("this answer has already finished")]
    AlreadySettled,
    /// The reservation id is in use with other values.
    #[error("streaming session {0} already exists with other values")]
    ReservationTaken(ReservationId),
    /// The account is disabled or deleted.
    #[error("this account is disabled")]
    AccountDisabled,
    /// 401: the access token was issued before its user signed out
    /// everywhere.
    #[error("this session ended when the account signed out everywhere; sign in again")]
    SessionEnded,
    /// A rate limit is reached.
    #[error("{message}")]
    RateLimited {
        /// Which limit, for a person.
        message: String,
        /// Seconds until a slot frees.
        retry_after: u64,
    },
    /// The API key's monthly allowance does not cover the amount.
    #[error(
        "this API key's monthly credit limit is reached: {needed} credits needed, {allowance} left this month"
    )]
    KeyLimit {
        /// Credits the change needs.
        needed: i64,
        /// What the key may still spend this month.
        allowance: i64,
    },
    /// No live team has this wallet.
    #[error("no such team")]
    NoTeam,
    /// A transfer or reclaim for someone who does not belong to the team.
    #[error("{0} is not a member of this team")]
    NotMember(UserId),
    /// A team's wallet does not cover a transfer.
    #[error("the team's wallet holds {available} credits, fewer than the {needed} asked for")]
    WalletShort {
        /// Credits the transfer needs.
        needed: i64,
        /// Credits the wallet holds.
        available: i64,
    },
    /// A reclaim asks for more than is unspent of what the team gave.
    #[error(
        "{unspent} credits of what this team gave are unspent, fewer than the {asked} asked for"
    )]
    ReclaimExceeds {
        /// Credits asked for.
        asked: i64,
        /// Credits that could be taken back.
        unspent: i64,
    },
    /// The database failed.
    #[error(transparent)]
    Store(#[from] sqlx::Error),
    /// A state the constraints should have made impossible.
    #[error("ledger inconsistency: {0}")]
    Inconsistent(String),
}

impl LedgerError {
    /// The API error, with `field` named where the refusal concerns one.
    pub fn naming(self, field: &str) -> ApiError {
        match self {
            LedgerError::BalanceLimit { .. } => ApiError::Unprocessable {
                code: "balance_limit",
                message: format!("{field}: {self}"),
            },
            other => other.into(),
        }
    }
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> ApiError {
        let message = err.to_string();
        let short = |code, needed, available| ApiError::PaymentRequired {
            code,
            message: message.clone(),
            needed,
            available,
            outlook: None,
        };
        let unprocessable = |code| ApiError::Unprocessable {
            code,
            message: message.clone(),
        };
        let forbidden = |code| ApiError::Forbidden {
            code,
            message: message.clone(),
        };
        let conflict = |code| ApiError::Conflict {
            code,
            message: message.clone(),
        };
        match err {
            LedgerError::Insufficient { needed, available } => {
                short("insufficient_credits", needed, available)
            }
            LedgerError::KeyLimit { needed, allowance } => {
                short("key_limit_reached", needed, allowance)
            }
            LedgerError::WalletShort { needed, available } => {
                short("team_insufficient_credits", needed, available)
            }
            LedgerError::ReclaimExceeds { .. } => unprocessable("reclaim_exceeds_unspent"),
            LedgerError::BalanceLimit { .. } => unprocessable("balance_limit"),
            LedgerError::WouldGoNegative { .. } => unprocessable("would_go_negative"),
            LedgerError::AccountDisabled => forbidden("account_disabled"),
            LedgerError::NotMember(_) => forbidden("not_team_member"),
            LedgerError::GatewayReservation => forbidden("gateway_reservation"),
            LedgerError::NotOwner => ApiError::forbidden(message),
            LedgerError::AlreadySettled => conflict("already_finished"),
            LedgerError::ReservationTaken(_) => conflict("session_exists"),
            LedgerError::SessionEnded => crate::token::session_ended(),
            LedgerError::RateLimited { retry_after, .. } => ApiError::TooManyRequests {
                code: "rate_limited",
                message,
                retry_after: Some(retry_after),
            },
            LedgerError::NoAccount(_) | LedgerError::NoReservation(_) | LedgerError::NoTeam => {
                ApiError::NotFound { message }
            }
            LedgerError::Store(e) => e.into(),
            LedgerError::Inconsistent(_) => ApiError::Internal(anyhow::anyhow!(message)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credits_must_be_positive_and_bounded() {
        assert!(Credits::parse("credits", 0).is_err());
        assert!(Credits::parse("credits", -5).is_err());
        assert!(Credits::parse("credits", MAX_CREDITS + 1).is_err());
        assert!(Credits::parse("credits", i64::MIN).is_err());
        assert!(Credits::parse("credits", i64::MAX).is_err());
        assert_eq!(
            Credits::parse("credits", MAX_CREDITS).unwrap().get(),
            MAX_CREDITS
        );
        assert_eq!(Credits::parse("credits", 7).unwrap().get(), 7);
        let err = Credits::parse("credits", 0).unwrap_err();
        assert!(err.to_string().starts_with("credits:"));
    }

    #[test]
    fn charges_and_adjustments_are_bounded_both_ways() {
        assert_eq!(Charge::try_from(0).unwrap(), Charge::ZERO);
        assert!(Charge::try_from(-1).is_err());
        assert!(Charge::try_from(MAX_CREDITS + 1).is_err());
        assert_eq!(Charge::capped(i64::MAX).get(), MAX_CREDITS);
        assert_eq!(Charge::capped(-3).get(), 0);
        assert!(Adjustment::try_from(0).is_err());
        assert!(Adjustment::try_from(i64::MIN).is_err());
        assert!(Adjustment::try_from(-MAX_CREDITS).is_ok());
        assert!(Adjustment::try_from(MAX_CREDITS + 1).is_err());
    }

    #[test]
    fn the_handler_names_the_field_of_a_balance_limit() {
        let err = LedgerError::BalanceLimit {
            balance: 1,
            amount: MAX_CREDITS,
        }
        .naming("credits");
        assert_eq!(err.code(), "balance_limit");
        assert!(err.to_string().starts_with("credits:"), "{err}");
        let err: ApiError = LedgerError::Insufficient {
            needed: 5,
            available: 2,
        }
        .into();
        assert_eq!(err.status(), 402);
    }

    #[test]
    fn entry_kinds_round_trip() {
        for kind in [
            "allocation",
            "deduction",
            "refund",
            "reservation",
            "settlement",
            "expiry",
            "adjustment",
            "import",
            "transfer",
            "reclaim",
            "allowance",
        ] {
            let parsed: EntryKind = kind.parse().unwrap();
            assert_eq!(parsed.as_str(), kind);
        }
        assert!("gift".parse::<EntryKind>().is_err());
    }
}
