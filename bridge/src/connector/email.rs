//! Email responders (issue 13, in progress): the parts of the connector that need no network,
//! each tested on its own, before the connector itself plugs them together.
//!
//! - [`compose`]: the mails Switchboard sends (offers, visitor messages), their headers built
//!   only from encoded values, threaded by Message-IDs of our own, DKIM-signed.
//! - [`inbound`]: what a reply means: which conversation (reply token, else `In-Reply-To` /
//!   `References`), whether it is an auto-reply, and only the new text, quotes and signature
//!   stripped.

pub mod compose;
pub mod config;
pub mod inbound;
pub mod smtp;
