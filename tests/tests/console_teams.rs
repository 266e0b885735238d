//! Teams in the console, in a real browser (README "Teams"): an admin
//! makes a team and funds its wallet; its supervisor adds members from a
//! pasted list and a CSV file, gives and takes back credits, is refused
//! past the wallet in a sentence, removes a member from the keyboard and
//! reads the team's usage; a member sees what the team gave them. In
//! English and both Chinese locales, checked by axe, and on a phone.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod browser;

use browser::{console_stack, sign_in, Browser, ADMIN};
use serde_json::json;
use shared::flowise_double::{Behaviour, FlowiseDouble};

#[tokio::test]
async fn an_admin_makes_a_team_its_supervisor_runs_it_and_a_member_sees_their_share() {
    let flowise = FlowiseDouble::start().await;
    flowise.add_flow("flow-ui", "Support bot", Behaviour::answer("Hi."));
    let (stack, base) = console_stack(&flowise).await;
    let (lena, _) = stack.signed_up("lena", "lena's long password").await;
    let (mia, _) = stack.signed_up("mia", "mia's long password").await;
    let (noah, _) = stack.signed_up("noah", "noah's long password").await;
    let login = json!({"username": ADMIN.0, "password": ADMIN.2});
    let (status, admin) = stack.post_public("auth", "/api/auth/login", login).await;
    assert_eq!(status, 200, "{admin}");
    let admin_token = admin["accessToken"].as_str().unwrap();
    let (status, body) = stack
        .patch(
            "auth",
            &format!("/api/admin/users/{lena}"),
            admin_token,
            json!({"role": "supervisor"}),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // The admin makes the team and funds its wallet.
    let browser = Browser::start(1280, 900).await;
    sign_in(&browser, &base, ADMIN.0, ADMIN.2).await;
    browser.open(&base, "teams").await;
    browser.wait_text("#main", "There are no teams yet").await;
    browser.fill("#new-team-name", "Year 9").await;
    browser.fill("#new-team-supervisors", "nobody-here").await;
    browser.submit("#new-team-name").await;
    browser
        .wait_text("#main [role=alert]", "No user is called nobody-here")
        .await;
    browser.fill("#new-team-supervisors", "lena").await;
    browser.submit("#new-team-name").await;
    browser.wait_text("#main", "The team Year 9 is made").await;
    browser.fill("#fund-credits", "100").await;
    browser.submit("#fund-credits").await;
    browser
        .wait_text(
            "#main",
            "Granted 100 credits to Year 9; its wallet now holds 100.",
        )
        .await;
    browser.assert_accessible("teams admin").await;
    browser.click("#signout").await;

    // Lena, its supervisor, adds members: a pasted list and a CSV file.
    sign_in(&browser, &base, "lena", "lena's long password").await;
    browser.open(&base, "teams").await;
    browser
        .wait_text("#team-list", "Wallet: 100 credits · 0 members")
        .await;
    browser.click("#team-list a").await;
    browser.wait_text("#wallet-credits", "100").await;
    browser
        .fill("#member-addresses", "mia@example.com, later@example.com")
        .await;
    let csv = std::env::temp_dir().join(format!("members-{}.csv", uuid::Uuid::new_v4()));
    std::fs::write(&csv, "name,email\nNoah,noah@example.com\n").unwrap();
    browser
        .css("#member-file")
        .await
        .send_keys(csv.to_str().unwrap())
        .await
        .unwrap();
    browser.submit("#member-addresses").await;
    browser
        .wait_text("#main", "Added: 2. Already members: 0.")
        .await;
    browser
        .wait_text("#pending-note", "later@example.com")
        .await;
    browser.wait_text("#member-list", "noah@example.com").await;

    // Gives mia 30, is refused 500 for noah in a sentence, takes 10 back.
    browser.click(&format!("[id='give-{mia}']")).await;
    browser.fill("#give-credits", "30").await;
    browser.submit("#give-credits").await;
    browser
        .wait_text("#main", "Gave 30 credits to mia; the wallet now holds 70.")
        .await;
    browser.click(&format!("[id='give-{noah}']")).await;
    browser.fill("#give-credits", "500").await;
    browser.submit("#give-credits").await;
    browser
        .wait_text(
            "#main [role=alert]",
            "The team's wallet can give 70 credits now, fewer than the 500 you asked for.",
        )
        .await;
    assert_eq!(
        shared::testing::balance(&stack.pg.pool, &noah).await,
        0,
        "the refusal gave nothing"
    );
    browser.click(&format!("[id='take-{mia}']")).await;
    browser.fill("#take-credits", "10").await;
    browser.submit("#take-credits").await;
    browser
        .wait_text(
            "#main",
            "Took back 10 credits from mia; the wallet now holds 80.",
        )
        .await;
    browser
        .wait_text("#team-report", "Credits per member")
        .await;
    browser.click("#team-export").await;
    let ready = browser
        .wait_text("#main [role=status]", "The export is ready.")
        .await;
    assert!(ready.contains("Download the usage of Year 9"), "{ready}");
    browser.assert_accessible("team supervisor").await;

    // Removes noah from the keyboard: Enter on the button, Enter on the
    // dialog's confirm.
    let remove = browser.css(&format!("[id='remove-{noah}']")).await;
    remove.send_keys("\u{E007}").await.unwrap();
    browser
        .wait_text("#confirm", "Remove noah from Year 9?")
        .await;
    browser
        .css("#confirm-yes")
        .await
        .send_keys("\u{E007}")
        .await
        .unwrap();
    browser
        .wait_text("#main", "noah is no longer in Year 9")
        .await;

    // The same page in both Chinese locales, then back.
    for (locale, words) in [("zh-CN", "钱包现有 80 额度"), ("zh-TW", "錢包現有 80 額度")]
    {
        browser.select("#locale", locale).await;
        browser.wait_text("#wallet-credits", words).await;
        browser
            .assert_accessible(&format!("team supervisor {locale}"))
            .await;
    }
    browser.select("#locale", "en").await;
    browser.wait_text("#wallet-credits", "80").await;

    // Mia sees what the team gave her; on a phone it fits the width.
    let phone = Browser::start(375, 800).await;
    sign_in(&phone, &base, "mia", "mia's long password").await;
    phone.open(&base, "teams").await;
    phone
        .wait_text(
            "#team-list",
            "Year 9 gave you 30 credits; 20 of them are left.",
        )
        .await;
    phone.click("#team-list a").await;
    phone.wait_text("#team-given", "20").await;
    phone.assert_accessible("team member phone").await;
    assert!(phone.no_horizontal_scroll().await, "the team fits a phone");
    let _ = std::fs::remove_file(csv);
}
