//! Allowances, warnings and webhooks in the console, in a real browser
//! (README "Allowances and warnings"): an admin sets a role's allowance
//! and registers a webhook (its secret shown once); a user's credits page
//! shows what arrived, when more come, and their warning settings. In
//! English and both Chinese locales, checked by axe.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod browser;

use browser::{console_stack, sign_in, Browser, ADMIN};
use shared::flowise_double::{Behaviour, FlowiseDouble};

#[tokio::test]
async fn an_admin_sets_an_allowance_and_a_webhook_and_a_user_sees_it_arrive_and_sets_warnings() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow("flow-ui", "Support bot", Behaviour::answer("Hi."));
    let (stack, base) = console_stack(&flowise).await;
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
    browser.open(&base, "admin/allowances").await;
    let card = "[id='-api-admin-allowances-enduser-credits']";
    browser.fill(card, "100").await;
    browser.submit(card).await;
    browser
        .wait_text("#main", "100 credits every month (UTC).")
        .await;
    browser
        .fill("#webhook-url", "http://example.com/hook")
        .await;
    browser.submit("#webhook-url").await;
    browser
        .wait_text("#webhook-url-error", "Enter an https address")
        .await;
    browser
        .fill("#webhook-url", "http://localhost:9/hook")
        .await;
    browser.submit("#webhook-url").await;
    let secret = browser.wait_text("#webhook-secret", "whsec_").await;
    assert!(secret.contains("shown this once"), "{secret}");
    // A warning is recorded and the job tries to deliver it; nothing
    // listens on port 9, so the admin's list says it is being retried, and
    // why.
    sqlx::query("SELECT notify('credits.low', 'someone', 'low:someone', '{}'::jsonb, false)")
        .execute(&stack.pg.pool)
        .await
        .unwrap();
    stack
        .invoke("credit-expiry", serde_json::json!({}))
        .await
        .expect("the job runs");
    browser
        .click("button[aria-label='Deliveries to http://localhost:9/hook']")
        .await;
    let row = browser
        .wait_text(
            "#webhook-deliveries",
            "A balance falls below its warning level",
        )
        .await;
    for words in ["Retrying", "no answer"] {
        assert!(row.contains(words), "{words} in {row}");
    }
    browser.assert_accessible("allowances admin").await;
    // An admin's ten pages and the tools share one row at 1280 px.
    let header = browser
        .script("return document.querySelector('header.top').getBoundingClientRect().height")
        .await
        .as_f64()
        .unwrap();
    assert!(header < 70.0, "the admin's header wraps: {header} px high");
    for (locale, words) in [("zh-CN", "每月 100 额度"), ("zh-TW", "每月 100 額度")] {
        browser.select("#locale", locale).await;
        browser.wait_text("#main", words).await;
        browser
            .assert_accessible(&format!("allowances admin {locale}"))
            .await;
    }
    browser.select("#locale", "en").await;

    // On a 375 px phone the page fits, its deliveries table included.
    let phone = Browser::start(375, 800).await;
    sign_in(&phone, &base, ADMIN.0, ADMIN.2).await;
    phone.open(&base, "admin/allowances").await;
    phone
        .click("button[aria-label='Deliveries to http://localhost:9/hook']")
        .await;
    phone.wait_text("#webhook-deliveries", "Retrying").await;
    phone.shot("allowances admin at 375px").await;
    assert!(
        phone.no_horizontal_scroll().await,
        "the admin's allowances page scrolls sideways at 375 px"
    );

    // A team's supervisors (here the admin, who leads every team) set its
    // allowance on the team's page, a rollover included.
    let admin = stack.token("admin-1", shared::token::Role::Admin);
    let new_team = serde_json::json!({"name": "Year 9"});
    let (status, made) = stack
        .post("credits", "/api/admin/teams", &admin, new_team)
        .await;
    assert_eq!(status, 201, "{made}");
    let team = made["id"].as_str().unwrap().to_owned();
    browser.open(&base, &format!("teams?team={team}")).await;
    let slug = format!("[id='-api-teams-{team}-allowance-");
    browser.fill(&format!("{slug}credits']"), "10").await;
    browser.fill(&format!("{slug}cap']"), "5").await;
    browser.submit(&format!("{slug}credits']")).await;
    browser
        .wait_text(
            "#main",
            "10 credits every month (UTC). Up to 5 unspent credits roll over into the next period.",
        )
        .await;
    let (_, standing) = stack
        .get("credits", &format!("/api/teams/{team}/allowance"), &admin)
        .await;
    assert_eq!(standing["current"]["rolloverCap"], 5, "{standing}");
    browser.click("#signout").await;

    // Zoe signs up: her first look at her credits brings this month's 100.
    let (zoe, _) = stack.signed_up("zoe", "zoe's long password").await;
    sign_in(&browser, &base, "zoe", "zoe's long password").await;
    browser.open(&base, "credits").await;
    browser.wait_text("#total-credits", "100").await;
    browser
        .wait_text("#next-credits", "100 more credits arrive on")
        .await;
    browser
        .wait_text("#warn-now", "below 10 credits (the default")
        .await;
    browser.fill("#warn-low", "20").await;
    browser.click("#warn-arrival").await;
    browser.submit("#warn-low").await;
    browser
        .wait_text("#warn-now", "falls below 20 credits.")
        .await;
    assert!(
        browser
            .script("return document.getElementById('warn-arrival').checked")
            .await
            .as_bool()
            .unwrap(),
        "the choice to be told of arrivals is kept"
    );
    browser.assert_accessible("credits with allowance").await;

    // Three credits of Zoe's expire in three days, and the support bot
    // costs more than she has: her credits page and the chat's refusal say
    // what comes next and what is about to go.
    let three = serde_json::json!({"userId": zoe, "credits": 3, "expiryDays": 3});
    let (status, body) = stack
        .post("credits", "/api/credits/allocate", &admin, three)
        .await;
    assert_eq!(status, 201, "{body}");
    stack.sync_chatflows(&admin).await;
    let dear = serde_json::json!({"perRequest": 500, "perInputToken": 0, "perOutputToken": 0});
    stack.open_chatflow(&admin, "flow-ui", Some(dear)).await;
    browser.open(&base, "chat").await;
    browser.select("#chatflow", "flow-ui").await;
    browser.fill("#question", "Hello?").await;
    browser.click("#send").await;
    let refusal = browser
        .wait_text("#main", "You need 500 credits for this and have 103.")
        .await;
    for words in [
        "100 more arrive on",
        "of them expire within a week, the first on",
    ] {
        assert!(refusal.contains(words), "{words} in {refusal}");
    }
    browser.shot("a refusal that says what comes next").await;
    browser.open(&base, "credits").await;
    browser
        .wait_text(
            "#expiring-soon",
            "of them expire within a week, the first on",
        )
        .await;
    browser.shot("credits with what expires soon").await;
    for (locale, words) in [
        ("zh-CN", "将再到账 100 额度"),
        ("zh-TW", "將再入帳 100 額度"),
    ] {
        browser.select("#locale", locale).await;
        browser.wait_text("#next-credits", words).await;
        browser
            .assert_accessible(&format!("credits with allowance {locale}"))
            .await;
    }

    // Zoe's language is her account's: a browser that never saw her
    // choice (its storage cleared) signs her in in Traditional Chinese.
    browser.click("#signout").await;
    browser
        .script("localStorage.clear(); location.reload(); return true;")
        .await;
    sign_in(&browser, &base, "zoe", "zoe's long password").await;
    browser.open(&base, "credits").await;
    browser
        .wait_text("#next-credits", "將再入帳 100 額度")
        .await;

    // Yuki never chose one: her Simplified Chinese browser's choice is
    // kept on her profile at sign-in, so mail reaches her in it.
    browser.click("#signout").await;
    browser.select("#locale", "zh-CN").await;
    stack.signed_up("yuki", "yuki's long password").await;
    sign_in(&browser, &base, "yuki", "yuki's long password").await;
    let mut kept = String::new();
    for _ in 0..50 {
        kept = sqlx::query_scalar("SELECT locale FROM user_accounts WHERE username = 'yuki'")
            .fetch_one(&stack.pg.pool)
            .await
            .unwrap();
        if kept == "zh-CN" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(kept, "zh-CN");
}
