//! Credits and usage: the accounting service's `credit_allocations` and
//! `usage_records` into the ledger, so that every user's balance is what
//! remained on their unexpired allocations, and the ledger's entries add
//! up to it.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use shared::ledger::primitives::{begin, commit};
use shared::ledger::Durability;

use super::{derived_id, Keyed, Run};

/// A row of the platform's `credit_allocations`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PlatformAllocation {
    id: i32,
    user_id: String,
    total_credits: i32,
    remaining_credits: i32,
    allocated_by: String,
    allocated_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    notes: Option<String>,
}

impl Keyed for PlatformAllocation {
    fn key(&self) -> i32 {
        self.id
    }
}

impl Keyed for PlatformUsage {
    fn key(&self) -> i32 {
        self.id
    }
}

impl PlatformAllocation {
    fn source(&self) -> String {
        format!("credit_allocations/{}", self.id)
    }

    /// Why this row cannot become an allocation, if it cannot.
    fn refusal(&self) -> Option<String> {
        if self.total_credits <= 0 {
            return Some(format!("it grants {} credits", self.total_credits));
        }
        if !(0..=self.total_credits).contains(&self.remaining_credits) {
            return Some(format!(
                "{} of its {} credits remain, which cannot be",
                self.remaining_credits, self.total_credits
            ));
        }
        None
    }

    /// When it expires here: its expiry, or, for one that expired when it
    /// was made (`expiryDays` of 0 or less), a millisecond after it was
    /// made (the ledger keeps an expiry after the grant).
    fn expires_at(&self) -> DateTime<Utc> {
        self.expires_at
            .max(self.allocated_at + chrono::Duration::milliseconds(1))
    }
}

/// The entries an allocation brings to the ledger, in order: its total,
/// what was spent of it, and (once past its expiry) what expired.
fn entries(
    a: &PlatformAllocation,
    expired: bool,
) -> Vec<(&'static str, i64, DateTime<Utc>, &'static str)> {
    let total = i64::from(a.total_credits);
    let remaining = i64::from(a.remaining_credits);
    let mut out = vec![("import", total, a.allocated_at, "brought from the platform")];
    if total > remaining {
        out.push((
            "deduction",
            remaining - total,
            a.allocated_at,
            "spent on the platform",
        ));
    }
    if expired && remaining > 0 {
        out.push((
            "expiry",
            -remaining,
            a.expires_at(),
            "expired on the platform",
        ));
    }
    out
}

/// Columns of the allocations one batch inserts, in UNNEST order.
#[derive(Default)]
struct Columns {
    ids: Vec<Uuid>,
    users: Vec<String>,
    credits: Vec<i64>,
    remaining: Vec<i64>,
    expires_at: Vec<DateTime<Utc>>,
    expired_at: Vec<Option<DateTime<Utc>>>,
    allocated_by: Vec<String>,
    notes: Vec<Option<String>>,
    allocated_at: Vec<DateTime<Utc>>,
    entries: Entries,
}

/// Columns of the ledger entries one batch inserts.
#[derive(Default)]
pub(crate) struct Entries {
    ids: Vec<Uuid>,
    users: Vec<String>,
    types: Vec<&'static str>,
    amounts: Vec<i64>,
    after: Vec<i64>,
    actors: Vec<Option<String>>,
    descriptions: Vec<&'static str>,
    references: Vec<String>,
    allocations: Vec<Uuid>,
    at: Vec<DateTime<Utc>>,
}

/// One ledger entry of an imported allocation.
pub(crate) struct Entry<'a> {
    /// `credit_allocations/<id>#<part>`: the entry's id derives from it.
    pub(crate) key: String,
    pub(crate) user: &'a str,
    pub(crate) kind: &'static str,
    pub(crate) amount: i64,
    pub(crate) actor: Option<&'a str>,
    pub(crate) description: &'static str,
    pub(crate) source: String,
    pub(crate) allocation: Uuid,
    pub(crate) at: DateTime<Utc>,
}

impl Entries {
    /// Adds `entry`, moving `balance` (its user's cached total) on.
    pub(crate) fn push(&mut self, entry: Entry<'_>, balance: &mut i64) {
        *balance += entry.amount;
        self.ids.push(derived_id(&entry.key));
        self.users.push(entry.user.to_owned());
        self.types.push(entry.kind);
        self.amounts.push(entry.amount);
        self.after.push(*balance);
        self.actors.push(entry.actor.map(str::to_owned));
        self.descriptions.push(entry.description);
        self.references.push(format!("platform:{}", entry.source));
        self.allocations.push(entry.allocation);
        self.at.push(entry.at);
    }

    pub(crate) async fn insert(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO credit_transactions
                    (id, user_id, type, amount, balance_after, actor_id, description, reference,
                     allocation_id, created_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                                  $6::text[], $7::text[], $8::text[], $9::uuid[], $10::timestamptz[])",
        )
        .bind(&self.ids)
        .bind(&self.users)
        .bind(&self.types)
        .bind(&self.amounts)
        .bind(&self.after)
        .bind(&self.actors)
        .bind(&self.descriptions)
        .bind(&self.references)
        .bind(&self.allocations)
        .bind(&self.at)
        .execute(conn)
        .await?;
        Ok(())
    }
}

impl Columns {
    /// Adds `a` (id `id`) and its entries, moving `balance` (the user's
    /// cached total) on.
    fn push(&mut self, id: Uuid, a: &PlatformAllocation, expired: bool, balance: &mut i64) {
        self.ids.push(id);
        self.users.push(a.user_id.clone());
        self.credits.push(i64::from(a.total_credits));
        self.remaining.push(if expired {
            0
        } else {
            i64::from(a.remaining_credits)
        });
        self.expires_at.push(a.expires_at());
        self.expired_at.push(expired.then_some(a.expires_at()));
        self.allocated_by.push(a.allocated_by.clone());
        self.notes.push(a.notes.clone().filter(|n| !n.is_empty()));
        self.allocated_at.push(a.allocated_at);
        for (kind, amount, at, description) in entries(a, expired) {
            let entry = Entry {
                key: format!("{}#{kind}", a.source()),
                user: &a.user_id,
                kind,
                amount,
                // The grant is its giver's; what followed, nobody's here.
                actor: (kind == "import").then_some(a.allocated_by.as_str()),
                description,
                source: a.source(),
                allocation: id,
                at,
            };
            self.entries.push(entry, balance);
        }
    }

    async fn insert(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        sqlx::query(
            "INSERT INTO credit_allocations
                    (id, user_id, credits, remaining, expires_at, expired_at, allocated_by, notes, allocated_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::bigint[], $4::bigint[], $5::timestamptz[],
                                  $6::timestamptz[], $7::text[], $8::text[], $9::timestamptz[])",
        )
        .bind(&self.ids)
        .bind(&self.users)
        .bind(&self.credits)
        .bind(&self.remaining)
        .bind(&self.expires_at)
        .bind(&self.expired_at)
        .bind(&self.allocated_by)
        .bind(&self.notes)
        .bind(&self.allocated_at)
        .execute(&mut *conn)
        .await?;
        self.entries.insert(conn).await
    }
}

/// Locks the ledger accounts of `users` (sorted), in one order, as every
/// ledger change takes them; returns their cached totals, which the new
/// entries continue.
async fn lock_accounts(
    conn: &mut PgConnection,
    users: &[String],
) -> sqlx::Result<HashMap<String, i64>> {
    Ok(sqlx::query(
        "SELECT user_id, total_credits FROM user_accounts WHERE user_id = ANY($1)
          ORDER BY user_id FOR UPDATE",
    )
    .bind(users)
    .fetch_all(conn)
    .await?
    .into_iter()
    .map(|r| (r.get("user_id"), r.get("total_credits")))
    .collect())
}

/// The ids among `ids` the gateway already has in `table`.
async fn present(conn: &mut PgConnection, table: &str, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar(&format!("SELECT id FROM {table} WHERE id = ANY($1)"))
        .bind(ids)
        .fetch_all(conn)
        .await
}

impl Run<'_> {
    /// Every allocation, in the platform's id order, a batch per
    /// transaction.
    pub(crate) async fn allocations(&mut self) -> anyhow::Result<()> {
        let sql =
            "SELECT id, user_id, total_credits, remaining_credits, allocated_by, allocated_at,
                          LEAST(expires_at, '9999-12-31 00:00:00+00') AS expires_at, notes
                     FROM credit_allocations WHERE id > $1 ORDER BY id LIMIT $2";
        let mut pages = self.read_table("credit_allocations", sql).await?;
        while let Some(rows) = self.next_rows(&mut pages).await? {
            self.allocation_batch(rows).await?;
        }
        self.progress.finish();
        self.vanished().await
    }

    /// Allocations brought earlier that are gone from the platform since
    /// (setting a balance there replaces a user's rows by one, which this
    /// run brings): what they had left there is taken here, as if spent.
    async fn vanished(&mut self) -> anyhow::Result<()> {
        let mut after = String::new();
        loop {
            let rows: Vec<(String, i64)> = sqlx::query_as(
                "SELECT source, remaining FROM platform_imports
                  WHERE source LIKE 'credit_allocations/%' AND source > $1 AND remaining > 0
                  ORDER BY source LIMIT $2",
            )
            .bind(&after)
            .bind(super::BATCH as i64)
            .fetch_all(&self.target.pool)
            .await?;
            let Some((last, _)) = rows.last() else {
                return Ok(());
            };
            after.clone_from(last);
            let ids: Vec<i32> = rows
                .iter()
                .filter_map(|(k, _)| k.rsplit('/').next()?.parse().ok())
                .collect();
            let present: Vec<i32> =
                sqlx::query_scalar("SELECT id FROM credit_allocations WHERE id = ANY($1)")
                    .bind(&ids)
                    .fetch_all(&self.source.accounting)
                    .await?;
            let gone: Vec<(String, i64)> = rows
                .into_iter()
                .filter(|(k, _)| {
                    k.rsplit('/')
                        .next()
                        .and_then(|id| id.parse().ok())
                        .is_none_or(|id| !present.contains(&id))
                })
                .collect();
            if !gone.is_empty() {
                self.take_gone(gone).await?;
            }
        }
    }

    /// Takes what `gone` (keys and what the platform had left on them)
    /// still hold here, in one transaction under their accounts' locks.
    async fn take_gone(&mut self, gone: Vec<(String, i64)>) -> anyhow::Result<()> {
        let ids: Vec<Uuid> = gone.iter().map(|(k, _)| derived_id(k)).collect();
        let mut tx = quiet(&self.target.pool).await?;
        let mut users: Vec<String> = sqlx::query_scalar(
            "SELECT DISTINCT user_id FROM credit_allocations WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        users.sort();
        let mut totals = lock_accounts(&mut tx, &users).await?;
        let owners: HashMap<Uuid, (String, i64)> =
            sqlx::query("SELECT id, user_id, remaining FROM credit_allocations WHERE id = ANY($1)")
                .bind(&ids)
                .fetch_all(&mut *tx)
                .await?
                .into_iter()
                .map(|r| (r.get("id"), (r.get("user_id"), r.get("remaining"))))
                .collect();
        let (mut taken, mut entries) = (Taken::default(), Entries::default());
        for ((key, before), id) in gone.iter().zip(&ids) {
            let Some((user, left)) = owners.get(id) else {
                continue;
            };
            let balance = totals.entry(user.clone()).or_default();
            let change = Change {
                key: key.clone(),
                user,
                allocation: *id,
                left: *left,
                before: Some(*before),
                now: 0,
            };
            let _ = self.spent_since(
                change,
                "gone from the platform after the move",
                &mut taken,
                &mut entries,
                balance,
            );
        }
        if self.dry_run {
            return Ok(tx.rollback().await?);
        }
        entries.insert(&mut tx).await?;
        taken.apply(&mut tx).await?;
        let keys: Vec<String> = gone.into_iter().map(|(k, _)| k).collect();
        record_remaining(&mut tx, &keys, &vec![0; keys.len()]).await?;
        store_totals(&mut tx, totals).await?;
        commit(tx).await?;
        Ok(())
    }

    /// The rows of `rows` that can become allocations, with their ids;
    /// the others skipped with their reason.
    fn accepted(&mut self, rows: Vec<PlatformAllocation>) -> Vec<(Uuid, PlatformAllocation)> {
        let tally = &mut self.report.allocations;
        let mut accepted = Vec::new();
        for row in rows {
            if !self.users.contains(&row.user_id) {
                tally.skip(row.source(), super::not_here(&row.user_id));
            } else if let Some(reason) = row.refusal() {
                tally.skip(row.source(), reason);
            } else {
                accepted.push((derived_id(&row.source()), row));
            }
        }
        accepted
    }

    async fn allocation_batch(&mut self, rows: Vec<PlatformAllocation>) -> anyhow::Result<()> {
        let accepted = self.accepted(rows);
        if accepted.is_empty() {
            return Ok(());
        }
        let ids: Vec<Uuid> = accepted.iter().map(|(id, _)| *id).collect();
        let keys: Vec<String> = accepted.iter().map(|(_, a)| a.source()).collect();
        let mut tx = quiet(&self.target.pool).await?;
        let mut users: Vec<String> = accepted.iter().map(|(_, a)| a.user_id.clone()).collect();
        users.sort();
        users.dedup();
        let mut totals = lock_accounts(&mut tx, &users).await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        let here = remaining_here(&mut tx, &ids).await?;
        let journal = journal_remaining(&mut tx, &keys).await?;
        let mut columns = Columns::default();
        let mut taken = Taken::default();
        // What the journal keeps of each: what the platform has left on
        // it (0 for one that arrived expired: nothing is left to take).
        let mut recorded = Vec::new();
        for (id, a) in &accepted {
            let balance = totals.entry(a.user_id.clone()).or_default();
            let Some(&left) = here.get(id) else {
                self.report.allocations.imported += 1;
                let expired = a.expires_at() <= now;
                columns.push(*id, a, expired, balance);
                recorded.push(i64::from(a.remaining_credits));
                continue;
            };
            let before = journal.get(&a.source()).copied().flatten();
            let now_left = i64::from(a.remaining_credits);
            let change = Change {
                key: a.source(),
                user: &a.user_id,
                allocation: *id,
                left,
                before,
                now: now_left,
            };
            recorded.push(self.spent_since(
                change,
                "spent on the platform after the move",
                &mut taken,
                &mut columns.entries,
                balance,
            ));
        }
        if self.dry_run {
            return Ok(tx.rollback().await?);
        }
        columns.insert(&mut tx).await?;
        taken.apply(&mut tx).await?;
        record_remaining(&mut tx, &keys, &recorded).await?;
        store_totals(&mut tx, totals).await?;
        commit(tx).await?;
        Ok(())
    }

    /// An imported allocation read again: what the platform spent of it
    /// since (`change.before` → `change.now`) is taken here too, from what
    /// is left of it here; more than is left is reported.
    fn spent_since(
        &mut self,
        change: Change<'_>,
        description: &'static str,
        taken: &mut Taken,
        entries: &mut Entries,
        balance: &mut i64,
    ) -> i64 {
        let tally = &mut self.report.allocations;
        let Some(before) = change.before.filter(|b| *b != change.now) else {
            tally.unchanged += 1;
            return change.before.unwrap_or(change.now);
        };
        if change.left == 0 {
            // Nothing is left of it here (expired, or spent here): there
            // is nothing to take, and nothing to say.
            tally.unchanged += 1;
            return change.now;
        }
        if change.now > before {
            let reason = format!(
                "its remaining credits grew on the platform since it was brought ({before} → {}): not applied here",
                change.now
            );
            tally.skip(change.key, reason);
            // What was taken stays the mark: a later fall is measured from it.
            return before;
        }
        let spent = before - change.now;
        let take = spent.min(change.left);
        if take > 0 {
            taken.push(change.allocation, take);
            let entry = Entry {
                key: format!("{}#spent@{before}>{}", change.key, change.now),
                user: change.user,
                kind: "deduction",
                amount: -take,
                actor: None,
                description,
                source: change.key.clone(),
                allocation: change.allocation,
                at: Utc::now(),
            };
            entries.push(entry, balance);
        }
        if take < spent {
            let reason = format!(
                "{spent} of its credits were spent on the platform after the move; {take} were left here to take"
            );
            tally.skip(change.key, reason);
        } else {
            tally.imported += 1;
        }
        change.now
    }
}

/// An imported allocation, as the platform and the gateway have it now.
struct Change<'a> {
    key: String,
    user: &'a str,
    allocation: Uuid,
    /// What is left of it here.
    left: i64,
    /// What the platform had left of it when last read (`None`: never).
    before: Option<i64>,
    /// What the platform has left of it now.
    now: i64,
}

/// Credits taken from imported allocations: (allocation, amount).
#[derive(Default)]
struct Taken {
    allocations: Vec<Uuid>,
    amounts: Vec<i64>,
}

impl Taken {
    fn push(&mut self, allocation: Uuid, amount: i64) {
        self.allocations.push(allocation);
        self.amounts.push(amount);
    }

    async fn apply(&self, conn: &mut PgConnection) -> sqlx::Result<()> {
        if self.allocations.is_empty() {
            return Ok(());
        }
        sqlx::query(
            "UPDATE credit_allocations a SET remaining = a.remaining - t.amount
               FROM UNNEST($1::uuid[], $2::bigint[]) AS t(id, amount)
              WHERE a.id = t.id",
        )
        .bind(&self.allocations)
        .bind(&self.amounts)
        .execute(conn)
        .await?;
        Ok(())
    }
}

/// What is left here of the allocations among `ids` the gateway has.
async fn remaining_here(conn: &mut PgConnection, ids: &[Uuid]) -> sqlx::Result<HashMap<Uuid, i64>> {
    Ok(
        sqlx::query("SELECT id, remaining FROM credit_allocations WHERE id = ANY($1)")
            .bind(ids)
            .fetch_all(conn)
            .await?
            .into_iter()
            .map(|r| (r.get("id"), r.get("remaining")))
            .collect(),
    )
}

/// What the platform had left on each of `keys` when last read.
async fn journal_remaining(
    conn: &mut PgConnection,
    keys: &[String],
) -> sqlx::Result<HashMap<String, Option<i64>>> {
    Ok(
        sqlx::query("SELECT source, remaining FROM platform_imports WHERE source = ANY($1)")
            .bind(keys)
            .fetch_all(conn)
            .await?
            .into_iter()
            .map(|r| (r.get("source"), r.get("remaining")))
            .collect(),
    )
}

/// Records what the platform has left on each of `keys` now.
async fn record_remaining(
    conn: &mut PgConnection,
    keys: &[String],
    remaining: &[i64],
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO platform_imports (source, remaining)
         SELECT * FROM UNNEST($1::text[], $2::bigint[])
         ON CONFLICT (source) DO UPDATE SET remaining = EXCLUDED.remaining",
    )
    .bind(keys)
    .bind(remaining)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores the accounts' cached totals.
async fn store_totals(conn: &mut PgConnection, totals: HashMap<String, i64>) -> sqlx::Result<()> {
    let (users, totals): (Vec<String>, Vec<i64>) = totals.into_iter().unzip();
    sqlx::query(
        "UPDATE user_accounts a SET total_credits = t.total, updated_at = now()
           FROM UNNEST($1::text[], $2::bigint[]) AS t(user_id, total)
          WHERE a.user_id = t.user_id AND a.total_credits <> t.total",
    )
    .bind(&users)
    .bind(&totals)
    .execute(conn)
    .await?;
    Ok(())
}

/// A row of the platform's `usage_records`.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PlatformUsage {
    id: i32,
    user_id: String,
    timestamp: DateTime<Utc>,
    service: String,
    operation: String,
    credits: i32,
    metadata: Option<serde_json::Value>,
}

impl PlatformUsage {
    /// Why this row cannot become a usage record, if it cannot.
    fn refusal(&self) -> Option<String> {
        let length = |s: &str| s.chars().count();
        if !(1..=64).contains(&length(&self.service)) {
            return Some("its service is empty or longer than 64 characters".into());
        }
        if !(1..=128).contains(&length(&self.operation)) {
            return Some("its operation is empty or longer than 128 characters".into());
        }
        (self.credits < 0).then(|| format!("it counts {} credits", self.credits))
    }

    /// Its metadata as a usage record keeps it (an object; anything else
    /// under `value`).
    fn metadata(&self) -> String {
        match &self.metadata {
            None | Some(serde_json::Value::Null) => "{}".into(),
            Some(object @ serde_json::Value::Object(_)) => object.to_string(),
            Some(other) => serde_json::json!({ "value": other }).to_string(),
        }
    }
}

impl Run<'_> {
    /// Every usage record, and a note of each open streaming reservation
    /// (not carried over).
    pub(crate) async fn usage(&mut self) -> anyhow::Result<()> {
        let sql = "SELECT id, user_id, \"timestamp\", service, operation, credits, metadata
                     FROM usage_records WHERE id > $1 ORDER BY id LIMIT $2";
        let mut pages = self.read_table("usage_records", sql).await?;
        while let Some(rows) = self.next_rows(&mut pages).await? {
            self.usage_batch(rows).await?;
        }
        self.progress.finish();
        let source = &self.source.accounting;
        let open: Vec<(String, i32)> = sqlx::query_as(
            "SELECT session_id, allocated_credits FROM streaming_sessions
              WHERE status = 'active' ORDER BY id",
        )
        .fetch_all(source)
        .await?;
        for (session, held) in open {
            self.report.usage.skip(
                format!("streaming_sessions/{session}"),
                format!("an open streaming reservation ({held} credits held): not carried over"),
            );
        }
        Ok(())
    }

    async fn usage_batch(&mut self, rows: Vec<PlatformUsage>) -> anyhow::Result<()> {
        let tally = &mut self.report.usage;
        let mut accepted = Vec::new();
        for row in rows {
            let source = format!("usage_records/{}", row.id);
            if !self.users.contains(&row.user_id) {
                tally.skip(source, super::not_here(&row.user_id));
                continue;
            }
            match row.refusal() {
                Some(reason) => tally.skip(source, reason),
                None => accepted.push((derived_id(&source), row)),
            }
        }
        let ids: Vec<Uuid> = accepted.iter().map(|(id, _)| *id).collect();
        let mut conn = self.target.pool.acquire().await?;
        let here = present(&mut conn, "usage_logs", &ids).await?;
        accepted.retain(|(id, _)| !here.contains(id));
        tally.unchanged += here.len() as u64;
        tally.imported += accepted.len() as u64;
        if self.dry_run || accepted.is_empty() {
            return Ok(());
        }
        let column = |f: fn(&PlatformUsage) -> String| {
            accepted.iter().map(|(_, r)| f(r)).collect::<Vec<_>>()
        };
        sqlx::query(
            "INSERT INTO usage_logs (id, user_id, service, operation, credits, metadata, created_at)
             SELECT id, user_id, service, operation, credits, metadata::jsonb, created_at
               FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::text[],
                           $7::timestamptz[])
                    AS r(id, user_id, service, operation, credits, metadata, created_at)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(accepted.iter().map(|(id, _)| *id).collect::<Vec<_>>())
        .bind(column(|r| r.user_id.clone()))
        .bind(column(|r| r.service.clone()))
        .bind(column(|r| r.operation.clone()))
        .bind(accepted.iter().map(|(_, r)| i64::from(r.credits)).collect::<Vec<_>>())
        .bind(column(PlatformUsage::metadata))
        .bind(accepted.iter().map(|(_, r)| r.timestamp).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await?;
        Ok(())
    }
}

/// A ledger transaction that warns nobody: the platform's history is
/// replayed here, and a balance it crossed long ago is no news
/// (`fgw.quiet`, which the warning trigger reads; README "Allowances and
/// warnings").
async fn quiet(pool: &sqlx::PgPool) -> anyhow::Result<shared::ledger::Tx<'static>> {
    let mut tx = begin(pool, Durability::Flushed).await?;
    sqlx::query("SET LOCAL fgw.quiet = 'on'")
        .execute(&mut *tx)
        .await?;
    Ok(tx)
}
