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
    browser.assert_accessible("allowances admin").await;
    for (locale, words) in [("zh-CN", "每月 100 额度"), ("zh-TW", "每月 100 額度")] {
        browser.select("#locale", locale).await;
        browser.wait_text("#main", words).await;
        browser
            .assert_accessible(&format!("allowances admin {locale}"))
            .await;
    }
    browser.select("#locale", "en").await;
    browser.click("#signout").await;

    // Zoe signs up: her first look at her credits brings this month's 100.
    stack.signed_up("zoe", "zoe's long password").await;
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
}
