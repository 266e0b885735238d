-- Moving in from the platform (issue 24). Never edit this file once landed.

-- Each allocation `gateway-admin import-platform` brings opens with one
-- `import` entry: its total, referencing the platform's row
-- (`platform:credit_allocations:<id>`). What was spent of it, and what
-- had expired, follow as `deduction` and `expiry` entries.
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_type_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_type_check CHECK (type IN (
    'allocation', 'deduction', 'refund', 'reservation',
    'settlement', 'expiry', 'adjustment', 'import'));
