//! What the appservice endpoint shares between the instances behind one URL: the transaction
//! order guard's state (`switchboard_appservice::txn_order`), one JSON row; and whether each
//! conversation's visitor is typing (`bridge/typing.rs`), a row per room while it matters.

use async_trait::async_trait;
use sqlx::Row;
use switchboard_appservice::{
    SinkError,
    txn_order::{OrderState, SharedOrder},
};

use super::{Store, StoreError};

/// The row's key.
const TXN_ORDER: &str = "txn_order";
/// A room's visitor typing: the key's prefix.
const VISITOR_TYPING: &str = "typing/";
/// Typing rows not written for this long are deleted (a visitor is shown typing for a minute
/// at most, `RENEW_AT_MOST`).
const TYPING_KEPT_MS: i64 = 120_000;

impl Store {
    async fn appservice_state(&self, key: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT state_value FROM appservice_state WHERE state_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("state_value")).transpose()?)
    }

    async fn put_appservice_state(&self, key: &str, value: &str) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO appservice_state (state_key, state_value, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (state_key)
             DO UPDATE SET state_value = excluded.state_value, updated_at = excluded.updated_at",
        )
        .bind(key)
        .bind(value)
        .bind(self.now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }
}

impl Store {
    /// Records whether the visitor of `room` is typing, as of now; rows of rooms nobody
    /// typed in for a while are deleted on the way.
    pub async fn put_visitor_typing(&self, room: &str, typing: bool) -> Result<(), StoreError> {
        self.put_appservice_state(
            &format!("{VISITOR_TYPING}{room}"),
            if typing { "1" } else { "0" },
        )
        .await?;
        sqlx::query("DELETE FROM appservice_state WHERE state_key LIKE $1 AND updated_at < $2")
            .bind(format!("{VISITOR_TYPING}%"))
            .bind(self.now_ms().saturating_sub(TYPING_KEPT_MS))
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Whether the visitor of `room` was typing when last recorded, and when that was.
    pub async fn visitor_typing(&self, room: &str) -> Result<Option<(bool, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT state_value, updated_at FROM appservice_state WHERE state_key = $1",
        )
        .bind(format!("{VISITOR_TYPING}{room}"))
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            let value: String = r.try_get("state_value")?;
            Ok((value == "1", r.try_get("updated_at")?))
        })
        .transpose()
    }
}

fn sink_error(e: impl std::error::Error + Send + Sync + 'static) -> SinkError {
    SinkError(Box::new(e))
}

#[async_trait]
impl SharedOrder for Store {
    async fn load(&self) -> Result<Option<OrderState>, SinkError> {
        match self.appservice_state(TXN_ORDER).await.map_err(sink_error)? {
            Some(json) => serde_json::from_str(&json).map(Some).map_err(sink_error),
            None => Ok(None),
        }
    }

    async fn save(&self, state: &OrderState) -> Result<(), SinkError> {
        let json = serde_json::to_string(state).map_err(sink_error)?;
        self.put_appservice_state(TXN_ORDER, &json)
            .await
            .map_err(sink_error)
    }
}
