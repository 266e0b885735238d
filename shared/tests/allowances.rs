//! Allowances against real PostgreSQL with a clock the tests move (README
//! "Allowances and warnings"): calendar periods, one grant per period
//! whoever races for it, rollover caps, a wallet that runs dry part way,
//! changes from the next period, and the spending order.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use chrono::{DateTime, Datelike, Duration, TimeZone, Utc};
use shared::ids::UserId;
use shared::ledger::allowances::{self, AllowanceSetting, Granter};
use shared::ledger::primitives::lock_account;
use shared::ledger::{changes, Credits, EntryMeta};
use shared::testing::{inconsistent_accounts, TestPostgres};
use sqlx::PgPool;

fn uid(user: &str) -> UserId {
    UserId::parse("userId", user).unwrap()
}

fn at(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// The first instant of the month `months` after this one (UTC).
fn month(months: u32) -> DateTime<Utc> {
    let now = Utc::now();
    let index = now.year() * 12 + now.month0() as i32 + months as i32;
    Utc.with_ymd_and_hms(index / 12, (index % 12) as u32 + 1, 1, 0, 0, 0)
        .unwrap()
}

fn setting(credits: i64, period: &str, cap: Option<i64>) -> AllowanceSetting {
    AllowanceSetting {
        credits,
        period: period.into(),
        rollover_cap: cap,
        time_zone: "UTC".into(),
    }
}

async fn set(pool: &PgPool, key: &str, setting: Option<AllowanceSetting>, when: DateTime<Utc>) {
    let mut tx = pool.begin().await.unwrap();
    allowances::set(&mut tx, key, setting.as_ref(), when, "admin")
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn users(pool: &PgPool, role: &str, names: &[&str]) {
    for name in names {
        sqlx::query("INSERT INTO user_accounts (user_id, username, role) VALUES ($1, $1, $2)")
            .bind(name)
            .bind(role)
            .execute(pool)
            .await
            .unwrap();
    }
}

/// A request's grant: lock, grant what is due at `when`, commit.
async fn first_request(pool: &PgPool, user: &str, when: DateTime<Utc>) {
    let mut tx = pool.begin().await.unwrap();
    let locked = lock_account(&mut tx, &uid(user)).await.unwrap();
    allowances::grant_due(&mut tx, &uid(user), locked, when, Granter::Request)
        .await
        .unwrap();
    tx.commit().await.unwrap();
}

async fn total(pool: &PgPool, user: &str) -> i64 {
    sqlx::query_scalar("SELECT total_credits FROM user_accounts WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

async fn grants(pool: &PgPool, user: &str) -> Vec<(DateTime<Utc>, i64, i64, i64)> {
    sqlx::query_as(
        "SELECT period_start, credits, shortfall, carried FROM allowance_grants
          WHERE user_id = $1 ORDER BY period_start",
    )
    .bind(user)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn periods_follow_the_calendar_of_their_time_zone() {
    let pg = TestPostgres::new().await;
    let period = |p: &'static str, tz: &'static str, when: &'static str| {
        let pool = pg.pool.clone();
        async move {
            let row: (DateTime<Utc>, DateTime<Utc>) =
                sqlx::query_as("SELECT period_start, period_end FROM allowance_period($1, $2, $3)")
                    .bind(p)
                    .bind(tz)
                    .bind(at(when))
                    .fetch_one(&pool)
                    .await
                    .unwrap();
            row
        }
    };
    // The last instant of January and the first of February; a 31-day month.
    assert_eq!(
        period("month", "UTC", "2027-01-31T23:59:59.999Z").await,
        (at("2027-01-01T00:00:00Z"), at("2027-02-01T00:00:00Z"))
    );
    assert_eq!(
        period("month", "UTC", "2027-02-01T00:00:00Z").await,
        (at("2027-02-01T00:00:00Z"), at("2027-03-01T00:00:00Z"))
    );
    // A leap year's February has 29 days; its leap day is a day.
    assert_eq!(
        period("month", "UTC", "2028-02-29T12:00:00Z").await,
        (at("2028-02-01T00:00:00Z"), at("2028-03-01T00:00:00Z"))
    );
    assert_eq!(
        period("day", "UTC", "2028-02-29T23:00:00Z").await,
        (at("2028-02-29T00:00:00Z"), at("2028-03-01T00:00:00Z"))
    );
    // Weeks begin on Monday: Wednesday 9 December 2026 is in the week of the 7th.
    assert_eq!(
        period("week", "UTC", "2026-12-09T08:00:00Z").await,
        (at("2026-12-07T00:00:00Z"), at("2026-12-14T00:00:00Z"))
    );
    // Shanghai's month begins at 16:00 UTC the day before.
    assert_eq!(
        period("month", "Asia/Shanghai", "2026-12-31T17:00:00Z").await,
        (at("2026-12-31T16:00:00Z"), at("2027-01-31T16:00:00Z"))
    );
    // New York's spring-forward day is 23 hours long.
    let (start, end) = period("day", "America/New_York", "2027-03-14T12:00:00Z").await;
    assert_eq!(
        (start, end - start),
        (at("2027-03-14T05:00:00Z"), Duration::hours(23))
    );
}

#[tokio::test]
async fn the_job_grants_each_period_once_however_often_or_late_it_runs() {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    users(pool, "enduser", &["u1", "u2"]).await;
    users(pool, "admin", &["boss"]).await;
    let (m1, m2) = (month(2), month(3));
    set(
        pool,
        "role:enduser",
        Some(setting(100, "month", None)),
        m1 - Duration::days(5),
    )
    .await;

    let first = allowances::grant_all(pool, m1 + Duration::hours(1), 2)
        .await
        .unwrap();
    assert_eq!((first.recipients, first.busy), (2, 0));
    for again in [
        m1 + Duration::hours(2),
        m1 + Duration::days(3),
        m2 - Duration::seconds(1),
    ] {
        let report = allowances::grant_all(pool, again, 2).await.unwrap();
        assert_eq!(report.recipients, 0, "at {again}: already granted");
    }
    assert_eq!(
        (total(pool, "u1").await, total(pool, "u2").await),
        (100, 100)
    );
    assert_eq!(
        total(pool, "boss").await,
        0,
        "another role's users get nothing"
    );
    let expiry: DateTime<Utc> = sqlx::query_scalar(
        "SELECT expires_at FROM credit_allocations WHERE user_id = 'u1' AND allowance IS NOT NULL",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(expiry, m2, "it expires at the end of its month");
    // The next month's grant, by the job a day late.
    let report = allowances::grant_all(pool, m2 + Duration::days(1), 500)
        .await
        .unwrap();
    assert_eq!(report.recipients, 2);
    let made: Vec<DateTime<Utc>> = grants(pool, "u1").await.iter().map(|g| g.0).collect();
    assert_eq!(made, [m1, m2]);
    assert_eq!(inconsistent_accounts(pool).await, 0);
}

#[tokio::test]
async fn fifty_first_requests_racing_the_job_grant_once() {
    let pg = TestPostgres::new().await;
    let pool = pg.pool.clone();
    users(&pool, "enduser", &["racer", "other"]).await;
    let m1 = month(2);
    set(
        &pool,
        "role:enduser",
        Some(setting(100, "month", None)),
        m1 - Duration::days(1),
    )
    .await;
    let when = m1 + Duration::minutes(1);
    let mut tasks: Vec<_> = (0..50)
        .map(|_| {
            let pool = pool.clone();
            tokio::spawn(async move { first_request(&pool, "racer", when).await })
        })
        .collect();
    let job_pool = pool.clone();
    tasks.push(tokio::spawn(async move {
        allowances::grant_all(&job_pool, when, 1).await.unwrap();
    }));
    for task in tasks {
        task.await.unwrap();
    }
    allowances::grant_all(&pool, when, 500).await.unwrap();
    assert_eq!(grants(&pool, "racer").await.len(), 1);
    assert_eq!(total(&pool, "racer").await, 100);
    assert_eq!(total(&pool, "other").await, 100, "the job reached the rest");
    assert_eq!(inconsistent_accounts(&pool).await, 0);
}

#[tokio::test]
async fn what_is_left_rolls_over_up_to_the_cap_and_the_rest_expires() {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    users(pool, "enduser", &["ann"]).await;
    let d1 = month(2);
    let (d2, d3) = (d1 + Duration::days(1), d1 + Duration::days(2));
    set(
        pool,
        "role:enduser",
        Some(setting(100, "day", Some(30))),
        d1 - Duration::hours(1),
    )
    .await;
    first_request(pool, "ann", d1 + Duration::hours(1)).await;
    let mut tx = pool.begin().await.unwrap();
    let meta = EntryMeta::default();
    changes::deduct(&mut tx, &uid("ann"), Credits::try_from(50).unwrap(), &meta)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    // Day 2: 50 were left; they end with day 1, 30 of them carry over, and
    // 100 arrive.
    first_request(pool, "ann", d2 + Duration::hours(1)).await;
    assert_eq!(total(pool, "ann").await, 130);
    let lost: i64 = sqlx::query_scalar(
        "SELECT amount FROM credit_transactions WHERE user_id = 'ann' AND type = 'expiry'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(lost, -50);
    let carried: i64 = sqlx::query_scalar(
        "SELECT amount FROM credit_transactions
          WHERE user_id = 'ann' AND type = 'allowance' AND description = 'allowance rolled over'",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(carried, 30);
    // Day 3: nothing spent; of the 130 (both ending with day 2), 30 roll over.
    first_request(pool, "ann", d3 + Duration::hours(1)).await;
    assert_eq!(total(pool, "ann").await, 130);
    let made: Vec<(i64, i64)> = grants(pool, "ann")
        .await
        .iter()
        .map(|g| (g.1, g.3))
        .collect();
    assert_eq!(made, [(100, 0), (100, 30), (100, 30)]);
    let live: i64 = sqlx::query_scalar(
        "SELECT COALESCE(SUM(remaining), 0)::bigint FROM credit_allocations
          WHERE user_id = 'ann' AND expires_at = $1",
    )
    .bind(d3 + Duration::days(1))
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(live, 130, "all of it lasts to the end of day 3");
    assert_eq!(inconsistent_accounts(pool).await, 0);
}

#[tokio::test]
async fn a_wallet_that_runs_dry_part_way_gives_what_it_holds_in_member_order() {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    let members = ["m0", "m1", "m2", "m3", "m4"];
    users(pool, "enduser", &members).await;
    let team = "0190f000-0000-7000-8000-00000000aaaa";
    shared::testing::team(pool, team, "Dry", &members, 35).await;
    let m1 = month(2);
    set(
        pool,
        &format!("team:{team}"),
        Some(setting(10, "month", None)),
        m1 - Duration::days(1),
    )
    .await;
    allowances::grant_all(pool, m1 + Duration::hours(1), 2)
        .await
        .unwrap();
    let mut got = Vec::new();
    for m in members {
        let g = grants(pool, m).await;
        got.push((total(pool, m).await, g[0].1, g[0].2));
    }
    assert_eq!(
        got,
        [(10, 10, 0), (10, 10, 0), (10, 10, 0), (5, 5, 5), (0, 0, 10)]
    );
    assert_eq!(total(pool, &format!("team:{team}")).await, 0);
    assert_eq!(inconsistent_accounts(pool).await, 0);
}

#[tokio::test]
async fn a_change_applies_from_the_next_period_and_an_end_too() {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    users(pool, "enduser", &["bea"]).await;
    let (m1, m2, m3) = (month(2), month(3), month(4));
    set(
        pool,
        "role:enduser",
        Some(setting(100, "month", None)),
        m1 + Duration::days(1),
    )
    .await;
    set(
        pool,
        "role:enduser",
        Some(setting(150, "month", None)),
        m1 + Duration::days(2),
    )
    .await;
    set(
        pool,
        "role:enduser",
        Some(setting(200, "month", None)),
        m1 + Duration::days(2),
    )
    .await;
    let mut conn = pool.acquire().await.unwrap();
    let now = allowances::standing(&mut conn, "role:enduser", m1 + Duration::days(2))
        .await
        .unwrap();
    assert_eq!(now.current.as_ref().map(|s| s.credits), Some(100));
    assert_eq!(now.since, Some(m1 + Duration::days(1)));
    assert_eq!(
        (now.next.as_ref().map(|s| s.credits), now.changes_at),
        (Some(200), Some(m2))
    );
    let next = allowances::next_credits(&mut conn, &uid("bea"), m1 + Duration::days(2))
        .await
        .unwrap();
    assert_eq!(next, Some((m2, 200)), "what arrives next, and when");
    drop(conn);
    // The first, partial period gets the whole allowance; the next the new one.
    first_request(pool, "bea", m1 + Duration::days(3)).await;
    first_request(pool, "bea", m2 + Duration::hours(1)).await;
    // Ended: it stops at the end of its period.
    set(pool, "role:enduser", None, m2 + Duration::hours(2)).await;
    first_request(pool, "bea", m3 + Duration::hours(1)).await;
    let made: Vec<(DateTime<Utc>, i64)> = grants(pool, "bea")
        .await
        .iter()
        .map(|g| (g.0, g.1))
        .collect();
    assert_eq!(made, [(m1 + Duration::days(1), 100), (m2, 200)]);
    let mut conn = pool.acquire().await.unwrap();
    let later = allowances::standing(&mut conn, "role:enduser", m3)
        .await
        .unwrap();
    assert!(later.current.is_none() && later.next.is_none(), "{later:?}");
}

#[tokio::test]
async fn credits_are_spent_soonest_expiring_first_and_never_expiring_last() {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    users(pool, "enduser", &["cy"]).await;
    let meta = EntryMeta::default();
    let mut tx = pool.begin().await.unwrap();
    let cy = uid("cy");
    changes::adjust(&mut tx, &cy, 10.try_into().unwrap(), "never expires", &meta)
        .await
        .unwrap();
    changes::allocate(
        &mut tx,
        &cy,
        Credits::try_from(7).unwrap(),
        Some(30),
        None,
        &meta,
    )
    .await
    .unwrap();
    changes::allocate(
        &mut tx,
        &cy,
        Credits::try_from(4).unwrap(),
        Some(30),
        None,
        &meta,
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let tomorrow = Utc::now() + Duration::days(1);
    set(
        pool,
        "role:enduser",
        Some(setting(5, "day", None)),
        tomorrow,
    )
    .await;
    first_request(pool, "cy", tomorrow + Duration::minutes(1)).await;
    // 5 from the allowance (ends first), 7 from the older 30-day grant,
    // 1 of the newer one; the never-expiring 10 untouched.
    let mut tx = pool.begin().await.unwrap();
    changes::deduct(&mut tx, &cy, Credits::try_from(13).unwrap(), &meta)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    let left: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
        "SELECT credits, remaining, allowance FROM credit_allocations WHERE user_id = 'cy'
          ORDER BY expires_at ASC NULLS LAST, allocated_at",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        left,
        [
            (5, 0, Some("role:enduser".to_owned())),
            (7, 0, None),
            (4, 3, None),
            (10, 10, None)
        ]
    );
}

#[tokio::test]
async fn a_member_who_joins_mid_period_gets_the_whole_periods_share_once() {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    users(pool, "enduser", &["early", "late"]).await;
    let team = "0190f000-0000-7000-8000-00000000cccc";
    shared::testing::team(pool, team, "Join", &["early"], 100).await;
    let m1 = month(2);
    set(
        pool,
        &format!("team:{team}"),
        Some(setting(30, "month", None)),
        m1 - Duration::days(1),
    )
    .await;
    allowances::grant_all(pool, m1 + Duration::hours(1), 500)
        .await
        .unwrap();
    // Late joins on the 20th: their first request gets the whole 30.
    sqlx::query("INSERT INTO team_members (id, team_id, user_id, added_by) VALUES (gen_random_uuid(), $1::uuid, 'late', 'admin')")
        .bind(team)
        .execute(pool)
        .await
        .unwrap();
    first_request(pool, "late", m1 + Duration::days(19)).await;
    first_request(pool, "late", m1 + Duration::days(20)).await;
    assert_eq!(
        (total(pool, "early").await, total(pool, "late").await),
        (30, 30)
    );
    assert_eq!(
        total(pool, &format!("team:{team}")).await,
        40,
        "moved, never made"
    );
    assert_eq!(inconsistent_accounts(pool).await, 0);
}

#[tokio::test]
async fn a_job_that_crosses_a_boundary_grants_the_new_period_from_then_on() {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    users(pool, "enduser", &["u1", "u2"]).await;
    let (m1, m2) = (month(2), month(3));
    set(pool, "role:enduser", Some(setting(10, "month", None)), m1).await;
    // The clock reads before the boundary for the first batch and its
    // first recipient, after it from then on.
    let reads = std::sync::atomic::AtomicUsize::new(0);
    let clock = move || {
        let n = reads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n < 2 {
            m2 - Duration::seconds(1)
        } else {
            m2 + Duration::seconds(1)
        }
    };
    allowances::grant_all_by(pool, &clock, 1).await.unwrap();
    let u1: Vec<DateTime<Utc>> = grants(pool, "u1").await.iter().map(|g| g.0).collect();
    let u2: Vec<DateTime<Utc>> = grants(pool, "u2").await.iter().map(|g| g.0).collect();
    assert_eq!(
        (u1, u2),
        (vec![m1], vec![m2]),
        "each recipient's period as the clock read then"
    );
}

#[tokio::test]
async fn a_teams_allowance_rolls_over_only_what_its_wallet_credits_outlast_and_a_reclaim_returns_it(
) {
    let pg = TestPostgres::new().await;
    let pool = &pg.pool;
    users(pool, "enduser", &["rae"]).await;
    // Two teams: Long's wallet credits never expire; Short's end half way
    // through day 2.
    let (long, short) = (
        "0190f000-0000-7000-8000-00000000dd01",
        "0190f000-0000-7000-8000-00000000dd02",
    );
    shared::testing::team(pool, long, "Long", &["rae"], 100).await;
    shared::testing::team(pool, short, "Short", &["rae"], 100).await;
    let d1 = month(2);
    let d2 = d1 + Duration::days(1);
    sqlx::query("UPDATE credit_allocations SET expires_at = $1 WHERE user_id = $2")
        .bind(d2 + Duration::hours(12))
        .bind(format!("team:{short}"))
        .execute(pool)
        .await
        .unwrap();
    for team in [long, short] {
        let capped = setting(20, "day", Some(15));
        set(
            pool,
            &format!("team:{team}"),
            Some(capped),
            d1 - Duration::hours(1),
        )
        .await;
    }
    first_request(pool, "rae", d1 + Duration::hours(1)).await;
    assert_eq!(total(pool, "rae").await, 40);
    // Rae spends 10 (soonest-expiring first: both shares end with day 1).
    let mut tx = pool.begin().await.unwrap();
    changes::deduct(
        &mut tx,
        &uid("rae"),
        Credits::try_from(10).unwrap(),
        &EntryMeta::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    let left: Vec<(String, i64)> = sqlx::query_as(
        "SELECT allowance, remaining FROM credit_allocations WHERE user_id = 'rae' ORDER BY allowance",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let of = |team: &str| {
        left.iter()
            .find(|(a, _)| a.ends_with(team))
            .map(|(_, r)| *r)
            .unwrap()
    };
    let (long_left, short_left) = (of(long), of(short));
    assert_eq!(long_left + short_left, 30);

    // Day 2: each team's 20 arrive. Long's leftover carries, up to 15;
    // Short's does not: its wallet credits end before day 2 does, and a
    // transfer never outlives what it moved.
    first_request(pool, "rae", d2 + Duration::hours(1)).await;
    let carried: Vec<(String, i64, Option<uuid::Uuid>, Option<uuid::Uuid>)> = sqlx::query_as(
        "SELECT a.allowance, a.credits, a.team_id, a.transfer_id FROM credit_allocations a
          JOIN credit_transactions t ON t.allocation_id = a.id
         WHERE t.user_id = 'rae' AND t.type = 'allowance' AND t.description = 'allowance rolled over'",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    let first_transfer: uuid::Uuid = sqlx::query_scalar(
        "SELECT transfer_id FROM credit_allocations
          WHERE user_id = 'rae' AND team_id = $1::uuid ORDER BY allocated_at LIMIT 1",
    )
    .bind(long)
    .fetch_one(pool)
    .await
    .unwrap();
    let long_id = uuid::Uuid::parse_str(long).unwrap();
    assert_eq!(
        carried,
        [(
            format!("team:{long}"),
            long_left.min(15),
            Some(long_id),
            Some(first_transfer)
        )]
    );
    assert_eq!(total(pool, "rae").await, 40 + long_left.min(15));
    let made: Vec<i64> = grants(pool, "rae").await.iter().map(|g| g.3).collect();
    assert_eq!(made.iter().sum::<i64>(), long_left.min(15));

    // Long takes back everything: the carry returns to the wallet
    // allocation it was first drawn from. Moved, never made: the wallet
    // and what Rae spent add up to the 100 it was given.
    let wallet = shared::ledger::transfers::Wallet::of(long_id);
    let mut tx = pool.begin().await.unwrap();
    let back = shared::ledger::transfers::reclaim(
        &mut tx,
        &wallet,
        &uid("rae"),
        None,
        false,
        &EntryMeta::default(),
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(back.credits, 20 + long_left.min(15));
    let spent_of_long = 20 - long_left;
    let expired_unspent = long_left - long_left.min(15);
    assert_eq!(
        total(pool, &format!("team:{long}")).await + spent_of_long + expired_unspent,
        100
    );
    assert_eq!(inconsistent_accounts(pool).await, 0);
}
