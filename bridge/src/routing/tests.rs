//! Routing's tests: topics, languages, working hours, eligibility and the strategies.

use chrono::TimeZone;

use super::*;
use crate::responder::{Contact, WeeklyHours};

/// An available responder answering everything, any time, in any language, on Matrix.
pub(super) fn responder(id: &str) -> Responder {
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

pub(super) fn hours(entries: &[(&str, &[&str])]) -> WeeklyHours {
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
