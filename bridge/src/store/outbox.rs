//! The ordered outbox of deliveries to responders' chats, and the mapping of what was sent
//! there to its conversation and Matrix event (for replies, edits and deletions).

use rusqlite::{OptionalExtension as _, params_from_iter};
use sqlx::Row;

use super::{Bind, Columns, Engine, Store, StoreError};

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

/// Maps a remote message to its room and Matrix event (`$1` platform, `$2` chat, `$3` message
/// ID, `$4` room, `$5` event). Mapping again only fills in a missing event.
pub(super) const MAP_REMOTE_MESSAGE: &str = map_remote_message!();

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

/// Marks row `$2` delivered at `$1` unless it is already.
const FINISH_ROW: &str = "UPDATE outbox SET done_at = $1 WHERE seq = $2 AND done_at IS NULL";

/// How many parts of row `$1` are sent.
const PARTS_SENT: &str = "SELECT parts_sent FROM outbox WHERE seq = $1";

/// Binds [`MAP_REMOTE_MESSAGE`]'s parameters for a part of `row` sent as `message_id`, for
/// either driver.
fn bind_map<'q, B: Bind<'q>>(query: B, row: &'q OutboxRow, message_id: &'q str) -> B {
    query
        .text(&row.platform)
        .text(&row.address)
        .text(message_id)
        .text(&row.room_id)
        .text(&row.event_id)
}

/// Binds [`MOVE_PART`]'s parameters (after [`bind_map`]'s in [`MAP_AND_MOVE_ATOMIC`]).
fn bind_move<'q, B: Bind<'q>>(query: B, row: &OutboxRow, index: i64, done: bool, now: i64) -> B {
    query
        .int(index + 1)
        .flag(done)
        .int(now)
        .int(row.seq)
        .int(index)
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

impl Store {
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
        let now = self.now_ms();
        if !flush
            && let Some(sent) = self
                .relaxed_inline(|tx| {
                    tx.prepare_cached(MAP_REMOTE_MESSAGE)?
                        .execute(params_from_iter(bind_map(Vec::new(), row, message_id)))?;
                    let moved = tx
                        .prepare_cached(MOVE_PART)?
                        .query_row(
                            params_from_iter(bind_move(Vec::new(), row, index, done, now)),
                            |r| r.get::<_, i64>(0),
                        )
                        .optional()?;
                    if let Some(sent) = moved {
                        return Ok(sent);
                    }
                    // Recorded already: as below.
                    if done {
                        tx.prepare_cached(FINISH_ROW)?
                            .execute(rusqlite::params![now, seq])?;
                    }
                    Ok(tx
                        .prepare_cached(PARTS_SENT)?
                        .query_row([seq], |r| r.get::<_, i64>(0))?)
                })
                .await
        {
            return sent;
        }
        let mut writer = if flush {
            self.writer().await?
        } else {
            self.relaxed().await?
        };
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
            sqlx::query(FINISH_ROW)
                .bind(now)
                .bind(seq)
                .execute(&mut *writer)
                .await?;
        }
        Ok(sqlx::query(PARTS_SENT)
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

/// A delivery queued once per (event, platform, address).
pub(super) const ENQUEUE_OUTBOX: &str =
    "INSERT INTO outbox (room_id, platform, address, event_id, payload_json, next_attempt_at)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (event_id, platform, address) DO NOTHING";

/// An outbox row as read by the queries here, with when it is next due.
pub(super) fn outbox_row<R: Columns + ?Sized>(r: &R) -> Result<(OutboxRow, i64), StoreError> {
    let parts = r
        .opt_text("parts_json")?
        .map(|json| serde_json::from_str::<Vec<String>>(&json))
        .transpose()
        .map_err(|e| StoreError::Corrupt {
            table: "outbox",
            detail: format!("parts_json: {e}"),
        })?;
    Ok((
        OutboxRow {
            seq: r.int("seq")?,
            room_id: r.text("room_id")?,
            platform: r.text("platform")?,
            address: r.text("address")?,
            event_id: r.text("event_id")?,
            payload_json: r.text("payload_json")?,
            attempts: r.int("attempts")?,
            parts,
            parts_sent: r.int("parts_sent")?,
        },
        r.int("next_attempt_at")?,
    ))
}
