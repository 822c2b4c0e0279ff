//! Every platform Switchboard can reach responders on, listed once.
//!
//! What the bridge, the admin API and CLI and the configuration loader need to know about a
//! platform without a running connector (its name, how people write its addresses and
//! commands, its configuration section and how to build its connector from it) is declared
//! by the platform's own module as a [`PlatformSpec`] and registered in [`PLATFORMS`]. Nothing
//! outside a platform's module matches on its name: adding a platform is its module, its
//! section in the configuration file, and one line in [`PLATFORMS`].

use std::sync::Arc;

use switchboard_appservice::HomeserverClient;

use super::{Connector, ConnectorState, Platform, RoomWrites, discord, email, matrix, telegram};
use crate::health::Health;

/// The registered platforms. One line per platform; the order is the order they are listed
/// in (error messages, help texts).
pub static PLATFORMS: &[&PlatformSpec] =
    &[&matrix::SPEC, &telegram::SPEC, &discord::SPEC, &email::SPEC];

/// What the rest of Switchboard may know about a platform, declared by its module.
pub struct PlatformSpec {
    /// Its name in the configuration, the store and the admin API (`"telegram"`): lower-case,
    /// never changes once data was stored under it.
    pub name: &'static str,
    /// Its name as people write it (`"Telegram"`).
    pub display_name: &'static str,
    /// How a command starts there (`/end` on Telegram, `!end` in a Matrix room). The same as
    /// the running connector's `Capabilities::command_prefix`.
    pub command_prefix: char,
    /// Whether an address is one this platform can reach (a Telegram chat ID, a Matrix user
    /// ID); the error says what was expected, for people. Pure; the same check as the
    /// running connector's `Connector::validate_address`.
    pub validate_address: fn(&str) -> Result<(), String>,
    /// Whether responders link their account themselves with a one-time code sent to the
    /// bot (`/start CODE`), i.e. the platform has a bot they can write to before Switchboard
    /// knows their address.
    pub links_by_code: bool,
    /// Reads the platform's section of the configuration file (`[telegram]`; `None` when it
    /// is absent), without connecting anywhere. `Ok(true)`: the platform is enabled, and
    /// [`PlatformSpec::build`] will be called with this section.
    pub check: fn(Option<&serde_json::Value>) -> Result<bool, String>,
    /// Builds the platform's connector from its (checked) section. No network I/O: the
    /// connector connects when it runs. `Ok(None)`: not enabled.
    pub build: BuildFn,
}

/// See [`PlatformSpec::build`].
pub type BuildFn =
    fn(Option<&serde_json::Value>, &BuildContext) -> Result<Option<Arc<dyn Connector>>, String>;

/// What a connector may be built with, besides its own configuration section.
pub struct BuildContext {
    /// The homeserver connection as the bridge's bot (Matrix responders are reached through
    /// it).
    pub client: Arc<HomeserverClient>,
    /// Where the connector reports how its connection is doing (`Health::part(name)`).
    pub health: Health,
    /// The bridge's durable queue of writes into Matrix rooms, for a connector whose
    /// platform is the homeserver itself (Matrix: notices, offer texts and removals in relay
    /// rooms and direct chats go through it rather than straight to the homeserver).
    pub room_writes: Arc<dyn RoomWrites>,
    /// Where a connector keeps durable state of its own platform (email: each thread's
    /// Message-IDs, link tokens).
    pub state: Arc<dyn ConnectorState>,
    /// Switchboard's address as browsers reach it (`[visitors] public_url`), for links a
    /// connector puts in what it sends (email: the Accept and Decline page); `None` when not
    /// configured.
    pub public_url: Option<String>,
    /// The topics conversations are about, (ID, name) in the configured order: for a
    /// connector whose initiators name one by where they write (email: `support+TOPIC@`).
    pub topics: Vec<(String, String)>,
}

/// The registered platform with this name.
pub fn spec(name: &str) -> Option<&'static PlatformSpec> {
    PLATFORMS.iter().copied().find(|p| p.name == name)
}

/// The registered platform with this name, or an error that lists the known ones.
pub fn lookup(name: &str) -> Result<&'static PlatformSpec, String> {
    spec(name).ok_or_else(|| {
        format!(
            "unknown platform {name:?}; known: {}",
            known_names().join(", ")
        )
    })
}

/// The names of every registered platform, in registration order.
pub fn known_names() -> Vec<&'static str> {
    PLATFORMS.iter().map(|p| p.name).collect()
}

impl PlatformSpec {
    pub fn platform(&'static self) -> Platform {
        Platform(self.name)
    }
}

/// Checks `address` as an address on platform `name`.
pub fn validate_address(name: &str, address: &str) -> Result<(), String> {
    (lookup(name)?.validate_address)(address)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_platform_is_registered_once_with_a_lower_case_name() {
        let names = known_names();
        assert_eq!(names, ["matrix", "telegram", "discord", "email"]);
        for name in &names {
            assert_eq!(names.iter().filter(|n| *n == name).count(), 1, "{name}");
            assert_eq!(*name, name.to_ascii_lowercase());
        }
    }

    #[test]
    fn an_unknown_platform_is_refused_with_the_known_ones_listed() {
        let err = lookup("icq").err().expect("not registered");
        assert_eq!(
            err,
            "unknown platform \"icq\"; known: matrix, telegram, discord, email"
        );
        assert_eq!(Platform::parse("Telegram"), None, "names are exact");
        assert!(validate_address("icq", "123").is_err());
    }

    #[test]
    fn names_round_trip_through_platform() {
        for spec in PLATFORMS {
            let p = Platform::parse(spec.name).expect("registered");
            assert_eq!(p.as_str(), spec.name);
            assert_eq!(p.display_name(), spec.display_name);
            assert_eq!(p.spec().command_prefix, spec.command_prefix);
        }
    }

    #[test]
    fn a_telegram_address_is_a_chat_id() {
        for ok in ["123456789", "-1001234567890"] {
            assert_eq!(validate_address("telegram", ok), Ok(()), "{ok}");
        }
        for bad in ["@alice", "12.5", "", "alice"] {
            let err = validate_address("telegram", bad).unwrap_err();
            assert!(err.contains("Telegram chat ID"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_matrix_address_is_a_user_id() {
        assert_eq!(validate_address("matrix", "@alice:example.org"), Ok(()));
        for bad in [
            "",
            "alice:example.org",
            "@alice",
            "@:example.org",
            "@alice:",
        ] {
            let err = validate_address("matrix", bad).unwrap_err();
            assert!(err.contains("Matrix user ID"), "{bad}: {err}");
        }
    }

    #[test]
    fn the_platforms_with_a_bot_link_by_code() {
        let linking: Vec<_> = PLATFORMS
            .iter()
            .filter(|p| p.links_by_code)
            .map(|p| p.name)
            .collect();
        assert_eq!(linking, ["telegram", "discord"]);
    }

    #[test]
    fn matrix_is_always_on_and_telegram_needs_its_section() {
        assert_eq!((matrix::SPEC.check)(None), Ok(true));
        assert_eq!((telegram::SPEC.check)(None), Ok(false));
        let section = serde_json::json!({"token": "1:abc"});
        assert_eq!((telegram::SPEC.check)(Some(&section)), Ok(true));
        let err = (telegram::SPEC.check)(Some(&serde_json::json!({"api_url": "x"}))).unwrap_err();
        assert!(err.contains("token"), "{err}");
    }
}
