//! The `auth` database: users, refresh tokens, email codes and login
//! failures, grouped by collection.

use bson::{doc, DateTime as BsonTime};
use chrono::{Duration, Utc};
use mongodb::options::ReturnDocument;
use mongodb::{Collection, Database};
use serde::{Deserialize, Serialize};
use shared::db::mongo::is_duplicate_key;
use shared::digest::sha256_hex;
use shared::token::Role;
use shared::ApiError;

fn bson_time(t: chrono::DateTime<Utc>) -> BsonTime {
    BsonTime::from_chrono(t)
}

/// An account.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDoc {
    /// The user id (the JWT `sub`).
    #[serde(rename = "_id")]
    pub id: String,
    /// Username as given.
    pub username: String,
    /// Lower-cased username: unique.
    pub username_key: String,
    /// Lower-cased email: unique. Always the proven address (or, before
    /// the first verification, the one signed up with).
    pub email: String,
    /// A new address asked for in the profile, not yet proven: it counts
    /// for nothing (not unique, not in tokens, not for login) until the
    /// code mailed to it is entered.
    #[serde(default)]
    pub pending_email: Option<String>,
    /// argon2id PHC string, or an imported platform's bcrypt hash until
    /// its owner's first sign-in (`password::needs_rehash`).
    pub password_hash: String,
    /// Role.
    pub role: Role,
    /// Whether the email is verified.
    pub is_verified: bool,
    /// Whether the account is disabled.
    #[serde(default)]
    pub disabled: bool,
    /// Raised by signing out everywhere: access tokens carry the version
    /// they were issued under, and an older one makes no more predictions.
    #[serde(default)]
    pub session_version: i64,
    /// The console's language (`en`, `zh-CN`, `zh-TW`): mail is written in
    /// it. `None`: never chosen (English).
    #[serde(default)]
    pub locale: Option<String>,
    /// Created.
    pub created_at: BsonTime,
    /// Last changed.
    pub updated_at: BsonTime,
}

/// Typed access to the collections.
#[derive(Clone, Debug)]
pub struct AuthStore {
    db: Database,
}

/// Which unique field a duplicate hit.
pub fn duplicate_error(err: &mongodb::error::Error) -> Option<ApiError> {
    if !is_duplicate_key(err) {
        return None;
    }
    let text = err.to_string();
    Some(if text.contains("email") {
        ApiError::Conflict {
            code: "email_taken",
            message: "this email is already registered".into(),
        }
    } else {
        ApiError::Conflict {
            code: "username_taken",
            message: "this username is already taken".into(),
        }
    })
}

impl AuthStore {
    /// Wraps the `auth` database.
    pub fn new(db: Database) -> Self {
        AuthStore { db }
    }

    /// `users`.
    pub fn users(&self) -> Collection<UserDoc> {
        self.db.collection("users")
    }

    fn refresh_tokens(&self) -> Collection<RefreshDoc> {
        self.db.collection("refresh_tokens")
    }

    fn codes(&self) -> Collection<CodeDoc> {
        self.db.collection("email_codes")
    }

    fn attempts(&self, kind: Attempts) -> Collection<AttemptDoc> {
        self.db.collection(match kind {
            Attempts::Login => "login_failures",
            Attempts::Code => "code_attempts",
        })
    }

    /// Inserts an account; 409 naming the taken field on a duplicate.
    pub async fn insert_user(&self, user: &UserDoc) -> Result<(), ApiError> {
        self.users()
            .insert_one(user)
            .await
            .map_err(|e| duplicate_error(&e).unwrap_or_else(|| e.into()))?;
        Ok(())
    }

    /// The account with this id.
    pub async fn user_by_id(&self, id: &str) -> Result<Option<UserDoc>, ApiError> {
        Ok(self.users().find_one(doc! {"_id": id}).await?)
    }

    /// The account with this (lower-cased) email.
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserDoc>, ApiError> {
        Ok(self.users().find_one(doc! {"email": email}).await?)
    }

    /// The account most recently asking to move to `email` (pending).
    pub async fn user_with_pending(&self, email: &str) -> Result<Option<UserDoc>, ApiError> {
        Ok(self
            .users()
            .find_one(doc! {"pending_email": email, "disabled": {"$ne": true}})
            .sort(doc! {"updated_at": -1})
            .await?)
    }

    /// Makes the pending `email` the account's address, proven. 409 when
    /// another account took it meanwhile (a pending address reserves
    /// nothing); `None` when the account no longer has it pending.
    pub async fn confirm_pending_email(
        &self,
        id: &str,
        email: &str,
    ) -> Result<Option<UserDoc>, ApiError> {
        self.users()
            .find_one_and_update(
                doc! {"_id": id, "pending_email": email},
                doc! {
                    "$set": {"email": email, "is_verified": true, "updated_at": BsonTime::now()},
                    "$unset": {"pending_email": ""},
                },
            )
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| duplicate_error(&e).unwrap_or_else(|| e.into()))
    }

    /// Replaces the password hash `old` of account `id` by `new`; nothing
    /// (false) when it changed meanwhile (a reset, or another sign-in's
    /// rehash, wins).
    pub async fn replace_hash(&self, id: &str, old: &str, new: &str) -> Result<bool, ApiError> {
        let result = self
            .users()
            .update_one(
                doc! {"_id": id, "password_hash": old},
                doc! {"$set": {"password_hash": new, "updated_at": BsonTime::now()}},
            )
            .await?;
        Ok(result.matched_count == 1)
    }

    /// Accounts with the admin role, enabled or not.
    pub async fn admin_count(&self) -> Result<u64, ApiError> {
        Ok(self.users().count_documents(doc! {"role": "admin"}).await?)
    }

    /// The account with this username, case-insensitively.
    pub async fn user_by_username(&self, username: &str) -> Result<Option<UserDoc>, ApiError> {
        Ok(self
            .users()
            .find_one(doc! {"username_key": username.to_ascii_lowercase()})
            .await?)
    }

    /// Sets fields of an account and returns it; 404 when it is gone, 409
    /// when a new username or email is taken.
    pub async fn update_user(&self, id: &str, set: bson::Document) -> Result<UserDoc, ApiError> {
        let mut set = set;
        set.insert("updated_at", BsonTime::now());
        self.users()
            .find_one_and_update(doc! {"_id": id}, doc! {"$set": set})
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| duplicate_error(&e).unwrap_or_else(|| e.into()))?
            .ok_or_else(|| ApiError::not_found("no such user"))
    }

    /// Sets and unsets fields of an account and returns it (unchanged when
    /// both are empty); 404 when it is gone, 409 when a new username is
    /// taken.
    pub async fn change_user(
        &self,
        id: &str,
        set: bson::Document,
        unset: bson::Document,
    ) -> Result<UserDoc, ApiError> {
        if set.is_empty() && unset.is_empty() {
            return self
                .user_by_id(id)
                .await?
                .ok_or_else(|| ApiError::not_found("no such user"));
        }
        let mut set = set;
        set.insert("updated_at", BsonTime::now());
        let mut update = doc! {"$set": set};
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        self.users()
            .find_one_and_update(doc! {"_id": id}, update)
            .return_document(ReturnDocument::After)
            .await
            .map_err(|e| duplicate_error(&e).unwrap_or_else(|| e.into()))?
            .ok_or_else(|| ApiError::not_found("no such user"))
    }

    /// Enabled admins other than `except`.
    pub async fn other_active_admins(&self, except: &str) -> Result<u64, ApiError> {
        Ok(self
            .users()
            .count_documents(
                doc! {"role": "admin", "disabled": {"$ne": true}, "_id": {"$ne": except}},
            )
            .await?)
    }

    /// Runs `work` while holding the lease named `name` (at most one
    /// holder at a time, for up to 10 s), so that two admins removing each
    /// other cannot both pass the last-admin check.
    pub async fn with_lease<T, F>(&self, name: &str, work: F) -> Result<T, ApiError>
    where
        F: std::future::Future<Output = Result<T, ApiError>>,
    {
        let locks: Collection<bson::Document> = self.db.collection("locks");
        let holder = uuid::Uuid::new_v4().to_string();
        let mut acquired = false;
        for _ in 0..200 {
            let now = Utc::now();
            let until = bson_time(now + Duration::seconds(10));
            let taken = locks
                .find_one_and_update(
                    doc! {"_id": name, "locked_until": {"$lt": bson_time(now)}},
                    doc! {"$set": {"locked_until": until, "holder": &holder}},
                )
                .await?;
            if taken.is_some() {
                acquired = true;
                break;
            }
            match locks
                .insert_one(doc! {"_id": name, "locked_until": until, "holder": &holder})
                .await
            {
                Ok(_) => {
                    acquired = true;
                    break;
                }
                Err(e) if is_duplicate_key(&e) => {
                    tokio::time::sleep(std::time::Duration::from_millis(25)).await
                }
                Err(e) => return Err(e.into()),
            }
        }
        if !acquired {
            return Err(ApiError::StoreUnavailable {
                store: "mongodb",
                detail: format!("lease {name} stayed busy"),
            });
        }
        let result = work.await;
        locks
            .update_one(
                doc! {"_id": name, "holder": &holder},
                doc! {"$set": {"locked_until": BsonTime::from_millis(0)}},
            )
            .await?;
        result
    }

    /// Deletes an account with its tokens and codes.
    pub async fn delete_user(&self, id: &str) -> Result<bool, ApiError> {
        let deleted = self
            .users()
            .delete_one(doc! {"_id": id})
            .await?
            .deleted_count;
        self.refresh_tokens()
            .delete_many(doc! {"user_id": id})
            .await?;
        self.codes().delete_many(doc! {"user_id": id}).await?;
        Ok(deleted == 1)
    }

    // ------------------------------------------------------------ tokens

    /// Stores a refresh token (hashed) in `family`.
    pub async fn store_refresh(
        &self,
        token: &str,
        jti: &str,
        user_id: &str,
        family: &str,
        expires_at: i64,
    ) -> Result<(), ApiError> {
        let expires = chrono::DateTime::from_timestamp(expires_at, 0).unwrap_or_else(Utc::now);
        self.refresh_tokens()
            .insert_one(RefreshDoc {
                id: jti.to_owned(),
                token_hash: sha256_hex(token.as_bytes()),
                user_id: user_id.to_owned(),
                family_id: family.to_owned(),
                expires_at: bson_time(expires),
                created_at: BsonTime::now(),
                used_at: None,
                revoked_at: None,
            })
            .await?;
        Ok(())
    }

    /// Marks a live token used, atomically: exactly one of several
    /// concurrent presentations wins. Returns the token's record when this
    /// call used it; `Err(Some(record))` when it exists but was already
    /// used or revoked (reuse); `Err(None)` when unknown.
    pub async fn use_refresh(
        &self,
        token: &str,
    ) -> Result<Result<RefreshDoc, Option<RefreshDoc>>, ApiError> {
        let hash = sha256_hex(token.as_bytes());
        let used = self
            .refresh_tokens()
            .find_one_and_update(
                doc! {"token_hash": &hash, "used_at": null, "revoked_at": null},
                doc! {"$set": {"used_at": BsonTime::now()}},
            )
            .await?;
        if let Some(record) = used {
            return Ok(Ok(record));
        }
        Ok(Err(self
            .refresh_tokens()
            .find_one(doc! {"token_hash": &hash})
            .await?))
    }

    /// Revokes one token.
    pub async fn revoke_refresh(&self, token: &str) -> Result<(), ApiError> {
        self.refresh_tokens()
            .update_one(
                doc! {"token_hash": sha256_hex(token.as_bytes()), "revoked_at": null},
                doc! {"$set": {"revoked_at": BsonTime::now()}},
            )
            .await?;
        Ok(())
    }

    /// Revokes every token of a rotation family (theft detection).
    pub async fn revoke_family(&self, family: &str) -> Result<(), ApiError> {
        self.refresh_tokens()
            .update_many(
                doc! {"family_id": family, "revoked_at": null},
                doc! {"$set": {"revoked_at": BsonTime::now()}},
            )
            .await?;
        Ok(())
    }

    /// Raises the user's session version (signing out everywhere); returns
    /// the new one.
    pub async fn end_sessions(&self, user_id: &str) -> Result<i64, ApiError> {
        let after = self
            .users()
            .find_one_and_update(
                doc! {"_id": user_id},
                doc! {"$inc": {"session_version": 1_i64}, "$set": {"updated_at": BsonTime::now()}},
            )
            .return_document(mongodb::options::ReturnDocument::After)
            .await?
            .ok_or_else(|| ApiError::not_found("this account no longer exists"))?;
        Ok(after.session_version)
    }

    /// Revokes every token of a user, except the one whose hash is `keep`.
    pub async fn revoke_user_tokens(
        &self,
        user_id: &str,
        keep: Option<&str>,
    ) -> Result<(), ApiError> {
        let mut filter = doc! {"user_id": user_id, "revoked_at": null};
        if let Some(keep) = keep {
            filter.insert("token_hash", doc! {"$ne": sha256_hex(keep.as_bytes())});
        }
        self.refresh_tokens()
            .update_many(filter, doc! {"$set": {"revoked_at": BsonTime::now()}})
            .await?;
        Ok(())
    }

    // ------------------------------------------------------------ codes

    /// Replaces the account's live codes of `purpose` with a new one for
    /// `email`, stored hashed. `secret` is the code or token mailed there.
    /// Codes are bound to the account and the address: another account's
    /// code for the same address is left alone.
    pub async fn new_code(
        &self,
        purpose: CodePurpose,
        email: &str,
        user_id: &str,
        secret: &str,
        valid_for: Duration,
    ) -> Result<(), ApiError> {
        self.codes()
            .delete_many(doc! {"user_id": user_id, "purpose": purpose.as_str()})
            .await?;
        let now = Utc::now();
        self.codes()
            .insert_one(CodeDoc {
                id: uuid::Uuid::new_v4().to_string(),
                purpose: purpose.as_str().to_owned(),
                email: email.to_owned(),
                user_id: user_id.to_owned(),
                code_hash: code_hash(purpose, email, secret),
                attempts: 0,
                created_at: bson_time(now),
                expires_at: bson_time(now + valid_for),
                used_at: None,
            })
            .await?;
        Ok(())
    }

    /// Takes one attempt from every live code of `purpose` for `email`
    /// that has attempts left, atomically, before any is compared: of many
    /// concurrent guesses at a code at most `max_attempts` are ever
    /// evaluated. Returns the codes this call may compare against.
    pub async fn take_code_attempts(
        &self,
        purpose: CodePurpose,
        email: &str,
        max_attempts: i32,
    ) -> Result<Vec<CodeDoc>, ApiError> {
        let live = doc! {
            "email": email, "purpose": purpose.as_str(), "used_at": null,
            "expires_at": {"$gt": BsonTime::now()}, "attempts": {"$lt": max_attempts},
        };
        let codes: Vec<CodeDoc> =
            shared::db::mongo::collect_all(self.codes().find(live).limit(20).await?).await?;
        let mut taken = Vec::new();
        for code in codes {
            let slot = self
                .codes()
                .find_one_and_update(
                    doc! {"_id": &code.id, "used_at": null, "attempts": {"$lt": max_attempts}},
                    doc! {"$inc": {"attempts": 1}},
                )
                .await?;
            taken.extend(slot);
        }
        Ok(taken)
    }

    /// Marks a code used, once: false when another request used it first.
    pub async fn mark_code_used(&self, id: &str) -> Result<bool, ApiError> {
        Ok(self
            .codes()
            .update_one(
                doc! {"_id": id, "used_at": null},
                doc! {"$set": {"used_at": BsonTime::now()}},
            )
            .await?
            .modified_count
            == 1)
    }

    /// Uses a reset token (looked up by its hash alone), atomically and once.
    pub async fn use_reset_token(&self, token: &str) -> Result<Option<CodeDoc>, ApiError> {
        let now = BsonTime::now();
        Ok(self
            .codes()
            .find_one_and_update(
                doc! {
                    "purpose": CodePurpose::Reset.as_str(),
                    "code_hash": sha256_hex(token.as_bytes()),
                    "used_at": null,
                    "expires_at": {"$gt": now},
                },
                doc! {"$set": {"used_at": now}},
            )
            .await?)
    }

    // ------------------------------------------------------------ attempts

    /// Counts one attempt for `key` *before* it is checked, atomically, and
    /// returns how many fall in `window` (this one included, at most
    /// `keep`) and, read in the same operation, until when the key is
    /// locked. Concurrent attempts each get their own count, so a limit
    /// holds however many arrive at once.
    pub async fn count_attempt(
        &self,
        kind: Attempts,
        key: &str,
        window: Duration,
        keep: usize,
    ) -> Result<Attempt, ApiError> {
        let now = Utc::now();
        let update = doc! {
            "$push": {"failures": {"$each": [bson_time(now)], "$slice": -(keep as i32)}},
            "$set": {"expires_at": bson_time(now + window + window)},
        };
        // No upsert: concurrent upserts of a missing document race (and
        // some servers then answer no document). The document is made
        // first, once, and every attempt is a plain atomic update.
        let mut updated = None;
        for _ in 0..3 {
            updated = self
                .attempts(kind)
                .find_one_and_update(doc! {"_id": key}, update.clone())
                .return_document(ReturnDocument::After)
                .await?;
            if updated.is_some() {
                break;
            }
            let fresh = AttemptDoc {
                id: key.to_owned(),
                failures: Vec::new(),
                locked_until: None,
                expires_at: bson_time(now + window + window),
            };
            match self.attempts(kind).insert_one(fresh).await {
                Err(e) if !is_duplicate_key(&e) => return Err(e.into()),
                _ => {}
            }
        }
        let doc = updated.ok_or_else(|| ApiError::StoreUnavailable {
            store: "mongodb",
            detail: format!("the attempt window {key} could not be written"),
        })?;
        Ok(Attempt {
            count: doc
                .failures
                .iter()
                .filter(|t| t.to_chrono() > now - window)
                .count(),
            locked_until: doc
                .locked_until
                .map(BsonTime::to_chrono)
                .filter(|t| *t > now),
        })
    }

    /// Forgets the attempts of `key` (a success).
    pub async fn clear_attempts(&self, kind: Attempts, key: &str) -> Result<(), ApiError> {
        self.attempts(kind).delete_one(doc! {"_id": key}).await?;
        Ok(())
    }

    /// Locks login `key` for `lock_for`, once: true only for the call that
    /// set the lock (which sends the lock mail), false when it was locked.
    pub async fn lock(&self, key: &str, lock_for: Duration) -> Result<bool, ApiError> {
        let now = Utc::now();
        let not_locked = doc! {"_id": key, "$or": [
            {"locked_until": null},
            {"locked_until": {"$lte": bson_time(now)}},
        ]};
        let set = doc! {"$set": {
            "locked_until": bson_time(now + lock_for),
            "failures": [],
            "expires_at": bson_time(now + lock_for + lock_for),
        }};
        Ok(self
            .attempts(Attempts::Login)
            .update_one(not_locked, set)
            .await?
            .modified_count
            == 1)
    }

    /// Claims the right to send a `kind` mail to `email` now: at most one
    /// per `every` for each address, atomically (concurrent requests send
    /// one mail between them).
    pub async fn claim_mail_slot(
        &self,
        kind: &str,
        email: &str,
        every: Duration,
    ) -> Result<bool, ApiError> {
        let slots: Collection<bson::Document> = self.db.collection("mail_throttle");
        let id = format!("{kind}:{email}");
        let now = Utc::now();
        let next =
            doc! {"until": bson_time(now + every), "expires_at": bson_time(now + every + every)};
        let freed = slots
            .find_one_and_update(
                doc! {"_id": &id, "until": {"$lte": bson_time(now)}},
                doc! {"$set": next.clone()},
            )
            .await?;
        if freed.is_some() {
            return Ok(true);
        }
        let mut first = next;
        first.insert("_id", &id);
        match slots.insert_one(first).await {
            Ok(_) => Ok(true),
            Err(e) if is_duplicate_key(&e) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }
}

/// One counted attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    /// Attempts in the window, this one included.
    pub count: usize,
    /// Until when the key is locked, when it is now.
    pub locked_until: Option<chrono::DateTime<Utc>>,
}

/// Which attempts a window counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempts {
    /// Passwords (login, and the current password where a change needs it).
    Login,
    /// Verification codes.
    Code,
}

/// A stored refresh token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RefreshDoc {
    /// The token's `jti`.
    #[serde(rename = "_id")]
    pub id: String,
    /// SHA-256 of the token.
    pub token_hash: String,
    /// Owner.
    pub user_id: String,
    /// Rotation family.
    pub family_id: String,
    /// Expiry (a TTL index deletes it then).
    pub expires_at: BsonTime,
    /// Issued.
    pub created_at: BsonTime,
    /// When it was rotated.
    pub used_at: Option<BsonTime>,
    /// When it was revoked.
    pub revoked_at: Option<BsonTime>,
}

/// What an email code is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodePurpose {
    /// Six-digit email verification code.
    Verify,
    /// Password reset token.
    Reset,
}

impl CodePurpose {
    fn as_str(self) -> &'static str {
        match self {
            CodePurpose::Verify => "verify",
            CodePurpose::Reset => "reset",
        }
    }
}

/// Whether `secret` is the code `code` was made for (mailed to its address).
pub fn code_matches(purpose: CodePurpose, code: &CodeDoc, secret: &str) -> bool {
    code.code_hash == code_hash(purpose, &code.email, secret)
}

/// Verification codes are hashed with their email and purpose (a bare
/// six-digit hash would be trivially reversible); reset tokens carry 256
/// random bits and are hashed alone so they can be looked up by token.
fn code_hash(purpose: CodePurpose, email: &str, secret: &str) -> String {
    match purpose {
        CodePurpose::Verify => sha256_hex(format!("verify:{email}:{secret}").as_bytes()),
        CodePurpose::Reset => sha256_hex(secret.as_bytes()),
    }
}

/// A stored email code or reset token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CodeDoc {
    /// Id.
    #[serde(rename = "_id")]
    pub id: String,
    /// `verify` or `reset`.
    pub purpose: String,
    /// The address it was mailed to.
    pub email: String,
    /// The account.
    pub user_id: String,
    /// Hash of the code or token.
    pub code_hash: String,
    /// Wrong codes tried against it.
    pub attempts: i32,
    /// Made.
    pub created_at: BsonTime,
    /// Expires (a TTL index deletes it then).
    pub expires_at: BsonTime,
    /// Used.
    pub used_at: Option<BsonTime>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct AttemptDoc {
    #[serde(rename = "_id")]
    id: String,
    #[serde(default)]
    failures: Vec<BsonTime>,
    locked_until: Option<BsonTime>,
    expires_at: BsonTime,
}
