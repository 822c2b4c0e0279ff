//! Who really sent an inbound mail: SPF, DKIM and DMARC, evaluated by mail-auth against DNS,
//! and whether the result lets the mail be relayed to a visitor.
//!
//! A reply from a responder is relayed only when its author is authenticated: anyone can write
//! `From: responder@example.org`. DMARC ties the visible From domain to a DKIM signature or an
//! SPF-checked envelope sender of the same domain, and the domain's published policy says what
//! to do with a mail that has neither. [`Verdict::decide`] applies that policy; comparing the
//! authenticated [`Verdict::from_address`] with the responder's address is the caller's part.
//!
//! What is trusted, and what is not:
//! - **The From address** is the one mail-auth's DMARC check reads
//!   ([`AuthenticatedMessage::froms`]), so the address the caller compares with the responder's
//!   is exactly the one DMARC authenticated. The caller must take the author from
//!   [`Verdict::from_address`], not from its own parse of the mail (mail-parser could read a
//!   malformed header differently).
//! - **Several From addresses** (one field listing two, or two From fields) are refused: DMARC
//!   exempts a From with several domains from checking (RFC 7489 section 6.6.1) and with one
//!   domain it authenticates the domain, not which of the addresses wrote the mail, so no one
//!   responder can be said to be its author. No From address, or one without a domain, is
//!   refused too.
//! - **`Authentication-Results` headers in the mail are never read**, nor ARC sets (mail-auth's
//!   `arc` feature is off): they are whatever the sender or any relay on the way wrote. Only
//!   results computed here, from DNS, count.

use std::net::{IpAddr, SocketAddr};

use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::system_conf::read_system_conf;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DkimResult, DmarcOutput, DmarcResult, MessageAuthenticator,
    SpfOutput, SpfResult, dmarc::verify::DmarcParameters,
};

/// The receiving host's name in SPF: only used when a domain's SPF record expands the `%{r}`
/// macro (in explanations), never compared with anything.
const RECEIVER: &str = "switchboard.invalid";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("cannot set up the DNS resolver: {0}")]
    Resolver(String),
}

/// The SMTP session a mail came in on, as the embedded SMTP listener saw it.
#[derive(Clone, Debug)]
pub struct SmtpPeer {
    /// The client's IP address.
    pub ip: IpAddr,
    /// The name it gave in HELO/EHLO.
    pub helo: String,
    /// The envelope sender (MAIL FROM), without angle brackets; empty for a bounce (`<>`).
    pub mail_from: String,
}

/// Checks mails' SPF, DKIM and DMARC. Built once and shared (`Arc`): it holds the resolver and
/// its cache. `Send + Sync`.
#[derive(Clone)]
pub struct Authenticator {
    inner: MessageAuthenticator,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator").finish_non_exhaustive()
    }
}

impl Authenticator {
    /// `nameservers` empty: the system resolver (`/etc/resolv.conf`); else these (UDP, and TCP
    /// for answers too long for UDP), e.g. `127.0.0.1:5353`. Does no I/O but reading
    /// `/etc/resolv.conf`; an unreachable server shows later, as [`Refusal::TryLater`].
    pub fn new(nameservers: &[SocketAddr]) -> Result<Self, AuthError> {
        Self::build(nameservers, None)
    }

    /// As [`Self::new`], each query given up after `timeout` and not retried (hickory's
    /// default: 5 s, two attempts): for tests of a server that never answers.
    #[cfg(test)]
    pub(crate) fn with_timeout(
        nameservers: &[SocketAddr],
        timeout: std::time::Duration,
    ) -> Result<Self, AuthError> {
        Self::build(nameservers, Some(timeout))
    }

    fn build(
        nameservers: &[SocketAddr],
        timeout: Option<std::time::Duration>,
    ) -> Result<Self, AuthError> {
        let (config, mut options) = if nameservers.is_empty() {
            read_system_conf().map_err(|error| AuthError::Resolver(error.to_string()))?
        } else {
            let servers = nameservers
                .iter()
                .map(|address| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = address.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = address.port();
                    NameServerConfig::new(address.ip(), true, vec![udp, tcp])
                })
                .collect();
            (
                ResolverConfig::from_name_servers(servers),
                ResolverOpts::default(),
            )
        };
        if let Some(timeout) = timeout {
            options.timeout = timeout;
            options.attempts = 1;
        }
        let inner = MessageAuthenticator::new(config, options)
            .map_err(|error| AuthError::Resolver(error.to_string()))?;
        Ok(Self { inner })
    }

    /// Evaluates DKIM, SPF (only when `peer` is known: the embedded SMTP listener knows the
    /// client's IP, HELO and MAIL FROM; mail fetched over IMAP has none) and DMARC for the raw
    /// RFC 5322 mail. Does DNS lookups (each bounded by the resolver's timeout); never fails:
    /// a lookup that fails is a temporary error in the verdict. Any bytes are accepted.
    pub async fn check(&self, raw: &[u8], peer: Option<&SmtpPeer>) -> Verdict {
        let Some(message) = AuthenticatedMessage::parse(raw) else {
            // No header at all: nothing to authenticate, and no author.
            return Verdict {
                from: Vec::new(),
                dkim: DkimOutcome::default(),
                spf: SpfOutcome::NotChecked,
                dmarc: DmarcOutcome::NotChecked,
            };
        };
        let from = message.froms().to_vec();

        let dkim_outputs = self.inner.verify_dkim(&message).await;
        let dkim = DkimOutcome::new(&dkim_outputs);

        let (spf_output, mail_from_domain) = match peer {
            Some(peer) => self.spf(peer).await,
            None => (SpfOutput::default(), String::new()),
        };
        let spf = match peer {
            Some(_) => SpfOutcome::Checked {
                result: spf_output.result(),
                domain: spf_output.domain().to_owned(),
            },
            None => SpfOutcome::NotChecked,
        };

        // DMARC only for a mail with one author whose domain it can look up: for any other,
        // `decide` refuses before it would look at DMARC (and mail-auth would answer "no
        // policy" for a From without a domain, which must not read as "relay").
        let dmarc = if single_domain(&from).is_some() {
            let output = self
                .inner
                .verify_dmarc(DmarcParameters::new(
                    &message,
                    &dkim_outputs,
                    &mail_from_domain,
                    &spf_output,
                ))
                .await;
            DmarcOutcome::new(&output)
        } else {
            DmarcOutcome::NotChecked
        };

        Verdict {
            from,
            dkim,
            spf,
            dmarc,
        }
    }

    /// SPF of the envelope sender, or of the HELO name for a bounce (null sender, RFC 7208
    /// section 2.4), and the domain DMARC aligns with it. The HELO name of a mail that has a
    /// sender is not checked: RFC 7208 only recommends it, and DMARC uses the sender's domain.
    async fn spf(&self, peer: &SmtpPeer) -> (SpfOutput, String) {
        let mail_from = peer
            .mail_from
            .trim()
            .trim_start_matches('<')
            .trim_end_matches('>');
        let helo = peer.helo.trim();
        match mail_from.rsplit_once('@') {
            Some((_, domain)) if !domain.is_empty() => {
                let output = self
                    .inner
                    .verify_spf(SpfParameters::verify_mail_from(
                        peer.ip, helo, RECEIVER, mail_from,
                    ))
                    .await;
                (output, domain.to_lowercase())
            }
            _ => {
                let output = self
                    .inner
                    .verify_spf(SpfParameters::verify_ehlo(peer.ip, helo, RECEIVER))
                    .await;
                (output, helo.to_lowercase())
            }
        }
    }
}

/// The domain of the one From address, when there is exactly one and it has a domain.
fn single_domain(from: &[String]) -> Option<&str> {
    match from {
        [address] => address
            .rsplit_once('@')
            .map(|(_, domain)| domain)
            .filter(|domain| !domain.is_empty()),
        _ => None,
    }
}

/// What the checks found. Built by [`Authenticator::check`]; the fields are public so the
/// held-mail record can keep them and tests can build any verdict.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// Every address of the mail's From field(s), lowercased, as DMARC read them.
    pub from: Vec<String>,
    pub dkim: DkimOutcome,
    pub spf: SpfOutcome,
    pub dmarc: DmarcOutcome,
}

/// The DKIM signatures of a mail, by their signing domain (`d=`; `?` for a signature too
/// malformed to name one). A mail may carry several; one that passes is enough for DMARC when
/// its domain aligns with the From domain.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DkimOutcome {
    pub pass: Vec<String>,
    pub fail: Vec<String>,
    /// The key could not be fetched for now.
    pub temp_error: Vec<String>,
}

impl DkimOutcome {
    fn new(outputs: &[DkimOutput<'_>]) -> Self {
        let mut outcome = Self::default();
        for output in outputs {
            let domain = output
                .signature()
                .map_or_else(|| "?".to_owned(), |signature| signature.d.to_lowercase());
            match output.result() {
                DkimResult::Pass => outcome.pass.push(domain),
                DkimResult::TempError(_) => outcome.temp_error.push(domain),
                DkimResult::Fail(_) | DkimResult::PermError(_) | DkimResult::Neutral(_) => {
                    outcome.fail.push(domain);
                }
                DkimResult::None => {}
            }
        }
        outcome
    }
}

/// SPF of the SMTP client for the envelope sender's domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SpfOutcome {
    /// No SMTP session known (mail read over IMAP).
    NotChecked,
    Checked {
        result: SpfResult,
        domain: String,
    },
}

/// The DMARC result for the From domain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DmarcOutcome {
    /// An aligned DKIM signature or SPF pass.
    Pass,
    /// Neither; `policy` is what the domain asks receivers to do with such mail (for a
    /// subdomain without a record of its own, its organisational domain's `sp`/`np`).
    Fail { policy: Policy },
    /// The domain publishes no DMARC record.
    NoRecord,
    /// A DNS lookup failed for now (the record, or a key or SPF record that could decide it).
    TempError,
    /// The From domain cannot be looked up (not a valid DNS name).
    PermError,
    /// Not evaluated: the mail has no single From address with a domain.
    NotChecked,
}

impl DmarcOutcome {
    fn new(output: &DmarcOutput) -> Self {
        match output.result() {
            DmarcResult::Pass => Self::Pass,
            DmarcResult::TempError(_) => Self::TempError,
            DmarcResult::None => Self::NoRecord,
            // Only the record lookup gives a permanent error (a From domain that is no DNS
            // name); alignment failures are `Fail`, with the record.
            DmarcResult::PermError(_) if output.dmarc_record().is_none() => Self::PermError,
            DmarcResult::Fail(_) | DmarcResult::PermError(_) => Self::Fail {
                policy: match output.policy() {
                    mail_auth::dmarc::Policy::Reject => Policy::Reject,
                    mail_auth::dmarc::Policy::Quarantine => Policy::Quarantine,
                    // A record without a valid `p` applies as `none` (mail-auth returns no
                    // record at all when it applies as nothing).
                    mail_auth::dmarc::Policy::None | mail_auth::dmarc::Policy::Unspecified => {
                        Policy::None
                    }
                },
            },
        }
    }
}

/// A domain's DMARC policy (`p=`), already lowered one step by mail-auth in test mode (`t=y`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Policy {
    None,
    Quarantine,
    Reject,
}

impl std::fmt::Display for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Policy::None => "none",
            Policy::Quarantine => "quarantine",
            Policy::Reject => "reject",
        })
    }
}

/// Why a mail is not relayed: for logs and the held-mail record.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the mail has {count} From addresses; exactly one is needed to know its author")]
    NoSingleAuthor { count: usize },
    #[error("the From address {address:?} has no domain")]
    AuthorWithoutDomain { address: String },
    #[error("DMARC fails for {domain} and its policy is p={policy}")]
    DmarcFail { domain: String, policy: Policy },
    /// The From domain is no DNS name one can look up (or the verdict was never checked).
    #[error("DMARC cannot be evaluated for {domain}")]
    DmarcPermError { domain: String },
    /// A DNS lookup failed for now: the caller keeps the mail and checks it again later (an
    /// IMAP mail stays unflagged; SMTP answers 4xx).
    #[error("a DNS lookup failed for now; check the mail again later")]
    TryLater,
}

impl Verdict {
    /// The one authenticated-or-not author, lowercased: `None` when the mail has no From
    /// address or several. The caller compares it with the responder's address.
    pub fn from_address(&self) -> Option<&str> {
        match self.from.as_slice() {
            [address] => Some(address),
            _ => None,
        }
    }

    /// The domain of [`Self::from_address`].
    pub fn from_domain(&self) -> Option<&str> {
        single_domain(&self.from)
    }

    /// Whether the mail may be relayed: `Ok`, or `Err(Refusal)` saying why.
    ///
    /// Refused: no single From address with a domain; DMARC fails and the domain's policy is
    /// quarantine or reject (we have no spam folder to quarantine into: holding is ours);
    /// DMARC fails with `p=none` only when `strict`. Relayed: DMARC passes, or the domain has
    /// no DMARC record (its owner asked for nothing; the DKIM and SPF results go to the log).
    /// A temporary DNS error is [`Refusal::TryLater`], never a pass nor a final refusal.
    pub fn decide(&self, strict: bool) -> Result<(), Refusal> {
        let Some(address) = self.from_address() else {
            return Err(Refusal::NoSingleAuthor {
                count: self.from.len(),
            });
        };
        let Some(domain) = self.from_domain() else {
            return Err(Refusal::AuthorWithoutDomain {
                address: address.to_owned(),
            });
        };
        match &self.dmarc {
            DmarcOutcome::Pass | DmarcOutcome::NoRecord => Ok(()),
            DmarcOutcome::Fail {
                policy: Policy::None,
            } if !strict => Ok(()),
            DmarcOutcome::Fail { policy } => Err(Refusal::DmarcFail {
                domain: domain.to_owned(),
                policy: *policy,
            }),
            DmarcOutcome::TempError => Err(Refusal::TryLater),
            // `check` evaluates DMARC for every mail with a single From domain; a verdict built
            // otherwise and never checked must not pass.
            DmarcOutcome::PermError | DmarcOutcome::NotChecked => Err(Refusal::DmarcPermError {
                domain: domain.to_owned(),
            }),
        }
    }

    /// A one-line summary for logs, e.g. `dkim=pass (responders.test) spf=none (responders.test)
    /// dmarc=fail p=reject`. Holds domains, never a local part.
    pub fn summary(&self) -> String {
        let dkim = &self.dkim;
        let (result, domains) = if !dkim.pass.is_empty() {
            ("pass", &dkim.pass)
        } else if !dkim.temp_error.is_empty() {
            ("temperror", &dkim.temp_error)
        } else if !dkim.fail.is_empty() {
            ("fail", &dkim.fail)
        } else {
            ("none", &dkim.fail)
        };
        let mut line = format!("dkim={result}");
        if !domains.is_empty() {
            line.push_str(&format!(" ({})", domains.join(" ")));
        }
        match &self.spf {
            SpfOutcome::NotChecked => line.push_str(" spf=skipped"),
            SpfOutcome::Checked { result, domain } => {
                line.push_str(" spf=");
                line.push_str(spf_name(*result));
                if !domain.is_empty() {
                    line.push_str(&format!(" ({domain})"));
                }
            }
        }
        line.push_str(match self.dmarc {
            DmarcOutcome::Pass => " dmarc=pass",
            DmarcOutcome::Fail { .. } => " dmarc=fail",
            DmarcOutcome::NoRecord => " dmarc=none",
            DmarcOutcome::TempError => " dmarc=temperror",
            DmarcOutcome::PermError => " dmarc=permerror",
            DmarcOutcome::NotChecked => " dmarc=skipped",
        });
        if let DmarcOutcome::Fail { policy } = self.dmarc {
            line.push_str(&format!(" p={policy}"));
        }
        line
    }
}

fn spf_name(result: SpfResult) -> &'static str {
    match result {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

#[cfg(test)]
mod tests;
