//! Catching up on what the homeserver stored but never pushed.
//!
//! Synapse queues an appservice's events in memory before it writes them into a transaction
//! (matrix-org/synapse#11637, open): a homeserver killed with events in that queue has stored
//! them, has moved its appservice stream past them, and never pushes them. The crash bursts
//! (`tests/e2e_chaos.rs`) lost Matrix responders' messages that way, sent the moment Synapse
//! was killed. So whenever the homeserver may have gone away (the watch in `worker.rs` saw it
//! unreachable, or Switchboard has just started and cannot know what happened meanwhile),
//! Switchboard reads the recent timeline of every room it follows as soon as the homeserver
//! is back, records what the inbox lacks (deduplicated by event ID, as every transaction is),
//! and handles the room's pending events in the room's own order.
//!
//! Order: events pushed after the homeserver came back can arrive before the catch-up has read
//! their room. They wait: until its catch-up is done, a room handles only events recorded
//! before the homeserver went away (`held_after`). The catch-up then handles everything the
//! room has pending in the order of its timeline, and the room goes on as usual.
//!
//! A room whose timeline cannot be read (the bot left it: a refusal) is let go at once; one
//! that cannot be read for a while (the homeserver away again) is retried with backoff for
//! about two minutes and then let go, so a catch-up never holds a conversation for long.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU8, Ordering},
    },
    time::Duration,
};

use backon::BackoffBuilder;
use switchboard_appservice::{ClientError, ruma::RoomId};

use super::{Bridge, lanes::LaneKey};
use crate::store::{InboxEvent, StoreError};

/// How far before the last event recorded a catch-up reads each room's timeline: Synapse's
/// lost events were created after the last transaction it pushed began, and its clock and
/// ours may differ a little.
const LOOK_BEHIND_MS: i64 = 60_000;

/// How many of the newest events before the outage name the rooms in use besides open
/// conversations (relay rooms and direct chats of Matrix responders).
const RECENT_EVENTS: i64 = 10_000;

/// One page of a room's timeline, and how many pages a catch-up reads at most per room.
const PAGE: u32 = 100;
const MAX_PAGES: usize = 10;

/// How many pending events a catch-up handles in its room's order at once; more (a long
/// backlog) are handled by the room's usual drain after it, in arrival order.
const REORDER_AT_MOST: i64 = 1_000;

/// Where a catch-up starts: events recorded after `after_seq` wait for it, and each room's
/// timeline is read back to `since_ms` (the homeserver's `origin_server_ts`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Mark {
    pub after_seq: i64,
    pub since_ms: i64,
    /// Whether to ping the homeserver when it is back. Not at Switchboard's own start, where
    /// `main.rs` pings already: a second ping at the same moment makes Synapse's recoverer
    /// cancel its timer twice and answer 502 (`AlreadyCancelled`).
    pub ping: bool,
    /// How many more times the same window is read, `FOLLOW_UP_AFTER` apart (see there).
    pub follow_ups: u8,
}

impl Mark {
    fn earliest(self, other: Mark) -> Mark {
        Mark {
            after_seq: self.after_seq.min(other.after_seq),
            since_ms: self.since_ms.min(other.since_ms),
            ping: self.ping || other.ping,
            follow_ups: self.follow_ups.max(other.follow_ups),
        }
    }
}

/// After a catch-up, the same window is read again this long later, `FOLLOW_UPS` times.
/// Synapse's recoverer can strand a transaction: while it delivers what it queued for us, new
/// events still go into stored transactions (we count as down), and one stored just after its
/// last look, before it marks us up, is never sent (seen in a crash burst: transactions 1924
/// and 1926 delivered, 1925 never; not reported upstream yet). Its recovery ends seconds after
/// we are back, so reading again a little later finds what it stranded. The appservice
/// endpoint gets a stranded transaction sent in order when a later one comes
/// (`switchboard_appservice::txn_order`); these reads find one that nothing came after.
const FOLLOW_UP_AFTER: Duration = Duration::from_secs(45);
const FOLLOW_UPS: u8 = 2;

/// How many times the rooms are read after we refused a transaction, `FOLLOW_UP_AFTER`
/// apart. Our refusal (a transaction we could not record, or one held back for order) puts
/// Synapse in recovery: its recoverer sends what it stored meanwhile, one transaction at a
/// time, and the race at the end of a recovery (see `FOLLOW_UP_AFTER`) can strand the
/// transaction stored last. Nothing of ours fails then, so no outage's catch-up comes; and
/// the appservice endpoint's order check is spent on the first skip after our failure, where
/// other appservices' numbers make every later skip look the same. A crash burst saw it with
/// PostgreSQL killed under Switchboard: one refusal, a recovery of 860 stored transactions
/// that lasted 76 s, and the one stored as it ended never sent. These reads cover a recovery
/// of up to three minutes.
const STRAND_READS: u32 = 4;

/// Whether reads for a stranded transaction are due (see [`STRAND_READS`]).
const STRANDS_IDLE: u8 = 0;
/// A transaction was refused: the reads start with the next one recorded.
const STRANDS_ARMED: u8 = 1;
/// The reads are under way; another refusal meanwhile is covered by them.
const STRANDS_READING: u8 = 2;

#[derive(Debug, Default)]
enum State {
    /// Nothing to catch up on.
    #[default]
    Idle,
    /// The homeserver is or was away: every room waits for a catch-up.
    Awaiting(Mark),
    /// The homeserver is back and these rooms are being read; `None` while they are listed.
    Reading {
        mark: Mark,
        rooms: Option<HashSet<String>>,
    },
}

/// What is to be caught up on. Every change of state bumps a generation, so a catch-up that
/// a newer outage overtook cannot let a room go.
#[derive(Debug, Default)]
pub(super) struct CatchUp {
    inner: Mutex<(State, u64)>,
    /// `STRANDS_IDLE`, `STRANDS_ARMED` or `STRANDS_READING`.
    strands: AtomicU8,
}

impl CatchUp {
    /// The homeserver is (or may have been) away since `mark`.
    pub fn away(&self, mark: Mark) {
        let mut inner = self.inner.lock().expect("catch-up lock");
        let mark = match inner.0 {
            State::Idle => mark,
            State::Awaiting(m) | State::Reading { mark: m, .. } => m.earliest(mark),
        };
        *inner = (State::Awaiting(mark), inner.1 + 1);
    }

    /// We refused a transaction: the homeserver may strand one when its recovery ends.
    pub fn refused(&self) {
        let _ = self.strands.compare_exchange(
            STRANDS_IDLE,
            STRANDS_ARMED,
            Ordering::SeqCst,
            Ordering::SeqCst,
        );
    }

    /// Whether reads for a stranded transaction are to start now (once per refusal, or per
    /// run of refusals while reads are under way).
    fn start_strand_reads(&self) -> bool {
        self.strands
            .compare_exchange(
                STRANDS_ARMED,
                STRANDS_READING,
                Ordering::SeqCst,
                Ordering::SeqCst,
            )
            .is_ok()
    }

    fn strand_reads_done(&self) {
        self.strands.store(STRANDS_IDLE, Ordering::SeqCst);
    }

    /// Whether a catch-up waits for the homeserver to come back.
    pub fn awaiting(&self) -> bool {
        matches!(
            self.inner.lock().expect("catch-up lock").0,
            State::Awaiting(_)
        )
    }

    /// The homeserver is back: the catch-up to run, once.
    fn begin(&self) -> Option<(u64, Mark)> {
        let mut inner = self.inner.lock().expect("catch-up lock");
        let State::Awaiting(mark) = inner.0 else {
            return None;
        };
        inner.0 = State::Reading { mark, rooms: None };
        Some((inner.1, mark))
    }

    /// The rooms catch-up `generation` reads; every other room goes on at once.
    fn reading(&self, generation: u64, rooms: &[String]) {
        let mut inner = self.inner.lock().expect("catch-up lock");
        if inner.1 != generation {
            return;
        }
        if let State::Reading { rooms: r, .. } = &mut inner.0 {
            *r = Some(rooms.iter().cloned().collect());
        }
        if rooms.is_empty() {
            inner.0 = State::Idle;
        }
    }

    /// Room `room` has been caught up on by catch-up `generation`.
    fn done(&self, generation: u64, room: &str) {
        let mut inner = self.inner.lock().expect("catch-up lock");
        if inner.1 != generation {
            return;
        }
        if let State::Reading {
            rooms: Some(rooms), ..
        } = &mut inner.0
        {
            rooms.remove(room);
            if rooms.is_empty() {
                inner.0 = State::Idle;
            }
        }
    }

    /// If `room` waits for a catch-up: the last event it may handle meanwhile (the ones
    /// recorded before the homeserver went away).
    pub fn held_after(&self, room: &str) -> Option<i64> {
        match &self.inner.lock().expect("catch-up lock").0 {
            State::Idle => None,
            State::Awaiting(mark) | State::Reading { mark, rooms: None } => Some(mark.after_seq),
            State::Reading {
                mark,
                rooms: Some(rooms),
            } => rooms.contains(room).then_some(mark.after_seq),
        }
    }
}

/// Why a room's timeline could not be read.
enum ReadError {
    /// The homeserver may answer later.
    Later(String),
    /// It never will (the bot is not in the room): the room is let go.
    Never(String),
    Store(StoreError),
}

impl From<ClientError> for ReadError {
    fn from(e: ClientError) -> Self {
        if e.is_transient() {
            ReadError::Later(e.to_string())
        } else {
            ReadError::Never(e.to_string())
        }
    }
}

impl Bridge {
    /// The homeserver is (or may have been) away: from now on what it pushes waits for a
    /// catch-up, and the catch-up reads back from the last event recorded before.
    /// `at_start`: Switchboard has just started (and `main.rs` pings the homeserver itself).
    pub(super) async fn homeserver_away(&self, at_start: bool) -> Result<(), StoreError> {
        let now = self.now_ms();
        let (after_seq, last_at) = self.store.inbox_mark().await?.unwrap_or((0, now));
        self.catch_up.away(Mark {
            after_seq,
            since_ms: last_at.min(now) - LOOK_BEHIND_MS,
            ping: !at_start,
            follow_ups: FOLLOW_UPS,
        });
        Ok(())
    }

    /// The homeserver answers again (a transaction came, or the watch reached it): asks it to
    /// send what it queued at once (a ping), and catches up on every room it may have lost
    /// events of, each in its own lane.
    pub(super) fn homeserver_back(self: &Arc<Self>) {
        let Some((generation, mark)) = self.catch_up.begin() else {
            return;
        };
        let me = self.clone();
        tokio::spawn(async move {
            if mark.ping {
                match me.ping_homeserver().await {
                    Ok(rtt) => tracing::info!(
                        rtt_ms = rtt.as_millis() as u64,
                        "homeserver pinged after its return"
                    ),
                    Err(e) => tracing::warn!(error = %e, "homeserver ping after its return failed"),
                }
            }
            let rooms = match me
                .store
                .rooms_to_catch_up(mark.after_seq, RECENT_EVENTS)
                .await
            {
                Ok(rooms) => rooms,
                Err(e) => {
                    // Everything stays held; the next transaction or watch beat tries again.
                    tracing::error!(error = %e, "listing the rooms to catch up on failed");
                    me.catch_up.away(mark);
                    return;
                }
            };
            tracing::info!(
                rooms = rooms.len(),
                "the homeserver is back; catching up on its rooms"
            );
            me.catch_up.reading(generation, &rooms);
            // Rooms not read are let go now: what they held back is handled at once rather
            // than at the scheduler's next full look.
            if let Err(e) = me.schedule_inbox().await {
                tracing::warn!(error = %e, "reading the inbox after the catch-up list failed");
            }
            if mark.follow_ups > 0 {
                let again = me.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(FOLLOW_UP_AFTER).await;
                    again.follow_up(mark).await;
                });
            }
            for room in rooms {
                let lane = me.clone();
                me.lanes.submit(
                    LaneKey::Room(room.clone()),
                    // No kind: a catch-up of a newer outage must not be dropped for an older
                    // one still queued.
                    None,
                    Box::pin(async move { lane.catch_up_room(generation, mark, &room).await }),
                );
            }
        });
    }

    /// A transaction was just recorded: if we refused one before it, reads the rooms again
    /// `STRAND_READS` times, `FOLLOW_UP_AFTER` apart, for a transaction the homeserver's
    /// recovery may strand when it ends (see [`STRAND_READS`]).
    pub(super) fn watch_for_strands(self: &Arc<Self>) {
        if !self.catch_up.start_strand_reads() {
            return;
        }
        let me = self.clone();
        // Events of a stranded transaction are created after now (the recoverer's last
        // look); the homeserver's clock may differ from ours a little.
        let since_ms = self.now_ms() - LOOK_BEHIND_MS;
        tokio::spawn(async move {
            for _ in 0..STRAND_READS {
                tokio::time::sleep(FOLLOW_UP_AFTER).await;
                let mark = Mark {
                    after_seq: 0,
                    since_ms,
                    ping: false,
                    // This read only: the next is this loop's.
                    follow_ups: 1,
                };
                me.follow_up(mark).await;
            }
            me.catch_up.strand_reads_done();
        });
    }

    /// Reads `mark`'s window again (see `FOLLOW_UP_AFTER`): what was recorded since waits for
    /// it as after an outage.
    async fn follow_up(self: &Arc<Self>, mark: Mark) {
        if self.catch_up.awaiting() {
            // Away again: the catch-up of its return reads this window too.
            return;
        }
        let after_seq = match self.store.inbox_mark().await {
            Ok(m) => m.map_or(0, |(seq, _)| seq),
            Err(e) => {
                tracing::warn!(error = %e, "no second look at the rooms: the store is away");
                return;
            }
        };
        self.catch_up.away(Mark {
            after_seq,
            since_ms: mark.since_ms,
            ping: false,
            follow_ups: mark.follow_ups - 1,
        });
        self.homeserver_back();
    }

    /// One room's catch-up, in the room's lane: read, record, handle in order, let go.
    async fn catch_up_room(&self, generation: u64, mark: Mark, room: &str) {
        let mut backoff = backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(15))
            .with_max_times(12)
            .with_jitter()
            .build();
        loop {
            match self.catch_up_once(mark, room).await {
                Ok(()) => break,
                Err(ReadError::Never(e)) => {
                    tracing::info!(room_id = %room, error = %e, "room not caught up on: its timeline cannot be read");
                    break;
                }
                Err(ReadError::Later(e)) => match backoff.next() {
                    Some(wait) => {
                        tracing::debug!(room_id = %room, error = %e, "catching up failed; retrying");
                        tokio::time::sleep(wait).await;
                    }
                    None => {
                        tracing::warn!(room_id = %room, error = %e, "gave up catching up on a room; it goes on without");
                        break;
                    }
                },
                Err(ReadError::Store(e)) => match backoff.next() {
                    Some(wait) => tokio::time::sleep(wait).await,
                    None => {
                        tracing::error!(room_id = %room, error = %e, "gave up catching up on a room; it goes on without");
                        break;
                    }
                },
            }
        }
        self.catch_up.done(generation, room);
        if let Err(e) = self.drain_room_inbox(room).await {
            tracing::error!(room_id = %room, error = %e, "a conversation's events could not be read");
        }
    }

    async fn catch_up_once(&self, mark: Mark, room: &str) -> Result<(), ReadError> {
        let room_id = <&RoomId>::try_from(room).map_err(|e| ReadError::Never(e.to_string()))?;
        // Back from the end of the room until an event older than the mark.
        let mut timeline = Vec::new();
        let mut from = None;
        for _ in 0..MAX_PAGES {
            let (chunk, next) = self
                .post_client
                .messages_backward(room_id, from.as_deref(), PAGE)
                .await?;
            let older = chunk.iter().any(|raw| {
                raw.get_field::<i64>("origin_server_ts")
                    .ok()
                    .flatten()
                    .is_some_and(|ts| ts < mark.since_ms)
            });
            timeline.extend(chunk);
            match next {
                Some(next) if !older => from = Some(next),
                _ => break,
            }
        }
        timeline.reverse(); // oldest first
        let bot = self.client.bot().as_str();
        let indexed = super::indexed_events(bot, &timeline);
        let found = self
            .store
            .record_events("catch-up", &super::inbox_rows(&indexed))
            .await
            .map_err(ReadError::Store)?;
        if found > 0 {
            tracing::warn!(room_id = %room, events = found, "caught up on events the homeserver had not pushed");
            crate::metrics::caught_up(found);
        }
        // Everything pending, in the room's order; what the timeline did not show (newer than
        // it) after, in arrival order.
        let position: HashMap<&str, usize> = indexed
            .iter()
            .enumerate()
            .map(|(i, (event_id, _, _))| (event_id.as_str(), i))
            .collect();
        let mut pending = self
            .store
            .pending_events_in_room(room, REORDER_AT_MOST)
            .await
            .map_err(ReadError::Store)?;
        pending.sort_by_key(|e: &InboxEvent| {
            (
                position
                    .get(e.event_id.as_str())
                    .copied()
                    .unwrap_or(usize::MAX),
                e.seq,
            )
        });
        self.handle_room_batch(room, &pending)
            .await
            .map_err(ReadError::Store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: Mark = Mark {
        after_seq: 10,
        since_ms: 1_000,
        ping: false,
        follow_ups: 0,
    };

    #[test]
    fn rooms_wait_until_their_catch_up_is_done() {
        let c = CatchUp::default();
        assert_eq!(c.held_after("!a"), None);
        c.away(A);
        assert!(c.awaiting());
        assert_eq!(c.held_after("!a"), Some(10));
        let (generation, mark) = c.begin().expect("a catch-up to run");
        assert_eq!(mark, A);
        assert!(c.begin().is_none(), "begun once");
        // While the rooms are listed, every room waits.
        assert_eq!(c.held_after("!other"), Some(10));
        c.reading(generation, &["!a".into(), "!b".into()]);
        assert_eq!(c.held_after("!other"), None);
        assert_eq!(c.held_after("!a"), Some(10));
        c.done(generation, "!a");
        assert_eq!(c.held_after("!a"), None);
        assert_eq!(c.held_after("!b"), Some(10));
        c.done(generation, "!b");
        assert!(matches!(c.inner.lock().unwrap().0, State::Idle));
    }

    #[test]
    fn a_newer_outage_keeps_the_earliest_mark_and_overrides_an_older_catch_up() {
        let c = CatchUp::default();
        c.away(A);
        let (old, _) = c.begin().unwrap();
        c.reading(old, &["!a".into()]);
        c.away(Mark {
            after_seq: 20,
            since_ms: 500,
            ping: true,
            follow_ups: 2,
        });
        // The older catch-up finishing lets nothing go.
        c.done(old, "!a");
        assert_eq!(c.held_after("!a"), Some(10));
        let (_, mark) = c.begin().unwrap();
        assert_eq!(
            mark,
            Mark {
                after_seq: 10,
                since_ms: 500,
                ping: true,
                follow_ups: 2,
            }
        );
    }

    #[test]
    fn a_refusal_starts_one_run_of_strand_reads() {
        let c = CatchUp::default();
        assert!(!c.start_strand_reads(), "nothing refused yet");
        c.refused();
        c.refused();
        assert!(c.start_strand_reads());
        // Refused again while the reads run: they cover it.
        c.refused();
        assert!(!c.start_strand_reads());
        c.strand_reads_done();
        assert!(
            !c.start_strand_reads(),
            "the refusal during the reads is not carried over"
        );
        c.refused();
        assert!(c.start_strand_reads());
    }

    #[test]
    fn no_rooms_to_read_is_done_at_once() {
        let c = CatchUp::default();
        c.away(A);
        let (generation, _) = c.begin().unwrap();
        c.reading(generation, &[]);
        assert_eq!(c.held_after("!a"), None);
        assert!(!c.awaiting());
    }
}
