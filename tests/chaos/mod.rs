//! Crash bursts (issue 16, point 1): messages both ways across many conversations, held in turn
//! by Matrix, Telegram, Discord and email responders, while one part of the system is killed
//! with SIGKILL at random points and started again: Switchboard itself, Synapse, or the
//! PostgreSQL under Switchboard. Afterwards each conversation is read where its people read
//! it (the visitor's room; the responder's relay room, Telegram chat, Discord thread or
//! mailbox) and
//! every message is counted: lost, doubled, out of order.
//!
//! Shared by the short form in the test suite (`tests/e2e_chaos.rs`) and the long form that
//! `scripts/chaos.sh` runs on demand and writes into `docs/reliability.md`.
//!
//! The senders behave like real clients: a visitor or Matrix responder whose request fails
//! (Synapse down) sends it again under the same transaction ID, so the homeserver itself never
//! doubles; a Telegram or Discord responder's message waits in the stand-in (the update queue,
//! the gateway's resumable session), as it would on the platform; an email responder's reply
//! waits in Switchboard's mailbox, or in the responder's mail client while the mail server is
//! away (it sends again until the server takes it). So whatever is lost, doubled or reordered
//! was Switchboard's doing.

use std::{
    collections::HashMap,
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use discord_standin::{DcUser, DiscordStandIn};
use serde_json::{Value, json};
use telegram_standin::{StandIn, TgUser};

use crate::{common::*, mail_thread::Mail};

mod cluster;
pub mod email;
mod faults;
pub mod lost;
mod outcome;
pub mod stranded;

pub use cluster::{LEASE_SECONDS, Under};
use faults::{kill_9, kill_postgres, kill_repeatedly, script, start_postgres};
pub use outcome::{Kill, Outcome, TABLE_HEAD, Tally};

const TOKEN: &str = "1616:chaos-standin-token";
const DISCORD_TOKEN: &str = "MTY.chaos.bot-token";
/// Where the conversations' responders are, in turn.
pub const PLATFORMS: [&str; 4] = ["matrix", "telegram", "discord", "email"];
/// How long, after the last message was sent, everything may take to arrive.
const DRAIN: Duration = Duration::from_secs(180);
/// How long a stray duplicate gets to show up once everything has arrived.
const SETTLE: Duration = Duration::from_secs(3);

/// What is killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Victim {
    /// The Switchboard process (on SQLite).
    Switchboard,
    /// The homeserver (Switchboard on SQLite keeps running).
    Synapse,
    /// Not a kill: the platforms misbehave in turn (issue 16 point 2), the Telegram and
    /// Discord stand-ins and the mail server together:
    /// 429s with `retry_after`, 500s, a connection dropped or a call left hanging, an answer
    /// after the client's timeout to a request that landed (Discord; Telegram's Bot API has
    /// no idempotency key, so a retry there would double), and both platforms away. The mail
    /// server's SMTP front answers Switchboard's mail 451, drops the connection, or hangs
    /// (SMTP has no idempotency key either, so no late answer), and the whole mail server
    /// (SMTP and IMAP) goes away.
    Platforms,
    /// The homeserver, once, for a long outage (issue 16 point 3: five minutes in the long
    /// form) while everyone keeps writing.
    SynapseOutage,
    /// The PostgreSQL cluster Switchboard stores in (Switchboard keeps running).
    Postgres,
    /// Two instances on one PostgreSQL behind a load balancer (issue 17), hit in turn: the
    /// one that leads killed (the other must take the lead over and go on), the other one
    /// killed, the leader paused (SIGSTOP) past its lease and resumed (it must not act as
    /// leader any more), and both restarted one after the other (SIGTERM, as a rolling
    /// upgrade does).
    Instances,
}

impl Victim {
    /// How `SWITCHBOARD_CHAOS_ONLY` names it.
    pub fn key(self) -> &'static str {
        match self {
            Self::Switchboard => "switchboard",
            Self::Synapse => "synapse",
            Self::SynapseOutage => "outage",
            Self::Platforms => "platforms",
            Self::Postgres => "postgres",
            Self::Instances => "instances",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Switchboard => "Switchboard",
            Self::Synapse => "Synapse",
            Self::SynapseOutage => "Synapse, one long outage",
            Self::Platforms => "Platform faults",
            Self::Postgres => "PostgreSQL under Switchboard",
            Self::Instances => "One of two instances",
        }
    }

    /// Whether a Switchboard process is what is killed (one instance, or one of two).
    pub fn kills_switchboard(self) -> bool {
        matches!(self, Self::Switchboard | Self::Instances)
    }
}

/// The size of one run.
#[derive(Clone, Debug)]
pub struct Plan {
    /// Conversations; held in turn by a Matrix, a Telegram, a Discord and an email responder.
    pub conversations: usize,
    /// Messages each way in each conversation.
    pub per_way: usize,
    /// The time over which each sender spreads its messages.
    pub window: Duration,
    /// SIGKILLs during the window.
    pub kills: usize,
    /// How long the victim stays down after each kill, at most (at least a fifth of it); a
    /// [`Victim::SynapseOutage`] stays down exactly this long.
    pub max_down: Duration,
    /// Seeds the kill points, the down times and the senders' pacing, so a run can be repeated.
    pub seed: u64,
}

/// One conversation of the run.
struct Conversation {
    index: usize,
    room: String,
    visitor_token: String,
    /// The responder's ghost in the visitor's room.
    ghost: String,
    side: Side,
}

enum Side {
    Matrix {
        relay: String,
        token: String,
        _client: Box<MatrixResponder>,
    },
    Telegram {
        user: TgUser,
    },
    Discord {
        user: DcUser,
        /// The conversation's private thread in the staff channel.
        thread: u64,
    },
    Email(email::EmailResponder),
}

impl Side {
    fn platform(&self) -> &'static str {
        match self {
            Self::Matrix { .. } => "matrix",
            Self::Telegram { .. } => "telegram",
            Self::Discord { .. } => "discord",
            Self::Email(_) => "email",
        }
    }
}

fn marker(conversation: usize, way: char, k: usize) -> String {
    format!("chaos c{conversation} {way}{k}")
}

/// The message numbers of every `chaos c<conversation> <way><k>` in `text`, in order.
fn markers_in(text: &str, conversation: usize, way: char) -> Vec<usize> {
    let needle = format!("chaos c{conversation} {way}");
    let mut found = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find(&needle) {
        rest = &rest[at + needle.len()..];
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        if let Ok(k) = digits.parse() {
            found.push(k);
        }
    }
    found
}

/// Runs one crash burst against the services `scripts/test.sh` started, on appservice slot
/// `slot_no`, and counts what arrived. Errors only when the run itself could not be done;
/// what was lost or doubled is in the outcome.
pub async fn run(
    env: &TestEnv,
    slot_no: u32,
    victim: Victim,
    plan: &Plan,
) -> anyhow::Result<Outcome> {
    let slot = Slot::load(env, slot_no)?;
    // The bot of slot N is @sbtNbot (scripts/test.sh); it speaks in relay rooms.
    let bot = format!("@sbt{slot_no}bot:{}", env.server_name);
    let tg = StandIn::start(TOKEN).await?;
    let dc = DiscordStandIn::start(DISCORD_TOKEN).await?;
    let staff = dc.create_text_channel("chaos-staff");
    let mail = Mail::new("chaos").context("the test mail server (scripts/test.sh starts it)")?;
    let mut config = format!(
        // Every visitor comes from loopback: the per-address limit on new conversations would
        // refuse all but the first few. Mail is sent at once, not held to be batched.
        "[visitors]\nconversations_per_minute = 1000\nburst = 100\npublic_url = \"http://{listen}\"\n\n\
         [telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         {discord}staff_channel = \"{staff}\"\n\n{email}",
        listen = slot.listen,
        api = tg.api_url(),
        discord = discord_config(&dc, DISCORD_TOKEN, ""),
        email = mail.email_section(0),
    );
    let mut matrix_ids = HashMap::new();
    let mut tg_users = HashMap::new();
    let mut dc_users = HashMap::new();
    let mut mail_addresses = HashMap::new();
    for i in 0..plan.conversations {
        let platform = PLATFORMS[i % PLATFORMS.len()];
        let contact = if platform == "matrix" {
            let local = unique(&format!("chaos{i}r"));
            let id = env.user_id(&local);
            let contact = format!("{{ platform = \"matrix\", address = {id:?} }}");
            matrix_ids.insert(i, local);
            contact
        } else if platform == "telegram" {
            let user = tg.user(1_616_000 + i as i64, &format!("R{i}"), None);
            let contact = format!("{{ platform = \"telegram\", address = \"{}\" }}", user.id);
            tg_users.insert(i, user);
            contact
        } else if platform == "discord" {
            let user = dc.user(&format!("r{i}"));
            let contact = format!("{{ platform = \"discord\", address = \"{}\" }}", user.id);
            dc_users.insert(i, user);
            contact
        } else {
            let address = email::address(i);
            let contact = format!("{{ platform = \"email\", address = {address:?} }}");
            mail_addresses.insert(i, address);
            contact
        };
        let _ = write!(
            config,
            "[[topics]]\nid = \"c{i}\"\nname = \"Chaos {i}\"\n\n\
             [[responders]]\nid = \"r{i}\"\ndisplay_name = \"R{i}\"\ntopics = [\"c{i}\"]\n\
             contacts = [{contact}]\n\n"
        );
    }
    let mut under = match victim {
        Victim::Postgres => Under::One(Switchboard::start_on_postgres(env, &slot, &config).await?),
        Victim::Instances => Under::two(env, &slot, &config).await?,
        _ => Under::One(Switchboard::start(env, &slot, &config).await?),
    };
    let base = under.base();
    let store = under.store().await?;
    let http = reqwest::Client::new();
    if !dc_users.is_empty() {
        discord_gateway_up(&dc).await?;
    }

    // --- every conversation started, offered and accepted -----------------------------------
    let mut conversations = Vec::new();
    for i in 0..plan.conversations {
        let mut visitor = Visitor::guest(env, &base).await?;
        let room = visitor.start(&format!("c{i}")).await?;
        visitor
            .send(&format!("hello from conversation {i}"))
            .await?;
        let side = if let Some(local) = matrix_ids.get(&i) {
            let responder = MatrixResponder::register(env, local).await?;
            let relay = relay_room_of(&store, &room, &format!("r{i}")).await?;
            responder.accept_invite(&relay).await?;
            Side::Matrix {
                relay,
                token: login(&http, &env.hs_url, local).await?,
                _client: Box::new(responder),
            }
        } else if let Some(user) = dc_users.remove(&i) {
            let alias = store
                .conversation(&room)
                .await?
                .context("the conversation")?
                .visitor_alias;
            let thread = accept_on_discord(&dc, &user, &alias).await?;
            Side::Discord { user, thread }
        } else if let Some(address) = mail_addresses.get(&i) {
            let hint = format!("hello from conversation {i}");
            Side::Email(email::accept(&mail, address, &hint).await?)
        } else {
            let user = tg_users.remove(&i).context("telegram user")?;
            tg.wait_for_sent(user.id, |s| open_offers(s).len() == 1, WAIT)
                .await
                .map_err(anyhow::Error::msg)?;
            accept_open_offer(&tg, &user);
            Side::Telegram { user }
        };
        let ghost = answered(&mut visitor, &store, &room).await?;
        conversations.push(Conversation {
            index: i,
            room,
            visitor_token: visitor.token.clone(),
            ghost,
            side,
        });
    }
    drop(store);

    // --- the burst, both ways, with the victim killed at random points ------------------------
    let started = Instant::now();
    let mut senders = Vec::new();
    for (n, c) in conversations.iter().enumerate() {
        for (k, way) in ['v', 'r'].into_iter().enumerate() {
            senders.push(send_all(
                &http,
                env,
                (&tg, &dc, &mail),
                c,
                way,
                plan,
                plan.seed.wrapping_add(2 * n as u64 + 1 + k as u64),
            ));
        }
    }
    let sending = futures_util::future::try_join_all(senders);
    // A visitor token Switchboard has not seen (a guest registered just before the outage):
    // whose it is must be asked of the homeserver. A visitor seen within the last minute is
    // remembered (`token_owners.rs`) and gets their conversation back without it.
    let probe = (!conversations.is_empty()).then(|| format!("syt_unseen_visitor_{}", plan.seed));
    let chaos = kill_repeatedly(
        env,
        &mut under,
        (&tg, &dc, &mail),
        victim,
        plan,
        started,
        probe.as_deref(),
    );
    let (sent, killed) = tokio::join!(sending, chaos);
    let sent_events = sent?.into_iter().flatten().collect();
    let (kills, answers_while_down) = killed?;
    let sent_at = Instant::now();

    // --- everything counted where it arrives --------------------------------------------------
    let mut arrived_at = None;
    let mut drained = Vec::new();
    let tallies = loop {
        let tallies = count_all(&http, env, (&tg, &dc, &mail), &conversations, plan, &bot).await?;
        let complete = tallies.iter().all(|t| t.lost == 0);
        for platform in PLATFORMS {
            if !drained.iter().any(|(p, _)| *p == platform)
                && tallies
                    .iter()
                    .filter(|t| t.platform == platform)
                    .all(|t| t.lost == 0)
            {
                drained.push((platform, sent_at.elapsed()));
            }
        }
        match arrived_at {
            None if complete => arrived_at = Some(Instant::now()),
            Some(at) if at.elapsed() >= SETTLE => break tallies,
            _ if sent_at.elapsed() > DRAIN => break tallies,
            _ => {}
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    tg.stop();
    dc.stop();
    // A fault never played proves nothing: each was aimed at Switchboard's mail, which kept
    // flowing after it was queued.
    let unplayed = mail.server.faults_pending(&mail.domain)?;
    anyhow::ensure!(
        unplayed == 0,
        "{unplayed} SMTP faults were never played on Switchboard's mail"
    );
    Ok(Outcome {
        victim,
        plan: plan.clone(),
        kills,
        tallies,
        drained,
        answers_while_down,
        sent_events,
    })
}

/// Sends `plan.per_way` numbered messages one way in one conversation, spread over the window
/// with random gaps, each one only after the one before it was accepted. Returns the event ID
/// of each sent through the homeserver.
async fn send_all(
    http: &reqwest::Client,
    env: &TestEnv,
    (tg, dc, mail): (&StandIn, &DiscordStandIn, &Mail),
    c: &Conversation,
    way: char,
    plan: &Plan,
    seed: u64,
) -> anyhow::Result<Vec<((usize, char, usize), String)>> {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut events = Vec::new();
    let gap = plan.window.as_secs_f64() / plan.per_way as f64;
    for k in 1..=plan.per_way {
        tokio::time::sleep(Duration::from_secs_f64(gap * (0.5 + rng.f64()))).await;
        let text = marker(c.index, way, k);
        let txn = format!("chaos-{way}{k}");
        match (way, &c.side) {
            ('v', _) => {
                let id = put_message(
                    http,
                    &env.hs_url,
                    &c.visitor_token,
                    &c.room,
                    &txn,
                    &text,
                    plan,
                )
                .await?;
                events.push(((c.index, way, k), id));
            }
            (_, Side::Matrix { relay, token, .. }) => {
                let id = put_message(http, &env.hs_url, token, relay, &txn, &text, plan).await?;
                events.push(((c.index, way, k), id));
            }
            (_, Side::Telegram { user }) => {
                tg.user_sends(user, &text);
            }
            (_, Side::Discord { user, thread }) => {
                dc.user_sends(user, *thread, &text);
            }
            (_, Side::Email(responder)) => email::send(mail, responder, &text).await?,
        }
    }
    Ok(events)
}

/// Presses Accept on the Discord offer naming `alias` in `user`'s direct chat with the bot; the
/// conversation's private thread.
async fn accept_on_discord(dc: &DiscordStandIn, user: &DcUser, alias: &str) -> anyhow::Result<u64> {
    let dm = wait_for("the bot's direct chat", || async {
        Ok(dc.dm_channel_of(user))
    })
    .await?;
    let offer = |messages: &[discord_standin::DcMessage]| {
        messages.iter().find_map(|m| {
            let id = m.components[0]["components"][0]["custom_id"].as_str()?;
            (m.content.contains(alias) && id.starts_with("accept:")).then(|| (m.id, id.to_owned()))
        })
    };
    let messages = discord_messages(dc, dm, "the offer", |m| offer(m).is_some()).await?;
    let (message, custom_id) = offer(&messages).context("the offer")?;
    let press = dc.user_presses(user, dm, message, &custom_id);
    dc.wait_for_interaction_response(&press, Duration::from_secs(3))
        .await
        .context("the Accept press was not answered within Discord's 3 seconds")?;
    // The thread is opened and the responder added in two calls; until the second the
    // responder cannot write there.
    wait_for("the conversation's thread, the responder in it", || async {
        Ok(dc
            .threads()
            .into_iter()
            .find(|t| t.name.contains(alias) && t.members.contains(&user.id))
            .map(|t| t.id))
    })
    .await
}

/// `PUT /rooms/{room}/send/m.room.message/{txn}`, sent again under the same transaction ID
/// until the homeserver accepts it, as a Matrix client does while its server is away; the
/// event ID it was given.
async fn put_message(
    http: &reqwest::Client,
    hs: &str,
    token: &str,
    room: &str,
    txn: &str,
    body: &str,
    plan: &Plan,
) -> anyhow::Result<String> {
    let url = format!(
        "{hs}/_matrix/client/v3/rooms/{}/send/m.room.message/{txn}",
        urlencode(room)
    );
    let deadline = Instant::now() + DRAIN + plan.max_down;
    loop {
        let answer = http
            .put(&url)
            .bearer_auth(token)
            .json(&json!({"msgtype": "m.text", "body": body}))
            .timeout(Duration::from_secs(10))
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                let sent: Value = r.json().await?;
                return Ok(sent["event_id"].as_str().unwrap_or_default().to_owned());
            }
            Ok(r) if r.status().is_client_error() && r.status().as_u16() != 429 => {
                bail!("{url} answered {}: {}", r.status(), r.text().await?)
            }
            _ if Instant::now() > deadline => bail!("{url}: the homeserver never took {body:?}"),
            _ => tokio::time::sleep(Duration::from_millis(250)).await,
        }
    }
}

/// One conversation with a Matrix responder, for the tests of one fault: the configuration
/// ([`OneMatrixConversation::config`]) and, once Switchboard runs on it, the conversation
/// answered ([`OneMatrixConversation::open`]).
pub struct OneMatrixConversation {
    pub bot: String,
    pub visitor: Visitor,
    pub room: String,
    pub relay: String,
    /// The responder's ghost in the visitor's room.
    pub ghost: String,
    /// The responder's own access token (a second device).
    pub token: String,
}

impl OneMatrixConversation {
    /// Switchboard's configuration: one topic, one responder `r` on Matrix as `local`.
    pub fn config(env: &TestEnv, topic: &str, local: &str) -> String {
        format!(
            "[[topics]]\nid = {topic:?}\nname = {topic:?}\n\n\
             [[responders]]\nid = \"r\"\ndisplay_name = \"R\"\ntopics = [{topic:?}]\n\
             contacts = [{{ platform = \"matrix\", address = {:?} }}]\n",
            env.user_id(local)
        )
    }

    /// A guest visitor starts a conversation on `topic`; the responder `local` accepts it.
    pub async fn open(
        env: &TestEnv,
        sb: &Switchboard,
        slot_no: u32,
        topic: &str,
        local: &str,
    ) -> anyhow::Result<Self> {
        let store = sb.store().await?;
        let mut visitor = Visitor::guest(env, &sb.base).await?;
        let room = visitor.start(topic).await?;
        visitor.send("hello").await?;
        let responder = MatrixResponder::register(env, local).await?;
        let relay = relay_room_of(&store, &room, "r").await?;
        responder.accept_invite(&relay).await?;
        let ghost = answered(&mut visitor, &store, &room).await?;
        let token = login(&reqwest::Client::new(), &env.hs_url, local).await?;
        Ok(Self {
            bot: format!("@sbt{slot_no}bot:{}", env.server_name),
            visitor,
            room,
            relay,
            ghost,
            token,
        })
    }
}

/// Waits until the visitor is told who answers; the responder's ghost in the room.
async fn answered(
    visitor: &mut Visitor,
    store: &switchboard_bridge::Store,
    room: &str,
) -> anyhow::Result<String> {
    visitor
        .sync_until("who answers", |seen| {
            seen.iter()
                .any(|s| s.body.starts_with("You are now talking with"))
        })
        .await?;
    wait_for("the assignment", || async {
        Ok(store
            .active_assignments_for_room(room)
            .await?
            .first()
            .map(|a| a.ghost_user_id.clone()))
    })
    .await
}

/// Logs in as the Matrix responder (a second device): the token their messages are sent with.
async fn login(http: &reqwest::Client, hs: &str, local: &str) -> anyhow::Result<String> {
    let r: Value = http
        .post(format!("{hs}/_matrix/client/v3/login"))
        .json(&json!({
            "type": "m.login.password",
            "identifier": {"type": "m.id.user", "user": local},
            "password": "correct horse battery staple",
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(r["access_token"]
        .as_str()
        .context("access_token")?
        .to_owned())
}

/// Every `m.room.message` body in `room` from `sender`, oldest first, read with `token`.
async fn room_bodies(
    http: &reqwest::Client,
    hs: &str,
    token: &str,
    room: &str,
    sender: &str,
) -> anyhow::Result<Vec<String>> {
    Ok(room_messages(http, hs, token, room)
        .await?
        .into_iter()
        .filter(|e| e["sender"] == sender)
        .map(|e| e["content"]["body"].as_str().unwrap_or_default().to_owned())
        .collect())
}

/// Counts both directions of every conversation where they arrive. While the homeserver is
/// down, reading fails; the caller polls again.
async fn count_all(
    http: &reqwest::Client,
    env: &TestEnv,
    (tg, dc, mail): (&StandIn, &DiscordStandIn, &Mail),
    conversations: &[Conversation],
    plan: &Plan,
    bot: &str,
) -> anyhow::Result<Vec<Tally>> {
    let mut tallies = Vec::new();
    for c in conversations {
        let to_visitor =
            retry_read(|| room_bodies(http, &env.hs_url, &c.visitor_token, &c.room, &c.ghost))
                .await?;
        let (to_responder, folded) = match &c.side {
            Side::Matrix { relay, token, .. } => (
                retry_read(|| room_bodies(http, &env.hs_url, token, relay, bot)).await?,
                0,
            ),
            Side::Telegram { user } => (
                tg.sent(user.id)
                    .into_iter()
                    .filter_map(|m| m.text)
                    .collect(),
                0,
            ),
            Side::Discord { thread, .. } => (
                dc.messages(*thread)
                    .into_iter()
                    .filter(|m| m.author_id == dc.bot_user_id())
                    .map(|m| m.content)
                    .collect(),
                0,
            ),
            Side::Email(responder) => retry_read(|| email::received(mail, responder)).await?,
        };
        for (way, name, bodies, folded) in [
            ('v', "visitor → responder", &to_responder, folded),
            ('r', "responder → visitor", &to_visitor, 0),
        ] {
            let arrived: Vec<usize> = bodies
                .iter()
                .flat_map(|b| markers_in(b, c.index, way))
                .collect();
            let (missing, extra, late) = Tally::read(&arrived, plan.per_way);
            tallies.push(Tally {
                conversation: c.index,
                platform: c.side.platform(),
                way: name,
                sent: plan.per_way,
                lost: missing.len(),
                doubled: extra.len(),
                out_of_order: late.len(),
                missing,
                extra,
                late,
                folded,
            });
        }
    }
    Ok(tallies)
}

/// Reads again for a while if the homeserver is not answering (it may be starting up).
async fn retry_read<T, F, Fut>(mut read: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match read().await {
            Ok(v) => return Ok(v),
            Err(e) if Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counting_finds_each_kind_of_fault() {
        assert_eq!(Tally::count(&[1, 2, 3], 3), (0, 0, 0));
        assert_eq!(Tally::count(&[1, 3], 3), (1, 0, 0));
        assert_eq!(Tally::count(&[1, 2, 2, 3], 3), (0, 1, 0));
        assert_eq!(Tally::count(&[2, 1, 3], 3), (0, 0, 1));
        // A resend of an earlier message after later ones is a double, not a reordering.
        assert_eq!(Tally::count(&[1, 2, 3, 1], 3), (0, 1, 0));
        // Which ones: lost, doubled, late.
        assert_eq!(
            Tally::read(&[3, 1, 2, 5, 5], 5),
            (vec![4], vec![5], vec![1, 2])
        );
    }

    #[test]
    fn markers_are_read_in_order_even_when_batched() {
        assert_eq!(
            markers_in("A1: chaos c3 v7\nchaos c3 v8 chaos c31 v9", 3, 'v'),
            [7, 8]
        );
        assert_eq!(markers_in(&marker(12, 'r', 40), 12, 'r'), [40]);
        assert!(markers_in("chaos c1 r1", 1, 'v').is_empty());
    }
}
