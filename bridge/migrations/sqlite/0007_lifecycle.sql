-- Issue 5: explicit lifecycle states, and offers on every platform where a responder can be
-- reached (one responder may answer from Telegram for one visitor and Matrix for another).

-- 'waiting' splits into 'queued' (nobody asked) and 'offered' (somebody is considering it).
UPDATE conversations SET state = 'offered'
 WHERE state = 'waiting'
   AND EXISTS (SELECT 1 FROM offers o WHERE o.room_id = conversations.room_id AND o.state = 'open');
UPDATE conversations SET state = 'queued' WHERE state = 'waiting';

-- The last status published into the room, so it is sent again only when it changes.
ALTER TABLE conversations ADD COLUMN published_status TEXT;

-- SQLite cannot drop a constraint: rebuild the table with the wider unique key.
CREATE TABLE offers_new (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    responder_id TEXT NOT NULL,
    platform TEXT NOT NULL,
    address TEXT NOT NULL,
    state TEXT NOT NULL,
    remote_message_id TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (room_id, responder_id, platform, address)
);
INSERT INTO offers_new (id, room_id, responder_id, platform, address, state, remote_message_id, created_at)
    SELECT id, room_id, responder_id, platform, address, state, remote_message_id, created_at FROM offers;
DROP TABLE offers;
ALTER TABLE offers_new RENAME TO offers;
CREATE INDEX offers_open ON offers (state, created_at);
