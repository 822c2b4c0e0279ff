//! The connections statements run on. On PostgreSQL any connection of the pool; on SQLite,
//! writers take turns on two connections kept for them (one flushing each commit to disk, one
//! not), and the hot reads run on the calling thread (`inline.rs`).

use sqlx::AnyPool;

use super::{Arg, Columns, Store, StoreError};

impl Store {
    /// One trivial query: whether the database answers at all (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        // A read: it must not wait for a writer's turn (readiness asks while a flood writes).
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        // The writers' own connections, when no writer holds them: one that does not answer
        // is dropped, and the next writer takes a fresh one from the pool. (Handling that
        // keeps failing asks this before it gives up on an item, see `worker.rs`.)
        if let Some(gate) = &self.write_gate
            && let Ok(mut conns) = gate.try_lock()
        {
            for relaxed in [false, true] {
                let slot = conns.slot(relaxed);
                if let Some(conn) = slot
                    && let Err(e) = sqlx::Connection::ping(conn).await
                {
                    tracing::warn!(error = %e, "a writer's connection stopped answering; replacing it");
                    *slot = None;
                }
            }
        }
        Ok(())
    }

    /// A connection for a write that is not an acknowledgement: on SQLite its commits are
    /// not flushed to disk on their own (`synchronous = NORMAL`).
    ///
    /// Acknowledged writes (a homeserver transaction, a platform's events, a part recorded as
    /// sent, anything a visitor or operator was answered about) go through the main pool,
    /// `synchronous = FULL` (a homeserver transaction's events through
    /// [`Store::flushed_inline`], on the same terms). The write-ahead log is written in order,
    /// so the next such commit flushes every relaxed one before it too; a kill -9 loses
    /// nothing either way (the log is in the OS's hands). What a power cut can lose is the
    /// relaxed commits since the last flush, and those are handling results the inbox lets us
    /// redo (messages transcribed, events marked processed), all idempotent. In a flood, this
    /// turns about ten disk flushes per homeserver transaction (one per conversation lane's
    /// batch) into one. The relaxed connections are a pool of their own, so no pooled
    /// connection ever changes mode and none can be given back in the wrong one (the inline
    /// writer, which changes mode for each flushed transaction, belongs to no pool).
    pub(crate) async fn relaxed(&self) -> Result<Writer, StoreError> {
        self.writer_from(&self.relaxed_pool, true).await
    }

    /// A connection to write with, in its turn. SQLite takes one writer at a time; one that
    /// finds the database locked sleeps in SQLite's busy handler (1, 2, 5, 10 … ms) and tries
    /// again, so under a flood a quiet conversation's few writes waited behind the flood's
    /// commits out of order (one statement waited a second). Here writers queue in the order
    /// they ask and none sleeps. PostgreSQL locks rows, not the database: no queue there.
    ///
    /// On SQLite the turn comes with a connection of its own, taken from the pool once and
    /// kept: sqlx pings a pooled connection each time it is given back (one more round trip
    /// to the connection's thread, and a task, per write). [`Store::ping`] replaces one that
    /// stopped answering.
    pub(crate) async fn writer(&self) -> Result<Writer, StoreError> {
        self.writer_from(&self.pool, false).await
    }

    async fn writer_from(&self, pool: &AnyPool, relaxed: bool) -> Result<Writer, StoreError> {
        let Some(gate) = &self.write_gate else {
            return Ok(Writer::Pooled(pool.acquire().await?));
        };
        let mut conns = gate.clone().lock_owned().await;
        conns.roll_back_abandoned(relaxed).await;
        let slot = conns.slot(relaxed);
        if slot.is_none() {
            *slot = Some(pool.acquire().await?.detach());
        }
        Ok(Writer::Kept { conns, relaxed })
    }

    /// A relaxed write (see [`Store::relaxed`]) run on the calling thread in the writers'
    /// turn, on SQLite in a file (see `inline.rs`); `None` elsewhere, where the caller
    /// writes through [`Store::relaxed`].
    pub(crate) async fn relaxed_inline<T>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        self.inline_write(false, write).await
    }

    /// An acknowledged write (see [`Store::writer`]) run on the calling thread in the
    /// writers' turn, its commit flushed to disk before this returns, on SQLite in a file;
    /// `None` elsewhere, where the caller writes through [`Store::writer`]. The flush holds
    /// up the calling thread, as sqlx's connection thread would be held up, for as long as
    /// the disk takes (0.1 ms at the median on the benchmark's machine), where handing the
    /// statement to that thread and back costs two thread wake-ups and leaves this
    /// connection's page cache cold for the reads that follow (see `inline.rs`).
    pub(crate) async fn flushed_inline<T>(
        &self,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        self.inline_write(true, write).await
    }

    async fn inline_write<T>(
        &self,
        flush: bool,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let (inline, gate) = (self.inline.as_ref()?, self.write_gate.as_ref()?);
        let mut conns = gate.lock().await;
        // A transaction one of them was left in holds SQLite's write lock.
        for relaxed in [false, true] {
            conns.roll_back_abandoned(relaxed).await;
        }
        let result = inline.write(flush, write);
        drop(conns);
        if matches!(&result, Err(StoreError::Inline(e)) if super::inline::is_busy(e)) {
            // Another process (an operator's command) has held SQLite's write lock for longer
            // than this thread may wait (`inline::BUSY_TIMEOUT`), and nothing was written. The
            // caller writes through sqlx instead, whose connection waits up to 10 s on a
            // thread of its own: a homeserver transaction recorded a little late rather than
            // refused, and no runtime thread held up meanwhile.
            return None;
        }
        if inline.checkpoint_due() {
            // A passive checkpoint takes no lock writers wait for; on one of sqlx's
            // connection threads, so no caller waits for it.
            let pool = self.relaxed_pool.clone();
            tokio::spawn(async move {
                if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                    .execute(&pool)
                    .await
                {
                    tracing::warn!(error = %e, "checkpoint of the write-ahead log failed");
                }
            });
        }
        Some(result)
    }

    /// One of the reads every relayed message makes (its room's pending events, its
    /// conversation and holders, its chat's queue): on SQLite in a file run on the calling
    /// thread (see `inline.rs`), elsewhere through the pool. `sql`'s `$n` are bound to `args`
    /// in order, and each row is decoded by `decode`.
    pub(crate) async fn hot_read<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl Fn(&dyn Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        if let Some(inline) = &self.inline {
            return inline.query(sql, args, decode);
        }
        let mut query = sqlx::query(sql);
        for arg in args {
            query = match *arg {
                Arg::Int(v) => query.bind(v),
                Arg::Text(v) => query.bind(v),
            };
        }
        let rows = query.fetch_all(&self.pool).await?;
        rows.iter().map(|r| decode(r)).collect()
    }
}

/// A pool connection held for writing, with the writer's turn (see [`Store::writer`]).
pub(crate) enum Writer {
    /// PostgreSQL: any connection of the pool.
    Pooled(sqlx::pool::PoolConnection<sqlx::Any>),
    /// SQLite: the writers' turn, and one of the connections kept with it.
    Kept {
        conns: tokio::sync::OwnedMutexGuard<WriteConns>,
        relaxed: bool,
    },
}

/// The connections SQLite's writers use, in their turn: one flushing each commit to disk, one
/// not (see [`Store::relaxed`]). Taken from their pools when first needed.
#[derive(Default)]
pub(crate) struct WriteConns {
    full: Option<sqlx::AnyConnection>,
    relaxed: Option<sqlx::AnyConnection>,
    /// Which of the two may be inside a transaction begun by [`Writer::atomic`] that never
    /// reached its end (the future was dropped half-way): rolled back before the next use,
    /// or the next writer's statements would join it and never be committed.
    open: [bool; 2],
}

impl WriteConns {
    fn slot(&mut self, relaxed: bool) -> &mut Option<sqlx::AnyConnection> {
        if relaxed {
            &mut self.relaxed
        } else {
            &mut self.full
        }
    }

    /// Rolls back the transaction a dropped [`Writer::atomic`] left one of the connections
    /// in, if it did: nothing of it was committed, and nothing after it may join it (or wait
    /// for the write lock it holds).
    async fn roll_back_abandoned(&mut self, relaxed: bool) {
        if std::mem::take(&mut self.open[usize::from(relaxed)])
            && let Some(conn) = self.slot(relaxed)
        {
            let _ = sqlx::query("ROLLBACK").execute(conn).await;
        }
    }
}

impl Writer {
    /// SQLite: runs `query`, whose text is `BEGIN IMMEDIATE`, then several statements, then
    /// `COMMIT` (see [`atomic_sql`]), as one transaction in **one** round trip to the
    /// connection's thread, where `Connection::begin` and `commit` would add two. Returns
    /// the rows the statements return, in order. If a statement fails, SQLite runs none
    /// after it, so the transaction is rolled back here before the error is returned.
    pub(crate) async fn atomic<'q>(
        &mut self,
        query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    ) -> Result<Vec<sqlx::any::AnyRow>, StoreError> {
        let Writer::Kept { conns, relaxed } = self else {
            unreachable!("atomic statements are for SQLite's kept writers");
        };
        let which = usize::from(*relaxed);
        conns.open[which] = true;
        let conn = conns
            .slot(*relaxed)
            .as_mut()
            .expect("set before the writer is handed out");
        match query.fetch_all(&mut *conn).await {
            Ok(rows) => {
                conns.open[which] = false;
                Ok(rows)
            }
            Err(e) => {
                // "no transaction is active" when BEGIN itself failed: nothing to undo.
                let _ = sqlx::query("ROLLBACK").execute(&mut *conn).await;
                conns.open[which] = false;
                Err(e.into())
            }
        }
    }
}

/// `statements` (separated by `;`) between `BEGIN IMMEDIATE` and `COMMIT`, for
/// [`Writer::atomic`]. Immediate: the write lock is taken at the start, as the write gate
/// already gives this connection the turn, so the commit cannot fail on a busy database.
pub(crate) fn atomic_sql(statements: &str) -> String {
    format!("BEGIN IMMEDIATE;\n{statements};\nCOMMIT")
}

impl std::ops::Deref for Writer {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        match self {
            Writer::Pooled(conn) => conn,
            Writer::Kept { conns, relaxed } => if *relaxed {
                &conns.relaxed
            } else {
                &conns.full
            }
            .as_ref()
            .expect("set before the writer is handed out"),
        }
    }
}

impl std::ops::DerefMut for Writer {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Writer::Pooled(conn) => conn,
            Writer::Kept { conns, relaxed } => conns
                .slot(*relaxed)
                .as_mut()
                .expect("set before the writer is handed out"),
        }
    }
}

#[cfg(test)]
mod tests;
