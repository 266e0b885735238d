//! The `chat` database (README §8, §10): the chatflow catalogue and its
//! access control, chat sessions and messages, and stored files. The
//! predict functions use it; the scheduled job uses the chatflow sync.

pub mod chatflows;
pub mod files;
pub mod sessions;

/// Milliseconds since the epoch as BSON time.
pub(crate) fn now() -> bson::DateTime {
    bson::DateTime::now()
}
