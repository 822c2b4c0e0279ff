//! The configuration file (TOML), with `SWITCHBOARD_SECTION__KEY` environment overrides.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::Context;
use figment::{
    Figment,
    providers::{Env, Format, Serialized, Toml},
    value::Value,
};
use serde::Deserialize;
use switchboard_bridge::{
    config::{TopicConfig, VisitorLimits},
    connector::registry,
    responder::Responder,
    retention::RetentionConfig,
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
    /// Prometheus metrics at `/metrics`, on `[metrics] listen` or else on the admin listener.
    pub metrics: Option<MetricsSection>,
    #[serde(default)]
    pub web: WebSection,
    /// How long transcripts are kept, and how conversations are erased on the homeserver.
    #[serde(default)]
    pub retention: RetentionConfig,
    /// Several instances on one PostgreSQL database (`cluster.rs`).
    #[serde(default)]
    pub cluster: ClusterSection,
    /// Every other top-level section, by name. A registered platform's section (`[telegram]`)
    /// is read by that platform's module (`connector::registry`), so adding a platform adds no
    /// field here: its section is typed next to its connector.
    #[serde(flatten)]
    pub sections: Sections,
}

/// The keys whose value may instead be read from a file named by `KEY_file`: every secret
/// of every section (bot tokens, the admin token, mail passwords) is called one of these, or
/// ends in one after an underscore (Telegram's `webhook_secret`, `[retention]
/// homeserver_admin_token`): see [`is_secret_key`].
const SECRET_KEYS: [&str; 3] = ["token", "password", "secret"];

/// Whether a key of any section holds a secret: `token`, `password`, `secret`, or a name
/// ending in `_token`, `_password`, `_secret`.
fn is_secret_key(key: &str) -> bool {
    SECRET_KEYS.iter().any(|secret| {
        key == *secret
            || key
                .strip_suffix(secret)
                .is_some_and(|head| head.ends_with('_'))
    })
}

/// Secrets from files, as container secrets are mounted: `token_file = "/run/secrets/tg"` in
/// any section (or `SWITCHBOARD_TELEGRAM__TOKEN_FILE`) stands for `token` holding that
/// file's content, without its trailing newline; likewise `password_file`, `secret_file`,
/// and `database.url_file` (a PostgreSQL URL holds its password). Done before any section
/// is read, so every platform's module sees the plain key. Other `*_file` keys (a DKIM
/// key's `key_file`) are paths their module reads itself, and stay as they are.
fn secrets_from_files(value: &mut Value, at: &str) -> anyhow::Result<()> {
    match value {
        Value::Dict(_, dict) => {
            let from_files: Vec<String> = dict
                .keys()
                .filter(|k| {
                    k.strip_suffix("_file").is_some_and(|name| {
                        is_secret_key(name) || (at == "database" && name == "url")
                    })
                })
                .cloned()
                .collect();
            for key in from_files {
                let name = key.trim_end_matches("_file").to_owned();
                let shown = |k: &str| {
                    if at.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{at}.{k}")
                    }
                };
                anyhow::ensure!(
                    !dict.contains_key(&name),
                    "{} and {} are both set: give the secret once",
                    shown(&name),
                    shown(&key)
                );
                let Some(Value::String(tag, file)) = dict.remove(&key) else {
                    anyhow::bail!("{}: give the path of a file", shown(&key));
                };
                // The error names the key and the file, never what the file holds.
                let content = std::fs::read_to_string(&file)
                    .with_context(|| format!("{}: cannot read {file}", shown(&key)))?;
                let secret = content.trim_end_matches(['\n', '\r']).to_owned();
                anyhow::ensure!(!secret.is_empty(), "{}: {file} is empty", shown(&key));
                dict.insert(name, Value::String(tag, secret));
            }
            for (key, inner) in dict.iter_mut() {
                let path = if at.is_empty() {
                    key.clone()
                } else {
                    format!("{at}.{key}")
                };
                secrets_from_files(inner, &path)?;
            }
        }
        Value::Array(_, items) => {
            for (i, inner) in items.iter_mut().enumerate() {
                secrets_from_files(inner, &format!("{at}[{i}]"))?;
            }
        }
        _ => {}
    }
    Ok(())
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
    /// An address of its own for the admin API (and `/metrics`), e.g. `127.0.0.1:29331`, so
    /// that it is not reachable where visitors and the homeserver are. Without it, the admin
    /// API shares `[appservice] listen`.
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsSection {
    /// Where Prometheus scrapes `/metrics`. Without it, `/metrics` is served on `[admin]
    /// listen`; it is never served on the public listener.
    pub listen: Option<SocketAddr>,
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

#[derive(Deserialize)]
pub struct DatabaseSection {
    /// `sqlite://PATH` (default) or `postgres://...`.
    pub url: String,
}

/// Only the engine: a PostgreSQL URL holds its password.
impl std::fmt::Debug for DatabaseSection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let engine = self.url.split_once(':').map_or("?", |(scheme, _)| scheme);
        f.debug_struct("DatabaseSection")
            .field("engine", &engine)
            .finish_non_exhaustive()
    }
}

/// `[cluster]`: how this instance is known to the others on its PostgreSQL database. On
/// SQLite an instance is alone and this is not read.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterSection {
    /// This instance's name in the log and in the leases table (the host's name by default);
    /// the process ID and a random suffix are added, so a restarted instance is a new holder.
    pub instance: Option<String>,
    /// How long the lead and a claim last unless renewed (renewed every third of it): how
    /// soon another instance takes over from one that died, and how long one may stall
    /// before it is deposed.
    #[serde(default = "default_lease_seconds")]
    pub lease_seconds: u64,
}

fn default_lease_seconds() -> u64 {
    switchboard_bridge::cluster::DEFAULT_LEASE.as_secs()
}

impl Default for ClusterSection {
    fn default() -> Self {
        Self {
            instance: None,
            lease_seconds: default_lease_seconds(),
        }
    }
}

impl ClusterSection {
    /// The lease length, refused below 3 s (a renewal every second at least, which the
    /// store must answer in time).
    pub fn lease(&self) -> anyhow::Result<std::time::Duration> {
        anyhow::ensure!(
            self.lease_seconds >= 3,
            "cluster.lease_seconds must be at least 3, not {}",
            self.lease_seconds
        );
        Ok(std::time::Duration::from_secs(self.lease_seconds))
    }

    /// The name this start of the instance holds leases under: its name, the process, and
    /// a random suffix.
    pub fn holder(&self) -> String {
        let name = self.instance.clone().unwrap_or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_owned())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "switchboard".to_owned())
        });
        format!(
            "{name}/{}/{:08x}",
            std::process::id(),
            rand::random::<u32>()
        )
    }
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
        let mut merged: Value = Figment::new()
            .merge(Toml::file_exact(path))
            .merge(
                Env::prefixed("SWITCHBOARD_")
                    .split("__")
                    // Read before the configuration is: `--config`, and how to log.
                    .ignore(&["config", "log_format"]),
            )
            .extract()
            .with_context(|| format!("reading configuration {}", path.display()))?;
        secrets_from_files(&mut merged, "")?;
        let config: Config = Figment::from(Serialized::defaults(merged))
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
        if let Some(metrics) = &config.metrics {
            anyhow::ensure!(
                metrics.listen.is_some()
                    || config.admin.as_ref().is_some_and(|a| a.listen.is_some()),
                "[metrics]: set metrics.listen (or admin.listen) to an address of its own: \
                 metrics are never served on the public listener"
            );
        }
        if let Some(listen) = config.admin.as_ref().and_then(|a| a.listen) {
            anyhow::ensure!(
                listen != config.appservice.listen,
                "admin.listen {listen} is also appservice.listen: give the admin API an address of its own, or leave admin.listen out"
            );
        }
        switchboard_appservice::ruma::ServerName::parse(&config.homeserver.server_name)
            .context("homeserver.server_name is not a valid server name")?;
        crate::web::origin_of(config.public_homeserver_url())
            .context("homeserver.public_url (or url): the demo page's CSP names its origin")?;
        if let Some(admin) = &config.admin {
            anyhow::ensure!(
                !admin.token.trim().is_empty(),
                "admin.token is empty: give a long random token, or leave [admin] out to turn the admin API off"
            );
        }
        config.retention.check().map_err(|e| anyhow::anyhow!(e))?;
        if let Some(url) = &config.visitors.public_url {
            anyhow::ensure!(
                url.starts_with("https://") || url.starts_with("http://"),
                "visitors.public_url {url:?}: give Switchboard's address as browsers reach it, like https://chat.example.org"
            );
        }
        Ok(config)
    }

    /// The homeserver as visitors' browsers reach it: `public_url`, else `url`.
    pub fn public_homeserver_url(&self) -> &str {
        self.homeserver
            .public_url
            .as_deref()
            .unwrap_or(&self.homeserver.url)
    }

    /// Every secret this configuration holds, to be cut out of anything printed: each value
    /// of a secret's key ([`is_secret_key`]) in any section, the admin token, and the
    /// database URL's password (and the URL itself, which holds it).
    pub fn secrets(&self) -> Vec<String> {
        fn collect(value: &serde_json::Value, out: &mut Vec<String>) {
            match value {
                serde_json::Value::Object(map) => {
                    for (key, inner) in map {
                        match inner {
                            serde_json::Value::String(s) if is_secret_key(key) => {
                                out.push(s.clone())
                            }
                            _ => collect(inner, out),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter().for_each(|i| collect(i, out)),
                _ => {}
            }
        }
        let mut secrets = Vec::new();
        for section in self.sections.0.values() {
            collect(section, &mut secrets);
        }
        if let Some(admin) = &self.admin {
            secrets.push(admin.token.clone());
        }
        if let Some(token) = &self.retention.homeserver_admin_token {
            secrets.push(token.to_string());
        }
        if let Some(password) = url::Url::parse(&self.database.url)
            .ok()
            .and_then(|u| u.password().map(str::to_owned))
        {
            secrets.push(password);
            secrets.push(self.database.url.clone());
        }
        secrets.retain(|s| !s.is_empty());
        secrets
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

    /// Each topic's first-reply target, for the service-level report.
    pub fn first_reply_targets(&self) -> std::collections::BTreeMap<String, u64> {
        self.topics
            .iter()
            .filter_map(|t| Some((t.id.clone(), t.first_reply_target_secs?)))
            .collect()
    }

    /// `[web] allowed_origins`, checked.
    pub fn allowed_origins(&self) -> anyhow::Result<AllowedOrigins> {
        AllowedOrigins::parse(&self.web.allowed_origins)
            .map_err(|e| anyhow::anyhow!("web.allowed_origins: {e}"))
    }
}

#[cfg(test)]
mod tests;
