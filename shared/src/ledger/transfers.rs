//! Team wallets (README "Teams"): credits moved between a team's wallet
//! and a member, on the same accounts, allocations and entries as every
//! other change. A wallet is an account of kind `team`, id
//! `team:<uuid>`; no user id may take that shape ([`crate::ids`]).
//!
//! Lock order: a change that touches a member and a wallet locks the
//! member's account first, then the wallet's. Every such change (a
//! transfer, a reclaim, a deleted user's return) does so, and every other
//! change locks one account, so two changes never wait for each other
//! in a circle.
//!
//! A transfer writes one entry on each side (kind `transfer`, the same
//! `transfer_id`): the wallet's debit draws from the wallet's allocations
//! in spending order (its draws recorded, as any debit's), and the member
//! gets one allocation that names the team and the transfer and expires
//! no later than the earliest-expiring allocation it was drawn from (nor
//! than `expiryDays`, when given). A reclaim (kind `reclaim`, its own
//! `transfer_id` on both entries) takes back what is still unspent of
//! such allocations, latest-expiring first, and returns it to the wallet
//! allocations the transfer drew from, through [`refund_draws`]: so it
//! comes back with its original expiry, and never more than was drawn.

use uuid::Uuid;

use super::primitives::{
    begin_change, check_balance_limit, draw_lasting, insert_entry, refund_draws, Tx,
};
use super::types::{Allocation, Credits, EntryKind, EntryMeta, LedgerError};
use crate::ids::UserId;

/// A team's wallet: the team and its account.
#[derive(Debug, Clone)]
pub struct Wallet {
    /// The team.
    pub team: Uuid,
    /// Its account, `team:<uuid>`.
    pub account: UserId,
}

impl Wallet {
    /// The wallet of `team`.
    pub fn of(team: Uuid) -> Wallet {
        Wallet {
            team,
            account: UserId::stored(format!("team:{team}")),
        }
    }
}

/// Wallet credits that expire sooner than this many days stay in the
/// wallet: a member is never given credits about to vanish, and every
/// allocation made still lasts at least a day (the account lock's due
/// flag relies on it, [`super::primitives::Locked`]).
pub const MIN_TRANSFER_DAYS: i32 = 1;

/// Under both accounts' locks, what was checked before them still holds:
/// the team is live (404 otherwise) and, when `member` is given, they
/// belong to it now (403 `not_team_member`). A removal, a deletion of the
/// team or of the user takes one of these locks first, so none can slip
/// between this check and the commit.
async fn check_team(
    tx: &mut Tx<'_>,
    wallet: &Wallet,
    member: Option<&UserId>,
) -> Result<(), LedgerError> {
    let row = sqlx::query!(
        r#"SELECT t.deleted_at IS NULL AS "live!",
                  EXISTS (SELECT 1 FROM team_members m
                            JOIN user_accounts u ON u.user_id = m.user_id AND u.deleted_at IS NULL
                           WHERE m.team_id = t.id AND m.user_id = $2 AND m.left_at IS NULL)
                    AS "member!"
             FROM teams t WHERE t.id = $1"#,
        wallet.team,
        member.map(UserId::as_str)
    )
    .fetch_optional(&mut **tx)
    .await?;
    match (row, member) {
        (Some(r), _) if !r.live => Err(LedgerError::NoTeam),
        (None, _) => Err(LedgerError::NoTeam),
        (Some(r), Some(m)) if !r.member => Err(LedgerError::NotMember(m.clone())),
        _ => Ok(()),
    }
}

/// What the locked wallet may give out now: its credits that last at
/// least [`MIN_TRANSFER_DAYS`] more (or never expire).
pub async fn transferable(tx: &mut Tx<'_>, wallet: &Wallet) -> Result<i64, LedgerError> {
    Ok(sqlx::query_scalar!(
        r#"SELECT COALESCE(SUM(remaining), 0)::bigint AS "sum!" FROM credit_allocations
            WHERE user_id = $1 AND remaining > 0 AND expired_at IS NULL
              AND (expires_at IS NULL OR expires_at > now() + make_interval(days => $2))"#,
        wallet.account.as_str(),
        MIN_TRANSFER_DAYS
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// How late a member's allocation from a transfer may expire, besides
/// never later than the wallet credits it was drawn from.
#[derive(Debug, Clone, Copy, Default)]
pub struct Expiry {
    /// At most this many days from now.
    pub days: Option<i32>,
    /// At most at this instant (an allowance's period end).
    pub until: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a transfer did.
#[derive(Debug, Clone)]
pub struct Transferred {
    /// The id both entries carry.
    pub transfer_id: Uuid,
    /// The member's new allocation.
    pub allocation: Allocation,
    /// The wallet's balance after it.
    pub wallet_balance: i64,
    /// The member's balance after it.
    pub member_balance: i64,
}

/// Moves `credits` from `wallet` to `member` (see the module's text);
/// 402 `team_insufficient_credits` when the wallet holds less, nothing
/// changed. The caller has checked who may, and that `member` belongs.
pub async fn transfer(
    tx: &mut Tx<'_>,
    wallet: &Wallet,
    member: &UserId,
    credits: Credits,
    expiry: Expiry,
    meta: &EntryMeta<'_>,
) -> Result<Transferred, LedgerError> {
    let member_total = begin_change(tx, member).await?;
    let wallet_total = begin_change(tx, &wallet.account).await?;
    check_team(tx, wallet, Some(member)).await?;
    let amount = credits.get();
    let available = transferable(tx, wallet).await?;
    if amount > available {
        return Err(LedgerError::WalletShort {
            needed: amount,
            available,
        });
    }
    check_balance_limit(member_total, amount)?;
    let transfer_id = Uuid::now_v7();
    let (to_wallet, to_member) = sides(meta, transfer_id, wallet, member);
    let wallet_balance = wallet_total - amount;
    let kind = EntryKind::Transfer;
    let out = insert_entry(
        tx,
        &wallet.account,
        kind,
        -amount,
        wallet_balance,
        None,
        &to_wallet,
    )
    .await?;
    draw_lasting(tx, &wallet.account, amount, out, MIN_TRANSFER_DAYS).await?;
    let allocation = insert_given(tx, wallet, member, credits, out, expiry, &to_member).await?;
    let member_balance = member_total + amount;
    let given = Some(allocation.id);
    insert_entry(tx, member, kind, amount, member_balance, given, &to_member).await?;
    Ok(Transferred {
        transfer_id,
        allocation,
        wallet_balance,
        member_balance,
    })
}

/// What each side's entry records: `meta`, the transfer, and as its
/// reference the other side (the wallet's entry names the member, the
/// member's names the wallet).
fn sides<'a>(
    meta: &EntryMeta<'a>,
    transfer_id: Uuid,
    wallet: &'a Wallet,
    member: &'a UserId,
) -> (EntryMeta<'a>, EntryMeta<'a>) {
    let side = |reference: &'a UserId| EntryMeta {
        transfer_id: Some(transfer_id),
        reference: Some(reference.as_str()),
        ..*meta
    };
    (side(member), side(&wallet.account))
}

/// The member's allocation of a transfer whose wallet entry is `out`:
/// it expires at the earliest of the drawn allocations' expiries and
/// `expiry_days` from now (never, when neither bounds it).
async fn insert_given(
    tx: &mut Tx<'_>,
    wallet: &Wallet,
    member: &UserId,
    credits: Credits,
    out: Uuid,
    expiry: Expiry,
    meta: &EntryMeta<'_>,
) -> Result<Allocation, LedgerError> {
    Ok(sqlx::query_as!(
        Allocation,
        r#"INSERT INTO credit_allocations
               (id, user_id, credits, remaining, expires_at, allocated_by, notes, team_id, transfer_id)
           SELECT $1, $2, $3, $3,
                  LEAST((SELECT MIN(a.expires_at) FROM credit_draws d
                           JOIN credit_allocations a ON a.id = d.allocation_id
                          WHERE d.transaction_id = $4),
                        now() + make_interval(days => $5), $10),
                  $6, $7, $8, $9
           RETURNING id, credits, remaining, expires_at, allocated_at,
                     COALESCE((SELECT username FROM user_accounts g WHERE g.user_id = $6), $6)
                       AS "granted_by!""#,
        Uuid::now_v7(),
        member.as_str(),
        credits.get(),
        out,
        expiry.days,
        meta.actor_id.unwrap_or("system"),
        meta.description,
        wallet.team,
        meta.transfer_id,
        expiry.until,
    )
    .fetch_one(&mut **tx)
    .await?)
}

/// What a reclaim did.
#[derive(Debug, Clone)]
pub struct Reclaimed {
    /// The id both entries carry (`None` when nothing was unspent).
    pub transfer_id: Option<Uuid>,
    /// Credits returned to the wallet.
    pub credits: i64,
    /// The wallet's balance after it.
    pub wallet_balance: i64,
    /// The member's balance after it.
    pub member_balance: i64,
}

/// Takes back from `member` up to `credits` (all, when `None`) of what
/// `wallet`'s team gave them and is still unspent, and returns it to the
/// wallet (see the module's text); 422 `reclaim_exceeds_unspent` when
/// `credits` is more than that, nothing changed. A live team only, and
/// from a current member unless `of_anyone` (a deleted user's return).
pub async fn reclaim(
    tx: &mut Tx<'_>,
    wallet: &Wallet,
    member: &UserId,
    credits: Option<Credits>,
    of_anyone: bool,
    meta: &EntryMeta<'_>,
) -> Result<Reclaimed, LedgerError> {
    let member_total = begin_change(tx, member).await?;
    let wallet_total = begin_change(tx, &wallet.account).await?;
    check_team(tx, wallet, (!of_anyone).then_some(member)).await?;
    let given = sqlx::query!(
        r#"SELECT id, remaining, transfer_id AS "transfer_id!" FROM credit_allocations
            WHERE user_id = $1 AND team_id = $2 AND remaining > 0 AND expired_at IS NULL
            ORDER BY expires_at DESC NULLS FIRST, allocated_at DESC, id DESC"#,
        member.as_str(),
        wallet.team
    )
    .fetch_all(&mut **tx)
    .await?;
    let unspent: i64 = given.iter().map(|g| g.remaining).sum();
    let amount = credits.map_or(unspent, Credits::get);
    if amount > unspent {
        return Err(LedgerError::ReclaimExceeds {
            asked: amount,
            unspent,
        });
    }
    let unchanged = Reclaimed {
        transfer_id: None,
        credits: 0,
        wallet_balance: wallet_total,
        member_balance: member_total,
    };
    if amount == 0 {
        return Ok(unchanged);
    }
    check_balance_limit(wallet_total, amount)?;
    let transfer_id = Uuid::now_v7();
    let (to_wallet, to_member) = sides(meta, transfer_id, wallet, member);
    let member_balance = member_total - amount;
    let kind = EntryKind::Reclaim;
    let taken = insert_entry(tx, member, kind, -amount, member_balance, None, &to_member).await?;
    let given = given
        .into_iter()
        .map(|g| (g.id, g.remaining, g.transfer_id));
    let returned = take_back(tx, wallet, taken, given, amount).await?;
    let wallet_balance = wallet_total + returned;
    let account = &wallet.account;
    insert_entry(
        tx,
        account,
        kind,
        returned,
        wallet_balance,
        None,
        &to_wallet,
    )
    .await?;
    Ok(Reclaimed {
        transfer_id: Some(transfer_id),
        credits: returned,
        wallet_balance,
        member_balance,
    })
}

/// Takes `amount` from the member's team allocations `given` (id,
/// remaining, transfer), in their order, as draws of the member's entry
/// `taken`, and returns each share to the wallet allocations its
/// transfer drew from. Returns what the wallet got back.
async fn take_back(
    tx: &mut Tx<'_>,
    wallet: &Wallet,
    taken: Uuid,
    given: impl Iterator<Item = (Uuid, i64, Uuid)>,
    amount: i64,
) -> Result<i64, LedgerError> {
    let (mut left, mut returned) = (amount, 0);
    for (allocation, remaining, transfer) in given {
        if left == 0 {
            break;
        }
        let take = remaining.min(left);
        left -= take;
        let out = sqlx::query_scalar!(
            "WITH taken AS (
                 UPDATE credit_allocations SET remaining = remaining - $2 WHERE id = $1
             ), drawn AS (
                 INSERT INTO credit_draws (transaction_id, allocation_id, amount) VALUES ($3, $1, $2)
             )
             SELECT id FROM credit_transactions
              WHERE transfer_id = $4 AND user_id = $5 AND type = 'transfer'",
            allocation,
            take,
            taken,
            transfer,
            wallet.account.as_str()
        )
        .fetch_one(&mut **tx)
        .await?;
        returned += refund_draws(tx, &[out], take).await?;
    }
    Ok(returned)
}

/// A deleted user's return: everything unspent of what each live team
/// gave `member` goes back to that team's wallet (a deleted team's
/// credits stay where they are, closed with the account). The caller
/// holds the member's account lock. Returns the credits returned.
pub async fn return_all(
    tx: &mut Tx<'_>,
    member: &UserId,
    meta: &EntryMeta<'_>,
) -> Result<i64, LedgerError> {
    let teams = sqlx::query_scalar!(
        "SELECT DISTINCT c.team_id AS \"team!\" FROM credit_allocations c
           JOIN teams t ON t.id = c.team_id AND t.deleted_at IS NULL
          WHERE c.user_id = $1 AND c.team_id IS NOT NULL AND c.remaining > 0
          ORDER BY 1",
        member.as_str()
    )
    .fetch_all(&mut **tx)
    .await?;
    let mut total = 0;
    for team in teams {
        // A team deleted since the list was read keeps nothing of it: the
        // check fails before anything is written, and the next team goes on.
        match reclaim(tx, &Wallet::of(team), member, None, true, meta).await {
            Ok(done) => total += done.credits,
            Err(LedgerError::NoTeam) => {}
            Err(other) => return Err(other),
        }
    }
    Ok(total)
}
