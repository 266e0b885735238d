-- A stored answer replays exactly what Flowise sent, every Unicode scalar
-- included: `jsonb` refuses U+0000 ("\u0000 cannot be converted to text"),
-- which made a settlement that stored such an answer roll back whole.
-- `json` keeps the text as sent (the gateway never queries inside it).
-- jsonb casts to json on assignment, so the functions of the previous
-- deploy keep writing their answers here until they are replaced.
ALTER TABLE idempotency_keys ALTER COLUMN response TYPE json USING response::json;
