//! What a request may send a chatflow (issue 22): overrides only where an
//! admin allowed them, a system message placed as the chatflow's setting
//! says and never lost, every input priced, and flows Flowise does not run
//! through the prediction API never offered. The Flowise double applies
//! overrides and system prompts as Flowise 3.1.4 does.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::App;
use serde_json::{json, Value};
use shared::flowise_double::{Behaviour, Shape, OPERATOR_PROMPT};
use shared::testing::{call, TestResponse};
use shared::token::Role;

/// Sets the chatflow `id`'s settings as an admin.
async fn set(app: &App, id: &str, settings: Value) -> TestResponse {
    let admin = app.token("admin-1", Role::Admin);
    app.send(
        "PUT",
        &format!("/api/v1/admin/chatflows/{id}"),
        &admin,
        Some(settings),
    )
    .await
}

/// Syncs the catalogue as an admin.
async fn sync(app: &App) {
    let admin = app.token("admin-1", Role::Admin);
    let res = app
        .send("POST", "/api/v1/admin/chatflows/sync", &admin, None)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
}

/// What the LLM of the last prediction received.
fn last_llm(app: &App) -> shared::flowise_double::LlmInput {
    app.flowise
        .received()
        .pop()
        .and_then(|r| r.llm)
        .expect("a prediction the flow ran")
}

#[tokio::test]
async fn an_override_the_admin_did_not_allow_is_400_before_anything_is_reserved() {
    let app = App::new().await;
    app.flowise
        .set_shape("flow-a", Shape::chain(&["temperature", "modelName"]));
    sync(&app).await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let rows = app.ledger_rows().await;
    // Nothing is allowed by default: another model, a larger maxTokens, a
    // basePath carrying the operator's provider key are all refused.
    for key in ["modelName", "maxTokens", "basePath"] {
        let res = app
            .predict(
                &user,
                json!({"chatflow_id": "flow-a", "question": "Hi", "overrideConfig": {key: "x"}}),
            )
            .await;
        res.assert_error(400, "override_not_allowed");
        assert!(
            res.body["message"]
                .as_str()
                .unwrap()
                .contains(&format!("overrideConfig.{key}")),
            "{}",
            res.body
        );
    }
    let (status, _) = app
        .open_stream(
            &user,
            json!({"chatflow_id": "flow-a", "question": "Hi", "overrideConfig": {"modelName": "gpt-9"}}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(app.flowise.received().len(), 0);
    assert_eq!(
        (app.ledger_rows().await, app.balance("u1").await),
        (rows, 100)
    );
    assert_eq!(app.active_reservations().await, 0);
    // Allowed, a key passes (and the flow applies it where its own settings
    // enable it); sessionId is the gateway's own whatever is sent.
    let res = set(&app, "flow-a", json!({"allowedOverrides": ["temperature"]})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.body["chatflow"]["allowedOverrides"],
        json!(["temperature"])
    );
    let res = app
        .predict(
            &user,
            json!({"chatflow_id": "flow-a", "question": "Hi",
                   "overrideConfig": {"temperature": 0.1, "sessionId": "someone-elses"}}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let sent = app.flowise.received().pop().unwrap();
    assert_eq!(sent.body["overrideConfig"]["temperature"], 0.1);
    assert_eq!(
        sent.body["overrideConfig"]["sessionId"],
        res.body["session_id"]
    );
    assert_eq!(sent.llm.unwrap().applied, ["temperature"]);
    // An admin cannot allow the session.
    set(&app, "flow-a", json!({"allowedOverrides": ["sessionId"]}))
        .await
        .assert_error(400, "invalid_input");
}

#[tokio::test]
async fn a_v1_clients_temperature_goes_only_where_it_is_allowed() {
    let app = App::new().await;
    app.flowise
        .set_shape("flow-a", Shape::chain(&["temperature"]));
    sync(&app).await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let body = json!({"model": "flow-a", "temperature": 0.3, "max_tokens": 99,
        "messages": [{"role": "user", "content": "Hi"}]});
    let res = call(
        &app.stream,
        "POST",
        "/v1/chat/completions",
        Some(body.clone()),
        Some(&user),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let sent = app.flowise.received().pop().unwrap().body;
    assert_eq!(sent["overrideConfig"].get("temperature"), None, "{sent}");
    set(&app, "flow-a", json!({"allowedOverrides": ["temperature"]})).await;
    let res = call(
        &app.stream,
        "POST",
        "/v1/chat/completions",
        Some(body),
        Some(&user),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let sent = app.flowise.received().pop().unwrap().body;
    assert_eq!(sent["overrideConfig"]["temperature"], 0.3);
    assert_eq!(sent["overrideConfig"].get("maxTokens"), None);
}

/// A `/v1` completion with a system message on `flow`.
async fn with_system(app: &App, user: &str, flow: &str) -> TestResponse {
    let body = json!({"model": flow, "messages": [
        {"role": "system", "content": "Answer in French."},
        {"role": "user", "content": "Hello"}]});
    call(
        &app.stream,
        "POST",
        "/v1/chat/completions",
        Some(body),
        Some(user),
    )
    .await
}

#[tokio::test]
async fn a_system_message_reaches_the_llm_as_the_chatflow_is_set_and_never_vanishes() {
    let app = App::new().await;
    app.add_flow("flow-chain", Behaviour::answer("ok"), (0, 1.0, 0.0))
        .await;
    app.add_flow("flow-agent", Behaviour::answer("ok"), (0, 1.0, 0.0))
        .await;
    app.flowise
        .set_shape("flow-chain", Shape::chain(&["systemMessagePrompt"]));
    // This agent's settings enable no override at all.
    app.flowise.set_shape("flow-agent", Shape::agent(&[]));
    sync(&app).await;
    app.grant("u1", 1_000).await;
    let user = app.token("u1", Role::Enduser);

    // Prepend (the default): a marked block before the question, priced.
    let res = with_system(&app, &user, "flow-chain").await;
    assert_eq!(res.status, 200, "{}", res.body);
    let llm = last_llm(&app);
    assert_eq!(llm.system.as_deref(), Some(OPERATOR_PROMPT));
    assert_eq!(
        llm.question,
        "<system>\nAnswer in French.\n</system>\n\nHello"
    );
    // 1 a token: the 42-character block and question are 11 input tokens.
    assert_eq!(res.body["usage"]["prompt_tokens"], 11, "{}", res.body);
    assert_eq!(res.body["credits"]["charged"], 11);

    // Override: sent as the input the chain reads, replacing the prompt.
    let res = set(&app, "flow-chain", json!({"systemMessages": "override"})).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        res.body["chatflow"]["systemPromptInput"],
        "systemMessagePrompt"
    );
    let res = with_system(&app, &user, "flow-chain").await;
    assert_eq!(res.status, 200, "{}", res.body);
    let llm = last_llm(&app);
    assert_eq!(llm.system.as_deref(), Some("Answer in French."));
    assert_eq!(llm.question, "Hello");
    // Still priced: "Hello" and the system message, 2 + 5 tokens.
    assert_eq!(res.body["usage"]["prompt_tokens"], 7, "{}", res.body);

    // An agent whose settings enable no override cannot be set so, and
    // nothing changes.
    let res = set(
        &app,
        "flow-agent",
        json!({"systemMessages": "override", "isPublic": false}),
    )
    .await;
    res.assert_error(400, "invalid_input");
    assert!(res.body["message"]
        .as_str()
        .unwrap()
        .starts_with("systemMessages:"));
    let admin = app.token("admin-1", Role::Admin);
    let list = app
        .send("GET", "/api/v1/admin/chatflows", &admin, None)
        .await;
    let agent = list.body["chatflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "flow-agent")
        .unwrap()
        .clone();
    assert_eq!(agent["systemMessages"], "prepend");
    assert_eq!(agent["isPublic"], true);
    assert_eq!(agent["systemPromptInput"], Value::Null);

    // Should Flowise stop allowing it, the message is prepended, not lost.
    app.flowise.set_shape("flow-chain", Shape::chain(&[]));
    sync(&app).await;
    let res = with_system(&app, &user, "flow-chain").await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(last_llm(&app)
        .question
        .starts_with("<system>\nAnswer in French."));

    // Refuse: 400 naming messages, nothing sent or reserved.
    let sent = app.flowise.received().len();
    set(&app, "flow-agent", json!({"systemMessages": "refuse"})).await;
    let res = with_system(&app, &user, "flow-agent").await;
    assert_eq!(res.status, 400, "{}", res.body);
    assert_eq!(res.body["error"]["param"], "messages");
    assert_eq!(app.flowise.received().len(), sent);
    // Nor through the overrides, even were the input an allowed one.
    app.flowise
        .set_shape("flow-agent", Shape::agent(&["systemMessage"]));
    sync(&app).await;
    set(
        &app,
        "flow-agent",
        json!({"allowedOverrides": ["systemMessage"]}),
    )
    .await;
    let res = app
        .predict(
            &user,
            json!({"chatflow_id": "flow-agent", "question": "Hi", "overrideConfig": {"systemMessage": "Be curt."}}),
        )
        .await;
    res.assert_error(400, "override_not_allowed");
    assert_eq!(app.flowise.received().len(), sent);
    // The native routes take it the same way, as `systemMessage`.
    let res = app
        .predict(
            &user,
            json!({"chatflow_id": "flow-agent", "question": "Hi", "systemMessage": "Be curt."}),
        )
        .await;
    res.assert_error(400, "invalid_input");
    assert!(res.body["message"]
        .as_str()
        .unwrap()
        .starts_with("systemMessage:"));
    let res = app
        .predict(
            &user,
            json!({"chatflow_id": "flow-chain", "question": "Hi", "systemMessage": "Be curt."}),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        last_llm(&app).question,
        "<system>\nBe curt.\n</system>\n\nHi"
    );
    // The history keeps the question as asked.
    let session = res.body["session_id"].as_str().unwrap();
    let messages = app
        .send(
            "GET",
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &user,
            None,
        )
        .await;
    assert_eq!(messages.body["messages"][0]["content"], "Hi");
    app.assert_ledger_consistent().await;
}

#[tokio::test]
async fn a_flow_started_by_a_webhook_or_a_schedule_is_never_offered_and_predicting_on_it_is_free() {
    let app = App::new().await;
    app.add_flow("flow-hook", Behaviour::answer("ok"), (5, 0.0, 0.0))
        .await;
    app.flowise
        .set_shape("flow-hook", Shape::agentflow("webhookTrigger"));
    sync(&app).await;
    app.grant("u1", 100).await;
    let user = app.token("u1", Role::Enduser);
    let admin = app.token("admin-1", Role::Admin);
    for token in [&user, &admin] {
        let list = app.send("GET", "/api/v1/chatflows", token, None).await;
        let ids: Vec<&str> = list.body["chatflows"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["flow-a"], "{}", list.body);
        let models = call(&app.stream, "GET", "/v1/models", None, Some(token)).await;
        assert!(
            !models.body.to_string().contains("flow-hook"),
            "{}",
            models.body
        );
    }
    // The admin's catalogue shows it, marked.
    let all = app
        .send("GET", "/api/v1/admin/chatflows", &admin, None)
        .await;
    let hook = all.body["chatflows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "flow-hook")
        .unwrap()
        .clone();
    assert_eq!(hook["invocable"], false);
    let rows = app.ledger_rows().await;
    app.predict(&user, json!({"chatflow_id": "flow-hook", "question": "Hi"}))
        .await
        .assert_error(422, "chatflow_not_invocable");
    let (status, _) = app
        .open_stream(&user, json!({"chatflow_id": "flow-hook", "question": "Hi"}))
        .await;
    assert_eq!(status, 422);
    let res = call(
        &app.stream,
        "POST",
        "/v1/chat/completions",
        Some(json!({"model": "flow-hook", "messages": [{"role": "user", "content": "Hi"}]})),
        Some(&user),
    )
    .await;
    assert_eq!(res.status, 422, "{}", res.body);
    assert_eq!(res.body["error"]["code"], "chatflow_not_invocable");
    assert_eq!(app.flowise.received().len(), 0);
    assert_eq!(
        (app.ledger_rows().await, app.balance("u1").await),
        (rows, 100)
    );
    // A chat-started agentflow runs as any flow.
    app.flowise
        .set_shape("flow-hook", Shape::agentflow("chatInput"));
    sync(&app).await;
    let res = app
        .predict(&user, json!({"chatflow_id": "flow-hook", "question": "Hi"}))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
}

#[tokio::test]
async fn a_model_the_caller_may_not_use_is_404() {
    let app = App::new().await;
    let admin = app.add_private_flow("flow-secret").await;
    let user = app.token("u1", Role::Enduser);
    let res = call(
        &app.stream,
        "GET",
        "/v1/models/flow-secret",
        None,
        Some(&user),
    )
    .await;
    assert_eq!(res.status, 404, "{}", res.body);
    assert_eq!(res.body["error"]["code"], "model_not_found");
    let res = call(
        &app.stream,
        "GET",
        "/v1/models/flow-secret",
        None,
        Some(&admin),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // Asking it for a completion looks the same as asking an unknown one.
    let ask =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "Hi"}]});
    for model in ["flow-secret", "flow-nowhere"] {
        let res = call(
            &app.stream,
            "POST",
            "/v1/chat/completions",
            Some(ask(model)),
            Some(&user),
        )
        .await;
        assert_eq!(res.status, 404, "{}", res.body);
        assert_eq!(res.body["error"]["code"], "model_not_found");
    }
}

/// A one-pixel PNG, as a data URL.
const PIXEL: &str = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==";

#[tokio::test]
async fn every_input_is_priced_system_messages_overrides_images_and_documents() {
    let app = App::new().await;
    // 1 credit an input token; images count 1,000 tokens, documents 20,000
    // a started MiB, unless the rule says otherwise.
    app.add_flow("flow-in", Behaviour::answer(""), (0, 1.0, 0.0))
        .await;
    app.flowise.set_shape("flow-in", Shape::chain(&["vars"]));
    sync(&app).await;
    set(&app, "flow-in", json!({"allowedOverrides": ["vars"]})).await;
    app.grant("u1", 1_000_000).await;
    let user = app.token("u1", Role::Enduser);
    let charged = |res: TestResponse| {
        assert_eq!(res.status, 200, "{}", res.body);
        res.body["credits"]["charged"].as_i64().unwrap()
    };
    // "Hi!!" is one token; every string of the overrides counts too.
    let plain = json!({"chatflow_id": "flow-in", "question": "Hi!!"});
    assert_eq!(charged(app.predict(&user, plain).await), 1);
    let with_vars = json!({"chatflow_id": "flow-in", "question": "Hi!!",
        "overrideConfig": {"vars": {"topic": "12345678", "more": ["1234"]}}});
    assert_eq!(charged(app.predict(&user, with_vars).await), 1 + 3);
    // An image: 1,000 tokens.
    let image = json!({"chatflow_id": "flow-in", "question": "Hi!!",
        "uploads": [{"type": "file", "name": "p.png", "mime": "image/png", "data": PIXEL}]});
    assert_eq!(charged(app.predict(&user, image).await), 1 + 1_000);
    let url = json!({"chatflow_id": "flow-in", "question": "Hi!!",
        "uploads": [{"type": "url", "name": "cat", "mime": "image/png", "data": "https://example.com/cat.png"}]});
    assert_eq!(charged(app.predict(&user, url).await), 1 + 1_000);
    // Ten PDFs are not free: each started MiB counts 20,000.
    let pdf = format!(
        "data:application/pdf;base64,{}",
        base64_of(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n")
    );
    let pdfs: Vec<Value> = (0..10)
        .map(|n| json!({"type": "file", "name": format!("doc{n}.pdf"), "mime": "application/pdf", "data": pdf}))
        .collect();
    let ten = json!({"chatflow_id": "flow-in", "question": "Hi!!", "uploads": pdfs});
    assert_eq!(charged(app.predict(&user, ten).await), 1 + 200_000);
    // The rule sets its own counts.
    let res = set(
        &app,
        "flow-in",
        json!({"pricing": {"perRequest": 0, "perInputToken": 1, "perOutputToken": 0,
                           "imageInputTokens": 10, "documentInputTokensPerMb": 0}}),
    )
    .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["pricing"]["imageInputTokens"], 10);
    let image = json!({"chatflow_id": "flow-in", "question": "Hi!!",
        "uploads": [{"type": "file", "name": "p.png", "mime": "image/png", "data": PIXEL}]});
    assert_eq!(charged(app.predict(&user, image).await), 1 + 10);
    // A system message too long is refused, naming the field.
    let long = json!({"chatflow_id": "flow-in", "question": "Hi",
        "systemMessage": "x".repeat(100_001)});
    app.predict(&user, long)
        .await
        .assert_error(400, "invalid_input");
}

fn base64_of(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}
