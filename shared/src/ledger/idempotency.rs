//! `Idempotency-Key` (README §6): the same key with the same body has one
//! effect and returns the first answer; with another body it is 409.
//!
//! A change reads straight through: [`begin`] answers either a fresh
//! transaction (with the key claimed in it) or the stored answer; the
//! handler does its work in that transaction and [`save`]s its answer
//! there before committing. A second request with the key blocks on the
//! claim until the first commits, then reads the stored answer; if the
//! first rolled back (a 402, a 422), the key is free again.
//!
//! Predictions cannot hold a transaction across the call to Flowise, so
//! they use the key in two phases: [`claim`] inserts it `in_progress` in
//! the reservation's transaction, [`complete`] stores the answer in the
//! settlement's (or [`release`] frees it when nothing was charged). A
//! duplicate while the first runs is 409 `idempotency_in_progress`. Keys
//! are purged after [`KEY_RETENTION_HOURS`] by the scheduled job.

use axum::http::StatusCode;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use super::primitives::Tx;
use super::types::LedgerError;
use crate::error::ApiError;
use crate::ids::{ReservationId, UserId};

/// What a change answers: status and JSON body, stored for replays.
pub type Answer = (StatusCode, Value);

/// How long a key is kept (then the job purges it and it may be reused).
pub const KEY_RETENTION_HOURS: i32 = 24;

/// Seconds a client is asked to wait before retrying a request whose first
/// attempt is still running.
pub const IN_PROGRESS_RETRY_SECONDS: u64 = 5;

/// A request's key (checked at the edge) and the hash of what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestKey {
    /// The client's key.
    pub key: String,
    /// Hash of the endpoint and the body.
    pub hash: String,
}

impl RequestKey {
    /// The key of a request to `endpoint` with `body` (its keys sorted,
    /// an `idempotencyKey` field left out).
    pub fn new(key: String, endpoint: &str, body: &Value) -> Self {
        RequestKey {
            key,
            hash: request_hash(endpoint, body),
        }
    }
}

/// A stable hash of what a request asks for: the endpoint and the body
/// with its keys sorted (the `idempotencyKey` field itself left out).
pub fn request_hash(endpoint: &str, body: &Value) -> String {
    fn canonical(v: &Value, out: &mut String) {
        match v {
            Value::Object(map) => {
                let mut keys: Vec<&String> =
                    map.keys().filter(|k| *k != "idempotencyKey").collect();
                keys.sort();
                out.push('{');
                for (i, k) in keys.into_iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    out.push_str(&Value::String(k.clone()).to_string());
                    out.push(':');
                    canonical(&map[k], out);
                }
                out.push('}');
            }
            Value::Array(items) => {
                out.push('[');
                for (i, item) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    canonical(item, out);
                }
                out.push(']');
            }
            other => out.push_str(&other.to_string()),
        }
    }
    let mut text = String::from(endpoint);
    text.push('\n');
    canonical(body, &mut text);
    crate::digest::sha256_hex(text.as_bytes())
}

/// A stored key.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredKey {
    /// Hash of the first request.
    pub request_hash: String,
    /// `in_progress` or `done`.
    pub state: String,
    /// The first answer's status (0 while in progress).
    pub status_code: i16,
    /// The first answer (`null` while in progress).
    pub response: Value,
}

impl StoredKey {
    /// What a request with `hash` gets when this key is already stored: the
    /// first answer, 409 `idempotency_in_progress` (with `Retry-After`)
    /// while the first runs, 409 `idempotency_key_reused` for another body.
    pub fn replay(self, hash: &str) -> Result<Answer, ApiError> {
        if self.request_hash != hash {
            return Err(ApiError::Conflict {
                code: "idempotency_key_reused",
                message: "this Idempotency-Key was used with a different request".into(),
            });
        }
        if self.state != "done" {
            return Err(in_progress("a request with this Idempotency-Key is still running; retry shortly for its answer"));
        }
        let status = StatusCode::from_u16(self.status_code as u16).unwrap_or(StatusCode::OK);
        Ok((status, self.response))
    }
}

fn in_progress(message: &str) -> ApiError {
    ApiError::Busy {
        code: "idempotency_in_progress",
        message: message.into(),
        retry_after: IN_PROGRESS_RETRY_SECONDS,
    }
}

/// How [`begin`] found the key.
pub enum Begun<'c> {
    /// Not used before: do the work in this transaction (the key is
    /// claimed in it), [`save`] the answer, commit.
    Fresh(Tx<'c>),
    /// The first answer of this key and body.
    Replay(Answer),
}

/// Starts a change that honours `key`: a fresh transaction with the key
/// claimed, or the stored answer (409 for another body). Without a key it
/// simply opens the transaction.
pub async fn begin(
    pool: &PgPool,
    user: &UserId,
    key: Option<&RequestKey>,
    endpoint: &str,
) -> Result<Begun<'static>, ApiError> {
    let mut tx = super::primitives::begin(pool, super::Durability::Flushed).await?;
    let Some(key) = key else {
        return Ok(Begun::Fresh(tx));
    };
    if insert_key(&mut tx, user, key, endpoint, None).await? {
        return Ok(Begun::Fresh(tx));
    }
    let stored = lookup(&mut tx, user, &key.key).await?;
    tx.rollback().await?;
    match stored {
        Some(stored) => stored.replay(&key.hash).map(Begun::Replay),
        // Purged between the insert and the read: try again.
        None => Err(in_progress("this Idempotency-Key is being recycled; retry")),
    }
}

/// Stores the answer of the change [`begin`] started, in its transaction.
pub async fn save(
    tx: &mut Tx<'_>,
    user: &UserId,
    key: Option<&RequestKey>,
    answer: &Answer,
) -> Result<(), ApiError> {
    if let Some(key) = key {
        complete(tx, user, key, None, answer).await?;
    }
    Ok(())
}

/// Inserts the key `in_progress`; false when it exists (a concurrent
/// insert waits until the first transaction ends).
async fn insert_key(
    tx: &mut Tx<'_>,
    user: &UserId,
    key: &RequestKey,
    endpoint: &str,
    reservation: Option<&ReservationId>,
) -> Result<bool, LedgerError> {
    let inserted = sqlx::query!(
        "INSERT INTO idempotency_keys
            (user_id, key, endpoint, request_hash, status_code, response, state, reservation_id)
         VALUES ($1, $2, $3, $4, 0, 'null'::json, 'in_progress', $5) ON CONFLICT DO NOTHING",
        user.as_str(),
        key.key,
        endpoint,
        key.hash,
        reservation.map(ReservationId::as_str),
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(inserted == 1)
}

/// The stored key `(user, key)`, if any.
pub async fn lookup(
    conn: &mut PgConnection,
    user: &UserId,
    key: &str,
) -> Result<Option<StoredKey>, LedgerError> {
    Ok(sqlx::query_as!(
        StoredKey,
        "SELECT request_hash, state, status_code, response FROM idempotency_keys
          WHERE user_id = $1 AND key = $2",
        user.as_str(),
        key
    )
    .fetch_optional(conn)
    .await?)
}

/// Phase one: claims `key` as `in_progress` for the reservation
/// `reservation`, inside the reservation's transaction. `None` when
/// claimed; the stored key when another request holds it (the caller rolls
/// back and answers [`StoredKey::replay`]).
pub async fn claim(
    tx: &mut Tx<'_>,
    user: &UserId,
    key: &RequestKey,
    endpoint: &str,
    reservation: &ReservationId,
) -> Result<Option<StoredKey>, LedgerError> {
    if insert_key(tx, user, key, endpoint, Some(reservation)).await? {
        return Ok(None);
    }
    lookup(tx, user, &key.key).await
}

/// An answer as the text the `json` column keeps. Sent as text, not as a
/// JSON value: sqlx sends a value as `jsonb`, which refuses U+0000 before
/// the column could take it.
fn json_text(answer: &Value) -> String {
    answer.to_string()
}

/// Phase two: stores the answer of a claimed key.
pub async fn complete(
    tx: &mut Tx<'_>,
    user: &UserId,
    key: &RequestKey,
    reservation: Option<&ReservationId>,
    (status, body): &Answer,
) -> Result<(), LedgerError> {
    // A prediction completes only its own claim: should the sweep have
    // settled it and a retry claimed the key anew, the retry's is not ours.
    sqlx::query!(
        "UPDATE idempotency_keys SET state = 'done', status_code = $3, response = $4::text::json
          WHERE user_id = $1 AND key = $2 AND ($5::text IS NULL OR reservation_id = $5)",
        user.as_str(),
        key.key,
        status.as_u16() as i16,
        json_text(body),
        reservation.map(ReservationId::as_str),
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Frees the key the prediction `reservation` claimed, when its request
/// charged nothing, so a retry runs anew (another claim of the key is left
/// alone).
pub async fn release(
    tx: &mut Tx<'_>,
    user: &UserId,
    key: &RequestKey,
    reservation: &ReservationId,
) -> Result<(), LedgerError> {
    sqlx::query!(
        "DELETE FROM idempotency_keys
          WHERE user_id = $1 AND key = $2 AND state = 'in_progress' AND reservation_id = $3",
        user.as_str(),
        key.key,
        reservation.as_str()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Frees the in-progress key of a reservation the sweep released (its
/// prediction died before settling, and was charged nothing).
pub async fn release_for_reservation(
    tx: &mut Tx<'_>,
    reservation: &ReservationId,
) -> Result<(), LedgerError> {
    sqlx::query!(
        "DELETE FROM idempotency_keys WHERE reservation_id = $1 AND state = 'in_progress'",
        reservation.as_str()
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Completes the in-progress key of a reservation the sweep charged (its
/// prediction died after an answer may have gone out) with `answer`, so a
/// retry replays it instead of paying a second time.
pub async fn complete_for_reservation(
    tx: &mut Tx<'_>,
    reservation: &ReservationId,
    answer: &Value,
) -> Result<(), LedgerError> {
    sqlx::query!(
        "UPDATE idempotency_keys SET state = 'done', status_code = 200, response = $2::text::json
          WHERE reservation_id = $1 AND state = 'in_progress'",
        reservation.as_str(),
        json_text(answer)
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes keys older than [`KEY_RETENTION_HOURS`], `batch` at a time;
/// returns how many went.
pub async fn purge_old_keys(pool: &PgPool, batch: i64) -> Result<u64, LedgerError> {
    let mut purged = 0;
    loop {
        let done = sqlx::query!(
            "DELETE FROM idempotency_keys WHERE ctid IN (
                 SELECT ctid FROM idempotency_keys
                  WHERE created_at < now() - make_interval(hours => $1)
                  LIMIT $2 FOR UPDATE SKIP LOCKED)",
            KEY_RETENTION_HOURS,
            batch
        )
        .execute(pool)
        .await?
        .rows_affected();
        purged += done;
        if (done as i64) < batch {
            return Ok(purged);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_hash_ignores_key_order_and_the_key_field() {
        let a = request_hash("POST /x", &json!({"a": 1, "b": {"c": 2, "d": [1, 2]}}));
        let b = request_hash(
            "POST /x",
            &json!({"b": {"d": [1, 2], "c": 2}, "idempotencyKey": "k", "a": 1}),
        );
        assert_eq!(a, b);
        assert_ne!(
            a,
            request_hash("POST /x", &json!({"a": 2, "b": {"c": 2, "d": [1, 2]}}))
        );
        assert_ne!(
            a,
            request_hash("POST /y", &json!({"a": 1, "b": {"c": 2, "d": [1, 2]}}))
        );
    }
}
