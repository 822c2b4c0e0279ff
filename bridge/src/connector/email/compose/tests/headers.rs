//! Header safety: whatever the topic, pseudonym, responder name and text, the mail has the
//! headers we set and no others, and a reader decodes exactly the text we were given, less
//! its control characters.

use std::collections::BTreeSet;

use mail_parser::MessageParser;
use proptest::prelude::*;

use super::super::*;
use super::{composer, date, id, offer, text, thread};

/// The text a reader should see: control characters and whitespace runs as one space,
/// trimmed, cut to `max` characters with "…". Written apart from `header_text` so that the
/// test does not check the code against itself.
pub(crate) fn expected(text: &str, max: usize) -> String {
    let spaced: String = text
        .chars()
        .map(|c| {
            if c.is_control() || c.is_whitespace() || c == '\u{2028}' || c == '\u{2029}' {
                ' '
            } else {
                c
            }
        })
        .collect();
    let joined = spaced
        .split(' ')
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if joined.chars().count() > max {
        joined.chars().take(max).collect::<String>() + "…"
    } else {
        joined
    }
}

#[test]
fn header_text_drops_control_characters_and_line_breaks() {
    assert_eq!(header_text("a\r\nBcc: evil@x", 100), "a Bcc: evil@x");
    assert_eq!(
        header_text("  tab\there\u{0}\u{1b}[31m\u{2028}x  ", 100),
        "tab here [31m x"
    );
    assert_eq!(header_text("éèê", 2), "éè…");
    assert_eq!(header_text("\r\n", 10), "");
}

/// Pieces an attacker, or just an unusual name, would put in a header.
pub(crate) fn hostile_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        Just("\r".to_owned()),
        Just("\n".to_owned()),
        Just("\r\nBcc: evil@x".to_owned()),
        Just("\r\n\r\n<html>body</html>".to_owned()),
        Just("=?utf-8?q?evil=40x?=".to_owned()),
        Just("=?utf-8?b?QmNjOiBldmlsQHg=?=".to_owned()),
        Just("=?".to_owned()),
        Just("?=".to_owned()),
        Just("\"".to_owned()),
        Just("\\".to_owned()),
        Just("<evil@x>".to_owned()),
        Just("(comment)".to_owned()),
        Just(", Mallory <m@x>;".to_owned()),
        Just(" ".to_owned()),
        Just("\t".to_owned()),
        Just("\u{0}\u{7f}\u{1b}\u{85}\u{2028}".to_owned()),
        Just("Grüße 日本 🎉".to_owned()),
        "[a-zA-Z0-9]{60,400}",
        "[a-z ]{1,40}",
        any::<String>(),
    ];
    prop::collection::vec(piece, 0..8).prop_map(|pieces| pieces.concat())
}

/// The names of a mail's top-level headers, and how often each occurs.
fn header_names(raw: &[u8]) -> Vec<String> {
    let parsed = MessageParser::default()
        .parse(raw)
        .expect("our mail parses");
    parsed
        .headers()
        .iter()
        .map(|header| header.name().to_ascii_lowercase())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_topic_pseudonym_name_and_text_gives_exactly_our_headers(
        topic in hostile_text(),
        pseudonym in hostile_text(),
        name in hostile_text(),
        body in hostile_text(),
        follow_up in any::<bool>(),
    ) {
        let mut mail = thread(vec![text(&body)]);
        mail.topic = topic.clone();
        mail.pseudonym = pseudonym.clone();
        mail.responder.name = Some(name.clone());
        if follow_up {
            mail.earlier = vec![id(1), id(2)];
        }
        let composed = composer().messages(&mail, date()).unwrap();
        let raw = &composed.formatted;
        crate::fuzzing::check_wire_lines(raw);

        let names = header_names(raw);
        let mut wanted: BTreeSet<&str> = [
            "from", "to", "subject", "date", "message-id", "reply-to", "mime-version",
            "content-type",
        ]
        .into();
        if follow_up {
            wanted.extend(["in-reply-to", "references"]);
        }
        let got: BTreeSet<&str> = names.iter().map(String::as_str).collect();
        prop_assert_eq!(&got, &wanted);
        prop_assert_eq!(names.len(), wanted.len(), "a header twice: {:?}", names);

        let parsed = MessageParser::default().parse(raw).unwrap();
        let topic = expected(&topic, MAX_TOPIC_CHARS);
        let pseudonym = expected(&pseudonym, MAX_PSEUDONYM_CHARS);
        let subject = expected(&format!("{topic}: {pseudonym}"), usize::MAX);
        let subject = if follow_up { format!("Re: {subject}") } else { subject };
        prop_assert_eq!(parsed.subject(), Some(subject.as_str()));

        let from = parsed.from().unwrap();
        prop_assert_eq!(from.iter().count(), 1);
        let from = from.first().unwrap();
        let from_name = expected(&format!("{topic} via Switchboard"), usize::MAX);
        prop_assert_eq!(from.name(), Some(from_name.as_str()));
        prop_assert_eq!(from.address(), Some("support@mail.example.org"));

        let to = parsed.to().unwrap();
        prop_assert_eq!(to.iter().count(), 1);
        let to = to.first().unwrap();
        let to_name = expected(&name, MAX_NAME_CHARS);
        prop_assert_eq!(to.name(), (!to_name.is_empty()).then_some(to_name.as_str()));
        prop_assert_eq!(to.address(), Some("ada@responders.example"));

        let plain = parsed.body_text(0).unwrap().replace("\r\n", "\n");
        let sent = body::body_text(&body);
        prop_assert!(plain.contains(sent.trim()), "{:?} not in {:?}", sent, plain);
    }

    #[test]
    fn any_offer_gives_exactly_our_headers(
        topic in hostile_text(),
        pseudonym in hostile_text(),
        name in hostile_text(),
        language in hostile_text(),
        first_message in hostile_text(),
    ) {
        let mut mail = offer();
        mail.topic = topic.clone();
        mail.pseudonym = pseudonym.clone();
        mail.responder.name = Some(name);
        mail.language = Some(language);
        mail.first_message = Some(first_message);
        let composed = composer().offer(&mail, date()).unwrap();
        crate::fuzzing::check_wire_lines(&composed.formatted);
        let got: BTreeSet<String> = header_names(&composed.formatted).into_iter().collect();
        let wanted: BTreeSet<String> = [
            "from", "to", "subject", "date", "message-id", "reply-to", "mime-version",
            "content-type",
        ]
        .map(str::to_owned)
        .into();
        prop_assert_eq!(got, wanted);
        let parsed = MessageParser::default().parse(&composed.formatted).unwrap();
        let subject = expected(
            &format!("{}: {}", expected(&topic, MAX_TOPIC_CHARS), expected(&pseudonym, MAX_PSEUDONYM_CHARS)),
            usize::MAX,
        );
        prop_assert_eq!(parsed.subject(), Some(subject.as_str()));
    }
}
