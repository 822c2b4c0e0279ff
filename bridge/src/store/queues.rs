//! The queries the lanes read their work with (see `bridge/lanes.rs`): which conversations have
//! pending events, one conversation's pending events, remote events after a cursor, and one
//! responder chat's pending deliveries. Each reads only the rows its lane needs. And the one
//! transaction a run of plain visitor messages is stored in (`bridge/batch.rs`).

use sqlx::Row;

use super::{
    Arg, Bind, Engine, InboxEvent, OutboxRow, Params, ROWS_PER_INSERT, RemoteInboxEvent, Store,
    StoreError, bind_message, inbox_event, outbox::outbox_row, remote::remote_inbox_event,
};
use crate::conversation::Message;

/// What handling a run of plain visitor messages stores (see `bridge/batch.rs`).
#[derive(Debug, Default, Clone)]
pub struct VisitorBatch {
    /// Their transcript entries.
    pub messages: Vec<Message>,
    /// Their deliveries to whoever holds the conversation.
    pub deliveries: Vec<NewDelivery>,
    /// Their inbox rows, to mark processed.
    pub processed: Vec<i64>,
}

/// Runs of visitor messages waiting to be written together (see
/// [`Store::record_visitor_batch`]), shared by every clone of the store.
#[derive(Default)]
pub(crate) struct BatchGroup {
    waiting: std::sync::Mutex<Vec<(VisitorBatch, Waiter)>>,
    /// Held by the lane writing a group.
    writer: tokio::sync::Mutex<()>,
}

type Waiter = tokio::sync::oneshot::Sender<Result<(), StoreError>>;

/// Runs of at most this many events are a live conversation's, written without waiting for a
/// group (see [`Store::record_visitor_batch`]); longer ones are a backlog's.
const LIVE_RUN: usize = 2;

/// The lane writing a group stopped before it said how the write went (it was cancelled):
/// worth trying again, and the write is idempotent.
fn group_lost() -> StoreError {
    StoreError::Database(sqlx::Error::WorkerCrashed)
}

/// The rows of one statement of a group write, to bind.
enum Part<'a> {
    Messages(&'a [&'a Message]),
    Deliveries(&'a [&'a NewDelivery]),
    Processed(&'a [i64]),
}

impl<'a> Part<'a> {
    fn bind<B: Bind<'a>>(&self, mut query: B, now: i64) -> B {
        match self {
            Part::Messages(rows) => {
                for m in rows.iter() {
                    query = bind_message(query, m);
                }
            }
            Part::Deliveries(rows) => {
                for d in rows.iter() {
                    query = query
                        .text(&d.room_id)
                        .text(&d.platform)
                        .text(&d.address)
                        .text(&d.event_id)
                        .text(&d.payload_json)
                        .int(now);
                }
            }
            Part::Processed(seqs) => {
                query = query.int(now);
                for seq in seqs.iter() {
                    query = query.int(*seq);
                }
            }
        }
        query
    }
}

/// One outbox row to queue.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    pub room_id: String,
    pub platform: String,
    pub address: String,
    pub event_id: String,
    pub payload_json: String,
}

impl Store {
    /// Stores what handling a run of visitor messages decided, in one transaction: the
    /// transcript entries, the deliveries (each once per event and address) and the events
    /// marked processed. All or nothing, as if each event had been handled on its own.
    ///
    /// A relaxed write ([`Store::relaxed`]): the events stay in the inbox, durably, until it
    /// is; losing it in a power cut means doing it again.
    ///
    /// Runs from several conversations' lanes that arrive while one is being written are
    /// written together next, in one transaction (a group commit): in a flood each lane
    /// stores a few events at a time, and ten commits of a few rows each write the same
    /// table and index pages to the log ten times. Should that shared transaction fail, each
    /// run is written again on its own, so one run's failure is its own. A run of at most
    /// [`LIVE_RUN`] messages, a live conversation's, is written on its own in the writers'
    /// turn instead of waiting in line for a group.
    pub async fn record_visitor_batch(&self, batch: VisitorBatch) -> Result<(), StoreError> {
        if batch.processed.len() <= LIVE_RUN {
            // A live conversation's message: written in its own turn, not queued behind the
            // groups of a flood's backlog. In line for a group, it waited for each lane ahead
            // of it to take the group turn and find its run written, every hand-over a task
            // wake-up on a runtime thread busy with the flood's writes (3 to 8 ms from its
            // transaction stored to its run written, in the benchmark's flood); in the
            // writers' turn it waits for one commit or two.
            return self.write_visitor_batches(&[&batch]).await;
        }
        let (done, mut result) = tokio::sync::oneshot::channel();
        self.batches
            .waiting
            .lock()
            .expect("batch queue lock")
            .push((batch, done));
        let turn = self.batches.writer.lock().await;
        // Whoever wrote before us may have taken ours along.
        match result.try_recv() {
            Ok(outcome) => return outcome,
            Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return Err(group_lost()),
            Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
        }
        let group = std::mem::take(&mut *self.batches.waiting.lock().expect("batch queue lock"));
        let all: Vec<&VisitorBatch> = group.iter().map(|(b, _)| b).collect();
        if group.len() > 1 && self.write_visitor_batches(&all).await.is_ok() {
            for (_, done) in group {
                let _ = done.send(Ok(()));
            }
        } else {
            for (b, done) in group {
                let _ = done.send(self.write_visitor_batches(&[&b]).await);
            }
        }
        drop(turn);
        result.await.unwrap_or_else(|_| Err(group_lost()))
    }

    /// Writes runs of visitor messages in one transaction.
    async fn write_visitor_batches(&self, batches: &[&VisitorBatch]) -> Result<(), StoreError> {
        let now = self.now_ms();
        let messages: Vec<&Message> = batches.iter().flat_map(|b| &b.messages).collect();
        let deliveries: Vec<&NewDelivery> = batches.iter().flat_map(|b| &b.deliveries).collect();
        let processed: Vec<i64> = batches
            .iter()
            .flat_map(|b| b.processed.iter().copied())
            .collect();
        // Multi-row statements, a hundred rows each. On SQLite they go in one round trip to
        // its connection's thread, their anonymous parameters bound in order across them
        // (sqlx-sqlite runs each statement of a string in turn); PostgreSQL takes one
        // statement per request.
        let mut parts: Vec<(String, Part<'_>)> = Vec::new();
        for chunk in messages.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO messages (event_id, room_id, inbox_seq, sender, sender_role, msgtype,
                                       body, formatted_body, origin_server_ts)
                 VALUES {} ON CONFLICT (event_id) DO NOTHING",
                Params::new(self.engine, 1).rows(chunk.len(), 9)
            );
            parts.push((sql, Part::Messages(chunk)));
        }
        for chunk in deliveries.chunks(ROWS_PER_INSERT) {
            let sql = format!(
                "INSERT INTO outbox (room_id, platform, address, event_id, payload_json, next_attempt_at)
                 VALUES {} ON CONFLICT (event_id, platform, address) DO NOTHING",
                Params::new(self.engine, 1).rows(chunk.len(), 6)
            );
            parts.push((sql, Part::Deliveries(chunk)));
        }
        for chunk in processed.chunks(ROWS_PER_INSERT) {
            let mut params = Params::new(self.engine, 1);
            let sql = format!(
                "UPDATE inbox SET processed_at = {} WHERE seq IN ({})",
                params.one(),
                params.list(chunk.len())
            );
            parts.push((sql, Part::Processed(chunk)));
        }
        // On SQLite in a file, on this thread (`inline.rs`), each statement in turn.
        let inline = self
            .relaxed_inline(|tx| {
                for (sql, part) in &parts {
                    let values = part.bind(Vec::new(), now);
                    tx.prepare_cached(sql)?
                        .execute(rusqlite::params_from_iter(values))?;
                }
                Ok(())
            })
            .await;
        if let Some(result) = inline {
            return result;
        }
        let mut relaxed = self.relaxed().await?;
        if self.engine == Engine::Sqlite {
            // The transaction's BEGIN and COMMIT go in the same round trip.
            let sql = super::atomic_sql(
                &parts
                    .iter()
                    .map(|(sql, _)| sql.as_str())
                    .collect::<Vec<_>>()
                    .join(";\n"),
            );
            let mut query = sqlx::query(&sql);
            for (_, part) in &parts {
                query = part.bind(query, now);
            }
            relaxed.atomic(query).await?;
        } else {
            let mut tx = sqlx::Connection::begin(&mut *relaxed).await?;
            for (sql, part) in &parts {
                part.bind(sqlx::query(sql), now).execute(&mut *tx).await?;
            }
            tx.commit().await?;
        }
        Ok(())
    }

    /// The newest homeserver event recorded: its sequence number and when it was recorded
    /// (unix ms); `None` while the inbox is empty. Where a catch-up starts (`catch_up.rs`).
    pub async fn inbox_mark(&self) -> Result<Option<(i64, i64)>, StoreError> {
        let row = sqlx::query(
            "SELECT seq, received_at FROM inbox WHERE seq = (SELECT MAX(seq) FROM inbox)",
        )
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| Ok((r.try_get("seq")?, r.try_get("received_at")?)))
            .transpose()
    }

    /// The rooms a catch-up reads: every conversation not closed, and every room with one of
    /// the `recent` newest events up to `upto` (a Matrix responder's relay room or direct
    /// chat is no conversation, and one in use has had an offer or a command lately).
    pub async fn rooms_to_catch_up(
        &self,
        upto: i64,
        recent: i64,
    ) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id FROM conversations WHERE state <> 'closed'
             UNION
             SELECT DISTINCT room_id FROM inbox WHERE seq > $1 AND seq <= $2",
        )
        .bind(upto - recent)
        .bind(upto)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(|r| Ok(r.try_get("room_id")?)).collect()
    }

    /// Every room with an unprocessed event, for the lanes' periodic look at the whole inbox.
    pub async fn pending_inbox_rooms(&self) -> Result<Vec<String>, StoreError> {
        let rows = sqlx::query("SELECT DISTINCT room_id FROM inbox WHERE processed_at IS NULL")
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| Ok(r.try_get("room_id")?)).collect()
    }

    /// One room's oldest unprocessed events, in arrival order.
    pub async fn pending_events_in_room(
        &self,
        room_id: &str,
        limit: i64,
    ) -> Result<Vec<InboxEvent>, StoreError> {
        self.hot_read(
            "SELECT seq, event_id, room_id, event_json, received_at FROM inbox
             WHERE room_id = $1 AND processed_at IS NULL ORDER BY seq LIMIT $2",
            &[Arg::Text(room_id), Arg::Int(limit)],
            |r| inbox_event(r),
        )
        .await
    }

    /// Unprocessed remote events after `after`, in arrival order.
    pub async fn pending_remote_events_after(
        &self,
        after: i64,
        limit: i64,
    ) -> Result<Vec<RemoteInboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT seq, platform, event_json, received_at FROM remote_inbox
             WHERE processed_at IS NULL AND seq > $1 ORDER BY seq LIMIT $2",
        )
        .bind(after)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(remote_inbox_event).collect()
    }

    /// Whether the platform event `seq` is still waiting to be handled.
    pub async fn remote_event_pending(&self, seq: i64) -> Result<bool, StoreError> {
        Ok(
            sqlx::query("SELECT seq FROM remote_inbox WHERE seq = $1 AND processed_at IS NULL")
                .bind(seq)
                .fetch_optional(&self.pool)
                .await?
                .is_some(),
        )
    }

    /// Every (platform, address) with undelivered rows, with when its first row is due.
    pub async fn outbox_lanes(&self) -> Result<Vec<(String, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT platform, address, MIN(next_attempt_at) AS due FROM outbox
             WHERE done_at IS NULL AND failed_at IS NULL GROUP BY platform, address",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get("platform")?,
                    r.try_get("address")?,
                    r.try_get("due")?,
                ))
            })
            .collect()
    }

    /// One chat's undelivered rows in queue order, with when each is next due.
    pub async fn pending_outbox_to(
        &self,
        platform: &str,
        address: &str,
        limit: i64,
    ) -> Result<Vec<(OutboxRow, i64)>, StoreError> {
        self.hot_read(
            "SELECT seq, room_id, platform, address, event_id, payload_json, attempts,
                    next_attempt_at, parts_json, parts_sent
             FROM outbox
             WHERE platform = $1 AND address = $2 AND done_at IS NULL AND failed_at IS NULL
             ORDER BY seq LIMIT $3",
            &[Arg::Text(platform), Arg::Text(address), Arg::Int(limit)],
            |r| outbox_row(r),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::conversation::SenderRole;

    /// A run of `events` visitor messages in `room`.
    fn run(room: &str, events: usize) -> VisitorBatch {
        let mut batch = VisitorBatch::default();
        for i in 0..events {
            batch.messages.push(Message {
                event_id: format!("${room}-{i}"),
                room_id: room.into(),
                inbox_seq: i as i64 + 1,
                sender: "@visitor:x".into(),
                sender_role: SenderRole::Visitor,
                msgtype: "m.text".into(),
                body: format!("line {i}"),
                formatted_body: None,
                origin_server_ts: 0,
            });
            batch.processed.push(i as i64 + 1);
        }
        batch
    }

    /// While a lane writes a backlog's group, a live conversation's message is written in the
    /// writers' turn, not queued behind the group; a backlog's run still waits for its group.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_live_run_is_not_queued_behind_a_backlogs_group() {
        let dir = tempfile::tempdir().expect("temp dir");
        let url = format!("sqlite://{}/s.db", dir.path().display());
        let store = Store::connect(&url).await.expect("store");
        let group_turn = store.batches.writer.lock().await;
        let backlog = tokio::spawn({
            let store = store.clone();
            async move {
                store
                    .record_visitor_batch(run("!backlog:x", LIVE_RUN + 1))
                    .await
            }
        });
        tokio::time::timeout(
            Duration::from_secs(5),
            store.record_visitor_batch(run("!live:x", 1)),
        )
        .await
        .expect("the live run waited for the group")
        .expect("written");
        assert_eq!(store.messages("!live:x").await.expect("read").len(), 1);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(
            !backlog.is_finished(),
            "the backlog's run waits for its group"
        );
        drop(group_turn);
        backlog.await.expect("no panic").expect("written");
        assert_eq!(
            store.messages("!backlog:x").await.expect("read").len(),
            LIVE_RUN + 1
        );
    }
}
