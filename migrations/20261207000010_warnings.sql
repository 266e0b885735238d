-- Warnings and webhooks (README "Allowances and warnings"). A notice is
-- one warning or event, made once: its `dedupe_key` is unique, and it is
-- written in the transaction that caused it (the entry that crossed a
-- threshold, the grant, the job's look ahead), never by a loop that could
-- repeat it. The job mails what is to be mailed and delivers each notice
-- to every webhook listening for its event; no request sends anything.
-- Never edit this file once landed: add a new migration instead.

ALTER TABLE user_accounts
    -- The console's language, for mail.
    ADD COLUMN locale TEXT NOT NULL DEFAULT 'en' CHECK (locale IN ('en', 'zh-CN', 'zh-TW')),
    -- Warn below this balance (NULL: the default; 0: never).
    ADD COLUMN low_credits_warning BIGINT
        CHECK (low_credits_warning BETWEEN 0 AND 9007199254740991),
    -- Mail when an allowance arrives (off by default).
    ADD COLUMN allowance_mail BOOLEAN NOT NULL DEFAULT false;

CREATE TABLE notices (
    id         UUID PRIMARY KEY DEFAULT gen_random_uuid(),
    event      TEXT NOT NULL CHECK (event IN ('credits.low', 'credits.expiring', 'credits.granted',
                                              'credits.exhausted', 'team.wallet_low',
                                              'prediction.refused_402')),
    -- The account it is about: a user's, or a team's wallet.
    account    TEXT NOT NULL,
    dedupe_key TEXT NOT NULL UNIQUE CHECK (length(dedupe_key) <= 400),
    data       JSONB NOT NULL,
    mail       BOOLEAN NOT NULL,
    mailed_at  TIMESTAMPTZ,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX notices_to_mail ON notices (created_at) WHERE mail AND mailed_at IS NULL;

CREATE TABLE webhooks (
    id         UUID PRIMARY KEY,
    url        TEXT NOT NULL CHECK (length(url) BETWEEN 8 AND 2000),
    events     TEXT[] NOT NULL CHECK (cardinality(events) BETWEEN 1 AND 6),
    -- The signing key (the base64 part of `whsec_...`), shown once.
    secret     BYTEA NOT NULL CHECK (length(secret) BETWEEN 24 AND 64),
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    deleted_at TIMESTAMPTZ
);

CREATE TABLE webhook_deliveries (
    -- The `webhook-id` header: the same on every retry, so a receiver
    -- de-duplicates.
    id              TEXT PRIMARY KEY,
    webhook_id      UUID NOT NULL REFERENCES webhooks (id),
    notice_id       UUID NOT NULL REFERENCES notices (id),
    state           TEXT NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'delivered', 'failed')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    last_attempt_at TIMESTAMPTZ,
    last_status     INTEGER,
    last_error      TEXT,
    created_at      TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    UNIQUE (webhook_id, notice_id)
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at) WHERE state = 'pending';
CREATE INDEX webhook_deliveries_hook ON webhook_deliveries (webhook_id, created_at DESC);

-- Records a notice once (nothing when its key was seen) and queues its
-- delivery to every live webhook listening for its event; true when the
-- notice is new. A notice never stops the change that made it: any
-- failure here is a warning in the log, and the change goes on.
CREATE FUNCTION notify(kind TEXT, about TEXT, dedupe TEXT, body JSONB, to_mail BOOLEAN)
    RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    made UUID;
BEGIN
    INSERT INTO notices (event, account, dedupe_key, data, mail)
    VALUES (kind, about, dedupe, body, to_mail)
    ON CONFLICT (dedupe_key) DO NOTHING
    RETURNING id INTO made;
    IF made IS NULL THEN
        RETURN false;
    END IF;
    INSERT INTO webhook_deliveries (id, webhook_id, notice_id)
    SELECT 'msg_' || replace(made::text, '-', '') || replace(w.id::text, '-', ''), w.id, made
      FROM webhooks w WHERE kind = ANY (w.events) AND w.deleted_at IS NULL;
    RETURN true;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'notice % was not recorded: %', dedupe, SQLERRM;
    RETURN false;
END
$$;

-- The balance below which an account is warned: its own setting, else
-- 10% of what it was granted in the last 30 days, else 10 credits.
CREATE FUNCTION low_credits_threshold(a user_accounts) RETURNS BIGINT
    LANGUAGE sql STABLE AS $$
    SELECT COALESCE(a.low_credits_warning,
                    NULLIF((SELECT COALESCE(SUM(c.credits), 0) / 10 FROM credit_allocations c
                             WHERE c.user_id = a.user_id AND c.allocated_at > now() - interval '30 days'), 0),
                    10)
$$;

-- Every entry that takes credits, and a prediction's settlement, is
-- checked here, in its transaction:
-- crossing below the account's threshold warns once per threshold and
-- month (`credits.low`, or `team.wallet_low` for a wallet); reaching 0
-- warns once per month (`credits.exhausted`). A session that sets
-- `fgw.quiet` (the importer, replaying history) warns nobody.
CREATE FUNCTION warn_on_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    a user_accounts;
    before BIGINT := NEW.balance_after - NEW.amount;
    threshold BIGINT;
    month TEXT := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM');
    kind TEXT;
BEGIN
    IF current_setting('fgw.quiet', true) = 'on' OR NEW.type = 'reservation' THEN
        -- A prediction's hold is not spending: most of it comes back.
        RETURN NULL;
    END IF;
    IF NEW.streaming_session_id IS NOT NULL AND NEW.type IN ('refund', 'settlement') THEN
        -- A prediction settled: judged from before its hold to now.
        SELECT t.balance_after - t.amount INTO before FROM credit_transactions t
         WHERE t.user_id = NEW.user_id AND t.streaming_session_id = NEW.streaming_session_id
           AND t.type = 'reservation'
         ORDER BY t.seq LIMIT 1;
        before := COALESCE(before, NEW.balance_after - NEW.amount);
    ELSIF NEW.amount >= 0 THEN
        RETURN NULL;
    END IF;
    SELECT * INTO a FROM user_accounts WHERE user_id = NEW.user_id;
    threshold := low_credits_threshold(a);
    kind := CASE a.owner_kind WHEN 'team' THEN 'team.wallet_low' ELSE 'credits.low' END;
    IF threshold > 0 AND before >= threshold AND NEW.balance_after < threshold THEN
        PERFORM notify(kind, NEW.user_id, kind || ':' || NEW.user_id || ':' || threshold || ':' || month,
                       jsonb_build_object('account', NEW.user_id, 'balance', NEW.balance_after,
                                          'threshold', threshold), true);
    END IF;
    IF a.owner_kind = 'user' AND NEW.balance_after = 0 AND before > 0 THEN
        PERFORM notify('credits.exhausted', NEW.user_id,
                       'credits.exhausted:' || NEW.user_id || ':' || month,
                       jsonb_build_object('account', NEW.user_id, 'balance', 0), true);
    END IF;
    RETURN NULL;
END
$$;
CREATE TRIGGER credit_transactions_warn AFTER INSERT ON credit_transactions
    FOR EACH ROW EXECUTE FUNCTION warn_on_entry();
