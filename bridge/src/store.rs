//! Persistent state: the inbox of pushed events, conversations and their transcripts (what
//! each part holds is in its module; this one connects and keeps the homeserver's inbox).
//!
//! SQL is written once with `$n` placeholders and runs on SQLite and PostgreSQL through sqlx's
//! `Any` driver; only the migrations differ per engine (auto-increment syntax). Statements built
//! at run time (multi-row inserts) spell their parameters per engine ([`Params`]).

use sqlx::{AnyPool, Row, any::AnyPoolOptions};

use crate::clock::{Clock, SharedClock};

mod appservice_state;
mod connections;
pub(crate) use connections::{WriteConns, atomic_sql};
mod connector_state;
mod conversations;
pub(crate) use conversations::bind_message;
use conversations::conversation_from_row;
mod dead_letters;
mod initiators;
mod inline;
use inline::{Arg, Bind, Columns, InlineSqlite};
mod leases;
pub use dead_letters::{DeadLetter, DeadLetterSource, MAX_REASON_CHARS};
pub use initiators::{InitiatorRow, PendingRow};
pub use leases::{Fence, Lease};
mod queues;
pub use queues::{NewDelivery, VisitorBatch};
mod remote;
pub use remote::{LINK_CODE_TTL_MS, REMOTE_INBOX_ORDER_LOCK, Recorded, RemoteInboxEvent};
mod offers;
pub use offers::{AssignmentHistory, AssignmentRow, ConversationWithHolders, OfferRow};
mod outbox;
pub use outbox::OutboxRow;
mod responders;
mod retention;
mod revisions;
mod room_posts;
mod schema;
pub use responders::{SOURCE_ADMIN, SOURCE_CONFIG};
pub use retention::{DeletedRows, EraseError};
pub use room_posts::{RemotePost, RoomPostRow};
mod service_levels;
pub use schema::SchemaStatus;
pub use service_levels::{LevelInput, Milestone, ReplyContext};
mod sessions;
mod stats;
pub use stats::{OutboxDepth, StoreGauges};

/// Errors from the store. Never shown to visitors as-is.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    /// From one of SQLite's reads run on the calling thread (`inline.rs`).
    #[error("database error: {0}")]
    Inline(#[from] rusqlite::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Holds only the URL's scheme: the rest may hold a password.
    #[error("unsupported database URL scheme {0:?}: use sqlite://PATH or postgres://...")]
    UnsupportedUrl(String),
    #[error("corrupt row in {table}: {detail}")]
    Corrupt { table: &'static str, detail: String },
    #[error("no row {seq} in {table}")]
    NoSuchRow { table: &'static str, seq: i64 },
    /// A write made as the holder of a lease found the lease no longer its own (taken over,
    /// or run out): nothing was written, and trying again cannot help.
    #[error("no longer the holder of the lease {0}")]
    Deposed(String),
}

impl StoreError {
    /// Whether a failure is worth retrying: the database being busy, unreachable or
    /// restarting is; a row we cannot read is not.
    pub fn is_transient(&self) -> bool {
        match self {
            StoreError::Database(e) => !matches!(
                e,
                sqlx::Error::ColumnDecode { .. }
                    | sqlx::Error::Decode(_)
                    | sqlx::Error::TypeNotFound { .. }
                    | sqlx::Error::ColumnNotFound(_)
                    | sqlx::Error::RowNotFound
            ),
            StoreError::Inline(e) => inline::is_transient(e),
            StoreError::Corrupt { .. }
            | StoreError::NoSuchRow { .. }
            | StoreError::UnsupportedUrl(_)
            | StoreError::Deposed(_)
            | StoreError::Migrate(_) => false,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

impl Engine {
    /// The engine a database URL names (`sqlite:`, `postgres:` or `postgresql:`).
    pub fn of_url(url: &str) -> Result<Self, StoreError> {
        if url.starts_with("sqlite:") {
            Ok(Engine::Sqlite)
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Ok(Engine::Postgres)
        } else {
            // Only a scheme's characters (RFC 3986), so nothing past it is ever shown.
            let scheme = url
                .split_once(':')
                .map_or("", |(scheme, _)| scheme)
                .trim_start_matches(|c: char| !c.is_ascii_alphabetic());
            let scheme = match scheme
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c))
            {
                true => scheme,
                false => "",
            };
            Err(StoreError::UnsupportedUrl(scheme.to_owned()))
        }
    }
}

/// One event as pushed by the homeserver, waiting to be (or already) processed.
#[derive(Debug, Clone)]
pub struct InboxEvent {
    pub seq: i64,
    pub event_id: String,
    pub room_id: String,
    pub event_json: String,
    /// When it was recorded (unix ms): how long it waited is a metric.
    pub received_at: i64,
}

/// An event to record: the parts the store indexes plus the raw JSON.
#[derive(Debug, Clone)]
pub struct NewInboxEvent<'a> {
    pub event_id: &'a str,
    pub room_id: &'a str,
    pub event_json: &'a str,
}

#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// Connections for writes that need no disk flush of their own (see [`Store::relaxed`]):
    /// on SQLite a pool of its own whose commits are `synchronous = NORMAL`; on PostgreSQL
    /// the same pool.
    relaxed_pool: AnyPool,
    /// On SQLite, one writer at a time, in the order they asked, with the connections
    /// writes go through (see [`Store::writer`]).
    write_gate: Option<std::sync::Arc<tokio::sync::Mutex<WriteConns>>>,
    /// On SQLite in a file, the reads every relayed message makes and its relaxed record
    /// of a part sent, run on the calling thread (see [`Store::hot_read`],
    /// [`Store::relaxed_inline`]).
    inline: Option<std::sync::Arc<InlineSqlite>>,
    /// Runs of visitor messages being written together (`queues.rs`).
    batches: std::sync::Arc<queues::BatchGroup>,
    engine: Engine,
    /// Where every timestamp the store writes or compares with comes from (see `clock.rs`).
    clock: SharedClock,
}

/// How long a statement waits for a connection to a database server (PostgreSQL) before it
/// fails as retry-later. sqlx's default is 30 s, and while the server is gone it spends all
/// of it trying to reconnect: every homeserver transaction and visitor request then hung for
/// half a minute before its error. A connection is free within milliseconds in normal work.
pub const SERVER_ACQUIRE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// How many queued rows of one conversation one pass over a queue (outbox, room posts) looks
/// at. Later rows of that conversation wait behind the first anyway; capping them leaves room
/// in the batch for every other conversation.
pub const PER_ROOM_BATCH: i64 = 20;

impl Store {
    /// Opens (creating if needed) the database and brings its schema up to date. Its time
    /// is the system clock's; see [`Self::with_clock`].
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        sqlx::any::install_default_drivers();
        let engine = Engine::of_url(url)?;
        let url = match engine {
            // Create the file on first start: the zero-setup default must just work.
            Engine::Sqlite if !url.contains("mode=") => {
                format!("{url}{}mode=rwc", if url.contains('?') { '&' } else { '?' })
            }
            _ => url.to_owned(),
        };
        // Reads go through the pool; writers take turns on connections kept for them
        // (`Store::writer`). One connection for every read and write (the reads queued
        // behind the writes) was tried: `scripts/bench.sh` measured ingest at 6,300 events/s
        // with it, against 10,800 for the code before it in a run on the same idle machine,
        // and bridged latency was worse too.
        let options = |max, synchronous: &'static str| {
            let options = AnyPoolOptions::new().max_connections(max);
            if engine != Engine::Sqlite {
                return options.acquire_timeout(SERVER_ACQUIRE_TIMEOUT);
            }
            // A local file does not go stale: no ping before each use (one thread hop
            // less per statement).
            options
                .test_before_acquire(false)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        // WAL lets readers run beside the writer. A checkpoint (copying the
                        // log back into the database) every 10,000 pages rather than
                        // SQLite's 1,000: a flood rewrites the same index pages over and
                        // over, and each checkpoint copies every page written since the
                        // last once (it took a seventh of the store's CPU in a flood).
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            synchronous,
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA wal_autocheckpoint = 10000",
                            TEMP_IN_MEMORY,
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                        Ok(())
                    })
                })
        };
        // synchronous=FULL makes a commit durable before we acknowledge what it recorded.
        let pool = options(8, "PRAGMA synchronous = FULL")
            .connect(&url)
            .await?;
        match engine {
            Engine::Sqlite => schema::SQLITE.run(&pool).await?,
            Engine::Postgres => schema::POSTGRES.run(&pool).await?,
        }
        let relaxed_pool = match engine {
            Engine::Sqlite => {
                options(4, "PRAGMA synchronous = NORMAL")
                    .connect(&url)
                    .await?
            }
            Engine::Postgres => pool.clone(),
        };
        Ok(Self {
            pool,
            relaxed_pool,
            batches: Default::default(),
            write_gate: (engine == Engine::Sqlite).then(Default::default),
            inline: match engine {
                Engine::Sqlite => InlineSqlite::for_url(&url).map(std::sync::Arc::new),
                Engine::Postgres => None,
            },
            engine,
            clock: crate::clock::system(),
        })
    }

    /// The same database, with its time read from `clock`: what it writes as "now", and
    /// what it compares stored deadlines with. Only this handle (and its clones) use it.
    pub fn with_clock(mut self, clock: impl Clock) -> Self {
        self.clock = std::sync::Arc::new(clock);
        self
    }

    /// The clock this store reads its time from; the bridge reads its own from it too.
    pub fn clock(&self) -> &SharedClock {
        &self.clock
    }

    /// Now, by this store's clock (unix ms).
    pub(crate) fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }

    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Database connections open now (the pool's and, on SQLite, the relaxed writers'
    /// pool's and those of the reads and writes run on the calling thread), idle or not: a
    /// leak shows as this growing under steady work.
    pub fn connections(&self) -> u32 {
        let inline = self.inline.as_ref().map_or(0, |i| i.open_connections());
        match self.engine {
            Engine::Sqlite => self.pool.size() + self.relaxed_pool.size() + inline,
            Engine::Postgres => self.pool.size(),
        }
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Records the events of one transaction atomically. Events already known (by event ID)
    /// are skipped. Returns how many were new.
    ///
    /// Rows go in as multi-row `INSERT`s, `ROWS_PER_INSERT` events a statement: one round trip
    /// per chunk instead of per event, inside the one database transaction whose commit is
    /// what the homeserver's 200 waits for. On SQLite in a file, on the calling thread with
    /// its commit flushed (see [`Store::flushed_inline`]).
    pub async fn record_events(
        &self,
        txn_id: &str,
        events: &[NewInboxEvent<'_>],
    ) -> Result<u64, StoreError> {
        if events.is_empty() {
            // A transaction of typing notifications and receipts only.
            return Ok(0);
        }
        let now = self.now_ms();
        if let Some(inserted) = self
            .flushed_inline(|tx| {
                let mut inserted = 0;
                for chunk in events.chunks(ROWS_PER_INSERT) {
                    let values = bind_inbox(Vec::new(), chunk, txn_id, now);
                    inserted += tx
                        .prepare_cached(&inbox_insert(self.engine, chunk.len()))?
                        .execute(rusqlite::params_from_iter(values))?;
                }
                Ok(inserted as u64)
            })
            .await
        {
            return inserted;
        }
        let mut writer = self.writer().await?;
        if events.len() <= ROWS_PER_INSERT {
            // One statement is a transaction of its own: no BEGIN and COMMIT round trips.
            let sql = inbox_insert(self.engine, events.len());
            return Ok(bind_inbox(sqlx::query(&sql), events, txn_id, now)
                .execute(&mut *writer)
                .await?
                .rows_affected());
        }
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;
        let mut inserted = 0;
        for chunk in events.chunks(ROWS_PER_INSERT) {
            let sql = inbox_insert(self.engine, chunk.len());
            inserted += bind_inbox(sqlx::query(&sql), chunk, txn_id, now)
                .execute(&mut *tx)
                .await?
                .rows_affected();
        }
        tx.commit().await?;
        Ok(inserted)
    }

    /// The oldest unprocessed events, in the order they arrived. It reads the inbox in
    /// order, past the processed events (the lanes read by room, through the index of
    /// pending events; this serves the tests' `drain_inbox`).
    pub async fn pending_events(&self, limit: i64) -> Result<Vec<InboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, event_id, room_id, event_json, received_at FROM inbox
             WHERE processed_at IS NULL ORDER BY seq LIMIT $1",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(inbox_event).collect()
    }

    /// Marks an event handled. A relaxed write (see [`Store::relaxed`]): losing it in a power cut
    /// means handling the event again, which is idempotent.
    pub async fn mark_processed(&self, seq: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE inbox SET processed_at = $1 WHERE seq = $2")
            .bind(self.now_ms())
            .bind(seq)
            .execute(&mut *self.relaxed().await?)
            .await?;
        Ok(())
    }

    pub async fn count_inbox(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM inbox")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }
}

/// SQLite's temporary storage in memory, on every connection. A statement that changes
/// several rows inside a transaction (a homeserver transaction's multi-row `INSERT`, a
/// group of visitor batches) keeps the pages it changes in a statement journal, to undo
/// that statement alone should it fail half-way; past 64 KiB SQLite spills that journal to
/// a temporary file it creates, writes and deletes each time, so a homeserver transaction
/// of 100 events made a file of its own before it was acknowledged. In memory, the
/// benchmark's flood of 40,000 events wrote 4.8 KiB per event instead of 6.1 (565 files
/// fewer) and was processed about a tenth faster. A journal lives as long as its statement
/// (the largest, a 100-row insert's, is a few hundred KiB); what else SQLite keeps there (a
/// sort, the list of an `IN (SELECT …)`) stays in memory too, a few MB for a retention
/// sweep of very many rows.
pub(crate) const TEMP_IN_MEMORY: &str = "PRAGMA temp_store = MEMORY";

/// How many rows one multi-row `INSERT` carries: well within SQLite's 32766 and
/// PostgreSQL's 65535 bound parameters at nine columns.
pub(crate) const ROWS_PER_INSERT: usize = 100;

/// The statement recording `rows` homeserver events in the inbox, each once.
fn inbox_insert(engine: Engine, rows: usize) -> String {
    format!(
        "INSERT INTO inbox (event_id, room_id, txn_id, event_json, received_at) VALUES {}
         ON CONFLICT (event_id) DO NOTHING",
        Params::new(engine, 1).rows(rows, 5)
    )
}

/// Binds [`inbox_insert`]'s parameters, for either driver.
fn bind_inbox<'q, B: Bind<'q>>(
    mut query: B,
    events: &'q [NewInboxEvent<'q>],
    txn_id: &'q str,
    now: i64,
) -> B {
    for e in events {
        query = query
            .text(e.event_id)
            .text(e.room_id)
            .text(txn_id)
            .text(e.event_json)
            .int(now);
    }
    query
}

/// The parameters of one statement, in the engine's spelling, numbered from `first`.
///
/// On SQLite they are anonymous (`?`), bound in order: sqlx looks up each numbered
/// parameter's name in a list SQLite keeps per statement, which makes binding quadratic in
/// their number (most of the CPU of a 100-row insert went there). PostgreSQL has only
/// numbered ones (`$n`).
#[derive(Clone, Copy)]
pub(crate) struct Params {
    engine: Engine,
    next: usize,
}

impl Params {
    pub(crate) fn new(engine: Engine, first: usize) -> Self {
        Self {
            engine,
            next: first,
        }
    }

    /// The next parameter.
    pub(crate) fn one(&mut self) -> String {
        let n = self.next;
        self.next += 1;
        match self.engine {
            Engine::Sqlite => "?".to_owned(),
            Engine::Postgres => format!("${n}"),
        }
    }

    /// `count` parameters separated by commas: `?, ?` or `$2, $3`.
    pub(crate) fn list(&mut self, count: usize) -> String {
        (0..count)
            .map(|_| self.one())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// `(…), (…)`: the `VALUES` of a multi-row statement, `rows` rows of `cols` parameters.
    pub(crate) fn rows(&mut self, rows: usize, cols: usize) -> String {
        (0..rows)
            .map(|_| format!("({})", self.list(cols)))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// An inbox row as the queries here read it.
pub(crate) fn inbox_event<R: Columns + ?Sized>(r: &R) -> Result<InboxEvent, StoreError> {
    Ok(InboxEvent {
        seq: r.int("seq")?,
        event_id: r.text("event_id")?,
        room_id: r.text("room_id")?,
        event_json: r.text("event_json")?,
        received_at: r.int("received_at")?,
    })
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::*;

    /// The queries over undelivered outbox rows read the partial index of those rows
    /// (migration 0020), not the whole table: a chat's queue, and the chats with rows due.
    #[tokio::test]
    async fn undelivered_outbox_rows_are_found_through_their_index() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let store = Store::connect(&url).await.expect("store");
        for (query, what) in [
            (
                "SELECT seq FROM outbox
                 WHERE platform = 'telegram' AND address = '1' AND done_at IS NULL
                   AND failed_at IS NULL ORDER BY seq LIMIT 10",
                "a chat's queue",
            ),
            (
                "SELECT platform, address, MIN(next_attempt_at) AS due FROM outbox
                 WHERE done_at IS NULL AND failed_at IS NULL GROUP BY platform, address",
                "the chats with rows due",
            ),
        ] {
            let plan: Vec<String> = sqlx::query(&format!("EXPLAIN QUERY PLAN {query}"))
                .fetch_all(&store.pool)
                .await
                .expect("plan")
                .iter()
                .map(|r| r.try_get::<String, _>("detail").expect("detail"))
                .collect();
            assert!(
                plan.iter().any(|d| d.contains("outbox_undelivered")),
                "{what}: {plan:?}"
            );
            assert!(
                !plan.iter().any(|d| d.contains("TEMP B-TREE")),
                "{what} needs no sort: {plan:?}"
            );
        }
    }
}
