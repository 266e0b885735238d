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
        if self.expires_at <= self.allocated_at {
            return Some("it expired when it was made: it never held credits".into());
        }
        None
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
            a.expires_at,
            "expired on the platform",
        ));
    }
    out
}

/// Columns of the rows one batch inserts, in UNNEST order.
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
    e_ids: Vec<Uuid>,
    e_users: Vec<String>,
    e_types: Vec<&'static str>,
    e_amounts: Vec<i64>,
    e_after: Vec<i64>,
    e_actors: Vec<String>,
    e_descriptions: Vec<&'static str>,
    e_references: Vec<String>,
    e_allocations: Vec<Uuid>,
    e_at: Vec<DateTime<Utc>>,
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
        self.expires_at.push(a.expires_at);
        self.expired_at.push(expired.then_some(a.expires_at));
        self.allocated_by.push(a.allocated_by.clone());
        self.notes.push(a.notes.clone().filter(|n| !n.is_empty()));
        self.allocated_at.push(a.allocated_at);
        for (kind, amount, at, description) in entries(a, expired) {
            *balance += amount;
            self.e_ids
                .push(derived_id(&format!("{}#{kind}", a.source())));
            self.e_users.push(a.user_id.clone());
            self.e_types.push(kind);
            self.e_amounts.push(amount);
            self.e_after.push(*balance);
            self.e_actors.push(a.allocated_by.clone());
            self.e_descriptions.push(description);
            self.e_references.push(format!("platform:{}", a.source()));
            self.e_allocations.push(id);
            self.e_at.push(at);
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
        sqlx::query(
            "INSERT INTO credit_transactions
                    (id, user_id, type, amount, balance_after, actor_id, description, reference,
                     allocation_id, created_at)
             SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::bigint[], $5::bigint[],
                                  $6::text[], $7::text[], $8::text[], $9::uuid[], $10::timestamptz[])",
        )
        .bind(&self.e_ids)
        .bind(&self.e_users)
        .bind(&self.e_types)
        .bind(&self.e_amounts)
        .bind(&self.e_after)
        .bind(&self.e_actors)
        .bind(&self.e_descriptions)
        .bind(&self.e_references)
        .bind(&self.e_allocations)
        .bind(&self.e_at)
        .execute(&mut *conn)
        .await?;
        Ok(())
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
                          expires_at, notes
                     FROM credit_allocations WHERE id > $1 ORDER BY id LIMIT $2";
        let mut pages = self.read_table("credit_allocations", sql).await?;
        while let Some(rows) = self.next_rows(&mut pages).await? {
            self.allocation_batch(rows).await?;
        }
        self.progress.finish();
        Ok(())
    }

    /// The rows of `rows` that can become allocations, with their ids;
    /// the others skipped with their reason.
    fn accepted(&mut self, rows: Vec<PlatformAllocation>) -> Vec<(Uuid, PlatformAllocation)> {
        let tally = &mut self.report.allocations;
        let mut accepted = Vec::new();
        for row in rows {
            if !self.users.contains(&row.user_id) {
                let reason = format!("its user {} was not brought (see users)", row.user_id);
                tally.skip(row.source(), reason);
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
        let mut tx = begin(&self.target.pool, Durability::Flushed).await?;
        let mut users: Vec<String> = accepted.iter().map(|(_, a)| a.user_id.clone()).collect();
        users.sort();
        users.dedup();
        let mut totals = lock_accounts(&mut tx, &users).await?;
        let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()")
            .fetch_one(&mut *tx)
            .await?;
        let here = present(&mut tx, "credit_allocations", &ids).await?;
        let tally = &mut self.report.allocations;
        let mut columns = Columns::default();
        for (id, a) in &accepted {
            if here.contains(id) {
                tally.unchanged += 1;
                continue;
            }
            tally.imported += 1;
            let balance = totals.entry(a.user_id.clone()).or_default();
            columns.push(*id, a, a.expires_at <= now, balance);
        }
        if self.dry_run || columns.ids.is_empty() {
            return Ok(tx.rollback().await?);
        }
        columns.insert(&mut tx).await?;
        let (users, totals): (Vec<String>, Vec<i64>) = totals.into_iter().unzip();
        sqlx::query(
            "UPDATE user_accounts a SET total_credits = t.total, updated_at = now()
               FROM UNNEST($1::text[], $2::bigint[]) AS t(user_id, total)
              WHERE a.user_id = t.user_id AND a.total_credits <> t.total",
        )
        .bind(&users)
        .bind(&totals)
        .execute(&mut *tx)
        .await?;
        commit(tx).await?;
        Ok(())
    }
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
