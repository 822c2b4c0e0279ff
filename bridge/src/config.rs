//! The part of the configuration the bridge needs (the binary loads the file).

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
pub struct TopicConfig {
    /// Stable identifier used by the widget and the API, hierarchical with `/`
    /// (`billing/refunds`); responders' topic patterns (`billing/*`) match it.
    pub id: String,
    /// Shown to visitors and used as the room name.
    pub name: String,
    /// The name in other languages, by language tag (`de = "Abrechnung"`), shown to someone
    /// whose language is known (an initiator on Telegram or Discord); see [`Self::name_in`].
    #[serde(default)]
    pub names: std::collections::BTreeMap<String, String>,
    /// How its conversations are offered: `broadcast` (to every eligible responder, the first
    /// to accept gets it), `round_robin` or `least_busy`.
    #[serde(default)]
    pub strategy: crate::routing::Strategy,
    /// How long an offer may go unanswered before it is withdrawn and the conversation is
    /// offered to someone else.
    #[serde(default = "default_offer_timeout")]
    pub offer_timeout_secs: u64,
    /// How long a responder who accepted may take to send their first reply before the
    /// conversation is handed to someone else. Unset: no limit.
    pub first_reply_timeout_secs: Option<u64>,
    /// How long a responder may stay silent while the visitor waits for an answer before the
    /// conversation is handed to someone else. Unset: no limit.
    pub idle_limit_secs: Option<u64>,
    /// The first-reply time promised for this topic: the service-level report
    /// (`switchboard service-levels`, `GET /admin/v1/service-levels`) says what share of its
    /// conversations met it, counting only the answering responder's working hours. Unset:
    /// the report gives the waits without a share.
    pub first_reply_target_secs: Option<u64>,
}

impl TopicConfig {
    /// The name for someone speaking `language`: the one listed for that exact tag, else
    /// for its primary subtag (`pt` for `pt-BR`), else `name`.
    pub fn name_in(&self, language: Option<&str>) -> &str {
        let Some(language) = language.map(str::trim).filter(|l| !l.is_empty()) else {
            return &self.name;
        };
        let primary = crate::routing::primary_subtag(language);
        let find = |wanted: &str| {
            self.names
                .iter()
                .find(|(tag, _)| tag.eq_ignore_ascii_case(wanted))
                .map(|(_, name)| name.as_str())
        };
        find(language)
            .or_else(|| find(primary))
            .unwrap_or(&self.name)
    }
}

fn default_offer_timeout() -> u64 {
    120
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
    /// How visitors get a Matrix identity: as homeserver guests (the default), as accounts
    /// Switchboard registers in its own namespace (for homeservers without guest access), or
    /// as such users reached only through Switchboard's proxy (`proxied`).
    #[serde(default)]
    pub mode: VisitorMode,
    /// Visitor accounts one client address may create per minute (`accounts` and `proxied`).
    #[serde(default = "default_accounts_per_minute")]
    pub accounts_per_minute: u32,
    /// How many it may create in a quick burst before the per-minute rate applies.
    #[serde(default = "default_accounts_burst")]
    pub accounts_burst: u32,
    /// Visitor accounts all addresses together may create per hour: a ceiling for abuse
    /// from many addresses at once. 0 turns the ceiling off.
    #[serde(default = "default_accounts_per_hour")]
    pub accounts_per_hour: u32,
    /// How long a session Switchboard issues in `proxied` mode stays valid, in hours. After
    /// that the widget is told its session expired and starts afresh.
    #[serde(default = "default_session_ttl_hours")]
    pub session_ttl_hours: u64,
    /// Switchboard's address as visitors' browsers reach it (`https://chat.example.org`, with
    /// any path prefix a reverse proxy adds), for the proxy URL handed to the widget in
    /// `proxied` mode (`{public_url}/visitor-proxy`). Unset: taken from each request's `Host`
    /// (and, with `trust_forwarded_for`, `X-Forwarded-Proto`/`X-Forwarded-Host`).
    #[serde(default)]
    pub public_url: Option<String>,
    /// Conversations one person writing from a platform (an initiator: Telegram, …) may
    /// start per hour, counted by a keyed hash of their address. 0 turns the limit off.
    #[serde(default = "default_initiator_conversations_per_hour")]
    pub initiator_conversations_per_hour: u32,
    /// Calls about an existing conversation (typing, ending it) one client address may make
    /// per second, in a burst of five times that. Each costs a question to the homeserver
    /// about the visitor's token unless its answer is still remembered; many visitors behind
    /// one address (an office) share it.
    #[serde(default = "default_requests_per_second")]
    pub requests_per_second: u32,
    /// Write visitors' identifiers in the log: their Matrix ID in each conversation's span
    /// (beside its alias), and the client address of each visitor API request that starts a
    /// conversation or is refused for its rate. Off by default: logs travel to collectors
    /// and outlive `[retention]`, so an erased conversation would live on there. Turn it on
    /// only to chase a problem, and off again.
    #[serde(default)]
    pub log_identifiers: bool,
}

/// Where a visitor's Matrix user comes from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum VisitorMode {
    /// The widget registers a guest on the homeserver (`/register?kind=guest`). Needs
    /// `allow_guest_access: true` on the homeserver.
    #[default]
    Guest,
    /// Switchboard registers a user in its own appservice namespace and hands the widget a
    /// token for that user alone (`POST /api/v1/visitors`). For homeservers without guests.
    Accounts,
    /// Switchboard registers a user in its own namespace without logging it in and hands the
    /// widget a session token of its own; the widget talks to Switchboard's narrow Matrix
    /// proxy (`/visitor-proxy`), which acts for that user only in their own conversations.
    /// Works where appservice logins are refused (Matrix Authentication Service, MSC4190).
    Proxied,
}

impl VisitorMode {
    pub fn as_str(self) -> &'static str {
        match self {
            VisitorMode::Guest => "guest",
            VisitorMode::Accounts => "accounts",
            VisitorMode::Proxied => "proxied",
        }
    }
}

fn default_per_minute() -> u32 {
    6
}
fn default_burst() -> u32 {
    3
}
fn default_accounts_per_minute() -> u32 {
    3
}
fn default_requests_per_second() -> u32 {
    20
}
fn default_accounts_burst() -> u32 {
    3
}
fn default_accounts_per_hour() -> u32 {
    600
}
fn default_session_ttl_hours() -> u64 {
    24
}
fn default_initiator_conversations_per_hour() -> u32 {
    6
}

impl Default for VisitorLimits {
    fn default() -> Self {
        Self {
            conversations_per_minute: default_per_minute(),
            burst: default_burst(),
            trust_forwarded_for: false,
            mode: VisitorMode::default(),
            accounts_per_minute: default_accounts_per_minute(),
            accounts_burst: default_accounts_burst(),
            accounts_per_hour: default_accounts_per_hour(),
            session_ttl_hours: default_session_ttl_hours(),
            public_url: None,
            initiator_conversations_per_hour: default_initiator_conversations_per_hour(),
            requests_per_second: default_requests_per_second(),
            log_identifiers: false,
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
    /// Responders to seed the register with at start-up.
    pub responders: Vec<crate::responder::Responder>,
    pub limits: VisitorLimits,
    /// Notice posted in a new conversation; `{topic}` is replaced by the topic's name.
    pub welcome_notice: String,
    /// Told to a visitor whose conversation nobody can take right now.
    pub offline_message: String,
}

impl BridgeConfig {
    pub fn topic(&self, id: &str) -> Option<&TopicConfig> {
        self.topics.iter().find(|t| t.id == id)
    }
}

pub const DEFAULT_OFFLINE_MESSAGE: &str = "Nobody is available right now. Your message is kept, \
     and someone will answer as soon as they can.";

pub const DEFAULT_WELCOME_NOTICE: &str =
    "Thanks for reaching out about {topic}. Someone will be with you shortly.";
