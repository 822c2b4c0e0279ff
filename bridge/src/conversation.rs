//! The conversation model. A conversation is a Matrix room; `room_id` is its identifier in the
//! store, in logs and in every API.

use std::str::FromStr;

use serde::Serialize;

/// Where a conversation is in its life. Persisted, shown in the admin API, and published into
/// the room (see [`ConversationStatus`]) so the widget can show it.
///
/// ```text
/// queued ──offer──▶ offered ──accept──▶ active ──hand-over──▶ transferring ──accept──▶ active
///   ▲                  │                   │                       │
///   └──nobody left─────┴───────────────────┼───────nobody left─────┘
///                                          └──/end, visitor ends──▶ closed
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConversationState {
    /// Nobody is being asked: the visitor has not written yet, or nobody is eligible.
    Queued,
    /// Offered to one or more responders; nobody has accepted yet.
    Offered,
    /// A responder holds the conversation.
    Active,
    /// The previous responder handed it over; the next one has been asked.
    Transferring,
    Closed,
}

impl ConversationState {
    pub const ALL: [ConversationState; 5] = [
        ConversationState::Queued,
        ConversationState::Offered,
        ConversationState::Active,
        ConversationState::Transferring,
        ConversationState::Closed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ConversationState::Queued => "queued",
            ConversationState::Offered => "offered",
            ConversationState::Active => "active",
            ConversationState::Transferring => "transferring",
            ConversationState::Closed => "closed",
        }
    }

    /// True while nobody holds the conversation and it is not closed: routing may offer it.
    pub fn is_waiting(self) -> bool {
        matches!(
            self,
            ConversationState::Queued
                | ConversationState::Offered
                | ConversationState::Transferring
        )
    }
}

impl FromStr for ConversationState {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        ConversationState::ALL
            .into_iter()
            .find(|state| state.as_str() == s)
            .ok_or(())
    }
}

/// The room state event Switchboard's bot keeps up to date in every conversation room, so the
/// widget can show "waiting", "connected", "transferred" or "closed" without parsing notices.
/// Only the bot may send it: the room's power levels keep visitors (level 0) from forging it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct ConversationStatus {
    pub state: ConversationState,
    /// The public name (pseudonym) of who answers now; `None` unless `active`.
    pub responder: Option<String>,
    /// How many times the conversation has been handed over so far.
    pub transfers: u32,
    /// True when it is queued because no responder is available right now.
    pub nobody_available: bool,
}

impl ConversationStatus {
    /// The state event type in the room.
    pub const EVENT_TYPE: &'static str = "org.switchboard.conversation";
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip_and_only_unheld_open_ones_wait() {
        for state in ConversationState::ALL {
            assert_eq!(state.as_str().parse::<ConversationState>(), Ok(state));
        }
        assert!("waiting".parse::<ConversationState>().is_err());
        let waiting: Vec<_> = ConversationState::ALL
            .into_iter()
            .filter(|s| s.is_waiting())
            .map(ConversationState::as_str)
            .collect();
        assert_eq!(waiting, ["queued", "offered", "transferring"]);
    }

    #[test]
    fn the_published_status_has_the_documented_shape() {
        let status = ConversationStatus {
            state: ConversationState::Active,
            responder: Some("Zoe".into()),
            transfers: 1,
            nobody_available: false,
        };
        assert_eq!(
            serde_json::to_value(&status).unwrap(),
            serde_json::json!({"state": "active", "responder": "Zoe", "transfers": 1, "nobody_available": false})
        );
    }
}
