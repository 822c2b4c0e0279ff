//! The responder register's model: who answers, about what, when, how much, and where.
//!
//! Used by the configuration (seeding), the store, the admin API and CLI, and routing.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Whether a responder takes new conversations. Set by the responder (from their platform) or
/// by an operator.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default, utoipa::ToSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum ResponderStatus {
    #[default]
    Available,
    Away,
    Offline,
}

impl ResponderStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponderStatus::Available => "available",
            ResponderStatus::Away => "away",
            ResponderStatus::Offline => "offline",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "available" => Some(ResponderStatus::Available),
            "away" => Some(ResponderStatus::Away),
            "offline" => Some(ResponderStatus::Offline),
            _ => None,
        }
    }
}

/// One way to reach a responder: a platform (`matrix`, `telegram`) and the address there
/// (a Matrix user ID, a Telegram chat ID).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Contact {
    pub platform: String,
    pub address: String,
}

/// Weekly working hours in the responder's own time zone: weekday (`mon` … `sun`) → intervals
/// `"HH:MM-HH:MM"`. An interval whose end is not after its start runs past midnight into the
/// next day (`"22:00-02:00"`). No entries at all means "any time".
pub type WeeklyHours = BTreeMap<String, Vec<String>>;

/// A responder in the register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Responder {
    /// Stable identifier: lowercase letters, digits and `._=-`. Also the ghost's localpart suffix.
    pub id: String,
    /// The responder's real name, for operators.
    pub display_name: String,
    /// What visitors see instead of the real name, if set.
    #[serde(default)]
    #[schema(required = true)]
    pub pseudonym: Option<String>,
    /// Topics answered; hierarchical: `billing/refunds`, `billing/*` (any subtopic of billing,
    /// and billing itself), `*` (everything).
    #[serde(default)]
    #[schema(required = true)]
    pub topics: Vec<String>,
    /// Languages spoken (primary tags such as `en`, `de`); empty means any.
    #[serde(default)]
    #[schema(required = true)]
    pub languages: Vec<String>,
    /// IANA time zone of `hours`, e.g. `Europe/Berlin`.
    #[serde(default = "default_timezone")]
    #[schema(required = true)]
    pub timezone: String,
    /// Weekday (`mon` … `sun`) → intervals `"HH:MM-HH:MM"` in `timezone`; an interval that
    /// ends before it starts runs past midnight. Empty: any time.
    #[serde(default)]
    #[schema(required = true, inline)]
    pub hours: WeeklyHours,
    /// How many conversations they hold at once at most.
    #[serde(default = "default_max_concurrent")]
    #[schema(required = true)]
    pub max_concurrent: i64,
    #[serde(default)]
    #[schema(required = true)]
    pub status: ResponderStatus,
    /// Where to reach them, most preferred first.
    #[serde(default)]
    #[schema(required = true)]
    pub contacts: Vec<Contact>,
}

fn default_timezone() -> String {
    "UTC".into()
}

fn default_max_concurrent() -> i64 {
    3
}

impl Responder {
    /// The name their ghost shows visitors.
    pub fn public_name(&self) -> &str {
        self.pseudonym.as_deref().unwrap_or(&self.display_name)
    }
}
