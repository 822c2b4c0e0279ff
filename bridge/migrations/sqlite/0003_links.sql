-- One-time codes an operator issues so a responder can link their platform account
-- themselves (Telegram: `/start CODE` to the bot).
CREATE TABLE link_codes (
    code TEXT PRIMARY KEY,
    responder_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    used_at BIGINT
);

-- Platform addresses responders linked themselves; they count like the ones in the config.
CREATE TABLE responder_links (
    platform TEXT NOT NULL,
    address TEXT NOT NULL,
    responder_id TEXT NOT NULL,
    linked_at BIGINT NOT NULL,
    PRIMARY KEY (platform, address)
);
CREATE INDEX responder_links_responder ON responder_links (responder_id, platform);
