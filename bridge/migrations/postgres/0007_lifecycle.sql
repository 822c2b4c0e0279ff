-- Issue 5: explicit lifecycle states, and offers on every platform where a responder can be
-- reached (one responder may answer from Telegram for one visitor and Matrix for another).

-- 'waiting' splits into 'queued' (nobody asked) and 'offered' (somebody is considering it).
UPDATE conversations SET state = 'offered'
 WHERE state = 'waiting'
   AND EXISTS (SELECT 1 FROM offers o WHERE o.room_id = conversations.room_id AND o.state = 'open');
UPDATE conversations SET state = 'queued' WHERE state = 'waiting';

-- The last status published into the room, so it is sent again only when it changes.
ALTER TABLE conversations ADD COLUMN published_status TEXT;

ALTER TABLE offers DROP CONSTRAINT offers_room_id_responder_id_key;
ALTER TABLE offers ADD CONSTRAINT offers_room_responder_contact_key
    UNIQUE (room_id, responder_id, platform, address);
CREATE INDEX offers_open ON offers (state, created_at);
