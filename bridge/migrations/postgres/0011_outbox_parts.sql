-- A visitor message can become several platform messages (Telegram: at most 4096 characters
-- each). The row keeps the parts exactly as rendered for its first attempt (a JSON array of
-- strings) and how many of them the platform has accepted, so a retry after a 429, or a
-- restart, sends only the parts still missing, and a newer renderer cannot shift the split.
ALTER TABLE outbox ADD COLUMN parts_json TEXT;
ALTER TABLE outbox ADD COLUMN parts_sent BIGINT NOT NULL DEFAULT 0;
