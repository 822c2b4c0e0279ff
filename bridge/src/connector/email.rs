//! Email responders: offers and visitor messages by mail, replies routed back by a reply
//! address of each conversation.
//!
//! How it works for a responder:
//! - An **offer** comes as a mail from "General support via Switchboard": topic, pseudonym,
//!   language, the first message, and Accept / Decline links to a page on Switchboard
//!   ([`links`]). Its `Reply-To` is `reply+TOKEN@domain`, TOKEN being 128 random bits bound to
//!   this offer, so to this conversation and this responder; **replying accepts**, and the
//!   reply's text is the first answer. The token is the offer's handle in the bridge, so it
//!   stays the conversation's handle ([`crate::connector::Delivery::thread`]) once accepted.
//! - **Visitor messages** follow in the same thread (`In-Reply-To` / `References` chained
//!   from Message-IDs we mint, which name no room or event); lines written within
//!   `batch_window` go out as one mail (`Capabilities::batch_window`).
//! - **Replies** are matched by the token in any recipient address, else by `In-Reply-To` /
//!   `References` against the mails we sent, and taken only from the address the offer went
//!   to, after SPF/DKIM/DMARC. Only the new text goes on (quotes and signature stripped), with
//!   attachments, and `/end`, `/transfer …` alone on a line are commands.
//! - A **bounce** of any of our mails (its `bounce+ID@domain` return path) declines the offer
//!   or hands the conversation to someone else.
//!
//! With `initiators = true`, mail from anyone else starts a conversation of theirs
//! (`receive::initiators`): `support+TOPIC@` (or an address of the topic's own) names the
//! topic; answers go back as mails in their thread ([`compose::AnswerMail`]), from the
//! topic's name, `Re:` their subject, with a `reply+TOKEN` of that thread.
//!
//! Parts, each tested on its own (the network parts against a real Dovecot, `scripts/mail.sh`):
//! - [`compose`]: the mails Switchboard sends, headers built only from encoded values,
//!   DKIM-signed.
//! - [`inbound`]: what a mail means: token, auto-reply, bounce, only the new text.
//! - [`auth`]: who really sent an inbound mail (SPF, DKIM, DMARC by mail-auth) and whether it
//!   may be relayed; never trusts `Authentication-Results` headers in the mail.
//! - [`receive`]: one mail, however it came, into the bridge's remote events, once.
//! - [`threads`]: what the connector remembers (in the bridge's connector state).
//! - [`links`]: the Accept / Decline page.
//! - [`config`]: the `[email]` section.
//! - [`smtp`]: sending a composed mail exactly as signed.
//! - [`imap`]: the mailbox reader: every mail handed over at least once, flagged only after.
//! - [`listener`]: the embedded SMTP server mail can be delivered to, answering `250` only
//!   once the mail is recorded.

pub mod auth;
pub mod compose;
pub mod config;
pub mod imap;
pub mod inbound;
pub mod links;
pub mod listener;
pub mod receive;
pub mod smtp;
pub mod threads;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::cluster::Term;
use tokio::sync::watch;

use super::{
    Attachment, Capabilities, Connector, ConnectorError, Delivery, FileLimits, Offer, Platform,
    RemoteFile, RemoteSink, TextLimit, TextUnit,
    registry::{BuildContext, PlatformSpec},
};
use crate::clock::SharedClock;
use crate::health::PartReporter;
use compose::{
    AnswerMail, Composer, NoticeMail, NoticeThread, OfferMail, Recipient, ThreadMail, VisitorFile,
    VisitorMessage,
};
use config::EmailConfig;
use links::{Answer, Links};
use smtp::Sender;
use threads::{Thread, Threads, new_token};

const NAME: &str = "email";
const COMMAND_PREFIX: char = '/';

/// The name a responder's ghost shows when their registration gives none: never their
/// address, which the visitor must not see.
pub const RESPONDER_NAME: &str = "Responder";

/// A mail is one SMTP transaction: connecting, TLS, the data. Longer than the sender's own
/// limits (`smtp.rs`: 120 s for a send), so those report first, with what was going on; a
/// send cut off while the server was accepting the mail could be sent twice.
const CALL_TIMEOUT: Duration = Duration::from_secs(150);

/// How long the record of a mail the server accepted waits for a store that is away: with
/// the send's own 120 s, under [`CALL_TIMEOUT`].
const SENT_RECORD_PATIENCE: Duration = Duration::from_secs(25);
// A send and its record end before the call is cut off (and the mail sent again).
const _: () =
    assert!(smtp::SEND_TIMEOUT.as_secs() + SENT_RECORD_PATIENCE.as_secs() < CALL_TIMEOUT.as_secs());

/// The longest text one mail carries: far more than anyone types, so a message is never split.
const MAX_TEXT_CHARS: usize = 100_000;

pub static SPEC: PlatformSpec = PlatformSpec {
    name: NAME,
    display_name: "Email",
    command_prefix: COMMAND_PREFIX,
    validate_address,
    links_by_code: false,
    check: |section| match section {
        None => Ok(false),
        Some(section) => EmailConfig::read(section).map(|_| true),
    },
    build,
};

/// A responder's address: one plain mail address (`alice@example.org`).
fn validate_address(address: &str) -> Result<(), String> {
    let ok = address.trim() == address
        && address.parse::<lettre::Address>().is_ok()
        && !address.contains(['<', '>', ',', '\r', '\n']);
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{address:?} is not a mail address (expected something like alice@example.org)"
        ))
    }
}

fn build(
    section: Option<&serde_json::Value>,
    context: &BuildContext,
) -> Result<Option<Arc<dyn Connector>>, String> {
    let Some(section) = section else {
        return Ok(None);
    };
    let config = EmailConfig::read(section)?;
    if config
        .imap
        .as_ref()
        .is_some_and(|imap| imap.security != config::Security::None)
    {
        // Not built yet: the reader speaks plain IMAP only (see `imap::ImapTls`).
        return Err(
            "email.imap.security: only \"none\" works so far (IMAP over TLS is not built); \
             reach the mailbox on loopback or through a tunnel"
                .into(),
        );
    }
    let public_url = context.public_url.as_deref().ok_or(
        "email needs visitors.public_url: offers link to a page there to accept or decline",
    )?;
    if let Some((topic, _)) = config
        .topic_addresses
        .iter()
        .find(|(topic, _)| !context.topics.iter().any(|(id, _)| id == topic))
    {
        return Err(format!(
            "email.topic_addresses.{topic}: there is no topic with that ID"
        ));
    }
    let connector = EmailConnector::new(
        config,
        context.state.clone(),
        crate::clock::system(),
        public_url,
        context.topics.clone(),
    )?
    .with_health(context.health.part(SPEC.name));
    Ok(Some(Arc::new(connector)))
}

/// The email connector. See the module's doc.
pub struct EmailConnector {
    config: EmailConfig,
    composer: Composer,
    sender: Sender,
    threads: Threads,
    links: Links,
    authenticator: auth::Authenticator,
    health: Option<PartReporter>,
    /// How initiators' mail is read (used when `config.initiators`).
    initiators: receive::InitiatorSetup,
}

impl EmailConnector {
    /// How the mailbox reader reaches `[email.imap]`, if configured.
    fn imap_config(&self) -> Option<imap::ImapConfig> {
        let imap = self.config.imap.as_ref()?;
        let mut config = imap::ImapConfig::new(
            imap.host.clone(),
            imap.port,
            imap::ImapTls::None,
            imap.login.username.clone(),
            imap.login.password.expose().to_owned(),
        );
        config.mailbox = imap.mailbox.clone();
        Some(config)
    }

    pub fn new(
        config: EmailConfig,
        state: Arc<dyn super::ConnectorState>,
        clock: SharedClock,
        public_url: &str,
        topics: Vec<(String, String)>,
    ) -> Result<Self, String> {
        let composer = Composer::new(&config.composer_config()).map_err(|e| e.to_string())?;
        let sender = Sender::new(&config.smtp)?;
        let threads = Threads::new(state, SPEC.platform());
        let links = Links::new(threads.clone(), clock, public_url);
        let authenticator = auth::Authenticator::new(&config.authentication.nameservers)
            .map_err(|e| format!("email.authentication: {e}"))?;
        let mut domains = vec![config.domain.to_ascii_lowercase()];
        if let Some((_, domain)) = config.from_address.rsplit_once('@')
            && !domain.eq_ignore_ascii_case(&config.domain)
        {
            domains.push(domain.to_ascii_lowercase());
        }
        let initiators = receive::InitiatorSetup {
            topics,
            topic_addresses: config.topic_addresses.clone(),
            domains,
        };
        Ok(EmailConnector {
            initiators,
            authenticator,
            config,
            composer,
            sender,
            threads,
            links,
            health: None,
        })
    }

    fn receiver(&self, sink: Arc<dyn RemoteSink>) -> receive::Receiver {
        let receiver = receive::Receiver::new(
            self.config.domain.clone(),
            self.config.max_attachment_bytes,
            self.threads.clone(),
            sink,
            self.authenticator.clone(),
            self.config.authentication.strict,
        );
        if self.config.initiators {
            receiver.with_initiators(self.initiators.clone())
        } else {
            receiver
        }
    }

    pub fn with_health(mut self, health: PartReporter) -> Self {
        self.health = Some(health);
        self
    }

    /// Sends a composed mail; on success the thread `token` (if any) remembers it.
    async fn send(
        &self,
        composed: &compose::Composed,
        token: Option<&str>,
    ) -> Result<String, ConnectorError> {
        let sent = self.sender.send(composed).await;
        if let Some(health) = &self.health {
            match &sent {
                Ok(()) => health.connected(),
                Err(ConnectorError::Transient(e)) => health.degraded(e),
                Err(_) => {}
            }
        }
        sent?;
        if let Some(token) = token {
            self.record_sent(token, &composed.message_id).await;
        }
        Ok(composed.message_id.as_str().to_owned())
    }

    /// Records a mail the SMTP server accepted as part of its thread. The mail is out: a
    /// failure here must not fail the delivery, or the bridge would send it again: a
    /// PostgreSQL outage between the 250 and this record sent the mail twice with one
    /// Message-ID (read in the code while looking for why a crash burst with PostgreSQL as
    /// the victim failed). See [`record_after_sending`].
    async fn record_sent(&self, token: &str, id: &compose::MessageId) {
        if let Err(e) =
            record_after_sending(SENT_RECORD_PATIENCE, || self.threads.sent(token, id)).await
        {
            tracing::error!(error = %e, "email: a sent mail is not recorded in its thread; a bounce of it will not be matched");
        }
    }

    async fn thread(&self, token: Option<&str>) -> Result<(String, Thread), ConnectorError> {
        let token = token.ok_or_else(|| {
            ConnectorError::Permanent("a mail delivery needs its conversation's thread".into())
        })?;
        let thread =
            self.threads.get(token).await?.ok_or_else(|| {
                ConnectorError::Permanent(format!("no mail thread {token} is known"))
            })?;
        Ok((token.to_owned(), thread))
    }

    /// `key` names what the mail carries, the same when it is sent again (see
    /// `MessageId::derived`).
    async fn send_messages(
        &self,
        deliveries: &[Delivery],
        messages: Vec<VisitorMessage>,
        address: &str,
        key: Option<String>,
    ) -> Result<String, ConnectorError> {
        let first = deliveries
            .first()
            .ok_or_else(|| ConnectorError::Permanent("a mail needs at least one message".into()))?;
        let (token, thread) = self.thread(first.thread.as_deref()).await?;
        let composed = if thread.initiator {
            self.answer(&token, &thread, address, messages, key)?
        } else {
            let mail = ThreadMail {
                responder: recipient(address),
                topic: thread.topic.clone(),
                pseudonym: first.visitor_alias.clone(),
                earlier: thread.earlier(),
                reply_token: token.clone(),
                messages,
                key,
            };
            self.composer
                .messages(&mail, std::time::SystemTime::now())
                .map_err(never_works)?
        };
        if !composed.files_left_out.is_empty() {
            return Err(ConnectorError::FileTooLarge(
                composed.files_left_out.join(", "),
            ));
        }
        self.send(&composed, Some(&token)).await
    }

    /// The mail of what was said in the conversation, for the initiator of the thread
    /// `token`.
    fn answer(
        &self,
        token: &str,
        thread: &Thread,
        address: &str,
        messages: Vec<VisitorMessage>,
        key: Option<String>,
    ) -> Result<compose::Composed, ConnectorError> {
        let mail = AnswerMail {
            initiator: recipient(address),
            topic: if thread.topic.is_empty() {
                "Switchboard".to_owned()
            } else {
                thread.topic.clone()
            },
            subject: thread.subject.clone(),
            earlier: thread.earlier(),
            reply_token: token.to_owned(),
            messages,
            key,
        };
        self.composer
            .answer(&mail, std::time::SystemTime::now())
            .map_err(never_works)
    }
}

/// Runs `record` (what a sent mail leaves in the store) until it is done, trying again
/// while the store is away (a retry-later error) for up to `patience`, then gives up with the
/// last error: the mail went out whatever happens here, so the delivery succeeds anyway, and
/// the bound keeps the whole call well under [`CALL_TIMEOUT`] (were the call cut off, the
/// bridge would send the mail again). A never-works error is not retried.
async fn record_after_sending<Fut>(
    patience: Duration,
    record: impl Fn() -> Fut,
) -> Result<(), ConnectorError>
where
    Fut: std::future::Future<Output = Result<(), ConnectorError>>,
{
    use backon::BackoffBuilder;
    let started = tokio::time::Instant::now();
    let mut backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .without_max_times()
        .with_jitter()
        .build();
    loop {
        let error = match record().await {
            Ok(()) => return Ok(()),
            Err(e @ ConnectorError::Transient(_)) => e,
            Err(e) => return Err(e),
        };
        match backoff.next() {
            Some(wait) if started.elapsed() + wait < patience => {
                tracing::warn!(error = %error, "email: the store did not take the record of a sent mail; trying again, not resending");
                tokio::time::sleep(wait).await;
            }
            _ => return Err(error),
        }
    }
}

/// What a mail relaying `deliveries` carries, `part` saying which part or kind: the key its
/// Message-ID is derived from, so the same mail sent again (a crash between the SMTP
/// server's 250 and the record of the send) has the same ID. `None` where a delivery has no
/// event ID (rows queued before event IDs were kept): a random ID then.
fn mail_key(deliveries: &[Delivery], part: &str) -> Option<String> {
    if deliveries.is_empty() || deliveries.iter().any(|d| d.event_id.is_empty()) {
        return None;
    }
    let events: Vec<&str> = deliveries.iter().map(|d| d.event_id.as_str()).collect();
    Some(format!("{} {part}", events.join(" ")))
}

fn recipient(address: &str) -> Recipient {
    Recipient {
        address: address.to_owned(),
        name: None,
    }
}

fn never_works(e: compose::ComposeError) -> ConnectorError {
    ConnectorError::Permanent(e.to_string())
}

#[async_trait]
impl Connector for EmailConnector {
    fn platform(&self) -> Platform {
        SPEC.platform()
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_text_len: TextLimit {
                max: MAX_TEXT_CHARS,
                unit: TextUnit::Chars,
            },
            files: Some(FileLimits {
                max_bytes: self.config.max_attachment_bytes as u64,
            }),
            // A sent mail cannot be changed: the bridge sends what changed as a new mail.
            edits: false,
            revises_deliveries: false,
            typing_renewal: None,
            shares_room: false,
            command_prefix: COMMAND_PREFIX,
            min_interval_per_chat: Duration::ZERO,
            max_messages_per_second: None,
            unreachable_hands_over: true,
            call_timeout: CALL_TIMEOUT,
            batch_window: self.config.batch_window,
            // A mail sent again is a second mail.
            idempotent_sends: false,
        }
    }

    fn takes_initiators(&self) -> bool {
        self.config.initiators
    }

    fn how_to_accept(&self) -> &'static str {
        "reply to its offer mail, or use its Accept link"
    }

    async fn offer(&self, offer: &Offer, address: &str) -> Result<Option<String>, ConnectorError> {
        let token = new_token();
        let accept_url = self
            .links
            .mint(offer.offer_id, address, Answer::Accept)
            .await?;
        let decline_url = self
            .links
            .mint(offer.offer_id, address, Answer::Decline)
            .await?;
        let mail = OfferMail {
            responder: recipient(address),
            topic: offer.topic_name.clone(),
            pseudonym: offer.visitor_alias.clone(),
            language: offer.language.clone(),
            first_message: offer.first_message.clone(),
            summary: offer.summary.clone(),
            accept_url,
            decline_url,
            reply_token: token.clone(),
            // The room ID makes it unique beyond this database (offer numbers start again in a
            // new one); the address, for each responder it was offered to.
            key: Some(format!(
                "offer {} {} {address}",
                offer.room_id, offer.offer_id
            )),
        };
        let composed = self
            .composer
            .offer(&mail, std::time::SystemTime::now())
            .map_err(never_works)?;
        self.threads
            .start(
                &token,
                &Thread {
                    address: address.to_owned(),
                    topic: offer.topic_name.clone(),
                    pseudonym: offer.visitor_alias.clone(),
                    ids: Vec::new(),
                    initiator: false,
                    subject: None,
                },
            )
            .await?;
        self.send(&composed, Some(&token)).await?;
        Ok(Some(token))
    }

    /// One part: a mail has room for any message.
    fn render(&self, delivery: &Delivery) -> Vec<String> {
        vec![delivery.body.clone()]
    }

    async fn deliver(
        &self,
        delivery: &Delivery,
        index: usize,
        part: &str,
        address: &str,
    ) -> Result<String, ConnectorError> {
        let message = VisitorMessage {
            body: part.to_owned(),
            html: delivery.formatted_body.clone(),
            file: None,
        };
        let key = mail_key(std::slice::from_ref(delivery), &index.to_string());
        self.send_messages(std::slice::from_ref(delivery), vec![message], address, key)
            .await
    }

    async fn deliver_batch(
        &self,
        deliveries: &[Delivery],
        address: &str,
    ) -> Result<String, ConnectorError> {
        let messages = deliveries
            .iter()
            .map(|d| VisitorMessage {
                body: d.body.clone(),
                html: d.formatted_body.clone(),
                file: None,
            })
            .collect();
        let key = mail_key(deliveries, "batch");
        self.send_messages(deliveries, messages, address, key).await
    }

    async fn deliver_file(
        &self,
        delivery: &Delivery,
        caption: &str,
        file: Attachment,
        address: &str,
    ) -> Result<String, ConnectorError> {
        let message = VisitorMessage {
            body: caption.to_owned(),
            html: None,
            file: Some(VisitorFile {
                name: file.filename,
                mimetype: file.mimetype,
                bytes: file.bytes,
                link: None,
            }),
        };
        let key = mail_key(std::slice::from_ref(delivery), "file");
        self.send_messages(std::slice::from_ref(delivery), vec![message], address, key)
            .await
    }

    async fn fetch_file(&self, file: &RemoteFile) -> Result<Attachment, ConnectorError> {
        self.threads.file(&file.file_id).await
    }

    async fn notify(
        &self,
        address: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let known = match thread {
            Some(token) => self.threads.get(token).await?.map(|t| (token, t)),
            None => None,
        };
        if let Some((token, thread)) = known.as_ref().filter(|(_, t)| t.initiator) {
            let message = VisitorMessage {
                body: text.to_owned(),
                html: None,
                file: None,
            };
            let composed = self.answer(token, thread, address, vec![message], None)?;
            return self.send(&composed, Some(token)).await.map(Some);
        }
        let mail = NoticeMail {
            responder: recipient(address),
            thread: known.as_ref().map(|(_, t)| NoticeThread {
                topic: t.topic.clone(),
                pseudonym: t.pseudonym.clone(),
                earlier: t.earlier(),
            }),
            // A notice about no conversation still gets a token of ours: a reply to it
            // names no conversation, so only its commands count.
            reply_token: known
                .as_ref()
                .map_or_else(new_token, |(token, _)| (*token).to_owned()),
            text: text.to_owned(),
        };
        let composed = self
            .composer
            .notice(&mail, std::time::SystemTime::now())
            .map_err(never_works)?;
        let token = known.as_ref().map(|(token, _)| *token);
        self.send(&composed, token).await.map(Some)
    }

    /// SMTP: connect and AUTH as a send would (sending nothing); IMAP, where configured:
    /// log in and open the mailbox read-only. Both are tried, and both reported.
    async fn check(&self) -> Result<String, ConnectorError> {
        let smtp = self.sender.check().await.map_err(|e| match e {
            ConnectorError::Transient(text)
            | ConnectorError::Permanent(text)
            | ConnectorError::FileTooLarge(text) => text,
            other => other.to_string(),
        });
        let imap = match self.imap_config() {
            None => None,
            Some(config) => Some(imap::check_login(&config).await),
        };
        let hint = "check email.smtp (and email.imap): host, port, security, username, and the \
                    password (or password_file)";
        match (smtp, imap) {
            (Ok(smtp), None) => Ok(smtp),
            (Ok(smtp), Some(Ok(imap))) => Ok(format!("{smtp}; {imap}")),
            (Err(e), None | Some(Ok(_))) | (Ok(_), Some(Err(e))) => {
                Err(ConnectorError::Permanent(format!("{e}. {hint}")))
            }
            (Err(smtp), Some(Err(imap))) => {
                Err(ConnectorError::Permanent(format!("{smtp}; {imap}. {hint}")))
            }
        }
    }

    /// Reads the mailbox, while this instance leads (one reader flags what it recorded).
    async fn run(self: Arc<Self>, sink: Arc<dyn RemoteSink>, term: Term) {
        let Some(config) = self.imap_config() else {
            return;
        };
        let receiver = self.receiver(sink);
        let handler = |mail: imap::RawMail| {
            let receiver = receiver.clone();
            async move {
                receiver
                    .receive(&mail.bytes, receive::Arrival::default())
                    .await
            }
        };
        if let Some(health) = &self.health {
            health.connected();
        }
        if let Err(e) = imap::run_mailbox(config, handler, term).await {
            tracing::error!(error = %e, "the mailbox reader stopped");
            if let Some(health) = &self.health {
                health.down(&e);
            }
        }
    }

    /// Serves the SMTP listener, on every instance: a mail server delivers to whichever it
    /// reaches.
    async fn serve(self: Arc<Self>, sink: Arc<dyn RemoteSink>, shutdown: watch::Receiver<bool>) {
        let Some(settings) = &self.config.listener else {
            return;
        };
        let mut config =
            listener::ListenerConfig::new(self.config.domain.clone(), self.config.domain.clone());
        config.max_message_bytes = settings.max_message_bytes;
        let address = settings.address;
        let socket = match tokio::net::TcpListener::bind(address).await {
            Ok(socket) => socket,
            Err(e) => {
                tracing::error!(error = %e, %address, "the SMTP listener could not bind");
                if let Some(health) = &self.health {
                    health.down(format!("SMTP listener on {address}: {e}"));
                }
                return;
            }
        };
        tracing::info!(%address, "SMTP listener ready");
        let receiver = self.receiver(sink);
        let handler = move |envelope: listener::Envelope, bytes: Vec<u8>| {
            let receiver = receiver.clone();
            async move {
                let arrival = receive::Arrival {
                    recipients: &envelope.rcpt_to,
                    peer: Some(auth::SmtpPeer {
                        ip: envelope.peer.ip(),
                        helo: envelope.helo.clone(),
                        mail_from: envelope.mail_from.clone(),
                    }),
                };
                receiver.receive(&bytes, arrival).await
            }
        };
        if let Err(e) = listener::serve(socket, config, handler, shutdown).await {
            tracing::error!(error = %e, "the SMTP listener stopped");
        }
    }

    fn webhook_routes(self: Arc<Self>, sink: Arc<dyn RemoteSink>) -> Option<axum::Router> {
        let mut routes = self.links.clone().router(sink.clone());
        if let Some(token) = &self.config.http_token {
            routes = routes.merge(receive::http_route(
                self.receiver(sink),
                token.expose().to_owned(),
            ));
        }
        Some(routes)
    }
}

#[cfg(test)]
mod record_tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// A record that fails `failures` times with `error`, then succeeds; counts its calls.
    fn flaky(
        failures: usize,
        error: fn() -> ConnectorError,
        calls: &AtomicUsize,
    ) -> impl Fn() -> std::future::Ready<Result<(), ConnectorError>> + '_ {
        move || {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(if n < failures { Err(error()) } else { Ok(()) })
        }
    }

    fn away() -> ConnectorError {
        ConnectorError::Transient("the store is away".into())
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_that_comes_back_takes_the_record_of_a_sent_mail() {
        let calls = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let recorded = record_after_sending(SENT_RECORD_PATIENCE, flaky(6, away, &calls)).await;
        assert!(recorded.is_ok());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            7,
            "tried until the store took it"
        );
        assert!(started.elapsed() < SENT_RECORD_PATIENCE);
    }

    #[tokio::test(start_paused = true)]
    async fn a_store_away_too_long_is_given_up_within_the_bound_and_a_refusal_at_once() {
        let calls = AtomicUsize::new(0);
        let started = tokio::time::Instant::now();
        let given_up =
            record_after_sending(SENT_RECORD_PATIENCE, flaky(usize::MAX, away, &calls)).await;
        assert!(matches!(given_up, Err(ConnectorError::Transient(_))));
        assert!(calls.load(Ordering::SeqCst) > 10, "kept trying meanwhile");
        assert!(started.elapsed() < SENT_RECORD_PATIENCE);

        let calls = AtomicUsize::new(0);
        let refused = record_after_sending(
            SENT_RECORD_PATIENCE,
            flaky(
                usize::MAX,
                || ConnectorError::Permanent("corrupt".into()),
                &calls,
            ),
        )
        .await;
        assert!(matches!(refused, Err(ConnectorError::Permanent(_))));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }
}
