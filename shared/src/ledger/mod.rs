//! The credit ledger (SPEC §6, §9): the one place credits change.
//!
//! Every change is one PostgreSQL transaction that first locks the user's
//! `user_accounts` row (`FOR UPDATE`). That single lock, always taken
//! first, serialises all changes to one user's credits, so there is no
//! check-then-act race and no lock-order deadlock; changes to different
//! users run in parallel. Inside the lock a change:
//!
//! 1. expires the user's allocations whose `expires_at` has passed (the
//!    same code the expiry job runs, so `total_credits` never includes
//!    credits that are no longer spendable when a change is made);
//! 2. reads and updates the allocations it needs;
//! 3. writes one `credit_transactions` row per change with the balance
//!    after it, and keeps `user_accounts.total_credits` equal to the sum of
//!    unexpired `remaining`.
//!
//! So, at every commit: `total_credits` = Σ `remaining` (unexpired) =
//! Σ `amount` of the user's transactions, and database constraints reject
//! any state with a negative or over-full allocation or a negative balance.
//! Debits record which allocations they drew from (`credit_draws`), so a
//! refund returns credits exactly there and never extends an expiry.

pub mod accounts;
pub mod expiry;
pub mod idempotency;
pub mod ops;
pub mod queries;
pub mod reservations;

use serde::{Deserialize, Serialize};

use crate::error::ApiError;

/// The most credits one amount may hold, and the highest balance: 2^53 − 1
/// (JavaScript's `Number.MAX_SAFE_INTEGER`), so every client reads every
/// amount and balance exactly. Sums of two such amounts stay far from
/// `i64` overflow.
pub const MAX_CREDITS: i64 = 9_007_199_254_740_991;

/// A positive whole number of credits, checked at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct Credits(i64);

impl Credits {
    /// Checks `value` as the field `field`: 1 to [`MAX_CREDITS`].
    pub fn parse(field: &str, value: i64) -> Result<Self, ApiError> {
        if value <= 0 {
            return Err(ApiError::invalid_field(
                field,
                "must be a whole number above 0",
            ));
        }
        if value > MAX_CREDITS {
            return Err(ApiError::invalid_field(
                field,
                format!("must be at most {MAX_CREDITS}"),
            ));
        }
        Ok(Credits(value))
    }

    /// The amount.
    pub fn get(self) -> i64 {
        self.0
    }
}

/// The kind of a ledger transaction (the `type` column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransactionKind {
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
}

impl TransactionKind {
    /// The stored name.
    pub fn as_str(self) -> &'static str {
        match self {
            TransactionKind::Allocation => "allocation",
            TransactionKind::Deduction => "deduction",
            TransactionKind::Refund => "refund",
            TransactionKind::Reservation => "reservation",
            TransactionKind::Settlement => "settlement",
            TransactionKind::Expiry => "expiry",
            TransactionKind::Adjustment => "adjustment",
        }
    }
}

impl std::str::FromStr for TransactionKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        serde_json::from_value(serde_json::Value::String(s.to_owned())).map_err(|_| {
            format!(
                "{s:?} is not one of allocation, deduction, refund, reservation, \
                 settlement, expiry, adjustment"
            )
        })
    }
}

/// 422 `balance_limit`: adding `amount` (the field `field`) to `balance`
/// would pass [`MAX_CREDITS`].
fn check_balance_limit(field: &str, balance: i64, amount: i64) -> Result<(), ApiError> {
    if balance
        .checked_add(amount)
        .is_none_or(|sum| sum > MAX_CREDITS)
    {
        return Err(ApiError::Unprocessable {
            code: "balance_limit",
            message: format!(
                "{field}: the balance of {balance} plus {amount} would pass the highest balance, {MAX_CREDITS}"
            ),
        });
    }
    Ok(())
}

fn insufficient(needed: i64, available: i64) -> ApiError {
    ApiError::InsufficientCredits {
        message: format!("{needed} credits needed, {available} available"),
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
    fn a_balance_never_passes_two_to_the_53rd() {
        assert!(check_balance_limit("credits", 0, MAX_CREDITS).is_ok());
        let err = check_balance_limit("credits", 1, MAX_CREDITS).unwrap_err();
        assert_eq!(err.code(), "balance_limit");
        assert!(err.to_string().starts_with("credits:"), "{err}");
        assert!(check_balance_limit("amount", i64::MAX, 1).is_err());
    }

    #[test]
    fn transaction_kinds_round_trip() {
        for kind in [
            "allocation",
            "deduction",
            "refund",
            "reservation",
            "settlement",
            "expiry",
            "adjustment",
        ] {
            let parsed: TransactionKind = kind.parse().unwrap();
            assert_eq!(parsed.as_str(), kind);
        }
        assert!("gift".parse::<TransactionKind>().is_err());
    }
}
