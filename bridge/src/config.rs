//! The part of the configuration the bridge needs (the binary loads the file).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct TopicConfig {
    /// Stable identifier used by the widget and the API (e.g. `support`).
    pub id: String,
    /// Shown to visitors and used as the room name.
    pub name: String,
    /// Who answers this topic: Matrix user IDs (`@alice:example.org`, invited into the
    /// conversation room) and IDs of `[[responders]]` reached on other platforms.
    #[serde(default)]
    pub responders: Vec<String>,
}

/// A responder reached on a remote platform (Matrix users are named directly in topics).
#[derive(Debug, Clone, Deserialize)]
pub struct ResponderConfig {
    /// Stable identifier, also the ghost's localpart suffix: lowercase letters, digits, `._=-`.
    pub id: String,
    /// The name visitors see on the responder's ghost. Without it, the name the responder
    /// has on their platform (their Telegram first name) is used.
    pub pseudonym: Option<String>,
    /// Their private chat with the bot (the user's numeric Telegram ID).
    pub telegram_chat: Option<i64>,
}

impl ResponderConfig {
    /// Where to reach them, in order of preference.
    pub fn contacts(&self) -> Vec<(crate::connector::Platform, String)> {
        self.telegram_chat
            .iter()
            .map(|c| (crate::connector::Platform::Telegram, c.to_string()))
            .collect()
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct VisitorLimits {
    /// Conversations one client address may start per minute.
    #[serde(default = "default_per_minute")]
    pub conversations_per_minute: u32,
    /// How many it may start in a quick burst before the per-minute rate applies.
    #[serde(default = "default_burst")]
    pub burst: u32,
    /// Behind a reverse proxy every request comes from the proxy's address. When true, the
    /// client address is taken from the last `X-Forwarded-For` entry (the one the proxy
    /// added; earlier entries are the client's own claims and never trusted).
    #[serde(default)]
    pub trust_forwarded_for: bool,
}

fn default_per_minute() -> u32 {
    6
}
fn default_burst() -> u32 {
    3
}

impl Default for VisitorLimits {
    fn default() -> Self {
        Self {
            conversations_per_minute: default_per_minute(),
            burst: default_burst(),
            trust_forwarded_for: false,
        }
    }
}

#[derive(Debug, Clone)]
pub struct BridgeConfig {
    pub appservice_id: String,
    pub server_name: String,
    /// Homeserver URL as the visitor's browser must reach it.
    pub public_homeserver_url: String,
    pub topics: Vec<TopicConfig>,
    pub responders: Vec<ResponderConfig>,
    pub limits: VisitorLimits,
    /// Notice posted in a new conversation; `{topic}` is replaced by the topic's name.
    pub welcome_notice: String,
}

impl BridgeConfig {
    pub fn topic(&self, id: &str) -> Option<&TopicConfig> {
        self.topics.iter().find(|t| t.id == id)
    }

    pub fn responder(&self, id: &str) -> Option<&ResponderConfig> {
        self.responders.iter().find(|r| r.id == id)
    }

    /// The remote responder reached at this platform address.
    pub fn responder_at(
        &self,
        platform: crate::connector::Platform,
        address: &str,
    ) -> Option<&ResponderConfig> {
        self.responders.iter().find(|r| {
            r.contacts()
                .iter()
                .any(|(p, a)| *p == platform && a == address)
        })
    }
}

pub const DEFAULT_WELCOME_NOTICE: &str =
    "Thanks for reaching out about {topic}. Someone will be with you shortly.";
