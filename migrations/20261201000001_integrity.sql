-- Integrity under attack (issue 9). Never edit this file once landed.

-- A reservation is made either by a client through /api/streaming-sessions
-- (`client`) or by the gateway itself for a prediction (`gateway`). Only
-- the gateway settles its own: the public finalize/abort refuse them.
ALTER TABLE streaming_sessions
    ADD COLUMN origin TEXT NOT NULL DEFAULT 'client' CHECK (origin IN ('client', 'gateway'));
-- Until now a prediction reserved under the answer's message id, with the
-- description 'prediction' on its reservation entry.
UPDATE streaming_sessions s SET origin = 'gateway'
  FROM credit_transactions t
 WHERE t.id = s.reservation_transaction_id AND t.description = 'prediction';
CREATE INDEX streaming_sessions_user_origin_active
    ON streaming_sessions (user_id, origin, created_at) WHERE status = 'active';

-- Predictions use idempotency keys in two phases: claimed (`in_progress`)
-- with the reservation, completed (`done`) with the settlement, so no
-- database transaction spans the call to Flowise. `reservation_id` lets
-- the sweep free the key of a reservation it releases.
ALTER TABLE idempotency_keys
    ADD COLUMN state TEXT NOT NULL DEFAULT 'done' CHECK (state IN ('in_progress', 'done')),
    ADD COLUMN reservation_id TEXT;
CREATE INDEX idempotency_keys_reservation
    ON idempotency_keys (reservation_id) WHERE reservation_id IS NOT NULL;

-- A JavaScript client reads every balance exactly: no total passes 2^53 - 1.
ALTER TABLE user_accounts
    ADD CONSTRAINT user_accounts_total_safe CHECK (total_credits <= 9007199254740991);

-- Flowise's own error text never reaches a user: usage records keep a
-- fixed code only (the text is logged).
UPDATE usage_logs
   SET metadata = jsonb_set(metadata, '{error}', '"upstream_error"')
 WHERE jsonb_typeof(metadata -> 'error') = 'string'
   AND metadata ->> 'error' NOT IN ('upstream_error', 'upstream_timeout', 'client_disconnected');
