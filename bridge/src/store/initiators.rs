//! Initiators: people who start a conversation from a platform (Telegram, …) rather than
//! the widget. Who they are on the platform (`address`) is kept only to reach them; what
//! rate limits and blocks count is a keyed hash of it (`address_key`).

use sqlx::Row;

use super::{Store, StoreError, conversation_from_row};
use crate::conversation::{Conversation, ConversationState};

/// The initiator of a conversation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitiatorRow {
    pub room_id: String,
    pub platform: String,
    pub address: String,
    /// Where on the platform they wrote, if the address alone is not enough (Matrix: the
    /// direct chat with the bot); what is sent to them goes there.
    pub thread: Option<String>,
    pub address_key: String,
    pub created_at: i64,
}

/// Something an initiator wrote before they picked a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingRow {
    pub seq: i64,
    pub event_json: String,
}

/// The conversations of the initiator at (`$1` platform, `$2` address) that are not in state
/// `$3` (closed), for the queries below to narrow and order.
macro_rules! open_initiator_conversations {
    () => {
        "SELECT c.room_id, c.topic, c.visitor_user_id, c.visitor_alias, c.state,
                c.created_at, c.language
         FROM initiators i JOIN conversations c ON c.room_id = i.room_id
         WHERE i.platform = $1 AND i.address = $2 AND c.state <> $3"
    };
}

impl Store {
    /// Records who started the conversation in `room_id`; once per room.
    pub async fn insert_initiator(&self, row: &InitiatorRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO initiators (room_id, platform, address, thread, address_key, created_at)
             VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (room_id) DO NOTHING",
        )
        .bind(&row.room_id)
        .bind(&row.platform)
        .bind(&row.address)
        .bind(&row.thread)
        .bind(&row.address_key)
        .bind(row.created_at)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Where answers in `room_id` go to its initiator from now on (see
    /// `RemoteEvent::TopicChosen::thread`).
    pub async fn set_initiator_thread(
        &self,
        room_id: &str,
        thread: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE initiators SET thread = $1 WHERE room_id = $2")
            .bind(thread)
            .bind(room_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Who started the conversation in `room_id`, if someone on a platform did.
    pub async fn initiator_of(&self, room_id: &str) -> Result<Option<InitiatorRow>, StoreError> {
        let row = sqlx::query(
            "SELECT room_id, platform, address, thread, address_key, created_at
             FROM initiators WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(InitiatorRow {
                room_id: r.try_get("room_id")?,
                platform: r.try_get("platform")?,
                address: r.try_get("address")?,
                thread: r.try_get("thread")?,
                address_key: r.try_get("address_key")?,
                created_at: r.try_get("created_at")?,
            })
        })
        .transpose()
    }

    /// The conversations the initiator at (`platform`, `address`) started that are not
    /// closed, newest first.
    pub async fn open_initiator_conversations(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<Vec<Conversation>, StoreError> {
        let rows = sqlx::query(concat!(
            open_initiator_conversations!(),
            " ORDER BY c.created_at DESC, c.room_id"
        ))
        .bind(platform)
        .bind(address)
        .bind(ConversationState::Closed.as_str())
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(conversation_from_row).collect()
    }

    /// The newest open conversation of the initiator at (`platform`, `address`) whose
    /// answers go to `thread`.
    pub async fn open_initiator_conversation_in(
        &self,
        platform: &str,
        address: &str,
        thread: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(concat!(
            open_initiator_conversations!(),
            " AND i.thread = $4 ORDER BY c.created_at DESC, c.room_id LIMIT 1"
        ))
        .bind(platform)
        .bind(address)
        .bind(ConversationState::Closed.as_str())
        .bind(thread)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    /// How many conversations the initiator whose keyed address is `address_key` started
    /// at or after `since` (unix ms), on any platform.
    pub async fn initiator_conversations_since(
        &self,
        address_key: &str,
        since: i64,
    ) -> Result<i64, StoreError> {
        let row = sqlx::query(
            "SELECT COUNT(*) AS n FROM initiators WHERE address_key = $1 AND created_at >= $2",
        )
        .bind(address_key)
        .bind(since)
        .fetch_one(&self.pool)
        .await?;
        Ok(row.try_get("n")?)
    }

    /// Keeps something the initiator wrote before picking a topic.
    pub async fn add_initiator_pending(
        &self,
        platform: &str,
        address: &str,
        event_json: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO initiator_pending (platform, address, event_json, created_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(platform)
        .bind(address)
        .bind(event_json)
        .bind(self.now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// What the initiator wrote before picking a topic, oldest first.
    pub async fn initiator_pending(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<Vec<PendingRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, event_json FROM initiator_pending
             WHERE platform = $1 AND address = $2 ORDER BY seq",
        )
        .bind(platform)
        .bind(address)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(PendingRow {
                    seq: r.try_get("seq")?,
                    event_json: r.try_get("event_json")?,
                })
            })
            .collect()
    }

    /// Forgets what the initiator wrote before picking a topic, up to `seq`: it has been
    /// queued into their conversation.
    pub async fn clear_initiator_pending(
        &self,
        platform: &str,
        address: &str,
        up_to: i64,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM initiator_pending WHERE platform = $1 AND address = $2 AND seq <= $3",
        )
        .bind(platform)
        .bind(address)
        .bind(up_to)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Blocks the initiator whose keyed address is `address_key` from starting
    /// conversations; true if they were not blocked before.
    pub async fn block_initiator(&self, address_key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "INSERT INTO initiator_blocks (address_key, created_at) VALUES ($1, $2)
             ON CONFLICT (address_key) DO NOTHING",
        )
        .bind(address_key)
        .bind(self.now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Lifts a block; true if there was one.
    pub async fn unblock_initiator(&self, address_key: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM initiator_blocks WHERE address_key = $1")
            .bind(address_key)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected() > 0)
    }

    pub async fn is_initiator_blocked(&self, address_key: &str) -> Result<bool, StoreError> {
        let row = sqlx::query("SELECT 1 AS one FROM initiator_blocks WHERE address_key = $1")
            .bind(address_key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.is_some())
    }
}
