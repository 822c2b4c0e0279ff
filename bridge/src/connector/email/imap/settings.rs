//! Where the mailbox is and how it is read: the reader's settings, with their defaults and
//! the checks made before it starts.

use std::{fmt, time::Duration};

use super::ImapError;

/// How the connection to the IMAP server is protected.
///
/// Only plain TCP exists for now: TLS (implicit, port 993) needs `tokio-rustls` as a direct
/// dependency of this crate, which it is not yet. Until then, use it on loopback or over a
/// tunnel only: the password crosses the connection as written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum ImapTls {
    /// Plain TCP, no TLS, no STARTTLS.
    None,
}

/// Where the mailbox is and how it is read.
#[derive(Clone)]
pub struct ImapConfig {
    pub host: String,
    pub port: u16,
    pub tls: ImapTls,
    /// The IMAP login (often the full address).
    pub username: String,
    /// Never printed: [`fmt::Debug`] leaves it out.
    pub password: String,
    /// The mailbox read, `INBOX` by default.
    pub mailbox: String,
    /// Set (with `\Seen`) on a mail once the handler took it. `$SwitchboardRecorded` by default.
    pub done_keyword: String,
    /// Set on a mail the handler refused for good. `$SwitchboardRefused` by default.
    pub refused_keyword: String,
    /// How long one IDLE lasts before it is ended, the mailbox searched again and IDLE
    /// re-issued. RFC 2177 asks for less than 29 minutes; 10 minutes by default, which also
    /// bounds how long a connection that died silently (a NAT forgetting it) goes unnoticed.
    pub idle_renewal: Duration,
    /// How long one command (connect, login, search, fetch, store, leaving IDLE) may take
    /// before the connection counts as dead. 60 s by default.
    pub command_timeout: Duration,
    /// The first pause after a failure (reconnecting, or retrying a mail the handler could
    /// not take); it doubles up to [`MAX_RETRY_DELAY`]. 500 ms by default.
    pub retry_min: Duration,
    /// How many transient failures in a row move a mail behind the ones that came after it.
    /// Until then a failing mail is retried first, so a responder's mails keep their order
    /// through a store outage; the retries back off, so the default of 10 is minutes of a
    /// store that stays away, not a short outage.
    pub failures_before_last: u32,
}

/// The longest pause between two reconnection attempts, or two tries of a failing mail.
pub const MAX_RETRY_DELAY: Duration = Duration::from_secs(60);

impl ImapConfig {
    /// A configuration with the defaults above.
    pub fn new(
        host: impl Into<String>,
        port: u16,
        tls: ImapTls,
        username: impl Into<String>,
        password: impl Into<String>,
    ) -> Self {
        Self {
            host: host.into(),
            port,
            tls,
            username: username.into(),
            password: password.into(),
            mailbox: "INBOX".into(),
            done_keyword: "$SwitchboardRecorded".into(),
            refused_keyword: "$SwitchboardRefused".into(),
            idle_renewal: Duration::from_secs(10 * 60),
            command_timeout: Duration::from_secs(60),
            retry_min: Duration::from_millis(500),
            failures_before_last: 10,
        }
    }

    /// The keywords are written into commands as they are, so each must be an IMAP atom;
    /// and they must differ, or a refused mail would look recorded.
    pub(super) fn validate(&self) -> Result<(), ImapError> {
        for keyword in [&self.done_keyword, &self.refused_keyword] {
            let atom = !keyword.is_empty()
                && keyword
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"(){%*\"\\]".contains(&b));
            if !atom {
                return Err(ImapError::Config(format!(
                    "{keyword:?} is not an IMAP keyword (printable ASCII, no spaces, none of (){{%*\"\\])"
                )));
            }
        }
        if self
            .done_keyword
            .eq_ignore_ascii_case(&self.refused_keyword)
        {
            return Err(ImapError::Config(
                "the done and refused keywords must differ".into(),
            ));
        }
        if self.idle_renewal.is_zero() || self.idle_renewal >= Duration::from_secs(29 * 60) {
            return Err(ImapError::Config(
                "idle_renewal must be above zero and below 29 minutes (RFC 2177)".into(),
            ));
        }
        Ok(())
    }
}

impl fmt::Debug for ImapConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ImapConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .field("mailbox", &self.mailbox)
            .field("done_keyword", &self.done_keyword)
            .field("refused_keyword", &self.refused_keyword)
            .field("idle_renewal", &self.idle_renewal)
            .field("command_timeout", &self.command_timeout)
            .field("retry_min", &self.retry_min)
            .field("failures_before_last", &self.failures_before_last)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ImapConfig {
        ImapConfig::new(
            "imap.example.test",
            143,
            ImapTls::None,
            "relay@example.test",
            "hunter2-secret",
        )
    }

    #[test]
    fn debug_output_never_shows_the_password() {
        let printed = format!("{:?}", config());
        assert!(!printed.contains("hunter2-secret"), "{printed}");
        assert!(printed.contains("relay@example.test"));
        assert!(printed.contains("<redacted>"));
    }

    #[test]
    fn defaults_read_the_inbox_and_renew_idle_well_before_29_minutes() {
        let c = config();
        assert_eq!(c.mailbox, "INBOX");
        assert_eq!(c.done_keyword, "$SwitchboardRecorded");
        assert_eq!(c.refused_keyword, "$SwitchboardRefused");
        assert!(c.idle_renewal < Duration::from_secs(29 * 60));
        assert!(c.validate().is_ok());
    }

    #[test]
    fn keywords_that_would_break_the_command_are_refused() {
        for bad in ["", "two words", "(x", "$Seen)", "a\"b", "\\Seen", "ünï"] {
            let mut c = config();
            c.done_keyword = bad.into();
            assert!(c.validate().is_err(), "{bad:?} was accepted");
        }
        let mut c = config();
        c.refused_keyword = c.done_keyword.to_lowercase();
        assert!(c.validate().is_err(), "equal keywords were accepted");
    }

    #[test]
    fn idle_renewal_must_stay_below_29_minutes() {
        let mut c = config();
        c.idle_renewal = Duration::from_secs(29 * 60);
        assert!(c.validate().is_err());
        c.idle_renewal = Duration::ZERO;
        assert!(c.validate().is_err());
    }
}
