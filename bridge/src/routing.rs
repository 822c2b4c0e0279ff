//! Routing: who in the responder register may take a conversation now, and whom to offer it to.
//!
//! Everything here is pure: no I/O, no store, no clock. Callers pass in the responders with
//! their current load ([`Candidate`]), the request ([`RouteRequest`], including "now") and, for
//! round robin, the last responder chosen for the topic. That keeps every decision reproducible
//! in tests and explainable in the admin API ([`Ineligible`] says why someone was skipped).
//!
//! The register's validation rules ([`validate_responder`], in `validate.rs`) belong to this
//! module because they are the other half of the same contract: whatever validation accepts,
//! routing understands. The rules for working hours are in `hours.rs`.

use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::responder::{Responder, ResponderStatus};

mod hours;
mod validate;

pub use hours::{HoursError, in_working_hours, working_time_between};
pub use validate::{FieldError, validate_responder};

/// How a topic's conversations are offered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    /// Offer to every eligible responder at once; the first to accept takes it.
    #[default]
    Broadcast,
    /// Offer to one eligible responder, taking turns in id order.
    RoundRobin,
    /// Offer to the eligible responder holding the fewest conversations.
    LeastBusy,
}

/// Why a responder cannot take a conversation now (for logs and the admin API).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ineligible {
    /// Their status is not [`ResponderStatus::Available`].
    NotAvailable(ResponderStatus),
    /// None of their topics covers the requested topic.
    WrongTopic,
    /// They speak none of the visitor's language.
    NoCommonLanguage,
    /// It is outside their working hours (or their hours cannot be read).
    OutsideHours,
    /// They already hold as many conversations as they take at once.
    AtCapacity { active: i64, max: i64 },
    /// They have no contact to reach them through.
    NoContact,
    /// They already had this conversation (declined it, or it timed out with them).
    Excluded,
}

impl fmt::Display for Ineligible {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Ineligible::NotAvailable(status) => write!(f, "status is {}", status.as_str()),
            Ineligible::WrongTopic => f.write_str("does not answer this topic"),
            Ineligible::NoCommonLanguage => f.write_str("does not speak the visitor's language"),
            Ineligible::OutsideHours => f.write_str("outside working hours"),
            Ineligible::AtCapacity { active, max } => {
                write!(f, "at capacity ({active} of {max} conversations)")
            }
            Ineligible::NoContact => f.write_str("has no contact to reach them"),
            Ineligible::Excluded => f.write_str("already had this conversation"),
        }
    }
}

/// What routing knows about one responder at decision time.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub responder: &'a Responder,
    /// Conversations they currently hold.
    pub active: i64,
    /// When they were last offered a conversation (unix milliseconds); `None` if never.
    pub last_offered_at: Option<i64>,
}

/// The request being routed.
#[derive(Debug, Clone, Copy)]
pub struct RouteRequest<'a> {
    /// The conversation's topic, e.g. `billing/refunds`.
    pub topic: &'a str,
    /// The visitor's language tag (`en`, `en-GB`), if known.
    pub language: Option<&'a str>,
    /// The instant the decision is made for; working hours are judged at this time.
    pub now: DateTime<Utc>,
    /// Ids of responders who already had this conversation.
    pub exclude: &'a [String],
}

/// Whether a responder's topic `pattern` covers `topic`.
///
/// `*` covers everything; `billing/*` covers `billing` itself and any subtopic at any depth
/// (`billing/refunds`, `billing/refunds/eu`) but not a topic that merely starts with the same
/// letters (`billingx`); any other pattern must equal the topic exactly.
pub fn topic_matches(pattern: &str, topic: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    match pattern.strip_suffix("/*") {
        Some(parent) => {
            topic == parent
                || topic
                    .strip_prefix(parent)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        None => pattern == topic,
    }
}

/// Whether `responder` speaks `language`.
///
/// Only primary subtags are compared, case-insensitively, so `en-GB` and `en` match each
/// other. A visitor without a language (or with an empty one) and a responder without any
/// languages listed match anyone.
pub fn speaks(responder: &Responder, language: Option<&str>) -> bool {
    let Some(wanted) = language.map(primary_subtag).filter(|l| !l.is_empty()) else {
        return true;
    };
    responder.languages.is_empty()
        || responder
            .languages
            .iter()
            .any(|l| primary_subtag(l).eq_ignore_ascii_case(wanted))
}

/// The primary language subtag: `en` in `en-GB` (or in the POSIX-style `en_GB`).
pub(crate) fn primary_subtag(tag: &str) -> &str {
    tag.split(['-', '_']).next().unwrap_or(tag).trim()
}

/// Whether the responder in `c` may be offered the conversation in `req` now, and if not,
/// why. Checks, in order: excluded, status, topic, language, working hours, capacity, contact;
/// the first failing check is reported.
///
/// Hours that cannot be read count as [`Ineligible::OutsideHours`] (with a warning logged):
/// better to skip one misconfigured responder than to offer outside their hours.
pub fn eligibility(c: &Candidate<'_>, req: &RouteRequest<'_>) -> Result<(), Ineligible> {
    let r = c.responder;
    if req.exclude.contains(&r.id) {
        return Err(Ineligible::Excluded);
    }
    if r.status != ResponderStatus::Available {
        return Err(Ineligible::NotAvailable(r.status));
    }
    if !r.topics.iter().any(|p| topic_matches(p, req.topic)) {
        return Err(Ineligible::WrongTopic);
    }
    if !speaks(r, req.language) {
        return Err(Ineligible::NoCommonLanguage);
    }
    match in_working_hours(r, req.now) {
        Ok(true) => {}
        Ok(false) => return Err(Ineligible::OutsideHours),
        Err(e) => {
            tracing::warn!(responder = %r.id, error = %e, "cannot read working hours; skipping");
            return Err(Ineligible::OutsideHours);
        }
    }
    if c.active >= r.max_concurrent {
        return Err(Ineligible::AtCapacity {
            active: c.active,
            max: r.max_concurrent,
        });
    }
    if r.contacts.is_empty() {
        return Err(Ineligible::NoContact);
    }
    Ok(())
}

/// Picks whom to offer to, from all candidates (ineligible ones are skipped):
///
/// - [`Strategy::Broadcast`]: all eligible responders, ordered by id.
/// - [`Strategy::RoundRobin`]: the one eligible responder whose id comes after `cursor` (the
///   last responder id chosen for this topic) in id order, wrapping round to the first; the
///   first one if there is no cursor. Feed the returned id back as the next cursor.
/// - [`Strategy::LeastBusy`]: the one eligible responder with the fewest active conversations;
///   ties go to the one offered longest ago (never offered comes first), then to the lowest id.
///   Recording `last_offered_at` after each offer thus spreads work evenly among equals.
///
/// Returns an empty list when no one is eligible. A responder listed twice among the
/// candidates is considered once (the first entry counts).
pub fn select<'a>(
    strategy: Strategy,
    candidates: &'a [Candidate<'a>],
    req: &RouteRequest<'_>,
    cursor: Option<&str>,
) -> Vec<&'a Responder> {
    let mut eligible: Vec<&'a Candidate<'a>> = candidates
        .iter()
        .filter(|c| match eligibility(c, req) {
            Ok(()) => true,
            Err(why) => {
                let id = &c.responder.id;
                tracing::debug!(responder = %id, topic = req.topic, reason = %why, "not eligible");
                false
            }
        })
        .collect();
    // Stable sort, so `dedup_by` keeps the first entry for an id.
    eligible.sort_by(|a, b| a.responder.id.cmp(&b.responder.id));
    eligible.dedup_by(|a, b| a.responder.id == b.responder.id);

    match strategy {
        Strategy::Broadcast => eligible.iter().map(|c| c.responder).collect(),
        Strategy::RoundRobin => {
            let next = cursor
                .and_then(|last| eligible.iter().find(|c| c.responder.id.as_str() > last))
                .or_else(|| eligible.first());
            next.map(|c| c.responder).into_iter().collect()
        }
        Strategy::LeastBusy => eligible
            .iter()
            // `None < Some(_)`: never offered sorts before any time.
            .min_by_key(|c| (c.active, c.last_offered_at, &c.responder.id))
            .map(|c| c.responder)
            .into_iter()
            .collect(),
    }
}

#[cfg(test)]
mod tests;
