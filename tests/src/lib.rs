//! End-to-end harness: the real function binaries behind a Lambda emulator
//! (the Runtime API they poll in production, and a function-URL front like
//! `cargo lambda watch`'s), with fresh PostgreSQL and MongoDB databases for
//! every test. Scenarios live in `tests/`.

pub mod lambda;
pub mod platform;
pub mod routes;
pub mod stack;
pub mod wire;

pub use stack::{Stack, StackOptions, ALL_FUNCTIONS, HTTP_FUNCTIONS};
