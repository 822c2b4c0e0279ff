//! The queued events themselves: a room's homeserver events and a chat's platform events,
//! each handled in its lane, retried with backoff while the failure may pass, and set aside
//! with its reason when it never will (see `worker.rs` for who hands them out).

use std::{
    sync::atomic::{AtomicBool, AtomicI64, Ordering},
    time::Duration,
};

use backon::BackoffBuilder;
use tracing::Instrument;

use super::super::{
    Bridge,
    lanes::{LaneKey, run_guarded},
};
use crate::{
    connector::RemoteEvent,
    store::{DeadLetterSource, InboxEvent, RemoteInboxEvent, StoreError},
};

/// How many events one pass of a room's lane takes from the store.
const ROOM_BATCH: i64 = 200;

/// Where the scheduler has read the platform events up to. Kept in memory: after a restart
/// every pending item is read again, and the lanes' work is idempotent. (Homeserver events
/// need none: each transaction hands its rooms to their lanes as it is stored.)
#[derive(Default)]
pub(in crate::bridge) struct Cursors {
    pub(super) remote: AtomicI64,
    /// Whether events were recorded since the scheduler last read past its cursor: a wake
    /// for anything else (a delivery queued) then reads nothing.
    pub(super) remote_new: AtomicBool,
    /// Per chat, the first platform event a store failure left pending. Each event is its own
    /// job in the chat's lane, so without this the next event, already queued behind it,
    /// would be handled first once the store is back (a responder's messages reaching the
    /// visitor out of order). Later events of the chat wait, pending, until the scheduler's
    /// next full look hands them all out again in order.
    stalled: std::sync::Mutex<std::collections::HashMap<LaneKey, i64>>,
}

impl Cursors {
    /// Events were recorded from a platform.
    pub(in crate::bridge) fn remote_recorded(&self) {
        self.remote_new.store(true, Ordering::SeqCst);
    }

    /// Whether an earlier event of `lane` is still pending after a store failure: event `seq`
    /// must then wait for it.
    pub(super) fn stalled_before(&self, lane: &LaneKey, seq: i64) -> bool {
        self.stalled
            .lock()
            .expect("stalled lock")
            .get(lane)
            .is_some_and(|&at| seq > at)
    }

    /// Event `seq` of `lane` was handled (`store_down`: or left pending by a store failure).
    pub(super) fn handled(&self, lane: &LaneKey, seq: i64, store_down: bool) {
        let mut stalled = self.stalled.lock().expect("stalled lock");
        if store_down {
            let at = stalled.entry(lane.clone()).or_insert(seq);
            *at = (*at).min(seq);
        } else if stalled.get(lane) == Some(&seq) {
            stalled.remove(lane);
        }
    }
}

/// How an item's handling is retried: exponential from 200 ms to 30 s with jitter, eight
/// times (about two minutes), then the item is set aside.
fn item_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(30))
        .with_max_times(8)
        .with_jitter()
        .build()
}

/// The outcome of handling one item, after retries.
pub(super) enum Handled {
    Done,
    /// Set aside with this reason.
    SetAside(String),
    /// The store itself failed; the item stays pending and is picked up again later.
    StoreDown(StoreError),
}

impl Bridge {
    /// One room's pending events, in order, until none is left. Its lane runs one of these at
    /// a time, so a room's events are never handled out of order or twice at once.
    pub(in crate::bridge) async fn drain_room_inbox(&self, room: &str) -> Result<(), StoreError> {
        loop {
            let mut batch = self.store.pending_events_in_room(room, ROOM_BATCH).await?;
            let full = batch.len() == ROOM_BATCH as usize;
            // Events pushed since the homeserver was away wait for the room's catch-up,
            // which handles them in the room's order (`catch_up.rs`).
            let held = self
                .catch_up
                .held_after(room)
                .and_then(|after| batch.iter().position(|e| e.seq > after));
            if let Some(first_held) = held {
                batch.truncate(first_held);
            }
            self.handle_room_batch(room, &batch).await?;
            // A short batch was all there was: events recorded since then start this lane
            // again (the scheduler reads past its cursor), so no read to find none.
            if !full || held.is_some() {
                return Ok(());
            }
        }
    }

    /// Handles `batch`, one room's pending events, in the order given.
    pub(in crate::bridge) async fn handle_room_batch(
        &self,
        room: &str,
        batch: &[InboxEvent],
    ) -> Result<(), StoreError> {
        let mut i = 0;
        // Not a conversation (a Matrix responder's relay room): no run to look for.
        let mut runs = true;
        while i < batch.len() {
            // A run of plain visitor messages goes in one transaction (`batch.rs`);
            // anything else, or a run that failed, is handled event by event, with
            // retries and setting aside.
            let run = if runs {
                self.handle_plain_run(room, &batch[i..]).await
            } else {
                Ok(Some(0))
            };
            match run {
                Ok(Some(n)) if n > 0 => {
                    i += n;
                    continue;
                }
                Ok(Some(_)) => {}
                Ok(None) => runs = false,
                Err(e) => {
                    tracing::warn!(room_id = %room, error = %e, "a run of messages failed; handling them one by one")
                }
            }
            if let Handled::StoreDown(e) = self.handle_inbox_item(&batch[i]).await {
                return Err(e);
            }
            i += 1;
        }
        Ok(())
    }

    /// Handles pending homeserver events in arrival order until none is left, then sends the
    /// offers they led to, all in this call: what the lanes do, without them, for tests that
    /// fix the order of everything.
    pub async fn drain_inbox(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            let batch = self.store.pending_events(100).await?;
            if batch.is_empty() {
                self.drain_offers().await?;
                return Ok(n);
            }
            let mut i = 0;
            while i < batch.len() {
                if let Ok(Some(run)) = self.handle_plain_run(&batch[i].room_id, &batch[i..]).await
                    && run > 0
                {
                    i += run;
                    n += run;
                    continue;
                }
                if let Handled::StoreDown(e) = self.handle_inbox_item(&batch[i]).await {
                    return Err(e);
                }
                i += 1;
                n += 1;
            }
        }
    }

    /// Handles pending platform events in arrival order, all in this call (see `drain_inbox`).
    pub async fn drain_remote(&self) -> Result<usize, StoreError> {
        let mut n = 0;
        loop {
            let batch = self.store.pending_remote_events(100).await?;
            if batch.is_empty() {
                self.drain_offers().await?;
                return Ok(n);
            }
            for event in &batch {
                if let Handled::StoreDown(e) = self.handle_remote_item(event).await {
                    return Err(e);
                }
                n += 1;
            }
        }
    }

    /// One homeserver event: handled under its conversation's lock, retried while that is
    /// worth it, then marked processed or set aside.
    async fn handle_inbox_item(&self, event: &InboxEvent) -> Handled {
        // `alias` is the visitor's alias ("Visitor 7F3A"), recorded once the conversation is
        // read (`process_event`): what operators and responders call the conversation.
        // `visitor` (their Matrix ID) only with `[visitors] log_identifiers`.
        let span = tracing::info_span!(
            "conversation",
            room_id = %event.room_id,
            event_id = %event.event_id,
            alias = tracing::field::Empty,
            visitor = tracing::field::Empty
        );
        let (outcome, attempts) = self
            .with_retries(|| self.process_event(event.seq, &event.room_id, &event.event_json))
            .instrument(span.clone())
            .await;
        let marked = match &outcome {
            Handled::Done => self.store.mark_processed(event.seq).await,
            Handled::SetAside(reason) => {
                span.in_scope(|| tracing::error!(%reason, "event set aside"));
                self.set_aside(
                    DeadLetterSource::Inbox,
                    event.seq,
                    Some(&event.room_id),
                    reason,
                    attempts,
                )
                .await
            }
            Handled::StoreDown(_) => Ok(()),
        };
        match marked {
            Ok(()) => {
                self.event_metrics("homeserver", event.received_at, &outcome);
                outcome
            }
            Err(e) => Handled::StoreDown(e),
        }
    }

    fn event_metrics(&self, source: &'static str, received_at: i64, outcome: &Handled) {
        if !matches!(outcome, Handled::StoreDown(_)) {
            let set_aside = matches!(outcome, Handled::SetAside(_));
            crate::metrics::event_handled(source, self.now_ms() - received_at, set_aside);
        }
    }

    /// One platform event, like [`Self::handle_inbox_item`].
    pub(super) async fn handle_remote_item(&self, event: &RemoteInboxEvent) -> Handled {
        // The scheduler's full look may hand out an event again just as its first hand-out
        // finishes; both run in the same lane, one after the other, so the second finds it
        // done here.
        tracing::debug!(seq = event.seq, platform = %event.platform, "platform event taken");
        match self.store.remote_event_pending(event.seq).await {
            Ok(true) => {}
            Ok(false) => return Handled::Done,
            Err(e) => return Handled::StoreDown(e),
        }
        let (outcome, attempts) = match serde_json::from_str::<RemoteEvent>(&event.event_json) {
            Ok(parsed) => {
                self.with_retries(|| self.handle_remote(&event.platform, parsed.clone()))
                    .await
            }
            Err(e) => (
                Handled::SetAside(format!("undecodable platform event: {e}")),
                1,
            ),
        };
        let marked = match &outcome {
            Handled::Done => self.store.mark_remote_processed(event.seq).await,
            Handled::SetAside(reason) => {
                tracing::error!(platform = %event.platform, %reason, "platform event set aside");
                self.set_aside(DeadLetterSource::Remote, event.seq, None, reason, attempts)
                    .await
            }
            Handled::StoreDown(_) => Ok(()),
        };
        tracing::debug!(seq = event.seq, platform = %event.platform, done = matches!(outcome, Handled::Done), store_down = matches!(outcome, Handled::StoreDown(_)), marked = marked.is_ok(), "platform event handled");
        match marked {
            Ok(()) => {
                self.event_metrics("platform", event.received_at, &outcome);
                outcome
            }
            Err(e) => Handled::StoreDown(e),
        }
    }

    /// Runs `work` until it succeeds, retrying transient store failures with backoff. A
    /// failure that can never work, a panic, or a failure that outlasts the backoff is the
    /// item's own problem: it is set aside. A database that is down is not: the item stays
    /// pending.
    /// Returns the outcome and how many attempts it took.
    async fn with_retries<F, Fut>(&self, mut work: F) -> (Handled, i64)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<(), StoreError>>,
    {
        let mut backoff = item_backoff();
        let mut attempts = 0;
        loop {
            attempts += 1;
            let outcome = match run_guarded(work()).await {
                Ok(Ok(())) => Handled::Done,
                Err(panic) => Handled::SetAside(panic),
                Ok(Err(e)) if !e.is_transient() => Handled::SetAside(e.to_string()),
                Ok(Err(e)) => match backoff.next() {
                    Some(wait) => {
                        tracing::warn!(error = %e, wait_ms = wait.as_millis() as u64, "handling failed; retrying");
                        tokio::time::sleep(wait).await;
                        continue;
                    }
                    None if self.store.ping().await.is_ok() => {
                        Handled::SetAside(format!("kept failing: {e}"))
                    }
                    None => Handled::StoreDown(e),
                },
            };
            return (outcome, attempts);
        }
    }

    /// Records that an item was set aside, and why, in the dead letters (listed by the admin
    /// API, retried from the CLI), and takes it out of its queue, in one transaction.
    /// `reason` is error text only, never the item's content.
    pub(in crate::bridge) async fn set_aside(
        &self,
        source: DeadLetterSource,
        seq: i64,
        room: Option<&str>,
        reason: &str,
        attempts: i64,
    ) -> Result<(), StoreError> {
        tracing::warn!(source = source.as_str(), seq, room_id = room.unwrap_or_default(), %reason, "set aside as a dead letter");
        match self
            .store
            .set_aside(source, seq, room, reason, attempts)
            .await
        {
            Ok(_) => {
                crate::metrics::dead_lettered(source.as_str());
                Ok(())
            }
            // Already gone (handled meanwhile, or retention): nothing left to set aside.
            Err(StoreError::NoSuchRow { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn chat(address: &str) -> LaneKey {
        LaneKey::From {
            platform: "discord".into(),
            address: address.into(),
        }
    }

    #[test]
    fn a_chats_events_wait_behind_one_a_store_failure_left_pending() {
        let c = Cursors::default();
        let (a, b) = (chat("1"), chat("2"));
        assert!(!c.stalled_before(&a, 5));
        // Event 5 of chat a failed on the store: 6 and 7 of that chat wait; chat b goes on.
        c.handled(&a, 5, true);
        assert!(c.stalled_before(&a, 6));
        assert!(c.stalled_before(&a, 7));
        assert!(
            !c.stalled_before(&a, 5),
            "the pending event itself is tried again"
        );
        assert!(!c.stalled_before(&b, 6));
        // Another of its events handled meanwhile changes nothing; the pending one done frees
        // the chat.
        c.handled(&a, 3, false);
        assert!(c.stalled_before(&a, 6));
        c.handled(&a, 5, false);
        assert!(!c.stalled_before(&a, 6));
    }

    #[test]
    fn the_earliest_pending_event_is_the_one_waited_for() {
        let c = Cursors::default();
        let a = chat("1");
        c.handled(&a, 9, true);
        c.handled(&a, 4, true);
        assert!(c.stalled_before(&a, 5));
        c.handled(&a, 9, false);
        assert!(c.stalled_before(&a, 5), "4 is still pending");
        c.handled(&a, 4, false);
        assert!(!c.stalled_before(&a, 9));
    }
}
