//! The library every function shares: configuration and secrets, JWT
//! verification and roles, the API error format, HTTP plumbing, logging,
//! the store clients, the credit ledger and pricing, so that every function
//! (the predict functions included) uses the very same code.

pub mod chat;
pub mod config;
pub mod db;
pub mod digest;
pub mod error;
pub mod flowise;
pub mod http;
pub mod identity;
pub mod ids;
pub mod keys;
pub mod ledger;
pub mod mail;
pub mod notices;
pub mod openapi;
pub mod prediction;
pub mod pricing;
pub mod query;
pub mod secrets;
pub mod state;
pub mod teams;
pub mod telemetry;
pub mod token;
pub mod usage;

#[cfg(feature = "stand-in")]
pub mod flowise_double;
#[cfg(feature = "test-util")]
pub mod testing;

pub use error::ApiError;

/// The error type of a function's `main`.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
