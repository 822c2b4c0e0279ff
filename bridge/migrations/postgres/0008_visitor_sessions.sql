-- Proxied visitors ([visitors] mode = "proxied"): the sessions Switchboard issues to widgets.
-- Only a SHA-256 of each token is kept, so a copy of the database hands out no sessions.
CREATE TABLE visitor_sessions (
    token_hash TEXT PRIMARY KEY,
    user_id TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX visitor_sessions_user ON visitor_sessions (user_id);
CREATE INDEX visitor_sessions_expiry ON visitor_sessions (expires_at);
