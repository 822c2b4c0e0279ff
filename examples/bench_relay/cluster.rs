//! Issue 17, several instances on one PostgreSQL behind HAProxy (set up as the operator guide
//! says): the processed throughput of a flood with one instance and with two, and the time a
//! conversation stands still when an instance is killed.
//!
//! Failover: a Matrix responder's conversation; the first instance (HAProxy sends the
//! homeserver's pushes to both in turn) is SIGKILLed, and the visitor sends a message at once.
//! It is timed from the kill until the responder's `/sync` has it: a push to the dead instance
//! is refused and HAProxy sends it to the other, which records it and, if the dead one held a
//! claim on the conversation's work, waits until that expires (at most a lease, 10 s by
//! default) before it relays it. The dead one is started again between samples.

use std::time::{Duration, Instant};

use switchboard_bridge::cluster::{DEFAULT_LEASE, LEADER_LEASE};

use crate::common::*;
use crate::flood;
use crate::paths::{Bench, matrix_conversation};
use crate::report::{Row, progress};

/// A flood's processed rate with `instances` instances.
pub struct Throughput {
    pub instances: usize,
    pub result: flood::FloodResult,
}

pub struct Failover {
    /// Kill → the visitor's next message in the responder's `/sync`.
    pub relayed: Row,
    /// Kill of the leading instance → the other holds the lead (its lease row).
    pub led: Row,
}

/// One flood of `events` events with `instances` instances.
pub async fn throughput(
    env: &TestEnv,
    slot_no: u32,
    instances: usize,
    events: usize,
    rooms: usize,
    per_txn: usize,
    wait: Duration,
) -> anyhow::Result<(Bench, Throughput)> {
    let mut b = Bench::start_cluster(env, slot_no, instances).await?;
    let flood_rooms = flood::conversations(env, &b, rooms).await?;
    let db = sqlx::AnyPool::connect(&b.sb.db_url).await?;
    progress(&format!(
        "cluster: {events} events, {instances} instance(s)"
    ));
    let result = flood::run(
        &mut b,
        &db,
        flood::Flood::build(&flood_rooms, events, per_txn, &format!("k{instances}")),
        None,
        wait,
    )
    .await?;
    db.close().await;
    Ok((b, Throughput { instances, result }))
}

/// `samples` failovers of the conversation with the Matrix responder, on `b` (two instances).
pub async fn failover(env: &TestEnv, b: &mut Bench, samples: usize) -> anyhow::Result<Failover> {
    let mut conversation = matrix_conversation(env, b).await?;
    let store = b.sb.store().await?;
    let mut relayed = Row::new(format!(
        "failover: SIGKILL of one of the instances the homeserver pushes to in turn → the visitor's next message in the Matrix responder's `/sync`, relayed by the other (lease {} s)",
        DEFAULT_LEASE.as_secs()
    ));
    let mut led = Row::new("failover: SIGKILL of the leading instance → the other leads");
    for i in 0..samples {
        let text = format!("bench failover {i} end");
        // Settled: both instances ready, the conversation's work done by the first.
        conversation
            .visitor
            .send(&format!("bench settle {i}"))
            .await?;
        conversation
            .max_sees(&b.bot_id, &format!("bench settle {i}"))
            .await?;
        let leader = store.lease(LEADER_LEASE).await?;
        let killed = Instant::now();
        b.sb.kill();
        conversation.visitor.send(&text).await?;
        conversation.max_sees(&b.bot_id, &text).await?;
        relayed
            .samples
            .push(killed.elapsed().as_secs_f64() * 1000.0);
        if let Some(lease) = leader
            && lease.holder.starts_with("i0/")
        {
            wait_for("the other instance to lead", || async {
                Ok(store
                    .lease(LEADER_LEASE)
                    .await?
                    .filter(|l| l.epoch > lease.epoch)
                    .map(|_| ()))
            })
            .await?;
            led.samples.push(killed.elapsed().as_secs_f64() * 1000.0);
        }
        progress(&format!(
            "failover {i}: relayed after {:.1} s",
            relayed.samples.last().copied().unwrap_or_default() / 1000.0
        ));
        b.sb.start_again().await?;
        // Until HAProxy counts it in again.
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
    store.close().await;
    Ok(Failover { relayed, led })
}

/// The lease the instances run with, in seconds (the default).
pub fn lease_s() -> f64 {
    DEFAULT_LEASE.as_secs_f64()
}
