-- Work is partitioned (see bridge/lanes.rs): each conversation's lane reads its own pending
-- events, and each responder chat's lane its own pending deliveries, without scanning the
-- others' backlog.
CREATE INDEX inbox_room_pending ON inbox (room_id, processed_at, seq);
CREATE INDEX outbox_lane ON outbox (platform, address, done_at, failed_at, seq);
