//! Header values built from text we do not control, and the IDs and addresses we mint.
//!
//! Every header value that holds someone's text goes through [`header_text`] first (no control
//! character, so no CR or LF, can reach a header) and then through lettre's encoders: a
//! `Mailbox` name is written as an atom, a quoted string or RFC 2047 encoded-words, a subject
//! by [`SafeSubject`]. Everything else in our headers is an ID, token or address we generated
//! or checked against a strict grammar here.

use std::fmt;

use email_encoding::headers::{rfc2047, writer::EmailWriter};
use lettre::message::header::{Header, HeaderName, HeaderValue};
use rand::RngCore;

use crate::format::truncate_chars;

/// At most this many characters of a topic's name reach a header.
pub const MAX_TOPIC_CHARS: usize = 100;
/// At most this many characters of a visitor's pseudonym reach a header.
pub const MAX_PSEUDONYM_CHARS: usize = 64;
/// At most this many characters of a responder's display name reach a header.
pub const MAX_NAME_CHARS: usize = 100;

/// `text` fit for a header: every control character (CR, LF, tab, NUL, escape, U+0085) and
/// the Unicode line and paragraph separators become a space, runs of whitespace one space,
/// trimmed, then cut to `max_chars` (with "…").
///
/// Whitespace is collapsed because header folding and unfolding do not keep it anyway: what
/// a reader decodes is then exactly what this returns.
pub fn header_text(text: &str, max_chars: usize) -> String {
    let mut clean = String::with_capacity(text.len());
    for word in text
        .split(|c: char| {
            c.is_control() || c.is_whitespace() || matches!(c, '\u{2028}' | '\u{2029}')
        })
        .filter(|word| !word.is_empty())
    {
        if !clean.is_empty() {
            clean.push(' ');
        }
        clean.push_str(word);
    }
    truncate_chars(&clean, max_chars)
}

/// `Subject`, written so that nothing in it reads as anything but text.
///
/// lettre's `Subject` writes a word of plain ASCII as it is; a visitor's or topic's word
/// that looks like an encoded-word (`=?utf-8?q?…?=`) would then be decoded by every reader,
/// showing text that is not what we were given. A subject holding `=?` is therefore written
/// wholly as encoded-words, by the encoder lettre itself uses. Build it from [`header_text`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SafeSubject(String);

impl SafeSubject {
    pub fn new(text: String) -> Self {
        debug_assert!(!text.chars().any(char::is_control));
        SafeSubject(text)
    }
}

impl Header for SafeSubject {
    fn name() -> HeaderName {
        HeaderName::new_from_ascii_str("Subject")
    }

    fn parse(s: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        Ok(SafeSubject(header_text(s, usize::MAX)))
    }

    fn display(&self) -> HeaderValue {
        if !self.0.contains("=?") {
            return HeaderValue::new(Self::name(), self.0.clone());
        }
        let mut encoded = String::new();
        {
            let mut writer = EmailWriter::new(&mut encoded, "Subject: ".len(), 0, false);
            rfc2047::encode(&self.0, &mut writer).expect("writing to a String does not fail");
        }
        // Pre-encoded: the encoder wrote only `=?utf-8?b?…?=` words (base64) and CRLF + space
        // folds.
        HeaderValue::dangerous_new_pre_encoded(Self::name(), self.0.clone(), encoded)
    }
}

/// A `Message-ID` (`<local@domain>`), either minted by [`MessageId::generate`] or read back
/// from our store by [`MessageId::parse`], which accepts only IDs of the shape we mint, so a
/// malformed or hostile value cannot reach `In-Reply-To` or `References`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct MessageId(String);

/// Random bytes in a Message-ID we mint: 160 bits, written as 40 lowercase hex digits
/// (lowercase so that a bounce address built from it survives a mail server that folds
/// case).
const ID_RANDOM_BYTES: usize = 20;

/// Longest ID accepted back: RFC 5322's line limit leaves room for far more, but nothing we
/// mint comes near it.
const MAX_ID_LEN: usize = 250;

impl MessageId {
    /// A fresh ID at `domain`: random, so it says nothing about the room, event or visitor
    /// it belongs to.
    pub(crate) fn generate(domain: &str) -> Self {
        let mut bytes = [0u8; ID_RANDOM_BYTES];
        rand::thread_rng().fill_bytes(&mut bytes);
        let local: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        MessageId(format!("<{local}@{domain}>"))
    }

    /// The ID of the mail that carries `key` (the visitor's events it relays and the part),
    /// the same each time it is composed: a mail the SMTP server accepted just before
    /// Switchboard died, before the send was recorded, goes out again after the restart (SMTP
    /// has no idempotency key) with the first one's ID, so a client that folds copies of one
    /// Message-ID (Gmail does) shows one. A hash of the key: like a random ID it says nothing
    /// about the room, event or visitor, and it has as many bits.
    pub(crate) fn derived(domain: &str, key: &str) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(format!("switchboard mail {key}").as_bytes());
        let local: String = digest[..ID_RANDOM_BYTES]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        MessageId(format!("<{local}@{domain}>"))
    }

    /// An ID as stored (`<local@domain>`), if it is one: the local part of letters, digits
    /// and `. - _ + =`, the domain of letters, digits, `.` and `-`.
    pub fn parse(id: &str) -> Option<Self> {
        let inner = id.strip_prefix('<')?.strip_suffix('>')?;
        let (local, domain) = inner.split_once('@')?;
        let local_ok = !local.is_empty()
            && local
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '+' | '='));
        (id.len() <= MAX_ID_LEN && local_ok && is_domain(domain)).then(|| MessageId(id.to_owned()))
    }

    /// The ID with its angle brackets, as written in headers.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@`, without the bracket.
    pub(crate) fn local_part(&self) -> &str {
        let inner = &self.0[1..self.0.len() - 1];
        inner.split_once('@').map_or(inner, |(local, _)| local)
    }
}

impl fmt::Display for MessageId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Whether `domain` is a plain DNS name (labels of letters, digits and inner hyphens).
pub(crate) fn is_domain(domain: &str) -> bool {
    (1..=253).contains(&domain.len())
        && domain.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
}

/// Longest token in `reply+TOKEN` / `bounce+TOKEN`: a local part may have 64 characters.
pub const MAX_TOKEN_LEN: usize = 64 - "bounce+".len();

/// Whether `token` may go into a local part as it is: letters, digits, `-` and `_`, which
/// every mail server passes through unquoted.
pub(crate) fn is_token(token: &str) -> bool {
    (1..=MAX_TOKEN_LEN).contains(&token.len())
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_'))
}

/// How many IDs `References` keeps at most.
pub const MAX_REFERENCES: usize = 12;

/// The `References` of a mail following `earlier` (oldest first): all of them, or, for a
/// long thread, the first (the thread's root, which readers thread by) and the latest
/// `MAX_REFERENCES - 1`, as mail clients trim it (RFC 5322 §3.6.4 lets the list be cut;
/// the root and the most recent parents are what threading needs).
pub fn references(earlier: &[MessageId]) -> Vec<&MessageId> {
    if earlier.len() <= MAX_REFERENCES {
        return earlier.iter().collect();
    }
    let tail = &earlier[earlier.len() - (MAX_REFERENCES - 1)..];
    std::iter::once(&earlier[0]).chain(tail).collect()
}
