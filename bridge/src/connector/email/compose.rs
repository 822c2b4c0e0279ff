//! The mails Switchboard sends a responder: offers of a new conversation, and the visitor's
//! messages, one thread per conversation; and the answers it sends someone who started a
//! conversation by mail ([`AnswerMail`]), in the thread they started. Pure: no I/O, no
//! logging; the date is the caller's.
//!
//! **Headers.** Every header we write is one we chose, built from an address we checked, an
//! ID or token of our own shape, or text cleaned by [`headers::header_text`] (no control
//! character, so no CR or LF) and then encoded by lettre. Nothing of an inbound mail's
//! headers is copied: threading uses the IDs we minted, which the caller hands back.
//!
//! **Anonymity.** The inputs hold nothing that identifies a visitor: only their pseudonym, and
//! reply tokens and Message-IDs that are random. A Message-ID is minted here and names no
//! room or event: random, or, for an offer and a mail relaying visitor messages, a hash of
//! which offer it is or what it carries ([`MessageId::derived`]), so the same mail sent again
//! after a crash keeps its ID.
//!
//! **Bounces.** A mail's envelope sender is `bounce+ID@domain`, ID being the local part of
//! its Message-ID, so a delivery status notification names the mail it is about with no table
//! beyond the Message-IDs the connector keeps anyway ([`Composer::bounced_message_id`]).
//!
//! **Files.** Files go along while their total stays within the configured limit; a file
//! that would pass it is left out and the mail says so (with the caller's link, if any),
//! rather than failing the mail: the visitor's words should reach the responder even when a
//! file cannot, and the connector has signed links to offer instead.

mod body;
mod dkim;
mod headers;

pub use dkim::{DkimAlgorithm, DkimKey};
pub use headers::{
    MAX_NAME_CHARS, MAX_PSEUDONYM_CHARS, MAX_REFERENCES, MAX_TOKEN_LEN, MAX_TOPIC_CHARS, MessageId,
    header_text,
};

use std::time::SystemTime;

use lettre::Message;
use lettre::address::{Address, Envelope};
use lettre::message::dkim::DkimConfig;
use lettre::message::header::{ContentType, InReplyTo, MessageId as MessageIdHeader, References};
use lettre::message::{Attachment, Mailbox, MultiPart, SinglePart};

use crate::format::{checked_link, truncate_chars};
use body::Body;
use headers::SafeSubject;

/// Shown after the topic's name in `From`: "General support via Switchboard".
const VIA: &str = "via Switchboard";

/// At most this many characters of an initiator's subject come back in ours.
const MAX_SUBJECT_CHARS: usize = 150;

/// How much of a visitor's first message an offer quotes.
const MAX_FIRST_MESSAGE_CHARS: usize = 1000;

/// What a composer needs to know, read once from the configuration.
#[derive(Debug, Clone)]
pub struct ComposerConfig {
    /// Our mail domain: Message-IDs, reply and bounce addresses live under it.
    pub domain: String,
    /// The address offers and messages come from (`support@domain`).
    pub from_address: String,
    pub dkim: Option<DkimKey>,
    /// Most bytes of files one mail carries (before base64, which adds a third: set it to
    /// about 3/4 of what the responders' mail servers accept).
    pub max_attachment_bytes: usize,
}

/// Writes Switchboard's mails. Built once; `Send + Sync`, shared by the connector's tasks.
pub struct Composer {
    domain: String,
    from: Address,
    dkim: Option<DkimConfig>,
    max_attachment_bytes: usize,
}

/// What the people answering wrote, for someone who started the conversation by mail: one
/// mail in their thread.
#[derive(Debug, Clone)]
pub struct AnswerMail {
    pub initiator: Recipient,
    /// The topic's name: who the mail is from ("General support").
    pub topic: String,
    /// The subject of the mail that started the thread, if it had one.
    pub subject: Option<String>,
    /// The Message-IDs of the thread so far, theirs and ours, oldest first.
    pub earlier: Vec<MessageId>,
    /// The token in `reply+TOKEN@domain`, bound to this thread.
    pub reply_token: String,
    /// The answers (or Switchboard's notices), in order. At least one.
    pub messages: Vec<VisitorMessage>,
    /// What the mail carries, to derive its Message-ID from (as [`ThreadMail::key`]).
    pub key: Option<String>,
}

/// A conversation offered to a responder.
#[derive(Debug, Clone)]
pub struct OfferMail {
    pub responder: Recipient,
    pub topic: String,
    /// The visitor's pseudonym ("Visitor 7F3A"): the only thing about the visitor we get.
    pub pseudonym: String,
    pub language: Option<String>,
    pub first_message: Option<String>,
    /// For a conversation handed over: what happened so far.
    pub summary: Option<String>,
    /// Where accepting and declining happen (pages the connector serves).
    pub accept_url: String,
    pub decline_url: String,
    /// The token in `reply+TOKEN@domain`, bound to this offer and responder: a reply accepts.
    pub reply_token: String,
    /// Which offer this is (its room, its number and the address), to derive its Message-ID
    /// from, as [`ThreadMail::key`]: an offer sent again after a crash keeps its ID. `None`:
    /// a random one.
    pub key: Option<String>,
}

/// Visitor messages for a responder who holds the conversation: one mail.
#[derive(Debug, Clone)]
pub struct ThreadMail {
    pub responder: Recipient,
    pub topic: String,
    pub pseudonym: String,
    /// The Message-IDs of the earlier mails of this conversation to this responder, oldest
    /// first (the offer's included); empty for the first.
    pub earlier: Vec<MessageId>,
    /// The token in `reply+TOKEN@domain`, bound to this conversation and responder.
    pub reply_token: String,
    /// Written within a short window, sent together, in this order. At least one.
    pub messages: Vec<VisitorMessage>,
    /// What the mail carries (the visitor's events and the part), to derive its Message-ID
    /// from: see [`MessageId::derived`]. `None`: a random one.
    pub key: Option<String>,
}

/// A short message from Switchboard itself (a command's answer, why a conversation ended),
/// in the conversation's thread when it is about one.
#[derive(Debug, Clone)]
pub struct NoticeMail {
    pub responder: Recipient,
    pub thread: Option<NoticeThread>,
    /// The token in `reply+TOKEN@domain`: the conversation's, or any of ours for a notice
    /// about none (a reply then names no conversation, and only its commands count).
    pub reply_token: String,
    pub text: String,
}

/// The conversation a notice is about.
#[derive(Debug, Clone)]
pub struct NoticeThread {
    pub topic: String,
    pub pseudonym: String,
    /// As in [`ThreadMail::earlier`].
    pub earlier: Vec<MessageId>,
}

/// Who a mail goes to.
#[derive(Debug, Clone)]
pub struct Recipient {
    pub address: String,
    /// The responder's name as configured; shown in `To`.
    pub name: Option<String>,
}

/// One message of a visitor's.
#[derive(Debug, Clone, Default)]
pub struct VisitorMessage {
    /// Plain text (Matrix `body`).
    pub body: String,
    /// Matrix HTML (`formatted_body`), sanitised here before anything of it is written.
    pub html: Option<String>,
    pub file: Option<VisitorFile>,
}

/// A file a visitor sent.
#[derive(Debug, Clone)]
pub struct VisitorFile {
    pub name: String,
    pub mimetype: Option<String>,
    pub bytes: Vec<u8>,
    /// Where the responder can fetch it if it is not attached (a signed media link).
    pub link: Option<String>,
}

/// A mail ready to hand to the SMTP transport.
#[derive(Debug, Clone)]
pub struct Composed {
    pub message: Message,
    pub message_id: MessageId,
    /// `MAIL FROM: bounce+ID@domain`, `RCPT TO:` the responder. Also the message's own
    /// envelope, so `transport.send(message)` uses it.
    pub envelope: Envelope,
    /// The mail as sent (signed, if DKIM is configured).
    pub formatted: Vec<u8>,
    /// Files left out for the size limit, by name.
    pub files_left_out: Vec<String>,
}

/// Why a mail could not be written. Each names the input at fault; none can be fixed by
/// retrying.
#[derive(Debug, thiserror::Error)]
pub enum ComposeError {
    #[error("the domain {0:?} is not a DNS name")]
    Domain(String),
    #[error("the {which} address {value:?} is not a mail address")]
    Address { which: &'static str, value: String },
    #[error("the {which} token must be 1 to {MAX_TOKEN_LEN} letters, digits, '-' or '_'")]
    Token { which: &'static str },
    #[error("the {which} link is not an http(s) URL")]
    Link { which: &'static str },
    #[error("a thread mail needs at least one visitor message")]
    NoMessages,
    #[error("the DKIM key is not usable: {0}")]
    DkimKey(String),
    #[error("lettre refused the mail: {0}")]
    Build(#[from] lettre::error::Error),
}

impl std::fmt::Debug for Composer {
    // Not derived: lettre's signing key prints its private numbers.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Composer")
            .field("domain", &self.domain)
            .field("from", &self.from)
            .field("dkim", &self.dkim.is_some())
            .field("max_attachment_bytes", &self.max_attachment_bytes)
            .finish()
    }
}

impl Composer {
    /// A composer for `config`, its addresses and DKIM key checked once here.
    pub fn new(config: &ComposerConfig) -> Result<Self, ComposeError> {
        if !headers::is_domain(&config.domain) {
            return Err(ComposeError::Domain(config.domain.clone()));
        }
        let from = parse_address("from", &config.from_address)?;
        let dkim = config.dkim.as_ref().map(dkim::config).transpose()?;
        Ok(Composer {
            domain: config.domain.to_ascii_lowercase(),
            from,
            dkim,
            max_attachment_bytes: config.max_attachment_bytes,
        })
    }

    /// An offer: who is waiting, on which topic, Accept and Decline links; replying accepts.
    pub fn offer(&self, offer: &OfferMail, date: SystemTime) -> Result<Composed, ComposeError> {
        let accept = checked_link(&offer.accept_url, &["https", "http"])
            .ok_or(ComposeError::Link { which: "accept" })?;
        let decline = checked_link(&offer.decline_url, &["https", "http"])
            .ok_or(ComposeError::Link { which: "decline" })?;
        let topic = header_text(&offer.topic, MAX_TOPIC_CHARS);
        let pseudonym = header_text(&offer.pseudonym, MAX_PSEUDONYM_CHARS);

        let mut body = Body::default();
        body.paragraph(&format!(
            "{pseudonym} would like to talk about {topic}. Reply to this mail to accept the \
             conversation, or use one of the links below."
        ));
        body.field("Topic", &topic);
        body.field("Visitor", &pseudonym);
        if let Some(language) = offer.language.as_deref() {
            body.field("Language", &header_text(language, 35));
        }
        body.end_fields();
        if let Some(first) = offer
            .first_message
            .as_deref()
            .filter(|m| !m.trim().is_empty())
        {
            body.quoted(
                "First message:",
                &truncate_chars(first.trim(), MAX_FIRST_MESSAGE_CHARS),
            );
        }
        if let Some(summary) = offer.summary.as_deref().filter(|s| !s.trim().is_empty()) {
            body.quoted("Handed over; the conversation so far:", summary);
        }
        body.link("Accept", &accept);
        body.link("Decline", &decline);
        let (text, html) = body.finish();

        let head = Head {
            responder: &offer.responder,
            from_name: format!("{topic} {VIA}"),
            subject: subject(&topic, &pseudonym, false),
            reply_token: &offer.reply_token,
            earlier: &[],
            key: offer.key.as_deref(),
        };
        self.build(head, alternative(text, html), Vec::new(), date)
    }

    /// Visitor messages as one mail in the conversation's thread.
    pub fn messages(&self, mail: &ThreadMail, date: SystemTime) -> Result<Composed, ComposeError> {
        if mail.messages.is_empty() {
            return Err(ComposeError::NoMessages);
        }
        let topic = header_text(&mail.topic, MAX_TOPIC_CHARS);
        let pseudonym = header_text(&mail.pseudonym, MAX_PSEUDONYM_CHARS);

        let mut body = Body::default();
        let (attachments, left_out) = self.message_parts(&mut body, &mail.messages, &pseudonym);
        body.paragraph(&format!(
            "Reply to this mail to answer {pseudonym}. Only your new text is passed on, \
             without your address or signature."
        ));
        let (text, html) = body.finish();

        let head = Head {
            responder: &mail.responder,
            from_name: format!("{topic} {VIA}"),
            subject: subject(&topic, &pseudonym, !mail.earlier.is_empty()),
            reply_token: &mail.reply_token,
            earlier: &mail.earlier,
            key: mail.key.as_deref(),
        };
        let mut composed = self.build(head, alternative(text, html), attachments, date)?;
        composed.files_left_out = left_out;
        Ok(composed)
    }

    /// Answers for someone who started the conversation by mail, in their thread: the
    /// answers alone, from the topic, `Re:` their subject.
    pub fn answer(&self, mail: &AnswerMail, date: SystemTime) -> Result<Composed, ComposeError> {
        if mail.messages.is_empty() {
            return Err(ComposeError::NoMessages);
        }
        let topic = header_text(&mail.topic, MAX_TOPIC_CHARS);
        let mut body = Body::default();
        let (attachments, left_out) = self.message_parts(&mut body, &mail.messages, &topic);
        body.paragraph(
            "Reply to this mail to answer. Write /end alone on a line to end the conversation.",
        );
        let (text, html) = body.finish();
        let subject = mail
            .subject
            .as_deref()
            .map(|s| header_text(s, MAX_SUBJECT_CHARS))
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| topic.clone());
        let subject = if subject.to_ascii_lowercase().starts_with("re:") {
            subject
        } else {
            format!("Re: {subject}")
        };
        let head = Head {
            responder: &mail.initiator,
            from_name: topic,
            subject: SafeSubject::new(subject),
            reply_token: &mail.reply_token,
            earlier: &mail.earlier,
            key: mail.key.as_deref(),
        };
        let mut composed = self.build(head, alternative(text, html), attachments, date)?;
        composed.files_left_out = left_out;
        Ok(composed)
    }

    /// Writes `messages` into `body`, their files attached while they fit the limit; those
    /// left out are named in the body (sent by `sender`) and returned by name.
    fn message_parts(
        &self,
        body: &mut Body,
        messages: &[VisitorMessage],
        sender: &str,
    ) -> (Vec<SinglePart>, Vec<String>) {
        let mut budget = self.max_attachment_bytes;
        let mut attachments = Vec::new();
        let mut left_out = Vec::new();
        for message in messages {
            let styled = body::visitor_styled(&message.body, message.html.as_deref());
            if !styled.text.is_empty() {
                body.message(&styled);
            }
            let Some(file) = &message.file else { continue };
            let name = file_name(&file.name);
            if file.bytes.len() <= budget {
                budget -= file.bytes.len();
                attachments.push(
                    Attachment::new(name)
                        .body(file.bytes.clone(), content_type(file.mimetype.as_deref())),
                );
                continue;
            }
            let size = body::human_size(file.bytes.len());
            body.paragraph(&format!(
                "{sender} sent a file that is too large to attach: {name} ({size})."
            ));
            if let Some(link) = file
                .link
                .as_deref()
                .and_then(|l| checked_link(l, &["https"]))
            {
                body.link(&format!("Download {name}"), &link);
            }
            left_out.push(name);
        }
        (attachments, left_out)
    }

    /// A notice from Switchboard: its text, nothing else.
    pub fn notice(&self, mail: &NoticeMail, date: SystemTime) -> Result<Composed, ComposeError> {
        let mut body = Body::default();
        body.paragraph(&mail.text);
        let (text, html) = body.finish();
        let (topic, subject, earlier) = match &mail.thread {
            Some(thread) => {
                let topic = header_text(&thread.topic, MAX_TOPIC_CHARS);
                let pseudonym = header_text(&thread.pseudonym, MAX_PSEUDONYM_CHARS);
                let subject = subject(&topic, &pseudonym, !thread.earlier.is_empty());
                (topic, subject, thread.earlier.as_slice())
            }
            None => (
                "Switchboard".to_owned(),
                SafeSubject::new("Switchboard".to_owned()),
                &[][..],
            ),
        };
        let from_name = match &mail.thread {
            Some(_) => format!("{topic} {VIA}"),
            None => topic.clone(),
        };
        let head = Head {
            responder: &mail.responder,
            from_name,
            subject,
            reply_token: &mail.reply_token,
            earlier,
            key: None,
        };
        self.build(head, alternative(text, html), Vec::new(), date)
    }

    /// The Message-ID of our mail that a bounce was sent back for, from the address the
    /// bounce came to (`bounce+ID@domain`, the envelope sender we used).
    pub fn bounced_message_id(&self, bounce_recipient: &str) -> Option<MessageId> {
        let (local, domain) = bounce_recipient.trim().rsplit_once('@')?;
        let (tag, id) = local.split_once('+')?;
        if !tag.eq_ignore_ascii_case("bounce") {
            return None;
        }
        if !domain.eq_ignore_ascii_case(&self.domain) {
            return None;
        }
        MessageId::parse(&format!("<{}@{}>", id.to_ascii_lowercase(), self.domain))
    }

    fn build(
        &self,
        head: Head<'_>,
        text: MultiPart,
        attachments: Vec<SinglePart>,
        date: SystemTime,
    ) -> Result<Composed, ComposeError> {
        if !headers::is_token(head.reply_token) {
            return Err(ComposeError::Token { which: "reply" });
        }
        let to = parse_address("responder", &head.responder.address)?;
        let to_name = head
            .responder
            .name
            .as_deref()
            .map(|name| header_text(name, MAX_NAME_CHARS))
            .filter(|name| !name.is_empty());
        let from_name = header_text(&head.from_name, usize::MAX);
        let reply_to = parse_address(
            "reply",
            &format!("reply+{}@{}", head.reply_token, self.domain),
        )?;

        let message_id = match head.key {
            Some(key) => MessageId::derived(&self.domain, key),
            None => MessageId::generate(&self.domain),
        };
        let bounce = parse_address(
            "bounce",
            &format!("bounce+{}@{}", message_id.local_part(), self.domain),
        )?;
        let envelope = Envelope::new(Some(bounce), vec![to.clone()])?;

        let mut builder = Message::builder()
            .from(Mailbox::new(Some(from_name), self.from.clone()))
            .to(Mailbox::new(to_name, to))
            .reply_to(Mailbox::new(None, reply_to))
            .header(head.subject)
            .date(date)
            .header(MessageIdHeader::from(message_id.as_str().to_owned()))
            .envelope(envelope.clone());
        if let Some(parent) = head.earlier.last() {
            let chain: Vec<&str> = headers::references(head.earlier)
                .into_iter()
                .map(MessageId::as_str)
                .collect();
            builder = builder
                .header(InReplyTo::from(parent.as_str().to_owned()))
                .header(References::from(chain.join(" ")));
        }
        let mut message = if attachments.is_empty() {
            builder.multipart(text)?
        } else {
            let mixed = attachments
                .into_iter()
                .fold(MultiPart::mixed().multipart(text), MultiPart::singlepart);
            builder.multipart(mixed)?
        };
        if let Some(dkim) = &self.dkim {
            message.sign(dkim);
        }
        let formatted = message.formatted();
        Ok(Composed {
            message,
            message_id,
            envelope,
            formatted,
            files_left_out: Vec::new(),
        })
    }
}

/// The headers that differ between mails.
struct Head<'a> {
    responder: &'a Recipient,
    /// The name `From` shows: "General support via Switchboard".
    from_name: String,
    subject: SafeSubject,
    reply_token: &'a str,
    earlier: &'a [MessageId],
    /// See [`ThreadMail::key`].
    key: Option<&'a str>,
}

/// The same for every mail of a conversation, so clients that thread by subject agree with
/// those that thread by `References`.
fn subject(topic: &str, pseudonym: &str, follow_up: bool) -> SafeSubject {
    let base = header_text(&format!("{topic}: {pseudonym}"), usize::MAX);
    SafeSubject::new(if follow_up {
        format!("Re: {base}")
    } else {
        base
    })
}

fn alternative(text: String, html: String) -> MultiPart {
    MultiPart::alternative_plain_html(text, html)
}

fn parse_address(which: &'static str, value: &str) -> Result<Address, ComposeError> {
    value.trim().parse().map_err(|_| ComposeError::Address {
        which,
        value: value.to_owned(),
    })
}

/// A file's name fit for `Content-Disposition`: no control characters or path, not empty.
fn file_name(name: &str) -> String {
    let name = header_text(name, 100);
    let name = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if name.is_empty() {
        "file".to_owned()
    } else {
        name.to_owned()
    }
}

/// The visitor's stated type if it is a plain `type/subtype` (parameters dropped, since
/// they are the visitor's text), else `application/octet-stream`.
fn content_type(mimetype: Option<&str>) -> ContentType {
    let is_token = |s: &str| {
        (1..=64).contains(&s.len())
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.' | '_'))
    };
    mimetype
        .and_then(|m| m.split(';').next())
        .map(str::trim)
        .and_then(|m| m.split_once('/'))
        .filter(|(kind, sub)| is_token(kind) && is_token(sub))
        .and_then(|(kind, sub)| ContentType::parse(&format!("{kind}/{sub}")).ok())
        .unwrap_or_else(|| ContentType::parse("application/octet-stream").expect("a valid type"))
}

#[cfg(test)]
mod tests;
