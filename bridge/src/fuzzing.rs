//! Entry points for coverage-guided fuzzing: each takes arbitrary bytes, gives them to one
//! parser that reads input from outside (a homeserver, a platform, a mail server, a browser),
//! and checks what came out. A panic is a finding.
//!
//! `fuzz/` (cargo-fuzz with libFuzzer, on nightly, `scripts/fuzz.sh`) runs each of
//! [`TARGETS`] for millions of inputs; `bridge/tests/fuzz_corpora.rs` replays every input
//! those runs kept (`fuzz/corpus/`) and every finding (`fuzz/regressions/`) on stable Rust, so
//! the ordinary test suite guards them. Not part of the service.

use std::cell::RefCell;

use html5ever::{
    tendril::StrTendril,
    tokenizer::{
        BufferQueue, TagKind, Token, TokenSink, TokenSinkResult, Tokenizer, TokenizerOpts,
    },
};
use serde_json::Value;

use crate::{
    connector::{
        discord::format::{DISCORD_MAX_TEXT, from_discord, to_discord},
        email::{
            compose::{
                AnswerMail, Composer, ComposerConfig, MessageId, OfferMail, Recipient, ThreadMail,
                VisitorFile, VisitorMessage,
            },
            inbound,
        },
        telegram::format::{
            TELEGRAM_MAX_TEXT, matrix_to_telegram_html, telegram_html_plain_len, telegram_to_matrix,
        },
    },
    format::{
        MATRIX_LINK_SCHEMES, Target, from_matrix_html, matrix_html, sanitise_matrix_html, split,
        to_matrix_html,
    },
};

/// A fuzz target: its name (the file under `fuzz/fuzz_targets/` and the corpus directory)
/// and what it runs on one input.
pub type FuzzTarget = (&'static str, fn(&[u8]));

/// Every target, by name.
pub const TARGETS: &[FuzzTarget] = &[
    ("appservice_transaction", appservice_transaction),
    ("visitor_requests", visitor_requests),
    ("telegram_update", telegram_update),
    ("discord_payload", discord_payload),
    ("inbound_mail", inbound_mail),
    ("html_sanitiser", html_sanitiser),
    ("matrix_to_platforms", matrix_to_platforms),
    ("split_styled", split_styled),
    ("visitor_proxy", visitor_proxy),
    ("outbound_mail", outbound_mail),
];

/// A homeserver transaction body, through the appservice endpoint as Synapse calls it: any
/// body is answered 200 (recorded), 400 (not a transaction) or 413, never a panic or a 5xx.
pub fn appservice_transaction(data: &[u8]) {
    use axum::{body::Body, http::Request};
    use switchboard_appservice::{
        AppserviceRegistration,
        registration::GenerateOptions,
        server::{AppserviceState, router},
    };
    use tower::ServiceExt;

    let registration = AppserviceRegistration::generate(&GenerateOptions {
        id: "fuzz",
        url: "http://127.0.0.1:1",
        bot_localpart: "bot",
        ghost_prefix: "_sb_",
    });
    let token = registration.inner.hs_token.clone();
    let app = router(AppserviceState::new(
        std::sync::Arc::new(registration),
        std::sync::Arc::new(ReadingSink),
    ));
    let request = Request::put("/_matrix/app/v1/transactions/1")
        .header("authorization", format!("Bearer {token}"))
        .header("content-type", "application/json")
        .body(Body::from(data.to_vec()))
        .expect("a valid request");
    let status = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
        .block_on(app.oneshot(request))
        .expect("infallible")
        .status()
        .as_u16();
    assert!(
        matches!(status, 200 | 400 | 413),
        "a transaction body answered {status}"
    );
}

/// Takes every transaction, reading each event as the bridge's sink does (its ID and room,
/// or skipped).
struct ReadingSink;

#[async_trait::async_trait]
impl switchboard_appservice::EventSink for ReadingSink {
    async fn record_transaction(
        &self,
        _txn_id: &str,
        events: Vec<ruma::serde::Raw<ruma::events::AnyTimelineEvent>>,
    ) -> Result<(), switchboard_appservice::SinkError> {
        for raw in &events {
            if let Ok(event) = serde_json::from_str::<Value>(raw.json().get()) {
                let _ = (event["event_id"].as_str(), event["room_id"].as_str());
            }
        }
        Ok(())
    }

    async fn user_exists(&self, _user_id: &ruma::UserId) -> bool {
        false
    }
}

/// What a browser or an operator's client sends as a body: the widget's conversation and
/// typing requests and the admin API's responder and status bodies. Each is accepted or
/// refused with a field-naming error; never a panic.
pub fn visitor_requests(data: &[u8]) {
    crate::visitor_api::fuzz_support::bodies(data);
    crate::admin_api::fuzz_support::bodies(data);
}

/// A Telegram update as long polling or a webhook delivers it: read (or refused as
/// unreadable), and a message's text with its entities turned into Matrix HTML that keeps
/// to the allow-list.
pub fn telegram_update(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    crate::connector::telegram::fuzz_support::update(value);
    // The same bytes as a message's text and entities, however the update itself read.
    if let Some(text) = std::str::from_utf8(data).ok().filter(|t| t.len() < 8192) {
        let entities = entity_soup(data, text);
        let (body, html) = telegram_to_matrix(text, &entities);
        assert_eq!(body, text, "the body is the text unchanged");
        if let Some(html) = html {
            check_matrix_html(&html);
        }
    }
}

/// Entities over `text` made from the input's bytes: offsets and lengths anywhere, in or out
/// of range, inside surrogate pairs, overlapping.
fn entity_soup(data: &[u8], text: &str) -> Vec<teloxide::types::MessageEntity> {
    use teloxide::types::{MessageEntity, MessageEntityKind};
    let len = text.encode_utf16().count().max(1);
    data.chunks(3)
        .take(16)
        .map(|c| {
            let (a, b, k) = (c[0] as usize, *c.get(1).unwrap_or(&0) as usize, c.get(2));
            let kind = match k.copied().unwrap_or(0) % 8 {
                0 => MessageEntityKind::Bold,
                1 => MessageEntityKind::Italic,
                2 => MessageEntityKind::Code,
                3 => MessageEntityKind::Pre {
                    language: Some("rust".into()),
                },
                4 => MessageEntityKind::Spoiler,
                5 => MessageEntityKind::Url,
                6 => MessageEntityKind::Blockquote,
                _ => MessageEntityKind::Strikethrough,
            };
            MessageEntity::new(kind, a % (len + 2), b % (len + 2))
        })
        .collect()
}

/// A Discord gateway payload: the frame, a message (created or edited) and an interaction
/// read with serenity's models, and a message's content turned into Matrix HTML that keeps
/// to the allow-list. Not JSON: the bytes as a message's content.
pub fn discord_payload(data: &[u8]) {
    match serde_json::from_slice::<Value>(data) {
        Ok(frame) => crate::connector::discord::fuzz_support::payload(frame),
        Err(_) => {
            let content = String::from_utf8_lossy(data);
            let (_, html) = from_discord(&content);
            if let Some(html) = html {
                check_matrix_html(&html);
            }
        }
    }
}

/// A mail as the SMTP listener or IMAP hands it over: parsed or refused; when parsed, its
/// reply and bounce addresses are read, its quotes cut, its HTML read like a message's.
pub fn inbound_mail(data: &[u8]) {
    let Ok(mail) = inbound::parse(data) else {
        return;
    };
    let rcpts = ["reply+abc@example.org", "bounce+abc@example.org"];
    let _ = inbound::reply_token(&mail, &rcpts, "example.org");
    let _ = inbound::bounce_token(&mail, &rcpts, "example.org");
    let _ = inbound::bounce(&mail, &rcpts, "example.org");
    if let Some(text) = &mail.text {
        let kept = inbound::strip_plain_quotes(text);
        assert!(
            text.contains(kept),
            "cutting quotes keeps a part of the text"
        );
    }
    if let Some(html) = &mail.html {
        check_matrix_html(&sanitise_matrix_html(html));
    }
}

/// Any HTML a responder or visitor sends, through the sanitiser: nothing outside the Matrix
/// spec's allow-list survives, and no image but an `mxc://` one.
pub fn html_sanitiser(data: &[u8]) {
    let html = String::from_utf8_lossy(data);
    check_matrix_html(&sanitise_matrix_html(&html));
}

/// A Matrix message (the first line its plain body, the rest its HTML) rendered for each
/// platform: every Telegram part within 4096 UTF-16 units with its tags balanced, every
/// Discord part within 2000 characters, and the shared model rendered back to Matrix HTML
/// within the allow-list.
pub fn matrix_to_platforms(data: &[u8]) {
    let input = String::from_utf8_lossy(data);
    let (body, html) = input.split_once('\n').unwrap_or((&input, ""));
    let html = (!html.is_empty()).then_some(html);
    for part in matrix_to_telegram_html(body, html) {
        assert!(!part.is_empty(), "an empty Telegram part");
        let len = telegram_html_plain_len(&part);
        assert!(len <= TELEGRAM_MAX_TEXT, "a Telegram part of {len} units");
        check_balanced(&part);
    }
    for part in to_discord(body, html, Some("Visitor 7F3A")) {
        let len = part.chars().count();
        assert!(
            len <= DISCORD_MAX_TEXT,
            "a Discord part of {len} characters"
        );
    }
    let read = from_matrix_html(html.unwrap_or(body), &ANYTHING);
    check_matrix_html(&to_matrix_html(&read));
}

/// The shared splitter on the model of any HTML, with a limit from the first byte: every
/// part within the limit and not empty, every style inside its part's text.
pub fn split_styled(data: &[u8]) {
    let Some((&limit, rest)) = data.split_first() else {
        return;
    };
    let max = usize::from(limit);
    let styled = from_matrix_html(&String::from_utf8_lossy(rest), &ANYTHING).trimmed();
    let parts = split(&styled, max, char::len_utf16);
    assert_eq!(parts.is_empty(), styled.text.is_empty());
    let total: usize = parts.iter().map(|p| p.text.len()).sum();
    assert!(
        total <= styled.text.len(),
        "the parts hold more than the text"
    );
    for part in &parts {
        assert!(!part.text.is_empty(), "an empty part");
        let units: usize = part.text.chars().map(char::len_utf16).sum();
        // Below one character, a part holds one character (or one cluster) anyway.
        assert!(
            units <= max || part.text.chars().count() == 1 || max < 4,
            "a part of {units} units over {max}"
        );
        for span in &part.spans {
            assert!(span.start < span.end && span.end <= part.text.len());
            assert!(part.text.is_char_boundary(span.start) && part.text.is_char_boundary(span.end));
        }
    }
}

/// What a browser sends the visitor proxy and reads in both visitor APIs, as fields between
/// 0xFF bytes (never in UTF-8): a path segment, a query, a `/sync` filter, a header value.
/// A segment goes on as one segment that decodes back to itself, a query keeps only the
/// parameters named, a filter reaches only the visitor's own rooms, and the headers give a
/// bearer token or a client address only as they say.
pub fn visitor_proxy(data: &[u8]) {
    use crate::visitor_proxy::fuzz_support as proxy;
    let fields = fields(data);
    let field = |i: usize| fields.get(i).map(String::as_str).unwrap_or_default();
    proxy::path_segment(field(0));
    proxy::query(field(1));
    proxy::filter(field(2));
    proxy::headers(field(3));
}

/// Visitor messages written as a mail to a responder, answers as a mail to someone who wrote
/// by mail, or an offer (the first byte says which, and whether a file goes along), with any
/// topic, pseudonym, name, subject, text, HTML and file name and type (fields between 0xFF
/// bytes): lines end in CRLF within RFC 5322's length, each part has the headers the same mail
/// has with plain words and no others, and the HTML holds only the tags we write, with links
/// only to `http`, `https` and `mailto`.
pub fn outbound_mail(data: &[u8]) {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let fields = fields(rest);
    let field = |i: usize| fields.get(i).cloned().unwrap_or_default();
    let wild = MailInput {
        topic: field(0),
        pseudonym: field(1),
        name: field(2),
        subject: field(3),
        body: field(4),
        html: fields.get(5).cloned(),
        file: (field(6), fields.get(7).cloned()),
    };
    let plain = MailInput {
        topic: "General support".into(),
        pseudonym: "Visitor 7F3A".into(),
        name: "Ada".into(),
        subject: "Hello".into(),
        body: "hi".into(),
        html: None,
        file: ("notes.txt".into(), None),
    };
    // None of the fuzzed fields is one the composer checks (addresses, tokens, links), so a
    // refusal would be a visitor's message that can never be delivered: a finding.
    let raw = compose_mail(which, &wild).expect("any text is composed");
    let reference = compose_mail(which, &plain).expect("a plain mail is composed");
    check_mail(&raw, &reference);
}

/// The fields of a fuzz input, between 0xFF bytes (a byte UTF-8 never holds).
fn fields(data: &[u8]) -> Vec<String> {
    data.split(|&b| b == 0xff)
        .map(|f| String::from_utf8_lossy(f).into_owned())
        .collect()
}

/// What [`outbound_mail`] writes a mail from.
struct MailInput {
    topic: String,
    pseudonym: String,
    name: String,
    subject: String,
    body: String,
    html: Option<String>,
    /// A file's name and type.
    file: (String, Option<String>),
}

/// The mail `which` selects, as sent; `None` where the composer refuses the input.
fn compose_mail(which: u8, input: &MailInput) -> Option<Vec<u8>> {
    const DOMAIN: &str = "mail.example.org";
    let composer = Composer::new(&ComposerConfig {
        domain: DOMAIN.into(),
        from_address: format!("support@{DOMAIN}"),
        dkim: None,
        max_attachment_bytes: 16,
    })
    .expect("a valid configuration");
    let date = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000);
    let recipient = Recipient {
        address: "ada@responders.example".into(),
        name: Some(input.name.clone()),
    };
    let earlier = vec![MessageId::derived(DOMAIN, "1")];
    let message = VisitorMessage {
        body: input.body.clone(),
        html: input.html.clone(),
        // Two sizes: one attached, one over the limit and named with its link.
        file: (which & 4 != 0).then(|| VisitorFile {
            name: input.file.0.clone(),
            mimetype: input.file.1.clone(),
            bytes: vec![b'x'; if which & 8 != 0 { 32 } else { 8 }],
            link: Some("https://switchboard.example/media/abc".into()),
        }),
    };
    let composed = match which % 3 {
        0 => composer.messages(
            &ThreadMail {
                responder: recipient,
                topic: input.topic.clone(),
                pseudonym: input.pseudonym.clone(),
                earlier,
                reply_token: "conv_tok-2".into(),
                messages: vec![message],
                key: None,
            },
            date,
        ),
        1 => composer.answer(
            &AnswerMail {
                initiator: recipient,
                topic: input.topic.clone(),
                subject: Some(input.subject.clone()),
                earlier,
                reply_token: "conv_tok-2".into(),
                messages: vec![message],
                key: Some(input.body.clone()),
            },
            date,
        ),
        _ => composer.offer(
            &OfferMail {
                responder: recipient,
                topic: input.topic.clone(),
                pseudonym: input.pseudonym.clone(),
                language: Some(input.subject.clone()),
                first_message: Some(input.body.clone()),
                summary: input.html.clone(),
                accept_url: "https://switchboard.example/email/accept/abc".into(),
                decline_url: "https://switchboard.example/email/decline/abc".into(),
                reply_token: "offer_tok-1".into(),
                key: None,
            },
            date,
        ),
    };
    composed.ok().map(|c| c.formatted)
}

/// Tags a mail's HTML part may hold: the page around it and what our renderer writes.
const MAIL_TAGS: &[&str] = &[
    "html",
    "head",
    "meta",
    "body",
    "p",
    "div",
    "br",
    "strong",
    "em",
    "u",
    "del",
    "span",
    "code",
    "pre",
    "a",
    "blockquote",
];

/// Panics unless every line of `raw` ends in CRLF, with no CR or LF alone, and none is longer
/// than RFC 5322 allows (998 characters before the CRLF).
pub fn check_wire_lines(raw: &[u8]) {
    for (i, &byte) in raw.iter().enumerate() {
        if byte == b'\r' {
            assert_eq!(raw.get(i + 1), Some(&b'\n'), "a CR alone at {i}");
        }
        if byte == b'\n' {
            assert!(i > 0 && raw[i - 1] == b'\r', "an LF alone at {i}");
        }
    }
    for line in raw.split(|&b| b == b'\n') {
        assert!(line.len() <= 999, "a line of {} bytes", line.len());
    }
}

/// Panics unless `raw` is a mail whose lines end in CRLF within 998 characters, whose parts
/// carry the headers `reference`'s parts carry (the transfer encoding aside, which follows
/// the text) and no others, each once, and whose HTML holds only [`MAIL_TAGS`], with no
/// attribute but a link's `href` (`http`, `https` or `mailto`, as written) and the page's
/// `charset`.
pub fn check_mail(raw: &[u8], reference: &[u8]) {
    check_wire_lines(raw);
    let parser = mail_parser::MessageParser::default();
    let mail = parser.parse(raw).expect("our mail parses");
    let reference = parser.parse(reference).expect("the plain mail parses");
    let names = |part: &mail_parser::MessagePart<'_>| -> Vec<String> {
        let mut names: Vec<String> = part
            .headers
            .iter()
            .map(|h| h.name().to_ascii_lowercase())
            .filter(|n| n != "content-transfer-encoding")
            .collect();
        names.sort();
        names
    };
    assert_eq!(mail.parts.len(), reference.parts.len(), "parts differ");
    for (part, plain) in mail.parts.iter().zip(&reference.parts) {
        assert_eq!(names(part), names(plain), "headers differ");
    }
    let html = mail.body_html(0).expect("an HTML part");
    for (kind, name, attrs) in tags(&html) {
        if kind != TagKind::StartTag {
            continue;
        }
        assert!(MAIL_TAGS.contains(&name.as_str()), "<{name}> in {html}");
        for (attr, value) in &attrs {
            match (name.as_str(), attr.as_str()) {
                ("meta", "charset") => {}
                ("a", "href") => {
                    let value = value.to_ascii_lowercase();
                    assert!(
                        ["http:", "https:", "mailto:"]
                            .iter()
                            .any(|s| value.starts_with(s)),
                        "href {value:?} in {html}"
                    );
                }
                _ => panic!("{attr} on <{name}> in {html}"),
            }
        }
    }
}

/// A target that allows everything, so reading is checked without a platform's limits.
pub const ANYTHING: Target = Target {
    link_schemes: matrix_html::READ_LINK_SCHEMES,
    may_open: |_, _| true,
};

/// Panics unless `html`, read as a client's HTML5 tokenizer reads it, holds only elements of
/// the spec's allow-list, no event handler or style, no image but an `mxc://` one, and links
/// only with the spec's schemes.
pub fn check_matrix_html(html: &str) {
    assert!(
        !html.to_ascii_lowercase().contains("<script"),
        "a script in {html}"
    );
    for (kind, name, attrs) in tags(html) {
        if kind != TagKind::StartTag {
            continue;
        }
        assert!(
            crate::format::sanitise::MATRIX_TAGS.contains(&name.as_str()),
            "<{name}> in {html}"
        );
        for (attr, value) in &attrs {
            assert!(
                !attr.starts_with("on") && attr != "style",
                "{attr} in {html}"
            );
            if name == "img" && attr == "src" {
                assert!(value.starts_with("mxc://"), "img src {value} in {html}");
            }
            if attr == "href" {
                // As written: a client's URL parser skips what comes before a scheme.
                let value = value.to_ascii_lowercase();
                assert!(
                    MATRIX_LINK_SCHEMES
                        .iter()
                        .any(|s| value.starts_with(&format!("{s}:"))),
                    "href {value:?} in {html}"
                );
            }
        }
    }
}

/// Panics unless every tag in `html` (Telegram's HTML subset) is closed in order: Telegram
/// refuses a message whose tags are not.
fn check_balanced(html: &str) {
    let mut open: Vec<String> = Vec::new();
    for (kind, name, _) in tags(html) {
        match kind {
            TagKind::StartTag => open.push(name),
            TagKind::EndTag => {
                let top = open.pop();
                assert_eq!(top.as_deref(), Some(name.as_str()), "</{name}> in {html}");
            }
        }
    }
    assert!(open.is_empty(), "unclosed {open:?} in {html}");
}

/// A tag as a tokenizer reads it: start or end, its name, its (attribute, value) pairs.
pub type Tag = (TagKind, String, Vec<(String, String)>);

/// The tags of `html` as an HTML5 tokenizer (a client's, say) reads them.
pub fn tags(html: &str) -> Vec<Tag> {
    struct Collect(RefCell<Vec<Tag>>);
    impl TokenSink for Collect {
        type Handle = ();
        fn process_token(&self, token: Token, _line: u64) -> TokenSinkResult<()> {
            if let Token::TagToken(tag) = token {
                let attrs = tag
                    .attrs
                    .iter()
                    .map(|a| (a.name.local.to_string(), a.value.to_string()))
                    .collect();
                self.0
                    .borrow_mut()
                    .push((tag.kind, tag.name.to_string(), attrs));
            }
            TokenSinkResult::Continue
        }
    }
    let input = BufferQueue::default();
    input.push_back(StrTendril::from(html));
    let tokenizer = Tokenizer::new(Collect(RefCell::new(Vec::new())), TokenizerOpts::default());
    let _ = tokenizer.feed(&input);
    tokenizer.end();
    tokenizer.sink.0.into_inner()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn panics(f: impl FnOnce() + std::panic::UnwindSafe) -> bool {
        std::panic::catch_unwind(f).is_err()
    }

    /// The checks the targets make do fail on what they are there to catch.
    #[test]
    fn the_checks_catch_what_they_are_for() {
        check_matrix_html(r#"<b>ok</b><a href="https://x">x</a><img src="mxc://s/m">"#);
        for bad in [
            "<script>x</script>",
            r#"<img src="https://tracker.example/x.png">"#,
            r#"<a href="javascript:alert(1)">x</a>"#,
            r#"<b onclick="x">x</b>"#,
            r#"<iframe src="mxc://s/m"></iframe>"#,
            r#"<span style="position:fixed">x</span>"#,
        ] {
            assert!(panics(|| check_matrix_html(bad)), "{bad} passed");
        }
        let plain = |body: &str| {
            compose_mail(
                0,
                &MailInput {
                    topic: "T".into(),
                    pseudonym: "V".into(),
                    name: "N".into(),
                    subject: "S".into(),
                    body: body.into(),
                    html: None,
                    file: (String::new(), None),
                },
            )
            .unwrap()
        };
        let mail = plain("hi");
        check_mail(&mail, &mail);
        let with = |from: &str, to: &str| {
            let text = String::from_utf8(mail.clone()).unwrap();
            assert!(text.contains(from), "{from} not in the mail");
            text.replacen(from, to, 1).into_bytes()
        };
        for bad in [
            with("Subject:", "Bcc: evil@example.org\r\nSubject:"),
            with("\r\nSubject:", "\nSubject:"),
            with("<div>hi", "<div><img src=x>hi"),
            with("<div>hi", "<div><a href=\"javascript:x\">hi</a>"),
            with("<div>hi", "<div onclick=\"x\">hi"),
        ] {
            assert!(panics(|| check_mail(&bad, &mail)), "{bad:?} passed");
        }
        check_balanced("<b>a<i>b</i></b>");
        for bad in ["<b>a", "<b>a<i>b</b></i>", "a</b>"] {
            assert!(panics(|| check_balanced(bad)), "{bad} passed");
        }
    }

    /// Every target runs on empty and on odd input without a finding.
    #[test]
    fn every_target_takes_empty_and_odd_input() {
        for (name, run) in TARGETS {
            for input in [&b""[..], b"\xff\xfe", b"{}", b"<", b"\x00\n<b>"] {
                assert!(!panics(|| run(input)), "{name} fails on {input:?}");
            }
        }
    }
}
