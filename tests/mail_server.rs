//! The test mail server (`scripts/mail.sh`: Dovecot behind an SMTP front, started by
//! `scripts/test.sh`) does what the email connector relies on, spoken to with the connector's
//! own crates: lettre sends over SMTP (with AUTH), async-imap reads over IMAP and is woken by
//! IDLE, mail-parser reads what was fetched. No connector code runs here: these are the
//! protocol facts the connector is built on.
//!
//! Every address is a mailbox on that server and all share one password, so each test uses
//! addresses of its own.

use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use async_imap::{
    extensions::idle::IdleResponse,
    imap_proto::{MailboxDatum, Response},
    types::{Fetch, Flag},
};
use futures_util::TryStreamExt;
use lettre::Message;
use mail_parser::MessageParser;
mod mailbox;
use mailbox::{MailServer, SmtpFault, WAIT, fetch_all, fresh_address};

fn mail(to: &str, message_id: &str, subject: &str, body: &str) -> anyhow::Result<Message> {
    Ok(Message::builder()
        .from("Visitor relay <switchboard@example.test>".parse()?)
        .to(to.parse()?)
        .subject(subject)
        .message_id(Some(format!("<{message_id}>")))
        .body(body.to_owned())?)
}

/// What follows the header block of a raw RFC 5322 message.
fn after_headers(raw: &[u8]) -> &[u8] {
    raw.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map_or(&[][..], |i| &raw[i + 4..])
}

#[tokio::test]
async fn idle_wakes_when_a_mail_arrives_and_the_fetched_mail_parses_intact() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let alice = fresh_address("alice");
    server
        .send_as(
            "switchboard@example.test",
            mail(&alice, "first@switchboard.test", "First", "the first mail")?,
        )
        .await?;

    let mut session = server.login(&alice).await?;
    let caps = session.capabilities().await?;
    for cap in ["IDLE", "MOVE", "UIDPLUS"] {
        ensure!(caps.has_str(cap), "the server does not advertise {cap}");
    }
    let inbox = session.select("INBOX").await?;
    // SMTP answers 250 only once the mailbox server has stored the mail.
    assert_eq!(
        inbox.exists, 1,
        "the first mail is in the inbox when SMTP has accepted it"
    );

    let mut idle = session.idle();
    idle.init().await.context("entering IDLE")?;
    // Sent only now, while the session idles: IDLE has to push it.
    let body = "Hello from a visitor.\nSecond line, with Grüße and 👋.\n";
    let second = mail(&alice, "second@switchboard.test", "Second", body)?;
    let sent_raw = second.formatted();
    let sent_at = Instant::now();
    let (woke, sent) = {
        let (wait, _interrupt) = idle.wait_with_timeout(WAIT);
        tokio::join!(wait, server.send_as("switchboard@example.test", second))
    };
    sent?;
    match woke? {
        IdleResponse::NewData(data) => match data.parsed() {
            Response::MailboxData(MailboxDatum::Exists(n)) => {
                assert_eq!(*n, 2, "IDLE announces the second message")
            }
            other => bail!("IDLE woke with {other:?}, not EXISTS"),
        },
        IdleResponse::Timeout => bail!("IDLE did not announce the new mail within {WAIT:?}"),
        IdleResponse::ManualInterrupt => bail!("IDLE was interrupted"),
    }
    eprintln!(
        "IDLE announced the mail {} ms after the send began",
        sent_at.elapsed().as_millis()
    );
    let mut session = idle.done().await.context("leaving IDLE")?;

    // BODY.PEEK[]: the raw RFC 822 bytes, without marking the mail \Seen.
    let fetched = fetch_all(&mut session, "2", "(UID FLAGS BODY.PEEK[])").await?;
    let [fetch] = fetched.as_slice() else {
        bail!("FETCH 2 gave {} messages", fetched.len())
    };
    ensure!(fetch.uid.is_some(), "FETCH gave no UID");
    ensure!(
        !fetch.flags().any(|f| f == Flag::Seen),
        "BODY.PEEK[] must not set \\Seen"
    );
    let raw = fetch.body().context("FETCH gave no BODY[]")?;
    let parsed = MessageParser::default()
        .parse(raw)
        .context("mail-parser could not read the fetched mail")?;
    assert_eq!(parsed.message_id(), Some("second@switchboard.test"));
    assert_eq!(parsed.subject(), Some("Second"));
    // The server prepends its trace headers (Return-Path, Delivered-To, Received) and leaves
    // the body's bytes alone, but for one CRLF more at the end: lettre ends DATA with
    // "\r\n.\r\n" even after a body that already ends with CRLF (smtplib does not), so the
    // stored mail gains an empty last line. DKIM's body canonicalisation ignores trailing empty
    // lines, so signatures still verify.
    assert_eq!(
        after_headers(raw),
        [after_headers(&sent_raw), b"\r\n"].concat(),
        "the body arrives byte for byte as lettre sent it"
    );
    // As text: CRLF line ends (lettre converts them) and that extra line break at the end.
    let text = parsed.body_text(0).context("no text body")?;
    assert_eq!(text.replace("\r\n", "\n").trim_end(), body.trim_end());

    session.logout().await?;
    Ok(())
}

#[tokio::test]
async fn flags_and_keywords_persist_across_connections_and_move_keeps_them() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let bob = fresh_address("bob");
    server
        .send_as(
            "switchboard@example.test",
            mail(
                &bob,
                "flagged@switchboard.test",
                "Flag me",
                "a reply to relay",
            )?,
        )
        .await?;

    let mut session = server.login(&bob).await?;
    let inbox = session.select("INBOX").await?;
    ensure!(
        inbox.permanent_flags.contains(&Flag::MayCreate),
        "the server does not let clients create keywords (no \\* in PERMANENTFLAGS)"
    );
    let fetched = fetch_all(&mut session, "1", "(UID)").await?;
    let uid = fetched
        .first()
        .and_then(|f| f.uid)
        .context("no UID for message 1")?;
    let _: Vec<Fetch> = session
        .uid_store(uid.to_string(), "+FLAGS (\\Seen $SwitchboardRelayed)")
        .await?
        .try_collect()
        .await?;
    session.logout().await?;

    let flags_of = |f: &Fetch| f.flags().map(|f| format!("{f:?}")).collect::<Vec<_>>();
    let mut session = server.login(&bob).await?;
    session.select("INBOX").await?;
    let fetched: Vec<Fetch> = session
        .uid_fetch(uid.to_string(), "FLAGS")
        .await?
        .try_collect()
        .await?;
    let fetch = fetched.first().context("the flagged mail is gone")?;
    let flags = flags_of(fetch);
    ensure!(
        fetch.flags().any(|f| f == Flag::Seen),
        "\\Seen was not kept: {flags:?}"
    );
    ensure!(
        fetch
            .flags()
            .any(|f| f == Flag::Custom("$SwitchboardRelayed".into())),
        "the keyword was not kept: {flags:?}"
    );

    // A handled mail moved out of the inbox keeps its flags.
    session.create("Relayed").await?;
    session.uid_mv(uid.to_string(), "Relayed").await?;
    let inbox = session.select("INBOX").await?;
    assert_eq!(inbox.exists, 0, "MOVE leaves nothing behind in the inbox");
    let relayed = session.select("Relayed").await?;
    assert_eq!(relayed.exists, 1);
    let fetched = fetch_all(&mut session, "1", "(FLAGS BODY.PEEK[HEADER])").await?;
    let fetch = fetched
        .first()
        .context("the moved mail is not in Relayed")?;
    ensure!(
        fetch
            .flags()
            .any(|f| f == Flag::Custom("$SwitchboardRelayed".into())),
        "MOVE dropped the keyword: {:?}",
        flags_of(fetch)
    );
    let header = fetch.header().context("no header fetched")?;
    ensure!(
        String::from_utf8_lossy(header).contains("<flagged@switchboard.test>"),
        "a different mail was moved"
    );
    session.logout().await?;
    Ok(())
}

#[tokio::test]
async fn the_same_mail_sent_twice_arrives_twice() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let carol = fresh_address("carol");
    for _ in 0..2 {
        server
            .send_as(
                "switchboard@example.test",
                mail(&carol, "twice@switchboard.test", "Twice", "the same mail")?,
            )
            .await?;
    }

    let mut session = server.login(&carol).await?;
    let inbox = session.select("INBOX").await?;
    assert_eq!(
        inbox.exists, 2,
        "the server keeps both copies: deduplicating is the connector's job"
    );
    let fetched = fetch_all(&mut session, "1:2", "(UID BODY.PEEK[])").await?;
    ensure!(
        fetched.len() == 2,
        "FETCH 1:2 gave {} messages",
        fetched.len()
    );
    let mut uids = Vec::new();
    for fetch in &fetched {
        let parsed = MessageParser::default()
            .parse(fetch.body().context("no BODY[]")?)
            .context("unreadable mail")?;
        assert_eq!(parsed.message_id(), Some("twice@switchboard.test"));
        uids.push(fetch.uid.context("no UID")?);
    }
    assert_ne!(uids[0], uids[1], "each copy has its own UID");
    session.logout().await?;
    Ok(())
}

/// A mail from `from` to `to` whose Message-ID is `<id@switchboard.test>`; its envelope sender
/// is `from`, which is what the SMTP front's faults are aimed at.
fn mail_from(from: &str, to: &str, id: &str) -> anyhow::Result<Message> {
    Ok(Message::builder()
        .from(from.parse()?)
        .to(to.parse()?)
        .subject(id)
        .message_id(Some(format!("<{id}@switchboard.test>")))
        .body(format!("mail {id}"))?)
}

/// The Message-IDs in `user`'s INBOX, in delivery order.
async fn delivered(server: &MailServer, user: &str) -> anyhow::Result<Vec<String>> {
    let mut session = server.login(user).await?;
    let inbox = session.select("INBOX").await?;
    let mut ids = Vec::new();
    if inbox.exists > 0 {
        for fetch in fetch_all(&mut session, "1:*", "(BODY.PEEK[])").await? {
            let parsed = MessageParser::default()
                .parse(fetch.body().context("no BODY[]")?)
                .context("unreadable mail")?;
            ids.push(parsed.message_id().unwrap_or_default().to_owned());
        }
    }
    session.logout().await?;
    Ok(ids)
}

/// The SMTP front's faults, which the crash bursts play on Switchboard's mail (`tests/chaos`):
/// each answers as it says, delivers nothing, is played once, in the order queued, and only on
/// mail from the sender it names.
#[tokio::test]
async fn smtp_faults_refuse_or_drop_only_their_senders_next_mail() -> anyhow::Result<()> {
    use lettre::transport::smtp::Error as SmtpError;
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let (victim, bystander, to) = (
        fresh_address("faulted"),
        fresh_address("bystander"),
        fresh_address("faultsink"),
    );
    server.fail_next(&victim, SmtpFault::TryLater)?;
    server.fail_next(&victim, SmtpFault::Drop)?;

    server
        .send_as(&bystander, mail_from(&bystander, &to, "b1")?)
        .await
        .context("another sender's mail is not touched")?;
    assert_eq!(server.faults_pending(&victim)?, 2);

    let refused = server
        .send_as(&victim, mail_from(&victim, &to, "v1")?)
        .await
        .expect_err("the first fault refuses the mail");
    let refused = refused
        .downcast_ref::<SmtpError>()
        .context("not an SMTP error")?;
    assert!(refused.is_transient(), "451 is try-later: {refused}");
    assert_eq!(
        refused.status().map(|c| c.to_string()),
        Some("451".to_owned())
    );

    let dropped = server
        .send_as(&victim, mail_from(&victim, &to, "v2")?)
        .await
        .expect_err("the second fault drops the connection");
    let dropped = dropped
        .downcast_ref::<SmtpError>()
        .context("not an SMTP error")?;
    assert!(
        dropped.status().is_none() && !dropped.is_client(),
        "no answer at all, not a refusal: {dropped:?}"
    );
    assert_eq!(
        server.faults_pending(&victim)?,
        0,
        "each fault is played once"
    );

    server
        .send_as(&victim, mail_from(&victim, &to, "v3")?)
        .await
        .context("with its faults played the sender's mail goes through")?;
    assert_eq!(
        delivered(&server, &to).await?,
        ["b1@switchboard.test", "v3@switchboard.test"],
        "neither faulted mail was delivered"
    );
    Ok(())
}

/// A hanging answer: delivered once the hang is over if the client still waits, never if it
/// gave up first (as a Telegram call left hanging is never carried out).
#[tokio::test]
async fn an_smtp_hang_delivers_late_or_not_at_all_if_the_client_gave_up() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let (victim, to) = (fresh_address("hung"), fresh_address("hungsink"));
    let hang = Duration::from_secs(2);

    server.fail_next(&victim, SmtpFault::Hang(hang))?;
    let asked = Instant::now();
    server
        .send_as(&victim, mail_from(&victim, &to, "waited")?)
        .await
        .context("a client that waits out the hang gets its 250")?;
    assert!(
        asked.elapsed() >= hang,
        "answered after {:?}, before the hang was over",
        asked.elapsed()
    );

    server.fail_next(&victim, SmtpFault::Hang(hang))?;
    server
        .send_within(
            &victim,
            mail_from(&victim, &to, "gave-up")?,
            Duration::from_millis(500),
        )
        .await
        .expect_err("the client gives up before the hang is over");
    tokio::time::sleep(hang + Duration::from_secs(1)).await;
    assert_eq!(
        delivered(&server, &to).await?,
        ["waited@switchboard.test"],
        "the mail whose client gave up was not delivered"
    );
    Ok(())
}
