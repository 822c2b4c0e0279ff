//! How the running service is doing, part by part: the worker, the database, the homeserver
//! and each connector, each `connected`, `degraded` or `down` with the last error it saw (in
//! the spirit of mautrix's bridge state).
//!
//! Parts report themselves through a cheap, cloneable [`Health`] handle (or a
//! [`PartReporter`] for one part); `/health` (liveness) and `/ready` (readiness) read a
//! [`HealthReport`] from it. A part can also be a heartbeat: the worker beats on every pass,
//! and a heartbeat not seen within its window makes the part `down`, whatever it reported.
//!
//! Time comes from a [`Clock`] given to the handle, so tests set it instead of sleeping. Error
//! text is passed through [`redact`] before it is kept: the report is served without
//! authentication, so it must not carry tokens, URLs, room or user IDs.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use serde::Serialize;

use crate::clock::{Clock, SharedClock, SystemClock};

/// The parts that must be `connected` for the service to be ready. Connectors are reported
/// too, but one of them failing leaves the others (and the visitors) working.
pub const ESSENTIAL: [&str; 3] = [DATABASE, HOMESERVER, WORKER];
pub const DATABASE: &str = "database";
pub const HOMESERVER: &str = "homeserver";
pub const WORKER: &str = "worker";

/// How long a heartbeat part may stay silent before it counts as down, unless given its own
/// window with [`Health::expect_heartbeat`].
pub const DEFAULT_HEARTBEAT_WINDOW: Duration = Duration::from_secs(60);

/// How much of an error's text is kept.
const MAX_ERROR_CHARS: usize = 300;

/// A part's state, as mautrix's bridge state would put it: `connected`, `degraded` (working
/// with trouble, e.g. retrying) or `down`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PartState {
    Connected,
    Degraded,
    Down,
}

/// The last error a part reported, kept after it recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LastError {
    /// Redacted error text (see [`redact`]).
    pub message: String,
    /// Milliseconds since the Unix epoch.
    pub at: i64,
}

/// One part as reported.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PartReport {
    pub state: PartState,
    /// Since when it has been in this state (milliseconds since the Unix epoch).
    pub since: i64,
    /// Whether the service is unready unless this part is connected.
    pub essential: bool,
    pub last_error: Option<LastError>,
    /// For heartbeat parts: when it last beat.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_heartbeat: Option<i64>,
}

/// Every part at one instant: what `/ready` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthReport {
    /// Every essential part is connected.
    pub ready: bool,
    /// Every heartbeat is fresh.
    pub live: bool,
    /// When this report was taken (milliseconds since the Unix epoch).
    pub at: i64,
    pub parts: BTreeMap<String, PartReport>,
}

/// The shared handle. Cloning is cheap; every clone sees the same parts.
#[derive(Clone)]
pub struct Health {
    inner: Arc<Inner>,
}

struct Inner {
    clock: SharedClock,
    // A std Mutex: it is held only to read or change a few fields, never across an await.
    parts: Mutex<BTreeMap<String, Entry>>,
}

#[derive(Debug, Clone)]
struct Entry {
    /// As last reported (a heartbeat part is `connected` until it reports otherwise).
    state: PartState,
    since: i64,
    last_error: Option<LastError>,
    heartbeat: Option<Heartbeat>,
}

#[derive(Debug, Clone, Copy)]
struct Heartbeat {
    window_ms: i64,
    last_beat: Option<i64>,
}

impl Entry {
    fn heartbeat_part(now: i64, window: Duration) -> Self {
        Entry {
            state: PartState::Connected,
            since: now,
            last_error: None,
            heartbeat: Some(Heartbeat {
                window_ms: window.as_millis() as i64,
                last_beat: None,
            }),
        }
    }

    /// The part as seen at `now`: a heartbeat part that never beat, or not within its window,
    /// is down (since the moment its window ran out).
    fn view(&self, name: &str, now: i64) -> PartReport {
        let mut report = PartReport {
            state: self.state,
            since: self.since,
            essential: ESSENTIAL.contains(&name),
            last_error: self.last_error.clone(),
            last_heartbeat: self.heartbeat.and_then(|h| h.last_beat),
        };
        match self.heartbeat {
            Some(Heartbeat {
                last_beat: None, ..
            }) => report.state = PartState::Down,
            Some(Heartbeat {
                window_ms,
                last_beat: Some(beat),
            }) if now - beat > window_ms => {
                report.state = PartState::Down;
                report.since = beat + window_ms;
                report.last_error = Some(LastError {
                    message: format!("no heartbeat for {} s", (now - beat) / 1000),
                    at: beat + window_ms,
                });
            }
            _ => {}
        }
        report
    }
}

impl Default for Health {
    fn default() -> Self {
        Self::new()
    }
}

impl Health {
    /// A handle on the system clock.
    pub fn new() -> Self {
        Self::with_clock(SystemClock)
    }

    /// A handle on the given clock (the store's, in the running service; a
    /// [`crate::clock::ManualClock`] in tests). The essential parts start `down` until they
    /// are first reported; the worker is a heartbeat with [`DEFAULT_HEARTBEAT_WINDOW`].
    pub fn with_clock(clock: impl Clock) -> Self {
        let now = clock.now_ms();
        let down = Entry {
            state: PartState::Down,
            since: now,
            last_error: None,
            heartbeat: None,
        };
        let parts = BTreeMap::from([
            (DATABASE.to_owned(), down.clone()),
            (HOMESERVER.to_owned(), down),
            (
                WORKER.to_owned(),
                Entry::heartbeat_part(now, DEFAULT_HEARTBEAT_WINDOW),
            ),
        ]);
        Self {
            inner: Arc::new(Inner {
                clock: Arc::new(clock),
                parts: Mutex::new(parts),
            }),
        }
    }

    fn now(&self) -> i64 {
        self.inner.clock.now_ms()
    }

    fn parts(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Entry>> {
        // A panic while holding the lock leaves nothing half-written worth refusing to read.
        self.inner
            .parts
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records `part`'s state. An error (redacted, see [`redact`]) becomes its `last_error`
    /// and stays after the part recovers; `since` moves only when the state changes.
    pub fn report(&self, part: &str, state: PartState, error: Option<String>) {
        let now = self.now();
        let mut parts = self.parts();
        let entry = parts.entry(part.to_owned()).or_insert_with(|| Entry {
            state,
            since: now,
            last_error: None,
            heartbeat: None,
        });
        let before = entry.view(part, now).state;
        entry.state = state;
        if let Some(error) = error {
            entry.last_error = Some(LastError {
                message: redact(&error),
                at: now,
            });
        }
        if entry.view(part, now).state != before {
            entry.since = now;
        }
    }

    /// A reporter for one part, e.g. to hand to a connector.
    pub fn part(&self, name: &str) -> PartReporter {
        PartReporter {
            health: self.clone(),
            part: name.into(),
        }
    }

    /// Makes `part` a heartbeat that counts as down when silent for longer than `window`.
    pub fn expect_heartbeat(&self, part: &str, window: Duration) {
        let now = self.now();
        let mut parts = self.parts();
        let entry = parts
            .entry(part.to_owned())
            .or_insert_with(|| Entry::heartbeat_part(now, window));
        let last_beat = entry.heartbeat.and_then(|h| h.last_beat);
        entry.heartbeat = Some(Heartbeat {
            window_ms: window.as_millis() as i64,
            last_beat,
        });
    }

    /// `part` is alive now (the worker calls this on every pass). A part not yet a heartbeat
    /// becomes one with [`DEFAULT_HEARTBEAT_WINDOW`]. A beat after a silence longer than the
    /// window keeps the silence as the part's last error.
    pub fn heartbeat(&self, part: &str) {
        let now = self.now();
        let mut parts = self.parts();
        let entry = parts
            .entry(part.to_owned())
            .or_insert_with(|| Entry::heartbeat_part(now, DEFAULT_HEARTBEAT_WINDOW));
        let beat = entry.heartbeat.get_or_insert(Heartbeat {
            window_ms: DEFAULT_HEARTBEAT_WINDOW.as_millis() as i64,
            last_beat: None,
        });
        match beat.last_beat {
            None => entry.since = now,
            Some(last) if now - last > beat.window_ms => {
                entry.last_error = Some(LastError {
                    message: format!("no heartbeat for {} s", (now - last) / 1000),
                    at: last + beat.window_ms,
                });
                entry.since = now;
            }
            Some(_) => {}
        }
        beat.last_beat = Some(now);
    }

    /// Every part as of now.
    pub fn snapshot(&self) -> HealthReport {
        let now = self.now();
        let entries = self.parts();
        let live = heartbeats_fresh(&entries, now);
        let parts: BTreeMap<String, PartReport> = entries
            .iter()
            .map(|(name, entry)| (name.clone(), entry.view(name, now)))
            .collect();
        drop(entries);
        let ready = ESSENTIAL.iter().all(|name| {
            parts
                .get(*name)
                .is_some_and(|p| p.state == PartState::Connected)
        });
        HealthReport {
            ready,
            live,
            at: now,
            parts,
        }
    }

    /// Whether every essential part (database, homeserver, worker) is connected.
    pub fn ready(&self) -> bool {
        self.snapshot().ready
    }

    /// Whether every heartbeat is fresh: the process is doing its work.
    pub fn live(&self) -> bool {
        let now = self.now();
        heartbeats_fresh(&self.parts(), now)
    }
}

/// Every heartbeat part has beaten within its window.
fn heartbeats_fresh(parts: &BTreeMap<String, Entry>, now: i64) -> bool {
    parts.values().all(|entry| match entry.heartbeat {
        Some(Heartbeat {
            window_ms,
            last_beat: Some(beat),
        }) => now - beat <= window_ms,
        Some(Heartbeat {
            last_beat: None, ..
        }) => false,
        None => true,
    })
}

/// Reports one part's state; cheap to clone and hand to a connector.
#[derive(Clone)]
pub struct PartReporter {
    health: Health,
    part: Arc<str>,
}

impl PartReporter {
    pub fn name(&self) -> &str {
        &self.part
    }

    pub fn connected(&self) {
        self.health.report(&self.part, PartState::Connected, None);
    }

    /// Working, with trouble (retrying, rate-limited, a conflict).
    pub fn degraded(&self, error: impl std::fmt::Display) {
        self.health
            .report(&self.part, PartState::Degraded, Some(error.to_string()));
    }

    /// Not working until someone acts (e.g. a revoked token).
    pub fn down(&self, error: impl std::fmt::Display) {
        self.health
            .report(&self.part, PartState::Down, Some(error.to_string()));
    }
}

/// Error text fit for an unauthenticated report: URLs (which may embed a bot token or a room
/// ID), Matrix IDs (`!room`, `@user`, `$event`, `#alias`), e-mail addresses, long numbers
/// (chat IDs) and long opaque strings (tokens) are replaced by placeholders, and the text is
/// cut to a few hundred characters. What is left names the kind of error.
pub fn redact(text: &str) -> String {
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|word| {
            let sigil = word.char_indices().any(|(i, c)| {
                matches!(c, '!' | '@' | '$' | '#')
                    && word[i + 1..]
                        .chars()
                        .next()
                        .is_some_and(char::is_alphanumeric)
            });
            let longest_digits = word
                .split(|c: char| !c.is_ascii_digit())
                .map(str::len)
                .max()
                .unwrap_or(0);
            let longest_opaque = word
                .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .map(str::len)
                .max()
                .unwrap_or(0);
            if word.contains("://") {
                "<url>"
            } else if sigil {
                "<id>"
            } else if longest_digits >= 6 {
                "<number>"
            } else if longest_opaque >= 32 {
                "<redacted>"
            } else {
                word
            }
        })
        .collect();
    let text = words.join(" ");
    match text.char_indices().nth(MAX_ERROR_CHARS) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    /// A handle on a clock the test moves by hand, starting at `start`.
    fn at(start: i64) -> (Health, ManualClock) {
        let clock = ManualClock::new(start);
        (Health::with_clock(clock.clone()), clock)
    }

    fn part(health: &Health, name: &str) -> PartReport {
        health.snapshot().parts[name].clone()
    }

    #[test]
    fn essential_parts_start_down_and_ready_needs_all_three() {
        let (health, clock) = at(1_000);
        assert!(!health.ready());
        assert_eq!(part(&health, "database").state, PartState::Down);
        assert_eq!(part(&health, "worker").state, PartState::Down);
        health.report("database", PartState::Connected, None);
        health.report("homeserver", PartState::Connected, None);
        assert!(!health.ready(), "the worker has not beaten yet");
        clock.set(2_000);
        health.heartbeat("worker");
        assert!(health.ready());
        let worker = part(&health, "worker");
        assert_eq!(
            (worker.state, worker.since, worker.last_heartbeat),
            (PartState::Connected, 2_000, Some(2_000))
        );
    }

    #[test]
    fn a_connector_may_be_degraded_without_making_us_unready_but_is_reported() {
        let (health, _) = at(0);
        health.report("database", PartState::Connected, None);
        health.report("homeserver", PartState::Connected, None);
        health.heartbeat("worker");
        let telegram = health.part("telegram");
        telegram.degraded("Conflict: terminated by other getUpdates request (409)");
        let report = health.snapshot();
        assert!(report.ready);
        let tg = &report.parts["telegram"];
        assert_eq!((tg.state, tg.essential), (PartState::Degraded, false));
        assert!(tg.last_error.as_ref().unwrap().message.contains("409"));
        // An essential part degraded: not ready.
        health.report(
            "homeserver",
            PartState::Degraded,
            Some("homeserver unreachable".into()),
        );
        assert!(!health.ready());
    }

    #[test]
    fn the_last_error_and_its_time_outlive_recovery_and_since_moves_only_on_change() {
        let (health, clock) = at(10_000);
        let hs = health.part("homeserver");
        hs.connected();
        clock.set(11_000);
        hs.connected();
        assert_eq!(part(&health, "homeserver").since, 10_000);
        clock.set(12_000);
        hs.degraded("homeserver refused (502 M_UNKNOWN): bad gateway");
        clock.set(13_000);
        hs.degraded("homeserver refused (503 M_UNKNOWN): unavailable");
        let degraded = part(&health, "homeserver");
        assert_eq!(
            (degraded.state, degraded.since),
            (PartState::Degraded, 12_000)
        );
        assert_eq!(
            degraded.last_error,
            Some(LastError {
                message: "homeserver refused (503 M_UNKNOWN): unavailable".into(),
                at: 13_000
            })
        );
        clock.set(20_000);
        hs.connected();
        let back = part(&health, "homeserver");
        assert_eq!((back.state, back.since), (PartState::Connected, 20_000));
        assert_eq!(back.last_error.unwrap().at, 13_000, "kept after recovery");
    }

    #[test]
    fn a_silent_heartbeat_is_down_from_the_end_of_its_window_and_recovers_with_the_gap_kept() {
        let (health, clock) = at(0);
        health.expect_heartbeat("worker", Duration::from_secs(10));
        health.heartbeat("worker");
        assert!(health.live());
        clock.set(10_000);
        assert!(health.live(), "exactly at the window's end it still counts");
        clock.set(25_000);
        assert!(!health.live());
        let worker = part(&health, "worker");
        assert_eq!((worker.state, worker.since), (PartState::Down, 10_000));
        assert_eq!(worker.last_error.unwrap().message, "no heartbeat for 25 s");
        assert!(!health.ready());

        clock.set(30_000);
        health.heartbeat("worker");
        assert!(health.live());
        let worker = part(&health, "worker");
        assert_eq!((worker.state, worker.since), (PartState::Connected, 30_000));
        assert_eq!(
            worker.last_error,
            Some(LastError {
                message: "no heartbeat for 30 s".into(),
                at: 10_000
            })
        );
    }

    #[test]
    fn a_heartbeat_part_may_report_trouble_without_losing_its_liveness() {
        let (health, clock) = at(0);
        health.heartbeat("worker");
        health.report(
            "worker",
            PartState::Degraded,
            Some("inbox processing failed".into()),
        );
        clock.set(1_000);
        health.heartbeat("worker");
        assert!(health.live());
        assert_eq!(part(&health, "worker").state, PartState::Degraded);
        health.report("worker", PartState::Connected, None);
        assert_eq!(part(&health, "worker").state, PartState::Connected);
    }

    #[test]
    fn the_report_serialises_with_lowercase_states() {
        let (health, _) = at(5);
        health.part("telegram").down("Invalid bot token (401)");
        let json = serde_json::to_value(health.snapshot()).unwrap();
        assert_eq!(json["ready"], false);
        assert_eq!(json["live"], false);
        assert_eq!(json["parts"]["telegram"]["state"], "down");
        assert_eq!(json["parts"]["telegram"]["since"], 5);
        assert_eq!(
            json["parts"]["telegram"]["last_error"]["message"],
            "Invalid bot token (401)"
        );
        assert_eq!(json["parts"]["database"]["essential"], true);
        assert!(json["parts"]["database"].get("last_heartbeat").is_none());
    }

    #[test]
    fn errors_lose_urls_ids_tokens_and_chat_ids() {
        let cases = [
            (
                "A network error: error sending request for url (https://api.telegram.org/bot123456:AAH-secret/GetUpdates)",
                "A network error: error sending request for url <url>",
            ),
            (
                "homeserver refused (403 M_FORBIDDEN): @visitor-ab12:example.org is not in !lkvCdrebipUIc9ufLIsyrh9pY8YOrjmRmVT0FqHtLK4",
                "homeserver refused (403 M_FORBIDDEN): <id> is not in <id>",
            ),
            (
                "Bad Request: chat 7001234567 not found",
                "Bad Request: chat <number> not found",
            ),
            (
                "token syt_dmlzaXRvcg_AbCdEfGhIjKlMnOpQrSt_0a1b2c rejected",
                "token <redacted> rejected",
            ),
            (
                "Key (event_id)=($abc) already exists",
                "Key <id> already exists",
            ),
            ("it failed!", "it failed!"),
        ];
        for (text, expected) in cases {
            assert_eq!(redact(text), expected, "{text}");
        }
        assert_eq!(
            redact(&"word ".repeat(200)).chars().count(),
            MAX_ERROR_CHARS + 1
        );
    }
}
