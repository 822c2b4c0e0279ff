//! Responders who use a Matrix client. Each conversation offered to one gets its own relay
//! room between them and the bot: the visitor's room is never shared with them, so they never
//! see the visitor's Matrix ID, and the visitor sees their ghost (with its pseudonym), never
//! their own account.
//!
//! The relay room is the offer's handle: joining it accepts, leaving it declines. What the
//! responder writes there (and `!` commands in their direct chat with the bot) arrives with
//! the homeserver's transactions; the bridge hands every event in a room that is not a
//! conversation to [`MatrixConnector`]'s [`HomeserverEvents::receive`], which reads it into
//! a [`RemoteEvent`] like any other platform's, keyed by its event ID.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use switchboard_appservice::{
    ClientError, HomeserverClient,
    ruma::{
        OwnedEventId, OwnedRoomId, OwnedUserId,
        api::client::room::{Visibility, create_room},
        events::room::message::{
            FileMessageEventContent, ImageMessageEventContent, MessageType, ReplacementMetadata,
            RoomMessageEventContent,
        },
    },
};
use tokio::sync::watch;

use serde_json::Value;

use super::{
    Attachment, Capabilities, Connector, ConnectorError, Delivery, FileKind, HandleOffer,
    HomeserverEvents, Offer, Platform, RemoteEvent, RemoteFile, RemoteSink, RoomDirectory,
    RoomWrites, TextLimit, TextUnit,
    registry::{BuildContext, PlatformSpec},
};
use crate::{health::PartState, responder::ResponderStatus, store::StoreError};

/// The platform's name in the configuration, the store and the admin API.
pub const NAME: &str = "matrix";

/// Matrix in the platform registry (`registry.rs`). Always on: its responders are reached
/// through the homeserver Switchboard needs anyway, so it has no section of its own.
pub static SPEC: PlatformSpec = PlatformSpec {
    name: NAME,
    display_name: "Matrix",
    command_prefix: COMMAND_PREFIX,
    validate_address,
    links_by_code: false,
    check: |_| Ok(true),
    build,
};

/// Commands in relay rooms and direct chats start with `!` (`!end`), as bots in Matrix
/// rooms usually do: a slash is taken by the responder's own client.
const COMMAND_PREFIX: char = '!';

/// A Matrix address is a user ID such as `@alice:example.org`.
pub fn validate_address(address: &str) -> Result<(), String> {
    // ruma checks the server name; it allows an empty localpart, which no real user has.
    if <&switchboard_appservice::ruma::UserId>::try_from(address)
        .is_ok_and(|id| !id.localpart().is_empty())
    {
        Ok(())
    } else {
        Err(format!(
            "{address:?} is not a Matrix user ID such as \"@alice:example.org\""
        ))
    }
}

/// The optional `[matrix]` section. Matrix responders need no configuration (the
/// homeserver is the platform); this only turns on what is off by default.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixConfig {
    /// Whether Matrix users who are not responders may start conversations by inviting the
    /// bot to a direct chat and writing there.
    #[serde(default)]
    pub initiators: bool,
}

/// The connector rides the homeserver connection: it is as well as the homeserver is.
fn build(
    section: Option<&Value>,
    context: &BuildContext,
) -> Result<Option<Arc<dyn super::Connector>>, String> {
    let config: MatrixConfig = match section {
        Some(section) => serde_json::from_value(section.clone()).map_err(|e| e.to_string())?,
        None => MatrixConfig::default(),
    };
    context.health.report(SPEC.name, PartState::Connected, None);
    Ok(Some(Arc::new(
        MatrixConnector::new(context.client.clone(), context.room_writes.clone())
            .with_initiators(config.initiators),
    )))
}

/// How long the bot is shown typing in a relay room unless told otherwise.
const TYPING_TIMEOUT: Duration = Duration::from_secs(30);
/// Renewed well before [`TYPING_TIMEOUT`] while the visitor keeps typing.
const TYPING_RENEWAL: Duration = Duration::from_secs(20);

pub struct MatrixConnector {
    client: Arc<HomeserverClient>,
    /// The same connection without the client's own retries, for deliveries: the outbox
    /// retries them with its own backoff, so a homeserver outage does not hold the worker in
    /// the client's retry loop on every attempt.
    once: HomeserverClient,
    /// What the bot says in relay rooms and direct chats (notices, the offer's text) and
    /// removing a responder from a relay room are queued here, not sent: recorded first,
    /// then posted in order per room and retried for as long as the homeserver is away, so
    /// an outage delays them and never drops them (the bridge's room posts, see
    /// [`RoomWrites`]). Only what cannot wait is done at once: creating the relay room (its
    /// ID is the offer's handle), deliveries (the outbox retries those), typing (stale in
    /// seconds) and joining a direct chat.
    writes: Arc<dyn RoomWrites>,
    /// Whether users who are not responders may start conversations in a direct chat.
    initiators: bool,
}

impl MatrixConnector {
    pub fn new(client: Arc<HomeserverClient>, writes: Arc<dyn RoomWrites>) -> Self {
        let once = client.without_retries();
        Self {
            client,
            once,
            writes,
            initiators: false,
        }
    }

    /// Lets users who are not responders start conversations by inviting the bot to a
    /// direct chat: it joins, asks what it is about, and their messages there are the
    /// visitor's side of a conversation.
    pub fn with_initiators(mut self, initiators: bool) -> Self {
        self.initiators = initiators;
        self
    }

    /// One visitor message into the relay room as the bot, once: the outbox retries it. It is
    /// marked ([`RELAYED_MARK`]) so that its echo is dropped on arrival.
    async fn post_to_relay_room(
        &self,
        room: &OwnedRoomId,
        txn: &str,
        content: &RoomMessageEventContent,
    ) -> Result<String, ConnectorError> {
        let mut json = content_json(content);
        json[RELAYED_MARK] = Value::Bool(true);
        let event = self
            .once
            .send_message_raw(room, None, txn, "m.room.message", &json)
            .await
            .map_err(connector_error)?;
        Ok(event.to_string())
    }

    fn event(message_id: &str) -> Result<OwnedEventId, ConnectorError> {
        OwnedEventId::try_from(message_id).map_err(|e| {
            ConnectorError::Permanent(format!("bad relayed event ID {message_id:?}: {e}"))
        })
    }

    fn relay_room(delivery: &Delivery) -> Result<OwnedRoomId, ConnectorError> {
        let handle = delivery.thread.as_deref().ok_or_else(|| {
            ConnectorError::Permanent("no relay room for this conversation".into())
        })?;
        OwnedRoomId::try_from(handle)
            .map_err(|e| ConnectorError::Permanent(format!("bad relay room {handle:?}: {e}")))
    }
}

/// A field of ours in the content of the visitor messages the bot posts into relay rooms. The
/// homeserver sends every event back to us, our own included; the echo of one of these needs
/// nothing (the bot's events in a relay room mean nothing, see [`read_event`], and its event
/// ID was mapped when the post was answered), so it is acknowledged without being recorded
/// (`Bridge::record_transaction`): otherwise each relayed message costs a second inbox row,
/// a disk flush and a pass of the relay room's lane. Clients ignore fields they do not know.
/// Only the bot's own events are looked at for it: nobody else can send as the bot.
pub const RELAYED_MARK: &str = "org.switchboard.relayed";

fn connector_error(e: ClientError) -> ConnectorError {
    if e.is_transient() {
        ConnectorError::Transient(e.to_string())
    } else {
        ConnectorError::Permanent(e.to_string())
    }
}

fn content_json(content: &RoomMessageEventContent) -> Value {
    serde_json::to_value(content).expect("event content always serialises")
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[async_trait]
impl Connector for MatrixConnector {
    fn platform(&self) -> Platform {
        SPEC.platform()
    }

    /// The bot is exempt from the homeserver's rate limits (`rate_limited: false` in the
    /// registration), so nothing is paced. An event may be at most 65536 bytes with its
    /// envelope; a visitor's message arrived in such an event, so `render` never needs to
    /// split one. Files go through the media repository, whose limit is the homeserver's
    /// (Synapse: 50 MB by default). Typing is shown with a 30 s time-out, renewed before it
    /// lapses.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            max_text_len: TextLimit {
                max: 65536,
                unit: TextUnit::Bytes,
            },
            files: Some(super::FileLimits {
                max_bytes: 50 * 1024 * 1024,
            }),
            edits: true,
            revises_deliveries: true,
            typing_renewal: Some(TYPING_RENEWAL),
            unreachable_hands_over: false,
            ..Capabilities::unpaced(COMMAND_PREFIX)
        }
    }

    fn how_to_accept(&self) -> &'static str {
        "join this room"
    }

    fn takes_initiators(&self) -> bool {
        self.initiators
    }

    fn homeserver_events(&self) -> Option<&dyn HomeserverEvents> {
        Some(self)
    }

    /// A file a Matrix responder sent is in the media repository already: fetched as the bot
    /// (authenticated media), to be uploaded again as their ghost.
    async fn fetch_file(&self, file: &RemoteFile) -> Result<Attachment, ConnectorError> {
        let uri = switchboard_appservice::ruma::OwnedMxcUri::from(file.file_id.as_str());
        let (mimetype, bytes) = self
            .client
            .download_media(&uri)
            .await
            .map_err(connector_error)?;
        Ok(Attachment {
            bytes,
            mimetype: file.mimetype.clone().or(mimetype),
            filename: file.filename.clone(),
            kind: file.kind,
        })
    }

    /// Creates the relay room, invites the responder and queues the offer's explanation in
    /// it. The invite shows the topic and alias as the room name.
    async fn offer(&self, offer: &Offer, address: &str) -> Result<Option<String>, ConnectorError> {
        let user = OwnedUserId::try_from(address).map_err(|e| {
            ConnectorError::Permanent(format!("{address:?} is not a Matrix user ID: {e}"))
        })?;
        let mut request = create_room::v3::Request::new();
        request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        request.visibility = Visibility::Private;
        request.name = Some(format!("{} · {}", offer.topic_name, offer.visitor_alias));
        request.invite = vec![user];
        // Not retried by the client: a lost answer would leave a second room. The offer as a
        // whole is retried by routing instead.
        let room = self
            .client
            .create_room(request)
            .await
            .map_err(connector_error)?;
        let mut text = format!(
            "New conversation about {} from {}.",
            offer.topic_name, offer.visitor_alias
        );
        let mut html = format!(
            "<b>New conversation</b> about <b>{}</b> from {}.",
            escape(&offer.topic_name),
            escape(&offer.visitor_alias)
        );
        if let Some(language) = &offer.language {
            text.push_str(&format!(" Language: {language}."));
            html.push_str(&format!(" Language: {}.", escape(language)));
        }
        if let Some(summary) = &offer.summary {
            text.push_str(&format!("\n\n{summary}"));
            html.push_str(&format!(
                "<blockquote>{}</blockquote>",
                escape(summary).replace('\n', "<br>")
            ));
        } else if let Some(first) = &offer.first_message {
            text.push_str(&format!("\n\n> {first}"));
            html.push_str(&format!("<blockquote>{}</blockquote>", escape(first)));
        }
        text.push_str("\n\nJoin this room to accept the conversation; leave it to decline.");
        html.push_str("<p>Join this room to accept the conversation; leave it to decline.</p>");
        let notice = RoomMessageEventContent::notice_html(text, html);
        // Queued, so an outage right after the room was made delays the text, and never
        // leaves the responder invited to a room without it (the room is new: one text, one
        // fixed transaction ID).
        self.writes
            .send_message(room.as_str(), "switchboard-offer", content_json(&notice))
            .await?;
        Ok(Some(room.to_string()))
    }

    /// Withdraws the invite, or removes a responder who joined too late, with the reason
    /// shown in their client: queued, after whatever the bot said in the room before.
    async fn close_offer(
        &self,
        address: &str,
        handle: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        let (Ok(room), Ok(user)) = (
            OwnedRoomId::try_from(handle),
            OwnedUserId::try_from(address),
        ) else {
            return Err(ConnectorError::Permanent(format!(
                "bad Matrix offer handle {handle:?}"
            )));
        };
        // Once per responder and relay room: the room is invite-only, so someone removed
        // from it never comes back, and a second removal would have nothing to do.
        let txn = format!("switchboard-remove-{user}");
        self.writes
            .remove(room.as_str(), &txn, user.as_str(), why)
            .await
    }

    /// The bot types in the relay room while the visitor types (the relay room is where the
    /// visitor's words appear for this responder).
    async fn typing(
        &self,
        _address: &str,
        thread: Option<&str>,
        typing: bool,
    ) -> Result<(), ConnectorError> {
        let Some(room) = thread.and_then(|t| OwnedRoomId::try_from(t).ok()) else {
            return Ok(());
        };
        let timeout = typing.then_some(TYPING_TIMEOUT);
        self.client
            .set_typing(&room, self.client.bot(), timeout)
            .await
            .map_err(connector_error)
    }

    /// One part: a text message's event content as JSON, headed by the visitor's alias; a
    /// file's caption.
    fn render(&self, delivery: &Delivery) -> Vec<String> {
        if delivery.to_initiator {
            // Into their direct chat with the bot: no heading (notices say who answers).
            let content = match (&delivery.media, &delivery.formatted_body) {
                (Some(media), _) => RoomMessageEventContent::text_plain(&media.filename),
                (None, Some(html)) => RoomMessageEventContent::text_html(
                    &delivery.body,
                    crate::format::sanitise_matrix_html(html),
                ),
                (None, None) => RoomMessageEventContent::text_plain(&delivery.body),
            };
            return vec![serde_json::to_string(&content).expect("event content always serialises")];
        }
        if let Some(media) = &delivery.media {
            return vec![format!("{}: {}", delivery.visitor_alias, media.filename)];
        }
        let body = format!("{}: {}", delivery.visitor_alias, delivery.body);
        let html = match &delivery.formatted_body {
            Some(html) => format!(
                "<b>{}</b>: {}",
                escape(&delivery.visitor_alias),
                crate::format::sanitise_matrix_html(html)
            ),
            None => format!(
                "<b>{}</b>: {}",
                escape(&delivery.visitor_alias),
                escape(&delivery.body)
            ),
        };
        let content = RoomMessageEventContent::text_html(body, html);
        vec![serde_json::to_string(&content).expect("event content always serialises")]
    }

    /// Posts the visitor's message into the relay room.
    async fn deliver(
        &self,
        delivery: &Delivery,
        index: usize,
        part: &str,
        _address: &str,
    ) -> Result<String, ConnectorError> {
        let room = Self::relay_room(delivery)?;
        let content: RoomMessageEventContent = serde_json::from_str(part)
            .map_err(|e| ConnectorError::Permanent(format!("unreadable rendered message: {e}")))?;
        // Keyed by the visitor's event (and the part): a retried delivery is answered with the
        // first event. Part 0 keeps the key messages had before they were split into parts.
        let txn = match index {
            0 => format!("relay-{}", delivery.event_id),
            n => format!("relay-{}-{n}", delivery.event_id),
        };
        self.post_to_relay_room(&room, &txn, &content).await
    }

    /// An `m.replace` of the bot's event in the relay room, so the responder's client shows
    /// the visitor's message corrected in place.
    async fn edit_delivered(
        &self,
        delivery: &Delivery,
        message_id: &str,
        part: &str,
        _address: &str,
    ) -> Result<(), ConnectorError> {
        let room = Self::relay_room(delivery)?;
        let original = Self::event(message_id)?;
        let content: RoomMessageEventContent = serde_json::from_str(part)
            .map_err(|e| ConnectorError::Permanent(format!("unreadable rendered message: {e}")))?;
        let content = content.make_replacement(ReplacementMetadata::new(original, None));
        // One edit of one event is one transaction: a retry is answered with the first.
        let txn = format!("relay-{}-edits-{message_id}", delivery.event_id);
        self.post_to_relay_room(&room, &txn, &content)
            .await
            .map(drop)
    }

    /// A redaction by the bot of its event in the relay room.
    async fn delete_delivered(
        &self,
        delivery: &Delivery,
        message_id: &str,
        _address: &str,
    ) -> Result<(), ConnectorError> {
        let room = Self::relay_room(delivery)?;
        let event = Self::event(message_id)?;
        let txn = format!("relay-{}-deletes-{message_id}", delivery.event_id);
        self.once
            .redact(
                &room,
                self.once.bot(),
                &event,
                &txn,
                Some("deleted by the visitor"),
            )
            .await
            .map(drop)
            .map_err(connector_error)
    }

    async fn deliver_file(
        &self,
        delivery: &Delivery,
        caption: &str,
        file: Attachment,
        _address: &str,
    ) -> Result<String, ConnectorError> {
        let room = Self::relay_room(delivery)?;
        let mimetype = file
            .mimetype
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let mxc = self
            .once
            .upload_media(None, &mimetype, &file.filename, file.bytes)
            .await
            .map_err(connector_error)?;
        let caption = caption.to_owned();
        let msgtype = match file.kind {
            FileKind::Image => MessageType::Image(ImageMessageEventContent::plain(caption, mxc)),
            FileKind::File => MessageType::File(FileMessageEventContent::plain(caption, mxc)),
        };
        let content = RoomMessageEventContent::new(msgtype);
        let txn = format!("relay-file-{}", delivery.event_id);
        self.post_to_relay_room(&room, &txn, &content).await
    }

    /// A notice goes where `thread` says, as the bot: a conversation's relay room, or the
    /// direct chat a `!` command came from. Queued, not sent (see [`RoomWrites`]), so there
    /// is no event ID to return yet; none is needed, since the room itself names the
    /// conversation. Without a room there is nowhere to say it.
    async fn notify(
        &self,
        _address: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let Some(room) = thread.and_then(|t| OwnedRoomId::try_from(t).ok()) else {
            return Ok(None);
        };
        let content = RoomMessageEventContent::notice_plain(text);
        // Fresh per notice (the same text may rightly be sent twice), and kept with the
        // queued row: every attempt to post it reuses it, so retries cannot show it twice.
        let txn = format!("notice-{:016x}", rand::random::<u64>());
        self.writes
            .send_message(room.as_str(), &txn, content_json(&content))
            .await?;
        Ok(None)
    }

    /// The relay room is the conversation's place for this responder: once it is no longer
    /// theirs they are removed from it, with the reason shown in their client, so they do not
    /// write on into a room nobody reads.
    async fn conversation_closed(
        &self,
        address: &str,
        thread: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        self.close_offer(address, thread, why).await
    }

    /// Nothing to receive: the homeserver's transactions carry Matrix responders' messages.
    async fn run(self: Arc<Self>, _sink: Arc<dyn RemoteSink>, _shutdown: watch::Receiver<bool>) {}
}

#[async_trait]
impl HomeserverEvents for MatrixConnector {
    /// Relay rooms (the handles of Matrix offers) and direct chats with the bot: see
    /// [`read_event`]. Joins a direct chat a registered responder invites the bot to (the
    /// one network call; joining twice is harmless).
    async fn receive(
        &self,
        rooms: &dyn RoomDirectory,
        room_id: &str,
        event: &Value,
    ) -> Result<Option<(String, RemoteEvent)>, StoreError> {
        let relay = rooms.offer_by_handle(SPEC.platform(), room_id).await?;
        let bot = self.client.bot().as_str();
        match read_event(bot, room_id, relay.as_ref(), self.initiators, event) {
            Reading::Remote { key, event } => Ok(Some((key, *event))),
            Reading::Invited { inviter, key } => {
                // Registered Matrix responders get a bot that answers; so does anyone, where
                // they may start conversations.
                let responder = rooms.is_responder(SPEC.platform(), &inviter).await?;
                if !responder && !self.initiators {
                    return Ok(None);
                }
                if let Ok(room) = OwnedRoomId::try_from(room_id)
                    && let Err(e) = self.client.join(&room, self.client.bot()).await
                {
                    tracing::warn!(error = %e, "could not accept an invite to a direct chat");
                    return Ok(None);
                }
                // Someone who wants to talk: asked what about, in that chat, at once.
                Ok((!responder).then(|| {
                    (
                        key,
                        RemoteEvent::Command {
                            address: inviter,
                            command: "start".into(),
                            args: String::new(),
                            reply_to: None,
                            thread: Some(room_id.to_owned()),
                            language: None,
                        },
                    )
                }))
            }
            Reading::Nothing => Ok(None),
        }
    }
}

/// What one homeserver event in a room that is not a conversation means.
#[derive(Debug, PartialEq)]
pub enum Reading {
    /// A responder's event for the bridge, keyed by its event ID.
    Remote {
        key: String,
        event: Box<RemoteEvent>,
    },
    /// Someone invited the bot to a direct chat (`key`: the invite's event ID).
    Invited { inviter: String, key: String },
    /// Nothing for the bridge: the bot's own echo, someone else's event, small talk.
    Nothing,
}

/// Reads one event in `room_id`, which is the relay room of `relay` (a Matrix offer's handle)
/// or else a direct chat with the bot. Pure.
///
/// In a relay room only the responder the offer went to counts (the bot's own events echo
/// back too): joining accepts, leaving declines, `!end` and `!transfer [target]` are
/// commands, an `m.replace` is an edit, and anything else they write is a message for the
/// visitor (its formatted body sanitised to the spec's allow-list, a file fetched from the
/// media repository). In a direct chat, `!available`, `!away` and `!offline` set the
/// responder's status and any other `!` word asks for help; the answers go into that chat.
/// Where `initiators` may write (see [`MatrixConnector::with_initiators`]), a direct chat's
/// other messages are messages too, and `!end`, `!new` and `!topics` commands.
pub fn read_event(
    bot: &str,
    room_id: &str,
    relay: Option<&HandleOffer>,
    initiators: bool,
    event: &Value,
) -> Reading {
    let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or_default();
    let sender = field("sender");
    let key = field("event_id").to_owned();
    if sender == bot || key.is_empty() {
        return Reading::Nothing;
    }
    let content = &event["content"];
    let membership = content["membership"].as_str();
    let Some(offer) = relay else {
        return match field("type") {
            "m.room.member" if field("state_key") == bot && membership == Some("invite") => {
                Reading::Invited {
                    inviter: sender.to_owned(),
                    key,
                }
            }
            "m.room.message" => {
                let body = content["body"].as_str().unwrap_or_default().trim();
                let Some(word) = body.strip_prefix(COMMAND_PREFIX) else {
                    if !initiators {
                        return Reading::Nothing;
                    }
                    let message = relay_room_message(room_id, &key, sender.to_owned(), content);
                    return Reading::Remote {
                        key,
                        event: Box::new(message),
                    };
                };
                let word = word.trim();
                let command = match ResponderStatus::parse(word) {
                    Some(status) => status.as_str(),
                    None if initiators && matches!(word, "end" | "new" | "topics") => word,
                    None => "help",
                }
                .to_owned();
                Reading::Remote {
                    key,
                    event: Box::new(RemoteEvent::Command {
                        address: sender.to_owned(),
                        command,
                        args: String::new(),
                        reply_to: None,
                        thread: Some(room_id.to_owned()),
                        language: None,
                    }),
                }
            }
            _ => Reading::Nothing,
        };
    };
    if sender != offer.address {
        return Reading::Nothing;
    }
    let address = offer.address.clone();
    let event = match (field("type"), membership) {
        ("m.room.member", Some("join")) => RemoteEvent::Accept {
            offer_id: offer.offer_id,
            display_name: content["displayname"]
                .as_str()
                .unwrap_or(&address)
                .to_owned(),
            address,
        },
        ("m.room.member", Some("leave")) => RemoteEvent::Decline {
            offer_id: offer.offer_id,
            address,
        },
        ("m.room.message", _) => relay_room_message(room_id, &key, address, content),
        _ => return Reading::Nothing,
    };
    Reading::Remote {
        key,
        event: Box::new(event),
    }
}

/// A responder's message in their relay room (see [`read_event`]).
fn relay_room_message(
    room_id: &str,
    event_id: &str,
    address: String,
    content: &Value,
) -> RemoteEvent {
    let html = |v: &Value| v.as_str().map(crate::format::sanitise_matrix_html);
    if content["m.relates_to"]["rel_type"] == "m.replace" {
        let new = &content["m.new_content"];
        return RemoteEvent::Edit {
            address,
            message_id: content["m.relates_to"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body: new["body"].as_str().unwrap_or_default().to_owned(),
            formatted_body: html(&new["formatted_body"]),
        };
    }
    let body = content["body"].as_str().unwrap_or_default();
    let command = |name: &str, args: &str| RemoteEvent::Command {
        address: address.clone(),
        command: name.to_owned(),
        args: args.trim().to_owned(),
        reply_to: None,
        // The relay room is the offer's handle: it names the conversation.
        thread: Some(room_id.to_owned()),
        language: None,
    };
    let trimmed = body.trim();
    if trimmed == "!end" {
        return command("end", "");
    }
    // `!transfer`, `!transfer TOPIC`, `!transfer RESPONDER`: as `/transfer` on Telegram.
    if let Some(target) = trimmed.strip_prefix("!transfer")
        && (target.is_empty() || target.starts_with(char::is_whitespace))
    {
        return command("transfer", target);
    }
    RemoteEvent::Message {
        address: address.clone(),
        message_id: event_id.to_owned(),
        reply_to: None,
        body: body.to_owned(),
        formatted_body: html(&content["formatted_body"]),
        display_name: address.clone(),
        file: file_of(content),
        thread: Some(room_id.to_owned()),
        language: None,
    }
}

/// The file an `m.image`/`m.file`/`m.video`/`m.audio` message carries, if any.
fn file_of(content: &Value) -> Option<RemoteFile> {
    let kind = match content["msgtype"].as_str()? {
        "m.image" => FileKind::Image,
        "m.file" | "m.video" | "m.audio" => FileKind::File,
        _ => return None,
    };
    let mxc = content["url"].as_str()?.to_owned();
    let body = content["body"].as_str().unwrap_or("file");
    Some(RemoteFile {
        file_id: mxc,
        mimetype: content["info"]["mimetype"].as_str().map(str::to_owned),
        filename: content["filename"].as_str().unwrap_or(body).to_owned(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOT: &str = "@switchboard:example.org";
    const SAM: &str = "@sam:example.org";
    const RELAY: &str = "!relay:example.org";

    fn offer() -> HandleOffer {
        HandleOffer {
            open: true,
            offer_id: 7,
            address: SAM.into(),
        }
    }

    fn in_relay(event: Value) -> Reading {
        read_event(BOT, RELAY, Some(&offer()), false, &event)
    }

    fn remote(reading: Reading) -> (String, RemoteEvent) {
        match reading {
            Reading::Remote { key, event } => (key, *event),
            other => panic!("expected a remote event, got {other:?}"),
        }
    }

    fn message(sender: &str, content: Value) -> Value {
        json!({"type": "m.room.message", "event_id": "$m", "room_id": RELAY,
               "sender": sender, "content": content})
    }

    #[test]
    fn joining_the_relay_room_accepts_the_offer_under_the_event_id() {
        let (key, event) = remote(in_relay(json!({
            "type": "m.room.member", "event_id": "$join", "sender": SAM, "state_key": SAM,
            "content": {"membership": "join", "displayname": "Sam"}
        })));
        assert_eq!(key, "$join");
        assert_eq!(
            event,
            RemoteEvent::Accept {
                offer_id: 7,
                address: SAM.into(),
                display_name: "Sam".into()
            }
        );
    }

    #[test]
    fn leaving_the_relay_room_declines_the_offer() {
        let (_, event) = remote(in_relay(json!({
            "type": "m.room.member", "event_id": "$leave", "sender": SAM, "state_key": SAM,
            "content": {"membership": "leave"}
        })));
        assert_eq!(
            event,
            RemoteEvent::Decline {
                offer_id: 7,
                address: SAM.into()
            }
        );
    }

    #[test]
    fn the_bots_own_events_and_strangers_are_ignored() {
        // The bot removing the responder (a kick is a leave sent by the bot).
        let kick = json!({
            "type": "m.room.member", "event_id": "$kick", "sender": BOT, "state_key": SAM,
            "content": {"membership": "leave"}
        });
        assert_eq!(in_relay(kick), Reading::Nothing);
        // The bot's own messages echo back.
        assert_eq!(
            in_relay(message(
                BOT,
                json!({"msgtype": "m.text", "body": "Visitor 7F3A: hi"})
            )),
            Reading::Nothing
        );
        assert_eq!(
            read_event(
                BOT,
                "!dm:x",
                None,
                false,
                &message(BOT, json!({"body": "!help"}))
            ),
            Reading::Nothing
        );
        // Someone else in the relay room.
        assert_eq!(
            in_relay(message(
                "@eve:x",
                json!({"msgtype": "m.text", "body": "!end"})
            )),
            Reading::Nothing
        );
    }

    #[test]
    fn an_m_replace_is_an_edit_of_the_original_with_its_html_sanitised() {
        let (_, event) = remote(in_relay(message(
            SAM,
            json!({
                "msgtype": "m.text", "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed",
                    "format": "org.matrix.custom.html",
                    "formatted_body": "<b>fixed</b><script>x()</script><img src=\"https://t.example/p.png\">"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}
            }),
        )));
        let RemoteEvent::Edit {
            address,
            message_id,
            body,
            formatted_body,
        } = event
        else {
            panic!("{event:?}")
        };
        assert_eq!(
            (address.as_str(), message_id.as_str(), body.as_str()),
            (SAM, "$orig", "fixed")
        );
        let html = formatted_body.unwrap();
        assert!(html.starts_with("<b>fixed</b>"), "{html}");
        assert!(
            !html.contains("script") && !html.contains("t.example"),
            "{html}"
        );
    }

    #[test]
    fn end_and_transfer_in_the_relay_room_are_commands_about_its_conversation() {
        let (_, end) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.text", "body": " !end "}),
        )));
        assert_eq!(
            end,
            RemoteEvent::Command {
                address: SAM.into(),
                command: "end".into(),
                args: String::new(),
                reply_to: None,
                thread: Some(RELAY.into()),
                language: None,
            }
        );
        let (_, transfer) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.text", "body": "!transfer  sales"}),
        )));
        assert!(
            matches!(&transfer, RemoteEvent::Command { command, args, .. } if command == "transfer" && args == "sales"),
            "{transfer:?}"
        );
        // Any other `!` text is a message for the visitor, as before.
        let (_, other) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.text", "body": "!transferred it"}),
        )));
        assert!(matches!(other, RemoteEvent::Message { .. }), "{other:?}");
    }

    #[test]
    fn a_message_is_relayed_with_its_html_sanitised_and_its_file() {
        let (key, event) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.text", "body": "hello",
                   "format": "org.matrix.custom.html",
                   "formatted_body": "<i>hello</i><a href=\"javascript:x()\">x</a>"}),
        )));
        assert_eq!(key, "$m");
        let RemoteEvent::Message {
            message_id,
            thread,
            body,
            formatted_body,
            file,
            ..
        } = event
        else {
            panic!("{event:?}")
        };
        assert_eq!(
            (message_id.as_str(), thread.as_deref(), body.as_str()),
            ("$m", Some(RELAY), "hello")
        );
        let html = formatted_body.unwrap();
        assert!(
            html.starts_with("<i>hello</i>") && !html.contains("javascript"),
            "{html}"
        );
        assert_eq!(file, None);

        let (_, event) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.image", "body": "cat.png", "url": "mxc://x/cat",
                   "info": {"mimetype": "image/png"}}),
        )));
        let RemoteEvent::Message { file, .. } = event else {
            panic!()
        };
        assert_eq!(
            file,
            Some(RemoteFile {
                file_id: "mxc://x/cat".into(),
                mimetype: Some("image/png".into()),
                filename: "cat.png".into(),
                kind: FileKind::Image
            })
        );
    }

    #[test]
    fn in_a_direct_chat_status_words_are_commands_and_the_rest_asks_for_help() {
        let dm = "!dm:example.org";
        let command_of = |body: &str| match read_event(
            BOT,
            dm,
            None,
            false,
            &message(SAM, json!({"msgtype": "m.text", "body": body})),
        ) {
            Reading::Remote { event, .. } => match *event {
                RemoteEvent::Command {
                    command, thread, ..
                } => {
                    assert_eq!(thread.as_deref(), Some(dm), "answered in the direct chat");
                    Some(command)
                }
                other => panic!("{other:?}"),
            },
            Reading::Nothing => None,
            other => panic!("{other:?}"),
        };
        assert_eq!(command_of("!away").as_deref(), Some("away"));
        assert_eq!(command_of(" !available ").as_deref(), Some("available"));
        assert_eq!(command_of("!offline").as_deref(), Some("offline"));
        assert_eq!(command_of("!help").as_deref(), Some("help"));
        assert_eq!(command_of("!end").as_deref(), Some("help"));
        assert_eq!(command_of("hello"), None, "small talk is not answered");
    }

    #[test]
    fn an_invite_to_a_direct_chat_is_noticed() {
        let invite = json!({
            "type": "m.room.member", "event_id": "$i", "sender": SAM, "state_key": BOT,
            "content": {"membership": "invite"}
        });
        assert_eq!(
            read_event(BOT, "!dm:x", None, false, &invite),
            Reading::Invited {
                inviter: SAM.into(),
                key: "$i".into()
            }
        );
    }

    #[test]
    fn where_initiators_may_write_a_direct_chat_carries_their_messages_and_commands() {
        let dm = "!dm:example.org";
        let read = |body: &str| {
            read_event(
                BOT,
                dm,
                None,
                true,
                &message(SAM, json!({"msgtype": "m.text", "body": body})),
            )
        };
        let Reading::Remote { key, event } = read("hello, I need help") else {
            panic!("a message")
        };
        assert_eq!(key, "$m");
        let RemoteEvent::Message {
            address,
            message_id,
            body,
            thread,
            ..
        } = *event
        else {
            panic!("{event:?}")
        };
        assert_eq!(
            (
                address.as_str(),
                message_id.as_str(),
                body.as_str(),
                thread.as_deref()
            ),
            (SAM, "$m", "hello, I need help", Some(dm))
        );
        for (body, command) in [
            ("!end", "end"),
            ("!new", "new"),
            ("!away", "away"),
            ("!what", "help"),
        ] {
            match read(body) {
                Reading::Remote { event, .. } => {
                    assert!(
                        matches!(&*event, RemoteEvent::Command { command: c, thread, .. }
                            if c == command && thread.as_deref() == Some(dm)),
                        "{body}: {event:?}"
                    );
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn addresses_are_user_ids() {
        assert_eq!(validate_address(SAM), Ok(()));
        assert!(validate_address("sam").is_err());
    }
}
