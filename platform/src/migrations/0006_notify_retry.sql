-- The notification retry outbox: attempts made, when the next is due (while pending), and the
-- message kept for it (JSON of address, subject and body; cleared once sent or failed).
ALTER TABLE notifications ADD COLUMN attempts BIGINT NOT NULL DEFAULT 1;
ALTER TABLE notifications ADD COLUMN next_attempt_at BIGINT;
ALTER TABLE notifications ADD COLUMN payload TEXT;
CREATE INDEX IF NOT EXISTS notifications_due ON notifications (status, next_attempt_at);
