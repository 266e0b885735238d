//! `Idempotency-Key` (SPEC §6): the same key with the same body has one
//! effect and returns the first result; with another body it is 409.
//!
//! The key row is inserted in the same transaction as the effect. A second
//! request with the key blocks on that insert until the first commits,
//! then reads the stored result; if the first rolled back (an error such
//! as 402), the key is free again and the retry runs normally.
//!
//! Predictions cannot hold a transaction across the call to Flowise, so
//! they use the key in two phases: [`claim`] inserts it `in_progress` in
//! the reservation's transaction, [`complete`] stores the answer in the
//! settlement's (or [`release`] frees it when nothing was charged). A
//! duplicate while the first runs is 409 `idempotency_in_progress`. Keys
//! are purged after [`KEY_RETENTION_HOURS`] by the scheduled job.

use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::error::ApiError;

/// What an effect answers: status and JSON body, stored for replays.
pub type Answer = (StatusCode, Value);

/// How long a key is kept (then the job purges it and it may be reused).
pub const KEY_RETENTION_HOURS: i64 = 24;

/// Seconds a client is asked to wait before retrying a request whose first
/// attempt is still running.
pub const IN_PROGRESS_RETRY_SECONDS: u64 = 5;

/// A stored key.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
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
            return Err(key_reused());
        }
        if self.state != "done" {
            return Err(ApiError::Busy {
                code: "idempotency_in_progress",
                message: "a request with this Idempotency-Key is still running; \
                          retry shortly for its answer"
                    .into(),
                retry_after: IN_PROGRESS_RETRY_SECONDS,
            });
        }
        let status = StatusCode::from_u16(self.status_code as u16).unwrap_or(StatusCode::OK);
        Ok((status, self.response))
    }
}

fn key_reused() -> ApiError {
    ApiError::Conflict {
        code: "idempotency_key_reused",
        message: "this Idempotency-Key was used with a different request".into(),
    }
}

/// The stored key `(user_id, key)`, if any.
pub async fn lookup(
    conn: &mut PgConnection,
    user_id: &str,
    key: &str,
) -> Result<Option<StoredKey>, ApiError> {
    Ok(sqlx::query_as(
        "SELECT request_hash, state, status_code, response FROM idempotency_keys
          WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(key)
    .fetch_optional(conn)
    .await?)
}

/// Phase one: claims `key` as `in_progress` for the reservation
/// `reservation_id`, inside the reservation's transaction. `None` when
/// claimed; the stored key when another request holds it (the caller rolls
/// back and answers [`StoredKey::replay`]). A concurrent claimer waits on
/// the first one's insert until it commits or rolls back.
pub async fn claim(
    conn: &mut PgConnection,
    user_id: &str,
    key: &str,
    endpoint: &str,
    hash: &str,
    reservation_id: &str,
) -> Result<Option<StoredKey>, ApiError> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys
            (user_id, key, endpoint, request_hash, status_code, response, state, reservation_id)
         VALUES ($1, $2, $3, $4, 0, 'null'::jsonb, 'in_progress', $5) ON CONFLICT DO NOTHING",
    )
    .bind(user_id)
    .bind(key)
    .bind(endpoint)
    .bind(hash)
    .bind(reservation_id)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(None);
    }
    lookup(conn, user_id, key).await
}

/// Phase two: stores the answer of a claimed key, in the settlement's
/// transaction.
pub async fn complete(
    conn: &mut PgConnection,
    user_id: &str,
    key: &str,
    (status, body): &Answer,
) -> Result<(), ApiError> {
    sqlx::query(
        "UPDATE idempotency_keys SET state = 'done', status_code = $3, response = $4
          WHERE user_id = $1 AND key = $2",
    )
    .bind(user_id)
    .bind(key)
    .bind(status.as_u16() as i16)
    .bind(body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Frees a claimed key whose request charged nothing, so a retry runs anew.
pub async fn release(conn: &mut PgConnection, user_id: &str, key: &str) -> Result<(), ApiError> {
    sqlx::query(
        "DELETE FROM idempotency_keys WHERE user_id = $1 AND key = $2 AND state = 'in_progress'",
    )
    .bind(user_id)
    .bind(key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Frees the in-progress key of a reservation the sweep released (its
/// prediction died before settling, and was charged nothing).
pub async fn release_for_reservation(
    conn: &mut PgConnection,
    reservation_id: &str,
) -> Result<(), ApiError> {
    sqlx::query("DELETE FROM idempotency_keys WHERE reservation_id = $1 AND state = 'in_progress'")
        .bind(reservation_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes keys older than [`KEY_RETENTION_HOURS`], `batch` at a time;
/// returns how many went.
pub async fn purge_old_keys(pool: &PgPool, batch: i64) -> Result<u64, ApiError> {
    let mut purged = 0;
    loop {
        let done = sqlx::query(
            "DELETE FROM idempotency_keys WHERE ctid IN (
                 SELECT ctid FROM idempotency_keys
                  WHERE created_at < now() - make_interval(hours => $1::int)
                  LIMIT $2 FOR UPDATE SKIP LOCKED)",
        )
        .bind(KEY_RETENTION_HOURS as i32)
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected();
        purged += done;
        if (done as i64) < batch {
            return Ok(purged);
        }
    }
}

/// Checks a client's key: 1 to 255 visible ASCII characters.
pub fn parse_key(raw: &str) -> Result<String, ApiError> {
    let key = raw.trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::invalid_field(
            "Idempotency-Key",
            "must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(key.to_owned())
}

/// The key of a request: the `Idempotency-Key` header, else the body's
/// `idempotencyKey` field. Both at once must agree.
pub fn request_key(
    headers: &axum::http::HeaderMap,
    body: &Value,
) -> Result<Option<String>, ApiError> {
    let header = match headers.get("idempotency-key") {
        Some(v) => Some(parse_key(v.to_str().map_err(|_| {
            ApiError::invalid_field("Idempotency-Key", "must be visible ASCII")
        })?)?),
        None => None,
    };
    let field = match body.get("idempotencyKey") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(parse_key(s).map_err(|_| {
            ApiError::invalid_field(
                "idempotencyKey",
                "must be 1 to 255 visible ASCII characters",
            )
        })?),
        Some(_) => {
            return Err(ApiError::invalid_field(
                "idempotencyKey",
                "must be a string",
            ))
        }
    };
    match (header, field) {
        (Some(h), Some(f)) if h != f => Err(ApiError::invalid_field(
            "idempotencyKey",
            "differs from the Idempotency-Key header",
        )),
        (h, f) => Ok(h.or(f)),
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

/// Runs `effect` in one transaction, at most once per `(user_id, key)`.
/// Without a key it simply runs. With a key already used: the stored
/// answer when the request hash matches, else 409 `idempotency_key_reused`.
pub async fn run_once<F>(
    pool: &PgPool,
    user_id: &str,
    key: Option<&str>,
    endpoint: &str,
    hash: &str,
    effect: F,
) -> Result<Answer, ApiError>
where
    F: for<'c> FnOnce(&'c mut PgConnection) -> BoxFuture<'c, Result<Answer, ApiError>>,
{
    let mut tx = pool.begin().await?;
    if let Some(key) = key {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (user_id, key, endpoint, request_hash, status_code, response)
             VALUES ($1, $2, $3, $4, 0, 'null'::jsonb) ON CONFLICT DO NOTHING",
        )
        .bind(user_id)
        .bind(key)
        .bind(endpoint)
        .bind(hash)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if inserted == 0 {
            let stored = lookup(&mut tx, user_id, key).await?;
            tx.rollback().await?;
            return match stored {
                Some(stored) => stored.replay(hash),
                // Purged between the insert and the read: try again.
                None => Err(ApiError::Busy {
                    code: "idempotency_in_progress",
                    message: "this Idempotency-Key is being recycled; retry".into(),
                    retry_after: 1,
                }),
            };
        }
    }
    let (status, body) = effect(&mut tx).await?;
    if let Some(key) = key {
        sqlx::query(
            "UPDATE idempotency_keys SET status_code = $3, response = $4
              WHERE user_id = $1 AND key = $2",
        )
        .bind(user_id)
        .bind(key)
        .bind(status.as_u16() as i16)
        .bind(&body)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok((status, body))
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

    #[test]
    fn keys_come_from_the_header_or_the_body_and_must_agree() {
        let mut headers = axum::http::HeaderMap::new();
        assert_eq!(request_key(&headers, &json!({})).unwrap(), None);
        assert_eq!(
            request_key(&headers, &json!({"idempotencyKey": "b1"}))
                .unwrap()
                .as_deref(),
            Some("b1")
        );
        headers.insert("idempotency-key", "h1".parse().unwrap());
        assert_eq!(
            request_key(&headers, &json!({})).unwrap().as_deref(),
            Some("h1")
        );
        assert!(request_key(&headers, &json!({"idempotencyKey": "b1"})).is_err());
        assert!(request_key(&axum::http::HeaderMap::new(), &json!({"idempotencyKey": 5})).is_err());
        assert!(parse_key("has space").is_err());
        assert!(parse_key(&"k".repeat(256)).is_err());
    }
}
