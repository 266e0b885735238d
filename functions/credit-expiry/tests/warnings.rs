//! Warnings and webhooks (README "Allowances and warnings"): a warning
//! goes out once when a balance crosses its threshold, however many
//! changes race across it; expiring credits are announced once, seven
//! days ahead; mails are in the recipient's language; a webhook that
//! fails twice is retried with backoff and then delivered, signed as the
//! Standard Webhooks specification says (checked by its own Python
//! library).
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, StatusCode};
use chrono::Utc;
mod common;

use common::limits;
use credit_expiry::Job;
use shared::ids::UserId;
use shared::ledger::{changes, Credits, EntryMeta};
use shared::testing::{TestPostgres, TestSmtp};
use sqlx::PgPool;

async fn user(pool: &PgPool, id: &str, locale: &str) {
    sqlx::query(
        "INSERT INTO user_accounts (user_id, username, email, role, locale, email_verified)
         VALUES ($1, $1, $1 || '@example.com', 'enduser', $2, true)",
    )
    .bind(id)
    .bind(locale)
    .execute(pool)
    .await
    .unwrap();
}

async fn grant(pool: &PgPool, id: &str, credits: i64, days: i32) {
    let mut tx = pool.begin().await.unwrap();
    let who = UserId::parse("userId", id).unwrap();
    let meta = EntryMeta::default();
    changes::allocate(
        &mut tx,
        &who,
        Credits::try_from(credits).unwrap(),
        Some(days),
        None,
        &meta,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
}

async fn notices(pool: &PgPool, account: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT event FROM notices WHERE account = $1 ORDER BY event")
        .bind(account)
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_crossing_warns_once_however_many_changes_race_and_the_mail_is_in_its_language() {
    let pg = TestPostgres::new().await;
    let pool = pg.pool.clone();
    user(&pool, "ana", "zh-CN").await;
    grant(&pool, "ana", 100, 30).await;
    // Fifty deductions of 2 at once: the balance crosses 10 (10% of the
    // 100 granted) once and reaches 0 once.
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move {
                let mut tx = pool.begin().await.unwrap();
                let who = UserId::parse("userId", "ana").unwrap();
                changes::deduct(
                    &mut tx,
                    &who,
                    Credits::try_from(2).unwrap(),
                    &EntryMeta::default(),
                )
                .await
                .unwrap();
                tx.commit().await.unwrap();
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        notices(&pool, "ana").await,
        ["credits.exhausted", "credits.low"]
    );

    let smtp = TestSmtp::start().await;
    let mailer = common::mailer(smtp.port);
    let job = Job::new(pool.clone(), limits(), None).with_mailer(mailer);
    let report = job.run().await.unwrap();
    assert_eq!(report["warningMails"], 2, "{report}");
    let again = job.run().await.unwrap();
    assert_eq!(again["warningMails"], 0, "each warning goes out once");
    // The text is UTF-8, base64 for mail: decoded, it reads in Chinese.
    let texts: Vec<String> = smtp
        .mails()
        .iter()
        .map(|m| {
            let body = m
                .data
                .split_once("\r\n\r\n")
                .or_else(|| m.data.split_once("\n\n"))
                .unwrap()
                .1;
            let packed: String = body.split_whitespace().collect();
            let bytes =
                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, packed).unwrap();
            String::from_utf8(bytes).unwrap()
        })
        .collect();
    assert_eq!(texts.len(), 2);
    let all = texts.join("\n");
    for words in [
        "ana，你好",
        "你的额度剩下 8，低于提醒门槛 10。",
        "你的额度已用完",
        "http://app.test/#/credits",
    ] {
        assert!(all.contains(words), "{words} in {all}");
    }
}

#[tokio::test]
async fn credits_that_end_as_new_ones_arrive_warn_nobody_but_running_out_does() {
    let pg = TestPostgres::new().await;
    let pool = pg.pool.clone();
    let past_due = "UPDATE credit_allocations
                       SET allocated_at = now() - interval '2 minutes',
                           expires_at = now() - interval '1 minute'
                     WHERE user_id = $1";
    // Bo's 5 credits are past due when 100 arrive: the grant's change
    // expires the 5 (an entry down to 0), then adds the 100. One change,
    // judged as it commits: nobody is told they ran out.
    user(&pool, "bo", "en").await;
    grant(&pool, "bo", 5, 30).await;
    sqlx::query(past_due)
        .bind("bo")
        .execute(&pool)
        .await
        .unwrap();
    grant(&pool, "bo", 100, 30).await;
    let expired: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM credit_transactions WHERE user_id = 'bo' AND type = 'expiry'",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(expired, 1);
    assert!(notices(&pool, "bo").await.is_empty());
    // Dee's 5 are past due too, and a prediction's transaction expires
    // them, brings 100 and holds all of them: a hold is not spending, so
    // nobody is told anything until it settles.
    user(&pool, "dee", "en").await;
    grant(&pool, "dee", 5, 30).await;
    sqlx::query(past_due)
        .bind("dee")
        .execute(&pool)
        .await
        .unwrap();
    let mut tx = pool.begin().await.unwrap();
    let dee = UserId::parse("userId", "dee").unwrap();
    let (hundred, meta) = (Credits::try_from(100).unwrap(), EntryMeta::default());
    changes::allocate(&mut tx, &dee, hundred, Some(30), None, &meta)
        .await
        .unwrap();
    let session = shared::ids::ReservationId::random();
    let flow = shared::ids::ChatflowId::parse("chatflowId", "flow").unwrap();
    shared::ledger::reservations::reserve(&mut tx, &dee, &session, &flow, hundred, &meta)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(notices(&pool, "dee").await.is_empty());
    // Whatever the setting the holds are noted in says, a hold is made:
    // a warning never stops a change.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SET LOCAL fgw.held = 'not json'")
        .execute(&mut *tx)
        .await
        .unwrap();
    let other = shared::ids::ReservationId::random();
    let two = Credits::try_from(2).unwrap();
    changes::allocate(&mut tx, &dee, two, Some(30), None, &meta)
        .await
        .unwrap();
    shared::ledger::reservations::reserve(&mut tx, &dee, &other, &flow, two, &meta)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Cy's 5 simply end, at the job's expiry: he has run out, and is told.
    user(&pool, "cy", "en").await;
    grant(&pool, "cy", 5, 30).await;
    sqlx::query(past_due)
        .bind("cy")
        .execute(&pool)
        .await
        .unwrap();
    Job::new(pool.clone(), limits(), None).run().await.unwrap();
    assert_eq!(
        notices(&pool, "cy").await,
        ["credits.exhausted", "credits.low"],
        "0 is below his threshold too (10% of the 5 he was given, rounded)"
    );
}

#[tokio::test]
async fn credits_about_to_expire_are_announced_once_a_week_ahead() {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    user(pool, "bo", "en").await;
    grant(pool, "bo", 20, 5).await;
    grant(pool, "bo", 5, 5).await; // too small to announce
    grant(pool, "bo", 30, 9).await; // not yet within the week
    let job = Job::new(pool.clone(), limits(), None);
    let now = Utc::now();
    assert_eq!(job.run_at(now).await.unwrap()["expiryNotices"], 1);
    assert_eq!(
        job.run_at(now).await.unwrap()["expiryNotices"],
        0,
        "once per allocation"
    );
    let later = job.run_at(now + chrono::Duration::days(3)).await.unwrap();
    assert_eq!(later["expiryNotices"], 1, "the 30 are within the week now");
    let credits: Vec<i64> = sqlx::query_scalar(
        "SELECT (data->>'credits')::bigint FROM notices WHERE event = 'credits.expiring' ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(credits, [20, 30]);
}

/// A receiver that answers 500 twice, then 200, and keeps every request.
async fn receiver() -> (String, Arc<Mutex<Vec<(HeaderMap, String)>>>) {
    let seen: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let kept = seen.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: String| {
            let kept = kept.clone();
            async move {
                let mut all = kept.lock().unwrap();
                all.push((headers, body));
                if all.len() <= 2 {
                    StatusCode::INTERNAL_SERVER_ERROR
                } else {
                    StatusCode::NO_CONTENT
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, seen)
}

#[tokio::test]
async fn a_webhook_that_fails_twice_is_retried_then_delivered_and_verifies_with_the_standard_library(
) {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    let (url, seen) = receiver().await;
    let events = vec!["credits.low".to_owned()];
    let (hook, secret) = shared::notices::register(pool, &url, &events, "admin")
        .await
        .unwrap();
    assert!(secret.starts_with("whsec_"), "{secret}");
    user(pool, "cy", "en").await;
    grant(pool, "cy", 100, 30).await;
    let mut tx = pool.begin().await.unwrap();
    let who = UserId::parse("userId", "cy").unwrap();
    changes::deduct(
        &mut tx,
        &who,
        Credits::try_from(95).unwrap(),
        &EntryMeta::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();

    let job = Job::new(pool.clone(), limits(), None);
    let t0 = Utc::now();
    let run = |at| {
        let job = job.clone();
        async move { job.run_at(at).await.unwrap()["webhooks"].clone() }
    };
    assert_eq!(run(t0).await["retrying"], 1);
    // Retried 30 s after the first failure, 60 s after the second.
    let not_yet = run(t0 + chrono::Duration::seconds(20)).await;
    assert_eq!(not_yet["retrying"], 0, "not due yet");
    assert_eq!(run(t0 + chrono::Duration::seconds(31)).await["retrying"], 1);
    let last = run(t0 + chrono::Duration::seconds(31 + 61)).await;
    assert_eq!(last["delivered"], 1, "{last}");
    let all = seen.lock().unwrap().clone();
    assert_eq!(all.len(), 3);
    let ids: Vec<&str> = all
        .iter()
        .map(|(h, _)| h["webhook-id"].to_str().unwrap())
        .collect();
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "one id on every attempt: {ids:?}"
    );
    let (mut conn_list, total) = shared::notices::deliveries(pool, hook.id, 1, 10)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(total, 1);
    let delivery = conn_list.remove(0);
    assert_eq!(
        (
            delivery.state.as_str(),
            delivery.attempts,
            delivery.last_status
        ),
        ("delivered", 3, Some(204))
    );

    // The standardwebhooks package (PyPI) verifies the last delivery.
    let (headers, body) = all.last().unwrap().clone();
    let header = |name: &str| headers[name].to_str().unwrap().to_owned();
    let script = "import sys, json\n\
                  from standardwebhooks.webhooks import Webhook\n\
                  secret, wid, ts, sig, body = sys.argv[1:6]\n\
                  payload = Webhook(secret).verify(body, {'webhook-id': wid, 'webhook-timestamp': ts, 'webhook-signature': sig})\n\
                  print(json.dumps(payload))";
    let verify = |body: String| {
        std::process::Command::new("python3")
            .args(["-c", script, &secret])
            .args([
                header("webhook-id"),
                header("webhook-timestamp"),
                header("webhook-signature"),
                body,
            ])
            .output()
            .expect("python3 runs")
    };
    let out = verify(body);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the signature did not verify: {stderr}"
    );
    let payload: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(payload["type"], "credits.low");
    assert_eq!(payload["data"]["balance"], 5);
    assert!(
        !verify("{}".into()).status.success(),
        "a tampered body verified"
    );
}

#[tokio::test]
async fn supervisors_are_warned_once_when_the_wallet_cannot_cover_the_next_period() {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    let team = "0190f000-0000-7000-8000-00000000bbbb";
    for id in ["lead", "m1", "m2", "m3"] {
        user(pool, id, if id == "lead" { "zh-TW" } else { "en" }).await;
    }
    shared::testing::team(pool, team, "Lab", &["m1", "m2", "m3"], 45).await;
    sqlx::raw_sql(&format!(
        "UPDATE user_accounts SET role = 'supervisor' WHERE user_id = 'lead';
         INSERT INTO team_supervisors (team_id, user_id) VALUES ('{team}', 'lead');
         INSERT INTO allowance_versions (allowance, effective_from, active, credits, period, set_by)
         VALUES ('team:{team}', now() - interval '1 day', true, 10, 'month', 'lead');"
    ))
    .execute(pool)
    .await
    .unwrap();
    let smtp = TestSmtp::start().await;
    let job = Job::new(pool.clone(), limits(), None).with_mailer(common::mailer(smtp.port));
    // This period: 30 of the 45 go to the members; 15 remain for 30 next time.
    let first = job.run().await.unwrap();
    assert_eq!(first["allowances"]["recipients"], 3, "{first}");
    job.run().await.unwrap();
    assert_eq!(
        notices(pool, &format!("team:{team}")).await,
        ["team.wallet_low"],
        "the wallet cannot cover the next period, said once"
    );
    let to: Vec<String> = smtp
        .mails()
        .iter()
        .flat_map(|m| m.to.clone())
        .filter(|t| t.starts_with("lead"))
        .collect();
    assert_eq!(to, ["lead@example.com"], "the supervisor is told, once");
    let data: serde_json::Value =
        sqlx::query_scalar("SELECT data FROM notices WHERE event = 'team.wallet_low'")
            .fetch_one(pool)
            .await
            .unwrap();
    assert_eq!(
        (data["shortfall"].as_i64(), data["next"].as_bool()),
        (Some(15), Some(true))
    );
}
