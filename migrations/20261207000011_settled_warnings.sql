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
-- credits (NULL: it never held any).
CREATE FUNCTION balance_before_hold(account TEXT, session TEXT) RETURNS BIGINT
    LANGUAGE sql STABLE AS $$
    SELECT t.balance_after - t.amount FROM credit_transactions t
     WHERE t.user_id = account AND t.streaming_session_id = session AND t.type = 'reservation'
     ORDER BY t.seq LIMIT 1
$$;

-- A settled reservation is judged from before its hold to `after`.
CREATE FUNCTION warn_on_settlement(account TEXT, session TEXT, after BIGINT)
    RETURNS BOOLEAN LANGUAGE sql AS $$
    SELECT COALESCE(warn_on_spending(account, balance_before_hold(account, session), after), false)
$$;

-- Every entry that takes credits, and a prediction's settlement, is
-- judged in its transaction, when it commits: from the balance before the
-- entry (a settlement: before its hold) to the account's balance as the
-- transaction leaves it. A change that expires old credits and brings new
-- ones (a period's allowance, a grant) is one judgement, so nobody is told
-- they ran out in the instant between. A prediction's hold is not
-- spending (most of it comes back): it is judged when it settles.
CREATE OR REPLACE FUNCTION warn_on_entry() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    before BIGINT := NEW.balance_after - NEW.amount;
    after BIGINT;
BEGIN
    IF NEW.type = 'reservation' THEN
        RETURN NULL;
    END IF;
    IF NEW.streaming_session_id IS NOT NULL AND NEW.type IN ('refund', 'settlement') THEN
        before := COALESCE(balance_before_hold(NEW.user_id, NEW.streaming_session_id), before);
    ELSIF NEW.amount >= 0 THEN
        RETURN NULL;
    END IF;
    SELECT a.total_credits INTO after FROM user_accounts a WHERE a.user_id = NEW.user_id;
    PERFORM warn_on_spending(NEW.user_id, before, after);
    RETURN NULL;
END
$$;
DROP TRIGGER credit_transactions_warn ON credit_transactions;
CREATE CONSTRAINT TRIGGER credit_transactions_warn AFTER INSERT ON credit_transactions
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION warn_on_entry();
