//! The abuse flood (issue 16, point 6): the visitor API under a flood from many client
//! addresses at once while a well-behaved visitor keeps talking with a responder.
//!
//! Every flooding address is its own loopback address (127.0.0.2 upwards; Linux routes all of
//! 127/8 to loopback, so a socket may be bound to any of them), with its own client and one
//! request in flight at a time, as fast as answers come. Each address cycles through what an
//! abuser would try: creating visitor accounts, starting conversations with made-up tokens,
//! typing into and ending the well-behaved visitor's conversation with made-up tokens, reading
//! the public config, oversized and malformed bodies. Every answer is counted by kind and
//! status; the well-behaved visitor (127.0.0.1) sends a numbered message every second,
//! each timed until the responder's Telegram chat shows it; Switchboard's resident memory is
//! sampled throughout.

use std::{
    collections::BTreeMap,
    net::{IpAddr, Ipv4Addr},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::Context;
use serde_json::json;
use telegram_standin::StandIn;

use crate::common::*;

const TOKEN: &str = "1717:abuse-standin-token";

/// The limits the flood meets (the defaults but for the per-hour ceiling, which the long form
/// would otherwise reach, hiding the per-address limit behind it).
pub const LIMITS: &str = "conversations_per_minute = 6\nburst = 3\n\
    accounts_per_minute = 3\naccounts_burst = 3\naccounts_per_hour = 100000\n\
    requests_per_second = 20\n\n";
const ACCOUNTS_PER_MINUTE: f64 = 3.0;
const ACCOUNTS_BURST: f64 = 3.0;

/// How visitors get their identity: the visitor API floods differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Visitor accounts on the homeserver (`POST /api/v1/visitors` answers a Matrix token).
    Accounts,
    /// Sessions reached only through Switchboard's visitor proxy (`/visitor-proxy`).
    Proxied,
}

impl Mode {
    pub fn name(self) -> &'static str {
        match self {
            Mode::Accounts => "visitor API (accounts mode)",
            Mode::Proxied => "visitor API and proxy (proxied mode)",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Mode::Accounts => "accounts",
            Mode::Proxied => "proxied",
        }
    }

    fn kinds(self) -> &'static [Kind] {
        match self {
            Mode::Accounts => &KINDS[..7],
            Mode::Proxied => &KINDS,
        }
    }
}

/// How big a flood.
#[derive(Debug, Clone, Copy)]
pub struct Plan {
    /// Flooding client addresses.
    pub addresses: u32,
    /// How long the flood lasts.
    pub window: Duration,
}

/// What one kind of request is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    NewAccount,
    StartWithMadeUpToken,
    TypingWithMadeUpToken,
    EndWithMadeUpToken,
    Config,
    OversizedBody,
    MalformedBody,
    /// Proxied mode: reading through the proxy with a made-up session token.
    ProxyReadWithMadeUpToken,
    /// Proxied mode: a real session of the flooder's own, sending into the well-behaved
    /// visitor's room through the proxy.
    ProxySendIntoAnothersRoom,
}

const KINDS: [Kind; 9] = [
    Kind::NewAccount,
    Kind::StartWithMadeUpToken,
    Kind::TypingWithMadeUpToken,
    Kind::EndWithMadeUpToken,
    Kind::Config,
    Kind::OversizedBody,
    Kind::MalformedBody,
    Kind::ProxyReadWithMadeUpToken,
    Kind::ProxySendIntoAnothersRoom,
];

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::NewAccount => "new visitor account",
            Kind::StartWithMadeUpToken => "start a conversation, made-up token",
            Kind::TypingWithMadeUpToken => "typing in another's conversation, made-up token",
            Kind::EndWithMadeUpToken => "ending another's conversation, made-up token",
            Kind::Config => "public config",
            Kind::OversizedBody => "start a conversation, body over 2 MiB",
            Kind::MalformedBody => "start a conversation, malformed body",
            Kind::ProxyReadWithMadeUpToken => "proxy: sync with a made-up session token",
            Kind::ProxySendIntoAnothersRoom => "proxy: own session, sending into another's room",
        }
    }

    /// The answers that are right for this kind. Anything else is a fault.
    fn expected(self, status: u16) -> bool {
        match self {
            Kind::NewAccount => matches!(status, 201 | 429),
            Kind::StartWithMadeUpToken => matches!(status, 401 | 429),
            // A made-up token is not the visitor: refused, never passed on.
            Kind::TypingWithMadeUpToken | Kind::EndWithMadeUpToken => {
                matches!(status, 401 | 404 | 429)
            }
            Kind::Config => status == 200,
            // Refusing to read the rest of a body over the limit may close the connection
            // before the client has written it all: then it sees no answer.
            Kind::OversizedBody => matches!(status, 413 | 429 | 0),
            Kind::MalformedBody => matches!(status, 400 | 429),
            Kind::ProxyReadWithMadeUpToken => status == 401,
            // Never through: a visitor reaches only their own conversation.
            Kind::ProxySendIntoAnothersRoom => matches!(status, 401 | 403 | 404 | 429),
        }
    }
}

/// What the flood came to.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Per kind: answers by status (0: no answer, a transport error).
    pub answers: BTreeMap<Kind, BTreeMap<u16, u64>>,
    /// Per kind: how long answers took (ms).
    pub took_ms: BTreeMap<Kind, Vec<f64>>,
    /// Accounts created per flooding address, most first.
    pub most_accounts_by_one_address: u64,
    pub accounts_allowed_per_address: u64,
    /// The well-behaved visitor: messages sent, arrived (in order), and how long each took.
    pub good_sent: usize,
    pub good_arrived: usize,
    pub good_refused: Vec<String>,
    pub good_before_ms: Vec<f64>,
    pub good_during_ms: Vec<f64>,
    /// Switchboard's resident memory (MiB): before, highest during, after.
    pub rss_before: f64,
    pub rss_peak: f64,
    pub rss_after: f64,
    /// Whether the well-behaved visitor's conversation was still going after the flood.
    pub conversation_survived: bool,
    pub flood_seconds: f64,
}

impl Outcome {
    /// Answers that were not right for their kind.
    pub fn faults(&self) -> Vec<String> {
        let mut out = Vec::new();
        for (kind, statuses) in &self.answers {
            for (status, n) in statuses {
                if !kind.expected(*status) {
                    out.push(format!("{}: {n} answered {status}", kind.name()));
                }
            }
        }
        if self.most_accounts_by_one_address > self.accounts_allowed_per_address {
            out.push(format!(
                "one address created {} visitor accounts; its limit allows {}",
                self.most_accounts_by_one_address, self.accounts_allowed_per_address
            ));
        }
        if self.good_arrived < self.good_sent {
            out.push(format!(
                "the well-behaved visitor's messages: {} of {} reached the responder in order",
                self.good_arrived, self.good_sent
            ));
        }
        out.extend(self.good_refused.iter().cloned());
        if !self.conversation_survived {
            out.push("the well-behaved visitor's conversation was ended by the flood".into());
        }
        out
    }

    pub fn total(&self) -> u64 {
        self.answers.values().flat_map(|s| s.values()).sum()
    }

    /// The figures as a Markdown table and lines.
    pub fn rows(&self) -> String {
        let mut out = String::from(
            "| request | sent | answers | median ms | p99 ms |\n|---|---|---|---|---|\n",
        );
        for (&kind, statuses) in &self.answers {
            let sent: u64 = statuses.values().sum();
            let answers: Vec<String> = statuses
                .iter()
                .map(|(s, n)| {
                    if *s == 0 {
                        format!("{n} × no answer")
                    } else {
                        format!("{n} × {s}")
                    }
                })
                .collect();
            let took = self.took_ms.get(&kind).cloned().unwrap_or_default();
            out.push_str(&format!(
                "| {} | {sent} | {} | {:.1} | {:.1} |\n",
                kind.name(),
                answers.join(", "),
                percentile(&took, 50.0),
                percentile(&took, 99.0),
            ));
        }
        out.push_str(&format!(
            "\n{} requests in {:.1} s ({:.0}/s). Most visitor accounts one address created: {} \
             (its limit allows {}). The well-behaved visitor: {} of {} messages reached the \
             responder, in order; from sending to the responder's Telegram chat, median {:.0} ms \
             and highest {:.0} ms before the flood, median {:.0} ms and highest {:.0} ms during \
             it. Switchboard's resident memory: {:.1} MiB before, {:.1} MiB at most during, \
             {:.1} MiB after.\n",
            self.total(),
            self.flood_seconds,
            self.total() as f64 / self.flood_seconds.max(0.001),
            self.most_accounts_by_one_address,
            self.accounts_allowed_per_address,
            self.good_arrived,
            self.good_sent,
            percentile(&self.good_before_ms, 50.0),
            percentile(&self.good_before_ms, 100.0),
            percentile(&self.good_during_ms, 50.0),
            percentile(&self.good_during_ms, 100.0),
            self.rss_before,
            self.rss_peak,
            self.rss_after,
        ));
        out
    }
}

pub async fn run(env: &TestEnv, slot_no: u32, mode: Mode, plan: Plan) -> anyhow::Result<Outcome> {
    let slot = Slot::load(env, slot_no)?;
    let tg = StandIn::start(TOKEN).await?;
    let user = tg.user(1_717_001, "Responder", None);
    let config = format!(
        "[visitors]\nmode = \"{mode}\"\n{LIMITS}[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"help\"\nname = \"Help\"\n\n\
         [[responders]]\nid = \"r\"\ndisplay_name = \"R\"\ntopics = [\"help\"]\n\
         contacts = [{{ platform = \"telegram\", address = \"{id}\" }}]\n",
        api = tg.api_url(),
        id = user.id,
        mode = mode.key(),
    );
    let sb = Switchboard::start(env, &slot, &config).await?;
    let pid = sb.pid().context("Switchboard's pid")?;

    // The well-behaved visitor, talking with the responder before the flood begins.
    let mut visitor = match mode {
        Mode::Accounts => Visitor::account(env, &sb.base).await?,
        Mode::Proxied => {
            let (status, session) = request_visitor_account(&sb.base).await?;
            anyhow::ensure!(
                status == 201,
                "POST /api/v1/visitors answered {status}: {session}"
            );
            let mut v = Visitor::signed_in(
                env,
                &sb.base,
                session["user_id"].as_str().context("user_id")?,
                session["access_token"].as_str().context("access_token")?,
            );
            v.hs = format!("{}/visitor-proxy", sb.base);
            v
        }
    };
    let room = visitor.start("help").await?;
    visitor.send("hello").await?;
    tg.wait_for_sent(user.id, |s| open_offers(s).len() == 1, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    accept_open_offer(&tg, &user);
    visitor
        .sync_until("who answers", |seen| {
            seen.iter()
                .any(|s| s.body.starts_with("You are now talking with"))
        })
        .await?;

    let mut outcome = Outcome::default();
    let mut n = 0;
    // A message a second, before and during the flood: Telegram's pace for one chat, so what
    // is timed is Switchboard, not the pacing.
    for _ in 0..5 {
        n += 1;
        let took = timed_message(&mut visitor, &tg, user.id, n).await?;
        outcome.good_before_ms.push(took);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    outcome.rss_before = rss_mib(pid);

    // The flood, and meanwhile the well-behaved visitor.
    let answers = Arc::new(Mutex::new(Vec::<(Kind, u16, f64, u32)>::new()));
    let started = Instant::now();
    let deadline = started + plan.window;
    let flooders: Vec<_> = (0..plan.addresses)
        .map(|i| {
            let answers = answers.clone();
            let base = sb.base.clone();
            let room = room.clone();
            let source = IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(127, 0, 0, 2)) + i));
            tokio::spawn(
                async move { flood(source, i, mode, &base, &room, deadline, &answers).await },
            )
        })
        .collect();
    let mut peak: f64 = outcome.rss_before;
    while Instant::now() < deadline {
        n += 1;
        match timed_message(&mut visitor, &tg, user.id, n).await {
            Ok(took) => outcome.good_during_ms.push(took),
            Err(e) => outcome
                .good_refused
                .push(format!("the well-behaved visitor: {e:#}")),
        }
        peak = peak.max(rss_mib(pid));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for f in flooders {
        f.await??;
    }
    outcome.flood_seconds = started.elapsed().as_secs_f64();
    outcome.rss_peak = peak.max(rss_mib(pid));
    tokio::time::sleep(Duration::from_secs(2)).await;
    outcome.rss_after = rss_mib(pid);

    // What arrived, in order.
    outcome.good_sent = n as usize;
    let texts: Vec<String> = tg
        .sent(user.id)
        .into_iter()
        .filter_map(|m| m.text)
        .collect();
    let mut next = 1;
    for t in &texts {
        if t.contains(&format!("well-behaved {next}.")) {
            next += 1;
        }
    }
    outcome.good_arrived = next as usize - 1;
    outcome.conversation_survived = sb
        .store()
        .await?
        .conversation(&room)
        .await?
        .is_some_and(|c| c.state.as_str() != "closed");

    let answers = std::mem::take(&mut *answers.lock().expect("answers"));
    let mut accounts: BTreeMap<u32, u64> = BTreeMap::new();
    for (kind, status, took, address) in answers {
        *outcome
            .answers
            .entry(kind)
            .or_default()
            .entry(status)
            .or_default() += 1;
        outcome.took_ms.entry(kind).or_default().push(took);
        if kind == Kind::NewAccount && status == 201 {
            *accounts.entry(address).or_default() += 1;
        }
    }
    outcome.most_accounts_by_one_address = accounts.values().copied().max().unwrap_or(0);
    outcome.accounts_allowed_per_address =
        (ACCOUNTS_BURST + (outcome.flood_seconds / 60.0 * ACCOUNTS_PER_MINUTE).ceil()) as u64;
    Ok(outcome)
}

/// One numbered message from the well-behaved visitor: how long until the responder's chat
/// shows it (ms).
async fn timed_message(
    visitor: &mut Visitor,
    tg: &StandIn,
    chat: i64,
    n: u32,
) -> anyhow::Result<f64> {
    let text = format!("well-behaved {n}.");
    let sent = Instant::now();
    visitor.send(&text).await?;
    tg.wait_for_sent(
        chat,
        |s| {
            s.iter()
                .any(|m| m.text.as_deref().is_some_and(|t| t.contains(&text)))
        },
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(sent.elapsed().as_secs_f64() * 1000.0)
}

/// One flooding address: one request in flight at a time, kinds in turn, until `deadline`.
async fn flood(
    source: IpAddr,
    index: u32,
    mode: Mode,
    base: &str,
    room: &str,
    deadline: Instant,
    answers: &Mutex<Vec<(Kind, u16, f64, u32)>>,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .local_address(source)
        .timeout(Duration::from_secs(30))
        .build()?;
    let big = vec![b'x'; (2 << 20) + 1024];
    let made_up = format!("syt_made_up_{index}");
    let proxy = format!("{base}/visitor-proxy/_matrix/client/v3");
    // Proxied mode: a session of this address's own, from its first successful try.
    let mut own_session: Option<String> = None;
    let kinds = mode.kinds();
    let mut k = index as usize;
    while Instant::now() < deadline {
        let kind = kinds[k % kinds.len()];
        k += 1;
        let conversations = format!("{base}/api/v1/conversations");
        let request = match kind {
            Kind::NewAccount => http.post(format!("{base}/api/v1/visitors")),
            Kind::StartWithMadeUpToken => http
                .post(&conversations)
                .bearer_auth(format!("{made_up}_{k}"))
                .json(&json!({"topic": "help"})),
            Kind::TypingWithMadeUpToken => http
                .post(format!("{conversations}/{}/typing", urlencode(room)))
                .bearer_auth(&made_up)
                .json(&json!({"typing": true})),
            Kind::EndWithMadeUpToken => http
                .post(format!("{conversations}/{}/end", urlencode(room)))
                .bearer_auth(&made_up),
            Kind::Config => http.get(format!("{base}/api/v1/config")),
            Kind::OversizedBody => http
                .post(&conversations)
                .bearer_auth(&made_up)
                .header("content-type", "application/json")
                .body(big.clone()),
            Kind::MalformedBody => http
                .post(&conversations)
                .bearer_auth(&made_up)
                .header("content-type", "application/json")
                .body("{\"topic\": "),
            Kind::ProxyReadWithMadeUpToken => http
                .get(format!("{proxy}/sync?timeout=0"))
                .bearer_auth(format!("sbv_{made_up}")),
            Kind::ProxySendIntoAnothersRoom => http
                .put(format!(
                    "{proxy}/rooms/{}/send/m.room.message/flood{k}",
                    urlencode(room)
                ))
                .bearer_auth(own_session.as_deref().unwrap_or("sbv_none"))
                .json(&json!({"msgtype": "m.text", "body": "not yours"})),
        };
        let asked = Instant::now();
        let status = match request.send().await {
            Ok(r) => {
                let status = r.status().as_u16();
                let body = r.bytes().await.unwrap_or_default();
                if kind == Kind::NewAccount && status == 201 && own_session.is_none() {
                    own_session = serde_json::from_slice::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v["access_token"].as_str().map(str::to_owned));
                }
                status
            }
            Err(_) => 0,
        };
        answers.lock().expect("answers").push((
            kind,
            status,
            asked.elapsed().as_secs_f64() * 1000.0,
            index,
        ));
    }
    Ok(())
}
