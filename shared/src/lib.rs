//! The library every function shares: configuration and secrets, JWT
//! verification and roles, the API error format, HTTP plumbing, logging,
//! and the store clients. Later: the credit ledger, pricing and the
//! Flowise client (their issues add them here so that every function uses
//! the very same code).

pub mod config;
pub mod db;
pub mod error;
pub mod http;
pub mod secrets;
pub mod telemetry;
pub mod token;

#[cfg(feature = "test-util")]
pub mod testing;

pub use error::ApiError;

/// The error type of a function's `main`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
