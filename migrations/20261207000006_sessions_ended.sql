-- Signing out everywhere (issue 23) ends the access tokens already issued,
-- not only the refresh tokens: the auth function raises the user's session
-- version in MongoDB and then here, tokens carry the version they were
-- issued under (`sv`), and a prediction (or a new key) made with an older
-- one is refused with 401 `session_ended` by the statement that locks the
-- account, before anything is reserved.
ALTER TABLE user_accounts ADD COLUMN session_version BIGINT NOT NULL DEFAULT 0;
