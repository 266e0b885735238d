//! Allowances (README "Allowances and warnings"): credits that arrive by
//! themselves at the start of every period. A role's allowance makes new
//! credits (kind `allowance`); a team's gives each member a share of the
//! team's wallet (a [`super::transfers::transfer`], so never more than the
//! wallet holds). Either expires at the period's end, or rolls over, up
//! to its `rolloverCap`, into the next period.
//!
//! Each grant is made exactly once: a row of `allowance_grants`, keyed by
//! allowance, recipient and period, is claimed before anything is
//! granted, in the transaction that holds the recipient's account lock.
//! The job (at the period's start, every recipient in batches) and the
//! recipient's own first read or prediction of the period race for it;
//! the database lets one win. Time is a parameter (`at`): the job and the
//! requests pass the clock's reading, tests move it.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use super::primitives::{
    check_balance_limit, end_allocation, insert_entry, try_lock_account, Locked, Tx,
};
use super::transfers::{self, Wallet};
use super::types::{Credits, EntryKind, EntryMeta, LedgerError};
use crate::ids::UserId;

/// Who made a grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Granter {
    /// The scheduled job.
    Job,
    /// The recipient's own first request of the period.
    Request,
}

impl Granter {
    fn as_str(self) -> &'static str {
        match self {
            Granter::Job => "job",
            Granter::Request => "request",
        }
    }
}

/// A grant that is due: one allowance's period for one recipient.
#[derive(Debug, Clone)]
struct Due {
    allowance: String,
    team_id: Option<Uuid>,
    credits: i64,
    rollover_cap: Option<i64>,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
}

/// The grants due to `user` at `at`.
async fn due(
    conn: &mut PgConnection,
    user: &UserId,
    at: DateTime<Utc>,
) -> Result<Vec<Due>, LedgerError> {
    Ok(sqlx::query_as!(
        Due,
        r#"SELECT allowance AS "allowance!", team_id, credits AS "credits!", rollover_cap,
                  period_start AS "period_start!", period_end AS "period_end!"
             FROM allowances_of($1, $2) WHERE NOT granted
            ORDER BY allowance"#,
        user.as_str(),
        at
    )
    .fetch_all(conn)
    .await?)
}

/// Whether any grant is due to `user` at `at` (a read: no lock).
pub async fn any_due(
    conn: &mut PgConnection,
    user: &UserId,
    at: DateTime<Utc>,
) -> Result<bool, LedgerError> {
    Ok(!due(conn, user, at).await?.is_empty())
}

/// Makes every grant due to the locked `user` at `at`, each exactly once,
/// before anything else the transaction does with the account (so a
/// prediction can spend what arrived, and a rollover is made before the
/// old allowance expires). Returns the lock with the total after them.
pub async fn grant_due(
    tx: &mut Tx<'_>,
    user: &UserId,
    locked: Locked,
    at: DateTime<Utc>,
    by: Granter,
) -> Result<Locked, LedgerError> {
    let due = due(tx, user, at).await?;
    let mut total = locked.total();
    for grant in &due {
        total = make(tx, user, total, grant, by).await?;
    }
    Ok(Locked::new(total, locked.due()))
}

/// One grant: claims its row (nothing when another made it), rolls the
/// last period's allowance over, then mints or draws the credits.
async fn make(
    tx: &mut Tx<'_>,
    user: &UserId,
    total: i64,
    due: &Due,
    by: Granter,
) -> Result<i64, LedgerError> {
    let claimed = sqlx::query_scalar!(
        r#"INSERT INTO allowance_grants (allowance, user_id, period_start, period_end, credits, granted_by)
           VALUES ($1, $2, $3, $4, 0, $5)
           ON CONFLICT DO NOTHING RETURNING 1 AS "one!""#,
        due.allowance,
        user.as_str(),
        due.period_start,
        due.period_end,
        by.as_str()
    )
    .fetch_optional(&mut **tx)
    .await?;
    if claimed.is_none() {
        return Ok(total);
    }
    let meta = EntryMeta {
        actor_id: Some("system"),
        description: Some("allowance"),
        reference: Some(&due.allowance),
        ..EntryMeta::default()
    };
    // The grant first, then the rollover: the old credits end in a
    // balance that already holds the new ones.
    let (total, granted, allocation) = match due.team_id {
        None => mint(tx, user, total, due, None, &meta).await?,
        Some(team) => share(tx, user, total, due, team, &meta).await?,
    };
    let (total, carried) = roll_over(tx, user, total, due, &meta).await?;
    announce(tx, user, due, granted).await?;
    sqlx::query!(
        "UPDATE allowance_grants SET credits = $4, shortfall = $5, carried = $6, allocation_id = $7
          WHERE allowance = $1 AND user_id = $2 AND period_start = $3",
        due.allowance,
        user.as_str(),
        due.period_start,
        granted,
        due.credits - granted,
        carried,
        allocation
    )
    .execute(&mut **tx)
    .await?;
    Ok(total)
}

/// The grant's notices, in its transaction, once each (README
/// "Allowances and warnings"): `credits.granted` (mailed only to those who
/// asked), and `team.wallet_low` when a team's wallet could not cover the
/// member's share (mailed to its supervisors).
async fn announce(
    tx: &mut Tx<'_>,
    user: &UserId,
    due: &Due,
    granted: i64,
) -> Result<(), LedgerError> {
    if granted > 0 {
        sqlx::query_scalar!(
            r#"SELECT notify('credits.granted', $1::text,
                             'credits.granted:' || $2::text || ':' || $1::text || ':' || $3::timestamptz,
                             jsonb_build_object('account', $1::text, 'allowance', $2::text, 'credits', $4::bigint,
                                                'periodEnd', $5::timestamptz),
                             (SELECT allowance_mail FROM user_accounts WHERE user_id = $1::text)) AS "new""#,
            user.as_str(),
            due.allowance,
            due.period_start,
            granted,
            due.period_end
        )
        .fetch_one(&mut **tx)
        .await?;
    }
    if let (Some(team), true) = (due.team_id, granted < due.credits) {
        sqlx::query_scalar!(
            r#"SELECT notify('team.wallet_low', 'team:' || $1::uuid,
                             'team.wallet_short:' || $1::uuid || ':' || $2::timestamptz,
                             jsonb_build_object('account', 'team:' || $1::uuid, 'team', $1::uuid,
                                                'shortfall', $3::bigint, 'periodStart', $2::timestamptz),
                             true) AS "new""#,
            team,
            due.period_start,
            due.credits - granted
        )
        .fetch_one(&mut **tx)
        .await?;
    }
    Ok(())
}

/// Rollover: of what was left of the allowance's allocations that ended
/// when this period began (the last period's grant and what it carried),
/// up to `rolloverCap` credits carry into the new period as new
/// allocations that end with it (`allowance` entries, "rolled over");
/// all of it ends now (an `expiry` entry each, unless the expiry came
/// first, whose entry then says what was left). The old allocations keep
/// their expiry, so a prediction's hold on them that comes back later is
/// forfeited like any refund to an expired allocation: the carry is never
/// more than the cap.
///
/// A team's carry keeps its transfer (so a reclaim, or a deleted member's
/// return, sends it back to the wallet allocations it was drawn from), and
/// carries only what was drawn from wallet credits that last to the new
/// period's end: a transfer never outlives the credits it moved. Newest
/// transfers carry first. Without a cap nothing is done here. Returns the
/// total and what was carried.
async fn roll_over(
    tx: &mut Tx<'_>,
    user: &UserId,
    total: i64,
    due: &Due,
    meta: &EntryMeta<'_>,
) -> Result<(i64, i64), LedgerError> {
    let Some(cap) = due.rollover_cap else {
        return Ok((total, 0));
    };
    let (mut total, left) = end_last_period(tx, user, total, due, meta).await?;
    let meta = EntryMeta {
        description: Some("allowance rolled over"),
        ..*meta
    };
    let mut carried = 0;
    for Left {
        transfer,
        lost,
        lasts,
    } in left
    {
        let carry = lost.min(cap - carried);
        if carry <= 0 || !lasts {
            continue;
        }
        let part = Due {
            credits: carry,
            ..due.clone()
        };
        let from = match (due.team_id, transfer) {
            (Some(team), Some(transfer)) => Some((team, transfer)),
            (None, _) => None,
            (Some(_), None) => continue,
        };
        (total, _, _) = mint(tx, user, total, &part, from, &meta).await?;
        carried += carry;
    }
    Ok((total, carried))
}

/// What one source of the last period's allowance credits left: a team's
/// transfer (`None` for a role's), the credits, and whether the wallet
/// credits it was drawn from last to the new period's end.
struct Left {
    transfer: Option<Uuid>,
    lost: i64,
    lasts: bool,
}

/// Ends the allowance's allocations that ended when `due`'s period began
/// (an `expiry` entry each for what they still held); returns the total
/// and what each source left, newest first.
async fn end_last_period(
    tx: &mut Tx<'_>,
    user: &UserId,
    total: i64,
    due: &Due,
    meta: &EntryMeta<'_>,
) -> Result<(i64, Vec<Left>), LedgerError> {
    let ended = sqlx::query!(
        r#"SELECT c.id, c.remaining, c.expired_at IS NOT NULL AS "expired!", c.transfer_id,
                  COALESCE((SELECT -t.amount FROM credit_transactions t
                             WHERE t.allocation_id = c.id AND t.type = 'expiry'
                             ORDER BY t.seq DESC LIMIT 1), 0) AS "lost_at_expiry!",
                  NOT EXISTS (SELECT 1 FROM credit_transactions o
                                JOIN credit_draws d ON d.transaction_id = o.id
                                JOIN credit_allocations a ON a.id = d.allocation_id
                               WHERE o.transfer_id = c.transfer_id AND o.type = 'transfer'
                                 AND o.user_id <> c.user_id AND a.expires_at < $4) AS "lasts!"
             FROM credit_allocations c
            WHERE c.user_id = $1 AND c.allowance = $2 AND c.expires_at = $3
            ORDER BY c.transfer_id DESC NULLS LAST, c.allocated_at DESC, c.id DESC"#,
        user.as_str(),
        due.allowance,
        due.period_start,
        due.period_end
    )
    .fetch_all(&mut **tx)
    .await?;
    let expiry = EntryMeta {
        description: Some("allowance period ended"),
        ..*meta
    };
    let mut total = total;
    let mut left: Vec<Left> = Vec::new();
    for allocation in ended {
        let lost = if allocation.expired {
            allocation.lost_at_expiry
        } else {
            let (id, remaining) = (allocation.id, allocation.remaining);
            total = end_allocation(tx, user, id, remaining, total, &expiry).await?;
            remaining
        };
        let transfer = allocation.transfer_id;
        match left.iter_mut().find(|l| l.transfer == transfer) {
            Some(known) => known.lost += lost,
            None => left.push(Left {
                transfer,
                lost,
                lasts: allocation.lasts,
            }),
        }
    }
    Ok((total, left))
}

/// A role's allowance, or a carry: new credits, expiring at the period's
/// end, noted with `meta`'s description ("allowance rolled over" marks a
/// carry: it is not counted again as given). A team's carry names its
/// team and transfer (`from`).
async fn mint(
    tx: &mut Tx<'_>,
    user: &UserId,
    total: i64,
    due: &Due,
    from: Option<(Uuid, Uuid)>,
    meta: &EntryMeta<'_>,
) -> Result<(i64, i64, Option<Uuid>), LedgerError> {
    check_balance_limit(total, due.credits)?;
    let allocation = sqlx::query_scalar!(
        "INSERT INTO credit_allocations
             (id, user_id, credits, remaining, expires_at, allocated_by, notes, allowance,
              team_id, transfer_id)
         VALUES ($1, $2, $3, $3, $4, 'system', COALESCE($8, 'allowance'), $5, $6, $7)
         RETURNING id",
        Uuid::now_v7(),
        user.as_str(),
        due.credits,
        due.period_end,
        due.allowance,
        from.map(|f| f.0),
        from.map(|f| f.1),
        meta.description
    )
    .fetch_one(&mut **tx)
    .await?;
    let total = total + due.credits;
    let kind = EntryKind::Allowance;
    insert_entry(tx, user, kind, due.credits, total, Some(allocation), meta).await?;
    Ok((total, due.credits, Some(allocation)))
}

/// A team's allowance: the member's share of the wallet, as far as the
/// wallet's lasting credits cover it (what they lack is the shortfall),
/// expiring at the period's end. The member's lock is held; the wallet's
/// is taken now, after it (the ledger's order), before it is read.
async fn share(
    tx: &mut Tx<'_>,
    user: &UserId,
    total: i64,
    due: &Due,
    team: Uuid,
    meta: &EntryMeta<'_>,
) -> Result<(i64, i64, Option<Uuid>), LedgerError> {
    let wallet = Wallet::of(team);
    super::primitives::begin_change(tx, &wallet.account).await?;
    let available = transfers::transferable(tx, &wallet).await?;
    let give = due.credits.min(available);
    let Ok(credits) = Credits::try_from(give) else {
        return Ok((total, 0, None));
    };
    let expiry = transfers::Expiry {
        days: None,
        until: Some(due.period_end),
    };
    let done = transfers::transfer(tx, &wallet, user, credits, expiry, meta).await?;
    sqlx::query!(
        "UPDATE credit_allocations SET allowance = $2 WHERE id = $1",
        done.allocation.id,
        due.allowance
    )
    .execute(&mut **tx)
    .await?;
    Ok((done.member_balance, give, Some(done.allocation.id)))
}

/// What a run of the job granted.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantReport {
    /// Recipients whose due grants were made.
    pub recipients: u64,
    /// Recipients skipped because a request of theirs held the account
    /// (that request grants; else the next run).
    pub busy: u64,
    /// Recipients whose grant failed (logged; retried next run).
    pub failed: u64,
}

/// A clock: the job reads it for every batch and every recipient, so a
/// run that crosses a period's boundary grants the new period from then on.
pub type Clock<'a> = &'a (dyn Fn() -> DateTime<Utc> + Send + Sync);

/// [`grant_all_by`] with the clock stopped at `at` (tests).
pub async fn grant_all(
    pool: &sqlx::PgPool,
    at: DateTime<Utc>,
    batch: i64,
) -> Result<GrantReport, LedgerError> {
    grant_all_by(pool, &move || at, batch).await
}

/// The job's walk (README §9): every recipient with a grant due,
/// `batch` at a time by user id, one transaction each. Resumable: a
/// recipient granted is no longer due, so a run that stopped part way is
/// finished by the next.
pub async fn grant_all_by(
    pool: &sqlx::PgPool,
    clock: Clock<'_>,
    batch: i64,
) -> Result<GrantReport, LedgerError> {
    let mut report = GrantReport::default();
    let mut after = String::new();
    loop {
        let at = clock();
        let users = sqlx::query_scalar!(
            "SELECT a.user_id FROM user_accounts a
              WHERE a.owner_kind = 'user' AND a.user_id > $1
                AND EXISTS (SELECT 1 FROM allowances_of(a.user_id, $2) d WHERE NOT d.granted)
              ORDER BY a.user_id LIMIT $3",
            after,
            at,
            batch
        )
        .fetch_all(pool)
        .await?;
        let Some(last) = users.last() else {
            return Ok(report);
        };
        after = last.clone();
        for user in users {
            let user = UserId::stored(user);
            let mut tx = super::primitives::begin(pool, super::Durability::Flushed).await?;
            let at = clock();
            match try_lock_account(&mut tx, &user).await? {
                Some(locked) => match grant_due(&mut tx, &user, locked, at, Granter::Job).await {
                    // One recipient's failure is logged; the walk goes on
                    // (the next run, or their own request, retries it).
                    Err(err) => {
                        tracing::error!(error = %err, user_id = %user, "an allowance was not granted");
                        report.failed += 1;
                    }
                    Ok(_) => {
                        super::primitives::commit(tx).await?;
                        report.recipients += 1;
                    }
                },
                None => report.busy += 1,
            }
        }
    }
}

/// The next allowance credits `user` will receive after `at`: when, and
/// how many (the versions in force then; a team's share as set, whether
/// or not its wallet will cover it). `None` when no allowance applies.
pub async fn next_credits(
    conn: &mut PgConnection,
    user: &UserId,
    at: DateTime<Utc>,
) -> Result<Option<(DateTime<Utc>, i64)>, LedgerError> {
    let row = sqlx::query!(
        r#"WITH now_in_force AS (SELECT period_end FROM allowances_of($1, $2)),
                next AS (
                    SELECT n.credits FROM (SELECT MIN(period_end) AS at FROM now_in_force) m,
                           allowances_of($1, m.at) n
                     WHERE n.period_start = m.at)
           SELECT (SELECT MIN(period_end) FROM now_in_force) AS at,
                  (SELECT SUM(credits)::bigint FROM next) AS credits"#,
        user.as_str(),
        at
    )
    .fetch_one(conn)
    .await?;
    Ok(match (row.at, row.credits) {
        (Some(at), Some(credits)) => Some((at, credits)),
        _ => None,
    })
}

/// An allowance's settings, as set and as shown.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowanceSetting {
    /// Credits each recipient gets every period.
    pub credits: i64,
    /// `day`, `week` (from Monday) or `month`.
    pub period: String,
    /// What may roll over into the next period (`null`: nothing, the
    /// period's credits expire at its end; a team's carries only what its
    /// wallet credits outlast).
    pub rollover_cap: Option<i64>,
    /// The calendar the periods follow (an IANA name; `UTC` by default).
    pub time_zone: String,
}

/// An allowance as it stands: the setting in force and a change waiting
/// for the next period.
#[derive(Debug, Clone, Default, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AllowanceStanding {
    /// In force now (`null`: none).
    pub current: Option<AllowanceSetting>,
    /// Since when the current setting holds.
    pub since: Option<DateTime<Utc>>,
    /// What applies from `changesAt` (`null` there: the allowance ends).
    pub next: Option<AllowanceSetting>,
    /// When the waiting change applies (the next period's start).
    pub changes_at: Option<DateTime<Utc>>,
}

/// The allowance `key` (`role:<role>` or `team:<id>`) at `at`.
pub async fn standing(
    conn: &mut PgConnection,
    key: &str,
    at: DateTime<Utc>,
) -> Result<AllowanceStanding, LedgerError> {
    let rows = sqlx::query!(
        r#"SELECT effective_from, active, credits, period, rollover_cap, time_zone,
                  effective_from > $2 AS "pending!"
             FROM allowance_versions
            WHERE allowance = $1
              AND effective_from >= COALESCE((SELECT MAX(effective_from) FROM allowance_versions
                                               WHERE allowance = $1 AND effective_from <= $2),
                                              '-infinity')
            ORDER BY effective_from LIMIT 2"#,
        key,
        at
    )
    .fetch_all(conn)
    .await?;
    let mut out = AllowanceStanding::default();
    for row in rows {
        let setting = match (row.active, row.credits, row.period) {
            (true, Some(credits), Some(period)) => Some(AllowanceSetting {
                credits,
                period,
                rollover_cap: row.rollover_cap,
                time_zone: row.time_zone,
            }),
            _ => None,
        };
        if row.pending {
            (out.next, out.changes_at) = (setting, Some(row.effective_from));
        } else if setting.is_some() {
            (out.current, out.since) = (setting, Some(row.effective_from));
        }
    }
    Ok(out)
}

/// Sets the allowance `key` to `setting` (`None`: ends it): at once when
/// none is in force, else from the next period of the one in force (a
/// second change before then replaces the first). Returns whether
/// anything was in force or waiting (ending nothing changes nothing).
pub async fn set(
    tx: &mut Tx<'_>,
    key: &str,
    setting: Option<&AllowanceSetting>,
    at: DateTime<Utc>,
    actor: &str,
) -> Result<bool, LedgerError> {
    let row = sqlx::query!(
        r#"SELECT (SELECT p.period_end FROM allowance_versions v,
                          allowance_period(v.period, v.time_zone, $2) p
                    WHERE v.allowance = $1 AND v.effective_from <= $2 AND v.active
                      AND v.effective_from = (SELECT MAX(effective_from) FROM allowance_versions
                                               WHERE allowance = $1 AND effective_from <= $2))
                    AS next_period,
                  EXISTS (SELECT 1 FROM allowance_versions WHERE allowance = $1 AND effective_from > $2)
                    AS "waiting!""#,
        key,
        at
    )
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query!(
        "DELETE FROM allowance_versions WHERE allowance = $1 AND effective_from > $2",
        key,
        at
    )
    .execute(&mut **tx)
    .await?;
    let from = match (row.next_period, setting) {
        (Some(next), _) => next,
        (None, Some(_)) => at,
        (None, None) => return Ok(row.waiting),
    };
    sqlx::query!(
        "INSERT INTO allowance_versions
             (allowance, effective_from, active, credits, period, rollover_cap, time_zone, set_by)
         VALUES ($1, $2, $3, $4, $5, $6, COALESCE($7, 'UTC'), $8)
         ON CONFLICT (allowance, effective_from) DO UPDATE
            SET active = EXCLUDED.active, credits = EXCLUDED.credits, period = EXCLUDED.period,
                rollover_cap = EXCLUDED.rollover_cap, time_zone = EXCLUDED.time_zone,
                set_by = EXCLUDED.set_by, set_at = now()",
        key,
        from,
        setting.is_some(),
        setting.map(|s| s.credits),
        setting.map(|s| s.period.as_str()),
        setting.and_then(|s| s.rollover_cap),
        setting.map(|s| s.time_zone.as_str()),
        actor
    )
    .execute(&mut **tx)
    .await?;
    Ok(true)
}

/// Whether PostgreSQL knows the time zone `name`.
pub async fn known_time_zone(conn: &mut PgConnection, name: &str) -> Result<bool, LedgerError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM pg_timezone_names WHERE name = $1) AS "known!""#,
        name
    )
    .fetch_one(conn)
    .await?)
}
