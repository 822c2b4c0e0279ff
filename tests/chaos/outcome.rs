//! What a crash burst found: each direction of each conversation counted where it arrived
//! (lost, doubled, out of order), the kills, and the table `docs/reliability.md` shows.

use std::{collections::HashMap, fmt::Write as _, time::Duration};

use super::{PLATFORMS, Plan, Victim};

/// One direction of one conversation, as counted at the receiving end.
#[derive(Clone, Debug)]
pub struct Tally {
    pub conversation: usize,
    /// Where the responder is (one of [`PLATFORMS`]).
    pub platform: &'static str,
    /// `"visitor → responder"` or `"responder → visitor"`.
    pub way: &'static str,
    pub sent: usize,
    pub lost: usize,
    pub doubled: usize,
    pub out_of_order: usize,
    /// The numbers of the messages lost, of those doubled, and of those that arrived after
    /// a later one.
    pub missing: Vec<usize>,
    pub extra: Vec<usize>,
    pub late: Vec<usize>,
    /// Mails that were copies of one already counted (the same Message-ID), folded as a mail
    /// client that folds them shows them: not in `doubled`, but checked (see
    /// [`Outcome::folded_beyond_resends`]).
    pub folded: usize,
}

impl Tally {
    /// Counts what arrived (message numbers in arrival order) against `1..=sent`.
    pub(super) fn count(arrived: &[usize], sent: usize) -> (usize, usize, usize) {
        let (missing, extra, late) = Self::read(arrived, sent);
        (missing.len(), extra.len(), late.len())
    }

    /// The numbers lost, the numbers doubled (once per extra copy), and the numbers that
    /// arrived after a later one.
    pub(super) fn read(arrived: &[usize], sent: usize) -> (Vec<usize>, Vec<usize>, Vec<usize>) {
        let mut times: HashMap<usize, usize> = HashMap::new();
        let mut late = Vec::new();
        let mut highest = 0;
        for &k in arrived {
            let seen = times.entry(k).or_default();
            *seen += 1;
            if *seen == 1 {
                if k < highest {
                    late.push(k);
                }
                highest = highest.max(k);
            }
        }
        let missing = (1..=sent).filter(|k| !times.contains_key(k)).collect();
        let mut extra: Vec<usize> = times
            .iter()
            .flat_map(|(&k, &n)| std::iter::repeat_n(k, n - 1))
            .collect();
        extra.sort_unstable();
        (missing, extra, late)
    }
}

/// A kill: when in the window, and how long the victim stayed down (restart included).
#[derive(Clone, Debug)]
pub struct Kill {
    pub at: Duration,
    pub down: Duration,
    /// When one of two instances was hit: how (`Under::hit`), and how long after it the
    /// lead was held by a live instance again.
    pub takeover: Option<(String, Duration)>,
}

/// What one run found.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub victim: Victim,
    pub plan: Plan,
    pub kills: Vec<Kill>,
    pub tallies: Vec<Tally>,
    /// For each platform's conversations, how long after the last message was sent they held
    /// everything (absent: not within the drain deadline).
    pub drained: Vec<(&'static str, Duration)>,
    /// While Synapse was down: what the visitor API answered a visitor starting a
    /// conversation (status, errcode, how long it took), once per kill.
    pub answers_while_down: Vec<(u16, String, Duration)>,
    /// The event ID of each message sent through the homeserver, by (conversation, way
    /// `'v'` or `'r'`, number): named next to a fault, so the logs can be searched for it.
    pub sent_events: HashMap<(usize, char, usize), String>,
}

impl Outcome {
    /// (sent, lost, doubled, out of order) over every conversation and direction.
    pub fn totals(&self) -> (usize, usize, usize, usize) {
        self.tallies.iter().fold((0, 0, 0, 0), |t, x| {
            (
                t.0 + x.sent,
                t.1 + x.lost,
                t.2 + x.doubled,
                t.3 + x.out_of_order,
            )
        })
    }

    /// A line for a run that held: what was sent, and under how many kills.
    pub fn summary(&self) -> String {
        let (sent, ..) = self.totals();
        let folded: usize = self.tallies.iter().map(|t| t.folded).sum();
        let resent: usize = self.tallies.iter().map(|t| self.resent_doubles(t)).sum();
        format!(
            "{sent} messages, {} kills, 0 lost, doubled or out of order; {resent} resent by a \
             kill, {folded} mails sent again with their Message-ID",
            self.kills.len()
        )
    }

    /// One Markdown table row per direction and platform, summed over conversations.
    pub fn rows(&self) -> String {
        let mut out = String::new();
        let downs: Vec<String> = self
            .kills
            .iter()
            .map(|k| {
                let takeover = k
                    .takeover
                    .as_ref()
                    .map(|(what, t)| format!(" {what}, led after {:.1}", t.as_secs_f64()))
                    .unwrap_or_default();
                format!(
                    "{:.1}/{:.1}{takeover}",
                    k.at.as_secs_f64(),
                    k.down.as_secs_f64()
                )
            })
            .collect();
        for platform in PLATFORMS {
            for way in ["visitor → responder", "responder → visitor"] {
                let mut sum = (0, 0, 0, 0, 0);
                for t in self
                    .tallies
                    .iter()
                    .filter(|t| t.platform == platform && t.way == way)
                {
                    sum = (
                        sum.0 + 1,
                        sum.1 + t.sent,
                        sum.2 + t.lost,
                        sum.3 + t.doubled,
                        sum.4 + t.out_of_order,
                    );
                }
                let _ = writeln!(
                    out,
                    "| {} | {} ({}) | {platform} | {way} | {} | {} | {} | {} | {} | {:.1} s |",
                    self.victim.name(),
                    self.kills.len(),
                    downs.join(", "),
                    sum.0,
                    sum.1,
                    sum.2,
                    sum.3,
                    sum.4,
                    self.drained
                        .iter()
                        .find(|(p, _)| *p == platform)
                        .map_or(f64::NAN, |(_, d)| d.as_secs_f64()),
                );
            }
        }
        out
    }

    /// Doubles Switchboard cannot prevent on Telegram: a visitor's message the Bot API
    /// accepted in the instant before Switchboard was killed, before the send could be
    /// recorded, goes out again after the restart. It has no idempotency key (Discord has its
    /// enforced nonce, the homeserver its transaction ID) nor a way for the bot to read what it
    /// sent, so the choice is a rare double or a rare loss; Switchboard doubles. At most one per
    /// kill in a chat; counted and reported, the test does not fail on them. A mail sent again
    /// the same way carries the first one's Message-ID and is counted once (`email::received`),
    /// as a client that folds such copies shows it. These are the only doubles the test lets
    /// pass: a message sent into a Matrix room while Synapse was killed is not one, since the
    /// client looks for the event a lost answer stored before it sends again
    /// (`appservice/src/client/sent.rs`).
    pub fn resent_doubles(&self, t: &Tally) -> usize {
        if self.victim.kills_switchboard()
            && t.platform == "telegram"
            && t.way == "visitor → responder"
        {
            t.doubled.min(self.kills.len())
        } else {
            0
        }
    }

    /// Copies of a mail (one Message-ID) beyond those a Switchboard kill explains: a mail the
    /// SMTP server accepted just before the kill, before the send was recorded, goes out again
    /// after the restart with the same ID (at most one per kill in a chat). Any other copy is
    /// Switchboard sending one delivery twice, and fails the test like a double.
    pub fn folded_beyond_resends(&self, t: &Tally) -> usize {
        if self.victim.kills_switchboard() {
            t.folded.saturating_sub(self.kills.len())
        } else {
            t.folded
        }
    }

    /// The directions where something went wrong, one line each.
    pub fn faults(&self) -> Vec<String> {
        self.tallies
            .iter()
            .filter(|t| t.lost + t.doubled + t.out_of_order > 0)
            .map(|t| {
                let way = if t.way.starts_with("visitor") { 'v' } else { 'r' };
                let mut named: Vec<usize> =
                    t.missing.iter().chain(&t.extra).chain(&t.late).copied().collect();
                named.sort_unstable();
                named.dedup();
                let events: Vec<String> = named
                    .iter()
                    .filter_map(|k| {
                        let id = self.sent_events.get(&(t.conversation, way, *k))?;
                        Some(format!("{way}{k} {id}"))
                    })
                    .collect();
                format!(
                    "{}: conversation {} ({}), {}: {} sent, {} lost {:?}, {} doubled {:?}, {} out of order {:?}{}",
                    self.victim.name(),
                    t.conversation,
                    t.platform,
                    t.way,
                    t.sent,
                    t.lost,
                    t.missing,
                    t.doubled,
                    t.extra,
                    t.out_of_order,
                    t.late,
                    if events.is_empty() {
                        String::new()
                    } else {
                        format!(" (sent as {})", events.join(", "))
                    }
                )
            })
            .collect()
    }
}

/// The header of the table [`Outcome::rows`] fills.
pub const TABLE_HEAD: &str = "| what failed | times (each at / for, s) | responder on | direction | conversations | sent | lost | doubled | out of order | drained after sending |\n|---|---|---|---|---|---|---|---|---|---|\n";
