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

use std::{collections::BTreeSet, sync::Mutex};

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

#[derive(Debug)]
struct State {
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

/// The order guard of one appservice endpoint.
#[derive(Debug)]
pub struct TransactionOrder {
    state: Mutex<State>,
}

impl Default for TransactionOrder {
    fn default() -> Self {
        Self {
            state: Mutex::new(State {
                last: None,
                refused: BTreeSet::new(),
                shared: false,
                // What happened before we started is unknown: check the first skip.
                armed: true,
            }),
        }
    }
}

impl TransactionOrder {
    /// Whether to record transaction `txn_id` now.
    pub fn check(&self, txn_id: &str) -> Verdict {
        let Ok(n) = txn_id.parse::<u64>() else {
            return Verdict::Take;
        };
        let mut s = self.state.lock().expect("transaction order lock");
        let Some(last) = s.last else {
            return Verdict::Take;
        };
        // The next one, a resend, or a homeserver that restarted and numbers from lower
        // again (Synapse on SQLite reuses numbers): nothing skipped.
        if n <= last.saturating_add(1) {
            return Verdict::Take;
        }
        if s.refused.contains(&n) {
            // Sent again before anything lower: nothing of ours lies between, so the skipped
            // numbers are other appservices'.
            s.shared = true;
            s.armed = false;
            return Verdict::Take;
        }
        if s.shared && !s.armed {
            return Verdict::Take;
        }
        if s.refused.len() >= REMEMBERED {
            s.refused.clear();
        }
        s.refused.insert(n);
        Verdict::HoldBack { last }
    }

    /// Transaction `txn_id` was recorded.
    pub fn recorded(&self, txn_id: &str) {
        let Ok(n) = txn_id.parse::<u64>() else {
            return;
        };
        let mut s = self.state.lock().expect("transaction order lock");
        s.last = Some(n);
        s.refused.retain(|r| *r > n);
    }

    /// A transaction could not be recorded: the homeserver counts us as down and recovers,
    /// and the end of its recovery can strand a transaction.
    pub fn failed(&self) {
        self.state.lock().expect("transaction order lock").armed = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn take(order: &TransactionOrder, id: &str) {
        assert_eq!(order.check(id), Verdict::Take, "{id}");
        order.recorded(id);
    }

    #[test]
    fn consecutive_resent_and_restarted_numbers_are_taken() {
        let order = TransactionOrder::default();
        for id in ["7", "8", "9", "9", "3", "4", "5"] {
            take(&order, id);
        }
    }

    #[test]
    fn ids_that_are_not_numbers_are_taken_and_change_nothing() {
        let order = TransactionOrder::default();
        take(&order, "10");
        take(&order, "abc");
        take(&order, "");
        assert_eq!(order.check("12"), Verdict::HoldBack { last: 10 });
    }

    #[test]
    fn a_skip_waits_for_the_stranded_transaction() {
        let order = TransactionOrder::default();
        take(&order, "1924");
        // 1925 stranded; the refusal makes the homeserver recover, oldest first.
        assert_eq!(order.check("1926"), Verdict::HoldBack { last: 1924 });
        // Sent directly before the homeserver marked us down: refused too.
        assert_eq!(order.check("1927"), Verdict::HoldBack { last: 1924 });
        take(&order, "1925");
        take(&order, "1926");
        take(&order, "1927");
        // Numbers are not shared: every skip is checked, failure or not.
        assert_eq!(order.check("1930"), Verdict::HoldBack { last: 1927 });
    }

    #[test]
    fn shared_numbers_are_checked_once_after_each_failure() {
        let order = TransactionOrder::default();
        take(&order, "100");
        assert_eq!(order.check("105"), Verdict::HoldBack { last: 100 });
        // It came back first: other appservices took 101 to 104.
        take(&order, "105");
        take(&order, "110");
        take(&order, "120");
        order.failed();
        assert_eq!(order.check("130"), Verdict::HoldBack { last: 120 });
        take(&order, "130");
        take(&order, "140");
    }

    #[test]
    fn the_refused_set_stays_small() {
        let order = TransactionOrder::default();
        take(&order, "1");
        for n in 0..1000u64 {
            assert!(matches!(
                order.check(&(3 + 2 * n).to_string()),
                Verdict::HoldBack { .. }
            ));
        }
        let s = order.state.lock().unwrap();
        assert!(s.refused.len() <= REMEMBERED);
    }
}
