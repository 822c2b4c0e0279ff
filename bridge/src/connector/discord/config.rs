//! The `[discord]` section of the configuration, and what a Discord address is.

use serde_json::Value;

/// A Discord address is the responder's user ID: a snowflake, a positive integer.
pub fn validate_address(address: &str) -> Result<(), String> {
    match address.parse::<u64>() {
        Ok(id) if id > 0 => Ok(()),
        _ => Err(format!(
            "{address:?} is not a Discord user ID (a number, shown by Copy User ID in Discord's developer mode)"
        )),
    }
}

/// The `[discord]` section of the configuration file; without it Discord is off.
#[derive(serde::Deserialize)]
pub struct DiscordConfig {
    /// The bot token from the developer portal. Prefer the environment:
    /// `SWITCHBOARD_DISCORD__TOKEN`.
    pub token: String,
    /// The application's ID (slash commands are registered for it).
    pub application_id: Snowflake,
    /// The operator's guild, where the staff channel is.
    pub guild: Option<Snowflake>,
    /// A text channel of `guild` in which each accepted conversation gets a private thread.
    /// Without it, conversations happen in the responder's direct chat with the bot.
    pub staff_channel: Option<Snowflake>,
    /// Discord's address, for tests (`http://127.0.0.1:PORT` of a stand-in). The gateway's
    /// address is asked from it.
    pub api_url: Option<String>,
    /// Whether people who are not responders may start conversations by sending the bot a
    /// direct message (they pick a topic from a menu). Default: off.
    #[serde(default)]
    pub initiators: bool,
}

/// A snowflake written as a number or as a string (Discord writes them as strings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snowflake(pub u64);

impl<'de> serde::Deserialize<'de> for Snowflake {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(serde::Deserialize)]
        #[serde(untagged)]
        enum Either {
            Number(u64),
            Text(String),
        }
        match Either::deserialize(d)? {
            Either::Number(n) => Ok(Snowflake(n)),
            Either::Text(s) => s
                .parse()
                .map(Snowflake)
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not a Discord ID"))),
        }
    }
}

impl std::fmt::Debug for DiscordConfig {
    // Hand-written so the token can never be printed with the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DiscordConfig")
            .field("application_id", &self.application_id)
            .field("guild", &self.guild)
            .field("staff_channel", &self.staff_channel)
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

impl DiscordConfig {
    /// Reads the section; the error names the field, never the token's value.
    pub fn read(section: &Value) -> Result<Self, String> {
        let config: Self = serde_json::from_value(section.clone()).map_err(|e| e.to_string())?;
        if config.staff_channel.is_some() && config.guild.is_none() {
            return Err("discord.staff_channel needs discord.guild (the guild it is in)".into());
        }
        Ok(config)
    }
}
