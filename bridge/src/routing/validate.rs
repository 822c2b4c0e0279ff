//! Checking a responder before it enters the register: the other half of routing's contract.

use chrono_tz::Tz;

use super::hours::{parse_interval, parse_weekday};
use crate::responder::Responder;

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
/// - `contacts[i].platform`: one of `known_platforms`; `contacts[i].address`: not empty, and
///   an address as that platform's connector declares them (`connector::registry`): a Matrix
///   user ID (`@local:server`) on `matrix`, an integer chat ID on `telegram`, and so on.
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
    use super::*;
    use crate::responder::Contact;
    use crate::routing::tests::{hours, responder};

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
