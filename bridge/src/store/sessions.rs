//! Store tables for proxied visitors: the sessions Switchboard issues (by token hash) and the
//! rooms each visitor may reach through the proxy.

use sqlx::Row;

use super::{Store, StoreError};

impl Store {
    /// Records a session for `user_id`, valid until `expires_at` (ms since the epoch). Sessions
    /// already expired are dropped on the way, so the table does not grow without bound.
    pub async fn insert_visitor_session(
        &self,
        token_hash: &str,
        user_id: &str,
        expires_at: i64,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        sqlx::query("DELETE FROM visitor_sessions WHERE expires_at <= $1")
            .bind(now)
            .execute(&mut *self.writer().await?)
            .await?;
        sqlx::query(
            "INSERT INTO visitor_sessions (token_hash, user_id, created_at, expires_at)
             VALUES ($1, $2, $3, $4)",
        )
        .bind(token_hash)
        .bind(user_id)
        .bind(now)
        .bind(expires_at)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// The user a session belongs to, if it exists and has not expired at `now` (ms).
    pub async fn visitor_session(
        &self,
        token_hash: &str,
        now: i64,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT user_id FROM visitor_sessions WHERE token_hash = $1 AND expires_at > $2",
        )
        .bind(token_hash)
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("user_id")).transpose()?)
    }

    /// Ends every session of a user; returns how many there were.
    pub async fn revoke_visitor_sessions(&self, user_id: &str) -> Result<u64, StoreError> {
        Ok(
            sqlx::query("DELETE FROM visitor_sessions WHERE user_id = $1")
                .bind(user_id)
                .execute(&mut *self.writer().await?)
                .await?
                .rows_affected(),
        )
    }

    /// Whether `room_id` is one of `visitor_user_id`'s conversations (closed ones too).
    pub async fn is_visitor_room(
        &self,
        visitor_user_id: &str,
        room_id: &str,
    ) -> Result<bool, StoreError> {
        let row = sqlx::query(
            "SELECT 1 AS one FROM conversations WHERE room_id = $1 AND visitor_user_id = $2",
        )
        .bind(room_id)
        .bind(visitor_user_id)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.is_some())
    }

    /// The rooms of all of a visitor's conversations (closed ones too, so the widget can still
    /// read how one ended), oldest first.
    pub async fn visitor_rooms(&self, visitor_user_id: &str) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id FROM conversations WHERE visitor_user_id = $1
             ORDER BY created_at, room_id",
        )
        .bind(visitor_user_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("room_id")?)).collect()
    }
}
