//! Teams through the credits function's router against real PostgreSQL:
//! who may do what to a team, transfers and reclaims to the credit, and
//! every attack a supervisor of another team (or a member) can send,
//! each refused with every balance unchanged.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

mod common;

use common::App;
use serde_json::{json, Value};
use shared::testing::{self, TestResponse};
use shared::token::Role;

impl App {
    /// A token for `user`, whom the ledger has now seen with `role`.
    async fn seen(&self, user: &str, role: Role) -> String {
        let token = self.token(user, role);
        let res = self.get("/api/credits/balance", &token).await;
        assert_eq!(res.status, 200, "{}", res.body);
        token
    }

    /// Makes a team led by `supervisors`; its id.
    async fn team(&self, admin: &str, name: &str, supervisors: &[&str]) -> String {
        let res = self
            .post(
                "/api/admin/teams",
                admin,
                json!({"name": name, "supervisorIds": supervisors}),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.body);
        res.body["id"].as_str().unwrap().to_owned()
    }

    async fn fund(&self, admin: &str, team: &str, credits: i64, days: Value) {
        let res = self
            .post(
                "/api/credits/allocate",
                admin,
                json!({"teamId": team, "credits": credits, "expiryDays": days}),
            )
            .await;
        assert_eq!(res.status, 201, "{}", res.body);
    }

    async fn add(&self, token: &str, team: &str, ids: &[&str]) -> TestResponse {
        self.post(
            &format!("/api/teams/{team}/members"),
            token,
            json!({ "userIds": ids }),
        )
        .await
    }

    async fn give(&self, token: &str, team: &str, body: Value) -> TestResponse {
        self.post(&format!("/api/teams/{team}/transfers"), token, body)
            .await
    }

    async fn take(&self, token: &str, team: &str, body: Value) -> TestResponse {
        self.post(&format!("/api/teams/{team}/reclaims"), token, body)
            .await
    }

    async fn wallet(&self, team: &str) -> i64 {
        testing::balance_of_account(&self.db.pool, &format!("team:{team}")).await
    }

    /// Every account's total, and the count of entries and allocations:
    /// what a refusal must leave as it was.
    async fn books(&self) -> Value {
        let row: (Value,) = sqlx::query_as(
            "SELECT json_build_object(
                 'totals', (SELECT json_object_agg(user_id, total_credits ORDER BY user_id) FROM user_accounts),
                 'entries', (SELECT COUNT(*) FROM credit_transactions),
                 'allocations', (SELECT json_agg(remaining ORDER BY id) FROM credit_allocations),
                 'members', (SELECT COUNT(*) FROM team_members WHERE left_at IS NULL),
                 'pending', (SELECT COUNT(*) FROM team_pending))",
        )
        .fetch_one(&self.db.pool)
        .await
        .unwrap();
        row.0
    }
}

#[tokio::test]
async fn admins_make_rename_and_delete_teams_and_name_their_supervisors() {
    let app = App::new().await;
    let admin = app.seen("admin-1", Role::Admin).await;
    let lead = app.seen("lead", Role::Supervisor).await;
    let alice = app.seen("alice", Role::Enduser).await;

    // A supervisor must hold the role: an end user (or nobody) is refused.
    for bad in ["alice", "nobody"] {
        let res = app
            .post(
                "/api/admin/teams",
                &admin,
                json!({"name": "Maths", "supervisorIds": [bad]}),
            )
            .await;
        res.assert_error(422, "not_a_supervisor");
    }
    // Only admins make teams.
    let res = app
        .post("/api/admin/teams", &lead, json!({"name": "Mine"}))
        .await;
    res.assert_error(403, "forbidden");

    let maths = app.team(&admin, "Maths", &["lead"]).await;
    let res = app
        .post("/api/admin/teams", &admin, json!({"name": " maths "}))
        .await;
    res.assert_error(409, "team_name_taken");
    let res = app
        .post("/api/admin/teams", &admin, json!({"name": "  "}))
        .await;
    res.assert_error(400, "invalid_input");

    let res = app
        .send(
            "PATCH",
            &format!("/api/admin/teams/{maths}"),
            &admin,
            Some(json!({"name": "Mathematics"})),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(res.body["name"], "Mathematics");
    assert_eq!(res.body["supervisors"][0]["userId"], "lead");

    // The supervisor sees it as theirs; alice, once a member, sees its
    // name and supervisors only; an outsider sees nothing.
    let res = app.get("/api/teams", &lead).await;
    assert_eq!(res.body["total"], 1, "{}", res.body);
    assert_eq!(res.body["teams"][0]["standing"], "supervisor");
    assert_eq!(res.body["teams"][0]["memberCount"], 0);
    assert_eq!(app.add(&lead, &maths, &["alice"]).await.status, 200);
    let res = app.get("/api/teams", &alice).await;
    let team = &res.body["teams"][0];
    assert_eq!(team["standing"], "member", "{}", res.body);
    assert!(team.get("memberCount").is_none() && team.get("walletCredits").is_none());
    let res = app.get(&format!("/api/teams/{maths}"), &alice).await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert!(res.body.get("members").is_none(), "{}", res.body);
    let outsider = app.seen("olga", Role::Enduser).await;
    assert_eq!(app.get("/api/teams", &outsider).await.body["total"], 0);
    app.get(&format!("/api/teams/{maths}"), &outsider)
        .await
        .assert_error(403, "not_your_team");

    // A team with credits is not deleted; an empty one is.
    app.fund(&admin, &maths, 5, json!(30)).await;
    let path = format!("/api/admin/teams/{maths}");
    app.send("DELETE", &path, &admin, None)
        .await
        .assert_error(409, "team_has_credits");
    app.send("DELETE", &path, &lead, None)
        .await
        .assert_error(403, "forbidden");
    let empty = app.team(&admin, "Empty", &[]).await;
    let path = format!("/api/admin/teams/{empty}");
    assert_eq!(app.send("DELETE", &path, &admin, None).await.status, 200);
    app.send("DELETE", &path, &admin, None)
        .await
        .assert_error(404, "not_found");
    // A deleted team's wallet takes no grant.
    let res = app
        .post(
            "/api/credits/allocate",
            &admin,
            json!({"teamId": empty, "credits": 5}),
        )
        .await;
    res.assert_error(404, "not_found");
    // A demoted supervisor loses the team at once, whatever the token says.
    sqlx::query(
        "UPDATE user_accounts SET role = 'enduser', synced_at = now() WHERE user_id = 'lead'",
    )
    .execute(&app.db.pool)
    .await
    .unwrap();
    app.get(&format!("/api/teams/{maths}/credits"), &lead)
        .await
        .assert_error(403, "not_your_team");
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);
}

#[tokio::test]
async fn a_transfer_moves_credits_to_a_member_and_a_reclaim_brings_back_the_unspent() {
    let app = App::new().await;
    let admin = app.seen("admin-1", Role::Admin).await;
    let lead = app.seen("lead", Role::Supervisor).await;
    let alice = app.seen("alice", Role::Enduser).await;
    let team = app.team(&admin, "Physics", &["lead"]).await;
    app.fund(&admin, &team, 60, json!(30)).await;
    app.fund(&admin, &team, 40, json!(null)).await;
    assert_eq!(app.wallet(&team).await, 100);
    assert_eq!(app.add(&lead, &team, &["alice"]).await.status, 200);

    // 70 drawn in spending order: the 60 that expire, then 10 that never
    // do; alice's allocation expires no later than the 60 it came from.
    let res = app
        .give(
            &lead,
            &team,
            json!({"userId": "alice", "credits": 70, "notes": "term 1"}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    assert_eq!(res.body["walletCredits"], 30);
    assert_eq!(res.body["memberCredits"], 70);
    let transfer = res.body["transferId"].as_str().unwrap().to_owned();
    let wallet_expiry: (chrono::DateTime<chrono::Utc>,) = sqlx::query_as(
        "SELECT expires_at FROM credit_allocations WHERE user_id = $1 AND expires_at IS NOT NULL",
    )
    .bind(format!("team:{team}"))
    .fetch_one(&app.db.pool)
    .await
    .unwrap();
    let given: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(res.body["allocation"]["expiresAt"].clone()).unwrap();
    assert_eq!(given, wallet_expiry.0);
    // One entry on each side, with the same transfer id.
    let sides: Vec<(String, i64)> = sqlx::query_as(
        "SELECT user_id, amount FROM credit_transactions WHERE transfer_id = $1::uuid ORDER BY amount",
    )
    .bind(&transfer)
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(
        sides,
        vec![(format!("team:{team}"), -70), ("alice".to_owned(), 70)]
    );
    // A shorter expiry is kept; a longer one is cut to the wallet's.
    let res = app
        .give(
            &lead,
            &team,
            json!({"userId": "alice", "credits": 5, "expiryDays": 3}),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let short: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(res.body["allocation"]["expiresAt"].clone()).unwrap();
    assert!(short < wallet_expiry.0 && short > chrono::Utc::now() + chrono::Duration::days(2));

    // Alice spends 50 (the 5 that expire first, then 45 of the 70).
    let res = app
        .post("/api/credits/deduct", &alice, json!({"credits": 50}))
        .await;
    assert_eq!(res.body["newBalance"], 25, "{}", res.body);
    // Taking back more than is unspent is refused, nothing changed.
    let before = app.books().await;
    app.take(&lead, &team, json!({"userId": "alice", "credits": 26}))
        .await
        .assert_error(422, "reclaim_exceeds_unspent");
    assert_eq!(app.books().await, before);
    // 10, then the rest: back to the wallet allocations they came from.
    let res = app
        .take(&lead, &team, json!({"userId": "alice", "credits": 10}))
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    assert_eq!(
        (
            res.body["reclaimed"].as_i64(),
            res.body["walletCredits"].as_i64(),
            res.body["memberCredits"].as_i64()
        ),
        (Some(10), Some(35), Some(15))
    );
    let res = app.take(&lead, &team, json!({"userId": "alice"})).await;
    assert_eq!(res.body["reclaimed"], 15, "{}", res.body);
    assert_eq!(res.body["memberCredits"], 0);
    assert_eq!(app.wallet(&team).await, 50);
    // Back with their own expiries, to the allocations the transfer of
    // 70 drew from, latest-expiring first (as if alice had spent the
    // expiring credits): 10 to the never-expiring one (25 + 10), then 15
    // to the one that expires (0 + 15).
    let held: Vec<(i64, bool)> = sqlx::query_as(
        "SELECT remaining, expires_at IS NULL FROM credit_allocations WHERE user_id = $1 ORDER BY 2",
    )
    .bind(format!("team:{team}"))
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(held, vec![(15, false), (35, true)]);
    // Nothing left: a reclaim of everything is 0, no entry written.
    let entries = app.books().await["entries"].clone();
    let res = app.take(&lead, &team, json!({"userId": "alice"})).await;
    assert_eq!(
        (res.status.as_u16(), res.body["reclaimed"].as_i64()),
        (200, Some(0))
    );
    assert_eq!(app.books().await["entries"], entries);

    // The wallet's history shows grants, transfers out and reclaims back.
    let res = app
        .get(&format!("/api/teams/{team}/credits?limit=100"), &lead)
        .await;
    assert_eq!(res.body["totalCredits"], 50, "{}", res.body);
    let kinds: Vec<&str> = res.body["transactions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["type"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "reclaim",
            "reclaim",
            "transfer",
            "transfer",
            "allocation",
            "allocation"
        ]
    );
    assert_eq!(res.body["transactions"][2]["reference"], "alice");
    // Alice sees what the team gave her.
    let res = app.get("/api/teams", &alice).await;
    assert_eq!(res.body["teams"][0]["givenToYou"], 75, "{}", res.body);
    assert_eq!(res.body["teams"][0]["unspentOfGiven"], 0);
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);
}

#[tokio::test]
async fn a_supervisor_of_another_team_a_member_and_bad_amounts_are_refused_with_nothing_changed() {
    let app = App::new().await;
    let admin = app.seen("admin-1", Role::Admin).await;
    let lead_a = app.seen("lead-a", Role::Supervisor).await;
    let lead_b = app.seen("lead-b", Role::Supervisor).await;
    let alice = app.seen("alice", Role::Enduser).await;
    app.seen("bob", Role::Enduser).await;
    let a = app.team(&admin, "A", &["lead-a"]).await;
    let b = app.team(&admin, "B", &["lead-b"]).await;
    app.fund(&admin, &a, 100, json!(30)).await;
    app.fund(&admin, &b, 100, json!(30)).await;
    assert_eq!(app.add(&lead_a, &a, &["alice"]).await.status, 200);
    assert_eq!(app.add(&lead_b, &b, &["bob"]).await.status, 200);
    let res = app
        .give(&lead_a, &a, json!({"userId": "alice", "credits": 10}))
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let before = app.books().await;

    // The supervisor of B sends every team route at team A.
    let refused = [
        app.get(&format!("/api/teams/{a}"), &lead_b).await,
        app.get(&format!("/api/teams/{a}/credits"), &lead_b).await,
        app.add(&lead_b, &a, &["bob"]).await,
        app.post(
            &format!("/api/teams/{a}/members"),
            &lead_b,
            json!({"emails": ["x@example.com"]}),
        )
        .await,
        app.send(
            "DELETE",
            &format!("/api/teams/{a}/members/alice?reclaim=true"),
            &lead_b,
            None,
        )
        .await,
        app.give(&lead_b, &a, json!({"userId": "alice", "credits": 1}))
            .await,
        app.give(&lead_b, &a, json!({"userId": "bob", "credits": 1}))
            .await,
        app.take(&lead_b, &a, json!({"userId": "alice"})).await,
        app.send(
            "DELETE",
            &format!("/api/teams/{a}/pending/x@example.com"),
            &lead_b,
            None,
        )
        .await,
        // ... and a member sends them at their own team.
        app.give(&alice, &a, json!({"userId": "alice", "credits": 1}))
            .await,
        app.take(&alice, &a, json!({"userId": "alice"})).await,
        app.add(&alice, &a, &["bob"]).await,
        app.get(&format!("/api/teams/{a}/credits"), &alice).await,
    ];
    for res in refused {
        res.assert_error(403, "not_your_team");
    }
    // Team A's supervisor at a non-member, past the wallet, and with
    // amounts that are not credits.
    app.give(&lead_a, &a, json!({"userId": "bob", "credits": 1}))
        .await
        .assert_error(403, "not_team_member");
    app.take(&lead_a, &a, json!({"userId": "bob"}))
        .await
        .assert_error(403, "not_team_member");
    let res = app
        .give(&lead_a, &a, json!({"userId": "alice", "credits": 91}))
        .await;
    res.assert_error(402, "team_insufficient_credits");
    assert_eq!(
        (res.body["needed"].as_i64(), res.body["available"].as_i64()),
        (Some(91), Some(90))
    );
    for credits in [
        json!(-5),
        json!(0),
        json!(9_007_199_254_740_992_i64),
        json!(1.5),
        json!("5"),
    ] {
        app.give(&lead_a, &a, json!({"userId": "alice", "credits": credits}))
            .await
            .assert_error(400, "invalid_input");
        app.take(&lead_a, &a, json!({"userId": "alice", "credits": credits}))
            .await
            .assert_error(400, "invalid_input");
    }
    // A wallet is not a user: no route naming a user reaches it.
    for id in [format!("team:{a}"), format!("team:{b}")] {
        app.give(&lead_a, &a, json!({"userId": id, "credits": 1}))
            .await
            .assert_error(400, "invalid_input");
        app.get(&format!("/api/credits/balance/{id}"), &admin)
            .await
            .assert_error(400, "invalid_path");
        app.post(
            "/api/credits/allocate",
            &admin,
            json!({"userId": id, "credits": 1}),
        )
        .await
        .assert_error(400, "invalid_input");
    }
    // Only an admin renames, re-staffs or deletes a team, even its own
    // supervisor.
    app.send(
        "PATCH",
        &format!("/api/admin/teams/{a}"),
        &lead_a,
        Some(json!({"supervisorIds": ["lead-a", "lead-b"]})),
    )
    .await
    .assert_error(403, "forbidden");
    app.send("DELETE", &format!("/api/admin/teams/{b}"), &lead_a, None)
        .await
        .assert_error(403, "forbidden");
    // Only an admin funds a wallet.
    app.post(
        "/api/credits/allocate",
        &lead_a,
        json!({"teamId": a, "credits": 1}),
    )
    .await
    .assert_error(403, "forbidden");
    // A key used at another team is refused, not replayed.
    let keyed = |team: String, key: &'static str, credits: i64| {
        let path = format!("/api/teams/{team}/transfers");
        let app = &app;
        let token = lead_a.clone();
        async move {
            app.send_with(
                "POST",
                &path,
                Some(&token),
                Some(json!({"userId": "alice", "credits": credits})),
                &[("Idempotency-Key", key)],
            )
            .await
        }
    };
    keyed(b.clone(), "k-1", 1)
        .await
        .assert_error(403, "not_your_team");
    assert_eq!(
        app.books().await,
        before,
        "every refusal left the books as they were"
    );

    // A replayed key gives the first answer and moves nothing again.
    let first = keyed(a.clone(), "k-2", 7).await;
    assert_eq!(first.status, 201, "{}", first.body);
    let after = app.books().await;
    let again = keyed(a.clone(), "k-2", 7).await;
    assert_eq!((again.status.as_u16(), &again.body), (201, &first.body));
    keyed(a.clone(), "k-2", 8)
        .await
        .assert_error(409, "idempotency_key_reused");
    assert_eq!(app.books().await, after);
    assert_eq!(app.wallet(&a).await, 83);
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);
}

#[tokio::test]
async fn fifty_transfers_at_once_from_a_wallet_holding_twenty_give_exactly_twenty() {
    let app = App::new().await;
    let admin = app.seen("admin-1", Role::Admin).await;
    let lead = app.seen("lead", Role::Supervisor).await;
    let team = app.team(&admin, "Crowd", &["lead"]).await;
    let members: Vec<String> = (0..10).map(|i| format!("m{i}")).collect();
    for m in &members {
        app.seen(m, Role::Enduser).await;
    }
    let ids: Vec<&str> = members.iter().map(String::as_str).collect();
    assert_eq!(
        app.add(&lead, &team, &ids).await.body["added"]
            .as_array()
            .unwrap()
            .len(),
        10
    );
    // Two allocations, so transfers draw across them.
    app.fund(&admin, &team, 120, json!(10)).await;
    app.fund(&admin, &team, 80, json!(null)).await;

    let sends = (0..50).map(|i| {
        let client = app.client.clone();
        let (lead, team, member) = (lead.clone(), team.clone(), members[i % 10].clone());
        tokio::spawn(async move {
            client
                .post(
                    &format!("/api/teams/{team}/transfers"),
                    &lead,
                    json!({"userId": member, "credits": 10}),
                )
                .await
        })
    });
    let mut statuses = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        let res = send.await.unwrap();
        if res.status == 402 {
            assert_eq!(res.body["error"], "team_insufficient_credits");
        }
        statuses.push(res.status);
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        20,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 402).count(),
        30,
        "{statuses:?}"
    );
    assert_eq!(app.wallet(&team).await, 0);
    let mut given = 0;
    for m in &members {
        given += testing::balance(&app.db.pool, m).await;
    }
    assert_eq!(given, 200, "the wallet and its members' credits add up");
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);

    // Fifty reclaims at once take back each member's credits once.
    let takes = (0..50).map(|i| {
        let client = app.client.clone();
        let (lead, team, member) = (lead.clone(), team.clone(), members[i % 10].clone());
        tokio::spawn(async move {
            client
                .post(
                    &format!("/api/teams/{team}/reclaims"),
                    &lead,
                    json!({"userId": member}),
                )
                .await
        })
    });
    let mut reclaimed = 0;
    for take in takes.collect::<Vec<_>>() {
        let res = take.await.unwrap();
        assert_eq!(res.status, 200, "{}", res.body);
        reclaimed += res.body["reclaimed"].as_i64().unwrap();
    }
    assert_eq!(reclaimed, 200);
    assert_eq!(app.wallet(&team).await, 200);
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);
}

#[tokio::test]
async fn members_are_added_many_at_once_listed_searched_paged_and_removed() {
    let app = App::new().await;
    let admin = app.seen("admin-1", Role::Admin).await;
    let lead = app.seen("lead", Role::Supervisor).await;
    let team = app.team(&admin, "Big", &["lead"]).await;
    for i in 0..30 {
        app.seen(&format!("user-{i:02}"), Role::Enduser).await;
    }
    sqlx::query("UPDATE user_accounts SET email_verified = true WHERE user_id LIKE 'user-%'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    // user-00 by id twice, user-01 by its proven address, a stranger's
    // address kept pending, an id nobody has.
    let res = app
        .post(
            &format!("/api/teams/{team}/members"),
            &lead,
            json!({
                "userIds": ["user-00", "user-00", "ghost"],
                "emails": ["USER-01@example.com", "new@example.com"]
            }),
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let ids = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|p| p["userId"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ids(&res.body["added"]), ["user-00", "user-01"]);
    assert_eq!(res.body["pending"], json!(["new@example.com"]));
    assert_eq!(res.body["notFound"], json!(["ghost"]));
    let res = app.add(&lead, &team, &["user-00"]).await;
    assert_eq!(ids(&res.body["alreadyMembers"]), ["user-00"]);

    // 501 at once is refused; a malformed address names its place.
    let many: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    app.post(
        &format!("/api/teams/{team}/members"),
        &lead,
        json!({ "userIds": many }),
    )
    .await
    .assert_error(400, "invalid_input");
    let res = app
        .post(
            &format!("/api/teams/{team}/members"),
            &lead,
            json!({"emails": ["ok@example.com", "not an address"]}),
        )
        .await;
    res.assert_error(400, "invalid_input");
    assert_eq!(res.body["field"], "emails[1]");

    let all: Vec<String> = (2..30).map(|i| format!("user-{i:02}")).collect();
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    assert_eq!(app.add(&lead, &team, &all).await.status, 200);
    let res = app
        .get(&format!("/api/teams/{team}?limit=10&page=3"), &lead)
        .await;
    assert_eq!(res.body["total"], 30, "{}", res.body);
    assert_eq!(
        ids(&res.body["members"]),
        [
            "user-20", "user-21", "user-22", "user-23", "user-24", "user-25", "user-26", "user-27",
            "user-28", "user-29"
        ]
    );
    assert_eq!(res.body["pending"][0]["email"], "new@example.com");
    let res = app
        .get(&format!("/api/teams/{team}?search=USER-1"), &lead)
        .await;
    assert_eq!(res.body["total"], 10, "{}", res.body);

    // Removal: alice keeps what she was given, unless reclaimed.
    app.fund(&admin, &team, 20, json!(30)).await;
    for m in ["user-00", "user-01"] {
        let res = app
            .give(&lead, &team, json!({"userId": m, "credits": 10}))
            .await;
        assert_eq!(res.status, 201, "{}", res.body);
    }
    let res = app
        .send(
            "DELETE",
            &format!("/api/teams/{team}/members/user-00"),
            &lead,
            None,
        )
        .await;
    assert_eq!(
        (res.status.as_u16(), res.body["reclaimed"].as_i64()),
        (200, Some(0)),
        "{}",
        res.body
    );
    assert_eq!(testing::balance(&app.db.pool, "user-00").await, 10);
    let res = app
        .send(
            "DELETE",
            &format!("/api/teams/{team}/members/user-01?reclaim=true"),
            &lead,
            None,
        )
        .await;
    assert_eq!(res.body["reclaimed"], 10, "{}", res.body);
    assert_eq!(testing::balance(&app.db.pool, "user-01").await, 0);
    assert_eq!(app.wallet(&team).await, 10);
    // Gone: not removed twice, no longer given to.
    app.send(
        "DELETE",
        &format!("/api/teams/{team}/members/user-00"),
        &lead,
        None,
    )
    .await
    .assert_error(404, "not_found");
    app.give(&lead, &team, json!({"userId": "user-00", "credits": 1}))
        .await
        .assert_error(403, "not_team_member");
    // A pending address is forgotten.
    let path = format!("/api/teams/{team}/pending/new@example.com");
    assert_eq!(app.send("DELETE", &path, &lead, None).await.status, 200);
    app.send("DELETE", &path, &lead, None)
        .await
        .assert_error(404, "not_found");
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);
}

#[tokio::test]
async fn a_transfer_waiting_behind_a_removal_or_a_deletion_moves_nothing() {
    let app = App::new().await;
    let admin = app.seen("admin-1", Role::Admin).await;
    let lead = app.seen("lead", Role::Supervisor).await;
    app.seen("alice", Role::Enduser).await;
    let team = app.team(&admin, "Racing", &["lead"]).await;
    app.fund(&admin, &team, 50, json!(30)).await;
    assert_eq!(app.add(&lead, &team, &["alice"]).await.status, 200);
    let res = app
        .give(&lead, &team, json!({"userId": "alice", "credits": 5}))
        .await;
    assert_eq!(res.status, 201, "{}", res.body);

    // A removal holds alice's account (as the route does) and ends her
    // stay; a transfer sent meanwhile waits, then finds her gone.
    let mut removal = app.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM user_accounts WHERE user_id = 'alice' FOR UPDATE")
        .execute(&mut *removal)
        .await
        .unwrap();
    sqlx::query("UPDATE team_members SET left_at = clock_timestamp() WHERE user_id = 'alice'")
        .execute(&mut *removal)
        .await
        .unwrap();
    let (client, path, token) = (
        app.client.clone(),
        format!("/api/teams/{team}/transfers"),
        lead.clone(),
    );
    let transfer = tokio::spawn(async move {
        client
            .post(&path, &token, json!({"userId": "alice", "credits": 7}))
            .await
    });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !transfer.is_finished(),
        "the transfer waits for alice's lock"
    );
    removal.commit().await.unwrap();
    transfer.await.unwrap().assert_error(403, "not_team_member");
    assert_eq!(testing::balance(&app.db.pool, "alice").await, 5);
    assert_eq!(app.wallet(&team).await, 45);

    // A deletion holds the wallet and deletes the team; a reclaim sent
    // meanwhile waits, then finds no team, and alice keeps her credits.
    sqlx::query("UPDATE team_members SET left_at = NULL WHERE user_id = 'alice'")
        .execute(&app.db.pool)
        .await
        .unwrap();
    let mut deletion = app.db.pool.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM user_accounts WHERE user_id = $1 FOR UPDATE")
        .bind(format!("team:{team}"))
        .execute(&mut *deletion)
        .await
        .unwrap();
    sqlx::query("UPDATE teams SET deleted_at = now() WHERE id = $1::uuid")
        .bind(&team)
        .execute(&mut *deletion)
        .await
        .unwrap();
    let (client, path, token) = (
        app.client.clone(),
        format!("/api/teams/{team}/reclaims"),
        lead.clone(),
    );
    let reclaim =
        tokio::spawn(async move { client.post(&path, &token, json!({"userId": "alice"})).await });
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        !reclaim.is_finished(),
        "the reclaim waits for the wallet's lock"
    );
    deletion.commit().await.unwrap();
    reclaim.await.unwrap().assert_error(404, "not_found");
    assert_eq!(testing::balance(&app.db.pool, "alice").await, 5);
    assert_eq!(app.wallet(&team).await, 45);
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);
}

#[tokio::test]
async fn two_supervisors_giving_to_each_other_at_once_never_deadlock() {
    let app = App::new().await;
    let admin = app.seen("admin-1", Role::Admin).await;
    let s1 = app.seen("s1", Role::Supervisor).await;
    let s2 = app.seen("s2", Role::Supervisor).await;
    let team = app.team(&admin, "Pair", &["s1", "s2"]).await;
    app.fund(&admin, &team, 1000, json!(30)).await;
    assert_eq!(app.add(&s1, &team, &["s1", "s2"]).await.status, 200);
    let sends = (0..40).map(|i| {
        let client = app.client.clone();
        let (token, to) = if i % 2 == 0 {
            (s1.clone(), "s2")
        } else {
            (s2.clone(), "s1")
        };
        let path = format!("/api/teams/{team}/transfers");
        tokio::spawn(async move {
            client
                .post(&path, &token, json!({"userId": to, "credits": 1}))
                .await
        })
    });
    for send in sends.collect::<Vec<_>>() {
        let res = send.await.unwrap();
        assert_eq!(res.status, 201, "{}", res.body);
    }
    assert_eq!(app.wallet(&team).await, 960);
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);
}

#[tokio::test]
async fn wallet_credits_that_expire_within_a_day_stay_in_the_wallet() {
    let app = App::new().await;
    let admin = app.seen("admin-1", Role::Admin).await;
    let lead = app.seen("lead", Role::Supervisor).await;
    app.seen("alice", Role::Enduser).await;
    let team = app.team(&admin, "Late", &["lead"]).await;
    app.fund(&admin, &team, 10, json!(30)).await;
    app.fund(&admin, &team, 10, json!(30)).await;
    // One of the two grants now ends in two hours.
    sqlx::query(
        "UPDATE credit_allocations SET allocated_at = now() - interval '29 days',
                expires_at = now() + interval '2 hours'
          WHERE id = (SELECT id FROM credit_allocations WHERE user_id = $1 ORDER BY id LIMIT 1)",
    )
    .bind(format!("team:{team}"))
    .execute(&app.db.pool)
    .await
    .unwrap();
    assert_eq!(app.add(&lead, &team, &["alice"]).await.status, 200);
    let res = app
        .give(&lead, &team, json!({"userId": "alice", "credits": 11}))
        .await;
    res.assert_error(402, "team_insufficient_credits");
    assert_eq!(res.body["available"], 10, "{}", res.body);
    let res = app
        .give(&lead, &team, json!({"userId": "alice", "credits": 10}))
        .await;
    assert_eq!(res.status, 201, "{}", res.body);
    let expires: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(res.body["allocation"]["expiresAt"].clone()).unwrap();
    assert!(expires > chrono::Utc::now() + chrono::Duration::days(29));
    assert_eq!(app.wallet(&team).await, 10, "the short-lived 10 stay");
    assert_eq!(testing::inconsistent_accounts(&app.db.pool).await, 0);
}
