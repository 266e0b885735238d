//! The job's chatflow sync, and that a Flowise outage never stops expiry.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::time::Duration;

use credit_expiry::Job;
mod common;

use common::limits;
use shared::config::FlowiseConfig;
use shared::flowise::FlowiseClient;
use shared::flowise_double::{Behaviour, FlowiseDouble};
use shared::testing::{TestMongo, TestPostgres};

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

#[tokio::test]
async fn the_owner_of_a_key_about_to_expire_is_mailed_once_and_only_for_it() {
    use shared::testing::{make_key, TestSmtp};
    use shared::token::Role;
    let (pg, smtp) = tokio::join!(TestPostgres::new(), TestSmtp::start());
    let soon = make_key(
        &pg.pool,
        "kim",
        Role::Enduser,
        serde_json::json!({"name": "soon", "expiresInDays": 5}),
    )
    .await;
    make_key(
        &pg.pool,
        "kim",
        Role::Enduser,
        serde_json::json!({"name": "later", "expiresInDays": 30}),
    )
    .await;
    let revoked = make_key(
        &pg.pool,
        "kim",
        Role::Enduser,
        serde_json::json!({"name": "gone", "expiresInDays": 2}),
    )
    .await;
    sqlx::query("UPDATE api_keys SET revoked_at = now(), revoked_by = 'kim' WHERE id = $1")
        .bind(revoked.id)
        .execute(&pg.pool)
        .await
        .unwrap();
    let mailer = common::mailer(smtp.port);
    let job = Job::new(pg.pool.clone(), limits(), None).with_mailer(mailer);
    // Two runs at once, then a third: one mail, for the key that expires
    // within 7 days.
    let (a, b) = tokio::join!(job.run(), job.run());
    let c = job.run().await.unwrap();
    let sent: Vec<i64> = [a.unwrap(), b.unwrap(), c]
        .iter()
        .map(|r| r["keyExpiryWarnings"].as_i64().unwrap())
        .collect();
    assert_eq!(sent.iter().sum::<i64>(), 1, "{sent:?}");
    let mail = smtp.wait_for("kim@example.com", 0).await;
    assert!(mail.data.contains("soon"), "{}", mail.data);
    assert!(mail.data.contains(&soon.prefix));
    assert!(!mail.data.contains(&soon.key[17..]));
    assert_eq!(smtp.mails().len(), 1);
}
