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

/// The frame relaying `event`, if it is relayed at all.
fn relayed_frame(event: &StreamEvent) -> Option<bytes::Bytes> {
    match event.event.as_str() {
        "error" => Some(sse_frame(
            "error",
            &json!(public_stream_error(Failure::UpstreamError)),
        )),
        name if RELAYED.contains(&name) => Some(sse_frame(name, &event.data)),
        _ => None,
    }
}

/// Step (4) streamed, then (5): relays Flowise's events into `tx` as they
/// arrive, after the `session` frame. A failed send means the client went
/// away: the reservation is then aborted with the cost of what was
/// delivered, and the partial answer stored as incomplete. The final `end`
/// frame carries the credits charged.
pub async fn relay_stream<S>(
    state: PredictState,
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
                let frame = sse_frame("error", &json!(public_stream_error(failure)));
                let _ = tx.send(frame).await;
                relayed.failure = Some(failure);
                break;
            }
            Some(Ok(event)) => event,
        };
        if relayed.take(&event) {
            break;
        }
        if let Some(frame) = relayed_frame(&event) {
            relayed.client_gone = tx.send(frame).await.is_err();
        }
    }
    let outcome = relayed.outcome(&prepared);
    let last = match finish(&state, &prepared, &outcome).await {
        Ok(answer) => end_frame(&answer, false),
        Err(err) => {
            tracing::error!(error = %err, "a streamed prediction could not be settled; the expiry job will release it");
            sse_frame("error", &json!(err.public_message()))
        }
    };
    let _ = tx.send(last).await;
}
