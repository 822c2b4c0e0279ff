//! The queries the lanes read their work with (see `bridge/lanes.rs`): which conversations have
//! pending events, one conversation's pending events, remote events after a cursor, and one
//! responder chat's pending deliveries. Each reads only the rows its lane needs.

use sqlx::Row;

use super::{InboxEvent, OutboxRow, RemoteInboxEvent, Store, StoreError, remote::outbox_row};

impl Store {
    /// Pending events after `after` (by arrival), as (seq, room): which rooms have new work.
    pub async fn pending_inbox_rooms_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<(i64, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, room_id FROM inbox
             WHERE processed_at IS NULL AND seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("seq")?, r.try_get("room_id")?)))
            .collect()
    }

    /// Every room with an unprocessed event, for the lanes' periodic look at the whole inbox.
    pub async fn pending_inbox_rooms(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT room_id FROM inbox WHERE processed_at IS NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("room_id")?)).collect()
    }

    /// One room's oldest unprocessed events, in arrival order.
    pub async fn pending_events_in_room(
        &self,
        room_id: &str,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, event_id, room_id, event_json FROM inbox
             WHERE room_id = $1 AND processed_at IS NULL ORDER BY seq LIMIT $2",
        )
        .bind(room_id)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(InboxEvent {
                    seq: r.try_get("seq")?,
                    event_id: r.try_get("event_id")?,
                    room_id: r.try_get("room_id")?,
                    event_json: r.try_get("event_json")?,
                })
            })
            .collect()
    }

    /// Unprocessed remote events after `after`, in arrival order.
    pub async fn pending_remote_events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RemoteInboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, platform, event_json FROM remote_inbox
             WHERE processed_at IS NULL AND seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(RemoteInboxEvent {
                    seq: r.try_get("seq")?,
                    platform: r.try_get("platform")?,
                    event_json: r.try_get("event_json")?,
                })
            })
            .collect()
    }

    /// Every (platform, address) with undelivered rows, with when its first row is due.
    pub async fn outbox_lanes(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT platform, address, MIN(next_attempt_at) AS due FROM outbox
             WHERE done_at IS NULL AND failed_at IS NULL GROUP BY platform, address",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("platform")?,
                    r.try_get("address")?,
                    r.try_get("due")?,
                ))
            })
            .collect()
    }

    /// One chat's undelivered rows in queue order, with when each is next due.
    pub async fn pending_outbox_to(
        &self,
        platform: &str,
        address: &str,
        limit: i64,
    ) -> Result<Vec<(OutboxRow, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, room_id, platform, address, event_id, payload_json, attempts,
                    next_attempt_at, parts_json, parts_sent
             FROM outbox
             WHERE platform = $1 AND address = $2 AND done_at IS NULL AND failed_at IS NULL
             ORDER BY seq LIMIT $3",
        )
        .bind(platform)
        .bind(address)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }
}
