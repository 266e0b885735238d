//! Teams across functions (README "Teams"): an address added before its
//! owner proves it joins the team at the proof (and never before), and a
//! deleted user's unspent team credits go back to the team's wallet.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use e2e::{Stack, StackOptions};
use serde_json::{json, Value};
use shared::token::Role;

fn members(body: &Value) -> Vec<String> {
    body["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["username"].as_str().unwrap_or_default().to_owned())
        .collect()
}

#[tokio::test]
async fn a_pending_address_joins_when_proven_and_a_deleted_member_returns_the_unspent() {
    let stack = Stack::start_with(StackOptions {
        functions: Some(vec!["auth", "credits"]),
        ..Default::default()
    })
    .await;
    let admin = stack.token("admin-1", Role::Admin);
    let lead = stack.token("lead", Role::Supervisor);
    let (status, _) = stack.get("credits", "/api/credits/balance", &lead).await;
    assert_eq!(status, 200);
    let (status, team) = stack
        .post(
            "credits",
            "/api/admin/teams",
            &admin,
            json!({"name": "Chemistry", "supervisorIds": ["lead"]}),
        )
        .await;
    assert_eq!(status, 201, "{team}");
    let team = team["id"].as_str().unwrap().to_owned();

    // amy has proven her address: she joins at once. zed and yan have no
    // account yet: both wait.
    let (amy, amy_token) = stack.signed_up("amy", "a long passphrase 1").await;
    let add = json!({"emails": ["Amy@Example.com", "zed@example.com", "yan@example.com"]});
    let (status, body) = stack
        .post("credits", &format!("/api/teams/{team}/members"), &lead, add)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["added"][0]["userId"], amy.as_str(), "{body}");
    assert_eq!(
        body["pending"],
        json!(["zed@example.com", "yan@example.com"])
    );

    // yan signs up but never proves the address: she does not join.
    let signup =
        json!({"username": "yan", "email": "yan@example.com", "password": "a long passphrase 2"});
    let (status, body) = stack.post_public("auth", "/api/auth/signup", signup).await;
    assert_eq!(status, 201, "{body}");
    // zed proves his: he joins.
    let (zed, _) = stack.signed_up("zed", "a long passphrase 3").await;
    let (status, body) = stack
        .get("credits", &format!("/api/teams/{team}"), &lead)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(members(&body), ["amy", "zed"], "{body}");
    let pending: Vec<&str> = body["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["email"].as_str().unwrap())
        .collect();
    assert_eq!(pending, ["yan@example.com"]);

    // amy is given 10 and spends 3; when she is deleted, her 7 unspent
    // return to the wallet; zed keeps his.
    let (status, body) = stack
        .post(
            "credits",
            "/api/credits/allocate",
            &admin,
            json!({"teamId": team, "credits": 30}),
        )
        .await;
    assert_eq!(status, 201, "{body}");
    for (member, credits) in [(&amy, 10), (&zed, 5)] {
        let (status, body) = stack
            .post(
                "credits",
                &format!("/api/teams/{team}/transfers"),
                &lead,
                json!({"userId": member, "credits": credits}),
            )
            .await;
        assert_eq!(status, 201, "{body}");
    }
    let (status, body) = stack
        .post(
            "credits",
            "/api/credits/deduct",
            &amy_token,
            json!({"credits": 3}),
        )
        .await;
    assert_eq!(
        (status, body["newBalance"].as_i64()),
        (200, Some(7)),
        "{body}"
    );
    let (status, body) = stack
        .request(
            reqwest::Method::DELETE,
            "auth",
            &format!("/api/admin/users/{amy}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, 204, "{body}");
    let (status, body) = stack
        .get("credits", &format!("/api/teams/{team}/credits"), &lead)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["totalCredits"], 22, "30 - 10 - 5 + 7: {body}");
    assert_eq!(body["transactions"][0]["type"], "reclaim");
    assert_eq!(body["transactions"][0]["amount"], 7);
    assert_eq!(shared::testing::balance(&stack.pg.pool, &amy).await, 0);
    // amy left every team with her account: nothing more reaches it.
    let (status, body) = stack
        .get("credits", &format!("/api/teams/{team}"), &lead)
        .await;
    assert_eq!(
        (status, members(&body)),
        (200, vec!["zed".to_owned()]),
        "{body}"
    );
    let (status, body) = stack
        .post(
            "credits",
            &format!("/api/teams/{team}/transfers"),
            &lead,
            json!({"userId": amy, "credits": 1}),
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (403, Some("not_team_member")),
        "{body}"
    );

    // An account recorded before the ledger knew proven addresses learns
    // it at its next sign-in, and joins the team waiting for it then.
    let (old, _) = stack.signed_up("old", "a long passphrase 4").await;
    sqlx::query("UPDATE user_accounts SET email_verified = false WHERE user_id = $1")
        .bind(&old)
        .execute(&stack.pg.pool)
        .await
        .unwrap();
    let add = json!({"emails": ["old@example.com"]});
    let (status, body) = stack
        .post("credits", &format!("/api/teams/{team}/members"), &lead, add)
        .await;
    assert_eq!(
        (status, &body["pending"]),
        (200, &json!(["old@example.com"])),
        "{body}"
    );
    let login = json!({"username": "old", "password": "a long passphrase 4"});
    let (status, body) = stack.post_public("auth", "/api/auth/login", login).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = stack
        .get("credits", &format!("/api/teams/{team}"), &lead)
        .await;
    assert_eq!(members(&body), ["old", "zed"], "{body}");
    assert_eq!(shared::testing::balance(&stack.pg.pool, &zed).await, 5);
    assert_eq!(
        shared::testing::inconsistent_accounts(&stack.pg.pool).await,
        0
    );
}
