-- A streamed answer its owner asked to stop (POST
-- /api/v1/chat/predict/{message_id}/stop): the relay reads the flag
-- between events and ends the answer, charged for what was delivered.
ALTER TABLE streaming_sessions ADD COLUMN stop_requested_at TIMESTAMPTZ;
