-- API keys and rate limits (issue 11). Never edit this file once landed.

-- The auth function keeps a user's name, email, role and state current
-- here, and revokes the user's keys before it disables, deletes or demotes
-- them in MongoDB; a request made with a key reads this row. Once the auth
-- function has written a row (`synced_at`), a token's claims no longer
-- rewrite it. The two limits override RATE_LIMIT_PER_MINUTE and
-- MAX_CONCURRENT_STREAMS for this user (NULL: the default).
ALTER TABLE user_accounts
    ADD COLUMN disabled BOOLEAN NOT NULL DEFAULT false,
    ADD COLUMN deleted_at TIMESTAMPTZ,
    ADD COLUMN synced_at TIMESTAMPTZ,
    ADD COLUMN rate_limit_per_minute INTEGER CHECK (rate_limit_per_minute BETWEEN 1 AND 10000),
    ADD COLUMN max_concurrent INTEGER CHECK (max_concurrent BETWEEN 1 AND 100);

-- A user's API keys. Only a SHA-256 of the whole key is kept; `public_id`
-- (the 12 characters after `fgw_`) finds the row.
CREATE TABLE api_keys (
    id                   UUID PRIMARY KEY,
    user_id              TEXT NOT NULL REFERENCES user_accounts (user_id),
    public_id            TEXT NOT NULL UNIQUE CHECK (public_id ~ '^[0-9A-Za-z]{12}$'),
    secret_hash          BYTEA NOT NULL CHECK (length(secret_hash) = 32),
    name                 TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The chatflows the key may use (NULL: every one its user may use).
    chatflows            TEXT[] CHECK (cardinality(chatflows) BETWEEN 1 AND 100),
    monthly_credit_limit BIGINT CHECK (monthly_credit_limit BETWEEN 1 AND 9007199254740991),
    expires_at           TIMESTAMPTZ,
    revoked_at           TIMESTAMPTZ,
    revoked_by           TEXT,
    last_used_at         TIMESTAMPTZ,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (expires_at IS NULL OR expires_at > created_at),
    CHECK ((revoked_at IS NULL) = (revoked_by IS NULL))
);
CREATE INDEX api_keys_user ON api_keys (user_id, created_at DESC);

-- What a key spent: its predictions' reservations, entries and usage.
ALTER TABLE streaming_sessions ADD COLUMN api_key_id UUID REFERENCES api_keys (id);
ALTER TABLE credit_transactions ADD COLUMN api_key_id UUID REFERENCES api_keys (id);
-- No foreign key, like user_id: a usage record outlives what it names.
ALTER TABLE usage_logs ADD COLUMN api_key_id UUID;
CREATE INDEX streaming_sessions_key ON streaming_sessions (api_key_id, created_at)
    WHERE api_key_id IS NOT NULL;
-- The rate limits' counts: a user's predictions of the last minute, and
-- those still running.
CREATE INDEX streaming_sessions_user_gateway ON streaming_sessions (user_id, created_at)
    WHERE origin = 'gateway';
