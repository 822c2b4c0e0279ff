//! Store tables for remote platforms: their inbox, offers, assignments, message mapping and
//! the ordered outbox.

use sqlx::Row;

use super::{Engine, Fence, Store, StoreError};

/// One recorded remote event.
#[derive(Debug, Clone)]
pub struct RemoteInboxEvent {
    pub seq: i64,
    pub platform: String,
    pub event_json: String,
    /// When it was recorded (unix ms): how long it waited is a metric.
    pub received_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferRow {
    pub id: i64,
    pub room_id: String,
    pub responder_id: String,
    pub platform: String,
    pub address: String,
    pub state: String,
    pub remote_message_id: Option<String>,
    /// When the offer was made (unix ms), or made again (see [`Store::reopen_offer`]): tells
    /// one round of an offer from the next.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRow {
    pub room_id: String,
    pub responder_id: String,
    pub platform: String,
    pub address: String,
    pub ghost_user_id: String,
    pub state: String,
}

/// One entry of a conversation's assignment history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentHistory {
    pub assignment: AssignmentRow,
    /// When they took it (unix ms).
    pub started_at: i64,
    /// When it was handed over or ended; `None` while they hold it.
    pub ended_at: Option<i64>,
    /// Why: the hand-off reason, or who ended the conversation.
    pub end_reason: Option<String>,
}

#[derive(Debug, Clone)]
pub struct OutboxRow {
    pub seq: i64,
    pub room_id: String,
    pub platform: String,
    pub address: String,
    pub event_id: String,
    pub payload_json: String,
    pub attempts: i64,
    /// The platform messages this delivery becomes, as rendered for its first attempt;
    /// `None` until then.
    pub parts: Option<Vec<String>>,
    /// How many of `parts` the platform has accepted; delivery resumes at this one.
    pub parts_sent: i64,
}

const OFFER_COLUMNS: &str =
    "id, room_id, responder_id, platform, address, state, remote_message_id, created_at";
const ASSIGNMENT_COLUMNS: &str = "room_id, responder_id, platform, address, ghost_user_id, state";

/// Maps a remote message to its room and Matrix event (`$1` platform, `$2` chat, `$3` message
/// ID, `$4` room, `$5` event). Mapping again only fills in a missing event.
const MAP_REMOTE_MESSAGE: &str = map_remote_message!();

macro_rules! map_remote_message {
    () => {
        "INSERT INTO remote_messages (platform, chat, message_id, room_id, event_id)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (platform, chat, message_id)
         DO UPDATE SET event_id = COALESCE(remote_messages.event_id, excluded.event_id)"
    };
}
use map_remote_message;

/// A part of an outbox row counted as sent (`$1` the new count, `$2` whether that was its
/// last part, `$3` now, `$4` the row, `$5` the count it was at), returning the count if it
/// moved: the count moves only from the part it was at; the row is done with its last part.
const MOVE_PART: &str = "UPDATE outbox SET parts_sent = $1, attempts = 0,
         done_at = CASE WHEN $2 THEN $3 ELSE done_at END
     WHERE seq = $4 AND parts_sent = $5 RETURNING parts_sent";

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

/// A conversation and its active assignments, each with its holder's thread (see
/// [`Store::conversation_with_holders`]).
pub type ConversationWithHolders = (
    crate::conversation::Conversation,
    Vec<(AssignmentRow, Option<String>)>,
);

/// Binds [`MAP_REMOTE_MESSAGE`]'s parameters for a part of `row` sent as `message_id`.
fn bind_map<'q>(query: AnyQuery<'q>, row: &'q OutboxRow, message_id: &'q str) -> AnyQuery<'q> {
    query
        .bind(&row.platform)
        .bind(&row.address)
        .bind(message_id)
        .bind(&row.room_id)
        .bind(&row.event_id)
}

/// Binds [`MOVE_PART`]'s parameters (after [`bind_map`]'s in [`MAP_AND_MOVE`]).
fn bind_move<'q>(
    query: AnyQuery<'q>,
    row: &OutboxRow,
    index: i64,
    done: bool,
    now: i64,
) -> AnyQuery<'q> {
    query
        .bind(index + 1)
        .bind(done)
        .bind(now)
        .bind(row.seq)
        .bind(index)
}

/// [`MAP_REMOTE_MESSAGE`], then [`MOVE_PART`] numbered on from it, as one transaction: SQLite
/// runs them all from one string (see `Writer::atomic`).
const MAP_AND_MOVE_ATOMIC: &str = concat!(
    "BEGIN IMMEDIATE;\n",
    map_remote_message!(),
    ";\n",
    "UPDATE outbox SET parts_sent = $6, attempts = 0,
         done_at = CASE WHEN $7 THEN $8 ELSE done_at END
     WHERE seq = $9 AND parts_sent = $10 RETURNING parts_sent;\n",
    "COMMIT"
);

fn offer_from_row(r: &sqlx::any::AnyRow) -> Result<OfferRow, StoreError> {
    Ok(OfferRow {
        id: r.try_get("id")?,
        room_id: r.try_get("room_id")?,
        responder_id: r.try_get("responder_id")?,
        platform: r.try_get("platform")?,
        address: r.try_get("address")?,
        state: r.try_get("state")?,
        remote_message_id: r.try_get("remote_message_id")?,
        created_at: r.try_get("created_at")?,
    })
}

fn assignment_from_row(r: &sqlx::any::AnyRow) -> Result<AssignmentRow, StoreError> {
    Ok(AssignmentRow {
        room_id: r.try_get("room_id")?,
        responder_id: r.try_get("responder_id")?,
        platform: r.try_get("platform")?,
        address: r.try_get("address")?,
        ghost_user_id: r.try_get("ghost_user_id")?,
        state: r.try_get("state")?,
    })
}

/// The advisory lock key that orders inserts into `remote_inbox` on PostgreSQL (an arbitrary
/// constant of ours: "SBRI" in ASCII).
pub const REMOTE_INBOX_ORDER_LOCK: i64 = 0x5342_5249;

/// What recording a remote event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Written now.
    New,
    /// Written before (the platform sent it again): nothing to do.
    Known,
    /// Not written: the fence it was written under no longer holds its lease.
    Deposed,
}

impl Store {
    /// Records a remote event once per (platform, key). Returns whether it was new.
    pub async fn record_remote_event(
        &self,
        platform: &str,
        key: &str,
        json: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .record_remote_event_as(None, platform, key, json)
            .await?
            == Recorded::New)
    }

    /// Records a remote event once per (platform, key), as the holder of `fence` when there
    /// is one: a platform's receiver runs on the leader only (`cluster.rs`), and a leader
    /// deposed while it held an event in hand (paused past its lease, cut off from the
    /// database) must not record it, nor anything after it, as leader: [`Recorded::Deposed`],
    /// nothing written. The lease is checked in the transaction of the insert, and on
    /// PostgreSQL its row is share-locked until the commit, so a takeover (which updates the
    /// row) waits for the insert rather than slipping in between the check and the write.
    ///
    /// The events are committed in the order of their `seq`. The scheduler hands platform
    /// events out after a cursor (`worker.rs`, `schedule_remote`), so a row that drew its
    /// number before another but committed after it would be passed over until the next full
    /// look, while a later event of the same chat went first. On SQLite writers take turns
    /// anyway; on PostgreSQL several receivers (and instances) insert at once, so each insert
    /// holds a transaction-scoped advisory lock (it passes through pgbouncer's transaction
    /// pooling) from before its number is drawn until its commit.
    pub async fn record_remote_event_as(
        &self,
        fence: Option<&Fence>,
        platform: &str,
        key: &str,
        json: &str,
    ) -> Result<Recorded, StoreError> {
        let now = self.now_ms();
        let insert = sqlx::query(
            "INSERT INTO remote_inbox (platform, event_key, event_json, received_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (platform, event_key) DO NOTHING",
        )
        .bind(platform)
        .bind(key)
        .bind(json)
        .bind(now);
        let done = match self.engine {
            // One writer connection at a time, held from the check to the insert.
            Engine::Sqlite => {
                let mut writer = self.writer().await?;
                if let Some(fence) = fence
                    && !self.fence_holds(&mut writer, fence).await?
                {
                    return Ok(Recorded::Deposed);
                }
                insert.execute(&mut *writer).await?
            }
            Engine::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(REMOTE_INBOX_ORDER_LOCK)
                    .execute(&mut *tx)
                    .await?;
                if let Some(fence) = fence
                    && !self.fence_holds(&mut tx, fence).await?
                {
                    return Ok(Recorded::Deposed);
                }
                let done = insert.execute(&mut *tx).await?;
                tx.commit().await?;
                done
            }
        };
        Ok(if done.rows_affected() == 1 {
            Recorded::New
        } else {
            Recorded::Known
        })
    }

    pub async fn pending_remote_events(
        &self,
        limit: i64,
    ) -> Result<Vec<RemoteInboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, platform, event_json, received_at FROM remote_inbox
             WHERE processed_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(remote_inbox_event).collect()
    }

    pub async fn mark_remote_processed(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE remote_inbox SET processed_at = $1 WHERE seq = $2")
            .bind(self.now_ms())
            .bind(seq)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Creates an open offer, or returns the existing one for this room and responder.
    pub async fn create_offer(
        &self,
        room_id: &str,
        responder_id: &str,
        platform: &str,
        address: &str,
    ) -> Result<OfferRow, StoreError> {
        sqlx::query(
            "INSERT INTO offers (room_id, responder_id, platform, address, state, created_at)
             VALUES ($1, $2, $3, $4, 'open', $5)
             ON CONFLICT (room_id, responder_id, platform, address) DO NOTHING",
        )
        .bind(room_id)
        .bind(responder_id)
        .bind(platform)
        .bind(address)
        .bind(self.now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers
             WHERE room_id = $1 AND responder_id = $2 AND platform = $3 AND address = $4"
        ))
        .bind(room_id)
        .bind(responder_id)
        .bind(platform)
        .bind(address)
        .fetch_one(&self.pool)
        .await?;
        offer_from_row(&row)
    }

    pub async fn offer(&self, id: i64) -> Result<Option<OfferRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {OFFER_COLUMNS} FROM offers WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(offer_from_row).transpose()
    }

    /// Open offers made before `before_ms`, with the topic of their conversation and when
    /// they were made (unix ms), oldest first. Timers live in the database, so one due while Switchboard was down fires when it
    /// is back.
    pub async fn open_offers_before(
        &self,
        before_ms: i64,
    ) -> Result<Vec<(OfferRow, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, o.room_id, o.responder_id, o.platform, o.address, o.state, o.remote_message_id, c.topic, o.created_at
             FROM offers o JOIN conversations c ON c.room_id = o.room_id
             WHERE o.state = 'open' AND o.created_at < $1 ORDER BY o.created_at, o.id",
        )
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    offer_from_row(r)?,
                    r.try_get("topic")?,
                    r.try_get("created_at")?,
                ))
            })
            .collect()
    }

    /// The offer whose remote handle (Telegram message, Matrix relay room) this is.
    pub async fn offer_by_handle(
        &self,
        platform: &str,
        handle: &str,
    ) -> Result<Option<OfferRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers WHERE platform = $1 AND remote_message_id = $2 ORDER BY id DESC LIMIT 1"
        ))
        .bind(platform)
        .bind(handle)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(offer_from_row).transpose()
    }

    pub async fn offers_for_room(&self, room_id: &str) -> Result<Vec<OfferRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers WHERE room_id = $1 ORDER BY id"
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(offer_from_row).collect()
    }

    /// One chat's open offers that have not gone out yet, oldest first. An offer is sent in
    /// the lane of the chat it goes to, in that chat's paced turn, not by routing itself.
    pub async fn unsent_offers_to(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<Vec<OfferRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers
             WHERE state = 'open' AND remote_message_id IS NULL AND platform = $1 AND address = $2
             ORDER BY id"
        ))
        .bind(platform)
        .bind(address)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(offer_from_row).collect()
    }

    /// The chats (platform, address) with an open offer that has not gone out yet.
    pub async fn unsent_offer_chats(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT platform, address FROM offers
             WHERE state = 'open' AND remote_message_id IS NULL ORDER BY platform, address",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("platform")?, r.try_get("address")?)))
            .collect()
    }

    pub async fn set_offer_message(
        &self,
        id: i64,
        remote_message_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE offers SET remote_message_id = $1 WHERE id = $2")
            .bind(remote_message_id)
            .bind(id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Moves an offer from `from` to `to`; false if it was not in `from` any more.
    pub async fn transition_offer(
        &self,
        id: i64,
        from: &str,
        to: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE offers SET state = $1 WHERE id = $2 AND state = $3")
            .bind(to)
            .bind(id)
            .bind(from)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The atomic claim: exactly one caller moves a waiting conversation to active, whichever
    /// platform its accept came from.
    pub async fn claim_conversation(&self, room_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE conversations SET state = 'active', updated_at = $1 WHERE room_id = $2 AND state IN ('queued', 'offered', 'transferring')",
        )
        .bind(self.now_ms())
        .bind(room_id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn upsert_assignment(&self, a: &AssignmentRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO assignments (room_id, responder_id, platform, address, ghost_user_id, state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (room_id, responder_id) DO UPDATE SET state = excluded.state,
                 platform = excluded.platform, address = excluded.address,
                 ghost_user_id = excluded.ghost_user_id, created_at = excluded.created_at,
                 ended_at = NULL, end_reason = NULL
             WHERE assignments.state <> excluded.state",
        )
        .bind(&a.room_id)
        .bind(&a.responder_id)
        .bind(&a.platform)
        .bind(&a.address)
        .bind(&a.ghost_user_id)
        .bind(&a.state)
        .bind(self.now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    pub async fn active_assignments_for_room(
        &self,
        room_id: &str,
    ) -> Result<Vec<AssignmentRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE room_id = $1 AND state = 'active'"
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment_from_row).collect()
    }

    /// The conversation's active assignments, each with the handle of the offer its holder
    /// accepted (`remote_message_id`: a Matrix responder's relay room), in one read.
    pub async fn active_assignments_with_threads(
        &self,
        room_id: &str,
    ) -> Result<Vec<(AssignmentRow, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.room_id, a.responder_id, a.platform, a.address, a.ghost_user_id, a.state,
                    o.remote_message_id
             FROM assignments a
             LEFT JOIN offers o ON o.room_id = a.room_id AND o.responder_id = a.responder_id
                  AND o.platform = a.platform AND o.address = a.address AND o.state = 'accepted'
             WHERE a.room_id = $1 AND a.state = 'active'",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((assignment_from_row(r)?, r.try_get("remote_message_id")?)))
            .collect()
    }

    /// The conversation in `room_id` with what [`Self::active_assignments_with_threads`]
    /// gives, in one read: what a lane needs before it relays a visitor's messages.
    pub async fn conversation_with_holders(
        &self,
        room_id: &str,
    ) -> Result<Option<ConversationWithHolders>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.room_id, c.topic, c.visitor_user_id, c.visitor_alias, c.state, c.created_at,
                    c.language, a.responder_id, a.platform, a.address, a.ghost_user_id,
                    a.state AS assignment_state, o.remote_message_id
             FROM conversations c
             LEFT JOIN assignments a ON a.room_id = c.room_id AND a.state = 'active'
             LEFT JOIN offers o ON o.room_id = a.room_id AND o.responder_id = a.responder_id
                  AND o.platform = a.platform AND o.address = a.address AND o.state = 'accepted'
             WHERE c.room_id = $1",
        )
        .bind(room_id)
        .fetch_all(&mut *self.reader().await?)
        .await?;
        let Some(first) = rows.first() else {
            return Ok(None);
        };
        let conversation = super::conversation_from_row(first)?;
        let mut holders = Vec::new();
        for r in &rows {
            // No active assignment: the one row has NULLs for the assignment's columns.
            let Some(responder_id) = r.try_get::<Option<String>, _>("responder_id")? else {
                continue;
            };
            holders.push((
                AssignmentRow {
                    room_id: conversation.room_id.clone(),
                    responder_id,
                    platform: r.try_get("platform")?,
                    address: r.try_get("address")?,
                    ghost_user_id: r.try_get("ghost_user_id")?,
                    state: r.try_get("assignment_state")?,
                },
                r.try_get("remote_message_id")?,
            ));
        }
        Ok(Some((conversation, holders)))
    }

    /// Makes a finished offer (taken, declined, withdrawn, expired, or accepted by a holder
    /// who has since handed the conversation over) open again, as a new round: its message is
    /// forgotten so a new one goes out. For a conversation handed to this responder by name.
    /// False if it was open already.
    pub async fn reopen_offer(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE offers SET state = 'open', remote_message_id = NULL, created_at = $1
             WHERE id = $2 AND state <> 'open'",
        )
        .bind(self.now_ms())
        .bind(id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Where conversations are held on `platform` now: each active assignment's address and
    /// the handle of the offer it was accepted by (a Discord thread, a Telegram offer message),
    /// oldest handle first.
    pub async fn held_places(
        &self,
        platform: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.address, o.remote_message_id
             FROM assignments a
             LEFT JOIN offers o ON o.room_id = a.room_id AND o.responder_id = a.responder_id
                  AND o.platform = a.platform AND o.address = a.address AND o.state = 'accepted'
             WHERE a.platform = $1 AND a.state = 'active'
             ORDER BY o.id",
        )
        .bind(platform)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("address")?, r.try_get("remote_message_id")?)))
            .collect()
    }

    /// Every active assignment with when it started (unix ms), oldest first.
    /// Ends an active assignment: `state` is `transferred` or `ended`, `reason` says why. Only
    /// an active one changes, so handling the same hand-off twice records it once.
    pub async fn finish_assignment(
        &self,
        room_id: &str,
        responder_id: &str,
        state: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE assignments SET state = $1, ended_at = $2, end_reason = $3
             WHERE room_id = $4 AND responder_id = $5 AND state = 'active'",
        )
        .bind(state)
        .bind(self.now_ms())
        .bind(reason)
        .bind(room_id)
        .bind(responder_id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Who held a conversation, when, and why they stopped, oldest first.
    pub async fn assignment_history(
        &self,
        room_id: &str,
    ) -> Result<Vec<AssignmentHistory>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ASSIGNMENT_COLUMNS}, created_at, ended_at, end_reason FROM assignments
             WHERE room_id = $1 ORDER BY created_at, responder_id"
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AssignmentHistory {
                    assignment: assignment_from_row(r)?,
                    started_at: r.try_get("created_at")?,
                    ended_at: r.try_get("ended_at")?,
                    end_reason: r.try_get("end_reason")?,
                })
            })
            .collect()
    }

    pub async fn all_active_assignments(&self) -> Result<Vec<(AssignmentRow, i64)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ASSIGNMENT_COLUMNS}, created_at FROM assignments WHERE state = 'active' ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((assignment_from_row(r)?, r.try_get("created_at")?)))
            .collect()
    }

    /// A responder's active conversations on one platform address, oldest first.
    pub async fn active_assignments_for_address(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<Vec<AssignmentRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments
             WHERE platform = $1 AND address = $2 AND state = 'active' ORDER BY created_at, room_id"
        ))
        .bind(platform)
        .bind(address)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment_from_row).collect()
    }

    /// Maps a remote message to its room and, once it is posted, to the Matrix event it
    /// became. Mapping again only fills in a missing event: a message is mapped to its room
    /// when it is queued (so replies and edits find it at once) and to its event when posted.
    pub async fn map_remote_message(
        &self,
        platform: &str,
        chat: &str,
        message_id: &str,
        room_id: &str,
        event_id: Option<&str>,
    ) -> Result<(), StoreError> {
        sqlx::query(MAP_REMOTE_MESSAGE)
            .bind(platform)
            .bind(chat)
            .bind(message_id)
            .bind(room_id)
            .bind(event_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    pub async fn room_of_remote_message(
        &self,
        platform: &str,
        chat: &str,
        message_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT room_id FROM remote_messages WHERE platform = $1 AND chat = $2 AND message_id = $3")
            .bind(platform)
            .bind(chat)
            .bind(message_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("room_id")).transpose()?)
    }

    /// The room and Matrix event a remote message became, if it was mapped.
    pub async fn remote_message(
        &self,
        platform: &str,
        chat: &str,
        message_id: &str,
    ) -> Result<Option<(String, Option<String>)>, StoreError> {
        let row = sqlx::query(
            "SELECT room_id, event_id FROM remote_messages WHERE platform = $1 AND chat = $2 AND message_id = $3",
        )
        .bind(platform)
        .bind(chat)
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("room_id")?, r.try_get("event_id")?)))
            .transpose()
    }

    /// Queues a delivery; a second enqueue of the same event for the same address is ignored.
    pub async fn enqueue_outbox(
        &self,
        room_id: &str,
        platform: &str,
        address: &str,
        event_id: &str,
        payload_json: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(ENQUEUE_OUTBOX)
            .bind(room_id)
            .bind(platform)
            .bind(address)
            .bind(event_id)
            .bind(payload_json)
            .bind(self.now_ms())
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Undelivered rows in queue order (due or not: the caller keeps per-room order by
    /// skipping a room once its first row is not due).
    pub async fn pending_outbox(&self, limit: i64) -> Result<Vec<(OutboxRow, i64)>, StoreError> {
        // At most PER_ROOM_BATCH rows of any one conversation: a conversation with a long
        // backlog must not fill the batch and keep every other conversation waiting.
        let rows = sqlx::query(
            "SELECT seq, room_id, platform, address, event_id, payload_json, attempts, next_attempt_at,
                    parts_json, parts_sent
             FROM (SELECT *, ROW_NUMBER() OVER (PARTITION BY room_id ORDER BY seq) AS in_room
                   FROM outbox WHERE done_at IS NULL AND failed_at IS NULL) AS pending
             WHERE in_room <= $1 ORDER BY seq LIMIT $2",
        )
        .bind(super::PER_ROOM_BATCH)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(outbox_row).collect()
    }

    /// Stores the parts a row's delivery was rendered into, before the first one is sent. A
    /// row that already has parts keeps them, so the split never changes under a resume.
    /// Returns the parts the row holds now.
    pub async fn outbox_set_parts(
        &self,
        seq: i64,
        parts: &[String],
    ) -> Result<Vec<String>, StoreError> {
        let json = serde_json::to_string(parts).expect("strings always serialise");
        sqlx::query("UPDATE outbox SET parts_json = $1 WHERE seq = $2 AND parts_json IS NULL")
            .bind(&json)
            .bind(seq)
            .execute(&mut *self.writer().await?)
            .await?;
        let stored: Option<String> = sqlx::query("SELECT parts_json FROM outbox WHERE seq = $1")
            .bind(seq)
            .fetch_one(&self.pool)
            .await?
            .try_get("parts_json")?;
        serde_json::from_str(stored.as_deref().unwrap_or("[]")).map_err(|e| StoreError::Corrupt {
            table: "outbox",
            detail: format!("parts_json: {e}"),
        })
    }

    /// Records, in one transaction, that the platform accepted part `index` of `row` as its
    /// message `message_id` (in the row's chat): the message is mapped to the room and event
    /// (so replies to it find their conversation) and the row's `parts_sent` moves past it.
    /// Failed attempts start counting afresh, since the platform has just answered.
    /// Recording the same part twice changes nothing. Returns how many parts are now sent.
    pub async fn outbox_part_sent(
        &self,
        row: &OutboxRow,
        index: i64,
        message_id: &str,
    ) -> Result<i64, StoreError> {
        self.outbox_part_sent_done(row, index, message_id, false, true)
            .await
    }

    /// [`Self::outbox_part_sent`], and with `done` the row is marked delivered in the same
    /// transaction: the last part of a message costs one commit, not two. Without `flush`
    /// the commit is a relaxed one (see [`Store::relaxed`]): for a platform that folds a
    /// part sent twice (`Capabilities::idempotent_sends`), where losing the record in a power
    /// cut costs a send the platform ignores, not a message doubled.
    pub async fn outbox_part_sent_done(
        &self,
        row: &OutboxRow,
        index: i64,
        message_id: &str,
        done: bool,
        flush: bool,
    ) -> Result<i64, StoreError> {
        let seq = row.seq;
        let mut writer = if flush {
            self.writer().await?
        } else {
            self.relaxed().await?
        };
        let now = self.now_ms();
        let moved = if self.engine == Engine::Sqlite {
            // Both statements, and the transaction around them, in one round trip to the
            // connection's thread: numbered parameters count across them, and the row (if
            // any) is the UPDATE's.
            let query = bind_map(sqlx::query(MAP_AND_MOVE_ATOMIC), row, message_id);
            writer
                .atomic(bind_move(query, row, index, done, now))
                .await?
                .into_iter()
                .next()
        } else {
            let mut tx = sqlx::Connection::begin(&mut *writer).await?;
            bind_map(sqlx::query(MAP_REMOTE_MESSAGE), row, message_id)
                .execute(&mut *tx)
                .await?;
            let moved = bind_move(sqlx::query(MOVE_PART), row, index, done, now)
                .fetch_optional(&mut *tx)
                .await?;
            tx.commit().await?;
            moved
        };
        if let Some(row) = moved {
            return Ok(row.try_get("parts_sent")?);
        }
        // Recorded already (a second pass over the same part): say where it stands, and
        // finish the row if this was its last part.
        if done {
            sqlx::query("UPDATE outbox SET done_at = $1 WHERE seq = $2 AND done_at IS NULL")
                .bind(now)
                .bind(seq)
                .execute(&mut *writer)
                .await?;
        }
        Ok(sqlx::query("SELECT parts_sent FROM outbox WHERE seq = $1")
            .bind(seq)
            .fetch_one(&mut *writer)
            .await?
            .try_get("parts_sent")?)
    }

    pub async fn outbox_done(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET done_at = $1 WHERE seq = $2")
            .bind(self.now_ms())
            .bind(seq)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    pub async fn outbox_retry_at(&self, seq: i64, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = $1 WHERE seq = $2",
        )
        .bind(at_ms)
        .bind(seq)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    pub async fn outbox_failed(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE outbox SET failed_at = $1 WHERE seq = $2")
            .bind(self.now_ms())
            .bind(seq)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }
}

/// A platform event as the queries here read it.
pub(super) fn remote_inbox_event(r: &sqlx::any::AnyRow) -> Result<RemoteInboxEvent, StoreError> {
    Ok(RemoteInboxEvent {
        seq: r.try_get("seq")?,
        platform: r.try_get("platform")?,
        event_json: r.try_get("event_json")?,
        received_at: r.try_get("received_at")?,
    })
}

/// A delivery queued once per (event, platform, address).
pub(super) const ENQUEUE_OUTBOX: &str =
    "INSERT INTO outbox (room_id, platform, address, event_id, payload_json, next_attempt_at)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, platform, address) DO NOTHING";

/// An outbox row as read by the queries here, with when it is next due.
pub(super) fn outbox_row(r: &sqlx::any::AnyRow) -> Result<(OutboxRow, i64), StoreError> {
    let parts = r
        .try_get::<Option<String>, _>("parts_json")?
        .map(|json| serde_json::from_str::<Vec<String>>(&json))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            table: "outbox",
            detail: format!("parts_json: {e}"),
        })?;
    Ok((
        OutboxRow {
            seq: r.try_get("seq")?,
            room_id: r.try_get("room_id")?,
            platform: r.try_get("platform")?,
            address: r.try_get("address")?,
            event_id: r.try_get("event_id")?,
            payload_json: r.try_get("payload_json")?,
            attempts: r.try_get("attempts")?,
            parts,
            parts_sent: r.try_get("parts_sent")?,
        },
        r.try_get("next_attempt_at")?,
    ))
}

/// How long an issued link code stays valid.
pub const LINK_CODE_TTL_MS: i64 = 24 * 60 * 60 * 1000;

impl Store {
    pub async fn create_link_code(
        &self,
        code: &str,
        responder_id: &str,
        platform: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO link_codes (code, responder_id, platform, created_at) VALUES ($1, $2, $3, $4)")
            .bind(code)
            .bind(responder_id)
            .bind(platform)
            .bind(self.now_ms())
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Uses a code once: returns the responder it links, or None if it is unknown, used,
    /// expired or for another platform. The link replaces any earlier one of that responder
    /// on the platform.
    pub async fn redeem_link_code(
        &self,
        code: &str,
        platform: &str,
        address: &str,
    ) -> Result<Option<String>, StoreError> {
        let now = self.now_ms();
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;
        let used = sqlx::query(
            "UPDATE link_codes SET used_at = $1
             WHERE code = $2 AND platform = $3 AND used_at IS NULL AND created_at > $4",
        )
        .bind(now)
        .bind(code)
        .bind(platform)
        .bind(now - LINK_CODE_TTL_MS)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Ok(None);
        }
        let responder: String = sqlx::query("SELECT responder_id FROM link_codes WHERE code = $1")
            .bind(code)
            .fetch_one(&mut *tx)
            .await?
            .try_get("responder_id")?;
        sqlx::query("DELETE FROM responder_links WHERE platform = $1 AND (responder_id = $2 OR address = $3)")
            .bind(platform)
            .bind(&responder)
            .bind(address)
            .execute(&mut *tx)
            .await?;
        sqlx::query("INSERT INTO responder_links (platform, address, responder_id, linked_at) VALUES ($1, $2, $3, $4)")
            .bind(platform)
            .bind(address)
            .bind(&responder)
            .bind(now)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(Some(responder))
    }

    /// The responder who linked this address themselves.
    pub async fn linked_responder(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT responder_id FROM responder_links WHERE platform = $1 AND address = $2",
        )
        .bind(platform)
        .bind(address)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("responder_id")).transpose()?)
    }

    /// Addresses a responder linked themselves, by platform.
    pub async fn links_of(&self, responder_id: &str) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT platform, address FROM responder_links WHERE responder_id = $1 ORDER BY linked_at DESC",
        )
        .bind(responder_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("platform")?, r.try_get("address")?)))
            .collect()
    }
}
