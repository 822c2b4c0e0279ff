//! One mail, however it reached Switchboard (the IMAP mailbox, the SMTP listener, the HTTP
//! endpoint), into the bridge's remote events: recorded once, keyed by the mail's own ID
//! (`Message-ID`, else a hash of its bytes), before whoever handed it over is told it was
//! taken. Handling a mail again (a redelivery, a restart before the IMAP flag was stored)
//! records the same keys, which are recorded once, so nothing is doubled.
//!
//! What a mail becomes, in order:
//! 1. A delivery status notification about one of our mails (its `bounce+ID` return path):
//!    a permanent failure makes the responder unreachable for that conversation
//!    ([`RemoteEvent::Unreachable`]); a delay is only logged.
//! 2. A mail written by a machine (auto-reply, out of office, list): nothing.
//! 3. A reply: the conversation is the one its `reply+TOKEN` names, else the one whose mail
//!    it answers (`In-Reply-To`, then `References`, newest first). It must come from the
//!    address the offer went to. An open offer is accepted by it; then its new text, its
//!    files and its commands, in that order.
//! 4. Anything else from a responder: its commands (about no conversation in particular).
//! 5. Anything else, where initiators are taken: someone starting or continuing a
//!    conversation of their own ([`initiators`]).
//!
//! A mail refused for good (not a mail, not a reply of a responder's, from another address
//! than the conversation's) is [`HandlerError::Permanent`]: the mailbox keeps it, marked
//! refused, for a person to look at; nothing of it is passed on.

use std::sync::Arc;

use tracing::Instrument;

use super::auth::{Authenticator, Refusal, SmtpPeer};
use super::imap::HandlerError;
use super::inbound::{self, InboundMail};
use super::threads::Threads;
use crate::connector::{FileKind, HandleOffer, RemoteEvent, RemoteFile, RemoteSink};

mod initiators;

pub use initiators::InitiatorSetup;

/// Turns mails into remote events. Cheap to clone; shared by every way mail comes in.
#[derive(Clone)]
pub struct Receiver {
    domain: String,
    max_file_bytes: usize,
    threads: Threads,
    sink: Arc<dyn RemoteSink>,
    authenticator: Authenticator,
    strict: bool,
    /// Set when mail from others than responders starts conversations.
    initiators: Option<Arc<InitiatorSetup>>,
}

/// How a mail reached us, as far as the way it came knows.
#[derive(Debug, Default)]
pub struct Arrival<'a> {
    /// The SMTP `RCPT TO` addresses (they may hold the reply token when no header does).
    pub recipients: &'a [String],
    /// The SMTP client, where the mail came straight from it (our listener): SPF is checked
    /// only then.
    pub peer: Option<SmtpPeer>,
}

/// The conversation a reply belongs to.
struct Conversation {
    token: String,
    offer: HandleOffer,
}

impl Receiver {
    pub fn new(
        domain: String,
        max_file_bytes: usize,
        threads: Threads,
        sink: Arc<dyn RemoteSink>,
        authenticator: Authenticator,
        strict: bool,
    ) -> Self {
        Receiver {
            domain,
            max_file_bytes,
            threads,
            sink,
            authenticator,
            strict,
            initiators: None,
        }
    }

    /// Takes mail from others than responders as conversations of theirs.
    pub fn with_initiators(mut self, setup: InitiatorSetup) -> Self {
        self.initiators = Some(Arc::new(setup));
        self
    }

    /// Handles one raw mail.
    pub async fn receive(&self, raw: &[u8], arrival: Arrival<'_>) -> Result<(), HandlerError> {
        let mail = inbound::parse(raw)
            .map_err(|e| HandlerError::Permanent(format!("not a mail we can read: {e}")))?;
        // Instrumented, not entered: a span entered across an await would be attached to
        // whatever else the worker thread runs meanwhile.
        let span = tracing::info_span!("mail", id = %mail.id.as_str());
        self.handle(raw, &mail, arrival).instrument(span).await
    }

    async fn handle(
        &self,
        raw: &[u8],
        mail: &InboundMail,
        arrival: Arrival<'_>,
    ) -> Result<(), HandlerError> {
        let rcpts: Vec<&str> = arrival.recipients.iter().map(String::as_str).collect();
        let key = mail.id.as_str().to_owned();

        if mail.delivery_report.is_some() {
            return self.bounce(mail, &rcpts, &key).await;
        }
        if let Some(automated) = &mail.automated {
            tracing::info!(?automated, "an automatic mail was not passed on");
            return Ok(());
        }
        // Who really sent it, before anything of it counts. (A bounce is not checked: it
        // names one of our mails by a random bounce address nobody else knows.)
        let verdict = self.authenticator.check(raw, arrival.peer.as_ref()).await;
        match verdict.decide(self.strict) {
            Ok(()) => tracing::debug!(auth = %verdict.summary(), "sender authenticated"),
            Err(Refusal::TryLater) => {
                return Err(HandlerError::Transient(format!(
                    "the sender could not be checked yet: {}",
                    verdict.summary()
                )));
            }
            Err(refusal) => {
                return Err(HandlerError::Permanent(format!(
                    "held, the sender failed authentication ({refusal:?}): {}",
                    verdict.summary()
                )));
            }
        }
        // The author DMARC vouched for is the one the address check below is about.
        if !verdict
            .from_address()
            .is_some_and(|from| from.eq_ignore_ascii_case(&mail.from))
        {
            return Err(HandlerError::Permanent(
                "held: the From address could not be read the same way twice".into(),
            ));
        }
        let content = inbound::new_content(mail);
        let Some(conversation) = self.conversation_of(mail, &rcpts).await? else {
            if let Some(setup) = self.initiators.clone()
                && !self.is_responder(&mail.from).await?
            {
                return self
                    .initiator_mail(&setup, mail, content, &key, &rcpts)
                    .await;
            }
            return self.loose_commands(mail, &content, &key).await;
        };
        let address = conversation.offer.address.clone();
        if !mail.from.eq_ignore_ascii_case(&address) {
            return Err(HandlerError::Permanent(format!(
                "a reply in a conversation held by another address came from {}; not passed on",
                mail.from
            )));
        }
        let thread = Some(conversation.token.clone());
        let mut events = Vec::new();
        if conversation.offer.open {
            events.push((
                format!("{key}/accept"),
                RemoteEvent::Accept {
                    offer_id: conversation.offer.offer_id,
                    address: address.clone(),
                    display_name: super::RESPONDER_NAME.to_owned(),
                },
            ));
        }
        self.content_events(
            mail,
            &content,
            &key,
            (&address, super::RESPONDER_NAME),
            thread,
            &mut events,
        )
        .await?;
        self.record(&events).await?;
        tracing::info!(events = events.len(), "a responder's mail was recorded");
        Ok(())
    }

    async fn record(&self, events: &[(String, RemoteEvent)]) -> Result<(), HandlerError> {
        for (event_key, event) in events {
            self.sink
                .record_remote(self.threads.platform(), event_key, event)
                .await?;
        }
        Ok(())
    }

    /// What a mail's new content becomes, after `events`: its text, its files (held for the
    /// bridge to fetch), its commands, in that order, from (`address`, `display_name`).
    async fn content_events(
        &self,
        mail: &InboundMail,
        content: &inbound::NewContent,
        key: &str,
        (address, display_name): (&str, &str),
        thread: Option<String>,
        events: &mut Vec<(String, RemoteEvent)>,
    ) -> Result<(), HandlerError> {
        let address = address.to_owned();
        let key = key.to_owned();
        if !content.text.is_empty() {
            events.push((
                key.clone(),
                RemoteEvent::Message {
                    address: address.clone(),
                    message_id: key.clone(),
                    reply_to: None,
                    body: content.text.clone(),
                    formatted_body: content.html.clone(),
                    display_name: display_name.to_owned(),
                    file: None,
                    thread: thread.clone(),
                    language: None,
                },
            ));
        }
        for (n, file) in mail.attachments.iter().enumerate() {
            let file_key = format!("{key}/file{n}");
            let name = file_name(file.name.as_deref(), n);
            if file.bytes.len() > self.max_file_bytes {
                tracing::info!(
                    size = file.bytes.len(),
                    "a mailed file over the size limit was left out"
                );
                continue;
            }
            self.threads
                .hold_file(&file_key, &name, &file.mimetype, &file.bytes)
                .await?;
            events.push((
                file_key.clone(),
                RemoteEvent::Message {
                    address: address.clone(),
                    message_id: file_key.clone(),
                    reply_to: None,
                    body: name.clone(),
                    formatted_body: None,
                    display_name: display_name.to_owned(),
                    file: Some(RemoteFile {
                        file_id: file_key,
                        mimetype: Some(file.mimetype.clone()),
                        filename: name,
                        kind: if file.mimetype.starts_with("image/") {
                            FileKind::Image
                        } else {
                            FileKind::File
                        },
                    }),
                    thread: thread.clone(),
                    language: None,
                },
            ));
        }
        for (n, command) in content.commands.iter().enumerate() {
            events.push((
                format!("{key}/command{n}"),
                RemoteEvent::Command {
                    address: address.clone(),
                    command: command.name.clone(),
                    args: command.args.clone(),
                    reply_to: None,
                    thread: thread.clone(),
                    language: None,
                },
            ));
        }
        Ok(())
    }

    /// A delivery report: a permanent failure of one of our mails makes its conversation's
    /// responder unreachable.
    async fn bounce(
        &self,
        mail: &InboundMail,
        rcpts: &[&str],
        key: &str,
    ) -> Result<(), HandlerError> {
        let Some(bounce) = inbound::bounce(mail, rcpts, &self.domain) else {
            tracing::info!("a delivery report about no mail of ours, or of success; ignored");
            return Ok(());
        };
        if !bounce.permanent {
            tracing::info!(status = %bounce.status, "a mail of ours is delayed; waiting");
            return Ok(());
        }
        let Some(token) = self.threads.token_of_mail(&bounce.token).await? else {
            tracing::info!("a bounce of a mail we do not know; ignored");
            return Ok(());
        };
        let Some(thread) = self.threads.get(&token).await? else {
            return Ok(());
        };
        let event = RemoteEvent::Unreachable {
            address: thread.address,
            thread: Some(token),
            reason: format!("the mail bounced ({})", bounce.status),
        };
        self.sink
            .record_remote(self.threads.platform(), &format!("{key}/bounce"), &event)
            .await?;
        tracing::warn!(status = %bounce.status, "a mail to a responder bounced");
        Ok(())
    }

    /// The conversation a reply belongs to: its reply token, else the mail of ours it
    /// answers.
    async fn conversation_of(
        &self,
        mail: &InboundMail,
        rcpts: &[&str],
    ) -> Result<Option<Conversation>, HandlerError> {
        for token in self.thread_tokens(mail, rcpts).await? {
            let offer = self
                .sink
                .rooms()
                .offer_by_handle(self.threads.platform(), &token)
                .await
                .map_err(|e| HandlerError::Transient(e.to_string()))?;
            if let Some(offer) = offer {
                return Ok(Some(Conversation { token, offer }));
            }
        }
        Ok(None)
    }

    /// A mail that answers no conversation: a responder's commands count (`/conversations`,
    /// `/away`); anything else is refused.
    async fn loose_commands(
        &self,
        mail: &InboundMail,
        content: &inbound::NewContent,
        key: &str,
    ) -> Result<(), HandlerError> {
        if !self.is_responder(&mail.from).await? || content.commands.is_empty() {
            return Err(HandlerError::Permanent(
                "not a reply to a mail of ours, nor a responder's command".into(),
            ));
        }
        for (n, command) in content.commands.iter().enumerate() {
            let event = RemoteEvent::Command {
                address: mail.from.clone(),
                command: command.name.clone(),
                args: command.args.clone(),
                reply_to: None,
                thread: None,
                language: None,
            };
            self.sink
                .record_remote(
                    self.threads.platform(),
                    &format!("{key}/command{n}"),
                    &event,
                )
                .await?;
        }
        Ok(())
    }
}

impl Receiver {
    /// The threads a mail may continue, most telling first: the token of its `reply+TOKEN`
    /// address, then those of the mails of ours it answers (`In-Reply-To`, then
    /// `References`, newest first).
    async fn thread_tokens(
        &self,
        mail: &InboundMail,
        rcpts: &[&str],
    ) -> Result<Vec<String>, HandlerError> {
        let mut tokens = Vec::new();
        if let Some(token) = inbound::reply_token(mail, rcpts, &self.domain) {
            tokens.push(token);
        }
        let answered = mail.in_reply_to.iter().chain(mail.references.iter().rev());
        for id in answered.take(20) {
            if let Some(token) = self.threads.token_of_mail(id).await? {
                tokens.push(token);
            }
        }
        Ok(tokens)
    }

    async fn is_responder(&self, address: &str) -> Result<bool, HandlerError> {
        self.sink
            .rooms()
            .is_responder(self.threads.platform(), address)
            .await
            .map_err(|e| HandlerError::Transient(e.to_string()))
    }
}

/// A file's name as the visitor will see it: the sender's, without any path, or a plain one.
fn file_name(name: Option<&str>, n: usize) -> String {
    let name = name
        .map(|n| super::compose::header_text(n, 100))
        .unwrap_or_default();
    let name = name.rsplit(['/', '\\']).next().unwrap_or_default().trim();
    if name.is_empty() {
        format!("attachment-{}", n + 1)
    } else {
        name.to_owned()
    }
}

/// The path a raw mail is posted to (a Postfix pipe with curl, a provider's inbound webhook).
pub const INBOUND_PATH: &str = "/email/v1/inbound";

/// Largest mail the HTTP endpoint takes.
const MAX_POSTED_BYTES: usize = 25 * 1024 * 1024;

/// `POST /email/v1/inbound`: the body is one raw RFC 5322 mail; `Authorization: Bearer TOKEN`.
/// Answers `204` once the mail is recorded (or was already), `422` for a mail refused for
/// good (the reason in the body: the sender should not retry), `503` with `Retry-After` when
/// it may work later; `401` without the token.
pub fn http_route(receiver: Receiver, token: String) -> axum::Router {
    use axum::{
        body::Bytes,
        extract::{DefaultBodyLimit, State},
        http::{HeaderMap, StatusCode, header},
        response::IntoResponse,
        routing::post,
    };
    async fn take(
        State((receiver, token)): State<(Receiver, Arc<str>)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !same(given.as_bytes(), token.as_bytes()) {
            return (StatusCode::UNAUTHORIZED, "a valid bearer token is needed\n").into_response();
        }
        match receiver.receive(&body, Arrival::default()).await {
            Ok(()) => StatusCode::NO_CONTENT.into_response(),
            Err(HandlerError::Permanent(why)) => {
                tracing::info!(reason = %why, "a posted mail was refused");
                (StatusCode::UNPROCESSABLE_ENTITY, format!("{why}\n")).into_response()
            }
            Err(HandlerError::Transient(why)) => {
                tracing::warn!(reason = %why, "a posted mail could not be recorded yet");
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [(header::RETRY_AFTER, "30")],
                    "not recorded; try again later\n",
                )
                    .into_response()
            }
        }
    }
    axum::Router::new()
        .route(INBOUND_PATH, post(take))
        .layer(DefaultBodyLimit::max(MAX_POSTED_BYTES))
        .with_state((receiver, Arc::from(token)))
}

/// Compares in time that depends on the lengths only, so the token cannot be guessed byte by
/// byte from how fast a wrong one is refused.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
