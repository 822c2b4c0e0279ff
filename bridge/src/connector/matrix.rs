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

use crate::cluster::Term;
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

use serde_json::Value;

use super::{
    Attachment, Capabilities, Connector, ConnectorError, Delivery, FileKind, HomeserverEvents,
    Offer, Platform, RemoteEvent, RemoteFile, RemoteSink, RoomDirectory, RoomWrites, TextLimit,
    TextUnit,
    registry::{BuildContext, PlatformSpec},
};
use crate::{health::PartState, store::StoreError};

mod lobby;
mod read;

pub use read::{Reading, read_event};

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
    /// A room (its ID, `!…:server`) where people may also start conversations by writing:
    /// the bot joins it and continues with each of them in a private chat (`lobby.rs`).
    /// Needs `initiators`.
    #[serde(default)]
    pub lobby: Option<String>,
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
    let lobby = match &config.lobby {
        None => None,
        Some(_) if !config.initiators => {
            return Err("matrix.lobby needs matrix.initiators = true".into());
        }
        Some(room) => Some(lobby::Lobby::new(
            OwnedRoomId::try_from(room.as_str()).map_err(|_| {
                format!("matrix.lobby {room:?} is not a room ID such as \"!abc:example.org\"")
            })?,
            context.state.clone(),
        )),
    };
    context.health.report(SPEC.name, PartState::Connected, None);
    let mut connector = MatrixConnector::new(context.client.clone(), context.room_writes.clone())
        .with_initiators(config.initiators);
    connector.lobby = lobby;
    Ok(Some(Arc::new(connector)))
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
    /// Where else they may start them, if the operator opened a lobby.
    lobby: Option<lobby::Lobby>,
}

impl MatrixConnector {
    pub fn new(client: Arc<HomeserverClient>, writes: Arc<dyn RoomWrites>) -> Self {
        let once = client.without_retries();
        Self {
            client,
            once,
            writes,
            initiators: false,
            lobby: None,
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

    /// Nothing of its own: Matrix responders are reached as the bot, whose homeserver and
    /// `as_token` are checked on their own.
    async fn check(&self) -> Result<String, ConnectorError> {
        Ok("responders are reached through the homeserver, as the bot".into())
    }

    /// Each handle is a relay room the bot made for one offer: the bot redacts every message
    /// there (its posts of the visitor's words, the responder's replies), then leaves. A room
    /// the bot has left already, or that is gone, has nothing more to do.
    async fn erase_conversation(&self, handles: &[String]) -> Result<(), ConnectorError> {
        for handle in handles {
            let Ok(room) = OwnedRoomId::try_from(handle.as_str()) else {
                continue;
            };
            match self
                .client
                .redact_room_messages(&room, crate::retention::REASON)
                .await
            {
                Ok(_) => {}
                Err(ClientError::Matrix {
                    status: 403 | 404, ..
                }) => continue,
                Err(e) => return Err(ConnectorError::Transient(e.to_string())),
            }
            if let Err(e) = self.client.leave(&room, self.client.bot()).await {
                tracing::debug!(room_id = %room, error = %e, "the bot did not leave a relay room");
            }
        }
        Ok(())
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
            // `deliver` keys each part's send by the visitor's event (see there).
            idempotent_sends: true,
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
    /// With a lobby, the bot joins it.
    async fn run(self: Arc<Self>, _sink: Arc<dyn RemoteSink>, term: Term) {
        if let Some(lobby) = &self.lobby {
            self.join_lobby(lobby, term.ended()).await;
        }
    }
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
        if let Some(lobby) = self.lobby.as_ref().filter(|l| l.room.as_str() == room_id) {
            return self.lobby_event(lobby, rooms, event).await;
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_user_ids() {
        assert_eq!(validate_address("@sam:example.org"), Ok(()));
        assert!(validate_address("sam").is_err());
    }
}
