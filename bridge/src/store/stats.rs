//! Counts for the metrics endpoint, read when Prometheus scrapes: how many conversations are
//! in each state, and how much work waits in each queue. Aggregates only: no row's content,
//! no room or visitor, leaves here.

use sqlx::Row;

use super::{Store, StoreError};

/// The queues and the conversations, counted.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct StoreGauges {
    /// Conversations by state (`queued`, `offered`, `active`, `transferring`, `closed`).
    pub conversations: Vec<(String, i64)>,
    /// Homeserver events recorded and not yet handled.
    pub inbox_pending: i64,
    /// Platform events recorded and not yet handled.
    pub remote_inbox_pending: i64,
    /// Per platform: deliveries waiting, and the most waiting in any one chat (a lane is a
    /// chat, which has no place in a label; its depth does).
    pub outbox_pending: Vec<OutboxDepth>,
    /// Offers sent or waiting to go out, not yet answered.
    pub offers_open: i64,
    /// Work set aside and not retried.
    pub dead_letters: i64,
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OutboxDepth {
    pub platform: String,
    pub rows: i64,
    pub deepest_lane: i64,
}

impl Store {
    /// Every count of [`StoreGauges`]. The queues are counted from their indexes (the
    /// undelivered outbox rows have a partial one; the inbox's pending rows lead theirs); the
    /// dead letters are few by nature.
    pub async fn gauges(&self) -> Result<StoreGauges, StoreError> {
        let count = |sql: &'static str| async move {
            let row = sqlx::query(sql).fetch_one(&self.pool).await?;
            Ok::<i64, StoreError>(row.try_get::<i64, _>(0)?)
        };
        let conversations = sqlx::query(
            "SELECT state, COUNT(*) AS n FROM conversations GROUP BY state ORDER BY state",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| Ok((r.try_get("state")?, r.try_get("n")?)))
        .collect::<Result<_, StoreError>>()?;
        let outbox_pending = sqlx::query(
            "SELECT platform, CAST(SUM(n) AS BIGINT) AS rows_waiting, MAX(n) AS deepest FROM (
                 SELECT platform, address, COUNT(*) AS n FROM outbox
                 WHERE done_at IS NULL AND failed_at IS NULL GROUP BY platform, address
             ) lanes GROUP BY platform ORDER BY platform",
        )
        .fetch_all(&self.pool)
        .await?
        .iter()
        .map(|r| {
            Ok(OutboxDepth {
                platform: r.try_get("platform")?,
                // Cast above: PostgreSQL's SUM of BIGINTs is a NUMERIC.
                rows: r.try_get("rows_waiting")?,
                deepest_lane: r.try_get("deepest")?,
            })
        })
        .collect::<Result<_, StoreError>>()?;
        Ok(StoreGauges {
            conversations,
            inbox_pending: count("SELECT COUNT(*) FROM inbox WHERE processed_at IS NULL").await?,
            remote_inbox_pending: count(
                "SELECT COUNT(*) FROM remote_inbox WHERE processed_at IS NULL",
            )
            .await?,
            outbox_pending,
            offers_open: count("SELECT COUNT(*) FROM offers WHERE state = 'open'").await?,
            dead_letters: count("SELECT COUNT(*) FROM dead_letters").await?,
        })
    }
}
