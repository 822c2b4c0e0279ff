//! Keeping the homeserver's transactions in order when Synapse strands one.
//!
//! Synapse numbers its appservice transactions from one sequence and stores each before sending
//! it. While an appservice counts as down, new transactions are only stored, and a recoverer
//! sends the stored ones oldest first. Its recovery has a race (Synapse 1.163,
//! `synapse/appservice/scheduler.py`): when it finds nothing more to send it marks the
//! appservice up, but a transaction stored between its last look and that mark is never sent.
//! The next transactions go out directly, and the stranded one waits for the next failure's
//! recoverer: its events arrive after newer ones, or never. The crash bursts
//! (`tests/e2e_chaos.rs`) saw it after Switchboard was killed (1924 and 1926 delivered, 1925
//! not). A Synapse killed in the middle of a send leaves one behind the same way.
//!
//! A numbered transaction that skips numbers may therefore follow a stranded one. Refusing it
//! makes Synapse start a recoverer, which sends the oldest stored transaction first: the
//! stranded one if there is one, then the refused one again. If the refused one comes back
//! first, nothing was stranded before it, and it is taken.
//!
//! The sequence is shared by every appservice of the homeserver, so with others beside us
//! numbers are skipped all the time. The first refused transaction that comes back as it was
//! shows that: from then on a skip is checked only once after each of our own failures (the
//! moments a strand can follow), and each check costs one recoverer delay (2 s in Synapse).
//! Transaction IDs that are not numbers (other homeservers) are taken as they come.

//!
//! Several instances behind one URL (issue 17) see the homeserver's transactions spread over
//! them, each a skip for the instance that gets it. They share the guard's state instead
//! ([`SharedOrder`], kept in the database by the bridge), so a transaction that follows the one
//! another instance recorded is taken, and a refused one is known to whichever instance it
//! comes back to.

use std::{collections::BTreeSet, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::server::SinkError;

/// How many refused transactions are remembered; a homeserver that never sends them back
/// (it gave up on them) must not make the set grow.
const REMEMBERED: usize = 64;

/// What to do with a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Record it.
    Take,
    /// Refuse it for now: it skips the numbers after `last`, and the homeserver may hold
    /// one of them back.
    HoldBack { last: u64 },
}

/// What the guard knows; shared by the instances behind one URL as JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderState {
    /// The highest numbered transaction recorded (as the homeserver numbers them).
    last: Option<u64>,
    /// Transactions refused for a skip and not recorded since.
    refused: BTreeSet<u64>,
    /// A refused transaction came back first: other appservices share the numbers.
    shared: bool,
    /// Whether the next skip is checked although the numbers are shared: after a failure of
    /// ours, until a check has been made.
    armed: bool,
}

impl Default for OrderState {
    fn default() -> Self {
        Self {
            last: None,
            refused: BTreeSet::new(),
            shared: false,
            // What happened before we started is unknown: check the first skip.
            armed: true,
        }
    }
}

impl OrderState {
    fn check(&mut self, n: u64) -> Verdict {
        let Some(last) = self.last else {
            return Verdict::Take;
        };
        // The next one, a resend, or a homeserver that restarted and numbers from lower
        // again (Synapse on SQLite reuses numbers): nothing skipped.
        if n <= last.saturating_add(1) {
            return Verdict::Take;
        }
        if self.refused.contains(&n) {
            // Sent again before anything lower: nothing of ours lies between, so the skipped
            // numbers are other appservices'.
            self.shared = true;
            self.armed = false;
            return Verdict::Take;
        }
        if self.shared && !self.armed {
            return Verdict::Take;
        }
        if self.refused.len() >= REMEMBERED {
            self.refused.clear();
        }
        self.refused.insert(n);
        Verdict::HoldBack { last }
    }

    fn recorded(&mut self, n: u64) {
        self.last = Some(n);
        self.refused.retain(|r| *r > n);
    }

    fn failed(&mut self) {
        self.armed = true;
    }
}

/// Where the instances behind one URL keep the guard's state (the bridge: a row of its
/// database). Synapse sends one transaction at a time, so a read and a write are enough: two
/// instances never decide on two transactions at once, bar a resend racing its original,
/// which costs at worst one needless refusal.
#[async_trait::async_trait]
pub trait SharedOrder: Send + Sync + 'static {
    /// The state last saved, `None` before the first save.
    async fn load(&self) -> Result<Option<OrderState>, SinkError>;
    async fn save(&self, state: &OrderState) -> Result<(), SinkError>;
}

/// Where [`TransactionOrder::update`] starts from when the state is shared.
enum Read {
    /// The shared state, read again.
    Shared,
    /// This instance's view, when it was read or written just before.
    Local,
}

/// The order guard of one appservice endpoint.
#[derive(Default)]
pub struct TransactionOrder {
    /// This instance's view: the whole state when alone, the last one read or written when
    /// shared (used only while the shared one cannot be read).
    local: tokio::sync::Mutex<OrderState>,
    shared: Option<Arc<dyn SharedOrder>>,
}

impl std::fmt::Debug for TransactionOrder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TransactionOrder")
            .field("shared", &self.shared.is_some())
            .finish_non_exhaustive()
    }
}

impl TransactionOrder {
    /// A guard whose state every instance behind the same URL shares.
    pub fn shared(store: Arc<dyn SharedOrder>) -> Self {
        Self {
            local: Default::default(),
            shared: Some(store),
        }
    }

    /// Whether to record transaction `txn_id` now.
    pub async fn check(&self, txn_id: &str) -> Verdict {
        let Ok(n) = txn_id.parse::<u64>() else {
            return Verdict::Take;
        };
        self.update(Read::Shared, |s| s.check(n)).await
    }

    /// Transaction `txn_id` was recorded.
    pub async fn recorded(&self, txn_id: &str) {
        let Ok(n) = txn_id.parse::<u64>() else {
            return;
        };
        // Read by the check just before, and no other transaction was decided since (the
        // homeserver sends one at a time): this instance's view is the shared state.
        self.update(Read::Local, |s| s.recorded(n)).await;
    }

    /// A transaction could not be recorded: the homeserver counts us as down and recovers,
    /// and the end of its recovery can strand a transaction.
    pub async fn failed(&self) {
        self.update(Read::Shared, OrderState::failed).await;
    }

    /// Applies `change` to the state: this instance's, or the shared one read, changed and
    /// saved (if it changed). A shared state that cannot be read or saved (the database is
    /// away) leaves this instance's view to decide: the transaction will most likely fail to
    /// be recorded anyway, and the worst a stale view does is one needless refusal or one
    /// skip taken unchecked.
    async fn update<T>(&self, read: Read, change: impl FnOnce(&mut OrderState) -> T) -> T {
        // One decision at a time in this instance (a resend may race its original).
        let mut local = self.local.lock().await;
        let Some(store) = &self.shared else {
            return change(&mut local);
        };
        let loaded = match read {
            Read::Shared => store.load().await,
            Read::Local => Ok(Some(local.clone())),
        };
        let mut state = match loaded {
            Ok(state) => state.unwrap_or_default(),
            Err(e) => {
                tracing::warn!(error = %e, "the shared transaction order could not be read; deciding on this instance's view");
                local.clone()
            }
        };
        let before = state.clone();
        let out = change(&mut state);
        if state != before
            && let Err(e) = store.save(&state).await
        {
            tracing::warn!(error = %e, "the shared transaction order could not be saved");
        }
        *local = state;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn take(order: &TransactionOrder, id: &str) {
        assert_eq!(order.check(id).await, Verdict::Take, "{id}");
        order.recorded(id).await;
    }

    #[tokio::test]
    async fn consecutive_resent_and_restarted_numbers_are_taken() {
        let order = TransactionOrder::default();
        for id in ["7", "8", "9", "9", "3", "4", "5"] {
            take(&order, id).await;
        }
    }

    #[tokio::test]
    async fn ids_that_are_not_numbers_are_taken_and_change_nothing() {
        let order = TransactionOrder::default();
        take(&order, "10").await;
        take(&order, "abc").await;
        take(&order, "").await;
        assert_eq!(order.check("12").await, Verdict::HoldBack { last: 10 });
    }

    #[tokio::test]
    async fn a_skip_waits_for_the_stranded_transaction() {
        let order = TransactionOrder::default();
        take(&order, "1924").await;
        // 1925 stranded; the refusal makes the homeserver recover, oldest first.
        assert_eq!(order.check("1926").await, Verdict::HoldBack { last: 1924 });
        // Sent directly before the homeserver marked us down: refused too.
        assert_eq!(order.check("1927").await, Verdict::HoldBack { last: 1924 });
        take(&order, "1925").await;
        take(&order, "1926").await;
        take(&order, "1927").await;
        // Numbers are not shared: every skip is checked, failure or not.
        assert_eq!(order.check("1930").await, Verdict::HoldBack { last: 1927 });
    }

    #[tokio::test]
    async fn shared_numbers_are_checked_once_after_each_failure() {
        let order = TransactionOrder::default();
        take(&order, "100").await;
        assert_eq!(order.check("105").await, Verdict::HoldBack { last: 100 });
        // It came back first: other appservices took 101 to 104.
        take(&order, "105").await;
        take(&order, "110").await;
        take(&order, "120").await;
        order.failed().await;
        assert_eq!(order.check("130").await, Verdict::HoldBack { last: 120 });
        take(&order, "130").await;
        take(&order, "140").await;
    }

    #[tokio::test]
    async fn the_refused_set_stays_small() {
        let order = TransactionOrder::default();
        take(&order, "1").await;
        for n in 0..1000u64 {
            assert!(matches!(
                order.check(&(3 + 2 * n).to_string()).await,
                Verdict::HoldBack { .. }
            ));
        }
        let s = order.local.lock().await;
        assert!(s.refused.len() <= REMEMBERED);
    }

    /// The shared state as the bridge keeps it (a row it reads and writes), and whether the
    /// database is away.
    #[derive(Default)]
    struct Row {
        json: std::sync::Mutex<Option<String>>,
        away: std::sync::atomic::AtomicBool,
    }

    #[async_trait::async_trait]
    impl SharedOrder for Row {
        async fn load(&self) -> Result<Option<OrderState>, SinkError> {
            if self.away.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(SinkError("the database is away".into()));
            }
            let json = self.json.lock().unwrap().clone();
            Ok(json.map(|j| serde_json::from_str(&j).expect("saved as JSON")))
        }

        async fn save(&self, state: &OrderState) -> Result<(), SinkError> {
            if self.away.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(SinkError("the database is away".into()));
            }
            *self.json.lock().unwrap() = Some(serde_json::to_string(state).expect("serialises"));
            Ok(())
        }
    }

    /// Two instances behind one URL sharing the state.
    fn pair(row: &Arc<Row>) -> [TransactionOrder; 2] {
        [
            TransactionOrder::shared(row.clone()),
            TransactionOrder::shared(row.clone()),
        ]
    }

    #[tokio::test]
    async fn instances_sharing_the_state_take_transactions_spread_over_them() {
        let row = Arc::new(Row::default());
        let [a, b] = pair(&row);
        for n in 1..=20u64 {
            // Round robin: each instance sees every other number.
            take(if n % 2 == 1 { &a } else { &b }, &n.to_string()).await;
        }
        // Without the shared state each would refuse the other's every second number.
        let (c, d) = (TransactionOrder::default(), TransactionOrder::default());
        take(&c, "1").await;
        take(&d, "2").await;
        assert_eq!(c.check("3").await, Verdict::HoldBack { last: 1 });
    }

    #[tokio::test]
    async fn a_transaction_refused_by_one_instance_is_known_to_the_other() {
        let row = Arc::new(Row::default());
        let [a, b] = pair(&row);
        take(&a, "1924").await;
        // 1925 stranded: a refuses 1926, and the homeserver's recoverer sends 1925 to b, then
        // 1926 to a.
        assert_eq!(b.check("1926").await, Verdict::HoldBack { last: 1924 });
        take(&a, "1925").await;
        take(&b, "1926").await;
        // Shared numbers found by one instance hold for the other: 1930 was refused by a and
        // came back first to b.
        assert_eq!(a.check("1930").await, Verdict::HoldBack { last: 1926 });
        take(&b, "1930").await;
        take(&a, "1935").await;
        // A failure on b arms the check for a.
        b.failed().await;
        assert_eq!(a.check("1940").await, Verdict::HoldBack { last: 1935 });
    }

    #[tokio::test]
    async fn a_shared_state_that_cannot_be_read_leaves_the_instance_its_own_view() {
        let row = Arc::new(Row::default());
        let [a, _] = pair(&row);
        take(&a, "10").await;
        row.away.store(true, std::sync::atomic::Ordering::SeqCst);
        take(&a, "11").await;
        assert_eq!(a.check("13").await, Verdict::HoldBack { last: 11 });
        row.away.store(false, std::sync::atomic::Ordering::SeqCst);
        // Back, the row decides again. It still says 10 (11 was recorded while it could not
        // be saved; in practice the record itself would have failed with the database away),
        // so 12 is a skip, refused once; the homeserver then sends 11 again, and 12 after it.
        assert_eq!(a.check("12").await, Verdict::HoldBack { last: 10 });
        take(&a, "11").await;
        take(&a, "12").await;
    }
}
