//! A streamed prediction's frames: Flowise's events relayed as
//! `event: <name>\ndata: <json>\n\n` after a `session` frame and before
//! an `end` frame with the credits, a stored answer replayed as a short
//! stream, and a flow that cannot stream answering JSON.

use serde_json::{json, Value};

use super::{finish, Failure, Outcome, PredictState, PredictionAnswer, Prepared};
use crate::flowise::{FlowiseError, Prediction, ReportedUsage, StreamEvent};

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

/// A flow that cannot stream answers JSON: its answer as the events a
/// stream would have carried.
pub fn events_of_json(answer: Prediction) -> Vec<StreamEvent> {
    let event = |name: &str, data: Value| StreamEvent {
        event: name.to_owned(),
        data,
    };
    let mut events = vec![
        event("start", json!("")),
        event("token", json!(answer.text)),
    ];
    if let Some(sources) = answer.source_documents {
        events.push(event("sourceDocuments", sources));
    }
    if let Some(tools) = answer.used_tools {
        events.push(event("usedTools", tools));
    }
    if let Some(usage) = answer.usage {
        events.push(event(
            "usageMetadata",
            json!({"input_tokens": usage.input, "output_tokens": usage.output}),
        ));
    }
    events.push(event("end", json!("[DONE]")));
    events
}

/// The events the gateway's own frames relay as they are; `error` is relayed with a
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
            // `start` carries the first token, which the first `token`
            // repeats (Flowise's handleLLMNewToken sends both).
            "token" => {
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
            (Some(Failure::Stopped), _) => {
                let reported = self.reported.then_some(self.usage);
                Outcome::stopped(prepared, self.text, reported)
            }
            (Some(failure), _) => Outcome::cut_short(prepared, self.text, failure),
            (None, true) => Outcome::cut_short(prepared, self.text, Failure::ClientDisconnected),
        }
    }
}

/// The message a client sees for a failure inside a stream.
pub fn public_stream_error(failure: Failure) -> &'static str {
    match failure {
        Failure::UpstreamTimeout => "the chat service did not answer in time",
        _ => "the chat service failed to answer",
    }
}

/// How a stream's frames are written: the gateway's own events
/// ([`Frames`]) or another wire format (the OpenAI API's chunks). The
/// relay, the pricing and the settlement are the same for all of them.
pub trait Wire: Send + 'static {
    /// The frames sent before Flowise's first event.
    fn opening(&mut self) -> Vec<bytes::Bytes>;
    /// The frame relaying one of Flowise's events, if it is relayed.
    fn event(&mut self, event: &StreamEvent) -> Option<bytes::Bytes>;
    /// The frame telling of a stream from Flowise that broke off.
    fn broke(&mut self, failure: Failure) -> Option<bytes::Bytes>;
    /// The owner asked the answer to stop (it closes as settled).
    fn stopped(&mut self) {}
    /// The last frames: the settled answer, or the message of a settlement
    /// that failed.
    fn closing(&mut self, settled: Result<&PredictionAnswer, &str>) -> Vec<bytes::Bytes>;
}

/// The gateway's own events: `session` first, Flowise's events as they
/// come (`error` with a clean message), `end` with the credits.
pub struct Frames {
    session_id: String,
    message_id: String,
}

impl Frames {
    /// The frames of `prepared`'s stream.
    pub fn new(prepared: &Prepared) -> Frames {
        Frames {
            session_id: prepared.session.session_id.clone(),
            message_id: prepared.message_id.to_string(),
        }
    }
}

impl Wire for Frames {
    fn opening(&mut self) -> Vec<bytes::Bytes> {
        vec![session_frame(&self.session_id, &self.message_id)]
    }

    fn event(&mut self, event: &StreamEvent) -> Option<bytes::Bytes> {
        match event.event.as_str() {
            "error" => Some(sse_frame(
                "error",
                &json!(public_stream_error(Failure::UpstreamError)),
            )),
            name if RELAYED.contains(&name) => Some(sse_frame(name, &event.data)),
            _ => None,
        }
    }

    fn broke(&mut self, failure: Failure) -> Option<bytes::Bytes> {
        Some(sse_frame("error", &json!(public_stream_error(failure))))
    }

    fn closing(&mut self, settled: Result<&PredictionAnswer, &str>) -> Vec<bytes::Bytes> {
        vec![match settled {
            Ok(answer) => end_frame(answer, false),
            Err(message) => sse_frame("error", &json!(message)),
        }]
    }
}

/// How often a running stream reads whether its owner asked it to stop.
pub const STOP_CHECK_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// Step (4) streamed: relays Flowise's events into `tx` as they arrive,
/// written by `wire`, until the stream ends, breaks, loses its client or
/// its owner asks it to stop (read every [`STOP_CHECK_EVERY`], between
/// events, so a stalled Flowise is stopped too). Returns what was
/// delivered.
async fn relay_events<S, W>(
    state: &PredictState,
    prepared: &Prepared,
    mut events: S,
    wire: &mut W,
    tx: &tokio::sync::mpsc::Sender<bytes::Bytes>,
) -> Relayed
where
    S: futures_util::Stream<Item = Result<StreamEvent, FlowiseError>> + Unpin,
    W: Wire,
{
    use futures_util::StreamExt;
    let mut relayed = Relayed::default();
    for frame in wire.opening() {
        relayed.client_gone = relayed.client_gone || tx.send(frame).await.is_err();
    }
    let start = tokio::time::Instant::now() + STOP_CHECK_EVERY;
    let mut checks = tokio::time::interval_at(start, STOP_CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !relayed.client_gone {
        let next = tokio::select! {
            next = events.next() => next,
            _ = checks.tick() => {
                if stop_asked(state, prepared).await {
                    wire.stopped();
                    relayed.failure = Some(Failure::Stopped);
                    break;
                }
                continue;
            }
        };
        let event = match next {
            None => break,
            Some(Err(e)) => {
                let failure = Failure::of(&e);
                if let Some(frame) = wire.broke(failure) {
                    let _ = tx.send(frame).await;
                }
                relayed.failure = Some(failure);
                break;
            }
            Some(Ok(event)) => event,
        };
        if relayed.take(&event) {
            break;
        }
        if let Some(frame) = wire.event(&event) {
            relayed.client_gone = tx.send(frame).await.is_err();
        }
    }
    relayed
}

/// Whether the owner asked the prediction to stop (a failed read is
/// logged and taken as no).
async fn stop_asked(state: &PredictState, prepared: &Prepared) -> bool {
    match crate::ledger::reservations::stop_requested(&state.pg, &prepared.message_id).await {
        Ok(asked) => asked,
        Err(err) => {
            tracing::warn!(error = %err, "could not read whether a stream was asked to stop");
            false
        }
    }
}

/// Steps (4) and (5) streamed: [`relay_events`], then the settlement: a
/// stream cut short (it broke, its client went away, its owner stopped
/// it) is aborted with the cost of what was delivered and stored as
/// incomplete. The closing frames carry the credits charged.
pub async fn relay_stream<S, W>(
    state: PredictState,
    prepared: Prepared,
    events: S,
    mut wire: W,
    tx: tokio::sync::mpsc::Sender<bytes::Bytes>,
) where
    S: futures_util::Stream<Item = Result<StreamEvent, FlowiseError>> + Unpin,
    W: Wire,
{
    let relayed = relay_events(&state, &prepared, events, &mut wire, &tx).await;
    let outcome = relayed.outcome(&prepared);
    let settled = finish(&state, &prepared, &outcome).await;
    if let Err(err) = &settled {
        tracing::error!(error = %err, "a streamed prediction could not be settled; the expiry job will release it");
    }
    let closing = match &settled {
        Ok(answer) => wire.closing(Ok(answer)),
        Err(err) => wire.closing(Err(&err.public_message())),
    };
    for frame in closing {
        if tx.send(frame).await.is_err() {
            break;
        }
    }
}
