//! The auth function's handlers.

pub mod account;
pub mod admin;
pub mod profile;
