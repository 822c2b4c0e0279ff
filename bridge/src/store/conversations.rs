//! Conversations and their transcripts: a conversation's row (state, topic, hand-off note,
//! the status published in its room) and the messages recorded in it.

use std::str::FromStr;

use sqlx::Row;

use super::{Bind, Columns, Store, StoreError};
use crate::conversation::{Conversation, ConversationState, Message, SenderRole};

impl Store {
    pub async fn insert_conversation(&self, c: &Conversation) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO conversations
               (room_id, topic, visitor_user_id, visitor_alias, state, created_at, updated_at, language)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
        )
        .bind(&c.room_id)
        .bind(&c.topic)
        .bind(&c.visitor_user_id)
        .bind(&c.visitor_alias)
        .bind(c.state.as_str())
        .bind(c.created_at)
        .bind(c.language.as_deref())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    pub async fn conversation(&self, room_id: &str) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(
            "SELECT room_id, topic, visitor_user_id, visitor_alias, state, created_at, language
             FROM conversations WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    /// The visitor's conversation on a topic that is not closed yet, if any.
    pub async fn open_conversation_for_visitor(
        &self,
        visitor_user_id: &str,
        topic: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(
            "SELECT room_id, topic, visitor_user_id, visitor_alias, state, created_at, language
             FROM conversations WHERE visitor_user_id = $1 AND topic = $2 AND state <> $3
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(visitor_user_id)
        .bind(topic)
        .bind(ConversationState::Closed.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    /// Conversations waiting for a responder (queued, offered, transferring), oldest first:
    /// what routing looks at again, without loading every conversation ever held.
    pub async fn waiting_conversations(&self) -> Result<Vec<Conversation>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, topic, visitor_user_id, visitor_alias, state, created_at, language
             FROM conversations WHERE state IN ($1, $2, $3) ORDER BY created_at, room_id",
        )
        .bind(ConversationState::Queued.as_str())
        .bind(ConversationState::Offered.as_str())
        .bind(ConversationState::Transferring.as_str())
        .fetch_all(&self.pool)
        .await?;
        let waiting: Vec<Conversation> = rows
            .iter()
            .map(conversation_from_row)
            .collect::<Result<_, _>>()?;
        debug_assert!(waiting.iter().all(|c| c.state.is_waiting()));
        Ok(waiting)
    }

    pub async fn list_conversations(&self) -> Result<Vec<Conversation>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, topic, visitor_user_id, visitor_alias, state, created_at, language
             FROM conversations ORDER BY created_at, room_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(conversation_from_row).collect()
    }

    /// Records who handed the conversation over and why, for the next responder's offer.
    pub async fn set_handoff(&self, room_id: &str, note: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE conversations SET handoff = $1, updated_at = $2 WHERE room_id = $3")
            .bind(note)
            .bind(self.now_ms())
            .bind(room_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    pub async fn handoff(&self, room_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT handoff FROM conversations WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("handoff"))
            .transpose()?
            .flatten())
    }

    /// Moves a conversation to another topic (a transfer to a topic re-routes it there).
    pub async fn set_conversation_topic(
        &self,
        room_id: &str,
        topic: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE conversations SET topic = $1, updated_at = $2 WHERE room_id = $3")
            .bind(topic)
            .bind(self.now_ms())
            .bind(room_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    pub async fn set_conversation_state(
        &self,
        room_id: &str,
        state: ConversationState,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE conversations SET state = $1, updated_at = $2 WHERE room_id = $3")
                .bind(state.as_str())
                .bind(self.now_ms())
                .bind(room_id)
                .execute(&mut *self.writer().await?)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The status last published into the room (JSON), if any.
    pub async fn published_status(&self, room_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT published_status FROM conversations WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("published_status"))
            .transpose()?
            .flatten())
    }

    pub async fn set_published_status(&self, room_id: &str, json: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE conversations SET published_status = $1 WHERE room_id = $2")
            .bind(json)
            .bind(room_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Adds a message to its conversation's transcript. Returns false if it was already there.
    pub async fn record_message(&self, m: &Message) -> Result<bool, StoreError> {
        let done = insert_message(m)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a responder's message in the transcript when it is decided, before the
    /// homeserver has it, under a provisional ID: hand-off summaries and the first-reply and
    /// idle limits see it at once, even while it waits for the homeserver. It sorts after
    /// everything recorded so far. [`Self::confirm_message`] gives it its event ID once posted.
    pub async fn record_provisional_message(&self, m: &Message) -> Result<(), StoreError> {
        bind_provisional(sqlx::query(INSERT_PROVISIONAL), m)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// The provisional transcript entry became the event `event_id`. If the homeserver's echo
    /// of that event was recorded first, the provisional entry simply goes.
    pub async fn confirm_message(
        &self,
        provisional: &str,
        event_id: &str,
    ) -> Result<(), StoreError> {
        let mut writer = self.writer().await?;
        // On PostgreSQL the echo's own record (another lane, another connection) can land
        // between the steps below: the rename then meets the echo's row. That only means the
        // echo came first after all, so the first two steps are run again, which fold the
        // two rows into the echo's. (On SQLite the writer's turn keeps everything else out.)
        for _ in 0..2 {
            // The echo keeps the provisional entry's place: the order in which the responder's
            // messages were decided. Its own would put it after a later message still waiting
            // for its echo (a reply written just after it would read as written before it).
            sqlx::query(
                "UPDATE messages SET
                     inbox_seq = (SELECT inbox_seq FROM messages WHERE event_id = $2),
                     origin_server_ts = (SELECT origin_server_ts FROM messages WHERE event_id = $2)
                 WHERE event_id = $1 AND EXISTS (SELECT 1 FROM messages WHERE event_id = $2)",
            )
            .bind(event_id)
            .bind(provisional)
            .execute(&mut *writer)
            .await?;
            sqlx::query(
                "DELETE FROM messages WHERE event_id = $1
                 AND EXISTS (SELECT 1 FROM messages WHERE event_id = $2)",
            )
            .bind(provisional)
            .bind(event_id)
            .execute(&mut *writer)
            .await?;
            match sqlx::query("UPDATE messages SET event_id = $1 WHERE event_id = $2")
                .bind(event_id)
                .bind(provisional)
                .execute(&mut *writer)
                .await
            {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                done => {
                    done?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A provisional entry whose message will never be posted leaves the transcript.
    pub async fn forget_message(&self, provisional: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM messages WHERE event_id = $1")
            .bind(provisional)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Keeps the file a transcript message carries (a `MediaRef` as JSON).
    pub async fn set_message_media(&self, event_id: &str, json: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE messages SET media_json = $1 WHERE event_id = $2")
            .bind(json)
            .bind(event_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// The file a transcript message carries, as stored by [`Self::set_message_media`].
    pub async fn message_media(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT media_json FROM messages WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("media_json"))
            .transpose()?
            .flatten())
    }

    /// When `sender` last wrote in the room at or after `since`, and when the visitor last
    /// wrote (unix ms, the homeserver's timestamps): what the holders' time limits need, read
    /// without loading the transcript.
    pub async fn last_message_times(
        &self,
        room_id: &str,
        sender: &str,
        since: i64,
    ) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT MAX(CASE WHEN sender = $2 AND origin_server_ts >= $3
                             THEN origin_server_ts END) AS last_reply,
                    MAX(CASE WHEN sender_role = $4 THEN origin_server_ts END) AS last_visitor
             FROM messages WHERE room_id = $1",
        )
        .bind(room_id)
        .bind(sender)
        .bind(since)
        .bind(SenderRole::Visitor.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("last_reply")?, row.try_get("last_visitor")?))
    }

    /// The transcript of a conversation, in the order Switchboard received it.
    pub async fn messages(&self, room_id: &str) -> Result<Vec<Message>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, room_id, inbox_seq, sender, sender_role, msgtype, body,
                    formatted_body, origin_server_ts
             FROM messages WHERE room_id = $1 ORDER BY inbox_seq, origin_server_ts",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("sender_role")?;
                Ok(Message {
                    event_id: r.try_get("event_id")?,
                    room_id: r.try_get("room_id")?,
                    inbox_seq: r.try_get("inbox_seq")?,
                    sender: r.try_get("sender")?,
                    sender_role: SenderRole::from_str(&role).map_err(|_| StoreError::Corrupt {
                        table: "messages",
                        detail: format!("unknown sender_role {role:?}"),
                    })?,
                    msgtype: r.try_get("msgtype")?,
                    body: r.try_get("body")?,
                    formatted_body: r.try_get("formatted_body")?,
                    origin_server_ts: r.try_get("origin_server_ts")?,
                })
            })
            .collect()
    }
}

pub(super) fn conversation_from_row<R: Columns + ?Sized>(
    r: &R,
) -> Result<Conversation, StoreError> {
    let state = r.text("state")?;
    Ok(Conversation {
        room_id: r.text("room_id")?,
        topic: r.text("topic")?,
        visitor_user_id: r.text("visitor_user_id")?,
        visitor_alias: r.text("visitor_alias")?,
        language: r.opt_text("language")?,
        state: ConversationState::from_str(&state).map_err(|_| StoreError::Corrupt {
            table: "conversations",
            detail: format!("unknown state {state:?}"),
        })?,
        created_at: r.int("created_at")?,
    })
}

/// A transcript entry, once per event ID.
fn insert_message(m: &Message) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    bind_message(
        sqlx::query(
            "INSERT INTO messages (event_id, room_id, inbox_seq, sender, sender_role, msgtype,
                                   body, formatted_body, origin_server_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
        ),
        m,
    )
}

/// Binds a transcript entry's nine columns, in the order of `insert_message`'s; the
/// multi-row insert of a batch (`record_visitor_batch`) binds each row with it too.
/// A provisional transcript entry (see [`Store::record_provisional_message`]), sorting after
/// everything recorded so far; bound by [`bind_provisional`].
pub(super) const INSERT_PROVISIONAL: &str =
    "INSERT INTO messages (event_id, room_id, inbox_seq, sender, sender_role, msgtype,
                           body, formatted_body, origin_server_ts)
     VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) FROM inbox), $3, $4, $5, $6, $7, $8)
     ON CONFLICT (event_id) DO NOTHING";

/// [`INSERT_PROVISIONAL`]'s values, for either driver: a transcript entry's but its inbox
/// position, which the statement reads itself.
pub(super) fn bind_provisional<'q, B: Bind<'q>>(query: B, m: &'q Message) -> B {
    bind_after_position(query.text(&m.event_id).text(&m.room_id), m)
}

pub(crate) fn bind_message<'q, B: Bind<'q>>(query: B, m: &'q Message) -> B {
    bind_after_position(query.text(&m.event_id).text(&m.room_id).int(m.inbox_seq), m)
}

/// A transcript entry's columns after its inbox position, in the order both inserts list them.
fn bind_after_position<'q, B: Bind<'q>>(query: B, m: &'q Message) -> B {
    query
        .text(&m.sender)
        .text(m.sender_role.as_str())
        .text(&m.msgtype)
        .text(&m.body)
        .opt_text(m.formatted_body.as_deref())
        .int(m.origin_server_ts)
}
