//! The boundary between conversations and the platforms responders use.
//!
//! Each platform (Matrix, Telegram, Discord, email) is one [`Connector`]. The bridge never
//! branches on the platform; it asks the connector, and the connector declares what it can do
//! in [`Capabilities`] instead of being probed by trial.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;

use crate::cluster::Term;
use tokio::sync::watch;

mod capabilities;
pub mod discord;
pub mod email;
pub mod matrix;
mod model;
pub mod registry;
pub mod telegram;
mod timed;

pub use capabilities::{
    Capabilities, DEFAULT_CALL_TIMEOUT, FileLimits, Platform, TextLimit, TextUnit,
};
pub use model::{
    Attachment, Delivery, FileKind, MediaRef, Offer, RemoteEvent, RemoteFile, Revision,
};
pub use timed::Timed;

/// The side of a platform that reads its responders' events from the homeserver's
/// transactions (see [`Connector::homeserver_events`]). Implemented by the Matrix connector.
#[async_trait]
pub trait HomeserverEvents: Send + Sync {
    /// Reads one homeserver event in `room_id`, a room that is not a conversation (a relay
    /// room, a direct chat with the bot), into the remote event it carries, keyed by
    /// something unique to it (its event ID) so a redelivery is recorded once. `None`: it
    /// carries nothing for the bridge (an echo of the bot's own events, small talk).
    ///
    /// May do network I/O for what only concerns the platform itself (joining a direct chat
    /// a registered responder invited the bot to); idempotent, since an event may be handled
    /// again after a crash. Never blocks on anything but `rooms` and that one call.
    async fn receive(
        &self,
        rooms: &dyn RoomDirectory,
        room_id: &str,
        event: &serde_json::Value,
    ) -> Result<Option<(String, RemoteEvent)>, crate::store::StoreError>;
}

/// The offer whose handle (Matrix: its relay room) a place on a platform is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandleOffer {
    pub offer_id: i64,
    /// The address the offer went to: only that responder's events there count.
    pub address: String,
    /// Whether it still waits for an answer (neither accepted, declined, taken nor
    /// withdrawn): a platform where answering an offer and writing in its conversation look
    /// the same (email: a reply to the offer accepts it) accepts only an open one.
    pub open: bool,
}

/// What a [`HomeserverEvents`] reader may ask the bridge. Read-only lookups in the store.
#[async_trait]
pub trait RoomDirectory: Send + Sync {
    /// The offer on `platform` whose handle is `handle`, if there is one (in any state).
    async fn offer_by_handle(
        &self,
        platform: Platform,
        handle: &str,
    ) -> Result<Option<HandleOffer>, crate::store::StoreError>;

    /// Whether `address` on `platform` belongs to a responder (registered or self-linked).
    async fn is_responder(
        &self,
        platform: Platform,
        address: &str,
    ) -> Result<bool, crate::store::StoreError>;
}

/// Writes into Matrix rooms that must not be lost, for a platform whose responders are on the
/// homeserver itself (Matrix: what the bot posts in relay rooms and direct chats). Each is
/// recorded before it is sent, then sent by the bridge in order per room, retried with
/// backoff for as long as the homeserver is away (also across a restart), and never twice:
/// a message is sent under its transaction ID every time it is tried, so the homeserver
/// answers a repeat with the first event. Implemented by the bridge's room-post queue
/// (`bridge/room_posts.rs`) and handed to connectors in `registry::BuildContext`.
///
/// Both methods write to the store only: no network I/O; they return once the write is
/// recorded. Idempotent per (`room`, `txn`): queued twice, sent once.
#[async_trait]
pub trait RoomWrites: Send + Sync {
    /// Queues a message event (`m.room.message` `content`) from the bot into `room`.
    async fn send_message(
        &self,
        room: &str,
        txn: &str,
        content: serde_json::Value,
    ) -> Result<(), ConnectorError>;

    /// Queues removing `user` from `room` (withdrawing their invite, or kicking them), with
    /// `reason` shown in their client. Already gone counts as done.
    async fn remove(
        &self,
        room: &str,
        txn: &str,
        user: &str,
        reason: &str,
    ) -> Result<(), ConnectorError>;
}

/// Where connectors hand remote events. Implemented by the bridge.
#[async_trait]
pub trait RemoteSink: Send + Sync + 'static {
    /// Records the event durably, once per (platform, key), before returning. Only after `Ok`
    /// may the connector acknowledge the event to its platform. A key recorded once is
    /// recorded for good: recording it again, however much later, is a no-op.
    async fn record_remote(
        &self,
        platform: Platform,
        key: &str,
        event: &RemoteEvent,
    ) -> Result<(), ConnectorError>;

    /// Where conversations are held on `platform` right now, for a connector whose platform
    /// does not deliver again what was written while Switchboard was away (Discord's gateway),
    /// so it can fetch that itself. A store read; no side effects.
    async fn held_places(&self, platform: Platform) -> Result<Vec<HeldPlace>, ConnectorError>;

    /// The address whose conversation a relayed message on `platform` belongs to, for a
    /// platform that names only the message when it is deleted (Discord's MESSAGE_DELETE has
    /// no author). `None`: not a message Switchboard relayed. A store read.
    async fn chat_of_message(
        &self,
        platform: Platform,
        message_id: &str,
    ) -> Result<Option<String>, ConnectorError>;

    /// The responder at `address` is typing, where `thread` says (as for
    /// [`RemoteEvent::Message::thread`]): their ghost is shown typing in the conversation for
    /// `lasts`, or until they post. Ephemeral and best effort: nothing is recorded, and it
    /// returns at once (the homeserver is told in the background).
    fn typing(&self, platform: Platform, address: &str, thread: Option<&str>, lasts: Duration);

    /// Read-only lookups of offers by their handle and of who is a responder, for a
    /// connector that must know which offer a platform event answers before it records it
    /// (email: the reply token in a mail's address is an offer's handle).
    fn rooms(&self) -> &dyn RoomDirectory;
}

/// A small durable key-value store each connector may keep its own platform state in (email:
/// the Message-IDs of each conversation's thread, single-use link tokens), so a platform's
/// needs never add tables or columns outside its module. Keys are the connector's own,
/// namespaced by platform. Values are short texts (JSON, base64): not for bulk data.
#[async_trait]
pub trait ConnectorState: Send + Sync {
    /// The value under `key`, if there is one.
    async fn get(&self, platform: Platform, key: &str) -> Result<Option<String>, ConnectorError>;

    /// Sets `key` to `value`, replacing what was there; durable when it returns.
    async fn put(&self, platform: Platform, key: &str, value: &str) -> Result<(), ConnectorError>;

    /// Removes `key` and returns what it held, atomically: of two concurrent takes of one
    /// key, exactly one gets the value (a single-use token is used once).
    async fn take(&self, platform: Platform, key: &str) -> Result<Option<String>, ConnectorError>;
}

/// A conversation held on a platform: the responder's address and the conversation's handle
/// there (as in [`Delivery::thread`]; `None` where the offer left none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeldPlace {
    pub address: String,
    pub handle: Option<String>,
}

/// Why a connector could not do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    /// Worth trying again later (network, rate limit, the remote side is down).
    #[error("temporary failure: {0}")]
    Transient(String),
    /// Will not work however often it is tried (unknown address, refused, invalid).
    #[error("permanent failure: {0}")]
    Permanent(String),
    /// The platform asked us to wait this long before trying again (rate limit).
    #[error("rate limited; retry after {0:?}")]
    RetryAfter(std::time::Duration),
    /// The platform refused a file for its size (HTTP 413), below the limit the connector
    /// declared. Never retried, and no sign the responder is unreachable: the bridge passes
    /// the file on as a link instead, or tells both sides.
    #[error("file too large for the platform: {0}")]
    FileTooLarge(String),
}

impl ConnectorError {
    /// The kind, as a metric's label: `retry_later`, `never`, `rate_limited`, `file_too_large`.
    pub fn kind(&self) -> &'static str {
        match self {
            ConnectorError::Transient(_) => "retry_later",
            ConnectorError::Permanent(_) => "never",
            ConnectorError::RetryAfter(_) => "rate_limited",
            ConnectorError::FileTooLarge(_) => "file_too_large",
        }
    }
}

/// One platform's way to reach responders.
///
/// Every method that sends something sends at most one message (or one edit of one) to one
/// address; the bridge paces these calls as [`Capabilities`] declares, so a connector never
/// sleeps to keep to its platform's limits. A rate limit is returned as
/// [`ConnectorError::RetryAfter`], never waited out inside the connector: the one worker must
/// not stall on one platform.
#[async_trait]
pub trait Connector: Send + Sync + 'static {
    /// Which platform this is. Pure; never changes.
    fn platform(&self) -> Platform;

    /// What the platform can do and how fast it may be sent to. Pure; never changes.
    fn capabilities(&self) -> Capabilities;

    /// Whether `address` is one this platform can reach (Telegram: a chat ID, an integer;
    /// Matrix: a user ID); the error says, for people, what was expected. Pure and fast; the
    /// same check as the platform's `registry::PlatformSpec::validate_address`, which is
    /// what the default uses.
    fn validate_address(&self, address: &str) -> Result<(), String> {
        (self.platform().spec().validate_address)(address)
    }

    /// The Matrix side of a platform whose responders' events arrive with the homeserver's
    /// transactions rather than from a receive loop of its own (Matrix responders write in
    /// relay rooms and direct chats with the bot). The bridge hands it every event in a room
    /// that is not a conversation. `None` (the default) for every other platform.
    fn homeserver_events(&self) -> Option<&dyn HomeserverEvents> {
        None
    }

    /// Whether people who are not responders may start conversations by writing here (an
    /// *initiator*: their messages are the visitor's side of a conversation, and what its
    /// responder writes comes back to them as [`Delivery::to_initiator`]). The operator's
    /// choice in the platform's section; `false` (the default): only responders write here.
    /// Pure; never changes.
    fn takes_initiators(&self) -> bool {
        false
    }

    /// Asks someone who wants to start a conversation what it is about, where they wrote
    /// (`thread`, as in [`RemoteEvent::Message::thread`]): `text` and the `topics` (ID, name)
    /// to choose from, answered by [`RemoteEvent::TopicChosen`]. The
    /// default sends `text` and a numbered list as a notice; the bridge also takes an answer
    /// that is a topic's number or name. Network I/O, one message; not idempotent.
    async fn ask_topic(
        &self,
        address: &str,
        thread: Option<&str>,
        text: &str,
        topics: &[(String, String)],
    ) -> Result<(), ConnectorError> {
        let mut lines = vec![text.to_owned()];
        for (i, (_, name)) in topics.iter().enumerate() {
            lines.push(format!("{}. {name}", i + 1));
        }
        lines.push("Reply with a number.".to_owned());
        self.notify(address, thread, &lines.join("\n"))
            .await
            .map(|_| ())
    }

    /// How a responder accepts an offer here, to complete "Accept this conversation first
    /// (…)". Pure.
    fn how_to_accept(&self) -> &'static str {
        "the Accept button on its offer"
    }

    /// Offers a conversation to the responder at `address` (platform-specific, e.g. a Matrix
    /// user ID or a Telegram chat ID). Does network I/O; one message. Not idempotent: a retry
    /// may offer twice, so the bridge calls it once per offer row. Returns the remote message
    /// that carries the offer, if there is one, so it can be marked taken later. What can
    /// wait once that handle exists (Matrix: the offer's text in the relay room just created)
    /// may be queued durably, as for [`Connector::notify`].
    async fn offer(&self, offer: &Offer, address: &str) -> Result<Option<String>, ConnectorError>;

    /// Tells the responder their accept won (Telegram: the offer's buttons go away). Network
    /// I/O, one edit; idempotent (editing to the same text again is not an error).
    async fn offer_accepted(
        &self,
        _address: &str,
        _handle: &str,
        _text: &str,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// The responder at `address` now holds the conversation whose offer's handle is
    /// `handle`. Platforms where a held conversation gets a place of its own (Discord: a
    /// private thread in the staff channel) make it here and return its handle, which from
    /// then on is the conversation's [`Delivery::thread`] with this responder and what
    /// [`RemoteEvent::Message::thread`] names for what they write there. `None` (the default):
    /// the offer's handle stays. Network I/O; called once per accepted offer, after
    /// [`Connector::offer_accepted`]. Nothing it names may identify the visitor: `visitor_alias`
    /// is the conversation's pseudonym.
    async fn conversation_opened(
        &self,
        _address: &str,
        _handle: &str,
        _visitor_alias: &str,
        _topic_name: &str,
    ) -> Result<Option<String>, ConnectorError> {
        Ok(None)
    }

    /// Marks an earlier offer as no longer available (taken by someone else, withdrawn).
    /// Network I/O, one edit; idempotent: an offer already closed is `Ok`. May be queued
    /// durably instead of done at once, as for [`Connector::notify`].
    async fn close_offer(
        &self,
        _address: &str,
        _remote_message_id: &str,
        _why: &str,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// The conversation whose offers here had `handles` (each offer's handle, as
    /// [`Connector::offer`] returned it) is being erased: remove from the platform what this
    /// connector put there about it, where the platform lets it (Matrix: the bot redacts every
    /// message in the relay rooms, the visitor's words among them, and leaves them). Network
    /// I/O, possibly one request per message: not cut off at the connector's time limit.
    /// Idempotent. The default does nothing: what was delivered to a Telegram chat, a Discord
    /// thread or a mailbox is the responder's, and cannot be recalled.
    async fn erase_conversation(&self, handles: &[String]) -> Result<(), ConnectorError> {
        let _ = handles;
        Ok(())
    }

    /// Renders a visitor message into the messages it becomes on this platform, in order
    /// (Telegram: a long text split into 4096-character parts, the first headed by the
    /// visitor's alias; a file: one part, its caption). Pure and fast: no I/O, never blocks.
    /// Never returns an empty part list for a delivery with text or a file. The parts are
    /// opaque to the bridge: it stores them with the outbox row before sending the first,
    /// and hands each back to [`Connector::deliver`] (or `deliver_file`) unchanged, so a
    /// delivery interrupted after part k resumes with part k+1 even across a restart.
    fn render(&self, delivery: &Delivery) -> Vec<String>;

    /// Sends part `index` of a visitor message, `part` being `render(delivery)[index]` as
    /// stored. Network I/O, exactly one message; may take as long as the platform's HTTP
    /// timeout. Returns the remote message's ID, so replies to it can be routed back. Not
    /// idempotent unless the platform has an idempotency key (use `delivery.event_id` and
    /// `index` for it where there is one): the bridge calls it again for the same part only
    /// when the call failed. Only called when `shares_room` is false.
    async fn deliver(
        &self,
        delivery: &Delivery,
        index: usize,
        part: &str,
        address: &str,
    ) -> Result<String, ConnectorError>;

    /// Sends several text messages of one conversation (same room and thread, in order,
    /// none a file or a change) to `address` as one platform message. Called instead of
    /// [`Connector::deliver`] where `batch_window` is declared; same contract otherwise, and
    /// the returned message ID is mapped to every delivery's event.
    async fn deliver_batch(
        &self,
        _deliveries: &[Delivery],
        _address: &str,
    ) -> Result<String, ConnectorError> {
        Err(ConnectorError::Permanent(format!(
            "{} does not send messages together",
            self.platform().as_str()
        )))
    }

    /// Relays a visitor's file or image, with `caption` (its one rendered part). Same
    /// contract as [`Connector::deliver`]. Connectors that cannot carry files keep the
    /// default, which refuses for good.
    async fn deliver_file(
        &self,
        _delivery: &Delivery,
        _caption: &str,
        _file: Attachment,
        _address: &str,
    ) -> Result<String, ConnectorError> {
        Err(ConnectorError::Permanent(format!(
            "{} cannot carry files",
            self.platform().as_str()
        )))
    }

    /// Replaces the text of `message_id`, a message sent earlier for the delivery's original
    /// (`delivery.revises`), with `part` (rendered from the edited text). Network I/O;
    /// idempotent. Called only where `revises_deliveries` is declared.
    async fn edit_delivered(
        &self,
        _delivery: &Delivery,
        _message_id: &str,
        _part: &str,
        _address: &str,
    ) -> Result<(), ConnectorError> {
        Err(ConnectorError::Permanent(format!(
            "{} cannot edit what it sent",
            self.platform().as_str()
        )))
    }

    /// Deletes `message_id`, a message sent earlier for the delivery's original. A message
    /// that is gone already counts as deleted. Network I/O; idempotent. Called only where
    /// `revises_deliveries` is declared.
    async fn delete_delivered(
        &self,
        _delivery: &Delivery,
        _message_id: &str,
        _address: &str,
    ) -> Result<(), ConnectorError> {
        Err(ConnectorError::Permanent(format!(
            "{} cannot delete what it sent",
            self.platform().as_str()
        )))
    }

    /// Fetches a file a responder sent, to re-upload it to the media repository. Network
    /// I/O; idempotent.
    async fn fetch_file(&self, file: &RemoteFile) -> Result<Attachment, ConnectorError> {
        Err(ConnectorError::Permanent(format!(
            "{} cannot fetch {}",
            self.platform().as_str(),
            file.file_id
        )))
    }

    /// Shows the responder that the visitor is typing (`true`) or has stopped. Best effort:
    /// platforms without such a signal keep this default. `thread` is the conversation's
    /// handle, as in [`Delivery::thread`].
    async fn typing(
        &self,
        _address: &str,
        _thread: Option<&str>,
        _typing: bool,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Sends the responder a short service message from Switchboard. `thread` is the
    /// conversation's handle (as in [`Delivery::thread`]) when the message is about one
    /// conversation, so it appears there (Matrix: in its relay room); `None` for messages
    /// about none. Returns the remote message's ID, so a reply to it can be routed back to
    /// that conversation; `None` where the platform has no such ID, nothing was sent, or the
    /// notice was queued rather than sent. Does network I/O; not idempotent (a retry may
    /// show the message twice). A connector with a durable queue for its platform (Matrix:
    /// [`RoomWrites`]) records the notice there instead and returns at once: `Ok` then means
    /// it will be shown, however long the platform is away.
    async fn notify(
        &self,
        address: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<Option<String>, ConnectorError>;

    /// The responder no longer holds the conversation whose handle is `thread` (it ended, or
    /// was handed to someone else; `why` says which, and they have been told with
    /// [`Self::notify`]). Platforms where a conversation is a place of its own close it
    /// (Matrix: the responder leaves the relay room); the rest keep this default.
    async fn conversation_closed(
        &self,
        _address: &str,
        _thread: &str,
        _why: &str,
    ) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Receives events from the platform while this instance leads (`cluster.rs`; an
    /// instance alone leads for the life of the service), handing each to `sink` and
    /// acknowledging it to the platform only after the sink recorded it. Stops when `term`
    /// ends (`Term::ended`), and asks `Term::holds` before each call that takes events from
    /// the platform, so a leader deposed while it stalled does not act once it resumes.
    async fn run(self: Arc<Self>, sink: Arc<dyn RemoteSink>, term: Term);

    /// What every instance runs for the life of the service, leading or not, until `shutdown`
    /// turns true: listeners for what the platform pushes to whichever instance it reaches
    /// (email's SMTP listener; webhooks are [`Connector::webhook_routes`]). Nothing by default.
    async fn serve(self: Arc<Self>, _sink: Arc<dyn RemoteSink>, _shutdown: watch::Receiver<bool>) {}

    /// Checks that the platform accepts the configured credentials, for
    /// `switchboard check-config` (Telegram: `getMe` with the bot token). Returns what was
    /// verified, for people (`getMe: @SupportBot (id 42)`); an error says what is wrong and
    /// how to fix it, and never holds a secret. Network I/O, a request or two, read-only and
    /// idempotent; may take as long as the connector's own time-outs (the caller cuts it off
    /// after a few seconds). Called on a connector that was built but never `run`, and
    /// starts nothing. The default, for a platform with no credentials of its own (Matrix:
    /// the homeserver's are checked on their own), checks nothing.
    async fn check(&self) -> Result<String, ConnectorError> {
        Ok("no credentials of its own to check".into())
    }

    /// HTTP routes the platform pushes events to (webhooks), merged into Switchboard's
    /// listener. Same rule as `run`: answer success only after the sink recorded the event.
    fn webhook_routes(self: Arc<Self>, _sink: Arc<dyn RemoteSink>) -> Option<axum::Router> {
        None
    }
}
