//! Lanes: work partitioned by key, strictly in order within a key and in parallel across keys.
//!
//! A conversation's events run in the lane of its room; deliveries to a responder's chat run
//! in the lane of that (platform, address); a responder's own events in the lane of their
//! address; the writes into a room (posts) in a posting lane of that room. So one slow platform call, one long backlog or one bad event holds up its own
//! lane and nothing else. A lane is a task that exists while it has work and ends when its
//! queue is empty; at most `concurrency` jobs run at once, so a flood of keys cannot spawn
//! unbounded work. A job that panics is logged and the lane goes on with the next one:
//! whoever submitted it decides what a panic means for its item (see `run_guarded`).
//!
//! Conversations are also guarded by [`RoomLocks`]: work about one room from different lanes
//! (the room's own events, a responder's accept in their lane, a delivery's hand-over) is
//! serialised by the room's lock, so a conversation's state changes one at a time as it did
//! when a single worker did everything.
//!
//! With other instances on the same database (`cluster.rs`), a lane runs only while its
//! instance holds the lane's claim, and a room's lock is a claim too: a key is worked on by
//! one instance at a time, and in order. Alone, claims are granted without asking.

use std::{
    collections::{HashMap, HashSet, VecDeque},
    future::Future,
    panic::AssertUnwindSafe,
    pin::Pin,
    sync::{Arc, Mutex, Weak},
};

use futures_util::FutureExt;
use tokio::{
    sync::{OwnedMutexGuard, Semaphore},
    time::Instant,
};

use crate::cluster::{Claim, Cluster};

/// One unit of work in a lane.
pub(crate) type Job = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// Which lane: a conversation, or a chat on a platform.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum LaneKey {
    /// A conversation's room: its events, routing and offer time-outs.
    Room(String),
    /// A responder's chat on a platform: what they sent us.
    From { platform: String, address: String },
    /// A responder's chat on a platform: what we deliver to them.
    To { platform: String, address: String },
    /// A room's writes (`room_posts.rs`): apart from its events' lane, so an event is never
    /// held up waiting for the homeserver to take a post it caused.
    Posts(String),
}

impl LaneKey {
    /// The name of the lane's claim among instances (`cluster.rs`).
    fn claim(&self) -> String {
        match self {
            LaneKey::Room(room) => format!("lane/room/{room}"),
            LaneKey::From { platform, address } => format!("lane/from/{platform}/{address}"),
            LaneKey::To { platform, address } => format!("lane/to/{platform}/{address}"),
            LaneKey::Posts(room) => format!("lane/posts/{room}"),
        }
    }

    /// The kind of lane, for metrics.
    fn kind(&self) -> &'static str {
        match self {
            LaneKey::Room(_) => "room",
            LaneKey::From { .. } => "from",
            LaneKey::To { .. } => "to",
            LaneKey::Posts(_) => "posts",
        }
    }
}

struct Lane {
    /// Each job with its kind and when it was queued.
    queue: VecDeque<(Option<&'static str>, Job, Instant)>,
    /// Kinds of jobs queued and not yet started: a second job of the same kind would find
    /// the same work in the store, so it is not queued again.
    queued_kinds: HashSet<&'static str>,
}

/// The set of lanes. Cheap to clone.
#[derive(Clone)]
pub(crate) struct Lanes {
    lanes: Arc<Mutex<HashMap<LaneKey, Lane>>>,
    permits: Arc<Semaphore>,
    cluster: Cluster,
}

impl Lanes {
    pub fn new(concurrency: usize, cluster: Cluster) -> Self {
        Self {
            lanes: Arc::default(),
            permits: Arc::new(Semaphore::new(concurrency.max(1))),
            cluster,
        }
    }

    /// Queues `job` in the lane of `key`, starting the lane if it is idle. With a `kind`, the
    /// job is dropped when a job of that kind is already queued there and has not started:
    /// for jobs that read what to do from the store ("drain this room's inbox").
    pub fn submit(&self, key: LaneKey, kind: Option<&'static str>, job: Job) {
        let mut lanes = self.lanes.lock().expect("lanes lock");
        if let Some(lane) = lanes.get_mut(&key) {
            if let Some(kind) = kind
                && !lane.queued_kinds.insert(kind)
            {
                return;
            }
            lane.queue.push_back((kind, job, Instant::now()));
            return;
        }
        let mut lane = Lane {
            queue: VecDeque::new(),
            queued_kinds: HashSet::new(),
        };
        if let Some(kind) = kind {
            lane.queued_kinds.insert(kind);
        }
        lane.queue.push_back((kind, job, Instant::now()));
        lanes.insert(key.clone(), lane);
        drop(lanes);
        tokio::spawn(self.clone().run(key));
    }

    /// How many lanes have work (queued or running).
    #[cfg(test)]
    pub fn busy(&self) -> usize {
        self.lanes.lock().expect("lanes lock").len()
    }

    /// Whether the lane of `key` has work.
    #[cfg(test)]
    pub fn is_busy(&self, key: &LaneKey) -> bool {
        self.lanes.lock().expect("lanes lock").contains_key(key)
    }

    async fn run(self, key: LaneKey) {
        // Held while the lane has work: no other instance works on this key meanwhile. Its
        // jobs queue up while it waits (without a permit).
        let mut claim = self.cluster.claim(&key.claim()).await;
        loop {
            let (job, queued_at) = {
                let mut lanes = self.lanes.lock().expect("lanes lock");
                let Some(lane) = lanes.get_mut(&key) else {
                    return;
                };
                match lane.queue.pop_front() {
                    Some((kind, job, queued_at)) => {
                        if let Some(kind) = kind {
                            lane.queued_kinds.remove(kind);
                        }
                        (job, queued_at)
                    }
                    None => {
                        // Removed under the lock `submit` takes: a job submitted after this
                        // starts a new lane, so nothing is left behind.
                        lanes.remove(&key);
                        return;
                    }
                }
            };
            // Lost meanwhile (this instance stalled past its expiry): whatever the key's new
            // holder did is in the store, and the job reads it from there.
            if !claim.holds() {
                tracing::warn!(lane = ?key, "the lane's claim was lost; claiming it again");
                drop(claim);
                claim = self.cluster.claim(&key.claim()).await;
            }
            let Ok(_permit) = self.permits.clone().acquire_owned().await else {
                return; // the semaphore is never closed
            };
            crate::metrics::lane_wait(key.kind(), queued_at.elapsed());
            if let Err(panic) = AssertUnwindSafe(job).catch_unwind().await {
                tracing::error!(lane = ?key, panic = %panic_text(&*panic), "a job panicked; the lane goes on");
            }
        }
    }
}

/// Runs `work`, turning a panic into an error carrying the panic's message, so the caller can
/// set aside the one item that caused it and go on.
pub(crate) async fn run_guarded<T>(work: impl Future<Output = T>) -> Result<T, String> {
    AssertUnwindSafe(work)
        .catch_unwind()
        .await
        .map_err(|panic| format!("panicked: {}", panic_text(&*panic)))
}

fn panic_text(panic: &(dyn std::any::Any + Send)) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}

/// One lock per conversation, made when first asked for and gone when nobody holds it; with
/// other instances, also a claim on the room (`<kind>/<room ID>`: `room` for its work,
/// `posts` for a pass posting its writes), taken once the lock is ours.
#[derive(Default)]
pub(crate) struct RoomLocks {
    locks: Mutex<HashMap<String, Weak<tokio::sync::Mutex<()>>>>,
    cluster: Option<(Cluster, &'static str)>,
}

/// A room's lock, held until dropped.
pub(crate) struct RoomGuard {
    _claim: Option<Claim>,
    _lock: OwnedMutexGuard<()>,
}

impl RoomLocks {
    /// Room locks that are also claims (named `<kind>/<room ID>`) among the instances of
    /// `cluster`.
    pub fn among(cluster: Cluster, kind: &'static str) -> Self {
        Self {
            locks: Mutex::default(),
            cluster: Some((cluster, kind)),
        }
    }

    /// Waits for the room's lock. Never take a second room's lock while holding one, and
    /// never take the same room's twice in one call chain: the locks are not reentrant.
    pub async fn lock(&self, room: &str) -> RoomGuard {
        let lock = self.local(room).lock_owned().await;
        let claim = match &self.cluster {
            Some((cluster, kind)) => Some(cluster.claim(&format!("{kind}/{room}")).await),
            None => None,
        };
        RoomGuard {
            _claim: claim,
            _lock: lock,
        }
    }

    fn local(&self, room: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().expect("room locks");
        match locks.get(room).and_then(Weak::upgrade) {
            Some(lock) => lock,
            None => {
                // Forget locks nobody holds any more before the map grows.
                if locks.len() >= 1024 {
                    locks.retain(|_, l| l.strong_count() > 0);
                }
                let lock = Arc::new(tokio::sync::Mutex::new(()));
                locks.insert(room.to_owned(), Arc::downgrade(&lock));
                lock
            }
        }
    }
}

/// The chats a delivery is being made to right now, counted: what a reply can be early for.
/// A platform shows our message as soon as it takes it, and we write which conversation it
/// belongs to only once its answer is back, so a reply can name a message of ours that is not
/// mapped yet; that can only happen while a delivery to that chat is under way (see
/// `relay.rs`, `room_replied_to`).
#[derive(Default)]
pub(crate) struct ChatsInFlight {
    chats: Mutex<HashMap<(String, String), usize>>,
    /// Woken whenever a delivery ends (its mapping is written by then).
    ended: tokio::sync::Notify,
}

impl ChatsInFlight {
    /// Marks a delivery to the chat under way until the guard is dropped.
    pub fn enter<'a>(&'a self, platform: &str, address: &str) -> InFlightGuard<'a> {
        let key = (platform.to_owned(), address.to_owned());
        *self
            .chats
            .lock()
            .expect("chats in flight")
            .entry(key.clone())
            .or_default() += 1;
        InFlightGuard { set: self, key }
    }

    /// Completes when a delivery (to any chat) ends after this was called: ask before
    /// looking, so an end between the look and the wait is not missed.
    pub fn next_end(&self) -> std::pin::Pin<Box<tokio::sync::futures::Notified<'_>>> {
        let mut ended = Box::pin(self.ended.notified());
        // Registered now, not at the first poll: `notify_waiters` wakes only those waiting.
        ended.as_mut().enable();
        ended
    }

    /// Whether a delivery to the chat is under way.
    pub fn contains(&self, platform: &str, address: &str) -> bool {
        self.chats
            .lock()
            .expect("chats in flight")
            .contains_key(&(platform.to_owned(), address.to_owned()))
    }
}

/// One delivery under way (see [`ChatsInFlight::enter`]).
pub(crate) struct InFlightGuard<'a> {
    set: &'a ChatsInFlight,
    key: (String, String),
}

impl Drop for InFlightGuard<'_> {
    fn drop(&mut self) {
        {
            let mut chats = self.set.chats.lock().expect("chats in flight");
            if let Some(n) = chats.get_mut(&self.key) {
                *n -= 1;
                if *n == 0 {
                    chats.remove(&self.key);
                }
            }
        }
        self.set.ended.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn room(r: &str) -> LaneKey {
        LaneKey::Room(r.to_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn one_lane_keeps_order_and_others_run_past_a_stuck_one() {
        let lanes = Lanes::new(4, Cluster::alone());
        let log = Arc::new(Mutex::new(Vec::new()));
        // Room a's first job hangs for an hour.
        let l = log.clone();
        lanes.submit(
            room("a"),
            None,
            Box::pin(async move {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                l.lock().unwrap().push("a1");
            }),
        );
        let l = log.clone();
        lanes.submit(
            room("a"),
            None,
            Box::pin(async move { l.lock().unwrap().push("a2") }),
        );
        for name in ["b1", "b2"] {
            let l = log.clone();
            lanes.submit(
                room("b"),
                None,
                Box::pin(async move { l.lock().unwrap().push(name) }),
            );
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert_eq!(*log.lock().unwrap(), ["b1", "b2"], "b is not held up by a");
        assert!(lanes.is_busy(&room("a")));
        assert!(!lanes.is_busy(&room("b")), "an idle lane ends");
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert_eq!(
            *log.lock().unwrap(),
            ["b1", "b2", "a1", "a2"],
            "a kept its order"
        );
        assert_eq!(lanes.busy(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_job_does_not_end_its_lane() {
        let lanes = Lanes::new(1, Cluster::alone());
        let log = Arc::new(Mutex::new(Vec::new()));
        lanes.submit(room("a"), None, Box::pin(async { panic!("bad event") }));
        let l = log.clone();
        lanes.submit(
            room("a"),
            None,
            Box::pin(async move { l.lock().unwrap().push("after") }),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(*log.lock().unwrap(), ["after"]);
        assert_eq!(
            run_guarded(async { panic!("boom {}", 7) }).await,
            Err::<(), _>("panicked: boom 7".to_owned())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_queued_job_of_a_kind_is_not_queued_twice_but_a_started_one_is() {
        let lanes = Lanes::new(2, Cluster::alone());
        let runs = Arc::new(Mutex::new(0));
        let gate = Arc::new(tokio::sync::Notify::new());
        // A blocker keeps the lane busy so the "drain" jobs queue behind it.
        let g = gate.clone();
        lanes.submit(room("a"), None, Box::pin(async move { g.notified().await }));
        for _ in 0..5 {
            let r = runs.clone();
            lanes.submit(
                room("a"),
                Some("drain"),
                Box::pin(async move { *r.lock().unwrap() += 1 }),
            );
        }
        gate.notify_one();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(*runs.lock().unwrap(), 1);
        let r = runs.clone();
        lanes.submit(
            room("a"),
            Some("drain"),
            Box::pin(async move { *r.lock().unwrap() += 1 }),
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(*runs.lock().unwrap(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn concurrency_is_bounded() {
        let lanes = Lanes::new(2, Cluster::alone());
        let running = Arc::new(Mutex::new((0, 0)));
        for i in 0..6 {
            let r = running.clone();
            lanes.submit(
                room(&i.to_string()),
                None,
                Box::pin(async move {
                    {
                        let mut r = r.lock().unwrap();
                        r.0 += 1;
                        r.1 = r.1.max(r.0);
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                    r.lock().unwrap().0 -= 1;
                }),
            );
        }
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert_eq!(running.lock().unwrap().1, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn room_locks_serialise_one_room_only() {
        let locks = Arc::new(RoomLocks::default());
        let held = locks.lock("a").await;
        // Another room is free.
        let _b = locks.lock("b").await;
        let l = locks.clone();
        let waiter = tokio::spawn(async move {
            let _a = l.lock("a").await;
        });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert!(!waiter.is_finished(), "a is held");
        drop(held);
        waiter.await.unwrap();
    }

    #[test]
    fn a_chat_is_in_flight_until_its_last_delivery_ends() {
        let set = ChatsInFlight::default();
        assert!(!set.contains("telegram", "1"));
        let first = set.enter("telegram", "1");
        let second = set.enter("telegram", "1");
        assert!(set.contains("telegram", "1"));
        assert!(!set.contains("telegram", "2"), "other chats are not");
        assert!(
            !set.contains("discord", "1"),
            "nor the same address elsewhere"
        );
        drop(first);
        assert!(
            set.contains("telegram", "1"),
            "one delivery is still under way"
        );
        drop(second);
        assert!(!set.contains("telegram", "1"));
    }

    #[tokio::test]
    async fn the_end_of_a_delivery_wakes_who_asked_before_it() {
        let set = ChatsInFlight::default();
        let guard = set.enter("telegram", "1");
        let ended = set.next_end();
        drop(guard);
        // Asked before the end, awaited after it: still woken.
        tokio::time::timeout(Duration::from_secs(5), ended)
            .await
            .expect("woken by the end of the delivery");
        let late = set.next_end();
        assert!(
            tokio::time::timeout(Duration::from_millis(50), late)
                .await
                .is_err(),
            "no delivery ended since it asked"
        );
    }

    /// Two instances on one database: a posting pass one holds on a room keeps the other's
    /// (an erasure's wait) waiting until it ends, and holds up neither the room's own lock nor
    /// another room's pass.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_posting_pass_on_one_instance_keeps_another_waiting() {
        let dir = tempfile::tempdir().expect("dir");
        let url = format!("sqlite://{}/l.db", dir.path().display());
        let store = crate::Store::connect(&url).await.expect("store");
        let instance =
            |name: &str| Cluster::shared(store.clone(), name.into(), Duration::from_secs(10));
        let (a, b) = (instance("a"), instance("b"));
        let a_posts = RoomLocks::among(a, "posts");
        let b_posts = Arc::new(RoomLocks::among(b.clone(), "posts"));
        let b_rooms = RoomLocks::among(b, "room");
        let pass = a_posts.lock("!r").await;
        let erasure = {
            let b_posts = b_posts.clone();
            tokio::spawn(async move { drop(b_posts.lock("!r").await) })
        };
        tokio::time::timeout(Duration::from_secs(5), b_rooms.lock("!r"))
            .await
            .expect("the room's own lock is another claim");
        tokio::time::timeout(Duration::from_secs(5), b_posts.lock("!other"))
            .await
            .expect("another room's pass is not held up");
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(
            !erasure.is_finished(),
            "b waits while a's pass is under way"
        );
        drop(pass);
        tokio::time::timeout(Duration::from_secs(5), erasure)
            .await
            .expect("b gets it once a's pass ended")
            .expect("no panic");
    }
}
