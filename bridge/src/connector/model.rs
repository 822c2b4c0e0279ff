//! The one message model every connector speaks: an offer, a delivery, its revisions, files,
//! and the events a platform brings in.

use serde::{Deserialize, Serialize};

/// A new conversation offered to a responder. Holds nothing that identifies the visitor:
/// no Matrix ID, address or token, only the per-conversation alias.
#[derive(Debug, Clone)]
pub struct Offer {
    /// Identifies the offer in the store; a connector puts it in its Accept/Decline controls.
    pub offer_id: i64,
    pub room_id: String,
    pub topic_name: String,
    pub visitor_alias: String,
    /// The visitor's first message, if they have written one yet.
    pub first_message: Option<String>,
    /// The visitor's language, if known.
    pub language: Option<String>,
    /// For a conversation handed over: who handed it over and why, and its last messages.
    pub summary: Option<String>,
}

/// A visitor message to relay to a responder who holds the conversation on a remote platform.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub room_id: String,
    /// The visitor's Matrix event this delivery carries (unique per delivery, so usable as an
    /// idempotency key on platforms that have one).
    #[serde(default)]
    pub event_id: String,
    pub visitor_alias: String,
    pub body: String,
    pub formatted_body: Option<String>,
    /// A file or image the message carries (fetched from the media repository at delivery).
    #[serde(default)]
    pub media: Option<MediaRef>,
    /// The connector's handle of this conversation with this responder, from its offer
    /// (Matrix: the relay room); `None` where the address alone is enough (Telegram).
    #[serde(default)]
    pub thread: Option<String>,
    /// Set when the visitor edited or deleted a message relayed earlier: this delivery
    /// changes what the responder was sent for it instead of sending something new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revises: Option<Revision>,
    /// The message goes the other way: from the conversation (its responder, or
    /// Switchboard's notices) to the person who started it from this platform (an
    /// initiator), who talks with the bot. So it is not headed by the visitor's alias, and a
    /// delivery that can never arrive ends their conversation instead of handing it over.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub to_initiator: bool,
}

/// A visitor's change to a message they sent earlier (the Matrix event `of`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Revision {
    /// Replaced by the delivery's text (`m.replace`).
    Edit { of: String },
    /// Redacted.
    Delete { of: String },
}

impl Revision {
    /// The visitor's event it changes.
    pub fn of(&self) -> &str {
        match self {
            Revision::Edit { of } | Revision::Delete { of } => of,
        }
    }
}

/// Whether a file is shown as a picture.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    Image,
    File,
}

/// A file in the homeserver's media repository.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MediaRef {
    pub mxc: String,
    pub mimetype: Option<String>,
    pub filename: String,
    pub kind: FileKind,
}

/// A file on a remote platform, fetched with [`Connector::fetch_file`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteFile {
    pub file_id: String,
    pub mimetype: Option<String>,
    pub filename: String,
    pub kind: FileKind,
}

/// File contents in transit between a platform and the media repository.
#[derive(Debug, Clone)]
pub struct Attachment {
    pub bytes: Vec<u8>,
    pub mimetype: Option<String>,
    pub filename: String,
    pub kind: FileKind,
}

/// Something a responder did on a remote platform, recorded durably before the platform is
/// told we have it, then handled by the bridge.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RemoteEvent {
    Accept {
        offer_id: i64,
        address: String,
        display_name: String,
    },
    Decline {
        offer_id: i64,
        address: String,
    },
    Message {
        address: String,
        message_id: String,
        reply_to: Option<String>,
        body: String,
        formatted_body: Option<String>,
        display_name: String,
        /// A photo or document sent with the message (its caption is `body`).
        #[serde(default)]
        file: Option<RemoteFile>,
        /// Where the responder wrote it, on platforms where a conversation has a place of its
        /// own (Matrix: the relay room, the handle of its offer); answers about it go there.
        /// `None` where the address alone is enough (Telegram).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread: Option<String>,
        /// The writer's language tag (`de`, `pt-BR`), where the platform says (Telegram: the
        /// app's language). Only an initiator's counts: it picks the language their topic
        /// question is asked in, and is their conversation's language for routing, as the
        /// browser's is for a widget visitor.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// The responder edited a message they sent earlier.
    Edit {
        address: String,
        message_id: String,
        body: String,
        formatted_body: Option<String>,
    },
    Command {
        address: String,
        command: String,
        args: String,
        reply_to: Option<String>,
        /// Where the command was written, as for [`RemoteEvent::Message`] (Matrix: the relay
        /// room or the direct chat with the bot); the answer goes there.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread: Option<String>,
        /// As in [`RemoteEvent::Message::language`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// The responder deleted a message they sent earlier.
    Delete {
        address: String,
        message_id: String,
    },
    /// The responder sent something the connector could not read at all (the platform's
    /// update did not parse). Recorded like any event, so they are told, at the platform's
    /// pace, that it was not passed on.
    Unreadable {
        address: String,
    },
    /// Someone who is not a responder picked what to talk about from the choices
    /// [`Connector::ask_topic`] showed them (Telegram: a button), or named by where they
    /// wrote (email: `support+TOPIC@`): `topic` is its ID. `thread` as in
    /// [`RemoteEvent::Message::thread`]: the conversation's answers go there.
    TopicChosen {
        address: String,
        topic: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        thread: Option<String>,
        /// As in [`RemoteEvent::Message::language`].
        #[serde(default, skip_serializing_if = "Option::is_none")]
        language: Option<String>,
    },
    /// The platform reported that what was sent to `address` never arrived and never will
    /// (email: a bounce). The conversation `thread` names (its handle, as for
    /// [`RemoteEvent::Message::thread`]) goes to someone else; an offer still open there
    /// counts as declined.
    Unreachable {
        address: String,
        thread: Option<String>,
        /// Why, for the log and the hand-over note (no visitor detail: it is the platform's
        /// own report about the responder's address).
        reason: String,
    },
}
