//! The test mail server as the mail tests reach it (`scripts/mail.sh`: Dovecot behind an SMTP
//! front, started by `scripts/test.sh`): where it is, an IMAP session as any user, sending
//! with lettre, and addresses of a test's own. Every address is a mailbox there and all share
//! one password, so each test uses addresses nobody else uses.

#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, ensure};
use async_imap::{Session, types::Fetch};
use futures_util::TryStreamExt;
use lettre::{
    AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor,
    transport::smtp::authentication::Credentials,
};
use tokio::net::TcpStream;

/// How long a mail may take to show up; a server that is slower than this is broken.
pub const WAIT: Duration = Duration::from_secs(10);

pub struct MailServer {
    pub smtp_port: u16,
    pub imap_port: u16,
    pub password: String,
    /// Where it runs (`scripts/mail.sh start DIR`): its `faults/` folder, and the place to
    /// stop it and start it again.
    pub dir: PathBuf,
}

/// A fault the SMTP front plays on the next mail's data from a chosen sender
/// (`scripts/mail.sh`, "Faults"), as real servers misbehave.
#[derive(Clone, Copy, Debug)]
pub enum SmtpFault {
    /// `451 4.7.1`: a server shedding load; nothing delivered.
    TryLater,
    /// The connection closed with no answer; nothing delivered.
    Drop,
    /// No answer for this long, then delivered with a 250; nothing delivered if the client
    /// gives up first.
    Hang(Duration),
}

impl MailServer {
    /// Where scripts/test.sh says the mail server is; `None` when run outside it (the test then
    /// says it skipped). Inside scripts/test.sh (SWITCHBOARD_TEST_DIR set) a missing mail server
    /// is a failure, so a broken setup cannot pass as skipped.
    pub fn from_env() -> Option<Self> {
        let Ok(smtp_port) = std::env::var("SWITCHBOARD_TEST_SMTP_PORT") else {
            assert!(
                std::env::var_os("SWITCHBOARD_TEST_DIR").is_none(),
                "scripts/test.sh ran but SWITCHBOARD_TEST_SMTP_PORT is not set: it started no mail server"
            );
            eprintln!(
                "skipped: SWITCHBOARD_TEST_SMTP_PORT is not set (scripts/test.sh starts the mail \
                 server; or scripts/mail.sh start DIR, then export the variables in DIR/env)"
            );
            return None;
        };
        let var = |name: &str| {
            std::env::var(name)
                .unwrap_or_else(|_| panic!("{name} is not set (see scripts/mail.sh)"))
        };
        let server = Self {
            smtp_port: smtp_port
                .parse()
                .expect("SWITCHBOARD_TEST_SMTP_PORT is a port"),
            imap_port: var("SWITCHBOARD_TEST_IMAP_PORT")
                .parse()
                .expect("SWITCHBOARD_TEST_IMAP_PORT is a port"),
            password: var("SWITCHBOARD_TEST_MAIL_PASSWORD"),
            dir: var("SWITCHBOARD_TEST_MAIL_DIR").into(),
        };
        eprintln!("mail server: {}", var("SWITCHBOARD_TEST_MAIL_SERVER"));
        Some(server)
    }

    /// Sends `mail` over SMTP, authenticated as `user`, without TLS (the test server has none).
    pub async fn send_as(&self, user: &str, mail: Message) -> anyhow::Result<()> {
        self.send_within(user, mail, WAIT).await
    }

    /// [`Self::send_as`], giving up on a server that does not answer within `timeout`.
    pub async fn send_within(
        &self,
        user: &str,
        mail: Message,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let smtp = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous("127.0.0.1")
            .port(self.smtp_port)
            .credentials(Credentials::new(user.into(), self.password.clone()))
            .build();
        // lettre's own timeout bounds only the connecting on tokio, not the wait for an
        // answer; dropping the send closes the connection, as a client that gives up does.
        let reply = tokio::time::timeout(timeout, smtp.send(mail))
            .await
            .map_err(|_| anyhow::anyhow!("no answer within {timeout:?}"))?
            .context("SMTP send")?;
        ensure!(reply.is_positive(), "SMTP refused the mail: {reply:?}");
        Ok(())
    }

    /// Has the SMTP front play `fault` on the next mail whose envelope sender contains
    /// `from`, after any queued before it; mail from other senders is not touched.
    pub fn fail_next(&self, from: &str, fault: SmtpFault) -> anyhow::Result<()> {
        static QUEUED: AtomicU64 = AtomicU64::new(0);
        let (kind, seconds) = match fault {
            SmtpFault::TryLater => ("try_later", 0.0),
            SmtpFault::Drop => ("drop", 0.0),
            SmtpFault::Hang(d) => ("hang", d.as_secs_f64()),
        };
        let spec = serde_json::json!({"kind": kind, "from": from, "seconds": seconds});
        // The front plays them in file-name order: the time first, then this process's count.
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
        let name = format!(
            "{nanos:020}-{}-{:06}",
            std::process::id(),
            QUEUED.fetch_add(1, Ordering::Relaxed)
        );
        let faults = self.dir.join("faults");
        let hidden = faults.join(format!(".{name}"));
        std::fs::write(&hidden, spec.to_string())
            .with_context(|| format!("writing {}", hidden.display()))?;
        std::fs::rename(&hidden, faults.join(name))?;
        Ok(())
    }

    /// Faults queued for a sender like `from` and not played yet.
    pub fn faults_pending(&self, from: &str) -> anyhow::Result<usize> {
        let mut pending = 0;
        for entry in std::fs::read_dir(self.dir.join("faults"))? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let spec: serde_json::Value = match std::fs::read(entry.path()) {
                Ok(bytes) => serde_json::from_slice(&bytes)?,
                // Played between the listing and the read.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e.into()),
            };
            pending += usize::from(spec["from"].as_str() == Some(from));
        }
        Ok(pending)
    }

    /// An IMAP session as `user`.
    pub async fn login(&self, user: &str) -> anyhow::Result<Session<TcpStream>> {
        let tcp = TcpStream::connect(("127.0.0.1", self.imap_port)).await?;
        let mut client = async_imap::Client::new(tcp);
        client
            .read_response()
            .await?
            .context("IMAP server closed before its greeting")?;
        client
            .login(user, &self.password)
            .await
            .map_err(|(e, _)| e)
            .with_context(|| format!("IMAP login as {user}"))
    }
}

/// A name no other test (or earlier run on a kept server) uses: for an address's or a
/// Message-ID's left part.
pub fn fresh(name: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{name}-{}-{nanos}", std::process::id())
}

/// An address of the test mail domain that nobody else uses.
pub fn fresh_address(name: &str) -> String {
    format!("{}@example.test", fresh(name))
}

/// FETCH `query` for `set`, all of it.
pub async fn fetch_all(
    session: &mut Session<TcpStream>,
    set: &str,
    query: &str,
) -> anyhow::Result<Vec<Fetch>> {
    Ok(session.fetch(set, query).await?.try_collect().await?)
}
