//! Store clients, built once per cold start: PostgreSQL for accounting,
//! MongoDB for accounts and chat.

pub mod batch;
pub mod mongo;
pub mod postgres;
