//! What a responder's mail client would see in the mails we compose: read back with
//! mail-parser, as the inbound side reads mail.

mod dkim;
mod headers;

use std::time::{Duration, SystemTime};

use mail_parser::{MessageParser, MimeHeaders};

use super::*;

pub(super) const DOMAIN: &str = "mail.example.org";

pub(super) fn date() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
}

pub(super) fn composer_with(dkim: Option<DkimKey>, max_attachment_bytes: usize) -> Composer {
    Composer::new(&ComposerConfig {
        domain: DOMAIN.to_owned(),
        from_address: format!("support@{DOMAIN}"),
        dkim,
        max_attachment_bytes,
    })
    .expect("a valid configuration")
}

fn composer() -> Composer {
    composer_with(None, 1_000_000)
}

pub(super) fn responder() -> Recipient {
    Recipient {
        address: "ada@responders.example".to_owned(),
        name: Some("Ada Lovelace".to_owned()),
    }
}

pub(super) fn offer() -> OfferMail {
    OfferMail {
        responder: responder(),
        topic: "General support".to_owned(),
        pseudonym: "Visitor 7F3A".to_owned(),
        language: Some("de".to_owned()),
        first_message: Some("Hallo, my printer is on fire".to_owned()),
        summary: Some("Bob: tried turning it off\nVisitor: still burning".to_owned()),
        accept_url: "https://switchboard.example/email/accept/abc".to_owned(),
        decline_url: "https://switchboard.example/email/decline/abc".to_owned(),
        reply_token: "offer_tok-1".to_owned(),
        key: None,
    }
}

pub(super) fn thread(messages: Vec<VisitorMessage>) -> ThreadMail {
    ThreadMail {
        responder: responder(),
        topic: "General support".to_owned(),
        pseudonym: "Visitor 7F3A".to_owned(),
        earlier: Vec::new(),
        reply_token: "conv_tok-2".to_owned(),
        messages,
        key: None,
    }
}

pub(super) fn text(body: &str) -> VisitorMessage {
    VisitorMessage {
        body: body.to_owned(),
        ..VisitorMessage::default()
    }
}

fn parse(composed: &Composed) -> mail_parser::Message<'_> {
    MessageParser::default()
        .parse(&composed.formatted)
        .expect("our mail parses")
}

fn id(n: usize) -> MessageId {
    MessageId::parse(&format!("<{n:040x}@{DOMAIN}>")).unwrap()
}

#[test]
fn an_offer_names_topic_visitor_and_both_links_and_says_a_reply_accepts() {
    let composed = composer().offer(&offer(), date()).unwrap();
    let mail = parse(&composed);

    let from = mail.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("General support via Switchboard"));
    assert_eq!(from.address(), Some("support@mail.example.org"));
    let to = mail.to().unwrap().first().unwrap();
    assert_eq!(
        (to.name(), to.address()),
        (Some("Ada Lovelace"), Some("ada@responders.example"))
    );
    assert_eq!(mail.subject(), Some("General support: Visitor 7F3A"));
    assert_eq!(
        mail.reply_to().unwrap().first().unwrap().address(),
        Some("reply+offer_tok-1@mail.example.org")
    );
    let id = composed.message_id.as_str();
    assert_eq!(mail.message_id(), Some(&id[1..id.len() - 1]));

    let plain = mail.body_text(0).unwrap();
    for expected in [
        "Topic: General support",
        "Visitor: Visitor 7F3A",
        "Language: de",
        "> Hallo, my printer is on fire",
        "> Visitor: still burning",
        "Accept: https://switchboard.example/email/accept/abc",
        "Decline: https://switchboard.example/email/decline/abc",
        "Reply to this mail to accept",
    ] {
        assert!(
            plain.contains(expected),
            "{expected:?} missing from:\n{plain}"
        );
    }
    let html = mail.body_html(0).unwrap();
    assert!(html.contains(r#"<a href="https://switchboard.example/email/accept/abc">Accept</a>"#));
    assert!(
        html.contains(r#"<a href="https://switchboard.example/email/decline/abc">Decline</a>"#)
    );
}

#[test]
fn an_offer_without_the_optional_parts_leaves_them_out() {
    let bare = OfferMail {
        language: None,
        first_message: None,
        summary: Some("  ".to_owned()),
        ..offer()
    };
    let composed = composer().offer(&bare, date()).unwrap();
    let plain = parse(&composed).body_text(0).unwrap().into_owned();
    assert!(!plain.contains("Language"));
    assert!(!plain.contains("First message"));
    assert!(!plain.contains("Handed over"));
    assert!(plain.contains("Accept: "));
}

#[test]
fn offer_links_must_be_http() {
    let bad = OfferMail {
        accept_url: "javascript:alert(1)".to_owned(),
        ..offer()
    };
    assert!(matches!(
        composer().offer(&bad, date()),
        Err(ComposeError::Link { which: "accept" })
    ));
}

#[test]
fn a_reply_token_that_could_change_the_address_is_refused() {
    for token in [
        "",
        "a@b",
        "x y",
        "tok\r\nBcc: evil@x",
        &"a".repeat(MAX_TOKEN_LEN + 1),
    ] {
        let mut mail = thread(vec![text("hi")]);
        mail.reply_token = token.to_owned();
        assert!(
            matches!(
                composer().messages(&mail, date()),
                Err(ComposeError::Token { .. })
            ),
            "{token:?} accepted"
        );
    }
}

#[test]
fn a_responder_address_with_a_line_break_is_refused() {
    let mut mail = thread(vec![text("hi")]);
    mail.responder.address = "ada@responders.example\r\nBcc: evil@x".to_owned();
    assert!(matches!(
        composer().messages(&mail, date()),
        Err(ComposeError::Address {
            which: "responder",
            ..
        })
    ));
}

#[test]
fn a_thread_mail_needs_a_message() {
    assert!(matches!(
        composer().messages(&thread(Vec::new()), date()),
        Err(ComposeError::NoMessages)
    ));
}

#[test]
fn every_mail_gets_a_fresh_random_message_id_at_our_domain() {
    let composer = composer();
    let first = composer
        .messages(&thread(vec![text("hi")]), date())
        .unwrap();
    let second = composer
        .messages(&thread(vec![text("hi")]), date())
        .unwrap();
    assert_ne!(first.message_id, second.message_id);
    let id = first.message_id.as_str();
    let local = id
        .strip_prefix('<')
        .and_then(|id| id.strip_suffix(&format!("@{DOMAIN}>")))
        .expect("<local@domain>");
    // 160 random bits, as hex.
    assert_eq!(local.len(), 40);
    assert!(local.chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(parse(&first).message_id(), Some(&id[1..id.len() - 1]));
}

#[test]
fn a_follow_up_replies_to_the_previous_mail_and_references_the_chain() {
    let mut mail = thread(vec![text("and another thing")]);
    mail.earlier = vec![id(1), id(2), id(3)];
    let composed = composer().messages(&mail, date()).unwrap();
    let parsed = parse(&composed);
    let bare = |id: &MessageId| id.as_str()[1..id.as_str().len() - 1].to_owned();

    assert_eq!(parsed.in_reply_to().as_text(), Some(bare(&id(3)).as_str()));
    let references: Vec<String> = parsed
        .references()
        .as_text_list()
        .unwrap()
        .iter()
        .map(|id| id.to_string())
        .collect();
    assert_eq!(references, [bare(&id(1)), bare(&id(2)), bare(&id(3))]);
    assert_eq!(parsed.subject(), Some("Re: General support: Visitor 7F3A"));

    // The first mail of a thread has neither.
    let first = composer()
        .messages(&thread(vec![text("hi")]), date())
        .unwrap();
    let parsed = parse(&first);
    assert!(parsed.in_reply_to().is_empty() && parsed.references().is_empty());
    assert_eq!(parsed.subject(), Some("General support: Visitor 7F3A"));
}

#[test]
fn a_long_thread_references_its_first_and_latest_mails() {
    let earlier: Vec<MessageId> = (0..30).map(id).collect();
    let kept = super::headers::references(&earlier);
    assert_eq!(kept.len(), MAX_REFERENCES);
    assert_eq!(kept[0], &earlier[0]);
    assert_eq!(
        kept[1..],
        earlier[30 - (MAX_REFERENCES - 1)..]
            .iter()
            .collect::<Vec<_>>()[..]
    );
    // A short one is kept whole.
    assert_eq!(super::headers::references(&earlier[..5]).len(), 5);
}

#[test]
fn message_ids_read_back_must_have_our_shape() {
    assert!(MessageId::parse(&format!("<{:040x}@{DOMAIN}>", 7)).is_some());
    for bad in [
        "abc@x.example",
        "<abc@x.example",
        "<a b@x.example>",
        "<abc@x.example>\r\nBcc: evil@x",
        "<abc@x.example> <def@x.example>",
        "<a(b)@x.example>",
        "<abc@-x.example>",
        "<@x.example>",
    ] {
        assert!(MessageId::parse(bad).is_none(), "{bad:?} accepted");
    }
}

#[test]
fn the_envelope_sender_is_a_bounce_address_naming_the_mail() {
    let composer = composer();
    let composed = composer
        .messages(&thread(vec![text("hi")]), date())
        .unwrap();
    let sender = composed.envelope.from().unwrap().to_string();
    let expected = format!("bounce+{}@{DOMAIN}", composed.message_id.local_part());
    assert_eq!(sender, expected);
    assert_eq!(
        composed.envelope.to(),
        ["ada@responders.example".parse::<Address>().unwrap()]
    );
    assert_eq!(composed.message.envelope(), &composed.envelope);
    assert_eq!(
        composer.bounced_message_id(&sender),
        Some(composed.message_id.clone())
    );
    // A server that upper-cases the local part still finds it.
    assert_eq!(
        composer.bounced_message_id(&sender.to_ascii_uppercase()),
        Some(composed.message_id)
    );
    assert_eq!(
        composer.bounced_message_id("bounce+abc@elsewhere.example"),
        None
    );
    assert_eq!(
        composer.bounced_message_id(&format!("reply+abc@{DOMAIN}")),
        None
    );
}

#[test]
fn messages_written_together_go_out_in_order_as_plain_text_and_sanitised_html() {
    let messages = vec![
        text("first line"),
        VisitorMessage {
            body: "second".to_owned(),
            html: Some(
                r#"<strong onclick="steal()">second</strong><script>alert(1)</script><img src="https://tracker.example/p.png"> see <a href="https://docs.example/x">the docs</a> <a href="javascript:alert(2)">bad</a>"#
                    .to_owned(),
            ),
            file: None,
        },
        text("third <b>not bold</b>"),
    ];
    let composed = composer().messages(&thread(messages), date()).unwrap();
    let parsed = parse(&composed);

    let plain = parsed.body_text(0).unwrap();
    let positions: Vec<usize> = [
        "first line",
        "second see the docs <https://docs.example/x> bad",
        "third <b>not bold</b>",
    ]
    .iter()
    .map(|s| {
        plain
            .find(s)
            .unwrap_or_else(|| panic!("{s:?} not in:\n{plain}"))
    })
    .collect();
    assert!(positions.is_sorted(), "out of order: {plain}");

    let html = parsed.body_html(0).unwrap();
    assert!(html.contains("<strong>second</strong>"), "{html}");
    assert!(
        html.contains(r#"<a href="https://docs.example/x">the docs</a>"#),
        "{html}"
    );
    assert!(html.contains("third &lt;b&gt;not bold&lt;/b&gt;"), "{html}");
    for unsafe_part in [
        "onclick",
        "script",
        "alert",
        "tracker.example",
        "<img",
        "javascript",
    ] {
        assert!(!html.contains(unsafe_part), "{unsafe_part} in {html}");
    }
}

/// Found by fuzzing (`outbound_mail`): the text was cleaned of control characters after
/// reading the HTML but its styles were not moved, so a style ran past the cleaned text and
/// writing the mail panicked. A character reference makes a control character just as well.
#[test]
fn control_characters_inside_styles_are_dropped_and_the_styles_kept() {
    for html in [
        "<b>Hi\u{1f}!</b> you <em>the\u{1b}re</em> \u{7}ok",
        "<b>Hi&#x1f;!</b> you <em>the&#27;re</em> &#7;ok",
    ] {
        let message = VisitorMessage {
            body: "Hi! you there ok".to_owned(),
            html: Some(html.to_owned()),
            file: None,
        };
        let composed = composer().messages(&thread(vec![message]), date()).unwrap();
        let parsed = parse(&composed);
        let html_part = parsed.body_html(0).unwrap();
        assert!(
            html_part.contains("<strong>Hi!</strong> you <em>there</em> ok"),
            "{html_part}"
        );
        let plain = parsed.body_text(0).unwrap();
        assert!(plain.contains("Hi! you there ok"), "{plain}");
        assert!(
            !plain
                .chars()
                .any(|c| c.is_control() && !"\r\n\t".contains(c)),
            "{plain:?}"
        );
    }
}

#[test]
fn files_within_the_limit_are_attached_and_the_rest_named_with_their_link() {
    let file = |name: &str, size: usize, link: Option<&str>| VisitorMessage {
        body: String::new(),
        html: None,
        file: Some(VisitorFile {
            name: name.to_owned(),
            mimetype: Some("image/png".to_owned()),
            bytes: vec![7; size],
            link: link.map(str::to_owned),
        }),
    };
    let messages = vec![
        file("a.png", 600, None),
        file(
            "big.png",
            500,
            Some("https://switchboard.example/media/v1/x/y"),
        ),
        file("c.png", 400, None),
    ];
    let composed = composer_with(None, 1000)
        .messages(&thread(messages), date())
        .unwrap();
    assert_eq!(composed.files_left_out, ["big.png"]);
    let parsed = parse(&composed);
    let attached: Vec<(String, usize)> = parsed
        .attachments()
        .map(|part| {
            (
                part.attachment_name().unwrap_or_default().to_owned(),
                part.contents().len(),
            )
        })
        .collect();
    assert_eq!(
        attached,
        [("a.png".to_owned(), 600), ("c.png".to_owned(), 400)]
    );
    let plain = parsed.body_text(0).unwrap();
    assert!(
        plain.contains("too large to attach: big.png (500 bytes)"),
        "{plain}"
    );
    assert!(
        plain.contains("https://switchboard.example/media/v1/x/y"),
        "{plain}"
    );
}

#[test]
fn a_files_name_and_type_cannot_add_headers() {
    let messages = vec![VisitorMessage {
        body: "see file".to_owned(),
        html: None,
        file: Some(VisitorFile {
            name: "../../etc/x\r\nBcc: evil@x.txt".to_owned(),
            mimetype: Some("text/plain; charset=\"\r\nBcc: evil@x\"".to_owned()),
            bytes: b"hello".to_vec(),
            link: None,
        }),
    }];
    let composed = composer().messages(&thread(messages), date()).unwrap();
    let parsed = parse(&composed);
    let part = parsed.attachment(0).unwrap();
    assert_eq!(part.attachment_name(), Some("x Bcc: evil@x.txt"));
    let content_type = part.content_type().unwrap();
    assert_eq!(
        (content_type.ctype(), content_type.subtype()),
        ("text", Some("plain"))
    );
    assert!(content_type.attributes().is_none_or(|attributes| {
        attributes
            .iter()
            .all(|attribute| !attribute.value.contains("evil"))
    }));
    assert!(parsed.header("Bcc").is_none());
    let raw = String::from_utf8_lossy(&composed.formatted);
    assert!(!raw.lines().any(|line| line.starts_with("Bcc")), "{raw}");
}

#[test]
fn a_5000_character_line_is_encoded_within_the_line_limit() {
    let long: String = "0123456789".repeat(500);
    let composed = composer()
        .messages(&thread(vec![text(&long)]), date())
        .unwrap();
    let longest = composed
        .formatted
        .split(|&b| b == b'\n')
        .map(<[u8]>::len)
        .max()
        .unwrap();
    assert!(longest <= 998 + 1, "a line of {longest} bytes");
    let parsed = parse(&composed);
    assert!(parsed.body_text(0).unwrap().contains(&long));
    assert!(parsed.body_html(0).unwrap().contains(&long));
}

/// Everything a reader could get out of a mail: the raw bytes, and every header and body
/// part decoded.
fn readable_text(composed: &Composed) -> String {
    let parsed = parse(composed);
    let mut all = String::from_utf8_lossy(&composed.formatted).into_owned();
    for header in parsed.headers() {
        all.push_str(&format!("\n{}: {:?}", header.name(), header.value()));
    }
    for part in &parsed.parts {
        all.push('\n');
        all.push_str(&String::from_utf8_lossy(part.contents()));
    }
    all
}

#[test]
fn nothing_identifying_the_visitor_reaches_the_mail() {
    // Known to the caller, and never passed: only the pseudonym and random tokens are.
    let room_id = "!KcDbhPwyPSRmGhoNvC:visitors.example";
    let user_id = "@visitor-3f9a2b:visitors.example";
    let mut mail = thread(vec![
        text("Hello, I need help"),
        VisitorMessage {
            body: "with this".to_owned(),
            html: Some("<em>with</em> this".to_owned()),
            file: Some(VisitorFile {
                name: "photo.jpg".to_owned(),
                mimetype: Some("image/jpeg".to_owned()),
                bytes: vec![1, 2, 3],
                link: None,
            }),
        },
    ]);
    mail.earlier = vec![id(1)];
    let composer = composer();
    let offer = composer.offer(&offer(), date()).unwrap();
    let messages = composer.messages(&mail, date()).unwrap();
    for composed in [&offer, &messages] {
        let readable = readable_text(composed);
        for secret in [
            room_id,
            user_id,
            "KcDbhPwyPSRmGhoNvC",
            "visitor-3f9a2b",
            "visitors.example",
        ] {
            assert!(!readable.contains(secret), "{secret} found");
        }
    }

    // The scan does find what a mail carries, even inside an encoded body.
    let leaky = composer
        .messages(&thread(vec![text(&format!("é {room_id}"))]), date())
        .unwrap();
    assert!(readable_text(&leaky).contains(room_id));
}

#[test]
fn an_unusable_configuration_is_refused_with_its_reason() {
    let config = |domain: &str, from: &str| ComposerConfig {
        domain: domain.to_owned(),
        from_address: from.to_owned(),
        dkim: None,
        max_attachment_bytes: 0,
    };
    assert!(matches!(
        Composer::new(&config("bad domain", "support@x.example")),
        Err(ComposeError::Domain(_))
    ));
    assert!(matches!(
        Composer::new(&config("x.example", "not an address")),
        Err(ComposeError::Address { which: "from", .. })
    ));
}

#[test]
fn an_answer_to_an_initiator_threads_under_their_mail_from_the_topic() {
    let theirs = MessageId::parse("<abc.123@client.example>").unwrap();
    let answer = AnswerMail {
        initiator: Recipient {
            address: "carol@visitors.example".to_owned(),
            name: None,
        },
        topic: "Billing".to_owned(),
        subject: Some("Invoice 42 is wrong\r\nBcc: everyone@example.org".to_owned()),
        earlier: vec![theirs.clone()],
        reply_token: "initiator_tok-3".to_owned(),
        messages: vec![text("We have corrected it."), text("Anything else?")],
        key: None,
    };
    let composed = composer().answer(&answer, date()).unwrap();
    let mail = parse(&composed);
    let from = mail.from().unwrap().first().unwrap();
    assert_eq!(from.name(), Some("Billing"));
    assert_eq!(from.address(), Some("support@mail.example.org"));
    // Their subject, answered; the CR/LF in it made no header of its own.
    assert_eq!(
        mail.subject(),
        Some("Re: Invoice 42 is wrong Bcc: everyone@example.org")
    );
    assert!(mail.bcc().is_none());
    assert_eq!(mail.in_reply_to().as_text(), Some("abc.123@client.example"));
    assert_eq!(
        mail.reply_to().unwrap().first().unwrap().address(),
        Some("reply+initiator_tok-3@mail.example.org")
    );
    let plain = mail.body_text(0).unwrap();
    for expected in [
        "We have corrected it.",
        "Anything else?",
        "/end alone on a line",
    ] {
        assert!(plain.contains(expected), "{expected:?} missing:\n{plain}");
    }
    // Without a subject of theirs, the topic titles it; "Re:" is never doubled.
    let bare = AnswerMail {
        subject: None,
        ..answer.clone()
    };
    let composed = composer().answer(&bare, date()).unwrap();
    assert_eq!(parse(&composed).subject(), Some("Re: Billing"));
    let replied = AnswerMail {
        subject: Some("RE: Invoice".to_owned()),
        ..answer.clone()
    };
    let composed = composer().answer(&replied, date()).unwrap();
    assert_eq!(parse(&composed).subject(), Some("RE: Invoice"));
    let empty = AnswerMail {
        messages: Vec::new(),
        ..answer
    };
    assert!(matches!(
        composer().answer(&empty, date()),
        Err(ComposeError::NoMessages)
    ));
}

/// A mail composed again for the same delivery (sent again after a crash) has the same
/// Message-ID, and so its bounce address; another delivery, or a mail without a key, gets
/// another. The ID is a hash: nothing of the key shows.
#[test]
fn a_mail_composed_again_for_the_same_delivery_keeps_its_message_id() {
    let keyed = |key: Option<&str>| {
        let mail = ThreadMail {
            key: key.map(str::to_owned),
            ..thread(vec![text("Hello")])
        };
        let composed = composer().messages(&mail, date()).unwrap();
        let bounce = composed.envelope.from().map(ToString::to_string);
        (composed.message_id, bounce)
    };
    let first = keyed(Some("$event1 0"));
    assert_eq!(keyed(Some("$event1 0")), first);
    assert_ne!(keyed(Some("$event1 1")).0, first.0);
    assert_ne!(keyed(None).0, keyed(None).0);
    let id = first.0.as_str();
    assert!(!id.contains("event1"), "{id}");
    assert!(MessageId::parse(id).is_some(), "{id}");
    assert!(id.ends_with("@mail.example.org>"), "{id}");
    let answer = AnswerMail {
        initiator: responder(),
        topic: "Billing".to_owned(),
        subject: None,
        earlier: Vec::new(),
        reply_token: "initiator_tok-3".to_owned(),
        messages: vec![text("Done.")],
        key: Some("$event1 0".to_owned()),
    };
    let again = composer().answer(&answer, date()).unwrap();
    assert_eq!(
        again.message_id,
        composer().answer(&answer, date()).unwrap().message_id
    );
    // An offer too: sent again, the same ID; another offer or responder, another.
    let offered = |key: &str| {
        let mail = OfferMail {
            key: Some(key.to_owned()),
            ..offer()
        };
        composer().offer(&mail, date()).unwrap().message_id
    };
    let first_offer = offered("offer !room:hs 7 ada@example.net");
    assert_eq!(offered("offer !room:hs 7 ada@example.net"), first_offer);
    assert_ne!(offered("offer !room:hs 8 ada@example.net"), first_offer);
    assert_ne!(offered("offer !room:hs 7 bob@example.net"), first_offer);
    assert!(!first_offer.as_str().contains("room"), "{first_offer:?}");
}
