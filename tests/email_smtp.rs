//! The email connector's SMTP sender against the real test mail server (`scripts/mail.sh`:
//! Dovecot behind an aiosmtpd front, started by `scripts/test.sh`): mails written by the real
//! `Composer` go out through `Sender` with SMTP AUTH, are read back over IMAP, and arrive byte
//! for byte as composed, threaded, with their reply and bounce addresses, and (when signed)
//! their DKIM signature. A wrong password and a closed port fail the way the caller relies on.

use std::time::{Duration, SystemTime};

use anyhow::{Context, bail, ensure};
use mail_parser::MessageParser;
use switchboard_bridge::connector::ConnectorError;
use switchboard_bridge::connector::email::compose::{
    Composed, Composer, ComposerConfig, DkimAlgorithm, DkimKey, MessageId, OfferMail, Recipient,
    ThreadMail, VisitorMessage,
};
use switchboard_bridge::connector::email::config::{Login, Secret, Security, SmtpSettings};
use switchboard_bridge::connector::email::smtp::Sender;

mod mailbox;
use mailbox::{MailServer, fetch_all, fresh_address};

const DOMAIN: &str = "example.test";
const FROM: &str = "support@example.test";

/// A 2048-bit RSA key made for tests only (`openssl genrsa -traditional 2048`; the same as the
/// composer's DKIM tests).
const RSA_PRIVATE: &str =
    include_str!("../bridge/src/connector/email/compose/testdata/dkim-test-rsa.pem");

impl MailServer {
    /// SMTP settings as `[email.smtp]` would give them: AUTH as our own address, no TLS (the
    /// test server has none).
    fn smtp(&self, password: &str) -> SmtpSettings {
        SmtpSettings {
            host: "127.0.0.1".into(),
            port: self.smtp_port,
            security: Security::None,
            credentials: Some(Login {
                username: FROM.into(),
                password: Secret::new(password),
            }),
        }
    }

    /// Every mail in `user`'s inbox, raw, oldest first.
    async fn inbox(&self, user: &str) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut session = self.login(user).await?;
        let inbox = session.select("INBOX").await?;
        if inbox.exists == 0 {
            session.logout().await?;
            return Ok(Vec::new());
        }
        let fetched =
            fetch_all(&mut session, &format!("1:{}", inbox.exists), "BODY.PEEK[]").await?;
        session.logout().await?;
        fetched
            .iter()
            .map(|f| f.body().map(<[u8]>::to_vec).context("FETCH gave no BODY[]"))
            .collect()
    }
}

fn composer(dkim: bool) -> Composer {
    Composer::new(&ComposerConfig {
        domain: DOMAIN.into(),
        from_address: FROM.into(),
        dkim: dkim.then(|| DkimKey {
            selector: "sb2026".into(),
            domain: DOMAIN.into(),
            algorithm: DkimAlgorithm::Rsa,
            private_key: RSA_PRIVATE.into(),
        }),
        max_attachment_bytes: 1024 * 1024,
    })
    .expect("a valid composer configuration")
}

fn offer(to: &str, token: &str) -> OfferMail {
    OfferMail {
        responder: Recipient {
            address: to.into(),
            name: Some("Alice Responder".into()),
        },
        topic: "General support".into(),
        pseudonym: "Visitor 7F3A".into(),
        language: Some("de".into()),
        first_message: Some("Grüße! Is anyone there? 👋".into()),
        summary: None,
        accept_url: "https://chat.example.test/email/accept/abc".into(),
        decline_url: "https://chat.example.test/email/decline/abc".into(),
        reply_token: token.into(),
        key: None,
    }
}

fn thread(to: &str, token: &str, earlier: Vec<MessageId>) -> ThreadMail {
    ThreadMail {
        responder: Recipient {
            address: to.into(),
            name: Some("Alice Responder".into()),
        },
        topic: "General support".into(),
        pseudonym: "Visitor 7F3A".into(),
        earlier,
        reply_token: token.into(),
        messages: vec![
            VisitorMessage {
                body: "My order has not arrived.".into(),
                ..VisitorMessage::default()
            },
            VisitorMessage {
                // A line starting with a dot: SMTP stuffs it and the server must unstuff it.
                body: "Order number:\n.12345 (yes, with the dot)".into(),
                html: Some("Order number:<br>.12345 <b>(yes, with the dot)</b>".into()),
                file: None,
            },
        ],
        key: None,
    }
}

/// The mail as stored is the mail as composed, preceded only by the trace headers the server
/// adds on delivery and followed at most by the empty line lettre's end of data leaves (see
/// tests/mail_server.rs). Returns the trace headers.
fn arrived_intact<'a>(stored: &'a [u8], composed: &Composed) -> anyhow::Result<&'a str> {
    let sent = composed.formatted.as_slice();
    let at = stored
        .windows(sent.len())
        .position(|window| window == sent)
        .context("the composed bytes are not in the stored mail: something changed them")?;
    let tail = &stored[at + sent.len()..];
    ensure!(
        tail.is_empty() || tail == b"\r\n",
        "the stored mail goes on after the composed one: {:?}",
        String::from_utf8_lossy(tail)
    );
    let trace = std::str::from_utf8(&stored[..at]).context("trace headers are not UTF-8")?;
    for line in trace.split_terminator("\r\n") {
        let added = ["Return-Path:", "Delivered-To:", "Received:"]
            .iter()
            .any(|name| line.starts_with(name))
            || line.starts_with([' ', '\t']);
        ensure!(added, "an unexpected line before the mail: {line:?}");
    }
    Ok(trace)
}

/// What a responder's mail program sees of one mail: the headers the connector relies on.
fn check_headers(
    stored: &[u8],
    composed: &Composed,
    token: &str,
    earlier: &[&MessageId],
) -> anyhow::Result<()> {
    let trace = arrived_intact(stored, composed)?;
    let bounce = composed
        .envelope
        .from()
        .context("the composed mail has no envelope sender")?
        .to_string();
    let id = composed.message_id.as_str();
    let id_local = id
        .trim_start_matches('<')
        .split('@')
        .next()
        .unwrap_or_default();
    assert_eq!(
        bounce,
        format!("bounce+{id_local}@{DOMAIN}"),
        "the envelope sender names the mail"
    );
    ensure!(
        trace.contains(&format!("Return-Path: <{bounce}>\r\n")),
        "the server did not record our envelope sender as Return-Path: {trace:?}"
    );

    let parsed = MessageParser::default()
        .parse(stored)
        .context("mail-parser could not read the stored mail")?;
    assert_eq!(
        parsed.message_id().map(|m| format!("<{m}>")),
        Some(id.to_owned())
    );
    let reply_to = parsed
        .reply_to()
        .and_then(|a| a.first())
        .and_then(|a| a.address())
        .context("no Reply-To")?;
    assert_eq!(reply_to, format!("reply+{token}@{DOMAIN}"));
    let bracketed = |ids: Option<&[std::borrow::Cow<'_, str>]>| -> Vec<String> {
        ids.unwrap_or_default()
            .iter()
            .map(|id| format!("<{id}>"))
            .collect()
    };
    let expected: Vec<String> = earlier.iter().map(|id| id.as_str().to_owned()).collect();
    assert_eq!(
        bracketed(parsed.references().as_text_list()),
        expected,
        "References is the chain of earlier mails"
    );
    assert_eq!(
        bracketed(parsed.in_reply_to().as_text_list()),
        expected.last().cloned().into_iter().collect::<Vec<_>>(),
        "In-Reply-To is the latest earlier mail"
    );
    Ok(())
}

/// An offer and then a two-message follow-up in its thread, composed (signed or not), sent with
/// AUTH, and read back from the responder's inbox.
async fn offer_and_thread_arrive_intact(signed: bool) -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let alice = fresh_address(if signed { "alice-signed" } else { "alice" });
    let composer = composer(signed);
    let sender = Sender::new(&server.smtp(&server.password)).map_err(anyhow::Error::msg)?;
    let now = SystemTime::now();

    let offer = composer.offer(&offer(&alice, "offerTok_1"), now)?;
    sender.send(&offer).await.context("sending the offer")?;
    let follow_up = composer.messages(
        &thread(&alice, "convTok-2", vec![offer.message_id.clone()]),
        now + Duration::from_secs(60),
    )?;
    sender
        .send(&follow_up)
        .await
        .context("sending the thread mail")?;

    // SMTP answers 250 only once Dovecot has stored the mail: no waiting needed.
    let inbox = server.inbox(&alice).await?;
    let [stored_offer, stored_follow_up] = inbox.as_slice() else {
        bail!("expected 2 mails in {alice}'s inbox, found {}", inbox.len())
    };
    check_headers(stored_offer, &offer, "offerTok_1", &[])?;
    check_headers(
        stored_follow_up,
        &follow_up,
        "convTok-2",
        &[&offer.message_id],
    )?;

    let text = MessageParser::default()
        .parse(stored_follow_up.as_slice())
        .and_then(|m| m.body_text(0).map(|t| t.into_owned()))
        .context("no text part in the thread mail")?;
    ensure!(
        text.contains("My order has not arrived.") && text.contains(".12345"),
        "both visitor messages, the dotted line too, are in the text: {text:?}"
    );

    for (stored, composed) in [(stored_offer, &offer), (stored_follow_up, &follow_up)] {
        let header = |raw: &[u8]| -> Option<String> {
            MessageParser::default()
                .parse(raw)?
                .header_raw("DKIM-Signature")
                .map(str::to_owned)
        };
        let stored_signature = header(stored);
        if signed {
            let sent_signature =
                header(&composed.formatted).context("the composer did not sign")?;
            assert_eq!(
                stored_signature.as_deref(),
                Some(sent_signature.as_str()),
                "the DKIM-Signature arrives as it was made (and with it every signed byte, \
                 checked above)"
            );
        } else {
            assert_eq!(stored_signature, None, "no key, no signature");
        }
    }
    Ok(())
}

#[tokio::test]
async fn an_offer_and_its_thread_mail_arrive_byte_for_byte_with_their_threading_and_addresses()
-> anyhow::Result<()> {
    offer_and_thread_arrive_intact(false).await
}

#[tokio::test]
async fn dkim_signed_mails_arrive_with_their_signature_and_every_signed_byte_intact()
-> anyhow::Result<()> {
    offer_and_thread_arrive_intact(true).await
}

#[tokio::test]
async fn a_wrong_password_is_a_permanent_failure_that_does_not_quote_it() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let bob = fresh_address("bob");
    let wrong = format!("not-{}", server.password);
    let sender = Sender::new(&server.smtp(&wrong)).map_err(anyhow::Error::msg)?;
    let mail = composer(false).offer(&offer(&bob, "tok"), SystemTime::now())?;
    match sender.send(&mail).await {
        Err(ConnectorError::Permanent(text)) => {
            ensure!(text.contains("535"), "the server's 535 is named: {text}");
            ensure!(!text.contains(&wrong), "the password is quoted: {text}");
        }
        other => bail!("expected a permanent failure, got {other:?}"),
    }
    assert!(
        server.inbox(&bob).await?.is_empty(),
        "nothing was delivered"
    );
    Ok(())
}

#[tokio::test]
async fn an_unreachable_server_is_a_transient_failure() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    // A port that was free a moment ago: nothing listens there.
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let closed = listener.local_addr()?.port();
    drop(listener);
    let settings = SmtpSettings {
        port: closed,
        ..server.smtp(&server.password)
    };
    let sender = Sender::new(&settings).map_err(anyhow::Error::msg)?;
    let mail = composer(false).offer(&offer(&fresh_address("carol"), "tok"), SystemTime::now())?;
    match sender.send(&mail).await {
        Err(ConnectorError::Transient(text)) => {
            ensure!(text.contains(&format!("127.0.0.1:{closed}")), "{text}");
        }
        other => bail!("expected a transient failure, got {other:?}"),
    }
    Ok(())
}
