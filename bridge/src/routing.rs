//! Routing: who in the responder register may take a conversation now, and whom to offer it to.
//!
//! Everything here is pure: no I/O, no store, no clock. Callers pass in the responders with
//! their current load ([`Candidate`]), the request ([`RouteRequest`], including "now") and, for
//! round robin, the last responder chosen for the topic. That keeps every decision reproducible
//! in tests and explainable in the admin API ([`Ineligible`] says why someone was skipped).
//!
//! The register's validation rules ([`validate_responder`]) live here too, because they are the
//! other half of the same contract: whatever validation accepts, routing understands.

use std::fmt;

use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

use crate::responder::{Responder, ResponderStatus};

mod hours;

pub use hours::{HoursError, in_working_hours, working_time_between};
use hours::{parse_interval, parse_weekday};

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

/// A responder field that fails validation: which one (`field`, the JSON path such as
/// `hours.mon[1]` or `contacts[0].platform`) and what is wrong with it (`message`, fit to show
/// an operator).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Checks a responder before it enters the register (admin API, CLI, configuration loader).
/// Reports the first problem found, checking fields in declaration order:
///
/// - `id`: 1–64 characters of `a-z`, `0-9`, `.`, `_`, `=`, `-`;
/// - `display_name`: not blank; `pseudonym`, if set: not blank, at most 64 characters;
/// - `topics[i]`: `*`, or `/`-separated segments of `a-z`, `0-9`, `_`, `-`, optionally ending
///   in `/*`;
/// - `languages[i]`: a 2–8 letter primary tag, optionally followed by `-subtag`s of 1–8 letters
///   or digits;
/// - `timezone`: an IANA time zone name known to chrono-tz;
/// - `hours.<day>`: day is `mon` … `sun`; `hours.<day>[i]`: `HH:MM-HH:MM` with valid times
///   (`24:00` allowed as an end) and start ≠ end;
/// - `max_concurrent`: 1 to 1000;
/// - `contacts[i].platform`: one of `known_platforms`; `contacts[i].address`: not empty; a
///   Matrix user ID (`@local:server`) on `matrix`, an integer chat ID on `telegram`.
pub fn validate_responder(r: &Responder, known_platforms: &[&str]) -> Result<(), FieldError> {
    let id_ok = (1..=64).contains(&r.id.len())
        && r.id.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'=' | b'-')
        });
    if !id_ok {
        return Err(FieldError::new(
            "id",
            "must be 1-64 characters of a-z, 0-9, '.', '_', '=', '-'",
        ));
    }
    // A responder's ghost is `@{ghost_prefix}{id}`; visitor accounts are
    // `@{ghost_prefix}visitor-…`, and the two must never be the same user.
    if r.id
        .starts_with(crate::visitor_account::VISITOR_LOCALPART_PREFIX)
    {
        return Err(FieldError::new(
            "id",
            "must not start with 'visitor-' (reserved for visitor accounts)",
        ));
    }

    if r.display_name.trim().is_empty() {
        return Err(FieldError::new("display_name", "must not be empty"));
    }
    if let Some(pseudonym) = &r.pseudonym {
        if pseudonym.trim().is_empty() {
            return Err(FieldError::new("pseudonym", "must not be empty when set"));
        }
        if pseudonym.chars().count() > 64 {
            return Err(FieldError::new(
                "pseudonym",
                "must be at most 64 characters",
            ));
        }
    }

    for (i, topic) in r.topics.iter().enumerate() {
        if !valid_topic(topic) {
            return Err(FieldError::new(
                format!("topics[{i}]"),
                format!(
                    "{topic:?} is not a topic: use '*', or segments of a-z, 0-9, '_', '-' \
                     separated by '/', optionally ending in '/*'"
                ),
            ));
        }
    }

    for (i, language) in r.languages.iter().enumerate() {
        if !valid_language(language) {
            return Err(FieldError::new(
                format!("languages[{i}]"),
                format!("{language:?} is not a language tag such as \"en\" or \"en-GB\""),
            ));
        }
    }

    if r.timezone.parse::<Tz>().is_err() {
        return Err(FieldError::new(
            "timezone",
            format!(
                "{:?} is not an IANA time zone such as \"Europe/Berlin\"",
                r.timezone
            ),
        ));
    }

    for (day, intervals) in &r.hours {
        if parse_weekday(day).is_none() {
            return Err(FieldError::new(
                format!("hours.{day}"),
                "days must be mon, tue, wed, thu, fri, sat or sun",
            ));
        }
        for (i, interval) in intervals.iter().enumerate() {
            let field = format!("hours.{day}[{i}]");
            let Some((start, end)) = parse_interval(interval) else {
                return Err(FieldError::new(
                    field,
                    format!("{interval:?} is not an interval \"HH:MM-HH:MM\" of valid times"),
                ));
            };
            if start == end {
                return Err(FieldError::new(
                    field,
                    format!("{interval:?} starts and ends at the same time"),
                ));
            }
        }
    }

    if !(1..=1000).contains(&r.max_concurrent) {
        return Err(FieldError::new(
            "max_concurrent",
            "must be between 1 and 1000",
        ));
    }

    for (i, contact) in r.contacts.iter().enumerate() {
        if !known_platforms.contains(&contact.platform.as_str()) {
            return Err(FieldError::new(
                format!("contacts[{i}].platform"),
                format!(
                    "unknown platform {:?}; known: {}",
                    contact.platform,
                    known_platforms.join(", ")
                ),
            ));
        }
        let field = format!("contacts[{i}].address");
        let address = contact.address.as_str();
        if address.is_empty() {
            return Err(FieldError::new(field, "must not be empty"));
        }
        // Each platform says what its addresses look like (`connector::registry`).
        crate::connector::registry::validate_address(&contact.platform, address)
            .map_err(|e| FieldError::new(field, e))?;
    }

    Ok(())
}

fn valid_topic(topic: &str) -> bool {
    if topic == "*" {
        return true;
    }
    let path = topic.strip_suffix("/*").unwrap_or(topic);
    !path.is_empty()
        && path.split('/').all(|segment| {
            !segment.is_empty()
                && segment
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        })
}

fn valid_language(tag: &str) -> bool {
    let mut subtags = tag.split('-');
    let primary = subtags.next().unwrap_or_default();
    (2..=8).contains(&primary.len())
        && primary.bytes().all(|b| b.is_ascii_alphabetic())
        && subtags
            .all(|s| (1..=8).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_alphanumeric()))
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;
    use crate::responder::{Contact, WeeklyHours};

    /// An available responder answering everything, any time, in any language, on Matrix.
    fn responder(id: &str) -> Responder {
        Responder {
            id: id.into(),
            display_name: format!("Responder {id}"),
            pseudonym: None,
            topics: vec!["*".into()],
            languages: vec![],
            timezone: "UTC".into(),
            hours: WeeklyHours::new(),
            max_concurrent: 3,
            status: ResponderStatus::Available,
            contacts: vec![Contact {
                platform: "matrix".into(),
                address: format!("@{id}:example.org"),
            }],
        }
    }

    fn hours(entries: &[(&str, &[&str])]) -> WeeklyHours {
        entries
            .iter()
            .map(|(day, ivs)| (day.to_string(), ivs.iter().map(|s| s.to_string()).collect()))
            .collect()
    }

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).unwrap()
    }

    /// Wednesday 2024-06-05 12:00 UTC: a weekday, no DST change anywhere near.
    fn noon() -> DateTime<Utc> {
        utc(2024, 6, 5, 12, 0)
    }

    fn request<'a>(topic: &'a str, exclude: &'a [String]) -> RouteRequest<'a> {
        RouteRequest {
            topic,
            language: None,
            now: noon(),
            exclude,
        }
    }

    fn candidate(r: &Responder) -> Candidate<'_> {
        Candidate {
            responder: r,
            active: 0,
            last_offered_at: None,
        }
    }

    fn ids(rs: &[&Responder]) -> Vec<String> {
        rs.iter().map(|r| r.id.clone()).collect()
    }

    // ---- topics ----

    #[test]
    fn wildcard_subtopic_pattern_covers_parent_and_all_descendants() {
        assert!(topic_matches("billing/*", "billing"));
        assert!(topic_matches("billing/*", "billing/refunds"));
        assert!(topic_matches("billing/*", "billing/refunds/eu"));
        assert!(!topic_matches("billing/*", "shipping"));
        assert!(!topic_matches("billing/*", "shipping/billing"));
    }

    #[test]
    fn wildcard_pattern_never_matches_a_mere_prefix_of_a_segment() {
        assert!(!topic_matches("billing/*", "billingx"));
        assert!(!topic_matches("billing/*", "billingx/refunds"));
        assert!(!topic_matches("billing/refunds/*", "billing/refundsx"));
    }

    #[test]
    fn star_matches_every_topic() {
        assert!(topic_matches("*", "billing"));
        assert!(topic_matches("*", "billing/refunds/eu"));
        assert!(topic_matches("*", ""));
    }

    #[test]
    fn plain_pattern_matches_exactly_only() {
        assert!(topic_matches("billing", "billing"));
        assert!(!topic_matches("billing", "billing/refunds"));
        assert!(!topic_matches("billing", "billingx"));
        assert!(!topic_matches("billing/refunds", "billing"));
        assert!(topic_matches("billing/refunds", "billing/refunds"));
    }

    // ---- languages ----

    #[test]
    fn regional_variants_match_their_primary_language_both_ways() {
        let mut r = responder("a");
        r.languages = vec!["en".into(), "de".into()];
        assert!(speaks(&r, Some("en-GB")));
        assert!(speaks(&r, Some("EN")));
        assert!(speaks(&r, Some("de-AT")));
        assert!(!speaks(&r, Some("fr")));
        assert!(!speaks(&r, Some("fr-CA")));

        r.languages = vec!["en-GB".into()];
        assert!(speaks(&r, Some("en")));
        assert!(speaks(&r, Some("en-US")));
        assert!(!speaks(&r, Some("es")));
    }

    #[test]
    fn empty_language_list_speaks_anything_and_no_preference_matches_anyone() {
        let mut r = responder("a");
        assert!(speaks(&r, Some("ja")));
        assert!(speaks(&r, None));
        r.languages = vec!["de".into()];
        assert!(speaks(&r, None));
        assert!(speaks(&r, Some("")));
    }

    // ---- working hours ----

    #[test]
    fn same_instant_is_in_hours_in_tokyo_but_not_in_los_angeles() {
        let weekdays = hours(&[
            ("mon", &["09:00-17:00"]),
            ("tue", &["09:00-17:00"]),
            ("wed", &["09:00-17:00"]),
            ("thu", &["09:00-17:00"]),
            ("fri", &["09:00-17:00"]),
        ]);
        let mut tokyo = responder("tokyo");
        tokyo.timezone = "Asia/Tokyo".into();
        tokyo.hours = weekdays.clone();
        let mut la = responder("la");
        la.timezone = "America/Los_Angeles".into();
        la.hours = weekdays;

        // Wednesday 00:30 UTC = Wednesday 09:30 in Tokyo, Tuesday 17:30 in Los Angeles.
        let now = utc(2024, 6, 5, 0, 30);
        assert!(in_working_hours(&tokyo, now).unwrap());
        assert!(!in_working_hours(&la, now).unwrap());

        // Wednesday 16:30 UTC = Thursday 01:30 in Tokyo, Wednesday 09:30 in Los Angeles.
        let later = utc(2024, 6, 5, 16, 30);
        assert!(!in_working_hours(&tokyo, later).unwrap());
        assert!(in_working_hours(&la, later).unwrap());
    }

    #[test]
    fn interval_crossing_midnight_continues_into_the_next_day() {
        let mut r = responder("night");
        r.timezone = "UTC".into();
        r.hours = hours(&[("fri", &["22:00-02:00"])]);
        // 2024-06-07 is a Friday.
        assert!(!in_working_hours(&r, utc(2024, 6, 7, 21, 59)).unwrap());
        assert!(in_working_hours(&r, utc(2024, 6, 7, 22, 0)).unwrap());
        assert!(in_working_hours(&r, utc(2024, 6, 7, 23, 59)).unwrap());
        assert!(in_working_hours(&r, utc(2024, 6, 8, 1, 30)).unwrap());
        assert!(!in_working_hours(&r, utc(2024, 6, 8, 2, 0)).unwrap());
        assert!(!in_working_hours(&r, utc(2024, 6, 8, 2, 30)).unwrap());
        // Saturday evening is not Friday evening.
        assert!(!in_working_hours(&r, utc(2024, 6, 8, 22, 30)).unwrap());
        // Nor does it leak into Friday morning (the night before is Thursday's).
        assert!(!in_working_hours(&r, utc(2024, 6, 7, 1, 30)).unwrap());
    }

    #[test]
    fn midnight_crossing_is_judged_in_local_time() {
        let mut r = responder("ny");
        r.timezone = "America/New_York".into(); // UTC-4 in June
        r.hours = hours(&[("fri", &["22:00-02:00"])]);
        // Saturday 01:30 local = Saturday 05:30 UTC.
        assert!(in_working_hours(&r, utc(2024, 6, 8, 5, 30)).unwrap());
        // Saturday 02:30 local = Saturday 06:30 UTC.
        assert!(!in_working_hours(&r, utc(2024, 6, 8, 6, 30)).unwrap());
        // Saturday 01:30 UTC is still Friday 21:30 local: not yet.
        assert!(!in_working_hours(&r, utc(2024, 6, 8, 1, 30)).unwrap());
    }

    #[test]
    fn sunday_night_shift_wraps_into_monday() {
        let mut r = responder("a");
        r.hours = hours(&[("sun", &["23:00-01:00"])]);
        // 2024-06-10 is a Monday.
        assert!(in_working_hours(&r, utc(2024, 6, 10, 0, 30)).unwrap());
        assert!(!in_working_hours(&r, utc(2024, 6, 10, 1, 30)).unwrap());
    }

    #[test]
    fn end_of_day_may_be_written_as_24_00() {
        let mut r = responder("a");
        r.hours = hours(&[("wed", &["18:00-24:00"])]);
        assert!(in_working_hours(&r, utc(2024, 6, 5, 23, 59)).unwrap());
        assert!(!in_working_hours(&r, utc(2024, 6, 6, 0, 0)).unwrap());
        assert!(!in_working_hours(&r, utc(2024, 6, 5, 17, 59)).unwrap());
    }

    #[test]
    fn several_intervals_on_one_day_leave_gaps_between_them() {
        let mut r = responder("a");
        r.hours = hours(&[("wed", &["09:00-12:00", "13:00-17:00"])]);
        assert!(in_working_hours(&r, utc(2024, 6, 5, 11, 59)).unwrap());
        assert!(!in_working_hours(&r, utc(2024, 6, 5, 12, 30)).unwrap());
        assert!(in_working_hours(&r, utc(2024, 6, 5, 13, 0)).unwrap());
    }

    #[test]
    fn working_hours_follow_berlin_wall_clock_across_spring_forward() {
        let mut r = responder("berlin");
        r.timezone = "Europe/Berlin".into();
        r.hours = hours(&[("sun", &["08:00-09:00"])]);
        // The Sunday before the change: 07:30 UTC is 08:30 CET (UTC+1).
        assert!(in_working_hours(&r, utc(2024, 3, 24, 7, 30)).unwrap());
        // 2024-03-31, clocks go forward at 02:00: 07:30 UTC is 09:30 CEST (UTC+2).
        assert!(!in_working_hours(&r, utc(2024, 3, 31, 7, 30)).unwrap());
        // ... and the same wall-clock hour is now an hour earlier in UTC.
        assert!(in_working_hours(&r, utc(2024, 3, 31, 6, 30)).unwrap());
    }

    #[test]
    fn interval_spanning_the_skipped_hour_lasts_two_real_hours() {
        let mut r = responder("berlin");
        r.timezone = "Europe/Berlin".into();
        r.hours = hours(&[("sun", &["01:00-04:00"])]);
        // 00:30 UTC = 01:30 CET; 01:30 UTC = 03:30 CEST; 02:00 UTC = 04:00 CEST.
        assert!(in_working_hours(&r, utc(2024, 3, 31, 0, 30)).unwrap());
        assert!(in_working_hours(&r, utc(2024, 3, 31, 1, 30)).unwrap());
        assert!(!in_working_hours(&r, utc(2024, 3, 31, 2, 0)).unwrap());
    }

    #[test]
    fn repeated_hour_on_fall_back_day_counts_both_times() {
        let mut r = responder("berlin");
        r.timezone = "Europe/Berlin".into();
        r.hours = hours(&[("sun", &["02:00-03:00"])]);
        // 2024-10-27: 02:00-03:00 local happens twice, at 00:00-01:00 and 01:00-02:00 UTC.
        assert!(in_working_hours(&r, utc(2024, 10, 27, 0, 30)).unwrap());
        assert!(in_working_hours(&r, utc(2024, 10, 27, 1, 30)).unwrap());
        assert!(!in_working_hours(&r, utc(2024, 10, 27, 2, 0)).unwrap());
    }

    #[test]
    fn empty_hours_map_means_any_time() {
        let r = responder("a");
        assert!(r.hours.is_empty());
        for now in [
            utc(2024, 6, 5, 3, 17),
            utc(2024, 6, 9, 23, 59),
            utc(2024, 12, 25, 0, 0),
        ] {
            assert!(in_working_hours(&r, now).unwrap());
        }
    }

    #[test]
    fn days_without_entries_are_off() {
        let mut r = responder("a");
        r.hours = hours(&[("mon", &["00:00-24:00"])]);
        assert!(in_working_hours(&r, utc(2024, 6, 10, 12, 0)).unwrap()); // Monday
        assert!(!in_working_hours(&r, noon()).unwrap()); // Wednesday
    }

    #[test]
    fn unreadable_hours_are_errors_whatever_the_time() {
        let mut r = responder("a");
        r.hours = hours(&[("mon", &["09:00-17:00"])]);
        r.timezone = "Mars/Olympus".into();
        assert_eq!(
            in_working_hours(&r, noon()),
            Err(HoursError::TimeZone("Mars/Olympus".into()))
        );

        r.timezone = "UTC".into();
        r.hours = hours(&[("mon", &["09:00-17:00"]), ("wed", &["9-5"])]);
        // Monday morning, when only the good entry matters, still reports the bad one.
        assert_eq!(
            in_working_hours(&r, utc(2024, 6, 10, 10, 0)),
            Err(HoursError::Interval("9-5".into()))
        );

        r.hours = hours(&[("monday", &["09:00-17:00"])]);
        assert_eq!(
            in_working_hours(&r, noon()),
            Err(HoursError::Interval("monday".into()))
        );
    }

    // ---- eligibility ----

    #[test]
    fn available_responder_matching_everything_is_eligible() {
        let r = responder("a");
        assert_eq!(
            eligibility(&candidate(&r), &request("billing", &[])),
            Ok(())
        );
    }

    #[test]
    fn responder_holding_max_conversations_is_at_capacity() {
        let r = responder("a"); // max_concurrent 3
        let mut c = candidate(&r);
        c.active = 2;
        assert_eq!(eligibility(&c, &request("billing", &[])), Ok(()));
        c.active = 3;
        assert_eq!(
            eligibility(&c, &request("billing", &[])),
            Err(Ineligible::AtCapacity { active: 3, max: 3 })
        );
        c.active = 5; // over capacity after the limit was lowered
        assert_eq!(
            eligibility(&c, &request("billing", &[])),
            Err(Ineligible::AtCapacity { active: 5, max: 3 })
        );
    }

    #[test]
    fn away_and_offline_responders_are_not_available() {
        for status in [ResponderStatus::Away, ResponderStatus::Offline] {
            let mut r = responder("a");
            r.status = status;
            assert_eq!(
                eligibility(&candidate(&r), &request("billing", &[])),
                Err(Ineligible::NotAvailable(status))
            );
        }
    }

    #[test]
    fn responder_without_a_matching_topic_is_wrong_topic() {
        let mut r = responder("a");
        r.topics = vec!["billing/*".into(), "sales".into()];
        assert_eq!(
            eligibility(&candidate(&r), &request("billing/refunds", &[])),
            Ok(())
        );
        assert_eq!(eligibility(&candidate(&r), &request("sales", &[])), Ok(()));
        assert_eq!(
            eligibility(&candidate(&r), &request("billingx", &[])),
            Err(Ineligible::WrongTopic)
        );
        r.topics.clear();
        assert_eq!(
            eligibility(&candidate(&r), &request("billing", &[])),
            Err(Ineligible::WrongTopic)
        );
    }

    #[test]
    fn responder_without_the_visitors_language_has_no_common_language() {
        let mut r = responder("a");
        r.languages = vec!["de".into()];
        let mut req = request("billing", &[]);
        req.language = Some("en-GB");
        assert_eq!(
            eligibility(&candidate(&r), &req),
            Err(Ineligible::NoCommonLanguage)
        );
        req.language = Some("de-CH");
        assert_eq!(eligibility(&candidate(&r), &req), Ok(()));
    }

    #[test]
    fn responder_off_duty_is_outside_hours_and_unreadable_hours_count_as_off() {
        let mut r = responder("a");
        r.hours = hours(&[("mon", &["09:00-17:00"])]);
        assert_eq!(
            eligibility(&candidate(&r), &request("billing", &[])),
            Err(Ineligible::OutsideHours)
        );
        r.hours = hours(&[("wed", &["09:00-17:00"])]);
        assert_eq!(
            eligibility(&candidate(&r), &request("billing", &[])),
            Ok(())
        );
        r.timezone = "Nowhere/Special".into();
        assert_eq!(
            eligibility(&candidate(&r), &request("billing", &[])),
            Err(Ineligible::OutsideHours)
        );
    }

    #[test]
    fn responder_without_contacts_cannot_be_reached() {
        let mut r = responder("a");
        r.contacts.clear();
        assert_eq!(
            eligibility(&candidate(&r), &request("billing", &[])),
            Err(Ineligible::NoContact)
        );
    }

    #[test]
    fn responder_who_already_had_the_conversation_is_excluded() {
        let r = responder("a");
        let exclude = vec!["b".to_string(), "a".to_string()];
        assert_eq!(
            eligibility(&candidate(&r), &request("billing", &exclude)),
            Err(Ineligible::Excluded)
        );
        let other = vec!["ab".to_string()];
        assert_eq!(
            eligibility(&candidate(&r), &request("billing", &other)),
            Ok(())
        );
    }

    #[test]
    fn the_first_failing_check_in_documented_order_is_reported() {
        // Fails every check; each step below repairs one and the next failure shows.
        let mut r = responder("a");
        r.status = ResponderStatus::Away;
        r.topics = vec!["sales".into()];
        r.languages = vec!["de".into()];
        r.hours = hours(&[("mon", &["09:00-10:00"])]);
        r.contacts.clear();
        let excluded = vec!["a".to_string()];
        let mut req = request("billing", &excluded);
        req.language = Some("en");
        let check = |r: &Responder, active: i64, req: &RouteRequest<'_>| {
            eligibility(
                &Candidate {
                    responder: r,
                    active,
                    last_offered_at: None,
                },
                req,
            )
        };

        assert_eq!(check(&r, 3, &req), Err(Ineligible::Excluded));
        req.exclude = &[];
        assert_eq!(
            check(&r, 3, &req),
            Err(Ineligible::NotAvailable(ResponderStatus::Away))
        );
        r.status = ResponderStatus::Available;
        assert_eq!(check(&r, 3, &req), Err(Ineligible::WrongTopic));
        req.topic = "sales";
        assert_eq!(check(&r, 3, &req), Err(Ineligible::NoCommonLanguage));
        req.language = Some("de");
        assert_eq!(check(&r, 3, &req), Err(Ineligible::OutsideHours));
        req.now = utc(2024, 6, 10, 9, 30); // Monday
        assert_eq!(
            check(&r, 3, &req),
            Err(Ineligible::AtCapacity { active: 3, max: 3 })
        );
        assert_eq!(check(&r, 0, &req), Err(Ineligible::NoContact));
        r.contacts = responder("a").contacts;
        assert_eq!(check(&r, 0, &req), Ok(()));
    }

    #[test]
    fn ineligibility_reads_well_in_logs() {
        assert_eq!(
            Ineligible::NotAvailable(ResponderStatus::Away).to_string(),
            "status is away"
        );
        assert_eq!(
            Ineligible::AtCapacity { active: 3, max: 3 }.to_string(),
            "at capacity (3 of 3 conversations)"
        );
    }

    // ---- strategies ----

    #[test]
    fn strategy_defaults_to_broadcast_and_serializes_in_snake_case() {
        assert_eq!(Strategy::default(), Strategy::Broadcast);
        assert_eq!(
            serde_json::to_string(&Strategy::RoundRobin).unwrap(),
            "\"round_robin\""
        );
        assert_eq!(
            serde_json::from_str::<Strategy>("\"least_busy\"").unwrap(),
            Strategy::LeastBusy
        );
        assert_eq!(
            serde_json::from_str::<Strategy>("\"broadcast\"").unwrap(),
            Strategy::Broadcast
        );
    }

    #[test]
    fn broadcast_offers_every_eligible_responder_in_id_order() {
        let (c, a, b) = (responder("carol"), responder("alice"), responder("bob"));
        let mut away = responder("aaron");
        away.status = ResponderStatus::Away;
        let candidates = [
            candidate(&c),
            candidate(&away),
            candidate(&a),
            candidate(&b),
        ];
        let chosen = select(
            Strategy::Broadcast,
            &candidates,
            &request("billing", &[]),
            None,
        );
        assert_eq!(ids(&chosen), ["alice", "bob", "carol"]);
    }

    #[test]
    fn broadcast_offers_a_responder_listed_twice_only_once() {
        let a = responder("alice");
        let candidates = [candidate(&a), candidate(&a)];
        let chosen = select(
            Strategy::Broadcast,
            &candidates,
            &request("billing", &[]),
            None,
        );
        assert_eq!(ids(&chosen), ["alice"]);
    }

    #[test]
    fn nobody_eligible_means_nobody_chosen_for_every_strategy() {
        let mut a = responder("alice");
        a.status = ResponderStatus::Offline;
        let candidates = [candidate(&a)];
        for strategy in [
            Strategy::Broadcast,
            Strategy::RoundRobin,
            Strategy::LeastBusy,
        ] {
            assert!(
                select(
                    strategy,
                    &candidates,
                    &request("billing", &[]),
                    Some("alice")
                )
                .is_empty()
            );
            assert!(select(strategy, &[], &request("billing", &[]), None).is_empty());
        }
    }

    #[test]
    fn round_robin_rotates_through_responders_and_wraps() {
        let (a, b, c) = (responder("a"), responder("b"), responder("c"));
        let candidates = [candidate(&c), candidate(&a), candidate(&b)];
        let req = request("billing", &[]);
        let mut cursor: Option<String> = None;
        let mut order = Vec::new();
        for _ in 0..7 {
            let chosen = select(Strategy::RoundRobin, &candidates, &req, cursor.as_deref());
            assert_eq!(chosen.len(), 1);
            cursor = Some(chosen[0].id.clone());
            order.push(chosen[0].id.clone());
        }
        assert_eq!(order, ["a", "b", "c", "a", "b", "c", "a"]);
    }

    #[test]
    fn round_robin_skips_ineligible_responders() {
        let (a, c, d) = (responder("a"), responder("c"), responder("d"));
        let mut b = responder("b");
        b.status = ResponderStatus::Away;
        let candidates = [candidate(&a), candidate(&b), candidate(&c), candidate(&d)];
        let excluded = vec!["d".to_string()];
        let req = request("billing", &excluded);

        assert_eq!(
            ids(&select(Strategy::RoundRobin, &candidates, &req, Some("a"))),
            ["c"]
        );
        // After c, d is excluded: wrap round to a.
        assert_eq!(
            ids(&select(Strategy::RoundRobin, &candidates, &req, Some("c"))),
            ["a"]
        );
    }

    #[test]
    fn round_robin_continues_after_a_cursor_that_left_the_register() {
        let (a, c) = (responder("a"), responder("c"));
        let candidates = [candidate(&a), candidate(&c)];
        let req = request("billing", &[]);
        assert_eq!(
            ids(&select(Strategy::RoundRobin, &candidates, &req, Some("b"))),
            ["c"]
        );
        assert_eq!(
            ids(&select(Strategy::RoundRobin, &candidates, &req, Some("z"))),
            ["a"]
        );
    }

    #[test]
    fn least_busy_chooses_the_fewest_active_conversations() {
        let (a, b, c) = (responder("a"), responder("b"), responder("c"));
        let candidates = [
            Candidate {
                active: 2,
                ..candidate(&a)
            },
            Candidate {
                active: 1,
                last_offered_at: Some(5),
                ..candidate(&b)
            },
            Candidate {
                active: 2,
                ..candidate(&c)
            },
        ];
        let chosen = select(
            Strategy::LeastBusy,
            &candidates,
            &request("billing", &[]),
            None,
        );
        assert_eq!(ids(&chosen), ["b"]);
    }

    #[test]
    fn least_busy_ignores_a_less_busy_but_ineligible_responder() {
        let (a, b) = (responder("a"), responder("b"));
        let candidates = [
            Candidate {
                active: 2,
                ..candidate(&a)
            },
            Candidate {
                active: 0,
                ..candidate(&b)
            },
        ];
        let excluded = vec!["b".to_string()];
        let chosen = select(
            Strategy::LeastBusy,
            &candidates,
            &request("billing", &excluded),
            None,
        );
        assert_eq!(ids(&chosen), ["a"]);
    }

    #[test]
    fn least_busy_breaks_ties_by_oldest_offer_then_id() {
        let (a, b, c, d) = (
            responder("a"),
            responder("b"),
            responder("c"),
            responder("d"),
        );
        let req = request("billing", &[]);

        // Never offered beats offered at any time.
        let candidates = [
            Candidate {
                last_offered_at: Some(100),
                ..candidate(&a)
            },
            Candidate {
                last_offered_at: None,
                ..candidate(&c)
            },
        ];
        assert_eq!(
            ids(&select(Strategy::LeastBusy, &candidates, &req, None)),
            ["c"]
        );

        // Offered longest ago wins.
        let candidates = [
            Candidate {
                last_offered_at: Some(300),
                ..candidate(&a)
            },
            Candidate {
                last_offered_at: Some(100),
                ..candidate(&d)
            },
            Candidate {
                last_offered_at: Some(200),
                ..candidate(&b)
            },
        ];
        assert_eq!(
            ids(&select(Strategy::LeastBusy, &candidates, &req, None)),
            ["d"]
        );

        // Same load, same last offer: lowest id.
        let candidates = [
            Candidate {
                last_offered_at: Some(100),
                ..candidate(&c)
            },
            Candidate {
                last_offered_at: Some(100),
                ..candidate(&b)
            },
        ];
        assert_eq!(
            ids(&select(Strategy::LeastBusy, &candidates, &req, None)),
            ["b"]
        );
    }

    #[test]
    fn least_busy_spreads_offers_evenly_among_equal_responders() {
        let responders = [responder("a"), responder("b"), responder("c")];
        let mut last_offered: [Option<i64>; 3] = [None, Some(1_000), None];
        let mut counts = [0; 3];
        let mut order = Vec::new();
        let req = request("billing", &[]);
        for step in 0..9 {
            let candidates: Vec<Candidate<'_>> = responders
                .iter()
                .zip(last_offered)
                .map(|(r, last)| Candidate {
                    responder: r,
                    active: 1,
                    last_offered_at: last,
                })
                .collect();
            let chosen = select(Strategy::LeastBusy, &candidates, &req, None);
            let i = responders
                .iter()
                .position(|r| r.id == chosen[0].id)
                .unwrap();
            // Each offer is recorded, as the caller would after offering (unix ms).
            last_offered[i] = Some(1_700_000_000_000 + step * 1_000);
            counts[i] += 1;
            order.push(chosen[0].id.clone());
        }
        assert_eq!(counts, [3, 3, 3]);
        // The never-offered go first (by id), then the one offered longest ago.
        assert_eq!(order, ["a", "c", "b", "a", "c", "b", "a", "c", "b"]);
    }

    // ---- validation ----

    const PLATFORMS: &[&str] = &["matrix", "telegram"];

    fn field_of(r: &Responder) -> String {
        validate_responder(r, PLATFORMS).unwrap_err().field
    }

    #[test]
    fn a_complete_responder_is_valid() {
        let mut r = responder("alice.b_c=d-1");
        r.pseudonym = Some("Ally".into());
        r.topics = vec![
            "*".into(),
            "billing/*".into(),
            "billing/refunds_eu".into(),
            "sales-de".into(),
        ];
        r.languages = vec![
            "en".into(),
            "de-AT".into(),
            "zh-Hant-TW".into(),
            "gsw".into(),
        ];
        r.timezone = "America/Argentina/Buenos_Aires".into();
        r.hours = hours(&[
            ("mon", &["09:00-17:00", "22:00-02:00"]),
            ("sun", &["00:00-24:00"]),
        ]);
        r.max_concurrent = 1000;
        r.contacts.push(Contact {
            platform: "telegram".into(),
            address: "-1001234567890".into(),
        });
        assert_eq!(validate_responder(&r, PLATFORMS), Ok(()));
        r.max_concurrent = 1;
        assert_eq!(validate_responder(&r, PLATFORMS), Ok(()));
    }

    #[test]
    fn bad_id_is_reported_on_id() {
        for id in ["", "Alice", "al ice", "alice@home", &"a".repeat(65)] {
            let r = responder(id);
            assert_eq!(field_of(&r), "id", "{id:?}");
        }
        assert_eq!(
            validate_responder(&responder(&"a".repeat(64)), PLATFORMS),
            Ok(())
        );
    }

    #[test]
    fn blank_names_are_reported_on_their_field() {
        let mut r = responder("a");
        r.display_name = "  ".into();
        assert_eq!(field_of(&r), "display_name");

        let mut r = responder("a");
        r.pseudonym = Some(String::new());
        assert_eq!(field_of(&r), "pseudonym");
        r.pseudonym = Some("x".repeat(65));
        assert_eq!(field_of(&r), "pseudonym");
        r.pseudonym = Some("é".repeat(64)); // characters, not bytes
        assert_eq!(validate_responder(&r, PLATFORMS), Ok(()));
    }

    #[test]
    fn bad_topic_is_reported_with_its_index() {
        for bad in [
            "",
            "Billing",
            "billing/",
            "/billing",
            "billing//refunds",
            "billing*",
            "billing/*/eu",
            "*/billing",
            "bill ing",
        ] {
            let mut r = responder("a");
            r.topics = vec!["sales".into(), bad.into()];
            assert_eq!(field_of(&r), "topics[1]", "{bad:?}");
        }
    }

    #[test]
    fn bad_language_is_reported_with_its_index() {
        for bad in [
            "",
            "e",
            "englishes",
            "e1",
            "en-",
            "en_GB",
            "en-GBRITAIN1",
            "en-G&B",
        ] {
            let mut r = responder("a");
            r.languages = vec![bad.into()];
            assert_eq!(field_of(&r), "languages[0]", "{bad:?}");
        }
    }

    #[test]
    fn unknown_time_zone_is_reported_on_timezone() {
        for bad in ["Mars/Olympus", "CEST+2", ""] {
            let mut r = responder("a");
            r.timezone = bad.into();
            let err = validate_responder(&r, PLATFORMS).unwrap_err();
            assert_eq!(err.field, "timezone", "{bad:?}");
        }
    }

    #[test]
    fn malformed_hours_are_reported_with_day_and_index() {
        let cases: &[(&str, &str)] = &[
            ("9:00-17:00", "hours.mon[1]"),
            ("09:00-17:60", "hours.mon[1]"),
            ("25:00-26:00", "hours.mon[1]"),
            ("24:00-02:00", "hours.mon[1]"),
            ("24:30-24:45", "hours.mon[1]"),
            ("09:00", "hours.mon[1]"),
            ("09:00 - 17:00", "hours.mon[1]"),
            ("09:00-09:00", "hours.mon[1]"),
            ("ab:cd-ef:gh", "hours.mon[1]"),
        ];
        for (bad, field) in cases {
            let mut r = responder("a");
            r.hours = hours(&[("mon", &["08:00-09:00", bad])]);
            let err = validate_responder(&r, PLATFORMS).unwrap_err();
            assert_eq!(err.field, *field, "{bad:?}");
        }

        let mut r = responder("a");
        r.hours = hours(&[("monday", &["09:00-17:00"])]);
        assert_eq!(field_of(&r), "hours.monday");
    }

    #[test]
    fn capacity_out_of_range_is_reported_on_max_concurrent() {
        for bad in [-1, 0, 1001, i64::MIN] {
            let mut r = responder("a");
            r.max_concurrent = bad;
            let err = validate_responder(&r, PLATFORMS).unwrap_err();
            assert_eq!(err.field, "max_concurrent", "{bad}");
            assert_eq!(
                err.to_string(),
                "max_concurrent: must be between 1 and 1000"
            );
        }
    }

    #[test]
    fn unknown_platform_is_reported_on_that_contacts_platform() {
        let mut r = responder("a");
        r.contacts.push(Contact {
            platform: "discord".into(),
            address: "1234".into(),
        });
        let err = validate_responder(&r, PLATFORMS).unwrap_err();
        assert_eq!(err.field, "contacts[1].platform");
        assert!(err.message.contains("discord"), "{}", err.message);
        // A registered platform that is not enabled is refused the same way, listing the
        // enabled ones; enabled, it is fine.
        r.contacts.pop();
        r.contacts.push(Contact {
            platform: "telegram".into(),
            address: "1234".into(),
        });
        let err = validate_responder(&r, &["matrix"]).unwrap_err();
        assert_eq!(err.field, "contacts[1].platform");
        assert!(err.message.contains("known: matrix"), "{}", err.message);
        assert_eq!(validate_responder(&r, PLATFORMS), Ok(()));
    }

    #[test]
    fn malformed_addresses_are_reported_on_that_contacts_address() {
        let cases: &[(&str, &str)] = &[
            ("matrix", ""),
            ("matrix", "alice:example.org"),
            ("matrix", "@alice"),
            ("matrix", "@:example.org"),
            ("matrix", "@alice:"),
            ("telegram", "@alice"),
            ("telegram", "12.5"),
            ("telegram", ""),
        ];
        for (platform, address) in cases {
            let mut r = responder("a");
            r.contacts = vec![
                Contact {
                    platform: "telegram".into(),
                    address: "42".into(),
                },
                Contact {
                    platform: (*platform).into(),
                    address: (*address).into(),
                },
            ];
            assert_eq!(
                field_of(&r),
                "contacts[1].address",
                "{platform} {address:?}"
            );
        }
    }

    #[test]
    fn first_invalid_field_is_reported() {
        let mut r = responder("a");
        r.max_concurrent = -5;
        r.timezone = "Nowhere".into();
        assert_eq!(field_of(&r), "timezone");
    }
}
