-- Leases: what must run on one instance at a time is run by whoever holds its lease (see
-- bridge/src/store/leases.rs). `epoch` grows by one each time the lease changes hands, and a
-- write made as the holder names it, so a holder that lost the lease cannot act twice.
CREATE TABLE leases (
    name TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    epoch BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
