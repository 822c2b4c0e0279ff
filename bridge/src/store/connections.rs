//! The connections statements run on. On PostgreSQL any connection of the pool; on SQLite,
//! writers take turns on two connections kept for them (one flushing each commit to disk, one
//! not), and the hot reads on a few kept out of the pool, because sqlx pings a pooled
//! connection each time it is given back (a round trip to its thread for nothing).

use sqlx::AnyPool;

use super::{Store, StoreError};

impl Store {
    /// One trivial query: whether the database answers at all (readiness).
    pub async fn ping(&self) -> Result<(), StoreError> {
        // A read: it must not wait for a writer's turn (readiness asks while a flood writes).
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        // The writers' own connections, when no writer holds them: one that does not answer
        // is dropped, and the next writer takes a fresh one from the pool. (Handling that
        // keeps failing asks this before it gives up on an item, see `worker.rs`.)
        if let Some(readers) = &self.readers {
            // The kept readers no one is using: one that does not answer is dropped, and a
            // fresh one is taken from the pool when next needed.
            let idle = std::mem::take(&mut *readers.idle.lock().expect("readers lock"));
            for mut conn in idle {
                match sqlx::Connection::ping(&mut conn).await {
                    Ok(()) => readers.idle.lock().expect("readers lock").push(conn),
                    Err(e) => {
                        tracing::warn!(error = %e, "a reader's connection stopped answering; replacing it")
                    }
                }
            }
        }
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
    /// `synchronous = FULL`. The write-ahead log is written in order, so the next such commit
    /// flushes every relaxed one before it too; a kill -9 loses nothing either way (the log is
    /// in the OS's hands). What a power cut can lose is the relaxed commits since the last
    /// flush, and those are handling results the inbox lets us redo (messages transcribed,
    /// events marked processed), all idempotent. In a flood, this turns about ten disk
    /// flushes per homeserver transaction (one per conversation lane's batch) into one. The
    /// relaxed connections are a pool of their own, so no connection ever changes mode and
    /// none can be given back in the wrong one.
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
        let open = std::mem::take(&mut conns.open[usize::from(relaxed)]);
        let slot = conns.slot(relaxed);
        if slot.is_none() {
            *slot = Some(pool.acquire().await?.detach());
        } else if open && let Some(conn) = slot.as_mut() {
            // Left inside a transaction by a dropped `Writer::atomic`: nothing of it was
            // committed, and nothing after it may join it.
            let _ = sqlx::query("ROLLBACK").execute(conn).await;
        }
        Ok(Writer::Kept { conns, relaxed })
    }

    /// A connection for one of the reads each relayed message makes (its room's pending
    /// events, its conversation and holders, its chat's queue). On SQLite one of
    /// `KEPT_READERS` connections kept out of the pool, because sqlx pings a pooled
    /// connection when it is given back: a second round trip to the connection's thread,
    /// and a spawned task, for every read. Other reads use the pool.
    pub(crate) async fn reader(&self) -> Result<Reader, StoreError> {
        let Some(kept) = &self.readers else {
            return Ok(Reader::Pooled(self.pool.acquire().await?));
        };
        let permit = kept
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("the readers' semaphore is never closed");
        let idle = kept.idle.lock().expect("readers lock").pop();
        let conn = match idle {
            Some(conn) => conn,
            None => self.pool.acquire().await?.detach(),
        };
        Ok(Reader::Kept {
            conn: Some(conn),
            home: kept.clone(),
            _permit: permit,
        })
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

/// How many connections SQLite's hot reads keep (see [`Store::reader`]): at most this many
/// such reads run at once.
const KEPT_READERS: usize = 4;

/// The connections [`Store::reader`] hands out on SQLite, and the permits bounding them.
pub(crate) struct KeptReaders {
    permits: std::sync::Arc<tokio::sync::Semaphore>,
    idle: std::sync::Mutex<Vec<sqlx::AnyConnection>>,
}

impl KeptReaders {
    pub(super) fn new() -> Self {
        Self {
            permits: std::sync::Arc::new(tokio::sync::Semaphore::new(KEPT_READERS)),
            idle: Default::default(),
        }
    }
}

/// A connection to read with (see [`Store::reader`]); given back when dropped.
pub(crate) enum Reader {
    /// PostgreSQL: any connection of the pool.
    Pooled(sqlx::pool::PoolConnection<sqlx::Any>),
    /// SQLite: one of the kept readers. A read dropped half-way leaves nothing behind on
    /// it (reads take no locks beyond their statement, which the connection's thread
    /// finishes or resets before its next one), so it goes back as it is.
    Kept {
        conn: Option<sqlx::AnyConnection>,
        home: std::sync::Arc<KeptReaders>,
        _permit: tokio::sync::OwnedSemaphorePermit,
    },
}

impl std::ops::Deref for Reader {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &Self::Target {
        match self {
            Reader::Pooled(conn) => conn,
            Reader::Kept { conn, .. } => conn.as_ref().expect("held until dropped"),
        }
    }
}

impl std::ops::DerefMut for Reader {
    fn deref_mut(&mut self) -> &mut Self::Target {
        match self {
            Reader::Pooled(conn) => conn,
            Reader::Kept { conn, .. } => conn.as_mut().expect("held until dropped"),
        }
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        if let Reader::Kept { conn, home, .. } = self
            && let Some(conn) = conn.take()
        {
            home.idle.lock().expect("readers lock").push(conn);
        }
    }
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
    use crate::store::NewInboxEvent;
    use std::time::Duration;

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
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let store = Store::connect(&url).await.expect("store");
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
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let store = Store::connect(&url).await.expect("store");
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

    /// The hot reads' connections are kept and reused, at most `KEPT_READERS` at once, and
    /// one whose read was dropped half-way answers the next read correctly.
    #[tokio::test]
    async fn kept_readers_are_bounded_reused_and_survive_a_dropped_read() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let store = Store::connect(&url).await.expect("store");
        let kept = store.readers.clone().expect("SQLite keeps readers");
        let mut held = Vec::new();
        for _ in 0..KEPT_READERS {
            held.push(store.reader().await.expect("reader"));
        }
        let more = tokio::time::timeout(Duration::from_millis(100), store.reader()).await;
        assert!(more.is_err(), "no more than KEPT_READERS at once");
        drop(held);
        assert_eq!(kept.idle.lock().unwrap().len(), KEPT_READERS, "all kept");
        for _ in 0..3 {
            store.reader().await.expect("reader");
        }
        assert_eq!(
            kept.idle.lock().unwrap().len(),
            KEPT_READERS,
            "reused, not added"
        );
        // A long read given up on after a millisecond, then a short one on the same
        // connections: the answer is the short one's.
        let long = async {
            let mut r = store.reader().await.expect("reader");
            sqlx::query(
                "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 3000000)
                 SELECT COUNT(*) FROM n",
            )
            .fetch_one(&mut *r)
            .await
        };
        assert!(
            tokio::time::timeout(Duration::from_millis(1), long)
                .await
                .is_err(),
            "the long read is dropped half-way"
        );
        for _ in 0..KEPT_READERS {
            let n: i64 = sqlx::query("SELECT 41 + 1")
                .fetch_one(&mut *store.reader().await.expect("reader"))
                .await
                .expect("read")
                .try_get(0)
                .expect("a number");
            assert_eq!(n, 42);
        }
    }
}
