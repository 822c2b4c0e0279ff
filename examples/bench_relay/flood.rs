//! Ingest: homeserver transactions pushed at Switchboard's
//! `PUT /_matrix/app/v1/transactions/{txnId}` with the registration's `hs_token`, one in flight
//! at a time as Synapse sends them, and what happens to a quiet conversation meanwhile.
//!
//! The events are visitors' `m.room.message`s in real conversation rooms (created through the
//! visitor API, offered to Fred on Telegram, who never answers), so processing each one is the
//! real work: the room's lane records it in the transcript, finds the conversation still
//! offered (no one to relay to) and marks it processed. The first one in each room routes the
//! conversation, which sends Fred an offer.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::json;
use sqlx::{AnyPool, Row as _};

use crate::common::*;
use crate::floor::PlainPair;
use crate::paths::{Bench, MatrixConversation};
use crate::report::{Row, ms, progress};

/// Conversation rooms to flood, each with its visitor.
pub struct FloodRooms {
    rooms: Vec<(String, String)>,
}

pub async fn conversations(env: &TestEnv, b: &Bench, count: usize) -> anyhow::Result<FloodRooms> {
    let mut rooms = Vec::with_capacity(count);
    for _ in 0..count {
        let mut v = Visitor::guest(env, &b.base).await?;
        let room = v.start("flood").await?;
        rooms.push((room, v.user_id.clone()));
    }
    Ok(FloodRooms { rooms })
}

/// The prefix of the rooms a flood into the bare appservice names (`bare.rs`): rooms that
/// exist nowhere, whose events it records and never relays.
pub const BARE_FLOOD_ROOM: &str = "!bareflood-";

impl FloodRooms {
    /// `count` rooms that exist nowhere, for a flood into the bare appservice: it records
    /// their events as it records any, and relays none of them (they are no conversation's,
    /// as the flood's rooms in Switchboard have no one to relay to).
    pub fn nowhere(env: &TestEnv, count: usize) -> Self {
        Self {
            rooms: (0..count)
                .map(|i| {
                    (
                        format!("{BARE_FLOOD_ROOM}{i}:{}", env.server_name),
                        env.user_id(&format!("barefloodvisitor{i}")),
                    )
                })
                .collect(),
        }
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or_default()
}

/// One flood, serialised before the clock starts (so the benchmark's own JSON work is not
/// measured as Switchboard's).
pub struct Flood {
    /// `LIKE` pattern matching exactly this flood's event IDs.
    pattern: String,
    txn_prefix: String,
    bodies: Vec<String>,
    pub events: usize,
    pub per_txn: usize,
    pub rooms: usize,
}

impl Flood {
    pub fn build(rooms: &FloodRooms, events: usize, per_txn: usize, tag: &str) -> Self {
        let run = unique(tag);
        let prefix = format!("$flood{run}-");
        let ts = now_ms();
        let all: Vec<serde_json::Value> = (0..events)
            .map(|i| {
                // Round robin: each transaction carries events of every room, as Synapse's do.
                let (room, sender) = &rooms.rooms[i % rooms.rooms.len()];
                json!({
                    "type": "m.room.message",
                    "event_id": format!("{prefix}{i}"),
                    "room_id": room,
                    "sender": sender,
                    "origin_server_ts": ts + i as i64,
                    "content": {"msgtype": "m.text", "body": format!("flood message {i}")},
                    "unsigned": {"age": 0},
                })
            })
            .collect();
        let bodies = all
            .chunks(per_txn)
            .map(|c| json!({"events": c}).to_string())
            .collect();
        Self {
            pattern: format!("{prefix}%"),
            txn_prefix: format!("bench-{run}-"),
            bodies,
            events,
            per_txn,
            rooms: rooms.rooms.len(),
        }
    }

    pub fn txns(&self) -> usize {
        self.bodies.len()
    }

    /// Its transactions, to push (`push_all`): the prefix of their IDs and their bodies.
    pub fn into_transactions(self) -> (String, Vec<String>) {
        (self.txn_prefix, self.bodies)
    }
}

/// Pushes every transaction in turn, each retried until Switchboard answers 200.
pub async fn push_all(
    base: String,
    hs_token: String,
    txn_prefix: String,
    bodies: Vec<String>,
) -> anyhow::Result<(f64, usize)> {
    let http = reqwest::Client::new();
    let started = Instant::now();
    let mut retries = 0;
    for (k, body) in bodies.into_iter().enumerate() {
        loop {
            let r = http
                .put(format!(
                    "{base}/_matrix/app/v1/transactions/{txn_prefix}{k}"
                ))
                .bearer_auth(&hs_token)
                .header("content-type", "application/json")
                .body(body.clone())
                .send()
                .await;
            match r {
                Ok(r) if r.status().is_success() => break,
                other => {
                    retries += 1;
                    anyhow::ensure!(retries < 100, "transactions keep failing: {other:?}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }
    Ok((started.elapsed().as_secs_f64(), retries))
}

/// What is sampled while a flood runs.
pub enum Sampler<'a> {
    /// The quiet conversation: its visitor's message → the Matrix responder's `/sync`.
    Quiet(&'a mut MatrixConversation),
    /// Synapse's own floor, two plain users in a room Switchboard has nothing to do with:
    /// what the same flood does to the homeserver's share of the machine.
    Floor(&'a mut PlainPair),
}

/// The samples taken while the flood ran.
pub struct Quiet {
    pub row: Row,
    /// Samples that started while flood events were still unacknowledged or unprocessed.
    pub under_flood: usize,
    /// Samples not delivered within the harness's wait (30 s).
    pub lost: usize,
}

pub struct FloodResult {
    pub events: usize,
    pub txns: usize,
    pub per_txn: usize,
    pub rooms: usize,
    pub ack_s: f64,
    pub retries: usize,
    /// First PUT → the last flood event marked processed, if all were within the wait.
    pub processed_s: Option<f64>,
    /// Flood events processed when the benchmark stopped waiting.
    pub processed: i64,
    pub waited_s: f64,
    pub inbox_rows: i64,
    pub distinct_rows: i64,
    pub transcript_rows: i64,
    pub quiet: Option<Quiet>,
}

async fn pending(db: &AnyPool, pattern: &str) -> anyhow::Result<i64> {
    Ok(sqlx::query(
        "SELECT COUNT(*) AS n FROM inbox WHERE processed_at IS NULL AND event_id LIKE $1",
    )
    .bind(pattern)
    .fetch_one(db)
    .await?
    .try_get("n")?)
}

/// Fires the flood; with `quiet`, takes that many samples of the quiet conversation meanwhile.
/// Waits up to `max_wait` for every flood event to be processed.
pub async fn run(
    b: &mut Bench,
    db: &AnyPool,
    flood: Flood,
    quiet: Option<(Sampler<'_>, usize)>,
    max_wait: Duration,
) -> anyhow::Result<FloodResult> {
    let (events, txns, per_txn, rooms) = (flood.events, flood.txns(), flood.per_txn, flood.rooms);
    let pattern = flood.pattern.clone();
    let start_ms = now_ms();
    let started = Instant::now();
    let pusher = tokio::spawn(push_all(
        b.base.clone(),
        b.hs_token.clone(),
        flood.txn_prefix,
        flood.bodies,
    ));

    let quiet = match quiet {
        None => None,
        Some((mut sampler, samples)) => {
            // Let a backlog build first.
            tokio::time::sleep(Duration::from_millis(250)).await;
            let what = match sampler {
                Sampler::Quiet(_) => format!(
                    "quiet conversation (Matrix responder), visitor → responder, while {events} \
                     events flood {rooms} others"
                ),
                Sampler::Floor(_) => format!(
                    "Synapse floor: client `PUT /send` → another user's `/sync` long poll, while \
                     the same flood of {events} events hits Switchboard"
                ),
            };
            let mut q = Quiet {
                row: Row::new(what),
                under_flood: 0,
                lost: 0,
            };
            for i in 0..samples {
                if !pusher.is_finished() || pending(db, &pattern).await? > 0 {
                    q.under_flood += 1;
                }
                let text = format!("bench quiet {i} end");
                let sample = match &mut sampler {
                    Sampler::Quiet(c) => {
                        let t = Instant::now();
                        c.visitor.send(&text).await?;
                        c.max_sees(&b.bot_id, &text).await.map(|()| ms(t))
                    }
                    Sampler::Floor(pair) => pair.sample(&text).await,
                };
                match sample {
                    Ok(ms) => q.row.samples.push(ms),
                    Err(_) => q.lost += 1,
                }
            }
            Some(q)
        }
    };

    let (ack_s, retries) = pusher.await??;
    progress(&format!(
        "flood: {events} events acknowledged in {ack_s:.1} s; waiting for processing"
    ));
    let deadline = started + max_wait;
    let mut last_report = Instant::now();
    loop {
        let left = pending(db, &pattern).await?;
        if left == 0 || Instant::now() > deadline {
            break;
        }
        if last_report.elapsed() > Duration::from_secs(15) {
            progress(&format!("flood: {left} events still unprocessed"));
            last_report = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let waited_s = started.elapsed().as_secs_f64();

    let row = sqlx::query(
        "SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d, COUNT(processed_at) AS p,
                MAX(processed_at) AS last FROM inbox WHERE event_id LIKE $1",
    )
    .bind(&pattern)
    .fetch_one(db)
    .await?;
    let (inbox_rows, distinct_rows, processed): (i64, i64, i64) =
        (row.try_get("n")?, row.try_get("d")?, row.try_get("p")?);
    let last: Option<i64> = row.try_get("last")?;
    let transcript_rows: i64 =
        sqlx::query("SELECT COUNT(*) AS n FROM messages WHERE event_id LIKE $1")
            .bind(&pattern)
            .fetch_one(db)
            .await?
            .try_get("n")?;
    let processed_s = (processed == events as i64)
        .then(|| last.map(|l| (l - start_ms) as f64 / 1000.0))
        .flatten();
    Ok(FloodResult {
        events,
        txns,
        per_txn,
        rooms,
        ack_s,
        retries,
        processed_s,
        processed,
        waited_s,
        inbox_rows,
        distinct_rows,
        transcript_rows,
        quiet,
    })
}
