//! Reading the connector's mailbox over IMAP: every mail is handed over until the handler
//! has taken it, and marked on the server only then.
//!
//! The server is the queue. A mail is handed over while it lacks the done keyword
//! (`$SwitchboardRecorded` by default): [`run_mailbox`] searches for such mails
//! (`UID SEARCH NOT KEYWORD ...`), fetches each with `BODY.PEEK[]` (which, unlike `BODY[]`,
//! does not set `\Seen`), calls the handler, and only after it returns `Ok` stores
//! `+FLAGS.SILENT ($SwitchboardRecorded \Seen)`. Then it waits in IDLE (RFC 2177) and searches
//! again after every wake, whatever the wake said: the search, not the IDLE response, decides
//! what is new. After a reconnect the same search finds whatever arrived meanwhile.
//!
//! # Delivery guarantee: at least once
//!
//! A mail is never lost: it keeps being found until it is flagged, and it is flagged only
//! after the handler returned `Ok`. It can be handed over twice:
//! - when the process dies, or the connection drops and the mailbox's `UIDVALIDITY` changes,
//!   between the handler's `Ok` and the server confirming the flag (within one run the flag
//!   is stored again after a reconnect, without a second handover);
//! - when the same mail is delivered twice (a sender retrying, a mailing list): the server
//!   holds two copies with two UIDs, and this layer hands over both.
//!
//! Deduplicating is the caller's job, by the mail's `Message-ID` (or a hash of its bytes:
//! `inbound::MailId`) as the key of `RemoteSink::record_remote`, which records a key once.
//!
//! # A mail that never works
//!
//! A [`HandlerError::Transient`] leaves the mail unflagged; the pass stops there (so a
//! store that is down is not hammered once per mail) and resumes after a growing pause.
//! Mails are tried in arrival order, a mail that failed for a while included, so a
//! responder's mails keep their order through a store outage; within one pass, one sender's
//! mails go in the order their `Date:` headers say they were written, in the places their
//! mails have (a mailbox can show a mail after one written later); only a mail that failed
//! `failures_before_last` times in a row is tried after the others, so one that keeps failing
//! delays them for a while, never blocks them. A
//! [`HandlerError::Permanent`] flags the mail with the refused keyword
//! (`$SwitchboardRefused`) instead, and not `\Seen`: it is never handed over again, is not
//! mistaken for a recorded mail, and stays unread for a person to find (search the keyword),
//! who can remove the keyword to have it tried again.

use std::{collections::HashMap, future::Future, time::Duration};

use async_imap::{
    Session,
    extensions::idle::IdleResponse,
    types::{Fetch, Flag, UnsolicitedResponse},
};
use futures_util::TryStreamExt;
use tokio::{net::TcpStream, sync::watch, time::timeout};
use tracing::Instrument;

use crate::{cluster::Term, connector::ConnectorError};

mod order;
mod settings;

use order::{order_as_written, sender_and_date};
pub use settings::{ImapConfig, ImapTls, MAX_RETRY_DELAY};

/// One mail as the server stores it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawMail {
    /// The mail's UID in the mailbox: for logs only (it is not stable across a
    /// `UIDVALIDITY` change, nor across two copies of one mail).
    pub uid: u32,
    /// The whole RFC 5322 message, header and body, as fetched with `BODY.PEEK[]`.
    pub bytes: Vec<u8>,
}

/// Why the handler did not take a mail.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum HandlerError {
    /// Worth trying again later (the store is unreachable): the mail stays unflagged.
    #[error("temporary failure: {0}")]
    Transient(String),
    /// Will never work: the mail is flagged with the refused keyword and not handed over again.
    #[error("permanent failure: {0}")]
    Permanent(String),
}

impl From<ConnectorError> for HandlerError {
    fn from(e: ConnectorError) -> Self {
        match e {
            ConnectorError::Transient(_) | ConnectorError::RetryAfter(_) => {
                HandlerError::Transient(e.to_string())
            }
            ConnectorError::Permanent(_) | ConnectorError::FileTooLarge(_) => {
                HandlerError::Permanent(e.to_string())
            }
        }
    }
}

/// Why [`run_mailbox`] gave up. Connection failures never end it (it reconnects); these do,
/// because trying again could not help.
#[derive(Debug, thiserror::Error)]
pub enum ImapError {
    #[error("invalid IMAP configuration: {0}")]
    Config(String),
    /// Without keywords nothing could be marked as handled: every mail would be handed over
    /// again on every pass.
    #[error("the mailbox {0:?} cannot store keywords (no \\* in PERMANENTFLAGS)")]
    NoKeywords(String),
}

/// Connects, reads the greeting and logs in, each step within its time-out: how both the
/// reader and `check_login` begin.
async fn login(c: &ImapConfig) -> Result<ImapSession, SessionError> {
    let ImapTls::None = c.tls;
    let tcp = within(c, "connect", TcpStream::connect((c.host.as_str(), c.port))).await?;
    let mut client = async_imap::Client::new(tcp);
    within(c, "the greeting", client.read_response())
        .await?
        .ok_or(SessionError::NoGreeting)?;
    within(c, "LOGIN", async {
        client
            .login(&c.username, &c.password)
            .await
            .map_err(|(e, _)| e)
    })
    .await
}

/// Connects, logs in and opens the mailbox read-only (`EXAMINE`: no flag changes), then logs
/// out: whether [`run_mailbox`] could start reading. Returns the mailbox's size, for people;
/// the error names the step that failed, never the password. For `switchboard check-config`.
pub async fn check_login(config: &ImapConfig) -> Result<String, String> {
    let c = config;
    let server = format!("IMAP {}:{}", c.host, c.port);
    let steps = async {
        let mut session = login(c).await.map_err(|e| match e {
            SessionError::Imap(async_imap::error::Error::No(_)) => SessionError::Fatal(
                ImapError::Config(format!("the server refused the login of {:?}", c.username)),
            ),
            other => other,
        })?;
        let mailbox = within(c, "EXAMINE", session.examine(&c.mailbox)).await?;
        let _ = within(c, "LOGOUT", session.logout()).await;
        Ok::<_, SessionError>(mailbox.exists)
    };
    match steps.await {
        Ok(mails) => Ok(format!(
            "{server}: logged in as {:?}, {:?} holds {mails} mails",
            c.username, c.mailbox
        )),
        Err(e) => {
            let mut text = e.to_string();
            if !c.password.is_empty() {
                text = text.replace(c.password.as_str(), "<redacted>");
            }
            Err(format!("{server}: {text}"))
        }
    }
}

/// Reads the mailbox while `term` holds (until it ends, or this instance's own clock says it
/// ran out: a leader paused past its lease stops before fetching anything), handing each
/// mail without the done keyword to `handler` and flagging it once the handler returns `Ok`
/// (see the module documentation for the guarantees).
///
/// Connection failures (refused, login refused, dropped, a command timing out) are logged
/// and retried with exponential backoff up to [`MAX_RETRY_DELAY`], forever. On shutdown it
/// leaves IDLE (`DONE`) and logs out; a handler call in progress is let finish (and its mail
/// flagged) first. Returns `Err` only for what no retry can fix.
pub async fn run_mailbox<H, F>(config: ImapConfig, handler: H, term: Term) -> Result<(), ImapError>
where
    H: Fn(RawMail) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    config.validate()?;
    let span = tracing::info_span!("imap", user = %config.username, mailbox = %config.mailbox);
    Reader {
        config: &config,
        handler: &handler,
        shutdown: term.ended(),
        term,
        state: State::new(config.retry_min),
    }
    .run()
    .instrument(span)
    .await
}

/// What outlives one connection.
struct State {
    /// Transient failures so far per UID: a mail that keeps failing is tried after the others.
    failures: HashMap<u32, u32>,
    /// Mails the handler took whose flag the server may not have stored (the connection
    /// dropped in between), with the keyword they need: stored again, without handing them
    /// over, after reconnecting to the same `UIDVALIDITY`.
    unflagged: HashMap<u32, Outcome>,
    uid_validity: Option<u32>,
    reconnect: Backoff,
    retry: Backoff,
}

impl State {
    fn new(retry_min: Duration) -> Self {
        Self {
            failures: HashMap::new(),
            unflagged: HashMap::new(),
            uid_validity: None,
            reconnect: Backoff::new(retry_min, MAX_RETRY_DELAY),
            retry: Backoff::new(retry_min, MAX_RETRY_DELAY),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Recorded,
    Refused,
}

/// How a pass over the unflagged mails ended.
#[derive(Debug, PartialEq, Eq)]
enum Pass {
    /// Every mail found was recorded or refused.
    Done,
    /// The handler failed for a mail; the rest waits for the next pass.
    Retry,
    Stopped,
}

/// What ended an IDLE.
#[derive(Debug, PartialEq, Eq)]
enum Wake {
    Server,
    Timer,
    Stop,
}

/// A connection failure; never ends the loop.
#[derive(Debug, thiserror::Error)]
enum SessionError {
    #[error(transparent)]
    Imap(#[from] async_imap::error::Error),
    #[error("io: {0}")]
    Io(#[from] std::io::Error),
    #[error("no answer to {0} within the command timeout")]
    Timeout(&'static str),
    #[error("the server closed the connection before greeting")]
    NoGreeting,
    #[error(transparent)]
    Fatal(ImapError),
}

type ImapSession = Session<TcpStream>;

struct Reader<'a, H> {
    config: &'a ImapConfig,
    handler: &'a H,
    shutdown: watch::Receiver<bool>,
    /// Asked before each mail, as the shutdown is: reading the mailbox is the leader's.
    term: Term,
    state: State,
}

impl<H, F> Reader<'_, H>
where
    H: Fn(RawMail) -> F,
    F: Future<Output = Result<(), HandlerError>>,
{
    /// Shut down, or no longer leading.
    async fn stop_requested(&self) -> bool {
        stop_requested(&self.shutdown) || !self.term.resumes().await
    }

    async fn run(mut self) -> Result<(), ImapError> {
        loop {
            if self.stop_requested().await {
                return Ok(());
            }
            match self.serve().await {
                Ok(()) => return Ok(()),
                Err(SessionError::Fatal(e)) => {
                    tracing::error!(error = %e, "imap: giving up on the mailbox");
                    return Err(e);
                }
                Err(e) => {
                    let wait = self.state.reconnect.next_delay();
                    tracing::warn!(
                        error = %e,
                        wait_ms = wait.as_millis() as u64,
                        "imap: disconnected; reconnecting"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = stopped(&mut self.shutdown) => return Ok(()),
                    }
                }
            }
        }
    }

    /// One connection: resync, then IDLE and search until shutdown (`Ok`) or a failure.
    async fn serve(&mut self) -> Result<(), SessionError> {
        let mut session = self.connect().await?;
        tracing::info!("imap: connected");
        loop {
            // Announcements so far are answered by the search below.
            while session.unsolicited_responses.try_recv().is_ok() {}
            let pass = self.pass(&mut session).await?;
            self.state.reconnect.reset();
            let wait = match pass {
                Pass::Stopped => break,
                Pass::Done => {
                    self.state.retry.reset();
                    self.config.idle_renewal
                }
                Pass::Retry => self.state.retry.next_delay().min(self.config.idle_renewal),
            };
            let (back, wake) = self.idle(session, wait).await?;
            session = back;
            tracing::debug!(?wake, "imap: searching again");
            if wake == Wake::Stop {
                break;
            }
        }
        let logout = timeout(self.config.command_timeout, session.logout()).await;
        tracing::info!(clean = matches!(logout, Ok(Ok(()))), "imap: logged out");
        Ok(())
    }

    async fn connect(&mut self) -> Result<ImapSession, SessionError> {
        let c = self.config;
        let mut session = login(c).await?;
        let mailbox = within(c, "SELECT", session.select(&c.mailbox)).await?;
        let keywords_kept = mailbox.permanent_flags.iter().any(|f| {
            *f == Flag::MayCreate
                || [&c.done_keyword, &c.refused_keyword].iter().all(|k| {
                    mailbox
                        .permanent_flags
                        .contains(&Flag::Custom(k.as_str().into()))
                })
        });
        if !keywords_kept {
            return Err(SessionError::Fatal(ImapError::NoKeywords(
                c.mailbox.clone(),
            )));
        }
        if mailbox.uid_validity != self.state.uid_validity {
            // The UIDs now name other mails: those left unflagged are found and handed over
            // again (the caller deduplicates); the failure counts mean nothing either.
            if !self.state.unflagged.is_empty() {
                tracing::warn!(
                    mails = self.state.unflagged.len(),
                    "imap: UIDVALIDITY changed before handled mails were flagged; they will be handed over again"
                );
            }
            self.state.unflagged.clear();
            self.state.failures.clear();
            self.state.uid_validity = mailbox.uid_validity;
        }
        let pending: Vec<(u32, Outcome)> = self.state.unflagged.drain().collect();
        for (uid, outcome) in pending {
            self.flag(&mut session, uid, outcome).await?;
        }
        Ok(session)
    }

    /// Hands over every mail lacking both keywords, in arrival order but for those that kept
    /// failing, which go last.
    async fn pass(&mut self, session: &mut ImapSession) -> Result<Pass, SessionError> {
        let c = self.config;
        let query = format!(
            "NOT KEYWORD {} NOT KEYWORD {}",
            c.done_keyword, c.refused_keyword
        );
        let found = within(c, "UID SEARCH", session.uid_search(&query)).await?;
        self.state.failures.retain(|uid, _| found.contains(uid));
        let mut uids: Vec<u32> = found.into_iter().collect();
        // In arrival order, so one responder's mails reach the visitor in the order they were
        // sent: a mail that failed only for a while (the store away) is tried again before
        // the ones after it, which used to overtake it (the crash bursts caught it with
        // PostgreSQL killed). Only a mail that keeps failing goes last, so it cannot hold up
        // the mailbox for ever.
        let kept_failing = |uid: &u32| {
            self.state.failures.get(uid).copied().unwrap_or(0) >= c.failures_before_last
        };
        uids.sort_by_key(|uid| (kept_failing(uid), *uid));
        if !uids.is_empty() {
            tracing::debug!(mails = uids.len(), "imap: unhandled mails found");
        }
        // Those that kept failing stay last, in arrival order.
        let in_turn = uids.iter().position(kept_failing).unwrap_or(uids.len());
        if in_turn > 1 {
            self.in_writing_order(session, &mut uids[..in_turn]).await?;
        }
        for uid in uids {
            if self.stop_requested().await {
                return Ok(Pass::Stopped);
            }
            let Some(bytes) = self.fetch(session, uid).await? else {
                tracing::debug!(uid, "imap: mail gone before it was fetched");
                continue;
            };
            let outcome = match (self.handler)(RawMail { uid, bytes }).await {
                Ok(()) => Outcome::Recorded,
                Err(HandlerError::Permanent(reason)) => {
                    tracing::error!(uid, %reason, keyword = %c.refused_keyword, "imap: mail refused for good; flagged and skipped");
                    Outcome::Refused
                }
                Err(HandlerError::Transient(reason)) => {
                    let failures = self.state.failures.entry(uid).or_default();
                    *failures += 1;
                    tracing::warn!(uid, %reason, failures = *failures, "imap: mail not taken; it will be tried again");
                    return Ok(Pass::Retry);
                }
            };
            self.state.failures.remove(&uid);
            // Remembered until the server confirms, so a reconnect stores it without a
            // second handover.
            self.state.unflagged.insert(uid, outcome);
            self.flag(session, uid, outcome).await?;
            self.state.unflagged.remove(&uid);
        }
        Ok(Pass::Done)
    }

    /// Puts each sender's mails among `uids` in the order they were written (their `Date:`),
    /// in the places that sender's mails have in arrival order; other mails stay where they
    /// are. A mailbox can show a mail after one written later: the crash bursts saw Dovecot
    /// give a responder's second reply the lower UID although the first had been delivered
    /// (250) before the second was sent. If a mail's sender or date cannot be read, the pass
    /// keeps arrival order.
    async fn in_writing_order(
        &self,
        session: &mut ImapSession,
        uids: &mut [u32],
    ) -> Result<(), SessionError> {
        let set = uids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let heads: Vec<Fetch> = within(self.config, "UID FETCH", async {
            session
                .uid_fetch(set, "BODY.PEEK[HEADER]")
                .await?
                .try_collect()
                .await
        })
        .await?;
        let written: HashMap<u32, Option<(String, i64)>> = heads
            .iter()
            .filter_map(|f| Some((f.uid?, sender_and_date(f.header()?))))
            .collect();
        order_as_written(uids, &written);
        Ok(())
    }

    /// The mail's bytes, or `None` if it was expunged meanwhile.
    async fn fetch(
        &self,
        session: &mut ImapSession,
        uid: u32,
    ) -> Result<Option<Vec<u8>>, SessionError> {
        let fetches: Vec<Fetch> = within(self.config, "UID FETCH", async {
            session
                .uid_fetch(uid.to_string(), "BODY.PEEK[]")
                .await?
                .try_collect()
                .await
        })
        .await?;
        // Other mails' FETCH responses (flags changed elsewhere) may come along.
        Ok(fetches
            .iter()
            .find(|f| f.uid == Some(uid))
            .and_then(Fetch::body)
            .map(<[u8]>::to_vec))
    }

    async fn flag(
        &self,
        session: &mut ImapSession,
        uid: u32,
        outcome: Outcome,
    ) -> Result<(), SessionError> {
        let c = self.config;
        let flags = match outcome {
            Outcome::Recorded => format!("+FLAGS.SILENT ({} \\Seen)", c.done_keyword),
            Outcome::Refused => format!("+FLAGS.SILENT ({})", c.refused_keyword),
        };
        let _: Vec<Fetch> = within(c, "UID STORE", async {
            session
                .uid_store(uid.to_string(), &flags)
                .await?
                .try_collect()
                .await
        })
        .await?;
        Ok(())
    }

    /// Waits in IDLE until the server says anything, `wait` passes, or shutdown.
    async fn idle(
        &mut self,
        session: ImapSession,
        wait: Duration,
    ) -> Result<(ImapSession, Wake), SessionError> {
        let c = self.config;
        // A mail announced while a command ran, or before the server accepted IDLE, is in
        // this queue and would not be announced again.
        let announced = session.unsolicited_responses.clone();
        let mut handle = session.idle();
        within(c, "IDLE", handle.init()).await?;
        let early = std::iter::from_fn(|| announced.try_recv().ok()).any(|r| {
            matches!(
                r,
                UnsolicitedResponse::Exists(_) | UnsolicitedResponse::Recent(_)
            )
        });
        let wake = if early {
            Wake::Server
        } else {
            let (waiting, _interrupt) = handle.wait_with_timeout(wait);
            // The crate's own timeout restarts at every keepalive (`* OK Still here`), so
            // the renewal is timed here as well.
            tokio::select! {
                r = waiting => match r? {
                    IdleResponse::NewData(_) => Wake::Server,
                    IdleResponse::Timeout | IdleResponse::ManualInterrupt => Wake::Timer,
                },
                _ = tokio::time::sleep(wait) => Wake::Timer,
                _ = stopped(&mut self.shutdown) => Wake::Stop,
            }
        };
        let session = within(c, "DONE", handle.done()).await?;
        Ok((session, wake))
    }
}

/// Runs one command under the command timeout.
async fn within<T, E>(
    config: &ImapConfig,
    what: &'static str,
    command: impl Future<Output = Result<T, E>>,
) -> Result<T, SessionError>
where
    SessionError: From<E>,
{
    match timeout(config.command_timeout, command).await {
        Ok(r) => r.map_err(SessionError::from),
        Err(_) => Err(SessionError::Timeout(what)),
    }
}

fn stop_requested(shutdown: &watch::Receiver<bool>) -> bool {
    *shutdown.borrow() || shutdown.has_changed().is_err()
}

/// Resolves once shutdown is asked for (or nobody can ask any more).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// Exponential backoff with jitter (backon's): the n-th delay (from 0) is `min * 2^n` capped
/// at `max`, then drawn from its upper half, so many readers restarting at once spread out.
/// backon adds between none and all of a delay as jitter, so it is given half of each bound.
struct Backoff {
    min: Duration,
    max: Duration,
    delays: backon::ExponentialBackoff,
}

impl Backoff {
    fn new(min: Duration, max: Duration) -> Self {
        Self {
            min,
            max,
            delays: Self::schedule(min, max),
        }
    }

    fn schedule(min: Duration, max: Duration) -> backon::ExponentialBackoff {
        use backon::BackoffBuilder;
        backon::ExponentialBuilder::default()
            .with_min_delay(min / 2)
            .with_max_delay(max / 2)
            .with_jitter()
            .without_max_times()
            .build()
    }

    fn next_delay(&mut self) -> Duration {
        self.delays.next().unwrap_or(self.max)
    }

    /// After a success: the next failure waits the shortest time again.
    fn reset(&mut self) {
        self.delays = Self::schedule(self.min, self.max);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_the_minimum_up_to_the_cap_with_jitter_and_resets() {
        let min = Duration::from_millis(500);
        let mut backoff = Backoff::new(min, MAX_RETRY_DELAY);
        // The base of each delay: 0.5 s doubling up to the 60 s cap.
        let bases = [
            500, 1000, 2000, 4000, 8000, 16000, 32000, 60000, 60000, 60000,
        ];
        for _round in 0..20 {
            for (n, base) in bases.iter().enumerate() {
                let base = Duration::from_millis(*base);
                let d = backoff.next_delay();
                assert!(d >= base / 2 && d <= base, "delay {n}: {d:?} vs {base:?}");
            }
            backoff.reset();
        }
        // Far along, still capped.
        for _ in 0..100 {
            assert!(backoff.next_delay() <= MAX_RETRY_DELAY);
        }
        backoff.reset();
        assert!(backoff.next_delay() <= min);
    }

    #[test]
    fn connector_errors_map_to_retry_or_refuse() {
        assert!(matches!(
            HandlerError::from(ConnectorError::Transient("db down".into())),
            HandlerError::Transient(_)
        ));
        assert!(matches!(
            HandlerError::from(ConnectorError::RetryAfter(Duration::from_secs(1))),
            HandlerError::Transient(_)
        ));
        assert!(matches!(
            HandlerError::from(ConnectorError::Permanent("bad".into())),
            HandlerError::Permanent(_)
        ));
    }
}
