//! The conversation model. A conversation is a Matrix room; `room_id` is its identifier in the
//! store, in logs and in every API.

use std::str::FromStr;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    /// Created; offered to responders, nobody has joined yet.
    Waiting,
    /// A responder has joined the room.
    Active,
    Closed,
}

impl ConversationState {
    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Waiting => "waiting",
            ConversationState::Active => "active",
            ConversationState::Closed => "closed",
        }
    }
}

impl FromStr for ConversationState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "waiting" => ConversationState::Waiting,
            "active" => ConversationState::Active,
            "closed" => ConversationState::Closed,
            _ => return Err(()),
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Conversation {
    pub room_id: String,
    /// Topic ID from the configuration.
    pub topic: String,
    /// The visitor's Matrix user. Never shown to responders on other platforms.
    pub visitor_user_id: String,
    /// What responders call the visitor, e.g. "Visitor 7F3A".
    pub visitor_alias: String,
    pub state: ConversationState,
    pub created_at: i64,
    /// The visitor's language (a primary tag such as `de`), if the widget sent it.
    pub language: Option<String>,
}

/// Who wrote a message, from the conversation's point of view.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SenderRole {
    Visitor,
    Responder,
    /// Switchboard's bot (notices).
    Bot,
}

impl SenderRole {
    pub fn as_str(self) -> &'static str {
        match self {
            SenderRole::Visitor => "visitor",
            SenderRole::Responder => "responder",
            SenderRole::Bot => "bot",
        }
    }
}

impl FromStr for SenderRole {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        Ok(match s {
            "visitor" => SenderRole::Visitor,
            "responder" => SenderRole::Responder,
            "bot" => SenderRole::Bot,
            _ => return Err(()),
        })
    }
}

/// One message of a transcript.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Message {
    pub event_id: String,
    pub room_id: String,
    /// Position in Switchboard's inbox: the order messages are relayed in.
    pub inbox_seq: i64,
    pub sender: String,
    pub sender_role: SenderRole,
    pub msgtype: String,
    pub body: String,
    pub formatted_body: Option<String>,
    pub origin_server_ts: i64,
}

/// A short, per-conversation name for the visitor that identifies nothing about them.
pub fn new_visitor_alias() -> String {
    use rand::Rng;
    format!(
        "Visitor {:04X}",
        rand::thread_rng().gen_range(0..=0xFFFFu32)
    )
}
