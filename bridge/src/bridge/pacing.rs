//! Pacing of everything the bridge sends to responders' platforms, at the rates each
//! connector declares in its [`Capabilities`]: at most one message per `min_interval_per_chat`
//! to one address, and at most `max_messages_per_second` across all addresses of a platform.
//!
//! Every message counts the same: the parts of a long visitor message, notices, offers and
//! edits of offers. A message first reserves its chat's next free slot (which may be in the
//! future: the chat's lane waits for it, holding up only that chat), and then, once that slot
//! has come, takes the platform's next turn, a few milliseconds apart at most. The platform's
//! turn is taken at the moment of sending and never reserved ahead: a turn reserved for a chat
//! that must wait its second would hold up every other chat of the platform meanwhile, which
//! is what a soak of 500 conversations showed (every message to a Telegram responder waited
//! about 0.7 s on average while each chat was busy a third of the time). Times are unix
//! milliseconds passed in by the caller, so the rules are tested at fixed instants. In memory
//! on purpose: after a restart pacing simply starts afresh.
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

impl Pacer {
    /// A pacer whose platform rates are shared by `instances()` instances, asked at each
    /// message.
    pub(super) fn shared(instances: impl Fn() -> u32 + Send + Sync + 'static) -> Self {
        Self {
            slots: Mutex::default(),
            instances: Box::new(instances),
        }
    }

    /// Reserves the earliest free slot of this chat, `now` or later, and returns it: the
    /// caller waits until then and takes the platform's turn ([`Self::platform_turn`]). A slot
    /// later than `latest` is not reserved: `Err` says when the chat is free.
    pub(super) fn reserve_chat(
        &self,
        platform: Platform,
        address: &str,
        caps: &Capabilities,
        now: i64,
        latest: i64,
    ) -> Result<i64, i64> {
        let mut slots = self.slots.lock().expect("not poisoned");
        let key = (platform, address.to_owned());
        let at = now.max(slots.chats.get(&key).copied().unwrap_or(i64::MIN));
        if at > latest {
            return Err(at);
        }
        let per_chat = caps.min_interval_per_chat.as_millis() as i64;
        if per_chat > 0 {
            if slots.chats.len() > PRUNE_ABOVE {
                slots.chats.retain(|_, next| *next > now);
            }
            slots.chats.insert(key, at + per_chat);
        }
        Ok(at)
    }

    /// Takes the platform's next turn for a message going at `at` (now, for the caller) and
    /// returns it: `at`, or a little later while other chats' messages take the turns before.
    pub(super) fn platform_turn(&self, platform: Platform, caps: &Capabilities, at: i64) -> i64 {
        let Some(rate) = caps.max_messages_per_second.filter(|r| *r > 0) else {
            return at;
        };
        let mut slots = self.slots.lock().expect("not poisoned");
        let turn = at.max(slots.platforms.get(&platform).copied().unwrap_or(i64::MIN));
        // This instance's share of the rate, rounded up so the rate is never exceeded.
        let instances = u64::from((self.instances)().max(1));
        let spacing = (1000 * instances).div_ceil(u64::from(rate)) as i64;
        slots.platforms.insert(platform, turn + spacing);
        turn
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
    /// Waits for this chat's next paced slot if it comes within `patience`, then for the
    /// platform's turn; `Err(at)`: the chat is not free before `at` (unix ms), and nothing
    /// was taken or waited for. Waiting here holds up only the caller's lane.
    async fn take_turn(
        &self,
        platform: Platform,
        address: &str,
        caps: &Capabilities,
        patience: Duration,
    ) -> Result<(), i64> {
        let now = self.now_ms();
        let latest = now + patience.as_millis() as i64;
        let at = self
            .pacer
            .reserve_chat(platform, address, caps, now, latest)?;
        sleep_ms(at - now).await;
        // Once the wait is over it is `at`, without asking the clock again (a test's clock
        // that stands still would otherwise keep us waiting).
        let turn = self.pacer.platform_turn(platform, caps, at);
        sleep_ms(turn - at).await;
        crate::metrics::pacing_wait(
            platform.as_str(),
            Duration::from_millis((turn - now) as u64),
        );
        Ok(())
    }

    /// Takes this chat's next paced slot, waiting for it here if it comes soon; `Err(at)`:
    /// not before `at` (unix ms), so the row is left for then.
    pub(super) async fn paced_slot(
        &self,
        platform: Platform,
        address: &str,
        caps: &Capabilities,
    ) -> Result<(), i64> {
        self.take_turn(platform, address, caps, MAX_PACING_WAIT)
            .await
    }

    /// Waits for the next free slot of this chat on the connector's platform: for notices,
    /// offers and edits of offers, which are sent at once rather than queued (the outbox's
    /// rows take their slot with `paced_slot`). The caller's lane waits here, holding up only
    /// its own chat or room, and never longer than `NOTICE_PATIENCE`: a chat held longer
    /// (after a 429 with a long `retry_after`) is sent to at once, and the platform's refusal
    /// is handled as it was before pacing.
    pub(super) async fn wait_turn(&self, connector: &dyn Connector, address: &str) {
        let platform = connector.platform();
        let caps = connector.capabilities();
        if self
            .take_turn(platform, address, &caps, NOTICE_PATIENCE)
            .await
            .is_err()
        {
            tracing::debug!(
                platform = platform.as_str(),
                "chat busy past our patience; sending anyway"
            );
            let now = self.now_ms();
            sleep_ms(self.pacer.platform_turn(platform, &caps, now) - now).await;
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

async fn sleep_ms(ms: i64) {
    if ms > 0 {
        tokio::time::sleep(Duration::from_millis(ms as u64)).await;
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

    fn tg() -> Platform {
        Platform::parse("telegram").unwrap()
    }

    /// The chat's slot if it is free at `now`, without waiting.
    fn now_or_never(p: &Pacer, chat: &str, now: i64) -> Result<i64, i64> {
        p.reserve_chat(tg(), chat, &TELEGRAM, now, now)
    }

    #[test]
    fn one_message_per_interval_per_chat_whatever_kind_it_is() {
        let p = Pacer::default();
        // A part of a long message goes now; the next part of it must wait a second.
        assert_eq!(now_or_never(&p, "7", T0), Ok(T0));
        assert_eq!(now_or_never(&p, "7", T0 + 10), Err(T0 + 1000));
        // A notice to the same chat queues behind it, and the next part behind the notice.
        assert_eq!(
            p.reserve_chat(tg(), "7", &TELEGRAM, T0 + 20, i64::MAX),
            Ok(T0 + 1000)
        );
        assert_eq!(now_or_never(&p, "7", T0 + 1000), Err(T0 + 2000));
        assert_eq!(now_or_never(&p, "7", T0 + 2000), Ok(T0 + 2000));
    }

    #[test]
    fn other_chats_only_keep_to_the_platform_wide_rate() {
        let p = Pacer::default();
        // 30 per second: the next chat's message goes 34 ms later, not a second.
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0), T0);
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0), T0 + 34);
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0 + 34), T0 + 68);
        // Forty chats at once: never more than thirty in any second.
        let turns: Vec<i64> = (0..40)
            .map(|_| p.platform_turn(tg(), &TELEGRAM, T0 + 5000))
            .collect();
        for (i, t) in turns.iter().enumerate() {
            let in_second = turns[i..].iter().filter(|u| **u < t + 1000).count();
            assert!(in_second <= 30, "{in_second} turns within a second of {t}");
        }
    }

    /// A chat waiting for its next slot has reserved it, but not the platform's turn: the
    /// other chats go meanwhile. (Reserving the platform's turn with the chat's slot made
    /// every chat wait for the busiest one.)
    #[test]
    fn a_chat_waiting_for_its_slot_holds_up_no_other_chat() {
        let p = Pacer::default();
        assert_eq!(now_or_never(&p, "7", T0), Ok(T0));
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0), T0);
        // Chat 7's next message waits for its second.
        assert_eq!(
            p.reserve_chat(tg(), "7", &TELEGRAM, T0 + 10, i64::MAX),
            Ok(T0 + 1000)
        );
        // Chat 8 goes now.
        assert_eq!(now_or_never(&p, "8", T0 + 50), Ok(T0 + 50));
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0 + 50), T0 + 50);
        // And chat 7 at its slot.
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0 + 1000), T0 + 1000);
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
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0), T0);
        // 15 per second here (and 15 at the other instance): 67 ms apart, not 34.
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0 + 34), T0 + 67);
        // The other instance stopped: the whole rate again.
        live.store(1, std::sync::atomic::Ordering::SeqCst);
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0 + 67), T0 + 134);
        assert_eq!(p.platform_turn(tg(), &TELEGRAM, T0 + 134), T0 + 168);
    }

    #[test]
    fn an_unpaced_platform_never_waits() {
        let p = Pacer::default();
        let (matrix, unpaced) = (
            Platform::parse("matrix").unwrap(),
            Capabilities::unpaced('!'),
        );
        for i in 0..100 {
            assert_eq!(
                p.reserve_chat(matrix, "@sam:x", &unpaced, T0, T0),
                Ok(T0),
                "message {i}"
            );
            assert_eq!(p.platform_turn(matrix, &unpaced, T0), T0, "message {i}");
        }
        // Pacing one platform does not slow another down at the same address.
        assert_eq!(now_or_never(&p, "7", T0), Ok(T0));
        assert_eq!(p.reserve_chat(matrix, "7", &unpaced, T0, T0), Ok(T0));
    }

    #[test]
    fn a_slot_past_the_callers_patience_is_not_reserved() {
        let p = Pacer::default();
        p.hold(tg(), "7", T0 + 30_000);
        assert_eq!(
            p.reserve_chat(tg(), "7", &TELEGRAM, T0, T0 + 5000),
            Err(T0 + 30_000)
        );
        // Nothing was taken: the chat is free right after the hold, not a second later.
        assert_eq!(now_or_never(&p, "7", T0 + 30_000), Ok(T0 + 30_000));
    }

    #[test]
    fn a_retry_after_holds_the_chat() {
        let p = Pacer::default();
        p.hold(tg(), "7", T0 + 5000);
        assert_eq!(now_or_never(&p, "7", T0 + 1000), Err(T0 + 5000));
        assert_eq!(
            p.reserve_chat(tg(), "7", &TELEGRAM, T0 + 1000, i64::MAX),
            Ok(T0 + 5000)
        );
        // A hold never shortens a wait already reserved.
        p.hold(tg(), "7", T0 + 10);
        assert_eq!(now_or_never(&p, "7", T0 + 5500), Err(T0 + 6000));
    }
}
