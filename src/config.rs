//! The configuration file (TOML), with `SWITCHBOARD_SECTION__KEY` environment overrides.

use std::{
    collections::BTreeMap,
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
    connector::registry,
    responder::Responder,
    routing::validate_responder,
    visitor_api::AllowedOrigins,
};

/// `--config FILE` (`-c`, or `SWITCHBOARD_CONFIG`): where the configuration is, for every
/// subcommand that reads it. Defined once and flattened into each (`#[command(flatten)]`),
/// so they all take it the same way, before or after their own subcommand's arguments.
#[derive(Debug, Clone, clap::Args)]
pub struct ConfigArg {
    /// The configuration file (TOML); `SWITCHBOARD_SECTION__KEY` variables override it.
    #[arg(
        id = "config",
        long = "config",
        short = 'c',
        value_name = "FILE",
        env = "SWITCHBOARD_CONFIG",
        default_value = "config.toml",
        global = true
    )]
    pub path: PathBuf,
}

impl ConfigArg {
    /// Reads and checks the configuration at this path (see [`Config::load`]).
    pub fn load(&self) -> anyhow::Result<Config> {
        Config::load(&self.path)
    }
}

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
    pub admin: Option<AdminSection>,
    #[serde(default)]
    pub web: WebSection,
    /// Every other top-level section, by name. A registered platform's section (`[telegram]`)
    /// is read by that platform's module (`connector::registry`), so adding a platform adds no
    /// field here: its section is typed next to its connector.
    #[serde(flatten)]
    pub sections: Sections,
}

/// Sections not known to the loader itself, by name. They may hold secrets (bot tokens), so
/// only their names are ever printed.
#[derive(Default, Deserialize)]
pub struct Sections(BTreeMap<String, serde_json::Value>);

impl std::fmt::Debug for Sections {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.0.keys()).finish()
    }
}

#[derive(Debug, Default, Deserialize)]
pub struct WebSection {
    /// Origins (`https://shop.example.org`) whose pages may call the visitor API from a
    /// browser, i.e. the sites that embed the widget. Empty (the default): no CORS headers at
    /// all, so only pages Switchboard serves itself can. `["*"]` allows every site (not
    /// recommended). Environment: `SWITCHBOARD_WEB__ALLOWED_ORIGINS='["https://a.example"]'`.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
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
        let platforms = config.enabled_platforms()?;
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
        config.allowed_origins()?;
        if let Some(url) = &config.visitors.public_url {
            anyhow::ensure!(
                url.starts_with("https://") || url.starts_with("http://"),
                "visitors.public_url {url:?}: give Switchboard's address as browsers reach it, like https://chat.example.org"
            );
        }
        Ok(config)
    }

    /// A registered platform's section of the file (`[telegram]`), if present.
    pub fn platform_section(&self, platform: &str) -> Option<&serde_json::Value> {
        self.sections.0.get(platform)
    }

    /// The registered platforms this configuration enables, each section read by its
    /// platform's module (an error names the section).
    pub fn enabled_platforms(&self) -> anyhow::Result<Vec<&'static str>> {
        let mut enabled = Vec::new();
        for spec in registry::PLATFORMS {
            if (spec.check)(self.platform_section(spec.name))
                .map_err(|e| anyhow::anyhow!("[{}]: {e}", spec.name))?
            {
                enabled.push(spec.name);
            }
        }
        Ok(enabled)
    }

    /// `[web] allowed_origins`, checked.
    pub fn allowed_origins(&self) -> anyhow::Result<AllowedOrigins> {
        AllowedOrigins::parse(&self.web.allowed_origins)
            .map_err(|e| anyhow::anyhow!("web.allowed_origins: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_bridge::config::VisitorMode;

    const MINIMAL: &str = "[homeserver]\nurl = \"http://127.0.0.1:8008\"\nserver_name = \"example.org\"\n\n\
         [appservice]\nregistration = \"registration.yaml\"\nlisten = \"127.0.0.1:29330\"\n";

    fn load(extra: &str) -> anyhow::Result<Config> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("config.toml");
        std::fs::write(&path, format!("{MINIMAL}\n{extra}"))?;
        Config::load(&path)
    }

    #[test]
    fn a_platform_is_enabled_by_its_section_which_its_module_reads() {
        assert_eq!(load("").unwrap().enabled_platforms().unwrap(), ["matrix"]);
        let config = load("[telegram]\ntoken = \"1:abc\"\npoll_timeout_secs = 5\n").unwrap();
        assert_eq!(config.enabled_platforms().unwrap(), ["matrix", "telegram"]);
        let config = load("[discord]\ntoken = \"t\"\napplication_id = \"42\"\n").unwrap();
        assert_eq!(config.enabled_platforms().unwrap(), ["matrix", "discord"]);
        let err = load("[discord]\ntoken = \"t\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("application_id"), "{err:#}");
        let err = load("[telegram]\napi_url = \"http://x\"\n").unwrap_err();
        let text = format!("{err:#}");
        assert!(
            text.contains("[telegram]") && text.contains("token"),
            "{text}"
        );
        // A Telegram contact needs Telegram enabled; the error lists what is.
        let err = load("[[responders]]\nid = \"ann\"\ndisplay_name = \"Ann\"\ncontacts = [{ platform = \"telegram\", address = \"1\" }]\n")
            .unwrap_err();
        assert!(format!("{err:#}").contains("known: matrix"), "{err:#}");
    }

    #[test]
    fn guest_mode_and_same_origin_are_the_defaults() {
        let config = load("").unwrap();
        assert_eq!(config.visitors.mode, VisitorMode::Guest);
        assert_eq!(
            config.allowed_origins().unwrap(),
            AllowedOrigins::SameOrigin
        );
    }

    #[test]
    fn visitor_accounts_mode_and_its_limits_are_read() {
        let config = load(
            "[visitors]\nmode = \"accounts\"\naccounts_per_minute = 2\naccounts_per_hour = 0\n",
        )
        .unwrap();
        assert_eq!(config.visitors.mode, VisitorMode::Accounts);
        assert_eq!(config.visitors.accounts_per_minute, 2);
        assert_eq!(config.visitors.accounts_per_hour, 0);
        assert_eq!(
            config.visitors.conversations_per_minute, 6,
            "others keep defaults"
        );

        let err = load("[visitors]\nmode = \"anonymous\"\n").unwrap_err();
        assert!(format!("{err:#}").contains("anonymous"), "{err:#}");
    }

    #[test]
    fn proxied_mode_its_session_lifetime_and_public_url_are_read() {
        let config = load("[visitors]\nmode = \"proxied\"\n").unwrap();
        assert_eq!(config.visitors.mode, VisitorMode::Proxied);
        assert_eq!(config.visitors.session_ttl_hours, 24, "the default");
        assert_eq!(config.visitors.public_url, None);
        let config = load(
            "[visitors]\nmode = \"proxied\"\nsession_ttl_hours = 2\npublic_url = \"https://chat.example.org\"\n",
        )
        .unwrap();
        assert_eq!(config.visitors.session_ttl_hours, 2);
        assert_eq!(
            config.visitors.public_url.as_deref(),
            Some("https://chat.example.org")
        );
        let err = load("[visitors]\npublic_url = \"chat.example.org\"\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("visitors.public_url"),
            "{err:#}"
        );
    }

    #[test]
    fn allowed_origins_are_read_and_checked() {
        let config = load(
            "[web]\nallowed_origins = [\"https://shop.example.org\", \"http://127.0.0.1:8080\"]\n",
        )
        .unwrap();
        assert_eq!(
            config.allowed_origins().unwrap(),
            AllowedOrigins::List(vec![
                "https://shop.example.org".parse().unwrap(),
                "http://127.0.0.1:8080".parse().unwrap(),
            ])
        );
        let any = load("[web]\nallowed_origins = [\"*\"]\n").unwrap();
        assert_eq!(any.allowed_origins().unwrap(), AllowedOrigins::Any);

        for (bad, says) in [
            ("\"https://shop.example.org/\"", "https://shop.example.org"),
            ("\"https://shop.example.org/path\"", "no path"),
            (
                "\"https://shop.example.org:443\"",
                "https://shop.example.org",
            ),
            ("\"shop.example.org\"", "not an origin"),
            ("\"ftp://shop.example.org\"", "http and https"),
            ("\"*\", \"https://shop.example.org\"", "cannot be combined"),
        ] {
            let err = load(&format!("[web]\nallowed_origins = [{bad}]\n")).unwrap_err();
            let text = format!("{err:#}");
            assert!(
                text.contains("web.allowed_origins") && text.contains(says),
                "{bad}: {text}"
            );
        }
    }
}
