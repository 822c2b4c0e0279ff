//! Pacing of everything the bridge sends to responders' platforms, at the rates each
//! connector declares in its [`Capabilities`]: at most one message per `min_interval_per_chat`
//! to one address, and at most `max_messages_per_second` across all addresses of a platform.
//!
//! Every message counts the same: the parts of a long visitor message, notices, offers and
//! edits of offers. Sending is a reservation of the next free slot of the chat (and of the
//! platform), so the outbox, which must not wait, can ask whether a slot is free now and
//! leave the part for a later pass, while a notice reserves the earliest slot and waits for
//! it. Times are unix milliseconds passed in by the caller, so the rules are tested at fixed
//! instants. In memory on purpose: after a restart pacing simply starts afresh.
//!
//! With several instances on one database (`cluster.rs`) each paces what it sends itself, at
//! its share of a platform's rate: `max_messages_per_second` divided among the instances live
//! now (the cluster counts them every third of a lease), so together they stay within the
//! platform's limit without asking each other per message. A chat is sent to by one instance
//! at a time (its lane's claim), so the per-chat interval needs no sharing; only the first
//! message after a claim moved may come early, and a platform that minds answers it with a
//! 429, which is waited out like any other.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use super::Bridge;
use crate::connector::{Capabilities, Connector, Platform};

/// Above this many remembered chats, the ones whose slot is free again are forgotten.
const PRUNE_ABOVE: usize = 1024;

pub(super) struct Pacer {
    // A std mutex: it is held for a few map operations and never across an await.
    slots: Mutex<Slots>,
    /// How many instances share each platform's rate now (1 alone).
    instances: Box<dyn Fn() -> u32 + Send + Sync>,
}

impl Default for Pacer {
    fn default() -> Self {
        Self::shared(|| 1)
    }
}

#[derive(Default)]
struct Slots {
    /// The earliest time the next message may go to each (platform, address).
    chats: HashMap<(Platform, String), i64>,
    /// The earliest time the next message may go anywhere on each platform.
    platforms: HashMap<Platform, i64>,
}

impl Slots {
    /// When a message to this chat could go, at the earliest from `now`.
    fn free_at(&self, platform: Platform, address: &str, now: i64) -> i64 {
        let chat = self
            .chats
            .get(&(platform, address.to_owned()))
            .copied()
            .unwrap_or(i64::MIN);
        let global = self.platforms.get(&platform).copied().unwrap_or(i64::MIN);
        now.max(chat).max(global)
    }

    /// Takes the slot at `at`: the chat's and the platform's next slots move past it, the
    /// platform's by this instance's share of its rate (one of `instances`).
    fn take(
        &mut self,
        platform: Platform,
        address: &str,
        caps: &Capabilities,
        at: i64,
        instances: u32,
    ) {
        let per_chat = caps.min_interval_per_chat.as_millis() as i64;
        if per_chat > 0 {
            if self.chats.len() > PRUNE_ABOVE {
                self.chats.retain(|_, next| *next > at);
            }
            self.chats
                .insert((platform, address.to_owned()), at + per_chat);
        }
        if let Some(rate) = caps.max_messages_per_second.filter(|r| *r > 0) {
            // Rounded up, so the rate is never exceeded.
            let spacing = (1000 * u64::from(instances.max(1))).div_ceil(u64::from(rate)) as i64;
            self.platforms.insert(platform, at + spacing);
        }
    }
}

impl Pacer {
    /// A pacer whose platform rates are shared by `instances()` instances, asked at each
    /// message.
    pub(super) fn shared(instances: impl Fn() -> u32 + Send + Sync + 'static) -> Self {
        Self {
            slots: Mutex::default(),
            instances: Box::new(instances),
        }
    }

    /// Takes the slot for one message to `address` if it is free at `now`, and returns
    /// `Ok`; otherwise takes nothing and returns when it will be free. For the outbox, which
    /// must not wait while other chats have work.
    pub(super) fn try_take(
        &self,
        platform: Platform,
        address: &str,
        caps: &Capabilities,
        now: i64,
    ) -> Result<(), i64> {
        let mut slots = self.slots.lock().expect("not poisoned");
        let at = slots.free_at(platform, address, now);
        if at > now {
            return Err(at);
        }
        slots.take(platform, address, caps, now, (self.instances)());
        Ok(())
    }

    /// Reserves the earliest free slot for one message to `address` and returns when it is
    /// (`now` or later); the caller waits until then and sends. For notices and offers, which
    /// may wait their turn. A slot later than `latest` is not reserved: `None`.
    pub(super) fn reserve_by(
        &self,
        platform: Platform,
        address: &str,
        caps: &Capabilities,
        now: i64,
        latest: i64,
    ) -> Option<i64> {
        let mut slots = self.slots.lock().expect("not poisoned");
        let at = slots.free_at(platform, address, now);
        if at > latest {
            return None;
        }
        slots.take(platform, address, caps, at, (self.instances)());
        Some(at)
    }

    /// The platform asked us not to send to `address` before `until` (a 429's
    /// `retry_after`): nothing else is sent there before then either.
    pub(super) fn hold(&self, platform: Platform, address: &str, until: i64) {
        let mut slots = self.slots.lock().expect("not poisoned");
        let next = slots
            .chats
            .entry((platform, address.to_owned()))
            .or_insert(until);
        *next = (*next).max(until);
    }
}

/// The longest a chat's lane waits for its next paced slot before leaving the row for later.
const MAX_PACING_WAIT: Duration = Duration::from_secs(2);

/// How long a service message to a responder may wait for pacing and retries.
pub(super) const NOTICE_PATIENCE: Duration = Duration::from_secs(5);

/// Where the bridge waits its turn: the outbox's lanes and the messages sent at once.
impl Bridge {
    /// Takes this chat's next paced slot, waiting for it here if it comes soon; `Err(at)`:
    /// not before `at` (unix ms), so the row is left for then.
    pub(super) async fn paced_slot(
        &self,
        platform: Platform,
        address: &str,
        caps: &Capabilities,
    ) -> Result<(), i64> {
        let now = self.now_ms();
        if let Err(free_at) = self.pacer.try_take(platform, address, caps, now) {
            let latest = now + MAX_PACING_WAIT.as_millis() as i64;
            let Some(at) = self.pacer.reserve_by(platform, address, caps, now, latest) else {
                return Err(free_at);
            };
            // The chat's own slot, reserved: waiting here holds up only this chat. Once
            // the wait is over the slot is ours, without asking the clock again (a
            // test's clock that stands still would otherwise keep us waiting).
            tokio::time::sleep(Duration::from_millis((at - now).max(0) as u64)).await;
        }
        Ok(())
    }

    /// Waits for the next free slot of this chat on the connector's platform: for notices,
    /// offers and edits of offers, which are sent at once rather than queued (the outbox's
    /// rows take their slot with `paced_slot`). The caller's lane waits here, holding up only
    /// its own chat or room, and never longer than `NOTICE_PATIENCE`: a chat held longer
    /// (after a 429 with a long `retry_after`) is sent to at once, and the platform's refusal
    /// is handled as it was before pacing.
    pub(super) async fn wait_turn(&self, connector: &dyn Connector, address: &str) {
        let now = self.now_ms();
        let latest = now + NOTICE_PATIENCE.as_millis() as i64;
        let platform = connector.platform();
        let caps = connector.capabilities();
        match self.pacer.reserve_by(platform, address, &caps, now, latest) {
            Some(at) if at > now => {
                tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
            }
            Some(_) => {}
            None => tracing::debug!(
                platform = platform.as_str(),
                "chat busy past our patience; sending anyway"
            ),
        }
    }

    /// Runs `send`, one message (or edit) to `address` on the connector's platform, in that
    /// chat's turn. `send` is a future not yet polled, so nothing is sent before the turn.
    pub(super) async fn in_turn<T>(
        &self,
        connector: &dyn Connector,
        address: &str,
        send: impl std::future::Future<Output = T>,
    ) -> T {
        self.wait_turn(connector, address).await;
        send.await
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const TELEGRAM: Capabilities = Capabilities {
        min_interval_per_chat: Duration::from_secs(1),
        max_messages_per_second: Some(30),
        call_timeout: Duration::from_secs(30),
        ..Capabilities::unpaced('/')
    };
    const T0: i64 = 1_700_000_000_000;

    #[test]
    fn one_message_per_interval_per_chat_whatever_kind_it_is() {
        let p = Pacer::default();
        // A part of a long message goes now; the next part of it must wait a second.
        assert_eq!(
            p.try_take(Platform::parse("telegram").unwrap(), "7", &TELEGRAM, T0),
            Ok(())
        );
        assert_eq!(
            p.try_take(
                Platform::parse("telegram").unwrap(),
                "7",
                &TELEGRAM,
                T0 + 10
            ),
            Err(T0 + 1000)
        );
        // A notice to the same chat queues behind it, and the next part behind the notice.
        assert_eq!(
            p.reserve_by(
                Platform::parse("telegram").unwrap(),
                "7",
                &TELEGRAM,
                T0 + 20,
                i64::MAX
            ),
            Some(T0 + 1000)
        );
        assert_eq!(
            p.try_take(
                Platform::parse("telegram").unwrap(),
                "7",
                &TELEGRAM,
                T0 + 1000
            ),
            Err(T0 + 2000)
        );
        assert_eq!(
            p.try_take(
                Platform::parse("telegram").unwrap(),
                "7",
                &TELEGRAM,
                T0 + 2000
            ),
            Ok(())
        );
    }

    #[test]
    fn other_chats_only_keep_to_the_platform_wide_rate() {
        let p = Pacer::default();
        assert_eq!(
            p.try_take(Platform::parse("telegram").unwrap(), "7", &TELEGRAM, T0),
            Ok(())
        );
        // 30 per second: the next chat waits 34 ms, not a second.
        assert_eq!(
            p.try_take(Platform::parse("telegram").unwrap(), "8", &TELEGRAM, T0),
            Err(T0 + 34)
        );
        assert_eq!(
            p.try_take(
                Platform::parse("telegram").unwrap(),
                "8",
                &TELEGRAM,
                T0 + 34
            ),
            Ok(())
        );
        assert_eq!(
            p.reserve_by(
                Platform::parse("telegram").unwrap(),
                "9",
                &TELEGRAM,
                T0 + 34,
                i64::MAX
            ),
            Some(T0 + 68)
        );
    }

    /// Two instances live: each keeps to half the platform's rate, and follows the count
    /// as instances come and go.
    #[test]
    fn instances_share_the_platform_wide_rate() {
        let live = std::sync::Arc::new(std::sync::atomic::AtomicU32::new(2));
        let p = Pacer::shared({
            let live = live.clone();
            move || live.load(std::sync::atomic::Ordering::SeqCst)
        });
        let tg = Platform::parse("telegram").unwrap();
        assert_eq!(p.try_take(tg, "7", &TELEGRAM, T0), Ok(()));
        // 15 per second here (and 15 at the other instance): 67 ms apart, not 34.
        assert_eq!(p.try_take(tg, "8", &TELEGRAM, T0 + 34), Err(T0 + 67));
        assert_eq!(p.try_take(tg, "8", &TELEGRAM, T0 + 67), Ok(()));
        // The other instance stopped: the whole rate again.
        live.store(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(
            p.reserve_by(tg, "9", &TELEGRAM, T0 + 67, i64::MAX),
            Some(T0 + 134)
        );
        assert_eq!(
            p.reserve_by(tg, "10", &TELEGRAM, T0 + 134, i64::MAX),
            Some(T0 + 168)
        );
    }

    #[test]
    fn an_unpaced_platform_never_waits() {
        let p = Pacer::default();
        for i in 0..100 {
            assert_eq!(
                p.try_take(
                    Platform::parse("matrix").unwrap(),
                    "@sam:x",
                    &Capabilities::unpaced('!'),
                    T0
                ),
                Ok(()),
                "message {i}"
            );
            assert_eq!(
                p.reserve_by(
                    Platform::parse("matrix").unwrap(),
                    "@sam:x",
                    &Capabilities::unpaced('!'),
                    T0,
                    i64::MAX
                ),
                Some(T0)
            );
        }
        // Pacing one platform does not slow another down at the same address.
        assert_eq!(
            p.try_take(Platform::parse("telegram").unwrap(), "7", &TELEGRAM, T0),
            Ok(())
        );
        assert_eq!(
            p.try_take(
                Platform::parse("matrix").unwrap(),
                "7",
                &Capabilities::unpaced('!'),
                T0
            ),
            Ok(())
        );
    }

    #[test]
    fn a_slot_past_the_callers_patience_is_not_reserved() {
        let p = Pacer::default();
        p.hold(Platform::parse("telegram").unwrap(), "7", T0 + 30_000);
        assert_eq!(
            p.reserve_by(
                Platform::parse("telegram").unwrap(),
                "7",
                &TELEGRAM,
                T0,
                T0 + 5000
            ),
            None
        );
        // Nothing was taken: the chat is free right after the hold, not a second later.
        assert_eq!(
            p.try_take(
                Platform::parse("telegram").unwrap(),
                "7",
                &TELEGRAM,
                T0 + 30_000
            ),
            Ok(())
        );
    }

    #[test]
    fn a_retry_after_holds_the_chat() {
        let p = Pacer::default();
        p.hold(Platform::parse("telegram").unwrap(), "7", T0 + 5000);
        assert_eq!(
            p.try_take(
                Platform::parse("telegram").unwrap(),
                "7",
                &TELEGRAM,
                T0 + 1000
            ),
            Err(T0 + 5000)
        );
        assert_eq!(
            p.reserve_by(
                Platform::parse("telegram").unwrap(),
                "7",
                &TELEGRAM,
                T0 + 1000,
                i64::MAX
            ),
            Some(T0 + 5000)
        );
        // A hold never shortens a wait already reserved.
        p.hold(Platform::parse("telegram").unwrap(), "7", T0 + 10);
        assert_eq!(
            p.try_take(
                Platform::parse("telegram").unwrap(),
                "7",
                &TELEGRAM,
                T0 + 5500
            ),
            Err(T0 + 6000)
        );
    }
}
