-- A key cannot outlive its owner's attention (issue 22): every key
-- expires (90 days unless its owner chose 1 to 365), and its owner is
-- mailed once, 7 days before. Keys made to never expire now expire in
-- 90 days; the scheduled job gives the same to any made without an
-- expiry by the functions of the previous deploy.
UPDATE api_keys SET expires_at = GREATEST(now(), created_at) + interval '90 days'
 WHERE expires_at IS NULL;
ALTER TABLE api_keys ADD COLUMN expiry_warned_at TIMESTAMPTZ;
CREATE INDEX api_keys_expiring ON api_keys (expires_at)
    WHERE revoked_at IS NULL AND expiry_warned_at IS NULL;
