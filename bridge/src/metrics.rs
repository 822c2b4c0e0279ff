//! What Switchboard counts and times, for Prometheus: through the `metrics` facade, whose
//! recorder the binary installs (the one process-wide thing here: the facade is built that
//! way, and without a recorder every call below is a no-op, as in the library's own tests).
//!
//! Labels are bounded by construction: a platform is one of the registry's names, a topic one
//! of the configured topic IDs (else `other`), a reason or outcome one of a few fixed words.
//! Never a room, a visitor, a responder's address or any free text: a label value is a
//! time series of its own, and some of those would also identify a visitor.
//!
//! Gauges of what waits (queues, conversations by state, parts' states) are read when
//! Prometheus scrapes ([`sample`]); everything else is counted where it happens.

use std::time::Duration;

use axum::{
    Router,
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::get,
};
use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram};

use crate::{
    Store,
    connector::registry,
    conversation::ConversationState,
    health::{Health, PartState},
};

/// Histogram buckets, in seconds, for every timing here: from a loopback database write
/// (milliseconds) to a visitor kept waiting for an hour.
pub const SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    120.0, 300.0, 600.0, 1800.0, 3600.0,
];

/// The routing service levels, each a histogram by topic and the responder's platform.
#[derive(Debug, Clone, Copy)]
pub enum Slo {
    /// A conversation's start to its first offer going out.
    TimeToOffer,
    /// A conversation's start to its first accept.
    TimeToAccept,
    /// A conversation's start to the first reply of a responder.
    TimeToFirstReply,
    /// A visitor's oldest unanswered message to the responder's next reply.
    ReplyWait,
}

impl Slo {
    fn name(self) -> &'static str {
        match self {
            Slo::TimeToOffer => "switchboard_time_to_offer_seconds",
            Slo::TimeToAccept => "switchboard_time_to_accept_seconds",
            Slo::TimeToFirstReply => "switchboard_time_to_first_reply_seconds",
            Slo::ReplyWait => "switchboard_reply_wait_seconds",
        }
    }
}

/// Registers every metric's help text and unit with the recorder (call once it is installed),
/// and starts the counters whose labels are a fixed set at zero: a series that exists before
/// its first event lets `increase()` in an alert and a dashboard see 0 instead of no data.
pub fn describe() {
    for outcome in ["acknowledged", "failed"] {
        counter!("switchboard_transactions_total", "outcome" => outcome).increment(0);
    }
    counter!("switchboard_events_received_total").increment(0);
    counter!("switchboard_events_deduplicated_total").increment(0);
    counter!("switchboard_events_caught_up_total").increment(0);
    for reason in [
        "requested",
        "offline",
        "no_first_reply",
        "idle",
        "unreachable",
        "other",
    ] {
        counter!("switchboard_handoffs_total", "reason" => reason).increment(0);
    }
    for api in ["visitor", "proxy", "admin"] {
        counter!("switchboard_rate_limited_total", "api" => api).increment(0);
    }
    counter!("switchboard_admin_auth_failures_total").increment(0);
    for source in ["inbox", "remote", "outbox"] {
        counter!("switchboard_dead_letters_total", "source" => source).increment(0);
    }
    describe_all();
}

fn describe_all() {
    use metrics::Unit::{Count, Seconds};
    describe_counter!(
        "switchboard_transactions_total",
        Count,
        "Homeserver transactions received, by outcome (acknowledged: recorded, then answered 200; failed: not recorded, answered with an error so the homeserver sends it again)"
    );
    describe_counter!(
        "switchboard_events_received_total",
        Count,
        "Events in homeserver transactions"
    );
    describe_counter!(
        "switchboard_events_deduplicated_total",
        Count,
        "Events received again (a replayed transaction) and recorded only once"
    );
    describe_counter!(
        "switchboard_events_caught_up_total",
        Count,
        "Events the homeserver stored but never pushed, found by reading rooms after it was away (a homeserver killed with events queued for us loses them: Synapse issue 11637)"
    );
    describe_histogram!(
        "switchboard_transaction_record_seconds",
        Seconds,
        "Ingest latency: receiving a transaction to its events being durably recorded"
    );
    describe_histogram!(
        "switchboard_event_wait_seconds",
        Seconds,
        "Processing latency: an event recorded to its handling done, by source (homeserver, platform)"
    );
    describe_counter!(
        "switchboard_events_handled_total",
        Count,
        "Events handled, by source and outcome (done, set_aside)"
    );
    describe_counter!(
        "switchboard_deliveries_total",
        Count,
        "Messages to responders' platforms by platform and outcome (sent, retry, failed) and error kind (none, rate_limited, retry_later, never)"
    );
    describe_histogram!(
        "switchboard_delivery_seconds",
        Seconds,
        "Delivery latency: one platform call that sends a message part, by platform"
    );
    describe_histogram!(
        "switchboard_pacing_wait_seconds",
        Seconds,
        "Time a message part to a responder waited for its chat's paced slot (the per-chat and platform-wide rates its connector declares), by platform"
    );
    describe_histogram!(
        "switchboard_lane_wait_seconds",
        Seconds,
        "Time a job waited from being queued in its lane to starting (behind the lane's earlier jobs and for a free permit), by lane kind: room, from, to, posts"
    );
    describe_counter!(
        "switchboard_offers_total",
        Count,
        "Offers by platform and event (sent, accepted, declined, expired, failed)"
    );
    describe_counter!(
        "switchboard_handoffs_total",
        Count,
        "Conversations handed over, by reason (requested, offline, no_first_reply, idle, unreachable)"
    );
    describe_counter!(
        "switchboard_rate_limited_total",
        Count,
        "Requests refused by a rate limit, by API (visitor, proxy, admin)"
    );
    describe_counter!(
        "switchboard_admin_auth_failures_total",
        Count,
        "Admin API requests with a wrong token"
    );
    describe_counter!(
        "switchboard_dead_letters_total",
        Count,
        "Work set aside because it can never succeed, by source (inbox, remote, outbox)"
    );
    describe_counter!(
        "switchboard_fenced_writes_refused_total",
        Count,
        "Platform events a receiver took but did not record, by platform, because this instance was no longer the leader (its lease taken over or run out): left unacknowledged for the leader to receive"
    );
    describe_gauge!(
        "switchboard_conversations",
        Count,
        "Conversations by lifecycle state"
    );
    describe_gauge!(
        "switchboard_inbox_pending",
        Count,
        "Events recorded and not yet handled, by source (homeserver, platform)"
    );
    describe_gauge!(
        "switchboard_outbox_pending",
        Count,
        "Deliveries waiting, by platform"
    );
    describe_gauge!(
        "switchboard_outbox_deepest_lane",
        Count,
        "The most deliveries waiting for any one chat, by platform"
    );
    describe_gauge!("switchboard_offers_open", Count, "Offers not yet answered");
    describe_gauge!(
        "switchboard_dead_letters",
        Count,
        "Dead letters waiting for an operator"
    );
    describe_gauge!(
        "switchboard_runtime_tasks",
        Count,
        "Tasks alive in the async runtime: steady under steady work, or something leaks"
    );
    describe_gauge!(
        "switchboard_database_connections",
        Count,
        "Database connections open, idle or in use"
    );
    describe_gauge!(
        "switchboard_part_state",
        "1 for the state each part (database, homeserver, worker, each platform) is in: connected, degraded or down"
    );
    for slo in [
        Slo::TimeToOffer,
        Slo::TimeToAccept,
        Slo::TimeToFirstReply,
        Slo::ReplyWait,
    ] {
        let help = match slo {
            Slo::TimeToOffer => {
                "Routing SLO: conversation start to its first offer sent, by topic and platform"
            }
            Slo::TimeToAccept => {
                "Routing SLO: conversation start to its first accept, by topic and platform"
            }
            Slo::TimeToFirstReply => {
                "Routing SLO: conversation start to the first responder reply, by topic and platform"
            }
            Slo::ReplyWait => {
                "Routing SLO: a visitor's oldest unanswered message to the next reply, by topic and platform"
            }
        };
        describe_histogram!(slo.name(), Seconds, help);
    }
}

/// A platform's name as a label: one of the registry's, else `other`.
pub fn platform_label(name: &str) -> &'static str {
    registry::spec(name).map_or("other", |spec| spec.name)
}

/// One homeserver transaction: recorded (`acknowledged`) or not (`failed`).
pub(crate) fn transaction(recorded: bool, events: usize, new: usize, took: Duration) {
    let outcome = if recorded { "acknowledged" } else { "failed" };
    counter!("switchboard_transactions_total", "outcome" => outcome).increment(1);
    counter!("switchboard_events_received_total").increment(events as u64);
    if recorded {
        counter!("switchboard_events_deduplicated_total")
            .increment(events.saturating_sub(new) as u64);
        histogram!("switchboard_transaction_record_seconds").record(took.as_secs_f64());
    }
}

/// Events found by a catch-up (`bridge/catch_up.rs`) that no transaction had brought.
pub(crate) fn caught_up(events: u64) {
    counter!("switchboard_events_caught_up_total").increment(events);
}

/// An event handled: `source` is `homeserver` or `platform`, `waited_ms` its time since it
/// was recorded, `set_aside` whether it became a dead letter.
pub(crate) fn event_handled(source: &'static str, waited_ms: i64, set_aside: bool) {
    let outcome = if set_aside { "set_aside" } else { "done" };
    counter!("switchboard_events_handled_total", "source" => source, "outcome" => outcome)
        .increment(1);
    histogram!("switchboard_event_wait_seconds", "source" => source)
        .record(waited_ms.max(0) as f64 / 1000.0);
}

/// A delivery's outcome: `sent`, `retry` or `failed`, and the error's kind (`none` if sent).
pub(crate) fn delivery(platform: &str, outcome: &'static str, kind: &'static str) {
    counter!(
        "switchboard_deliveries_total",
        "platform" => platform_label(platform),
        "outcome" => outcome,
        "kind" => kind
    )
    .increment(1);
}

/// One platform call that sent a part.
pub(crate) fn delivery_time(platform: &str, took: Duration) {
    histogram!("switchboard_delivery_seconds", "platform" => platform_label(platform))
        .record(took.as_secs_f64());
}

/// How long one message part waited in its lane for its chat's paced slot.
pub(crate) fn pacing_wait(platform: &str, waited: Duration) {
    histogram!("switchboard_pacing_wait_seconds", "platform" => platform_label(platform))
        .record(waited.as_secs_f64());
}

/// How long a job waited in its lane, from being queued to starting: behind the lane's
/// earlier jobs and for one of the lanes' shared permits. By kind of lane.
pub(crate) fn lane_wait(lane: &'static str, waited: Duration) {
    histogram!("switchboard_lane_wait_seconds", "lane" => lane).record(waited.as_secs_f64());
}

/// An offer's event: `sent`, `accepted`, `declined`, `expired` or `failed`.
pub(crate) fn offer(platform: &str, event: &'static str) {
    counter!(
        "switchboard_offers_total",
        "platform" => platform_label(platform),
        "event" => event
    )
    .increment(1);
}

/// A hand-over: `why` is `None` when the responder asked for it, else the reason it was
/// forced (one of the fixed sentences the bridge gives; anything else counts as `other`).
pub(crate) fn handoff(why: Option<&str>) {
    counter!("switchboard_handoffs_total", "reason" => handoff_reason(why)).increment(1);
}

/// The label of a hand-over's reason (see [`handoff`]).
fn handoff_reason(why: Option<&str>) -> &'static str {
    match why {
        None => "requested",
        Some(why) if why.contains("offline") => "offline",
        Some(why) if why.contains("first reply") => "no_first_reply",
        Some(why) if why.contains("silent") => "idle",
        Some(why) if why.contains("could not be reached") => "unreachable",
        Some(_) => "other",
    }
}

/// A request refused by a rate limit: `api` is `visitor`, `proxy` or `admin`.
pub(crate) fn rate_limited(api: &'static str) {
    counter!("switchboard_rate_limited_total", "api" => api).increment(1);
}

/// A receiver's event not recorded because this instance no longer leads (`bridge/sink.rs`,
/// `AsLeader`).
pub(crate) fn fenced_off(platform: &str) {
    counter!("switchboard_fenced_writes_refused_total", "platform" => platform_label(platform))
        .increment(1);
}

pub(crate) fn dead_lettered(source: &'static str) {
    counter!("switchboard_dead_letters_total", "source" => source).increment(1);
}

/// One observation of a routing service level; `topic` must already be a label (see
/// `Bridge::topic_label`).
pub(crate) fn slo(slo: Slo, topic: &str, platform: &str, millis: i64) {
    histogram!(
        slo.name(),
        "topic" => topic.to_owned(),
        "platform" => platform_label(platform)
    )
    .record(millis.max(0) as f64 / 1000.0);
}

/// Sets the gauges read at scrape time: the store's counts and each part's state. A store
/// that cannot answer leaves the store's gauges as they were (and the database part says
/// why); the rest is still served.
pub async fn sample(store: &Store, health: &Health, platforms: &[&'static str]) {
    match store.gauges().await {
        Ok(g) => {
            for state in ConversationState::ALL {
                let n = g
                    .conversations
                    .iter()
                    .find(|(s, _)| s == state.as_str())
                    .map_or(0, |(_, n)| *n);
                gauge!("switchboard_conversations", "state" => state.as_str()).set(n as f64);
            }
            gauge!("switchboard_inbox_pending", "source" => "homeserver")
                .set(g.inbox_pending as f64);
            gauge!("switchboard_inbox_pending", "source" => "platform")
                .set(g.remote_inbox_pending as f64);
            for &platform in platforms {
                let depth = g.outbox_pending.iter().find(|d| d.platform == platform);
                gauge!("switchboard_outbox_pending", "platform" => platform)
                    .set(depth.map_or(0, |d| d.rows) as f64);
                gauge!("switchboard_outbox_deepest_lane", "platform" => platform)
                    .set(depth.map_or(0, |d| d.deepest_lane) as f64);
            }
            gauge!("switchboard_offers_open").set(g.offers_open as f64);
            gauge!("switchboard_dead_letters").set(g.dead_letters as f64);
        }
        Err(e) => tracing::warn!(error = %e, "metrics: the store's counts could not be read"),
    }
    gauge!("switchboard_runtime_tasks").set(
        tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks() as f64,
    );
    gauge!("switchboard_database_connections").set(f64::from(store.connections()));
    for (part, report) in health.snapshot().parts {
        for state in [PartState::Connected, PartState::Degraded, PartState::Down] {
            let word = match state {
                PartState::Connected => "connected",
                PartState::Degraded => "degraded",
                PartState::Down => "down",
            };
            gauge!("switchboard_part_state", "part" => part.clone(), "state" => word)
                .set(if report.state == state { 1.0 } else { 0.0 });
        }
    }
}

/// What the `/metrics` route needs: the store and parts to sample, and the recorder's text.
#[derive(Clone)]
pub struct MetricsState {
    pub store: Store,
    pub health: Health,
    /// The enabled platforms (their queues are reported even when empty).
    pub platforms: Vec<&'static str>,
    /// Renders everything recorded in Prometheus's text format.
    pub render: std::sync::Arc<dyn Fn() -> String + Send + Sync>,
}

/// `GET /metrics`, for a listener of its own or the admin listener (never the public one:
/// the figures are not a visitor's business).
pub fn router(state: MetricsState) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(state)
}

async fn scrape(State(state): State<MetricsState>) -> Response {
    sample(&state.store, &state.health, &state.platforms).await;
    (
        StatusCode::OK,
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        (state.render)(),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        bridge::dispatch::{Limits, handover_reason},
        responder::ResponderStatus,
    };

    /// Every reason the bridge gives for a forced hand-over has a label of its own: a
    /// reworded sentence would otherwise be counted as `other` without anyone noticing.
    #[test]
    fn every_hand_over_reason_has_its_own_label() {
        let limits = Limits {
            first_reply_secs: Some(1),
            idle_secs: Some(1),
        };
        let offline = handover_reason(
            10_000,
            0,
            None,
            None,
            Some(ResponderStatus::Offline),
            limits,
        );
        let no_reply = handover_reason(10_000, 0, None, None, None, limits);
        let silent = handover_reason(10_000, 0, Some(1_000), Some(2_000), None, limits);
        let labels: Vec<&str> = [offline, no_reply, silent]
            .into_iter()
            .map(|why| handoff_reason(Some(why.expect("a reason"))))
            .collect();
        assert_eq!(labels, ["offline", "no_first_reply", "idle"]);
        for unreachable in [
            "their address could not be reached",
            "their platform could not be reached",
        ] {
            assert_eq!(handoff_reason(Some(unreachable)), "unreachable");
        }
        assert_eq!(handoff_reason(None), "requested");
    }
}
