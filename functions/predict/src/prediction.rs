//! A prediction, in the order of SPEC §8: (1) the JWT and the chatflow,
//! (2) the session, (3) the price, reserved in the ledger, (4) the call to
//! Flowise, (5) settlement, history and usage. The buffered route runs it
//! in one go; the streaming route runs (1)–(3) through [`prepare`] and
//! relays (4) as it arrives through [`relay_stream`].
//!
//! The reservation is the gateway's (`Origin::Gateway`): no client can
//! settle it, and [`finish`] never takes an already settled one as paid.
//! An `Idempotency-Key` is claimed with the reservation and completed with
//! the settlement (two transactions, none of them open while Flowise
//! answers), so a retried prediction replays the first answer instead of
//! paying twice.

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bson::doc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use shared::chat::chatflows;
use shared::chat::files::{self, CheckedUpload};
use shared::chat::sessions::{self, NewMessage, SessionDoc};
use shared::error::{from_json_value, ApiError};
use shared::flowise::{
    FlowiseError, Prediction, PredictionRequest, ReportedUsage, StreamEvent, TokenUsage,
};
use shared::ledger::accounts::ensure_account;
use shared::ledger::idempotency::{self, StoredKey};
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
/// The idempotency scope of both prediction routes: a key used on one
/// replays on the other.
pub const PREDICT_ENDPOINT: &str = "POST /api/v1/chat/predict";
/// Time a buffered prediction keeps, after Flowise, to settle and answer.
pub const FINISH_MARGIN: Duration = Duration::from_secs(3);

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
    /// `{type, name, mime, data}`, checked like a stored file.
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

/// A prediction's `Idempotency-Key` with the hash of its body.
#[derive(Debug, Clone)]
pub struct KeyClaim {
    /// The key.
    pub key: String,
    /// What the request asked for.
    pub hash: String,
}

/// A prediction request as parsed at the edge.
#[derive(Debug, Clone)]
pub struct PredictRequest {
    /// The body.
    pub body: PredictBody,
    /// Its `Idempotency-Key`, when it has one.
    pub claim: Option<KeyClaim>,
}

impl PredictRequest {
    /// Parses the JSON body and the `Idempotency-Key` header (400 naming
    /// the field on bad input).
    pub fn parse(headers: &HeaderMap, raw: Value) -> Result<Self, ApiError> {
        let key = idempotency::request_key(headers, &Value::Null)?;
        let claim = key.map(|key| KeyClaim {
            hash: idempotency::request_hash(PREDICT_ENDPOINT, &raw),
            key,
        });
        let body: PredictBody = from_json_value(raw)?;
        check_body(&body)?;
        Ok(PredictRequest { body, claim })
    }
}

/// Why a prediction failed: a fixed code is all that is stored or shown
/// (Flowise's own text is logged, never kept or returned).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Flowise failed or could not be reached.
    UpstreamError,
    /// Flowise did not answer in time.
    UpstreamTimeout,
    /// The client went away mid-stream.
    ClientDisconnected,
}

impl Failure {
    /// The stored code.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::UpstreamError => "upstream_error",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::ClientDisconnected => "client_disconnected",
        }
    }

    /// The code of a Flowise error, whose text is logged here.
    pub fn of(error: &FlowiseError) -> Failure {
        tracing::warn!(error = %error, "the call to Flowise failed");
        match error {
            FlowiseError::Timeout(_) => Failure::UpstreamTimeout,
            _ => Failure::UpstreamError,
        }
    }
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
    /// Estimated input tokens (question, history and the text of uploads).
    pub input_tokens: i64,
    /// Stored files sent.
    pub file_ids: Vec<String>,
    /// The claimed `Idempotency-Key`, completed with the settlement.
    pub claim: Option<KeyClaim>,
    /// When the work started.
    pub started: Instant,
}

/// Credits as a prediction's answer reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargedCredits {
    /// Credits charged.
    pub charged: i64,
    /// Balance after (`None` when it could not be read).
    pub balance: Option<i64>,
}

/// What a prediction answers: the buffered JSON, what a stream's frames
/// carry, and what an `Idempotency-Key` replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PredictionAnswer {
    /// The session.
    pub session_id: String,
    /// The answer's message id.
    pub message_id: String,
    /// The answer (partial when cut short).
    pub text: String,
    /// `complete`, or `incomplete` for a stream cut short.
    pub status: String,
    /// Charged and balance.
    pub credits: ChargedCredits,
    /// Sources, when Flowise gave them.
    #[serde(rename = "sourceDocuments", skip_serializing_if = "Option::is_none")]
    pub source_documents: Option<Value>,
    /// Tools, when Flowise gave them.
    #[serde(rename = "usedTools", skip_serializing_if = "Option::is_none")]
    pub used_tools: Option<Value>,
}

/// How [`prepare`] went: ready for Flowise, or the stored answer of an
/// `Idempotency-Key` used before.
pub enum Start {
    /// Reserved: call Flowise.
    Fresh(Box<Prepared>),
    /// The first answer of this key and body.
    Replay(Box<PredictionAnswer>),
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
    check_history(body.history.as_deref().unwrap_or_default())?;
    if body.uploads.as_ref().is_some_and(|u| u.len() > MAX_UPLOADS) {
        return Err(ApiError::invalid_field(
            "uploads",
            format!("at most {MAX_UPLOADS} items"),
        ));
    }
    Ok(())
}

fn check_history(history: &[HistoryItem]) -> Result<(), ApiError> {
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
    Ok(())
}

/// Steps (1)–(3): chatflow access (404/403), session ownership (403), the
/// price reserved in the ledger (402, with nothing sent to Flowise). A
/// request whose `Idempotency-Key` was used before gets the stored answer
/// (or 409) instead, before anything else happens.
pub async fn prepare(
    state: &AppState,
    user: &AuthUser,
    request: PredictRequest,
    request_id: &str,
) -> Result<Start, ApiError> {
    let started = Instant::now();
    let PredictRequest { body, claim } = request;
    if let Some(claim) = &claim {
        let mut conn = state.pg.acquire().await?;
        if let Some(stored) = idempotency::lookup(&mut conn, &user.id, &claim.key).await? {
            return stored_answer(stored, &claim.hash).map(|a| Start::Replay(Box::new(a)));
        }
    }
    let db = &state.mongo.chat;
    chatflows::usable(db, &body.chatflow_id, user).await?;
    let (session, new_session) = session_for(state, user, &body).await?;
    let (uploads, file_ids) = checked_uploads(state, user, &body).await?;
    let input_tokens = input_tokens(&body, &uploads);
    let (rule, minimum, wanted) = price(state, &body.chatflow_id, input_tokens).await?;
    let message_id = uuid::Uuid::new_v4().to_string();
    let ctx = Context {
        actor_id: Some(&user.id),
        idempotency_key: Some(request_id),
        description: Some("prediction"),
        reference: Some(&session.session_id),
        ..Context::default()
    };
    let reserved = Reservation {
        chatflow_id: &body.chatflow_id,
        message_id: &message_id,
        minimum,
        wanted,
        claim: claim.as_ref(),
    };
    if let Some(answer) = reserve(state, user, reserved, &ctx).await? {
        return Ok(Start::Replay(Box::new(answer)));
    }
    let request = PredictionRequest {
        question: body.question.clone(),
        session_id: session.session_id.clone(),
        override_config: body.override_config.clone(),
        history: body.history.as_ref().map(|h| json!(h)),
        uploads: uploads.into_iter().map(|u| u.upload).collect(),
    };
    Ok(Start::Fresh(Box::new(Prepared {
        chatflow_id: body.chatflow_id,
        session,
        new_session,
        user_message_id: uuid::Uuid::new_v4().to_string(),
        message_id,
        request,
        rule,
        input_tokens,
        file_ids,
        claim,
        started,
    })))
}

/// The stored answer of a key used before (or 409).
fn stored_answer(stored: StoredKey, hash: &str) -> Result<PredictionAnswer, ApiError> {
    let (_, body) = stored.replay(hash)?;
    serde_json::from_value(body)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("a stored answer")))
}

/// Step (2): the given session, which must be this user's and this
/// chatflow's, or a new one (stored only once the answer is paid for).
async fn session_for(
    state: &AppState,
    user: &AuthUser,
    body: &PredictBody,
) -> Result<(SessionDoc, bool), ApiError> {
    let Some(id) = &body.session_id else {
        let session = sessions::new_session(&user.id, &body.chatflow_id, &body.question);
        return Ok((session, true));
    };
    let session = sessions::owned(&state.mongo.chat, id, &user.id).await?;
    if session.chatflow_id != body.chatflow_id {
        return Err(ApiError::invalid_field(
            "session_id",
            "belongs to another chatflow",
        ));
    }
    Ok((session, false))
}

/// Every upload, checked: stored files the user owns (403 otherwise) and
/// inline ones against the stored files' allow-list (413, 415).
async fn checked_uploads(
    state: &AppState,
    user: &AuthUser,
    body: &PredictBody,
) -> Result<(Vec<CheckedUpload>, Vec<String>), ApiError> {
    let mut uploads = Vec::new();
    let mut file_ids = Vec::new();
    for item in body.uploads.iter().flatten() {
        match item {
            UploadItem::Stored { file_id } => {
                let file = files::owned(&state.mongo.chat, file_id, &user.id).await?;
                uploads.push(file.to_upload());
                file_ids.push(file_id.clone());
            }
            UploadItem::Inline {
                kind,
                name,
                mime,
                data,
            } => uploads.push(files::check_inline(
                kind,
                name,
                mime,
                data,
                state.limits.max_upload_bytes,
            )?),
        }
    }
    Ok((uploads, file_ids))
}

/// Input tokens as estimated before the answer: the question, the
/// history, and every text that reaches the model inside an upload.
fn input_tokens(body: &PredictBody, uploads: &[CheckedUpload]) -> i64 {
    let history: String = body
        .history
        .iter()
        .flatten()
        .map(|h| h.content.as_str())
        .collect();
    let uploaded: i64 = uploads
        .iter()
        .filter_map(|u| u.text.as_deref())
        .map(estimate_tokens)
        .sum();
    estimate_tokens(&body.question) + estimate_tokens(&history) + uploaded
}

/// What step (3) reserves: the known part of the price (the request and
/// the input), and the price with [`RESERVE_OUTPUT_TOKENS`] of output.
async fn price(
    state: &AppState,
    chatflow_id: &str,
    input_tokens: i64,
) -> Result<(PricingRule, Credits, Credits), ApiError> {
    let mut conn = state.pg.acquire().await?;
    let rule = pricing::rule_for(&mut conn, Some(chatflow_id)).await?;
    let minimum = rule.cost(input_tokens, 0).credits.max(1);
    let wanted = rule.cost(input_tokens, RESERVE_OUTPUT_TOKENS).credits;
    Ok((
        rule,
        Credits::parse("estimatedCredits", minimum)?,
        Credits::parse("estimatedCredits", wanted.max(minimum))?,
    ))
}

/// What step (3b) reserves.
struct Reservation<'a> {
    chatflow_id: &'a str,
    message_id: &'a str,
    minimum: Credits,
    wanted: Credits,
    claim: Option<&'a KeyClaim>,
}

/// Step (3b): one transaction claims the key (when there is one), records
/// the account and reserves as the gateway's, under the account lock
/// (402 when the balance does not cover the known part of the price).
/// A key another request holds rolls it back and answers that request's
/// outcome (or 409), before any balance is looked at.
async fn reserve(
    state: &AppState,
    user: &AuthUser,
    what: Reservation<'_>,
    ctx: &Context<'_>,
) -> Result<Option<PredictionAnswer>, ApiError> {
    let mut tx = state.pg.begin().await?;
    if let Some(claim) = what.claim {
        let held = idempotency::claim(
            &mut tx,
            &user.id,
            &claim.key,
            PREDICT_ENDPOINT,
            &claim.hash,
            what.message_id,
        )
        .await?;
        if let Some(stored) = held {
            tx.rollback().await?;
            return stored_answer(stored, &claim.hash).map(Some);
        }
    }
    ensure_account(&mut tx, user).await?;
    reservations::reserve_prediction(
        &mut tx,
        &user.id,
        what.message_id,
        what.chatflow_id,
        what.minimum,
        what.wanted,
        ctx,
    )
    .await?;
    tx.commit().await?;
    Ok(None)
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
    pub failure: Option<Failure>,
}

impl Outcome {
    /// A full answer, priced by the rule on the reported tokens; a side
    /// Flowise did not report is estimated.
    pub fn answered(prepared: &Prepared, prediction: Prediction) -> Outcome {
        let estimate = TokenUsage {
            input: prepared.input_tokens,
            output: estimate_tokens(&prediction.text),
        };
        let tokens = prediction.usage.unwrap_or_default().or_estimate(estimate);
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
    pub fn cut_short(prepared: &Prepared, text: String, failure: Failure) -> Outcome {
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

    fn status(&self) -> &'static str {
        if self.complete {
            "complete"
        } else {
            "incomplete"
        }
    }
}

impl Prepared {
    fn answer(&self, outcome: &Outcome, charged: i64, balance: Option<i64>) -> PredictionAnswer {
        PredictionAnswer {
            session_id: self.session.session_id.clone(),
            message_id: self.message_id.clone(),
            text: outcome.text.clone(),
            status: outcome.status().to_owned(),
            credits: ChargedCredits { charged, balance },
            source_documents: outcome.source_documents.clone(),
            used_tools: outcome.used_tools.clone(),
        }
    }

    fn usage_metadata(&self, outcome: &Outcome, latency_ms: i64) -> Value {
        let status = match (outcome.complete, outcome.text.is_empty()) {
            (true, _) => "complete",
            (false, true) => "failed",
            (false, false) => "incomplete",
        };
        json!({
            "chatflow_id": self.chatflow_id,
            "session_id": self.session.session_id,
            "message_id": self.message_id,
            "input_tokens": outcome.tokens.input,
            "output_tokens": outcome.tokens.output,
            "latency_ms": latency_ms,
            "status": status,
            "error": outcome.failure.map(Failure::as_str),
        })
    }
}

/// Step (5): in one transaction, settles the gateway's reservation
/// (finalize for a complete answer, abort for anything else), records
/// usage, reads the balance and completes (or, when nothing was charged
/// for a failure, frees) the `Idempotency-Key`; then stores the messages.
pub async fn finish(
    state: &AppState,
    user: &AuthUser,
    prepared: &Prepared,
    outcome: &Outcome,
) -> Result<PredictionAnswer, ApiError> {
    let how = if outcome.complete {
        Settlement::Finalize
    } else {
        Settlement::Abort
    };
    let latency_ms = prepared.started.elapsed().as_millis() as i64;
    let mut tx = state.pg.begin().await?;
    let settled = reservations::settle_prediction(
        &mut tx,
        &prepared.message_id,
        &user.id,
        how,
        outcome.charge,
    )
    .await?;
    let metadata = prepared.usage_metadata(outcome, latency_ms);
    let charged = settled.charged_credits;
    shared::usage::record_usage(
        &mut tx,
        &user.id,
        "chat",
        &prepared.chatflow_id,
        charged,
        metadata,
    )
    .await?;
    let balance = queries::total_balance(&mut tx, &user.id).await?;
    let answer = prepared.answer(outcome, charged, Some(balance));
    if let Some(claim) = &prepared.claim {
        if outcome.failure.is_some() && charged == 0 {
            idempotency::release(&mut tx, &user.id, &claim.key).await?;
        } else {
            let stored = (axum::http::StatusCode::OK, json!(answer));
            idempotency::complete(&mut tx, &user.id, &claim.key, &stored).await?;
        }
    }
    tx.commit().await?;
    // The answer is paid for: from here on nothing may turn it into an
    // error for the user. A history write that fails is logged.
    if outcome.complete || !outcome.text.is_empty() {
        if let Err(err) = store_messages(state, prepared, outcome, charged, latency_ms).await {
            tracing::error!(error = %err, message_id = %prepared.message_id, "a paid answer was not stored in the history");
        }
    }
    Ok(answer)
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
    for (key, value) in [
        ("sourceDocuments", &outcome.source_documents),
        ("usedTools", &outcome.used_tools),
    ] {
        if let Some(value) = value {
            metadata.insert(key, bson::to_bson(value).unwrap_or(bson::Bson::Null));
        }
    }
    if let Some(failure) = outcome.failure {
        metadata.insert("error", failure.as_str());
    }
    let question = NewMessage {
        message_id: prepared.user_message_id.clone(),
        role: "user",
        content: prepared.request.question.clone(),
        status: "complete",
        file_ids: prepared.file_ids.clone(),
        metadata: doc! {},
    };
    let answer = NewMessage {
        message_id: prepared.message_id.clone(),
        role: "assistant",
        content: outcome.text.clone(),
        status: outcome.status(),
        file_ids: Vec::new(),
        metadata,
    };
    sessions::append(db, &prepared.session, vec![question, answer]).await
}

/// Releases the whole reservation after Flowise failed before answering
/// (the user pays nothing, the `Idempotency-Key` is freed) and records the
/// failure; returns the error to answer with (502, or 504 for a timeout).
pub async fn fail(
    state: &AppState,
    user: &AuthUser,
    prepared: &Prepared,
    error: FlowiseError,
) -> ApiError {
    let outcome = Outcome::cut_short(prepared, String::new(), Failure::of(&error));
    if let Err(settle_error) = finish(state, user, prepared, &outcome).await {
        tracing::error!(error = %settle_error, "a failed prediction could not be settled; the expiry job will release it");
    }
    ApiError::from(error)
}

/// One outgoing SSE frame: `event: <name>\ndata: <json>\n\n`.
pub fn sse_frame(event: &str, data: &Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("event: {event}\ndata: {data}\n\n"))
}

fn session_frame(session_id: &str, message_id: &str) -> bytes::Bytes {
    sse_frame(
        "session",
        &json!({"session_id": session_id, "message_id": message_id}),
    )
}

fn end_frame(answer: &PredictionAnswer, replayed: bool) -> bytes::Bytes {
    let mut data = json!({"status": answer.status, "credits": answer.credits});
    if replayed {
        data["replayed"] = json!(true);
    }
    sse_frame("end", &data)
}

/// A stored answer as a short stream: `session`, `start`, one `token` with
/// the whole text, the sources and tools it had, and `end` (with its
/// status, so an answer cut short replays as `incomplete`).
pub fn replay_frames(answer: &PredictionAnswer) -> Vec<bytes::Bytes> {
    let mut frames = vec![
        session_frame(&answer.session_id, &answer.message_id),
        sse_frame("start", &json!("")),
        sse_frame("token", &json!(answer.text)),
    ];
    for (name, value) in [
        ("sourceDocuments", &answer.source_documents),
        ("usedTools", &answer.used_tools),
    ] {
        if let Some(value) = value {
            frames.push(sse_frame(name, value));
        }
    }
    frames.push(end_frame(answer, true));
    frames
}

/// The events relayed to the client as they are; `error` is relayed with a
/// clean message (Flowise's own is logged); the rest (usage, agent
/// internals) are consumed here.
const RELAYED: &[&str] = &["start", "token", "metadata", "sourceDocuments", "usedTools"];

/// What a stream delivered so far.
#[derive(Default)]
struct Relayed {
    text: String,
    usage: ReportedUsage,
    reported: bool,
    sources: Option<Value>,
    tools: Option<Value>,
    failure: Option<Failure>,
    client_gone: bool,
}

impl Relayed {
    /// Takes one event in; returns whether the stream is over.
    fn take(&mut self, event: &StreamEvent) -> bool {
        match event.event.as_str() {
            "end" => return true,
            // One report per LLM call of the flow: every one counts.
            "usageMetadata" => {
                if let Some(report) = ReportedUsage::from_value(&event.data) {
                    self.usage = self.usage.plus(report);
                    self.reported = true;
                }
            }
            "token" | "start" => {
                if let Some(piece) = event.data.as_str() {
                    self.text.push_str(piece);
                }
            }
            "sourceDocuments" => self.sources = Some(event.data.clone()),
            "usedTools" => self.tools = Some(event.data.clone()),
            "error" => {
                tracing::warn!(error = %event.data, "Flowise reported an error inside the stream");
                self.failure = Some(Failure::UpstreamError);
            }
            _ => {}
        }
        false
    }

    fn outcome(self, prepared: &Prepared) -> Outcome {
        match (self.failure, self.client_gone) {
            (None, false) => Outcome::answered(
                prepared,
                Prediction {
                    text: self.text,
                    source_documents: self.sources,
                    used_tools: self.tools,
                    usage: self.reported.then_some(self.usage),
                },
            ),
            (Some(failure), _) => Outcome::cut_short(prepared, self.text, failure),
            (None, true) => Outcome::cut_short(prepared, self.text, Failure::ClientDisconnected),
        }
    }
}

/// The message a client sees for a failure inside a stream.
fn public_stream_error(failure: Failure) -> &'static str {
    match failure {
        Failure::UpstreamTimeout => "the chat service did not answer in time",
        _ => "the chat service failed to answer",
    }
}

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
    let mut relayed = Relayed::default();
    let first = session_frame(&prepared.session.session_id, &prepared.message_id);
    relayed.client_gone = tx.send(first).await.is_err();
    while !relayed.client_gone {
        let event = match events.next().await {
            None => break,
            Some(Err(e)) => {
                let failure = Failure::of(&e);
                let _ = tx
                    .send(sse_frame("error", &json!(public_stream_error(failure))))
                    .await;
                relayed.failure = Some(failure);
                break;
            }
            Some(Ok(event)) => event,
        };
        if relayed.take(&event) {
            break;
        }
        let frame = match event.event.as_str() {
            "error" => sse_frame("error", &json!(public_stream_error(Failure::UpstreamError))),
            name if RELAYED.contains(&name) => sse_frame(name, &event.data),
            _ => continue,
        };
        relayed.client_gone = tx.send(frame).await.is_err();
    }
    let outcome = relayed.outcome(&prepared);
    let last = match finish(&state, &user, &prepared, &outcome).await {
        Ok(answer) => end_frame(&answer, false),
        Err(err) => {
            tracing::error!(error = %err, "a streamed prediction could not be settled; the expiry job will release it");
            sse_frame("error", &json!(err.public_message()))
        }
    };
    let _ = tx.send(last).await;
}
