//! The console as a newcomer meets it (issue 23), in a real browser: no
//! dead ends at sign-in, errors at the field, whose balance it is,
//! confirmations, a refused question kept, a phone-sized chat.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod browser;

use browser::{console_stack, sign_in, Browser, ADMIN};
use fantoccini::Locator;
use serde_json::json;
use shared::flowise_double::{Behaviour, FlowiseDouble};

/// The text of the sign-in form's error sentence once it shows.
async fn sign_in_refusal(browser: &Browser, base: &str, who: &str, password: &str) -> String {
    browser.open(base, "signin").await;
    browser.fill("input[name=username]", who).await;
    browser.fill("input[name=password]", password).await;
    browser.click("form button[type=submit]").await;
    browser.css("#main .error").await.text().await.unwrap()
}

#[tokio::test]
async fn sign_in_has_no_dead_ends() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow("flow-a", "Support bot", Behaviour::answer("Hello."));
    let (stack, base) = console_stack(&flowise).await;
    let browser = Browser::start(1280, 900).await;

    // An account that never entered its code signs in by its name: the
    // code field comes on the spot, with the address filled in.
    let (status, _) = stack
        .post_public(
            "auth",
            "/api/auth/signup",
            json!({"username": "uma", "email": "uma@example.com", "password": "uma's long password"}),
        )
        .await;
    assert_eq!(status, 201);
    browser.open(&base, "signin").await;
    browser.fill("input[name=username]", "uma").await;
    browser
        .fill("input[name=password]", "uma's long password")
        .await;
    browser.click("form button[type=submit]").await;
    browser
        .wait_text("#main", "Enter the code we mailed to uma@example.com")
        .await;
    let address = browser
        .script("return document.querySelector('#main input[type=email]').value")
        .await;
    assert_eq!(address, "uma@example.com");
    browser
        .assert_accessible("sign-in, address not confirmed")
        .await;
    // "Send a new code" is there (within a minute of the first it sends
    // none: the answer is the same either way); the code, and she is in.
    let resend = browser
        .client
        .find(Locator::XPath("//button[.='Send a new code']"))
        .await
        .expect("a way to get a new code");
    resend.click().await.unwrap();
    browser.wait_text("#main", "a new one is on its way").await;
    let code = stack
        .smtp
        .wait_for("uma@example.com", 0)
        .await
        .code()
        .expect("a code");
    browser
        .fill("input[autocomplete=one-time-code]", &code)
        .await;
    browser.click("#main button[type=submit]").await;
    browser.css("#signout").await;
    browser.wait_text("header .who", "uma").await;
    browser.click("#signout").await;

    // A wrong password and an unknown account read the same, and say
    // what repeated failures do.
    let wrong = sign_in_refusal(&browser, &base, "uma", "not her password").await;
    let unknown = sign_in_refusal(&browser, &base, "nobody-here", "not her password").await;
    assert_eq!(wrong, unknown, "nothing tells accounts apart");
    assert!(wrong.contains("locked for 15 minutes"), "{wrong}");
    browser.assert_accessible("sign-in, wrong password").await;
    // Locked: how long, and the reset link.
    for _ in 0..4 {
        sign_in_refusal(&browser, &base, "uma", "not her password").await;
    }
    let locked = sign_in_refusal(&browser, &base, "uma", "uma's long password").await;
    assert!(locked.contains("Try again in 15 min"), "{locked}");
    browser.assert_accessible("sign-in, locked").await;
    browser.click("#main a[href='#/forgot']").await;
    browser.css("#main input[type=email]").await;

    // A link opened before signing in is where the person lands after.
    browser.open(&base, "credits").await;
    browser.css("input[name=username]").await;
    browser.fill("input[name=username]", ADMIN.0).await;
    browser.fill("input[name=password]", ADMIN.2).await;
    browser.click("form button[type=submit]").await;
    browser.css("#signout").await;
    let hash = browser.script("return location.hash").await;
    assert_eq!(hash, "#/credits");
    browser
        .css("nav a[aria-current=page][href='#/credits']")
        .await;

    // The same sentences in Chinese.
    browser.click("#signout").await;
    browser.css("input[name=username]").await;
    browser.select("#locale", "zh-CN").await;
    let wrong = sign_in_refusal(&browser, &base, "nobody-here", "x-password").await;
    assert!(wrong.contains("锁定 15 分钟"), "{wrong}");
    browser.select("#locale", "zh-TW").await;
    let wrong = sign_in_refusal(&browser, &base, "nobody-here", "x-password").await;
    assert!(wrong.contains("鎖定 15 分鐘"), "{wrong}");
    browser.select("#locale", "en").await;
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
}
