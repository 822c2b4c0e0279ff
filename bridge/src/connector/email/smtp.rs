//! Sending our mails over SMTP (lettre), and what a failure means for the caller.
//!
//! A mail goes out as the exact bytes the composer wrote ([`Composed::formatted`]) with the
//! composer's envelope (`MAIL FROM:<bounce+ID@domain>`), through lettre's `send_raw`: what was
//! DKIM-signed is what is sent, and bounces come back to the address that names the mail.
//!
//! **Failures.** An SMTP 4xx answer, a refused or dropped connection, a TLS failure and a
//! timeout are [`ConnectorError::Transient`]: try again later. A 5xx answer is
//! [`ConnectorError::Permanent`] (the caller hands the conversation over), except a 5xx that
//! says the mail is too big (enhanced status 5.3.4 or 5.2.3), which is
//! [`ConnectorError::FileTooLarge`]: the words can still go, the files as links. lettre's own
//! refusals before anything is sent (no AUTH mechanism in common, STARTTLS required but not
//! offered) are permanent too: only the configuration or the server's can change them.
//!
//! **Secrets.** Error texts may quote the server's answer; the password, and the forms in
//! which AUTH PLAIN and LOGIN send it, are cut out of them in case a server echoes them.
//!
//! Each send opens its own connection (lettre's pool feature is off): mails go out a few a
//! minute, and a fresh connection cannot have been closed by the server while idle.

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::compose::Composed;
use super::config::{Security, SmtpSettings};
use crate::connector::ConnectorError;

/// How long connecting (TCP, and TLS for `tls`) may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long one whole send may take, greeting to the answer after the data. lettre bounds only
/// the connect; without this a server that stops answering would hold the caller forever. A
/// mail of 10 MiB of files is about 14 MB on the wire: 2 minutes is over 900 kbit/s.
pub(super) const SEND_TIMEOUT: Duration = Duration::from_secs(120);

/// Sends our mails to one SMTP server. `Send + Sync`; build once and share.
pub struct Sender {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// `host:port`, for error messages.
    server: String,
    send_timeout: Duration,
    /// Texts cut out of every error message (the password and its encodings).
    secrets: Vec<String>,
}

impl std::fmt::Debug for Sender {
    // Not derived: lettre's transport would print its settings; this says only where to.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("server", &self.server)
            .finish_non_exhaustive()
    }
}

impl Sender {
    /// A sender for `settings`. Connects to nothing yet: a server that is down shows at the
    /// first send, as a transient error.
    pub fn new(settings: &SmtpSettings) -> Result<Self, String> {
        Self::with_timeouts(settings, CONNECT_TIMEOUT, SEND_TIMEOUT)
    }

    fn with_timeouts(
        settings: &SmtpSettings,
        connect_timeout: Duration,
        send_timeout: Duration,
    ) -> Result<Self, String> {
        let host = settings.host.as_str();
        let builder = match settings.security {
            Security::None => AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host),
            Security::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                .map_err(|e| format!("SMTP server {host:?}: {e}"))?,
            Security::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                .map_err(|e| format!("SMTP server {host:?}: {e}"))?,
        };
        let mut builder = builder.port(settings.port).timeout(Some(connect_timeout));
        let mut secrets = Vec::new();
        if let Some(login) = &settings.credentials {
            if settings.security == Security::None && !is_loopback(host) {
                tracing::warn!(
                    server = %host,
                    "email.smtp.security is \"none\": the SMTP password crosses the network unencrypted"
                );
            }
            let password = login.password.expose();
            if !password.is_empty() {
                secrets.push(password.to_owned());
                // AUTH LOGIN sends it alone in base64, AUTH PLAIN with the username.
                secrets.push(BASE64.encode(password));
                secrets.push(BASE64.encode(format!("\0{}\0{password}", login.username)));
            }
            builder = builder.credentials(Credentials::new(
                login.username.clone(),
                password.to_owned(),
            ));
        }
        Ok(Sender {
            transport: builder.build(),
            server: format!("{host}:{}", settings.port),
            send_timeout,
            secrets,
        })
    }

    /// Sends `composed` as it was written (its `formatted` bytes, its envelope). Returns once
    /// the server has accepted the mail (`250` after the data), or with what its failure means
    /// (see the module's doc). Takes at most about two minutes; does not retry. Not
    /// idempotent: a mail whose acceptance was lost to a timeout may arrive twice.
    pub async fn send(&self, composed: &Composed) -> Result<(), ConnectorError> {
        let sending = self
            .transport
            .send_raw(&composed.envelope, &composed.formatted);
        match tokio::time::timeout(self.send_timeout, sending).await {
            Ok(Ok(_response)) => {
                tracing::debug!(
                    message_id = composed.message_id.as_str(),
                    "the SMTP server accepted the mail"
                );
                Ok(())
            }
            Ok(Err(error)) => Err(self.failure(&error)),
            Err(_elapsed) => Err(ConnectorError::Transient(format!(
                "SMTP {}: no answer within {} s",
                self.server,
                self.send_timeout.as_secs_f32()
            ))),
        }
    }

    /// Connects, greets and authenticates (where credentials are configured) as a send
    /// would, then says NOOP and QUIT: sends nothing. For `switchboard check-config`.
    pub async fn check(&self) -> Result<String, ConnectorError> {
        match tokio::time::timeout(self.send_timeout, self.transport.test_connection()).await {
            Ok(Ok(true)) => Ok(format!(
                "SMTP {}: connected{}",
                self.server,
                if self.secrets.is_empty() {
                    ""
                } else {
                    ", AUTH accepted"
                }
            )),
            Ok(Ok(false)) => Err(ConnectorError::Transient(format!(
                "SMTP {}: the server did not answer NOOP",
                self.server
            ))),
            Ok(Err(error)) => Err(self.failure(&error)),
            Err(_elapsed) => Err(ConnectorError::Transient(format!(
                "SMTP {}: no answer within {} s",
                self.server,
                self.send_timeout.as_secs_f32()
            ))),
        }
    }

    /// What `error` means for the caller, its text cleaned of the password.
    fn failure(&self, error: &lettre::transport::smtp::Error) -> ConnectorError {
        let mut text = format!("SMTP {}: {error}", self.server);
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        match classify(error) {
            Failure::Transient => ConnectorError::Transient(text),
            Failure::Permanent => ConnectorError::Permanent(text),
            Failure::TooLarge => ConnectorError::FileTooLarge(text),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    Transient,
    Permanent,
    TooLarge,
}

fn classify(error: &lettre::transport::smtp::Error) -> Failure {
    if error.is_transient() {
        return Failure::Transient;
    }
    if error.is_permanent() {
        return if is_too_large(error) {
            Failure::TooLarge
        } else {
            Failure::Permanent
        };
    }
    // lettre refused before or without a server's answer for reasons that stay until the
    // configuration changes: no AUTH mechanism in common, STARTTLS required and not offered.
    if error.is_client() {
        return Failure::Permanent;
    }
    // Connection refused or dropped, TLS handshake failed, connect timed out, or an answer
    // that could not be read: the server or the network, which may recover.
    Failure::Transient
}

/// A 5xx answer whose enhanced status code (RFC 3463, the first word of the text) says the
/// message is too big: 5.3.4 "message too big for system", 5.2.3 "message length exceeds
/// administrative limit". Not a bare 552: that is a full mailbox as often as a size limit.
fn is_too_large(error: &lettre::transport::smtp::Error) -> bool {
    use std::error::Error as _;
    let text = error.source().map(ToString::to_string).unwrap_or_default();
    error.is_permanent() && matches!(text.split_whitespace().next(), Some("5.3.4" | "5.2.3"))
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests;
