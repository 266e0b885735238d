//! The prediction journey over HTTP through the served functions: the
//! buffered one through `lambda_http::run`, the streamed one through
//! Lambda response streaming, both behind the function-URL front.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::time::{Duration, Instant};

use e2e::{Stack, StackOptions};
use futures_util::StreamExt;
use serde_json::{json, Value};
use shared::flowise_double::{split_tokens, Behaviour, FlowiseDouble};
use shared::token::Role;

const ANSWER: &str = "Hello from the fake OpenAI server!";

/// The functions the journey uses, as Lambda instances or (`serve`) from
/// one `gateway-admin serve` process.
async fn stack_with(flowise: &FlowiseDouble, serve: bool) -> Stack {
    Stack::start_with(StackOptions {
        functions: Some(vec!["predict", "predict-stream", "credits"]),
        env: vec![
            ("FLOWISE_API_URL".into(), flowise.url.clone()),
            ("FLOWISE_FIRST_BYTE_TIMEOUT_SECONDS".into(), "2".into()),
            ("FLOWISE_TIMEOUT_SECONDS".into(), "10".into()),
        ],
        serve,
        ..Default::default()
    })
    .await
}

/// Reads a streamed answer frame by frame, with arrival times.
async fn read_frames(res: reqwest::Response) -> Vec<(String, Value, Instant)> {
    let mut body = res.bytes_stream();
    let mut reader = shared::testing::SseFrames::default();
    let mut frames = Vec::new();
    while let Some(chunk) = body.next().await {
        let now = Instant::now();
        frames.extend(
            reader
                .push(&chunk.expect("chunk"))
                .into_iter()
                .map(|(e, d)| (e, d, now)),
        );
    }
    frames
}

#[tokio::test]
async fn admin_syncs_and_grants_then_a_user_predicts_buffered_and_streamed_until_out_of_credits() {
    journey(false).await;
}

/// The same journey, every function's router mounted on one port.
#[tokio::test]
async fn the_same_journey_served_from_one_process() {
    journey(true).await;
}

async fn journey(serve: bool) {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow(
        "flow-e2e",
        "Support bot",
        Behaviour::Answer {
            tokens: split_tokens(ANSWER),
            delay: Duration::from_millis(200),
            usage: None,
            heartbeat: true,
        },
    );
    flowise.add_flow(
        "flow-long",
        "Storyteller",
        Behaviour::Answer {
            tokens: vec!["word ".to_owned(); 5_000],
            delay: Duration::ZERO,
            usage: None,
            heartbeat: false,
        },
    );
    let stack = stack_with(&flowise, serve).await;
    let admin = stack.token("admin-1", Role::Admin);
    let user = stack.token("zoe", Role::Enduser);

    // The admin syncs the catalogue, grants zoe access and credits.
    let body = stack.sync_chatflows(&admin).await;
    assert_eq!(body["created"].as_u64(), Some(2), "{body}");
    let (status, _) = stack
        .get("predict", "/api/v1/chatflows/flow-e2e", &user)
        .await;
    assert_eq!(status, 403);
    let (status, _) = stack
        .post(
            "predict",
            "/api/v1/admin/chatflows/flow-e2e/users",
            &admin,
            json!({"userIds": ["zoe"]}),
        )
        .await;
    assert_eq!(status, 200);
    stack.allocate(&admin, "zoe", 30).await;
    let (_, flows) = stack.get("predict", "/api/v1/chatflows", &user).await;
    assert_eq!(flows["chatflows"][0]["id"], "flow-e2e");

    // A file, then a buffered prediction that uses it.
    let png = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";
    let form = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(png.to_vec())
            .file_name("pixel.png")
            .mime_str("image/png")
            .unwrap(),
    );
    let res = stack
        .http
        .post(stack.url("predict", "/api/v1/chat/files"))
        .bearer_auth(&user)
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let file: Value = res.json().await.unwrap();
    let (status, answer) = stack.predict(&user, json!({"chatflow_id": "flow-e2e", "question": "What is in the picture?", "uploads": [{"file_id": file["file_id"]}]}))
        .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["text"], ANSWER);
    // Default rule: 1 + ceil(0.001 x (6 + 1,000 for the image) + 0.002 x 9) = 3.
    assert_eq!(answer["credits"], json!({"charged": 3, "balance": 27}));
    let sent = flowise.received().pop().unwrap();
    assert!(sent.body["uploads"][0]["data"]
        .as_str()
        .unwrap()
        .starts_with("data:image/png;base64,"));
    let session = answer["session_id"].as_str().unwrap().to_owned();

    // Streamed through Lambda response streaming, in the same session.
    let started = Instant::now();
    let body = json!({"chatflow_id": "flow-e2e", "question": "And now?", "session_id": session});
    let res = stack.open_stream(&user, &body, &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["content-type"], "text/event-stream");
    let frames = read_frames(res).await;
    let done = Instant::now();
    let events: Vec<&str> = frames.iter().map(|f| f.0.as_str()).collect();
    assert_eq!(events.first(), Some(&"session"));
    assert_eq!(events.last(), Some(&"end"));
    let first_token = frames.iter().find(|f| f.0 == "token").expect("tokens").2;
    assert!(
        done - first_token >= Duration::from_millis(800),
        "the first token waited for the last"
    );
    assert!(first_token - started < Duration::from_secs(2));
    assert_eq!(frames.last().unwrap().1["credits"]["balance"], 25);

    // The history holds all four messages.
    let (_, history) = stack
        .get(
            "predict",
            &format!("/api/v1/chat/sessions/{session}/messages"),
            &user,
        )
        .await;
    let contents: Vec<&str> = history["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["content"].as_str().unwrap())
        .collect();
    assert_eq!(
        contents,
        ["What is in the picture?", ANSWER, "And now?", ANSWER]
    );

    // Spend all but 3, then ask a chatflow whose answer is far longer than
    // that: the stream stops where the credits end, charged exactly them.
    let (status, _) = stack
        .post(
            "credits",
            "/api/credits/deduct",
            &user,
            json!({"credits": 22}),
        )
        .await;
    assert_eq!(status, 200);
    let (status, _) = stack
        .post(
            "predict",
            "/api/v1/admin/chatflows/flow-long/users",
            &admin,
            json!({"userIds": ["zoe"]}),
        )
        .await;
    assert_eq!(status, 200);
    let long = json!({"chatflow_id": "flow-long", "question": "Tell me everything"});
    let frames = read_frames(stack.open_stream(&user, &long, &[]).await).await;
    let end = &frames.last().unwrap().1;
    assert_eq!(end["status"], "incomplete", "{end}");
    assert_eq!(end["reason"], "credits_exhausted");
    assert_eq!(end["credits"], json!({"charged": 3, "balance": 0}));
    let delivered: String = frames
        .iter()
        .filter(|f| f.0 == "token")
        .filter_map(|f| f.1.as_str())
        .collect();
    // 1 + ceil(0.001 x 5 + 0.002 x output) = 3: at most 997 output tokens.
    let tokens = delivered.chars().count().div_ceil(4);
    assert!((900..=997).contains(&tokens), "{tokens} tokens delivered");

    // Out of credits: 402, with nothing sent to Flowise.
    let before = flowise.received().len();
    let hi = json!({"chatflow_id": "flow-e2e", "question": "Hi"});
    let (status, body) = stack.predict(&user, hi.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (402, Some("insufficient_credits"))
    );
    let res = stack.open_stream(&user, &hi, &[]).await;
    assert_eq!(res.status(), 402);
    assert_eq!(
        res.json::<Value>().await.unwrap()["error"],
        "insufficient_credits"
    );
    assert_eq!(flowise.received().len(), before);
}
