-- An answer stops where its payer's means end (issue 22): the relay tops
-- up a prediction's hold as its answer grows (each top-up a `reservation`
-- entry of its own, listed here so a settlement refunds from all of
-- them), and records what it has delivered as it goes, so the sweep can
-- charge what an instance that died had already sent.
ALTER TABLE streaming_sessions
    ADD COLUMN top_up_transaction_ids UUID[] NOT NULL DEFAULT '{}',
    ADD COLUMN delivered_credits BIGINT CHECK (delivered_credits >= 0),
    ADD COLUMN progress_at TIMESTAMPTZ;
