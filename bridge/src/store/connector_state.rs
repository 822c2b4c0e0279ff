//! The connectors' own durable state (`connector::ConnectorState`): short texts under keys
//! each connector chooses, per platform.

use async_trait::async_trait;
use sqlx::Row;

use super::{Store, StoreError};
use crate::connector::{ConnectorError, ConnectorState, Platform};

impl Store {
    pub async fn connector_state(
        &self,
        platform: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "SELECT state_value FROM connector_state WHERE platform = $1 AND state_key = $2",
        )
        .bind(platform)
        .bind(key)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| r.try_get("state_value")).transpose()?)
    }

    pub async fn put_connector_state(
        &self,
        platform: &str,
        key: &str,
        value: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO connector_state (platform, state_key, state_value, updated_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (platform, state_key)
             DO UPDATE SET state_value = excluded.state_value, updated_at = excluded.updated_at",
        )
        .bind(platform)
        .bind(key)
        .bind(value)
        .bind(self.now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// Deletes the key and returns its value in one statement, so two takers cannot both
    /// get it.
    pub async fn take_connector_state(
        &self,
        platform: &str,
        key: &str,
    ) -> Result<Option<String>, StoreError> {
        let row = sqlx::query(
            "DELETE FROM connector_state WHERE platform = $1 AND state_key = $2
             RETURNING state_value",
        )
        .bind(platform)
        .bind(key)
        .fetch_optional(&mut *self.writer().await?)
        .await?;
        Ok(row.map(|r| r.try_get("state_value")).transpose()?)
    }
}

fn transient(e: StoreError) -> ConnectorError {
    ConnectorError::Transient(e.to_string())
}

#[async_trait]
impl ConnectorState for Store {
    async fn get(&self, platform: Platform, key: &str) -> Result<Option<String>, ConnectorError> {
        self.connector_state(platform.as_str(), key)
            .await
            .map_err(transient)
    }

    async fn put(&self, platform: Platform, key: &str, value: &str) -> Result<(), ConnectorError> {
        self.put_connector_state(platform.as_str(), key, value)
            .await
            .map_err(transient)
    }

    async fn take(&self, platform: Platform, key: &str) -> Result<Option<String>, ConnectorError> {
        self.take_connector_state(platform.as_str(), key)
            .await
            .map_err(transient)
    }
}
