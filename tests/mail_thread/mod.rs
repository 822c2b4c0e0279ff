//! A test's mail setup as the end-to-end tests use it: Switchboard's `[email]` section on the
//! test mail server (`scripts/mail.sh`), reading a person's mailbox, and replying as a mail
//! client does.
//!
//! Switchboard's mail domain in each test is `<fresh>.catchall.test`: the test mail server
//! delivers every address there (`reply+TOKEN@`, `bounce+ID@`, `support@`) to `inbox@` that
//! domain, the mailbox Switchboard reads, as an operator's catch-all alias would.

#![allow(dead_code)]

use anyhow::Context;

use crate::common::{Slot, wait_for};
use crate::mailbox::{MailServer, fetch_all, fresh};
use lettre::message::{Mailbox, header::ContentType};
use mail_parser::{HeaderValue, MessageParser};

/// One test's mail setup: the server, and Switchboard's domain on it.
pub struct Mail {
    pub server: MailServer,
    pub domain: String,
}

impl Mail {
    pub fn new(name: &str) -> Option<Self> {
        Some(Mail {
            server: MailServer::from_env()?,
            domain: format!("{}.catchall.test", fresh(name)),
        })
    }

    /// The `[visitors]` and `[email]` sections for Switchboard at `slot`.
    pub fn section(&self, slot: &Slot, batch_window_secs: u64) -> String {
        format!(
            "[visitors]\npublic_url = \"http://{listen}\"\n\n{email}",
            listen = slot.listen,
            email = self.email_section(batch_window_secs),
        )
    }

    /// The `[email]` sections alone, for a test that writes its own `[visitors]` (which
    /// needs a `public_url`: offers link to it).
    pub fn email_section(&self, batch_window_secs: u64) -> String {
        format!(
            "[email]\ndomain = {domain:?}\nfrom_address = \"support@{domain}\"\n\
             batch_window_secs = {batch_window_secs}\n\n\
             [email.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"none\"\n\n\
             [email.imap]\nhost = \"127.0.0.1\"\nport = {imap}\nsecurity = \"none\"\n\
             username = \"inbox@{domain}\"\npassword = {password:?}\n\n\
             [email.authentication]\nnameservers = [{dns:?}]\n\n",
            domain = self.domain,
            smtp = self.server.smtp_port,
            imap = self.server.imap_port,
            password = self.server.password,
            dns = std::env::var("SWITCHBOARD_TEST_DNS")
                .expect("SWITCHBOARD_TEST_DNS: scripts/test.sh starts the test DNS server"),
        )
    }

    /// Every mail in `user`'s INBOX, raw, oldest first.
    pub async fn inbox(&self, user: &str) -> anyhow::Result<Vec<Vec<u8>>> {
        let mut session = self.server.login(user).await?;
        let selected = session.select("INBOX").await?;
        let mails = if selected.exists == 0 {
            Vec::new()
        } else {
            fetch_all(&mut session, "1:*", "BODY.PEEK[]")
                .await?
                .iter()
                .filter_map(|f| f.body().map(<[u8]>::to_vec))
                .collect()
        };
        session.logout().await.ok();
        Ok(mails)
    }

    /// Waits until `user`'s INBOX holds a mail for which `pred` holds; returns it, raw.
    pub async fn wait_mail(
        &self,
        user: &str,
        what: &str,
        pred: impl Fn(&Received) -> bool,
    ) -> anyhow::Result<Received> {
        wait_for(what, || async {
            Ok(self
                .inbox(user)
                .await?
                .into_iter()
                .map(Received::new)
                .find(|m| pred(m)))
        })
        .await
    }

    /// Sends a reply from `from` to `to`, in answer to `parent` (its Message-ID in
    /// `In-Reply-To` / `References`, as mail clients write them), with `text` as its body.
    pub async fn reply(
        &self,
        from: &str,
        to: &str,
        parent: Option<&Received>,
        text: &str,
    ) -> anyhow::Result<String> {
        self.write(from, to, "Re: your conversation", parent, text)
            .await
    }

    /// Sends a mail from `from` to `to` titled `subject`, in answer to `parent` if given;
    /// returns its Message-ID (with angle brackets).
    pub async fn write(
        &self,
        from: &str,
        to: &str,
        subject: &str,
        parent: Option<&Received>,
        text: &str,
    ) -> anyhow::Result<String> {
        let id = format!("<{}@responder.example.test>", fresh("reply"));
        let mut builder = lettre::Message::builder()
            .from(from.parse::<Mailbox>()?)
            .to(to.parse::<Mailbox>()?)
            .subject(subject)
            .message_id(Some(id.clone()));
        if let Some(parent) = parent {
            builder = builder
                .in_reply_to(parent.message_id.clone())
                .references(parent.message_id.clone());
        }
        let mail = builder
            .header(ContentType::TEXT_PLAIN)
            .body(text.to_owned())?;
        self.server.send_as(from, mail).await?;
        Ok(id)
    }
}

impl Mail {
    /// Reports `sent` (a mail of Switchboard's to `recipient`) as undeliverable for good: a
    /// delivery status notification (RFC 3464) to its return path, as Postfix would send
    /// one from a later hop.
    pub async fn bounce(&self, sent: &Received, recipient: &str) -> anyhow::Result<()> {
        let return_path = sent
            .header_block()
            .lines()
            .find_map(|l| l.strip_prefix("Return-Path: "))
            .map(|l| l.trim().trim_matches(['<', '>']).to_owned())
            .context("Return-Path")?;
        anyhow::ensure!(return_path.starts_with("bounce+"), "{return_path}");
        let report = format!(
            "From: MAILER-DAEMON@mx.example.test\r\nTo: {return_path}\r\n\
             Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <{}@mx.example.test>\r\n\
             Auto-Submitted: auto-replied\r\nMIME-Version: 1.0\r\n\
             Content-Type: multipart/report; report-type=delivery-status; boundary=\"b1\"\r\n\r\n\
             --b1\r\nContent-Type: text/plain\r\n\r\nYour message could not be delivered.\r\n\r\n\
             --b1\r\nContent-Type: message/delivery-status\r\n\r\nReporting-MTA: dns; mx.example.test\r\n\r\n\
             Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n\
             Diagnostic-Code: smtp; 550 5.1.1 mailbox unavailable\r\n\r\n--b1--\r\n",
            fresh("dsn")
        );
        send_raw(&self.server, "", &return_path, report.as_bytes()).await
    }
}

/// Sends raw bytes over SMTP with the given envelope (a null sender for a bounce).
pub async fn send_raw(
    server: &MailServer,
    from: &str,
    to: &str,
    bytes: &[u8],
) -> anyhow::Result<()> {
    use lettre::AsyncTransport;
    let smtp = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::builder_dangerous("127.0.0.1")
        .port(server.smtp_port)
        .build();
    let from = if from.is_empty() {
        None
    } else {
        Some(from.parse()?)
    };
    let envelope = lettre::address::Envelope::new(from, vec![to.parse()?])?;
    smtp.send_raw(&envelope, bytes).await?;
    Ok(())
}

/// A mail as a responder's client sees it.
#[derive(Clone, Debug)]
pub struct Received {
    pub raw: Vec<u8>,
    pub message_id: String,
    pub subject: String,
    pub reply_to: String,
    pub from: String,
    pub text: String,
    pub in_reply_to: Vec<String>,
}

impl Received {
    pub fn new(raw: Vec<u8>) -> Self {
        let parsed = MessageParser::default().parse(&raw).expect("a mail");
        let first = |v: Option<&mail_parser::Address<'_>>| {
            v.and_then(|a| a.first())
                .and_then(|a| a.address())
                .unwrap_or_default()
                .to_owned()
        };
        let in_reply_to = match parsed.in_reply_to() {
            HeaderValue::Text(t) => vec![t.to_string()],
            HeaderValue::TextList(l) => l.iter().map(|t| t.to_string()).collect(),
            _ => Vec::new(),
        };
        Received {
            message_id: format!("<{}>", parsed.message_id().unwrap_or_default()),
            subject: parsed.subject().unwrap_or_default().to_owned(),
            reply_to: first(parsed.reply_to()),
            from: first(parsed.from()),
            text: parsed.body_text(0).unwrap_or_default().into_owned(),
            in_reply_to,
            raw,
        }
    }

    pub fn header_block(&self) -> String {
        let raw = String::from_utf8_lossy(&self.raw);
        raw.split("\r\n\r\n").next().unwrap_or_default().to_owned()
    }

    /// The Accept or Decline link (`label`) of an offer.
    pub fn link(&self, label: &str) -> Option<String> {
        let at = self.text.find(&format!("{label}:"))?;
        let rest = &self.text[at..];
        let start = rest.find("http")?;
        let url: String = rest[start..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '>')
            .collect();
        Some(url)
    }
}
