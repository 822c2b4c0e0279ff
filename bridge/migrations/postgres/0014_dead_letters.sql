-- Work that never succeeds is set aside here with its reason, so its conversation goes on.
-- source names the table the work came from (inbox: a homeserver event; remote: remote_inbox,
-- an event from a remote platform; outbox: a delivery to a responder's platform) and
-- source_seq its row there, which is marked done (inbox/remote: processed_at; outbox:
-- failed_at) in the same transaction. Retrying deletes the dead letter and makes that row
-- pending again. reason is error text only, never the event's content.
CREATE TABLE dead_letters (
    id BIGSERIAL PRIMARY KEY,
    source TEXT NOT NULL,
    source_seq BIGINT NOT NULL,
    room_id TEXT NULL,
    reason TEXT NOT NULL,
    attempts INTEGER NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (source, source_seq)
);
