//! The soak (issue 16, point 4): many conversations held at once, talking at a steady rate for
//! a long while, and Switchboard watched for what a long life would show: memory that keeps
//! growing, tasks, file descriptors or connections that are never given back, latency that
//! drifts.
//!
//! Every conversation is a guest visitor in a Synapse room, held by one of several Telegram
//! responders (the stand-in), many conversations each, as a busy responder holds them. Each
//! visitor writes numbered messages at a steady pace (a random gap around the plan's
//! `every`); each responder answers every message of theirs as it arrives, as a reply to it
//! (which is how a Telegram responder with several conversations says which one they mean).
//! Every message is timed from its send until it is where the other side reads it: the
//! stand-in's record of the bot's message (its `received_at_ms`) one way, the reply's
//! `origin_server_ts` in the visitor's room the other (both on this machine's clock).
//!
//! The run is cut into equal windows. At the end of each, Switchboard's resident memory,
//! threads, file descriptors and sockets are read from `/proc`, its runtime's live tasks and
//! its database connections from its own `/metrics`; each message's latency goes to the
//! window it was sent in. Afterwards every message is counted where it arrived: lost, doubled,
//! out of order; and Switchboard's store says where each message's time went (`stages.rs`):
//! the homeserver's part before we had it, our lane's, and the delivery's.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use serde_json::json;
use telegram_standin::{StandIn, TgUser};

use crate::common::*;

mod report;
mod stages;
use stages::{stage_times, steps};

const TOKEN: &str = "1818:soak-standin-token";
/// How long, after the last message was sent, everything may take to arrive.
const DRAIN: Duration = Duration::from_secs(120);
/// How many conversations are set up at once (each a guest, a room, an offer and its
/// acceptance): Synapse's room creation is the slow part.
const SETUP_AT_ONCE: usize = 12;

/// The size of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    pub conversations: usize,
    /// Telegram responders; conversations are dealt to them in turn.
    pub responders: usize,
    /// How long the visitors keep writing.
    pub duration: Duration,
    /// Each visitor's average gap between two messages.
    pub every: Duration,
    /// Windows the run is cut into; the first is the warm-up.
    pub windows: usize,
    pub seed: u64,
}

/// What one window saw.
#[derive(Clone, Debug, Default)]
pub struct Window {
    /// Latencies (ms) of the messages sent in this window, each way.
    pub to_responder_ms: Vec<f64>,
    pub to_visitor_ms: Vec<f64>,
    /// Read at the window's end.
    pub rss_mib: f64,
    pub threads: f64,
    pub fds: usize,
    pub sockets: usize,
    pub tasks: f64,
    pub db_connections: f64,
    /// Where each message's time went, in the order of [`TO_RESPONDER_STAGES`] and
    /// [`TO_VISITOR_STAGES`] (ms), for the messages whose every step Switchboard's
    /// store had a time for.
    pub to_responder_stages: Vec<[f64; 4]>,
    pub to_visitor_stages: Vec<[f64; 3]>,
    /// How many of this window's messages to a responder took more than one try.
    pub to_responder_retried: usize,
    /// Switchboard's own timings of its outbox, read from `/metrics` at the window's end:
    /// running totals of each of [`OUTBOX_METERS`] (seconds, count).
    pub outbox_meters: [(f64, f64); 3],
    /// Their means over the messages of this window alone (ms).
    pub outbox_means_ms: [f64; 3],
}

/// Switchboard's histograms that split a message's way through the outbox to a Telegram
/// chat: the wait for its chat's lane (counted per job, and one job may deliver several
/// messages), then for the chat's paced slot, then the Bot API call (both per message part).
pub const OUTBOX_METERS: [(&str, &str); 3] = [
    (
        "lane queue",
        "switchboard_lane_wait_seconds_{}{lane=\"to\"}",
    ),
    (
        "pacing",
        "switchboard_pacing_wait_seconds_{}{platform=\"telegram\"}",
    ),
    (
        "Bot API call",
        "switchboard_delivery_seconds_{}{platform=\"telegram\"}",
    ),
];

/// One direction of the whole run, counted where it arrives.
#[derive(Clone, Debug, Default)]
pub struct Count {
    pub sent: usize,
    pub lost: usize,
    pub doubled: usize,
    pub out_of_order: usize,
    /// The first few lost, as "conversation c, message k", to look for in the logs.
    pub examples: Vec<String>,
}

/// What the soak came to.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub plan: Plan,
    pub setup: Duration,
    pub windows: Vec<Window>,
    /// Read once the load had stopped and everything had arrived (and ten seconds more).
    pub after: Window,
    pub before_rss_mib: f64,
    pub to_responder: Count,
    pub to_visitor: Count,
    /// Replies Switchboard could not place, answering "which conversation?" instead: each
    /// names the message it answers, so none should be.
    pub asked_which: usize,
}

/// The bounds the soak holds Switchboard to (see [`Outcome::faults`]). Stated here, reported
/// with the figures. Connection pools grow to the load's concurrency in the first minutes
/// and then keep that size (an idle connection is closed after 90 s), so growth is judged
/// against the highest reading of the first half of the run after the warm-up, not its
/// first window.
pub const RSS_GROWTH_MIB: f64 = 24.0;
pub const FD_GROWTH: usize = 24;
pub const TASK_GROWTH: f64 = 64.0;
/// A later window's p99 may be at most this many times the first half's highest, plus
/// [`P99_SLACK_MS`] (a busy two-core machine shares its cores with Synapse and the test).
pub const P99_FACTOR: f64 = 3.0;
pub const P99_SLACK_MS: f64 = 250.0;

impl Outcome {
    /// The windows after the warm-up up to the middle of the run (the baseline), and those
    /// after them.
    fn halves(&self) -> (&[Window], &[Window]) {
        let middle = 1 + self.windows.len().saturating_sub(1).div_ceil(2);
        (&self.windows[1..middle], &self.windows[middle..])
    }

    /// Where the soak failed its bounds: nothing lost, doubled or reordered; memory,
    /// descriptors and live tasks in the second half of the run and after it within their
    /// bounds of the first half's highest (after the warm-up); every later window's p99
    /// within [`P99_FACTOR`] of the first half's highest.
    pub fn faults(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.to_responder.sent == 0 || self.to_visitor.sent == 0 {
            out.push("no message was sent: nothing was measured".into());
        }
        for (way, c) in [
            ("visitor → responder", &self.to_responder),
            ("responder → visitor", &self.to_visitor),
        ] {
            if c.lost + c.doubled + c.out_of_order > 0 {
                out.push(format!(
                    "{way}: of {} messages {} lost, {} doubled, {} out of order (lost: {})",
                    c.sent,
                    c.lost,
                    c.doubled,
                    c.out_of_order,
                    c.examples.join("; ")
                ));
            }
        }
        if self.asked_which > 0 {
            out.push(format!(
                "{} replies to a visitor's message were answered \"which conversation?\"",
                self.asked_which
            ));
        }
        let (first, second) = self.halves();
        if first.is_empty() || second.is_empty() {
            out.push("too few windows: nothing to compare".into());
            return out;
        }
        let highest = |f: fn(&Window) -> f64| first.iter().map(f).fold(f64::MIN, f64::max);
        let rss = highest(|w| w.rss_mib);
        let fds = highest(|w| w.fds as f64);
        let tasks = highest(|w| w.tasks);
        let later = second.iter().map(Some).chain([None]);
        for (n, w) in later.enumerate() {
            let (name, w) = match w {
                Some(w) => (
                    format!("window {}", self.windows.len() - second.len() + n + 1),
                    w,
                ),
                None => ("after the load".to_owned(), &self.after),
            };
            if w.rss_mib > rss + RSS_GROWTH_MIB {
                out.push(format!(
                    "{name}: resident memory {:.1} MiB, more than {RSS_GROWTH_MIB} MiB over the first half's {rss:.1} MiB",
                    w.rss_mib
                ));
            }
            if w.fds as f64 > fds + FD_GROWTH as f64 {
                out.push(format!(
                    "{name}: {} file descriptors, more than {FD_GROWTH} over the first half's {fds}",
                    w.fds
                ));
            }
            if w.tasks > tasks + TASK_GROWTH {
                out.push(format!(
                    "{name}: {} tasks alive, more than {TASK_GROWTH} over the first half's {tasks}",
                    w.tasks
                ));
            }
        }
        for (way, pick) in [
            (
                "visitor → responder",
                (|w: &Window| &w.to_responder_ms) as fn(&Window) -> &Vec<f64>,
            ),
            ("responder → visitor", |w: &Window| &w.to_visitor_ms),
        ] {
            let p99 = first
                .iter()
                .map(|w| percentile(pick(w), 99.0))
                .fold(f64::MIN, f64::max);
            for (n, w) in second.iter().enumerate() {
                let later = percentile(pick(w), 99.0);
                if later > p99 * P99_FACTOR + P99_SLACK_MS {
                    out.push(format!(
                        "{way}: window {} p99 {later:.0} ms, against the first half's highest {p99:.0} ms",
                        self.windows.len() - second.len() + n + 1
                    ));
                }
            }
        }
        out
    }
}

/// The text of message `k` of conversation `c`, going `way` (`'v'` from the visitor, `'r'`
/// from the responder). The trailing full stop keeps `-v1.` from matching inside `-v12.`.
fn marker(c: usize, way: char, k: usize) -> String {
    format!("soak-c{c}-{way}{k}.")
}

/// The (conversation, number) of the marker going `way` in `text`, if any: a reply may quote
/// the message it answers, so every marker in it is looked at.
fn find_marker(text: &str, way: char) -> Option<(usize, usize)> {
    text.match_indices("soak-c").find_map(|(at, m)| {
        let rest = &text[at + m.len()..];
        let (c, rest) = rest.split_once('-')?;
        let rest = rest.strip_prefix(way)?;
        let (k, _) = rest.split_once('.')?;
        Some((c.parse().ok()?, k.parse().ok()?))
    })
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// One conversation of the soak.
struct Conversation {
    room: String,
    visitor_token: String,
}

/// What the senders and the responders note as they go: per conversation, when each
/// message was sent (unix ms, by number), each way.
#[derive(Default)]
struct Journal {
    visitor_sent: HashMap<usize, Vec<i64>>,
    reply_sent: HashMap<usize, HashMap<usize, i64>>,
    /// Per conversation, the visitor's messages as they reached the responder's chat:
    /// (number, when).
    reached_responder: HashMap<usize, Vec<(usize, i64)>>,
}

pub async fn run(env: &TestEnv, slot_no: u32, plan: &Plan) -> anyhow::Result<Outcome> {
    anyhow::ensure!(plan.windows >= 3, "the soak needs three windows or more");
    let slot = Slot::load(env, slot_no)?;
    let tg = StandIn::start(TOKEN).await?;
    let admin = format!("127.0.0.1:{}", free_port()?);
    let per_responder = plan.conversations.div_ceil(plan.responders);
    let mut config = format!(
        // Every visitor comes from loopback: the per-address limits would refuse all but the
        // first few conversations.
        "[visitors]\nconversations_per_minute = 100000\nburst = 10000\n\n\
         [telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [admin]\ntoken = \"soak-admin-token\"\nlisten = {admin:?}\n\n[metrics]\n\n",
        api = tg.api_url(),
    );
    let mut users = Vec::new();
    for r in 0..plan.responders {
        let user = tg.user(1_818_000 + r as i64, &format!("S{r}"), None);
        config.push_str(&format!(
            "[[topics]]\nid = \"s{r}\"\nname = \"Soak {r}\"\n\n\
             [[responders]]\nid = \"s{r}\"\ndisplay_name = \"S{r}\"\ntopics = [\"s{r}\"]\n\
             max_concurrent = {cap}\ncontacts = [{{ platform = \"telegram\", address = \"{id}\" }}]\n\n",
            cap = per_responder + 5,
            id = user.id,
        ));
        users.push(user);
    }
    let sb = Switchboard::start(env, &slot, &config).await?;
    let pid = sb.pid().context("Switchboard's pid")?;
    let metrics_url = format!("http://{admin}/metrics");
    let http = reqwest::Client::new();
    let before_rss_mib = rss_mib(pid);

    // --- every conversation started, offered and accepted -----------------------------------
    // One chain per responder (their offers are accepted one after the other), at most
    // SETUP_AT_ONCE chains at a time.
    let setup_started = Instant::now();
    let gate = Arc::new(tokio::sync::Semaphore::new(SETUP_AT_ONCE));
    let chains = users.iter().enumerate().map(|(r, user)| {
        let gate = gate.clone();
        let (tg, sb) = (&tg, &sb);
        async move {
            let mut held = Vec::new();
            let mut c = r;
            while c < plan.conversations {
                let _turn = gate.acquire().await?;
                let mut visitor = Visitor::guest(env, &sb.base).await?;
                let room = visitor.start(&format!("s{r}")).await?;
                visitor.send("hello").await?;
                // A step of the set-up that timed out, with what Switchboard logged meanwhile.
                let failed = |e: String, step: &str| {
                    anyhow::anyhow!(
                        "{e} (conversation {c}, {:.1} s into the set-up, {step})\n\
                         Switchboard's last warnings and errors:\n{}",
                        setup_started.elapsed().as_secs_f64(),
                        sb.log_problems(30)
                    )
                };
                tg.wait_for_sent(user.id, |s| open_offers(s).len() == 1, WAIT)
                    .await
                    .map_err(|e| failed(e.to_string(), "waiting for its offer"))?;
                accept_open_offer(tg, user);
                // Set up means the visitor was told who answers: the responder's ghost is in
                // the room, so the load does not begin behind the set-up's own posts.
                visitor
                    .sync_until("who answers", |seen| {
                        seen.iter()
                            .any(|s| s.body.starts_with("You are now talking with"))
                    })
                    .await
                    .map_err(|e| failed(e.to_string(), "its offer accepted"))?;
                held.push((
                    c,
                    Conversation {
                        room,
                        visitor_token: visitor.token.clone(),
                    },
                ));
                c += plan.responders;
            }
            anyhow::Ok(held)
        }
    });
    let mut conversations: Vec<(usize, Conversation)> = futures_util::future::try_join_all(chains)
        .await?
        .into_iter()
        .flatten()
        .collect();
    conversations.sort_by_key(|(c, _)| *c);
    let conversations: Vec<Conversation> = conversations.into_iter().map(|(_, c)| c).collect();
    let store = sb.store().await?;
    for (i, c) in conversations.iter().enumerate() {
        anyhow::ensure!(
            !store.active_assignments_for_room(&c.room).await?.is_empty(),
            "conversation {i} was not taken by its responder"
        );
    }
    drop(store);
    let setup = setup_started.elapsed();

    // --- the steady load ----------------------------------------------------------------------
    let journal = Arc::new(Mutex::new(Journal::default()));
    let started = Instant::now();
    let stop_at = started + plan.duration;
    let senders = conversations.iter().enumerate().map(|(i, c)| {
        let (http, journal) = (&http, journal.clone());
        let mut rng = fastrand::Rng::with_seed(plan.seed.wrapping_add(i as u64));
        async move {
            // A random start, so the visitors do not write in step.
            let mut next = started + plan.every.mul_f64(rng.f64());
            let mut k = 0;
            while next < stop_at {
                tokio::time::sleep_until(next.into()).await;
                k += 1;
                let at = now_ms();
                put_message(
                    http,
                    &env.hs_url,
                    &c.visitor_token,
                    &c.room,
                    k,
                    &marker(i, 'v', k),
                )
                .await?;
                journal
                    .lock()
                    .expect("journal")
                    .visitor_sent
                    .entry(i)
                    .or_default()
                    .push(at);
                next += plan.every.mul_f64(0.5 + rng.f64());
            }
            anyhow::Ok(k)
        }
    });
    let answering = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let responders: Vec<_> = users
        .iter()
        .map(|user| {
            let (tg, journal, answering) = (tg.clone(), journal.clone(), answering.clone());
            let user = user.clone();
            tokio::spawn(answer_all(tg, user, journal, answering))
        })
        .collect();
    let windows = sample_windows(&http, &metrics_url, pid, plan, started);
    let (sent, mut windows) = tokio::join!(futures_util::future::try_join_all(senders), windows);
    let sent = sent?;

    // --- everything arrives -------------------------------------------------------------------
    let drain_until = Instant::now() + DRAIN;
    let expected: usize = sent.iter().sum();
    loop {
        let reached: usize = {
            let j = journal.lock().expect("journal");
            j.reached_responder.values().map(Vec::len).sum()
        };
        if reached >= expected || Instant::now() > drain_until {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // The replies to the last messages, through Synapse.
    let mut replies = read_replies(&http, env, &conversations).await?;
    while Instant::now() < drain_until
        && replies.iter().zip(&sent).any(|(got, &n)| {
            got.iter()
                .map(|(k, _)| *k)
                .collect::<std::collections::HashSet<_>>()
                .len()
                < n
        })
    {
        tokio::time::sleep(Duration::from_secs(1)).await;
        replies = read_replies(&http, env, &conversations).await?;
    }
    answering.store(false, std::sync::atomic::Ordering::SeqCst);
    for r in responders {
        r.await??;
    }
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = read_window(&http, &metrics_url, pid).await;
    let asked_which = users
        .iter()
        .flat_map(|u| tg.sent(u.id))
        .filter(|m| {
            m.text
                .as_deref()
                .is_some_and(|t| t.starts_with("You have several conversations"))
        })
        .count();
    tg.stop();

    // --- counted, and timed into the windows they were sent in --------------------------------
    let span = plan.duration.as_secs_f64() * 1000.0 / plan.windows as f64;
    let start_ms = now_ms() - started.elapsed().as_millis() as i64;
    let window_of =
        |at: i64| (((at - start_ms) as f64 / span).max(0.0) as usize).min(plan.windows - 1);
    // Read before the journal is locked: a lock is not held across an await.
    let times = stage_times(&sb.db_url).await;
    let j = journal.lock().expect("journal");
    let mut to_responder = Count::default();
    let mut to_visitor = Count::default();
    for (i, &n) in sent.iter().enumerate() {
        let sent_at = j.visitor_sent.get(&i).cloned().unwrap_or_default();
        let reached = j.reached_responder.get(&i).cloned().unwrap_or_default();
        tally(&mut to_responder, i, n, reached.iter().map(|(k, _)| *k));
        for (k, at) in first_arrivals(&reached) {
            if let Some(&s) = sent_at.get(k - 1) {
                windows[window_of(s)].to_responder_ms.push((at - s) as f64);
            }
        }
        let replied_at = j.reply_sent.get(&i).cloned().unwrap_or_default();
        tally(&mut to_visitor, i, n, replies[i].iter().map(|(k, _)| *k));
        for (k, at) in first_arrivals(&replies[i]) {
            if let Some(&s) = replied_at.get(&k) {
                windows[window_of(s)].to_visitor_ms.push((at - s) as f64);
            }
        }
    }
    match times {
        Ok(times) => {
            let sent_at =
                |c: usize, k: usize| j.visitor_sent.get(&c)?.get(k.checked_sub(1)?).copied();
            for ((c, k), marks) in &times.to_responder {
                let Some(s) = sent_at(*c, *k) else { continue };
                if times.retried.contains(&(*c, *k)) {
                    windows[window_of(s)].to_responder_retried += 1;
                }
                // The stand-in's record of the Bot API call, the first if it came twice.
                let mut marks = *marks;
                marks[2] = j
                    .reached_responder
                    .get(c)
                    .and_then(|r| r.iter().find(|(n, _)| n == k))
                    .map(|(_, at)| *at);
                if let Some(stages) = steps(s, &marks) {
                    windows[window_of(s)].to_responder_stages.push(stages);
                }
            }
            for ((c, k), marks) in &times.to_visitor {
                if let Some(&s) = j.reply_sent.get(c).and_then(|r| r.get(k))
                    && let Some(stages) = steps(s, marks)
                {
                    windows[window_of(s)].to_visitor_stages.push(stages);
                }
            }
        }
        // The figures are for reading; the run's verdict does not depend on them.
        Err(e) => eprintln!("soak: Switchboard's store gave no step times: {e:#}"),
    }
    Ok(Outcome {
        plan: plan.clone(),
        setup,
        windows,
        after,
        before_rss_mib,
        to_responder,
        to_visitor,
        asked_which,
    })
}

/// Each message's first arrival, as (number, when).
fn first_arrivals(arrived: &[(usize, i64)]) -> Vec<(usize, i64)> {
    let mut seen = std::collections::HashSet::new();
    arrived
        .iter()
        .filter(|(k, _)| *k >= 1 && seen.insert(*k))
        .copied()
        .collect()
}

/// Adds one conversation's direction to `count`: `sent` messages numbered from 1, and the
/// numbers as they arrived.
fn tally(count: &mut Count, c: usize, sent: usize, arrived: impl Iterator<Item = usize>) {
    let mut times: HashMap<usize, usize> = HashMap::new();
    let mut highest = 0;
    for k in arrived {
        let seen = times.entry(k).or_default();
        *seen += 1;
        if *seen == 1 {
            if k < highest {
                count.out_of_order += 1;
            }
            highest = highest.max(k);
        }
    }
    count.sent += sent;
    for k in (1..=sent).filter(|k| !times.contains_key(k)) {
        count.lost += 1;
        if count.examples.len() < 10 {
            count
                .examples
                .push(format!("conversation {c}, message {k}"));
        }
    }
    count.doubled += times.values().map(|n| n - 1).sum::<usize>();
}

/// One responder: reads the bot's messages in their chat as they come and answers each
/// visitor message of the soak with a reply to it, until told to stop.
async fn answer_all(
    tg: StandIn,
    user: TgUser,
    journal: Arc<Mutex<Journal>>,
    answering: Arc<std::sync::atomic::AtomicBool>,
) -> anyhow::Result<()> {
    let mut read = 0;
    while answering.load(std::sync::atomic::Ordering::SeqCst) {
        let messages = tg.sent(user.id);
        for m in messages.iter().skip(read) {
            let Some((c, k)) = m.text.as_deref().and_then(|t| find_marker(t, 'v')) else {
                continue;
            };
            let mut j = journal.lock().expect("journal");
            j.reached_responder
                .entry(c)
                .or_default()
                .push((k, m.received_at_ms));
            let replies = j.reply_sent.entry(c).or_default();
            // A doubled delivery is answered once.
            if replies.contains_key(&k) {
                continue;
            }
            replies.insert(k, now_ms());
            drop(j);
            tg.user_sends_with(&user, &marker(c, 'r', k), Vec::new(), Some(m.message_id));
        }
        read = messages.len();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// `PUT` message `k` into the room as the visitor, again under the same transaction ID until
/// the homeserver takes it.
async fn put_message(
    http: &reqwest::Client,
    hs: &str,
    token: &str,
    room: &str,
    k: usize,
    body: &str,
) -> anyhow::Result<()> {
    let url = format!(
        "{hs}/_matrix/client/v3/rooms/{}/send/m.room.message/soak-{k}",
        urlencode(room)
    );
    for _ in 0..20 {
        match http
            .put(&url)
            .bearer_auth(token)
            .json(&json!({"msgtype": "m.text", "body": body}))
            .timeout(Duration::from_secs(30))
            .send()
            .await
        {
            Ok(r) if r.status().is_success() => return Ok(()),
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                bail!("{url} answered {}: {}", r.status(), r.text().await?)
            }
            _ => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
    bail!("the homeserver never took {body:?}")
}

/// Every conversation's replies as the visitor's room has them, in timeline order: (number,
/// `origin_server_ts`).
async fn read_replies(
    http: &reqwest::Client,
    env: &TestEnv,
    conversations: &[Conversation],
) -> anyhow::Result<Vec<Vec<(usize, i64)>>> {
    let reads = conversations.iter().enumerate().map(|(i, c)| async move {
        let events = room_messages(http, &env.hs_url, &c.visitor_token, &c.room).await?;
        anyhow::Ok(
            events
                .iter()
                .filter_map(|e| {
                    let (c, k) = find_marker(e["content"]["body"].as_str()?, 'r')?;
                    (c == i).then(|| (k, e["origin_server_ts"].as_i64().unwrap_or(0)))
                })
                .collect::<Vec<_>>(),
        )
    });
    // A few rooms at a time: 500 reads at once would be a flood of their own.
    let mut all = Vec::new();
    let reads: Vec<_> = reads.collect();
    let mut reads = reads.into_iter();
    loop {
        let batch: Vec<_> = reads.by_ref().take(8).collect();
        if batch.is_empty() {
            break;
        }
        all.extend(futures_util::future::try_join_all(batch).await?);
    }
    Ok(all)
}

/// Reads Switchboard's process and its own gauges at the end of each window.
async fn sample_windows(
    http: &reqwest::Client,
    metrics_url: &str,
    pid: u32,
    plan: &Plan,
    started: Instant,
) -> Vec<Window> {
    let span = plan.duration.div_f64(plan.windows as f64);
    let mut windows = Vec::new();
    let mut before = read_window(http, metrics_url, pid).await.outbox_meters;
    for i in 1..=plan.windows {
        tokio::time::sleep_until((started + span * i as u32).into()).await;
        let mut w = read_window(http, metrics_url, pid).await;
        w.outbox_means_ms = std::array::from_fn(|m| {
            let ((sum, count), (sum0, count0)) = (w.outbox_meters[m], before[m]);
            1000.0 * (sum - sum0) / (count - count0)
        });
        before = w.outbox_meters;
        windows.push(w);
    }
    windows
}

async fn read_window(http: &reqwest::Client, metrics_url: &str, pid: u32) -> Window {
    let (fds, sockets) = descriptors(pid);
    let text = match http.get(metrics_url).send().await {
        Ok(r) => r.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    };
    let value = |name: &str| -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
    };
    let gauge = |name: &str| value(name).unwrap_or(f64::NAN);
    Window {
        // A histogram not recorded into yet has no series: nothing so far.
        outbox_meters: OUTBOX_METERS.map(|(_, name)| {
            let total = |what| value(&name.replace("{}", what)).unwrap_or(0.0);
            (total("sum"), total("count"))
        }),
        rss_mib: rss_mib(pid),
        threads: threads(pid),
        fds,
        sockets,
        tasks: gauge("switchboard_runtime_tasks"),
        db_connections: gauge("switchboard_database_connections"),
        ..Window::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_read_back_and_never_match_a_longer_one() {
        assert_eq!(find_marker(&marker(12, 'v', 3), 'v'), Some((12, 3)));
        assert_eq!(find_marker(&marker(12, 'v', 3), 'r'), None);
        // A reply quoting the message it answers.
        let reply = format!("> {}\n\n{}", marker(1, 'v', 10), marker(1, 'r', 10));
        assert_eq!(find_marker(&reply, 'r'), Some((1, 10)));
        assert!(!marker(1, 'v', 12).contains(&marker(1, 'v', 1)));
        assert!(!marker(11, 'v', 1).contains(&marker(1, 'v', 1)));
        assert_eq!(find_marker("hello", 'v'), None);
    }

    #[test]
    fn a_tally_counts_lost_doubled_and_reordered() {
        let mut c = Count::default();
        tally(&mut c, 0, 5, [1, 3, 2, 3, 5].into_iter());
        assert_eq!((c.sent, c.lost, c.doubled, c.out_of_order), (5, 1, 1, 1));
    }
}
