//! Users: `auth_db.users` into the gateway's `auth.users` (and the
//! ledger's `user_accounts`), keeping their ids and their bcrypt hashes.

use std::collections::HashMap;

use auth::store::{duplicate_error, UserDoc};
use bson::oid::ObjectId;
use bson::{doc, DateTime as BsonTime, Document};
use futures_util::TryStreamExt;
use mongodb::Collection;
use serde::Deserialize;
use shared::token::Role;

use super::{parse, Run};

/// A user as the platform's auth service wrote it.
#[derive(Debug, Deserialize)]
pub(crate) struct PlatformUser {
    #[serde(rename = "_id")]
    id: ObjectId,
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
    #[serde(rename = "isVerified")]
    is_verified: Option<bool>,
    role: Option<String>,
    #[serde(rename = "createdAt")]
    created_at: Option<BsonTime>,
    #[serde(rename = "updatedAt")]
    updated_at: Option<BsonTime>,
}

/// The gateway's account for a platform user, or why there is none.
pub(crate) fn account(user: PlatformUser) -> Result<UserDoc, String> {
    let username = user.username.as_deref().map(str::trim).unwrap_or_default();
    if username.is_empty() {
        return Err("it has no username".into());
    }
    let email = user
        .email
        .as_deref()
        .map(str::trim)
        .unwrap_or_default()
        .to_lowercase();
    if email.is_empty() {
        return Err("it has no email address".into());
    }
    let hash = user.password.unwrap_or_default();
    if !auth::password::needs_rehash(&hash) {
        return Err(
            "its password is not a bcrypt hash as the platform made them \
             ($2a$, $2b$ or $2y$, cost 4 to 12)"
                .into(),
        );
    }
    let role = match user.role.as_deref() {
        None | Some("enduser" | "user") => Role::Enduser,
        Some("supervisor") => Role::Supervisor,
        Some("admin") => Role::Admin,
        Some(other) => return Err(format!("its role {other:?} is none the gateway knows")),
    };
    let created_at = user.created_at.unwrap_or_else(|| user.id.timestamp());
    Ok(UserDoc {
        id: user.id.to_hex(),
        username_key: username.to_ascii_lowercase(),
        username: username.to_owned(),
        email,
        pending_email: None,
        password_hash: hash,
        role,
        is_verified: user.is_verified.unwrap_or(false),
        disabled: false,
        locale: None,
        session_version: 0,
        created_at,
        updated_at: user.updated_at.unwrap_or(created_at),
    })
}

/// Who holds a username key or an email, here or earlier in this run.
#[derive(Default)]
pub(crate) struct Claims {
    usernames: HashMap<String, String>,
    emails: HashMap<String, String>,
}

impl Claims {
    fn claim(&mut self, user: &UserDoc) {
        self.usernames
            .insert(user.username_key.clone(), user.id.clone());
        self.emails.insert(user.email.clone(), user.id.clone());
    }

    /// A username with an `@` is another account's email (sign-in tries
    /// emails first, so that username could never be used), or an email is
    /// such a username.
    fn crossed(&self, user: &UserDoc) -> Option<String> {
        let name = user.username.to_lowercase();
        if name.contains('@') {
            if let Some(id) = self.emails.get(&name).filter(|id| **id != user.id) {
                return Some(format!(
                    "its username {:?} is account {id}'s email here",
                    user.username
                ));
            }
        }
        let holder = self
            .usernames
            .get(&user.email)
            .filter(|id| **id != user.id)?;
        Some(format!(
            "its email {} is account {holder}'s username here",
            user.email
        ))
    }

    /// Why `user` cannot have its name or address here, if it cannot.
    fn clash(&self, user: &UserDoc) -> Option<String> {
        if let Some(id) = self
            .usernames
            .get(&user.username_key)
            .filter(|id| **id != user.id)
        {
            return Some(format!(
                "its username {:?} is already account {id}'s here (usernames are compared without case)",
                user.username
            ));
        }
        if let Some(why) = self.crossed(user) {
            return Some(why);
        }
        if let Some(id) = self.emails.get(&user.email).filter(|id| **id != user.id) {
            return Some(format!(
                "its email {} is already account {id}'s here",
                user.email
            ));
        }
        None
    }
}

impl Run<'_> {
    /// Every platform user, oldest first (so of two names that clash once
    /// compared without case, the older account is brought).
    pub(crate) async fn users(&mut self) -> anyhow::Result<()> {
        let db = self.source.auth.clone();
        let order = doc! {"createdAt": 1, "_id": 1};
        let mut batches = self.read(&db, "users", order).await?;
        let mut claims = Claims::default();
        while let Some(batch) = self.next(&mut batches).await? {
            self.user_batch(batch, &mut claims).await?;
        }
        self.progress.finish();
        Ok(())
    }

    async fn user_batch(
        &mut self,
        batch: Vec<Document>,
        claims: &mut Claims,
    ) -> anyhow::Result<()> {
        let tally = &mut self.report.users;
        let platform: Vec<PlatformUser> = batch
            .into_iter()
            .filter_map(|d| parse(d, "users", tally))
            .collect();
        let mut accounts = Vec::new();
        for user in platform {
            let source = format!("users/{}", user.id.to_hex());
            match account(user) {
                Ok(account) => accounts.push(account),
                Err(reason) => tally.skip(source, reason),
            }
        }
        let here = self.accounts_here(&accounts, claims).await?;
        let keys: Vec<String> = accounts.iter().map(|u| format!("users/{}", u.id)).collect();
        let journaled = self.journaled(&keys).await?;
        let tally = &mut self.report.users;
        let (mut new, mut changed) = (Vec::new(), Vec::new());
        for user in accounts {
            if let Some(hash) = here.get(&user.id) {
                // A password changed on the platform since, by a user who
                // has not signed in here yet (the hash is still bcrypt):
                // the new one counts.
                if auth::password::needs_rehash(hash) && *hash != user.password_hash {
                    tally.imported += 1;
                    changed.push((user.id.clone(), hash.clone(), user.password_hash.clone()));
                } else {
                    tally.unchanged += 1;
                }
            } else if journaled.contains(&format!("users/{}", user.id)) {
                // Brought before and deleted here since: it stays so.
                tally.unchanged += 1;
                continue;
            } else if let Some(reason) = claims.clash(&user) {
                tally.skip(format!("users/{}", user.id), reason);
                continue;
            } else {
                new.push(user.clone());
            }
            claims.claim(&user);
            self.users.insert(user.id.clone());
        }
        let new = self.insert_users(new).await?;
        self.report.users.imported += new.len() as u64;
        if !self.dry_run {
            let store = auth::store::AuthStore::new(self.target.mongo.auth.clone());
            for (id, old, hash) in changed {
                store.replace_hash(&id, &old, &hash).await?;
            }
        }
        let ours: Vec<&str> = self.users_of(&here, &new);
        self.ledger_accounts(&ours).await?;
        let keys: Vec<String> = ours.iter().map(|id| format!("users/{id}")).collect();
        self.journal(&keys).await
    }

    /// The ids (and password hashes) of `accounts` already here, after recording in `claims`
    /// every other account here that holds one of their names or
    /// addresses.
    async fn accounts_here(
        &self,
        accounts: &[UserDoc],
        claims: &mut Claims,
    ) -> anyhow::Result<HashMap<String, String>> {
        let ids: Vec<&str> = accounts.iter().map(|u| u.id.as_str()).collect();
        let keys: Vec<&str> = accounts.iter().map(|u| u.username_key.as_str()).collect();
        // Emails, and usernames that look like one (either may hold the
        // other's value: [`Claims::crossed`]).
        let emails: Vec<String> = accounts
            .iter()
            .map(|u| u.email.clone())
            .chain(
                accounts
                    .iter()
                    .map(|u| u.username.to_lowercase())
                    .filter(|n| n.contains('@')),
            )
            .collect();
        let keys: Vec<&str> = keys
            .into_iter()
            .chain(accounts.iter().map(|u| u.email.as_str()))
            .collect();
        let emails: Vec<&str> = emails.iter().map(String::as_str).collect();
        let found: Collection<Document> = self.target.mongo.auth.collection("users");
        let mut docs = Vec::new();
        // One query per unique index (an `$or` of them is a scan on some
        // servers).
        for (field, values) in [("_id", &ids), ("username_key", &keys), ("email", &emails)] {
            let mut cursor = found
                .find(doc! {field: {"$in": values}})
                .projection(doc! {"_id": 1, "username_key": 1, "email": 1, "password_hash": 1})
                .await?;
            while let Some(d) = cursor.try_next().await? {
                docs.push(d);
            }
        }
        let mut here = HashMap::new();
        for d in docs {
            let id = d.get_str("_id").unwrap_or_default().to_owned();
            if let Ok(key) = d.get_str("username_key") {
                claims
                    .usernames
                    .entry(key.to_owned())
                    .or_insert_with(|| id.clone());
            }
            if let Ok(email) = d.get_str("email") {
                claims
                    .emails
                    .entry(email.to_owned())
                    .or_insert_with(|| id.clone());
            }
            let hash = d.get_str("password_hash").unwrap_or_default().to_owned();
            here.insert(id, hash);
        }
        here.retain(|id, _| ids.contains(&id.as_str()));
        Ok(here)
    }

    /// Inserts `new` (nothing in a dry run); returns those inserted. One
    /// that a sign-up took meanwhile is skipped with its reason.
    async fn insert_users(&mut self, new: Vec<UserDoc>) -> anyhow::Result<Vec<UserDoc>> {
        if self.dry_run || new.is_empty() {
            return Ok(new);
        }
        let users: Collection<UserDoc> = self.target.mongo.auth.collection("users");
        if users.insert_many(&new).ordered(false).await.is_ok() {
            return Ok(new);
        }
        // Some were refused: find out which, one at a time.
        let mut inserted = Vec::new();
        for user in new {
            match users.insert_one(&user).await {
                Ok(_) => inserted.push(user),
                Err(e) if shared::db::mongo::is_duplicate_key(&e) => {
                    let here = users.find_one(doc! {"_id": &user.id}).await?.is_some();
                    if here {
                        inserted.push(user);
                    } else {
                        let why = duplicate_error(&e)
                            .map(|e| e.to_string())
                            .unwrap_or_default();
                        self.users.remove(&user.id);
                        self.report.users.skip(
                            format!("users/{}", user.id),
                            format!("taken here meanwhile: {why}"),
                        );
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(inserted)
    }

    fn users_of<'u>(&self, here: &'u HashMap<String, String>, new: &'u [UserDoc]) -> Vec<&'u str> {
        here.keys()
            .map(String::as_str)
            .chain(new.iter().map(|u| u.id.as_str()))
            .filter(|id| self.users.contains(*id))
            .collect()
    }

    /// The ledger's account of each user brought (the auth function's
    /// record, as it writes it); an account already there is left as it is.
    async fn ledger_accounts(&self, ids: &[&str]) -> anyhow::Result<()> {
        if self.dry_run || ids.is_empty() {
            return Ok(());
        }
        let users: Collection<UserDoc> = self.target.mongo.auth.collection("users");
        let found: Vec<UserDoc> = users
            .find(doc! {"_id": {"$in": ids}})
            .await?
            .try_collect()
            .await?;
        let column = |f: fn(&UserDoc) -> String| found.iter().map(f).collect::<Vec<_>>();
        sqlx::query(
            "INSERT INTO user_accounts (user_id, username, email, role, email_verified, synced_at)
             SELECT *, now() FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bool[])
             ON CONFLICT (user_id) DO NOTHING",
        )
        .bind(column(|u| u.id.clone()))
        .bind(column(|u| u.username.clone()))
        .bind(column(|u| u.email.clone()))
        .bind(column(|u| u.role.as_str().to_owned()))
        .bind(found.iter().map(|u| u.is_verified).collect::<Vec<bool>>())
        .execute(&self.target.pool)
        .await?;
        Ok(())
    }
}
