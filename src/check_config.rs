//! `switchboard check-config`: reads the configuration and the registration the way `run`
//! does (the same loader, [`crate::service::Prepared`], the same connector builders), then asks the
//! homeserver, the database and each enabled platform whether they accept what the
//! configuration gives them, each within a time limit so the command never hangs. One line
//! per check: what was verified, or what is wrong and how to fix it. Nothing is started,
//! created, migrated or sent, and no secret is printed: every line goes through [`Report`],
//! which cuts out each secret the configuration and the registration hold.

use std::{fmt, sync::Arc, time::Duration};

use async_trait::async_trait;
use serde::Deserialize;
use switchboard_appservice::{
    HomeserverClient,
    ruma::{OwnedUserId, api::client::account::whoami},
};
use switchboard_bridge::{
    connector::{ConnectorError, ConnectorState, Platform, RoomWrites, registry},
    health::Health,
    store::{Engine, SchemaStatus},
};

use crate::{
    config,
    service::{Prepared, build_connector, build_context},
};

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Ok,
    /// Works, but probably not as meant; does not fail the command.
    Warn,
    Fail,
    /// Not tried, because something it needs failed (reported on its own line).
    Skip,
}

impl Level {
    fn label(self) -> &'static str {
        match self {
            Level::Ok => "ok",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
            Level::Skip => "skip",
        }
    }
}

/// The lines printed so far, and the secrets none of them may hold.
#[derive(Default)]
pub struct Report {
    secrets: Vec<String>,
    failed: usize,
}

impl Report {
    /// Prints one line at once (a slow check shows what came before it), cleaned of every
    /// known secret.
    fn line(&mut self, level: Level, what: &str, text: impl fmt::Display) {
        if level == Level::Fail {
            self.failed += 1;
        }
        println!("{}", self.render(level, what, &text.to_string()));
    }

    fn render(&self, level: Level, what: &str, text: &str) -> String {
        let mut text = text.to_owned();
        for secret in &self.secrets {
            text = text.replace(secret.as_str(), "<redacted>");
        }
        format!("{:<5} {what:<12} {text}", level.label())
    }

    /// Adds secrets to cut out of every later line; the longest first, so a URL holding a
    /// password goes as a whole.
    fn hide(&mut self, secrets: impl IntoIterator<Item = String>) {
        self.secrets
            .extend(secrets.into_iter().filter(|s| !s.is_empty()));
        self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }

    /// How many checks failed.
    pub fn failed(&self) -> usize {
        self.failed
    }
}

/// Runs every check and prints them; see the module's doc.
pub async fn check(arg: &config::ConfigArg, timeout: Duration) -> Report {
    let mut report = Report::default();
    let config = match arg.load() {
        Ok(config) => config,
        Err(e) => {
            report.line(Level::Fail, "config", format!("{e:#}"));
            report.line(
                Level::Skip,
                "everything",
                "nothing else can be checked without a configuration",
            );
            return report;
        }
    };
    report.hide(config.secrets());
    report.line(Level::Ok, "config", summary(arg, &config));

    let prepared = match Prepared::new(&config) {
        Ok(prepared) => {
            report.hide([
                prepared.registration.inner.as_token.clone(),
                prepared.registration.inner.hs_token.clone(),
            ]);
            for (level, text) in registration_findings(&config, &prepared) {
                report.line(level, "registration", text);
            }
            Some(prepared)
        }
        Err(e) => {
            report.line(
                Level::Fail,
                "registration",
                format!(
                    "{e:#}. Write one with `switchboard generate-registration --url URL` (URL: \
                     where the homeserver reaches [appservice] listen) and list it under \
                     app_service_config_files in homeserver.yaml"
                ),
            );
            None
        }
    };

    let client = match &prepared {
        Some(prepared) => homeserver(&mut report, &config, prepared, timeout).await,
        None => {
            report.line(
                Level::Skip,
                "homeserver",
                "its as_token comes from the registration",
            );
            None
        }
    };
    database(&mut report, &config, timeout).await;
    platforms(&mut report, &config, prepared.as_ref(), client, timeout).await;
    report
}

/// What the configuration holds, in a few words.
fn summary(arg: &config::ConfigArg, config: &config::Config) -> String {
    let platforms = config.enabled_platforms().unwrap_or_default().join(", ");
    format!(
        "{}: {} topics, {} responders, visitors in {} mode, platforms: {platforms}",
        arg.path.display(),
        config.topics.len(),
        config.responders.len(),
        config.visitors.mode.as_str(),
    )
}

/// What is odd about a registration that loaded: where it sends the homeserver, its
/// namespaces and its settings. Pure, for tests.
fn registration_findings(config: &config::Config, prepared: &Prepared) -> Vec<(Level, String)> {
    let path = config.appservice.registration.display();
    let inner = &prepared.registration.inner;
    let prefix = &prepared.registration.ghost_prefix;
    let listen = config.appservice.listen;
    let mut findings = Vec::new();
    let url = inner.url.as_deref().unwrap_or_default();
    match url::Url::parse(url) {
        _ if url.is_empty() => findings.push((
            Level::Fail,
            format!(
                "{path} has no url: the homeserver would send Switchboard no events. Set it to \
                 where the homeserver reaches [appservice] listen ({listen}), like http://{listen}"
            ),
        )),
        Err(e) => findings.push((
            Level::Fail,
            format!("{path}: url {url:?} is not a URL ({e})"),
        )),
        Ok(parsed) => match parsed.port_or_known_default() {
            Some(port) if port != listen.port() => findings.push((
                Level::Warn,
                format!(
                    "{path}: the homeserver sends events to {url} (port {port}), but \
                     [appservice] listen is {listen}: right only behind a proxy that forwards \
                     there; otherwise make the ports agree"
                ),
            )),
            _ => {}
        },
    }
    if prefix.is_empty() {
        findings.push((
            Level::Fail,
            format!(
                "{path}: the ghost namespace claims every user of the server; give it a prefix \
                 of its own, like @_switchboard_.*:.*"
            ),
        ));
    } else if inner.sender_localpart.starts_with(prefix.as_str()) {
        findings.push((
            Level::Warn,
            format!(
                "{path}: the bot {} lies inside the ghost namespace @{prefix}*: a responder's \
                 ghost could be given the bot's name; use a prefix the bot's name does not start with",
                prepared.bot
            ),
        ));
    }
    if inner.rate_limited != Some(false) {
        findings.push((
            Level::Warn,
            format!(
                "{path}: rate_limited is not false: the homeserver will slow the ghosts down \
                 as if each were one person; set rate_limited: false"
            ),
        ));
    }
    if !inner.receive_ephemeral {
        findings.push((
            Level::Warn,
            format!(
                "{path}: receive_ephemeral is not true: typing is not passed on; set \
                 receive_ephemeral: true (and restart the homeserver)"
            ),
        ));
    }
    findings.push((
        Level::Ok,
        format!(
            "{path}: id {}, bot {}, ghosts @{prefix}*:{}, events sent to {url}",
            inner.id, prepared.bot, prepared.server_name
        ),
    ));
    // The failures and warnings first would hide which file they are about; they name it.
    findings.sort_by_key(|(level, _)| *level != Level::Ok);
    findings
}

/// The homeserver answers `/versions` at `homeserver.url` and takes the registration's
/// `as_token` as the bot. Returns the connected client (for building the connectors).
async fn homeserver(
    report: &mut Report,
    config: &config::Config,
    prepared: &Prepared,
    timeout: Duration,
) -> Option<HomeserverClient> {
    let url = config.homeserver.url.as_str();
    let as_token = prepared.registration.inner.as_token.as_str();
    let fix_url = "check homeserver.url: where Switchboard reaches the homeserver's client API, \
                   like http://127.0.0.1:8008";
    let client = match tokio::time::timeout(
        timeout,
        HomeserverClient::connect(url, as_token, prepared.bot.clone()),
    )
    .await
    {
        Ok(Ok(client)) => client,
        Ok(Err(e)) => {
            report.line(
                Level::Fail,
                "homeserver",
                format!(
                    "{url}: GET /_matrix/client/versions: {}; {fix_url}",
                    causes(&e)
                ),
            );
            return None;
        }
        Err(_) => {
            report.line(
                Level::Fail,
                "homeserver",
                format!(
                    "{url}: no answer to GET /_matrix/client/versions within {} s; {fix_url}",
                    timeout.as_secs()
                ),
            );
            return None;
        }
    };
    let server = server_version(url, timeout)
        .await
        .map(|s| format!(" ({s})"))
        .unwrap_or_default();
    let registration = config.appservice.registration.display();
    let whoami =
        tokio::time::timeout(timeout, client.send_once(whoami::v3::Request::new(), None)).await;
    match whoami {
        Ok(Ok(me)) if me.user_id == prepared.bot => report.line(
            Level::Ok,
            "homeserver",
            format!(
                "{url}{server}: as_token accepted, the bot is {}",
                me.user_id
            ),
        ),
        Ok(Ok(me)) => report.line(
            Level::Fail,
            "homeserver",
            format!(
                "{url}{server}: the as_token belongs to {}, not {}: homeserver.server_name \
                 ({:?}) must be the homeserver's server_name ({:?}), and sender_localpart in \
                 {registration} the bot's name",
                me.user_id,
                prepared.bot,
                config.homeserver.server_name,
                me.user_id.server_name().as_str()
            ),
        ),
        Ok(Err(e)) if e.errcode() == Some("M_UNKNOWN_TOKEN") => report.line(
            Level::Fail,
            "homeserver",
            format!(
                "{url}{server}: the homeserver does not know the as_token of {registration} \
                 (M_UNKNOWN_TOKEN): list that file under app_service_config_files in \
                 homeserver.yaml and restart the homeserver; if it is listed, the homeserver \
                 read another copy, with other tokens"
            ),
        ),
        Ok(Err(e)) => report.line(
            Level::Fail,
            "homeserver",
            format!("{url}{server}: whoami as the bot: {e}"),
        ),
        Err(_) => report.line(
            Level::Fail,
            "homeserver",
            format!(
                "{url}{server}: no answer to whoami within {} s",
                timeout.as_secs()
            ),
        ),
    }
    Some(client)
}

/// An error with its causes (`connection refused` is in reqwest's source, not its message),
/// each said once: an error's text often repeats its source's.
fn causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let said = cause.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        source = cause.source();
    }
    text
}

/// The homeserver's software and version (`Synapse 1.163.2`), if it says: from the `Server`
/// header of its client API (Synapse sends one), else from the federation API's version
/// endpoint, where that is served on the same listener. Only for the report; `None` when
/// neither says.
async fn server_version(url: &str, timeout: Duration) -> Option<String> {
    #[derive(Deserialize)]
    struct Version {
        server: Server,
    }
    #[derive(Deserialize)]
    struct Server {
        name: String,
        version: Option<String>,
    }
    let http = reqwest::Client::builder().timeout(timeout).build().ok()?;
    let base = url.trim_end_matches('/');
    let header = http
        .get(format!("{base}/_matrix/client/versions"))
        .send()
        .await
        .ok()
        .and_then(|r| {
            let value = r.headers().get(reqwest::header::SERVER)?.to_str().ok()?;
            Some(value.replacen('/', " ", 1))
        });
    if header.is_some() {
        return header;
    }
    let answer: Version = http
        .get(format!("{base}/_matrix/federation/v1/version"))
        .send()
        .await
        .ok()?
        .error_for_status()
        .ok()?
        .json()
        .await
        .ok()?;
    Some(match answer.server.version {
        Some(version) => format!("{} {version}", answer.server.name),
        None => answer.server.name,
    })
}

/// The database opens, and how far its schema is from this build's: read only, nothing
/// created or migrated.
async fn database(report: &mut Report, config: &config::Config, timeout: Duration) {
    let url = config.database.url.as_str();
    let shown = shown_database(url);
    let hint = match Engine::of_url(url) {
        Ok(Engine::Sqlite) => {
            "check database.url (sqlite://PATH): the file's directory must exist and Switchboard \
             may write there"
        }
        Ok(Engine::Postgres) => {
            "check database.url (postgres://USER:PASSWORD@HOST:PORT/DATABASE, or url_file): the \
             server must be up and take this user from here"
        }
        Err(_) => "database.url must start with sqlite:// or postgres://",
    };
    match tokio::time::timeout(timeout, SchemaStatus::read(url)).await {
        Err(_) => report.line(
            Level::Fail,
            "database",
            format!("{shown}: no answer within {} s; {hint}", timeout.as_secs()),
        ),
        Ok(Err(e)) => report.line(Level::Fail, "database", format!("{shown}: {e}; {hint}")),
        Ok(Ok(status)) if !status.problems.is_empty() => report.line(
            Level::Fail,
            "database",
            format!(
                "{shown}: {}; `run` would refuse this database",
                status.problems.join("; ")
            ),
        ),
        Ok(Ok(status)) => {
            let pending = match status.pending.as_slice() {
                [] => "none pending".to_owned(),
                pending => format!(
                    "{} pending, which `run` applies at start-up ({})",
                    pending.len(),
                    pending
                        .iter()
                        .map(|(version, description)| format!("{version} {description}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let state = if status.exists {
                format!("{} migrations applied, {pending}", status.applied)
            } else {
                format!(
                    "does not exist yet: `run` creates it and applies this build's {} migrations",
                    status.pending.len()
                )
            };
            report.line(Level::Ok, "database", format!("{shown}: {state}"));
        }
    }
}

/// The database URL without its password. Only a URL of a known engine is shown at all: a
/// broken one may have a password where a host was expected.
fn shown_database(url: &str) -> String {
    match Engine::of_url(url) {
        Ok(Engine::Sqlite) => url.to_owned(),
        Ok(Engine::Postgres) => match url::Url::parse(url) {
            Ok(mut parsed) => {
                let _ = parsed.set_password(None);
                parsed.to_string()
            }
            Err(_) => "(an unreadable postgres URL)".to_owned(),
        },
        Err(_) => "(not a sqlite:// or postgres:// URL)".to_owned(),
    }
}

/// Each enabled platform's connector, built as `run` builds it, then asked to check its
/// credentials (`Connector::check`); never run.
async fn platforms(
    report: &mut Report,
    config: &config::Config,
    prepared: Option<&Prepared>,
    client: Option<HomeserverClient>,
    timeout: Duration,
) {
    // The connectors hold a homeserver client, but none is used to check credentials: one
    // that cannot send anything stands in while the homeserver is unreachable.
    let client = client.unwrap_or_else(|| {
        let bot = match prepared {
            Some(prepared) => prepared.bot.clone(),
            None => OwnedUserId::try_from("@check-config:invalid").expect("a valid user ID"),
        };
        let as_token = prepared.map_or("", |p| p.registration.inner.as_token.as_str());
        HomeserverClient::unconnected(&config.homeserver.url, as_token, bot)
    });
    let context = build_context(
        config,
        Arc::new(client),
        Health::new(),
        Arc::new(NothingStored),
        Arc::new(NothingStored),
    );
    for spec in registry::PLATFORMS {
        let connector = match build_connector(spec, config, &context) {
            Ok(Some(connector)) => connector,
            Ok(None) => continue,
            Err(e) => {
                report.line(Level::Fail, spec.name, format!("{e:#}"));
                continue;
            }
        };
        match tokio::time::timeout(timeout, connector.check()).await {
            Ok(Ok(verified)) => report.line(Level::Ok, spec.name, verified),
            Ok(Err(e)) => report.line(Level::Fail, spec.name, reason(&e)),
            Err(_) => report.line(
                Level::Fail,
                spec.name,
                format!(
                    "no answer within {} s: check the address in [{}] and that this machine \
                     may connect there",
                    timeout.as_secs(),
                    spec.name
                ),
            ),
        }
    }
}

/// A connector's error as the operator should read it: without the retry category.
fn reason(e: &ConnectorError) -> String {
    match e {
        ConnectorError::Transient(text)
        | ConnectorError::Permanent(text)
        | ConnectorError::FileTooLarge(text) => text.clone(),
        ConnectorError::RetryAfter(wait) => format!(
            "the platform asks to wait {} s (rate limited); try again then",
            wait.as_secs()
        ),
    }
}

/// Where the connectors built for checking would keep state and queue room writes: nowhere.
/// Checking writes nothing; a connector that tried would be told so.
struct NothingStored;

const NOTHING_STORED: &str = "check-config writes nothing";

#[async_trait]
impl RoomWrites for NothingStored {
    async fn send_message(
        &self,
        _room: &str,
        _txn: &str,
        _content: serde_json::Value,
    ) -> Result<(), ConnectorError> {
        Err(ConnectorError::Permanent(NOTHING_STORED.into()))
    }

    async fn remove(
        &self,
        _room: &str,
        _txn: &str,
        _user: &str,
        _reason: &str,
    ) -> Result<(), ConnectorError> {
        Err(ConnectorError::Permanent(NOTHING_STORED.into()))
    }
}

#[async_trait]
impl ConnectorState for NothingStored {
    async fn get(&self, _platform: Platform, _key: &str) -> Result<Option<String>, ConnectorError> {
        Err(ConnectorError::Permanent(NOTHING_STORED.into()))
    }

    async fn put(
        &self,
        _platform: Platform,
        _key: &str,
        _value: &str,
    ) -> Result<(), ConnectorError> {
        Err(ConnectorError::Permanent(NOTHING_STORED.into()))
    }

    async fn take(
        &self,
        _platform: Platform,
        _key: &str,
    ) -> Result<Option<String>, ConnectorError> {
        Err(ConnectorError::Permanent(NOTHING_STORED.into()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use switchboard_appservice::{AppserviceRegistration, registration::GenerateOptions};

    /// A configuration whose registration is generated with `url` and `ghost_prefix` and
    /// edited by `edit`, read as `run` reads it; listening on port 29330.
    #[allow(clippy::result_large_err)] // `Jail::expect_with`, as in config.rs
    fn findings(
        url: &str,
        ghost_prefix: &str,
        edit: impl FnOnce(&mut String),
    ) -> Vec<(Level, String)> {
        let mut found = None;
        // In a jail, as the loader's own tests: another test may be setting SWITCHBOARD_*
        // variables in one.
        figment::Jail::expect_with(|jail| {
            found = Some(findings_in(jail.directory(), url, ghost_prefix, edit));
            Ok(())
        });
        found.expect("the jail ran")
    }

    fn findings_in(
        dir: &std::path::Path,
        url: &str,
        ghost_prefix: &str,
        edit: impl FnOnce(&mut String),
    ) -> Vec<(Level, String)> {
        let registration = dir.join("registration.yaml");
        let mut yaml = AppserviceRegistration::generate(&GenerateOptions {
            id: "switchboard",
            url,
            bot_localpart: "switchboard",
            ghost_prefix,
        })
        .to_yaml()
        .unwrap();
        edit(&mut yaml);
        std::fs::write(&registration, yaml).unwrap();
        let config = dir.join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[homeserver]\nurl = \"http://127.0.0.1:8008\"\nserver_name = \"example.org\"\n\
                 [appservice]\nregistration = {:?}\nlisten = \"127.0.0.1:29330\"\n",
                registration.display().to_string()
            ),
        )
        .unwrap();
        let config = config::Config::load(&config).unwrap();
        let prepared = Prepared::new(&config).unwrap();
        registration_findings(&config, &prepared)
    }

    fn levels(findings: &[(Level, String)]) -> Vec<Level> {
        findings.iter().map(|(level, _)| *level).collect()
    }

    #[test]
    fn a_generated_registration_that_matches_the_listener_is_only_ok() {
        let found = findings("http://127.0.0.1:29330", "_switchboard_", |_| {});
        assert_eq!(levels(&found), [Level::Ok], "{found:?}");
        assert!(found[0].1.contains("@switchboard:example.org"), "{found:?}");
        assert!(found[0].1.contains("@_switchboard_*"), "{found:?}");
    }

    #[test]
    fn another_port_in_the_registration_is_a_warning_naming_both() {
        let found = findings("https://switchboard.example.org", "_switchboard_", |_| {});
        assert_eq!(levels(&found), [Level::Ok, Level::Warn], "{found:?}");
        assert!(
            found[1].1.contains("port 443") && found[1].1.contains("127.0.0.1:29330"),
            "{found:?}"
        );
    }

    #[test]
    fn no_url_a_greedy_ghost_namespace_and_missing_settings_are_reported() {
        let found = findings("http://127.0.0.1:29330", "", |yaml| {
            *yaml = yaml
                .lines()
                .filter(|l| !l.starts_with("rate_limited:"))
                .map(|l| match l.starts_with("url:") {
                    true => "url: null\n".to_owned(),
                    false => format!("{l}\n"),
                })
                .collect::<String>()
                .replace("receive_ephemeral: true", "receive_ephemeral: false");
        });
        let texts: Vec<_> = found.iter().map(|(l, t)| (*l, t.as_str())).collect();
        assert!(
            texts
                .iter()
                .any(|(l, t)| *l == Level::Fail && t.contains("has no url")),
            "{found:?}"
        );
        assert!(
            texts
                .iter()
                .any(|(l, t)| *l == Level::Fail && t.contains("claims every user")),
            "{found:?}"
        );
        assert!(
            texts
                .iter()
                .any(|(l, t)| *l == Level::Warn && t.contains("rate_limited")),
            "{found:?}"
        );
        assert!(
            texts
                .iter()
                .any(|(l, t)| *l == Level::Warn && t.contains("receive_ephemeral")),
            "{found:?}"
        );
    }

    #[test]
    fn a_bot_inside_the_ghost_namespace_is_a_warning() {
        let found = findings("http://127.0.0.1:29330", "switch", |_| {});
        assert_eq!(levels(&found), [Level::Ok, Level::Warn], "{found:?}");
        assert!(
            found[1].1.contains("inside the ghost namespace"),
            "{found:?}"
        );
    }

    /// Every line is cut of each secret, the longest first: a database URL holding a
    /// password goes as a whole, not leaving its user and host around a redacted password.
    #[test]
    fn lines_never_hold_a_secret() {
        let mut report = Report::default();
        report.hide([
            "pw".to_owned(),
            "postgres://sb:pw@db/sb".to_owned(),
            String::new(),
        ]);
        assert_eq!(
            report.render(Level::Fail, "database", "postgres://sb:pw@db/sb refused pw"),
            "FAIL  database     <redacted> refused <redacted>"
        );
        assert_eq!(
            shown_database("postgres://sb:pw@db:5432/sb"),
            "postgres://sb@db:5432/sb"
        );
        assert_eq!(shown_database("sqlite://data/sb.db"), "sqlite://data/sb.db");
        assert_eq!(
            shown_database("sb:pw@db"),
            "(not a sqlite:// or postgres:// URL)"
        );
    }
}
