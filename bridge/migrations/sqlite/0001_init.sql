-- Every event the homeserver pushed to us, recorded before the transaction is acknowledged.
-- event_id is unique: the homeserver may push the same event again (Synapse reuses txnIds
-- after a restart), and a replay must not be processed twice.
CREATE TABLE inbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    room_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    event_json TEXT NOT NULL,
    received_at BIGINT NOT NULL,
    processed_at BIGINT
);
CREATE INDEX inbox_pending ON inbox (processed_at, seq);

-- A conversation IS a Matrix room: room_id is its identifier everywhere.
CREATE TABLE conversations (
    room_id TEXT PRIMARY KEY,
    topic TEXT NOT NULL,
    visitor_user_id TEXT NOT NULL,
    visitor_alias TEXT NOT NULL,
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX conversations_visitor ON conversations (visitor_user_id, state);

-- The transcript: every message seen in a conversation room, once.
CREATE TABLE messages (
    event_id TEXT PRIMARY KEY,
    room_id TEXT NOT NULL,
    inbox_seq BIGINT NOT NULL,
    sender TEXT NOT NULL,
    sender_role TEXT NOT NULL,
    msgtype TEXT NOT NULL,
    body TEXT NOT NULL,
    formatted_body TEXT,
    origin_server_ts BIGINT NOT NULL
);
CREATE INDEX messages_room ON messages (room_id, inbox_seq);
