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
const INSERT_EVENT: &str = "INSERT INTO inbox (event_id, room_id, txn_id, event_json, received_at)
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
