//! The money attacks of issue 9 through the served binaries (the Lambda
//! emulator, buffered and streamed): settling the gateway's reservation,
//! retried predictions, a buffered call past its deadline, unpriced
//! uploads, and amounts at the edge of 2^53.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use futures_util::StreamExt;
use serde_json::{json, Value};
use shared::flowise_double::{split_tokens, Behaviour, FlowiseDouble};
use shared::testing::SseFrames;
use shared::token::Role;

async fn stack_with(flowise: &FlowiseDouble) -> Stack {
    Stack::start_with(StackOptions {
        functions: Some(vec!["predict", "predict-stream", "credits"]),
        env: vec![
            ("FLOWISE_API_URL".into(), flowise.url.clone()),
            ("FLOWISE_FIRST_BYTE_TIMEOUT_SECONDS".into(), "2".into()),
            ("FLOWISE_TIMEOUT_SECONDS".into(), "10".into()),
            ("FLOWISE_BUFFERED_TIMEOUT_SECONDS".into(), "4".into()),
        ],
        ..Default::default()
    })
    .await
}

/// Syncs, opens every flow to everyone with its price, grants `user` 100.
async fn set_up(stack: &Stack, prices: &[(&str, Value)], user: &str) {
    let admin = stack.token("admin-1", Role::Admin);
    stack.sync_chatflows(&admin).await;
    for (flow, pricing) in prices {
        stack
            .open_chatflow(&admin, flow, Some(pricing.clone()))
            .await;
    }
    stack.allocate(&admin, user, 100).await;
}

/// A double with one flow, the stack, the flow opened with `pricing`
/// (per request, per input token, per output token), and zoe's token with
/// 100 credits.
async fn journey(
    flow: &str,
    behaviour: Behaviour,
    pricing: (i64, f64, f64),
) -> (FlowiseDouble, Stack, String) {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow(flow, flow, behaviour);
    let stack = stack_with(&flowise).await;
    let (per_request, per_input, per_output) = pricing;
    let price = json!({"perRequest": per_request, "perInputToken": per_input, "perOutputToken": per_output});
    set_up(&stack, &[(flow, price)], "zoe").await;
    let user = stack.token("zoe", Role::Enduser);
    (flowise, stack, user)
}

async fn balance(stack: &Stack, token: &str) -> i64 {
    stack.balance(token).await
}

/// Reads frames until one named `event` arrives (or the stream ends).
async fn read_until(
    body: &mut (impl futures_util::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    reader: &mut SseFrames,
    event: &str,
) -> Vec<(String, Value)> {
    let mut frames = Vec::new();
    while let Some(chunk) = body.next().await {
        frames.extend(reader.push(&chunk.expect("chunk")));
        if frames.iter().any(|(name, _)| name == event) {
            break;
        }
    }
    frames
}

fn data<'a>(frames: &'a [(String, Value)], event: &str) -> &'a Value {
    &frames.iter().find(|(n, _)| n == event).expect(event).1
}

#[tokio::test]
async fn a_user_cannot_abort_their_running_prediction_for_free() {
    let (_flowise, stack, user) = journey(
        "flow-slow",
        Behaviour::Answer {
            tokens: split_tokens("one two three four"),
            delay: Duration::from_millis(300),
            usage: None,
            heartbeat: false,
        },
        (2, 0.0, 1.0),
    )
    .await;
    let res = stack
        .open_stream(
            &user,
            &json!({"chatflow_id": "flow-slow", "question": "Hi"}),
            &[],
        )
        .await;
    assert_eq!(res.status(), 200);
    let mut body = res.bytes_stream();
    let mut reader = SseFrames::default();
    let first = read_until(&mut body, &mut reader, "session").await;
    let message_id = data(&first, "session")["message_id"].clone();
    for (path, body) in [
        (
            "/api/streaming-sessions/finalize",
            json!({"sessionId": message_id, "actualCredits": 0}),
        ),
        (
            "/api/streaming-sessions/abort",
            json!({"sessionId": message_id}),
        ),
    ] {
        let (status, answer) = stack.post("credits", path, &user, body).await;
        assert_eq!(
            (status, answer["error"].as_str()),
            (403, Some("gateway_reservation")),
            "{path}"
        );
    }
    let (_, active) = stack
        .get("credits", "/api/streaming-sessions/active", &user)
        .await;
    assert_eq!(active["sessions"], json!([]));
    let rest = read_until(&mut body, &mut reader, "end").await;
    // 2 + ceil(18 / 4) = 7, in full.
    assert_eq!(data(&rest, "end")["credits"]["charged"], 7);
    assert_eq!(balance(&stack, &user).await, 93);
}

/// A buffered prediction with `Idempotency-Key: order-77`.
async fn keyed_predict(stack: &Stack, token: &str, body: &Value) -> reqwest::Response {
    stack
        .http
        .post(stack.url("predict", "/api/v1/chat/predict"))
        .bearer_auth(token)
        .header("idempotency-key", "order-77")
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_retried_prediction_is_answered_once_and_paid_once_on_both_routes() {
    let (flowise, stack, user) =
        journey("flow-a", Behaviour::answer("Hello there"), (2, 0.0, 1.0)).await;
    let body = json!({"chatflow_id": "flow-a", "question": "Hi"});
    let first = keyed_predict(&stack, &user, &body).await;
    assert_eq!(first.status(), 200);
    let first: Value = first.json().await.unwrap();
    let after_first = balance(&stack, &user).await;
    let again = keyed_predict(&stack, &user, &body).await;
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers()["idempotent-replayed"], "true");
    assert_eq!(again.json::<Value>().await.unwrap(), first);
    // The same key on the streaming route: the stored answer, streamed.
    let res = stack
        .open_stream(&user, &body, &[("idempotency-key", "order-77")])
        .await;
    let mut stream = res.bytes_stream();
    let frames = read_until(&mut stream, &mut SseFrames::default(), "end").await;
    assert_eq!(data(&frames, "token"), &first["text"]);
    assert_eq!(data(&frames, "end")["replayed"], true);
    assert_eq!(flowise.received().len(), 1);
    assert_eq!(balance(&stack, &user).await, after_first);
    // Another body with the key: 409, nothing charged.
    let res = keyed_predict(
        &stack,
        &user,
        &json!({"chatflow_id": "flow-a", "question": "Other"}),
    )
    .await;
    let (status, answer) = (res.status().as_u16(), res.json::<Value>().await.unwrap());
    assert_eq!(
        (status, answer["error"].as_str()),
        (409, Some("idempotency_key_reused"))
    );
    assert_eq!(balance(&stack, &user).await, after_first);
}

#[tokio::test]
async fn a_buffered_prediction_past_its_deadline_is_504_and_free() {
    let (_flowise, stack, user) = journey("flow-stall", Behaviour::Stall, (2, 0.0, 1.0)).await;
    let started = Instant::now();
    let (status, answer) = stack
        .post(
            "predict",
            "/api/v1/chat/predict",
            &user,
            json!({"chatflow_id": "flow-stall", "question": "Hi"}),
        )
        .await;
    let took = started.elapsed();
    assert_eq!(
        (status, answer["error"].as_str()),
        (504, Some("upstream_timeout"))
    );
    // FLOWISE_BUFFERED_TIMEOUT_SECONDS=4: answered within it.
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(balance(&stack, &user).await, 100);
}

#[tokio::test]
async fn uploaded_text_is_priced_and_amounts_stay_below_two_to_the_53rd() {
    let (_flowise, stack, user) = journey("flow-p", Behaviour::answer("ok"), (0, 1.0, 0.0)).await;
    let (status, answer) = stack.post("predict", "/api/v1/chat/predict", &user, json!({"chatflow_id": "flow-p", "question": "Hi", "uploads": [
                {"type": "file:full", "name": "doc.txt", "mime": "text/plain", "data": "x".repeat(200)}
            ]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    // "Hi" 1 + 200 / 4 = 51 input tokens.
    assert_eq!(answer["credits"]["charged"], 51);
    let admin = stack.token("admin-1", Role::Admin);
    let (status, answer) = stack
        .post(
            "credits",
            "/api/credits/allocate",
            &admin,
            json!({"userId": "zoe", "credits": 9_007_199_254_740_992_i64}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["message"].as_str().unwrap().contains("credits"));
    let (status, answer) = stack
        .post(
            "credits",
            "/api/credits/allocate",
            &admin,
            json!({"userId": "zoe", "credits": 9_007_199_254_740_991_i64}),
        )
        .await;
    assert_eq!(
        (status, answer["error"].as_str()),
        (422, Some("balance_limit"))
    );
    let (status, answer) = stack
        .post(
            "credits",
            "/api/credits/adjust",
            &admin,
            json!({"userId": "zoe", "amount": i64::MIN, "notes": "x"}),
        )
        .await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(balance(&stack, &user).await, 49);
}
