//! Persistent state: the inbox of pushed events, conversations and their transcripts.
//!
//! SQL is written once with `$n` placeholders and runs on SQLite and PostgreSQL through sqlx's
//! `Any` driver; only the migrations differ per engine (auto-increment syntax). Statements built
//! at run time (multi-row inserts) spell their parameters per engine ([`Params`]).

use std::str::FromStr;

use sqlx::{
    AnyPool, Row,
    any::{AnyPoolOptions, AnyRow},
};

use crate::{
    clock::{Clock, SharedClock},
    conversation::{Conversation, ConversationState, Message, SenderRole},
};

mod appservice_state;
mod connector_state;
mod dead_letters;
mod initiators;
mod leases;
pub use dead_letters::{DeadLetter, DeadLetterSource, MAX_REASON_CHARS};
pub use initiators::{InitiatorRow, PendingRow};
pub use leases::{Fence, Lease};
mod queues;
pub use queues::{NewDelivery, VisitorBatch};
mod remote;
pub use remote::{
    AssignmentHistory, AssignmentRow, ConversationWithHolders, LINK_CODE_TTL_MS, OfferRow,
    OutboxRow, REMOTE_INBOX_ORDER_LOCK, Recorded, RemoteInboxEvent,
};
mod responders;
mod retention;
mod revisions;
mod room_posts;
mod schema;
pub use responders::{SOURCE_ADMIN, SOURCE_CONFIG};
pub use retention::{DeletedRows, EraseError};
pub use room_posts::RoomPostRow;
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
    /// On SQLite, connections for the reads every relayed message makes (see
    /// [`Store::reader`]).
    readers: Option<std::sync::Arc<KeptReaders>>,
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
            readers: (engine == Engine::Sqlite).then(|| {
                std::sync::Arc::new(KeptReaders {
                    permits: std::sync::Arc::new(tokio::sync::Semaphore::new(KEPT_READERS)),
                    idle: Default::default(),
                })
            }),
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

    /// Database connections open now (the pool's and, on SQLite, the relaxed writers'
    /// pool's), idle or not: a leak shows as this growing under steady work.
    pub fn connections(&self) -> u32 {
        match self.engine {
            Engine::Sqlite => self.pool.size() + self.relaxed_pool.size(),
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
    /// what the homeserver's 200 waits for.
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

    /// The oldest unprocessed events, in the order they arrived.
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

    pub async fn count_inbox(&self) -> Result<i64, StoreError> {
        Ok(sqlx::query("SELECT COUNT(*) AS n FROM inbox")
            .fetch_one(&self.pool)
            .await?
            .try_get("n")?)
    }

    pub async fn insert_conversation(&self, c: &Conversation) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO conversations
               (room_id, topic, visitor_user_id, visitor_alias, state, created_at, updated_at, language)
             VALUES ($1, $2, $3, $4, $5, $6, $6, $7)",
        )
        .bind(&c.room_id)
        .bind(&c.topic)
        .bind(&c.visitor_user_id)
        .bind(&c.visitor_alias)
        .bind(c.state.as_str())
        .bind(c.created_at)
        .bind(c.language.as_deref())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    pub async fn conversation(&self, room_id: &str) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(
            "SELECT room_id, topic, visitor_user_id, visitor_alias, state, created_at, language
             FROM conversations WHERE room_id = $1",
        )
        .bind(room_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    /// The visitor's conversation on a topic that is not closed yet, if any.
    pub async fn open_conversation_for_visitor(
        &self,
        visitor_user_id: &str,
        topic: &str,
    ) -> Result<Option<Conversation>, StoreError> {
        let row = sqlx::query(
            "SELECT room_id, topic, visitor_user_id, visitor_alias, state, created_at, language
             FROM conversations WHERE visitor_user_id = $1 AND topic = $2 AND state <> $3
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(visitor_user_id)
        .bind(topic)
        .bind(ConversationState::Closed.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(conversation_from_row).transpose()
    }

    /// Conversations waiting for a responder (queued, offered, transferring), oldest first:
    /// what routing looks at again, without loading every conversation ever held.
    pub async fn waiting_conversations(&self) -> Result<Vec<Conversation>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, topic, visitor_user_id, visitor_alias, state, created_at, language
             FROM conversations WHERE state IN ($1, $2, $3) ORDER BY created_at, room_id",
        )
        .bind(ConversationState::Queued.as_str())
        .bind(ConversationState::Offered.as_str())
        .bind(ConversationState::Transferring.as_str())
        .fetch_all(&self.pool)
        .await?;
        let waiting: Vec<Conversation> = rows
            .iter()
            .map(conversation_from_row)
            .collect::<Result<_, _>>()?;
        debug_assert!(waiting.iter().all(|c| c.state.is_waiting()));
        Ok(waiting)
    }

    pub async fn list_conversations(&self) -> Result<Vec<Conversation>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, topic, visitor_user_id, visitor_alias, state, created_at, language
             FROM conversations ORDER BY created_at, room_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(conversation_from_row).collect()
    }

    /// Records who handed the conversation over and why, for the next responder's offer.
    pub async fn set_handoff(&self, room_id: &str, note: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE conversations SET handoff = $1, updated_at = $2 WHERE room_id = $3")
            .bind(note)
            .bind(self.now_ms())
            .bind(room_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    pub async fn handoff(&self, room_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT handoff FROM conversations WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("handoff"))
            .transpose()?
            .flatten())
    }

    /// Moves a conversation to another topic (a transfer to a topic re-routes it there).
    pub async fn set_conversation_topic(
        &self,
        room_id: &str,
        topic: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE conversations SET topic = $1, updated_at = $2 WHERE room_id = $3")
            .bind(topic)
            .bind(self.now_ms())
            .bind(room_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    pub async fn set_conversation_state(
        &self,
        room_id: &str,
        state: ConversationState,
    ) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE conversations SET state = $1, updated_at = $2 WHERE room_id = $3")
                .bind(state.as_str())
                .bind(self.now_ms())
                .bind(room_id)
                .execute(&mut *self.writer().await?)
                .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The status last published into the room (JSON), if any.
    pub async fn published_status(&self, room_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT published_status FROM conversations WHERE room_id = $1")
            .bind(room_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("published_status"))
            .transpose()?
            .flatten())
    }

    pub async fn set_published_status(&self, room_id: &str, json: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE conversations SET published_status = $1 WHERE room_id = $2")
            .bind(json)
            .bind(room_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Adds a message to its conversation's transcript. Returns false if it was already there.
    pub async fn record_message(&self, m: &Message) -> Result<bool, StoreError> {
        let done = insert_message(m)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Records a responder's message in the transcript when it is decided, before the
    /// homeserver has it, under a provisional ID: hand-off summaries and the first-reply and
    /// idle limits see it at once, even while it waits for the homeserver. It sorts after
    /// everything recorded so far. [`Self::confirm_message`] gives it its event ID once posted.
    pub async fn record_provisional_message(&self, m: &Message) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO messages (event_id, room_id, inbox_seq, sender, sender_role, msgtype,
                                   body, formatted_body, origin_server_ts)
             VALUES ($1, $2, (SELECT COALESCE(MAX(seq), 0) FROM inbox), $3, $4, $5, $6, $7, $8)
             ON CONFLICT (event_id) DO NOTHING",
        )
        .bind(&m.event_id)
        .bind(&m.room_id)
        .bind(&m.sender)
        .bind(m.sender_role.as_str())
        .bind(&m.msgtype)
        .bind(&m.body)
        .bind(m.formatted_body.as_deref())
        .bind(m.origin_server_ts)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// The provisional transcript entry became the event `event_id`. If the homeserver's echo
    /// of that event was recorded first, the provisional entry simply goes.
    pub async fn confirm_message(
        &self,
        provisional: &str,
        event_id: &str,
    ) -> Result<(), StoreError> {
        let mut writer = self.writer().await?;
        // On PostgreSQL the echo's own record (another lane, another connection) can land
        // between the steps below: the rename then meets the echo's row. That only means the
        // echo came first after all, so the first two steps are run again, which fold the
        // two rows into the echo's. (On SQLite the writer's turn keeps everything else out.)
        for _ in 0..2 {
            // The echo keeps the provisional entry's place: the order in which the responder's
            // messages were decided. Its own would put it after a later message still waiting
            // for its echo (a reply written just after it would read as written before it).
            sqlx::query(
                "UPDATE messages SET
                     inbox_seq = (SELECT inbox_seq FROM messages WHERE event_id = $2),
                     origin_server_ts = (SELECT origin_server_ts FROM messages WHERE event_id = $2)
                 WHERE event_id = $1 AND EXISTS (SELECT 1 FROM messages WHERE event_id = $2)",
            )
            .bind(event_id)
            .bind(provisional)
            .execute(&mut *writer)
            .await?;
            sqlx::query(
                "DELETE FROM messages WHERE event_id = $1
                 AND EXISTS (SELECT 1 FROM messages WHERE event_id = $2)",
            )
            .bind(provisional)
            .bind(event_id)
            .execute(&mut *writer)
            .await?;
            match sqlx::query("UPDATE messages SET event_id = $1 WHERE event_id = $2")
                .bind(event_id)
                .bind(provisional)
                .execute(&mut *writer)
                .await
            {
                Err(sqlx::Error::Database(e)) if e.is_unique_violation() => continue,
                done => {
                    done?;
                    return Ok(());
                }
            }
        }
        Ok(())
    }

    /// A provisional entry whose message will never be posted leaves the transcript.
    pub async fn forget_message(&self, provisional: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM messages WHERE event_id = $1")
            .bind(provisional)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Keeps the file a transcript message carries (a `MediaRef` as JSON).
    pub async fn set_message_media(&self, event_id: &str, json: &str) -> Result<(), StoreError> {
        sqlx::query("UPDATE messages SET media_json = $1 WHERE event_id = $2")
            .bind(json)
            .bind(event_id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// The file a transcript message carries, as stored by [`Self::set_message_media`].
    pub async fn message_media(&self, event_id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT media_json FROM messages WHERE event_id = $1")
            .bind(event_id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row
            .map(|r| r.try_get::<Option<String>, _>("media_json"))
            .transpose()?
            .flatten())
    }

    /// When `sender` last wrote in the room at or after `since`, and when the visitor last
    /// wrote (unix ms, the homeserver's timestamps): what the holders' time limits need, read
    /// without loading the transcript.
    pub async fn last_message_times(
        &self,
        room_id: &str,
        sender: &str,
        since: i64,
    ) -> Result<(Option<i64>, Option<i64>), StoreError> {
        let row = sqlx::query(
            "SELECT MAX(CASE WHEN sender = $2 AND origin_server_ts >= $3
                             THEN origin_server_ts END) AS last_reply,
                    MAX(CASE WHEN sender_role = $4 THEN origin_server_ts END) AS last_visitor
             FROM messages WHERE room_id = $1",
        )
        .bind(room_id)
        .bind(sender)
        .bind(since)
        .bind(SenderRole::Visitor.as_str())
        .fetch_one(&self.pool)
        .await?;
        Ok((row.try_get("last_reply")?, row.try_get("last_visitor")?))
    }

    /// The transcript of a conversation, in the order Switchboard received it.
    pub async fn messages(&self, room_id: &str) -> Result<Vec<Message>, StoreError> {
        let rows = sqlx::query(
            "SELECT event_id, room_id, inbox_seq, sender, sender_role, msgtype, body,
                    formatted_body, origin_server_ts
             FROM messages WHERE room_id = $1 ORDER BY inbox_seq, origin_server_ts",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let role: String = r.try_get("sender_role")?;
                Ok(Message {
                    event_id: r.try_get("event_id")?,
                    room_id: r.try_get("room_id")?,
                    inbox_seq: r.try_get("inbox_seq")?,
                    sender: r.try_get("sender")?,
                    sender_role: SenderRole::from_str(&role).map_err(|_| StoreError::Corrupt {
                        table: "messages",
                        detail: format!("unknown sender_role {role:?}"),
                    })?,
                    msgtype: r.try_get("msgtype")?,
                    body: r.try_get("body")?,
                    formatted_body: r.try_get("formatted_body")?,
                    origin_server_ts: r.try_get("origin_server_ts")?,
                })
            })
            .collect()
    }
}

fn conversation_from_row(r: &AnyRow) -> Result<Conversation, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(Conversation {
        room_id: r.try_get("room_id")?,
        topic: r.try_get("topic")?,
        visitor_user_id: r.try_get("visitor_user_id")?,
        visitor_alias: r.try_get("visitor_alias")?,
        language: r.try_get("language")?,
        state: ConversationState::from_str(&state).map_err(|_| StoreError::Corrupt {
            table: "conversations",
            detail: format!("unknown state {state:?}"),
        })?,
        created_at: r.try_get("created_at")?,
    })
}

/// A transcript entry, once per event ID.
pub(crate) fn insert_message(
    m: &Message,
) -> sqlx::query::Query<'_, sqlx::Any, sqlx::any::AnyArguments<'_>> {
    bind_message(
        sqlx::query(
            "INSERT INTO messages (event_id, room_id, inbox_seq, sender, sender_role, msgtype,
                                   body, formatted_body, origin_server_ts)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (event_id) DO NOTHING",
        ),
        m,
    )
}

/// Binds a transcript entry's nine columns, in the order of `insert_message`'s; the
/// multi-row insert of a batch (`record_visitor_batch`) binds each row with it too.
pub(crate) fn bind_message<'q>(
    query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    m: &'q Message,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    query
        .bind(&m.event_id)
        .bind(&m.room_id)
        .bind(m.inbox_seq)
        .bind(&m.sender)
        .bind(m.sender_role.as_str())
        .bind(&m.msgtype)
        .bind(&m.body)
        .bind(m.formatted_body.as_deref())
        .bind(m.origin_server_ts)
}

/// How many rows one multi-row `INSERT` carries: well within SQLite's 32766 and
/// PostgreSQL's 65535 bound parameters at nine columns.
pub(crate) const ROWS_PER_INSERT: usize = 100;

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

/// The statement recording `rows` homeserver events in the inbox, each once.
fn inbox_insert(engine: Engine, rows: usize) -> String {
    format!(
        "INSERT INTO inbox (event_id, room_id, txn_id, event_json, received_at) VALUES {}
         ON CONFLICT (event_id) DO NOTHING",
        Params::new(engine, 1).rows(rows, 5)
    )
}

fn bind_inbox<'q>(
    mut query: sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>>,
    events: &'q [NewInboxEvent<'q>],
    txn_id: &'q str,
    now: i64,
) -> sqlx::query::Query<'q, sqlx::Any, sqlx::any::AnyArguments<'q>> {
    for e in events {
        query = query
            .bind(e.event_id)
            .bind(e.room_id)
            .bind(txn_id)
            .bind(e.event_json)
            .bind(now);
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
pub(crate) fn inbox_event(r: &AnyRow) -> Result<InboxEvent, StoreError> {
    Ok(InboxEvent {
        seq: r.try_get("seq")?,
        event_id: r.try_get("event_id")?,
        room_id: r.try_get("room_id")?,
        event_json: r.try_get("event_json")?,
        received_at: r.try_get("received_at")?,
    })
}

#[cfg(test)]
mod tests {
    use sqlx::Row as _;

    use super::*;
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
