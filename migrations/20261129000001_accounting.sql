-- Accounting schema (SPEC §6, §7, §10). Constraints make bad states
-- impossible rather than relying on application checks: an allocation can
-- never go negative or above its grant, a cached balance can never be
-- negative, statuses and transaction types are closed sets.
-- Never edit this file once landed: add a new migration instead.

-- One row per user the ledger has seen; filled from JWT claims on first sight.
CREATE TABLE user_accounts (
    user_id       TEXT PRIMARY KEY CHECK (length(user_id) BETWEEN 1 AND 128),
    username      TEXT,
    email         TEXT,
    role          TEXT CHECK (role IN ('admin', 'supervisor', 'enduser')),
    -- Cache of the sum of `remaining` over unexpired allocations, updated in
    -- the same transaction as every change.
    total_credits BIGINT NOT NULL DEFAULT 0 CHECK (total_credits >= 0),
    created_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    updated_at    TIMESTAMPTZ NOT NULL DEFAULT now()
);

-- A grant of credits with an optional expiry.
CREATE TABLE credit_allocations (
    id           UUID PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES user_accounts (user_id),
    credits      BIGINT NOT NULL CHECK (credits > 0),
    remaining    BIGINT NOT NULL CHECK (remaining >= 0 AND remaining <= credits),
    expires_at   TIMESTAMPTZ,
    -- Set once, by the expiry job, when it zeroes `remaining`.
    expired_at   TIMESTAMPTZ,
    allocated_by TEXT NOT NULL,
    notes        TEXT,
    allocated_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    CHECK (expires_at IS NULL OR expires_at > allocated_at),
    CHECK (expired_at IS NULL OR remaining = 0)
);
-- Spending order: soonest-expiring first, never-expiring last.
CREATE INDEX credit_allocations_spendable
    ON credit_allocations (user_id, expires_at ASC NULLS LAST, allocated_at)
    WHERE remaining > 0;
-- The expiry job's scan.
CREATE INDEX credit_allocations_due
    ON credit_allocations (expires_at)
    WHERE expired_at IS NULL AND expires_at IS NOT NULL;
CREATE INDEX credit_allocations_user ON credit_allocations (user_id, allocated_at DESC);

-- Every change to a balance, one row each.
CREATE TABLE credit_transactions (
    id                   UUID PRIMARY KEY,
    -- Insertion order. Rows are written under the account lock, so for one
    -- user this is the order the changes happened in (created_at is the
    -- time of the row, not of its transaction's start).
    seq                  BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
    user_id              TEXT NOT NULL REFERENCES user_accounts (user_id),
    type                 TEXT NOT NULL CHECK (type IN (
                             'allocation', 'deduction', 'refund', 'reservation',
                             'settlement', 'expiry', 'adjustment')),
    amount               BIGINT NOT NULL,
    balance_after        BIGINT NOT NULL CHECK (balance_after >= 0),
    actor_id             TEXT,
    description          TEXT,
    reference            TEXT,
    idempotency_key      TEXT,
    allocation_id        UUID REFERENCES credit_allocations (id),
    streaming_session_id TEXT,
    created_at           TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX credit_transactions_user_seq ON credit_transactions (user_id, seq DESC);
CREATE INDEX credit_transactions_user_type_seq ON credit_transactions (user_id, type, seq DESC);

-- Which allocations a debit drew from, so that a refund goes back to
-- exactly those allocations and never extends an expiry.
CREATE TABLE credit_draws (
    transaction_id UUID NOT NULL REFERENCES credit_transactions (id),
    allocation_id  UUID NOT NULL REFERENCES credit_allocations (id),
    amount         BIGINT NOT NULL CHECK (amount > 0),
    refunded       BIGINT NOT NULL DEFAULT 0 CHECK (refunded >= 0 AND refunded <= amount),
    PRIMARY KEY (transaction_id, allocation_id)
);
CREATE INDEX credit_draws_allocation ON credit_draws (allocation_id);

-- Credits reserved for a streaming prediction until it is settled.
CREATE TABLE streaming_sessions (
    session_id                 TEXT PRIMARY KEY CHECK (length(session_id) BETWEEN 1 AND 128),
    user_id                    TEXT NOT NULL REFERENCES user_accounts (user_id),
    chatflow_id                TEXT NOT NULL,
    reserved_credits           BIGINT NOT NULL CHECK (reserved_credits >= 0),
    charged_credits            BIGINT CHECK (charged_credits >= 0),
    refunded_credits           BIGINT CHECK (refunded_credits >= 0),
    shortfall_credits          BIGINT NOT NULL DEFAULT 0 CHECK (shortfall_credits >= 0),
    status                     TEXT NOT NULL DEFAULT 'active'
                                   CHECK (status IN ('active', 'completed', 'aborted')),
    reservation_transaction_id UUID REFERENCES credit_transactions (id),
    created_at                 TIMESTAMPTZ NOT NULL DEFAULT now(),
    settled_at                 TIMESTAMPTZ,
    CHECK ((status = 'active') = (settled_at IS NULL)),
    CHECK (status = 'active' OR (charged_credits IS NOT NULL AND refunded_credits IS NOT NULL))
);
CREATE INDEX streaming_sessions_active ON streaming_sessions (created_at) WHERE status = 'active';
CREATE INDEX streaming_sessions_user ON streaming_sessions (user_id, status, created_at DESC);

-- Usage records for reporting. No foreign key: a record outlives ledger
-- changes and may name a user the ledger has not seen.
CREATE TABLE usage_logs (
    id         UUID PRIMARY KEY,
    user_id    TEXT NOT NULL,
    service    TEXT NOT NULL CHECK (length(service) BETWEEN 1 AND 64),
    operation  TEXT NOT NULL CHECK (length(operation) BETWEEN 1 AND 128),
    credits    BIGINT NOT NULL CHECK (credits >= 0),
    metadata   JSONB NOT NULL DEFAULT '{}'::jsonb,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
CREATE INDEX usage_logs_user_time ON usage_logs (user_id, created_at DESC);
CREATE INDEX usage_logs_time ON usage_logs (created_at DESC);

-- Price of a prediction per chatflow, with the 'default' rule for the rest.
-- Per-token prices are fractional credits, stored exactly as millionths
-- (micro-credits) so that cost arithmetic stays in integers.
CREATE TABLE pricing_rules (
    chatflow_id             TEXT PRIMARY KEY CHECK (length(chatflow_id) BETWEEN 1 AND 128),
    per_request             BIGINT NOT NULL CHECK (per_request >= 0),
    per_input_token_micros  BIGINT NOT NULL CHECK (per_input_token_micros >= 0),
    per_output_token_micros BIGINT NOT NULL CHECK (per_output_token_micros >= 0),
    updated_by              TEXT,
    updated_at              TIMESTAMPTZ NOT NULL DEFAULT now()
);
-- 1 credit a request plus 0.001 per input and 0.002 per output token.
INSERT INTO pricing_rules (chatflow_id, per_request, per_input_token_micros, per_output_token_micros)
VALUES ('default', 1, 1000, 2000);

-- First result of every mutating request sent with an Idempotency-Key,
-- scoped to the caller.
CREATE TABLE idempotency_keys (
    user_id      TEXT NOT NULL,
    key          TEXT NOT NULL CHECK (length(key) BETWEEN 1 AND 255),
    endpoint     TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    status_code  SMALLINT NOT NULL,
    response     JSONB NOT NULL,
    created_at   TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, key)
);
CREATE INDEX idempotency_keys_created ON idempotency_keys (created_at);
