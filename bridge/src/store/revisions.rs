//! What edits and deletions need: which remote messages a Matrix event became, which chat a
//! remote message belongs to, and the transcript kept in step with a changed message.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// The messages sent to `chat` on `platform` for the event `event_id` of `room_id`, in
    /// the order they were sent (a long message is several). The platforms that revise
    /// what they sent number their messages upwards within a chat (Telegram's message IDs,
    /// Discord's snowflakes), so that order is the IDs' numeric order.
    pub async fn messages_sent_for(
        &self,
        platform: &str,
        chat: &str,
        room_id: &str,
        event_id: &str,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT message_id FROM remote_messages
             WHERE platform = $1 AND chat = $2 AND event_id = $3 AND room_id = $4",
        )
        .bind(platform)
        .bind(chat)
        .bind(event_id)
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        let mut ids = rows
            .iter()
            .map(|r| r.try_get::<String, _>("message_id"))
            .collect::<Result<Vec<_>, _>>()?;
        ids.sort_by_key(|id| (id.parse::<u128>().unwrap_or(u128::MAX), id.clone()));
        Ok(ids)
    }

    /// The chat a remote message mapped to a conversation belongs to, found by its ID alone.
    pub async fn chat_of_message(
        &self,
        platform: &str,
        message_id: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT chat FROM remote_messages WHERE platform = $1 AND message_id = $2 LIMIT 1",
        )
        .bind(platform)
        .bind(message_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("chat")).transpose()?)
    }

    /// Keeps the transcript in step with a message changed after it was written: `Some`
    /// its new text, `None` deleted (its text and file go, so a hand-off summary never
    /// quotes what its author took back).
    pub async fn revise_message(
        &self,
        event_id: &str,
        text: Option<(&str, Option<&str>)>,
    ) -> Result<(), StoreError> {
        let (body, formatted, deleted) = match text {
            Some((body, formatted)) => (body, formatted, false),
            None => ("(deleted)", None, true),
        };
        sqlx::query(
            "UPDATE messages SET body = $1, formatted_body = $2,
                    media_json = CASE WHEN $3 THEN NULL ELSE media_json END
             WHERE event_id = $4",
        )
        .bind(body)
        .bind(formatted)
        .bind(deleted)
        .bind(event_id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// The room and sender of a transcript message, if it is there.
    pub async fn message_author(
        &self,
        event_id: &str,
    ) -> Result<Option<(String, String)>, StoreError> {
        let row = sqlx::query("SELECT room_id, sender FROM messages WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((r.try_get("room_id")?, r.try_get("sender")?)))
            .transpose()
    }

    /// A remote message deleted on its platform no longer stands for anything.
    pub async fn forget_remote_message(
        &self,
        platform: &str,
        chat: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "DELETE FROM remote_messages WHERE platform = $1 AND chat = $2 AND message_id = $3",
        )
        .bind(platform)
        .bind(chat)
        .bind(message_id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }
}
