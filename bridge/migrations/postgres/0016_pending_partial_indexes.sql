-- The inbox is looked up by its pending events only (the scheduler's cursor, a room's lane).
-- Indexing just those keeps both indexes as small as the backlog, and marking an event
-- processed drops its entries instead of moving them to the end of the index: in a flood
-- that is two index updates fewer per event.
DROP INDEX inbox_pending;
DROP INDEX inbox_room_pending;
CREATE INDEX inbox_pending ON inbox (seq) WHERE processed_at IS NULL;
CREATE INDEX inbox_room_pending ON inbox (room_id, seq) WHERE processed_at IS NULL;
