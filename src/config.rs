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
mod tests {
    use super::*;
    use switchboard_bridge::config::VisitorMode;

    const MINIMAL: &str = "[homeserver]\nurl = \"http://127.0.0.1:8008\"\nserver_name = \"example.org\"\n\n\
         [appservice]\nregistration = \"registration.yaml\"\nlisten = \"127.0.0.1:29330\"\n";

    /// Loads `MINIMAL` plus `extra`, inside a `figment::Jail`: the loader reads the
    /// environment, and a test that sets variables does so in a jail too, so no test sees
    /// another's.
    // `Jail::expect_with` fixes the closure's error type (figment's, which is large).
    #[allow(clippy::result_large_err)]
    fn load(extra: &str) -> anyhow::Result<Config> {
        let mut loaded = None;
        figment::Jail::expect_with(|jail| {
            let path = jail.directory().join("config.toml");
            std::fs::write(&path, format!("{MINIMAL}\n{extra}")).expect("writing the config");
            loaded = Some(Config::load(&path));
            Ok(())
        });
        loaded.expect("the jail ran")
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

    /// Every secret can come from a file named by `KEY_file` (or `SWITCHBOARD_…_FILE`), as
    /// container secrets are mounted: read without its trailing newline, refused when the
    /// plain key is given too, and a missing file named in the error without any content.
    #[test]
    #[allow(clippy::result_large_err)] // see `load`
    fn secrets_come_from_files_named_in_the_file_or_the_environment() {
        figment::Jail::expect_with(|jail| {
            let dir = jail.directory().to_owned();
            std::fs::write(dir.join("tg"), "1:from-a-file\n").unwrap();
            std::fs::write(dir.join("admin"), "admin-from-a-file\r\n").unwrap();
            std::fs::write(dir.join("db"), "sqlite://from-a-file.db\n").unwrap();
            std::fs::write(dir.join("smtp"), "mail-password\n").unwrap();
            let write = |extra: &str| {
                std::fs::write(dir.join("config.toml"), format!("{MINIMAL}\n{extra}")).unwrap();
                Config::load(&dir.join("config.toml"))
            };
            let config = write(&format!(
                "[database]\nurl_file = \"{db}\"\n[telegram]\ntoken_file = \"{tg}\"\n",
                db = dir.join("db").display(),
                tg = dir.join("tg").display(),
            ))
            .unwrap();
            assert_eq!(config.database.url, "sqlite://from-a-file.db");
            assert_eq!(
                config.platform_section("telegram").unwrap()["token"],
                "1:from-a-file"
            );
            assert!(
                config
                    .platform_section("telegram")
                    .unwrap()
                    .get("token_file")
                    .is_none()
            );
            // From the environment.
            jail.set_env(
                "SWITCHBOARD_ADMIN__TOKEN_FILE",
                dir.join("admin").display().to_string(),
            );
            let config = write("").unwrap();
            assert_eq!(config.admin.unwrap().token, "admin-from-a-file");
            // Given twice.
            let err = write("[admin]\ntoken = \"plain\"\n").unwrap_err();
            assert!(
                format!("{err:#}").contains("admin.token and admin.token_file are both set"),
                "{err:#}"
            );
            // A file that is not there: named, and nothing of any secret shown.
            jail.set_env("SWITCHBOARD_ADMIN__TOKEN_FILE", "/nonexistent/admin-token");
            let err = format!(
                "{:#}",
                write(&format!(
                    "[telegram]\ntoken_file = \"{}\"\n",
                    dir.join("tg").display()
                ))
                .unwrap_err()
            );
            assert!(
                err.contains("admin.token_file: cannot read /nonexistent/admin-token"),
                "{err}"
            );
            assert!(!err.contains("from-a-file"), "{err}");
            // What the configuration prints (a log line, a panic) holds none of them.
            std::fs::write(dir.join("db"), "postgres://sb:db-password@db/sb\n").unwrap();
            jail.set_env(
                "SWITCHBOARD_ADMIN__TOKEN_FILE",
                dir.join("admin").display().to_string(),
            );
            let config = write(&format!(
                "[database]\nurl_file = \"{db}\"\n[telegram]\ntoken_file = \"{tg}\"\n",
                db = dir.join("db").display(),
                tg = dir.join("tg").display(),
            ))
            .unwrap();
            assert_eq!(config.database.url, "postgres://sb:db-password@db/sb");
            let printed = format!("{config:?}");
            for secret in ["db-password", "from-a-file"] {
                assert!(!printed.contains(secret), "{secret} in {printed}");
            }
            assert!(printed.contains("postgres"), "{printed}");
            // Nested tables too (a mail password), and other `*_file` keys are paths their
            // module reads itself (a DKIM key), left as they are.
            let mut value: Value = Figment::from(Toml::string(&format!(
                "[email.smtp]\npassword_file = \"{}\"\n[email.dkim]\nkey_file = \"/etc/dkim.pem\"\n",
                dir.join("smtp").display()
            )))
            .extract()
            .unwrap();
            secrets_from_files(&mut value, "").unwrap();
            let email = value.find_ref("email").unwrap();
            assert_eq!(
                email.find_ref("smtp.password").and_then(Value::as_str),
                Some("mail-password")
            );
            assert_eq!(
                email.find_ref("dkim.key_file").and_then(Value::as_str),
                Some("/etc/dkim.pem")
            );
            assert!(email.find_ref("dkim.key").is_none());
            Ok(())
        });
    }

    /// What `run` refused only once it had connected to the database and the homeserver is
    /// refused by the loader, so `check-config` names it too: a server name that is not
    /// one, a public homeserver URL without an origin, an empty admin token.
    #[test]
    #[allow(clippy::result_large_err)] // see `load`
    fn a_bad_server_name_public_url_or_empty_admin_token_is_refused_on_loading() {
        figment::Jail::expect_with(|jail| {
            let path = jail.directory().join("config.toml");
            std::fs::write(&path, MINIMAL).unwrap();
            jail.set_env("SWITCHBOARD_HOMESERVER__SERVER_NAME", "not a server name");
            let err = format!("{:#}", Config::load(&path).unwrap_err());
            assert!(err.contains("homeserver.server_name"), "{err}");
            jail.set_env("SWITCHBOARD_HOMESERVER__SERVER_NAME", "example.org");
            jail.set_env("SWITCHBOARD_HOMESERVER__PUBLIC_URL", "chat.example.org");
            let err = format!("{:#}", Config::load(&path).unwrap_err());
            assert!(err.contains("homeserver.public_url"), "{err}");
            jail.set_env(
                "SWITCHBOARD_HOMESERVER__PUBLIC_URL",
                "https://matrix.example.org",
            );
            assert!(Config::load(&path).is_ok());
            jail.set_env("SWITCHBOARD_ADMIN__TOKEN", " ");
            let err = format!("{:#}", Config::load(&path).unwrap_err());
            assert!(err.contains("admin.token is empty"), "{err}");
            Ok(())
        });
    }

    /// `[retention]`: absent keeps everything; days must be a positive whole number, checked
    /// at start-up with the key named; the admin token is a secret like the others (from a
    /// file, never printed); an unknown key is refused rather than ignored.
    #[test]
    #[allow(clippy::result_large_err)] // see `load`
    fn retention_is_read_checked_and_its_token_kept_secret() {
        let config = load("").unwrap();
        assert_eq!(config.retention.transcript_days, None);
        assert!(config.retention.homeserver_admin_token.is_none());
        let config = load(
            "[retention]
transcript_days = 30
",
        )
        .unwrap();
        assert_eq!(config.retention.transcript_days, Some(30));
        for (bad, says) in [
            (
                "transcript_days = 0",
                "retention.transcript_days must be at least 1",
            ),
            ("transcript_days = -3", "transcript_days"),
            ("transcript_days = 1.5", "transcript_days"),
            ("transcript_day = 30", "transcript_day"),
        ] {
            let err = format!("{:#}", load(&format!("[retention]\n{bad}\n")).unwrap_err());
            assert!(err.contains(says), "{bad}: {err}");
        }
        figment::Jail::expect_with(|jail| {
            let dir = jail.directory().to_owned();
            std::fs::write(dir.join("hs"), "syt_admin_from_a_file\n").unwrap();
            std::fs::write(
                dir.join("config.toml"),
                format!(
                    "{MINIMAL}\n[retention]\nhomeserver_admin_token_file = \"{}\"\n",
                    dir.join("hs").display()
                ),
            )
            .unwrap();
            let config = Config::load(&dir.join("config.toml")).unwrap();
            assert_eq!(
                config.retention.homeserver_admin_token.as_deref(),
                Some("syt_admin_from_a_file")
            );
            assert!(!format!("{config:?}").contains("syt_admin"), "{config:?}");
            Ok(())
        });
    }

    /// What `check-config` cuts out of its lines: every token, password and secret in any
    /// section, however deep, the admin token, and a database URL's password with the URL.
    #[test]
    fn every_secret_of_a_configuration_is_listed() {
        let config = load(
            "[database]\nurl = \"postgres://sb:db-pw@db/sb\"\n\
             [admin]\ntoken = \"admin-tok\"\n\
             [telegram]\ntoken = \"1:tg-tok\"\nwebhook_secret = \"tg-webhook\"\n\
             webhook_url = \"https://sb.example.org/telegram/webhook\"\n\
             [elsewhere]\nlist = [{ password = \"in-a-list\" }]\n\
             nested = { deeper = { api_token = \"deep-tok\" }, token_count = 3 }\n",
        )
        .unwrap();
        let mut secrets = config.secrets();
        secrets.sort();
        assert_eq!(
            secrets,
            [
                "1:tg-tok",
                "admin-tok",
                "db-pw",
                "deep-tok",
                "in-a-list",
                "postgres://sb:db-pw@db/sb",
                "tg-webhook",
            ]
        );
        assert!(is_secret_key("webhook_secret") && !is_secret_key("tokens"));
        let config = load("[retention]\nhomeserver_admin_token = \"syt-hs-admin\"\n").unwrap();
        assert!(config.secrets().contains(&"syt-hs-admin".to_owned()));
        assert!(
            load("").unwrap().secrets().is_empty(),
            "SQLite has no password"
        );
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
    fn metrics_and_the_admin_api_get_addresses_of_their_own() {
        let err = format!("{:#}", load("[metrics]\n").unwrap_err());
        assert!(err.contains("never served on the public listener"), "{err}");
        let config =
            load("[admin]\ntoken = \"t\"\nlisten = \"127.0.0.1:29331\"\n\n[metrics]\n").unwrap();
        assert_eq!(
            config.admin.unwrap().listen,
            Some("127.0.0.1:29331".parse().unwrap())
        );
        assert!(config.metrics.unwrap().listen.is_none());
        let config = load("[metrics]\nlisten = \"127.0.0.1:9464\"\n").unwrap();
        assert_eq!(
            config.metrics.unwrap().listen,
            Some("127.0.0.1:9464".parse().unwrap())
        );
        let err = format!(
            "{:#}",
            load("[admin]\ntoken = \"t\"\nlisten = \"127.0.0.1:29330\"\n").unwrap_err()
        );
        assert!(err.contains("an address of its own"), "{err}");
        let err = format!(
            "{:#}",
            load("[metrics]\nlisen = \"127.0.0.1:9464\"\n").unwrap_err()
        );
        assert!(err.contains("lisen"), "a misspelt key is named: {err}");
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
