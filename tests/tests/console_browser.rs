//! The console in a real browser (README, "Console"): headless Chromium
//! and chromedriver from Debian's packages (installed by the test command
//! when missing), driven through WebDriver against the real function
//! binaries and the Flowise double. The page is served from
//! `http://127.0.0.1:<port>` and streams from `http://localhost:<port>`:
//! two origins, so the streaming function's CORS is really exercised.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod browser;

use std::time::{Duration, Instant};

use browser::{console_stack, sign_in, Browser, ADMIN, ANSWER};
use e2e::Stack;
use fantoccini::Locator;
use serde_json::{json, Value};
use shared::flowise_double::{split_tokens, Behaviour, FlowiseDouble};

#[tokio::test]
async fn a_person_signs_up_is_granted_credits_chats_stops_and_everything_reads_well() {
    let flowise = FlowiseDouble::start().await;
    let slow = Behaviour::Answer {
        tokens: split_tokens(ANSWER),
        delay: Duration::from_millis(250),
        usage: None,
        heartbeat: false,
    };
    flowise.add_flow("flow-ui", "Support bot", slow);
    flowise.add_flow("flow-private", "Finance bot", Behaviour::answer("Numbers."));
    let (stack, base) = console_stack(&flowise).await;
    let browser = Browser::start(1280, 900).await;

    // Sign up, with the code the mail carried.
    browser.open(&base, "signup").await;
    browser.assert_accessible("sign-up").await;
    browser
        .fill("#main input[autocomplete=username]", "zoe")
        .await;
    browser
        .fill("#main input[type=email]", "zoe@example.com")
        .await;
    browser
        .fill("#main input[type=password]", "zoe's long password")
        .await;
    browser.click("#main button[type=submit]").await;
    browser.css("input[autocomplete=one-time-code]").await;
    browser.assert_accessible("email code").await;
    let code = stack
        .smtp
        .wait_for("zoe@example.com", 0)
        .await
        .code()
        .expect("a code");
    browser
        .fill("input[autocomplete=one-time-code]", &code)
        .await;
    browser.click("#main button[type=submit]").await;
    // Confirmed, and signed in with what she typed at sign-up.
    browser.css("#signout").await;
    browser
        .wait_text("#main", "No chatflow is open to you yet")
        .await;
    browser.assert_accessible("chat, empty").await;
    browser.click("#signout").await;
    browser.css("input[name=username]").await;

    // The admin syncs the chatflows, opens one to everyone, grants zoe credits.
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
    browser.open(&base, "admin/chatflows").await;
    browser.click("#sync").await;
    browser.wait_text("#main", "Synced: 2 new").await;
    browser.click("input[id='public-flow-ui']").await;
    let support = "form.flow[aria-label='Support bot']";
    let fields = browser
        .client
        .find_all(Locator::Css(&format!("{support} input[type=number]")))
        .await
        .unwrap();
    for (field, value) in fields.iter().zip(["2", "0", "1"]) {
        field.clear().await.unwrap();
        field.send_keys(value).await.unwrap();
    }
    browser
        .click(&format!("{support} button[type=submit]"))
        .await;
    browser.wait_text("#main", "Support bot is saved").await;
    // The private one opened to people by email, in bulk.
    let finance = "form.flow[aria-label='Finance bot']";
    browser
        .fill(
            &format!("{finance} textarea"),
            "zoe@example.com\nnobody@example.com",
        )
        .await;
    browser
        .click(&format!("{finance} button[type=submit]"))
        .await;
    browser.wait_text("#main", "Finance bot is saved").await;
    browser.wait_text(finance, "People given access: 2.").await;
    browser.assert_accessible("admin chatflows").await;
    browser.open(&base, "admin/users").await;
    browser.fill("#user-search", "zoe").await;
    browser.wait_text("#user-list", "zoe@example.com").await;
    browser.click("#user-list button.link").await;
    browser.fill("#grant-credits", "200").await;
    browser.click("#user-detail form button[type=submit]").await;
    browser
        .wait_text("#main", "Granted 200 credits to zoe")
        .await;
    browser.wait_text("#user-balance", "200").await;
    browser
        .wait_text("#user-limits", "the default a minute")
        .await;
    let limits = browser
        .client
        .find_all(Locator::Css(
            "#user-detail form input[type=number][max='10000']",
        ))
        .await
        .unwrap();
    limits[0].send_keys("30").await.unwrap();
    browser
        .click("#user-detail form:last-of-type button[type=submit]")
        .await;
    browser.wait_text("#user-limits", "30 a minute").await;
    browser.assert_accessible("admin users").await;
    browser.click("#signout").await;
    browser.css("input[name=username]").await;

    // Zoe signs in with the keyboard alone: focus starts on the name field,
    // Tab moves to the password, Enter submits.
    browser.open(&base, "signin").await;
    browser.css("input[name=username]").await;
    let focused = browser.script("return document.activeElement.name").await;
    assert_eq!(focused, "username", "focus starts on the first field");
    let active = browser.client.active_element().await.unwrap();
    active.send_keys("zoe").await.unwrap();
    active.send_keys("\u{E004}").await.unwrap(); // Tab
    let active = browser.client.active_element().await.unwrap();
    assert_eq!(
        active.attr("name").await.unwrap().as_deref(),
        Some("password")
    );
    active
        .send_keys("zoe's long password\u{E007}")
        .await
        .unwrap(); // Enter
    browser.css("#question").await;
    browser.wait_text("#balance", "200").await;
    let flows = browser
        .script("return [...document.querySelectorAll('#chatflow option')].map(o => o.textContent)")
        .await;
    assert_eq!(
        flows,
        json!(["Finance bot", "Support bot"]),
        "the public flow and the one opened to zoe's email"
    );
    browser.select("#chatflow", "flow-ui").await;

    // A streamed answer: its first token is on screen while the double
    // still holds the rest; it ends with its cost and the new balance.
    browser.fill("#question", "Hi there").await;
    browser.click("#send").await;
    let first = browser
        .wait_text("#messages article.assistant", "Hello")
        .await;
    assert!(
        !first.contains("maths"),
        "the rest is still held: {first:?}"
    );
    browser.wait_text("#messages", "This answer cost").await;
    let strong = browser
        .script("return document.querySelector('#messages article.assistant strong')?.textContent")
        .await;
    assert_eq!(strong, "fake", "Markdown rendered");
    let katex = browser
        .script("return document.querySelectorAll('#messages .katex').length")
        .await;
    assert!(katex.as_u64().unwrap() >= 1, "maths rendered");
    let balance = browser.css("#balance").await.text().await.unwrap();
    assert!(
        !balance.contains("200 credits"),
        "the balance went down: {balance}"
    );
    browser.assert_accessible("chat, answered").await;

    // Stopped midway: the answer ends incomplete and costs what was delivered.
    let before = stack
        .balance(&stack.token(&zoe_id(&stack).await, shared::token::Role::Enduser))
        .await;
    browser.fill("#question", "Tell me more").await;
    browser.click("#send").await;
    browser
        .wait_text("#messages article.assistant:last-of-type", "Hello")
        .await;
    browser.click("#stop").await;
    let cut = browser.wait_text("#messages", "you paid").await;
    let after = stack
        .balance(&stack.token(&zoe_id(&stack).await, shared::token::Role::Enduser))
        .await;
    assert!(after < before, "the delivered part was charged");
    assert!(
        cut.contains(&format!("you paid {} credits", before - after)),
        "the page shows the charge ({}): {cut}",
        before - after
    );

    // An attached file goes with the question.
    let file = std::env::temp_dir().join(format!("note-{}.txt", uuid::Uuid::new_v4().simple()));
    std::fs::write(&file, "meeting notes: bring the budget").unwrap();
    browser
        .css("#files")
        .await
        .send_keys(file.to_str().unwrap())
        .await
        .unwrap();
    browser.fill("#question", "Summarise the file").await;
    browser.click("#send").await;
    browser.wait_text("#messages", "Summarise the file").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !flowise
        .received()
        .iter()
        .any(|r| r.body["uploads"].as_array().is_some_and(|u| !u.is_empty()))
    {
        assert!(Instant::now() < deadline, "no upload reached Flowise");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    browser
        .wait_text(
            "#messages article.assistant:last-of-type",
            "This answer cost",
        )
        .await;

    // The sidebar: a session reopened shows its messages; one deleted is gone.
    browser.click("#new-chat").await;
    browser.wait_text("#main .sessions", "Hi there").await;
    browser.click("#main .sessions li button.link").await;
    browser.wait_text("#messages", "Summarise the file").await;
    let sessions = browser
        .client
        .find_all(Locator::Css("#main .sessions li"))
        .await
        .unwrap()
        .len();
    browser.click("#main .sessions li button.icon").await;
    browser.click("#confirm-yes").await;
    let deadline = Instant::now() + Duration::from_secs(10);
    while browser
        .client
        .find_all(Locator::Css("#main .sessions li"))
        .await
        .unwrap()
        .len()
        == sessions
    {
        assert!(Instant::now() < deadline, "the session was not deleted");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // An API key: made with the password (a wrong one makes nothing),
    // shown once, revoked; revoked means refused.
    browser.open(&base, "keys").await;
    browser.fill("#key-name", "laptop").await;
    browser.fill("#key-password", "not my password").await;
    browser.click("#main form.card button[type=submit]").await;
    browser.wait_text("#main", "password is wrong").await;
    browser.fill("#key-password", "zoe's long password").await;
    browser.click("#main form.card button[type=submit]").await;
    let secret = browser
        .css("#new-key")
        .await
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(secret.starts_with("fgw_"), "{secret}");
    browser.wait_text("#key-list", "laptop").await;
    let models = || async {
        let url = stack.url("predict-stream", "/v1/models");
        let sent = stack.http.get(url).bearer_auth(&secret).send().await;
        sent.unwrap().status()
    };
    assert_eq!(models().await, 200, "the new key works");
    browser.click("#key-list button.secondary").await;
    browser.click("#confirm-yes").await;
    browser.wait_text("#key-list", "Revoked").await;
    assert_eq!(models().await, 401, "revoked at once");
    browser.open(&base, "chat").await;
    browser.css("#question").await;

    // Locale and theme: switched, and remembered.
    browser.select("#locale", "zh-CN").await;
    browser.wait_text("header nav", "对话").await;
    browser.click("#theme").await;
    let theme = browser
        .script("return document.documentElement.dataset.theme")
        .await;
    assert_eq!(theme, "dark");
    browser.client.refresh().await.unwrap();
    browser.wait_text("header nav", "对话").await;
    let theme = browser
        .script("return document.documentElement.dataset.theme")
        .await;
    assert_eq!(theme, "dark", "remembered");
    browser.assert_accessible("chat, zh-CN, dark").await;
    browser.select("#locale", "zh-TW").await;
    browser.wait_text("header nav", "對話").await;
    browser.select("#locale", "en").await;
    browser.wait_text("header nav", "Chat").await;

    // The other pages: each accessible, readable at 375 px.
    for page in ["credits", "usage", "keys", "profile"] {
        browser.open(&base, page).await;
        browser.css("#main h1").await;
        browser.assert_accessible(page).await;
    }
    browser.client.set_window_size(375, 800).await.unwrap();
    for page in ["chat", "credits", "usage", "keys", "profile"] {
        browser.open(&base, page).await;
        browser.css("#main h1").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(
            browser.no_horizontal_scroll().await,
            "{page} scrolls sideways at 375 px"
        );
        if page == "chat" {
            browser.shot("chat at 375px").await;
        }
    }
    let _ = std::fs::remove_file(file);
}

/// Zoe's user id (the auth function made it).
async fn zoe_id(stack: &Stack) -> String {
    let admin = stack.token("admin-x", shared::token::Role::Admin);
    let (_, users) = stack
        .get("auth", "/api/admin/users?search=zoe", &admin)
        .await;
    users["users"][0]["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_answer_with_markup_is_rendered_harmless() {
    let flowise = FlowiseDouble::start().await;
    let hostile = "Look: <img src=x onerror=\"window.pwned=1\"> and [click](javascript:window.pwned=2) \
                   <script>window.pwned=3</script> <a href=\"https://example.com\" onclick=\"window.pwned=4\">ok</a> \
                   <p class=\"error\" role=\"alert\" id=\"balance\">You were charged 9999 credits</p> \
                   our markers \u{1}99\u{2} and `$code$` stay text";
    flowise.add_flow("flow-x", "Hostile <b>bot</b>", Behaviour::answer(hostile));
    let (stack, base) = console_stack(&flowise).await;
    let admin = stack.token("admin-x", shared::token::Role::Admin);
    stack.sync_chatflows(&admin).await;
    stack.open_chatflow(&admin, "flow-x", None).await;
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
    // The admin has no credits yet: a banner says so, and Send is off
    // until the balance, read again, says otherwise.
    browser
        .wait_text("#no-credits", "You have no credits left")
        .await;
    let off = browser
        .script("return document.querySelector('#send').disabled")
        .await;
    assert_eq!(off, json!(true));
    let (_, users) = stack
        .get("auth", "/api/admin/users?search=root", &admin)
        .await;
    let root_id = users["users"][0]["id"].as_str().unwrap().to_owned();
    stack.allocate(&admin, &root_id, 100).await;
    browser.click("#check-balance").await;
    browser.wait_text("#balance", "You have 100 credits.").await;

    browser.fill("#question", "Hi").await;
    browser.click("#send").await;
    browser.wait_text("#messages", "This answer cost").await;
    let verdict = browser
        .script(
            "const a = document.querySelector('#messages article.assistant');
             return {
               pwned: window.pwned ?? null,
               imgHandlers: [...a.querySelectorAll('img')].filter(i => i.getAttribute('onerror')).length,
               scripts: a.querySelectorAll('script').length,
               jsLinks: [...a.querySelectorAll('a')].filter(l => (l.getAttribute('href') || '').startsWith('javascript')).length,
               clickHandlers: [...a.querySelectorAll('[onclick]')].length,
               safeLink: [...a.querySelectorAll('a')].map(l => l.getAttribute('rel')).join(' '),
               posing: a.querySelectorAll('[role], [id], .error').length,
               code: a.querySelector('code')?.textContent,
               option: document.querySelector('#chatflow option').textContent,
               optionChildren: document.querySelector('#chatflow option').children.length,
             };",
        )
        .await;
    assert_eq!(verdict["pwned"], Value::Null, "{verdict}");
    assert_eq!(verdict["imgHandlers"], 0, "{verdict}");
    assert_eq!(verdict["scripts"], 0, "{verdict}");
    assert_eq!(verdict["jsLinks"], 0, "{verdict}");
    assert_eq!(verdict["clickHandlers"], 0, "{verdict}");
    assert_eq!(
        verdict["posing"], 0,
        "an answer cannot pose as the console's own alert: {verdict}"
    );
    assert_eq!(
        verdict["code"], "$code$",
        "maths inside code stays code: {verdict}"
    );
    assert!(
        verdict["safeLink"].as_str().unwrap().contains("noopener"),
        "{verdict}"
    );
    assert_eq!(
        verdict["option"], "Hostile <b>bot</b>",
        "a name is text, never markup"
    );
    assert_eq!(verdict["optionChildren"], 0);
    // Wait a moment for any delayed handler, then check again.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        browser.script("return window.pwned ?? null").await,
        Value::Null
    );
}

#[tokio::test]
async fn a_forgotten_password_is_reset_from_the_mailed_link_and_every_session_ends() {
    let flowise = FlowiseDouble::start().await;
    let (stack, base) = console_stack(&flowise).await;
    let browser = Browser::start(1280, 900).await;
    browser.open(&base, "signin").await;
    browser.css("input[name=username]").await;
    browser.assert_accessible("sign-in").await;
    browser.click("a[href='#/forgot']").await;
    browser.fill("#main input[type=email]", ADMIN.1).await;
    browser.click("#main button[type=submit]").await;
    browser
        .wait_text("#main", "a link to set a new password is on its way")
        .await;
    browser.assert_accessible("forgotten password").await;

    // The mail's link opens the console's reset page.
    let mail = stack.smtp.wait_for(ADMIN.1, 0).await;
    let token = mail.reset_token().expect("a reset link");
    let link = format!("{base}reset-password?token={token}");
    assert!(
        mail.data
            .contains("/lambda-url/console/reset-password?token="),
        "the link opens the console"
    );
    browser.client.goto(&link).await.unwrap();
    browser
        .fill("#main input[type=password]", "a brand new passphrase")
        .await;
    browser.assert_accessible("new password").await;
    browser.click("#main button[type=submit]").await;
    browser.css("#signout").await;

    // The new password works; signing out everywhere ends this session too.
    browser.open(&base, "admin/usage").await;
    browser.css("#export").await;
    browser.assert_accessible("usage dashboard").await;
    browser.open(&base, "profile").await;
    browser.click("#signout-all").await;
    browser.click("#confirm-yes").await;
    browser.css("input[name=username]").await;
    browser.client.refresh().await.unwrap();
    browser.css("input[name=username]").await;
    sign_in(&browser, &base, ADMIN.0, "a brand new passphrase").await;
}

#[tokio::test]
async fn an_answer_stopped_where_the_credits_end_says_so_and_links_to_the_credits() {
    let flowise = FlowiseDouble::start().await;
    let long = Behaviour::Answer {
        tokens: vec!["word ".to_owned(); 5_000],
        delay: Duration::ZERO,
        usage: None,
        heartbeat: false,
    };
    flowise.add_flow("flow-long", "Storyteller", long);
    let (stack, base) = console_stack(&flowise).await;
    let admin = stack.token("admin-x", shared::token::Role::Admin);
    stack.sync_chatflows(&admin).await;
    // 1 a request and 0.1 an output token: the 3 credits pay for 20
    // tokens, a few lines.
    let pricing = json!({"perRequest": 1, "perInputToken": 0, "perOutputToken": 0.1});
    stack
        .open_chatflow(&admin, "flow-long", Some(pricing))
        .await;
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
    let (_, users) = stack
        .get("auth", "/api/admin/users?search=root", &admin)
        .await;
    let root_id = users["users"][0]["id"].as_str().unwrap().to_owned();
    stack.allocate(&admin, &root_id, 3).await;
    browser.open(&base, "credits").await;
    browser.open(&base, "chat").await;
    browser.wait_text("#balance", "You have 3 credits.").await;
    browser.fill("#question", "Tell me everything").await;
    browser.click("#send").await;
    let said = browser.wait_text("#messages", "credits ran out").await;
    assert!(said.contains("you paid 3 credits"), "{said}");
    let link = browser
        .script("return document.querySelector('#messages .cost a')?.getAttribute('href')")
        .await;
    assert_eq!(link, "#/credits");
    browser.assert_accessible("chat, credits ran out").await;
    browser.click("#messages .cost a").await;
    browser.wait_text("#main h1", "Your credits").await;
}
