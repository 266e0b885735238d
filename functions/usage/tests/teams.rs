//! A team's reports (README "Teams"): its members' usage counted only
//! while they belonged, per member, in statistics and in the CSV export,
//! for the team's supervisors and admins only.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use serde_json::Value;
use shared::testing::{self, TestClient, TestPostgres};
use shared::token::Role;

const TEAM: &str = "0190f000-0000-7000-8000-000000000001";

/// Team T led by `lead` (and `other-lead` leading nothing): ann belonged
/// from 2026-03-05 to 2026-03-10 and again from 2026-03-20; ben from
/// 2026-03-01 on; cat never. Each used 1 credit on every day of March
/// 2026, at noon.
async fn fixture(db: &TestPostgres) {
    let setup = format!(
        "INSERT INTO user_accounts (user_id, username, role) VALUES
             ('lead', 'lead', 'supervisor'), ('other-lead', 'other', 'supervisor'),
             ('ann', 'ann', 'enduser'), ('ben', 'ben', 'enduser'), ('cat', 'cat', 'enduser');
         INSERT INTO user_accounts (user_id, owner_kind) VALUES ('team:{TEAM}', 'team');
         INSERT INTO teams (id, name, account_id, created_by) VALUES ('{TEAM}', 'T', 'team:{TEAM}', 'admin');
         INSERT INTO team_supervisors (team_id, user_id) VALUES ('{TEAM}', 'lead');
         INSERT INTO team_members (id, team_id, user_id, joined_at, left_at, added_by) VALUES
             (gen_random_uuid(), '{TEAM}', 'ann', '2026-03-05T00:00:00Z', '2026-03-10T00:00:00Z', 'lead'),
             (gen_random_uuid(), '{TEAM}', 'ann', '2026-03-20T00:00:00Z', NULL, 'lead'),
             (gen_random_uuid(), '{TEAM}', 'ben', '2026-03-01T00:00:00Z', NULL, 'lead');
         INSERT INTO usage_logs (id, user_id, service, operation, credits, metadata, created_at)
         SELECT gen_random_uuid(), u, 'chat', 'flow-' || u, 1,
                jsonb_build_object('chatflow_id', 'flow-' || u), d + interval '12 hours'
           FROM unnest(ARRAY['ann', 'ben', 'cat']) u,
                generate_series('2026-03-01'::timestamptz, '2026-03-31'::timestamptz, interval '1 day') d;"
    );
    sqlx::raw_sql(&setup).execute(&db.pool).await.unwrap();
}

fn by_user(stats: &Value) -> Vec<(String, i64)> {
    stats["byUser"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| {
            (
                u["userId"].as_str().unwrap().to_owned(),
                u["credits"].as_i64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_team_report_counts_each_member_only_while_they_belonged() {
    let db = TestPostgres::new().await;
    fixture(&db).await;
    let client = TestClient::new(usage::router(usage::AppState {
        jwt: testing::jwt_keys(),
        pg: db.pool.clone(),
    }));
    let lead = client.token("lead", Role::Supervisor);
    let range = "from=2026-03-01&to=2026-03-31";
    let res = client
        .get(&format!("/api/usage/stats?teamId={TEAM}&{range}"), &lead)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    // ann: 5..9 (5 days) and 20..31 (12 days); ben: all 31; cat: none.
    assert_eq!(
        by_user(&res.body),
        [("ben".to_owned(), 31), ("ann".to_owned(), 17)]
    );
    assert_eq!(res.body["totalCredits"], 48);
    let days = res.body["byDay"].as_array().unwrap();
    let day = |d: &str| days.iter().find(|x| x["day"] == d).unwrap()["credits"].as_i64();
    assert_eq!(
        (
            day("2026-03-04"),
            day("2026-03-05"),
            day("2026-03-10"),
            day("2026-03-20")
        ),
        (Some(1), Some(2), Some(1), Some(2))
    );
    let flows: Vec<&str> = res.body["byChatflow"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["chatflowId"].as_str().unwrap())
        .collect();
    assert_eq!(flows, ["flow-ben", "flow-ann"]);

    // The export holds the same 48 records, and only them.
    let res = client
        .get(&format!("/api/usage/export?teamId={TEAM}&{range}"), &lead)
        .await;
    assert_eq!(res.status, 200, "{}", res.body);
    let text = res.body.as_str().unwrap();
    assert_eq!(text.lines().count(), 49, "a header and 48 records");
    assert!(!text.contains(",cat,"), "{text}");
    assert!(res.headers["content-disposition"]
        .to_str()
        .unwrap()
        .contains(&format!("team-{TEAM}")));

    // Without the team, the supervisor's system-wide report is as before.
    let res = client
        .get(&format!("/api/usage/system-stats?{range}"), &lead)
        .await;
    assert_eq!(res.body["totalCredits"], 93);

    // Another supervisor, a member and an admin.
    let other = client.token("other-lead", Role::Supervisor);
    let ann = client.token("ann", Role::Enduser);
    for token in [&other, &ann] {
        for path in ["stats", "export"] {
            let res = client
                .get(&format!("/api/usage/{path}?teamId={TEAM}&{range}"), token)
                .await;
            assert_eq!(res.status, 403, "{path}: {}", res.body);
        }
    }
    let admin = client.token("root", Role::Admin);
    let res = client
        .get(&format!("/api/usage/stats?teamId={TEAM}&{range}"), &admin)
        .await;
    assert_eq!(res.body["totalCredits"], 48, "{}", res.body);
    // A team that does not exist, and one that is not an id.
    let res = client
        .get(
            "/api/usage/stats?teamId=0190f000-0000-7000-8000-00000000ffff",
            &admin,
        )
        .await;
    res.assert_error(404, "not_found");
    let res = client.get("/api/usage/stats?teamId=nope", &admin).await;
    assert_eq!(res.status, 400, "{}", res.body);
}
