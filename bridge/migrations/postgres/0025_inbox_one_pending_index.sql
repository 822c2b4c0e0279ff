-- The inbox's pending events are read by room (a room's lane, the periodic look for rooms
-- with pending events, the count for metrics), all through inbox_room_pending. The index of
-- pending events by seq alone served only the tests' whole-inbox drain, and every event
-- recorded and every event marked processed wrote one of its pages: one page of the log
-- fewer per event each way.
DROP INDEX inbox_pending;
