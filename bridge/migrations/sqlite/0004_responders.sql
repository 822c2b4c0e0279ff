-- The responder register: who answers, about what, when, how much and where. Seeded from the
-- configuration at start-up (source 'config') and edited by operators through the admin API
-- or CLI (source 'admin'); seeding never overwrites an operator's edit. List-valued fields are
-- JSON text so the schema is the same on every engine.
CREATE TABLE responders (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    pseudonym TEXT,
    topics_json TEXT NOT NULL,
    languages_json TEXT NOT NULL,
    timezone TEXT NOT NULL,
    hours_json TEXT NOT NULL,
    max_concurrent BIGINT NOT NULL,
    status TEXT NOT NULL,
    contacts_json TEXT NOT NULL,
    source TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL,
    last_offered_at BIGINT
);

-- Round-robin position per topic: the responder who was offered the topic's last
-- conversation, so the next one starts after them.
CREATE TABLE routing_cursors (
    topic TEXT PRIMARY KEY,
    last_responder_id TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- Load per responder (active_conversation_counts) groups active assignments by responder.
CREATE INDEX assignments_responder ON assignments (state, responder_id);
