//! The Flowise client, speaking exactly what `FLOWISE_API.md` records:
//! `POST /api/v1/prediction/{id}` buffered or streamed (SSE framed as
//! `message:\ndata:{"event":..,"data":..}\n\n`, `:heartbeat` comments,
//! `error` events inside a 200 stream, the JSON answer when a flow cannot
//! stream, and a streamed request that never answers), and
//! `GET /api/v1/chatflows` (a bare array with JSON-string fields).

use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::config::{FlowiseConfig, Secret};

/// Why a call to Flowise failed.
#[derive(Debug, thiserror::Error)]
pub enum FlowiseError {
    /// Flowise answered an error status (its message, when it gave one).
    #[error("Flowise answered {status}: {message}")]
    Status {
        /// HTTP status.
        status: u16,
        /// Flowise's `message`.
        message: String,
    },
    /// No answer in time.
    #[error("Flowise timed out: {0}")]
    Timeout(String),
    /// Flowise could not be reached.
    #[error("Flowise unreachable: {0}")]
    Unreachable(String),
    /// Flowise answered something this client does not understand.
    #[error("Flowise answered unexpectedly: {0}")]
    Malformed(String),
    /// An `error` event inside a stream.
    #[error("Flowise reported an error: {0}")]
    Stream(String),
}

impl From<FlowiseError> for crate::ApiError {
    fn from(err: FlowiseError) -> Self {
        match err {
            FlowiseError::Timeout(_) => crate::ApiError::GatewayTimeout {
                detail: err.to_string(),
            },
            _ => crate::ApiError::BadGateway {
                detail: err.to_string(),
            },
        }
    }
}

/// Token counts: what a prediction is priced on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TokenUsage {
    /// Prompt tokens.
    pub input: i64,
    /// Completion tokens.
    pub output: i64,
}

/// The most tokens one report may claim for a side (a bound that keeps
/// every sum and price far from overflow).
pub const MAX_REPORTED_TOKENS: i64 = 1_000_000_000_000;

/// Token counts Flowise reported: either side may be missing (then it is
/// estimated, never taken as 0). A stream may report several times (one
/// `usageMetadata` event per LLM call of a flow): the reports are summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReportedUsage {
    /// Prompt tokens, when reported.
    pub input: Option<i64>,
    /// Completion tokens, when reported.
    pub output: Option<i64>,
}

impl ReportedUsage {
    /// Adds another report: each side is the sum of the reports that have it.
    pub fn plus(self, other: ReportedUsage) -> ReportedUsage {
        let sum = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (None, None) => None,
            (a, b) => Some(
                a.unwrap_or(0)
                    .saturating_add(b.unwrap_or(0))
                    .min(MAX_REPORTED_TOKENS),
            ),
        };
        ReportedUsage {
            input: sum(self.input, other.input),
            output: sum(self.output, other.output),
        }
    }

    /// The counts to price on: each missing side is `estimate`'s.
    pub fn or_estimate(self, estimate: TokenUsage) -> TokenUsage {
        TokenUsage {
            input: self.input.unwrap_or(estimate.input),
            output: self.output.unwrap_or(estimate.output),
        }
    }

    /// Reads the counts from a `usageMetadata` event or an answer's
    /// `metrics`, whichever naming the LLM node used (negative counts are
    /// ignored, huge ones capped).
    pub fn from_value(v: &Value) -> Option<ReportedUsage> {
        let pick = |names: &[&str]| {
            names
                .iter()
                .find_map(|n| find_number(v, n))
                .filter(|n| *n >= 0)
                .map(|n| n.min(MAX_REPORTED_TOKENS))
        };
        let input = pick(&[
            "input_tokens",
            "inputTokens",
            "prompt_tokens",
            "promptTokens",
        ]);
        let output = pick(&[
            "output_tokens",
            "outputTokens",
            "completion_tokens",
            "completionTokens",
        ]);
        match (input, output) {
            (None, None) => None,
            (input, output) => Some(ReportedUsage { input, output }),
        }
    }
}

fn find_number(v: &Value, key: &str) -> Option<i64> {
    match v {
        Value::Object(map) => map
            .get(key)
            .and_then(Value::as_i64)
            .or_else(|| map.values().find_map(|x| find_number(x, key))),
        Value::Array(items) => items.iter().find_map(|x| find_number(x, key)),
        _ => None,
    }
}

/// A buffered prediction.
#[derive(Debug, Clone, PartialEq)]
pub struct Prediction {
    /// The answer.
    pub text: String,
    /// `sourceDocuments`, when present.
    pub source_documents: Option<Value>,
    /// `usedTools`, when present.
    pub used_tools: Option<Value>,
    /// Token counts, when reported in `metrics`.
    pub usage: Option<ReportedUsage>,
}

impl Prediction {
    fn from_json(v: Value) -> Result<Prediction, FlowiseError> {
        let text = match v.get("text") {
            Some(Value::String(s)) => s.clone(),
            Some(other) if !other.is_null() => other.to_string(),
            // Some flows answer structured output under `json`.
            _ => match v.get("json") {
                Some(j) => j.to_string(),
                None => return Err(FlowiseError::Malformed("no text in the answer".into())),
            },
        };
        Ok(Prediction {
            text,
            source_documents: v.get("sourceDocuments").cloned().filter(|x| !x.is_null()),
            used_tools: v.get("usedTools").cloned().filter(|x| !x.is_null()),
            usage: v.get("metrics").and_then(ReportedUsage::from_value),
        })
    }
}

/// One event of a stream: `{"event": name, "data": ...}`.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamEvent {
    /// Event name (`start`, `token`, `metadata`, `end`, `error`, ...).
    pub event: String,
    /// Its data.
    pub data: Value,
}

/// What a streamed request turned into.
pub enum StreamStart {
    /// Events as they arrive (heartbeats removed); the stream ends after
    /// `end`, on a transport error, or when the whole-call timeout passes.
    Events(Pin<Box<dyn Stream<Item = Result<StreamEvent, FlowiseError>> + Send>>),
    /// The flow cannot stream: Flowise answered the JSON prediction.
    Json(Prediction),
}

/// A prediction request.
#[derive(Debug, Clone, Default)]
pub struct PredictionRequest {
    /// The question.
    pub question: String,
    /// Our session id, sent as `overrideConfig.sessionId` (and `chatId`) so
    /// that Flowise memory is per session.
    pub session_id: String,
    /// Client's `overrideConfig` (its `sessionId` is replaced by ours).
    pub override_config: Option<Value>,
    /// Prior turns, `[{role: userMessage|apiMessage, content}]`.
    pub history: Option<Value>,
    /// Flowise uploads `[{type, name, mime, data}]`.
    pub uploads: Vec<Value>,
}

impl PredictionRequest {
    fn body(&self, streaming: bool) -> Value {
        let mut override_config = match &self.override_config {
            Some(Value::Object(map)) => Value::Object(map.clone()),
            _ => json!({}),
        };
        override_config["sessionId"] = json!(self.session_id);
        let mut body = json!({
            "question": self.question,
            "chatId": self.session_id,
            "overrideConfig": override_config,
            "streaming": streaming,
        });
        if let Some(history) = &self.history {
            body["history"] = history.clone();
        }
        if !self.uploads.is_empty() {
            body["uploads"] = json!(self.uploads);
        }
        body
    }
}

/// A chatflow as `GET /api/v1/chatflows` lists it.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteChatflow {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Nullable.
    pub deployed: Option<bool>,
    /// Nullable.
    pub is_public: Option<bool>,
    /// `CHATFLOW`, `AGENTFLOW`, ...
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// A JSON *string*.
    pub chatbot_config: Option<String>,
    /// A JSON string; may hold a description.
    pub category: Option<String>,
    /// Last change in Flowise.
    pub updated_date: Option<String>,
    /// The flow's nodes and edges, a JSON *string*.
    pub flow_data: Option<String>,
    /// The flow's API settings, a JSON *string*: which node inputs a
    /// request's `overrideConfig` may set.
    pub api_config: Option<String>,
}

/// The node input each chat node reads its system prompt from, by the
/// node's `data.name` (Flowise 3.1's components): chains and engines read
/// `systemMessagePrompt`, agents `systemMessage`.
pub const SYSTEM_PROMPT_INPUTS: &[(&str, &str)] = &[
    ("conversationChain", "systemMessagePrompt"),
    ("chatPromptTemplate", "systemMessagePrompt"),
    ("simpleChatEngine", "systemMessagePrompt"),
    ("contextChatEngine", "systemMessagePrompt"),
    ("seqAgent", "systemMessagePrompt"),
    ("seqLLMNode", "systemMessagePrompt"),
    ("seqConditionAgent", "systemMessagePrompt"),
    ("toolAgent", "systemMessage"),
    ("conversationalAgent", "systemMessage"),
    ("conversationalRetrievalToolAgent", "systemMessage"),
    ("xmlAgent", "systemMessage"),
    ("openAIToolAgentLlamaIndex", "systemMessage"),
];

/// What `flowData` holds of each node: its `data` object.
fn flow_nodes(flow_data: Option<&str>) -> Vec<Value> {
    let parsed: Option<Value> = flow_data.and_then(|d| serde_json::from_str(d).ok());
    parsed
        .and_then(|v| v.get("nodes").and_then(Value::as_array).cloned())
        .unwrap_or_default()
        .into_iter()
        .filter_map(|node| node.get("data").cloned())
        .collect()
}

/// The node inputs `apiConfig` lets a request override, by node label
/// (`{"overrideConfig": {"status": true, "nodes": {"<label>": [{"name",
/// "enabled"}]}}}`); none while overrides are off.
fn enabled_overrides(api_config: Option<&str>) -> Vec<(String, String)> {
    let parsed: Option<Value> = api_config.and_then(|c| serde_json::from_str(c).ok());
    let Some(config) = parsed.and_then(|v| v.get("overrideConfig").cloned()) else {
        return Vec::new();
    };
    if config.get("status").and_then(Value::as_bool) != Some(true) {
        return Vec::new();
    }
    let nodes = config.get("nodes").and_then(Value::as_object);
    nodes
        .into_iter()
        .flatten()
        .flat_map(|(label, params)| {
            params
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p.get("enabled").and_then(Value::as_bool) == Some(true))
                .filter_map(|p| p.get("name").and_then(Value::as_str))
                .map(move |name| (label.clone(), name.to_owned()))
        })
        .collect()
}

impl RemoteChatflow {
    /// Whether Flowise runs it through the prediction API: an agentflow
    /// whose Start node takes a webhook or a schedule is refused there
    /// (Flowise 3.1.3 and later; its `flowData` is the only place that
    /// says so).
    pub fn invocable(&self) -> bool {
        if self.kind.as_deref() != Some("AGENTFLOW") {
            return true;
        }
        !flow_nodes(self.flow_data.as_deref()).iter().any(|node| {
            node.get("name").and_then(Value::as_str) == Some("startAgentflow")
                && matches!(
                    node.pointer("/inputs/startInputType")
                        .and_then(Value::as_str),
                    Some("webhookTrigger" | "scheduleInput")
                )
        })
    }

    /// The input a request may set the flow's system prompt through: the
    /// one its chat node reads ([`SYSTEM_PROMPT_INPUTS`]), when the flow's
    /// override settings enable it for that node; else `None`.
    pub fn system_prompt_input(&self) -> Option<String> {
        let enabled = enabled_overrides(self.api_config.as_deref());
        flow_nodes(self.flow_data.as_deref())
            .iter()
            .find_map(|node| {
                let name = node.get("name").and_then(Value::as_str)?;
                let label = node.get("label").and_then(Value::as_str)?;
                let (_, input) = SYSTEM_PROMPT_INPUTS.iter().find(|(n, _)| *n == name)?;
                enabled
                    .iter()
                    .any(|(l, p)| l == label && p == input)
                    .then(|| (*input).to_owned())
            })
    }

    /// A description, when the flow's `chatbotConfig` (a JSON string) has one.
    pub fn description(&self) -> Option<String> {
        let config: Value = serde_json::from_str(self.chatbot_config.as_deref()?).ok()?;
        ["description", "welcomeMessage"]
            .iter()
            .find_map(|k| config.get(*k).and_then(Value::as_str).map(str::to_owned))
    }
}

/// The client. Built once per cold start; cheap to clone.
#[derive(Clone)]
pub struct FlowiseClient {
    http: reqwest::Client,
    base: String,
    api_key: Option<Secret>,
    timeout: Duration,
    first_byte_timeout: Duration,
    buffered_timeout: Duration,
}

/// Flowise's error text, for the log only (never for a client).
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.get("message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(200).collect())
}

/// An answer's JSON, or Flowise's error (`{statusCode, success, message}`).
fn answer_json(status: u16, text: &str) -> Result<Value, FlowiseError> {
    if status >= 400 {
        return Err(FlowiseError::Status {
            status,
            message: error_message(text),
        });
    }
    serde_json::from_str(text).map_err(|e| FlowiseError::Malformed(e.to_string()))
}

fn transport_error(err: reqwest::Error) -> FlowiseError {
    if err.is_timeout() {
        FlowiseError::Timeout(err.to_string())
    } else {
        FlowiseError::Unreachable(err.to_string())
    }
}

impl FlowiseClient {
    /// Builds the client.
    pub fn new(config: &FlowiseConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()?;
        Ok(FlowiseClient {
            http,
            base: config.api_url.clone(),
            api_key: config.api_key.clone(),
            timeout: config.timeout,
            first_byte_timeout: config.first_byte_timeout,
            buffered_timeout: config.buffered_timeout,
        })
    }

    /// `FLOWISE_TIMEOUT_SECONDS`: the longest a prediction may take.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// `FLOWISE_BUFFERED_TIMEOUT_SECONDS`: the time a buffered prediction
    /// has, counted from the request's arrival.
    pub fn buffered_timeout(&self) -> Duration {
        self.buffered_timeout
    }

    fn post(&self, path: &str) -> reqwest::RequestBuilder {
        let req = self.http.post(format!("{}{path}", self.base));
        match &self.api_key {
            Some(key) => req.bearer_auth(key.expose()),
            None => req,
        }
    }

    /// A buffered prediction, bounded by `timeout` (at most
    /// `FLOWISE_TIMEOUT_SECONDS`).
    pub async fn predict(
        &self,
        chatflow_id: &str,
        request: &PredictionRequest,
        timeout: Duration,
    ) -> Result<Prediction, FlowiseError> {
        if timeout.is_zero() {
            return Err(FlowiseError::Timeout("no time was left for Flowise".into()));
        }
        let response = self
            .post(&format!("/api/v1/prediction/{chatflow_id}"))
            .timeout(timeout.min(self.timeout))
            .json(&request.body(false))
            .send()
            .await
            .map_err(transport_error)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(transport_error)?;
        Prediction::from_json(answer_json(status, &text)?)
    }

    /// A streamed prediction. Waits at most `FLOWISE_FIRST_BYTE_TIMEOUT_SECONDS`
    /// for the answer to start (Flowise sends no answer at all for some
    /// failures); the returned events then enforce it again for the first
    /// data event (heartbeats do not count) and `FLOWISE_TIMEOUT_SECONDS`
    /// for the whole call.
    pub async fn predict_stream(
        &self,
        chatflow_id: &str,
        request: &PredictionRequest,
    ) -> Result<StreamStart, FlowiseError> {
        let started = tokio::time::Instant::now();
        let send = self
            .post(&format!("/api/v1/prediction/{chatflow_id}"))
            .json(&request.body(true))
            .send();
        let response = match tokio::time::timeout(self.first_byte_timeout, send).await {
            Err(_) => {
                return Err(FlowiseError::Timeout(format!(
                    "no answer within {}s",
                    self.first_byte_timeout.as_secs()
                )))
            }
            Ok(r) => r.map_err(transport_error)?,
        };
        let status = response.status().as_u16();
        let is_sse = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status >= 400 || !is_sse {
            let rest = self.timeout.saturating_sub(started.elapsed());
            let text = tokio::time::timeout(rest, response.text())
                .await
                .map_err(|_| FlowiseError::Timeout("the answer did not finish in time".into()))?
                .map_err(transport_error)?;
            return Ok(StreamStart::Json(Prediction::from_json(answer_json(
                status, &text,
            )?)?));
        }
        let deadline = started + self.timeout;
        let first_deadline = started + self.first_byte_timeout;
        Ok(StreamStart::Events(Box::pin(sse_events(
            response.bytes_stream(),
            first_deadline,
            deadline,
        ))))
    }

    /// `GET /api/v1/chatflows`: every chatflow of the API key's workspace.
    pub async fn list_chatflows(&self) -> Result<Vec<RemoteChatflow>, FlowiseError> {
        let mut req = self
            .http
            .get(format!("{}/api/v1/chatflows", self.base))
            .timeout(self.timeout);
        if let Some(key) = &self.api_key {
            req = req.bearer_auth(key.expose());
        }
        let response = req.send().await.map_err(transport_error)?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(transport_error)?;
        // A bare array; with ?page&limit it would be {data, total}.
        let value = answer_json(status, &text)?;
        let items = match value {
            Value::Array(items) => items,
            Value::Object(mut map) => match map.remove("data") {
                Some(Value::Array(items)) => items,
                _ => return Err(FlowiseError::Malformed("no chatflow list".into())),
            },
            _ => return Err(FlowiseError::Malformed("no chatflow list".into())),
        };
        items
            .into_iter()
            .map(|v| serde_json::from_value(v).map_err(|e| FlowiseError::Malformed(e.to_string())))
            .collect()
    }
}

/// Reads Flowise's events out of an SSE body, within the deadlines.
struct SseReader<S> {
    body: S,
    buffer: BytesMut,
    seen_data: bool,
    done: bool,
    first_deadline: tokio::time::Instant,
    deadline: tokio::time::Instant,
}

impl<S> SseReader<S>
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    /// The next event in the buffer, if a whole frame with data is there
    /// (heartbeats and empty frames are skipped).
    fn buffered_event(&mut self) -> Option<StreamEvent> {
        while let Some(frame) = take_frame(&mut self.buffer) {
            let Some(payload) = frame_data(&frame) else {
                continue;
            };
            self.seen_data = true;
            let event = parse_event(payload);
            if event.event == "end" {
                self.done = true;
            }
            return Some(event);
        }
        None
    }

    /// Reads more of the body: `Err` with the event that ends the stream
    /// (a timeout, an early end, a transport error).
    async fn read_more(&mut self) -> Result<(), FlowiseError> {
        let until = if self.seen_data {
            self.deadline
        } else {
            self.first_deadline.min(self.deadline)
        };
        match tokio::time::timeout_at(until, self.body.next()).await {
            Err(_) => Err(FlowiseError::Timeout(
                if self.seen_data {
                    "the stream did not finish in time"
                } else {
                    "no data event arrived in time"
                }
                .into(),
            )),
            Ok(None) => Err(FlowiseError::Stream(
                "the stream ended before its end event".into(),
            )),
            Ok(Some(Err(e))) => Err(transport_error(e)),
            Ok(Some(Ok(chunk))) => {
                self.buffer.extend_from_slice(&chunk);
                Ok(())
            }
        }
    }

    /// The next event, or the error that ends the stream, or `None` once
    /// it has ended.
    async fn next_event(&mut self) -> Option<Result<StreamEvent, FlowiseError>> {
        loop {
            if self.done {
                return None;
            }
            if let Some(event) = self.buffered_event() {
                return Some(Ok(event));
            }
            if let Err(e) = self.read_more().await {
                self.done = true;
                return Some(Err(e));
            }
        }
    }
}

/// One frame's JSON `{"event": .., "data": ..}`; a payload that is not
/// JSON is a `message` event carrying the text.
fn parse_event(payload: String) -> StreamEvent {
    match serde_json::from_str::<Value>(&payload) {
        Ok(v) => StreamEvent {
            event: v
                .get("event")
                .and_then(Value::as_str)
                .unwrap_or("message")
                .to_owned(),
            data: v.get("data").cloned().unwrap_or(Value::Null),
        },
        Err(_) => StreamEvent {
            event: "message".into(),
            data: Value::String(payload),
        },
    }
}

/// Splits an SSE byte stream into events. Frames end with a blank line;
/// comment lines (`:heartbeat`) and unknown fields (`message:`) are
/// skipped; only `data:` lines carry the event, which works for both the
/// 3.1.2 framing and the older `message\ndata:` one. The first data event
/// must arrive by `first_deadline` and the whole stream end by `deadline`.
pub fn sse_events<S>(
    body: S,
    first_deadline: tokio::time::Instant,
    deadline: tokio::time::Instant,
) -> impl Stream<Item = Result<StreamEvent, FlowiseError>> + Send
where
    S: Stream<Item = Result<Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    let reader = SseReader {
        body,
        buffer: BytesMut::new(),
        seen_data: false,
        done: false,
        first_deadline,
        deadline,
    };
    futures_util::stream::unfold(reader, |mut r| async move {
        r.next_event().await.map(|item| (item, r))
    })
}

/// Removes one complete frame (up to a blank line, `\n\n` or
/// `\r\n\r\n`) from the buffer. Frames end in ASCII, so a multi-byte
/// character is never split by this cut.
fn take_frame(buffer: &mut BytesMut) -> Option<String> {
    let lf = buffer.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buffer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    let (at, len) = match (lf, crlf) {
        (Some(a), Some(b)) => {
            if a.0 <= b.0 {
                a
            } else {
                b
            }
        }
        (a, b) => a.or(b)?,
    };
    let frame = buffer.split_to(at + len);
    Some(String::from_utf8_lossy(&frame[..at]).replace('\r', ""))
}

/// The `data:` payload of a frame (lines joined with `\n`), `None` for a
/// comment-only frame.
fn frame_data(frame: &str) -> Option<String> {
    let lines: Vec<&str> = frame
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    (!lines.is_empty()).then(|| lines.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events(raw: &'static [&'static [u8]]) -> Vec<Result<StreamEvent, String>> {
        let chunks = raw
            .iter()
            .map(|c| Ok::<_, reqwest::Error>(Bytes::from_static(c)));
        let far = tokio::time::Instant::now() + Duration::from_secs(60);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            sse_events(futures_util::stream::iter(chunks), far, far)
                .map(|r| r.map_err(|e| e.to_string()))
                .collect()
                .await
        })
    }

    #[test]
    fn the_captured_stream_parses_into_its_events() {
        let got = events(&[
            b"message:\ndata:{\"event\":\"start\",\"data\":\"\"}\n\nmessage:\ndata:{\"event\":\"token\",\"data\":\"Hello \"}\n\n",
            b"message:\ndata:{\"event\":\"token\",\"data\":\"wor",
            b"ld\"}\n\n:heartbeat\n\nmessage:\ndata:{\"event\":\"metadata\",\"data\":{\"chatId\":\"c\"}}\n\n",
            b"message:\ndata:{\"event\":\"end\",\"data\":\"[DONE]\"}\n\n",
        ]);
        let names: Vec<String> = got
            .iter()
            .map(|e| e.as_ref().unwrap().event.clone())
            .collect();
        assert_eq!(names, ["start", "token", "token", "metadata", "end"]);
        assert_eq!(got[2].as_ref().unwrap().data, json!("world"));
    }

    #[test]
    fn the_old_framing_and_crlf_parse_too() {
        let got = events(&[b"message\r\ndata:{\"event\":\"error\",\"data\":\"boom\"}\r\n\r\nmessage\ndata:{\"event\":\"end\",\"data\":\"[DONE]\"}\n\n"]);
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].as_ref().unwrap().event, "error");
    }

    #[test]
    fn a_stream_cut_before_end_is_an_error() {
        let got = events(&[b"message:\ndata:{\"event\":\"token\",\"data\":\"x\"}\n\n"]);
        assert_eq!(got.len(), 2);
        assert!(got[1].is_err());
    }

    #[test]
    fn usage_is_read_whatever_the_naming() {
        assert_eq!(
            ReportedUsage::from_value(
                &json!({"usage": {"prompt_tokens": 12, "completion_tokens": 5}})
            ),
            Some(ReportedUsage {
                input: Some(12),
                output: Some(5)
            })
        );
        assert_eq!(
            ReportedUsage::from_value(&json!([{"input_tokens": 3, "output_tokens": 4}])),
            Some(ReportedUsage {
                input: Some(3),
                output: Some(4)
            })
        );
        assert_eq!(ReportedUsage::from_value(&json!({"nothing": 1})), None);
    }

    #[test]
    fn a_side_left_out_is_estimated_and_reports_are_summed() {
        let only_output = ReportedUsage::from_value(&json!({"output_tokens": 7})).unwrap();
        assert_eq!(only_output.input, None);
        let estimate = TokenUsage {
            input: 40,
            output: 9,
        };
        assert_eq!(
            only_output.or_estimate(estimate),
            TokenUsage {
                input: 40,
                output: 7
            }
        );
        let total = ReportedUsage::default()
            .plus(
                ReportedUsage::from_value(&json!({"input_tokens": 10, "output_tokens": 2}))
                    .unwrap(),
            )
            .plus(
                ReportedUsage::from_value(&json!({"input_tokens": 5, "output_tokens": 3})).unwrap(),
            );
        assert_eq!(
            total.or_estimate(estimate),
            TokenUsage {
                input: 15,
                output: 5
            }
        );
        // A negative count is no report; a huge one is capped.
        assert_eq!(
            ReportedUsage::from_value(&json!({"input_tokens": -5, "output_tokens": i64::MAX})),
            Some(ReportedUsage {
                input: None,
                output: Some(MAX_REPORTED_TOKENS)
            })
        );
    }

    #[test]
    fn the_request_carries_our_session_id_in_override_config() {
        let req = PredictionRequest {
            question: "q".into(),
            session_id: "ours".into(),
            override_config: Some(json!({"sessionId": "theirs", "vars": {"a": 1}})),
            ..Default::default()
        };
        let body = req.body(true);
        assert_eq!(body["overrideConfig"]["sessionId"], "ours");
        assert_eq!(body["overrideConfig"]["vars"]["a"], 1);
        assert_eq!(body["streaming"], true);
        assert!(body.get("uploads").is_none());
    }

    #[test]
    fn a_flow_started_by_a_webhook_or_a_schedule_is_not_invocable() {
        let flow = |kind: &str, start: &str| -> RemoteChatflow {
            let nodes = json!({"nodes": [{"id": "startAgentflow_0", "data": {
                "name": "startAgentflow", "label": "Start",
                "inputs": {"startInputType": start}}}], "edges": []});
            serde_json::from_value(json!({"id": "f", "name": "n", "type": kind,
                "flowData": nodes.to_string()}))
            .unwrap()
        };
        assert!(!flow("AGENTFLOW", "webhookTrigger").invocable());
        assert!(!flow("AGENTFLOW", "scheduleInput").invocable());
        assert!(flow("AGENTFLOW", "chatInput").invocable());
        assert!(flow("AGENTFLOW", "formInput").invocable());
        // Only an agentflow runs its Start node.
        assert!(flow("CHATFLOW", "webhookTrigger").invocable());
    }

    #[test]
    fn the_system_prompt_input_is_the_nodes_own_and_only_when_enabled() {
        let flow = |node: &str, api_config: Value| -> RemoteChatflow {
            let nodes = json!({"nodes": [{"id": "n_0", "data": {
                "name": node, "label": "The Node", "inputs": {}}}], "edges": []});
            serde_json::from_value(json!({"id": "f", "name": "n", "type": "CHATFLOW",
                "flowData": nodes.to_string(), "apiConfig": api_config.to_string()}))
            .unwrap()
        };
        let enabled = |param: &str, status: bool| {
            json!({"overrideConfig": {"status": status, "nodes": {"The Node": [
                {"label": "System Message", "name": param, "type": "string", "enabled": true}]}}})
        };
        let chain = flow("conversationChain", enabled("systemMessagePrompt", true));
        assert_eq!(
            chain.system_prompt_input().as_deref(),
            Some("systemMessagePrompt")
        );
        let agent = flow("toolAgent", enabled("systemMessage", true));
        assert_eq!(
            agent.system_prompt_input().as_deref(),
            Some("systemMessage")
        );
        // A chain ignores systemMessage; overrides switched off take nothing.
        assert_eq!(
            flow("conversationChain", enabled("systemMessage", true)).system_prompt_input(),
            None
        );
        assert_eq!(
            flow("conversationChain", enabled("systemMessagePrompt", false)).system_prompt_input(),
            None
        );
        assert_eq!(
            flow("conversationChain", Value::Null).system_prompt_input(),
            None
        );
    }

    #[test]
    fn a_description_comes_from_the_chatbot_config_string() {
        let flow: RemoteChatflow = serde_json::from_value(json!({
            "id": "f", "name": "n", "deployed": null, "isPublic": null,
            "chatbotConfig": "{\"welcomeMessage\": \"Hi!\"}"
        }))
        .unwrap();
        assert_eq!(flow.description().as_deref(), Some("Hi!"));
        assert_eq!(flow.is_public, None);
    }
}
