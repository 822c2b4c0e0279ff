-- When each conversation reached the routing milestones its service levels are measured by:
-- its first offer sent, its first accept (and the platform of the responder who accepted),
-- and the first reply of a responder. Each is set once, the first time, by an UPDATE that
-- only fills an empty column, so a retried step cannot count twice. Read by the service-level
-- report (per topic and platform over a window) and timed for the metrics.
ALTER TABLE conversations ADD COLUMN first_offer_at BIGINT;
ALTER TABLE conversations ADD COLUMN accepted_at BIGINT;
ALTER TABLE conversations ADD COLUMN first_reply_at BIGINT;
ALTER TABLE conversations ADD COLUMN responder_platform TEXT;
