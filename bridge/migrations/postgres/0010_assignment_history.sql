-- When and why each assignment ended (handed over, ended by the responder or the visitor),
-- so a conversation's history says who held it, when, and why it moved on.
ALTER TABLE assignments ADD COLUMN ended_at BIGINT;
ALTER TABLE assignments ADD COLUMN end_reason TEXT;
