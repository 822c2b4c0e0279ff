//! Retention and erasure: what the store forgets, and when.
//!
//! - **Erasing a conversation** ([`Store::erase_conversation`]) deletes every row about its
//!   room, in one transaction: the conversation itself, its transcript (with the media
//!   references kept in `messages.media_json`), the homeserver events recorded for it
//!   (`inbox`), its deliveries (`outbox`), writes into its room (`room_posts`), offers,
//!   assignments, the map of platform messages to it (`remote_messages`), its initiator, its
//!   dead letters, the connectors' state about it (see [`CONVERSATION_STATE`]) and, when it
//!   was the visitor's last conversation, the visitor's proxy sessions. No minimal record is
//!   kept: nothing reads a conversation after it is closed except the operators' views and
//!   the proxy's "may this visitor read this room", and after an erasure neither should
//!   answer anything. (The block list of initiators holds keyed hashes, never a room or an
//!   address, and is the operator's decision: it is kept.)
//! - **The sweep** ([`Store::sweep`], `[retention] transcript_days`) erases every
//!   conversation closed before the cutoff, one transaction each (so other writers take turns
//!   between them), and then the rows that belong to no conversation and are older than the
//!   cutoff: processed platform events (`remote_inbox`, which holds responders' and
//!   initiators' words but no room), processed homeserver events and finished writes of rooms
//!   that are not conversations (Matrix responders' relay rooms and direct chats), what
//!   initiators wrote before picking a topic, and expired proxy sessions.
//!
//! A closed conversation's close time is its `updated_at`: closing is the last change made to
//! a conversation (`set_conversation_state`; nothing updates a closed one).

use std::collections::BTreeMap;

use serde::Serialize;
use sqlx::Row;

use super::{Fence, Store, StoreError};
use crate::conversation::ConversationState;

/// How many rows each table lost: what an erasure or a sweep reports (counts only, never a
/// visitor's identifier).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(transparent)]
#[schema(value_type = BTreeMap<String, u64>, example = json!({"messages": 12, "conversations": 1}))]
pub struct DeletedRows(BTreeMap<&'static str, u64>);

impl DeletedRows {
    fn add(&mut self, table: &'static str, n: u64) {
        if n > 0 {
            *self.0.entry(table).or_default() += n;
        }
    }

    fn merge(&mut self, other: DeletedRows) {
        for (table, n) in other.0 {
            self.add(table, n);
        }
    }

    /// Rows deleted from `table`.
    pub fn of(&self, table: &str) -> u64 {
        self.0.get(table).copied().unwrap_or(0)
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }
}

impl std::fmt::Display for DeletedRows {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.0.is_empty() {
            return f.write_str("none");
        }
        let parts: Vec<String> = self.0.iter().map(|(t, n)| format!("{t}: {n}")).collect();
        f.write_str(&parts.join(", "))
    }
}

/// The connectors' state about one conversation (`connector_state`, see
/// `connector::ConnectorState`): rows of the conversation's platforms whose key ends in
/// `:HANDLE`, or whose value is `HANDLE`, where HANDLE is the conversation's handle on that
/// platform (an offer's `remote_message_id`, the initiator's `thread`). The email connector's
/// `thread:TOKEN` (addresses, subject, Message-IDs) and `sent:ID` → TOKEN rows are such rows.
/// Written with `SUBSTR`/`LENGTH`, not `LIKE`, so a handle holding `%` or `_` matches only
/// itself.
const CONVERSATION_STATE: &str = "DELETE FROM connector_state WHERE EXISTS (
     SELECT 1 FROM (SELECT platform, remote_message_id AS handle FROM offers
                     WHERE room_id = $1 AND remote_message_id IS NOT NULL
                    UNION
                    SELECT platform, thread AS handle FROM initiators
                     WHERE room_id = $1 AND thread IS NOT NULL) AS h
      WHERE h.platform = connector_state.platform
        AND (connector_state.state_value = h.handle
             OR (LENGTH(connector_state.state_key) > LENGTH(h.handle)
                 AND SUBSTR(connector_state.state_key,
                            LENGTH(connector_state.state_key) - LENGTH(h.handle))
                     = ':' || h.handle)))";

/// Everything about the room `$1`, in the order it must go: rows that find what to delete
/// through other rows (connector state through offers, dead letters through the inbox and the
/// outbox, sessions through the conversation) before those rows.
const ERASE_ROOM: [(&str, &str); 12] = [
    ("connector_state", CONVERSATION_STATE),
    (
        "dead_letters",
        "DELETE FROM dead_letters WHERE room_id = $1
            OR (source = 'inbox' AND source_seq IN (SELECT seq FROM inbox WHERE room_id = $1))
            OR (source = 'outbox' AND source_seq IN (SELECT seq FROM outbox WHERE room_id = $1))",
    ),
    (
        "visitor_sessions",
        "DELETE FROM visitor_sessions
          WHERE user_id IN (SELECT visitor_user_id FROM conversations WHERE room_id = $1)
            AND NOT EXISTS (SELECT 1 FROM conversations c
                             WHERE c.visitor_user_id = visitor_sessions.user_id
                               AND c.room_id <> $1)",
    ),
    ("messages", "DELETE FROM messages WHERE room_id = $1"),
    ("inbox", "DELETE FROM inbox WHERE room_id = $1"),
    ("outbox", "DELETE FROM outbox WHERE room_id = $1"),
    ("room_posts", "DELETE FROM room_posts WHERE room_id = $1"),
    (
        "remote_messages",
        "DELETE FROM remote_messages WHERE room_id = $1",
    ),
    ("offers", "DELETE FROM offers WHERE room_id = $1"),
    ("assignments", "DELETE FROM assignments WHERE room_id = $1"),
    ("initiators", "DELETE FROM initiators WHERE room_id = $1"),
    // Last: the statements above find the visitor through it.
    (
        "conversations",
        "DELETE FROM conversations WHERE room_id = $1",
    ),
];

/// Rows older than the cutoff (`$1`, unix ms) that belong to no conversation, each with the
/// dead letters pointing at them first; and expired sessions (`$1` is then now).
const SWEEP_LOOSE: [(&str, &str); 7] = [
    (
        "dead_letters",
        "DELETE FROM dead_letters WHERE source = 'remote' AND source_seq IN
            (SELECT seq FROM remote_inbox WHERE processed_at IS NOT NULL AND received_at < $1)",
    ),
    (
        "remote_inbox",
        "DELETE FROM remote_inbox WHERE processed_at IS NOT NULL AND received_at < $1",
    ),
    (
        "dead_letters",
        "DELETE FROM dead_letters WHERE source = 'inbox' AND source_seq IN
            (SELECT seq FROM inbox WHERE processed_at IS NOT NULL AND received_at < $1
                AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.room_id = inbox.room_id))",
    ),
    (
        "inbox",
        "DELETE FROM inbox WHERE processed_at IS NOT NULL AND received_at < $1
            AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.room_id = inbox.room_id)",
    ),
    (
        "room_posts",
        "DELETE FROM room_posts WHERE (done_at IS NOT NULL OR failed_at IS NOT NULL)
            AND created_at < $1
            AND NOT EXISTS (SELECT 1 FROM conversations c WHERE c.room_id = room_posts.room_id)",
    ),
    (
        "initiator_pending",
        "DELETE FROM initiator_pending WHERE created_at < $1",
    ),
    // Expired sessions are worth nothing to anyone; they go whatever the cutoff.
    (
        "visitor_sessions",
        "DELETE FROM visitor_sessions WHERE expires_at <= $1",
    ),
];

/// How many closed conversations one read of the sweep takes; it reads again until none
/// is left.
const SWEEP_BATCH: i64 = 100;

/// Why a conversation was not erased.
#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("no such conversation")]
    NotFound,
    /// Someone is still in it: erasing would pull it from under the responder and the
    /// visitor. It can be erased once it is closed.
    #[error("the conversation is {}, not closed; it can be erased once it has ended", .0.as_str())]
    Open(ConversationState),
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl Store {
    /// Deletes every row about the closed conversation in `room_id` (see the module's
    /// description), in one transaction. An open conversation is refused
    /// ([`EraseError::Open`]) and keeps every row.
    pub async fn erase_conversation(&self, room_id: &str) -> Result<DeletedRows, EraseError> {
        match self.conversation(room_id).await? {
            None => Err(EraseError::NotFound),
            Some(c) if c.state != ConversationState::Closed => Err(EraseError::Open(c.state)),
            Some(_) => Ok(self.erase_room_rows(room_id, None).await?),
        }
    }

    /// The statements of [`ERASE_ROOM`] for `room_id`, in one transaction; the state is
    /// checked again inside it, so a conversation reopened meanwhile is left whole.
    /// Erases a closed conversation's rows, as the holder of `fence` when there is one.
    async fn erase_room_rows(
        &self,
        room_id: &str,
        fence: Option<&Fence>,
    ) -> Result<DeletedRows, StoreError> {
        let mut deleted = DeletedRows::default();
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;
        self.as_holder(&mut tx, fence).await?;
        let closed =
            sqlx::query("SELECT 1 AS one FROM conversations WHERE room_id = $1 AND state = $2")
                .bind(room_id)
                .bind(ConversationState::Closed.as_str())
                .fetch_optional(&mut *tx)
                .await?;
        if closed.is_none() {
            return Ok(deleted);
        }
        for (table, sql) in ERASE_ROOM {
            let n = sqlx::query(sql)
                .bind(room_id)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            deleted.add(table, n);
        }
        tx.commit().await?;
        Ok(deleted)
    }

    /// In a transaction about to write as the holder of `fence` (if any): fails with
    /// [`StoreError::Deposed`] unless it still holds its lease (the transaction is then
    /// rolled back, having written nothing).
    async fn as_holder(
        &self,
        tx: &mut sqlx::AnyConnection,
        fence: Option<&Fence>,
    ) -> Result<(), StoreError> {
        match fence {
            Some(fence) if !self.fence_holds(tx, fence).await? => {
                Err(StoreError::Deposed(fence.name.clone()))
            }
            _ => Ok(()),
        }
    }

    /// Closed conversations whose close (their `updated_at`) is before `cutoff_ms`, oldest
    /// first, at most `limit`.
    pub async fn closed_before(
        &self,
        cutoff_ms: i64,
        limit: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id FROM conversations WHERE state = $1 AND updated_at < $2
             ORDER BY updated_at, room_id LIMIT $3",
        )
        .bind(ConversationState::Closed.as_str())
        .bind(cutoff_ms)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("room_id")?)).collect()
    }

    /// Forgets what is older than `days` days by this store's clock: every conversation
    /// closed before then, and the rows of no conversation recorded before then (see the
    /// module's description). Each conversation goes in a transaction of its own. Returns
    /// what was deleted and how many conversations that was.
    ///
    /// The leader sweeps (`bridge/worker.rs`), as the holder of `fence`: each transaction
    /// checks that it still leads, so a leader deposed mid-sweep stops with
    /// [`StoreError::Deposed`], what it erased before staying erased.
    pub async fn sweep(&self, days: u32, fence: Option<&Fence>) -> Result<DeletedRows, StoreError> {
        let now = self.now_ms();
        let cutoff = now - i64::from(days) * 24 * 60 * 60 * 1000;
        let mut deleted = DeletedRows::default();
        loop {
            let rooms = self.closed_before(cutoff, SWEEP_BATCH).await?;
            if rooms.is_empty() {
                break;
            }
            let mut erased_any = false;
            for room in &rooms {
                let rows = self.erase_room_rows(room, fence).await?;
                erased_any |= rows.of("conversations") > 0;
                deleted.merge(rows);
            }
            if !erased_any {
                // Every one was reopened between the read and its erasure: nothing to loop on.
                break;
            }
        }
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;
        self.as_holder(&mut tx, fence).await?;
        for (table, sql) in SWEEP_LOOSE {
            // PostgreSQL refuses a parameter a statement does not use: one each.
            let bound = if table == "visitor_sessions" {
                now
            } else {
                cutoff
            };
            let n = sqlx::query(sql)
                .bind(bound)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            deleted.add(table, n);
        }
        tx.commit().await?;
        Ok(deleted)
    }
}
