//! The console as a newcomer meets it (issue 23), in a real browser: no
//! dead ends at sign-in, errors at the field, whose balance it is,
//! confirmations, a refused question kept, a phone-sized chat.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod browser;

use std::time::Duration;

use browser::{console_stack, sign_in, Browser, ADMIN, ANSWER};
use fantoccini::Locator;
use serde_json::json;
use shared::flowise_double::{split_tokens, Behaviour, FlowiseDouble};

/// The text of the sign-in form's error sentence once it shows.
async fn sign_in_refusal(browser: &Browser, base: &str, who: &str, password: &str) -> String {
    browser.open(base, "signin").await;
    browser.fill("input[name=username]", who).await;
    browser.fill("input[name=password]", password).await;
    browser.click("form button[type=submit]").await;
    browser.css("#main .error").await.text().await.unwrap()
}

/// Ann's password in these journeys.
const ANN: &str = "ann's long password";

/// A stack whose Flowise double has the chatflows `flows` (id, name,
/// answer, price), each synced and open to everyone, and ann signed up
/// with `credits` (none when 0).
struct World {
    stack: e2e::Stack,
    base: String,
    /// An admin's token.
    admin: String,
    /// Ann's id and access token.
    ann: (String, String),
    _flowise: FlowiseDouble,
}

async fn world(
    flows: Vec<(&str, &str, Behaviour, Option<serde_json::Value>)>,
    credits: i64,
) -> World {
    let flowise = FlowiseDouble::start().await;
    let mut prices = Vec::new();
    for (id, name, behaviour, price) in flows {
        flowise.add_flow(id, name, behaviour);
        prices.push((id, price));
    }
    let (stack, base) = console_stack(&flowise).await;
    let admin = stack.token("admin-x", shared::token::Role::Admin);
    stack.sync_chatflows(&admin).await;
    for (id, price) in prices {
        stack.open_chatflow(&admin, id, price).await;
    }
    let ann = stack.signed_up("ann", ANN).await;
    if credits > 0 {
        stack.allocate(&admin, &ann.0, credits).await;
    }
    World {
        stack,
        base,
        admin,
        ann,
        _flowise: flowise,
    }
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
    browser.submit("#new-username").await;
    let note = field_error(&browser, "username").await;
    assert!(note.contains("letters, digits"), "{note}");

    browser.click("#user-list button.link").await;
    browser.fill("#grant-credits", "0").await;
    browser.submit("#grant-credits").await;
    let note = field_error(&browser, "credits").await;
    assert!(note.contains("1 or more"), "{note}");
    browser.fill("#grant-credits", "5").await;
    browser.fill("#grant-days", "5000").await;
    browser.submit("#grant-credits").await;
    let note = field_error(&browser, "expiryDays").await;
    assert!(note.contains("1 to 3650 days"), "{note}");
    browser.assert_accessible("grant, a field refused").await;
    browser.fill("#grant-days", "30").await;
    browser.submit("#grant-credits").await;
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
    browser.submit("[data-field=rateLimitPerMinute]").await;
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
    browser.submit("#key-name").await;
    let note = field_error(&browser, "expiresInDays").await;
    assert!(note.contains("1 to 365 days"), "{note}");

    // A range that ends before it starts, in Chinese.
    browser.open(&base, "admin/usage").await;
    browser.select("#locale", "zh-TW").await;
    // The page is drawn again in Chinese: set the dates on that one.
    browser.wait_text("#main h1", "用量儀表板").await;
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
    let flows = vec![("flow-a", "Support bot", Behaviour::answer("Hello."), None)];
    let World {
        stack,
        base,
        ann: (_, ann_token),
        admin: _admin,
        _flowise,
    } = world(flows, 50).await;
    stack.signed_up("bob", "bob's long password").await;
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
    let price = json!({"perRequest": 2, "perInputToken": 0.001, "perOutputToken": 0.002});
    let flows = vec![(
        "flow-a",
        "Support bot",
        Behaviour::answer("Hello there."),
        Some(price),
    )];
    let World {
        stack,
        base,
        ann: (ann, _),
        admin: _admin,
        _flowise,
    } = world(flows, 0).await;
    stack.signed_up("zed", "zed's long password").await;
    // Root grants, so the grant says who gave it.
    let login = json!({"username": ADMIN.0, "password": ADMIN.2});
    let (_, root) = stack.post_public("auth", "/api/auth/login", login).await;
    let root = root["accessToken"].as_str().unwrap().to_owned();
    stack.allocate(&root, &ann, 30).await;

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, "ann", ANN).await;
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
    // The balance is drawn again once the answer is settled: wait for it.
    let mut left = 30;
    for _ in 0..100 {
        left = browser
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
        if left < 30 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
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
    let flows = vec![(
        "flow-a",
        "Support bot",
        Behaviour::answer("Hello from a key."),
        None,
    )];
    let World {
        base,
        stack: _stack,
        admin: _admin,
        ann: _ann,
        _flowise,
    } = world(flows, 40).await;

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, "ann", ANN).await;
    browser.open(&base, "keys").await;
    browser.fill("#key-name", "laptop").await;
    browser.fill("#key-password", ANN).await;
    browser.submit("#key-name").await;
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
    browser.fill("#key-password", ANN).await;
    browser.submit("#key-name").await;
    browser.wait_text("#key-examples", "立即使用").await;
}

#[tokio::test]
async fn signing_out_everywhere_ends_every_token_already_out() {
    let flows = vec![("flow-a", "Support bot", Behaviour::answer("Hello."), None)];
    let World {
        stack,
        ann: (_, first),
        base: _base,
        admin: _admin,
        _flowise,
    } = world(flows, 30).await;
    let login = json!({"username": "ann", "password": ANN});
    let (_, second) = stack
        .post_public("auth", "/api/auth/login", login.clone())
        .await;
    let second = second["accessToken"].as_str().unwrap().to_owned();
    let (key, _) = stack.make_key(&first, ANN, json!({"name": "k"})).await;
    let question = json!({"chatflow_id": "flow-a", "question": "Hi"});
    assert_eq!(stack.predict(&second, question.clone()).await.0, 200);
    let balance = stack.balance(&first).await;
    let statement = |token: String| {
        let stack = &stack;
        async move {
            let (_, body) = stack.get("credits", "/api/credits/statement", &token).await;
            body["total"].as_i64().unwrap()
        }
    };
    let lines = statement(first.clone()).await;

    // Signed out everywhere from the first session: the second one's
    // token, fifteen minutes from expiring, makes no more answers.
    let (status, _) = stack
        .post("auth", "/api/auth/logout-all", &first, json!({}))
        .await;
    assert_eq!(status, 200);
    let (status, body) = stack.predict(&second, question.clone()).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("session_ended")),
        "{body}"
    );
    let streamed = stack.open_stream(&second, &question, &[]).await;
    assert_eq!(streamed.status(), 401);
    // Nor does it read anything any more.
    for (function, path) in [
        ("credits", "/api/credits/balance"),
        ("auth", "/api/profile"),
        ("predict", "/api/v1/chat/sessions"),
        ("usage", "/api/usage/stats"),
    ] {
        let (status, body) = stack.get(function, path, &second).await;
        assert_eq!(
            (status, body["error"].as_str()),
            (401, Some("session_ended")),
            "{path}: {body}"
        );
    }
    let (status, _) = stack
        .post(
            "auth",
            "/api/keys",
            &second,
            json!({"name": "late", "currentPassword": ANN}),
        )
        .await;
    assert_eq!(status, 401, "no key made with an ended session");
    // Nothing held, charged or written.
    let (_, fresh) = stack.post_public("auth", "/api/auth/login", login).await;
    let fresh = fresh["accessToken"].as_str().unwrap().to_owned();
    assert_eq!(stack.balance(&fresh).await, balance);
    assert_eq!(statement(fresh.clone()).await, lines);
    // A new sign-in works; a key (not revoked: revokeKeys was not asked)
    // still does.
    assert_eq!(stack.predict(&fresh, question.clone()).await.0, 200);
    assert_eq!(stack.predict(&key, question).await.0, 200);
}

#[tokio::test]
async fn what_cannot_be_undone_is_asked_first() {
    let flows = vec![("flow-a", "Support bot", Behaviour::answer("Hello."), None)];
    let World {
        stack,
        base,
        admin,
        ann: (ann, _),
        _flowise,
    } = world(flows, 30).await;
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
    browser.open(&base, "admin/users").await;
    let open_user = |name: &'static str| {
        let browser = &browser;
        async move {
            browser.wait_text("#user-list", name).await;
            browser
                .client
                .find(Locator::XPath(&format!("//table//button[.='{name}']")))
                .await
                .unwrap()
                .click()
                .await
                .unwrap();
            browser.wait_text("#user-balance", name).await;
        }
    };
    // Their own account: no role, disable or delete.
    open_user("root").await;
    browser
        .wait_text("#own-account", "another administrator")
        .await;
    let own = browser
        .script("return [!!document.querySelector('#delete-user'), !!document.querySelector('#toggle-disabled'), !!document.querySelector('#set-role')]")
        .await;
    assert_eq!(own, json!([false, false, false]));

    // Ann's: deleting asks, and Cancel (or Escape) leaves her be.
    open_user("ann").await;
    browser.click("#delete-user").await;
    browser
        .wait_text("#confirm", "Delete ann's account? This cannot be undone.")
        .await;
    let focused = browser.script("return document.activeElement.id").await;
    assert_eq!(focused, "confirm-no", "the safe choice has the focus");
    browser.assert_accessible("a confirmation").await;
    browser.click("#confirm-no").await;
    browser.click("#delete-user").await;
    browser
        .css("#confirm")
        .await
        .send_keys("\u{e00c}")
        .await
        .unwrap(); // Escape
    let (status, _) = stack
        .get("auth", &format!("/api/admin/users/{ann}"), &admin)
        .await;
    assert_eq!(status, 200, "ann is still there");
    // Making her an admin says what that means; cancelled, nothing changes.
    browser.select("#user-role", "admin").await;
    browser.click("#set-role").await;
    browser
        .wait_text(
            "#confirm",
            "Make ann an administrator? They will be able to change every account",
        )
        .await;
    browser.click("#confirm-no").await;
    let (_, user) = stack
        .get("auth", &format!("/api/admin/users/{ann}"), &admin)
        .await;
    assert_eq!(user["user"]["role"], "enduser");
    // Disabling asks too; confirmed, it is done.
    browser.click("#toggle-disabled").await;
    browser.wait_text("#confirm", "Disable ann?").await;
    browser.click("#confirm-yes").await;
    browser.wait_text("#main", "ann is disabled").await;

    // Adjusting her balance, with a note; 0 is refused at the field.
    browser.fill("#adjust-amount", "0").await;
    browser.fill("#adjust-note", "typo in the grant").await;
    browser.submit("#adjust-amount").await;
    let note = field_error(&browser, "amount").await;
    assert!(note.contains("other than 0"), "{note}");
    browser.fill("#adjust-amount", "-5").await;
    browser.submit("#adjust-amount").await;
    browser
        .wait_text("#main", "ann's balance is adjusted by -5; it is now 25.")
        .await;
    browser
        .wait_text("#user-balance", "ann has 25 credits")
        .await;

    // Access: an address with no account is pointed out; removing asks.
    browser.open(&base, "admin/chatflows").await;
    browser.css("form.flow").await;
    browser
        .fill("[data-field=emails]", "ann@example.com\nghost@example.com")
        .await;
    browser.click("form.flow button[type=submit]").await;
    let warning = browser.wait_text("#no-account", "ghost@example.com").await;
    assert!(!warning.contains("ann@"), "{warning}");
    browser
        .assert_accessible("access given, an address without account")
        .await;
    browser
        .click("button[aria-label='Remove the access of ann@example.com']")
        .await;
    browser
        .wait_text(
            "#confirm",
            "Remove ann@example.com's access to Support bot?",
        )
        .await;
    browser.click("#confirm-yes").await;
    browser
        .wait_text("#main", "ann@example.com can no longer use Support bot.")
        .await;
    let (_, flows) = stack
        .get("predict", "/api/v1/admin/chatflows", &admin)
        .await;
    assert_eq!(
        flows["chatflows"][0]["allowedUsers"],
        json!(["ghost@example.com"])
    );

    // Signing out everywhere asks, and ends the other tab at once, and
    // another browser's session at its next request.
    let elsewhere = Browser::start(1280, 900).await;
    sign_in(&elsewhere, &base, ADMIN.0, ADMIN.2).await;
    elsewhere.open(&base, "credits").await;
    elsewhere.css("#total-credits").await;
    let first = browser.client.window().await.unwrap();
    let other = browser.client.new_window(true).await.unwrap();
    browser
        .client
        .switch_to_window(other.handle.clone())
        .await
        .unwrap();
    browser.open(&base, "credits").await;
    browser.css("#total-credits").await;
    browser.client.switch_to_window(first).await.unwrap();
    browser.open(&base, "profile").await;
    browser.click("#signout-all").await;
    browser
        .wait_text(
            "#confirm",
            "Sign out on every device and browser, this one included?",
        )
        .await;
    browser.click("#confirm-yes").await;
    browser.css("input[name=username]").await;
    browser.client.switch_to_window(other.handle).await.unwrap();
    browser
        .wait_text(
            "#main",
            "You were signed out because this account signed out everywhere.",
        )
        .await;
    browser.css("input[name=username]").await;
    elsewhere.click("nav a[href='#/usage']").await;
    elsewhere
        .wait_text(
            "#main",
            "You were signed out because this account signed out everywhere.",
        )
        .await;
    elsewhere.css("input[name=username]").await;
}

#[tokio::test]
async fn a_chat_stays_true_and_fits_a_phone() {
    let slow = Behaviour::Answer {
        tokens: split_tokens(ANSWER),
        delay: Duration::from_millis(250),
        usage: None,
        heartbeat: false,
    };
    // Long enough that a stop always lands before its end, however
    // loaded the machine.
    let mut story = vec!["Hello ".to_owned()];
    story.extend(vec!["and then ".to_owned(); 600]);
    let long = Behaviour::Answer {
        tokens: story,
        delay: Duration::from_millis(100),
        usage: None,
        heartbeat: false,
    };
    let dear = json!({"perRequest": 1000, "perInputToken": 0, "perOutputToken": 0});
    let flows = vec![
        ("flow-a", "Support bot", slow, None),
        ("flow-long", "Storyteller", long, None),
        (
            "flow-dear",
            "Pricey bot",
            Behaviour::answer("Dear."),
            Some(dear),
        ),
    ];
    let World {
        base,
        stack: _stack,
        admin: _admin,
        ann: _ann,
        _flowise,
    } = world(flows, 100).await;
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, "ann", ANN).await;

    // "Stopping…" goes when the answer ends.
    browser.select("#chatflow", "flow-long").await;
    browser.fill("#question", "Tell me a story").await;
    browser.click("#send").await;
    browser
        .wait_text("#messages article.assistant:last-of-type", "Hello")
        .await;
    browser.click("#stop").await;
    browser.wait_text("#stopping", "Stopping").await;
    browser.wait_text("#messages", "you paid").await;
    let left = browser
        .script("return [!!document.querySelector('#stopping'), document.querySelector('#main .status').innerText]")
        .await;
    assert_eq!(left[0], json!(false), "{left}");
    assert!(!left[1].as_str().unwrap().contains("Stopping"), "{left}");

    // A refused question stays in the box, with a retry.
    browser.select("#chatflow", "flow-dear").await;
    browser.fill("#question", "What does this cost?").await;
    browser.click("#send").await;
    browser
        .wait_text("#main [role=alert]", "You need 1000 credits")
        .await;
    let kept = browser
        .script(
            "return [document.querySelector('#question').value,
                     document.querySelectorAll('#messages article.user').length,
                     !!document.querySelector('#main [role=alert] button')]",
        )
        .await;
    assert_eq!(kept, json!(["What does this cost?", 0, true]));
    browser.assert_accessible("a refused question").await;
    browser.shot("a refused question kept").await;

    // A file: its name in the console's words, on the question, priced.
    browser.select("#chatflow", "flow-a").await;
    browser.wait_text("#file-names", "No file chosen").await;
    let file = std::env::temp_dir().join(format!("notes-{}.txt", uuid::Uuid::new_v4().simple()));
    std::fs::write(
        &file,
        "meeting notes: bring the budget and the plan for next year",
    )
    .unwrap();
    let name = file.file_name().unwrap().to_str().unwrap().to_owned();
    browser
        .css("#files")
        .await
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    browser.wait_text("#file-names", &name).await;
    browser.fill("#question", "Summarise the file").await;
    browser.click("#send").await;
    browser
        .wait_text("#messages article.user .attachments", &name)
        .await;
    browser
        .wait_text("#messages article.user .attachments", "counted as")
        .await;
    browser.click("#new-chat").await;
    browser
        .client
        .find(Locator::XPath("//aside//button[.='Summarise the file']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let reopened = browser
        .wait_text("#messages article.user .attachments", "counted as")
        .await;
    assert!(reopened.contains(&name), "{reopened}");
    browser.select("#locale", "zh-CN").await;
    browser.wait_text("#attach", "添加文件").await;
    browser.wait_text("#file-names", "未选择文件").await;
    browser.select("#locale", "en").await;
    let _ = std::fs::remove_file(&file);

    // At 375 px: a one-row header with a menu, the conversations in a
    // drawer, the message box at the bottom.
    browser.client.set_window_size(375, 800).await.unwrap();
    browser.open(&base, "chat").await;
    browser.css("#question").await;
    let phone = browser
        .script(
            "const header = document.querySelector('header.top');
             const nav = document.querySelector('header nav');
             const box = document.querySelector('.composer').getBoundingClientRect();
             return {
               header: header.getBoundingClientRect().height,
               nav: nav.getBoundingClientRect().height,
               sessions: document.querySelector('#sessions').getBoundingClientRect().height,
               boxBottom: box.bottom <= innerHeight + 1,
             }",
        )
        .await;
    assert!(phone["header"].as_f64().unwrap() < 64.0, "one row: {phone}");
    assert_eq!(phone["nav"], json!(0), "the navigation is folded: {phone}");
    assert_eq!(
        phone["sessions"],
        json!(0),
        "the conversations are a drawer: {phone}"
    );
    assert_eq!(phone["boxBottom"], json!(true), "{phone}");
    assert!(browser.no_horizontal_scroll().await);
    browser.click("#menu-toggle").await;
    browser.wait_text("#menu nav", "Credits").await;
    let expanded = browser
        .script("return document.querySelector('#menu-toggle').getAttribute('aria-expanded')")
        .await;
    assert_eq!(expanded, "true");
    browser.assert_accessible("the menu at 375 px").await;
    browser.shot("menu at 375px").await;
    browser.click("#menu-toggle").await;
    browser.click("#sessions-toggle").await;
    browser.wait_text("#sessions", "Summarise the file").await;
    browser.assert_accessible("the conversations drawer").await;
    browser.shot("conversations drawer at 375px").await;
    browser
        .client
        .find(Locator::XPath("//aside//button[.='Summarise the file']"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser.wait_text("#messages", "Summarise the file").await;
    let closed = browser
        .script("return document.querySelector('#sessions').getBoundingClientRect().height")
        .await;
    assert_eq!(
        closed,
        json!(0),
        "choosing a conversation closes the drawer"
    );
    // Many messages later, the box is still at the bottom of the screen.
    browser
        .script(
            "const list = document.querySelector('#messages');
             for (let i = 0; i < 30; i++) { const p = document.createElement('p'); p.textContent = 'line ' + i; list.append(p); }
             window.scrollTo(0, 0);",
        )
        .await;
    let bottom = browser
        .script("const r = document.querySelector('.composer').getBoundingClientRect(); return [r.bottom <= innerHeight + 1, r.top > innerHeight / 2]")
        .await;
    assert_eq!(
        bottom,
        json!([true, true]),
        "the message box stays at the bottom"
    );
    browser.shot("chat at 375px").await;

    // A page on its way says so.
    browser
        .script(
            "const real = window.fetch;
             window.fetch = (...a) => new Promise(r => setTimeout(() => r(real(...a)), 1500));",
        )
        .await;
    browser.click("#menu-toggle").await;
    browser.click("#menu nav a[href='#/credits']").await;
    let busy = browser
        .script("return [!!document.querySelector('#progress'), document.querySelector('#main').getAttribute('aria-busy')]")
        .await;
    assert_eq!(busy, json!([true, "true"]));
    browser.css("#total-credits").await;
    let done = browser
        .script("return [!!document.querySelector('#progress'), document.querySelector('#main').getAttribute('aria-busy')]")
        .await;
    assert_eq!(done, json!([false, null]));
}

#[tokio::test]
async fn charts_people_can_read() {
    let flows = vec![("flow-a", "Support bot", Behaviour::answer("Hello."), None)];
    let World {
        stack,
        base,
        ann: (_, token),
        admin: _admin,
        _flowise,
    } = world(flows, 50).await;
    let question = json!({"chatflow_id": "flow-a", "question": "Hi"});
    assert_eq!(stack.predict(&token, question).await.0, 200);

    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
    browser.open(&base, "admin/usage").await;
    browser.wait_text("#period", "The last 30 days").await;
    let report = browser
        .script(
            "const today = new Date().toISOString().slice(0, 10);
             const month = new Date(Date.now() - 30 * 864e5).toISOString().slice(0, 10);
             const tables = [...document.querySelectorAll('#report table.bars')];
             const overlaps = tables.flatMap(t => [...t.querySelectorAll('tbody tr')]).some(r => {
               const label = r.querySelector('th').getBoundingClientRect();
               const bar = r.querySelector('svg').getBoundingClientRect();
               return label.right > bar.left;
             });
             return {
               range: [document.querySelector('#range-from').value === month,
                       document.querySelector('#range-to').value === today],
               titles: tables.map(t => t.querySelector('caption').innerText),
               labels: tables.map(t => [...t.querySelectorAll('tbody th')].map(th => th.innerText)),
               overlaps,
             }",
        )
        .await;
    assert_eq!(report["range"], json!([true, true]), "{report}");
    assert_eq!(
        report["titles"],
        json!(["Credits per day", "Credits per chatflow", "Top users"])
    );
    assert_eq!(report["labels"][1], json!(["Support bot"]), "by name");
    assert_eq!(report["labels"][2], json!(["ann"]), "people by name");
    assert_eq!(report["overlaps"], json!(false));
    browser.assert_accessible("the dashboard").await;

    // A range with nothing in it says so, and names the range.
    browser.fill("#range-from", "").await;
    browser
        .script(
            "document.querySelector('#range-from').value = '2020-01-01';
             document.querySelector('#range-to').value = '2020-01-31';",
        )
        .await;
    browser.click("form.row button[type=submit]").await;
    browser
        .wait_text("#period", "From Jan 1, 2020 to Jan 31, 2020")
        .await;
    let empty = browser
        .script("return [...document.querySelectorAll('#report .empty')].map(p => p.innerText)")
        .await;
    assert_eq!(
        empty,
        json!([
            "Nothing was used in this period.",
            "Nothing was used in this period.",
            "Nothing was used in this period."
        ])
    );
    browser.assert_accessible("an empty report").await;

    // At 375 px: nothing sideways, the figures beside their bars.
    browser.click("#signout").await;
    browser.client.set_window_size(375, 800).await.unwrap();
    sign_in(&browser, &base, "ann", ANN).await;
    browser.open(&base, "usage").await;
    browser.wait_text("#period", "The last 30 days").await;
    browser.wait_text("#main", "Support bot").await;
    assert!(browser.no_horizontal_scroll().await);
    let figures = browser
        .script(
            "return [...document.querySelectorAll('table.bars .figure')].every(f => {
               const r = f.getBoundingClientRect();
               return r.width > 0 && parseFloat(getComputedStyle(f).fontSize) >= 12 && r.right <= innerWidth;
             })",
        )
        .await;
    assert_eq!(figures, json!(true));
    browser.assert_accessible("usage at 375 px").await;
    browser.shot("usage at 375px").await;
}

#[tokio::test]
async fn a_lost_connection_is_not_a_sign_out() {
    let flows = vec![("flow-a", "Support bot", Behaviour::answer("Hello."), None)];
    let World {
        base,
        stack: _stack,
        admin: _admin,
        ann: _ann,
        _flowise,
    } = world(flows, 10).await;
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, "ann", ANN).await;
    // Every call answers 401 and the refresh cannot get through: the tab
    // says so and stays signed in (a refresh the gateway refuses would
    // end it).
    browser
        .script(
            "window.fetch = (url) => String(url).includes('/api/auth/refresh')
               ? Promise.reject(new TypeError('offline'))
               : Promise.resolve(new Response(JSON.stringify({error: 'token_expired', message: 'x'}),
                   {status: 401, headers: {'content-type': 'application/json'}}));",
        )
        .await;
    browser.click("nav a[href='#/credits']").await;
    browser
        .wait_text("#main [role=alert]", "Your session has expired")
        .await;
    let still = browser
        .script("return [location.hash, !!document.querySelector('#signout')]")
        .await;
    assert_eq!(still, json!(["#/credits", true]));
}
