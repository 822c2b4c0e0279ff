//! The bridged paths: one Switchboard with a Telegram responder (the stand-in), a Discord
//! responder (its stand-in, `discord.rs`), an email responder (a mailbox on the test mail
//! server, `email.rs`) and a Matrix responder (a matrix-sdk client in a relay room), and the
//! latency of each direction.

use std::time::{Duration, Instant};

use matrix_sdk::{Room, ruma::events::room::message::RoomMessageEventContent};
use telegram_standin::{StandIn, TgUser};

use crate::common::*;
use crate::discord::DiscordSide;
use crate::email::EmailSide;
use crate::procfs;
use crate::report::{Row, ms, progress};

pub const TOKEN: &str = "7474:bench-standin-token";
/// What Switchboard logs during the benchmark: what a deployment would (the tests' debug
/// logging writes a line per event, which would be measured as Switchboard's CPU).
pub const LOG_FILTER: &str = "info,sqlx=warn";

/// Spacing of samples that go to one Telegram chat: Switchboard paces itself to about one
/// message per second per chat (the Bot API's limit), and these are latencies, not the wait.
pub const TELEGRAM_SPACING: Duration = Duration::from_millis(1100);

/// The benchmark's Switchboard and whoever answers its conversations.
pub struct Bench {
    /// The Switchboard (alone), or the first of several ([`Bench::start_cluster`]).
    pub sb: Switchboard,
    /// Where visitors and the homeserver reach Switchboard: `sb` itself, or the load
    /// balancer in front of the instances.
    pub base: String,
    /// The other instances and the load balancer, for [`Bench::start_cluster`]: held for
    /// as long as the bench runs (dropping them stops them).
    _others: Vec<Switchboard>,
    _lb: Option<LoadBalancer>,
    pub tg: StandIn,
    /// Holds the Telegram conversation.
    pub bella: TgUser,
    /// Holds the Matrix conversation.
    pub max: MatrixResponder,
    /// Writes to the bot as an initiator (`initiators.rs`).
    pub ivy: TgUser,
    /// Answers the Discord initiator (`initiators.rs`), alone on her topic.
    pub tess: TgUser,
    /// The Discord stand-in and the responder on it.
    pub discord: DiscordSide,
    /// The test mail server and the email responder's address on it.
    pub email: EmailSide,
    pub bot_id: String,
    /// The registration's token the homeserver authenticates its transactions with.
    pub hs_token: String,
    pub hs_url: String,
    pub pid: u32,
}

impl Bench {
    /// One Switchboard on SQLite, at the slot's address.
    pub async fn start(env: &TestEnv, slot_no: u32) -> anyhow::Result<Self> {
        Self::start_as(env, slot_no, None).await
    }

    /// `instances` Switchboards on one fresh PostgreSQL database, behind HAProxy at the slot's
    /// address as the operator guide sets it up (even one, so one and two compare).
    pub async fn start_cluster(
        env: &TestEnv,
        slot_no: u32,
        instances: usize,
    ) -> anyhow::Result<Self> {
        Self::start_as(env, slot_no, Some(instances)).await
    }

    async fn start_as(
        env: &TestEnv,
        slot_no: u32,
        instances: Option<usize>,
    ) -> anyhow::Result<Self> {
        let slot = Slot::load(env, slot_no)?;
        let tg = StandIn::start(TOKEN).await?;
        let bella = tg.user(9401, "Bella", None);
        // Offered the flood's conversations on Telegram; never answers, so they stay offered.
        let fred = tg.user(9402, "Fred", None);
        let ivy = tg.user(9403, "Ivy", None);
        let tess = tg.user(9404, "Tess", None);
        let discord = DiscordSide::start().await?;
        let email = EmailSide::start()?;
        let max_local = unique("benchmax");
        let max_id = env.user_id(&max_local);
        let max = MatrixResponder::register(env, &max_local).await?;
        let topic = |id: &str| {
            format!(
                "[[topics]]\nid = \"{id}\"\nname = \"Topic {id}\"\nstrategy = \"broadcast\"\n\
                 offer_timeout_secs = 3600\n\n"
            )
        };
        let responder = |id: &str, topic: &str, platform: &str, address: &str| {
            format!(
                "[[responders]]\nid = \"{id}\"\ndisplay_name = \"{id}\"\ntopics = [\"{topic}\"]\n\
                 max_concurrent = 1000\n\
                 contacts = [{{ platform = \"{platform}\", address = {address:?} }}]\n\n"
            )
        };
        let config = format!(
            "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 10\ninitiators = true\n\n\
             [visitors]\nconversations_per_minute = 1000\nburst = 1000\n\
             public_url = \"http://{listen}\"\n\n{}{}{}{}{}{}{}{}{}{}{}{}{}{}",
            discord.section(),
            email.section()?,
            topic("telegram"),
            topic("matrix"),
            topic("flood"),
            topic("discord"),
            topic("email"),
            topic("tess"),
            responder("bella", "telegram", "telegram", &bella.id.to_string()),
            responder("max", "matrix", "matrix", &max_id),
            responder("fred", "flood", "telegram", &fred.id.to_string()),
            responder("dora", "discord", "discord", &discord.dora.id.to_string()),
            responder("emma", "email", "email", &email.emma),
            responder("tess", "tess", "telegram", &tess.id.to_string()),
            api = tg.api_url(),
            // Email offers link to a page here to accept or decline.
            listen = slot.listen,
        );
        let filter = std::env::var("SWITCHBOARD_BENCH_LOG").unwrap_or_else(|_| LOG_FILTER.into());
        let (sb, base, others, lb) = match instances {
            None => {
                let sb = Switchboard::start_logging(env, &slot, &config, &filter).await?;
                let base = sb.base.clone();
                (sb, base, Vec::new(), None)
            }
            Some(n) => {
                let db = fresh_postgres_database("sbbench").await?;
                let mut started = Vec::new();
                let mut listens = Vec::new();
                for i in 0..n.max(1) {
                    let listen: std::net::SocketAddr =
                        format!("127.0.0.1:{}", free_port()?).parse()?;
                    let own = format!("{config}\n[cluster]\ninstance = \"i{i}\"\n");
                    started.push(
                        Switchboard::start_instance(env, &slot, listen, &own, &db, &filter).await?,
                    );
                    listens.push(listen);
                }
                let lb = LoadBalancer::start(slot.listen, &listens).await?;
                let base = lb.base();
                let sb = started.remove(0);
                (sb, base, started, Some(lb))
            }
        };
        let pid = sb.pid().expect("just started");
        Ok(Self {
            sb,
            base,
            _others: others,
            _lb: lb,
            tg,
            bella,
            max,
            ivy,
            tess,
            discord,
            email,
            bot_id: format!("@sbt{slot_no}bot:{}", env.server_name),
            hs_token: slot.hs_token.clone(),
            hs_url: env.hs_url.clone(),
            pid,
        })
    }
}

/// CPU time Switchboard spent over a stretch of the run.
pub struct CpuSpent {
    pub messages: usize,
    /// How many of them were posted into the responder's relay room (within a minute).
    pub delivered: usize,
    pub cpu_ms: f64,
    pub wall_s: f64,
}

pub struct TelegramPaths {
    pub offer: Row,
    pub offer_at_once: Row,
    pub to_telegram: Row,
    pub from_telegram: Row,
    /// Over the visitor → Telegram samples (paced, so mostly idle time).
    pub cpu: CpuSpent,
}

pub async fn telegram(
    env: &TestEnv,
    b: &Bench,
    paced: usize,
    n: usize,
    ticks: f64,
) -> anyhow::Result<TelegramPaths> {
    let (tg, bella) = (&b.tg, &b.bella);
    progress(&format!("Telegram: {paced} first messages → offers"));
    let mut offer = Row::new(
        "Telegram responder: visitor's first message → offer in their chat (sent once the welcome shows)",
    );
    let mut offer_at_once = Row::new(
        "Telegram responder: visitor's first message → offer in their chat (sent at once, racing the conversation's own start-up posts)",
    );
    let mut last = None;
    // Alternately: the first message as a visitor writes it, after the widget has shown the
    // welcome; and sent the instant the conversation exists, which races the bot's start-up
    // posts (the status and the welcome) through the homeserver, which persists one room's
    // events one at a time. Half as many of the latter: they are for the record.
    for i in 0..paced + paced / 2 {
        let at_once = i % 3 == 2;
        let mut v = Visitor::guest(env, &b.base).await?;
        v.start("telegram").await?;
        if !at_once {
            v.sync_until("the welcome", |seen| {
                seen.iter()
                    .any(|s| s.sender == b.bot_id && s.msgtype == "m.notice")
            })
            .await?;
        }
        let text = format!("bench first message {i}");
        let t = Instant::now();
        v.send(&text).await?;
        tg.wait_for_sent(
            bella.id,
            |s| {
                s.iter()
                    .any(|m| m.text.as_deref().is_some_and(|x| x.contains(&text)))
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        if at_once {
            offer_at_once.samples.push(ms(t));
        } else {
            offer.samples.push(ms(t));
        }
        last = Some((i, v));
        // Every offer is a message to Bella's chat, paced like the rest.
        tokio::time::sleep(TELEGRAM_SPACING).await;
    }
    let (last_i, mut visitor) = last.expect("paced > 0");

    // Bella takes the last conversation (and only that one).
    let sent = tg.sent(bella.id);
    let needle = format!("bench first message {last_i}");
    let m = sent
        .iter()
        .find(|m| {
            m.reply_markup.is_some() && m.text.as_deref().is_some_and(|x| x.contains(&needle))
        })
        .expect("the last offer");
    let data = m.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_owned();
    tg.user_presses(bella, m.message_id, &data);
    visitor
        .sync_until("the accept", |seen| {
            seen.iter()
                .any(|s| s.body.starts_with("You are now talking with"))
        })
        .await?;
    // The accept sends Bella's chat messages of its own after the visitor's notice (the offer
    // edited into "You accepted", then "You are now talking with"), each in its paced turn:
    // the first sample waits for the last of them, as a responder reads it before the
    // visitor's next message, so it measures the relay, not those turns.
    told_talking(tg, bella.id).await?;
    tokio::time::sleep(TELEGRAM_SPACING).await;

    progress(&format!("Telegram: {paced} visitor messages → Bella"));
    let mut to_telegram = Row::new("Telegram responder: visitor's message → responder's chat");
    let cpu_before = procfs::cpu_ms(b.pid, ticks)?;
    let wall = Instant::now();
    for i in 0..paced {
        let text = format!("bench visitor message {i}");
        let t = Instant::now();
        visitor.send(&text).await?;
        tg.wait_for_sent(
            bella.id,
            // Relayed as "Visitor 1234:\n<text>".
            |s| {
                s.iter()
                    .any(|m| m.text.as_deref().is_some_and(|x| x.ends_with(&text)))
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        to_telegram.samples.push(ms(t));
        if i + 1 < paced {
            tokio::time::sleep(TELEGRAM_SPACING).await;
        }
    }
    let cpu = CpuSpent {
        messages: paced,
        delivered: paced,
        cpu_ms: procfs::cpu_ms(b.pid, ticks)? - cpu_before,
        wall_s: wall.elapsed().as_secs_f64(),
    };

    progress(&format!("Telegram: {n} Bella messages → visitor"));
    let mut from_telegram = Row::new("Telegram responder: responder's message → visitor's `/sync`");
    for i in 0..n {
        let text = format!("bench responder message {i}");
        let t = Instant::now();
        tg.user_sends(bella, &text);
        visitor
            .sync_until("the reply", |seen| seen.iter().any(|s| s.body == text))
            .await?;
        from_telegram.samples.push(ms(t));
    }
    Ok(TelegramPaths {
        offer,
        offer_at_once,
        to_telegram,
        from_telegram,
        cpu,
    })
}

/// Waits until the Telegram chat `chat` has been told who it is now talking with: the last
/// of the messages a conversation's start sends there.
pub async fn told_talking(tg: &StandIn, chat: i64) -> anyhow::Result<()> {
    tg.wait_for_sent(
        chat,
        |s| {
            s.iter().any(|m| {
                m.text
                    .as_deref()
                    .is_some_and(|x| x.starts_with("You are now talking with"))
            })
        },
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(())
}

/// The conversation Max holds, through his relay room.
pub struct MatrixConversation {
    pub visitor: Visitor,
    pub relay: String,
    /// Max's client, to send from.
    pub room: Room,
    /// Max's account watching the relay room with a plain `/sync` long poll, as the floor is
    /// watched (matrix-sdk's own sync loop added about a second of its own; see floor.rs).
    pub max_sync: Visitor,
}

impl MatrixConversation {
    /// Waits until the relay room has the bot's message containing `text`.
    pub async fn max_sees(&mut self, bot_id: &str, text: &str) -> anyhow::Result<()> {
        self.max_sync
            .sync_until("the relayed message", |seen| {
                seen.iter()
                    .any(|s| s.sender == bot_id && s.body.contains(text))
            })
            .await
    }
}

/// Max's account watching `relay` with a plain `/sync` long poll, once its initial sync has
/// the offer there (which quotes `first`, the visitor's first message).
pub async fn max_watching(
    env: &TestEnv,
    b: &Bench,
    relay: &str,
    first: &str,
) -> anyhow::Result<Visitor> {
    let max_id = b
        .max
        .client
        .user_id()
        .map(ToString::to_string)
        .unwrap_or_default();
    let token = b.max.client.access_token().unwrap_or_default();
    let mut max_sync = Visitor::signed_in(env, "", &max_id, &token);
    max_sync.room_id = Some(relay.to_owned());
    max_sync
        .sync_until("the offer", |seen| {
            seen.iter().any(|s| s.body.contains(first))
        })
        .await?;
    Ok(max_sync)
}

pub async fn matrix_conversation(env: &TestEnv, b: &Bench) -> anyhow::Result<MatrixConversation> {
    let mut visitor = Visitor::guest(env, &b.base).await?;
    let conversation = visitor.start("matrix").await?;
    visitor.send("hello Max").await?;
    let store = b.sb.store().await?;
    let relay = relay_room_of(&store, &conversation, "max").await?;
    store.close().await;
    let room = b.max.accept_invite(&relay).await?;
    let max_sync = max_watching(env, b, &relay, "hello Max").await?;
    visitor
        .sync_until("Max's arrival", |seen| {
            seen.iter()
                .any(|s| s.body.starts_with("You are now talking with"))
        })
        .await?;
    Ok(MatrixConversation {
        visitor,
        relay,
        room,
        max_sync,
    })
}

pub struct MatrixPaths {
    pub to_matrix: Row,
    pub from_matrix: Row,
}

pub async fn matrix(
    b: &mut Bench,
    c: &mut MatrixConversation,
    n: usize,
) -> anyhow::Result<MatrixPaths> {
    progress(&format!("Matrix: {n} visitor messages → Max"));
    let mut to_matrix = Row::new(
        "Matrix responder: visitor's message → responder's `/sync` long poll (relay room)",
    );
    for i in 0..n {
        let text = format!("bench to max {i}");
        let t = Instant::now();
        c.visitor.send(&text).await?;
        c.max_sees(&b.bot_id, &text).await?;
        to_matrix.samples.push(ms(t));
    }
    progress(&format!("Matrix: {n} Max messages → visitor"));
    let mut from_matrix = Row::new("Matrix responder: responder's message → visitor's `/sync`");
    for i in 0..n {
        let text = format!("bench from max {i}");
        let t = Instant::now();
        c.room
            .send(RoomMessageEventContent::text_plain(&text))
            .await?;
        c.visitor
            .sync_until("Max's reply", |seen| seen.iter().any(|s| s.body == text))
            .await?;
        from_matrix.samples.push(ms(t));
    }
    Ok(MatrixPaths {
        to_matrix,
        from_matrix,
    })
}

/// Sends `count` visitor messages back to back and waits until Max's client has all of them;
/// the CPU Switchboard spent meanwhile.
pub async fn matrix_burst(
    b: &mut Bench,
    c: &mut MatrixConversation,
    count: usize,
    ticks: f64,
) -> anyhow::Result<CpuSpent> {
    progress(&format!(
        "Matrix: {count} visitor messages back to back (CPU)"
    ));
    let cpu_before = procfs::cpu_ms(b.pid, ticks)?;
    let wall = Instant::now();
    for i in 0..count {
        c.visitor.send(&format!("bench burst {i} end")).await?;
    }
    // Counted in the relay room's history, not by Max's client: a matrix-sdk client that
    // falls behind gets a limited timeline (the latest events of a gap) and never sees the
    // rest. Relayed means posted into the relay room, as the homeserver has it.
    let token = b.max.client.access_token().unwrap_or_default();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut delivered = 0;
    while delivered < count && Instant::now() < deadline {
        let r: serde_json::Value = http
            .get(format!(
                "{hs}/_matrix/client/v3/rooms/{room}/messages",
                hs = b.hs_url,
                room = urlencode(&c.relay)
            ))
            .query(&[("dir", "b"), ("limit", "1000")])
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        delivered = r["chunk"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .filter(|e| {
                        e["sender"] == b.bot_id.as_str()
                            && e["content"]["body"]
                                .as_str()
                                .is_some_and(|body| body.contains("bench burst "))
                    })
                    .count()
            })
            .unwrap_or_default();
        if delivered < count {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let cpu_ms = procfs::cpu_ms(b.pid, ticks)? - cpu_before;
    Ok(CpuSpent {
        messages: count,
        delivered,
        cpu_ms,
        wall_s: wall.elapsed().as_secs_f64(),
    })
}
