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

/// The sentence shown at the input that fills the request field `name`,
/// once it shows. The input is marked invalid, described by the sentence
/// and focused; nothing on the page is the server's own text.
async fn field_error(browser: &Browser, name: &str) -> String {
    let selector = format!("#main [data-field='{name}'][aria-invalid=true] + .field-error");
    let note = browser.css(&selector).await.text().await.unwrap();
    let state = browser
        .script(&format!(
            "const i = document.querySelector(\"#main [data-field='{name}']\");
             return [i.getAttribute('aria-describedby') === i.nextElementSibling.id,
                     document.activeElement === i,
                     i.form.querySelectorAll('.field-error').length,
                     document.querySelector('#main').innerText]"
        ))
        .await;
    assert_eq!(state[0], json!(true), "{name}: described by its sentence");
    assert_eq!(state[1], json!(true), "{name}: focused");
    assert_eq!(state[2], json!(1), "{name}: one field of its form marked");
    let page = state[3].as_str().unwrap();
    for raw in ["must be", "must have", "must not", "invalid type"] {
        assert!(!page.contains(raw), "the server's text shows: {page}");
    }
    note
}

/// Puts `value` in the input that fills `name` (a script: date inputs
/// take keys in the browser's own order).
async fn set_field(browser: &Browser, name: &str, value: &str) {
    browser
        .script(&format!(
            "const i = document.querySelector(\"#main [data-field='{name}']\"); i.value = '{value}';"
        ))
        .await;
}

#[tokio::test]
async fn errors_show_at_their_field() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow("flow-a", "Support bot", Behaviour::answer("Hello."));
    let (_stack, base) = console_stack(&flowise).await;
    let browser = Browser::start(1280, 900).await;

    // Sign-up, in each language: the field's own sentence, at the field.
    for (locale, sentence) in [
        ("zh-CN", "用户名为 3 到 32 个字符"),
        ("zh-TW", "使用者名稱為 3 到 32 個字元"),
        ("en", "A username has 3 to 32 characters"),
    ] {
        browser.open(&base, "signup").await;
        browser.select("#locale", locale).await;
        browser.fill("#main [data-field=username]", "a").await;
        browser
            .fill("#main [data-field=email]", "ann@example.com")
            .await;
        browser
            .fill("#main [data-field=password]", "a long enough password")
            .await;
        browser.click("#main button[type=submit]").await;
        let note = field_error(&browser, "username").await;
        assert!(note.contains(sentence), "{locale}: {note}");
    }
    browser.assert_accessible("sign-up, a field refused").await;
    // Put right, the mark goes with the next try.
    browser.fill("#main [data-field=password]", "short").await;
    browser.fill("#main [data-field=username]", "ann").await;
    browser.click("#main button[type=submit]").await;
    let note = field_error(&browser, "password").await;
    assert!(note.contains("8 to 128 characters"), "{note}");

    // An admin's forms.
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
    browser.open(&base, "admin/users").await;
    browser.fill("#new-username", "bo b").await;
    browser.fill("#new-email", "bob@example.com").await;
    browser.fill("#new-password", "bob's long password").await;
    browser
        .click("form:has(#new-username) button[type=submit]")
        .await;
    let note = field_error(&browser, "username").await;
    assert!(note.contains("letters, digits"), "{note}");

    browser.click("#user-list button.link").await;
    browser.fill("#grant-credits", "0").await;
    browser
        .click("form:has(#grant-credits) button[type=submit]")
        .await;
    let note = field_error(&browser, "credits").await;
    assert!(note.contains("1 or more"), "{note}");
    browser.fill("#grant-credits", "5").await;
    browser.fill("#grant-days", "5000").await;
    browser
        .click("form:has(#grant-credits) button[type=submit]")
        .await;
    let note = field_error(&browser, "expiryDays").await;
    assert!(note.contains("1 to 3650 days"), "{note}");
    browser.assert_accessible("grant, a field refused").await;
    browser.fill("#grant-days", "30").await;
    browser
        .click("form:has(#grant-credits) button[type=submit]")
        .await;
    browser
        .wait_text("#main", "Granted 5 credits to root")
        .await;
    let marks = browser
        .script("return document.querySelector('#grant-credits').form.querySelectorAll('.field-error, [aria-invalid]').length")
        .await;
    assert_eq!(marks, json!(0), "a granted form keeps no mark");
    browser
        .fill("[data-field=rateLimitPerMinute]", "20000")
        .await;
    browser
        .click("form:has([data-field=rateLimitPerMinute]) button[type=submit]")
        .await;
    let note = field_error(&browser, "rateLimitPerMinute").await;
    assert!(note.contains("10,000"), "{note}");

    // A price with too many decimals.
    browser.open(&base, "admin/chatflows").await;
    browser.click("#sync").await;
    browser.css("form.flow").await;
    browser
        .fill("[data-field='pricing.perInputToken']", "0.0000001")
        .await;
    browser.click("form.flow button[type=submit]").await;
    let note = field_error(&browser, "pricing.perInputToken").await;
    assert!(note.contains("six decimals"), "{note}");
    browser.assert_accessible("pricing, a field refused").await;

    // A key that would live too long.
    browser.open(&base, "keys").await;
    browser.fill("#key-name", "laptop").await;
    browser.fill("#key-days", "400").await;
    browser.fill("#key-password", ADMIN.2).await;
    browser
        .click("form:has(#key-name) button[type=submit]")
        .await;
    let note = field_error(&browser, "expiresInDays").await;
    assert!(note.contains("1 to 365 days"), "{note}");

    // A range that ends before it starts, in Chinese.
    browser.open(&base, "admin/usage").await;
    browser.select("#locale", "zh-TW").await;
    browser.css("#range-from").await;
    set_field(&browser, "from", "2026-12-10").await;
    set_field(&browser, "to", "2026-12-01").await;
    browser.click("form.row button[type=submit]").await;
    let note = field_error(&browser, "from").await;
    assert!(note.contains("開始日期不能晚於結束日期"), "{note}");
    browser
        .assert_accessible("date range, a field refused")
        .await;
}

#[tokio::test]
async fn an_admin_sees_whose_credits_they_are() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow("flow-a", "Support bot", Behaviour::answer("Hello."));
    let (stack, base) = console_stack(&flowise).await;
    let admin = stack.token("admin-x", shared::token::Role::Admin);
    stack.sync_chatflows(&admin).await;
    stack.open_chatflow(&admin, "flow-a", None).await;
    let (ann, ann_token) = stack.signed_up("ann", "ann's long password").await;
    stack.signed_up("bob", "bob's long password").await;
    stack.allocate(&admin, &ann, 50).await;
    let (status, answer) = stack
        .predict(
            &ann_token,
            json!({"chatflow_id": "flow-a", "question": "Hi"}),
        )
        .await;
    assert_eq!(status, 200, "{answer}");
    let spent = 50 - stack.balance(&ann_token).await;
    assert!(spent > 0, "the answer cost something");

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
    browser.open(&base, "admin/users").await;
    browser.wait_text("#user-list", "ann@example.com").await;
    // The list: a header row, and each user's balance and month's spend.
    let row = browser
        .script(
            "const rows = [...document.querySelectorAll('#user-list tbody tr')];
             const ann = rows.find(r => r.innerText.includes('ann@example.com'));
             return {
               heads: [...document.querySelectorAll('#user-list thead th')].map(th => th.innerText),
               ann: [...ann.querySelectorAll('td')].map(td => td.innerText),
             }",
        )
        .await;
    assert_eq!(
        row["heads"],
        json!(["User", "Role and state", "Balance", "Spent this month"])
    );
    assert_eq!(row["ann"][2], json!((50 - spent).to_string()), "{row}");
    assert_eq!(row["ann"][3], json!(spent.to_string()), "{row}");
    browser.assert_accessible("the user list").await;

    // Ann's panel names her; her grant shows when it expires.
    browser
        .client
        .find(Locator::XPath("//table//button[.='ann']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let balance = browser.wait_text("#user-balance", "ann has").await;
    assert_eq!(balance, format!("ann has {} credits to spend.", 50 - spent));
    let detail = browser.css("#user-detail").await.text().await.unwrap();
    assert!(!detail.contains("You have"), "{detail}");
    assert!(
        detail.contains("ann's grants and when they expire"),
        "{detail}"
    );
    let grant = browser
        .script(
            "const t = [...document.querySelectorAll('#user-detail table')][0];
             return [[...t.querySelectorAll('thead th')].map(th => th.innerText),
                     [...t.querySelectorAll('tbody td')].map(td => td.innerText)]",
        )
        .await;
    assert_eq!(
        grant[0],
        json!(["Granted", "Left", "Granted on", "Granted by", "Expires"])
    );
    assert_eq!(grant[1][0], json!("50"));
    assert_ne!(grant[1][4], json!("Never"), "a 30-day grant expires");
    assert!(detail.contains("ann's transactions"), "{detail}");
    browser.assert_accessible("an admin's view of ann").await;

    // Bob has nothing yet: sentences, not empty tables.
    browser
        .client
        .find(Locator::XPath("//table//button[.='bob']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .wait_text("#user-balance", "bob has 0 credits")
        .await;
    browser
        .wait_text("#user-detail", "bob has no grant with credits left.")
        .await;
    browser
        .wait_text("#user-detail", "bob has no transactions yet.")
        .await;
    browser.fill("#user-search", "nobody-like-this").await;
    browser
        .wait_text("#user-list", "No user matches “nobody-like-this”.")
        .await;
    browser.assert_accessible("an empty search").await;
    // The same in Chinese.
    browser.select("#locale", "zh-CN").await;
    browser.wait_text("#user-list thead", "本月已用").await;
}

#[tokio::test]
async fn money_reads_as_people_think_of_it() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow("flow-a", "Support bot", Behaviour::answer("Hello there."));
    let (stack, base) = console_stack(&flowise).await;
    let admin = stack.token("admin-x", shared::token::Role::Admin);
    stack.sync_chatflows(&admin).await;
    let price = json!({"perRequest": 2, "perInputToken": 0.001, "perOutputToken": 0.002});
    stack.open_chatflow(&admin, "flow-a", Some(price)).await;
    let (ann, _) = stack.signed_up("ann", "ann's long password").await;
    stack.signed_up("zed", "zed's long password").await;
    // Root grants, so the grant says who gave it.
    let login = json!({"username": ADMIN.0, "password": ADMIN.2});
    let (_, root) = stack.post_public("auth", "/api/auth/login", login).await;
    let root = root["accessToken"].as_str().unwrap().to_owned();
    stack.allocate(&root, &ann, 30).await;

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, "ann", "ann's long password").await;
    // Before asking: the price and whose balance.
    browser
        .wait_text(
            "#price",
            "A question costs 2 credits, plus 1 per 1,000 tokens you send and 2 per 1,000 tokens of the answer.",
        )
        .await;
    browser.wait_text("#balance", "You have 30 credits.").await;
    let none = browser
        .script("return [document.querySelector('#no-credits').innerText, document.querySelector('#send').disabled]")
        .await;
    assert_eq!(none, json!(["", false]));
    browser.fill("#question", "Hi").await;
    browser.click("#send").await;
    browser.wait_text("#messages", "This answer cost").await;
    let left: i64 = browser
        .css("#balance")
        .await
        .text()
        .await
        .unwrap()
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap();
    let cost = 30 - left;
    assert!(cost >= 2, "{cost}");

    // The statement: one line for the answer, its net cost; the hold and
    // the refund inside it.
    browser.open(&base, "credits").await;
    browser.css("#main tbody summary").await;
    let line = browser
        .script(
            "const tables = document.querySelectorAll('#main table');
             const grants = tables[0], lines = tables[1];
             const first = lines.querySelector('tbody tr');
             return {
               grant: [...grants.querySelectorAll('tbody td')].map(td => td.innerText),
               heads: [...grants.querySelectorAll('thead th')].map(th => th.innerText),
               what: first.querySelector('summary').innerText,
               amount: first.querySelectorAll('td')[2].innerText,
               rows: lines.querySelectorAll('tbody tr').length,
             }",
        )
        .await;
    assert_eq!(line["what"], "An answer from Support bot", "{line}");
    assert_eq!(line["amount"], format!("-{cost}"), "{line}");
    assert_eq!(line["rows"], 2, "the answer and the grant: {line}");
    assert_eq!(
        line["heads"],
        json!(["Granted", "Left", "Granted on", "Granted by", "Expires"])
    );
    assert_eq!(line["grant"][3], "root", "{line}");
    browser.click("#main tbody summary").await;
    let parts = browser
        .wait_text("#main tbody details", "Held for an answer")
        .await;
    assert!(
        parts.contains("Refunded") || parts.contains("Answer settled"),
        "{parts}"
    );
    browser
        .assert_accessible("the statement, an answer opened")
        .await;
    // Its conversation opens from there.
    browser.click("#main tbody details a").await;
    browser.wait_text("#messages", "Hello there.").await;
    browser.wait_text("#messages", "Hi").await;

    // At 0 credits: a banner that says whom to ask, and no Send.
    browser.click("#signout").await;
    sign_in(&browser, &base, "zed", "zed's long password").await;
    browser
        .wait_text("#no-credits", "Ask an administrator of this gateway")
        .await;
    let send = browser
        .script("return document.querySelector('#send').disabled")
        .await;
    assert_eq!(send, json!(true));
    browser.assert_accessible("chat at 0 credits").await;
    browser.select("#locale", "zh-CN").await;
    browser
        .wait_text("#no-credits", "请联系本网关的管理员")
        .await;
}

#[tokio::test]
async fn a_new_key_comes_with_what_it_takes_to_use_it() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow(
        "flow-a",
        "Support bot",
        Behaviour::answer("Hello from a key."),
    );
    let (stack, base) = console_stack(&flowise).await;
    let admin = stack.token("admin-x", shared::token::Role::Admin);
    stack.sync_chatflows(&admin).await;
    stack.open_chatflow(&admin, "flow-a", None).await;
    let (ann, _) = stack.signed_up("ann", "ann's long password").await;
    stack.allocate(&admin, &ann, 40).await;

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, "ann", "ann's long password").await;
    browser.open(&base, "keys").await;
    browser.fill("#key-name", "laptop").await;
    browser.fill("#key-password", "ann's long password").await;
    browser
        .click("form:has(#key-name) button[type=submit]")
        .await;
    browser.css("#key-examples").await;
    let shown = browser
        .script(
            "return {
               key: document.querySelector('#new-key').value,
               base: document.querySelector('#key-base').innerText,
               curl: document.querySelector('#example-curl').innerText,
               python: document.querySelector('#example-python').innerText,
               javascript: document.querySelector('#example-javascript').innerText,
             }",
        )
        .await;
    let key = shown["key"].as_str().unwrap();
    let api = shown["base"].as_str().unwrap();
    assert!(api.ends_with("/lambda-url/predict-stream/v1"), "{api}");
    let curl = shown["curl"].as_str().unwrap();
    assert!(
        curl.starts_with(&format!("curl {api}/chat/completions")),
        "{curl}"
    );
    assert!(
        curl.contains(&format!("Bearer {key}")) && curl.contains("\"flow-a\""),
        "{curl}"
    );
    let python = shown["python"].as_str().unwrap();
    assert!(
        python.contains(&format!("OpenAI(base_url=\"{api}\", api_key=\"{key}\")")),
        "{python}"
    );
    let javascript = shown["javascript"].as_str().unwrap();
    assert!(
        javascript.contains(&format!("baseURL: \"{api}\", apiKey: \"{key}\"")),
        "{javascript}"
    );
    browser
        .assert_accessible("a new key with its examples")
        .await;

    // What the example says works as it stands.
    let answer: serde_json::Value = reqwest::Client::new()
        .post(format!("{api}/chat/completions"))
        .bearer_auth(key)
        .json(&json!({"model": "flow-a", "messages": [{"role": "user", "content": "Hello"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        answer["choices"][0]["message"]["content"], "Hello from a key.",
        "{answer}"
    );
    // In Chinese too.
    browser.select("#locale", "zh-TW").await;
    browser.open(&base, "keys").await;
    browser.fill("#key-name", "phone").await;
    browser.fill("#key-password", "ann's long password").await;
    browser
        .click("form:has(#key-name) button[type=submit]")
        .await;
    browser.wait_text("#key-examples", "立即使用").await;
}
