//! What the appservice endpoint shares between the instances behind one URL: the transaction
//! order guard's state (`switchboard_appservice::txn_order`), one JSON row.

use async_trait::async_trait;
use sqlx::Row;
use switchboard_appservice::{
    SinkError,
    txn_order::{OrderState, SharedOrder},
};

use super::{Store, StoreError};

/// The row's key.
const TXN_ORDER: &str = "txn_order";

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
