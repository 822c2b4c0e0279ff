//! The embedded SMTP listener: mail for the connector's domain delivered straight to
//! Switchboard, answered `250` only once the handler has recorded it.
//!
//! [`serve`] accepts connections on a listener it is given and speaks enough ESMTP
//! (RFC 5321) for an MTA or any SMTP client to deliver: `EHLO`/`HELO`, `MAIL` (with
//! `SIZE=` and `BODY=`), `RCPT`, `DATA`, `RSET`, `NOOP`, `QUIT`, `VRFY` (252) and `HELP`,
//! advertising `PIPELINING`, `8BITMIME`, `SIZE` and `ENHANCEDSTATUSCODES`.
//!
//! # Delivery guarantee: the sender keeps the mail until we have it
//!
//! The reply to the end of `DATA` is sent after the handler returned: `250` for `Ok`,
//! `451 4.3.0` for [`HandlerError::Transient`] (the sender keeps the mail and tries again
//! later), `554 5.6.0` for [`HandlerError::Permanent`] (the sender bounces it). Nothing is
//! queued here: a mail is never acknowledged and then lost. As with IMAP, it can be handed
//! over twice (the `250` lost on the way back, the sender retrying), so the handler
//! deduplicates (`inbound::MailId`).
//!
//! Only recipients at [`ListenerConfig::domain`] are accepted (`550 5.7.1` otherwise): this
//! is a final destination, never a relay.
//!
//! # No TLS yet: put it behind the operator's MTA
//!
//! There is no `STARTTLS` (and no `AUTH`): bind the listener on loopback or a private network
//! and have the operator's MTA (Postfix `transport_maps`, Exim `manualroute`) deliver the
//! domain's mail to it, or accept plain-text delivery on a network that is trusted. Adding
//! `STARTTLS` would need `tokio-rustls` as a direct dependency, a certificate in the
//! configuration, the connection's reader rebuilt around the TLS stream after `220 Ready`
//! (dropping whatever the client pipelined before it: RFC 3207 §4.2, the STARTTLS command
//! injection bug), and the session reset to the greeting.
//!
//! # Connections
//!
//! Each connection is a task of its own, so a slow client never holds up another; at most
//! [`ListenerConfig::max_connections`] are served at once, the next ones get `421` and are
//! closed (the sender retries later). A client silent for [`ListenerConfig::idle_timeout`]
//! gets `421` and is closed, as is one still connected at shutdown once its current mail is
//! answered.
//!
//! The parts, the first three pure and tested without a socket: `command` (command lines read
//! into commands), `session` (the order of commands, and the replies), `data` (the mail text:
//! dot-unstuffing, line ends, size limit); the I/O is here.

mod command;
mod data;
mod session;

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    io::{AsyncBufRead, AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader},
    net::{TcpListener, TcpStream},
    sync::{Semaphore, watch},
    task::JoinSet,
    time::timeout,
};
use tracing::Instrument;

use self::data::{DataReader, Progress};
use self::session::{Session, Step};
use super::imap::HandlerError;

/// The longest command line, CRLF included (RFC 5321 §4.5.3.1.4).
const MAX_COMMAND_LINE: usize = 1000;

/// The most of one line of mail text read at once. Longer lines (RFC 5321 allows 1000 octets,
/// some mailers write more) are read in pieces of this size, so a line without end is never
/// held whole.
const DATA_PIECE: usize = 64 * 1024;

/// What the listener accepts and how long it waits.
#[derive(Clone, Debug)]
pub struct ListenerConfig {
    /// Only recipients `@domain` (compared without case) are accepted; others get
    /// `550 5.7.1 relay denied`.
    pub domain: String,
    /// Advertised as `SIZE`; a larger mail is refused with `552 5.3.4`, at `MAIL` when its
    /// `SIZE=` says so, else after its end (it is never held in memory past this).
    /// 25 MiB by default.
    pub max_message_bytes: usize,
    /// Recipients of one mail; more get `452 4.5.3` (the sender sends them again in another
    /// transaction). 100 by default, the minimum RFC 5321 §4.5.3.1.8 asks servers to take.
    pub max_recipients: usize,
    /// How long the listener waits for each command, and for each line of mail text, before
    /// `421` and closing (RFC 5321 §4.5.3.2 suggests minutes). 5 minutes by default.
    pub idle_timeout: Duration,
    /// Our name in the greeting and the `421`/`221` replies.
    pub hostname: String,
    /// Connections served at once; more are answered `421 4.3.2` and closed. 100 by default.
    /// With [`Self::max_message_bytes`] it bounds the memory mails can take:
    /// `max_connections * max_message_bytes` at worst.
    pub max_connections: usize,
}

impl ListenerConfig {
    /// A configuration with the defaults above.
    pub fn new(domain: impl Into<String>, hostname: impl Into<String>) -> Self {
        Self {
            domain: domain.into(),
            max_message_bytes: 25 * 1024 * 1024,
            max_recipients: 100,
            idle_timeout: Duration::from_secs(5 * 60),
            hostname: hostname.into(),
            max_connections: 100,
        }
    }

    /// The names are written into replies as they are, so a line break in one would let it
    /// forge replies; zero limits would refuse everything.
    fn validate(&self) -> io::Result<()> {
        let name = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_graphic() && b != b'@');
        let problem = if !name(&self.domain) {
            "domain must be a domain name"
        } else if !name(&self.hostname) {
            "hostname must be one printable word"
        } else if self.max_connections == 0 || self.max_recipients == 0 {
            "max_connections and max_recipients must be above zero"
        } else if self.max_message_bytes == 0 || self.idle_timeout.is_zero() {
            "max_message_bytes and idle_timeout must be above zero"
        } else {
            return Ok(());
        };
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid SMTP listener configuration: {problem}"),
        ))
    }
}

/// Who delivered a mail and to whom, as the client said in the SMTP conversation.
///
/// The handler gets this instead of a `Received:` header: the listener hands over the mail's
/// bytes exactly as sent, because a mail without a `Message-ID` is deduplicated by the hash
/// of its bytes (`inbound::MailId::Derived`), and a trace header stamped with the time of
/// each attempt would make a retried delivery look like a new mail. (The operator's MTA in
/// front has written its own `Received:` already.)
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The connecting address (the operator's MTA, when one is in front).
    pub peer: SocketAddr,
    /// The name given in `EHLO`/`HELO`, unchecked.
    pub helo: String,
    /// The reverse-path of `MAIL FROM`, as written; `""` for the null reverse-path `<>`,
    /// which bounces and other delivery reports use.
    pub mail_from: String,
    /// The accepted forward-paths of `RCPT TO`, as written (the local part keeps its case:
    /// it may hold a reply token); a bare `<Postmaster>` as `postmaster@{domain}`.
    pub rcpt_to: Vec<String>,
}

/// Serves SMTP on `listener` until `shutdown` turns true (or its sender is dropped), handing
/// each mail received to `handler` with its envelope, and answering the client with what
/// the handler returned (see the module documentation).
///
/// The handler is not timed out here: the client waits for the answer (RFC 5321 §4.5.3.2.6
/// suggests 10 minutes, then it tries again later), so the handler should bound its own work
/// well below that. It may be called for several mails at once (one per connection).
///
/// On shutdown it stops accepting, lets each connection finish the mail it is receiving or
/// handing over, answers `421` to those waiting for a command, and returns once all are
/// closed. Failures to accept a connection (out of file descriptors) are logged and retried
/// after a pause; they never end it. Returns `Err` only for an invalid configuration (an
/// empty domain, a hostname that is not one printable word, a zero limit) or if the
/// listener's address cannot be read.
pub async fn serve<H, F>(
    listener: TcpListener,
    config: ListenerConfig,
    handler: H,
    mut shutdown: watch::Receiver<bool>,
) -> io::Result<()>
where
    H: Fn(Envelope, Vec<u8>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Result<(), HandlerError>> + Send + 'static,
{
    config.validate()?;
    let local = listener.local_addr()?;
    let span = tracing::info_span!("smtp_listener", %local, domain = %config.domain);
    async move {
        let config = Arc::new(config);
        let slots = Arc::new(Semaphore::new(config.max_connections));
        let mut connections = JoinSet::new();
        tracing::info!("smtp listener: accepting connections");
        loop {
            tokio::select! {
                _ = stopped(&mut shutdown) => break,
                Some(ended) = connections.join_next(), if !connections.is_empty() => {
                    if let Err(e) = ended {
                        tracing::error!(error = %e, "smtp listener: a connection task failed");
                    }
                }
                accepted = listener.accept() => {
                    let (stream, peer) = match accepted {
                        Ok(accepted) => accepted,
                        Err(e) => {
                            // EMFILE and the like pass once connections close; ECONNABORTED
                            // concerns one client only.
                            tracing::warn!(error = %e, "smtp listener: accept failed");
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            continue;
                        }
                    };
                    let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                        tracing::warn!(%peer, "smtp listener: too many connections, refusing one");
                        // A fresh socket's send buffer is empty, so this never blocks; if it
                        // fails the client sees the connection close, which it retries too.
                        let _ = stream.try_write(
                            format!("421 {} too many connections, try again later\r\n", config.hostname)
                                .as_bytes(),
                        );
                        continue;
                    };
                    let connection = Connection {
                        config: Arc::clone(&config),
                        peer,
                        shutdown: shutdown.clone(),
                    };
                    let span = tracing::info_span!("smtp", %peer);
                    let handler = handler.clone();
                    connections.spawn(
                        async move {
                            connection.run(stream, handler).await;
                            drop(slot);
                        }
                        .instrument(span),
                    );
                }
            }
        }
        drop(listener);
        tracing::info!(
            open = connections.len(),
            "smtp listener: stopped accepting; closing connections"
        );
        while let Some(ended) = connections.join_next().await {
            if let Err(e) = ended {
                tracing::error!(error = %e, "smtp listener: a connection task failed");
            }
        }
        Ok(())
    }
    .instrument(span)
    .await
}

/// Resolves once shutdown is asked for (or nobody can ask any more).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

struct Connection {
    config: Arc<ListenerConfig>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
}

/// Why a connection ended early; logged only.
#[derive(Debug, thiserror::Error)]
enum Ended {
    #[error("io: {0}")]
    Io(#[from] io::Error),
    #[error("the client closed the connection")]
    Eof,
    #[error("timed out")]
    Timeout,
}

/// One piece of input.
#[derive(Debug, PartialEq, Eq)]
enum Piece {
    /// A whole line, ending with LF.
    Line,
    /// The limit was reached before a LF.
    Partial,
    Eof,
}

impl Connection {
    async fn run<H, F>(mut self, stream: TcpStream, handler: H)
    where
        H: Fn(Envelope, Vec<u8>) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        let (read, mut write) = stream.into_split();
        let mut reader = BufReader::new(read);
        let mut out = Vec::new();
        let config = Arc::clone(&self.config);
        let mut session = Session::new(&config);
        session.greeting().write_to(false, &mut out);
        let result = self
            .converse(&mut session, &mut reader, &mut out, &mut write, &handler)
            .await;
        match &result {
            Ok(()) => {}
            Err(Ended::Timeout) => session.timed_out().write_to(session.esmtp(), &mut out),
            Err(e) => tracing::debug!(error = %e, "smtp: connection ended"),
        }
        let flushed = timeout(self.config.idle_timeout, async {
            write.write_all(&out).await?;
            write.shutdown().await
        })
        .await;
        if let Err(Ended::Timeout) = result {
            tracing::info!("smtp: client idle for too long; closed");
        }
        if !matches!(flushed, Ok(Ok(()))) {
            tracing::debug!("smtp: could not send the last replies");
        }
    }

    /// The conversation, until `QUIT`, shutdown, or a failure. Replies are collected in
    /// `out` and written whenever the client's input is used up: a pipelining client gets
    /// one write per group of commands (RFC 2920 §3.2), and no reply waits behind a read.
    async fn converse<R, W, H, F>(
        &mut self,
        session: &mut Session<'_>,
        reader: &mut BufReader<R>,
        out: &mut Vec<u8>,
        write: &mut W,
        handler: &H,
    ) -> Result<(), Ended>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
        H: Fn(Envelope, Vec<u8>) -> F,
        F: Future<Output = Result<(), HandlerError>>,
    {
        let idle = self.config.idle_timeout;
        let mut line = Vec::with_capacity(128);
        loop {
            self.flush_if_drained(reader, out, write).await?;
            let read = tokio::select! {
                read = timeout(idle, read_command(reader, &mut line)) => read,
                _ = stopped(&mut self.shutdown) => {
                    session.shutting_down().write_to(session.esmtp(), out);
                    return Ok(());
                }
            };
            let step = match read.map_err(|_| Ended::Timeout)?? {
                Piece::Eof => return Err(Ended::Eof),
                Piece::Partial => session.line_too_long(),
                Piece::Line => session.command(trim_line_end(&line)),
            };
            let reply = match step {
                Step::Reply(reply) => reply,
                Step::Close(reply) => {
                    reply.write_to(session.esmtp(), out);
                    return Ok(());
                }
                Step::Data(go_ahead) => {
                    go_ahead.write_to(session.esmtp(), out);
                    match self.receive(reader, out, write).await? {
                        Received::Mail(bytes) => {
                            let envelope = session.take_envelope(self.peer);
                            let recipients = envelope.rcpt_to.len();
                            let size = bytes.len();
                            let outcome = handler(envelope, bytes).await;
                            match &outcome {
                                Ok(()) => tracing::info!(size, recipients, "smtp: mail recorded"),
                                Err(e) => {
                                    tracing::warn!(size, recipients, error = %e, "smtp: handler refused a mail")
                                }
                            }
                            session::delivered(&outcome)
                        }
                        Received::TooLarge => session.too_large(),
                        Received::Abandoned => {
                            session.too_large().write_to(session.esmtp(), out);
                            tracing::warn!("smtp: mail far over the size limit; closing");
                            return Ok(());
                        }
                    }
                }
            };
            reply.write_to(session.esmtp(), out);
        }
    }

    /// Reads the mail text after `354`, up to its end.
    async fn receive<R, W>(
        &self,
        reader: &mut BufReader<R>,
        out: &mut Vec<u8>,
        write: &mut W,
    ) -> Result<Received, Ended>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let mut data = DataReader::new(self.config.max_message_bytes);
        let mut piece = Vec::new();
        loop {
            self.flush_if_drained(reader, out, write).await?;
            let read = timeout(
                self.config.idle_timeout,
                read_piece(reader, &mut piece, DATA_PIECE),
            )
            .await
            .map_err(|_| Ended::Timeout)??;
            let progress = match read {
                Piece::Eof => return Err(Ended::Eof),
                Piece::Line => data.push(&piece, true),
                Piece::Partial => data.push(&piece, false),
            };
            match progress {
                Progress::More => {}
                Progress::End => {
                    return Ok(match data.finish() {
                        Ok(bytes) => Received::Mail(bytes),
                        Err(_) => Received::TooLarge,
                    });
                }
                Progress::Abort => return Ok(Received::Abandoned),
            }
        }
    }

    /// Sends the replies collected so far if the client has sent nothing more yet (it may be
    /// waiting for them); a client that does not read them within the idle timeout is gone.
    async fn flush_if_drained<R, W>(
        &self,
        reader: &BufReader<R>,
        out: &mut Vec<u8>,
        write: &mut W,
    ) -> Result<(), Ended>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        if !out.is_empty() && reader.buffer().is_empty() {
            timeout(self.config.idle_timeout, write.write_all(out))
                .await
                .map_err(|_| Ended::Timeout)??;
            out.clear();
        }
        Ok(())
    }
}

enum Received {
    Mail(Vec<u8>),
    TooLarge,
    /// Far over the limit, not read to its end.
    Abandoned,
}

/// Reads one command line into `line`; an overlong one is read to its end and thrown away.
async fn read_command<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    line: &mut Vec<u8>,
) -> io::Result<Piece> {
    match read_piece(reader, line, MAX_COMMAND_LINE).await? {
        Piece::Partial => loop {
            if read_piece(reader, line, MAX_COMMAND_LINE).await? != Piece::Partial {
                return Ok(Piece::Partial);
            }
        },
        read => Ok(read),
    }
}

/// Reads into `out` (cleared first) up to and including the next LF, or `limit` bytes if no
/// LF comes before. Bytes after the LF stay in the reader for the next call: pipelined
/// commands and mail text are never lost.
async fn read_piece<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    out: &mut Vec<u8>,
    limit: usize,
) -> io::Result<Piece> {
    out.clear();
    loop {
        let available = reader.fill_buf().await?;
        if available.is_empty() {
            return Ok(Piece::Eof);
        }
        let window = &available[..available.len().min(limit - out.len())];
        if let Some(end) = window.iter().position(|&b| b == b'\n') {
            out.extend_from_slice(&window[..=end]);
            reader.consume(end + 1);
            return Ok(Piece::Line);
        }
        let taken = window.len();
        out.extend_from_slice(window);
        reader.consume(taken);
        if out.len() == limit {
            return Ok(Piece::Partial);
        }
    }
}

/// A command line without its CRLF, or its bare LF.
fn trim_line_end(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

#[cfg(test)]
mod tests;
