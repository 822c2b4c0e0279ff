//! The queue of writes into rooms (`room_posts`): recorded in the step that decides them,
//! posted in order per room by the worker, retried until the homeserver takes them.

use sqlx::Row;

use super::{Store, StoreError};
use crate::conversation::Message;

/// One queued write into a room. `op_json` is the bridge's description of what to do.
#[derive(Debug, Clone)]
pub struct RoomPostRow {
    pub seq: i64,
    pub room_id: String,
    pub txn_id: String,
    pub op_json: String,
    pub attempts: i64,
    pub next_attempt_at: i64,
}

fn row_from(r: &sqlx::any::AnyRow) -> Result<RoomPostRow, StoreError> {
    Ok(RoomPostRow {
        seq: r.try_get("seq")?,
        room_id: r.try_get("room_id")?,
        txn_id: r.try_get("txn_id")?,
        op_json: r.try_get("op_json")?,
        attempts: r.try_get("attempts")?,
        next_attempt_at: r.try_get("next_attempt_at")?,
    })
}

/// Queues a write into a room (`$1` room, `$2` transaction ID, `$3` the op, `$4` and `$5`
/// now); a second one with the same transaction ID in that room is ignored.
const ENQUEUE_ROOM_POST: &str =
    "INSERT INTO room_posts (room_id, txn_id, op_json, next_attempt_at, created_at)
     VALUES ($1, $2, $3, $4, $5) ON CONFLICT (room_id, txn_id) DO NOTHING";

/// A platform's message on its way into a conversation room (a responder's as their ghost, or
/// an initiator's as their visitor ghost), with what is recorded with it (see
/// [`Store::queue_remote_post`]).
pub struct RemotePost<'a> {
    pub room_id: &'a str,
    pub txn_id: &'a str,
    pub op_json: &'a str,
    /// The remote message (platform, chat, message ID), mapped to the room.
    pub remote: Option<(&'a str, &'a str, &'a str)>,
    /// Its provisional transcript entry.
    pub provisional: Option<&'a Message>,
}

impl Store {
    /// Queues a write into `room_id`; a second one with the same `txn_id` in that room is
    /// ignored (handling an event again after a crash queues nothing twice). True when new.
    pub async fn enqueue_room_post(
        &self,
        room_id: &str,
        txn_id: &str,
        op_json: &str,
    ) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let done = sqlx::query(ENQUEUE_ROOM_POST)
            .bind(room_id)
            .bind(txn_id)
            .bind(op_json)
            .bind(now)
            .bind(now)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// What handling a platform's message records before it is posted: the message mapped to
    /// its room, its provisional transcript entry and the post itself, as
    /// [`Self::map_remote_message`], [`Self::record_provisional_message`] and
    /// [`Self::enqueue_room_post`] would, in one relaxed commit (see [`Store::relaxed`]) where
    /// those are three flushed ones. Why relaxed is enough: all three follow from a platform
    /// event already recorded and flushed, which is marked processed only after this commit.
    /// The write-ahead log keeps commits in order, so a power cut that loses this one loses
    /// that mark too, and the event is handled again; each statement is keyed, so the redo
    /// queues nothing twice, and a post that went out meanwhile is sent again under the same
    /// transaction ID, which the homeserver answers with the first event. On SQLite in a file
    /// it runs on the calling thread (`inline.rs`); elsewhere as the three writes. True when
    /// the post is new.
    ///
    /// The provisional entry is written only with a new post: handled again after its post
    /// went out and was confirmed (the entry then carries the event's ID), the message would
    /// otherwise leave a second provisional entry that nothing confirms.
    pub async fn queue_remote_post(&self, post: &RemotePost<'_>) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let inline = self
            .relaxed_inline(|tx| {
                if let Some((platform, chat, message_id)) = post.remote {
                    tx.prepare_cached(super::outbox::MAP_REMOTE_MESSAGE)?
                        .execute(rusqlite::params![
                            platform,
                            chat,
                            message_id,
                            post.room_id,
                            None::<&str>
                        ])?;
                }
                let new = tx
                    .prepare_cached(ENQUEUE_ROOM_POST)?
                    .execute(rusqlite::params![
                        post.room_id,
                        post.txn_id,
                        post.op_json,
                        now,
                        now
                    ])?
                    == 1;
                if new && let Some(m) = post.provisional {
                    tx.prepare_cached(super::conversations::INSERT_PROVISIONAL)?
                        .execute(rusqlite::params_from_iter(
                            super::conversations::bind_provisional(Vec::new(), m),
                        ))?;
                }
                Ok(new)
            })
            .await;
        if let Some(new) = inline {
            return new;
        }
        if let Some((platform, chat, message_id)) = post.remote {
            self.map_remote_message(platform, chat, message_id, post.room_id, None)
                .await?;
        }
        // Separate commits here. The entry goes before the post, as the posting loop may
        // confirm the post as soon as it is queued (an entry written after that would never
        // be confirmed), and only if the post is not queued already.
        if let Some(m) = post.provisional
            && !self.room_post_queued(post.room_id, post.txn_id).await?
        {
            self.record_provisional_message(m).await?;
        }
        self.enqueue_room_post(post.room_id, post.txn_id, post.op_json)
            .await
    }

    /// Whether a post with `txn_id` was ever queued in `room_id` (posted or not).
    async fn room_post_queued(&self, room_id: &str, txn_id: &str) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT 1 FROM room_posts WHERE room_id = $1 AND txn_id = $2")
                .bind(room_id)
                .bind(txn_id)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// The rooms with unposted writes, each with when its first one is due: a room's posts go
    /// out in order, so its first row decides when the room's lane has work.
    pub async fn room_post_rooms(&self) -> Result<Vec<(String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT p.room_id, p.next_attempt_at FROM room_posts p
             JOIN (SELECT MIN(seq) AS head FROM room_posts
                   WHERE done_at IS NULL AND failed_at IS NULL GROUP BY room_id) h
               ON p.seq = h.head",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("room_id")?, r.try_get("next_attempt_at")?)))
            .collect()
    }

    /// One room's unposted writes in queue order, due or not, at most `PER_ROOM_BATCH`.
    pub async fn pending_room_posts_in(
        &self,
        room_id: &str,
    ) -> Result<Vec<RoomPostRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, room_id, txn_id, op_json, attempts, next_attempt_at FROM room_posts
             WHERE room_id = $1 AND done_at IS NULL AND failed_at IS NULL ORDER BY seq LIMIT $2",
        )
        .bind(room_id)
        .bind(super::PER_ROOM_BATCH)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_from).collect()
    }

    /// Makes every post that waits for a retry due now (the homeserver is known to be back).
    pub async fn retry_room_posts_now(&self) -> Result<u64, StoreError> {
        let now = self.now_ms();
        let done = sqlx::query(
            "UPDATE room_posts SET next_attempt_at = $1
             WHERE done_at IS NULL AND failed_at IS NULL AND next_attempt_at > $1",
        )
        .bind(now)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected())
    }

    pub async fn room_post_done(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE room_posts SET done_at = $1 WHERE seq = $2")
            .bind(self.now_ms())
            .bind(seq)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// The homeserver could not take it now: try again at `at_ms`, remembering why.
    pub async fn room_post_retry_at(
        &self,
        seq: i64,
        at_ms: i64,
        error: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE room_posts SET attempts = attempts + 1, next_attempt_at = $1, last_error = $2
             WHERE seq = $3",
        )
        .bind(at_ms)
        .bind(error)
        .bind(seq)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// It will never be taken (refused for good): set aside with the reason, so the room's
    /// later writes go on.
    pub async fn room_post_failed(&self, seq: i64, error: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE room_posts SET failed_at = $1, last_error = $2 WHERE seq = $3")
            .bind(self.now_ms())
            .bind(error)
            .bind(seq)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Sets aside every write into `room_id` not posted yet, with `reason`: the room is being
    /// erased, and a notice posted after its messages were redacted would be left readable.
    /// Returns how many there were.
    pub async fn cancel_room_posts(&self, room_id: &str, reason: &str) -> Result<u64, StoreError> {
        let done = sqlx::query(
            "UPDATE room_posts SET failed_at = $1, last_error = $2
             WHERE room_id = $3 AND done_at IS NULL AND failed_at IS NULL",
        )
        .bind(self.now_ms())
        .bind(reason)
        .bind(room_id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected())
    }

    /// Writes set aside for good, newest first, with why (for operators and tests).
    pub async fn failed_room_posts(
        &self,
        limit: i64,
    ) -> Result<Vec<(RoomPostRow, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, room_id, txn_id, op_json, attempts, next_attempt_at, last_error
             FROM room_posts WHERE failed_at IS NOT NULL ORDER BY seq DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    row_from(r)?,
                    r.try_get::<Option<String>, _>("last_error")?
                        .unwrap_or_default(),
                ))
            })
            .collect()
    }
}
