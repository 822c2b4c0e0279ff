//! Working hours: whether an instant falls within a responder's weekly hours (routing asks
//! before offering), and how much of a span does (service levels count a visitor's wait only
//! while the responder who answered was at work).

use std::time::Duration;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Timelike, Utc, Weekday};
use chrono_tz::Tz;

use crate::responder::Responder;

/// Why working hours could not be evaluated. [`validate_responder`] rejects every such case, so
/// these only occur for data that bypassed validation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HoursError {
    #[error("unknown time zone {0:?}")]
    TimeZone(String),
    /// A malformed interval, or a key that is not a weekday (`mon` … `sun`).
    #[error("bad interval {0:?}")]
    Interval(String),
}

/// Whether `now` falls within `responder`'s weekly working hours.
///
/// Hours are read in the responder's own time zone: `now` is converted to local wall-clock
/// time first, so daylight-saving changes need no special handling (on the day clocks spring
/// forward, `01:00-04:00` lasts two real hours). An interval whose end is not after its start
/// runs past midnight into the next day: `"fri": ["22:00-02:00"]` covers Saturday 01:00 local.
/// An empty hours map means "any time" (and the time zone is then not consulted).
///
/// Every entry is parsed on every call, so a malformed entry is reported whatever the time.
pub fn in_working_hours(responder: &Responder, now: DateTime<Utc>) -> Result<bool, HoursError> {
    if responder.hours.is_empty() {
        return Ok(true);
    }
    let tz: Tz = responder
        .timezone
        .parse()
        .map_err(|_| HoursError::TimeZone(responder.timezone.clone()))?;
    let local = now.with_timezone(&tz);
    let today = local.weekday();
    let yesterday = today.pred();
    let second = local.num_seconds_from_midnight();

    let mut inside = false;
    for (day, intervals) in &responder.hours {
        let day = parse_weekday(day).ok_or_else(|| HoursError::Interval(day.clone()))?;
        for interval in intervals {
            let (start, end) =
                parse_interval(interval).ok_or_else(|| HoursError::Interval(interval.clone()))?;
            let (start, end) = (start * 60, end * 60);
            inside |= if start < end {
                day == today && start <= second && second < end
            } else {
                // Crosses midnight: from `start` on `day` until `end` on the following day.
                (day == today && start <= second) || (day == yesterday && second < end)
            };
        }
    }
    Ok(inside)
}

/// How much of `[from, to)` falls within `responder`'s working hours, read as
/// [`in_working_hours`] reads them (their time zone, intervals past midnight running into the
/// next day). An empty hours map means any time: the whole span. Each interval is placed on
/// the calendar in the responder's zone, so a daylight-saving change is counted as it was
/// lived (a local time skipped by the change starts the interval at the next valid one).
pub fn working_time_between(
    responder: &Responder,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Duration, HoursError> {
    if to <= from {
        return Ok(Duration::ZERO);
    }
    if responder.hours.is_empty() {
        return Ok((to - from).to_std().unwrap_or_default());
    }
    let tz: Tz = responder
        .timezone
        .parse()
        .map_err(|_| HoursError::TimeZone(responder.timezone.clone()))?;
    let mut intervals = Vec::new();
    for (day, list) in &responder.hours {
        let day = parse_weekday(day).ok_or_else(|| HoursError::Interval(day.clone()))?;
        for interval in list {
            let (start, end) =
                parse_interval(interval).ok_or_else(|| HoursError::Interval(interval.clone()))?;
            intervals.push((day, start, end));
        }
    }
    // From the day before `from` (an interval of that day may run past midnight) to `to`'s.
    let first = from
        .with_timezone(&tz)
        .date_naive()
        .pred_opt()
        .unwrap_or(NaiveDate::MIN);
    let last = to.with_timezone(&tz).date_naive();
    let at = |date: NaiveDate, minutes: u32| -> Option<DateTime<Utc>> {
        let date = date.checked_add_days(chrono::Days::new(u64::from(minutes / 1440)))?;
        let local = date.and_hms_opt((minutes % 1440) / 60, minutes % 60, 0)?;
        // A time skipped by a spring-forward change: the first valid instant after it.
        let mut probe = local;
        for _ in 0..4 {
            if let Some(t) = tz.from_local_datetime(&probe).earliest() {
                return Some(t.with_timezone(&Utc));
            }
            probe += chrono::Duration::minutes(30);
        }
        None
    };
    let mut covered: Vec<(DateTime<Utc>, DateTime<Utc>)> = Vec::new();
    let mut date = first;
    while date <= last {
        for &(day, start, end) in &intervals {
            if date.weekday() != day {
                continue;
            }
            // An end not after the start runs into the next day.
            let end = if start < end { end } else { end + 1440 };
            let (Some(a), Some(b)) = (at(date, start), at(date, end)) else {
                continue;
            };
            let (a, b) = (a.max(from), b.min(to));
            if a < b {
                covered.push((a, b));
            }
        }
        date = match date.succ_opt() {
            Some(next) => next,
            None => break,
        };
    }
    // Overlapping intervals (a night shift running into a morning one) count once.
    covered.sort();
    let mut total = chrono::Duration::zero();
    let mut current: Option<(DateTime<Utc>, DateTime<Utc>)> = None;
    for (a, b) in covered {
        current = match current {
            Some((ca, cb)) if a <= cb => Some((ca, cb.max(b))),
            Some((ca, cb)) => {
                total += cb - ca;
                Some((a, b))
            }
            None => Some((a, b)),
        };
    }
    if let Some((a, b)) = current {
        total += b - a;
    }
    Ok(total.to_std().unwrap_or_default())
}

pub(super) fn parse_weekday(day: &str) -> Option<Weekday> {
    Some(match day {
        "mon" => Weekday::Mon,
        "tue" => Weekday::Tue,
        "wed" => Weekday::Wed,
        "thu" => Weekday::Thu,
        "fri" => Weekday::Fri,
        "sat" => Weekday::Sat,
        "sun" => Weekday::Sun,
        _ => return None,
    })
}

/// `"HH:MM-HH:MM"` → (start, end) in minutes since midnight. The start is before 24:00; the
/// end may be 24:00 (1440). Start == end is returned as is: validation rejects it, while
/// [`in_working_hours`] reads it as a full 24 hours running into the next day.
pub(super) fn parse_interval(interval: &str) -> Option<(u32, u32)> {
    let (start, end) = interval.split_once('-')?;
    let start = parse_time(start).filter(|&m| m < 24 * 60)?;
    let end = parse_time(end)?;
    Some((start, end))
}

/// `"HH:MM"` (exactly two digits each) → minutes since midnight, `00:00` to `24:00`.
fn parse_time(time: &str) -> Option<u32> {
    let bytes = time.as_bytes();
    if bytes.len() != 5 || bytes[2] != b':' {
        return None;
    }
    let digits = |s: &[u8]| -> Option<u32> {
        s.iter().try_fold(0, |n, &b| {
            b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0'))
        })
    };
    let (hours, minutes) = (digits(&bytes[..2])?, digits(&bytes[3..])?);
    let valid = (hours < 24 && minutes < 60) || (hours == 24 && minutes == 0);
    valid.then_some(hours * 60 + minutes)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::responder::{ResponderStatus, WeeklyHours};

    fn with_hours(timezone: &str, entries: &[(&str, &[&str])]) -> Responder {
        let hours: WeeklyHours = entries
            .iter()
            .map(|(day, ivs)| (day.to_string(), ivs.iter().map(|s| s.to_string()).collect()))
            .collect();
        Responder {
            id: "r".into(),
            display_name: "R".into(),
            pseudonym: None,
            topics: vec!["*".into()],
            languages: vec![],
            timezone: timezone.into(),
            hours,
            max_concurrent: 1,
            status: ResponderStatus::Available,
            contacts: vec![],
        }
    }

    fn paris(y: i32, m: u32, d: u32, h: u32, min: u32) -> DateTime<Utc> {
        chrono_tz::Europe::Paris
            .with_ymd_and_hms(y, m, d, h, min, 0)
            .earliest()
            .unwrap()
            .with_timezone(&Utc)
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn only_the_working_part_of_a_wait_counts() {
        let weekdays: &[&str] = &["09:00-17:00"];
        let r = with_hours(
            "Europe/Paris",
            &[
                ("mon", weekdays),
                ("tue", weekdays),
                ("wed", weekdays),
                ("thu", weekdays),
                ("fri", weekdays),
            ],
        );
        // 2026-11-30 is a Monday.
        let t = |d, h, m| paris(2026, 11, d, h, m);
        assert_eq!(
            working_time_between(&r, t(30, 8, 0), t(30, 10, 0)),
            Ok(HOUR)
        );
        assert_eq!(
            working_time_between(&r, t(30, 10, 0), t(30, 10, 30)),
            Ok(HOUR / 2)
        );
        // Friday evening to Monday 10:00: the hour on Monday morning.
        let friday_evening = paris(2026, 11, 27, 18, 0);
        assert_eq!(
            working_time_between(&r, friday_evening, t(30, 10, 0)),
            Ok(HOUR)
        );
        assert_eq!(
            working_time_between(&r, t(30, 10, 0), t(30, 9, 0)),
            Ok(Duration::ZERO)
        );
        // No hours: any time, the whole wait.
        let always = with_hours("Europe/Paris", &[]);
        assert_eq!(
            working_time_between(&always, friday_evening, t(30, 10, 0)),
            Ok(64 * HOUR)
        );
    }

    #[test]
    fn a_night_shift_runs_past_midnight_and_a_clock_change_is_counted_as_lived() {
        let r = with_hours("Europe/Paris", &[("fri", &["22:00-02:00"])]);
        // Friday 2026-11-27 23:00 to Saturday 03:00: 23:00-02:00.
        let from = paris(2026, 11, 27, 23, 0);
        let to = paris(2026, 11, 28, 3, 0);
        assert_eq!(working_time_between(&r, from, to), Ok(3 * HOUR));
        // Sunday 2026-03-29, clocks spring forward at 02:00: 01:00-04:00 lasts two hours.
        let r = with_hours("Europe/Paris", &[("sun", &["01:00-04:00"])]);
        let from = paris(2026, 3, 29, 0, 0);
        let to = paris(2026, 3, 29, 6, 0);
        assert_eq!(working_time_between(&r, from, to), Ok(2 * HOUR));
        let bad = with_hours("Mars/Olympus", &[("sun", &["01:00-04:00"])]);
        assert!(working_time_between(&bad, from, to).is_err());
    }

    proptest! {
        /// The span's working time is the number of its minutes `in_working_hours` says are
        /// inside (spans on whole minutes, zones with and without clock changes).
        #[test]
        fn working_time_agrees_with_in_working_hours_minute_by_minute(
            start in 0i64..(60 * 24 * 400),
            length in 0i64..(60 * 24 * 4),
            zone in prop::sample::select(vec!["UTC", "Europe/Paris", "America/New_York", "Asia/Kolkata"]),
        ) {
            let r = with_hours(
                zone,
                &[
                    ("mon", &["09:00-12:30", "13:30-17:00"]),
                    ("wed", &["22:00-02:00"]),
                    ("sat", &["00:00-24:00"]),
                    ("sun", &["01:00-04:00"]),
                ],
            );
            // From 2026-01-01, through both of the year's clock changes.
            let origin = DateTime::<Utc>::from_timestamp(1_767_225_600, 0).unwrap();
            let from = origin + chrono::Duration::minutes(start);
            let to = from + chrono::Duration::minutes(length);
            let minutes = (0..length)
                .filter(|m| in_working_hours(&r, from + chrono::Duration::minutes(*m)).unwrap())
                .count() as u64;
            prop_assert_eq!(
                working_time_between(&r, from, to).unwrap(),
                Duration::from_secs(minutes * 60)
            );
        }
    }
}
