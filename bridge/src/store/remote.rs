//! Store tables for remote platforms' own input: their inbox of events (each recorded once,
//! in order, fenced when written as leader) and the link codes that tie a platform account to
//! a responder.

use std::collections::HashMap;

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

/// Records a remote event once per (platform, key) (`$1` platform, `$2` key, `$3` its JSON,
/// `$4` now).
const INSERT_REMOTE_EVENT: &str =
    "INSERT INTO remote_inbox (platform, event_key, event_json, received_at)
     VALUES ($1, $2, $3, $4) ON CONFLICT (platform, event_key) DO NOTHING";

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
        let insert = sqlx::query(INSERT_REMOTE_EVENT)
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

    /// Records a remote event read from a homeserver event (a Matrix responder's message in
    /// their relay room), as [`Self::record_remote_event`] does but in a relaxed commit (see
    /// [`Store::relaxed`]): the homeserver event it is read from is recorded and flushed
    /// already, and marked processed only after this commit. The write-ahead log keeps
    /// commits in order, so a power cut that loses this one loses that mark too, and the
    /// homeserver event is read again. On SQLite in a file it runs on the calling thread
    /// (`inline.rs`), in the writers' turn, so the order of `seq` holds as for any insert;
    /// on PostgreSQL it is [`Self::record_remote_event_as`] with no fence.
    pub async fn record_derived_remote_event(
        &self,
        platform: &str,
        key: &str,
        json: &str,
    ) -> Result<Recorded, StoreError> {
        let now = self.now_ms();
        let recorded = |rows: u64| {
            if rows == 1 {
                Recorded::New
            } else {
                Recorded::Known
            }
        };
        if self.engine == Engine::Sqlite {
            let inline = self
                .relaxed_inline(|tx| {
                    Ok(tx
                        .prepare_cached(INSERT_REMOTE_EVENT)?
                        .execute(rusqlite::params![platform, key, json, now])?)
                })
                .await;
            if let Some(rows) = inline {
                return Ok(recorded(rows? as u64));
            }
            let done = sqlx::query(INSERT_REMOTE_EVENT)
                .bind(platform)
                .bind(key)
                .bind(json)
                .bind(now)
                .execute(&mut *self.relaxed().await?)
                .await?;
            return Ok(recorded(done.rows_affected()));
        }
        self.record_remote_event_as(None, platform, key, json).await
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

    /// A relaxed commit (see [`Store::relaxed`]), as the homeserver inbox's mark: a mark lost
    /// in a power cut has the event handled again, and handling one again does nothing twice
    /// (what it records is keyed, and a kill between its effects and this mark already asks
    /// that). On SQLite in a file on the calling thread (`inline.rs`).
    pub async fn mark_remote_processed(&self, seq: i64) -> Result<(), StoreError> {
        const MARK: &str = "UPDATE remote_inbox SET processed_at = $1 WHERE seq = $2";
        let now = self.now_ms();
        let inline = self
            .relaxed_inline(|tx| {
                Ok(tx
                    .prepare_cached(MARK)?
                    .execute(rusqlite::params![now, seq])?)
            })
            .await;
        if let Some(done) = inline {
            return done.map(drop);
        }
        sqlx::query(MARK)
            .bind(now)
            .bind(seq)
            .execute(&mut *self.relaxed().await?)
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

    /// The addresses every responder linked themselves, by responder, each's newest first:
    /// one read for all of them (routing looks at the whole register for every offer).
    pub async fn all_links(&self) -> Result<HashMap<String, Vec<(String, String)>>, StoreError> {
        let rows = sqlx::query(
            "SELECT responder_id, platform, address FROM responder_links
             ORDER BY responder_id, linked_at DESC",
        )
        .fetch_all(&self.pool)
        .await?;
        let mut links: HashMap<String, Vec<(String, String)>> = HashMap::new();
        for r in &rows {
            links
                .entry(r.try_get("responder_id")?)
                .or_default()
                .push((r.try_get("platform")?, r.try_get("address")?));
        }
        Ok(links)
    }
}
