//! Email responders (issue 13, in progress): the parts of the connector, each tested on its
//! own (the network parts against a real Dovecot, `scripts/mail.sh`), before the connector
//! itself plugs them together and is registered.
//!
//! - [`compose`]: the mails Switchboard sends (offers, visitor messages), their headers built
//!   only from encoded values, threaded by Message-IDs of our own, DKIM-signed.
//! - [`inbound`]: what a reply means: which conversation (reply token, else `In-Reply-To` /
//!   `References`), whether it is an auto-reply or a bounce, and only the new text, quotes and
//!   signature stripped.
//! - [`config`]: the `[email]` section (SMTP, IMAP, DKIM key, batching window).
//! - [`smtp`]: sending a composed mail exactly as signed, errors sorted into retry-later and
//!   never-works.
//! - [`imap`]: the mailbox reader: every mail handed over at least once and flagged only
//!   after, IDLE between passes, reconnect and resync.
//! - [`auth`]: who really sent an inbound mail (SPF, DKIM, DMARC by mail-auth) and whether it
//!   may be relayed; never trusts `Authentication-Results` headers in the mail.

pub mod auth;
pub mod compose;
pub mod config;
pub mod imap;
pub mod inbound;
pub mod smtp;
