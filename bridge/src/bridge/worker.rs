//! The running service's work: who does what, in which lane, and what happens when it fails.
//!
//! - Work goes to its lane (`lanes.rs`): a conversation's events, routing and time-outs to
//!   the lane of its room; a responder's events to the lane of their chat; deliveries and
//!   offers to the lane of the chat they go to. Whoever records work that has a lane hands it
//!   over at once: a stored transaction its rooms, a queued delivery or a recorded offer its
//!   chat (`Bridge::running`).
//! - The **scheduler** (`run_scheduler`) does no platform calls itself. It hands out the rest:
//!   events recorded from platforms (after its cursor), waiting conversations, offers past
//!   their time, holders past their limits, deliveries whose retry fell due; and at start-up
//!   and every `FULL_SCAN` everything pending, which restarts a lane that stopped on a
//!   database failure.
//! - **Room posts** (writes into conversation rooms, and the bot's notices to Matrix
//!   responders in their relay rooms and direct chats) have their own loop, so a homeserver that
//!   hangs holds up posting and nothing else.
//! - **Typing** has its own task (`typing.rs`).
//!
//! Each of these loops is supervised: one that panics is logged, reported, and started again.
//! An item whose handling fails for a reason worth retrying is retried in its lane with
//! backoff and jitter (the rest of that lane waits, to keep the conversation's order; other
//! lanes go on); one that can never work, that panics, or that keeps failing is set aside with
//! its reason (`set_aside`), and its lane goes on with the next.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI64, Ordering},
    },
    time::Duration,
};

use backon::BackoffBuilder;
use tokio::sync::watch;
use tracing::Instrument;

use super::{
    Bridge,
    lanes::{LaneKey, run_guarded},
};
use crate::{
    connector::RemoteEvent,
    store::{DeadLetterSource, InboxEvent, RemoteInboxEvent, StoreError},
};

/// How often queued conversations are routed again without any other reason to.
const QUEUE_RECHECK: Duration = Duration::from_secs(30);

/// How often the scheduler looks at the whole inbox and outbox rather than only what is new:
/// a lane that gave up on a store failure is started again by this.
const FULL_SCAN: Duration = Duration::from_secs(10);

/// How often the homeserver watch looks, how long an answer may take, and how many looks in a
/// row must fail before the homeserver counts as away (one lost request is not an outage).
const WATCH_EVERY: Duration = Duration::from_secs(1);
const WATCH_WAIT: Duration = Duration::from_secs(5);
const AWAY_AFTER: u32 = 2;

/// How many events one pass of a room's lane takes from the store.
const ROOM_BATCH: i64 = 200;

/// Where the scheduler has read the platform events up to. Kept in memory: after a restart
/// every pending item is read again, and the lanes' work is idempotent. (Homeserver events
/// need none: each transaction hands its rooms to their lanes as it is stored.)
#[derive(Default)]
pub(super) struct Cursors {
    remote: AtomicI64,
    /// Whether events were recorded since the scheduler last read past its cursor: a wake
    /// for anything else (a delivery queued) then reads nothing.
    remote_new: AtomicBool,
    /// Per chat, the first platform event a store failure left pending. Each event is its own
    /// job in the chat's lane, so without this the next event, already queued behind it,
    /// would be handled first once the store is back (a responder's messages reaching the
    /// visitor out of order). Later events of the chat wait, pending, until the scheduler's
    /// next full look hands them all out again in order.
    stalled: std::sync::Mutex<std::collections::HashMap<LaneKey, i64>>,
}

impl Cursors {
    /// Events were recorded from a platform.
    pub(super) fn remote_recorded(&self) {
        self.remote_new.store(true, Ordering::SeqCst);
    }

    /// Whether an earlier event of `lane` is still pending after a store failure: event `seq`
    /// must then wait for it.
    fn stalled_before(&self, lane: &LaneKey, seq: i64) -> bool {
        self.stalled
            .lock()
            .expect("stalled lock")
            .get(lane)
            .is_some_and(|&at| seq > at)
    }

    /// Event `seq` of `lane` was handled (`store_down`: or left pending by a store failure).
    fn handled(&self, lane: &LaneKey, seq: i64, store_down: bool) {
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
enum Handled {
    Done,
    /// Set aside with this reason.
    SetAside(String),
    /// The store itself failed; the item stays pending and is picked up again later.
    StoreDown(StoreError),
}

impl Bridge {
    /// Runs the service's loops until `stop` turns true: the scheduler and the room posts,
    /// each restarted if it panics, and the typing task.
    pub async fn run(self: Arc<Self>, stop: watch::Receiver<bool>) {
        let _ = self.running.set(Arc::downgrade(&self));
        let typing = self
            .typing_rx
            .lock()
            .expect("typing receiver lock")
            .take()
            .map(|rx| tokio::spawn(self.clone().run_typing(rx)));
        let scheduler = {
            let me = self.clone();
            let stop = stop.clone();
            tokio::spawn(supervise("scheduler", stop.clone(), move || {
                me.clone().run_scheduler(stop.clone())
            }))
        };
        let posts = {
            let me = self.clone();
            let stop = stop.clone();
            tokio::spawn(supervise("room posts", stop.clone(), move || {
                me.clone().run_room_posts(stop.clone())
            }))
        };
        let watch = {
            let me = self.clone();
            let stop = stop.clone();
            tokio::spawn(supervise("homeserver watch", stop.clone(), move || {
                me.clone().run_homeserver_watch(stop.clone())
            }))
        };
        let sweep = self.retention.transcript_days.map(|days| {
            let me = self.clone();
            let stop = stop.clone();
            tokio::spawn(supervise("retention sweep", stop.clone(), move || {
                me.clone().run_sweep(days, stop.clone())
            }))
        });
        let _ = scheduler.await;
        let _ = posts.await;
        let _ = watch.await;
        if let Some(sweep) = sweep {
            let _ = sweep.await;
        }
        if let Some(typing) = typing {
            typing.abort();
        }
    }

    /// Reads what is new and hands it to the lanes; see the module's description.
    async fn run_scheduler(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        // Everything pending is looked at once at the start: the cursors begin at zero.
        let mut next_queue_check = tokio::time::Instant::now();
        let mut queue_due = true;
        let mut next_tick = tokio::time::Instant::now();
        let mut next_full_scan = tokio::time::Instant::now();
        // The last look at the inbox failed: look again on the next beat.
        let mut inbox_again = false;
        loop {
            let now = tokio::time::Instant::now();
            if queue_due || now >= next_queue_check {
                if let Err(e) = self.schedule_waiting().await {
                    tracing::error!(error = %e, "reading queued conversations failed; retrying");
                }
                next_queue_check = now + QUEUE_RECHECK;
                queue_due = false;
            }
            // Offer time-outs and holders' limits are looked at about once a second, by the
            // instance that leads (`cluster.rs`; alone, always this one).
            if now >= next_tick && self.cluster.leads() {
                if let Err(e) = self.schedule_expiries().await {
                    tracing::error!(error = %e, "reading open offers failed; retrying");
                }
                if let Err(e) = self.schedule_watch().await {
                    tracing::error!(error = %e, "checking responders failed; retrying");
                }
                next_tick = now + Duration::from_secs(1);
            }
            let full = now >= next_full_scan;
            if full {
                next_full_scan = now + FULL_SCAN;
            }
            if full || inbox_again {
                inbox_again = self.schedule_inbox().await.is_err_and(|e| {
                    tracing::error!(error = %e, "reading the inbox failed; retrying");
                    true
                });
            }
            if (full || self.cursors.remote_new.swap(false, Ordering::SeqCst))
                && let Err(e) = self.schedule_remote(full).await
            {
                self.cursors.remote_recorded();
                tracing::error!(error = %e, "reading platform events failed; retrying");
            }
            let mut wait = Duration::from_secs(1);
            match self.schedule_deliveries(full).await {
                Ok(Some(due)) => wait = wait.min(due.max(Duration::from_millis(10))),
                Ok(None) => {}
                Err(e) => tracing::error!(error = %e, "reading the outbox failed; retrying"),
            }
            // The scheduler never waits on a platform, so it beats at least once a second
            // while it lives; `/health` reads this.
            self.health.heartbeat(crate::health::WORKER);
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = self.inbox_ready.notified() => {}
                _ = self.register_changed.notified() => queue_due = true,
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    /// Erases what `[retention] transcript_days` says is too old (`Store::sweep`), in its own
    /// loop: a sweep of many conversations takes the store's writers one conversation at a
    /// time and holds up no other loop. The age is judged by the store's (injected) clock;
    /// the loop's timing is tokio's. Logs counts only, never a visitor or a room.
    async fn run_sweep(self: Arc<Self>, days: u32, mut stop: watch::Receiver<bool>) {
        let mut wait = crate::retention::FIRST_SWEEP_AFTER;
        loop {
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(wait) => {}
            }
            wait = crate::retention::SWEEP_EVERY;
            // The leading instance sweeps, as leader: each of its transactions checks the
            // term's lease, so one deposed mid-sweep stops.
            let term = self.cluster.terms().borrow().clone();
            let Some(term) = term.filter(|t| t.holds()) else {
                continue;
            };
            match self.store.sweep(days, term.fence()).await {
                Ok(deleted) => tracing::info!(
                    days,
                    conversations = deleted.of("conversations"),
                    rows = deleted.total(),
                    tables = %deleted,
                    "retention sweep done"
                ),
                Err(StoreError::Deposed(_)) => {
                    tracing::warn!("retention sweep stopped: this instance no longer leads");
                }
                // Tried again at the next sweep; what it did before failing stays done.
                Err(e) => tracing::error!(error = %e, "retention sweep failed"),
            }
        }
    }

    /// Looks at the homeserver every `WATCH_EVERY`: when it was away and answers again, the
    /// rooms are caught up on (`catch_up.rs`), since it may have lost what it had queued for
    /// us. At the start, what happened while Switchboard was not running is unknown, so the
    /// first answer starts a catch-up too.
    async fn run_homeserver_watch(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut away = true;
        let mut noted = false;
        let mut at_start = true;
        let mut failures = 0u32;
        // Whether this instance leads is known once it has contended for the lead once.
        self.cluster.contended().await;
        loop {
            // What the homeserver may have lost is caught up on by the leading instance
            // only; the others keep their health up to date.
            if away && !noted && self.cluster.leads() {
                match self.homeserver_away(at_start).await {
                    Ok(()) => {
                        noted = true;
                        at_start = false;
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "could not note where the homeserver went away; trying again")
                    }
                }
            }
            match self.post_client.reachable(WATCH_WAIT).await {
                Ok(()) => {
                    failures = 0;
                    if away && (noted || !self.cluster.leads()) {
                        away = false;
                        self.health.report(
                            crate::health::HOMESERVER,
                            crate::health::PartState::Connected,
                            None,
                        );
                        if noted {
                            self.homeserver_back();
                        }
                    }
                }
                Err(e) => {
                    failures += 1;
                    if failures >= AWAY_AFTER && !away {
                        tracing::warn!(error = %e, "the homeserver is away");
                        self.health.report(
                            crate::health::HOMESERVER,
                            crate::health::PartState::Down,
                            Some(e.to_string()),
                        );
                        away = true;
                        noted = false;
                    }
                }
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(WATCH_EVERY) => {}
            }
        }
    }

    /// Hands rooms with posts due to their posting lanes, in its own loop (see
    /// `room_posts.rs`). A post queued in a room starts that room's lane at once; the whole
    /// queue is read when a backoff ends or a post failed, and at least every two seconds.
    async fn run_room_posts(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut look_at_everything = true;
        loop {
            let mut wait = Duration::from_secs(2);
            if look_at_everything {
                match self.schedule_room_posts().await {
                    Ok(Some(due)) => wait = wait.min(due.max(Duration::from_millis(20))),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::error!(error = %e, "posting into rooms failed; retrying")
                    }
                }
            }
            let deadline = tokio::time::Instant::now() + wait;
            // Rooms woken for meanwhile go straight to their lanes; the loop reads the whole
            // queue again only when told to or when the wait is over.
            look_at_everything = loop {
                let wakes = tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    wakes = self.room_posts.woken() => wakes,
                    _ = tokio::time::sleep_until(deadline) => break true,
                };
                for room in wakes.rooms {
                    self.start_posting(room);
                }
                if wakes.everything {
                    break true;
                }
            };
        }
    }

    /// Every room with a pending event gets its lane started (or told to look again): at
    /// start-up, every `FULL_SCAN`, and after a failed look. In between, each transaction
    /// hands its rooms to their lanes as it is stored (`record_transaction`).
    pub(super) async fn schedule_inbox(self: &Arc<Self>) -> Result<(), StoreError> {
        for room in self.store.pending_inbox_rooms().await? {
            self.submit_room_inbox(room);
        }
        Ok(())
    }

    pub(super) fn submit_room_inbox(self: &Arc<Self>, room: String) {
        let me = self.clone();
        let key = LaneKey::Room(room.clone());
        self.lanes.submit(
            key,
            Some("inbox"),
            Box::pin(async move {
                if let Err(e) = me.drain_room_inbox(&room).await {
                    // Picked up again by the next full scan.
                    tracing::error!(room_id = %room, error = %e, "a conversation's events could not be read");
                }
            }),
        );
    }

    /// Platform events after the cursor, each to the lane of the responder's chat.
    async fn schedule_remote(self: &Arc<Self>, full: bool) -> Result<(), StoreError> {
        if full {
            // Events a lane left pending after a store failure are handed out again; one
            // still in its lane is not (`remote_in_flight`).
            self.cursors.remote.store(0, Ordering::SeqCst);
        }
        loop {
            let after = self.cursors.remote.load(Ordering::SeqCst);
            let batch = self.store.pending_remote_events_after(after, 200).await?;
            let Some(last) = batch.last().map(|e| e.seq) else {
                return Ok(());
            };
            self.cursors.remote.store(last, Ordering::SeqCst);
            let n = batch.len();
            for event in batch {
                if !self
                    .remote_in_flight
                    .lock()
                    .expect("in-flight lock")
                    .insert(event.seq)
                {
                    continue;
                }
                let address = serde_json::from_str::<RemoteEvent>(&event.event_json)
                    .map(|e| e.address().to_owned())
                    .unwrap_or_default();
                let key = LaneKey::From {
                    platform: event.platform.clone(),
                    address,
                };
                let me = self.clone();
                let lane = key.clone();
                self.lanes.submit(
                    key,
                    None,
                    Box::pin(async move {
                        let seq = event.seq;
                        if me.cursors.stalled_before(&lane, seq) {
                            tracing::debug!(seq, lane = ?lane, "platform event left for later: an earlier one of its lane is pending");
                        } else {
                            let outcome = me.handle_remote_item(&event).await;
                            me.cursors.handled(
                                &lane,
                                seq,
                                matches!(outcome, Handled::StoreDown(_)),
                            );
                        }
                        me.remote_in_flight
                            .lock()
                            .expect("in-flight lock")
                            .remove(&seq);
                    }),
                );
            }
            if n < 200 {
                return Ok(());
            }
        }
    }

    /// Waiting conversations, each routed in its room's lane.
    async fn schedule_waiting(self: &Arc<Self>) -> Result<(), StoreError> {
        for conversation in self.store.waiting_conversations().await? {
            let me = self.clone();
            let room = conversation.room_id.clone();
            self.lanes.submit(
                LaneKey::Room(room.clone()),
                Some("route"),
                Box::pin(async move {
                    if let Err(e) = me.route_waiting(&room).await {
                        tracing::error!(room_id = %room, error = %e, "routing failed; retrying later");
                    }
                }),
            );
        }
        Ok(())
    }

    /// Offers past their time, each withdrawn in its room's lane.
    async fn schedule_expiries(self: &Arc<Self>) -> Result<(), StoreError> {
        for room in self.rooms_with_expired_offers().await? {
            let me = self.clone();
            self.lanes.submit(
                LaneKey::Room(room.clone()),
                Some("expire"),
                Box::pin(async move {
                    if let Err(e) = me.expire_offers_in(&room).await {
                        tracing::error!(room_id = %room, error = %e, "expiring offers failed; retrying");
                    }
                }),
            );
        }
        Ok(())
    }

    /// Holders past a limit, each handed over in its room's lane.
    async fn schedule_watch(self: &Arc<Self>) -> Result<(), StoreError> {
        for (room, platform, address, why) in self.holders_past_limits().await? {
            let me = self.clone();
            self.lanes.submit(
                LaneKey::Room(room.clone()),
                Some("watch"),
                Box::pin(async move {
                    let _room = me.room_locks.lock(&room).await;
                    let span = tracing::info_span!("conversation", room_id = %room);
                    if let Err(e) = me
                        .hand_over_because(&room, &platform, &address, why)
                        .instrument(span)
                        .await
                    {
                        tracing::error!(room_id = %room, error = %e, "hand-over failed; retrying");
                    }
                }),
            );
        }
        Ok(())
    }

    /// One room's pending events, in order, until none is left. Its lane runs one of these at
    /// a time, so a room's events are never handled out of order or twice at once.
    pub(super) async fn drain_room_inbox(&self, room: &str) -> Result<(), StoreError> {
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
    pub(super) async fn handle_room_batch(
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
    async fn handle_remote_item(&self, event: &RemoteInboxEvent) -> Handled {
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
    pub(super) async fn set_aside(
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

/// Runs the loop `make` builds until `stop` turns true, starting it again when it panics.
async fn supervise<F, Fut>(name: &'static str, stop: watch::Receiver<bool>, mut make: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let mut restarts = 0u32;
    loop {
        match tokio::spawn(make()).await {
            Ok(()) => return,
            Err(e) if *stop.borrow() => {
                tracing::debug!(part = name, error = %e, "stopped");
                return;
            }
            Err(e) => {
                restarts += 1;
                tracing::error!(part = name, error = %e, restarts, "panicked; starting it again");
                let wait = Duration::from_millis(100 * u64::from(restarts.min(50)));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

impl RemoteEvent {
    /// The platform address of whoever the event came from: the key of their lane.
    pub fn address(&self) -> &str {
        match self {
            RemoteEvent::Accept { address, .. }
            | RemoteEvent::Decline { address, .. }
            | RemoteEvent::Message { address, .. }
            | RemoteEvent::Edit { address, .. }
            | RemoteEvent::Delete { address, .. }
            | RemoteEvent::Command { address, .. }
            | RemoteEvent::Unreadable { address }
            | RemoteEvent::TopicChosen { address, .. }
            | RemoteEvent::Unreachable { address, .. } => address,
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
