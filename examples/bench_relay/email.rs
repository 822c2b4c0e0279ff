//! The email paths: a responder with a mailbox on the test mail server (`scripts/mail.sh`:
//! aiosmtpd in front of Dovecot) who takes a conversation by replying to its offer, and the
//! latency of each direction.
//!
//! Switchboard's mail domain is `<fresh>.catchall.test`: the test server delivers every
//! address there (`reply+TOKEN@`, `support@`) to `inbox@` that domain, which Switchboard reads
//! with IMAP IDLE, as an operator's catch-all alias would. What reaches the responder is
//! watched the same way: an IMAP session of theirs idles on their INBOX, and a sample ends
//! when the server announces the new mail (`* n EXISTS`), not by polling.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_imap::{Session, extensions::idle::IdleResponse, types::UnsolicitedResponse};
use lettre::message::{Mailbox, header::ContentType};
use mail_parser::MessageParser;
use tokio::net::TcpStream;

use crate::common::*;
use crate::mailbox::{MailServer, fetch_all, fresh, fresh_address};
use crate::paths::Bench;
use crate::report::{LatencyTarget, Row, ViaMailTarget, ms, progress};

/// Samples of one path are spaced this much: the mail server and Switchboard's IMAP reader
/// settle between them, and these are latencies, not a throughput test.
const EMAIL_SPACING: Duration = Duration::from_millis(300);
/// How long a mail may take to be announced before the benchmark gives up.
const MAIL_WAIT: Duration = Duration::from_secs(30);

/// The mail server and the responder's address on it, made before Switchboard starts (its
/// configuration names them).
pub struct EmailSide {
    pub server: MailServer,
    /// Switchboard's mail domain.
    pub domain: String,
    /// The responder's address (`emma`).
    pub emma: String,
}

impl EmailSide {
    pub fn start() -> anyhow::Result<Self> {
        let server = MailServer::from_env()
            .context("no test mail server: the benchmark runs inside scripts/bench.sh")?;
        Ok(Self {
            server,
            domain: format!("{}.catchall.test", fresh("bench")),
            emma: fresh_address("emma"),
        })
    }

    /// The `[email]` sections of Switchboard's configuration. Email also needs
    /// `visitors.public_url` (the offer's Accept and Decline links), set with the rest of
    /// `[visitors]` in `paths.rs`. `batch_window_secs = 0`: each visitor line goes out as
    /// its own mail at once, not held to be batched with the next.
    pub fn section(&self) -> anyhow::Result<String> {
        let dns = std::env::var("SWITCHBOARD_TEST_DNS")
            .context("SWITCHBOARD_TEST_DNS: scripts/test.sh starts the test DNS server")?;
        Ok(format!(
            "[email]\ndomain = {domain:?}\nfrom_address = \"support@{domain}\"\n\
             batch_window_secs = 0\n\n\
             [email.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"none\"\n\n\
             [email.imap]\nhost = \"127.0.0.1\"\nport = {imap}\nsecurity = \"none\"\n\
             username = \"inbox@{domain}\"\npassword = {password:?}\n\n\
             [email.authentication]\nnameservers = [{dns:?}]\n\n",
            domain = self.domain,
            smtp = self.server.smtp_port,
            imap = self.server.imap_port,
            password = self.server.password,
        ))
    }

    /// Sends a reply from Emma to `parent`'s Reply-To, threaded under it as mail clients do.
    async fn reply(&self, parent: &Received, text: &str) -> anyhow::Result<()> {
        let mail = lettre::Message::builder()
            .from(self.emma.parse::<Mailbox>()?)
            .to(parent.reply_to.parse::<Mailbox>()?)
            .subject("Re: your conversation")
            .message_id(Some(format!("<{}@responder.example.test>", fresh("reply"))))
            .in_reply_to(parent.message_id.clone())
            .references(parent.message_id.clone())
            .header(ContentType::TEXT_PLAIN)
            .body(text.to_owned())?;
        self.server.send_as(&self.emma, mail).await
    }
}

/// What the benchmark reads of a mail Emma received.
struct Received {
    message_id: String,
    reply_to: String,
    text: String,
}

impl Received {
    fn parse(raw: &[u8]) -> anyhow::Result<Self> {
        let m = MessageParser::default()
            .parse(raw)
            .context("a mail that does not parse")?;
        Ok(Self {
            message_id: format!("<{}>", m.message_id().unwrap_or_default()),
            reply_to: m
                .reply_to()
                .and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_owned(),
            text: m.body_text(0).unwrap_or_default().into_owned(),
        })
    }
}

/// Emma's INBOX, watched with IMAP IDLE on a session of her own.
struct Inbox {
    /// `None` only while a wait has it in IDLE.
    session: Option<Session<TcpStream>>,
    /// Messages in the INBOX already looked at.
    seen: u32,
}

impl Inbox {
    async fn open(server: &MailServer, user: &str) -> anyhow::Result<Self> {
        let mut session = server.login(user).await?;
        let seen = session.select("INBOX").await?.exists;
        drain(&session);
        Ok(Self {
            session: Some(session),
            seen,
        })
    }

    /// Enters IDLE, then runs `send`, and waits until the server announces a new mail whose
    /// text contains `needle`. Returns the milliseconds from just before `send` to that
    /// announcement (the fetch that checks the mail comes after and is not counted), and the
    /// mail. IDLE is entered before `send` starts, so no arrival can slip in unannounced.
    async fn time_arrival(
        &mut self,
        send: impl Future<Output = anyhow::Result<String>>,
        needle: &str,
    ) -> anyhow::Result<(f64, Received)> {
        let deadline = Instant::now() + MAIL_WAIT;
        let mut send = Some(send);
        let mut started = Instant::now();
        loop {
            let session = self.session.take().context("an earlier wait failed")?;
            // A mail that arrived after the last SELECT was announced while the commands since
            // ran, into this queue, and would not be announced again in IDLE.
            let queue = session.unsolicited_responses.clone();
            let mut idle = session.idle();
            idle.init().await.context("entering IDLE")?;
            let early = std::iter::from_fn(|| queue.try_recv().ok())
                .any(|r| matches!(r, UnsolicitedResponse::Exists(_)));
            if let Some(send) = send.take() {
                started = Instant::now();
                send.await?;
            }
            let woke = if early {
                None
            } else {
                let (wait, _interrupt) =
                    idle.wait_with_timeout(deadline.saturating_duration_since(Instant::now()));
                Some(wait.await.context("waiting in IDLE")?)
            };
            let at = ms(started);
            let mut session = idle.done().await.context("leaving IDLE")?;
            if let Some(IdleResponse::Timeout | IdleResponse::ManualInterrupt) = woke {
                self.session = Some(session);
                bail!("no mail with {needle:?} announced within {MAIL_WAIT:?}");
            }
            // Selecting again gives the message count however the server worded its news.
            let exists = session.select("INBOX").await?.exists;
            drain(&session);
            let mut found = None;
            if exists > self.seen {
                let set = format!("{}:{exists}", self.seen + 1);
                for fetch in fetch_all(&mut session, &set, "BODY.PEEK[]").await? {
                    let mail = Received::parse(fetch.body().unwrap_or_default())?;
                    if found.is_none() && mail.text.contains(needle) {
                        found = Some(mail);
                    }
                }
                self.seen = exists;
            }
            self.session = Some(session);
            if let Some(mail) = found {
                return Ok((at, mail));
            }
            if Instant::now() >= deadline {
                bail!("no mail with {needle:?} within {MAIL_WAIT:?}");
            }
        }
    }
}

/// Forgets what the server announced before the SELECT just made: that count covers it.
fn drain(session: &Session<TcpStream>) {
    while session.unsolicited_responses.try_recv().is_ok() {}
}

pub struct EmailPaths {
    /// The test mail server's own hop, no Switchboard anywhere: what the email paths' target
    /// allows for it (`ViaMailTarget`).
    pub floor: Row,
    pub offer: Row,
    pub to_email: Row,
    pub from_email: Row,
}

impl EmailPaths {
    /// The report's lines: the mail server's floor, then each path judged against it and the
    /// homeserver's floor of its direction. An email path crosses the homeserver once and the
    /// mail server once; its samples are paced by the mail server's own hop (each over half a
    /// second after the last arrived, and `EMAIL_SPACING` more), so the floors given here are
    /// the paced ones.
    pub fn report(
        &self,
        towards_responder: &LatencyTarget,
        towards_visitor: &LatencyTarget,
    ) -> Vec<String> {
        let count = |r: &Row| r.samples.len().to_string();
        let via_mail = |homeserver: &LatencyTarget| ViaMailTarget {
            homeserver_p50: homeserver.floor_p50,
            mail_p50: self.floor.p50(),
        };
        vec![
            self.floor
                .markdown(&count(&self.floor), "(floor of the email paths)", ""),
            via_mail(towards_responder).judge(&self.offer, &count(&self.offer)),
            via_mail(towards_responder).judge(&self.to_email, &count(&self.to_email)),
            via_mail(towards_visitor).judge(&self.from_email, &count(&self.from_email)),
        ]
    }
}

/// `samples` first messages → offers, as many visitor messages → mails, and as many replies →
/// the visitor. Capped like the paced paths (`MAX_PACED`): a sample takes a mail server round
/// trip each, and every offer starts a conversation of its own.
pub async fn email(env: &TestEnv, b: &Bench, samples: usize) -> anyhow::Result<EmailPaths> {
    let mail = &b.email;
    let mut inbox = Inbox::open(&mail.server, &mail.emma).await?;

    // Timed the way the email paths are: from just before the send (a fresh SMTP connection
    // each, like Emma's replies) until Emma's IDLE announces the mail.
    progress(&format!(
        "Email: the mail server's floor, {samples} mails straight to Emma"
    ));
    let mut floor = Row::new(
        "Test mail server's floor: mail sent by SMTP → announced by IMAP IDLE (no Switchboard)",
    );
    let sender = fresh_address("floor");
    for i in 0..samples {
        let text = format!("bench mail floor {i}");
        let straight = lettre::Message::builder()
            .from(sender.parse::<Mailbox>()?)
            .to(mail.emma.parse::<Mailbox>()?)
            .subject("floor")
            .header(ContentType::TEXT_PLAIN)
            .body(text.clone())?;
        let send = async {
            mail.server.send_as(&sender, straight).await?;
            Ok(String::new())
        };
        let (took, _) = inbox.time_arrival(send, &text).await?;
        floor.samples.push(took);
        tokio::time::sleep(EMAIL_SPACING).await;
    }

    progress(&format!("Email: {samples} first messages → offers"));
    let mut offer = Row::new(
        "Email responder: visitor's first message → offer announced by IMAP IDLE in their INBOX (sent once the welcome shows)",
    );
    let mut last = None;
    for i in 0..samples {
        let mut v = Visitor::guest(env, &b.base).await?;
        v.start("email").await?;
        v.sync_until("the welcome", |seen| {
            seen.iter()
                .any(|s| s.sender == b.bot_id && s.msgtype == "m.notice")
        })
        .await?;
        let text = format!("bench first message {i}");
        let (took, offered) = inbox.time_arrival(v.send(&text), &text).await?;
        offer.samples.push(took);
        last = Some((offered, v));
        tokio::time::sleep(EMAIL_SPACING).await;
    }
    let (offered, mut visitor) = last.context("samples > 0")?;

    // Emma takes the last conversation by replying to its offer.
    mail.reply(&offered, "bench accept").await?;
    visitor
        .sync_until("Emma's accepting reply", |seen| {
            seen.iter().any(|s| s.body == "bench accept")
        })
        .await?;
    tokio::time::sleep(EMAIL_SPACING).await;

    progress(&format!("Email: {samples} visitor messages → Emma's INBOX"));
    let mut to_email = Row::new(
        "Email responder: visitor's message → mail announced by IMAP IDLE in their INBOX (`batch_window_secs = 0`: not held to batch)",
    );
    for i in 0..samples {
        let text = format!("bench visitor message {i}");
        let (took, _) = inbox.time_arrival(visitor.send(&text), &text).await?;
        to_email.samples.push(took);
        tokio::time::sleep(EMAIL_SPACING).await;
    }

    progress(&format!("Email: {samples} Emma replies → visitor"));
    let mut from_email = Row::new(
        "Email responder: reply sent by SMTP → Switchboard's IMAP IDLE → visitor's `/sync`",
    );
    for i in 0..samples {
        let text = format!("bench responder message {i}");
        let t = Instant::now();
        mail.reply(&offered, &text).await?;
        visitor
            .sync_until("the reply", |seen| seen.iter().any(|s| s.body == text))
            .await?;
        from_email.samples.push(ms(t));
        if i + 1 < samples {
            tokio::time::sleep(EMAIL_SPACING).await;
        }
    }
    if let Some(mut session) = inbox.session.take() {
        session.logout().await.ok();
    }
    Ok(EmailPaths {
        floor,
        offer,
        to_email,
        from_email,
    })
}
