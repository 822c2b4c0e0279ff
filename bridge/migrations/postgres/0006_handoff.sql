-- A note for the next responder when a conversation is handed over (who and why).
ALTER TABLE conversations ADD COLUMN handoff TEXT;
