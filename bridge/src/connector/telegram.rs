//! Responders on Telegram, through a bot (teloxide).
//!
//! Receiving (`receive.rs`) uses long polling or a webhook: every update is recorded through the
//! [`RemoteSink`] before it is confirmed to Telegram, so a crash or restart neither loses nor
//! doubles an update. Sending, offers and files are here. The bot token is never logged: teloxide's network errors embed the
//! request URL, which contains the token, so every error text goes through [`Redactor`].

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::cluster::Term;
use teloxide::{
    Bot, RequestError,
    net::Download,
    payloads::{
        EditMessageCaptionSetters, EditMessageTextSetters, SendDocumentSetters, SendMessageSetters,
        SendPhotoSetters,
    },
    prelude::Requester,
    types::{
        ChatAction, ChatId, FileId, InlineKeyboardButton, InlineKeyboardMarkup, InputFile,
        MessageId, ParseMode,
    },
};

use crate::format::truncate_chars as truncate;
use crate::health::{PartReporter, PartState};

use super::{
    Attachment, Capabilities, Connector, ConnectorError, Delivery, FileKind, FileLimits, Offer,
    Platform, RemoteFile, RemoteSink, TextLimit, TextUnit,
    registry::{BuildContext, PlatformSpec},
};

pub mod format;
mod raw_update;
mod receive;

/// The platform's name in the configuration, the store and the admin API.
pub const NAME: &str = "telegram";

/// Telegram in the platform registry (`registry.rs`).
pub static SPEC: PlatformSpec = PlatformSpec {
    name: NAME,
    display_name: "Telegram",
    command_prefix: COMMAND_PREFIX,
    validate_address,
    links_by_code: true,
    check: |section| match section {
        None => Ok(false),
        Some(section) => TelegramConfig::read(section).map(|_| true),
    },
    build,
};

/// Bot commands start with a slash (`/end`).
const COMMAND_PREFIX: char = '/';

/// A Telegram address is the chat ID of the responder's private chat with the bot: an integer.
pub fn validate_address(address: &str) -> Result<(), String> {
    match address.parse::<i64>() {
        Ok(_) => Ok(()),
        Err(_) => Err(format!(
            "{address:?} is not a Telegram chat ID (an integer)"
        )),
    }
}

/// The `[telegram]` section of the configuration file; without it Telegram is off.
#[derive(serde::Deserialize)]
pub struct TelegramConfig {
    /// The bot token from @BotFather. Prefer the environment: `SWITCHBOARD_TELEGRAM__TOKEN`.
    pub token: String,
    /// A self-hosted Bot API server (default: Telegram's).
    pub api_url: Option<String>,
    /// Seconds one long poll waits for updates.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_secs: u64,
    /// Receive updates by webhook instead of long polling: the public HTTPS URL at which
    /// Telegram reaches Switchboard's `/telegram/webhook` route.
    pub webhook_url: Option<String>,
    /// The secret Telegram must send with each webhook request. Default: a fresh random one
    /// at every start (Switchboard registers the webhook itself).
    pub webhook_secret: Option<String>,
    /// Whether people who are not responders may start conversations by writing to the bot
    /// (they pick a topic from buttons, then talk with whoever takes it). Default: off, and
    /// the bot answers only responders.
    #[serde(default)]
    pub initiators: bool,
}

fn default_poll_timeout() -> u64 {
    25
}

impl std::fmt::Debug for TelegramConfig {
    // Hand-written so the token can never be printed with the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramConfig")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl TelegramConfig {
    /// Reads the section; the error names the field, never the token's value.
    pub fn read(section: &serde_json::Value) -> Result<Self, String> {
        serde_json::from_value(section.clone()).map_err(|e| e.to_string())
    }
}

/// The connector the configuration asks for (long polling, or a webhook with `webhook_url`).
fn build(
    section: Option<&serde_json::Value>,
    context: &BuildContext,
) -> Result<Option<Arc<dyn Connector>>, String> {
    let Some(section) = section else {
        return Ok(None);
    };
    let config = TelegramConfig::read(section)?;
    let connector = TelegramConnector::new(&config.token, config.api_url.as_deref())
        .map_err(|e| e.to_string())?
        .with_poll_timeout(Duration::from_secs(config.poll_timeout_secs))
        .with_initiators(config.initiators)
        .with_health(context.health.part(SPEC.name));
    let connector = match config.webhook_url {
        Some(url) => connector
            .with_webhook(Webhook {
                url,
                secret: config.webhook_secret.unwrap_or_else(random_secret),
            })
            .map_err(|e| e.to_string())?,
        None => connector,
    };
    Ok(Some(Arc::new(connector)))
}

/// A webhook secret nobody can guess: 48 letters and digits.
fn random_secret() -> String {
    use rand::{Rng, distributions::Alphanumeric};
    rand::thread_rng()
        .sample_iter(&Alphanumeric)
        .take(48)
        .map(char::from)
        .collect()
}

/// Removes the bot token from any text before it reaches a log or an error message.
#[derive(Clone)]
struct Redactor(Arc<str>);

impl Redactor {
    fn clean(&self, text: impl std::fmt::Display) -> String {
        let text = text.to_string();
        if self.0.is_empty() {
            text
        } else {
            text.replace(&*self.0, "<redacted>")
        }
    }
}

/// Webhook mode: Telegram pushes updates to `url`, proving itself with `secret`.
#[derive(Clone)]
pub struct Webhook {
    /// The public HTTPS URL of Switchboard's `/telegram/webhook` route.
    pub url: String,
    /// Sent back by Telegram in `X-Telegram-Bot-Api-Secret-Token`; 1-256 of `A-Za-z0-9_-`.
    pub secret: String,
}

/// The route Telegram posts updates to in webhook mode.
pub const WEBHOOK_PATH: &str = "/telegram/webhook";

pub struct TelegramConnector {
    bot: Bot,
    redact: Redactor,
    /// How long one `getUpdates` long poll waits for an update.
    poll_timeout: Duration,
    /// Set: receive by webhook; unset: long polling (the default).
    webhook: Option<Webhook>,
    /// Where the receive loop says how the connection to Telegram is doing.
    health: Option<PartReporter>,
    /// Whether people who are not responders may start conversations here.
    initiators: bool,
}

impl TelegramConnector {
    /// `api_url`: the Bot API server (Telegram's by default; a self-hosted one or a test
    /// stand-in otherwise).
    pub fn new(token: &str, api_url: Option<&str>) -> Result<Self, ConnectorError> {
        let mut bot = Bot::new(token);
        if let Some(url) = api_url {
            let url = reqwest_url(url)
                .map_err(|e| ConnectorError::Permanent(format!("telegram.api_url: {e}")))?;
            bot = bot.set_api_url(url);
        }
        Ok(Self {
            bot,
            redact: Redactor(token.into()),
            poll_timeout: Duration::from_secs(25),
            webhook: None,
            health: None,
            initiators: false,
        })
    }

    /// Lets people who are not responders start conversations by writing to the bot.
    pub fn with_initiators(mut self, initiators: bool) -> Self {
        self.initiators = initiators;
        self
    }

    /// Reports the connection's state (`connected` after a successful `getUpdates` or
    /// `setWebhook`, `degraded` or `down` with the kind of error) to `health`.
    pub fn with_health(mut self, health: PartReporter) -> Self {
        self.health = Some(health);
        self
    }

    fn report(&self, outcome: Result<(), &RequestError>) {
        if let Some(health) = &self.health {
            match outcome.map_err(health_of) {
                Ok(()) => health.connected(),
                Err((PartState::Down, kind)) => health.down(kind),
                Err((_, kind)) => health.degraded(kind),
            }
        }
    }

    /// What a failed `getMe` means for the operator and how to fix it, without the token
    /// (a network error's text holds the request URL, which holds it).
    fn check_failure(&self, e: &RequestError) -> String {
        use teloxide::ApiError;
        let url = self.bot.api_url();
        let server = format!(
            "{}://{}{}",
            url.scheme(),
            url.host_str().unwrap_or("?"),
            url.port().map(|p| format!(":{p}")).unwrap_or_default()
        );
        match e {
            RequestError::Api(ApiError::InvalidToken) => format!(
                "Unauthorized: the Bot API at {server} refused the bot token (mistyped, or revoked). \
                 Copy the bot's token from @BotFather (/mybots, API Token) into telegram.token, \
                 or into the file telegram.token_file names"
            ),
            RequestError::Network(n) if n.is_connect() || n.is_timeout() => format!(
                "cannot reach the Bot API at {server}: check telegram.api_url (Telegram's own \
                 when unset) and that this machine may connect there"
            ),
            other => format!(
                "the Bot API at {server} answered: {}",
                self.redact.clean(other)
            ),
        }
    }

    pub fn with_poll_timeout(mut self, timeout: Duration) -> Self {
        self.poll_timeout = timeout;
        self
    }

    pub fn with_webhook(mut self, webhook: Webhook) -> Result<Self, ConnectorError> {
        let valid = (1..=256).contains(&webhook.secret.len())
            && webhook
                .secret
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !valid {
            return Err(ConnectorError::Permanent(
                "telegram webhook secret must be 1-256 characters of A-Z, a-z, 0-9, _ and -".into(),
            ));
        }
        self.webhook = Some(webhook);
        Ok(self)
    }

    fn error(&self, e: RequestError) -> ConnectorError {
        match e {
            RequestError::RetryAfter(after) => ConnectorError::RetryAfter(after.duration()),
            RequestError::Api(teloxide::ApiError::RequestEntityTooLarge) => {
                ConnectorError::FileTooLarge(self.redact.clean(e))
            }
            RequestError::Network(_) => ConnectorError::Transient(self.redact.clean(e)),
            RequestError::Api(ref api) if is_transient_api_error(api) => {
                ConnectorError::Transient(self.redact.clean(e))
            }
            other => ConnectorError::Permanent(self.redact.clean(other)),
        }
    }

    fn chat(address: &str) -> Result<ChatId, ConnectorError> {
        address.parse::<i64>().map(ChatId).map_err(|_| {
            ConnectorError::Permanent(format!("{address:?} is not a Telegram chat ID"))
        })
    }

    fn message(id: &str) -> Result<MessageId, ConnectorError> {
        id.parse::<i32>()
            .map(MessageId)
            .map_err(|_| ConnectorError::Permanent(format!("bad message id {id:?}")))
    }
}

fn reqwest_url(url: &str) -> Result<url::Url, String> {
    url::Url::parse(url).map_err(|e| e.to_string())
}

/// What a failed Bot API call says about the connection, for the health report: its state and
/// the kind of error, not the error's text (a network error's text has the URL, with the token).
fn health_of(e: &RequestError) -> (PartState, String) {
    use teloxide::ApiError;
    let kind = match e {
        RequestError::Api(ApiError::InvalidToken) => {
            return (
                PartState::Down,
                "the Bot API refused the bot token (401)".into(),
            );
        }
        RequestError::Api(ApiError::TerminatedByOtherGetUpdates) => {
            "conflict: another getUpdates or a webhook uses this bot (409)".into()
        }
        RequestError::Api(api) => format!("Bot API error: {api}"),
        RequestError::RetryAfter(_) => "flood control (429)".into(),
        RequestError::Network(e) if e.is_timeout() => "network error: timed out".into(),
        RequestError::Network(e) if e.is_connect() => "network error: cannot connect".into(),
        RequestError::Network(_) => "network error".into(),
        RequestError::InvalidJson { .. } => "unreadable answer from the Bot API".into(),
        RequestError::MigrateToChatId(_) => "group migrated to a supergroup".into(),
        RequestError::Io(_) => "I/O error".into(),
    };
    (PartState::Degraded, kind)
}

fn is_transient_api_error(api: &teloxide::ApiError) -> bool {
    // Telegram's 5xx come through as unknown API errors; retrying them is what its docs advise.
    matches!(api, teloxide::ApiError::Unknown(text) if text.contains("Internal Server Error") || text.contains("Bad Gateway"))
}

#[async_trait]
impl Connector for TelegramConnector {
    fn platform(&self) -> Platform {
        SPEC.platform()
    }

    /// Telegram's documented limits: about one message per second to one chat, and about
    /// 30 per second across chats; faster sending only earns 429s. Texts of 4096 UTF-16
    /// units once the HTML is parsed; bots may send files of up to 50 MB; a chat action
    /// ("typing…") lasts about five seconds, so it is renewed every four.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_text_len: TextLimit {
                max: format::TELEGRAM_MAX_TEXT,
                unit: TextUnit::Utf16,
            },
            files: Some(FileLimits {
                max_bytes: 50 * 1024 * 1024,
            }),
            edits: true,
            revises_deliveries: true,
            typing_renewal: Some(Duration::from_secs(4)),
            shares_room: false,
            command_prefix: COMMAND_PREFIX,
            min_interval_per_chat: Duration::from_secs(1),
            max_messages_per_second: Some(30),
            unreachable_hands_over: true,
            // A file of up to 50 MB goes up in one call; texts take well under a second.
            call_timeout: Duration::from_secs(30),
            batch_window: Duration::ZERO,
            // The Bot API has no idempotency key: a repeated send is a second message.
            idempotent_sends: false,
        }
    }

    fn takes_initiators(&self) -> bool {
        self.initiators
    }

    /// One button per topic; its callback data names the topic (`topic:<id>`, within
    /// Telegram's 64 bytes: a topic whose ID is longer gets no button, with a warning).
    async fn ask_topic(
        &self,
        address: &str,
        _thread: Option<&str>,
        text: &str,
        topics: &[(String, String)],
    ) -> Result<(), ConnectorError> {
        let chat = Self::chat(address)?;
        let rows: Vec<Vec<InlineKeyboardButton>> = topics
            .iter()
            .filter(|(id, _)| {
                let fits = "topic:".len() + id.len() <= 64;
                if !fits {
                    tracing::warn!(topic = %id, "telegram: a topic ID over 58 bytes gets no button");
                }
                fits
            })
            .map(|(id, name)| vec![InlineKeyboardButton::callback(name, format!("topic:{id}"))])
            .collect();
        self.bot
            .send_message(chat, escape(text))
            .parse_mode(ParseMode::Html)
            .reply_markup(InlineKeyboardMarkup::new(rows))
            .await
            .map_err(|e| self.error(e))?;
        Ok(())
    }

    async fn offer(&self, offer: &Offer, address: &str) -> Result<Option<String>, ConnectorError> {
        let chat = Self::chat(address)?;
        let mut text = format!(
            "<b>New conversation</b> about <b>{}</b> from {}",
            escape(&offer.topic_name),
            escape(&offer.visitor_alias)
        );
        if let Some(language) = &offer.language {
            text.push_str(&format!("\nLanguage: {}", escape(language)));
        }
        if let Some(summary) = &offer.summary {
            text.push_str(&format!(
                "\n\n<blockquote>{}</blockquote>",
                escape(&truncate(summary, 2000))
            ));
        } else if let Some(first) = &offer.first_message {
            text.push_str(&format!(
                "\n\n<blockquote>{}</blockquote>",
                escape(&truncate(first, 1000))
            ));
        }
        let buttons = InlineKeyboardMarkup::new([[
            InlineKeyboardButton::callback("Accept", format!("accept:{}", offer.offer_id)),
            InlineKeyboardButton::callback("Decline", format!("decline:{}", offer.offer_id)),
        ]]);
        let sent = self
            .bot
            .send_message(chat, text)
            .parse_mode(ParseMode::Html)
            .reply_markup(buttons)
            .await
            .map_err(|e| self.error(e))?;
        Ok(Some(sent.id.0.to_string()))
    }

    async fn close_offer(
        &self,
        address: &str,
        remote_message_id: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        let (chat, id) = (Self::chat(address)?, Self::message(remote_message_id)?);
        // Editing without a reply_markup removes the buttons.
        match self.bot.edit_message_text(chat, id, why.to_owned()).await {
            Ok(_) => Ok(()),
            Err(RequestError::Api(teloxide::ApiError::MessageNotModified)) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn offer_accepted(
        &self,
        address: &str,
        handle: &str,
        text: &str,
    ) -> Result<(), ConnectorError> {
        self.close_offer(address, handle, text).await
    }

    /// Text: Telegram HTML texts within `max_text_len` (4096 UTF-16 units once parsed), the
    /// first headed by the alias.
    /// A file: its caption.
    fn render(&self, delivery: &Delivery) -> Vec<String> {
        if delivery.to_initiator {
            // They talk with the bot: no heading (notices say who answers).
            if delivery.media.is_some() {
                return vec![escape(&truncate(&delivery.body, 900))];
            }
            return format::matrix_to_telegram_html(
                &delivery.body,
                delivery.formatted_body.as_deref(),
            );
        }
        if delivery.media.is_some() {
            return vec![format!(
                "<b>{}</b>: {}",
                escape(&delivery.visitor_alias),
                escape(&truncate(&delivery.body, 900))
            )];
        }
        let header = format!("<b>{}</b>:\n", escape(&delivery.visitor_alias));
        delivery_chunks(&header, &delivery.body, delivery.formatted_body.as_deref())
    }

    /// Telegram has no idempotency key: a send whose answer is lost is sent again on retry.
    async fn deliver(
        &self,
        _delivery: &Delivery,
        _index: usize,
        part: &str,
        address: &str,
    ) -> Result<String, ConnectorError> {
        let chat = Self::chat(address)?;
        let sent = self
            .bot
            .send_message(chat, part.to_owned())
            .parse_mode(ParseMode::Html)
            .await
            .map_err(|e| self.error(e))?;
        Ok(sent.id.0.to_string())
    }

    /// A text is edited as text; a file's message (which has no text, only a caption) gets
    /// the new caption.
    async fn edit_delivered(
        &self,
        _delivery: &Delivery,
        message_id: &str,
        part: &str,
        address: &str,
    ) -> Result<(), ConnectorError> {
        let (chat, id) = (Self::chat(address)?, Self::message(message_id)?);
        let text = self
            .bot
            .edit_message_text(chat, id, part.to_owned())
            .parse_mode(ParseMode::Html)
            .await;
        let result = match text {
            Err(RequestError::Api(teloxide::ApiError::Unknown(ref why)))
                if why.contains("no text in the message") =>
            {
                self.bot
                    .edit_message_caption(chat, id)
                    .caption(part.to_owned())
                    .parse_mode(ParseMode::Html)
                    .await
            }
            other => other,
        };
        match result {
            Ok(_) => Ok(()),
            // Already so (an earlier attempt whose answer was lost), or gone.
            Err(RequestError::Api(
                teloxide::ApiError::MessageNotModified | teloxide::ApiError::MessageToEditNotFound,
            )) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    async fn delete_delivered(
        &self,
        _delivery: &Delivery,
        message_id: &str,
        address: &str,
    ) -> Result<(), ConnectorError> {
        let (chat, id) = (Self::chat(address)?, Self::message(message_id)?);
        match self.bot.delete_message(chat, id).await {
            Ok(_) => Ok(()),
            Err(RequestError::Api(teloxide::ApiError::MessageToDeleteNotFound)) => Ok(()),
            Err(e) => Err(self.error(e)),
        }
    }

    fn webhook_routes(self: Arc<Self>, sink: Arc<dyn RemoteSink>) -> Option<axum::Router> {
        self.webhook_router(sink)
    }

    async fn deliver_file(
        &self,
        _delivery: &Delivery,
        caption: &str,
        file: Attachment,
        address: &str,
    ) -> Result<String, ConnectorError> {
        let chat = Self::chat(address)?;
        let caption = caption.to_owned();
        let input = InputFile::memory(file.bytes).file_name(file.filename);
        let sent = match file.kind {
            FileKind::Image => {
                self.bot
                    .send_photo(chat, input)
                    .caption(caption)
                    .parse_mode(ParseMode::Html)
                    .await
            }
            FileKind::File => {
                self.bot
                    .send_document(chat, input)
                    .caption(caption)
                    .parse_mode(ParseMode::Html)
                    .await
            }
        }
        .map_err(|e| self.error(e))?;
        Ok(sent.id.0.to_string())
    }

    async fn fetch_file(&self, file: &RemoteFile) -> Result<Attachment, ConnectorError> {
        let meta = self
            .bot
            .get_file(FileId(file.file_id.clone()))
            .await
            .map_err(|e| self.error(e))?;
        let mut bytes = Vec::new();
        self.bot
            .download_file(&meta.path, &mut bytes)
            .await
            .map_err(|e| ConnectorError::Transient(self.redact.clean(e)))?;
        Ok(Attachment {
            bytes,
            mimetype: file.mimetype.clone(),
            filename: file.filename.clone(),
            kind: file.kind,
        })
    }

    /// Telegram shows "typing…" for five seconds per `sendChatAction` and has no way to stop
    /// it early, so only the start is sent; the bridge renews it while the visitor types.
    async fn typing(
        &self,
        address: &str,
        _thread: Option<&str>,
        typing: bool,
    ) -> Result<(), ConnectorError> {
        if !typing {
            return Ok(());
        }
        self.bot
            .send_chat_action(Self::chat(address)?, ChatAction::Typing)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e))
    }

    async fn notify(
        &self,
        address: &str,
        _thread: Option<&str>,
        text: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let chat = Self::chat(address)?;
        self.bot
            .send_message(chat, text.to_owned())
            .await
            .map(|sent| Some(sent.id.0.to_string()))
            .map_err(|e| self.error(e))
    }

    /// `getMe` with the bot token: the bot's username and ID, or why the Bot API refused.
    async fn check(&self) -> Result<String, ConnectorError> {
        match self.bot.get_me().await {
            Ok(me) => Ok(format!(
                "getMe: @{} (id {})",
                me.user.username.as_deref().unwrap_or("?"),
                me.user.id
            )),
            Err(e) => Err(ConnectorError::Permanent(format!(
                "getMe: {}",
                self.check_failure(&e)
            ))),
        }
    }

    /// Long polling (or registering the webhook), while this instance leads (`receive.rs`).
    async fn run(self: Arc<Self>, sink: Arc<dyn RemoteSink>, term: Term) {
        self.receive(sink, term).await
    }
}

/// The visitor's message as Telegram texts, the first one headed by who wrote it.
fn delivery_chunks(header: &str, body: &str, formatted_body: Option<&str>) -> Vec<String> {
    let mut chunks = format::matrix_to_telegram_html(body, formatted_body);
    let header_len = format::telegram_html_plain_len(header);
    match chunks.first_mut() {
        Some(first)
            if format::telegram_html_plain_len(first) + header_len <= format::TELEGRAM_MAX_TEXT =>
        {
            first.insert_str(0, header);
        }
        _ => chunks.insert(0, header.trim_end().to_owned()),
    }
    chunks
}

pub(crate) fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// For `crate::fuzzing`: an update read as long polling and the webhook read it.
#[doc(hidden)]
pub(crate) mod fuzz_support {
    pub(crate) fn update(value: serde_json::Value) {
        match super::raw_update::parse(value) {
            Ok(update) => {
                let _ = update.id;
            }
            Err(unreadable) => assert!(!unreadable.reason.is_empty()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connector::MediaRef;

    #[test]
    fn the_token_never_survives_redaction() {
        let r = Redactor("123:ABC".into());
        assert_eq!(
            r.clean("error sending request for url (http://x/bot123:ABC/GetUpdates)"),
            "error sending request for url (http://x/bot<redacted>/GetUpdates)"
        );
    }

    fn delivery(body: &str, media: Option<MediaRef>) -> Delivery {
        Delivery {
            room_id: "!r".into(),
            event_id: "$e".into(),
            visitor_alias: "Visitor 7F3A".into(),
            body: body.into(),
            formatted_body: None,
            media,
            thread: None,
            revises: None,
            to_initiator: false,
        }
    }

    #[test]
    fn a_long_message_renders_into_parts_that_each_fit_headed_once() {
        let c = TelegramConnector::new("1:T", None).unwrap();
        let paragraph = |p: usize| format!("{}{p}", "word ".repeat(600));
        let body = (0..5).map(paragraph).collect::<Vec<_>>().join("\n\n");
        let parts = c.render(&delivery(&body, None));
        assert_eq!(parts.len(), 5, "one part per paragraph");
        assert!(
            parts
                .iter()
                .all(|p| format::telegram_html_plain_len(p) <= 4096)
        );
        assert!(parts[0].starts_with("<b>Visitor 7F3A</b>:\n"));
        assert_eq!(
            parts.iter().filter(|p| p.contains("Visitor 7F3A")).count(),
            1
        );
        assert_eq!(
            c.render(&delivery(&body, None)),
            parts,
            "rendering is stable"
        );

        let file = MediaRef {
            mxc: "mxc://x/y".into(),
            mimetype: None,
            filename: "a.png".into(),
            kind: FileKind::Image,
        };
        assert_eq!(
            c.render(&delivery("<see>", Some(file))),
            ["<b>Visitor 7F3A</b>: &lt;see&gt;"],
            "a file is one part, its caption"
        );
    }

    #[test]
    fn offers_quote_the_first_message_escaped_and_truncated() {
        assert_eq!(escape("<b>&"), "&lt;b&gt;&amp;");
        assert_eq!(truncate("abcdef", 3), "abc…");
        assert_eq!(truncate("abc", 3), "abc");
    }
}
