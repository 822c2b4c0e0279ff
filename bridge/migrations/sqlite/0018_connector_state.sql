-- What a connector keeps about its own platform (email: each conversation's thread of
-- Message-IDs, single-use link tokens), as short texts under its own keys, so a platform's
-- needs never add tables outside its module (`connector::ConnectorState`).
CREATE TABLE connector_state (
    platform TEXT NOT NULL,
    state_key TEXT NOT NULL,
    state_value TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (platform, state_key)
);
