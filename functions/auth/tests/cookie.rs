//! The console's refresh token in an HttpOnly cookie (README §5): with
//! `X-Console: 1` the token travels in `__Host-fgw_refresh`, never in a
//! body the page could read; rotation and reuse detection hold; without
//! the header a cookie is never read.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::App;
use serde_json::json;
use shared::testing::TestResponse;

const CONSOLE: (&str, &str) = ("x-console", "1");

/// The value of the refresh cookie an answer sets, with its attributes.
fn set_cookie(res: &TestResponse) -> (String, String) {
    let header = res
        .headers
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .find(|v| v.starts_with("__Host-fgw_refresh="))
        .unwrap_or_else(|| panic!("no refresh cookie: {:?}", res.headers));
    let (pair, attributes) = header.split_once(';').unwrap();
    let value = pair.split_once('=').unwrap().1.to_owned();
    (value, attributes.to_owned())
}

#[tokio::test]
async fn the_console_keeps_its_refresh_token_in_an_httponly_cookie() {
    let app = App::new().await;
    app.verified_user("zoe", "correct horse battery").await;
    let login = json!({"username": "zoe", "password": "correct horse battery"});
    let res = app
        .send_with(
            "POST",
            "/api/auth/login",
            None,
            Some(login.clone()),
            &[CONSOLE],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.body["accessToken"].is_string());
    assert!(
        res.body.get("refreshToken").is_none(),
        "the page never sees it: {}",
        res.body
    );
    let (first, attributes) = set_cookie(&res);
    for attribute in [
        "HttpOnly",
        "Secure",
        "SameSite=Strict",
        "Path=/",
        "Max-Age=604800",
    ] {
        assert!(attributes.contains(attribute), "{attributes}");
    }

    // Refresh from the cookie alone: a new access token and a rotated cookie.
    let cookie = format!("__Host-fgw_refresh={first}");
    let headers = [CONSOLE, ("cookie", cookie.as_str())];
    let res = app
        .send_with("POST", "/api/auth/refresh", None, None, &headers)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.body["accessToken"].is_string() && res.body.get("refreshToken").is_none());
    let (second, _) = set_cookie(&res);
    assert_ne!(first, second);

    // The first cookie again is a reuse: the family is revoked, and the
    // dead cookie cleared.
    let res = app
        .send_with("POST", "/api/auth/refresh", None, None, &headers)
        .await;
    res.assert_error(401, "token_reused");
    let (cleared, attributes) = set_cookie(&res);
    assert!(
        cleared.is_empty() && attributes.contains("Max-Age=0"),
        "{attributes}"
    );
    let cookie = format!("__Host-fgw_refresh={second}");
    let res = app
        .send_with(
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({})),
            &[CONSOLE, ("cookie", &cookie)],
        )
        .await;
    assert_eq!(res.status, 401, "the family is revoked: {}", res.body);

    // Sign out clears the cookie and revokes its token.
    let res = app
        .send_with("POST", "/api/auth/login", None, Some(login), &[CONSOLE])
        .await;
    let (third, _) = set_cookie(&res);
    let cookie = format!("__Host-fgw_refresh={third}");
    let res = app
        .send_with(
            "POST",
            "/api/auth/logout",
            None,
            None,
            &[CONSOLE, ("cookie", &cookie)],
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let (cleared, attributes) = set_cookie(&res);
    assert!(
        cleared.is_empty() && attributes.contains("Max-Age=0"),
        "{attributes}"
    );
    let res = app
        .post_public("/api/auth/refresh", json!({"refreshToken": third}))
        .await;
    assert_eq!(res.status, 401, "revoked: {}", res.body);
}

#[tokio::test]
async fn only_token_routes_are_touched_and_a_huge_body_is_413() {
    let app = App::new().await;
    let token = app.verified_user("zoe", "correct horse battery").await;
    let _ = token;
    let huge = "x".repeat(70 * 1024);
    let res = app
        .send_with(
            "POST",
            "/api/auth/refresh",
            None,
            Some(json!({"pad": huge})),
            &[CONSOLE],
        )
        .await;
    res.assert_error(413, "payload_too_large");
    // Another route's answer passes untouched, whatever its size.
    let login = app.login("zoe", "correct horse battery").await;
    let access = login.body["accessToken"].as_str().unwrap().to_owned();
    let res = app
        .send_with("GET", "/api/profile", Some(&access), None, &[CONSOLE])
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.headers.get("set-cookie").is_none());
    assert_eq!(res.body["user"]["username"], "zoe");
}

#[tokio::test]
async fn without_the_console_header_a_cookie_is_never_read_and_nothing_changes() {
    let app = App::new().await;
    app.verified_user("zoe", "correct horse battery").await;
    let res = app.login("zoe", "correct horse battery").await;
    assert_eq!(res.status, 200, "{}", res.body);
    let token = res.body["refreshToken"]
        .as_str()
        .expect("programs get it in the body");
    assert!(res.headers.get("set-cookie").is_none());

    // Another site's page could send the cookie, never the header: refused.
    let cookie = format!("__Host-fgw_refresh={token}");
    let res = app
        .send_with(
            "POST",
            "/api/auth/refresh",
            None,
            None,
            &[("cookie", cookie.as_str())],
        )
        .await;
    assert_eq!(res.status, 400, "{}", res.body);
    let res = app
        .send_with(
            "POST",
            "/api/auth/logout",
            None,
            Some(json!({})),
            &[("cookie", cookie.as_str())],
        )
        .await;
    assert_eq!(res.status, 400, "{}", res.body);
    // The token is untouched: it still refreshes, once.
    let res = app
        .post_public("/api/auth/refresh", json!({"refreshToken": token}))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.body["refreshToken"].is_string());
}
