//! The service-level report: per topic and the answering responder's platform, over a window,
//! how long visitors waited for a first reply and what share of conversations met the topic's
//! promise (`first_reply_target_secs`). Pure: the store gives the conversations
//! ([`LevelInput`]), the register the responders, the caller the time.
//!
//! A wait counts only the working hours of the responder who first accepted the conversation
//! (a question left at 23:00 and answered at 09:05 by someone who starts at 09:00 waited five
//! minutes), as the register says now. A conversation nobody answered yet is *missed* once its
//! wait so far passes the target, and *waiting* until then (left out of the share); one that
//! closed unanswered waited until it closed. Percentiles are nearest-rank over answered waits.

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{responder::Responder, routing::working_time_between, store::LevelInput};

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct LevelRow {
    pub topic: String,
    /// The platform of the responder who accepted; `none` when nobody did.
    pub platform: String,
    /// The topic's first-reply target, if it has one.
    pub target_secs: Option<u64>,
    pub conversations: u64,
    /// Answered with a first reply.
    pub answered: u64,
    /// Answered within the target (with a target only).
    pub met: Option<u64>,
    /// Answered after the target, or unanswered past it (with a target only).
    pub missed: Option<u64>,
    /// Unanswered and still within the target (with a target: left out of the share).
    pub waiting: u64,
    /// `met / (met + missed)`, when there is a target and anything to judge.
    pub met_share: Option<f64>,
    /// Median and 90th percentile of the answered waits, in seconds.
    pub median_wait_secs: Option<f64>,
    pub p90_wait_secs: Option<f64>,
}

/// The report over `inputs` at `now` (unix ms): one row per (topic, platform), in that order.
/// `targets` are the topics' first-reply targets; `responders` the register by ID.
pub fn report(
    inputs: &[LevelInput],
    targets: &BTreeMap<String, u64>,
    responders: &HashMap<String, Responder>,
    now: i64,
) -> Vec<LevelRow> {
    // Per (topic, platform): each conversation's answered wait, if answered, and its wait so far.
    type Waits = Vec<(Option<f64>, f64)>;
    let mut groups: BTreeMap<(String, String), Waits> = BTreeMap::new();
    for c in inputs {
        let responder = c.responder_id.as_ref().and_then(|id| responders.get(id));
        let end = c.first_reply_at.or(c.closed_at).unwrap_or(now);
        let wait = waited(responder, c.created_at, end);
        let answered = c.first_reply_at.map(|_| wait);
        let platform = c.platform.clone().unwrap_or_else(|| "none".to_owned());
        groups
            .entry((c.topic.clone(), platform))
            .or_default()
            .push((answered, wait));
    }
    groups
        .into_iter()
        .map(|((topic, platform), waits)| {
            let target = targets.get(&topic).copied();
            let mut answered: Vec<f64> = waits.iter().filter_map(|(a, _)| *a).collect();
            answered.sort_by(f64::total_cmp);
            let (mut met, mut missed, mut waiting) = (0, 0, 0);
            for (answer, so_far) in &waits {
                match (target, answer) {
                    (Some(t), Some(wait)) if *wait <= t as f64 => met += 1,
                    (Some(_), Some(_)) => missed += 1,
                    (Some(t), None) if *so_far > t as f64 => missed += 1,
                    _ if answer.is_none() => waiting += 1,
                    _ => {}
                }
            }
            LevelRow {
                target_secs: target,
                conversations: waits.len() as u64,
                answered: answered.len() as u64,
                met: target.map(|_| met),
                missed: target.map(|_| missed),
                waiting,
                met_share: (target.is_some() && met + missed > 0)
                    .then(|| met as f64 / (met + missed) as f64),
                median_wait_secs: nearest_rank(&answered, 0.5),
                p90_wait_secs: nearest_rank(&answered, 0.9),
                topic,
                platform,
            }
        })
        .collect()
}

/// The window the report covers when none is given: the last seven days.
pub const DEFAULT_WINDOW_DAYS: i64 = 7;

/// A report window from optional RFC 3339 bounds: `to` defaults to `now`, `from` to
/// [`DEFAULT_WINDOW_DAYS`] before `to` (all unix ms). An error names the field at fault.
pub fn window(
    from: Option<&str>,
    to: Option<&str>,
    now: i64,
) -> Result<(i64, i64), (&'static str, String)> {
    let time = |field: &'static str, value: Option<&str>| {
        value
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.timestamp_millis())
                    .map_err(|e| (field, format!("{v:?} is not an RFC 3339 time ({e})")))
            })
            .transpose()
    };
    let to = time("to", to)?.unwrap_or(now);
    let from = time("from", from)?.unwrap_or(to - DEFAULT_WINDOW_DAYS * 86_400_000);
    if from >= to {
        return Err(("from", "must be before to".to_owned()));
    }
    Ok((from, to))
}

/// Unix ms as RFC 3339 in UTC, to the second.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default()
}

/// Seconds from `from` to `to` (unix ms) that count: within `responder`'s working hours, or
/// all of them without a responder (or with hours that cannot be read).
fn waited(responder: Option<&Responder>, from: i64, to: i64) -> f64 {
    let wall = (to - from).max(0) as f64 / 1000.0;
    let (Some(r), Some(a), Some(b)) = (
        responder,
        DateTime::<Utc>::from_timestamp_millis(from),
        DateTime::<Utc>::from_timestamp_millis(to),
    ) else {
        return wall;
    };
    working_time_between(r, a, b).map_or(wall, |d| d.as_secs_f64())
}

/// The nearest-rank percentile `p` (0 to 1) of sorted `values`.
fn nearest_rank(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::responder::{ResponderStatus, WeeklyHours};

    const MIN: i64 = 60_000;

    fn input(topic: &str, platform: Option<&str>, created: i64, reply: Option<i64>) -> LevelInput {
        LevelInput {
            topic: topic.into(),
            platform: platform.map(str::to_owned),
            responder_id: platform.map(|_| "ann".to_owned()),
            created_at: created,
            first_reply_at: reply,
            closed_at: None,
        }
    }

    fn ann(hours: WeeklyHours) -> HashMap<String, Responder> {
        let r = Responder {
            id: "ann".into(),
            display_name: "Ann".into(),
            pseudonym: None,
            topics: vec!["*".into()],
            languages: vec![],
            timezone: "UTC".into(),
            hours,
            max_concurrent: 3,
            status: ResponderStatus::Available,
            contacts: vec![],
        };
        HashMap::from([("ann".to_owned(), r)])
    }

    #[test]
    fn shares_medians_and_what_is_still_waiting() {
        // 2026-11-30 00:00 UTC, a Monday.
        let t0 = 1_795_996_800_000;
        let inputs = [
            input("support", Some("telegram"), t0, Some(t0 + MIN)),
            input("support", Some("telegram"), t0, Some(t0 + 3 * MIN)),
            input("support", Some("telegram"), t0, Some(t0 + 10 * MIN)),
            // Unanswered: past the target (missed), and not yet (waiting).
            input("support", None, t0, None),
            input("support", None, t0 + 59 * MIN, None),
            input("sales", Some("matrix"), t0, Some(t0 + 2 * MIN)),
        ];
        let targets = BTreeMap::from([("support".to_owned(), 300)]);
        let rows = report(&inputs, &targets, &ann(WeeklyHours::new()), t0 + 60 * MIN);
        let row = |topic: &str, platform: &str| {
            rows.iter()
                .find(|r| r.topic == topic && r.platform == platform)
                .unwrap()
                .clone()
        };
        let tg = row("support", "telegram");
        assert_eq!((tg.conversations, tg.answered), (3, 3));
        assert_eq!((tg.met, tg.missed, tg.waiting), (Some(2), Some(1), 0));
        assert_eq!(tg.met_share, Some(2.0 / 3.0));
        assert_eq!(
            (tg.median_wait_secs, tg.p90_wait_secs),
            (Some(180.0), Some(600.0))
        );
        let none = row("support", "none");
        assert_eq!((none.met, none.missed, none.waiting), (Some(0), Some(1), 1));
        assert_eq!(none.met_share, Some(0.0));
        assert_eq!(none.median_wait_secs, None);
        // Without a target: the waits, no share.
        let sales = row("sales", "matrix");
        assert_eq!(
            (sales.met, sales.missed, sales.met_share),
            (None, None, None)
        );
        assert_eq!(sales.median_wait_secs, Some(120.0));
    }

    #[test]
    fn only_the_answering_responders_working_hours_count() {
        let t0 = 1_795_996_800_000; // Monday 00:00 UTC
        let hours = WeeklyHours::from([("mon".to_owned(), vec!["09:00-17:00".to_owned()])]);
        // Written at 23:00 on Sunday, answered at 09:05 on Monday: five working minutes.
        let inputs = [input(
            "support",
            Some("telegram"),
            t0 - 60 * MIN,
            Some(t0 + 545 * MIN),
        )];
        let targets = BTreeMap::from([("support".to_owned(), 600)]);
        let rows = report(&inputs, &targets, &ann(hours), t0 + 600 * MIN);
        assert_eq!(rows[0].median_wait_secs, Some(300.0));
        assert_eq!(rows[0].met, Some(1));
        // Without hours (any time) the same conversation waited ten hours and five minutes.
        let rows = report(&inputs, &targets, &ann(WeeklyHours::new()), t0 + 600 * MIN);
        assert_eq!(rows[0].median_wait_secs, Some(605.0 * 60.0));
        assert_eq!(rows[0].missed, Some(1));
    }

    #[test]
    fn windows_default_to_the_last_week_and_name_a_bad_bound() {
        let now = 1_795_996_800_000;
        assert_eq!(window(None, None, now), Ok((now - 7 * 86_400_000, now)));
        assert_eq!(
            window(
                Some("2026-11-01T00:00:00Z"),
                Some("2026-11-02T00:00:00+01:00"),
                now
            ),
            Ok((1_793_491_200_000, 1_793_574_000_000))
        );
        assert_eq!(window(Some("yesterday"), None, now).unwrap_err().0, "from");
        assert_eq!(
            window(
                Some("2026-11-02T00:00:00Z"),
                Some("2026-11-01T00:00:00Z"),
                now
            ),
            Err(("from", "must be before to".to_owned()))
        );
        assert_eq!(rfc3339(1_793_491_200_000), "2026-11-01T00:00:00Z");
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(nearest_rank(&v, 0.5), Some(5.0));
        assert_eq!(nearest_rank(&v, 0.9), Some(9.0));
        assert_eq!(nearest_rank(&[4.0], 0.9), Some(4.0));
        assert_eq!(nearest_rank(&[], 0.5), None);
    }
}
