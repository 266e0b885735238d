//! `Idempotency-Key` (SPEC §6): the same key with the same body has one
//! effect and returns the first result; with another body it is 409.
//!
//! The key row is inserted in the same transaction as the effect. A second
//! request with the key blocks on that insert until the first commits,
//! then reads the stored result; if the first rolled back (an error such
//! as 402), the key is free again and the retry runs normally.

use axum::http::StatusCode;
use futures_util::future::BoxFuture;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};

use crate::error::ApiError;

/// What an effect answers: status and JSON body, stored for replays.
pub type Answer = (StatusCode, Value);

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
            let (stored_hash, status, response): (String, i16, Value) = sqlx::query_as(
                "SELECT request_hash, status_code, response FROM idempotency_keys
                  WHERE user_id = $1 AND key = $2",
            )
            .bind(user_id)
            .bind(key)
            .fetch_one(&mut *tx)
            .await?;
            tx.rollback().await?;
            if stored_hash != hash {
                return Err(ApiError::Conflict {
                    code: "idempotency_key_reused",
                    message: "this Idempotency-Key was used with a different request".into(),
                });
            }
            let status = StatusCode::from_u16(status as u16).unwrap_or(StatusCode::OK);
            return Ok((status, response));
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
