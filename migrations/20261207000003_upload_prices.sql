-- Every input is priced (issue 22): an image counts as a flat number of
-- input tokens, a document the gateway cannot read (PDF, Office) as a
-- number per started MiB; text, wherever it comes from, counts by its
-- characters as before. Per rule, with these defaults.
ALTER TABLE pricing_rules
    ADD COLUMN image_input_tokens BIGINT NOT NULL DEFAULT 1000
        CHECK (image_input_tokens BETWEEN 0 AND 1000000),
    ADD COLUMN document_input_tokens_per_mb BIGINT NOT NULL DEFAULT 20000
        CHECK (document_input_tokens_per_mb BETWEEN 0 AND 1000000);
