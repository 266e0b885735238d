//! The credit ledger (README §6, §9): the one place credits change.
//!
//! Every change is one database transaction that first locks the user's
//! `user_accounts` row (`FOR UPDATE`). That single lock, always taken
//! first, serialises all changes to one user's credits, so there is no
//! check-then-act race and no lock-order deadlock; changes to different
//! users run in parallel. Inside the lock a change expires the user's due
//! allocations, reads and updates the allocations it needs, writes one
//! *entry* (a `credit_transactions` row) per change with the balance after
//! it, and keeps `user_accounts.total_credits` equal to the sum of
//! unexpired `remaining`. So, at every commit: `total_credits` =
//! Σ `remaining` (unexpired) = Σ `amount` of the user's entries, and the
//! database's constraints reject any state with a negative or over-full
//! allocation, a negative balance, or one past 2^53 − 1. Debits record
//! which allocations they drew from (`credit_draws`), so a refund returns
//! credits exactly there and never extends an expiry.
//!
//! The modules depend one way (a test checks there is no circle):
//!
//! ```text
//! types ← primitives ← changes
//!              ↑    ← reservations ← sweep
//!              ↑    ← idempotency  ←┘
//!              ↑    ← transfers ← allowances
//! accounts, queries: types and primitives only
//! limits: types, primitives and accounts
//! ```

pub mod accounts;
pub mod allowances;
pub mod changes;
pub mod idempotency;
pub mod limits;
pub mod primitives;
pub mod queries;
pub mod reservations;
pub mod sweep;
pub mod transfers;
pub mod types;

pub use primitives::{Durability, Tx};
pub use types::{
    Adjustment, Allocation, Charge, Credits, EntryKind, EntryMeta, LedgerError, MAX_CREDITS,
};
