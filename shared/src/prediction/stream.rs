//! A streamed prediction's frames: Flowise's events relayed as
//! `event: <name>\ndata: <json>\n\n` after a `session` frame and before
//! an `end` frame with the credits, a stored answer replayed as a short
//! stream, and a flow that cannot stream answering JSON.

use serde_json::{json, Value};

use super::{finish, Failure, Meter, Outcome, PredictState, PredictionAnswer, Prepared};
use crate::flowise::{FlowiseError, Prediction, ReportedUsage, StreamEvent};
use crate::ledger::reservations;

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

/// `end`: the status, why an incomplete answer ended (`reason`), whether
/// it was cut to what its payer could pay (`truncated`), the credits.
fn end_frame(answer: &PredictionAnswer, replayed: bool) -> bytes::Bytes {
    let mut data = json!({"status": answer.status, "credits": answer.credits});
    if let Some(reason) = &answer.reason {
        data["reason"] = json!(reason);
    }
    if answer.truncated {
        data["truncated"] = json!(true);
    }
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
    // The counts first: the relay then cuts the answer on them, not on
    // its estimate, should they pass the hold.
    let mut events = vec![event("start", json!(""))];
    if let Some(usage) = answer.usage {
        events.push(event(
            "usageMetadata",
            json!({"input_tokens": usage.input, "output_tokens": usage.output}),
        ));
    }
    events.push(event("token", json!(answer.text)));
    if let Some(sources) = answer.source_documents {
        events.push(event("sourceDocuments", sources));
    }
    if let Some(tools) = answer.used_tools {
        events.push(event("usedTools", tools));
    }
    events.push(event("end", json!("[DONE]")));
    events
}

/// The events the gateway's own frames relay as they are; `error` is relayed with a
/// clean message (Flowise's own is logged); the rest (usage, agent
/// internals) are consumed here.
const RELAYED: &[&str] = &["start", "token", "metadata", "sourceDocuments", "usedTools"];

/// What a stream delivered so far, and how it ended.
struct Relayed {
    meter: Meter,
    text: String,
    sources: Option<Value>,
    tools: Option<Value>,
    failure: Option<Failure>,
    done: bool,
}

impl Relayed {
    fn outcome(self) -> Outcome {
        Outcome::metered(&self.meter, self.text, self.failure).with_extras(self.sources, self.tools)
    }

    fn end(&mut self, failure: Option<Failure>) {
        self.failure = self.failure.or(failure);
        self.done = true;
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
pub trait Wire: Send + Sync + 'static {
    /// The frames sent before Flowise's first event.
    fn opening(&mut self) -> Vec<bytes::Bytes>;
    /// The frame relaying one of Flowise's events, if it is relayed.
    fn event(&mut self, event: &StreamEvent) -> Option<bytes::Bytes>;
    /// The frame telling of a stream from Flowise that broke off.
    fn broke(&mut self, failure: Failure) -> Option<bytes::Bytes>;
    /// The last frames: the settled answer (its `reason` says why one that
    /// is incomplete ended), or the message of a settlement that failed.
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

/// The least time between two records of a stream's progress
/// ([`reservations::record_progress`]); the first is made at the first
/// check after Flowise began to answer.
pub const PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

/// How long the closing frames may wait for a slow client once the
/// answer is settled.
const CLOSING_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// One stream's relay: where its frames go, by when, and what it has
/// recorded of its progress.
struct Relay<'a, W> {
    state: &'a PredictState,
    prepared: &'a Prepared,
    wire: &'a mut W,
    tx: &'a tokio::sync::mpsc::Sender<bytes::Bytes>,
    /// `FLOWISE_TIMEOUT_SECONDS` after the prediction began: a client
    /// that reads too slowly cannot hold the relay past it.
    deadline: tokio::time::Instant,
    /// The price last recorded as delivered, and when.
    recorded: Option<(i64, tokio::time::Instant)>,
}

impl<W: Wire> Relay<'_, W> {
    /// Sends a frame by the deadline; false when the client is gone or
    /// did not read it in time.
    async fn send(&self, frame: bytes::Bytes) -> bool {
        matches!(
            tokio::time::timeout_at(self.deadline, self.tx.send(frame)).await,
            Ok(Ok(()))
        )
    }

    /// Sends `frame` if there is one; a client gone ends the answer.
    async fn relay(&self, relayed: &mut Relayed, frame: Option<bytes::Bytes>) {
        if let Some(frame) = frame {
            if !self.send(frame).await {
                relayed.end(Some(Failure::ClientDisconnected));
            }
        }
    }

    /// Takes one of Flowise's events in: relays it, prices it, and ends
    /// the answer on `end`, on `error` (nothing after it is delivered) and
    /// where the payer's means end.
    async fn take(&mut self, relayed: &mut Relayed, event: StreamEvent) {
        match event.event.as_str() {
            "end" => relayed.end(None),
            "error" => {
                tracing::warn!(error = %event.data, "Flowise reported an error inside the stream");
                let frame = self.wire.event(&event);
                self.relay(relayed, frame).await;
                relayed.end(Some(Failure::UpstreamError));
            }
            // One report per LLM call of the flow: every one counts, and a
            // price it takes past the hold is held at once, while the
            // payer's means still cover it.
            "usageMetadata" => {
                let meter = &mut relayed.meter;
                if let Some(report) = ReportedUsage::from_value(&event.data) {
                    meter.report(report);
                }
                meter.start();
                if meter.cost() > meter.held() {
                    let asked = meter.top_up_wanted(0);
                    self.prepared.top_up(self.state, meter, asked).await;
                }
            }
            // `start` carries the first token, which the first `token`
            // repeats (Flowise's handleLLMNewToken sends both).
            "token" => self.token(relayed, event).await,
            name => {
                relayed.meter.start();
                let event = match name {
                    "sourceDocuments" => {
                        relayed.sources = Some(event.data.clone());
                        event
                    }
                    "usedTools" => {
                        relayed.tools = Some(event.data.clone());
                        event
                    }
                    // `start` carries the LLM's first output, which the
                    // first `token` repeats: only tokens are content (and
                    // metered), so `start` goes out empty.
                    "start" => StreamEvent {
                        event: event.event,
                        data: json!(""),
                    },
                    _ => event,
                };
                let frame = self.wire.event(&event);
                self.relay(relayed, frame).await;
            }
        }
    }

    /// A piece of the answer: topped up before the hold runs out, cut
    /// where the payer's means end.
    async fn token(&mut self, relayed: &mut Relayed, event: StreamEvent) {
        let meter = &mut relayed.meter;
        meter.start();
        let piece = event.data.as_str().unwrap_or_default();
        let chars = piece.chars().count() as i64;
        if meter.wants_top_up() {
            let asked = meter.top_up_wanted(chars);
            self.prepared.top_up(self.state, meter, asked).await;
        }
        if meter.fitting(piece).len() < piece.len() {
            // At the hold: one more look at the payer's means.
            let asked = meter.top_up_wanted(chars);
            self.prepared.top_up(self.state, meter, asked).await;
        }
        let fits = meter.fitting(piece);
        let cut = fits.len() < piece.len();
        meter.deliver(fits);
        relayed.text.push_str(fits);
        if !fits.is_empty() {
            let delivered = StreamEvent {
                event: event.event,
                data: Value::String(fits.to_owned()),
            };
            let frame = self.wire.event(&delivered);
            self.relay(relayed, frame).await;
        }
        if cut {
            relayed.end(Some(Failure::CreditsExhausted));
        }
    }

    /// The regular check: records the progress when it is due (at most
    /// every [`PROGRESS_EVERY`], once Flowise began to answer) and reads
    /// whether the owner asked the answer to stop, in one round trip.
    async fn check(&mut self, relayed: &Relayed) -> bool {
        let cost = relayed.meter.cost();
        let now = tokio::time::Instant::now();
        let due = relayed.meter.started()
            && self
                .recorded
                .is_none_or(|(last, at)| last != cost && now >= at + PROGRESS_EVERY);
        let (pg, id) = (&self.state.pg, &self.prepared.message_id);
        let asked = if due {
            let recorded = reservations::record_progress(pg, id, cost).await;
            if recorded.is_ok() {
                self.recorded = Some((cost, now));
            }
            recorded
        } else {
            reservations::stop_requested(pg, id).await
        };
        asked.unwrap_or_else(|err| {
            tracing::warn!(error = %err, "could not read whether a stream was asked to stop");
            false
        })
    }
}

/// Step (4) streamed: relays Flowise's events into `tx` as they arrive,
/// written by `wire`, until the stream ends, breaks, loses its client
/// (or its client stops reading past the deadline), reaches the end of its
/// payer's means, or its owner asks it to stop (read every
/// [`STOP_CHECK_EVERY`], between events, so a stalled Flowise is stopped
/// too). Returns what was delivered.
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
    let deadline = tokio::time::Instant::from_std(prepared.started) + state.flowise.timeout();
    let mut relay = Relay {
        state,
        prepared,
        wire,
        tx,
        deadline,
        recorded: None,
    };
    let mut relayed = Relayed {
        meter: prepared.meter(),
        text: String::new(),
        sources: None,
        tools: None,
        failure: None,
        done: false,
    };
    for frame in relay.wire.opening() {
        relay.relay(&mut relayed, Some(frame)).await;
    }
    let start = tokio::time::Instant::now() + STOP_CHECK_EVERY;
    let mut checks = tokio::time::interval_at(start, STOP_CHECK_EVERY);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !relayed.done {
        let next = tokio::select! {
            next = events.next() => next,
            _ = checks.tick() => {
                if relay.check(&relayed).await {
                    relayed.end(Some(Failure::Stopped));
                }
                continue;
            }
        };
        match next {
            None => relayed.end(None),
            Some(Err(e)) => {
                let failure = Failure::of(&e);
                let frame = relay.wire.broke(failure);
                relay.relay(&mut relayed, frame).await;
                relayed.end(Some(failure));
            }
            Some(Ok(event)) => relay.take(&mut relayed, event).await,
        }
    }
    relayed
}

/// Steps (4) and (5) streamed: [`relay_events`], then the settlement: a
/// stream cut short (it broke, its client went away, its payer's means
/// ended, its owner stopped it) is aborted with the cost of what was
/// delivered and stored as incomplete. The closing frames carry the
/// credits charged.
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
    let outcome = relayed.outcome();
    let settled = finish(&state, &prepared, &outcome).await;
    if let Err(err) = &settled {
        tracing::error!(error = %err, "a streamed prediction could not be settled; the expiry job will release it");
    }
    let closing = match &settled {
        Ok(answer) => wire.closing(Ok(answer)),
        Err(err) => wire.closing(Err(&err.public_message())),
    };
    for frame in closing {
        if !matches!(
            tokio::time::timeout(CLOSING_GRACE, tx.send(frame)).await,
            Ok(Ok(()))
        ) {
            break;
        }
    }
}
