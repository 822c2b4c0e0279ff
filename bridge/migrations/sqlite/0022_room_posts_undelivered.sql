-- Room posts are looked up by their unposted rows only, now per room: a room's queue in order
-- (its posting lane) and each room's first unposted row (the scheduler). One partial index
-- serves both and stays as small as the backlog, as the outbox's does (0020).
DROP INDEX room_posts_pending;
CREATE INDEX room_posts_undelivered ON room_posts (room_id, seq)
    WHERE done_at IS NULL AND failed_at IS NULL;
