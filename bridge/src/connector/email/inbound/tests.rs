//! Mails as real clients write them (hand-written fixtures in `testdata/`), read end to end.

use proptest::prelude::*;

use super::*;

const DOMAIN: &str = "switchboard.example.org";
const TOKEN: &str = "Zk3vQ9xT2mLp8RwA";

fn fixture(name: &str) -> InboundMail {
    let path = format!(
        "{}/src/connector/email/inbound/testdata/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    parse(&raw).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn reply(name: &str) -> (InboundMail, NewContent) {
    let mail = fixture(name);
    assert_eq!(mail.automated, None, "{name} is a person's reply");
    assert_eq!(mail.delivery_report, None);
    let content = new_content(&mail);
    (mail, content)
}

#[test]
fn a_gmail_reply_keeps_only_the_new_text_without_quote_or_signature() {
    let (mail, content) = reply("gmail_reply.eml");
    assert_eq!(
        mail.id,
        MailId::MessageId("CAF=abc123+XyZ@mail.gmail.com".into())
    );
    assert_eq!(mail.from, "alice.martin@gmail.com");
    assert_eq!(mail.in_reply_to, ["offer-1@switchboard.example.org"]);
    assert_eq!(mail.subject.as_deref(), Some("Re: A visitor is waiting"));
    assert_eq!(reply_token(&mail, &[], DOMAIN).as_deref(), Some(TOKEN));
    assert_eq!(
        content.text,
        "Hello! Yes, we open at 9 tomorrow \u{2014} see you then."
    );
    let html = content.html.expect("the mail had HTML");
    assert!(html.contains("<b>9</b>"), "{html}");
    assert!(
        !html.contains("visitor asks") && !html.contains("Alice Martin"),
        "{html}"
    );
}

#[test]
fn an_outlook_web_reply_ends_where_its_quote_container_starts() {
    let (mail, content) = reply("outlook_web_reply.eml");
    assert_eq!(
        content.text,
        "Thanks for waiting. The order shipped this morning.\n\nBob"
    );
    let html = content.html.unwrap();
    assert!(
        !html.contains("From:") && !html.contains("Where is my order"),
        "{html}"
    );
    // Its plain text part (base64) reads the same without the HTML.
    let plain = new_content(&InboundMail { html: None, ..mail });
    assert_eq!(plain.text, content.text);
}

#[test]
fn an_outlook_desktop_reply_is_cut_at_its_header_block() {
    let (mail, content) = reply("outlook_desktop_reply.eml");
    assert_eq!(mail.text, None);
    // windows-1252: the no-break space and the en dash.
    assert_eq!(
        content.text,
        "We can offer a 10\u{a0}% discount \u{2013} Carol"
    );
    assert!(!content.html.unwrap().contains("discounts?"));
}

#[test]
fn a_thunderbird_reply_loses_its_cite_prefix_quote_and_signature() {
    let (mail, content) = reply("thunderbird_reply.eml");
    assert_eq!(content.text, "Yes, it fits. I'll send the form.\nDave");
    // The plain part: German attribution, `>` quote, `-- ` signature.
    let plain = new_content(&InboundMail { html: None, ..mail });
    // (format=flowed is not unwrapped: its soft break stays a line break.)
    assert_eq!(plain.text, "Yes, it fits. I'll send the form. \nDave");
}

#[test]
fn an_apple_mail_reply_loses_its_attribution_quote_and_phone_signature() {
    let (mail, content) = reply("apple_mail_reply.eml");
    assert_eq!(content.text, "Sure, I'll call the visitor at 3pm.");
    assert!(!content.html.unwrap().contains("call me"));
    let plain = new_content(&InboundMail { html: None, ..mail });
    assert_eq!(plain.text, "Sure, I'll call the visitor at 3pm.");
}

#[test]
fn a_plain_reply_with_a_wrapped_attribution_and_a_command() {
    let (mail, content) = reply("plain_wrapped_reply.eml");
    assert_eq!(mail.from, "frank@example.com");
    assert_eq!(
        mail.references,
        [
            "offer-0@switchboard.example.org",
            "offer-5@switchboard.example.org"
        ]
    );
    assert_eq!(content.text, "I can't help with invoices, passing you on.");
    assert_eq!(content.html, None);
    // The quoted `/end` is the visitor's text, not a command.
    assert_eq!(
        content.commands,
        [Command {
            name: "transfer".into(),
            args: "billing".into()
        }]
    );
}

#[test]
fn a_latin1_german_reply_is_decoded_and_cut_at_its_attribution() {
    let (mail, content) = reply("german_latin1_reply.eml");
    assert_eq!(
        mail.subject.as_deref(),
        Some("AW: Ein Besucher wartet über")
    );
    // The local part as written, the domain lower-cased.
    assert_eq!(
        mail.recipients,
        [format!("reply+{TOKEN}@{DOMAIN}"), "TEAM@example.de".into()]
    );
    assert_eq!(
        content.text,
        "Guten Tag,\n\ndie Lieferung kommt am Dienstag. Grüße aus Köln!"
    );
}

#[test]
fn an_exchange_out_of_office_is_automated() {
    let mail = fixture("exchange_oof.eml");
    assert_eq!(
        mail.automated,
        Some(Automated::AutoSubmitted("auto-replied".into()))
    );
    // Any one of its signals is enough on its own.
    let raw = std::fs::read(format!(
        "{}/src/connector/email/inbound/testdata/exchange_oof.eml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let text = String::from_utf8(raw).unwrap();
    let without = |names: &[&str]| {
        let kept: String = text
            .split_inclusive("\r\n")
            .filter(|line| !names.iter().any(|n| line.starts_with(n)))
            .collect();
        parse(kept.as_bytes()).unwrap().automated
    };
    assert_eq!(
        without(&["Auto-Submitted"]),
        Some(Automated::AutoResponseSuppress)
    );
    assert_eq!(
        without(&["Auto-Submitted", "X-Auto-Response-Suppress"]),
        Some(Automated::NullReturnPath)
    );
    assert_eq!(
        without(&["Auto-Submitted", "X-Auto-Response-Suppress", "Return-Path"]),
        None
    );
}

#[test]
fn headers_that_mark_machines_and_those_that_do_not() {
    let automated = |header: &str| {
        let raw = format!("From: a@example.org\r\n{header}\r\nSubject: x\r\n\r\nbody\r\n");
        parse(raw.as_bytes()).unwrap().automated
    };
    assert_eq!(automated("Auto-Submitted: no"), None);
    assert_eq!(
        automated("Auto-Submitted: Auto-Generated; owner-email=\"x@example.org\""),
        Some(Automated::AutoSubmitted("auto-generated".into()))
    );
    assert_eq!(
        automated("Precedence: bulk"),
        Some(Automated::Precedence("bulk".into()))
    );
    assert_eq!(automated("Precedence: first-class"), None);
    assert_eq!(
        automated("X-Autoreply: yes"),
        Some(Automated::Autoresponder)
    );
    assert_eq!(
        automated("X-Auto-Response-Suppress: DR, OOF, AutoReply"),
        Some(Automated::AutoResponseSuppress)
    );
    assert_eq!(automated("X-Auto-Response-Suppress: DR, RN"), None);
    assert_eq!(
        automated("List-Id: Sales <sales.lists.example.org>"),
        Some(Automated::MailingList)
    );
    assert_eq!(
        automated("Return-Path: < >"),
        Some(Automated::NullReturnPath)
    );
    assert_eq!(automated("Return-Path: <a@example.org>"), None);
}

#[test]
fn a_postfix_bounce_is_read_as_a_permanent_failure_of_its_token() {
    let mail = fixture("postfix_dsn_5_1_1.eml");
    assert!(mail.automated.is_some());
    let report = mail.delivery_report.as_ref().expect("a DSN");
    assert_eq!(report.recipients.len(), 1);
    assert_eq!(report.recipients[0].action, Action::Failed);
    assert_eq!(reply_token(&mail, &[], DOMAIN), None);
    let bounce = bounce(&mail, &[], DOMAIN).expect("a bounce");
    assert_eq!(
        bounce,
        Bounce {
            token: TOKEN.into(),
            permanent: true,
            status: "5.1.1".into(),
            diagnostic: Some(
                "smtp; 550 5.1.1 <nobody@contoso.example>: Recipient address rejected: \
                 User unknown in local recipient table"
                    .into()
            ),
            recipient: Some("nobody@contoso.example".into()),
        }
    );
}

#[test]
fn a_delay_is_a_transient_bounce_and_a_success_is_none() {
    let raw = std::fs::read_to_string(format!(
        "{}/src/connector/email/inbound/testdata/postfix_dsn_5_1_1.eml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    let delayed = raw
        .replace("Action: failed", "Action: delayed")
        .replace("Status: 5.1.1", "Status: 4.4.1");
    let bounced = bounce(&parse(delayed.as_bytes()).unwrap(), &[], DOMAIN).unwrap();
    assert!(!bounced.permanent);
    assert_eq!(bounced.status, "4.4.1");
    let delivered = raw.replace("Action: failed", "Action: delivered");
    let mail = parse(delivered.as_bytes()).unwrap();
    assert!(mail.delivery_report.is_some());
    assert_eq!(bounce(&mail, &[], DOMAIN), None);
}

#[test]
fn attachments_are_kept_and_a_mail_without_message_id_gets_a_stable_key() {
    let mail = fixture("attachment_no_message_id.eml");
    assert_eq!(mail.attachments.len(), 1);
    let attachment = &mail.attachments[0];
    assert_eq!(attachment.name.as_deref(), Some("Price List 2025.pdf"));
    assert_eq!(attachment.mimetype, "application/pdf");
    assert!(attachment.bytes.starts_with(b"%PDF-1.4\n%\xe2\xe3"));
    assert!(attachment.bytes.ends_with(b"%%EOF\n"));
    assert_eq!(
        new_content(&mail).text,
        "Here is the price list you asked for."
    );
    let MailId::Derived(key) = &mail.id else {
        panic!("no Message-ID: {:?}", mail.id)
    };
    assert!(key.starts_with("sha256:") && key.len() == 7 + 64, "{key}");
    let again = fixture("attachment_no_message_id.eml");
    assert_eq!(again.id, mail.id);
    let other = parse(b"From: a@example.org\r\n\r\nanother body\r\n").unwrap();
    assert_ne!(other.id, mail.id);
}

#[test]
fn reply_tokens_are_found_only_in_their_exact_form() {
    let mail =
        |to: &str| parse(format!("From: a@example.org\r\nTo: {to}\r\n\r\nx").as_bytes()).unwrap();
    let token = |to: &str, envelope: &[&str]| reply_token(&mail(to), envelope, DOMAIN);
    assert_eq!(
        token(&format!("<Reply+{TOKEN}@SWITCHBOARD.example.org>"), &[]).as_deref(),
        Some(TOKEN)
    );
    assert_eq!(
        token("x@example.org", &[&format!("reply+{TOKEN}@{DOMAIN}")]).as_deref(),
        Some(TOKEN)
    );
    // Too short, a bad character, another domain, another tag.
    assert_eq!(token(&format!("reply+short@{DOMAIN}"), &[]), None);
    assert_eq!(token(&format!("reply+{TOKEN}.x@{DOMAIN}"), &[]), None);
    assert_eq!(
        token(&format!("reply+{TOKEN}@{DOMAIN}.evil.example"), &[]),
        None
    );
    assert_eq!(token(&format!("bounce+{TOKEN}@{DOMAIN}"), &[]), None);
    assert_eq!(
        token(&format!("reply+{}@{DOMAIN}", "a".repeat(65)), &[]),
        None
    );
    // Two different conversations: ambiguous.
    let other = "A".repeat(20);
    assert_eq!(
        token(
            &format!("reply+{TOKEN}@{DOMAIN}, reply+{other}@{DOMAIN}"),
            &[]
        ),
        None
    );
}

#[test]
fn a_mail_without_a_single_sender_is_refused() {
    assert_eq!(parse(b"").unwrap_err(), InboundError::NotAMail);
    assert_eq!(
        parse(b"To: x@example.org\r\n\r\nhi").unwrap_err(),
        InboundError::NoFrom
    );
    assert_eq!(
        parse(b"From: a@example.org, b@example.org\r\n\r\nhi").unwrap_err(),
        InboundError::SeveralFrom(2)
    );
}

#[test]
fn a_yahoo_reply_and_html_commands() {
    let html = concat!(
        r#"<html><body><div class="ydp1234yahoo-style-wrap"><div dir="ltr">Great, see you!</div>"#,
        r#"<div dir="ltr">/end</div></div><div id="yahoo_quoted_5678" class="yahoo_quoted">"#,
        r#"<div>On Monday, 3 March 2025, Switchboard wrote:</div><blockquote><div>bye</div></blockquote></div></body></html>"#
    );
    let mail = InboundMail {
        html: Some(html.into()),
        ..parse(b"From: y@yahoo.example\r\n\r\n").unwrap()
    };
    let content = new_content(&mail);
    assert_eq!(content.text, "Great, see you!");
    assert_eq!(content.commands.len(), 1);
    assert!(!content.html.unwrap().contains("/end"));
}

#[test]
fn a_reply_that_only_quotes_gives_nothing_to_relay() {
    let html = r#"<div><br></div><div class="gmail_quote"><div class="gmail_attr">On Mon, X wrote:</div><blockquote class="gmail_quote">hello</blockquote></div>"#;
    let mail = InboundMail {
        html: Some(html.into()),
        text: Some("\r\nOn Mon, X wrote:\r\n> hello\r\n".into()),
        ..parse(b"From: y@example.org\r\n\r\n").unwrap()
    };
    assert_eq!(new_content(&mail), NewContent::default());
}

/// Words of `html`'s visible text.
fn words(html: &str) -> Vec<String> {
    let text = crate::format::from_matrix_html(
        &crate::format::sanitise_matrix_html(html),
        &crate::format::Target {
            link_schemes: crate::format::matrix_html::READ_LINK_SCHEMES,
            may_open: |_, _| true,
        },
    )
    .text;
    text.split_whitespace().map(str::to_owned).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn parsing_never_panics(raw in proptest::collection::vec(any::<u8>(), 0..2048)) {
        let _ = parse(&raw);
    }

    #[test]
    fn parsing_mail_shaped_bytes_never_panics(
        headers in proptest::collection::vec(
            ("(From|To|Cc|Delivered-To|Content-Type|Content-Transfer-Encoding|Return-Path|Auto-Submitted|Message-ID)",
             "[ -~]{0,40}"),
            0..8,
        ),
        body in "[ -~\r\n]{0,300}",
    ) {
        let mut raw = String::new();
        for (name, value) in headers {
            raw.push_str(&format!("{name}: {value}\r\n"));
        }
        raw.push_str("\r\n");
        raw.push_str(&body);
        if let Ok(mail) = parse(raw.as_bytes()) {
            let _ = new_content(&mail);
            let _ = reply_token(&mail, &[], DOMAIN);
            let _ = bounce(&mail, &[], DOMAIN);
        }
    }

    #[test]
    fn plain_stripping_returns_a_part_of_its_input(
        lines in proptest::collection::vec(
            prop_oneof![
                "[ -~]{0,30}",
                Just("-- ".to_owned()),
                Just("On Mon, X wrote:".to_owned()),
                "> [ -~]{0,20}",
                Just("From: x".to_owned()),
                Just("Sent: y".to_owned()),
                Just("To: z".to_owned()),
                Just("Grüße, Jürgen".to_owned()),
            ],
            0..12,
        ),
    ) {
        let text = lines.join("\n");
        let stripped = strip_plain_quotes(&text);
        prop_assert!(text.contains(stripped));
    }

    #[test]
    fn html_stripping_keeps_only_words_of_its_input(
        parts in proptest::collection::vec(
            prop_oneof![
                "[a-zA-Z ]{0,12}",
                Just("<div>".to_owned()),
                Just("</div>".to_owned()),
                Just("<br>".to_owned()),
                Just("<blockquote type=\"cite\">".to_owned()),
                Just("</blockquote>".to_owned()),
                Just("<div class=\"gmail_quote\">".to_owned()),
                Just("<div id=\"divRplyFwdMsg\">".to_owned()),
                Just("<p>On Mon, X wrote:</p>".to_owned()),
                Just("<b>From:</b> a<br><b>Sent:</b> b<br><b>To:</b> c".to_owned()),
                Just("-- <br>".to_owned()),
                Just("<p>/end</p>".to_owned()),
            ],
            0..16,
        ),
    ) {
        let html = parts.concat();
        let all = words(&html);
        let content = html::new_content(&html);
        for word in content.text.split_whitespace() {
            prop_assert!(all.iter().any(|w| w == word), "{word:?} not in {html:?}");
        }
    }
}

/// Found by `html_stripping_keeps_only_words_of_its_input`: a removed quote between two
/// pieces of text once joined them into one word.
#[test]
fn a_removed_quote_still_separates_the_text_around_it() {
    let html = "a<div class=\"gmail_quote\"></div><b>From:</b> a<br><b>Sent:</b> b<br><b>To:</b> c";
    let found = super::html::new_content(html);
    assert!(
        !found.text.contains("aFrom"),
        "run together: {:?}",
        found.text
    );
}
