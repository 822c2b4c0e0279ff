//! Wall-clock time, injected: every timestamp the bridge writes or compares (offer
//! deadlines, retry times, last activity, dead letters, session expiry, working hours) is read
//! from a [`Clock`] it was given, never from the system directly, so a test can set the time
//! and move it instead of sleeping.
//!
//! The store holds the clock ([`crate::Store::with_clock`]; [`crate::Store::connect`] uses
//! [`SystemClock`]) and the bridge reads the time of the store it was given, so what is
//! written and what it is compared with can never come from two different clocks. The
//! health handle takes one too ([`crate::health::Health::with_clock`]).
//!
//! Timers are not the clock's business: sleeps and intervals stay tokio's (whose paused time
//! is what tests use for them). A [`ManualClock`] does not move when tokio's time does: a test
//! that runs the background loops with a manual clock advances it itself.

use std::{
    sync::{
        Arc,
        atomic::{AtomicI64, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, Utc};

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// Milliseconds since the Unix epoch: what the store writes and compares with.
    fn now_ms(&self) -> i64;

    /// The same instant as a date and time (routing's working hours).
    fn now_utc(&self) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(self.now_ms()).unwrap_or_default()
    }
}

/// The handle the store, the bridge and the health report share. Cloning is cheap.
pub type SharedClock = Arc<dyn Clock>;

/// So a [`SharedClock`] can be handed on wherever an `impl Clock` is asked for.
impl<C: Clock + ?Sized> Clock for Arc<C> {
    fn now_ms(&self) -> i64 {
        (**self).now_ms()
    }
}

/// The system's clock: production's.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or_default()
    }
}

/// A clock that stands still until it is set or advanced: for tests (of this crate and of
/// the others, hence public). Clones share the time, so a test keeps one and hands another
/// to the store.
#[derive(Debug, Clone)]
pub struct ManualClock {
    ms: Arc<AtomicI64>,
}

impl ManualClock {
    /// A clock showing `start_ms` (milliseconds since the Unix epoch).
    pub fn new(start_ms: i64) -> Self {
        Self {
            ms: Arc::new(AtomicI64::new(start_ms)),
        }
    }

    /// Shows `ms` from now on (it may go backwards, as a wall clock can).
    pub fn set(&self, ms: i64) {
        self.ms.store(ms, Ordering::SeqCst);
    }

    /// Moves the clock forward by `by`.
    pub fn advance(&self, by: Duration) {
        let by = i64::try_from(by.as_millis()).unwrap_or(i64::MAX);
        self.ms.fetch_add(by, Ordering::SeqCst);
    }

    /// This clock as the shared handle the store and the health report take.
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> i64 {
        self.ms.load(Ordering::SeqCst)
    }
}

/// The system clock as a shared handle.
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_its_clones_move_with_it() {
        let clock = ManualClock::new(1_700_000_000_000);
        let shared = clock.shared();
        assert_eq!(shared.now_ms(), 1_700_000_000_000);
        clock.advance(Duration::from_secs(90));
        assert_eq!(shared.now_ms(), 1_700_000_090_000);
        clock.set(5);
        assert_eq!(shared.now_ms(), 5);
        assert_eq!(
            ManualClock::new(1_717_243_200_000).now_utc().to_rfc3339(),
            "2024-06-01T12:00:00+00:00"
        );
    }

    #[test]
    fn the_system_clock_reads_the_time_of_day() {
        let before = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let now = system().now_ms();
        assert!((before..before + 60_000).contains(&now), "{now}");
    }
}
