//! The floor of CPU per relayed message: what the least an appservice can do to relay a
//! message costs on this machine, measured in the same run as Switchboard's own figure.
//!
//! A bare appservice, in a process of its own (this program started again with
//! `SWITCHBOARD_BENCH_BARE` set), on the same stack as Switchboard (tokio's multi-threaded
//! runtime, axum for the transactions Synapse pushes, reqwest for the calls back): for every
//! `m.room.message` a transaction brings that its bot did not send, it answers the
//! transaction and posts a copy of the message into a room of its own as its bot (keyed by
//! the event, as Switchboard keys its relays); the echo of that post comes back in a
//! transaction too and is answered. It stores nothing, checks nothing but the `hs_token`,
//! and routes nothing. A visitor (an ordinary user in a room with that bot) sends the same
//! burst as Switchboard's visitor, back to back, and the bare process's `utime + stime`
//! over the burst, divided by the messages relayed, is the floor: the HTTP and JSON work
//! any appservice relaying through the homeserver does per message, and the thread wake-ups
//! that come with it.
//!
//! Run **durable**, it also does the least the issue's "acknowledge only after it is durably
//! recorded" asks of any appservice: before answering a transaction that brings a message to
//! relay, it writes the transaction (its ID and body) into a log file and flushes that to the
//! disk (`fdatasync`, on the calling thread, as Switchboard's own acknowledged record is
//! written). The cheapest such write found: the log is a ring in a file written in full
//! once at start, so a record overwrites blocks that exist and its flush changes no file
//! size or block map, only data. A transaction with nothing to relay (the echoes) is answered
//! without it, as Switchboard records nothing for those. Nothing reads the log. The two
//! floors side by side say what relaying costs at all, and what recording before answering
//! adds to it on this machine's disk, before any store, index or routing.
//!
//! It uses the appservice slot after the benchmark's own (the memory runs start their
//! Switchboards there later, after this one is stopped).

use std::time::{Duration, Instant};

use anyhow::Context;
use serde_json::{Value, json};

use crate::common::*;
use crate::paths::CpuSpent;
use crate::procfs;
use crate::report::{Row, ms};

/// What the bare appservice is told through its environment.
const VAR: &str = "SWITCHBOARD_BENCH_BARE";

/// In the child: serves as the bare appservice until killed, if this process was started
/// as one. Returns `None` otherwise.
pub fn serve_if_asked() -> Option<anyhow::Result<()>> {
    let spec = std::env::var(VAR).ok()?;
    Some(serve(&spec))
}

/// The child's settings, one per line: listen address, homeserver URL, `as_token`,
/// `hs_token`, its bot's user ID, and the file to log transactions to (`-`: not durable). It
/// makes its bot's room and prints the room's ID on a line of its own, listening already: the
/// room's first events are pushed to it at once, and wait in the socket's backlog until it
/// serves. (Made with nobody listening, they would find the
/// appservice down, and Synapse would back off from it for seconds.)
fn serve(spec: &str) -> anyhow::Result<()> {
    let lines: Vec<&str> = spec.lines().collect();
    let [listen, hs, as_token, hs_token, bot, log] = lines[..] else {
        anyhow::bail!("{VAR} needs six lines, got {}", lines.len());
    };
    let log = match log {
        "-" => None,
        path => Some(std::sync::Mutex::new(Ring::create(path)?)),
    };
    // The same runtime Switchboard's `main` builds.
    tokio::runtime::Runtime::new()?.block_on(async move {
        let http = reqwest::Client::new();
        let listener = tokio::net::TcpListener::bind(listen).await?;
        // Public, so the latency floor's watcher can join it (`latency`).
        let made: Value = http
            .post(format!("{hs}/_matrix/client/v3/createRoom"))
            .bearer_auth(as_token)
            .json(&json!({"preset": "public_chat"}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let room = made["room_id"].as_str().context("room_id")?;
        println!("{room}");
        let state = std::sync::Arc::new(Relay {
            hs: hs.to_owned(),
            as_token: as_token.to_owned(),
            hs_token: format!("Bearer {hs_token}"),
            bot: bot.to_owned(),
            target: urlencode(room),
            http,
            log,
        });
        let app = axum::Router::new()
            .route(
                "/_matrix/app/v1/transactions/{txn}",
                axum::routing::put(transaction),
            )
            .with_state(state);
        axum::serve(listener, app).await?;
        Ok(())
    })
}

struct Relay {
    hs: String,
    as_token: String,
    hs_token: String,
    bot: String,
    /// Its bot's room (URL-encoded).
    target: String,
    http: reqwest::Client,
    /// Durable: where each transaction is written and flushed before it is answered.
    log: Option<std::sync::Mutex<Ring>>,
}

/// The durable bare appservice's log: a file of `RING_BYTES` written and flushed in full at
/// start, then overwritten record after record from the start again when full.
struct Ring {
    file: std::fs::File,
    at: u64,
}

const RING_BYTES: u64 = 16 << 20;

impl Ring {
    fn create(path: &str) -> anyhow::Result<Self> {
        use std::io::Write;
        let mut file = std::fs::File::create(path).with_context(|| format!("creating {path}"))?;
        let block = vec![0u8; 1 << 20];
        for _ in 0..RING_BYTES / block.len() as u64 {
            file.write_all(&block)?;
        }
        file.sync_all()?;
        Ok(Self { file, at: 0 })
    }

    /// Writes one record and flushes it.
    fn record(&mut self, txn_id: &str, body: &[u8]) -> std::io::Result<()> {
        use std::os::unix::fs::FileExt;
        let mut record = format!("{txn_id} {}\n", body.len()).into_bytes();
        record.extend_from_slice(body);
        if self.at + record.len() as u64 > RING_BYTES {
            self.at = 0;
        }
        self.file.write_all_at(&record, self.at)?;
        self.at += record.len() as u64;
        self.file.sync_data()
    }
}

async fn transaction(
    axum::extract::State(relay): axum::extract::State<std::sync::Arc<Relay>>,
    axum::extract::Path(txn_id): axum::extract::Path<String>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, &'static str) {
    if headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        != Some(relay.hs_token.as_str())
    {
        return (axum::http::StatusCode::FORBIDDEN, "{}");
    }
    let Ok(txn) = serde_json::from_slice::<Value>(&body) else {
        return (axum::http::StatusCode::BAD_REQUEST, "{}");
    };
    // Its own posts come back as echoes: answered, not relayed again. A message in a room
    // of the benchmark's flood (`flood::BARE_FLOOD_ROOM`) is recorded, never relayed.
    let to_record =
        |event: &&Value| event["type"] == "m.room.message" && event["sender"] != relay.bot.as_str();
    let to_relay = |event: &&Value| {
        to_record(event)
            && !event["room_id"]
                .as_str()
                .is_some_and(|r| r.starts_with(crate::flood::BARE_FLOOD_ROOM))
    };
    let events = txn["events"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if let Some(log) = &relay.log
        && events.iter().any(|e| to_record(&e))
        && log
            .lock()
            .expect("log lock")
            .record(&txn_id, &body)
            .is_err()
    {
        // Not recorded, so not acknowledged: the homeserver sends it again.
        return (axum::http::StatusCode::SERVICE_UNAVAILABLE, "{}");
    }
    for event in events.iter().filter(to_relay) {
        let (Some(event_id), Some(body)) = (
            event["event_id"].as_str(),
            event["content"]["body"].as_str(),
        ) else {
            continue;
        };
        // Answered at once and posted after, as Switchboard acknowledges a stored
        // transaction before its lanes relay what it brought.
        let url = format!(
            "{hs}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}",
            hs = relay.hs,
            room = relay.target,
            txn = urlencode(&format!("bare-{event_id}")),
        );
        let relay = relay.clone();
        let content = json!({"msgtype": "m.text", "body": body});
        tokio::spawn(async move {
            let _ = relay
                .http
                .put(url)
                .bearer_auth(&relay.as_token)
                .json(&content)
                .send()
                .await;
        });
    }
    (axum::http::StatusCode::OK, "{}")
}

/// The bare appservice, running as a child process.
pub struct Bare {
    child: std::process::Child,
    pub target: String,
    /// The durable one's log's directory, removed with it.
    _log_dir: Option<tempfile::TempDir>,
}

impl Drop for Bare {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts the bare appservice on `slot_no`, with a room of its bot's to post into, and a
/// visitor in a room with that bot. `durable`: it logs and flushes each transaction before
/// answering, to a file in a fresh directory beside the test suite's databases.
pub async fn start(env: &TestEnv, slot_no: u32, durable: bool) -> anyhow::Result<(Bare, Visitor)> {
    let slot = Slot::load(env, slot_no)?;
    let http = reqwest::Client::new();
    let bot = env.user_id(&format!("sbt{slot_no}bot"));
    let log_dir = durable.then(tempfile::TempDir::new).transpose()?;
    let log = match &log_dir {
        Some(dir) => dir.path().join("transactions.log").display().to_string(),
        None => "-".to_owned(),
    };
    let spec = [
        slot.listen.to_string(),
        env.hs_url.clone(),
        slot.as_token.clone(),
        slot.hs_token.clone(),
        bot.clone(),
        log,
    ]
    .join("\n");
    let mut child = std::process::Command::new(std::env::current_exe()?)
        .env(VAR, spec)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("starting the bare appservice")?;
    let stdout = child.stdout.take().context("its stdout")?;
    let target = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
            .map(|_| line.trim().to_owned())
    })
    .await??;
    anyhow::ensure!(target.starts_with('!'), "the bare appservice made no room");
    let bare = Bare {
        child,
        target,
        _log_dir: log_dir,
    };
    // A visitor in a room with its bot: Synapse pushes that room's events to it.
    let mut visitor = crate::floor::register(env, &unique("barevisitor")).await?;
    let r: Value = http
        .post(format!("{}/_matrix/client/v3/createRoom", env.hs_url))
        .bearer_auth(&visitor.token)
        .json(&json!({"invite": [bot]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let room = r["room_id"].as_str().context("room_id")?.to_owned();
    http.post(format!(
        "{}/_matrix/client/v3/join/{}",
        env.hs_url,
        urlencode(&room)
    ))
    .bearer_auth(&slot.as_token)
    .json(&json!({}))
    .send()
    .await?
    .error_for_status()?;
    visitor.room_id = Some(room);
    Ok((bare, visitor))
}

/// `count` messages back to back from the visitor, until the bare appservice (`durable` or
/// not) has posted them all into its room; its CPU over that time.
pub async fn burst(
    env: &TestEnv,
    slot_no: u32,
    count: usize,
    ticks: f64,
    durable: bool,
) -> anyhow::Result<CpuSpent> {
    let (bare, mut visitor) = start(env, slot_no, durable).await?;
    let pid = bare.child.id();
    let as_token = Slot::load(env, slot_no)?.as_token;
    // One message through first, so the burst starts on a warm appservice, as Switchboard's
    // does (its conversation has had messages before).
    visitor.send("bare warm-up").await?;
    relayed(env, &as_token, &bare.target, "bare warm-up", 1).await?;
    let cpu_before = procfs::cpu_ms(pid, ticks)?;
    let wall = Instant::now();
    for i in 0..count {
        visitor.send(&format!("bare burst {i} end")).await?;
    }
    let delivered = relayed(env, &as_token, &bare.target, "bare burst ", count).await?;
    let cpu_ms = procfs::cpu_ms(pid, ticks)? - cpu_before;
    let wall_s = wall.elapsed().as_secs_f64();
    // The last echoes answered before it goes (the slot is used again later).
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(bare);
    Ok(CpuSpent {
        messages: count,
        delivered,
        cpu_ms,
        wall_s,
    })
}

/// The latency floor of a path that crosses the homeserver twice through an appservice:
/// `count` messages from the visitor, one after the other, each timed from its `PUT /send`
/// until a watcher's `/sync` long poll on the bare appservice's room has its copy, as the
/// Matrix responder's path is timed. The bare appservice is the durable one (it flushes each
/// transaction to disk before answering, as the issue asks), so the row is what any
/// appservice keeping that rule takes on this homeserver to relay a message, before it
/// stores, routes or checks anything.
pub async fn latency(env: &TestEnv, slot_no: u32, count: usize) -> anyhow::Result<Row> {
    Ok(latency_with(env, slot_no, count, None).await?.0)
}

/// [`latency`] while `flood_events` visitor messages in rooms that exist nowhere are pushed at
/// the bare appservice as the flood is pushed at Switchboard (`flood.rs`: 100 events a
/// transaction, one in flight, the first sample 250 ms after it starts). It records each of
/// those transactions (a write and a flush) and relays none: the least an appservice that
/// records before answering does with that flood. Beside the quiet conversation's row, it
/// says what the same two crossings take through an appservice that does nothing else while
/// the same flood arrives on the same cores.
pub async fn latency_under_flood(
    env: &TestEnv,
    slot_no: u32,
    count: usize,
    flood_events: usize,
) -> anyhow::Result<(Row, usize, f64)> {
    latency_with(env, slot_no, count, Some(flood_events)).await
}

/// The samples, how many began while the flood was still being pushed, and how long the
/// bare appservice took to acknowledge all of it (seconds; 0 without a flood).
async fn latency_with(
    env: &TestEnv,
    slot_no: u32,
    count: usize,
    flood: Option<usize>,
) -> anyhow::Result<(Row, usize, f64)> {
    let (bare, mut visitor) = start(env, slot_no, true).await?;
    let mut watcher = crate::floor::register(env, &unique("barewatch")).await?;
    let (status, body) = watcher.join(&bare.target).await?;
    anyhow::ensure!(
        status == 200,
        "joining the bare appservice's room answered {status}: {body}"
    );
    watcher.room_id = Some(bare.target.clone());
    // The first `/sync` is the initial one, and the first sends open the connections.
    visitor.send("bare latency warm-up").await?;
    watcher
        .sync_until("the bare warm-up", |seen| {
            seen.iter().any(|s| s.body == "bare latency warm-up")
        })
        .await?;
    let what = "relay floor: visitor's `PUT /send` → a bare appservice (flushes each transaction, then posts a copy as its bot; `bare.rs`) → another user's `/sync` long poll";
    let mut row = Row::new(match flood {
        None => what.to_owned(),
        Some(events) => {
            format!("{what}, while a flood of {events} events in other rooms hits that appservice")
        }
    });
    let pusher = match flood {
        None => None,
        Some(events) => {
            let rooms = crate::flood::FloodRooms::nowhere(env, 10);
            let (prefix, bodies) =
                crate::flood::Flood::build(&rooms, events, 100, "bare").into_transactions();
            let slot = Slot::load(env, slot_no)?;
            let pusher = tokio::spawn(crate::flood::push_all(
                format!("http://{}", slot.listen),
                slot.hs_token,
                prefix,
                bodies,
            ));
            // Let a backlog build first, as for the quiet conversation.
            tokio::time::sleep(Duration::from_millis(250)).await;
            Some(pusher)
        }
    };
    let mut under = 0;
    for i in 0..count {
        if pusher.as_ref().is_some_and(|p| !p.is_finished()) {
            under += 1;
        }
        let text = format!("bare latency {i}");
        let t = Instant::now();
        visitor.send(&text).await?;
        watcher
            .sync_until("the bare relay", |seen| seen.iter().any(|s| s.body == text))
            .await?;
        row.samples.push(ms(t));
    }
    let acknowledged_s = match pusher {
        Some(pusher) => pusher.await??.0,
        None => 0.0,
    };
    // The last echo answered before it goes (the slot is used again later).
    tokio::time::sleep(Duration::from_secs(1)).await;
    drop(bare);
    Ok((row, under, acknowledged_s))
}

/// How many messages containing `marker` the bot has posted in `room`, once that is
/// `count` (or a minute has passed), from the room's history as the homeserver has it.
async fn relayed(
    env: &TestEnv,
    as_token: &str,
    room: &str,
    marker: &str,
    count: usize,
) -> anyhow::Result<usize> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let r: Value = http
            .get(format!(
                "{}/_matrix/client/v3/rooms/{}/messages",
                env.hs_url,
                urlencode(room)
            ))
            .query(&[("dir", "b"), ("limit", "1000")])
            .bearer_auth(as_token)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let n = r["chunk"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| {
                e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(marker))
            })
            .count();
        if n >= count || Instant::now() > deadline {
            return Ok(n);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
