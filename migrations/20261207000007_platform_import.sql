-- Moving in from the platform (issue 24). Never edit this file once landed.

-- Each allocation `gateway-admin import-platform` brings opens with one
-- `import` entry: its total, referencing the platform's row
-- (`platform:credit_allocations:<id>`). What was spent of it, and what
-- had expired, follow as `deduction` and `expiry` entries.
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_type_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_type_check CHECK (type IN (
    'allocation', 'deduction', 'refund', 'reservation',
    'settlement', 'expiry', 'adjustment', 'import'));

-- What `gateway-admin import-platform` brought, by the platform's key
-- (`users/<id>`, `chat_messages/<id>`, `access/<chatflow>/<user>`, ...).
-- A later run counts a key here as done, whatever became of its record
-- since: a user deleted, a grant revoked or a conversation deleted here
-- stays so. For an allocation, `remaining` is what the platform had left
-- on it when last read, so that what was spent there afterwards is taken
-- here too.
CREATE TABLE platform_imports (
    source      TEXT PRIMARY KEY CHECK (length(source) BETWEEN 1 AND 400),
    remaining   BIGINT,
    imported_at TIMESTAMPTZ NOT NULL DEFAULT now()
);
