//! What `/v1` answers: models, a `chat.completion`, and a stream of
//! `chat.completion.chunk` events ([`Chunks`], the OpenAI wire of the
//! prediction relay), each with the credits charged in an extension
//! field (`credits`) and the session the turn was stored in
//! (`session_id`).

use serde::Serialize;
use serde_json::json;
use shared::chat::chatflows::ChatflowDoc;
use shared::flowise::StreamEvent;
use shared::prediction::stream::Wire;
use shared::prediction::{ChargedCredits, Failure, PredictionAnswer};

use super::envelope::envelope;

/// One model: a chatflow the caller may use.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Model {
    /// The chatflow id (what `model` takes).
    pub id: String,
    /// `model`.
    pub object: &'static str,
    /// When the gateway last synced it (Unix seconds).
    pub created: i64,
    /// `flowise`.
    pub owned_by: &'static str,
    /// The chatflow's name.
    pub name: String,
    /// Its description, when it has one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

impl Model {
    /// The model of `flow`.
    pub fn of(flow: &ChatflowDoc) -> Model {
        Model {
            id: flow.chatflow_id.clone(),
            object: "model",
            created: flow.synced_at.timestamp_millis() / 1000,
            owned_by: "flowise",
            name: flow.name.clone(),
            description: flow.description.clone(),
        }
    }
}

/// `GET /v1/models`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct ModelList {
    /// `list`.
    pub object: &'static str,
    /// The chatflows the caller may use (through their key's list, when
    /// they came with a key), by name.
    pub data: Vec<Model>,
}

/// Token counts, as OpenAI reports them.
#[derive(Debug, Clone, Copy, Serialize, utoipa::ToSchema)]
pub struct Usage {
    /// Input tokens.
    pub prompt_tokens: i64,
    /// Output tokens.
    pub completion_tokens: i64,
    /// Both.
    pub total_tokens: i64,
}

impl Usage {
    fn of(answer: &PredictionAnswer) -> Usage {
        let (input, output) = answer
            .usage
            .map_or((0, 0), |u| (u.input_tokens, u.output_tokens));
        Usage {
            prompt_tokens: input,
            completion_tokens: output,
            total_tokens: input + output,
        }
    }
}

/// The assistant's message.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct AssistantMessage {
    /// `assistant`.
    pub role: &'static str,
    /// The answer.
    pub content: String,
}

/// The one choice.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Choice {
    /// 0.
    pub index: u32,
    /// The answer.
    pub message: AssistantMessage,
    /// `stop`, or `length` when the answer was cut where its payer's
    /// means ended.
    pub finish_reason: &'static str,
}

/// A buffered completion: `chat.completion`.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Completion {
    /// `chatcmpl-<message id>`.
    pub id: String,
    /// `chat.completion`.
    pub object: &'static str,
    /// Unix seconds.
    pub created: i64,
    /// The chatflow id.
    pub model: String,
    /// One choice.
    pub choices: Vec<Choice>,
    /// The tokens it was priced on.
    pub usage: Usage,
    /// Extension: credits charged and the balance after.
    pub credits: ChargedCredits,
    /// Extension: the session the turn was stored in.
    pub session_id: String,
}

/// The id of a completion for the answer `message_id`.
pub fn completion_id(message_id: &str) -> String {
    format!("chatcmpl-{message_id}")
}

/// Now, in Unix seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

impl Completion {
    /// The completion of a settled answer.
    pub fn of(answer: &PredictionAnswer, model: &str) -> Completion {
        Completion {
            id: completion_id(&answer.message_id),
            object: "chat.completion",
            created: now(),
            model: model.to_owned(),
            choices: vec![Choice {
                index: 0,
                message: AssistantMessage {
                    role: "assistant",
                    content: answer.text.clone(),
                },
                // A buffered answer that failed is an error, never a completion.
                finish_reason: finish_reason(answer).unwrap_or("stop"),
            }],
            usage: Usage::of(answer),
            credits: answer.credits.clone(),
            session_id: answer.session_id.clone(),
        }
    }
}

/// The stream's frames: `data: {chunk}` lines, then `data: [DONE]`.
pub struct Chunks {
    id: String,
    model: String,
    created: i64,
    include_usage: bool,
    timed_out: bool,
}

fn data(value: &serde_json::Value) -> bytes::Bytes {
    bytes::Bytes::from(format!("data: {value}\n\n"))
}

fn done() -> bytes::Bytes {
    bytes::Bytes::from_static(b"data: [DONE]\n\n")
}

impl Chunks {
    /// The chunks of the answer `message_id` of `model`.
    pub fn new(message_id: &str, model: &str, include_usage: bool) -> Chunks {
        Chunks {
            id: completion_id(message_id),
            model: model.to_owned(),
            created: now(),
            include_usage,
            timed_out: false,
        }
    }

    fn chunk(&self, choices: serde_json::Value) -> serde_json::Value {
        json!({"id": self.id, "object": "chat.completion.chunk", "created": self.created,
               "model": self.model, "choices": choices})
    }

    fn delta(&self, delta: serde_json::Value, finish: Option<&str>) -> serde_json::Value {
        self.chunk(json!([{"index": 0, "delta": delta, "finish_reason": finish}]))
    }

    /// A stored answer replayed (an `Idempotency-Key` used before): the
    /// whole text in one chunk, then the closing chunks.
    pub fn replay(mut self, answer: &PredictionAnswer) -> Vec<bytes::Bytes> {
        let mut frames = self.opening();
        frames.push(data(&self.delta(json!({"content": answer.text}), None)));
        frames.extend(self.closing(Ok(answer)));
        frames
    }
}

/// How a settled answer finishes as a completion: `stop` when complete or
/// stopped by its owner, `length` when cut where its payer's means ended,
/// `None` for an answer a failure cut short.
pub fn finish_reason(answer: &PredictionAnswer) -> Option<&'static str> {
    match (answer.status.as_str(), answer.reason.as_deref()) {
        ("complete", _) | (_, Some("stopped")) => Some("stop"),
        (_, Some("credits_exhausted")) => Some("length"),
        _ => None,
    }
}

impl Wire for Chunks {
    fn opening(&mut self) -> Vec<bytes::Bytes> {
        vec![data(
            &self.delta(json!({"role": "assistant", "content": ""}), None),
        )]
    }

    fn event(&mut self, event: &StreamEvent) -> Option<bytes::Bytes> {
        // `start` carries the first token, which the first `token` repeats.
        match (event.event.as_str(), event.data.as_str()) {
            ("token", Some(piece)) if !piece.is_empty() => {
                Some(data(&self.delta(json!({"content": piece}), None)))
            }
            _ => None,
        }
    }

    fn broke(&mut self, failure: Failure) -> Option<bytes::Bytes> {
        // Said once, in the closing error chunk.
        self.timed_out = failure == Failure::UpstreamTimeout;
        None
    }

    /// A complete answer, one its owner stopped, or one cut where its
    /// payer's means ended: the finishing chunk (`finish_reason` `stop`,
    /// or `length` for the last, with the credits), the usage chunk when
    /// asked for, `[DONE]`. An answer cut short otherwise, or a
    /// settlement that failed: an error chunk, then `[DONE]`.
    fn closing(&mut self, settled: Result<&PredictionAnswer, &str>) -> Vec<bytes::Bytes> {
        let mut frames = Vec::new();
        match settled {
            Ok(answer) if finish_reason(answer).is_some() => {
                let mut last = self.delta(json!({}), finish_reason(answer));
                last["credits"] = json!(answer.credits);
                last["session_id"] = json!(answer.session_id);
                frames.push(data(&last));
                if self.include_usage {
                    let mut usage = self.chunk(json!([]));
                    usage["usage"] = json!(Usage::of(answer));
                    frames.push(data(&usage));
                }
            }
            Ok(answer) => {
                let (status, code, what) = if self.timed_out {
                    (504, "upstream_timeout", "did not finish the answer in time")
                } else {
                    (
                        502,
                        "upstream_error",
                        "stopped before the answer was complete",
                    )
                };
                let message = format!(
                    "the chat service {what}; {} credits were charged for the part delivered",
                    answer.credits.charged
                );
                let status = axum::http::StatusCode::from_u16(status).unwrap_or_default();
                frames.push(data(&envelope(status, code, &message, None)));
            }
            Err(message) => {
                let status = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
                frames.push(data(&envelope(status, "settlement_failed", message, None)));
            }
        }
        frames.push(done());
        frames
    }
}
