//! The console in a real browser: headless Chromium and chromedriver from
//! Debian's packages (installed by the test command when missing), driven
//! through WebDriver. Shared by the browser test files.
#![allow(dead_code)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use e2e::stack::free_port;
use e2e::{Stack, StackOptions};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};
use shared::flowise_double::FlowiseDouble;

pub const ADMIN: (&str, &str, &str) = ("root", "root@example.com", "correct horse battery staple");
pub const ANSWER: &str = "Hello from the **fake** server, with $x^2$ maths!";
const AXE: &str = include_str!("../../vendor/axe-core/axe.min.js");

/// chromedriver and a headless Chromium session on it. chromedriver
/// leads a process group of its own, which Chromium's processes join, and
/// dropping the browser kills the whole group: killing chromedriver alone
/// left every Chromium process it started running after the test.
pub struct Browser {
    pub client: Client,
    driver: tokio::process::Child,
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(pid) = self.driver.id() {
            let group = format!("-{pid}");
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &group])
                .status();
        }
    }
}

impl Browser {
    pub async fn start(width: u32, height: u32) -> Browser {
        let port = free_port();
        let driver = tokio::process::Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver is installed (the test command installs chromium-driver)");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "chromedriver did not start");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let mut caps = serde_json::Map::new();
        caps.insert(
            "goog:chromeOptions".into(),
            json!({"args": ["--headless=new", "--no-sandbox", "--disable-gpu",
                            "--disable-dev-shm-usage", format!("--window-size={width},{height}")]}),
        );
        let client = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .expect("a browser session");
        Browser { client, driver }
    }

    /// Goes to the console's hash route `route` (`chat`, `admin/users`).
    pub async fn open(&self, base: &str, route: &str) {
        self.client.goto(&format!("{base}#/{route}")).await.unwrap();
    }

    pub async fn css(&self, selector: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(15))
            .for_element(Locator::Css(selector))
            .await
            .unwrap_or_else(|e| panic!("no {selector}: {e}"))
    }

    /// Types `text` into `selector` (again, when the page re-rendered the
    /// element meanwhile).
    pub async fn fill(&self, selector: &str, text: &str) {
        for _ in 0..20 {
            let el = self.css(selector).await;
            if el.clear().await.is_ok() && el.send_keys(text).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not type into {selector}");
    }

    /// Picks the option of value `value` in the `<select>` `selector`.
    /// Tries again while a re-render replaces the element, as `click` does.
    pub async fn select(&self, selector: &str, value: &str) {
        let mut last = None;
        for _ in 0..20 {
            match self.css(selector).await.select_by_value(value).await {
                Ok(()) => return,
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not pick {value} in {selector}: {last:?}");
    }

    /// Clicks the submit button of the form that holds `field`.
    pub async fn submit(&self, field: &str) {
        self.click(&format!("form:has({field}) button[type=submit]"))
            .await;
    }

    pub async fn click(&self, selector: &str) {
        for _ in 0..20 {
            if self.css(selector).await.click().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("could not click {selector}");
    }

    /// Waits until `selector`'s text contains `needle`; returns the text.
    pub async fn wait_text(&self, selector: &str, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let text = match self.client.find(Locator::Css(selector)).await {
                Ok(el) => el.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if text.contains(needle) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{selector} never said {needle:?}; it says {text:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn script(&self, code: &str) -> Value {
        self.client.execute(code, vec![]).await.unwrap()
    }

    /// axe-core's serious and critical findings on the page as it is.
    pub async fn axe(&self) -> Vec<Value> {
        self.client.execute(AXE, vec![]).await.unwrap();
        let found = self
            .client
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 axe.run(document, {resultTypes: ['violations']})
                    .then(r => done(r.violations.filter(v => v.impact === 'serious' || v.impact === 'critical')
                                     .map(v => ({id: v.id, impact: v.impact, nodes: v.nodes.map(n => n.target.join(' '))}))))
                    .catch(e => done([{id: 'axe-failed', error: String(e)}]));",
                vec![],
            )
            .await
            .unwrap();
        found.as_array().cloned().unwrap_or_default()
    }

    /// axe-core finds nothing serious or critical on the page; with
    /// `SCREENSHOTS_DIR` set (`make screenshots`) the page is also saved
    /// there as `<page>.png`.
    pub async fn assert_accessible(&self, page: &str) {
        let found = self.axe().await;
        assert!(found.is_empty(), "axe on {page}: {found:#?}");
        self.shot(page).await;
    }

    pub async fn shot(&self, page: &str) {
        let Ok(dir) = std::env::var("SCREENSHOTS_DIR") else {
            return;
        };
        let name: String = page
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '-'
                }
            })
            .collect();
        self.script("window.scrollTo(0, 0)").await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let png = self.client.screenshot().await.unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(std::path::Path::new(&dir).join(format!("{name}.png")), png).unwrap();
    }

    pub async fn no_horizontal_scroll(&self) -> bool {
        self.script(
            "return document.documentElement.scrollWidth <= document.documentElement.clientWidth",
        )
        .await
        .as_bool()
        .unwrap()
    }
}

/// The stack with the console on 127.0.0.1 and the stream on localhost.
pub async fn console_stack(flowise: &FlowiseDouble) -> (Stack, String) {
    let port = free_port();
    let console = format!("http://127.0.0.1:{port}");
    let stack = Stack::start_with(StackOptions {
        front_port: port,
        env: vec![
            ("FLOWISE_API_URL".into(), flowise.url.clone()),
            ("FLOWISE_TIMEOUT_SECONDS".into(), "20".into()),
            ("ADMIN_USERNAME".into(), ADMIN.0.into()),
            ("ADMIN_EMAIL".into(), ADMIN.1.into()),
            ("ADMIN_PASSWORD".into(), ADMIN.2.into()),
            (
                "STREAM_URL".into(),
                format!("http://localhost:{port}/lambda-url/predict-stream"),
            ),
            ("CORS_ALLOWED_ORIGINS".into(), console.clone()),
            (
                "APP_BASE_URL".into(),
                format!("{console}/lambda-url/console"),
            ),
        ],
        ..Default::default()
    })
    .await;
    (stack, format!("{console}/lambda-url/console/"))
}

pub async fn sign_in(browser: &Browser, base: &str, who: &str, password: &str) {
    browser.open(base, "signin").await;
    browser.fill("input[name=username]", who).await;
    browser.fill("input[name=password]", password).await;
    browser.click("form button[type=submit]").await;
    browser.css("#signout").await;
}
