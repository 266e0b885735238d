//! A prediction, in the order of SPEC §8: (1) the JWT and the chatflow,
//! (2) the session, (3) the price, reserved in the ledger, (4) the call to
//! Flowise, (5) settlement, history and usage. The buffered route runs it
//! in one go; the streaming route runs (1)–(3) through [`prepare`] and
//! relays (4) as it arrives through [`relay_stream`].

use std::time::Instant;

use bson::doc;
use serde::Deserialize;
use serde_json::{json, Value};
use shared::chat::sessions::{self, NewMessage, SessionDoc};
use shared::chat::{chatflows, files};
use shared::error::ApiError;
use shared::flowise::{FlowiseError, Prediction, PredictionRequest, StreamEvent, TokenUsage};
use shared::ledger::accounts::ensure_account;
use shared::ledger::ops::Context;
use shared::ledger::reservations::{self, Settlement};
use shared::ledger::{queries, Credits};
use shared::pricing::{self, estimate_tokens, PricingRule};
use shared::token::AuthUser;

use crate::AppState;

/// Output tokens assumed when reserving, before the answer's length is
/// known. The reservation is the cost with this many output tokens, capped
/// at the user's balance as long as the balance covers the known part
/// (`perRequest` and the input); the settlement charges the actual cost,
/// and an excess over the reservation as far as the balance goes (the rest
/// is recorded as a shortfall).
pub const RESERVE_OUTPUT_TOKENS: i64 = 1_000;
/// The longest question accepted, in characters.
pub const MAX_QUESTION_CHARS: usize = 100_000;
/// The most `history` items accepted.
pub const MAX_HISTORY: usize = 100;
/// The most uploads in one prediction.
pub const MAX_UPLOADS: usize = 10;

/// One `history` item, as Flowise takes it.
#[derive(Debug, Clone, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryItem {
    /// `userMessage` or `apiMessage`.
    pub role: String,
    /// Text.
    pub content: String,
}

/// One `uploads` item: a stored file, or Flowise's own upload object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum UploadItem {
    /// A file this user stored (`POST /api/v1/chat/files`).
    Stored {
        /// Its id.
        file_id: String,
    },
    /// `{type, name, mime, data}` passed to Flowise as is.
    Inline {
        /// `file`, `url`, `file:full`, `file:rag` or `audio`.
        #[serde(rename = "type")]
        kind: String,
        /// Name.
        name: String,
        /// Content type.
        mime: String,
        /// Data URL, URL or text.
        data: String,
    },
}

/// The body of both prediction routes.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictBody {
    /// The chatflow.
    pub chatflow_id: String,
    /// The question.
    pub question: String,
    /// An existing session of this user (a new one when absent).
    pub session_id: Option<String>,
    /// Passed to Flowise (its `sessionId` is always ours).
    #[serde(rename = "overrideConfig")]
    pub override_config: Option<Value>,
    /// Prior turns to prepend.
    pub history: Option<Vec<HistoryItem>>,
    /// Files.
    pub uploads: Option<Vec<UploadItem>>,
}

/// Steps (1)–(3) done: what the call and the settlement need.
pub struct Prepared {
    /// The chatflow.
    pub chatflow_id: String,
    /// The session (not stored yet when `new_session`).
    pub session: SessionDoc,
    /// Whether the session is created by this prediction.
    pub new_session: bool,
    /// The user's message id.
    pub user_message_id: String,
    /// The answer's message id; also the reservation's id in the ledger.
    pub message_id: String,
    /// What goes to Flowise.
    pub request: PredictionRequest,
    /// The pricing rule applied.
    pub rule: PricingRule,
    /// Estimated input tokens (question and history).
    pub input_tokens: i64,
    /// Stored files sent.
    pub file_ids: Vec<String>,
    /// When the work started.
    pub started: Instant,
}

fn check_body(body: &PredictBody) -> Result<(), ApiError> {
    if body.chatflow_id.trim().is_empty() || body.chatflow_id.len() > 128 {
        return Err(ApiError::invalid_field(
            "chatflow_id",
            "must be 1 to 128 characters",
        ));
    }
    let chars = body.question.chars().count();
    if body.question.trim().is_empty() || chars > MAX_QUESTION_CHARS {
        return Err(ApiError::invalid_field(
            "question",
            format!("must be 1 to {MAX_QUESTION_CHARS} characters"),
        ));
    }
    if body
        .override_config
        .as_ref()
        .is_some_and(|v| !v.is_object())
    {
        return Err(ApiError::invalid_field(
            "overrideConfig",
            "must be an object",
        ));
    }
    if let Some(history) = &body.history {
        if history.len() > MAX_HISTORY {
            return Err(ApiError::invalid_field(
                "history",
                format!("at most {MAX_HISTORY} items"),
            ));
        }
        if history
            .iter()
            .any(|h| !matches!(h.role.as_str(), "userMessage" | "apiMessage"))
        {
            return Err(ApiError::invalid_field(
                "history",
                "role must be userMessage or apiMessage",
            ));
        }
    }
    if body.uploads.as_ref().is_some_and(|u| u.len() > MAX_UPLOADS) {
        return Err(ApiError::invalid_field(
            "uploads",
            format!("at most {MAX_UPLOADS} items"),
        ));
    }
    Ok(())
}

/// Steps (1)–(3): chatflow access (404/403), session ownership (403), the
/// price reserved in the ledger (402, with nothing sent to Flowise).
pub async fn prepare(
    state: &AppState,
    user: &AuthUser,
    body: PredictBody,
    request_id: &str,
) -> Result<Prepared, ApiError> {
    let started = Instant::now();
    check_body(&body)?;
    let db = &state.mongo.chat;
    chatflows::usable(db, &body.chatflow_id, user).await?;
    let (session, new_session) = match &body.session_id {
        Some(id) => {
            let session = sessions::owned(db, id, &user.id).await?;
            if session.chatflow_id != body.chatflow_id {
                return Err(ApiError::invalid_field(
                    "session_id",
                    "belongs to another chatflow",
                ));
            }
            (session, false)
        }
        // Stored only once the answer is paid for, with its messages.
        None => (
            sessions::new_session(&user.id, &body.chatflow_id, &body.question),
            true,
        ),
    };
    let mut uploads = Vec::new();
    let mut file_ids = Vec::new();
    for item in body.uploads.clone().unwrap_or_default() {
        match item {
            UploadItem::Stored { file_id } => {
                let file = files::owned(db, &file_id, &user.id).await?;
                uploads.push(file.to_upload());
                file_ids.push(file_id);
            }
            UploadItem::Inline {
                kind,
                name,
                mime,
                data,
            } => {
                if !matches!(
                    kind.as_str(),
                    "file" | "url" | "file:full" | "file:rag" | "audio"
                ) {
                    return Err(ApiError::invalid_field(
                        "uploads",
                        "type must be file, url, file:full, file:rag or audio",
                    ));
                }
                if data.len() > state.limits.max_upload_bytes * 4 / 3 + 64 {
                    return Err(ApiError::PayloadTooLarge {
                        message: "an upload is larger than MAX_UPLOAD_BYTES".into(),
                    });
                }
                uploads.push(json!({"type": kind, "name": name, "mime": mime, "data": data}));
            }
        }
    }
    let history_text: String = body
        .history
        .iter()
        .flatten()
        .map(|h| h.content.as_str())
        .collect::<Vec<_>>()
        .join("");
    let input_tokens = estimate_tokens(&body.question) + estimate_tokens(&history_text);
    let mut conn = state.pg.acquire().await?;
    let rule = pricing::rule_for(&mut conn, Some(&body.chatflow_id)).await?;
    let minimum = rule.cost(input_tokens, 0).credits.max(1);
    let balance = queries::total_balance(&mut conn, &user.id).await?;
    if balance < minimum {
        return Err(ApiError::InsufficientCredits {
            message: format!("{minimum} credits needed, {balance} available"),
        });
    }
    let estimate = rule
        .cost(input_tokens, RESERVE_OUTPUT_TOKENS)
        .credits
        .min(balance)
        .max(minimum);
    drop(conn);
    let message_id = uuid::Uuid::new_v4().to_string();
    let mut tx = state.pg.begin().await?;
    ensure_account(&mut tx, user).await?;
    reservations::reserve(
        &mut tx,
        &user.id,
        &message_id,
        &body.chatflow_id,
        Credits::parse("estimatedCredits", estimate)?,
        &Context {
            actor_id: Some(&user.id),
            idempotency_key: Some(request_id),
            description: Some("prediction"),
            reference: Some(&session.session_id),
            ..Context::default()
        },
    )
    .await?;
    tx.commit().await?;
    let request = PredictionRequest {
        question: body.question.clone(),
        session_id: session.session_id.clone(),
        override_config: body.override_config.clone(),
        history: body.history.as_ref().map(|h| json!(h)),
        uploads,
    };
    Ok(Prepared {
        chatflow_id: body.chatflow_id,
        session,
        new_session,
        user_message_id: uuid::Uuid::new_v4().to_string(),
        message_id,
        request,
        rule,
        input_tokens,
        file_ids,
        started,
    })
}

/// How a prediction ended, for settlement and history.
pub struct Outcome {
    /// The answer (partial when cut short).
    pub text: String,
    /// `complete` or `incomplete`.
    pub complete: bool,
    /// Credits to charge.
    pub charge: i64,
    /// Input and output tokens counted.
    pub tokens: TokenUsage,
    /// Sources, when Flowise gave them.
    pub source_documents: Option<Value>,
    /// Tools, when Flowise gave them.
    pub used_tools: Option<Value>,
    /// Why it failed, when it did.
    pub failure: Option<String>,
}

impl Outcome {
    /// A full answer, priced by the rule on the reported or estimated tokens.
    pub fn answered(prepared: &Prepared, prediction: Prediction) -> Outcome {
        let tokens = prediction.usage.unwrap_or(TokenUsage {
            input: prepared.input_tokens,
            output: estimate_tokens(&prediction.text),
        });
        Outcome {
            charge: prepared.rule.cost(tokens.input, tokens.output).credits,
            text: prediction.text,
            complete: true,
            tokens,
            source_documents: prediction.source_documents,
            used_tools: prediction.used_tools,
            failure: None,
        }
    }

    /// A stream cut short after `text` was delivered: `perRequest` plus the
    /// delivered output tokens, nothing when nothing was delivered.
    pub fn cut_short(prepared: &Prepared, text: String, failure: String) -> Outcome {
        let output = estimate_tokens(&text);
        let charge = if text.is_empty() {
            0
        } else {
            prepared.rule.cost(0, output).credits
        };
        Outcome {
            text,
            complete: false,
            charge,
            tokens: TokenUsage {
                input: prepared.input_tokens,
                output,
            },
            source_documents: None,
            used_tools: None,
            failure: Some(failure),
        }
    }
}

/// What the user is told about credits.
pub struct Charged {
    /// Credits charged.
    pub charged: i64,
    /// Balance after (`None` when it could not be read just then).
    pub balance: Option<i64>,
}

/// Step (5): settles the reservation (finalize for a complete answer,
/// abort for anything else), stores the messages, records usage.
pub async fn finish(
    state: &AppState,
    user: &AuthUser,
    prepared: &Prepared,
    outcome: &Outcome,
) -> Result<Charged, ApiError> {
    let how = if outcome.complete {
        Settlement::Finalize
    } else {
        Settlement::Abort
    };
    let mut tx = state.pg.begin().await?;
    let settled =
        reservations::settle(&mut tx, &prepared.message_id, &user.id, how, outcome.charge).await?;
    let latency_ms = prepared.started.elapsed().as_millis() as i64;
    shared::usage::record_usage(
        &mut tx,
        &user.id,
        "chat",
        &prepared.chatflow_id,
        settled.charged_credits,
        json!({
            "chatflow_id": prepared.chatflow_id,
            "session_id": prepared.session.session_id,
            "message_id": prepared.message_id,
            "input_tokens": outcome.tokens.input,
            "output_tokens": outcome.tokens.output,
            "latency_ms": latency_ms,
            "status": if outcome.complete { "complete" } else if outcome.text.is_empty() { "failed" } else { "incomplete" },
            "error": outcome.failure,
        }),
    )
    .await?;
    tx.commit().await?;
    // The answer is paid for: from here on nothing may turn it into an
    // error for the user. A history or balance read that fails is logged.
    let balance = {
        let read = async {
            let mut conn = state.pg.acquire().await?;
            queries::total_balance(&mut conn, &user.id).await
        };
        match read.await {
            Ok(balance) => Some(balance),
            Err(err) => {
                tracing::warn!(error = %err, "balance after a prediction not read");
                None
            }
        }
    };
    // History: a failure with nothing delivered stores nothing.
    if outcome.complete || !outcome.text.is_empty() {
        if let Err(err) = store_messages(
            state,
            prepared,
            outcome,
            settled.charged_credits,
            latency_ms,
        )
        .await
        {
            tracing::error!(error = %err, message_id = %prepared.message_id, "a paid answer was not stored in the history");
        }
    }
    Ok(Charged {
        charged: settled.charged_credits,
        balance,
    })
}

async fn store_messages(
    state: &AppState,
    prepared: &Prepared,
    outcome: &Outcome,
    charged: i64,
    latency_ms: i64,
) -> Result<(), ApiError> {
    let db = &state.mongo.chat;
    if prepared.new_session {
        sessions::insert(db, &prepared.session).await?;
    }
    for file_id in &prepared.file_ids {
        files::attach(db, file_id, &prepared.session.session_id).await?;
    }
    let mut metadata = doc! {
        "credits": charged,
        "input_tokens": outcome.tokens.input,
        "output_tokens": outcome.tokens.output,
        "latency_ms": latency_ms,
    };
    if let Some(sources) = &outcome.source_documents {
        metadata.insert(
            "sourceDocuments",
            bson::to_bson(sources).unwrap_or(bson::Bson::Null),
        );
    }
    if let Some(tools) = &outcome.used_tools {
        metadata.insert(
            "usedTools",
            bson::to_bson(tools).unwrap_or(bson::Bson::Null),
        );
    }
    if let Some(failure) = &outcome.failure {
        metadata.insert("error", failure.as_str());
    }
    sessions::append(
        db,
        &prepared.session,
        vec![
            NewMessage {
                message_id: prepared.user_message_id.clone(),
                role: "user",
                content: prepared.request.question.clone(),
                status: "complete",
                file_ids: prepared.file_ids.clone(),
                metadata: doc! {},
            },
            NewMessage {
                message_id: prepared.message_id.clone(),
                role: "assistant",
                content: outcome.text.clone(),
                status: if outcome.complete {
                    "complete"
                } else {
                    "incomplete"
                },
                file_ids: Vec::new(),
                metadata,
            },
        ],
    )
    .await
}

/// Releases the whole reservation after Flowise failed before answering
/// (the user pays nothing) and records the failure; returns the error to
/// answer with (502, or 504 for a timeout).
pub async fn fail(
    state: &AppState,
    user: &AuthUser,
    prepared: &Prepared,
    error: FlowiseError,
) -> ApiError {
    let outcome = Outcome::cut_short(prepared, String::new(), error.to_string());
    if let Err(settle_error) = finish(state, user, prepared, &outcome).await {
        tracing::error!(error = %settle_error, "a failed prediction could not be settled; the expiry job will release it");
    }
    ApiError::from(error)
}

/// One outgoing SSE frame: `event: <name>\ndata: <json>\n\n`.
pub fn sse_frame(event: &str, data: &Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

/// The events relayed to the client as they are; `error` is relayed with a
/// clean message (Flowise's own is logged); the rest (usage, agent
/// internals) are consumed here.
const RELAYED: &[&str] = &["start", "token", "metadata", "sourceDocuments", "usedTools"];

/// Step (4) streamed, then (5): relays Flowise's events into `tx` as they
/// arrive, after the `session` frame. A failed send means the client went
/// away: the reservation is then aborted with the cost of what was
/// delivered, and the partial answer stored as incomplete. The final `end`
/// frame carries the credits charged.
pub async fn relay_stream<S>(
    state: AppState,
    user: AuthUser,
    prepared: Prepared,
    mut events: S,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) where
    S: futures_util::Stream<Item = Result<StreamEvent, FlowiseError>> + Unpin,
{
    use futures_util::StreamExt;
    let mut text = String::new();
    let mut usage: Option<TokenUsage> = None;
    let (mut sources, mut tools) = (None, None);
    let mut failure: Option<String> = None;
    let mut client_gone = tx
        .send(sse_frame(
            "session",
            &json!({"session_id": prepared.session.session_id, "message_id": prepared.message_id}),
        ))
        .await
        .is_err();
    while !client_gone {
        let event = match events.next().await {
            None => break,
            Some(Err(e)) => {
                let message = e.to_string();
                let _ = tx
                    .send(sse_frame("error", &json!(public_stream_error(&e))))
                    .await;
                failure = Some(message);
                break;
            }
            Some(Ok(event)) => event,
        };
        match event.event.as_str() {
            "end" => break,
            "usageMetadata" => usage = TokenUsage::from_value(&event.data),
            "token" | "start" => {
                if let Some(piece) = event.data.as_str() {
                    text.push_str(piece);
                }
            }
            "sourceDocuments" => sources = Some(event.data.clone()),
            "usedTools" => tools = Some(event.data.clone()),
            "error" => {
                let detail = event
                    .data
                    .as_str()
                    .map(str::to_owned)
                    .unwrap_or_else(|| event.data.to_string());
                tracing::warn!(error = %detail, "Flowise reported an error inside the stream");
                failure = Some(detail);
                let data = json!(public_stream_error(&FlowiseError::Stream(String::new())));
                client_gone = tx.send(sse_frame("error", &data)).await.is_err();
            }
            _ => {}
        }
        if RELAYED.contains(&event.event.as_str()) {
            client_gone = tx.send(sse_frame(&event.event, &event.data)).await.is_err();
        }
    }
    let outcome = match (&failure, client_gone) {
        (None, false) => Outcome::answered(
            &prepared,
            Prediction {
                text,
                source_documents: sources,
                used_tools: tools,
                usage,
            },
        ),
        (Some(f), _) => Outcome::cut_short(&prepared, text, f.clone()),
        (None, true) => Outcome::cut_short(&prepared, text, "the client disconnected".into()),
    };
    match finish(&state, &user, &prepared, &outcome).await {
        Ok(charged) => {
            let _ = tx
                .send(sse_frame(
                    "end",
                    &json!({
                        "status": if outcome.complete { "complete" } else { "incomplete" },
                        "credits": {"charged": charged.charged, "balance": charged.balance},
                    }),
                ))
                .await;
        }
        Err(err) => {
            tracing::error!(error = %err, "a streamed prediction could not be settled; the expiry job will release it");
            let _ = tx
                .send(sse_frame("error", &json!(err.public_message())))
                .await;
        }
    }
}

/// The message a client sees for a failure inside a stream.
fn public_stream_error(error: &FlowiseError) -> &'static str {
    match error {
        FlowiseError::Timeout(_) => "the chat service did not answer in time",
        _ => "the chat service failed to answer",
    }
}
