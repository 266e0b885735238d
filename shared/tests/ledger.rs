//! The ledger against real PostgreSQL: money is never lost, duplicated or
//! overdrawn, under concurrency, retries and the expiry job.
#![allow(clippy::too_many_lines)] // Tests read top to bottom.

use std::time::Duration;

use axum::http::StatusCode;
use serde_json::json;
use shared::error::ApiError;
use shared::ids::{ChatflowId, ReservationId, UserId};
use shared::ledger::accounts::ensure_account;
use shared::ledger::idempotency::{self, Begun, RequestKey};
use shared::ledger::queries;
use shared::ledger::reservations::{self, Settlement};
use shared::ledger::sweep::run_expiry;
use shared::ledger::{changes, Adjustment, Charge, Credits, EntryMeta};
use shared::testing::TestPostgres;
use shared::token::{AuthUser, Role};
use sqlx::PgPool;

fn credits(n: i64) -> Credits {
    Credits::parse("credits", n).unwrap()
}

fn uid(user: &str) -> UserId {
    UserId::parse("userId", user).unwrap()
}

fn meta() -> EntryMeta<'static> {
    EntryMeta {
        actor_id: Some("admin"),
        ..EntryMeta::default()
    }
}

async fn allocate(pool: &PgPool, user: &str, amount: i64, days: Option<i32>) -> uuid::Uuid {
    let mut tx = pool.begin().await.unwrap();
    let done = changes::allocate(&mut tx, &uid(user), credits(amount), days, None, &meta())
        .await
        .unwrap();
    tx.commit().await.unwrap();
    done.allocation.id
}

async fn deduct(pool: &PgPool, user: &str, amount: i64) -> Result<i64, ApiError> {
    let mut tx = pool.begin().await?;
    let (_, balance) = changes::deduct(&mut tx, &uid(user), credits(amount), &meta()).await?;
    tx.commit().await?;
    Ok(balance)
}

async fn reserve(pool: &PgPool, user: &str, session: &str, amount: i64) -> Result<(), ApiError> {
    let mut tx = pool.begin().await?;
    let id = ReservationId::parse("sessionId", session)?;
    let flow = ChatflowId::parse("chatflowId", "flow")?;
    reservations::reserve(&mut tx, &uid(user), &id, &flow, credits(amount), &meta()).await?;
    tx.commit().await?;
    Ok(())
}

async fn settle(
    pool: &PgPool,
    user: &str,
    session: &str,
    how: Settlement,
    charge: i64,
) -> Result<reservations::SessionOutcome, ApiError> {
    let mut tx = pool.begin().await?;
    let id = ReservationId::parse("sessionId", session)?;
    let charge = Charge::try_from(charge).map_err(|e| ApiError::invalid_field("charge", e))?;
    let outcome = reservations::settle(&mut tx, &id, &uid(user), how, charge).await?;
    tx.commit().await?;
    Ok(outcome)
}

async fn balance(pool: &PgPool, user: &str) -> i64 {
    shared::testing::balance(pool, user).await
}

async fn adjust(
    tx: &mut shared::ledger::Tx<'_>,
    user: &str,
    amount: i64,
    notes: &str,
) -> Result<i64, ApiError> {
    let amount = Adjustment::try_from(amount).map_err(|e| ApiError::invalid_field("amount", e))?;
    Ok(changes::adjust(tx, &uid(user), amount, notes, &meta()).await?)
}

/// One idempotent deduction of `amount` with `key` and `body`, the way a
/// route runs it: the stored answer, or a fresh transaction and the save.
async fn deduct_once(
    pool: &PgPool,
    key: &str,
    body: &serde_json::Value,
    amount: i64,
) -> Result<(StatusCode, serde_json::Value), ApiError> {
    let user = uid("u");
    let key = RequestKey::new(key.to_owned(), "POST /deduct", body);
    let mut tx = match idempotency::begin(pool, &user, Some(&key), "POST /deduct").await? {
        Begun::Replay(answer) => return Ok(answer),
        Begun::Fresh(tx) => tx,
    };
    let (id, balance) = changes::deduct(&mut tx, &user, credits(amount), &meta()).await?;
    let answer = (
        StatusCode::OK,
        json!({"transactionId": id, "newBalance": balance}),
    );
    idempotency::save(&mut tx, &user, Some(&key), &answer).await?;
    tx.commit().await?;
    Ok(answer)
}

/// Makes an allocation already past its expiry (as if granted long ago).
async fn backdate(pool: &PgPool, allocation: uuid::Uuid) {
    sqlx::query(
        "UPDATE credit_allocations SET allocated_at = now() - interval '10 days',
                expires_at = now() - interval '1 second' WHERE id = $1",
    )
    .bind(allocation)
    .execute(pool)
    .await
    .unwrap();
}

/// The ledger's invariants for one user, checked in the database.
async fn assert_consistent(pool: &PgPool, user: &str) {
    let (cached, unexpired, history, negative): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT total_credits FROM user_accounts WHERE user_id = $1),
                (SELECT COALESCE(SUM(remaining), 0)::bigint FROM credit_allocations
                  WHERE user_id = $1 AND expired_at IS NULL),
                (SELECT COALESCE(SUM(amount), 0)::bigint FROM credit_transactions WHERE user_id = $1),
                (SELECT COUNT(*) FROM credit_allocations WHERE user_id = $1 AND remaining < 0)",
    )
    .bind(user)
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(
        cached, unexpired,
        "total_credits differs from the allocations"
    );
    assert_eq!(
        cached, history,
        "total_credits differs from the transaction history"
    );
    assert_eq!(negative, 0);
    let last_balance: Option<i64> = sqlx::query_scalar(
        "SELECT balance_after FROM credit_transactions WHERE user_id = $1
          ORDER BY seq DESC LIMIT 1",
    )
    .bind(user)
    .fetch_optional(pool)
    .await
    .unwrap();
    if let Some(last) = last_balance {
        assert_eq!(
            last, cached,
            "the last transaction's balance_after is not the balance"
        );
    }
}

async fn transaction_count(pool: &PgPool, user: &str) -> i64 {
    sqlx::query_scalar("SELECT COUNT(*) FROM credit_transactions WHERE user_id = $1")
        .bind(user)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deduct_never_overdraws_under_concurrency() {
    let db = TestPostgres::new().await;
    for round in 0..5 {
        let user = format!("racer-{round}");
        allocate(&db.pool, &user, 50, Some(30)).await;
        let tasks: Vec<_> = (0..200)
            .map(|_| {
                let pool = db.pool.clone();
                let user = user.clone();
                tokio::spawn(async move { deduct(&pool, &user, 1).await })
            })
            .collect();
        let mut ok = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(_) => ok += 1,
                Err(ApiError::PaymentRequired {
                    code: "insufficient_credits",
                    ..
                }) => {}
                Err(other) => panic!("unexpected error: {other:?}"),
            }
        }
        assert_eq!(ok, 50, "round {round}");
        assert_eq!(balance(&db.pool, &user).await, 0);
        let deductions: i64 = sqlx::query_scalar(
            "SELECT COALESCE(SUM(-amount), 0)::bigint FROM credit_transactions
              WHERE user_id = $1 AND type = 'deduction'",
        )
        .bind(&user)
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(deductions, 50);
        assert_consistent(&db.pool, &user).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interleaved_changes_and_expiry_keep_every_total_equal() {
    let db = TestPostgres::new().await;
    let user = "busy";
    allocate(&db.pool, user, 1_000, Some(30)).await;
    let doomed = allocate(&db.pool, user, 300, Some(1)).await;
    backdate(&db.pool, doomed).await;
    let mut tasks = Vec::new();
    for i in 0..120 {
        let pool = db.pool.clone();
        tasks.push(tokio::spawn(async move {
            let session = format!("s{i}");
            match i % 6 {
                0 => {
                    allocate(&pool, user, 5, if i % 4 == 0 { None } else { Some(10) }).await;
                }
                1 => {
                    let _ = deduct(&pool, user, 7).await;
                }
                2 => {
                    if reserve(&pool, user, &session, 9).await.is_ok() {
                        settle(&pool, user, &session, Settlement::Finalize, 4)
                            .await
                            .unwrap();
                    }
                }
                3 => {
                    if reserve(&pool, user, &session, 6).await.is_ok() {
                        settle(&pool, user, &session, Settlement::Abort, 2)
                            .await
                            .unwrap();
                    }
                }
                4 => {
                    if reserve(&pool, user, &session, 3).await.is_ok() {
                        // Costs more than reserved: the excess is charged.
                        settle(&pool, user, &session, Settlement::Finalize, 8)
                            .await
                            .unwrap();
                    }
                }
                _ => {
                    run_expiry(&pool, Duration::from_secs(900), 10)
                        .await
                        .unwrap();
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_consistent(&db.pool, user).await;
    let expired: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM credit_transactions WHERE user_id = $1 AND type = 'expiry'",
    )
    .bind(user)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(expired, 1, "the due allocation is expired exactly once");
    let live = balance(&db.pool, user).await;
    let cached: i64 =
        sqlx::query_scalar("SELECT total_credits FROM user_accounts WHERE user_id = $1")
            .bind(user)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(live, cached);
}

#[tokio::test]
async fn deductions_draw_the_soonest_expiring_allocation_first() {
    let db = TestPostgres::new().await;
    let never = allocate(&db.pool, "u", 10, None).await;
    let late = allocate(&db.pool, "u", 10, Some(60)).await;
    let soon = allocate(&db.pool, "u", 10, Some(2)).await;
    deduct(&db.pool, "u", 15).await.unwrap();
    let mut conn = db.pool.acquire().await.unwrap();
    let b = queries::balance(&mut conn, &uid("u")).await.unwrap();
    let remaining = |id| {
        b.allocations
            .iter()
            .find(|a| a.id == id)
            .map(|a| a.remaining)
    };
    assert_eq!(remaining(soon), None, "spent first and fully");
    assert_eq!(remaining(late), Some(5));
    assert_eq!(
        remaining(never),
        Some(10),
        "never-expiring credits are spent last"
    );
    assert_eq!(b.total_credits, 15);
    assert_consistent(&db.pool, "u").await;
}

#[tokio::test]
async fn an_insufficient_balance_changes_nothing() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "u", 10, Some(30)).await;
    let before = transaction_count(&db.pool, "u").await;
    let err = deduct(&db.pool, "u", 11).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYMENT_REQUIRED);
    let err = reserve(&db.pool, "u", "s1", 11).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::PAYMENT_REQUIRED);
    assert_eq!(balance(&db.pool, "u").await, 10);
    assert_eq!(transaction_count(&db.pool, "u").await, before);
    // A user the ledger has never seen has nothing.
    let mut tx = db.pool.begin().await.unwrap();
    ensure_account(
        &mut tx,
        &AuthUser {
            id: "nobody".into(),
            username: "nobody".into(),
            email: "n@x.io".into(),
            role: Role::Enduser,
            key: None,
            session_version: 0,
        },
    )
    .await
    .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        deduct(&db.pool, "nobody", 1).await.unwrap_err().status(),
        402
    );
}

#[tokio::test]
async fn a_refund_goes_back_to_its_allocations_and_never_extends_an_expiry() {
    let db = TestPostgres::new().await;
    let soon = allocate(&db.pool, "u", 6, Some(1)).await;
    let later = allocate(&db.pool, "u", 10, Some(90)).await;
    reserve(&db.pool, "u", "s1", 10).await.unwrap(); // 6 from soon, 4 from later
    let outcome = settle(&db.pool, "u", "s1", Settlement::Finalize, 7)
        .await
        .unwrap();
    assert_eq!((outcome.charged_credits, outcome.refunded_credits), (7, 3));
    let mut conn = db.pool.acquire().await.unwrap();
    let b = queries::balance(&mut conn, &uid("u")).await.unwrap();
    // Charged as if 7 had been drawn soonest-first: all 6 of `soon`, 1 of `later`.
    assert!(b.allocations.iter().all(|a| a.id != soon));
    assert_eq!(
        b.allocations
            .iter()
            .find(|a| a.id == later)
            .unwrap()
            .remaining,
        9
    );
    let expiries: Vec<Option<chrono::DateTime<chrono::Utc>>> = sqlx::query_scalar(
        "SELECT expires_at FROM credit_allocations WHERE user_id = 'u' ORDER BY expires_at",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(expiries.len(), 2, "no allocation was created by the refund");
    assert_consistent(&db.pool, "u").await;
}

#[tokio::test]
async fn credits_of_an_expired_allocation_are_not_revived_by_a_refund() {
    let db = TestPostgres::new().await;
    let soon = allocate(&db.pool, "u", 5, Some(1)).await;
    allocate(&db.pool, "u", 5, Some(90)).await;
    reserve(&db.pool, "u", "s1", 8).await.unwrap(); // 5 from soon, 3 from later
    backdate(&db.pool, soon).await;
    let outcome = settle(&db.pool, "u", "s1", Settlement::Abort, 0)
        .await
        .unwrap();
    // Only the 3 from the live allocation come back.
    assert_eq!(outcome.refunded_credits, 3);
    assert_eq!(balance(&db.pool, "u").await, 5);
    assert_consistent(&db.pool, "u").await;
}

#[tokio::test]
async fn finalize_and_abort_are_idempotent() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "u", 100, Some(30)).await;
    reserve(&db.pool, "u", "s1", 20).await.unwrap();
    let first = settle(&db.pool, "u", "s1", Settlement::Finalize, 12)
        .await
        .unwrap();
    let again = settle(&db.pool, "u", "s1", Settlement::Finalize, 12)
        .await
        .unwrap();
    let other = settle(&db.pool, "u", "s1", Settlement::Abort, 0)
        .await
        .unwrap();
    assert_eq!((first.charged_credits, first.refunded_credits), (12, 8));
    for later in [&again, &other] {
        assert_eq!(
            (
                later.charged_credits,
                later.refunded_credits,
                later.status.as_str()
            ),
            (12, 8, "completed")
        );
        assert!(!later.settled_now);
    }
    assert_eq!(balance(&db.pool, "u").await, 88);
    // Concurrent aborts of one session settle it once.
    reserve(&db.pool, "u", "s2", 10).await.unwrap();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                settle(&pool, "u", "s2", Settlement::Abort, 1)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut settled_now = 0;
    for t in tasks {
        if t.await.unwrap().settled_now {
            settled_now += 1;
        }
    }
    assert_eq!(settled_now, 1);
    assert_eq!(balance(&db.pool, "u").await, 87);
    assert_consistent(&db.pool, "u").await;
}

#[tokio::test]
async fn excess_over_a_reservation_is_charged_as_far_as_the_balance_goes() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "u", 15, Some(30)).await;
    reserve(&db.pool, "u", "s1", 10).await.unwrap();
    let outcome = settle(&db.pool, "u", "s1", Settlement::Finalize, 25)
        .await
        .unwrap();
    // 10 reserved + the 5 left; 10 could not be charged.
    assert_eq!(outcome.charged_credits, 15);
    assert_eq!(outcome.shortfall_credits, 10);
    assert_eq!(balance(&db.pool, "u").await, 0);
    let shortfall: i64 = sqlx::query_scalar(
        "SELECT shortfall_credits FROM streaming_sessions WHERE session_id = 's1'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(shortfall, 10);
    assert_consistent(&db.pool, "u").await;
}

#[tokio::test]
async fn only_the_owner_settles_a_session_and_ids_are_not_shared() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "a", 10, Some(30)).await;
    allocate(&db.pool, "b", 10, Some(30)).await;
    reserve(&db.pool, "a", "s1", 5).await.unwrap();
    let err = settle(&db.pool, "b", "s1", Settlement::Abort, 0)
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::FORBIDDEN);
    let err = reserve(&db.pool, "b", "s1", 5).await.unwrap_err();
    assert_eq!(err.status(), StatusCode::CONFLICT);
    // The same call again is the same reservation, not a second hold.
    reserve(&db.pool, "a", "s1", 5).await.unwrap();
    assert_eq!(balance(&db.pool, "a").await, 5);
    let err = settle(&db.pool, "a", "nope", Settlement::Abort, 0)
        .await
        .unwrap_err();
    assert_eq!(err.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn a_negative_adjustment_below_zero_is_422_and_changes_nothing() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "u", 10, Some(30)).await;
    let mut tx = db.pool.begin().await.unwrap();
    let err = adjust(&mut tx, "u", -11, "oops").await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (StatusCode::UNPROCESSABLE_ENTITY, "would_go_negative")
    );
    drop(tx);
    let mut tx = db.pool.begin().await.unwrap();
    assert_eq!(adjust(&mut tx, "u", -4, "fix").await.unwrap(), 6);
    assert_eq!(adjust(&mut tx, "u", 7, "bonus").await.unwrap(), 13);
    tx.commit().await.unwrap();
    assert_consistent(&db.pool, "u").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_idempotency_key_has_one_effect() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "u", 100, Some(30)).await;
    let body = json!({"credits": 3});
    let run = |pool: PgPool, body: serde_json::Value| async move {
        deduct_once(&pool, "key-1", &body, 3).await
    };
    let tasks: Vec<_> = (0..20)
        .map(|_| tokio::spawn(run(db.pool.clone(), body.clone())))
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap().unwrap());
    }
    assert!(
        answers.windows(2).all(|w| w[0] == w[1]),
        "every retry returns the first result"
    );
    assert_eq!(balance(&db.pool, "u").await, 97);
    // The same key with another body is a conflict, and changes nothing.
    let other = json!({"credits": 4});
    let err = run(db.pool.clone(), other).await.unwrap_err();
    assert_eq!(
        (err.status(), err.code()),
        (StatusCode::CONFLICT, "idempotency_key_reused")
    );
    assert_eq!(balance(&db.pool, "u").await, 97);
    assert_consistent(&db.pool, "u").await;
}

#[tokio::test]
async fn a_failed_request_does_not_burn_its_idempotency_key() {
    let db = TestPostgres::new().await;
    let body = json!({"credits": 5});
    let attempt = || deduct_once(&db.pool, "k", &body, 5);
    let mut tx = db.pool.begin().await.unwrap();
    shared::ledger::accounts::ensure_account_id(&mut tx, &uid("u"))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(attempt().await.unwrap_err().status(), 402);
    allocate(&db.pool, "u", 10, Some(30)).await;
    let (status, body) = attempt().await.unwrap();
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["newBalance"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_expiry_runs_at_once_expire_each_allocation_once() {
    let db = TestPostgres::new().await;
    let mut doomed = Vec::new();
    for u in 0..30 {
        let user = format!("u{u}");
        allocate(&db.pool, &user, 10, Some(30)).await;
        for _ in 0..2 {
            doomed.push(allocate(&db.pool, &user, 7, Some(1)).await);
        }
    }
    // A stale reservation, older than the TTL.
    reserve(&db.pool, "u0", "stale", 4).await.unwrap();
    sqlx::query("UPDATE streaming_sessions SET created_at = now() - interval '1 hour'")
        .execute(&db.pool)
        .await
        .unwrap();
    // Backdated only now: a change to the user would expire them itself.
    for id in &doomed {
        backdate(&db.pool, *id).await;
    }
    let due = doomed.len() as u64;
    let (a, b) = tokio::join!(
        run_expiry(&db.pool, Duration::from_secs(900), 7),
        run_expiry(&db.pool, Duration::from_secs(900), 7)
    );
    let (a, b) = (a.unwrap(), b.unwrap());
    // Whatever one run skipped (locked by the other), a third run picks up.
    let c = run_expiry(&db.pool, Duration::from_secs(900), 7)
        .await
        .unwrap();
    assert_eq!(
        a.expired_allocations + b.expired_allocations + c.expired_allocations,
        due
    );
    // The stale reservation holds 4 credits drawn from one of u0's doomed
    // allocations: they are not in `remaining` when it expires, and its
    // settlement cannot revive them.
    assert_eq!(
        a.expired_credits + b.expired_credits + c.expired_credits,
        due as i64 * 7 - 4
    );
    assert_eq!(
        a.settled_reservations + b.settled_reservations + c.settled_reservations,
        1
    );
    let expiry_rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM credit_transactions WHERE type = 'expiry'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        expiry_rows, due as i64,
        "one expiry transaction per allocation"
    );
    for u in 0..30 {
        let user = format!("u{u}");
        assert_consistent(&db.pool, &user).await;
        assert_eq!(balance(&db.pool, &user).await, 10);
    }
    let status: String =
        sqlx::query_scalar("SELECT status FROM streaming_sessions WHERE session_id = 'stale'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(status, "aborted");
    // Nothing is left to do.
    let d = run_expiry(&db.pool, Duration::from_secs(900), 7)
        .await
        .unwrap();
    assert_eq!((d.expired_allocations, d.settled_reservations), (0, 0));
}

#[tokio::test]
async fn reads_exclude_an_allocation_the_moment_it_expires() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "u", 10, Some(30)).await;
    let gone = allocate(&db.pool, "u", 5, Some(1)).await;
    assert_eq!(balance(&db.pool, "u").await, 15);
    backdate(&db.pool, gone).await;
    // No job has run yet.
    assert_eq!(balance(&db.pool, "u").await, 10);
    // And it cannot be spent.
    assert_eq!(deduct(&db.pool, "u", 11).await.unwrap_err().status(), 402);
    assert_eq!(deduct(&db.pool, "u", 10).await.unwrap(), 0);
    assert_consistent(&db.pool, "u").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_account_is_created_once_under_concurrent_first_requests() {
    let db = TestPostgres::new().await;
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let pool = db.pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                let user = AuthUser {
                    id: "new-user".into(),
                    username: format!("name{}", i % 2),
                    email: "new@example.com".into(),
                    role: Role::Enduser,
                    key: None,
                    session_version: 0,
                };
                ensure_account(&mut conn, &user).await
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let rows: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM user_accounts WHERE user_id = 'new-user'")
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(rows, 1);
}

/// A prediction's reservation for `user` of `(minimum, wanted)` credits,
/// committed or (`lost`) rolled back, as a database crash undoes a commit
/// that never reached the disk. Returns its id.
async fn reserve_for(
    pool: &PgPool,
    user: &str,
    (minimum, wanted): (i64, i64),
    lost: bool,
) -> ReservationId {
    let (user, id) = (uid(user), ReservationId::random());
    let flow = ChatflowId::parse("chatflowId", "flow").unwrap();
    let mut tx = pool.begin().await.unwrap();
    let locked = shared::ledger::primitives::lock_account(&mut tx, &user)
        .await
        .unwrap();
    let amounts = (credits(minimum), credits(wanted));
    let account = (&user, locked, None);
    reservations::reserve_prediction(&mut tx, account, &id, &flow, amounts, &meta())
        .await
        .unwrap();
    if lost {
        tx.rollback().await.unwrap();
    } else {
        tx.commit().await.unwrap();
    }
    id
}

/// A prediction's reservation of `held` credits for `user` whose commit
/// was lost. Returns its id.
async fn lose_a_reservation(pool: &PgPool, user: &str, held: i64) -> ReservationId {
    reserve_for(pool, user, (held, held), true).await
}

/// The settlement of `user`'s prediction `id`, charging `charge`.
async fn settle_prediction(
    pool: &PgPool,
    user: &str,
    id: &ReservationId,
    how: Settlement,
    charge: i64,
) -> reservations::SessionOutcome {
    let (user, flow) = (uid(user), ChatflowId::parse("chatflowId", "flow").unwrap());
    let hold = reservations::PredictionHold {
        id,
        user: &user,
        chatflow: &flow,
        api_key_id: None,
    };
    let mut tx = pool.begin().await.unwrap();
    let charge = Charge::try_from(charge).unwrap();
    let outcome = reservations::settle_prediction(&mut tx, &hold, how, charge)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    outcome
}

/// [`lose_a_reservation`], then its settlement.
async fn settle_lost_prediction(
    pool: &PgPool,
    user: &str,
    held: i64,
    how: Settlement,
    charge: i64,
) -> reservations::SessionOutcome {
    let id = lose_a_reservation(pool, user, held).await;
    settle_prediction(pool, user, &id, how, charge).await
}

#[tokio::test]
async fn a_prediction_whose_reservation_was_lost_is_still_charged_from_the_balance() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "paid", 10, Some(30)).await;
    let paid = settle_lost_prediction(&db.pool, "paid", 6, Settlement::Finalize, 4).await;
    assert_eq!(
        (
            paid.charged_credits,
            paid.shortfall_credits,
            paid.balance_after
        ),
        (4, 0, Some(6))
    );
    assert_eq!(paid.status, "completed");
    assert_eq!(balance(&db.pool, "paid").await, 6);
    let (reserved, charged): (i64, Option<i64>) = sqlx::query_as(
        "SELECT reserved_credits, charged_credits FROM streaming_sessions WHERE session_id = $1",
    )
    .bind(paid.session_id.as_str())
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        (reserved, charged),
        (0, Some(4)),
        "recreated holding nothing, then charged"
    );
    assert_consistent(&db.pool, "paid").await;

    // As far as the balance goes; the rest is not owed (a prediction never
    // records a shortfall), only reported as uncovered.
    allocate(&db.pool, "short", 3, Some(30)).await;
    let short = settle_lost_prediction(&db.pool, "short", 3, Settlement::Finalize, 5).await;
    assert_eq!(
        (
            short.charged_credits,
            short.shortfall_credits,
            short.uncovered_credits
        ),
        (3, 0, 2)
    );
    assert_eq!(balance(&db.pool, "short").await, 0);
    assert_consistent(&db.pool, "short").await;

    // A free failure writes no entry.
    allocate(&db.pool, "free", 5, Some(30)).await;
    let free = settle_lost_prediction(&db.pool, "free", 2, Settlement::Abort, 0).await;
    assert_eq!((free.charged_credits, free.status.as_str()), (0, "aborted"));
    assert_eq!(balance(&db.pool, "free").await, 5);
    assert_eq!(
        transaction_count(&db.pool, "free").await,
        1,
        "only the allocation"
    );
    assert_consistent(&db.pool, "free").await;
}

#[tokio::test]
async fn a_relaxed_commit_does_not_wait_for_the_disk_and_only_its_transaction_is_relaxed() {
    use shared::ledger::primitives::begin;
    use shared::ledger::Durability;
    let db = TestPostgres::new().await;
    // One connection, so the check after the commit reads the same one.
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&db.url)
        .await
        .unwrap();
    let setting = "SELECT current_setting('synchronous_commit')";
    for (durability, inside) in [(Durability::Relaxed, "off"), (Durability::Flushed, "on")] {
        let mut tx = begin(&pool, durability).await.unwrap();
        let during: String = sqlx::query_scalar(setting)
            .fetch_one(&mut *tx)
            .await
            .unwrap();
        assert_eq!(during, inside, "{durability:?}");
        tx.commit().await.unwrap();
        let after: String = sqlx::query_scalar(setting).fetch_one(&pool).await.unwrap();
        assert_eq!(
            after, "on",
            "the pooled connection is back to the server's setting"
        );
    }
}

#[tokio::test]
async fn a_lost_reservations_id_reserved_by_a_client_is_left_alone_and_the_answer_charged() {
    let db = TestPostgres::new().await;
    // The id reserved meanwhile by another user, then by the user herself.
    for (user, client) in [("a", "b"), ("c", "c")] {
        allocate(&db.pool, user, 10, Some(30)).await;
        if client != user {
            allocate(&db.pool, client, 10, Some(30)).await;
        }
        let id = lose_a_reservation(&db.pool, user, 6).await;
        reserve(&db.pool, client, id.as_str(), 3).await.unwrap();
        let outcome = settle_prediction(&db.pool, user, &id, Settlement::Finalize, 4).await;
        assert_eq!(
            (outcome.charged_credits, outcome.balance_after),
            (4, Some(10 - 4 - if client == user { 3 } else { 0 })),
            "{user}: charged by deduction"
        );
        let (owner, status, reserved): (String, String, i64) = sqlx::query_as(
            "SELECT user_id, status, reserved_credits FROM streaming_sessions WHERE session_id = $1",
        )
        .bind(id.as_str())
        .fetch_one(&db.pool)
        .await
        .unwrap();
        assert_eq!(
            (owner.as_str(), status.as_str(), reserved),
            (client, "active", 3)
        );
        let client_balance = if client == user { 3 } else { 7 };
        assert_eq!(balance(&db.pool, client).await, client_balance);
        assert_consistent(&db.pool, user).await;
        assert_consistent(&db.pool, client).await;
    }
}

/// A prediction's reservation of up to `held` credits for `user`, committed.
async fn hold_a_prediction(pool: &PgPool, user: &str, held: i64) -> ReservationId {
    reserve_for(pool, user, (1, held), false).await
}

/// What the reservation `id` was charged once settled.
async fn charged(pool: &PgPool, id: &ReservationId) -> (String, Option<i64>) {
    sqlx::query_as("SELECT status, charged_credits FROM streaming_sessions WHERE session_id = $1")
        .bind(id.as_str())
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_sweep_charges_what_a_dead_relay_recorded_or_the_hold_and_a_client_nothing() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "u", 100, Some(30)).await;
    // Progress recorded: 4 credits' worth delivered (the highest record
    // counts; records arrive in any order).
    let recorded = hold_a_prediction(&db.pool, "u", 10).await;
    for delivered in [4, 2] {
        reservations::record_progress(&db.pool, &recorded, delivered)
            .await
            .unwrap();
    }
    // Nothing recorded: Flowise was called, an answer may have gone out.
    let silent = hold_a_prediction(&db.pool, "u", 10).await;
    // A client's own reservation: its client never said what it used.
    reserve(&db.pool, "u", "client-1", 10).await.unwrap();
    assert_eq!(balance(&db.pool, "u").await, 70);
    let report = run_expiry(&db.pool, Duration::ZERO, 10).await.unwrap();
    assert_eq!(report.settled_reservations, 3);
    assert_eq!(
        charged(&db.pool, &recorded).await,
        ("aborted".into(), Some(4))
    );
    assert_eq!(
        charged(&db.pool, &silent).await,
        ("aborted".into(), Some(10))
    );
    let client = ReservationId::parse("sessionId", "client-1").unwrap();
    assert_eq!(
        charged(&db.pool, &client).await,
        ("aborted".into(), Some(0))
    );
    assert_eq!(balance(&db.pool, "u").await, 100 - 4 - 10);
    assert_consistent(&db.pool, "u").await;
    // Progress recorded after the settlement changes nothing.
    reservations::record_progress(&db.pool, &recorded, 9)
        .await
        .unwrap();
    assert_eq!(
        charged(&db.pool, &recorded).await,
        ("aborted".into(), Some(4))
    );
}

#[tokio::test]
async fn top_ups_take_what_the_balance_holds_and_the_settlement_refunds_from_all_of_them() {
    let db = TestPostgres::new().await;
    // Two allocations: the soonest-expiring is spent first, and refunds go
    // back latest-expiring first.
    allocate(&db.pool, "u", 10, Some(5)).await;
    allocate(&db.pool, "u", 20, Some(50)).await;
    let id = hold_a_prediction(&db.pool, "u", 6).await;
    let (user, flow) = (uid("u"), ChatflowId::parse("chatflowId", "flow").unwrap());
    let hold = reservations::PredictionHold {
        id: &id,
        user: &user,
        chatflow: &flow,
        api_key_id: None,
    };
    assert_eq!(reservations::top_up(&db.pool, &hold, 8).await.unwrap(), 14);
    // Asked for more than is left: takes the rest of the balance, no more.
    assert_eq!(reservations::top_up(&db.pool, &hold, 50).await.unwrap(), 30);
    assert_eq!(reservations::top_up(&db.pool, &hold, 5).await.unwrap(), 30);
    assert_eq!(balance(&db.pool, "u").await, 0);
    assert_consistent(&db.pool, "u").await;
    // Fifty top-ups at once never take more than the balance.
    allocate(&db.pool, "u", 7, Some(50)).await;
    let tops =
        futures_util::future::join_all((0..50).map(|_| reservations::top_up(&db.pool, &hold, 1)))
            .await;
    assert!(tops.iter().all(Result::is_ok));
    assert_eq!(balance(&db.pool, "u").await, 0);
    // Settled at 12: 25 go back, first to the allocation that lasts longest.
    let outcome = settle_prediction(&db.pool, "u", &id, Settlement::Abort, 12).await;
    assert_eq!(
        (outcome.charged_credits, outcome.refunded_credits),
        (12, 25)
    );
    assert_eq!(balance(&db.pool, "u").await, 25);
    let soonest: i64 = sqlx::query_scalar(
        "SELECT remaining FROM credit_allocations WHERE user_id = 'u' ORDER BY expires_at LIMIT 1",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        soonest, 0,
        "the soonest-expiring allocation was spent, not refunded"
    );
    assert_consistent(&db.pool, "u").await;
    // A settled reservation takes no more top-ups.
    assert_eq!(reservations::top_up(&db.pool, &hold, 5).await.unwrap(), 37);
    assert_eq!(balance(&db.pool, "u").await, 25);
}

#[tokio::test]
async fn a_summary_counts_this_months_spending_and_nothing_else() {
    let db = TestPostgres::new().await;
    allocate(&db.pool, "ann", 100, Some(30)).await;
    let old = allocate(&db.pool, "ann", 40, Some(30)).await;
    backdate(&db.pool, old).await; // Expired by time: not spendable.
    deduct(&db.pool, "ann", 7).await.unwrap();
    // An answer held 20 and cost 12; one still running holds 5; one that
    // went past its hold paid 10 + 3.
    reserve(&db.pool, "ann", "s1", 20).await.unwrap();
    settle(&db.pool, "ann", "s1", Settlement::Finalize, 12)
        .await
        .unwrap();
    reserve(&db.pool, "ann", "s2", 5).await.unwrap();
    reserve(&db.pool, "ann", "s3", 10).await.unwrap();
    settle(&db.pool, "ann", "s3", Settlement::Abort, 13)
        .await
        .unwrap();
    // An admin's corrections and grants are not spending.
    let mut tx = db.pool.begin().await.unwrap();
    adjust(&mut tx, "ann", -4, "typo").await.unwrap();
    adjust(&mut tx, "ann", 2, "sorry").await.unwrap();
    tx.commit().await.unwrap();
    allocate(&db.pool, "bob", 9, None).await;

    let mut conn = db.pool.acquire().await.unwrap();
    let users = ["ann", "bob", "nobody"].map(str::to_owned);
    let got = queries::summaries(&mut conn, &users).await.unwrap();
    let ann = got["ann"];
    assert_eq!(ann.spent_this_month, 7 + 12 + 5 + 13);
    assert_eq!(ann.balance, 100 - 7 - 12 - 5 - 13 - 4 + 2);
    assert_eq!(ann.balance, balance(&db.pool, "ann").await);
    assert_eq!((got["bob"].balance, got["bob"].spent_this_month), (9, 0));
    assert_eq!(got["nobody"], queries::CreditSummary::default());
    // Last month's spending is not this month's.
    sqlx::query(
        "UPDATE credit_transactions
            SET created_at = (date_trunc('month', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')
                             - interval '1 hour'
          WHERE user_id = 'ann' AND type = 'deduction' AND streaming_session_id IS NULL",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let got = queries::summaries(&mut conn, &users[..1]).await.unwrap();
    assert_eq!(got["ann"].spent_this_month, 12 + 5 + 13);
}
