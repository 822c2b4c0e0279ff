-- What the appservice endpoint keeps for every instance behind the same URL: the transaction
-- order guard's state (appservice/src/txn_order.rs), as JSON under one key. Read and written
-- only when several instances share a PostgreSQL database; one instance keeps it in memory.
CREATE TABLE appservice_state (
    state_key TEXT PRIMARY KEY,
    state_value TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
