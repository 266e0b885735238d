//! A Flowise test double (feature `stand-in`, part of `test-util`): a real
//! HTTP server that speaks what `FLOWISE_API.md` records, byte for byte,
//! and can be told to fail, stall, or answer JSON instead of a stream.
//! `gateway-admin stand-in` runs it with a demo chatflow ([`Behaviour::Demo`])
//! for `make run` when no Flowise answers: a labelled stand-in, never a
//! deployed one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde_json::{json, Value};

/// How a chatflow of the double answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answers `tokens` (joined for a buffered call; one `token` event each,
    /// `delay` apart, for a stream). `usage` adds token counts (`metrics`
    /// in JSON, a `usageMetadata` event in a stream); `heartbeat` sends a
    /// `:heartbeat` comment before the first event.
    Answer {
        /// The answer's pieces.
        tokens: Vec<String>,
        /// Pause before each streamed token.
        delay: Duration,
        /// (input, output) token counts to report.
        usage: Option<(i64, i64)>,
        /// Send a heartbeat first.
        heartbeat: bool,
    },
    /// The flow cannot stream: the JSON answer even when streaming is asked.
    JsonOnly(String),
    /// The LLM is down: 500 with Flowise's error JSON, or, streamed, a 200
    /// event stream with an `error` event and `end`.
    Fail(String),
    /// No answer at all, ever (what Flowise does for a streamed request
    /// that fails before its event stream starts).
    Stall,
    /// Streams exactly these `(event, data)` pairs, `delay` before each,
    /// then `end` (a buffered call gets the `token` data joined, as JSON).
    Events {
        /// The events, in order.
        events: Vec<(String, Value)>,
        /// Pause before each.
        delay: Duration,
    },
    /// Answers `text` as JSON after `pause`, in both modes (a flow that
    /// cannot stream and takes its time).
    Slow {
        /// The answer.
        text: String,
        /// How long it takes.
        pause: Duration,
    },
    /// The stand-in's demo ([`demo_answer`]): a Markdown answer with a
    /// little maths that echoes the question, a word every `delay`, with
    /// its token counts reported.
    Demo {
        /// Pause before each streamed word.
        delay: Duration,
    },
}

/// The stand-in's one chatflow.
pub const DEMO_CHATFLOW_ID: &str = "demo-stand-in";
/// Its name, which says what it is wherever the console lists it.
pub const DEMO_CHATFLOW_NAME: &str = "Demo (local stand-in, not Flowise)";

/// What the demo chatflow answers `question`: Markdown, a little maths,
/// the question echoed, and a word on where the answer comes from.
pub fn demo_answer(question: &str) -> String {
    format!(
        "You asked: *{question}*\n\n\
         This answer comes from the gateway's **local stand-in**, not from Flowise: \
         point `FLOWISE_API_URL` at a Flowise server to talk to a real chatflow.\n\n\
         It still shows what the console does with an answer: Markdown, \
         `code`, and maths such as $e^{{i\\pi}} + 1 = 0$ or\n\n\
         $$\\sum_{{k=1}}^{{n}} k = \\frac{{n(n+1)}}{{2}}$$\n"
    )
}

impl Behaviour {
    /// A plain answer of `text` split into words, with no pauses.
    pub fn answer(text: &str) -> Behaviour {
        Behaviour::Answer {
            tokens: split_tokens(text),
            delay: Duration::ZERO,
            usage: None,
            heartbeat: false,
        }
    }
}

/// Tokens as the gateway estimates them: ceil(characters / 4).
fn estimate(text: &str) -> i64 {
    (text.chars().count() as i64 + 3) / 4
}

/// Splits text into word tokens that keep their trailing space.
pub fn split_tokens(text: &str) -> Vec<String> {
    text.split_inclusive(' ').map(str::to_owned).collect()
}

/// What Flowise knows of a flow besides how it answers: its type, its
/// nodes and its API settings. `GET /api/v1/chatflows` lists them (as the
/// JSON strings `flowData` and `apiConfig`), and they decide, as in
/// Flowise 3.1.4, which overrides a prediction applies and whether the
/// prediction API runs the flow at all.
#[derive(Debug, Clone)]
pub struct Shape {
    /// `CHATFLOW` or `AGENTFLOW`.
    pub kind: &'static str,
    /// Each node's `data`: `{name, label, inputs}`.
    pub nodes: Vec<Value>,
    /// `apiConfig`, when the flow has one.
    pub api_config: Option<Value>,
    /// `isPublic` (nullable in Flowise; the gateway's flag starts from it).
    pub is_public: Option<bool>,
}

/// The operator's system prompt in the double's chains and agents.
pub const OPERATOR_PROMPT: &str = "You are the operator's assistant.";

impl Shape {
    /// A conversation chain (reads `systemMessagePrompt`) whose API
    /// settings let a request override `overridable` of its inputs (none:
    /// overrides off).
    pub fn chain(overridable: &[&str]) -> Shape {
        Shape::one_node(
            "conversationChain",
            "Conversation Chain",
            "systemMessagePrompt",
            overridable,
        )
    }

    /// A tool agent (reads `systemMessage`), like [`Shape::chain`].
    pub fn agent(overridable: &[&str]) -> Shape {
        Shape::one_node("toolAgent", "Tool Agent", "systemMessage", overridable)
    }

    fn one_node(name: &str, label: &str, system_input: &str, overridable: &[&str]) -> Shape {
        let params: Vec<Value> = overridable
            .iter()
            .map(|p| json!({"label": p, "name": p, "type": "string", "enabled": true}))
            .collect();
        Shape {
            kind: "CHATFLOW",
            nodes: vec![json!({"name": name, "label": label,
                "inputs": {system_input: OPERATOR_PROMPT}})],
            api_config: (!overridable.is_empty())
                .then(|| json!({"overrideConfig": {"status": true, "nodes": {label: params}}})),
            is_public: None,
        }
    }

    /// An agentflow whose Start node takes `start_input_type`
    /// (`webhookTrigger` and `scheduleInput` are not run by the prediction
    /// API).
    pub fn agentflow(start_input_type: &str) -> Shape {
        Shape {
            kind: "AGENTFLOW",
            nodes: vec![json!({"name": "startAgentflow", "label": "Start",
                "inputs": {"startInputType": start_input_type}})],
            api_config: None,
            is_public: None,
        }
    }

    /// Whether the prediction API refuses the flow (Flowise 3.1.3 and
    /// later), with Flowise's message.
    fn refusal(&self) -> Option<String> {
        if self.kind != "AGENTFLOW" {
            return None;
        }
        let start = self.nodes.iter().find(|n| n["name"] == "startAgentflow")?;
        match start.pointer("/inputs/startInputType").and_then(Value::as_str) {
            Some("webhookTrigger") => Some("This flow is configured as a Webhook Trigger. Call POST /api/v1/webhook/<id> instead of the prediction API.".into()),
            Some("scheduleInput") => Some("This flow is configured as a Scheduled Trigger. It is fired by the scheduler and cannot be invoked via the API.".into()),
            _ => None,
        }
    }

    /// Whether the API settings let a request override `param` of the
    /// node labelled `label`.
    fn enabled(&self, label: &str, param: &str) -> bool {
        let Some(config) = self.api_config.as_ref().map(|c| &c["overrideConfig"]) else {
            return false;
        };
        config["status"] == true
            && config["nodes"][label].as_array().is_some_and(|ps| {
                ps.iter()
                    .any(|p| p["name"] == param && p["enabled"] == true)
            })
    }

    /// What the LLM receives, as Flowise 3.1.4 builds it: the chat node's
    /// system prompt (its own input, replaced only by an override its API
    /// settings enable for that node and input) and the question.
    fn llm_input(&self, body: &Value) -> LlmInput {
        let overrides = body.get("overrideConfig").cloned().unwrap_or(Value::Null);
        let mut system = None;
        let mut applied = Vec::new();
        for node in &self.nodes {
            let label = node["label"].as_str().unwrap_or_default();
            let Some(inputs) = node["inputs"].as_object() else {
                continue;
            };
            for key in overrides.as_object().into_iter().flat_map(|o| o.keys()) {
                if key != "sessionId" && self.enabled(label, key) {
                    applied.push(key.clone());
                }
            }
            for input in ["systemMessagePrompt", "systemMessage"] {
                if let Some(own) = inputs.get(input).and_then(Value::as_str) {
                    let overridden = overrides.get(input).and_then(Value::as_str);
                    system = Some(match overridden {
                        Some(text) if self.enabled(label, input) => text.to_owned(),
                        _ => own.to_owned(),
                    });
                }
            }
        }
        LlmInput {
            system,
            question: body["question"].as_str().unwrap_or_default().to_owned(),
            applied,
        }
    }
}

impl Default for Shape {
    /// A chain with overrides off (what `add_flow` gives).
    fn default() -> Shape {
        Shape::chain(&[])
    }
}

/// What the LLM of a flow received for one prediction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmInput {
    /// The system prompt, when the flow's node has one.
    pub system: Option<String>,
    /// The question.
    pub question: String,
    /// The `overrideConfig` keys the flow applied.
    pub applied: Vec<String>,
}

/// A prediction request the double received.
#[derive(Debug, Clone)]
pub struct Received {
    /// The chatflow in the path.
    pub chatflow_id: String,
    /// The JSON body.
    pub body: Value,
    /// The `Authorization` header.
    pub authorization: Option<String>,
    /// What the flow's LLM received (none when the flow is unknown or
    /// refused the request).
    pub llm: Option<LlmInput>,
}

struct Flow {
    name: String,
    behaviour: Behaviour,
    shape: Shape,
}

#[derive(Default)]
struct Inner {
    flows: HashMap<String, Flow>,
    order: Vec<String>,
    received: Vec<Received>,
    /// The stand-in keeps no record of what it answered.
    forgetful: bool,
}

/// The running double.
#[derive(Clone)]
pub struct FlowiseDouble {
    /// `http://127.0.0.1:<port>`: its `FLOWISE_API_URL`.
    pub url: String,
    inner: Arc<Mutex<Inner>>,
}

impl FlowiseDouble {
    /// Starts the double on a free port.
    pub async fn start() -> FlowiseDouble {
        FlowiseDouble::start_on(0)
            .await
            .expect("bind the Flowise double")
    }

    /// The stand-in `make run` starts (through `gateway-admin stand-in`)
    /// when no Flowise answers: on `port` of 127.0.0.1, one chatflow
    /// ([`DEMO_CHATFLOW_ID`]) that Flowise lists as public, answering
    /// [`demo_answer`] a word every 30 ms, and no record of requests kept.
    pub async fn stand_in(port: u16) -> std::io::Result<FlowiseDouble> {
        let double = FlowiseDouble::start_on(port).await?;
        double.inner.lock().expect("double").forgetful = true;
        let delay = Duration::from_millis(30);
        double.add_flow(
            DEMO_CHATFLOW_ID,
            DEMO_CHATFLOW_NAME,
            Behaviour::Demo { delay },
        );
        let shape = Shape {
            is_public: Some(true),
            ..Shape::default()
        };
        double.set_shape(DEMO_CHATFLOW_ID, shape);
        Ok(double)
    }

    /// Starts the double on `port` of 127.0.0.1 (0: a free one).
    async fn start_on(port: u16) -> std::io::Result<FlowiseDouble> {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
        let url = format!("http://{}", listener.local_addr()?);
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new()
            .route("/api/v1/prediction/{id}", post(prediction))
            .route("/api/v1/chatflows", get(chatflows))
            .route("/api/v1/chatflows-streaming/{id}", get(streaming))
            .route("/api/v1/ping", get(|| async { "pong" }))
            .with_state(inner.clone());
        tokio::spawn(crate::http::serve(listener, app));
        Ok(FlowiseDouble { url, inner })
    }

    /// Adds (or replaces) a chatflow.
    pub fn add_flow(&self, id: &str, name: &str, behaviour: Behaviour) {
        let mut inner = self.inner.lock().expect("double");
        if !inner.flows.contains_key(id) {
            inner.order.insert(0, id.to_owned());
        }
        inner.flows.insert(
            id.to_owned(),
            Flow {
                name: name.to_owned(),
                behaviour,
                shape: Shape::default(),
            },
        );
    }

    /// Changes what Flowise knows of a chatflow's type, nodes and API
    /// settings.
    pub fn set_shape(&self, id: &str, shape: Shape) {
        if let Some(flow) = self.inner.lock().expect("double").flows.get_mut(id) {
            flow.shape = shape;
        }
    }

    /// Changes how a chatflow answers.
    pub fn set_behaviour(&self, id: &str, behaviour: Behaviour) {
        if let Some(flow) = self.inner.lock().expect("double").flows.get_mut(id) {
            flow.behaviour = behaviour;
        }
    }

    /// Deletes a chatflow.
    pub fn remove_flow(&self, id: &str) {
        let mut inner = self.inner.lock().expect("double");
        inner.flows.remove(id);
        inner.order.retain(|f| f != id);
    }

    /// Every prediction request received so far.
    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().expect("double").received.clone()
    }
}

fn not_found(id: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Json(json!({"statusCode": 404, "success": false, "message": format!("Chatflow {id} not found in the database!"), "stack": {}})),
    )
        .into_response()
}

fn frame(event: &str, data: Value) -> Bytes {
    Bytes::from(format!(
        "message:\ndata:{}\n\n",
        json!({"event": event, "data": data})
    ))
}

/// What one prediction request asked for, as the answers echo it.
struct Call {
    streaming: bool,
    question: String,
    session: String,
    chat_id: String,
    message_id: String,
}

impl Call {
    fn of(body: &Value) -> Call {
        let streaming = matches!(body.get("streaming"), Some(Value::Bool(true)))
            || body.get("streaming").and_then(Value::as_str) == Some("true");
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let session = text(body.pointer("/overrideConfig/sessionId"))
            .or_else(|| text(body.get("chatId")))
            .unwrap_or_else(|| "generated-chat-id".into());
        Call {
            streaming,
            question: text(body.get("question")).unwrap_or_default(),
            chat_id: text(body.get("chatId")).unwrap_or_else(|| session.clone()),
            session,
            message_id: uuid::Uuid::new_v4().to_string(),
        }
    }

    /// The buffered answer, with `metrics` when there are token counts.
    fn json(&self, text: String, usage: Option<(i64, i64)>) -> Response {
        (StatusCode::OK, Json(self.answer(text, usage))).into_response()
    }

    /// The buffered answer's JSON.
    fn answer(&self, text: String, usage: Option<(i64, i64)>) -> Value {
        let mut v = json!({
            "text": text, "question": self.question, "chatId": self.chat_id,
            "chatMessageId": self.message_id, "isStreamValid": false,
            "sessionId": self.session, "memoryType": "Buffer Memory"
        });
        if let Some((i, o)) = usage {
            v["metrics"] = json!({"usage": {"prompt_tokens": i, "completion_tokens": o}});
        }
        v
    }

    /// A streamed answer: `start`, a `token` per piece (`delay` before
    /// each), `metadata`, the usage, `end`.
    fn stream(
        &self,
        tokens: Vec<String>,
        delay: Duration,
        usage: Option<(i64, i64)>,
        heartbeat: bool,
    ) -> Response {
        let mut frames = Vec::new();
        if heartbeat {
            frames.push((Duration::ZERO, Bytes::from_static(b":heartbeat\n\n")));
        }
        frames.push((Duration::ZERO, frame("start", json!(""))));
        for token in tokens {
            frames.push((delay, frame("token", json!(token))));
        }
        let metadata = json!({"chatId": self.chat_id, "chatMessageId": self.message_id, "question": self.question, "sessionId": self.session, "memoryType": "Buffer Memory"});
        frames.push((Duration::ZERO, frame("metadata", metadata)));
        if let Some((i, o)) = usage {
            let report = json!({"input_tokens": i, "output_tokens": o, "total_tokens": i + o});
            frames.push((Duration::ZERO, frame("usageMetadata", report)));
        }
        frames.push((Duration::ZERO, frame("end", json!("[DONE]"))));
        sse(frames)
    }
}

/// Exactly these events (`delay` before each), then `end`; buffered, the
/// `token` data joined.
fn events_answer(call: &Call, events: Vec<(String, Value)>, delay: Duration) -> Response {
    if !call.streaming {
        let text: String = events
            .iter()
            .filter(|(name, _)| name == "token")
            .filter_map(|(_, data)| data.as_str())
            .collect();
        let mut answer = call.answer(text, None);
        for (name, data) in &events {
            if matches!(name.as_str(), "sourceDocuments" | "usedTools") {
                answer[name.as_str()] = data.clone();
            }
        }
        return (StatusCode::OK, Json(answer)).into_response();
    }
    let mut frames: Vec<(Duration, Bytes)> = events
        .into_iter()
        .map(|(name, data)| (delay, frame(&name, data)))
        .collect();
    frames.push((Duration::ZERO, frame("end", json!("[DONE]"))));
    sse(frames)
}

/// What a failing LLM answers: 500 with Flowise's error JSON, or, streamed,
/// an `error` event then `end`.
fn failure(call: &Call, message: String) -> Response {
    if !call.streaming {
        let body = json!({"statusCode": 500, "success": false, "message": message, "stack": {}});
        return (StatusCode::INTERNAL_SERVER_ERROR, Json(body)).into_response();
    }
    sse(vec![
        (Duration::ZERO, frame("error", json!(message))),
        (Duration::ZERO, frame("end", json!("[DONE]"))),
    ])
}

/// The flow `id` (how it answers, its shape), the request recorded on
/// the way unless the double is forgetful.
fn look_up(
    inner: &Mutex<Inner>,
    id: &str,
    body: &Value,
    headers: &HeaderMap,
    refused: Option<String>,
) -> Option<(Behaviour, Shape)> {
    let mut inner = inner.lock().expect("double");
    let flow = inner
        .flows
        .get(id)
        .map(|f| (f.behaviour.clone(), f.shape.clone()));
    let refused = refused.or_else(|| flow.as_ref().and_then(|(_, s)| s.refusal()));
    let llm = match (&flow, refused) {
        (Some((_, shape)), None) => Some(shape.llm_input(body)),
        _ => None,
    };
    if !inner.forgetful {
        inner.received.push(Received {
            chatflow_id: id.to_owned(),
            body: body.clone(),
            authorization: headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            llm,
        });
    }
    flow
}

async fn prediction(
    State(inner): State<Arc<Mutex<Inner>>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> Response {
    let call = Call::of(&body);
    let refused = refusal(&body);
    let flow = look_up(&inner, &id, &body, &headers, refused.clone());
    let Some((behaviour, shape)) = flow else {
        if call.streaming {
            // Captured: no response at all.
            std::future::pending::<()>().await;
        }
        return not_found(&id);
    };
    // 3.1.4 refuses these inside buildChatflow, which answers 500 (and,
    // streamed, an error event).
    if let Some(message) = refused.or_else(|| shape.refusal()) {
        return failure(
            &call,
            format!("Error: predictionsServices.buildChatflow - {message}"),
        );
    }
    match behaviour {
        Behaviour::Stall => std::future::pending::<Response>().await,
        Behaviour::JsonOnly(text) => call.json(text, None),
        Behaviour::Slow { text, pause } => {
            tokio::time::sleep(pause).await;
            call.json(text, None)
        }
        Behaviour::Events { events, delay } => events_answer(&call, events, delay),
        Behaviour::Fail(message) => failure(&call, message),
        Behaviour::Demo { delay } => {
            let answer = demo_answer(&call.question);
            let usage = Some((estimate(&call.question), estimate(&answer)));
            if call.streaming {
                call.stream(split_tokens(&answer), delay, usage, false)
            } else {
                call.json(answer, usage)
            }
        }
        Behaviour::Answer { tokens, usage, .. } if !call.streaming => {
            call.json(tokens.concat(), usage)
        }
        Behaviour::Answer {
            tokens,
            delay,
            usage,
            heartbeat,
        } => call.stream(tokens, delay, usage, heartbeat),
    }
}

/// What 3.1.4 refuses in any flow's request: a `chatId` or an
/// `overrideConfig.sessionId` that is not a string.
fn refusal(body: &Value) -> Option<String> {
    let not_string = |v: Option<&Value>| v.is_some_and(|v| !v.is_string());
    if not_string(body.get("chatId")) {
        return Some("Invalid chatId: must be a string".into());
    }
    if not_string(body.pointer("/overrideConfig/sessionId")) {
        return Some("Invalid sessionId: must be a string".into());
    }
    None
}

/// An event-stream response with the captured headers, sending each frame
/// after its pause.
fn sse(frames: Vec<(Duration, Bytes)>) -> Response {
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    tokio::spawn(async move {
        for (pause, bytes) in frames {
            if !pause.is_zero() {
                tokio::time::sleep(pause).await;
            }
            if tx.send(Ok(bytes)).await.is_err() {
                return;
            }
        }
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header("Content-Type", "text/event-stream")
        .header("Cache-Control", "no-cache")
        .header("Connection", "keep-alive")
        .header("X-Accel-Buffering", "no")
        .body(Body::from_stream(stream))
        .expect("response")
}

async fn chatflows(State(inner): State<Arc<Mutex<Inner>>>) -> Response {
    let inner = inner.lock().expect("double");
    let list: Vec<Value> = inner
        .order
        .iter()
        .filter_map(|id| inner.flows.get(id).map(|f| (id, f)))
        .map(|(id, f)| {
            let nodes: Vec<Value> = f
                .shape
                .nodes
                .iter()
                .enumerate()
                .map(|(n, data)| json!({"id": format!("{}_{n}", data["name"].as_str().unwrap_or("node")), "data": data}))
                .collect();
            let api_config = f.shape.api_config.as_ref().map(Value::to_string);
            json!({
                "id": id, "name": f.name,
                "flowData": json!({"nodes": nodes, "edges": []}).to_string(),
                "deployed": false, "isPublic": f.shape.is_public, "apikeyid": null,
                "chatbotConfig": "{\"welcomeMessage\": \"Ask me anything\"}",
                "apiConfig": api_config, "analytic": null, "speechToText": null, "textToSpeech": null,
                "followUpPrompts": null, "category": null, "type": f.shape.kind,
                "createdDate": "2026-11-28T22:12:21.000Z", "updatedDate": "2026-11-28T22:12:21.000Z",
                "workspaceId": "428defdf-70cb-42c5-8d4f-2a32b0473a76"
            })
        })
        .collect();
    Json(Value::Array(list)).into_response()
}

async fn streaming(State(inner): State<Arc<Mutex<Inner>>>, Path(id): Path<String>) -> Response {
    let inner = inner.lock().expect("double");
    let streams = inner
        .flows
        .get(&id)
        .is_some_and(|f| !matches!(f.behaviour, Behaviour::JsonOnly(_) | Behaviour::Slow { .. }));
    Json(json!({"isStreaming": streams})).into_response()
}
