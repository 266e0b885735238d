//! The job's chatflow sync, and that a Flowise outage never stops expiry.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::time::Duration;

use credit_expiry::Job;
use shared::config::{FlowiseConfig, Limits};
use shared::flowise::FlowiseClient;
use shared::flowise_double::{Behaviour, FlowiseDouble};
use shared::testing::{TestMongo, TestPostgres};

fn limits() -> Limits {
    Limits {
        max_upload_bytes: 1024,
        reservation_ttl: Duration::from_secs(900),
        rate: shared::config::RateLimits {
            per_minute: 10_000,
            concurrent: 100,
            running_for: Duration::from_secs(150),
        },
    }
}

fn client(url: &str) -> FlowiseClient {
    FlowiseClient::new(&FlowiseConfig {
        api_url: url.to_owned(),
        api_key: None,
        timeout: Duration::from_secs(2),
        first_byte_timeout: Duration::from_secs(1),
        buffered_timeout: Duration::from_secs(2),
    })
    .unwrap()
}

#[tokio::test]
async fn each_run_also_syncs_the_chatflow_catalogue() {
    let (pg, mongo) = tokio::join!(TestPostgres::new(), TestMongo::new());
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow("f1", "One", Behaviour::answer("x"));
    let job = Job::new(
        pg.pool.clone(),
        limits(),
        Some((mongo.stores.chat.clone(), client(&flowise.url))),
    );
    let report = job.run().await.unwrap();
    assert_eq!(report["expiredAllocations"], 0);
    assert_eq!(
        report["chatflowSync"],
        serde_json::json!({"created": 1, "updated": 0, "removed": 0})
    );
    let down = Job::new(
        pg.pool.clone(),
        limits(),
        Some((mongo.stores.chat.clone(), client("http://127.0.0.1:9"))),
    );
    let report = down
        .run()
        .await
        .expect("expiry runs even when Flowise is down");
    assert!(report["chatflowSync"]["error"].is_string());
}
