//! Teams (README "Teams"): who leads and who belongs to each, and who
//! may do what with it. The wallet's credits move in
//! [`crate::ledger::transfers`]; this module keeps the people.
//!
//! Who may: an admin (by the token's role) may do anything to any team.
//! A supervisor may act on a team only while they are named its
//! supervisor *and* the ledger's record of them (kept by the auth
//! function) still holds the supervisor or admin role, so a demotion
//! takes their teams away at once, whatever their token still says. A
//! member sees the team's name and supervisors, and what it gave them.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;
use crate::identity::Email;
use crate::ids::UserId;
use crate::ledger::primitives::{begin_change, Tx};
use crate::ledger::transfers::Wallet;
use crate::token::{AuthUser, Role};

/// The most members (ids and addresses together) one request may add.
pub const MAX_ADD: usize = 500;

/// What the caller is to a team.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Standing {
    /// An admin: every team.
    Admin,
    /// One of its supervisors.
    Supervisor,
    /// One of its members.
    Member,
}

impl Standing {
    /// Whether the caller may manage the team (members, credits, reports).
    pub fn leads(self) -> bool {
        matches!(self, Standing::Admin | Standing::Supervisor)
    }
}

/// A person named by a team.
#[derive(Debug, Clone, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Person {
    /// Their id.
    pub user_id: String,
    /// Their username, when the ledger knows it.
    pub username: Option<String>,
}

/// A team as a list shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    /// Id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Its supervisors.
    pub supervisors: Vec<Person>,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// What the caller is to it.
    pub standing: Standing,
    /// Current members (to those who lead it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub member_count: Option<i64>,
    /// The wallet's spendable credits (to those who lead it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wallet_credits: Option<i64>,
    /// Credits the team gave the caller, in all (to its members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub given_to_you: Option<i64>,
    /// What of that is still unspent and unexpired (to its members).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unspent_of_given: Option<i64>,
}

/// A member as the team's page shows it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Member {
    /// Their id.
    pub user_id: String,
    /// Username.
    pub username: Option<String>,
    /// Email.
    pub email: Option<String>,
    /// When this stay began.
    pub joined_at: DateTime<Utc>,
    /// Credits the team gave them, in all.
    pub given: i64,
    /// What of that is still unspent and unexpired (what a reclaim could
    /// take back).
    pub unspent: i64,
}

/// An address waiting for its owner to prove it.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Pending {
    /// The address (lower case).
    pub email: String,
    /// When it was added.
    pub added_at: DateTime<Utc>,
}

/// Finds a live team and what `caller` is to it: 404 when there is no
/// such team (or it was deleted), 403 `not_your_team` when the caller is
/// neither an admin nor its supervisor nor a member.
pub async fn standing(
    conn: &mut PgConnection,
    caller: &AuthUser,
    team: Uuid,
) -> Result<Standing, ApiError> {
    let row = sqlx::query!(
        r#"SELECT EXISTS (SELECT 1 FROM team_supervisors s
                            JOIN user_accounts a ON a.user_id = s.user_id
                           WHERE s.team_id = t.id AND s.user_id = $2
                             AND a.role IN ('supervisor', 'admin') AND a.deleted_at IS NULL
                             AND NOT a.disabled) AS "supervises!",
                  EXISTS (SELECT 1 FROM team_members m
                           WHERE m.team_id = t.id AND m.user_id = $2 AND m.left_at IS NULL)
                    AS "member!"
             FROM teams t WHERE t.id = $1 AND t.deleted_at IS NULL"#,
        team,
        caller.id
    )
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("no such team"))?;
    let token_leads = matches!(caller.role, Role::Supervisor | Role::Admin);
    match caller.role {
        Role::Admin => Ok(Standing::Admin),
        _ if token_leads && row.supervises => Ok(Standing::Supervisor),
        _ if row.member => Ok(Standing::Member),
        _ => Err(not_your_team()),
    }
}

/// [`standing`], 403 `not_your_team` unless the caller leads the team.
pub async fn lead(
    conn: &mut PgConnection,
    caller: &AuthUser,
    team: Uuid,
) -> Result<Standing, ApiError> {
    let standing = standing(conn, caller, team).await?;
    if !standing.leads() {
        return Err(not_your_team());
    }
    Ok(standing)
}

fn not_your_team() -> ApiError {
    ApiError::Forbidden {
        code: "not_your_team",
        message: "only an admin or one of this team's supervisors may do this".into(),
    }
}

/// 403 `not_team_member` unless `user` belongs to the team now.
pub async fn require_member(
    conn: &mut PgConnection,
    team: Uuid,
    user: &UserId,
) -> Result<(), ApiError> {
    let member = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM team_members
                           WHERE team_id = $1 AND user_id = $2 AND left_at IS NULL) AS "m!""#,
        team,
        user.as_str()
    )
    .fetch_one(conn)
    .await?;
    if !member {
        return Err(ApiError::Forbidden {
            code: "not_team_member",
            message: format!("{user} is not a member of this team"),
        });
    }
    Ok(())
}

/// A team's name: 1 to 100 characters once trimmed, no control characters.
pub fn check_name(raw: &str) -> Result<String, ApiError> {
    let name = raw.trim();
    if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid_field(
            "name",
            "must be 1 to 100 characters without control characters",
        ));
    }
    Ok(name.to_owned())
}

fn name_taken(err: sqlx::Error) -> ApiError {
    match &err {
        sqlx::Error::Database(db) if db.constraint() == Some("teams_live_name") => {
            ApiError::Conflict {
                code: "team_name_taken",
                message: "another team already has this name".into(),
            }
        }
        _ => err.into(),
    }
}

/// Makes a team, its wallet (an empty account) and its supervisors.
pub async fn create(
    tx: &mut Tx<'_>,
    name: &str,
    supervisors: &[UserId],
    actor: &str,
) -> Result<Uuid, ApiError> {
    let id = Uuid::now_v7();
    let wallet = Wallet::of(id);
    sqlx::query!(
        "INSERT INTO user_accounts (user_id, owner_kind) VALUES ($1, 'team')",
        wallet.account.as_str()
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "INSERT INTO teams (id, name, account_id, created_by) VALUES ($1, $2, $3, $4)",
        id,
        name,
        wallet.account.as_str(),
        actor
    )
    .execute(&mut **tx)
    .await
    .map_err(name_taken)?;
    set_supervisors(tx, id, supervisors).await?;
    Ok(id)
}

/// Renames a live team (404 when there is none; 409 `team_name_taken`).
pub async fn rename(tx: &mut Tx<'_>, team: Uuid, name: &str) -> Result<(), ApiError> {
    let done = sqlx::query!(
        "UPDATE teams SET name = $2 WHERE id = $1 AND deleted_at IS NULL",
        team,
        name
    )
    .execute(&mut **tx)
    .await
    .map_err(name_taken)?
    .rows_affected();
    if done == 0 {
        return Err(ApiError::not_found("no such team"));
    }
    Ok(())
}

/// Names exactly `supervisors` as the team's: each must be a live user
/// whose role is supervisor or admin (422 `not_a_supervisor` naming the
/// others, nothing changed).
pub async fn set_supervisors(
    tx: &mut Tx<'_>,
    team: Uuid,
    supervisors: &[UserId],
) -> Result<(), ApiError> {
    let ids: Vec<String> = supervisors.iter().map(|u| u.as_str().to_owned()).collect();
    let fit: Vec<String> = sqlx::query_scalar!(
        "SELECT user_id FROM user_accounts
          WHERE user_id = ANY($1) AND owner_kind = 'user' AND role IN ('supervisor', 'admin')
            AND deleted_at IS NULL",
        &ids
    )
    .fetch_all(&mut **tx)
    .await?;
    let unfit: Vec<&str> = ids
        .iter()
        .filter(|id| !fit.contains(id))
        .map(String::as_str)
        .collect();
    if !unfit.is_empty() {
        return Err(ApiError::Unprocessable {
            code: "not_a_supervisor",
            message: format!(
                "supervisorIds: {} must be users with the supervisor or admin role",
                unfit.join(", ")
            ),
        });
    }
    sqlx::query!(
        "DELETE FROM team_supervisors WHERE team_id = $1 AND NOT (user_id = ANY($2))",
        team,
        &ids
    )
    .execute(&mut **tx)
    .await?;
    sqlx::query!(
        "INSERT INTO team_supervisors (team_id, user_id) SELECT $1, unnest($2::text[])
         ON CONFLICT DO NOTHING",
        team,
        &ids
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Deletes a live team whose wallet is empty (409 `team_has_credits`
/// otherwise; its due allocations expired first). Under the wallet's
/// lock, so no grant or reclaim lands in a wallet being deleted. The
/// team's rows stay for its history and reports; its members' stays end
/// now and its pending addresses go.
pub async fn delete(tx: &mut Tx<'_>, team: Uuid) -> Result<(), ApiError> {
    let wallet = Wallet::of(team);
    let total = begin_change(tx, &wallet.account)
        .await
        .map_err(|e| match e {
            crate::ledger::LedgerError::NoAccount(_) => ApiError::not_found("no such team"),
            other => other.into(),
        })?;
    require_live(tx, team).await?;
    if total > 0 {
        return Err(ApiError::Conflict {
            code: "team_has_credits",
            message: format!(
                "the team's wallet holds {total} credits; reclaim or expire them before deleting the team"
            ),
        });
    }
    sqlx::query!(
        "WITH gone AS (
             UPDATE teams SET deleted_at = now() WHERE id = $1 RETURNING id
         ), ended AS (
             UPDATE team_members SET left_at = clock_timestamp()
              WHERE team_id IN (SELECT id FROM gone) AND left_at IS NULL
         )
         DELETE FROM team_pending WHERE team_id IN (SELECT id FROM gone)",
        team
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// 404 unless the team is live: for a change made under its wallet's
/// lock (a grant), which [`delete`] also takes.
pub async fn require_live(tx: &mut Tx<'_>, team: Uuid) -> Result<(), ApiError> {
    let live = sqlx::query_scalar!(
        r#"SELECT EXISTS (SELECT 1 FROM teams WHERE id = $1 AND deleted_at IS NULL) AS "live!""#,
        team
    )
    .fetch_one(&mut **tx)
    .await?;
    if !live {
        return Err(ApiError::not_found("no such team"));
    }
    Ok(())
}

/// The teams `caller` may see, by name: an admin's every live team, a
/// supervisor's own and a member's own; with the total.
pub async fn list(
    conn: &mut PgConnection,
    caller: &AuthUser,
    page: i64,
    limit: i64,
) -> Result<(Vec<Team>, i64), ApiError> {
    query(conn, caller, None, page, limit).await
}

/// [`list`], or only `team` when given.
async fn query(
    conn: &mut PgConnection,
    caller: &AuthUser,
    team: Option<Uuid>,
    page: i64,
    limit: i64,
) -> Result<(Vec<Team>, i64), ApiError> {
    let admin = caller.role == Role::Admin;
    let leads = matches!(caller.role, Role::Supervisor | Role::Admin);
    let rows = sqlx::query_as!(
        TeamRow,
        r#"WITH visible AS (
               SELECT t.id, t.name, t.created_at, t.account_id,
                      ($3 OR ($4 AND EXISTS (
                          SELECT 1 FROM team_supervisors s JOIN user_accounts a ON a.user_id = s.user_id
                           WHERE s.team_id = t.id AND s.user_id = $1
                             AND a.role IN ('supervisor', 'admin') AND a.deleted_at IS NULL
                             AND NOT a.disabled))) AS leads,
                      EXISTS (SELECT 1 FROM team_members m
                               WHERE m.team_id = t.id AND m.user_id = $1 AND m.left_at IS NULL) AS member
                 FROM teams t WHERE t.deleted_at IS NULL AND ($6::uuid IS NULL OR t.id = $6)
           )
           SELECT v.id, v.name, v.created_at, v.leads AS "leads!",
                  COUNT(*) OVER () AS "total!",
                  COALESCE((SELECT json_agg(json_build_object('userId', s.user_id, 'username', a.username)
                                            ORDER BY a.username, s.user_id)
                              FROM team_supervisors s JOIN user_accounts a ON a.user_id = s.user_id
                             WHERE s.team_id = v.id AND a.deleted_at IS NULL), '[]'::json)
                    AS "supervisors!: sqlx::types::Json<Vec<Person>>",
                  CASE WHEN v.leads THEN (SELECT COUNT(*) FROM team_members m
                                           WHERE m.team_id = v.id AND m.left_at IS NULL) END
                    AS member_count,
                  CASE WHEN v.leads THEN (SELECT total_credits FROM user_accounts w
                                           WHERE w.user_id = v.account_id) END AS wallet_credits,
                  CASE WHEN NOT v.leads THEN
                      (SELECT COALESCE(SUM(c.credits), 0)::bigint FROM credit_allocations c
                        WHERE c.user_id = $1 AND c.team_id = v.id
                          AND c.notes IS DISTINCT FROM 'allowance rolled over') END AS given,
                  CASE WHEN NOT v.leads THEN
                      (SELECT COALESCE(SUM(c.remaining), 0)::bigint FROM credit_allocations c
                        WHERE c.user_id = $1 AND c.team_id = v.id AND c.expired_at IS NULL
                          AND (c.expires_at IS NULL OR c.expires_at > now())) END AS unspent
             FROM visible v WHERE v.leads OR v.member
            ORDER BY lower(v.name), v.id
            LIMIT $5 OFFSET $2"#,
        caller.id,
        (page - 1) * limit,
        admin,
        leads,
        limit,
        team
    )
    .fetch_all(conn)
    .await?;
    let total = rows.first().map_or(0, |r| r.total);
    Ok((rows.into_iter().map(|r| r.team(admin)).collect(), total))
}

/// A row of [`query`].
struct TeamRow {
    id: Uuid,
    name: String,
    created_at: DateTime<Utc>,
    leads: bool,
    total: i64,
    supervisors: sqlx::types::Json<Vec<Person>>,
    member_count: Option<i64>,
    wallet_credits: Option<i64>,
    given: Option<i64>,
    unspent: Option<i64>,
}

impl TeamRow {
    fn team(self, admin: bool) -> Team {
        let standing = match (admin, self.leads) {
            (true, _) => Standing::Admin,
            (false, true) => Standing::Supervisor,
            (false, false) => Standing::Member,
        };
        Team {
            id: self.id,
            name: self.name,
            supervisors: self.supervisors.0,
            created_at: self.created_at,
            standing,
            member_count: self.member_count,
            wallet_credits: self.wallet_credits,
            given_to_you: self.given,
            unspent_of_given: self.unspent,
        }
    }
}

/// One team as [`list`] shows it to `caller`: 404 when there is no such
/// team, 403 `not_your_team` when the caller may not see it.
pub async fn one(conn: &mut PgConnection, caller: &AuthUser, team: Uuid) -> Result<Team, ApiError> {
    standing(conn, caller, team).await?;
    let (mut teams, _) = query(conn, caller, Some(team), 1, 1).await?;
    teams
        .pop()
        .ok_or_else(|| ApiError::not_found("no such team"))
}

/// A page of the team's current members by username (those whose
/// username or email contains `search`, when given), with the total,
/// and every pending address.
pub async fn members(
    conn: &mut PgConnection,
    team: Uuid,
    search: Option<&str>,
    page: i64,
    limit: i64,
) -> Result<(Vec<Member>, i64, Vec<Pending>), ApiError> {
    let pattern = search.map(|s| format!("%{}%", like_escape(&s.to_lowercase())));
    let rows = sqlx::query!(
        r#"SELECT m.user_id, a.username, a.email, m.joined_at, COUNT(*) OVER () AS "total!",
                  (SELECT COALESCE(SUM(c.credits), 0)::bigint FROM credit_allocations c
                    WHERE c.user_id = m.user_id AND c.team_id = m.team_id
                      AND c.notes IS DISTINCT FROM 'allowance rolled over') AS "given!",
                  (SELECT COALESCE(SUM(c.remaining), 0)::bigint FROM credit_allocations c
                    WHERE c.user_id = m.user_id AND c.team_id = m.team_id AND c.expired_at IS NULL
                      AND (c.expires_at IS NULL OR c.expires_at > now())) AS "unspent!"
             FROM team_members m JOIN user_accounts a ON a.user_id = m.user_id
            WHERE m.team_id = $1 AND m.left_at IS NULL
              AND ($2::text IS NULL OR lower(a.username) LIKE $2 OR lower(a.email) LIKE $2
                   OR lower(m.user_id) LIKE $2)
            ORDER BY lower(a.username) NULLS LAST, m.user_id
            LIMIT $3 OFFSET $4"#,
        team,
        pattern,
        limit,
        (page - 1) * limit
    )
    .fetch_all(&mut *conn)
    .await?;
    let total = rows.first().map_or(0, |r| r.total);
    let members = rows
        .into_iter()
        .map(|r| Member {
            user_id: r.user_id,
            username: r.username,
            email: r.email,
            joined_at: r.joined_at,
            given: r.given,
            unspent: r.unspent,
        })
        .collect();
    let pending = sqlx::query_as!(
        Pending,
        "SELECT email, added_at FROM team_pending WHERE team_id = $1 ORDER BY email LIMIT 1000",
        team
    )
    .fetch_all(conn)
    .await?;
    Ok((members, total, pending))
}

/// `LIKE`'s own characters, taken literally.
fn like_escape(raw: &str) -> String {
    raw.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

/// What adding members did.
#[derive(Debug, Clone, Default, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Added {
    /// Who joined now.
    pub added: Vec<Person>,
    /// Who already belonged.
    pub already_members: Vec<Person>,
    /// Addresses that match no user with that proven address: kept, and
    /// whoever proves one later joins then.
    pub pending: Vec<String>,
    /// User ids that match no user.
    pub not_found: Vec<String>,
}

/// Adds the users `ids` and the owners of the proven addresses `emails`
/// to the team; an address nobody has proven is kept pending. Holds the
/// team's row (`FOR SHARE`) so that a deletion waits for the additions or
/// they see it (404).
pub async fn add_members(
    tx: &mut Tx<'_>,
    team: Uuid,
    ids: &[UserId],
    emails: &[Email],
    actor: &str,
) -> Result<Added, ApiError> {
    hold_live(tx, team).await?;
    let ids: Vec<String> = ids.iter().map(|u| u.as_str().to_owned()).collect();
    let emails: Vec<String> = emails.iter().map(|e| e.as_str().to_owned()).collect();
    let found = sqlx::query!(
        r#"SELECT user_id, username, lower(email) AS email,
                  user_id = ANY($1) AS "by_id!"
             FROM user_accounts
            WHERE owner_kind = 'user' AND deleted_at IS NULL
              AND (user_id = ANY($1) OR (email_verified AND lower(email) = ANY($2)))
            ORDER BY user_id"#,
        &ids,
        &emails
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut report = Added::default();
    for id in &ids {
        if !found.iter().any(|f| f.by_id && &f.user_id == id) {
            report.not_found.push(id.clone());
        }
    }
    for email in &emails {
        if !found
            .iter()
            .any(|f| f.email.as_deref() == Some(email.as_str()))
        {
            report.pending.push(email.clone());
        }
    }
    let users: Vec<String> = found.iter().map(|f| f.user_id.clone()).collect();
    let joined: Vec<String> = sqlx::query_scalar!(
        "INSERT INTO team_members (id, team_id, user_id, added_by)
         SELECT gen_random_uuid(), $1, u, $3 FROM unnest($2::text[]) u
         ON CONFLICT (team_id, user_id) WHERE left_at IS NULL DO NOTHING
         RETURNING user_id",
        team,
        &users,
        actor
    )
    .fetch_all(&mut **tx)
    .await?;
    for f in found {
        let person = Person {
            user_id: f.user_id,
            username: f.username,
        };
        if joined.contains(&person.user_id) {
            report.added.push(person);
        } else {
            report.already_members.push(person);
        }
    }
    keep_pending(tx, team, &report.pending, actor).await?;
    Ok(report)
}

/// 404 unless the team is live, and holds its row (`FOR SHARE`) until
/// the commit: a deletion waits.
async fn hold_live(tx: &mut Tx<'_>, team: Uuid) -> Result<(), ApiError> {
    sqlx::query_scalar!(
        "SELECT id FROM teams WHERE id = $1 AND deleted_at IS NULL FOR SHARE",
        team
    )
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("no such team"))?;
    Ok(())
}

/// Keeps `emails` waiting to join the team.
async fn keep_pending(
    tx: &mut Tx<'_>,
    team: Uuid,
    emails: &[String],
    actor: &str,
) -> Result<(), ApiError> {
    sqlx::query!(
        "INSERT INTO team_pending (team_id, email, added_by) SELECT $1, unnest($2::text[]), $3
         ON CONFLICT DO NOTHING",
        team,
        emails,
        actor
    )
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Ends `user`'s stay in the team; false when they did not belong. Under
/// the member's account lock, so a transfer to them either lands before
/// (and they keep it) or sees that they left (403).
pub async fn remove_member(tx: &mut Tx<'_>, team: Uuid, user: &UserId) -> Result<bool, ApiError> {
    match crate::ledger::primitives::lock_account(tx, user).await {
        Err(crate::ledger::LedgerError::NoAccount(_)) => return Ok(false),
        other => other?,
    };
    let ended = sqlx::query!(
        "UPDATE team_members SET left_at = clock_timestamp()
          WHERE team_id = $1 AND user_id = $2 AND left_at IS NULL",
        team,
        user.as_str()
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(ended == 1)
}

/// Forgets a pending address; false when it was not pending.
pub async fn remove_pending(tx: &mut Tx<'_>, team: Uuid, email: &Email) -> Result<bool, ApiError> {
    let gone = sqlx::query!(
        "DELETE FROM team_pending WHERE team_id = $1 AND email = $2",
        team,
        email.as_str()
    )
    .execute(&mut **tx)
    .await?
    .rows_affected();
    Ok(gone == 1)
}

/// The auth function's part: `user` has just proven `email`, so every
/// live team that was waiting for that address takes them in (in the
/// transaction that records the proof). Returns how many teams.
pub async fn join_pending(tx: &mut Tx<'_>, user: &str, email: &str) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query!(
        "WITH waiting AS (
             DELETE FROM team_pending p USING teams t
              WHERE p.email = lower($2) AND t.id = p.team_id AND t.deleted_at IS NULL
             RETURNING p.team_id, p.added_by
         )
         INSERT INTO team_members (id, team_id, user_id, added_by)
         SELECT gen_random_uuid(), team_id, $1, added_by FROM waiting
         ON CONFLICT (team_id, user_id) WHERE left_at IS NULL DO NOTHING",
        user,
        email
    )
    .execute(&mut **tx)
    .await?
    .rows_affected())
}
