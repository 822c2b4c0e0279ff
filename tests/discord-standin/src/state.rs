//! Everything the stand-in remembers: users, the guild, channels and threads, messages,
//! webhooks, interactions, application commands, recorded requests, gateway sessions, rate-limit
//! buckets and fault knobs.
//!
//! One `std::sync::Mutex` guards it all. A std mutex (not tokio's) is right because no critical
//! section awaits: handlers lock, read or change, queue gateway frames on unbounded channels,
//! unlock, and only then wait. Queuing frames under the lock is what keeps every session's
//! sequence numbers in the order the changes happened.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tokio::sync::watch;

use crate::faults::Faults;
use crate::gateway::GatewayState;
use crate::ratelimit::RateLimiter;
use crate::{Interaction, RecordedRequest};

/// Discord's epoch (2015-01-01T00:00:00Z) in unix milliseconds; snowflakes count from it.
pub(crate) const DISCORD_EPOCH_MS: u64 = 1_420_070_400_000;

/// Interactions must be answered within 3 s (Discord's documented limit).
pub(crate) const INTERACTION_DEADLINE: Duration = Duration::from_secs(3);
/// Interaction tokens (follow-ups, `@original` edits) last 15 minutes.
pub(crate) const INTERACTION_TOKEN_LIFETIME: Duration = Duration::from_secs(15 * 60);

/// State shared by the HTTP handlers, the gateway connections and the test-facing handle.
pub(crate) struct Shared {
    pub token: String,
    pub base_url: String,
    pub world: Mutex<World>,
    /// Bumped whenever a message is created, edited or deleted; `wait_for_messages` waits on it.
    pub messages_signal: watch::Sender<u64>,
    /// Bumped whenever an interaction is answered.
    pub interactions_signal: watch::Sender<u64>,
    /// Becomes `true` when the last handle is dropped or `stop` is called.
    pub shutdown: watch::Receiver<bool>,
}

impl Shared {
    /// Locks the state. A panic in one test thread must not poison every later call, so a
    /// poisoned lock is taken over as it is.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn notify_messages(&self) {
        self.messages_signal.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn notify_interactions(&self) {
        self.interactions_signal
            .send_modify(|v| *v = v.wrapping_add(1));
    }
}

/// Unix time now, in milliseconds.
pub(crate) fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// ISO 8601 with microseconds and `+00:00`, the form Discord writes timestamps in.
pub(crate) fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let micros = (unix_ms % 1000) * 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (h, m, s) = (rem / 3600, (rem % 3600) / 60, rem % 60);
    // Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm, proleptic Gregorian).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}T{h:02}:{m:02}:{s:02}.{micros:06}+00:00")
}

/// Hands out snowflakes: milliseconds since Discord's epoch in the top 42 bits, a counter in
/// the low 12, strictly increasing even within one millisecond.
#[derive(Debug, Default)]
pub(crate) struct Snowflakes {
    last: u64,
}

impl Snowflakes {
    pub fn next(&mut self) -> u64 {
        let now = (unix_now_ms().saturating_sub(DISCORD_EPOCH_MS)) << 22;
        self.last = now.max(self.last + 1);
        self.last
    }
}

/// The unix milliseconds a snowflake was made at.
pub(crate) fn snowflake_ms(id: u64) -> u64 {
    (id >> 22) + DISCORD_EPOCH_MS
}

#[derive(Debug, Clone)]
pub(crate) struct UserRec {
    pub id: u64,
    pub username: String,
    pub bot: bool,
}

/// Discord channel types used here.
pub(crate) const GUILD_TEXT: u8 = 0;
pub(crate) const DM: u8 = 1;
pub(crate) const PUBLIC_THREAD: u8 = 11;
pub(crate) const PRIVATE_THREAD: u8 = 12;

#[derive(Debug, Clone)]
pub(crate) struct ThreadMeta {
    pub archived: bool,
    pub locked: bool,
    pub invitable: bool,
    pub auto_archive_duration: u64,
    pub archive_timestamp_ms: u64,
    pub create_timestamp_ms: u64,
    pub owner_id: u64,
    /// Member user ids with their join time (unix ms).
    pub members: BTreeMap<u64, u64>,
    pub total_message_sent: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct ChannelRec {
    pub id: u64,
    pub kind: u8,
    pub name: Option<String>,
    pub guild_id: Option<u64>,
    pub parent_id: Option<u64>,
    /// For DMs: the one recipient (the other side is the bot).
    pub recipient: Option<u64>,
    pub thread: Option<ThreadMeta>,
    pub last_message_id: Option<u64>,
    pub position: u64,
}

impl ChannelRec {
    pub fn is_thread(&self) -> bool {
        self.thread.is_some()
    }
}

/// Who wrote a message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Author {
    User(u64),
    Webhook {
        id: u64,
        username: String,
        avatar_url: Option<String>,
    },
}

#[derive(Debug, Clone)]
pub(crate) struct AttachmentRec {
    pub id: u64,
    pub filename: String,
    pub content_type: Option<String>,
    pub description: Option<String>,
    pub bytes: Vec<u8>,
}

#[derive(Debug, Clone)]
pub(crate) struct MessageRec {
    pub id: u64,
    pub channel_id: u64,
    pub author: Author,
    pub content: String,
    pub components: Value,
    pub embeds: Value,
    pub attachments: Vec<AttachmentRec>,
    pub allowed_mentions: Option<Value>,
    /// `{message_id, channel_id, guild_id?}` as stored (wire form built in `shapes`).
    pub reference: Option<(u64, u64)>,
    pub kind: u8,
    pub flags: u64,
    pub tts: bool,
    pub nonce: Option<Value>,
    pub edited_ms: Option<u64>,
    /// For messages sent through an interaction: the application id and interaction metadata.
    pub application_id: Option<u64>,
    pub interaction_metadata: Option<Value>,
}

#[derive(Debug, Clone)]
pub(crate) struct WebhookRec {
    pub id: u64,
    pub token: String,
    pub name: String,
    pub channel_id: u64,
    pub creator: u64,
}

#[derive(Debug, Clone)]
pub(crate) struct InteractionRec {
    pub public: Interaction,
    pub created: Instant,
    /// The interaction object as dispatched (follow-ups and `UPDATE_MESSAGE` need its message).
    pub payload: Value,
    pub response: Option<Value>,
    pub answered_after: Option<Duration>,
    /// The message the response created (type 4/5), for `@original` edits.
    pub original_message: Option<u64>,
}

/// The whole simulated Discord.
pub(crate) struct World {
    /// `http://127.0.0.1:PORT`, for URLs inside objects (attachments, gateway).
    pub base_url: String,
    pub ids: Snowflakes,
    pub bot_id: u64,
    pub application_id: u64,
    pub guild_id: u64,
    pub users: BTreeMap<u64, UserRec>,
    /// Guild members and when they joined (unix ms).
    pub members: BTreeMap<u64, u64>,
    pub refuses_dms: HashSet<u64>,
    /// The largest file one upload may carry (413 40005 above it): Discord's default
    /// 10 MiB unless a test sets a guild's lower or higher limit.
    pub max_file: usize,
    pub channels: BTreeMap<u64, ChannelRec>,
    /// Messages per channel, by id (ids increase with time, so this is oldest first).
    pub messages: HashMap<u64, BTreeMap<u64, MessageRec>>,
    pub webhooks: BTreeMap<u64, WebhookRec>,
    pub interactions: HashMap<u64, InteractionRec>,
    /// Registered commands: (guild id or `None` for global, command JSON as answered).
    pub commands: Vec<(Option<u64>, Value)>,
    pub requests: Vec<RecordedRequest>,
    pub gateway: GatewayState,
    pub faults: Faults,
    pub limits: RateLimiter,
    pub down: bool,
    pub active_thread_limit: usize,
    pub invalid_requests: usize,
    pub interaction_deadline: Duration,
    /// Whether the application may use the privileged intents (GUILD_MEMBERS, GUILD_PRESENCES,
    /// MESSAGE_CONTENT); Discord calls this enabling them in the developer portal.
    pub privileged_intents_allowed: bool,
    /// Messages created with `enforce_nonce`: (author, nonce) → (channel, message, when), so
    /// a repeat within [`NONCE_LIFETIME`] returns the first message instead of a second one.
    pub nonces: HashMap<(u64, String), (u64, u64, std::time::Instant)>,
}

/// How long Discord remembers an enforced nonce: its documentation says "the past few
/// minutes"; the stand-in keeps five.
pub const NONCE_LIFETIME: Duration = Duration::from_secs(300);

impl World {
    pub fn new(base_url: String) -> World {
        let mut ids = Snowflakes::default();
        let application_id = ids.next();
        // A bot user shares its application's id on Discord.
        let bot_id = application_id;
        let owner_id = ids.next();
        let guild_id = ids.next();
        let now = unix_now_ms();
        let mut users = BTreeMap::new();
        users.insert(
            bot_id,
            UserRec {
                id: bot_id,
                username: "Switchboard Test Bot".into(),
                bot: true,
            },
        );
        users.insert(
            owner_id,
            UserRec {
                id: owner_id,
                username: "guild_owner".into(),
                bot: false,
            },
        );
        let members = BTreeMap::from([(owner_id, now), (bot_id, now)]);
        World {
            base_url,
            ids,
            bot_id,
            application_id,
            guild_id,
            users,
            members,
            refuses_dms: HashSet::new(),
            max_file: crate::rest::MAX_FILE,
            channels: BTreeMap::new(),
            messages: HashMap::new(),
            webhooks: BTreeMap::new(),
            interactions: HashMap::new(),
            commands: Vec::new(),
            requests: Vec::new(),
            gateway: GatewayState::default(),
            faults: Faults::default(),
            limits: RateLimiter::default(),
            down: false,
            nonces: HashMap::new(),
            // Discord's documented cap on active threads per guild.
            active_thread_limit: 1000,
            invalid_requests: 0,
            interaction_deadline: INTERACTION_DEADLINE,
            privileged_intents_allowed: true,
        }
    }

    pub fn guild_owner(&self) -> u64 {
        self.users
            .values()
            .find(|u| u.username == "guild_owner")
            .map_or(self.bot_id, |u| u.id)
    }

    pub fn channel(&self, id: u64) -> Option<&ChannelRec> {
        self.channels.get(&id)
    }

    pub fn message(&self, channel_id: u64, id: u64) -> Option<&MessageRec> {
        self.messages.get(&channel_id)?.get(&id)
    }

    pub fn active_threads(&self) -> usize {
        self.channels
            .values()
            .filter(|c| c.thread.as_ref().is_some_and(|t| !t.archived))
            .count()
    }

    /// The DM channel between the bot and this user, if one was opened.
    pub fn dm_with(&self, user_id: u64) -> Option<u64> {
        self.channels
            .values()
            .find(|c| c.kind == DM && c.recipient == Some(user_id))
            .map(|c| c.id)
    }

    /// Stores a message and moves the channel's `last_message_id`; an archived thread that
    /// gets a message is unarchived (as on Discord), returned so the caller can announce it.
    pub fn store_message(&mut self, message: MessageRec) -> bool {
        let channel_id = message.channel_id;
        let id = message.id;
        self.messages
            .entry(channel_id)
            .or_default()
            .insert(id, message);
        let mut unarchived = false;
        if let Some(channel) = self.channels.get_mut(&channel_id) {
            channel.last_message_id = Some(id);
            if let Some(thread) = channel.thread.as_mut() {
                thread.total_message_sent += 1;
                if thread.archived {
                    thread.archived = false;
                    thread.archive_timestamp_ms = unix_now_ms();
                    unarchived = true;
                }
            }
        }
        unarchived
    }

    /// Which users may read and write in a channel (for the test-side user actions).
    pub fn user_can_post(&self, user_id: u64, channel: &ChannelRec) -> bool {
        match channel.kind {
            DM => channel.recipient == Some(user_id),
            PRIVATE_THREAD => channel
                .thread
                .as_ref()
                .is_some_and(|t| t.members.contains_key(&user_id)),
            _ => self.members.contains_key(&user_id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snowflakes_increase_and_carry_the_time() {
        let mut ids = Snowflakes::default();
        let a = ids.next();
        let b = ids.next();
        assert!(b > a);
        let now = unix_now_ms();
        assert!(snowflake_ms(b) <= now && now - snowflake_ms(b) < 5_000);
    }

    #[test]
    fn timestamps_are_iso8601_like_discords() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000000+00:00");
        assert_eq!(
            iso8601(1_735_689_600_123),
            "2025-01-01T00:00:00.123000+00:00"
        );
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00.000000+00:00");
    }
}
