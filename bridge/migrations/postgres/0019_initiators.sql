-- Conversations started from a platform rather than the widget (issue 14): the person who
-- wrote (the initiator) is reached at (platform, address), and is a visitor ghost in the room.
-- `address_key` is a keyed hash of the address (HMAC under a key derived from the
-- appservice's as_token), what rate limits and blocks are counted by, so the block list never
-- holds an address and operators never need to see one.
CREATE TABLE initiators (
    room_id TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    address TEXT NOT NULL,
    -- Where on the platform they wrote, if the address alone is not enough (Matrix: the
    -- direct chat with the bot).
    thread TEXT,
    address_key TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX initiators_by_address ON initiators (platform, address);
CREATE INDEX initiators_by_key ON initiators (address_key, created_at);

-- What an initiator wrote before they picked a topic: posted into the conversation, in
-- order, once it exists.
CREATE TABLE initiator_pending (
    seq BIGSERIAL PRIMARY KEY,
    platform TEXT NOT NULL,
    address TEXT NOT NULL,
    event_json TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX initiator_pending_by_address ON initiator_pending (platform, address, seq);

-- Initiators an operator blocked, by keyed hash only.
CREATE TABLE initiator_blocks (
    address_key TEXT PRIMARY KEY,
    created_at BIGINT NOT NULL
);
