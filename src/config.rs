//! The configuration file (TOML), with `SWITCHBOARD_SECTION__KEY` environment overrides.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use figment::{
    Figment,
    providers::{Env, Format, Toml},
};
use serde::Deserialize;
use switchboard_bridge::{
    config::{TopicConfig, VisitorLimits},
    responder::Responder,
    routing::validate_responder,
};

#[derive(Debug, Deserialize)]
pub struct Config {
    pub homeserver: HomeserverSection,
    pub appservice: AppserviceSection,
    #[serde(default)]
    pub database: DatabaseSection,
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    /// Seeds the responder register at start-up (entries edited through the admin API win).
    #[serde(default)]
    pub responders: Vec<Responder>,
    #[serde(default)]
    pub visitors: VisitorLimits,
    pub welcome_notice: Option<String>,
    /// Told to visitors when nobody can take their conversation right now.
    pub offline_message: Option<String>,
    pub telegram: Option<TelegramSection>,
    pub admin: Option<AdminSection>,
}

#[derive(Deserialize)]
pub struct AdminSection {
    /// Bearer token for `/admin/v1/*`. Prefer the environment: `SWITCHBOARD_ADMIN__TOKEN`.
    /// Without it the admin API is off.
    pub token: String,
}

impl std::fmt::Debug for AdminSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminSection").finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
pub struct TelegramSection {
    /// The bot token from @BotFather. Prefer the environment: `SWITCHBOARD_TELEGRAM__TOKEN`.
    pub token: String,
    /// A self-hosted Bot API server (default: Telegram's).
    pub api_url: Option<String>,
    /// Seconds one long poll waits for updates.
    #[serde(default = "default_poll_timeout")]
    pub poll_timeout_secs: u64,
    /// Receive updates by webhook instead of long polling: the public HTTPS URL at which
    /// Telegram reaches Switchboard's `/telegram/webhook` route.
    pub webhook_url: Option<String>,
    /// The secret Telegram must send with each webhook request. Default: a fresh random one
    /// at every start (Switchboard registers the webhook itself).
    pub webhook_secret: Option<String>,
}

fn default_poll_timeout() -> u64 {
    25
}

impl std::fmt::Debug for TelegramSection {
    // Hand-written so the token can never be printed with the configuration.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TelegramSection")
            .field("api_url", &self.api_url)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Deserialize)]
pub struct HomeserverSection {
    /// How Switchboard reaches the homeserver's client API.
    pub url: String,
    pub server_name: String,
    /// How visitors' browsers reach it, if different from `url`.
    pub public_url: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct AppserviceSection {
    /// The registration file shared with the homeserver.
    pub registration: PathBuf,
    /// One listener for the homeserver's calls, the visitor API and the widget.
    pub listen: SocketAddr,
}

#[derive(Debug, Deserialize)]
pub struct DatabaseSection {
    /// `sqlite://PATH` (default) or `postgres://...`.
    pub url: String,
}

impl Default for DatabaseSection {
    fn default() -> Self {
        Self {
            url: "sqlite://switchboard.db".into(),
        }
    }
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let config: Config = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(
                Env::prefixed("SWITCHBOARD_")
                    .split("__")
                    .ignore(&["config"]),
            )
            .extract()
            .with_context(|| format!("reading configuration {}", path.display()))?;
        let platforms: Vec<&str> = if config.telegram.is_some() {
            vec!["matrix", "telegram"]
        } else {
            vec!["matrix"]
        };
        for (i, r) in config.responders.iter().enumerate() {
            validate_responder(r, &platforms)
                .map_err(|e| anyhow::anyhow!("responders[{i}] ({}): {e}", r.id))?;
        }
        for topic in &config.topics {
            anyhow::ensure!(!topic.id.is_empty(), "a topic has an empty id");
            anyhow::ensure!(
                config.topics.iter().filter(|t| t.id == topic.id).count() == 1,
                "topic id {:?} appears twice",
                topic.id
            );
        }
        Ok(config)
    }
}
