//! What a mail that reaches Switchboard means, read without any network I/O.
//!
//! The connector fetches a mail's raw bytes (IMAP, or a local delivery) and calls:
//! 1. [`parse`]: the fields that matter, decoded (MIME, transfer encodings, charsets), with
//!    whether the mail is [`Automated`] and, for a delivery status notification, its
//!    [`DeliveryReport`];
//! 2. [`bounce`] when there is a report, [`reply_token`] otherwise: which message of ours
//!    the mail answers (the connector falls back to `In-Reply-To`/`References` when there
//!    is no token);
//! 3. [`new_content`] for a mail that is neither automated nor a report: only what the
//!    responder wrote now (quotes and signatures stripped) and the commands written alone
//!    on a line.
//!
//! Nothing here decides whether the sender may be trusted: `Authentication-Results` is
//! never read (any relay, or the sender, can write one); SPF/DKIM/DMARC are checked by the
//! connector itself on the raw bytes.

use mail_parser::{Address, HeaderValue, Message, MessageParser, MimeHeaders, PartType};
use sha2::{Digest, Sha256};

mod auto;
mod commands;
mod dsn;
mod html;
mod quotes;

pub use auto::Automated;
pub use commands::{COMMANDS, Command};
pub use dsn::{Action, Bounce, DeliveryReport, RecipientReport, bounce};
pub use quotes::strip_plain_quotes;

/// Why a mail could not be read as one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InboundError {
    #[error("not an e-mail message: no header fields were found")]
    NotAMail,
    #[error("the mail has no From address")]
    NoFrom,
    #[error("the From field names {0} addresses; a reply must come from exactly one")]
    SeveralFrom(usize),
}

/// The key that makes processing a mail idempotent.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum MailId {
    /// The `Message-ID`, without its angle brackets.
    MessageId(String),
    /// `sha256:` and the hex SHA-256 of the raw bytes, for a mail without a `Message-ID`.
    /// The same mail fetched twice (an IMAP reconnect before `\Seen` was stored, a
    /// duplicate delivery) has the same bytes, so it is still processed once; SHA-256 and
    /// not `std`'s hasher because the key is stored and must not change between runs or
    /// Rust versions.
    Derived(String),
}

impl MailId {
    pub fn as_str(&self) -> &str {
        match self {
            MailId::MessageId(id) | MailId::Derived(id) => id,
        }
    }
}

/// A file attached to (or inlined in) a mail.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attachment {
    /// The name the sender gave it, if any (`Content-Disposition` `filename`, else
    /// `Content-Type` `name`); not sanitised: it is untrusted text.
    pub name: Option<String>,
    /// `type/subtype`, lower-cased; `application/octet-stream` when the mail gives none.
    pub mimetype: String,
    pub bytes: Vec<u8>,
}

/// A mail as read by [`parse`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InboundMail {
    pub id: MailId,
    /// The From address alone, lower-cased.
    pub from: String,
    /// To, Cc, Delivered-To and X-Original-To addresses, each once, in that order; the
    /// domain lower-cased, the local part as written (it holds our case-sensitive tokens). (Envelope recipients are the caller's: it passes them to [`reply_token`].)
    pub recipients: Vec<String>,
    /// `In-Reply-To` message IDs, without angle brackets.
    pub in_reply_to: Vec<String>,
    /// `References` message IDs, oldest first, without angle brackets.
    pub references: Vec<String>,
    pub subject: Option<String>,
    /// The first text/plain body, decoded to UTF-8.
    pub text: Option<String>,
    /// The first text/html body, decoded to UTF-8; untrusted and not yet sanitised.
    pub html: Option<String>,
    pub attachments: Vec<Attachment>,
    /// Set when the mail was written by a machine (auto-reply, list, bounce): it must never
    /// become a message to a visitor.
    pub automated: Option<Automated>,
    /// Set for a delivery status notification (RFC 3464), whatever it reports.
    pub delivery_report: Option<DeliveryReport>,
}

/// Reads a raw mail (RFC 5322, MIME). Never panics, whatever the bytes.
pub fn parse(raw: &[u8]) -> Result<InboundMail, InboundError> {
    let message = MessageParser::default()
        .parse(raw)
        .filter(|message| !message.headers().is_empty())
        .ok_or(InboundError::NotAMail)?;
    let from = sender(&message)?;
    let id = match message
        .message_id()
        .map(str::trim)
        .filter(|id| !id.is_empty())
    {
        Some(id) => MailId::MessageId(id.to_owned()),
        None => MailId::Derived(format!("sha256:{:x}", Sha256::digest(raw))),
    };
    let mut recipients = Vec::new();
    let listed = message
        .all_to()
        .chain(message.all_cc())
        .flat_map(Address::iter);
    let delivered = ["Delivered-To", "X-Original-To"]
        .into_iter()
        .flat_map(|name| raw_header_values(&message, name))
        .flat_map(|value| value.split(',').map(str::to_owned).collect::<Vec<_>>());
    for address in listed
        .filter_map(|addr| addr.address().map(str::to_owned))
        .chain(delivered)
    {
        let address = with_lowercase_domain(&bare_address(&address));
        if !address.is_empty() && !recipients.contains(&address) {
            recipients.push(address);
        }
    }
    Ok(InboundMail {
        id,
        from,
        recipients,
        in_reply_to: message_ids(message.in_reply_to()),
        references: message_ids(message.references()),
        subject: message.subject().map(str::to_owned),
        text: first_body(&message, &message.text_body, false),
        html: first_body(&message, &message.html_body, true),
        attachments: attachments(&message),
        automated: auto::automated(&message),
        delivery_report: dsn::delivery_report(&message),
    })
}

/// The token of a `reply+TOKEN@domain` address this mail was sent to (envelope recipients
/// first, then Delivered-To, To, Cc), if exactly one token is found: a mail naming two
/// conversations is ambiguous, and the caller falls back to `In-Reply-To`/`References`.
/// The domain is compared case-insensitively; the token keeps its case.
pub fn reply_token(mail: &InboundMail, envelope_rcpts: &[&str], domain: &str) -> Option<String> {
    tagged_token("reply", mail, envelope_rcpts, domain)
}

/// As [`reply_token`], for the `bounce+TOKEN@domain` return path of our own mails.
pub fn bounce_token(mail: &InboundMail, envelope_rcpts: &[&str], domain: &str) -> Option<String> {
    tagged_token("bounce", mail, envelope_rcpts, domain)
}

/// What the responder wrote now: see [`new_content`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NewContent {
    /// Plain text, trimmed; empty when the mail holds only quotes, a signature, commands.
    pub text: String,
    /// When the mail had HTML: the same new part, already reduced to the Matrix spec's
    /// allow-list by [`crate::format::sanitise_matrix_html`] (so remote images and `cid:`
    /// inline images are gone). `None` when the mail had no HTML or nothing visible is left.
    pub html: Option<String>,
    /// Commands written alone on a line of the new text, in order; their lines are in
    /// neither `text` nor `html`.
    pub commands: Vec<Command>,
}

/// The new part of a reply: quoted history, attribution lines ("On … wrote:") and
/// signatures removed, the commands taken out. The HTML body is read when there is one
/// (mail clients mark their quotes there), else the plain text body.
pub fn new_content(mail: &InboundMail) -> NewContent {
    if let Some(html) = mail.html.as_deref() {
        let content = html::new_content(html);
        // A mail whose HTML part shows nothing (an empty alternative) still has its
        // plain text.
        if !content.text.is_empty() || !content.commands.is_empty() || mail.text.is_none() {
            return content;
        }
    }
    let text = strip_plain_quotes(mail.text.as_deref().unwrap_or_default());
    let (commands, text) = commands::take_commands(text);
    NewContent {
        // Matrix clients show a CR; mail always has one.
        text: text.trim().replace("\r\n", "\n"),
        html: None,
        commands,
    }
}

fn tagged_token(
    tag: &str,
    mail: &InboundMail,
    envelope_rcpts: &[&str],
    domain: &str,
) -> Option<String> {
    let delivered_first = mail.recipients.iter().map(String::as_str);
    let mut found: Option<&str> = None;
    for address in envelope_rcpts.iter().copied().chain(delivered_first) {
        let Some(token) = token_of(tag, address.trim(), domain) else {
            continue;
        };
        match found {
            Some(other) if other != token => return None,
            _ => found = Some(token),
        }
    }
    found.map(str::to_owned)
}

/// `TOKEN` if `address` is `TAG+TOKEN@domain` with a well-formed token.
fn token_of<'a>(tag: &str, address: &'a str, domain: &str) -> Option<&'a str> {
    let address = address
        .strip_prefix('<')
        .and_then(|a| a.strip_suffix('>'))
        .unwrap_or(address);
    let (local, at_domain) = address.rsplit_once('@')?;
    if !at_domain.eq_ignore_ascii_case(domain) {
        return None;
    }
    let (prefix, token) = local.split_once('+')?;
    let well_formed = (16..=64).contains(&token.len())
        && token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    (prefix.eq_ignore_ascii_case(tag) && well_formed).then_some(token)
}

fn sender(message: &Message<'_>) -> Result<String, InboundError> {
    let addresses: Vec<&str> = message
        .from()
        .into_iter()
        .flat_map(Address::iter)
        .filter_map(|addr| addr.address())
        .collect();
    match addresses.as_slice() {
        [] => Err(InboundError::NoFrom),
        [one] => {
            let address = bare_address(one).to_lowercase();
            if address.is_empty() {
                Err(InboundError::NoFrom)
            } else {
                Ok(address)
            }
        }
        several => Err(InboundError::SeveralFrom(several.len())),
    }
}

/// The address alone: mail-parser already drops display names, but a raw `Delivered-To`
/// may still carry angle brackets or spaces.
fn bare_address(address: &str) -> String {
    address
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim()
        .to_owned()
}

fn with_lowercase_domain(address: &str) -> String {
    match address.rsplit_once('@') {
        Some((local, domain)) => format!("{local}@{}", domain.to_lowercase()),
        None => address.to_owned(),
    }
}

/// The values of every header field called `name`, unfolded and trimmed.
fn raw_header_values(message: &Message<'_>, name: &str) -> Vec<String> {
    message
        .headers_raw()
        .filter(|(field, _)| field.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

fn message_ids(value: &HeaderValue<'_>) -> Vec<String> {
    let ids: Vec<&str> = match value {
        HeaderValue::Text(id) => vec![id.as_ref()],
        HeaderValue::TextList(ids) => ids.iter().map(|id| id.as_ref()).collect(),
        _ => Vec::new(),
    };
    ids.into_iter()
        .map(str::trim)
        .filter(|id| !id.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The first body part of the kind asked for, as written (mail-parser would otherwise
/// convert an HTML-only mail to text and a text-only one to HTML for us).
fn first_body(message: &Message<'_>, parts: &[u32], want_html: bool) -> Option<String> {
    parts.iter().find_map(|&id| match &message.part(id)?.body {
        PartType::Html(html) if want_html => Some(html.to_string()),
        PartType::Text(text) if !want_html => Some(text.to_string()),
        _ => None,
    })
}

fn attachments(message: &Message<'_>) -> Vec<Attachment> {
    message
        .attachments()
        .filter_map(|part| {
            let bytes = match &part.body {
                PartType::Binary(bytes) | PartType::InlineBinary(bytes) => bytes.to_vec(),
                PartType::Text(text) | PartType::Html(text) => text.as_bytes().to_vec(),
                PartType::Message(nested) => nested.raw_message().to_vec(),
                PartType::Multipart(_) => return None,
            };
            let mimetype = part.content_type().map_or_else(
                || "application/octet-stream".to_owned(),
                |ct| match ct.subtype() {
                    Some(sub) => format!("{}/{}", ct.ctype(), sub).to_lowercase(),
                    None => ct.ctype().to_lowercase(),
                },
            );
            Some(Attachment {
                name: part.attachment_name().map(str::to_owned),
                mimetype,
                bytes,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests;
