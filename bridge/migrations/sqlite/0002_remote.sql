-- Events from remote platforms (Telegram updates, ...), recorded before the platform is told
-- we have them (e.g. before the getUpdates offset moves past them). Unique per platform key,
-- so a redelivered update is recorded once.
CREATE TABLE remote_inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    platform TEXT NOT NULL,
    event_key TEXT NOT NULL,
    event_json TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    processed_at BIGINT,
    UNIQUE (platform, event_key)
);
CREATE INDEX remote_inbox_pending ON remote_inbox (processed_at, seq);

-- A conversation offered to one responder on one platform.
CREATE TABLE offers (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    responder_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    remote_message_id TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (room_id, responder_id)
);

-- Who holds a conversation, on which platform, through which ghost.
CREATE TABLE assignments (
    room_id TEXT NOT NULL,
    responder_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    address TEXT NOT NULL,
    ghost_user_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (room_id, responder_id)
);
CREATE INDEX assignments_address ON assignments (platform, address, state);

-- Which remote message belongs to which conversation, so a reply on the platform lands in
-- the right room.
CREATE TABLE remote_messages (
    platform TEXT NOT NULL,
    chat TEXT NOT NULL,
    message_id TEXT NOT NULL,
    room_id TEXT NOT NULL,
    event_id TEXT,
    PRIMARY KEY (platform, chat, message_id)
);

-- Visitor messages waiting to be delivered to a responder's platform, in order per room.
CREATE TABLE outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    address TEXT NOT NULL,
    event_id TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    done_at BIGINT,
    failed_at BIGINT,
    UNIQUE (event_id, platform, address)
);
CREATE INDEX outbox_pending ON outbox (done_at, failed_at, seq);
