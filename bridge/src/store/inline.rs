//! The statements every relayed message runs, on SQLite run on the calling thread: the reads
//! (its room's pending events, its conversation and holders, its chat's queue), the record of
//! a homeserver transaction's events (acknowledged: flushed before it returns), and the
//! relaxed writes (the visitor batch, a part recorded as sent).
//!
//! sqlx runs each SQLite connection on a thread of its own: a statement is sent there, and
//! its rows come back, each way a thread wake-up. A profile of a burst of relayed messages
//! (`SWITCHBOARD_BENCH_BURST_ONLY=1`, see `docs/benchmarks.md`) counted about 37 context
//! switches per message, a third of them on those threads, and put over half of
//! Switchboard's CPU in the kernel's switching. These statements take tens of microseconds in
//! SQLite itself, less than the hand-off, so they run here, on connections of our own to the
//! same file. The writes run on one connection, in the writers' turn (`connections.rs`), so
//! they never meet another writer. A relaxed one is not flushed (`synchronous = NORMAL`: in
//! WAL mode no disk wait at all); an acknowledged one is (`FULL` for that transaction), and
//! holds up the calling thread as long as the disk takes, as it would hold up sqlx's thread.
//! Checkpoints are left to sqlx's connections ([`InlineSqlite::checkpoint_due`]).
//!
//! A read runs on that same connection when no write holds it: SQLite drops a connection's
//! page cache whenever another has committed, so the connection that wrote last is the one
//! whose cache is warm (see [`InlineSqlite::query`]). Otherwise on a read-only connection: in
//! WAL mode a reader never waits for the writer, and sees every commit that finished before
//! it began. PostgreSQL goes through the pool as before.

use std::{
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use rusqlite::{OpenFlags, Row, types::ToSqlOutput};

use super::StoreError;

/// Connections kept between reads: at most as many reads run at once as threads call in.
const MAX_IDLE: usize = 8;

/// How long a read waits for a lock SQLite takes briefly (opening the write-ahead log's
/// index while another connection recovers it) before it fails as retry-later, and a write
/// for the write lock before it is handed to sqlx (see `Store::inline_write`). A read in WAL
/// mode does not otherwise wait, and a write here finds the lock free unless another process
/// holds it (the writers of this one take turns); either holds up its thread while it waits.
pub(super) const BUSY_TIMEOUT: Duration = Duration::from_millis(250);

/// Connections of our own to the database file, opened when first needed: read-only ones,
/// and one to write with in the writers' turn.
pub(crate) struct InlineSqlite {
    path: PathBuf,
    pub(super) idle: std::sync::Mutex<Vec<Counted>>,
    pub(super) writer: std::sync::Mutex<Option<Counted>>,
    /// How many of them are open now, in use or not (`Store::connections`, a leak check).
    open: Arc<AtomicU32>,
    /// Commits of the writer, and their count when a checkpoint was last asked for.
    commits: AtomicU32,
    pub(super) checkpointed_at: AtomicU32,
}

/// Commits of the writer here between checkpoints: a relayed message commits two or three
/// times, a few pages each, so the log stays within a few thousand pages (SQLite's own
/// default is a checkpoint at 1000 pages; sqlx's connections here at 10 000).
pub(super) const CHECKPOINT_EVERY: u32 = 500;

/// A connection counted in [`InlineSqlite::open_connections`] until it is closed.
pub(crate) struct Counted {
    conn: rusqlite::Connection,
    open: Arc<AtomicU32>,
}

impl Counted {
    fn new(conn: rusqlite::Connection, open: &Arc<AtomicU32>) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self {
            conn,
            open: open.clone(),
        }
    }
}

impl Drop for Counted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl InlineSqlite {
    /// For a SQLite database in a file (the URL sqlx was given); `None` for one in memory,
    /// which no other connection can open.
    pub(crate) fn for_url(url: &str) -> Option<Self> {
        let options = sqlx::sqlite::SqliteConnectOptions::from_str(url).ok()?;
        let path = options.get_filename();
        // Connected and migrated before this is asked, so a database in a file exists.
        path.is_file().then(|| Self {
            path: path.to_owned(),
            idle: Default::default(),
            writer: Default::default(),
            open: Default::default(),
            commits: Default::default(),
            checkpointed_at: Default::default(),
        })
    }

    /// Connections open now, in use or kept.
    pub(crate) fn open_connections(&self) -> u32 {
        self.open.load(Ordering::Relaxed)
    }

    /// Runs `read` on one of the connections. One whose statement failed in SQLite is
    /// dropped rather than kept: the next read opens a fresh one.
    pub(crate) fn read<T>(
        &self,
        read: impl FnOnce(&rusqlite::Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let kept = self.idle.lock().expect("inline readers lock").pop();
        let conn = match kept {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn.conn);
        if !matches!(result, Err(StoreError::Inline(_))) {
            let mut idle = self.idle.lock().expect("inline readers lock");
            if idle.len() < MAX_IDLE {
                idle.push(conn);
            }
        }
        result
    }

    /// Runs `sql` (a read: a statement that could write is refused) and decodes its rows, on
    /// the writer's connection when no write holds it, otherwise on a read-only one.
    ///
    /// Why the writer's first: SQLite drops a connection's whole page cache when another
    /// connection has committed since its last transaction. A relayed message is read and
    /// written in turns (its pending events, its batch, its chat's queue, the part sent),
    /// so on separate connections every turn started cold, rereading the same pages from the
    /// log with a system call each (about 7 % of Switchboard's CPU in a profile of the burst
    /// benchmark). On the connection that wrote last, they are still in memory.
    pub(crate) fn query<T>(
        &self,
        sql: &str,
        args: &[Arg<'_>],
        decode: impl Fn(&dyn Columns) -> Result<T, StoreError>,
    ) -> Result<Vec<T>, StoreError> {
        if let Ok(mut slot) = self.writer.try_lock()
            && let Some(conn) = slot.as_mut()
        {
            let result = rows(&conn.conn, sql, args, decode);
            // A statement refused, or a column of the wrong kind, says nothing of the
            // connection; anything else from SQLite may, and the next write opens afresh.
            if matches!(&result, Err(StoreError::Inline(e)) if is_transient(e)) {
                *slot = None;
            }
            return result;
        }
        self.read(|conn| rows(conn, sql, args, decode))
    }

    fn open(&self) -> Result<Counted, StoreError> {
        let conn = rusqlite::Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute_batch(super::TEMP_IN_MEMORY)?;
        Ok(Counted::new(conn, &self.open))
    }

    /// Runs `write` in one immediate transaction. Its commit is flushed to disk before this
    /// returns with `flush` (`synchronous = FULL` for this transaction: an acknowledged
    /// write, such as a homeserver transaction's events), and not without (`NORMAL`: in WAL
    /// mode the log is written but not synced). The caller holds the writers' turn
    /// ([`super::Store::relaxed_inline`]), so the write lock is free unless another process
    /// (an operator's command) holds it. A failed write is rolled back, and its connection
    /// dropped.
    pub(crate) fn write<T>(
        &self,
        flush: bool,
        write: impl FnOnce(&rusqlite::Transaction<'_>) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let mut slot = self.writer.lock().expect("inline writer lock");
        if slot.is_none() {
            let conn = rusqlite::Connection::open_with_flags(
                &self.path,
                OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
            )?;
            conn.busy_timeout(BUSY_TIMEOUT)?;
            // No checkpoint from here: a checkpoint writes and syncs the database file, which
            // takes far longer than a commit; `Store` has one run on sqlx's threads instead
            // (see `checkpoint_due`).
            conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA wal_autocheckpoint = 0")?;
            conn.execute_batch(super::TEMP_IN_MEMORY)?;
            *slot = Some(Counted::new(conn, &self.open));
        }
        let conn = &mut slot.as_mut().expect("opened above").conn;
        let result = (|| {
            if flush {
                conn.prepare_cached("PRAGMA synchronous = FULL")?
                    .execute([])?;
            }
            let tx = conn.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
            let out = write(&tx)?;
            tx.commit()?;
            Ok(out)
        })();
        // Back to relaxed commits; a connection that cannot say so is not kept.
        let reset = !flush
            || conn
                .prepare_cached("PRAGMA synchronous = NORMAL")
                .and_then(|mut s| s.execute([]))
                .is_ok();
        // A connection that found the write lock taken (by another process) did nothing wrong.
        let failed = matches!(&result, Err(StoreError::Inline(e)) if !is_busy(e));
        if failed || !reset {
            *slot = None;
        } else if result.is_ok() {
            self.commits.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Whether a checkpoint is due: once every [`CHECKPOINT_EVERY`] commits of the writer
    /// here (each answers true once). Nothing else checkpoints the log while the writes
    /// run here, and a log that only grows makes every read slower.
    pub(crate) fn checkpoint_due(&self) -> bool {
        let commits = self.commits.load(Ordering::Relaxed);
        let last = self.checkpointed_at.load(Ordering::Relaxed);
        commits.wrapping_sub(last) >= CHECKPOINT_EVERY
            && self
                .checkpointed_at
                .compare_exchange(last, commits, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
    }
}

/// A value bound to a read's `$n` placeholder.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Arg<'a> {
    Int(i64),
    Text(&'a str),
}

impl rusqlite::ToSql for Arg<'_> {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        match self {
            Arg::Int(v) => v.to_sql(),
            Arg::Text(v) => v.to_sql(),
        }
    }
}

/// Values bound to a statement's placeholders in order, by either driver: one binding
/// function (a transcript entry's columns, a group write's rows) serves both.
pub(crate) trait Bind<'q>: Sized {
    fn int(self, v: i64) -> Self;
    fn text(self, v: &'q str) -> Self;
    fn opt_text(self, v: Option<&'q str>) -> Self;
    /// A truth value: PostgreSQL wants a boolean where SQLite takes an integer, so this is
    /// not [`Bind::int`].
    fn flag(self, v: bool) -> Self;
}

type AnyQuery<'q> = sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>;

impl<'q> Bind<'q> for AnyQuery<'q> {
    fn int(self, v: i64) -> Self {
        self.bind(v)
    }
    fn text(self, v: &'q str) -> Self {
        self.bind(v)
    }
    fn opt_text(self, v: Option<&'q str>) -> Self {
        self.bind(v)
    }
    fn flag(self, v: bool) -> Self {
        self.bind(v)
    }
}

/// A statement's values for rusqlite, borrowed where they are text.
impl<'q> Bind<'q> for Vec<ToSqlOutput<'q>> {
    fn int(mut self, v: i64) -> Self {
        self.push(ToSqlOutput::Owned(v.into()));
        self
    }
    fn text(mut self, v: &'q str) -> Self {
        self.push(ToSqlOutput::Borrowed(v.into()));
        self
    }
    fn opt_text(self, v: Option<&'q str>) -> Self {
        match v {
            Some(v) => self.text(v),
            None => {
                let mut values = self;
                values.push(ToSqlOutput::Owned(rusqlite::types::Value::Null));
                values
            }
        }
    }
    fn flag(self, v: bool) -> Self {
        self.int(v.into())
    }
}

/// Runs `sql` (its `$n` placeholders bound to `args` in order) and decodes each row.
pub(crate) fn rows<T>(
    conn: &rusqlite::Connection,
    sql: &str,
    args: &[Arg<'_>],
    decode: impl Fn(&dyn Columns) -> Result<T, StoreError>,
) -> Result<Vec<T>, StoreError> {
    let mut statement = conn.prepare_cached(sql)?;
    // A read may run on the writer's connection (`InlineSqlite::query`).
    if !statement.readonly() {
        return Err(rusqlite::Error::InvalidQuery.into());
    }
    let mut rows = statement.query(rusqlite::params_from_iter(args))?;
    let mut out = Vec::new();
    while let Some(row) = rows.next()? {
        out.push(decode(row)?);
    }
    Ok(out)
}

/// A row as either driver gives it, read by column name, so one decoder serves the rows
/// sqlx reads (every engine) and those read here.
pub(crate) trait Columns {
    fn int(&self, name: &str) -> Result<i64, StoreError>;
    fn text(&self, name: &str) -> Result<String, StoreError>;
    fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError>;
}

impl Columns for sqlx::any::AnyRow {
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
    fn text(&self, name: &str) -> Result<String, StoreError> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(sqlx::Row::try_get(self, name)?)
    }
}

impl Columns for Row<'_> {
    fn int(&self, name: &str) -> Result<i64, StoreError> {
        Ok(self.get(name)?)
    }
    fn text(&self, name: &str) -> Result<String, StoreError> {
        Ok(self.get(name)?)
    }
    fn opt_text(&self, name: &str) -> Result<Option<String>, StoreError> {
        Ok(self.get(name)?)
    }
}

/// Whether SQLite refused for a lock another connection holds (past [`BUSY_TIMEOUT`]).
pub(super) fn is_busy(e: &rusqlite::Error) -> bool {
    matches!(
        e.sqlite_error_code(),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked)
    )
}

/// Whether a failure of a read here is worth retrying: SQLite busy or failing is; a column
/// that is not what the decoder expects never will be.
pub(super) fn is_transient(e: &rusqlite::Error) -> bool {
    !matches!(
        e,
        rusqlite::Error::InvalidColumnType(..)
            | rusqlite::Error::InvalidColumnName(_)
            | rusqlite::Error::InvalidColumnIndex(_)
            | rusqlite::Error::FromSqlConversionFailure(..)
            | rusqlite::Error::IntegralValueOutOfRange(..)
            | rusqlite::Error::Utf8Error(_)
            | rusqlite::Error::QueryReturnedNoRows
            | rusqlite::Error::InvalidQuery
    )
}
