//! A prediction, in the order of README §8: (1) the JWT and the chatflow,
//! (2) the session, (3) the price, reserved in the ledger, (4) the call to
//! Flowise, (5) settlement, history and usage. The buffered route runs it
//! in one go; the streaming route runs (1)–(3) through [`prepare`] and
//! relays (4) as it arrives through [`stream::relay_stream`].
//!
//! The reservation is the gateway's: no client can settle it, and
//! [`finish`] never takes an already settled one as paid. An
//! `Idempotency-Key` is claimed with the reservation and completed with the
//! settlement (two transactions, none of them open while Flowise answers),
//! so a retried prediction replays the first answer instead of paying
//! twice. Reads that do not depend on each other run concurrently, and so
//! do the settlement and the history writes, all before the answer.

pub mod meter;
pub mod state;
pub mod stream;

use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use bson::doc;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::chat::chatflows::{self, ChatflowDoc, SystemMessages};
use crate::chat::files::{self, CheckedUpload, Weight};
use crate::chat::sessions::{self, NewMessage, SessionDoc};
use crate::error::{from_json_value, ApiError};
use crate::flowise::{FlowiseError, Prediction, PredictionRequest, TokenUsage};
use crate::ids::{ChatSessionId, ChatflowId, ReservationId, UserId};
use crate::ledger::accounts::lock_from_claims;
use crate::ledger::allowances::{self, Granter};
use crate::ledger::idempotency::{self, RequestKey, StoredKey};
use crate::ledger::limits;
use crate::ledger::primitives::begin;
use crate::ledger::reservations::{self, PredictionHold, Settlement};
use crate::ledger::{Charge, Credits, Durability, EntryMeta};
use crate::pricing::{self, estimate_tokens, PricingRule};
use crate::token::AuthUser;

pub use meter::{Meter, HOLD_STEP_TOKENS};
pub use state::{PredictConfig, PredictState};

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
#[derive(Debug, Clone, Deserialize, Serialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HistoryItem {
    /// `userMessage` or `apiMessage`.
    #[schema(value_type = crate::openapi::HistoryRole)]
    pub role: String,
    /// Text.
    pub content: String,
}

/// One `uploads` item: a stored file, or Flowise's own upload object.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PredictBody {
    /// The chatflow.
    pub chatflow_id: ChatflowId,
    /// The question.
    #[schema(min_length = 1, max_length = 100000)]
    pub question: String,
    /// An existing session of this user (a new one when absent).
    pub session_id: Option<ChatSessionId>,
    /// Passed to Flowise: only the keys the chatflow's admin allowed
    /// (`allowedOverrides`; any other is 400 `override_not_allowed`); a
    /// `sessionId` is ignored (the gateway's own is sent). Every string in
    /// it is priced as input.
    #[serde(rename = "overrideConfig")]
    #[schema(value_type = Option<Object>)]
    pub override_config: Option<Value>,
    /// A system message, placed as the chatflow's `systemMessages` setting
    /// says (the input its node reads, a block before the question, or
    /// refused with 400); priced as input.
    #[serde(rename = "systemMessage")]
    #[schema(max_length = 100000)]
    pub system_message: Option<String>,
    /// Prior turns to prepend.
    #[schema(max_items = 100)]
    pub history: Option<Vec<HistoryItem>>,
    /// Files.
    #[schema(max_items = 10)]
    pub uploads: Option<Vec<UploadItem>>,
}

/// A prediction request as parsed at the edge.
#[derive(Debug, Clone)]
pub struct PredictRequest {
    /// The body.
    pub body: PredictBody,
    /// Its `Idempotency-Key`, when it has one.
    pub key: Option<RequestKey>,
    /// Set when the client sends the whole conversation every time.
    pub conversation: Option<WholeConversation>,
}

/// A client that sends the whole conversation every time (the OpenAI
/// API): Flowise gets a `sessionId` of its own for the request (so the
/// earlier turns, sent as `history`, are not also in its memory), and the
/// turn is stored in `continues` or a new session.
#[derive(Debug, Clone, Default)]
pub struct WholeConversation {
    /// The user's session of this chatflow whose messages are the
    /// conversation's earlier turns, as read when it was found (its
    /// transcript is the one the turn moves on from).
    pub continues: Option<SessionDoc>,
    /// Overrides sent where the chatflow allows them and ignored
    /// elsewhere (an OpenAI client's `temperature`, `max_tokens`).
    pub optional_overrides: serde_json::Map<String, Value>,
}

impl PredictRequest {
    /// Parses the JSON body and the `Idempotency-Key` header (400 naming
    /// the field on bad input).
    pub fn parse(headers: &HeaderMap, raw: Value) -> Result<Self, ApiError> {
        let key = Self::key(headers, &raw)?;
        Self::new(from_json_value(raw)?, key, None)
    }

    /// The `Idempotency-Key` header of a request whose JSON body is `raw`,
    /// scoped to the prediction routes.
    pub fn key(headers: &HeaderMap, raw: &Value) -> Result<Option<RequestKey>, ApiError> {
        Ok(crate::http::idempotency_key(headers, &Value::Null)?
            .map(|key| RequestKey::new(key, PREDICT_ENDPOINT, raw)))
    }

    /// A request of `body`, checked (question length, history, uploads).
    pub fn new(
        body: PredictBody,
        key: Option<RequestKey>,
        conversation: Option<WholeConversation>,
    ) -> Result<Self, ApiError> {
        check_body(&body)?;
        Ok(PredictRequest {
            body,
            key,
            conversation,
        })
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
    /// The owner asked the answer to stop (`POST
    /// /api/v1/chat/predict/{message_id}/stop`).
    Stopped,
    /// The payer's means were spent: the answer ended at the last
    /// character they paid for.
    CreditsExhausted,
}

impl Failure {
    /// The stored code.
    pub fn as_str(self) -> &'static str {
        match self {
            Failure::UpstreamError => "upstream_error",
            Failure::UpstreamTimeout => "upstream_timeout",
            Failure::ClientDisconnected => "client_disconnected",
            Failure::Stopped => "stopped",
            Failure::CreditsExhausted => "credits_exhausted",
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

/// Every [`Failure`], for the checks that each is known where it is shown.
pub const FAILURES: [Failure; 5] = [
    Failure::UpstreamError,
    Failure::UpstreamTimeout,
    Failure::ClientDisconnected,
    Failure::Stopped,
    Failure::CreditsExhausted,
];

/// Steps (1)–(3) done: what the call and the settlement need.
pub struct Prepared {
    /// The question as the user asked it (what the history keeps).
    pub question: String,
    /// The caller, as the ledger knows them.
    pub user_id: UserId,
    /// The chatflow.
    pub chatflow_id: ChatflowId,
    /// The session (not stored yet when `new_session`).
    pub session: SessionDoc,
    /// Whether the session is created by this prediction.
    pub new_session: bool,
    /// The user's message id.
    pub user_message_id: String,
    /// The answer's message id; also the reservation's id in the ledger.
    pub message_id: ReservationId,
    /// What goes to Flowise.
    pub request: PredictionRequest,
    /// The pricing rule applied.
    pub rule: PricingRule,
    /// Estimated input tokens (question, history and the text of uploads).
    pub input_tokens: i64,
    /// Stored files sent.
    pub file_ids: Vec<String>,
    /// Every file sent, as the question's history shows it ([`attachments`]).
    pub files: Vec<bson::Document>,
    /// The claimed `Idempotency-Key`, completed with the settlement.
    pub key: Option<RequestKey>,
    /// The API key the prediction came with.
    pub api_key_id: Option<uuid::Uuid>,
    /// Credits held for the answer when it was reserved.
    pub held: i64,
    /// When the work started.
    pub started: Instant,
}

impl Prepared {
    /// A meter of the answer, starting from the hold reserved for it.
    pub fn meter(&self) -> Meter {
        Meter::new(self.rule.clone(), self.input_tokens, self.held)
    }

    /// The reservation as its settlement and its top-ups name it.
    pub fn hold(&self) -> PredictionHold<'_> {
        PredictionHold {
            id: &self.message_id,
            user: &self.user_id,
            chatflow: &self.chatflow_id,
            api_key_id: self.api_key_id,
        }
    }

    /// Tops up the answer's hold by `asked` credits, as far as the payer's
    /// means go, and tells `meter` (a failed top-up is logged and changes
    /// nothing: the answer then ends where the hold does).
    pub async fn top_up(&self, state: &PredictState, meter: &mut Meter, asked: i64) {
        if asked <= 0 {
            return;
        }
        match reservations::top_up(&state.pg, &self.hold(), asked).await {
            Ok(held) => meter.topped_up(held, asked),
            // The hold stays as it was; the next piece asks again.
            Err(err) => {
                tracing::warn!(error = %err, message_id = %self.message_id, "a prediction's hold could not be topped up");
            }
        }
    }
}

/// The tokens a prediction was priced on, as its answer reports them
/// (Flowise's counts, or the gateway's estimate of a side it did not
/// report).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct AnswerUsage {
    /// Input tokens.
    pub input_tokens: i64,
    /// Output tokens.
    pub output_tokens: i64,
}

/// Credits as a prediction's answer reports them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ChargedCredits {
    /// Credits charged.
    pub charged: i64,
    /// Balance after (`None` when it could not be read).
    pub balance: Option<i64>,
}

/// What a prediction answers: the buffered JSON, what a stream's frames
/// carry, and what an `Idempotency-Key` replays.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct PredictionAnswer {
    /// The session.
    pub session_id: String,
    /// The answer's message id.
    pub message_id: String,
    /// The answer (partial when cut short).
    pub text: String,
    /// `complete`, or `incomplete` for a stream cut short (seen when
    /// replaying one).
    #[schema(value_type = crate::openapi::AnswerStatus)]
    pub status: String,
    /// Charged and balance.
    pub credits: ChargedCredits,
    /// Sources, when Flowise gave them.
    #[serde(rename = "sourceDocuments", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub source_documents: Option<Value>,
    /// Tools, when Flowise gave them.
    #[serde(rename = "usedTools", skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub used_tools: Option<Value>,
    /// The tokens it was priced on (absent in answers stored before they
    /// were reported).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub usage: Option<AnswerUsage>,
    /// Why an `incomplete` answer ended early: `credits_exhausted`,
    /// `stopped`, `upstream_error`, `upstream_timeout`,
    /// `client_disconnected` (or `lapsed`, replayed for an answer whose
    /// instance died).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// True when the answer was cut to what its payer could pay.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
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
    let system = body.system_message.as_deref().unwrap_or_default();
    if system.chars().count() > MAX_QUESTION_CHARS {
        return Err(ApiError::invalid_field(
            "systemMessage",
            format!("must be at most {MAX_QUESTION_CHARS} characters"),
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

/// What the checks of steps (1) and (2) found.
struct Checked {
    shaped: Shaped,
    session: (SessionDoc, bool),
    uploads: (Vec<CheckedUpload>, Vec<String>),
}

/// Steps (1) and (2), concurrently: chatflow access (404/403, 422 for a
/// flow Flowise does not run through the prediction API) and what it
/// takes of the request ([`shape`]: 400), session ownership (403), uploads
/// (403, 413, 415).
async fn check(
    state: &PredictState,
    user: &AuthUser,
    body: &PredictBody,
    conversation: Option<&WholeConversation>,
) -> Result<Checked, ApiError> {
    let db = &state.mongo.chat;
    let shaped = async {
        let flow = chatflows::usable(db, &body.chatflow_id, user).await?;
        shape(&flow, body, conversation)
    };
    let (shaped, session, uploads) = tokio::try_join!(
        shaped,
        session_for(state, user, body, conversation),
        checked_uploads(state, user, body),
    )?;
    Ok(Checked {
        shaped,
        session,
        uploads,
    })
}

/// The request's own text as it reaches Flowise: the question (after a
/// prepended system message) and the overrides the chatflow takes.
struct Shaped {
    question: String,
    override_config: Option<Value>,
}

/// How a system message is marked when it is placed before the question.
const SYSTEM_BLOCK: (&str, &str) = ("<system>\n", "\n</system>\n\n");

/// What the chatflow `flow` takes of `body`: each `overrideConfig` key its
/// admin allowed (any other is 400 `override_not_allowed` naming it; a
/// `sessionId` is dropped, the gateway's own is sent), the optional
/// overrides of a whole conversation where allowed, and the system message
/// placed as its setting says (400 naming the field where it refuses
/// one).
fn shape(
    flow: &ChatflowDoc,
    body: &PredictBody,
    conversation: Option<&WholeConversation>,
) -> Result<Shaped, ApiError> {
    let allowed = |key: &str| flow.allowed_overrides.iter().any(|k| k == key);
    let mut config = serde_json::Map::new();
    if let Some(Value::Object(given)) = &body.override_config {
        for (key, value) in given.iter().filter(|(k, _)| *k != "sessionId") {
            // A system prompt set through the overrides is a system
            // message: where they are refused, so is it.
            let system_input = crate::flowise::SYSTEM_PROMPT_INPUTS
                .iter()
                .any(|(_, input)| input == key);
            let refused = system_input && flow.system_messages_now() == SystemMessages::Refuse;
            if !allowed(key) || refused {
                return Err(ApiError::BadRequest {
                    code: "override_not_allowed",
                    message: format!(
                        "overrideConfig.{key}: this chatflow does not let a request override {key}"
                    ),
                });
            }
            config.insert(key.clone(), value.clone());
        }
    }
    for (key, value) in conversation.iter().flat_map(|c| &c.optional_overrides) {
        if allowed(key) && !config.contains_key(key) {
            config.insert(key.clone(), value.clone());
        }
    }
    let mut question = body.question.clone();
    if let Some(system) = body
        .system_message
        .as_deref()
        .filter(|s| !s.trim().is_empty())
    {
        match (flow.system_messages_now(), &flow.system_prompt_input) {
            (SystemMessages::Override, Some(input)) => {
                config.insert(input.clone(), json!(system));
            }
            (SystemMessages::Refuse, _) => {
                let field = if conversation.is_some() {
                    "messages"
                } else {
                    "systemMessage"
                };
                return Err(ApiError::invalid_field(
                    field,
                    "this chatflow takes no system message",
                ));
            }
            _ => question = format!("{}{system}{}{question}", SYSTEM_BLOCK.0, SYSTEM_BLOCK.1),
        }
    }
    Ok(Shaped {
        question,
        override_config: (!config.is_empty()).then_some(Value::Object(config)),
    })
}

/// Steps (1)–(3): the checks, then the price reserved in the ledger (402,
/// with nothing sent to Flowise). A request whose `Idempotency-Key` was
/// used before gets the stored answer (or 409) instead, before anything
/// else happens.
///
/// The reservation's transaction is opened while the checks run (the
/// checks read MongoDB, the transaction PostgreSQL: the pricing rule and
/// the key); the account is locked and the price reserved only once they
/// passed, and a refused request rolls it back at once, so it changes
/// nothing.
pub async fn prepare(
    state: &PredictState,
    user: &AuthUser,
    request: PredictRequest,
    request_id: &str,
) -> Result<Start, ApiError> {
    let started = Instant::now();
    let PredictRequest {
        body,
        key,
        conversation,
    } = request;
    let user_id = user.user_id();
    // A key limited to chatflows gets nothing of another, replays included.
    crate::keys::require_chatflow(user, body.chatflow_id.as_str())?;
    if let Some(answer) = stored_for(state, &user_id, key.as_ref()).await? {
        return Ok(Start::Replay(Box::new(answer)));
    }
    let message_id = ReservationId::random();
    let keyed = (key.as_ref(), &message_id);
    let (checked, opened) =
        match check_and_open(state, user, &body, conversation.as_ref(), keyed).await? {
            Ok(ready) => ready,
            Err(answer) => return Ok(Start::Replay(answer)),
        };
    let Checked {
        shaped,
        session: (session, new_session),
        uploads: (uploads, file_ids),
    } = checked;
    let input_tokens = input_tokens(&shaped, &body, &uploads, &opened.rule);
    let files = attachments(&uploads, &opened.rule);
    let meta = reservation_meta(user, request_id, &session);
    let chatflow = &body.chatflow_id;
    let (rule, held) = reserve(
        opened,
        (user, &message_id),
        chatflow,
        input_tokens,
        state,
        &meta,
    )
    .await?;
    let request = flowise_request(shaped, &body, &session, conversation.is_some(), uploads);
    Ok(Start::Fresh(Box::new(Prepared {
        question: body.question,
        user_id,
        chatflow_id: body.chatflow_id,
        session,
        new_session,
        user_message_id: uuid::Uuid::new_v4().to_string(),
        message_id,
        request,
        rule,
        input_tokens,
        file_ids,
        files,
        key,
        api_key_id: user.key.as_ref().map(|k| k.id),
        held,
        started,
    })))
}

/// Steps (1), (2) and (3a) at once: the checks, and the reservation's
/// transaction opened beside them ([`open_reservation`]). Either the
/// checks passed and the transaction is ready, or the key's stored answer
/// (`Err`); a refusal rolls the transaction back at once.
async fn check_and_open(
    state: &PredictState,
    user: &AuthUser,
    body: &PredictBody,
    conversation: Option<&WholeConversation>,
    (key, message_id): (Option<&RequestKey>, &ReservationId),
) -> Result<Result<(Checked, Opened), Box<PredictionAnswer>>, ApiError> {
    let user_id = user.user_id();
    let open = open_reservation(state, &user_id, &body.chatflow_id, key, message_id);
    match tokio::join!(check(state, user, body, conversation), open) {
        (_, Ok(Opening::Replay(answer))) => Ok(Err(answer)),
        (Err(refused), Ok(Opening::Ready(opened))) => refuse(opened.tx, refused).await,
        (Err(refused), _) | (Ok(_), Err(refused)) => Err(refused),
        (Ok(checked), Ok(Opening::Ready(opened))) => Ok(Ok((checked, opened))),
    }
}

/// What the reservation's entry records: the caller, the request, the
/// session, and the API key when there is one.
fn reservation_meta<'a>(
    user: &'a AuthUser,
    request_id: &'a str,
    session: &'a SessionDoc,
) -> EntryMeta<'a> {
    EntryMeta {
        actor_id: Some(&user.id),
        idempotency_key: Some(request_id),
        description: Some("prediction"),
        reference: Some(&session.session_id),
        api_key_id: user.key.as_ref().map(|k| k.id),
        ..EntryMeta::default()
    }
}

/// What step (4) sends to Flowise: the shaped question in `session` (or,
/// when `fresh`, in a Flowise session of its own), with the overrides the
/// chatflow takes, the history and the checked uploads.
fn flowise_request(
    shaped: Shaped,
    body: &PredictBody,
    session: &SessionDoc,
    fresh: bool,
    uploads: Vec<CheckedUpload>,
) -> PredictionRequest {
    let session_id = if fresh {
        uuid::Uuid::new_v4().to_string()
    } else {
        session.session_id.clone()
    };
    PredictionRequest {
        question: shaped.question,
        session_id,
        override_config: shaped.override_config,
        history: body.history.as_ref().map(|h| json!(h)),
        uploads: uploads.into_iter().map(|u| u.upload).collect(),
    }
}

/// The stored answer of a key used before (or 409), when there is one.
async fn stored_for(
    state: &PredictState,
    user: &UserId,
    key: Option<&RequestKey>,
) -> Result<Option<PredictionAnswer>, ApiError> {
    let Some(key) = key else {
        return Ok(None);
    };
    let mut conn = state.pg.acquire().await?;
    match idempotency::lookup(&mut conn, user, &key.key).await? {
        Some(stored) => stored_answer(stored, &key.hash).map(Some),
        None => Ok(None),
    }
}

/// The stored answer of a key used before (or 409).
fn stored_answer(stored: StoredKey, hash: &str) -> Result<PredictionAnswer, ApiError> {
    let (_, body) = stored.replay(hash)?;
    serde_json::from_value(body)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("a stored answer")))
}

/// Step (2): the given session (or the one a whole conversation
/// continues), which must be this user's and this chatflow's, or a new one
/// (stored only once the answer is paid for).
async fn session_for(
    state: &PredictState,
    user: &AuthUser,
    body: &PredictBody,
    conversation: Option<&WholeConversation>,
) -> Result<(SessionDoc, bool), ApiError> {
    if let Some(session) = conversation.and_then(|c| c.continues.clone()) {
        if session.user_id != user.id || session.chatflow_id != body.chatflow_id.as_str() {
            return Err(ApiError::forbidden("this session belongs to another user"));
        }
        return Ok((session, false));
    }
    let Some(id) = &body.session_id else {
        let session = sessions::new_session(&user.id, &body.chatflow_id, &body.question);
        return Ok((session, true));
    };
    let session = sessions::owned(&state.mongo.chat, id, &user.id).await?;
    if session.chatflow_id != body.chatflow_id.as_str() {
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
    state: &PredictState,
    user: &AuthUser,
    body: &PredictBody,
) -> Result<(Vec<CheckedUpload>, Vec<String>), ApiError> {
    let mut uploads = Vec::new();
    let mut file_ids = Vec::new();
    for item in body.uploads.iter().flatten() {
        match item {
            UploadItem::Stored { file_id } => {
                let file = sessions::visible_file(&state.mongo.chat, file_id, user).await?;
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

/// Input tokens as estimated before the answer: the question (with a
/// prepended system message), the history, every string of the
/// overrides (a system message sent as one included), every text that
/// reaches the model inside an upload, and the images and documents by
/// the rule's flat counts.
/// What each upload was, for the question's history: its name, type, the
/// input tokens it counted as and what they cost (credits, before the
/// answer's rounding), so a conversation shows what each file cost.
fn attachments(uploads: &[CheckedUpload], rule: &PricingRule) -> Vec<bson::Document> {
    uploads
        .iter()
        .map(|u| {
            let tokens = match u.weight {
                Weight::Text => u.text.as_deref().map_or(0, estimate_tokens),
                Weight::Image => rule.upload_tokens(1, &[]),
                Weight::Document(bytes) => rule.upload_tokens(0, &[bytes]),
            };
            let text = |key: &str| u.upload[key].as_str().unwrap_or_default().to_owned();
            let credits = tokens as f64 * rule.per_input_token_micros as f64 / 1e6;
            doc! {"name": text("name"), "mime": text("mime"), "input_tokens": tokens, "credits": credits}
        })
        .collect()
}

fn input_tokens(
    shaped: &Shaped,
    body: &PredictBody,
    uploads: &[CheckedUpload],
    rule: &PricingRule,
) -> i64 {
    fn strings(value: &Value, out: &mut String) {
        match value {
            Value::String(text) => out.push_str(text),
            Value::Array(items) => items.iter().for_each(|v| strings(v, out)),
            Value::Object(map) => map.values().for_each(|v| strings(v, out)),
            _ => {}
        }
    }
    let mut overrides = String::new();
    if let Some(config) = &shaped.override_config {
        strings(config, &mut overrides);
    }
    let history: String = body
        .history
        .iter()
        .flatten()
        .map(|h| h.content.as_str())
        .collect();
    let text: i64 = uploads
        .iter()
        .filter_map(|u| u.text.as_deref())
        .map(estimate_tokens)
        .sum();
    let images = uploads.iter().filter(|u| u.weight == Weight::Image).count();
    let documents: Vec<usize> = uploads
        .iter()
        .filter_map(|u| match u.weight {
            Weight::Document(bytes) => Some(bytes),
            _ => None,
        })
        .collect();
    [
        estimate_tokens(&shaped.question),
        estimate_tokens(&history),
        estimate_tokens(&overrides),
        text,
        rule.upload_tokens(images, &documents),
    ]
    .iter()
    .fold(0i64, |sum, n| sum.saturating_add(*n))
}

/// What step (3) reserves: the known part of the price (the request and
/// the input), and the price with [`HOLD_STEP_TOKENS`] of output (the
/// relay tops the hold up as the answer grows, [`Meter`]).
fn reservation_amounts(
    rule: &PricingRule,
    input_tokens: i64,
) -> Result<(Credits, Credits), ApiError> {
    let minimum = rule.cost(input_tokens, 0).credits.max(1);
    let wanted = rule.cost(input_tokens, HOLD_STEP_TOKENS).credits;
    Ok((
        Credits::parse("estimatedCredits", minimum)?,
        Credits::parse("estimatedCredits", wanted.max(minimum))?,
    ))
}

/// The reservation's transaction, open, its durability set: the pricing
/// rule it read (and the key it claimed). The account is not locked yet.
struct Opened {
    tx: crate::ledger::Tx<'static>,
    rule: PricingRule,
}

/// What the reservation's commit waits for. A claimed `Idempotency-Key`
/// must survive a crash (a retry meanwhile would run the prediction
/// twice), so its reservation is flushed. Without one, nothing depends on
/// the hold outliving a database crash: the settlement recreates a lost
/// reservation and charges the answer from the balance
/// ([`reservations::settle_prediction`]), so the commit does not wait for
/// the disk (README §6, "Reservations that do not wait for the disk").
fn hold_durability(key: Option<&RequestKey>) -> Durability {
    if key.is_some() {
        Durability::Flushed
    } else {
        Durability::Relaxed
    }
}

/// What opening the reservation's transaction found.
enum Opening {
    /// Ready: lock the account, reserve, commit.
    Ready(Opened),
    /// Another request holds the key: its outcome (the transaction is
    /// rolled back).
    Replay(Box<PredictionAnswer>),
}

/// Step (3a), on one connection, while the checks run: the transaction
/// begins (not waiting for the disk unless it claims a key, [`hold_durability`]),
/// reads the pricing rule and claims the key (when there is one).
/// A key another request holds rolls it back and answers that request's
/// outcome (or 409), before any balance is looked at. The account is
/// locked only once the checks passed ([`reserve`]), so a slow or refused
/// check never holds it.
async fn open_reservation(
    state: &PredictState,
    user_id: &UserId,
    chatflow: &ChatflowId,
    key: Option<&RequestKey>,
    message_id: &ReservationId,
) -> Result<Opening, ApiError> {
    let mut tx = begin(&state.pg, hold_durability(key)).await?;
    let rule = pricing::rule_for(&mut tx, Some(chatflow.as_str())).await?;
    if let Some(key) = key {
        let held = idempotency::claim(&mut tx, user_id, key, PREDICT_ENDPOINT, message_id).await?;
        if let Some(stored) = held {
            tx.rollback().await?;
            return Ok(Opening::Replay(Box::new(stored_answer(stored, &key.hash)?)));
        }
    }
    Ok(Opening::Ready(Opened { tx, rule }))
}

/// Rolls a transaction back now (not when its connection is next used: a
/// Lambda instance may be frozen first, with the key held), then answers
/// `refused`.
async fn refuse<T>(tx: crate::ledger::Tx<'static>, refused: ApiError) -> Result<T, ApiError> {
    if let Err(err) = tx.rollback().await {
        tracing::warn!(error = %err, "a refused prediction's transaction did not roll back cleanly");
    }
    Err(refused)
}

/// Step (3b): records and locks the account, checks the limits (403 for
/// a disabled account, 429 past a rate limit), reserves the price of
/// `input_tokens` as the gateway's (402 when the balance or the key's
/// allowance does not cover the known part of the price), and commits; a
/// refusal rolls back at once. Returns the rule applied and the credits
/// held.
async fn reserve(
    opened: Opened,
    (user, message_id): (&AuthUser, &ReservationId),
    chatflow: &ChatflowId,
    input_tokens: i64,
    state: &PredictState,
    meta: &EntryMeta<'_>,
) -> Result<(PricingRule, i64), ApiError> {
    let rate = &state.limits.rate;
    let Opened { mut tx, rule } = opened;
    let user_id = user.user_id();
    let reserved = async {
        let amounts = reservation_amounts(&rule, input_tokens)?;
        let account = lock_from_claims(&mut tx, user).await?;
        // The period's allowances arrive first, so this prediction can use them.
        let now = chrono::Utc::now();
        let granted =
            allowances::grant_due(&mut tx, &user_id, account.locked, now, Granter::Request);
        let account = crate::ledger::accounts::Account {
            locked: granted.await?,
            ..account
        };
        let key = user.key.as_ref();
        let allowance = limits::check(&mut tx, &user_id, &account, rate, key).await?;
        let account = (&user_id, account.locked, allowance);
        let reservation =
            reservations::reserve_prediction(&mut tx, account, message_id, chatflow, amounts, meta)
                .await?;
        Ok::<_, ApiError>(reservation.reserved_credits)
    }
    .await;
    match reserved {
        Ok(held) => {
            crate::ledger::primitives::commit(tx).await?;
            Ok((rule, held))
        }
        Err(refused) => {
            let refused = with_next_credits(&mut tx, &user_id, refused).await;
            let refused = refuse::<()>(tx, refused).await.unwrap_err();
            Err(announce_refusal(state, user, message_id, refused).await)
        }
    }
}

/// A 402 for want of credits is an event webhooks may listen for
/// (`prediction.refused_402`), recorded after the refusal rolled back, in
/// a transaction of its own; a failure to record it is logged, never
/// answered.
async fn announce_refusal(
    state: &PredictState,
    user: &AuthUser,
    message_id: &ReservationId,
    refused: ApiError,
) -> ApiError {
    if let ApiError::PaymentRequired {
        needed, available, ..
    } = &refused
    {
        let pool = &state.pg;
        let done =
            crate::notices::refused(pool, &user.id, message_id.as_str(), *needed, *available);
        if let Err(err) = done.await {
            tracing::warn!(error = %err, "a refused prediction's event was not recorded");
        }
    }
    refused
}

/// A 402 for want of credits says when an allowance brings more (README
/// "Allowances and warnings"), read in the refused transaction before it
/// rolls back; any other refusal, or a failed read, is left as it was.
async fn with_next_credits(
    tx: &mut crate::ledger::Tx<'static>,
    user: &crate::ids::UserId,
    refused: ApiError,
) -> ApiError {
    let ApiError::PaymentRequired {
        code: "insufficient_credits",
        message,
        needed,
        available,
        ..
    } = refused
    else {
        return refused;
    };
    let now = chrono::Utc::now();
    let as_next = |(at, credits)| crate::error::NextCredits { at, credits };
    let next = allowances::next_credits(tx, user, now).await.ok().flatten();
    let expiring = crate::ledger::queries::expiring_soon(tx, user, now)
        .await
        .ok()
        .flatten();
    ApiError::PaymentRequired {
        code: "insufficient_credits",
        message,
        needed,
        available,
        outlook: Some(Box::new(crate::error::Outlook {
            next: next.map(as_next),
            expiring: expiring.map(as_next),
        })),
    }
}

/// How a prediction ended, for settlement and history.
pub struct Outcome {
    /// The answer (partial when cut short).
    pub text: String,
    /// `complete` or `incomplete`.
    pub complete: bool,
    /// Credits to charge.
    pub charge: Charge,
    /// Input and output tokens counted.
    pub tokens: TokenUsage,
    /// Sources, when Flowise gave them.
    pub source_documents: Option<Value>,
    /// Tools, when Flowise gave them.
    pub used_tools: Option<Value>,
    /// Why it ended early, when it did.
    pub failure: Option<Failure>,
}

impl Outcome {
    /// The answer `text` as `meter` priced it, ended by `failure` (none:
    /// complete). What it pays:
    /// - complete, or cut where the payer's means ended: `perRequest`, the
    ///   input and the output delivered, each side the larger of Flowise's
    ///   count and the estimate;
    /// - stopped by its owner: the same, even when nothing was delivered
    ///   yet (stopping is a choice, not a failure);
    /// - cut short by a failure (an `error` event, a timeout, a client
    ///   gone): the same once Flowise began to answer (the input was
    ///   consumed), nothing before.
    pub fn metered(meter: &Meter, text: String, failure: Option<Failure>) -> Outcome {
        let pays = match failure {
            None | Some(Failure::Stopped | Failure::CreditsExhausted) => true,
            Some(_) => meter.started(),
        };
        Outcome {
            charge: if pays {
                Charge::capped(meter.cost())
            } else {
                Charge::ZERO
            },
            tokens: meter.tokens(),
            complete: failure.is_none(),
            text,
            source_documents: None,
            used_tools: None,
            failure,
        }
    }

    /// With the sources and tools Flowise gave.
    pub fn with_extras(mut self, sources: Option<Value>, tools: Option<Value>) -> Outcome {
        self.source_documents = sources;
        self.used_tools = tools;
        self
    }

    fn status(&self) -> &'static str {
        if self.complete {
            "complete"
        } else {
            "incomplete"
        }
    }

    /// Whether anything goes to the history (a failure with nothing
    /// delivered stores nothing).
    fn stored(&self) -> bool {
        self.complete || !self.text.is_empty()
    }
}

impl Prepared {
    fn answer(&self, outcome: &Outcome, charged: i64, balance: Option<i64>) -> PredictionAnswer {
        PredictionAnswer {
            session_id: self.session.session_id.clone(),
            message_id: self.message_id.to_string(),
            text: outcome.text.clone(),
            status: outcome.status().to_owned(),
            credits: ChargedCredits { charged, balance },
            source_documents: outcome.source_documents.clone(),
            used_tools: outcome.used_tools.clone(),
            usage: Some(AnswerUsage {
                input_tokens: outcome.tokens.input,
                output_tokens: outcome.tokens.output,
            }),
            reason: outcome.failure.map(|f| f.as_str().to_owned()),
            truncated: outcome.failure == Some(Failure::CreditsExhausted),
        }
    }

    fn usage_metadata(&self, outcome: &Outcome, latency_ms: i64) -> Value {
        let status = match (outcome.complete, outcome.charge == Charge::ZERO) {
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

/// Step (5): the settlement transaction and the history writes, run
/// concurrently and both finished before the answer. The settlement
/// settles the gateway's reservation (finalize for a complete answer,
/// abort for anything else), records usage, reads the balance and
/// completes (or, when nothing was charged for a failure, frees) the
/// `Idempotency-Key`. A history written for a settlement that then fails
/// is marked `incomplete`; a history that fails to be written is logged
/// (the answer is paid for and returned all the same).
pub async fn finish(
    state: &PredictState,
    prepared: &Prepared,
    outcome: &Outcome,
) -> Result<PredictionAnswer, ApiError> {
    let latency_ms = prepared.started.elapsed().as_millis() as i64;
    let history = async {
        if outcome.stored() {
            store_messages(state, prepared, outcome, latency_ms).await
        } else {
            Ok(())
        }
    };
    let (settled, stored) = tokio::join!(settle(state, prepared, outcome, latency_ms), history);
    if let Err(err) = stored {
        tracing::error!(error = %err, message_id = %prepared.message_id, "a paid answer was not stored in the history");
    }
    // Even after a failed history write: its writes stand alone, so the
    // answer may be stored all the same (marking a missing one does nothing).
    if settled.is_err() && outcome.complete {
        let marked = sessions::mark_incomplete(&state.mongo.chat, &prepared.message_id).await;
        if let Err(err) = marked {
            tracing::error!(error = %err, "an unsettled answer was not marked incomplete");
        }
    }
    settled
}

/// The settlement transaction of [`finish`]: the charge, then what goes
/// with it, which can never undo it. The records are written in the
/// charge's transaction; should the store refuse them (a constraint, a
/// value it cannot keep), that transaction is rolled back and the charge
/// settled again with the records apart ([`record_beside_charge`]), so the
/// usual settlement pays no round trip for the guarantee.
async fn settle(
    state: &PredictState,
    prepared: &Prepared,
    outcome: &Outcome,
    latency_ms: i64,
) -> Result<PredictionAnswer, ApiError> {
    let together = (outcome, latency_ms, Records::Together);
    if let Some(answer) = settle_with(state, prepared, together).await? {
        return Ok(answer);
    }
    let apart = (outcome, latency_ms, Records::Apart);
    settle_with(state, prepared, apart).await?.ok_or_else(|| {
        ApiError::Internal(anyhow::anyhow!(
            "a settlement with its records apart did not settle"
        ))
    })
}

/// Where a settlement's records go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Records {
    /// In the charge's transaction (`None` back when they fail: nothing
    /// was committed).
    Together,
    /// In savepoints of it, each retried once, degraded when it fails.
    Apart,
}

/// One settlement transaction, its records placed as `records` says.
async fn settle_with(
    state: &PredictState,
    prepared: &Prepared,
    (outcome, latency_ms, records): (&Outcome, i64, Records),
) -> Result<Option<PredictionAnswer>, ApiError> {
    let how = if outcome.complete {
        Settlement::Finalize
    } else {
        Settlement::Abort
    };
    let hold = prepared.hold();
    let mut tx = crate::ledger::primitives::begin(&state.pg, Durability::Flushed).await?;
    let settled = reservations::settle_prediction(&mut tx, &hold, how, outcome.charge).await?;
    let charged = settled.charged_credits;
    let answer = prepared.answer(outcome, charged, settled.balance_after);
    let mut usage = prepared.usage_metadata(outcome, latency_ms);
    if settled.uncovered_credits > 0 {
        // Flowise's count priced the answer past what its payer could pay.
        usage["uncovered_credits"] = json!(settled.uncovered_credits);
    }
    let beside = Beside {
        prepared,
        usage,
        charged,
        // A failure that charged nothing frees its key for a retry.
        release_key: outcome.failure.is_some() && charged == 0,
        answer: &answer,
    };
    match records {
        Records::Together => {
            if let Err(err) = beside.write(&mut tx).await {
                tracing::warn!(error = %err, message_id = %prepared.message_id, "a settlement's records failed beside its charge; settling the charge with them apart");
                tx.rollback().await?;
                return Ok(None);
            }
        }
        Records::Apart => record_beside_charge(&mut tx, &beside).await,
    }
    crate::ledger::primitives::commit(tx).await?;
    Ok(Some(answer))
}

/// What a settlement writes beside its charge: the usage record and the
/// `Idempotency-Key`'s replay (or its release).
struct Beside<'a> {
    prepared: &'a Prepared,
    usage: Value,
    charged: i64,
    release_key: bool,
    answer: &'a PredictionAnswer,
}

impl Beside<'_> {
    /// Both records.
    async fn write(&self, tx: &mut crate::ledger::Tx<'_>) -> Result<(), ApiError> {
        self.usage(tx).await?;
        self.key(tx).await
    }

    async fn usage(&self, tx: &mut crate::ledger::Tx<'_>) -> Result<(), ApiError> {
        let p = self.prepared;
        let (user, flow, key) = (&p.user_id, p.chatflow_id.as_str(), p.api_key_id);
        let metadata = self.usage.clone();
        crate::usage::record_usage(tx, user, "chat", flow, self.charged, metadata, key).await?;
        Ok(())
    }

    async fn key(&self, tx: &mut crate::ledger::Tx<'_>) -> Result<(), ApiError> {
        let (user, Some(key)) = (&self.prepared.user_id, &self.prepared.key) else {
            return Ok(());
        };
        if self.release_key {
            idempotency::release(tx, user, key, &self.prepared.message_id).await?;
        } else {
            let stored = (axum::http::StatusCode::OK, json!(self.answer));
            let claim = Some(&self.prepared.message_id);
            idempotency::complete(tx, user, key, claim, &stored).await?;
        }
        Ok(())
    }
}

/// Writes `beside` apart from the charge: each record in a savepoint of
/// the settlement's transaction, so that nothing it does (an answer the
/// store refuses, a record that breaks a constraint) can roll the charge
/// back with it. One that fails is logged at error as degraded (the answer
/// is paid for and returned all the same; a key left claimed answers 409
/// `idempotency_in_progress` until it is purged, never a second run).
async fn record_beside_charge(tx: &mut crate::ledger::Tx<'_>, beside: &Beside<'_>) {
    let usage = in_savepoint(tx, |sp| Box::pin(beside.usage(sp))).await;
    if let Err(err) = usage {
        tracing::error!(error = %err, message_id = %beside.prepared.message_id, degraded = "usage", "a paid answer's usage record could not be written");
    }
    let key = in_savepoint(tx, |sp| Box::pin(beside.key(sp))).await;
    if let Err(err) = key {
        tracing::error!(error = %err, message_id = %beside.prepared.message_id, degraded = "replay", "a paid answer's Idempotency-Key could not be completed");
    }
}

/// Runs `write` in a savepoint of `tx`: released when it succeeds, rolled
/// back to (leaving `tx` usable) when it fails.
async fn in_savepoint<'t, F>(tx: &'t mut crate::ledger::Tx<'_>, write: F) -> Result<(), ApiError>
where
    F: for<'s> FnOnce(
        &'s mut crate::ledger::Tx<'t>,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<(), ApiError>> + Send + 's>,
    >,
{
    use sqlx::Acquire;
    let mut savepoint = tx.begin().await?;
    match write(&mut savepoint).await {
        Ok(()) => Ok(savepoint.commit().await?),
        Err(err) => {
            savepoint.rollback().await?;
            Err(err)
        }
    }
}

/// The history of a prediction: the session (when new), the files it
/// used, the question and the answer (`metadata.credits` is the answer's
/// price).
async fn store_messages(
    state: &PredictState,
    prepared: &Prepared,
    outcome: &Outcome,
    latency_ms: i64,
) -> Result<(), ApiError> {
    let question = NewMessage {
        message_id: prepared.user_message_id.clone(),
        role: "user",
        content: prepared.question.clone(),
        status: "complete",
        file_ids: prepared.file_ids.clone(),
        metadata: if prepared.files.is_empty() {
            doc! {}
        } else {
            doc! {"files": prepared.files.clone()}
        },
    };
    let answer = NewMessage {
        message_id: prepared.message_id.to_string(),
        role: "assistant",
        content: outcome.text.clone(),
        status: outcome.status(),
        file_ids: Vec::new(),
        metadata: answer_metadata(outcome, latency_ms),
    };
    let (db, session) = (&state.mongo.chat, &prepared.session);
    let messages = vec![question, answer];
    sessions::record(
        db,
        session,
        prepared.new_session,
        messages,
        &prepared.file_ids,
    )
    .await
}

fn answer_metadata(outcome: &Outcome, latency_ms: i64) -> bson::Document {
    let mut metadata = doc! {
        "credits": outcome.charge.get(),
        "input_tokens": outcome.tokens.input,
        "output_tokens": outcome.tokens.output,
        "latency_ms": latency_ms,
    };
    for (key, value) in [
        ("sourceDocuments", &outcome.source_documents),
        ("usedTools", &outcome.used_tools),
    ] {
        if let Some(value) = value {
            metadata.insert(key, storable(value));
        }
    }
    if let Some(failure) = outcome.failure {
        metadata.insert("error", failure.as_str());
    }
    metadata
}

/// `value` as MongoDB stores it. BSON keeps any text in a string, U+0000
/// included, but a key is NUL-terminated: a NUL in a key (a source's
/// metadata quoting a web page) becomes U+FFFD there, so the history is
/// never refused for it.
fn storable(value: &Value) -> bson::Bson {
    match value {
        Value::Object(map) => bson::Bson::Document(
            map.iter()
                .map(|(k, v)| (k.replace('\0', "\u{FFFD}"), storable(v)))
                .collect(),
        ),
        Value::Array(items) => bson::Bson::Array(items.iter().map(storable).collect()),
        other => bson::to_bson(other).unwrap_or(bson::Bson::Null),
    }
}

/// Releases the whole reservation after Flowise failed before answering
/// (the user pays nothing, the `Idempotency-Key` is freed) and records the
/// failure; returns the error to answer with (502, or 504 for a timeout).
pub async fn fail(state: &PredictState, prepared: &Prepared, error: FlowiseError) -> ApiError {
    let failure = Some(Failure::of(&error));
    let outcome = Outcome::metered(&prepared.meter(), String::new(), failure);
    if let Err(settle_error) = finish(state, prepared, &outcome).await {
        tracing::error!(error = %settle_error, "a failed prediction could not be settled; the expiry job will release it");
    }
    ApiError::from(error)
}

/// Steps (4) and (5), buffered: Flowise gets `budget` (what remains of
/// `FLOWISE_BUFFERED_TIMEOUT_SECONDS` minus [`FINISH_MARGIN`]); past it the
/// answer is 504 and free.
pub async fn answer_buffered(
    state: &PredictState,
    prepared: &Prepared,
    budget: Duration,
) -> Result<PredictionAnswer, ApiError> {
    let flow = prepared.chatflow_id.as_str();
    match state.flowise.predict(flow, &prepared.request, budget).await {
        Ok(answer) => {
            let outcome = buffered_outcome(state, prepared, answer).await;
            finish(state, prepared, &outcome).await
        }
        Err(e) => Err(fail(state, prepared, e).await),
    }
}

/// A whole answer, priced. When its price passes the hold, the hold is
/// topped up as far as the payer's means go; an answer they still cannot
/// pay for is cut to the part they can (`credits_exhausted`, `truncated`),
/// and charged for that part.
async fn buffered_outcome(
    state: &PredictState,
    prepared: &Prepared,
    answer: Prediction,
) -> Outcome {
    let Prediction {
        text,
        source_documents,
        used_tools,
        usage,
    } = answer;
    let reported = usage.unwrap_or_default();
    let mut meter = prepared.meter();
    meter.start();
    let mut whole = meter.clone();
    whole.report(reported);
    whole.deliver(&text);
    if whole.cost() > whole.held() {
        prepared
            .top_up(state, &mut meter, whole.cost() - whole.held())
            .await;
        whole.topped_up(meter.held(), 0);
    }
    let outcome = if whole.cost() <= whole.held() {
        Outcome::metered(&whole, text, None)
    } else {
        let (cut, part) = meter.fit_whole(&text, reported);
        let delivered = text[..cut].to_owned();
        Outcome::metered(&part, delivered, Some(Failure::CreditsExhausted))
    };
    outcome.with_extras(source_documents, used_tools)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_reservation_that_claims_a_key_waits_for_the_disk() {
        let key = RequestKey::new(
            "retry-1".into(),
            PREDICT_ENDPOINT,
            &json!({"question": "hi"}),
        );
        assert_eq!(hold_durability(Some(&key)), Durability::Flushed);
        assert_eq!(hold_durability(None), Durability::Relaxed);
    }

    #[test]
    fn every_failure_shows_as_itself_in_the_history() {
        for failure in FAILURES {
            assert!(
                sessions::FAILURE_CODES.contains(&failure.as_str()),
                "{failure:?} would show as upstream_error"
            );
        }
    }
}
