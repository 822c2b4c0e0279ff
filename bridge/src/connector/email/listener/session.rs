//! One SMTP conversation as a state machine (RFC 5321 §4.1.4 for the order of commands):
//! fed command lines, it answers with the reply and what the connection must do next. No
//! I/O, so the sequence rules are tested here without a socket.

use std::borrow::Cow;

use super::command::{self, Command, SyntaxError};
use super::{Envelope, ListenerConfig};
use crate::connector::email::imap::HandlerError;

/// After this many refused commands the client is told to go away (Postfix's
/// `smtpd_hard_error_limit` is the same idea): a confused or hostile client does not hold a
/// connection slot for ever.
const MAX_ERRORS: u32 = 20;

/// One reply (RFC 5321 §4.2), possibly of several lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Reply {
    pub code: u16,
    /// The enhanced status code (RFC 3463), written only to clients that said EHLO (RFC 2034).
    pub status: Option<&'static str>,
    pub lines: Vec<Cow<'static, str>>,
}

impl Reply {
    fn new(code: u16, status: &'static str, text: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            status: Some(status),
            lines: vec![text.into()],
        }
    }

    /// Appends the reply as sent on the wire.
    pub fn write_to(&self, esmtp: bool, out: &mut Vec<u8>) {
        let last = self.lines.len().saturating_sub(1);
        for (i, line) in self.lines.iter().enumerate() {
            let separator = if i == last { ' ' } else { '-' };
            out.extend_from_slice(format!("{}{separator}", self.code).as_bytes());
            if let (true, Some(status)) = (esmtp, self.status) {
                out.extend_from_slice(status.as_bytes());
                out.push(b' ');
            }
            out.extend_from_slice(line.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
    }
}

/// What the connection does after a command.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Step {
    /// Send the reply and read the next command.
    Reply(Reply),
    /// Send the reply (354) and read the mail text.
    Data(Reply),
    /// Send the reply and close the connection.
    Close(Reply),
}

/// The conversation so far.
pub(super) struct Session<'a> {
    config: &'a ListenerConfig,
    helo: Option<String>,
    /// The client said EHLO (not HELO): enhanced status codes are written.
    esmtp: bool,
    mail_from: Option<String>,
    rcpt_to: Vec<String>,
    errors: u32,
}

impl<'a> Session<'a> {
    pub fn new(config: &'a ListenerConfig) -> Self {
        Self {
            config,
            helo: None,
            esmtp: false,
            mail_from: None,
            rcpt_to: Vec::new(),
            errors: 0,
        }
    }

    pub fn esmtp(&self) -> bool {
        self.esmtp
    }

    pub fn greeting(&self) -> Reply {
        Reply {
            code: 220,
            status: None,
            lines: vec![format!("{} ESMTP Switchboard", self.config.hostname).into()],
        }
    }

    /// 421 for a client that said nothing for too long (RFC 5321 §4.5.3.2).
    pub fn timed_out(&self) -> Reply {
        self.closing("4.4.2", "idle for too long, closing the connection")
    }

    /// 421 for a client still connected when the listener stops.
    pub fn shutting_down(&self) -> Reply {
        self.closing("4.3.2", "shutting down, try again later")
    }

    fn closing(&self, status: &'static str, text: &str) -> Reply {
        Reply::new(421, status, format!("{} {text}", self.config.hostname))
    }

    /// A command line longer than RFC 5321 §4.5.3.1.4 allows (1000 octets with CRLF).
    pub fn line_too_long(&mut self) -> Step {
        self.refuse(Reply::new(500, "5.5.2", "line too long"))
    }

    /// Answers one command line (without its line end).
    pub fn command(&mut self, line: &[u8]) -> Step {
        let command = match command::parse(line) {
            Ok(command) => command,
            Err(e) => return self.refuse(syntax_reply(e)),
        };
        match command {
            Command::Ehlo(name) => {
                self.reset();
                self.helo = Some(name);
                self.esmtp = true;
                let c = self.config;
                let lines = [
                    format!("{} greets you", c.hostname),
                    "PIPELINING".into(),
                    "8BITMIME".into(),
                    format!("SIZE {}", c.max_message_bytes),
                    "ENHANCEDSTATUSCODES".into(),
                    "HELP".into(),
                ];
                Step::Reply(Reply {
                    code: 250,
                    status: None,
                    lines: lines.into_iter().map(Cow::Owned).collect(),
                })
            }
            Command::Helo(name) => {
                self.reset();
                self.helo = Some(name);
                self.esmtp = false;
                Step::Reply(Reply {
                    code: 250,
                    status: None,
                    lines: vec![self.config.hostname.clone().into()],
                })
            }
            Command::Mail { from, size } => {
                if self.helo.is_none() {
                    return self.refuse(Reply::new(503, "5.5.1", "say EHLO or HELO first"));
                }
                if self.mail_from.is_some() {
                    return self.refuse(Reply::new(503, "5.5.1", "sender already given"));
                }
                if size.is_some_and(|size| size > self.config.max_message_bytes as u64) {
                    return Step::Reply(Reply::new(
                        552,
                        "5.3.4",
                        "message size exceeds the fixed maximum message size",
                    ));
                }
                self.mail_from = Some(from);
                Step::Reply(Reply::new(250, "2.1.0", "sender OK"))
            }
            Command::Rcpt { to } => {
                if self.mail_from.is_none() {
                    return self.refuse(Reply::new(503, "5.5.1", "need MAIL before RCPT"));
                }
                let to = if to.eq_ignore_ascii_case("postmaster") {
                    format!("postmaster@{}", self.config.domain)
                } else {
                    to
                };
                let ours = to
                    .rsplit_once('@')
                    .is_some_and(|(_, domain)| domain.eq_ignore_ascii_case(&self.config.domain));
                if !ours {
                    return self.refuse(Reply::new(550, "5.7.1", "relay denied"));
                }
                if self.rcpt_to.len() >= self.config.max_recipients {
                    // 452, not 552 (RFC 5321 §4.5.3.1.10): the client sends the rest in
                    // another transaction.
                    return Step::Reply(Reply::new(452, "4.5.3", "too many recipients"));
                }
                self.rcpt_to.push(to);
                Step::Reply(Reply::new(250, "2.1.5", "recipient OK"))
            }
            Command::Data => {
                if self.mail_from.is_none() {
                    return self.refuse(Reply::new(503, "5.5.1", "need MAIL before DATA"));
                }
                if self.rcpt_to.is_empty() {
                    // RFC 2920 §3.1: a pipelining client learns here that no RCPT succeeded.
                    return self.refuse(Reply::new(554, "5.5.1", "no valid recipients"));
                }
                Step::Data(Reply {
                    code: 354,
                    status: None,
                    lines: vec!["end data with <CR><LF>.<CR><LF>".into()],
                })
            }
            Command::Rset => {
                self.reset();
                Step::Reply(Reply::new(250, "2.0.0", "OK"))
            }
            Command::Noop => Step::Reply(Reply::new(250, "2.0.0", "OK")),
            Command::Quit => Step::Close(Reply::new(
                221,
                "2.0.0",
                format!("{} closing connection", self.config.hostname),
            )),
            Command::Vrfy => Step::Reply(Reply::new(
                252,
                "2.5.0",
                "cannot VRFY user, but will accept message and attempt delivery",
            )),
            Command::Help => Step::Reply(Reply::new(
                214,
                "2.0.0",
                "commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP",
            )),
            Command::NotImplemented => {
                self.refuse(Reply::new(502, "5.5.1", "command not implemented"))
            }
        }
    }

    /// The envelope of the mail just received; the transaction is over either way.
    pub fn take_envelope(&mut self, peer: std::net::SocketAddr) -> Envelope {
        Envelope {
            peer,
            helo: self.helo.clone().unwrap_or_default(),
            mail_from: self.mail_from.take().unwrap_or_default(),
            rcpt_to: std::mem::take(&mut self.rcpt_to),
        }
    }

    /// The mail was larger than the limit; the transaction is over.
    pub fn too_large(&mut self) -> Reply {
        self.reset();
        Reply::new(
            552,
            "5.3.4",
            "message size exceeds the fixed maximum message size",
        )
    }

    fn reset(&mut self) {
        self.mail_from = None;
        self.rcpt_to.clear();
    }

    /// Counts a refused command; past [`MAX_ERRORS`] the connection is closed.
    fn refuse(&mut self, reply: Reply) -> Step {
        self.errors += 1;
        if self.errors > MAX_ERRORS {
            return Step::Close(self.closing("4.7.0", "too many errors, closing the connection"));
        }
        Step::Reply(reply)
    }
}

/// The answer to `DATA`'s end, once the handler has returned. The handler's error text is
/// for the logs; the sender only learns whether to try again.
pub(super) fn delivered(outcome: &Result<(), HandlerError>) -> Reply {
    match outcome {
        Ok(()) => Reply::new(250, "2.0.0", "OK, recorded"),
        Err(HandlerError::Transient(_)) => {
            Reply::new(451, "4.3.0", "temporary failure, try again later")
        }
        Err(HandlerError::Permanent(_)) => Reply::new(554, "5.6.0", "message refused"),
    }
}

fn syntax_reply(e: SyntaxError) -> Reply {
    match e {
        SyntaxError::Unrecognized => Reply::new(500, "5.5.2", "syntax error, command unrecognized"),
        SyntaxError::Arguments => Reply::new(501, "5.5.4", "syntax error in arguments"),
        SyntaxError::Sender => Reply::new(501, "5.1.7", "bad sender address syntax"),
        SyntaxError::Recipient => Reply::new(501, "5.1.3", "bad recipient address syntax"),
        SyntaxError::Parameter => Reply::new(
            555,
            "5.5.4",
            "MAIL or RCPT parameter not recognized or not implemented",
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn config() -> ListenerConfig {
        ListenerConfig {
            max_message_bytes: 1000,
            max_recipients: 2,
            idle_timeout: Duration::from_secs(300),
            ..ListenerConfig::new("support.example", "mx.support.example")
        }
    }

    /// The wire text of the reply to each line, in order.
    fn replies(session: &mut Session<'_>, lines: &[&str]) -> Vec<String> {
        lines
            .iter()
            .map(|line| {
                let (Step::Reply(reply) | Step::Data(reply) | Step::Close(reply)) =
                    session.command(line.as_bytes());
                let mut out = Vec::new();
                reply.write_to(session.esmtp(), &mut out);
                String::from_utf8(out).unwrap()
            })
            .collect()
    }

    fn codes(session: &mut Session<'_>, lines: &[&str]) -> Vec<u16> {
        replies(session, lines)
            .iter()
            .map(|r| r[..3].parse().unwrap())
            .collect()
    }

    #[test]
    fn ehlo_advertises_the_extensions_and_the_size_limit() {
        let config = config();
        let mut session = Session::new(&config);
        assert_eq!(
            replies(&mut session, &["EHLO client.test"]),
            [
                "250-mx.support.example greets you\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
              250-SIZE 1000\r\n250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n"
            ]
        );
    }

    #[test]
    fn enhanced_status_codes_are_written_only_after_ehlo() {
        let config = config();
        let mut session = Session::new(&config);
        assert_eq!(
            replies(
                &mut session,
                &["HELO client", "NOOP", "EHLO client", "NOOP"]
            ),
            [
                "250 mx.support.example\r\n",
                "250 OK\r\n",
                "250-mx.support.example greets you\r\n250-PIPELINING\r\n250-8BITMIME\r\n\
                 250-SIZE 1000\r\n250-ENHANCEDSTATUSCODES\r\n250 HELP\r\n",
                "250 2.0.0 OK\r\n",
            ]
        );
    }

    #[test]
    fn a_whole_transaction_gives_its_envelope() {
        let config = config();
        let mut session = Session::new(&config);
        let first = codes(
            &mut session,
            &[
                "EHLO client.test",
                "MAIL FROM:<a@example.org> SIZE=100 BODY=8BITMIME",
                "RCPT TO:<Tok.X@SUPPORT.example>",
                "RCPT TO:<postmaster>",
                "DATA",
            ],
        );
        assert_eq!(first, [250, 250, 250, 250, 354]);
        let peer = "127.0.0.1:2525".parse().unwrap();
        assert_eq!(
            session.take_envelope(peer),
            Envelope {
                peer,
                helo: "client.test".into(),
                mail_from: "a@example.org".into(),
                rcpt_to: vec![
                    "Tok.X@SUPPORT.example".into(),
                    "postmaster@support.example".into()
                ],
            }
        );
        // The next transaction starts from nothing.
        assert_eq!(
            codes(&mut session, &["RCPT TO:<b@support.example>", "DATA"]),
            [503, 503]
        );
    }

    #[test]
    fn commands_out_of_order_get_503() {
        let config = config();
        let mut session = Session::new(&config);
        let codes = codes(
            &mut session,
            &[
                "MAIL FROM:<a@example.org>",
                "EHLO c",
                "RCPT TO:<x@support.example>",
                "DATA",
                "MAIL FROM:<a@example.org>",
                "MAIL FROM:<a@example.org>",
                "DATA",
            ],
        );
        assert_eq!(codes, [503, 250, 503, 503, 250, 503, 554]);
    }

    #[test]
    fn recipients_outside_the_domain_are_relay_denied() {
        let config = config();
        let mut session = Session::new(&config);
        let replies = replies(
            &mut session,
            &[
                "EHLO c",
                "MAIL FROM:<>",
                "RCPT TO:<x@elsewhere.example>",
                "RCPT TO:<x@sub.support.example>",
                "RCPT TO:<x@[127.0.0.1]>",
            ],
        );
        assert_eq!(replies[2..], ["550 5.7.1 relay denied\r\n"; 3]);
    }

    #[test]
    fn recipients_past_the_limit_get_452_and_the_rest_are_kept() {
        let config = config();
        let mut session = Session::new(&config);
        let codes = codes(
            &mut session,
            &[
                "EHLO c",
                "MAIL FROM:<a@example.org>",
                "RCPT TO:<x@support.example>",
                "RCPT TO:<y@support.example>",
                "RCPT TO:<z@support.example>",
            ],
        );
        assert_eq!(codes, [250, 250, 250, 250, 452]);
        let envelope = session.take_envelope("127.0.0.1:1".parse().unwrap());
        assert_eq!(envelope.rcpt_to, ["x@support.example", "y@support.example"]);
    }

    #[test]
    fn a_declared_size_over_the_limit_is_refused_at_mail() {
        let config = config();
        let mut session = Session::new(&config);
        let replies = replies(
            &mut session,
            &[
                "EHLO c",
                "MAIL FROM:<a@example.org> SIZE=1001",
                "MAIL FROM:<a@example.org> SIZE=1000",
            ],
        );
        assert_eq!(
            replies[1],
            "552 5.3.4 message size exceeds the fixed maximum message size\r\n"
        );
        assert_eq!(replies[2], "250 2.1.0 sender OK\r\n");
    }

    #[test]
    fn rset_ends_the_transaction_but_not_the_greeting() {
        let config = config();
        let mut session = Session::new(&config);
        let codes = codes(
            &mut session,
            &[
                "EHLO c",
                "MAIL FROM:<a@example.org>",
                "RSET",
                "DATA",
                "MAIL FROM:<a@example.org>",
            ],
        );
        assert_eq!(codes, [250, 250, 250, 503, 250]);
    }

    #[test]
    fn small_commands_answer_as_rfc_5321_says() {
        let config = config();
        let mut session = Session::new(&config);
        let codes = codes(
            &mut session,
            &[
                "NOOP",
                "VRFY someone",
                "HELP",
                "EXPN list",
                "STARTTLS",
                "FOO",
                "QUIT",
            ],
        );
        assert_eq!(codes, [250, 252, 214, 502, 502, 500, 221]);
        assert!(matches!(session.command(b"QUIT"), Step::Close(_)));
    }

    #[test]
    fn too_many_errors_close_the_connection() {
        let config = config();
        let mut session = Session::new(&config);
        for _ in 0..MAX_ERRORS {
            assert!(matches!(session.command(b"BOGUS"), Step::Reply(r) if r.code == 500));
        }
        assert!(matches!(session.command(b"BOGUS"), Step::Close(r) if r.code == 421));
    }

    #[test]
    fn the_handlers_answer_decides_the_reply_without_its_text() {
        let secret = "db password wrong for user admin".to_owned();
        let ok = delivered(&Ok(()));
        let transient = delivered(&Err(HandlerError::Transient(secret.clone())));
        let permanent = delivered(&Err(HandlerError::Permanent(secret.clone())));
        assert_eq!((ok.code, transient.code, permanent.code), (250, 451, 554));
        assert_eq!(transient.status, Some("4.3.0"));
        for reply in [transient, permanent] {
            assert!(!reply.lines.iter().any(|l| l.contains("password")));
        }
    }
}
