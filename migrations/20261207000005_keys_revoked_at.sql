-- A key cannot outlive a recovery (issue 22): when a user's keys are
-- revoked (a password reset, signing out everywhere with revokeKeys, a
-- disabled, demoted or deleted account), the time is kept, and a key whose
-- password check began before it is refused, so one made by a request
-- racing the reset cannot survive it.
ALTER TABLE user_accounts ADD COLUMN keys_revoked_at TIMESTAMPTZ;
