//! Leases (issue 17): what must run on one instance at a time (Telegram long polling, the
//! Discord gateway, IMAP IDLE, the timers) is run by whoever holds its lease, a row with an
//! expiry its holder keeps pushing forward (`cluster.rs` takes and renews it). Claims are
//! leases too, one per conversation or chat being worked on (`cluster.rs`, `Claim`): taken
//! before the work, renewed together, deleted when the work is done.
//!
//! A row rather than a PostgreSQL advisory lock: it works on SQLite too; it passes through a
//! pooler in transaction mode (pgbouncer hands a server connection, and the advisory lock
//! held on it, to other clients between transactions); and it fences. Every taking of the
//! lease adds one to its `epoch`, and a write made as the holder ([`Fence`]) happens only
//! while that epoch still holds it, in the same statement: a holder paused past the expiry
//! (SIGSTOP, a long GC-like stall, a partition) that wakes up and writes finds its epoch
//! stale, and nothing is written.
//!
//! Times are the store clock's, so each instance's own: instances' clocks must agree to
//! within a small part of a lease's length (NTP does far better).

use sqlx::Row;

use super::{Engine, Store, StoreError};

/// A lease as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
    /// Milliseconds since the Unix epoch, by the holder's clock.
    pub expires_at: i64,
}

/// A holder's claim on a lease at one epoch, as writes made as the holder carry it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fence {
    pub name: String,
    pub holder: String,
    pub epoch: i64,
}

impl Store {
    /// Whether `fence` still holds its lease unexpired, asked on `conn` inside the transaction
    /// of a write made as its holder: on PostgreSQL the lease row is share-locked until that
    /// transaction ends, so a takeover (which updates the row) waits for the write rather
    /// than slipping in between this check and it. On SQLite the caller holds the one writer.
    pub(super) async fn fence_holds(
        &self,
        conn: &mut sqlx::AnyConnection,
        fence: &Fence,
    ) -> Result<bool, StoreError> {
        let sql = match self.engine {
            Engine::Sqlite => {
                "SELECT epoch FROM leases
                 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > $4"
            }
            Engine::Postgres => {
                "SELECT epoch FROM leases
                 WHERE name = $1 AND holder = $2 AND epoch = $3 AND expires_at > $4 FOR SHARE"
            }
        };
        let row = sqlx::query(sql)
            .bind(&fence.name)
            .bind(&fence.holder)
            .bind(fence.epoch)
            .bind(self.now_ms())
            .fetch_optional(conn)
            .await?;
        Ok(row.is_some())
    }

    /// Takes the lease `name` for `holder` for `ttl_ms` if nobody holds it (never taken,
    /// expired or given up) or `holder` itself does: the new epoch. `None` while another
    /// holds it. A holder taking it again gets a new epoch too: whatever it started under the
    /// old one must stop.
    pub async fn take_lease(
        &self,
        name: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<Option<Fence>, StoreError> {
        let now = self.now_ms();
        let row = sqlx::query(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (name) DO UPDATE
                 SET holder = excluded.holder, epoch = leases.epoch + 1,
                     expires_at = excluded.expires_at
                 WHERE leases.expires_at <= $4 OR leases.holder = excluded.holder
             RETURNING epoch",
        )
        .bind(name)
        .bind(holder)
        .bind(now.saturating_add(ttl_ms))
        .bind(now)
        .fetch_optional(&mut *self.writer().await?)
        .await?;
        Ok(match row {
            Some(row) => Some(Fence {
                name: name.to_owned(),
                holder: holder.to_owned(),
                epoch: row.try_get("epoch")?,
            }),
            None => None,
        })
    }

    /// Pushes the lease's expiry to `ttl_ms` from now, if `fence` still holds it and it has
    /// not expired. `false`: it was lost (taken by another, or expired first), and the holder
    /// must stop what it runs under it.
    pub async fn renew_lease(&self, fence: &Fence, ttl_ms: i64) -> Result<bool, StoreError> {
        let now = self.now_ms();
        let done = sqlx::query(
            "UPDATE leases SET expires_at = $1
             WHERE name = $2 AND holder = $3 AND epoch = $4 AND expires_at > $5",
        )
        .bind(now.saturating_add(ttl_ms))
        .bind(&fence.name)
        .bind(&fence.holder)
        .bind(fence.epoch)
        .bind(now)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Gives the lease up at once (a clean shutdown), so another instance takes it without
    /// waiting out the expiry. `false` if `fence` no longer held it.
    pub async fn release_lease(&self, fence: &Fence) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE leases SET expires_at = 0 WHERE name = $1 AND holder = $2 AND epoch = $3",
        )
        .bind(&fence.name)
        .bind(&fence.holder)
        .bind(fence.epoch)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The lease `name` while someone holds it; `None` if nobody does (never taken, expired,
    /// given up).
    pub async fn lease(&self, name: &str) -> Result<Option<Lease>, StoreError> {
        let row = sqlx::query(
            "SELECT name, holder, epoch, expires_at FROM leases
             WHERE name = $1 AND expires_at > $2",
        )
        .bind(name)
        .bind(self.now_ms())
        .fetch_optional(&self.pool)
        .await?;
        Ok(match row {
            Some(r) => Some(Lease {
                name: r.try_get("name")?,
                holder: r.try_get("holder")?,
                epoch: r.try_get("epoch")?,
                expires_at: r.try_get("expires_at")?,
            }),
            None => None,
        })
    }

    /// Pushes forward every lease of `holder` whose name starts with `prefix` and that it
    /// still holds unexpired, in one statement: the names renewed. A claim missing from them
    /// was lost (it expired, and another may hold it now).
    pub async fn renew_leases_of(
        &self,
        holder: &str,
        prefix: &str,
        ttl_ms: i64,
    ) -> Result<Vec<String>, StoreError> {
        let now = self.now_ms();
        let rows = sqlx::query(
            "UPDATE leases SET expires_at = $1
             WHERE holder = $2 AND expires_at > $3 AND name LIKE $4
             RETURNING name",
        )
        .bind(now.saturating_add(ttl_ms))
        .bind(holder)
        .bind(now)
        .bind(like_prefix(prefix))
        .fetch_all(&mut *self.writer().await?)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("name")?)).collect()
    }

    /// Deletes the lease `fence` holds, if it still holds it: for claims, which come and go
    /// with the work (a row per conversation would otherwise stay for good). A take by the
    /// same holder since then has a newer epoch and is left alone.
    pub async fn drop_lease(&self, fence: &Fence) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2 AND epoch = $3")
            .bind(&fence.name)
            .bind(&fence.holder)
            .bind(fence.epoch)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Deletes every lease of `holder` whose name starts with `prefix`: what an instance
    /// still claims when it stops cleanly. How many there were.
    pub async fn drop_leases_of(&self, holder: &str, prefix: &str) -> Result<u64, StoreError> {
        let done = sqlx::query("DELETE FROM leases WHERE holder = $1 AND name LIKE $2")
            .bind(holder)
            .bind(like_prefix(prefix))
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected())
    }

    /// Marks `holder` live for `ttl_ms` (its row `<prefix><holder>`) and returns how many
    /// holders are live under `prefix`, itself included: what a limit all instances share is
    /// divided by. Rows of holders gone for longer than a lease are deleted on the way (each
    /// start of an instance is a new holder).
    pub async fn mark_present(
        &self,
        prefix: &str,
        holder: &str,
        ttl_ms: i64,
    ) -> Result<u32, StoreError> {
        let now = self.now_ms();
        let mut writer = self.writer().await?;
        sqlx::query(
            "INSERT INTO leases (name, holder, epoch, expires_at) VALUES ($1, $2, 1, $3)
             ON CONFLICT (name) DO UPDATE SET expires_at = excluded.expires_at",
        )
        .bind(format!("{prefix}{holder}"))
        .bind(holder)
        .bind(now.saturating_add(ttl_ms))
        .execute(&mut *writer)
        .await?;
        sqlx::query("DELETE FROM leases WHERE name LIKE $1 AND expires_at < $2")
            .bind(like_prefix(prefix))
            .bind(now.saturating_sub(ttl_ms))
            .execute(&mut *writer)
            .await?;
        let row =
            sqlx::query("SELECT COUNT(*) AS n FROM leases WHERE name LIKE $1 AND expires_at > $2")
                .bind(like_prefix(prefix))
                .bind(now)
                .fetch_one(&mut *writer)
                .await?;
        let n: i64 = row.try_get("n")?;
        Ok(n.clamp(1, i64::from(u32::MAX)) as u32)
    }
}

/// A `LIKE` pattern for names starting with `prefix`, which must hold no `%`, `_` or backslash
/// (ours are fixed words).
fn like_prefix(prefix: &str) -> String {
    debug_assert!(!prefix.contains(['%', '_', '\\']), "{prefix}");
    format!("{prefix}%")
}
