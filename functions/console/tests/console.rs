//! The console function in-process: the page with its security headers,
//! hashed immutable assets, the page's configuration, JSON 404s, and the
//! rules its files keep (every visible string in every locale, every
//! vendored library with its licence and version).
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::collections::BTreeSet;
use std::path::Path;

use console::{Config, Console, Layout, ASSETS, BUILD_HASH};
use shared::testing::call;

fn router(layout: Layout) -> axum::Router {
    console::router(Console::new(Config {
        layout,
        stand_in: false,
    }))
}

const STREAM: &str = "https://abc123.lambda-url.eu-west-1.on.aws";

#[tokio::test]
async fn the_page_is_served_no_cache_under_a_strict_policy() {
    let app = router(Layout::Gateway {
        stream: STREAM.into(),
    });
    for path in ["/", "/reset-password?token=abc"] {
        let res = call(&app, "GET", path, None, None).await;
        assert_eq!(res.status, 200, "{path}");
        assert!(res.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        assert_eq!(res.headers["cache-control"], "no-cache");
        assert_eq!(
            res.headers["content-security-policy"],
            format!(
                "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; \
                 font-src 'self'; connect-src 'self' {STREAM}; base-uri 'none'; frame-ancestors 'none'; \
                 form-action 'self'"
            )
        );
        assert_eq!(res.headers["x-content-type-options"], "nosniff");
        assert_eq!(res.headers["x-frame-options"], "DENY");
        let html = res.body.as_str().unwrap();
        assert!(
            html.contains(&format!("assets/{BUILD_HASH}/js/main.js")),
            "{html}"
        );
        assert!(!html.contains("{{assets}}"));
        assert!(
            !html.contains("<script>") && !html.contains("style="),
            "nothing inline: {html}"
        );
    }
}

#[tokio::test]
async fn assets_are_hashed_immutable_and_typed_and_other_hashes_are_404() {
    let app = router(Layout::LambdaUrl { stream: None });
    for (name, kind) in [
        ("js/main.js", "text/javascript; charset=utf-8"),
        ("app.css", "text/css; charset=utf-8"),
        ("locales/zh-TW.json", "application/json"),
        ("vendor/katex/fonts/KaTeX_Main-Regular.woff2", "font/woff2"),
    ] {
        let res = call(
            &app,
            "GET",
            &format!("/assets/{BUILD_HASH}/{name}"),
            None,
            None,
        )
        .await;
        assert_eq!(res.status, 200, "{name}");
        assert_eq!(res.headers["content-type"], kind, "{name}");
        assert_eq!(
            res.headers["cache-control"],
            "public, max-age=31536000, immutable"
        );
        assert!(res.headers.contains_key("content-security-policy"));
    }
    let res = call(&app, "GET", "/assets/0000000000/js/main.js", None, None).await;
    res.assert_error(404, "not_found");
    let res = call(
        &app,
        "GET",
        &format!("/assets/{BUILD_HASH}/../Cargo.toml"),
        None,
        None,
    )
    .await;
    assert_eq!(res.status, 404);
    // Every other route keeps its JSON 404 and 405.
    call(&app, "GET", "/api/credits/balance", None, None)
        .await
        .assert_error(404, "not_found");
    call(&app, "POST", "/", None, None)
        .await
        .assert_error(405, "method_not_allowed");
}

#[tokio::test]
async fn the_page_learns_where_each_family_answers() {
    let res = call(
        &router(Layout::LambdaUrl { stream: None }),
        "GET",
        "/config.json",
        None,
        None,
    )
    .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.headers["cache-control"], "no-cache");
    assert_eq!(res.body["auth"], "/lambda-url/auth");
    assert_eq!(res.body["stream"], "/lambda-url/predict-stream");
    let gateway = router(Layout::Gateway {
        stream: STREAM.into(),
    });
    let res = call(&gateway, "GET", "/config.json", None, None).await;
    assert_eq!(res.body["predict"], "");
    assert_eq!(res.body["stream"], STREAM);
}

fn flat(value: &serde_json::Value, prefix: &str, out: &mut BTreeSet<String>) {
    for (key, child) in value.as_object().expect("an object") {
        let path = format!("{prefix}{key}");
        if child.is_object() {
            flat(child, &format!("{path}."), out);
        } else {
            assert!(
                child.as_str().is_some_and(|s| !s.is_empty()),
                "{path} is empty"
            );
            out.insert(path);
        }
    }
}

fn asset(name: &str) -> &'static [u8] {
    ASSETS
        .iter()
        .find(|(n, _)| *n == name)
        .unwrap_or_else(|| panic!("no asset {name}"))
        .1
}

#[test]
fn every_string_the_scripts_show_is_in_every_locale() {
    let mut locales = Vec::new();
    for name in ["en", "zh-CN", "zh-TW"] {
        let json: serde_json::Value =
            serde_json::from_slice(asset(&format!("locales/{name}.json"))).unwrap();
        let mut keys = BTreeSet::new();
        flat(&json, "", &mut keys);
        locales.push((name, keys));
    }
    let (_, english) = &locales[0];
    for (name, keys) in &locales[1..] {
        assert_eq!(keys, english, "{name} has other keys than en");
    }
    let mut used = BTreeSet::new();
    for (name, bytes) in ASSETS.iter().filter(|(n, _)| n.starts_with("js/")) {
        let text = std::str::from_utf8(bytes).unwrap();
        for (at, _) in text.match_indices("t(\"") {
            // `t(` itself, not the end of another name (`split(`).
            let before = text[..at].chars().next_back().unwrap_or(' ');
            if before.is_ascii_alphanumeric() || before == '_' || before == '.' {
                continue;
            }
            let key = text[at + 3..].split('"').next().unwrap();
            assert!(
                english.contains(key),
                "{name} shows {key}, which no locale has"
            );
            used.insert(key.to_owned());
        }
    }
    assert!(used.len() > 120, "the scripts show {} strings", used.len());
    // Every input that names its request field has that field's sentence
    // (shown when a 400 names it), keyed by the path's last name.
    let mut fields = 0;
    for (_, bytes) in ASSETS.iter().filter(|(n, _)| n.starts_with("js/")) {
        let text = std::str::from_utf8(bytes).unwrap();
        for marker in ["api: \"", "field: \""] {
            for (at, _) in text.match_indices(marker) {
                let path = text[at + marker.len()..].split('"').next().unwrap();
                let key = format!("fields.{}", path.rsplit('.').next().unwrap());
                assert!(english.contains(&key), "{path} has no sentence {key}");
                fields += 1;
            }
        }
    }
    assert!(fields >= 25, "{fields} inputs name their request field");
    // Every error code the gateway answers with has its sentence.
    for code in [
        "insufficient_credits",
        "key_limit_reached",
        "rate_limited",
        "invalid_credentials",
        "email_not_verified",
        "account_locked",
        "upstream_error",
        "network",
    ] {
        assert!(english.contains(&format!("errors.{code}")), "{code}");
    }
}

#[test]
fn every_vendored_library_has_its_licence_and_pinned_version() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("web/vendor");
    let versions = std::fs::read_to_string(root.join("VERSIONS")).unwrap();
    let script =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("vendor.sh")).unwrap();
    for library in ["marked", "dompurify", "katex"] {
        let dir = root.join(library);
        assert!(dir.join("LICENSE").is_file(), "{library} has no LICENSE");
        let line = versions
            .lines()
            .find(|l| l.starts_with(&format!("{library} ")))
            .unwrap_or_else(|| panic!("{library} is not in VERSIONS"));
        let version = line.split(' ').nth(1).unwrap();
        let pin = format!("={version}");
        assert!(
            script.contains(&pin),
            "vendor.sh does not pin {library} {version}"
        );
    }
    // The page loads them from the embedded copies only.
    let render = std::str::from_utf8(asset("js/render.js")).unwrap();
    for import in [
        "../vendor/marked/",
        "../vendor/dompurify/",
        "../vendor/katex/",
    ] {
        assert!(render.contains(import), "{import}");
    }
    assert!(render.contains("trust: false"));
}
