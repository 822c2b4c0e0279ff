//! Several instances on one database (issue 17): who works on what, and who leads.
//!
//! On SQLite an instance is alone (`run` refuses a second one on the same file), and
//! [`Cluster::alone`] grants everything at once without touching the store. On PostgreSQL
//! any number of instances share the store, and the store is how they agree; there is no
//! other moving part:
//!
//! - **Claims.** Work is partitioned by key (a conversation's room, a responder's chat; see
//!   `bridge/lanes.rs`), and an instance works on a key only while it holds the key's claim,
//!   a lease row named `claim/<key>` (`store/leases.rs`) taken before the work and deleted
//!   after it. Every instance looks at all pending work, so whatever an instance recorded and
//!   did not finish (it died, it was stopped) is picked up by another once its claims expire.
//!   An instance waits for a claim another holds (polling, with backoff): what it was about
//!   to do may be done by then, which the work finds out from the store, as after a restart.
//! - **The lead.** What must run once (Telegram long polling, the Discord gateway, IMAP, the
//!   timers) runs on the holder of the `leader` lease. Each instance renews what it holds
//!   every third of the lease's length and tries to take the lead when nobody holds it, so
//!   a dead leader is replaced within a third of a lease after its lease runs out.
//! - **Fencing.** A leader counts its lead as lost a fifth of a lease before the row says so
//!   (by its own monotonic clock, from when it sent the renewal that succeeded), and its
//!   singletons ask [`Term::resumes`] before they act, so one paused past its lease (SIGSTOP,
//!   a stall) finds out it was deposed before doing anything as leader. What it took before
//!   the stall and records after it is fenced in the store: the receivers record platform
//!   events through `Bridge::as_leader`, which checks the term's epoch in the transaction of
//!   each insert ([`Store::record_remote_event_as`]); a refused event is not acknowledged to
//!   its platform and is left to the new leader. The retention sweep checks the epoch in
//!   each of its transactions ([`Store::sweep`]); the other timers only hand jobs to room
//!   lanes, which re-read the store under the room's claim, so they write nothing as leader.
//!
//! Claims are not fenced per write: work on a conversation reads what to do from the store
//! and records what it did under keys (event IDs, outbox rows), so a second run of the same
//! work finds it done, as after a crash.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use crate::store::{Fence, Store, StoreError};

/// The lease every instance contends for; its holder runs the singletons.
pub const LEADER_LEASE: &str = "leader";
/// Claims' lease names start with this.
pub const CLAIM_PREFIX: &str = "claim/";
/// Each live instance's presence row is a lease named this and its holder name.
pub const PRESENCE_PREFIX: &str = "present/";
/// How long a lease lasts unless renewed, by default.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// How this instance shares the work with others. Cheap to clone.
#[derive(Clone)]
pub struct Cluster {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` alone.
    shared: Option<Shared>,
    /// The current term: `Some` while leading.
    term: watch::Sender<Option<Term>>,
    /// Turns true once this instance has contended for the lead (alone: at once).
    contended: watch::Sender<bool>,
}

struct Shared {
    store: Store,
    holder: String,
    lease: Duration,
    /// Where `Instant`s are counted from, for the atomics below.
    base: Instant,
    /// While leading: the lead's epoch; 0 otherwise.
    epoch: AtomicU64,
    /// While leading: until when (ms after `base`) the lead holds by this instance's clock.
    lead_until: AtomicU64,
    /// How many instances were live on the store at the last count (this one included).
    instances: AtomicU32,
    /// The claims this instance holds now, with the epoch each was taken at.
    held: Mutex<HashMap<String, i64>>,
    /// Until when (ms after `base`) the claims renewed last hold by this instance's clock.
    claims_until: AtomicU64,
    /// The lead last held, given up by [`Cluster::leave`].
    last_lead: Mutex<Option<Fence>>,
}

/// A stretch of time during which this instance leads. Singletons started for it stop when
/// it ends and ask [`Term::holds`] before each thing they do as leader.
#[derive(Clone)]
pub struct Term {
    epoch: u64,
    fence: Option<Fence>,
    cluster: Cluster,
    ended: watch::Receiver<bool>,
}

impl std::fmt::Debug for Term {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Term").field("epoch", &self.epoch).finish()
    }
}

impl Term {
    /// The lease's epoch (1 for an instance alone).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The fence writes made as leader carry; `None` for an instance alone.
    pub fn fence(&self) -> Option<&Fence> {
        self.fence.as_ref()
    }

    /// Whether this term still holds, by this instance's own clock: checked right before
    /// acting as leader, so a leader paused past its lease does nothing once it resumes.
    pub fn holds(&self) -> bool {
        !*self.ended.borrow() && self.cluster.leads_in(self.epoch)
    }

    /// Whether to go on acting as leader: at once while the term holds; while it does not
    /// (by this instance's clock its lead has run out, but the renewal that decides is still
    /// under way, the store being slow or away), waits until it holds again (`true`: that
    /// renewal went through, nobody else could lead meanwhile) or the term ends (`false`).
    /// A receiver asks this, not [`Term::holds`], before acting: one that stopped at the first
    /// `false` of `holds` stopped for good although its term went on, and nobody started it
    /// again (a crash burst lost every Discord message after a PostgreSQL kill so).
    pub async fn resumes(&self) -> bool {
        let mut ended = self.ended.clone();
        loop {
            if *ended.borrow_and_update() {
                return false;
            }
            if self.holds() {
                return true;
            }
            tokio::select! {
                changed = ended.changed() => if changed.is_err() {
                    return self.holds();
                },
                _ = tokio::time::sleep(std::time::Duration::from_millis(50)) => {}
            }
        }
    }

    /// A term that holds until `stop` turns true: an instance alone leads so, and tests run
    /// a receiver so.
    pub fn until(stop: watch::Receiver<bool>) -> Self {
        Self {
            epoch: 1,
            fence: None,
            cluster: Cluster::alone(),
            ended: stop,
        }
    }

    /// A receiver that turns true when the term ends (lost or shut down), for loops that
    /// stop on a `watch::Receiver<bool>`.
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.ended.clone()
    }
}

impl Cluster {
    /// An instance alone on its database: every claim is granted at once, and it leads from
    /// [`Cluster::run`]'s start to its stop.
    pub fn alone() -> Self {
        Self::new(None)
    }

    /// An instance among others on `store`, known to them as `holder` (unique per process
    /// start), with leases of `lease`.
    pub fn shared(store: Store, holder: String, lease: Duration) -> Self {
        Self::new(Some(Shared {
            store,
            holder,
            lease,
            base: Instant::now(),
            epoch: AtomicU64::new(0),
            lead_until: AtomicU64::new(0),
            instances: AtomicU32::new(1),
            held: Mutex::default(),
            claims_until: AtomicU64::new(0),
            last_lead: Mutex::default(),
        }))
    }

    fn new(shared: Option<Shared>) -> Self {
        Self {
            inner: Arc::new(Inner {
                contended: watch::channel(shared.is_none()).0,
                shared,
                term: watch::channel(None).0,
            }),
        }
    }

    /// This instance's name among the others; `None` when alone.
    pub fn holder(&self) -> Option<&str> {
        self.inner.shared.as_ref().map(|s| s.holder.as_str())
    }

    /// How many instances share the store, this one included, as last counted (every third
    /// of a lease; 1 alone, and until the first count).
    pub fn instances(&self) -> u32 {
        self.inner
            .shared
            .as_ref()
            .map_or(1, |s| s.instances.load(Ordering::SeqCst))
    }

    /// Whether this instance leads right now (alone, always).
    pub fn leads(&self) -> bool {
        match &self.inner.shared {
            None => true,
            Some(s) => {
                let epoch = s.epoch.load(Ordering::SeqCst);
                epoch != 0 && self.leads_in(epoch)
            }
        }
    }

    fn leads_in(&self, epoch: u64) -> bool {
        match &self.inner.shared {
            None => true,
            Some(s) => {
                s.epoch.load(Ordering::SeqCst) == epoch
                    && s.since_base() < s.lead_until.load(Ordering::SeqCst)
            }
        }
    }

    /// Returns once this instance has contended for the lead, so [`Cluster::leads`] says
    /// whether it won (at once, alone).
    pub async fn contended(&self) {
        let _ = self.inner.contended.subscribe().wait_for(|c| *c).await;
    }

    /// The terms this instance leads in, as they begin and end: `Some` while leading.
    pub fn terms(&self) -> watch::Receiver<Option<Term>> {
        self.inner.term.subscribe()
    }

    /// Waits until this instance holds the claim on `key`, and returns it; it is given back
    /// when dropped. Alone, at once. A key is claimed by one task of an instance at a time
    /// (a lane, a room's lock), so claims are not counted.
    pub async fn claim(&self, key: &str) -> Claim {
        let Some(shared) = &self.inner.shared else {
            return Claim {
                held: None,
                until: u64::MAX,
            };
        };
        let name = format!("{CLAIM_PREFIX}{key}");
        let mut wait = Duration::from_millis(10);
        loop {
            let sent = Instant::now();
            match shared
                .store
                .take_lease(&name, &shared.holder, shared.lease_ms())
                .await
            {
                Ok(Some(fence)) => {
                    shared
                        .held
                        .lock()
                        .expect("claims")
                        .insert(name, fence.epoch);
                    return Claim {
                        held: Some((self.inner.clone(), fence)),
                        until: shared.until(sent),
                    };
                }
                Ok(None) => {}
                Err(e) => tracing::warn!(claim = %name, error = %e, "claiming failed; retrying"),
            }
            tokio::time::sleep(wait).await;
            wait = (wait * 2).min(Duration::from_millis(250));
        }
    }

    /// Keeps this instance's claims alive and contends for the lead until `stop`, then ends
    /// the term it leads in (if any). Alone, leads from the start until `stop`. Call
    /// [`Cluster::leave`] once the work has stopped, to give everything up without waiting
    /// for it to expire.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) {
        let Some(shared) = &self.inner.shared else {
            self.inner
                .term
                .send_replace(Some(Term::until(stop.clone())));
            let _ = stop.wait_for(|s| *s).await;
            self.inner.term.send_replace(None);
            return;
        };
        let every = shared.lease / 3;
        let mut lead: Option<(Fence, watch::Sender<bool>)> = None;
        loop {
            let sent = Instant::now();
            shared.count_instances().await;
            shared.renew_claims().await;
            lead = match lead {
                None => {
                    let lead = self.try_to_lead(shared, sent).await;
                    self.inner.contended.send_replace(true);
                    lead
                }
                Some((fence, ended)) => {
                    match timed(shared, shared.store.renew_lease(&fence, shared.lease_ms())).await {
                        Ok(true) => {
                            shared
                                .lead_until
                                .store(shared.until(sent), Ordering::SeqCst);
                            Some((fence, ended))
                        }
                        Ok(false) => {
                            tracing::warn!(
                                epoch = fence.epoch,
                                "lost the lead: another instance holds it"
                            );
                            self.end_term(&ended);
                            None
                        }
                        Err(e) if !self.leads() => {
                            tracing::warn!(epoch = fence.epoch, error = %e, "lost the lead: could not renew it in time");
                            self.end_term(&ended);
                            None
                        }
                        Err(e) => {
                            tracing::warn!(epoch = fence.epoch, error = %e, "renewing the lead failed; retrying");
                            Some((fence, ended))
                        }
                    }
                }
            };
            // Wake when the next renewal is due, or when the lead runs out first (renewals
            // that keep failing), to end the term on time.
            let mut next = Instant::now() + every;
            if lead.is_some() {
                let until =
                    shared.base + Duration::from_millis(shared.lead_until.load(Ordering::SeqCst));
                next = next.min(until);
            }
            tokio::select! {
                _ = stop.wait_for(|s| *s) => break,
                _ = tokio::time::sleep_until(next) => {}
            }
            if let Some((fence, ended)) = &lead
                && !self.leads()
            {
                tracing::warn!(
                    epoch = fence.epoch,
                    "lost the lead: its time ran out before a renewal"
                );
                self.end_term(ended);
                lead = None;
            }
        }
        if let Some((_, ended)) = &lead {
            self.end_term(ended);
        }
    }

    async fn try_to_lead(
        &self,
        shared: &Shared,
        sent: Instant,
    ) -> Option<(Fence, watch::Sender<bool>)> {
        let take = shared
            .store
            .take_lease(LEADER_LEASE, &shared.holder, shared.lease_ms());
        match timed(shared, take).await {
            Ok(Some(fence)) => {
                let epoch = fence.epoch as u64;
                shared
                    .lead_until
                    .store(shared.until(sent), Ordering::SeqCst);
                shared.epoch.store(epoch, Ordering::SeqCst);
                *shared.last_lead.lock().expect("lead") = Some(fence.clone());
                let (ended_tx, ended) = watch::channel(false);
                tracing::info!(epoch, holder = %shared.holder, "leading");
                self.inner.term.send_replace(Some(Term {
                    epoch,
                    fence: Some(fence.clone()),
                    cluster: self.clone(),
                    ended,
                }));
                Some((fence, ended_tx))
            }
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "could not contend for the lead; retrying");
                None
            }
        }
    }

    fn end_term(&self, ended: &watch::Sender<bool>) {
        if let Some(shared) = &self.inner.shared {
            shared.epoch.store(0, Ordering::SeqCst);
            shared.lead_until.store(0, Ordering::SeqCst);
        }
        let _ = ended.send(true);
        self.inner.term.send_replace(None);
    }

    /// Gives up the lead and every claim at once (a clean stop), so other instances need not
    /// wait for them to expire. Call after the work has stopped.
    pub async fn leave(&self) {
        let Some(shared) = &self.inner.shared else {
            return;
        };
        for prefix in [CLAIM_PREFIX, PRESENCE_PREFIX] {
            if let Err(e) = shared.store.drop_leases_of(&shared.holder, prefix).await {
                tracing::warn!(error = %e, "could not give the claims up; they expire");
            }
        }
        let lead = shared.last_lead.lock().expect("lead").take();
        if let Some(fence) = lead
            && let Err(e) = shared.store.release_lease(&fence).await
        {
            tracing::warn!(error = %e, "could not give the lead up; it expires");
        }
    }
}

impl Shared {
    fn lease_ms(&self) -> i64 {
        self.lease.as_millis() as i64
    }

    fn since_base(&self) -> u64 {
        self.base.elapsed().as_millis() as u64
    }

    /// Until when a lease renewed by a request sent at `sent` holds, by this instance's
    /// clock: its length from the sending, less a fifth for the clocks' disagreement.
    fn until(&self, sent: Instant) -> u64 {
        let holds = self.lease - self.lease / 5;
        (sent + holds).duration_since(self.base).as_millis() as u64
    }

    /// Says this instance is live for another lease and counts the live ones, for the share
    /// of each platform's rate it keeps to (`bridge/pacing.rs`). Kept as it was while the
    /// store does not answer.
    async fn count_instances(&self) {
        let present = self
            .store
            .mark_present(PRESENCE_PREFIX, &self.holder, self.lease_ms());
        match timed(self, present).await {
            Ok(n) => {
                let before = self.instances.swap(n, Ordering::SeqCst);
                if before != n {
                    tracing::info!(instances = n, "instances live on this database");
                }
            }
            Err(e) => tracing::warn!(error = %e, "counting the live instances failed; retrying"),
        }
    }

    /// Pushes forward every claim held, in one statement; a claim that was not renewed was
    /// lost (its work ran past an expiry the renewals could not prevent, the store being
    /// away): said in the log, and forgotten.
    async fn renew_claims(&self) {
        if self.held.lock().expect("claims").is_empty() {
            return;
        }
        let sent = Instant::now();
        let renew = self
            .store
            .renew_leases_of(&self.holder, CLAIM_PREFIX, self.lease_ms());
        match timed(self, renew).await {
            Ok(renewed) => {
                self.claims_until.store(self.until(sent), Ordering::SeqCst);
                let renewed: HashSet<String> = renewed.into_iter().collect();
                self.held.lock().expect("claims").retain(|name, _| {
                    let kept = renewed.contains(name);
                    if !kept {
                        tracing::warn!(claim = %name, "a claim expired while held");
                    }
                    kept
                });
            }
            Err(e) => tracing::warn!(error = %e, "renewing the claims failed; retrying"),
        }
    }
}

/// A statement of the coordination loop, cut off at a third of a lease: a store that hangs
/// must not keep a leader from noticing its lead ran out.
async fn timed<T>(
    shared: &Shared,
    work: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, String> {
    match tokio::time::timeout(shared.lease / 3, work).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("the store did not answer in time".to_owned()),
    }
}

/// A claim held on a key until dropped.
pub struct Claim {
    held: Option<(Arc<Inner>, Fence)>,
    /// Until when (ms after the cluster's base) the take itself holds.
    until: u64,
}

impl Claim {
    /// Whether the claim still holds by this instance's clock (always, alone): taken or
    /// renewed recently enough, and not found lost by a renewal. Work asks before each step,
    /// so an instance that stalled past the claim's expiry (another may hold it now) stops
    /// and claims again.
    pub fn holds(&self) -> bool {
        let Some((inner, fence)) = &self.held else {
            return true;
        };
        let Some(shared) = &inner.shared else {
            return true;
        };
        let now = shared.since_base();
        let renewed = shared.claims_until.load(Ordering::SeqCst);
        shared.held.lock().expect("claims").get(&fence.name) == Some(&fence.epoch)
            && now < self.until.max(renewed)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let Some((inner, fence)) = self.held.take() else {
            return;
        };
        let Some(shared) = &inner.shared else {
            return;
        };
        {
            let mut held = shared.held.lock().expect("claims");
            if held.get(&fence.name) == Some(&fence.epoch) {
                held.remove(&fence.name);
            }
        }
        // Deleted in the background: a take by this instance since has a newer epoch and is
        // left alone. Without a runtime (shutting down) it expires instead.
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let store = shared.store.clone();
            runtime.spawn(async move {
                if let Err(e) = store.drop_lease(&fence).await {
                    tracing::debug!(claim = %fence.name, error = %e, "giving a claim up failed; it expires");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Epoch 1 of a shared cluster, as its term; how long its lead runs is set with
    /// [`set_lead`].
    async fn shared_term(dir: &std::path::Path) -> (Cluster, Term, watch::Sender<bool>) {
        let url = format!("sqlite://{}/c.db", dir.display());
        let store = Store::connect(&url).await.expect("store");
        let cluster = Cluster::shared(store, "a".into(), Duration::from_secs(10));
        let shared = cluster.inner.shared.as_ref().expect("shared");
        shared.epoch.store(1, Ordering::SeqCst);
        let (end, ended) = watch::channel(false);
        let term = Term {
            epoch: 1,
            fence: None,
            cluster: cluster.clone(),
            ended,
        };
        (cluster, term, end)
    }

    fn set_lead(cluster: &Cluster, for_ms: i64) {
        let shared = cluster.inner.shared.as_ref().expect("shared");
        let until = (shared.since_base() as i64 + for_ms).max(0) as u64;
        shared.lead_until.store(until, Ordering::SeqCst);
    }

    #[tokio::test]
    async fn a_term_that_stops_holding_is_resumed_once_its_renewal_goes_through() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cluster, term, _end) = shared_term(dir.path()).await;
        set_lead(&cluster, 60_000);
        assert!(term.resumes().await, "holds: at once");
        // The lead ran out by our clock while its renewal is still under way.
        set_lead(&cluster, -1);
        assert!(!term.holds());
        let waiting = tokio::spawn({
            let term = term.clone();
            async move { term.resumes().await }
        });
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(!waiting.is_finished(), "waits while the renewal decides");
        // It went through.
        set_lead(&cluster, 60_000);
        let resumed = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("resumed in time")
            .expect("no panic");
        assert!(resumed, "the term goes on: its receivers must not stop");
    }

    #[tokio::test]
    async fn a_term_that_stops_holding_and_ends_is_not_resumed() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (cluster, term, end) = shared_term(dir.path()).await;
        set_lead(&cluster, -1);
        let waiting = tokio::spawn({
            let term = term.clone();
            async move { term.resumes().await }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        end.send_replace(true);
        let resumed = tokio::time::timeout(Duration::from_secs(2), waiting)
            .await
            .expect("answered in time")
            .expect("no panic");
        assert!(!resumed, "the term ended: its receivers stop");
    }
}
