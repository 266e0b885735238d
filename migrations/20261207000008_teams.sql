-- Teams (README "Teams"): a wallet per team in the same ledger, the
-- supervisors who spend it out, the members they spend it to (with the
-- time each joined and left, so reports count a member's usage only
-- while they belonged), and addresses awaiting their owner.
-- Never edit this file once landed: add a new migration instead.

-- An account is a user's or a team's wallet. A wallet's id is
-- 'team:<uuid>', and no user's id may begin so (checked at the edge and
-- here), so no request naming a user can reach a wallet.
ALTER TABLE user_accounts
    ADD COLUMN owner_kind TEXT NOT NULL DEFAULT 'user' CHECK (owner_kind IN ('user', 'team')),
    -- The auth function's word that `email` is proven (a pending team
    -- address joins only then).
    ADD COLUMN email_verified BOOLEAN NOT NULL DEFAULT false,
    ADD CONSTRAINT user_accounts_owner_kind_id
        CHECK ((owner_kind = 'team') = (user_id LIKE 'team:%'));
CREATE INDEX user_accounts_proven_email ON user_accounts (lower(email))
    WHERE email_verified AND deleted_at IS NULL;

CREATE TABLE teams (
    id         UUID PRIMARY KEY,
    name       TEXT NOT NULL CHECK (length(name) BETWEEN 1 AND 100),
    -- The wallet: an account of kind 'team', 'team:' || id.
    account_id TEXT NOT NULL UNIQUE REFERENCES user_accounts (user_id),
    created_by TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    -- Deleted teams keep their rows: their ledger entries and reports stay.
    deleted_at TIMESTAMPTZ,
    CHECK (account_id = 'team:' || id::text)
);
CREATE UNIQUE INDEX teams_live_name ON teams (lower(name)) WHERE deleted_at IS NULL;

CREATE TABLE team_supervisors (
    team_id  UUID NOT NULL REFERENCES teams (id),
    user_id  TEXT NOT NULL REFERENCES user_accounts (user_id),
    added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, user_id)
);
CREATE INDEX team_supervisors_user ON team_supervisors (user_id);

-- One row per stay: a member who leaves and comes back has two.
CREATE TABLE team_members (
    id        UUID PRIMARY KEY,
    team_id   UUID NOT NULL REFERENCES teams (id),
    user_id   TEXT NOT NULL REFERENCES user_accounts (user_id),
    joined_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
    left_at   TIMESTAMPTZ,
    added_by  TEXT NOT NULL,
    CHECK (left_at IS NULL OR left_at >= joined_at)
);
CREATE UNIQUE INDEX team_members_current ON team_members (team_id, user_id) WHERE left_at IS NULL;
CREATE INDEX team_members_user ON team_members (user_id, team_id);

-- Addresses added before anyone proved them.
CREATE TABLE team_pending (
    team_id  UUID NOT NULL REFERENCES teams (id),
    email    TEXT NOT NULL CHECK (length(email) BETWEEN 3 AND 254 AND email = lower(email)),
    added_by TEXT NOT NULL,
    added_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (team_id, email)
);
CREATE INDEX team_pending_email ON team_pending (email);

-- A transfer's two entries share its id; a member's allocation made by a
-- transfer names the team and the transfer (a reclaim returns it to the
-- wallet allocations the transfer drew from).
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_type_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_type_check CHECK (type IN (
    'allocation', 'deduction', 'refund', 'reservation',
    'settlement', 'expiry', 'adjustment', 'import', 'transfer', 'reclaim'));
ALTER TABLE credit_transactions
    ADD COLUMN transfer_id UUID,
    ADD CONSTRAINT credit_transactions_transfer
        CHECK ((type IN ('transfer', 'reclaim')) = (transfer_id IS NOT NULL));
CREATE INDEX credit_transactions_transfer ON credit_transactions (transfer_id)
    WHERE transfer_id IS NOT NULL;

ALTER TABLE credit_allocations
    ADD COLUMN team_id UUID REFERENCES teams (id),
    ADD COLUMN transfer_id UUID,
    ADD CONSTRAINT credit_allocations_team_transfer CHECK ((team_id IS NULL) = (transfer_id IS NULL));
CREATE INDEX credit_allocations_team ON credit_allocations (user_id, team_id)
    WHERE team_id IS NOT NULL;

-- Whether `member` belonged to `team` at `at` (true when no team is
-- given): the filter of a team's reports, which count a member's usage
-- only while they belonged. One expression, so the planner inlines it.
CREATE FUNCTION in_team(team UUID, member TEXT, at TIMESTAMPTZ) RETURNS BOOLEAN
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT team IS NULL OR EXISTS (
        SELECT 1 FROM team_members m
         WHERE m.team_id = team AND m.user_id = member
           AND m.joined_at <= at AND (m.left_at IS NULL OR at < m.left_at))
$$;
