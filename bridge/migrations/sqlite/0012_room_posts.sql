-- Everything Switchboard writes into a room (a responder's message posted as their ghost,
-- notices, the conversation's state event, ghosts joining and leaving), queued durably in the
-- same step that decided it, and posted in order per room until the homeserver takes it: a
-- homeserver outage of any length delays these, it never drops them. txn_id is the key the
-- post is deduplicated by, here and (for messages) at the homeserver.
CREATE TABLE room_posts (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    room_id TEXT NOT NULL,
    txn_id TEXT NOT NULL,
    op_json TEXT NOT NULL,
    attempts BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    done_at BIGINT,
    failed_at BIGINT,
    last_error TEXT,
    UNIQUE (room_id, txn_id)
);
CREATE INDEX room_posts_pending ON room_posts (done_at, failed_at, seq);
