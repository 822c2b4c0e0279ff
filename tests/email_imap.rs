//! The email connector's IMAP receive loop (`connector::email::imap::run_mailbox`) against the
//! real test mail server (`scripts/mail.sh`: Dovecot with IDLE behind an SMTP front): every
//! mail is handed over, flagged only once taken, found again after a failure, a restart or a
//! dropped connection, and never handed over twice by one mailbox copy.
//!
//! Mails are sent with lettre over SMTP, as anyone writing to Switchboard would; what the
//! server holds afterwards is read with a separate IMAP session. Each test uses addresses of
//! its own: the tests share the server.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use anyhow::{Context, ensure};
use lettre::Message;
use mail_parser::MessageParser;
use switchboard_bridge::cluster::Term;
use switchboard_bridge::connector::email::imap::{
    HandlerError, ImapConfig, ImapError, ImapTls, RawMail, run_mailbox,
};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{mpsc, watch},
    task::JoinHandle,
};

mod mailbox;
use mailbox::{MailServer, WAIT, fetch_all, fresh, fresh_address};

/// How long a test watches for a second, unwanted handover.
const QUIET: Duration = Duration::from_secs(2);
const DONE: &str = "$SwitchboardRecorded";
const REFUSED: &str = "$SwitchboardRefused";

impl MailServer {
    async fn send(&self, to: &str, message_id: &str) -> anyhow::Result<()> {
        let mail = Message::builder()
            .from("Responder <responder@example.test>".parse()?)
            .to(to.parse()?)
            .subject(format!("About {message_id}"))
            .message_id(Some(format!("<{message_id}>")))
            .body(format!("reply {message_id}\n"))?;
        self.send_as("responder@example.test", mail).await
    }

    /// Like [`Self::send`], with the `Date:` header saying it was written at `written`.
    async fn send_written_at(
        &self,
        to: &str,
        message_id: &str,
        written: std::time::SystemTime,
    ) -> anyhow::Result<()> {
        let mail = Message::builder()
            .from("Responder <responder@example.test>".parse()?)
            .to(to.parse()?)
            .subject(format!("About {message_id}"))
            .message_id(Some(format!("<{message_id}>")))
            .date(written)
            .body(format!("reply {message_id}\n"))?;
        self.send_as("responder@example.test", mail).await
    }

    fn config(&self, address: &str, port: u16) -> ImapConfig {
        let mut config = ImapConfig::new("127.0.0.1", port, ImapTls::None, address, &self.password);
        config.retry_min = Duration::from_millis(100);
        config.command_timeout = WAIT;
        config
    }

    /// Every mail in the mailbox: its Message-ID and its flags, as another client sees them.
    async fn mailbox(&self, address: &str) -> anyhow::Result<Vec<(String, Vec<String>)>> {
        let mut session = self.login(address).await?;
        let inbox = session.select("INBOX").await?;
        let mut mails = Vec::new();
        if inbox.exists > 0 {
            let fetched = fetch_all(&mut session, "1:*", "(FLAGS BODY.PEEK[])").await?;
            for f in &fetched {
                let flags = f.flags().map(|f| format!("{f:?}")).collect();
                mails.push((message_id(f.body().context("no body")?), flags));
            }
        }
        session.logout().await?;
        Ok(mails)
    }
}

fn message_id(raw: &[u8]) -> String {
    MessageParser::default()
        .parse(raw)
        .and_then(|m| m.message_id().map(str::to_owned))
        .unwrap_or_default()
}

fn has(flags: &[String], flag: &str) -> bool {
    flags.iter().any(|f| f.contains(flag))
}

/// What the handler saw: the Message-ID, the UID, and what it answered.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Handed {
    message_id: String,
    uid: u32,
    taken: bool,
}

/// How the test's handler answers a mail.
type Policy = Arc<dyn Fn(&RawMail, &str) -> Result<(), HandlerError> + Send + Sync>;

struct Reader {
    handed: mpsc::UnboundedReceiver<Handed>,
    stop: watch::Sender<bool>,
    task: JoinHandle<Result<(), ImapError>>,
}

impl Reader {
    /// Runs `run_mailbox` in a task of its own, as the connector will (so its future must be
    /// `Send`).
    fn start(config: ImapConfig, policy: Policy) -> Self {
        let (tx, handed) = mpsc::unbounded_channel();
        let (stop, shutdown) = watch::channel(false);
        let handler = move |mail: RawMail| {
            let tx = tx.clone();
            let policy = policy.clone();
            async move {
                let id = message_id(&mail.bytes);
                let answer = policy(&mail, &id);
                let _ = tx.send(Handed {
                    message_id: id,
                    uid: mail.uid,
                    taken: answer.is_ok(),
                });
                answer
            }
        };
        let task = tokio::spawn(run_mailbox(config, handler, Term::until(shutdown)));
        Self { handed, stop, task }
    }

    fn taking_all(config: ImapConfig) -> Self {
        Self::start(config, Arc::new(|_, _| Ok(())))
    }

    async fn next(&mut self) -> anyhow::Result<Handed> {
        tokio::time::timeout(WAIT, self.handed.recv())
            .await
            .context("nothing was handed over in time")?
            .context("the reader stopped")
    }

    /// Asserts nothing more is handed over for a while.
    async fn quiet(&mut self) -> anyhow::Result<()> {
        if let Ok(Some(more)) = tokio::time::timeout(QUIET, self.handed.recv()).await {
            anyhow::bail!("handed over again: {more:?}");
        }
        Ok(())
    }

    /// Asks it to stop; it must return promptly, and cleanly.
    async fn stop(self) -> anyhow::Result<()> {
        self.stop.send(true)?;
        let result = tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .context("the reader did not stop within 5 s of shutdown")??;
        result.context("the reader failed")
    }
}

#[tokio::test]
async fn mails_sent_before_the_loop_starts_are_each_handed_over_once_and_flagged()
-> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("before");
    let ids = [fresh("one") + "@t", fresh("two") + "@t"];
    for id in &ids {
        server.send(&inbox, id).await?;
    }
    // Sent, not yet handed over: neither flag is set.
    for (_, flags) in server.mailbox(&inbox).await? {
        ensure!(!has(&flags, DONE) && !has(&flags, "Seen"), "{flags:?}");
    }

    let mut reader = Reader::taking_all(server.config(&inbox, server.imap_port));
    let got: HashSet<String> = [reader.next().await?, reader.next().await?]
        .into_iter()
        .map(|h| h.message_id)
        .collect();
    assert_eq!(got, ids.iter().cloned().collect());
    reader.quiet().await?;
    reader.stop().await?;

    let mailbox = server.mailbox(&inbox).await?;
    assert_eq!(mailbox.len(), 2);
    for (id, flags) in mailbox {
        ensure!(
            has(&flags, DONE) && has(&flags, "Seen"),
            "{id} handed over but flagged {flags:?}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn a_mail_sent_while_the_loop_idles_is_handed_over_within_seconds() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("idle");
    let mut config = server.config(&inbox, server.imap_port);
    // Far beyond the test's wait: only IDLE can wake the loop in time.
    config.idle_renewal = Duration::from_secs(120);
    let mut reader = Reader::taking_all(config);
    // The first (empty) pass is over and the loop idles.
    tokio::time::sleep(Duration::from_secs(1)).await;

    let id = fresh("live") + "@t";
    let sent = std::time::Instant::now();
    server.send(&inbox, &id).await?;
    let handed = tokio::time::timeout(Duration::from_secs(5), reader.handed.recv())
        .await
        .context("IDLE did not bring the mail within 5 s")?
        .context("the reader stopped")?;
    assert_eq!(handed.message_id, id);
    eprintln!(
        "handed over {} ms after the send began",
        sent.elapsed().as_millis()
    );
    reader.quiet().await?;
    reader.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_mail_the_handler_fails_once_is_handed_over_again_and_flagged_only_once_taken()
-> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("retry");
    let id = fresh("flaky") + "@t";
    server.send(&inbox, &id).await?;

    let failed = Arc::new(Mutex::new(false));
    let policy: Policy = Arc::new(move |_, _| {
        let mut failed = failed.lock().unwrap();
        if *failed {
            Ok(())
        } else {
            *failed = true;
            Err(HandlerError::Transient("the store is down".into()))
        }
    });
    let mut reader = Reader::start(server.config(&inbox, server.imap_port), policy);
    let first = reader.next().await?;
    assert_eq!(
        (first.message_id.as_str(), first.taken),
        (id.as_str(), false)
    );
    let second = reader.next().await?;
    assert_eq!(
        (second.message_id.as_str(), second.taken),
        (id.as_str(), true)
    );
    assert_eq!(first.uid, second.uid, "the same copy came again");
    reader.quiet().await?;
    reader.stop().await?;
    let mailbox = server.mailbox(&inbox).await?;
    ensure!(has(&mailbox[0].1, DONE), "{mailbox:?}");
    Ok(())
}

#[tokio::test]
async fn the_mail_is_not_flagged_while_the_handler_is_still_taking_it() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("during");
    server.send(&inbox, &(fresh("m") + "@t")).await?;

    // The handler looks at the server from another connection before it answers.
    let (stop, shutdown) = watch::channel(false);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let handler = {
        let seen = seen.clone();
        let server = &server;
        let inbox = inbox.as_str();
        move |_mail: RawMail| {
            let seen = seen.clone();
            async move {
                let flags = server.mailbox(inbox).await.expect("mailbox readable");
                seen.lock().unwrap().push(flags[0].1.clone());
                Ok(())
            }
        }
    };
    let run = run_mailbox(
        server.config(&inbox, server.imap_port),
        handler,
        Term::until(shutdown),
    );
    let stopper = async {
        for _ in 0..100 {
            if !seen.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        stop.send(true).unwrap();
    };
    let (result, ()) = tokio::join!(run, stopper);
    result?;
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1, "handed over once");
    ensure!(
        !has(&seen[0], DONE) && !has(&seen[0], "Seen"),
        "flagged before the handler answered: {:?}",
        seen[0]
    );
    let mailbox = server.mailbox(&inbox).await?;
    ensure!(has(&mailbox[0].1, DONE), "{mailbox:?}");
    Ok(())
}

#[tokio::test]
async fn a_mail_refused_for_good_is_flagged_refused_and_does_not_hold_up_the_next()
-> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("refused");
    let bad = fresh("bad") + "@t";
    let good = fresh("good") + "@t";
    server.send(&inbox, &bad).await?;
    server.send(&inbox, &good).await?;

    let refuse = bad.clone();
    let policy: Policy = Arc::new(move |_, id| {
        if id == refuse {
            Err(HandlerError::Permanent("unreadable".into()))
        } else {
            Ok(())
        }
    });
    let mut reader = Reader::start(server.config(&inbox, server.imap_port), policy);
    let got = [reader.next().await?, reader.next().await?];
    assert_eq!(
        got.iter()
            .map(|h| (h.message_id.as_str(), h.taken))
            .collect::<Vec<_>>(),
        [(bad.as_str(), false), (good.as_str(), true)]
    );
    reader.quiet().await?;
    reader.stop().await?;
    for (id, flags) in server.mailbox(&inbox).await? {
        if id == bad {
            ensure!(
                has(&flags, REFUSED) && !has(&flags, DONE) && !has(&flags, "Seen"),
                "refused mail flagged {flags:?}"
            );
        } else {
            ensure!(has(&flags, DONE) && !has(&flags, REFUSED), "{flags:?}");
        }
    }
    Ok(())
}

#[tokio::test]
async fn a_mail_that_keeps_failing_does_not_hold_up_the_mails_after_it() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("poison");
    let poison = fresh("poison") + "@t";
    server.send(&inbox, &poison).await?;
    let after = [fresh("after1") + "@t", fresh("after2") + "@t"];
    for id in &after {
        server.send(&inbox, id).await?;
    }

    let refuse = poison.clone();
    let policy: Policy = Arc::new(move |_, id| {
        if id == refuse {
            Err(HandlerError::Transient("always fails".into()))
        } else {
            Ok(())
        }
    });
    let mut config = server.config(&inbox, server.imap_port);
    config.failures_before_last = 3;
    let mut reader = Reader::start(config, policy);
    let mut taken = HashSet::new();
    let mut poison_tries = 0;
    while taken.len() < 2 {
        let h = reader.next().await?;
        if h.taken {
            taken.insert(h.message_id);
        } else {
            assert_eq!(h.message_id, poison);
            poison_tries += 1;
        }
    }
    assert_eq!(taken, after.iter().cloned().collect());
    assert_eq!(
        poison_tries, 3,
        "retried first (the mails after it keep their order behind it) until it failed \
         failures_before_last times, then moved behind them"
    );
    // It keeps being tried, never flagged.
    let again = reader.next().await?;
    assert_eq!(
        (again.message_id.as_str(), again.taken),
        (poison.as_str(), false)
    );
    reader.stop().await?;
    for (id, flags) in server.mailbox(&inbox).await? {
        ensure!(
            has(&flags, DONE) != (id == poison),
            "{id} flagged {flags:?}"
        );
    }
    Ok(())
}

/// A mail that failed for a while (the store away for a moment) keeps its place: the mails
/// after it are handed over only once it is taken, so a responder's mails reach the
/// conversation in the order they were sent. Found by the crash bursts with PostgreSQL killed.
#[tokio::test]
async fn a_mail_that_failed_for_a_while_is_still_taken_before_the_mails_after_it()
-> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("order");
    let ids = [
        fresh("first") + "@t",
        fresh("second") + "@t",
        fresh("third") + "@t",
    ];
    for id in &ids {
        server.send(&inbox, id).await?;
    }
    let first = ids[0].clone();
    let failures_left = Arc::new(std::sync::atomic::AtomicU32::new(2));
    let policy: Policy = Arc::new(move |_, id| {
        use std::sync::atomic::Ordering::SeqCst;
        if id == first
            && failures_left
                .fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1))
                .is_ok()
        {
            Err(HandlerError::Transient("store away".into()))
        } else {
            Ok(())
        }
    });
    let mut reader = Reader::start(server.config(&inbox, server.imap_port), policy);
    let mut seen = Vec::new();
    while seen.iter().filter(|(_, taken)| *taken).count() < 3 {
        let h = reader.next().await?;
        seen.push((h.message_id, h.taken));
    }
    reader.stop().await?;
    let expected = vec![
        (ids[0].clone(), false),
        (ids[0].clone(), false),
        (ids[0].clone(), true),
        (ids[1].clone(), true),
        (ids[2].clone(), true),
    ];
    assert_eq!(seen, expected, "handed over in arrival order");
    Ok(())
}

#[tokio::test]
async fn a_senders_mails_are_handed_over_in_the_order_they_were_written() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("written");
    let now = std::time::SystemTime::now();
    let (first, second) = (fresh("first") + "@t", fresh("second") + "@t");
    // The mailbox shows the one written second first (the lower UID), as Dovecot did in a
    // crash burst.
    server
        .send_written_at(&inbox, &second, now + Duration::from_secs(2))
        .await?;
    server.send_written_at(&inbox, &first, now).await?;
    let mut reader = Reader::taking_all(server.config(&inbox, server.imap_port));
    let (a, b) = (reader.next().await?, reader.next().await?);
    reader.stop().await?;
    assert!(b.uid < a.uid, "the mailbox had them the other way round");
    assert_eq!(
        [a.message_id, b.message_id],
        [first, second],
        "handed over in the order written"
    );
    Ok(())
}

#[tokio::test]
async fn a_new_loop_after_shutdown_hands_over_nothing_already_taken() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("restart");
    for name in ["a", "b"] {
        server.send(&inbox, &(fresh(name) + "@t")).await?;
    }
    let mut reader = Reader::taking_all(server.config(&inbox, server.imap_port));
    reader.next().await?;
    reader.next().await?;
    reader.stop().await?;

    let mut reader = Reader::taking_all(server.config(&inbox, server.imap_port));
    reader.quiet().await?;
    reader.stop().await?;
    Ok(())
}

#[tokio::test]
async fn a_mail_that_arrives_while_no_loop_runs_is_handed_over_by_the_next() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("resync");
    let first = fresh("first") + "@t";
    server.send(&inbox, &first).await?;
    let mut reader = Reader::taking_all(server.config(&inbox, server.imap_port));
    assert_eq!(reader.next().await?.message_id, first);
    reader.stop().await?;

    let meanwhile = fresh("meanwhile") + "@t";
    server.send(&inbox, &meanwhile).await?;
    let mut reader = Reader::taking_all(server.config(&inbox, server.imap_port));
    assert_eq!(reader.next().await?.message_id, meanwhile);
    reader.quiet().await?;
    reader.stop().await?;
    Ok(())
}

#[tokio::test]
async fn the_same_mail_delivered_twice_is_handed_over_twice() -> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let inbox = fresh_address("twice");
    let id = fresh("twice") + "@t";
    server.send(&inbox, &id).await?;
    server.send(&inbox, &id).await?;
    let mut reader = Reader::taking_all(server.config(&inbox, server.imap_port));
    let (a, b) = (reader.next().await?, reader.next().await?);
    assert_eq!(
        (a.message_id.as_str(), b.message_id.as_str()),
        (id.as_str(), id.as_str())
    );
    assert_ne!(
        a.uid, b.uid,
        "two copies, two UIDs: deduplicating is the caller's job"
    );
    reader.quiet().await?;
    reader.stop().await?;
    Ok(())
}

/// A TCP relay to the IMAP server whose connections the test can cut, as a network would.
struct Relay {
    port: u16,
    cut: watch::Sender<u64>,
}

impl Relay {
    async fn start(upstream: u16) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (cut, cuts) = watch::channel(0u64);
        tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut cuts = cuts.clone();
                cuts.mark_unchanged();
                tokio::spawn(async move {
                    let Ok(mut server) = TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                        _ = cuts.changed() => {}
                    }
                });
            }
        });
        Ok(Self { port, cut })
    }

    /// Drops every connection open now; new ones are relayed again.
    fn cut(&self) {
        self.cut.send_modify(|n| *n += 1);
    }
}

#[tokio::test]
async fn after_a_dropped_connection_the_loop_reconnects_and_hands_over_what_came_meanwhile()
-> anyhow::Result<()> {
    let Some(server) = MailServer::from_env() else {
        return Ok(());
    };
    let relay = Relay::start(server.imap_port).await?;
    let inbox = fresh_address("drop");
    let first = fresh("first") + "@t";
    server.send(&inbox, &first).await?;
    let mut reader = Reader::taking_all(server.config(&inbox, relay.port));
    assert_eq!(reader.next().await?.message_id, first);
    tokio::time::sleep(Duration::from_millis(500)).await;

    relay.cut();
    let meanwhile = fresh("meanwhile") + "@t";
    server.send(&inbox, &meanwhile).await?;
    let h = reader.next().await?;
    assert_eq!(h.message_id, meanwhile, "the first mail came again: {h:?}");
    reader.quiet().await?;
    reader.stop().await?;
    Ok(())
}
