-- Allowances (README "Allowances and warnings"): credits that arrive by
-- themselves every period. An allowance is a role's (new credits, made
-- by the system) or a team's (each member's share drawn from the team's
-- wallet). Its settings are versions: a change takes effect from the
-- next period, so a period's grants always follow one version.
-- Never edit this file once landed: add a new migration instead.

CREATE TABLE allowance_versions (
    -- 'role:<role>' or 'team:<team id>'.
    allowance      TEXT NOT NULL CHECK (allowance ~ '^(role:(admin|supervisor|enduser)|team:[0-9a-f-]{36})$'),
    effective_from TIMESTAMPTZ NOT NULL,
    -- false: the allowance ends at effective_from.
    active         BOOLEAN NOT NULL,
    credits        BIGINT CHECK (credits BETWEEN 1 AND 9007199254740991),
    period         TEXT CHECK (period IN ('day', 'week', 'month')),
    rollover_cap   BIGINT CHECK (rollover_cap BETWEEN 0 AND 9007199254740991),
    time_zone      TEXT NOT NULL DEFAULT 'UTC' CHECK (length(time_zone) BETWEEN 1 AND 64),
    set_by         TEXT NOT NULL,
    set_at         TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (allowance, effective_from),
    CHECK (NOT active OR (credits IS NOT NULL AND period IS NOT NULL))
);

-- One grant per allowance, recipient and period, enforced here: the job
-- and a recipient's first request of the period race for it, and one
-- wins. `credits` is what was granted (a team's wallet may cover less, 0
-- included); `allocation_id` the allocation it made.
CREATE TABLE allowance_grants (
    allowance     TEXT NOT NULL,
    user_id       TEXT NOT NULL REFERENCES user_accounts (user_id),
    period_start  TIMESTAMPTZ NOT NULL,
    period_end    TIMESTAMPTZ NOT NULL,
    credits       BIGINT NOT NULL CHECK (credits >= 0),
    shortfall     BIGINT NOT NULL DEFAULT 0 CHECK (shortfall >= 0),
    carried       BIGINT NOT NULL DEFAULT 0 CHECK (carried >= 0),
    allocation_id UUID REFERENCES credit_allocations (id),
    granted_by    TEXT NOT NULL CHECK (granted_by IN ('job', 'request')),
    granted_at    TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (allowance, user_id, period_start),
    CHECK (period_end > period_start)
);
CREATE INDEX allowance_grants_user ON allowance_grants (user_id, period_start DESC);

-- An allocation an allowance made (its rollover finds it), and the
-- entry kind of a role's allowance (a team's is a transfer).
ALTER TABLE credit_allocations ADD COLUMN allowance TEXT;
CREATE INDEX credit_allocations_allowance ON credit_allocations (user_id, allowance, expires_at DESC)
    WHERE allowance IS NOT NULL;
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_type_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_type_check CHECK (type IN (
    'allocation', 'deduction', 'refund', 'reservation', 'settlement', 'expiry', 'adjustment',
    'import', 'transfer', 'reclaim', 'allowance'));

-- The period of `period` ('day', 'week' from Monday, 'month') that holds
-- `at`, on the calendar of `tz`: [start, end). PostgreSQL's own time zone
-- rules, so months of 28 to 31 days, leap days and daylight-saving days
-- need no code of ours.
CREATE FUNCTION allowance_period(period TEXT, tz TEXT, at TIMESTAMPTZ,
                                 OUT period_start TIMESTAMPTZ, OUT period_end TIMESTAMPTZ)
    LANGUAGE sql STABLE PARALLEL SAFE AS $$
    SELECT date_trunc(period, at AT TIME ZONE tz) AT TIME ZONE tz,
           (date_trunc(period, at AT TIME ZONE tz)
              + CASE period WHEN 'day' THEN interval '1 day'
                            WHEN 'week' THEN interval '1 week'
                            ELSE interval '1 month' END) AT TIME ZONE tz
$$;

-- The versions in force at `at` of the allowances that apply to `member`
-- (their role's, and each live team's they belong to), with the period
-- that holds `at` and whether its grant is made yet. A version made in
-- the middle of a period starts its first period there.
CREATE FUNCTION allowances_of(member TEXT, at TIMESTAMPTZ)
    RETURNS TABLE (allowance TEXT, team_id UUID, credits BIGINT, rollover_cap BIGINT,
                   period_start TIMESTAMPTZ, period_end TIMESTAMPTZ, granted BOOLEAN)
    LANGUAGE sql STABLE AS $$
    WITH keys AS (
        SELECT 'role:' || a.role AS allowance, NULL::uuid AS team_id
          FROM user_accounts a
         WHERE a.user_id = member AND a.owner_kind = 'user' AND a.role IS NOT NULL
           AND a.deleted_at IS NULL AND NOT a.disabled
        UNION ALL
        SELECT 'team:' || m.team_id, m.team_id
          FROM team_members m JOIN teams t ON t.id = m.team_id AND t.deleted_at IS NULL
          JOIN user_accounts u ON u.user_id = m.user_id AND u.deleted_at IS NULL AND NOT u.disabled
         WHERE m.user_id = member AND m.left_at IS NULL
    ), current AS (
        SELECT DISTINCT ON (v.allowance) v.*, k.team_id
          FROM keys k JOIN allowance_versions v
            ON v.allowance = k.allowance AND v.effective_from <= at
         ORDER BY v.allowance, v.effective_from DESC
    )
    SELECT c.allowance, c.team_id, c.credits, c.rollover_cap,
           GREATEST(p.period_start, c.effective_from), p.period_end,
           EXISTS (SELECT 1 FROM allowance_grants g
                    WHERE g.allowance = c.allowance AND g.user_id = member
                      AND g.period_start = GREATEST(p.period_start, c.effective_from))
      FROM current c, allowance_period(c.period, c.time_zone, at) p
     WHERE c.active
$$;
