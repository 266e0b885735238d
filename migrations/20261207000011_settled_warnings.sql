-- A prediction that costs exactly what it held writes no entry when it
-- settles (nothing comes back, nothing more is taken), so the entry
-- trigger never judged it: a user paying fixed prices could reach 0, or
-- fall below their threshold, and never be told. And an entry was judged
-- by its own balance, so a change that expired old credits before it
-- brought new ones (a team's allowance at a period's start) told people
-- they had run out. The judgement is now one function: the trigger calls
-- it for every entry when the transaction commits, against the balance
-- the transaction leaves, and the ledger calls it for a settlement that
-- wrote none (README "Allowances and warnings").
-- Never edit this file once landed: add a new migration instead.

-- Warns `account` once per threshold and month when its balance went
-- from `before` to below its threshold at `after` (`credits.low`, or
-- `team.wallet_low` for a wallet), and once per month when it reached 0
-- (`credits.exhausted`). A session that sets `fgw.quiet` (the importer,
-- replaying history) warns nobody.
CREATE FUNCTION warn_on_spending(account TEXT, before BIGINT, after BIGINT)
    RETURNS BOOLEAN LANGUAGE plpgsql AS $$
DECLARE
    a user_accounts;
    threshold BIGINT;
    month TEXT := to_char(now() AT TIME ZONE 'UTC', 'YYYY-MM');
    kind TEXT;
BEGIN
    IF current_setting('fgw.quiet', true) = 'on' OR before IS NULL OR after >= before THEN
        RETURN false;
    END IF;
    SELECT * INTO a FROM user_accounts WHERE user_id = account;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    threshold := low_credits_threshold(a);
    kind := CASE a.owner_kind WHEN 'team' THEN 'team.wallet_low' ELSE 'credits.low' END;
    IF threshold > 0 AND before >= threshold AND after < threshold THEN
        PERFORM notify(kind, account, kind || ':' || account || ':' || threshold || ':' || month,
                       jsonb_build_object('account', account, 'balance', after,
                                          'threshold', threshold), true);
    END IF;
    IF a.owner_kind = 'user' AND after = 0 AND before > 0 THEN
        PERFORM notify('credits.exhausted', account,
                       'credits.exhausted:' || account || ':' || month,
                       jsonb_build_object('account', account, 'balance', 0), true);
    END IF;
    RETURN true;
END
$$;

-- The balance `account` had before the reservation `session` first held
-- credits (NULL: it never held any): its hold's entry, by primary key.
CREATE FUNCTION balance_before_hold(account TEXT, session TEXT) RETURNS BIGINT
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN (SELECT t.balance_after - t.amount
              FROM streaming_sessions s JOIN credit_transactions t ON t.id = s.reservation_transaction_id
             WHERE s.session_id = session AND t.user_id = account);
END
$$;

-- What each account holds for reservations made in this transaction
-- (the transaction-local setting `fgw.held`, a JSON object by account,
-- kept by a trigger on the holds' entries): a prediction's transaction
-- may expire old credits, bring an allowance and hold all of it, and its
-- hold is not spending. A setting, not a look at the entries: it costs
-- the same however many entries an account has.
CREATE FUNCTION note_hold() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    held JSONB;
BEGIN
    -- Every step inside the block its handler covers.
    held := COALESCE(NULLIF(current_setting('fgw.held', true), '')::jsonb, '{}'::jsonb);
    PERFORM set_config('fgw.held',
                       jsonb_set(held, ARRAY[NEW.user_id],
                                 to_jsonb(COALESCE((held ->> NEW.user_id)::bigint, 0) - NEW.amount))::text,
                       true);
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'hold % was not noted for warnings: %', NEW.id, SQLERRM;
    RETURN NULL;
END
$$;
CREATE TRIGGER credit_transactions_hold AFTER INSERT ON credit_transactions
    FOR EACH ROW WHEN (NEW.type = 'reservation') EXECUTE FUNCTION note_hold();

CREATE FUNCTION held_in_this_transaction(account TEXT) RETURNS BIGINT
    LANGUAGE sql STABLE AS $$
    SELECT COALESCE((NULLIF(current_setting('fgw.held', true), '')::jsonb ->> account)::bigint, 0)
$$;

-- A failure is a warning in the log, never the settlement's.
CREATE FUNCTION warn_on_settlement(account TEXT, session TEXT, after BIGINT)
    RETURNS BOOLEAN LANGUAGE plpgsql AS $$
BEGIN
    RETURN COALESCE(warn_on_spending(account, balance_before_hold(account, session), after), false);
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'settlement % was not judged for warnings: %', session, SQLERRM;
    RETURN false;
END
$$;

-- Every entry that takes credits, and a prediction's settlement, is
-- judged in its transaction, when it commits: from the balance before the
-- entry (a settlement: before its hold) to the account's balance as the
-- transaction leaves it, its own holds given back. A change that expires
-- old credits and brings new ones (a period's allowance, a grant, both
-- with a prediction's hold) is one judgement, so nobody is told they ran
-- out in the instant between. A failure here is a warning in the log:
-- it never stops the change being committed.
CREATE OR REPLACE FUNCTION warn_on_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    before BIGINT;
    after BIGINT;
BEGIN
    IF current_setting('fgw.quiet', true) = 'on' THEN
        RETURN NULL;
    END IF;
    before := NEW.balance_after - NEW.amount;
    IF NEW.streaming_session_id IS NOT NULL AND NEW.type IN ('refund', 'settlement') THEN
        before := COALESCE(balance_before_hold(NEW.user_id, NEW.streaming_session_id), before);
    END IF;
    SELECT a.total_credits INTO after FROM user_accounts a WHERE a.user_id = NEW.user_id;
    PERFORM warn_on_spending(NEW.user_id, before, after + held_in_this_transaction(NEW.user_id));
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RAISE WARNING 'entry % was not judged for warnings: %', NEW.id, SQLERRM;
    RETURN NULL;
END
$$;
DROP TRIGGER credit_transactions_warn ON credit_transactions;
CREATE CONSTRAINT TRIGGER credit_transactions_warn AFTER INSERT ON credit_transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW
    WHEN (NEW.type <> 'reservation'
          AND (NEW.amount < 0 OR (NEW.streaming_session_id IS NOT NULL
                                  AND NEW.type IN ('refund', 'settlement'))))
    EXECUTE FUNCTION warn_on_entry();

-- What an account was granted, for its default threshold, leaves out
-- what an allowance carried over (those credits were counted when they
-- first came). In PL/pgSQL, so its plan is kept: PostgreSQL plans a SQL
-- function that is not inlined on every call, and this one runs for
-- every entry that takes credits.
CREATE OR REPLACE FUNCTION low_credits_threshold(a user_accounts) RETURNS BIGINT
    LANGUAGE plpgsql STABLE AS $$
BEGIN
    RETURN COALESCE(a.low_credits_warning,
                    NULLIF((SELECT COALESCE(SUM(c.credits), 0) / 10 FROM credit_allocations c
                             WHERE c.user_id = a.user_id AND c.allocated_at > now() - interval '30 days'
                               AND c.notes IS DISTINCT FROM 'allowance rolled over'), 0),
                    10);
END
$$;
