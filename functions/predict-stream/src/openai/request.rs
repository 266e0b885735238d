//! `POST /v1/chat/completions` read into a prediction. The mapping
//! (README §12):
//!
//! - `model` is the chatflow id;
//! - the last message must be the user's: its text is the question, its
//!   images the uploads (a `data:` URL as a file, an `https://` URL as a
//!   URL upload, both checked like any upload);
//! - earlier `user` and `assistant` turns are Flowise's `history` (their
//!   text; images of earlier turns are not sent again);
//! - `system` and `developer` messages are joined and are the
//!   prediction's system message, which the chatflow's `systemMessages`
//!   setting places (the input its node reads, a block before the
//!   question, or a refusal naming `messages`); at most
//!   `MAX_QUESTION_CHARS` characters;
//! - `temperature` and `max_tokens` (or `max_completion_tokens`) are sent
//!   as the `temperature` and `maxTokens` overrides where the chatflow's
//!   admin allowed those keys, and ignored elsewhere (OpenAI clients send
//!   them unasked);
//! - `n` other than 1, `tools` and `functions` are refused (400 with
//!   `param`), as are `tool` messages and content parts other than text and
//!   images; every other field real clients send is ignored.
//!
//! The earlier turns also name the session the turn is stored in: the
//! user's latest session of this chatflow whose stored messages are exactly
//! those turns, else a new one.

use serde::Deserialize;
use serde_json::{json, Map, Value};
use shared::chat::sessions::transcript_after;
use shared::ids::ChatflowId;
use shared::prediction::{HistoryItem, PredictBody, UploadItem, MAX_QUESTION_CHARS};

use super::envelope::V1Error;

/// `POST /v1/chat/completions`, as far as the gateway reads it; any other
/// field is accepted and ignored.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct CompletionRequest {
    /// A chatflow id (`GET /v1/models`).
    pub model: String,
    /// The conversation, at least one message; the last is the user's
    /// question.
    #[schema(min_items = 1)]
    pub messages: Vec<ChatMessage>,
    /// Server-sent `chat.completion.chunk` events when true.
    #[serde(default)]
    pub stream: Option<bool>,
    /// `{include_usage}`: a last chunk with `usage`.
    #[serde(default)]
    pub stream_options: Option<StreamOptions>,
    /// Passed to Flowise as the `temperature` override.
    #[serde(default)]
    pub temperature: Option<f64>,
    /// Passed to Flowise as the `maxTokens` override.
    #[serde(default)]
    pub max_tokens: Option<u32>,
    /// The same as `max_tokens`.
    #[serde(default)]
    pub max_completion_tokens: Option<u32>,
    /// Only 1.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 1)]
    pub n: Option<i64>,
    /// Refused: a chatflow has its own tools.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub tools: Option<Value>,
    /// Refused, as `tools`.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub functions: Option<Value>,
    /// Ignored: the caller is the key's (or the token's) user.
    #[serde(default)]
    pub user: Option<String>,
}

/// `stream_options`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct StreamOptions {
    /// A last chunk with `usage` and empty `choices`.
    #[serde(default)]
    pub include_usage: Option<bool>,
}

/// One message.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct ChatMessage {
    /// `system`, `developer`, `user` or `assistant`.
    pub role: String,
    /// Text, or an array of parts (`text`, `image_url`).
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub content: Option<Content>,
}

/// A message's content.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    /// Plain text.
    Text(String),
    /// Parts.
    Parts(Vec<Part>),
}

/// One part of a message's content.
#[derive(Debug, Deserialize)]
pub struct Part {
    /// `text` or `image_url`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The text of a `text` part.
    #[serde(default)]
    pub text: Option<String>,
    /// The image of an `image_url` part.
    #[serde(default)]
    pub image_url: Option<ImageUrl>,
}

/// `{url, detail?}`.
#[derive(Debug, Deserialize)]
pub struct ImageUrl {
    /// `data:<mime>;base64,...` or `https://...`.
    pub url: String,
}

/// A completion request read into a prediction.
#[derive(Debug)]
pub struct Mapped {
    /// The prediction (its `session_id` is set once the session is found).
    pub body: PredictBody,
    /// `temperature` and `maxTokens`, sent where the chatflow allows them.
    pub optional_overrides: Map<String, Value>,
    /// The digest of the earlier turns, when there are any.
    pub transcript: Option<String>,
    /// Whether to answer as a stream.
    pub stream: bool,
    /// Whether a stream ends with a `usage` chunk.
    pub include_usage: bool,
    /// The question's content (`messages[i].content`), the `param` of a
    /// refused upload.
    pub question_param: String,
}

/// One message's text and images.
struct Said {
    text: String,
    images: Vec<String>,
}

/// A user or assistant message: its role, what it said, and where it was
/// in `messages`.
struct Turn {
    role: &'static str,
    said: Said,
    index: usize,
}

fn said(index: usize, content: Option<Content>) -> Result<Said, V1Error> {
    let mut out = Said {
        text: String::new(),
        images: Vec::new(),
    };
    match content {
        None => {}
        Some(Content::Text(text)) => out.text = text,
        Some(Content::Parts(parts)) => {
            let mut texts = Vec::new();
            for (j, part) in parts.into_iter().enumerate() {
                let param = format!("messages[{index}].content[{j}]");
                match (part.kind.as_str(), part.text, part.image_url) {
                    ("text", Some(text), _) => texts.push(text),
                    ("image_url", _, Some(image)) => out.images.push(image.url),
                    ("text" | "image_url", _, _) => {
                        return Err(V1Error::invalid(
                            param,
                            "a text part needs `text`, an image_url part `image_url.url`",
                        ))
                    }
                    _ => {
                        return Err(V1Error::invalid(
                            format!("{param}.type"),
                            "only text and image_url parts are supported",
                        ))
                    }
                }
            }
            out.text = texts.join("\n");
        }
    }
    Ok(out)
}

/// An image of the question as an upload, checked later like any upload.
fn image_upload(number: usize, url: String) -> UploadItem {
    if let Some(mime) = url
        .strip_prefix("data:")
        .and_then(|rest| rest.split(';').next())
    {
        let extension = mime.rsplit('/').next().unwrap_or("bin").to_owned();
        return UploadItem::Inline {
            kind: "file".into(),
            name: format!("image-{number}.{extension}"),
            mime: mime.to_owned(),
            data: url,
        };
    }
    let lower = url.to_ascii_lowercase();
    let mime = [
        ("jpg", "jpeg"),
        ("jpeg", "jpeg"),
        ("gif", "gif"),
        ("webp", "webp"),
    ]
    .iter()
    .find(|(ext, _)| lower.split(['?', '#']).next().unwrap_or("").ends_with(ext))
    .map_or("image/png".to_owned(), |(_, kind)| format!("image/{kind}"));
    UploadItem::Inline {
        kind: "url".into(),
        name: format!("image-{number}"),
        mime,
        data: url,
    }
}

/// The overrides the request asks for (sent where the chatflow allows
/// them, ignored elsewhere).
fn optional_overrides(request: &CompletionRequest) -> Map<String, Value> {
    let mut config = Map::new();
    if let Some(temperature) = request.temperature {
        config.insert("temperature".into(), json!(temperature));
    }
    if let Some(max) = request.max_completion_tokens.or(request.max_tokens) {
        config.insert("maxTokens".into(), json!(max));
    }
    config
}

/// The system and developer messages, joined (400 naming `messages` past
/// `MAX_QUESTION_CHARS`).
fn system_message(system: &[String]) -> Result<Option<String>, V1Error> {
    let joined = system.join("\n\n");
    if joined.chars().count() > MAX_QUESTION_CHARS {
        return Err(V1Error::invalid(
            "messages",
            format!("the system messages must be at most {MAX_QUESTION_CHARS} characters in all"),
        ));
    }
    Ok((!joined.trim().is_empty()).then_some(joined))
}

/// Refuses what a chatflow cannot do.
fn refuse_unsupported(request: &CompletionRequest) -> Result<(), V1Error> {
    if request.n.is_some_and(|n| n != 1) {
        return Err(V1Error::invalid("n", "only n = 1 is supported"));
    }
    for (param, value) in [("tools", &request.tools), ("functions", &request.functions)] {
        if value.as_ref().is_some_and(|v| !v.is_null()) {
            return Err(V1Error::invalid(
                param,
                "tools and function calling are not supported: a chatflow has its own tools",
            ));
        }
    }
    if request.messages.is_empty() {
        return Err(V1Error::invalid(
            "messages",
            "must hold at least one message",
        ));
    }
    Ok(())
}

/// The system messages' text, and the turns.
fn read_messages(messages: Vec<ChatMessage>) -> Result<(Vec<String>, Vec<Turn>), V1Error> {
    let mut system = Vec::new();
    let mut turns = Vec::new();
    for (i, message) in messages.into_iter().enumerate() {
        let role = match message.role.as_str() {
            "system" | "developer" => None,
            "user" => Some("user"),
            "assistant" => Some("assistant"),
            _ => return Err(V1Error::invalid(
                format!("messages[{i}].role"),
                "must be system, developer, user or assistant (tool messages are not supported)",
            )),
        };
        let content = said(i, message.content)?;
        match role {
            None => system.push(content.text),
            Some(role) => turns.push(Turn {
                role,
                said: content,
                index: i,
            }),
        }
    }
    Ok((system, turns))
}

/// The earlier turns as Flowise's `history` (their text).
fn history_of(turns: &[Turn]) -> Vec<HistoryItem> {
    turns
        .iter()
        .map(|turn| HistoryItem {
            role: if turn.role == "user" {
                "userMessage"
            } else {
                "apiMessage"
            }
            .into(),
            content: turn.said.text.clone(),
        })
        .collect()
}

/// Reads `request` into a prediction (400 naming the `param` on what a
/// chatflow cannot do, 404 `model_not_found` on a model id that cannot be
/// one).
pub fn map(mut request: CompletionRequest) -> Result<Mapped, V1Error> {
    refuse_unsupported(&request)?;
    let chatflow_id = ChatflowId::parse("model", &request.model)
        .map_err(|_| V1Error::no_model(&request.model))?;
    let (system, mut turns) = read_messages(std::mem::take(&mut request.messages))?;
    let question = match turns.pop() {
        Some(turn) if turn.role == "user" => turn,
        _ => {
            return Err(V1Error::invalid(
                "messages",
                "the last message (after system messages) must be the user's question",
            ))
        }
    };
    let question_param = format!("messages[{}].content", question.index);
    if question.said.text.trim().is_empty() && !question.said.images.is_empty() {
        return Err(V1Error::invalid(
            question_param,
            "a question with images needs a text part too: a chatflow takes a question",
        ));
    }
    let history = history_of(&turns);
    let transcript = (!turns.is_empty())
        .then(|| transcript_after("", turns.iter().map(|t| (t.role, t.said.text.as_str()))));
    let uploads: Vec<UploadItem> = question
        .said
        .images
        .into_iter()
        .enumerate()
        .map(|(n, url)| image_upload(n + 1, url))
        .collect();
    let body = PredictBody {
        chatflow_id,
        question: question.said.text,
        session_id: None,
        override_config: None,
        system_message: system_message(&system)?,
        history: (!history.is_empty()).then_some(history),
        uploads: (!uploads.is_empty()).then_some(uploads),
    };
    Ok(Mapped {
        body,
        optional_overrides: optional_overrides(&request),
        transcript,
        stream: request.stream.unwrap_or(false),
        include_usage: request
            .stream_options
            .and_then(|o| o.include_usage)
            .unwrap_or(false),
        question_param,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(body: Value) -> Result<Mapped, V1Error> {
        map(serde_json::from_value(body).unwrap())
    }

    #[test]
    fn the_last_user_message_is_the_question_and_earlier_turns_the_history() {
        let mapped = request(json!({
            "model": "flow-a",
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "My name is Sarah"},
                {"role": "assistant", "content": "Hello Sarah!"},
                {"role": "developer", "content": [{"type": "text", "text": "No emoji."}]},
                {"role": "user", "content": [
                    {"type": "text", "text": "What is my name?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/a.JPG?x=1"}}
                ]}
            ],
            "temperature": 0.2, "max_tokens": 50, "logprobs": false, "seed": 3
        }))
        .unwrap();
        let body = mapped.body;
        assert_eq!(body.question, "What is my name?");
        let history = body.history.unwrap();
        assert_eq!(history.len(), 2);
        assert_eq!(
            (history[0].role.as_str(), history[1].role.as_str()),
            ("userMessage", "apiMessage")
        );
        assert_eq!(
            body.system_message.as_deref(),
            Some("Be brief.\n\nNo emoji.")
        );
        assert_eq!(
            Value::Object(mapped.optional_overrides),
            json!({"temperature": 0.2, "maxTokens": 50})
        );
        assert!(body.override_config.is_none());
        match &body.uploads.unwrap()[0] {
            UploadItem::Inline { kind, mime, .. } => {
                assert_eq!((kind.as_str(), mime.as_str()), ("url", "image/jpeg"));
            }
            other => panic!("{other:?}"),
        }
        let expected = transcript_after(
            "",
            [("user", "My name is Sarah"), ("assistant", "Hello Sarah!")],
        );
        assert_eq!(mapped.transcript.as_deref(), Some(expected.as_str()));
    }

    #[test]
    fn what_a_chatflow_cannot_do_is_refused_naming_the_param() {
        let user = json!({"role": "user", "content": "hi"});
        for (body, param) in [
            (json!({"model": "f", "messages": [user], "n": 2}), "n"),
            (
                json!({"model": "f", "messages": [user], "tools": [{"type": "function"}]}),
                "tools",
            ),
            (json!({"model": "f", "messages": []}), "messages"),
            (
                json!({"model": "f", "messages": [
                    {"role": "system", "content": "x".repeat(MAX_QUESTION_CHARS + 1)}, user]}),
                "messages",
            ),
            (
                json!({"model": "f", "messages": [{"role": "tool", "content": "x"}, user]}),
                "messages[0].role",
            ),
            (
                json!({"model": "f", "messages": [user, {"role": "assistant", "content": "a"}]}),
                "messages",
            ),
            (
                json!({"model": "f", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]}),
                "messages[0].content[0].type",
            ),
        ] {
            let error = request(body.clone()).unwrap_err();
            assert_eq!(error.status(), 400, "{body}");
            assert_eq!(error.param(), Some(param), "{body}");
        }
    }

    #[test]
    fn a_first_question_has_no_transcript_and_no_tools_null_is_fine() {
        let mapped = request(json!({"model": "f", "tools": null, "n": 1,
            "messages": [{"role": "user", "content": "hi"}]}))
        .unwrap();
        assert!(mapped.transcript.is_none() && mapped.body.history.is_none());
    }
}
