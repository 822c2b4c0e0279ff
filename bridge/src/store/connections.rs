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
mod tests {
    use sqlx::Row as _;

    use super::*;

    /// A store on SQLite in a file of a fresh directory (kept as long as the directory is).
    async fn file_store() -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/s.db", dir.path().display());
        (dir, Store::connect(&url).await.expect("store"))
    }

    /// How many inbox rows event `event_id` has, as sqlx's connections see it.
    async fn inbox_rows(store: &Store, event_id: &str) -> i64 {
        sqlx::query("SELECT COUNT(*) FROM inbox WHERE event_id = $1")
            .bind(event_id)
            .fetch_one(&store.pool)
            .await
            .expect("count")
            .try_get(0)
            .expect("a number")
    }

    /// Records event `$1` in the inbox.
    const INSERT_EVENT: &str =
        "INSERT INTO inbox (event_id, room_id, txn_id, event_json, received_at)
                                VALUES ($1, '!r:x', 't', '{}', 0)";
    use crate::store::NewInboxEvent;

    /// `PRAGMA synchronous` of every connection a pool can open, all held at once so none
    /// is missed.
    async fn synchronous_of(pool: &AnyPool, connections: usize) -> Vec<i64> {
        let mut held = Vec::new();
        let mut values = Vec::new();
        for _ in 0..connections {
            let mut conn = pool.acquire().await.expect("connection");
            values.push(
                sqlx::query("PRAGMA synchronous")
                    .fetch_one(&mut *conn)
                    .await
                    .expect("pragma")
                    .try_get(0)
                    .expect("a number"),
            );
            held.push(conn);
        }
        values
    }

    const NORMAL: i64 = 1;
    const FULL: i64 = 2;

    #[tokio::test]
    async fn acknowledged_writes_flush_and_relaxed_ones_have_their_own_connections() {
        let (_dir, store) = file_store().await;
        assert_eq!(synchronous_of(&store.pool, 8).await, vec![FULL; 8]);
        assert_eq!(
            synchronous_of(&store.relaxed_pool, 4).await,
            vec![NORMAL; 4]
        );
        // What a relaxed write did is seen through the flushing pool.
        let rows = [NewInboxEvent {
            event_id: "$e",
            room_id: "!r:x",
            event_json: "{}",
        }];
        store.record_events("t", &rows).await.expect("record");
        let seq = store.pending_events(1).await.expect("pending")[0].seq;
        store.mark_processed(seq).await.expect("mark");
        assert!(store.pending_events(1).await.expect("pending").is_empty());
        assert_eq!(synchronous_of(&store.pool, 8).await, vec![FULL; 8]);
        // The writers' kept connections are one of each.
        async fn pragma(conn: &mut sqlx::AnyConnection) -> i64 {
            sqlx::query("PRAGMA synchronous")
                .fetch_one(conn)
                .await
                .expect("pragma")
                .try_get(0)
                .expect("a number")
        }
        assert_eq!(
            pragma(&mut store.writer().await.expect("writer")).await,
            FULL
        );
        assert_eq!(
            pragma(&mut store.relaxed().await.expect("relaxed")).await,
            NORMAL
        );
        // Checked by the readiness ping, and kept while they answer.
        store.ping().await.expect("ping");
        assert_eq!(
            pragma(&mut store.writer().await.expect("writer")).await,
            FULL
        );
    }

    /// What one atomic round trip wrote is all there or none of it, and a transaction it
    /// left open (its future dropped half-way) is rolled back before the next writer, whose
    /// own writes are then committed as usual.
    #[tokio::test]
    async fn atomic_statements_commit_together_or_not_at_all() {
        let (_dir, store) = file_store().await;
        let insert = |id: &str| {
            format!(
                "INSERT INTO inbox (event_id, room_id, txn_id, event_json, received_at)
                 VALUES ('{id}', '!r:x', 't', '{{}}', 0)"
            )
        };
        let count = || async {
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM inbox")
                .fetch_one(&store.pool)
                .await
                .expect("count")
                .try_get(0)
                .expect("a number");
            n
        };
        for relaxed in [false, true] {
            let writer = || async {
                if relaxed {
                    store.relaxed().await.expect("relaxed")
                } else {
                    store.writer().await.expect("writer")
                }
            };
            let before = count().await;
            // The second statement fails: the first is not kept.
            let sql = atomic_sql(&format!(
                "{};\nINSERT INTO no_such_table VALUES (1)",
                insert("$a")
            ));
            let failed = writer().await.atomic(sqlx::query(&sql)).await;
            assert!(failed.is_err(), "a failing statement fails the whole");
            assert_eq!(count().await, before, "nothing of a failed whole is kept");
            // Both statements succeed: both are kept, and seen by other connections.
            let sql = atomic_sql(&format!(
                "{};\n{}",
                insert(&format!("$b{relaxed}")),
                insert(&format!("$c{relaxed}"))
            ));
            writer()
                .await
                .atomic(sqlx::query(&sql))
                .await
                .expect("atomic");
            assert_eq!(count().await, before + 2);
            // A transaction left open, as by a dropped `atomic`: the next writer starts clean.
            {
                let mut w = writer().await;
                sqlx::query("BEGIN IMMEDIATE")
                    .execute(&mut *w)
                    .await
                    .expect("begin");
                sqlx::query(&insert(&format!("$d{relaxed}")))
                    .execute(&mut *w)
                    .await
                    .expect("insert");
                let Writer::Kept { conns, .. } = &mut w else {
                    unreachable!("SQLite")
                };
                conns.open[usize::from(relaxed)] = true;
            }
            sqlx::query(&insert(&format!("$e{relaxed}")))
                .execute(&mut *writer().await)
                .await
                .expect("the next write");
            assert_eq!(
                count().await,
                before + 3,
                "the abandoned insert is rolled back and the next write committed"
            );
        }
    }

    /// On SQLite in a file the hot reads run on connections of their own, kept and reused,
    /// each seeing what a writer committed just before it; a read that fails in SQLite
    /// gives up its connection (the next read opens a fresh one and answers), a column of
    /// the wrong kind is a never-works error, and those connections cannot write. In memory
    /// there is no second connection to the database: the reads go through the pool.
    #[tokio::test]
    async fn hot_reads_run_inline_on_read_only_connections_and_see_every_commit() {
        let (_dir, store) = file_store().await;
        let inline = store.inline.clone().expect("SQLite in a file reads inline");
        let count = || async {
            store
                .hot_read("SELECT COUNT(*) AS n FROM inbox", &[], |r| r.int("n"))
                .await
                .expect("read")[0]
        };
        for i in 0..3 {
            assert_eq!(count().await, i);
            sqlx::query(&format!(
                "INSERT INTO inbox (event_id, room_id, txn_id, event_json, received_at)
                 VALUES ('$e{i}', '!r:x', 't', '{{}}', 0)"
            ))
            .execute(&mut *store.relaxed().await.expect("writer"))
            .await
            .expect("insert");
        }
        assert_eq!(count().await, 3, "the last commit is seen at once");
        assert_eq!(
            inline.idle.lock().unwrap().len(),
            1,
            "one connection, reused"
        );
        assert_eq!(inline.open_connections(), 1, "and counted");
        let args = [Arg::Text("!r:x"), Arg::Int(2)];
        let rows = store
            .hot_read(
                "SELECT event_id FROM inbox WHERE room_id = $1 ORDER BY seq LIMIT $2",
                &args,
                |r| r.text("event_id"),
            )
            .await
            .expect("read");
        assert_eq!(rows, ["$e0", "$e1"], "placeholders bound in order");

        let failed = store
            .hot_read("SELECT nothing FROM nowhere", &[], |r| r.int("x"))
            .await;
        assert!(matches!(failed, Err(StoreError::Inline(_))), "{failed:?}");
        assert!(
            inline.idle.lock().unwrap().is_empty(),
            "the failed one dropped"
        );
        assert_eq!(inline.open_connections(), 0, "and no longer counted");
        assert_eq!(count().await, 3, "a fresh connection answers");
        let wrong = store
            .hot_read("SELECT event_id FROM inbox", &[], |r| r.int("event_id"))
            .await
            .expect_err("text is no number");
        assert!(!wrong.is_transient(), "{wrong}");
        let write = inline.read(|conn| Ok(conn.execute("DELETE FROM inbox", [])?));
        assert!(write.is_err(), "read-only: {write:?}");
        assert_eq!(count().await, 3);

        let memory = Store::connect("sqlite::memory:").await.expect("store");
        assert!(memory.inline.is_none(), "no file to open twice");
        let n = memory
            .hot_read("SELECT 41 + $1 AS n", &[Arg::Int(1)], |r| r.int("n"))
            .await
            .expect("read through the pool");
        assert_eq!(n, [42]);
    }

    /// A relaxed write on the calling thread commits all of its statements or none, is seen
    /// by sqlx's connections at once, and is not held up by a transaction a dropped sqlx
    /// write left open (which would hold SQLite's write lock): that one is rolled back first.
    #[tokio::test]
    async fn inline_relaxed_writes_are_atomic_and_take_the_writers_turn() {
        let (_dir, store) = file_store().await;
        let insert = INSERT_EVENT;
        let count = || async {
            let n: i64 = sqlx::query("SELECT COUNT(*) FROM inbox")
                .fetch_one(&store.pool)
                .await
                .expect("count")
                .try_get(0)
                .expect("a number");
            n
        };
        let wrote = store
            .relaxed_inline(|tx| Ok(tx.execute(insert, ["$a"])? + tx.execute(insert, ["$b"])?))
            .await
            .expect("SQLite in a file writes inline");
        assert_eq!(wrote.expect("written"), 2);
        assert_eq!(count().await, 2, "seen by sqlx's connections");
        let failed = store
            .relaxed_inline(|tx| {
                tx.execute(insert, ["$c"])?;
                Ok(tx.execute("INSERT INTO no_such_table VALUES (1)", [])?)
            })
            .await
            .expect("inline");
        assert!(failed.is_err());
        assert_eq!(count().await, 2, "nothing of a failed write is kept");
        // A sqlx write dropped inside its transaction, holding the write lock.
        {
            let mut w = store.relaxed().await.expect("writer");
            sqlx::query("BEGIN IMMEDIATE")
                .execute(&mut *w)
                .await
                .expect("begin");
            let Writer::Kept { conns, .. } = &mut w else {
                unreachable!("SQLite")
            };
            conns.open[1] = true;
        }
        store
            .relaxed_inline(|tx| Ok(tx.execute(insert, ["$d"])?))
            .await
            .expect("inline")
            .expect("not kept waiting by the abandoned transaction");
        assert_eq!(count().await, 3);
        let memory = Store::connect("sqlite::memory:").await.expect("store");
        assert!(memory.relaxed_inline(|_| Ok(())).await.is_none());
    }

    /// An acknowledged write on the calling thread commits with `synchronous = FULL` (flushed
    /// before it returns) and leaves the connection relaxed for the next write; a homeserver
    /// transaction's events are recorded that way, through no sqlx connection, and a
    /// checkpoint is asked for once every `CHECKPOINT_EVERY` commits.
    #[tokio::test]
    async fn acknowledged_inline_writes_flush_and_leave_the_writer_relaxed() {
        let (_dir, store) = file_store().await;
        let inline = store.inline.clone().expect("inline");
        let synchronous = |tx: &rusqlite::Transaction<'_>| -> Result<i64, StoreError> {
            Ok(tx.query_row("PRAGMA synchronous", [], |r| r.get(0))?)
        };
        const FULL: i64 = 2;
        const NORMAL: i64 = 1;
        for _ in 0..2 {
            let flushed = store.flushed_inline(synchronous).await.expect("inline");
            assert_eq!(flushed.expect("write"), FULL);
            let relaxed = store.relaxed_inline(synchronous).await.expect("inline");
            assert_eq!(relaxed.expect("write"), NORMAL, "set back after the flush");
        }
        let event = crate::store::NewInboxEvent {
            event_id: "$e",
            room_id: "!r:x",
            event_json: "{}",
        };
        assert_eq!(
            store
                .record_events("t1", std::slice::from_ref(&event))
                .await
                .expect("record"),
            1
        );
        assert_eq!(store.record_events("t2", &[event]).await.expect("again"), 0);
        assert!(
            store
                .write_gate
                .as_ref()
                .unwrap()
                .lock()
                .await
                .full
                .is_none(),
            "no sqlx connection wrote it"
        );
        assert_eq!(inbox_rows(&store, "$e").await, 1);

        // 6 commits so far (a duplicate commits too): a checkpoint is asked for at the
        // CHECKPOINT_EVERY-th, by the write that made it, and then not again at once.
        let every = super::super::inline::CHECKPOINT_EVERY;
        let asked = || {
            inline
                .checkpointed_at
                .load(std::sync::atomic::Ordering::Relaxed)
        };
        assert_eq!(asked(), 0);
        for _ in 6..every {
            store
                .relaxed_inline(|_| Ok(()))
                .await
                .expect("inline")
                .expect("write");
        }
        assert_eq!(asked(), every);
        assert!(!inline.checkpoint_due());
    }

    /// Every connection to SQLite keeps its temporary storage in memory (`TEMP_IN_MEMORY`):
    /// the inline writer and readers, and sqlx's flushing and relaxed connections. A multi-row
    /// statement's journal then never becomes a file created and deleted in the acknowledged
    /// path.
    #[tokio::test]
    async fn every_sqlite_connection_keeps_temporary_storage_in_memory() {
        const MEMORY: i64 = 2;
        let (_dir, store) = file_store().await;
        let inline = store.inline.clone().expect("inline");
        let temp_store = |conn: &rusqlite::Connection| -> Result<i64, StoreError> {
            Ok(conn.query_row("PRAGMA temp_store", [], |r| r.get(0))?)
        };
        for flushed in [false, true] {
            let written = if flushed {
                store.flushed_inline(|tx| temp_store(tx)).await
            } else {
                store.relaxed_inline(|tx| temp_store(tx)).await
            };
            assert_eq!(
                written.expect("inline").expect("write"),
                MEMORY,
                "inline writer"
            );
        }
        assert_eq!(
            inline.read(temp_store).expect("read"),
            MEMORY,
            "inline reader"
        );
        for (pool, what) in [
            (&store.pool, "sqlx's pool"),
            (&store.relaxed_pool, "relaxed"),
        ] {
            let mode: i64 = sqlx::query("PRAGMA temp_store")
                .fetch_one(pool)
                .await
                .expect("pragma")
                .try_get(0)
                .expect("value");
            assert_eq!(mode, MEMORY, "{what}");
        }
    }

    /// An inline write that finds SQLite's write lock held by another process (an operator's
    /// command) for longer than a runtime thread may wait is not refused: it goes through
    /// sqlx's connection, which waits for the lock on its own thread, and the inline writer,
    /// which did nothing wrong, is kept. A homeserver transaction is recorded late, not
    /// answered with a failure.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_lock_held_by_another_process_hands_the_write_to_sqlx() {
        let (dir, store) = file_store().await;
        let inline = store.inline.clone().expect("inline");
        store
            .relaxed_inline(|_| Ok(()))
            .await
            .expect("inline")
            .expect("write");
        let other = rusqlite::Connection::open(dir.path().join("s.db")).expect("open");
        other.execute_batch("BEGIN IMMEDIATE").expect("lock");
        let hold = super::super::inline::BUSY_TIMEOUT * 3;
        let release = std::thread::spawn(move || {
            std::thread::sleep(hold);
            other.execute_batch("COMMIT").expect("unlock");
        });
        let started = std::time::Instant::now();
        let event = crate::store::NewInboxEvent {
            event_id: "$late",
            room_id: "!r:x",
            event_json: "{}",
        };
        let recorded = store.record_events("t", &[event]).await;
        let waited = started.elapsed();
        release.join().expect("released");
        assert_eq!(recorded.expect("recorded once the lock was free"), 1);
        assert!(waited >= hold, "waited for the other process: {waited:?}");
        let gate = store.write_gate.as_ref().expect("SQLite").lock().await;
        assert!(gate.full.is_some(), "through sqlx's flushing connection");
        drop(gate);
        assert!(
            inline.writer.lock().expect("writer").is_some(),
            "the inline writer kept"
        );
        assert_eq!(inbox_rows(&store, "$late").await, 1);
    }

    /// Once the inline writer is open, the hot reads run on it whenever no write holds it
    /// (its page cache is the one still warm): no read-only connection is opened for them,
    /// they see what sqlx's connections committed since, and a statement that could write is
    /// refused there as never-works, changing nothing. While a write holds it, reads go to a
    /// read-only connection instead of waiting.
    #[tokio::test]
    async fn hot_reads_run_on_the_free_inline_writer_and_cannot_write_there() {
        let (_dir, store) = file_store().await;
        let inline = store.inline.clone().expect("inline");
        let insert = INSERT_EVENT;
        store
            .relaxed_inline(|tx| Ok(tx.execute(insert, ["$a"])?))
            .await
            .expect("inline")
            .expect("written");
        sqlx::query(INSERT_EVENT)
            .bind("$b")
            .execute(&mut *store.writer().await.expect("writer"))
            .await
            .expect("insert through sqlx");
        let count = "SELECT COUNT(*) AS n FROM inbox";
        let n = store
            .hot_read(count, &[], |r| r.int("n"))
            .await
            .expect("read");
        assert_eq!(n, [2], "sqlx's commit seen on the writer's connection");
        assert!(inline.idle.lock().unwrap().is_empty(), "no reader opened");
        assert_eq!(inline.open_connections(), 1, "the writer alone");

        let write = store
            .hot_read("DELETE FROM inbox RETURNING seq", &[], |r| r.int("seq"))
            .await
            .expect_err("a read that writes");
        assert!(!write.is_transient(), "{write}");
        assert_eq!(
            store
                .hot_read(count, &[], |r| r.int("n"))
                .await
                .expect("read"),
            [2],
            "nothing deleted"
        );
        assert!(
            inline.idle.lock().unwrap().is_empty(),
            "the writer kept and reading"
        );

        // A write in progress on another thread: the read does not wait for it.
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let writing = {
            let inline = inline.clone();
            std::thread::spawn(move || {
                inline.write(false, |_| {
                    held_tx.send(()).expect("signal");
                    release_rx.recv().expect("release");
                    Ok(())
                })
            })
        };
        held_rx.recv().expect("the write holds the writer");
        let n = store
            .hot_read(count, &[], |r| r.int("n"))
            .await
            .expect("read");
        assert_eq!(n, [2]);
        assert_eq!(
            inline.idle.lock().unwrap().len(),
            1,
            "a read-only one served it"
        );
        assert_eq!(inline.open_connections(), 2);
        release_tx.send(()).expect("release");
        writing.join().expect("thread").expect("write");
    }
}
