-- Routing looks at waiting conversations again now and then; it reads them by state instead
-- of every conversation ever held.
CREATE INDEX conversations_state ON conversations (state, created_at);
