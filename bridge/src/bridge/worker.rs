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

mod items;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tokio::sync::watch;
use tracing::Instrument;

use super::{Bridge, lanes::LaneKey};
use crate::{connector::RemoteEvent, store::StoreError};
pub(super) use items::Cursors;
use items::Handled;

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
