//! Responders on Discord, through a bot: offers as direct messages with Accept and Decline
//! buttons, and each accepted conversation in a private thread of the operator's staff
//! channel (or, without one, in the direct chat, replies routed by Discord's reply reference
//! as on Telegram).
//!
//! This is the mapping Discord support-ticket bots converged on: a direct message reaches a
//! responder wherever they are, buttons make accepting one press, and a thread per
//! conversation routes every reply exactly however many conversations a responder holds.
//!
//! - Requests: [`rest`], our own small client reading Discord's rate-limit headers; [`calls`],
//!   the calls besides sending (direct chats, posts and edits with mentions off, staff threads,
//!   slash commands) and how a failed one is taken.
//! - Events: [`gateway`], our own loop over the websocket, handling dispatches in order;
//!   [`events`] turns them into [`RemoteEvent`]s, recorded before an interaction is
//!   answered.
//! - Formats: [`format`], Matrix HTML ↔ Discord markdown through the shared message model.
//!
//! No identifier of the visitor reaches Discord: offers, thread names, messages and webhook
//! names carry the conversation's pseudonym only, and every message goes out with
//! `allowed_mentions` empty, so nothing a visitor writes (`@everyone`, `<@&role>`) pings
//! anyone. The bot token is never logged.

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::cluster::Term;
use reqwest::Method;
use serde_json::{Value, json};
use serenity::model::channel::Message;
use tokio::sync::Mutex;

use super::{
    Attachment, Capabilities, Connector, ConnectorError, Delivery, FileLimits, Offer, Platform,
    RemoteFile, RemoteSink, TextLimit, TextUnit,
    registry::{BuildContext, PlatformSpec},
};
use crate::format::truncate_chars as truncate;
use crate::health::PartReporter;

mod calls;
mod config;
mod events;
pub mod format;
mod gateway;
mod messages;
mod rest;

pub use config::{DiscordConfig, Snowflake, validate_address};

use rest::{Body, Rest, RestError, Route, codes};

/// The platform's name in the configuration, the store and the admin API.
pub const NAME: &str = "discord";

/// Discord in the platform registry (`registry.rs`).
pub static SPEC: PlatformSpec = PlatformSpec {
    name: NAME,
    display_name: "Discord",
    command_prefix: COMMAND_PREFIX,
    validate_address,
    links_by_code: true,
    check: |section| match section {
        None => Ok(false),
        Some(section) => DiscordConfig::read(section).map(|_| true),
    },
    build,
};

/// Slash commands, and their text forms (`/end`).
const COMMAND_PREFIX: char = '/';

/// How a handle names a thread (a conversation's place of its own) rather than an offer's
/// direct message.
const THREAD_HANDLE: &str = "thread:";

/// The gateway intents Switchboard identifies with: guilds (threads), guild and direct
/// messages and typing in them, and message content (privileged: enabled in the developer
/// portal).
const INTENTS: u64 = 1 // GUILDS
    | 1 << 9 // GUILD_MESSAGES
    | 1 << 11 // GUILD_MESSAGE_TYPING
    | 1 << 12 // DIRECT_MESSAGES
    | 1 << 14 // DIRECT_MESSAGE_TYPING
    | 1 << 15; // MESSAGE_CONTENT

fn build(
    section: Option<&Value>,
    context: &BuildContext,
) -> Result<Option<Arc<dyn Connector>>, String> {
    let Some(section) = section else {
        return Ok(None);
    };
    let config = DiscordConfig::read(section)?;
    let connector = DiscordConnector::new(&config)?.with_health(context.health.part(SPEC.name));
    Ok(Some(Arc::new(connector)))
}

/// The longest one REST call may take (a file of up to 10 MiB goes up in one).
const CALL_TIMEOUT: Duration = Duration::from_secs(30);

pub struct DiscordConnector {
    rest: Rest,
    token: String,
    application_id: u64,
    guild: Option<u64>,
    staff_channel: Option<u64>,
    /// Whether people who are not responders may start conversations here.
    initiators: bool,
    health: Option<PartReporter>,
    /// Direct-message channel per responder, as Discord answered `POST /users/@me/channels`
    /// (the same channel every time, so losing this on restart costs one call).
    dms: Mutex<HashMap<u64, u64>>,
    /// What is known of guild channels that messages arrive in: whether each is a thread of
    /// the staff channel (only those are conversations).
    staff_threads: Mutex<HashMap<u64, bool>>,
    /// The bot's own user ID, from READY: its own messages are not responders'.
    bot_user: std::sync::Mutex<Option<u64>>,
}

impl DiscordConnector {
    pub fn new(config: &DiscordConfig) -> Result<Self, String> {
        let base = config.api_url.as_deref().unwrap_or("https://discord.com");
        Ok(DiscordConnector {
            rest: Rest::new(base, &config.token, CALL_TIMEOUT)?,
            token: config.token.clone(),
            application_id: config.application_id.0,
            guild: config.guild.map(|g| g.0),
            staff_channel: config.staff_channel.map(|c| c.0),
            initiators: config.initiators,
            health: None,
            dms: Mutex::new(HashMap::new()),
            staff_threads: Mutex::new(HashMap::new()),
            bot_user: std::sync::Mutex::new(None),
        })
    }

    pub fn with_health(mut self, health: PartReporter) -> Self {
        self.health = Some(health);
        self
    }
}

/// The thread a handle names, if it names one.
fn thread_id(handle: &str) -> Option<u64> {
    handle.strip_prefix(THREAD_HANDLE)?.parse().ok()
}

fn thread_handle(id: u64) -> String {
    format!("{THREAD_HANDLE}{id}")
}

#[async_trait]
impl Connector for DiscordConnector {
    fn platform(&self) -> Platform {
        SPEC.platform()
    }

    /// Discord's documented limits: 2000 characters per message; a global 50 requests per
    /// second; every other limit is learnt from Discord's own headers (see `rest.rs`), never
    /// assumed, so no pacing per chat is declared. "Typing…" lasts ten seconds.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_text_len: TextLimit {
                max: format::DISCORD_MAX_TEXT,
                unit: TextUnit::Chars,
            },
            // Discord's default upload limit per file (since January 2025); larger ones get
            // 413, so the bridge tells both sides instead.
            files: Some(FileLimits {
                max_bytes: 10 * 1024 * 1024,
            }),
            edits: true,
            revises_deliveries: true,
            typing_renewal: Some(Duration::from_secs(8)),
            shares_room: false,
            command_prefix: COMMAND_PREFIX,
            min_interval_per_chat: Duration::ZERO,
            max_messages_per_second: Some(50),
            unreachable_hands_over: true,
            call_timeout: CALL_TIMEOUT,
            batch_window: Duration::ZERO,
            // Every send carries an enforced nonce (see `deliver`): Discord returns the
            // message an earlier attempt made, within the few minutes it remembers nonces.
            idempotent_sends: true,
        }
    }

    fn takes_initiators(&self) -> bool {
        self.initiators
    }

    /// In their direct chat: the question and a menu of the topics, answered by an
    /// interaction (`events.rs`).
    async fn ask_topic(
        &self,
        address: &str,
        thread: Option<&str>,
        text: &str,
        topics: &[(String, String)],
    ) -> Result<(), ConnectorError> {
        let channel = self.channel_for(address, thread).await?;
        self.post(channel, messages::topic_menu(text, topics))
            .await
            .map(drop)
    }

    async fn offer(&self, offer: &Offer, address: &str) -> Result<Option<String>, ConnectorError> {
        let channel = self.dm_channel(address).await?;
        let sent = self.post(channel, messages::offer_message(offer)).await?;
        Ok(Some(sent.id.get().to_string()))
    }

    async fn offer_accepted(
        &self,
        address: &str,
        handle: &str,
        text: &str,
    ) -> Result<(), ConnectorError> {
        self.close_offer(address, handle, text).await
    }

    async fn close_offer(
        &self,
        address: &str,
        remote_message_id: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        if thread_id(remote_message_id).is_some() {
            return Ok(());
        }
        let channel = self.dm_channel(address).await?;
        // The buttons go with the edit: an offer taken or withdrawn can no longer be pressed.
        self.edit(
            channel,
            remote_message_id,
            json!({"content": Self::plain(why), "components": [], "allowed_mentions": {"parse": []}}),
        )
        .await
    }

    /// A private thread in the staff channel, named after the visitor's pseudonym and the
    /// topic, that only the responder (and the bot) are in and nobody else can be invited to.
    async fn conversation_opened(
        &self,
        address: &str,
        _handle: &str,
        visitor_alias: &str,
        topic_name: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let Some(staff) = self.staff_channel else {
            return Ok(None);
        };
        let user = Self::user(address)?;
        let name: String = format!("{visitor_alias} · {topic_name}")
            .chars()
            .take(100)
            .collect();
        let route = Route::new(
            Method::POST,
            "/channels/{}/threads",
            format!("/channels/{staff}/threads"),
            staff,
        );
        let body =
            json!({"name": name, "type": 12, "invitable": false, "auto_archive_duration": 10080});
        let thread: Value = match self.rest.call(route, Body::Json(body)).await {
            Ok(thread) => thread,
            Err(e) if e.code() == Some(codes::TOO_MANY_THREADS) => {
                tracing::warn!(
                    "discord: the guild has as many active threads as it may (160006); the conversation stays in the direct chat"
                );
                return Ok(None);
            }
            Err(e) => return Err(self.refusal("create the conversation's thread", e)),
        };
        let Some(id) = thread["id"].as_str().and_then(|s| s.parse::<u64>().ok()) else {
            return Err(ConnectorError::Permanent(
                "Discord answered a thread without an ID".into(),
            ));
        };
        self.remember_thread(id, true).await;
        let route = Route::new(
            Method::PUT,
            "/channels/{}/thread-members/{}",
            format!("/channels/{id}/thread-members/{user}"),
            id,
        );
        self.rest
            .call_empty(route, Body::None)
            .await
            .map_err(|e| self.refusal("add the responder to the conversation's thread", e))?;
        Ok(Some(thread_handle(id)))
    }

    /// Text: Discord markdown within 2000 characters a part, the first headed by the alias.
    /// A file: one part, its caption (the alias and the file's name or text).
    fn render(&self, delivery: &Delivery) -> Vec<String> {
        // To an initiator no heading: they talk with the bot (notices say who answers).
        let heading = (!delivery.to_initiator).then_some(delivery.visitor_alias.as_str());
        if delivery.media.is_some() {
            let caption = truncate(&delivery.body, 1000);
            let parts = format::to_discord(&caption, None, heading);
            return vec![parts.concat()];
        }
        format::to_discord(&delivery.body, delivery.formatted_body.as_deref(), heading)
    }

    /// Every attempt at a part carries the same nonce, enforced: a send whose answer was lost
    /// or came after our timeout is answered the second time with the message the first one
    /// made, not posted twice.
    async fn deliver(
        &self,
        delivery: &Delivery,
        index: usize,
        part: &str,
        address: &str,
    ) -> Result<String, ConnectorError> {
        let channel = self
            .channel_for(address, delivery.thread.as_deref())
            .await?;
        let nonce = nonce_of(delivery, &index.to_string(), address);
        let sent = self
            .post(
                channel,
                json!({"content": part, "nonce": nonce, "enforce_nonce": true}),
            )
            .await?;
        Ok(sent.id.get().to_string())
    }

    /// The bot may edit its own messages at any time; a file's message keeps its file and
    /// gets the new caption.
    async fn edit_delivered(
        &self,
        delivery: &Delivery,
        message_id: &str,
        part: &str,
        address: &str,
    ) -> Result<(), ConnectorError> {
        let channel = self
            .channel_for(address, delivery.thread.as_deref())
            .await?;
        self.edit(
            channel,
            message_id,
            json!({"content": part, "allowed_mentions": {"parse": []}}),
        )
        .await
    }

    async fn delete_delivered(
        &self,
        delivery: &Delivery,
        message_id: &str,
        address: &str,
    ) -> Result<(), ConnectorError> {
        let channel = self
            .channel_for(address, delivery.thread.as_deref())
            .await?;
        let route = Route::new(
            Method::DELETE,
            "/channels/{}/messages/{}",
            format!("/channels/{channel}/messages/{message_id}"),
            channel,
        );
        match self.rest.call_empty(route, Body::None).await {
            Ok(()) => Ok(()),
            // Gone already (deleted by hand, or by an earlier attempt whose answer was lost).
            Err(e) if e.code() == Some(codes::UNKNOWN_MESSAGE) => Ok(()),
            Err(e) => Err(self.refusal("delete a message", e)),
        }
    }

    async fn deliver_file(
        &self,
        delivery: &Delivery,
        caption: &str,
        file: Attachment,
        address: &str,
    ) -> Result<String, ConnectorError> {
        let channel = self
            .channel_for(address, delivery.thread.as_deref())
            .await?;
        let route = Route::new(
            Method::POST,
            "/channels/{}/messages",
            format!("/channels/{channel}/messages"),
            channel,
        );
        let payload = json!({
            "content": caption,
            "allowed_mentions": {"parse": []},
            "attachments": [{"id": 0, "filename": file.filename}],
            "nonce": nonce_of(delivery, "file", address),
            "enforce_nonce": true,
        });
        let sent: Message = self
            .rest
            .call(
                route,
                Body::WithFile {
                    payload,
                    filename: file.filename,
                    mimetype: file.mimetype,
                    bytes: file.bytes,
                },
            )
            .await
            .map_err(|e| self.refusal("send a file", e))?;
        Ok(sent.id.get().to_string())
    }

    /// `file_id` is the attachment's URL on Discord's CDN.
    async fn fetch_file(&self, file: &RemoteFile) -> Result<Attachment, ConnectorError> {
        let bytes = self
            .rest
            .download(&file.file_id)
            .await
            .map_err(|e| self.refusal("download an attachment", e))?;
        Ok(Attachment {
            bytes,
            mimetype: file.mimetype.clone(),
            filename: file.filename.clone(),
            kind: file.kind,
        })
    }

    /// "Typing…" shows for ten seconds or until the bot posts; there is no way to stop it.
    async fn typing(
        &self,
        address: &str,
        thread: Option<&str>,
        typing: bool,
    ) -> Result<(), ConnectorError> {
        if !typing {
            return Ok(());
        }
        let channel = self.channel_for(address, thread).await?;
        let route = Route::new(
            Method::POST,
            "/channels/{}/typing",
            format!("/channels/{channel}/typing"),
            channel,
        );
        self.rest
            .call_empty(route, Body::None)
            .await
            .map_err(|e| self.refusal("show typing", e))
    }

    async fn notify(
        &self,
        address: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let channel = self.channel_for(address, thread).await?;
        let sent = self
            .post(channel, json!({"content": Self::plain(text)}))
            .await?;
        Ok(Some(sent.id.get().to_string()))
    }

    /// The responder leaves the conversation's thread, which is archived and locked.
    async fn conversation_closed(
        &self,
        address: &str,
        thread: &str,
        _why: &str,
    ) -> Result<(), ConnectorError> {
        let Some(id) = thread_id(thread) else {
            return Ok(());
        };
        let user = Self::user(address)?;
        let route = Route::new(
            Method::DELETE,
            "/channels/{}/thread-members/{}",
            format!("/channels/{id}/thread-members/{user}"),
            id,
        );
        match self.rest.call_empty(route, Body::None).await {
            Ok(()) => {}
            Err(e) if e.code() == Some(codes::UNKNOWN_CHANNEL) => return Ok(()),
            Err(e) => return Err(self.refusal("remove the responder from the thread", e)),
        }
        let route = Route::new(Method::PATCH, "/channels/{}", format!("/channels/{id}"), id);
        match self
            .rest
            .call::<Value>(route, Body::Json(json!({"archived": true, "locked": true})))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some(codes::UNKNOWN_CHANNEL) => Ok(()),
            Err(e) => Err(self.refusal("archive the thread", e)),
        }
    }

    /// `GET /users/@me` with the bot token: the bot's name and ID, or why Discord refused.
    async fn check(&self) -> Result<String, ConnectorError> {
        let route = Route::new(Method::GET, "/users/@me", "/users/@me".into(), "");
        match self.rest.call::<Value>(route, Body::None).await {
            Ok(me) => Ok(format!(
                "GET /users/@me: {} (id {})",
                me["username"].as_str().unwrap_or("?"),
                me["id"].as_str().unwrap_or("?")
            )),
            Err(RestError::Refused { status: 401, .. }) => Err(ConnectorError::Permanent(format!(
                "GET /users/@me: 401 Unauthorized: {} refused the bot token (mistyped, or reset \
                 since). In Discord's Developer Portal open the application, Bot, Reset Token, \
                 and put the new token in discord.token, or in the file discord.token_file names",
                self.rest.api()
            ))),
            Err(RestError::Unavailable(why)) => Err(ConnectorError::Permanent(format!(
                "GET /users/@me: cannot reach {} ({why}): check discord.api_url (Discord's own \
                 when unset) and that this machine may connect there",
                self.rest.api()
            ))),
            Err(e) => Err(ConnectorError::Permanent(format!("GET /users/@me: {e}"))),
        }
    }

    /// The gateway session, while this instance leads: Discord sends its events over one
    /// connection, and a second one would receive them twice.
    async fn run(self: Arc<Self>, sink: Arc<dyn RemoteSink>, term: Term) {
        self.register_commands().await;
        let dispatcher = events::Events {
            connector: &self,
            sink: sink.as_ref(),
            term: &term,
        };
        let config = gateway::GatewayConfig {
            rest: &self.rest,
            token: &self.token,
            intents: INTENTS,
            health: self.health.as_ref(),
        };
        gateway::run(config, &dispatcher, &term).await;
    }
}

/// For `crate::fuzzing`: a gateway frame's dispatch read with the models the gateway loop
/// uses, and a message's content read as Matrix HTML.
#[doc(hidden)]
pub(crate) mod fuzz_support {
    use serde::Deserialize;
    use serde_json::Value;
    use serenity::model::{application::Interaction, channel::Message, event::MessageUpdateEvent};

    pub(crate) fn payload(frame: Value) {
        let _ = (
            frame["op"].as_u64(),
            frame["s"].as_u64(),
            frame["t"].as_str(),
        );
        let data = &frame["d"];
        if let Ok(m) = Message::deserialize(data) {
            let (_, html) = super::format::from_discord(&m.content);
            if let Some(html) = html {
                crate::fuzzing::check_matrix_html(&html);
            }
        }
        let _ = serde_json::from_value::<MessageUpdateEvent>(data.clone());
        let _ = serde_json::from_value::<Interaction>(data.clone());
    }
}

/// The nonce of one part of a delivery: the same for every attempt (derived from the
/// conversation, the Matrix event, the part and the recipient), different for anything else.
/// Discord takes at most 25 characters.
fn nonce_of(delivery: &Delivery, part: &str, address: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(format!(
        "{}\n{}\n{part}\n{address}",
        delivery.room_id, delivery.event_id
    ));
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..25]
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A retry carries the nonce of the first attempt; any other part, message or recipient
    /// another one; always within Discord's 25 characters.
    #[test]
    fn a_part_keeps_its_nonce_across_attempts_and_nothing_else_shares_it() {
        let delivery = |event: &str| Delivery {
            room_id: "!room:example.org".into(),
            event_id: event.into(),
            visitor_alias: "Visitor".into(),
            body: "hello".into(),
            formatted_body: None,
            media: None,
            thread: None,
            revises: None,
            to_initiator: false,
        };
        let first = nonce_of(&delivery("$a"), "0", "42");
        assert_eq!(first, nonce_of(&delivery("$a"), "0", "42"));
        assert_eq!(first.len(), 25);
        for other in [
            nonce_of(&delivery("$b"), "0", "42"),
            nonce_of(&delivery("$a"), "1", "42"),
            nonce_of(&delivery("$a"), "file", "42"),
            nonce_of(&delivery("$a"), "0", "43"),
        ] {
            assert_ne!(first, other);
        }
    }

    #[test]
    fn a_discord_address_is_a_user_id() {
        assert_eq!(validate_address("80351110224678912"), Ok(()));
        for bad in ["", "0", "@alice", "alice#1234", "-5", "12.5"] {
            assert!(
                validate_address(bad)
                    .unwrap_err()
                    .contains("Discord user ID"),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_section_needs_a_token_and_an_application_and_a_staff_channel_needs_its_guild() {
        let ok = json!({"token": "t", "application_id": "42", "guild": 7, "staff_channel": "9"});
        let config = DiscordConfig::read(&ok).unwrap();
        assert_eq!(
            (config.guild, config.staff_channel),
            (Some(Snowflake(7)), Some(Snowflake(9)))
        );
        assert!(
            !format!("{config:?}").contains("\"t\""),
            "the token is never printed"
        );
        let err = DiscordConfig::read(&json!({"application_id": "42"})).unwrap_err();
        assert!(err.contains("token"), "{err}");
        let err = DiscordConfig::read(
            &json!({"token": "t", "application_id": "42", "staff_channel": "9"}),
        )
        .unwrap_err();
        assert!(err.contains("guild"), "{err}");
        let err = DiscordConfig::read(&json!({"token": "t", "application_id": "x"})).unwrap_err();
        assert!(err.contains("not a Discord ID"), "{err}");
    }

    #[test]
    fn handles_tell_threads_from_offers() {
        assert_eq!(thread_id(&thread_handle(123)), Some(123));
        assert_eq!(thread_id("123"), None, "an offer's message");
    }

    #[test]
    fn an_offer_shows_the_pseudonym_and_two_buttons_and_quotes_escaped() {
        let offer = Offer {
            offer_id: 5,
            room_id: "!room:x".into(),
            topic_name: "Billing".into(),
            visitor_alias: "Visitor 7F3A".into(),
            first_message: Some("**hi** @everyone\nsecond".into()),
            language: Some("de".into()),
            summary: None,
        };
        let m = messages::offer_message(&offer);
        let text = m["content"].as_str().unwrap();
        assert!(
            text.contains("Visitor 7F3A") && text.contains("Billing"),
            "{text}"
        );
        assert!(!text.contains("!room"), "no room ID: {text}");
        assert!(
            !text.contains("> **hi**"),
            "visitor markup is escaped: {text}"
        );
        assert!(
            text.contains("\n> ") && text.matches("\n> ").count() == 2,
            "{text}"
        );
        let ids: Vec<_> = m["components"][0]["components"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["custom_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["accept:5", "decline:5"]);
    }
}
