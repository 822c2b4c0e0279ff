//! The end-to-end harness. `scripts/test.sh` starts one Synapse for the whole run (with twelve
//! appservice registrations, "slots", so test files can each run their own Switchboard), a
//! second one without guest access (two slots, [`TestEnv::noguest_from_env`]), and exports
//! where everything is. Each test binary uses its own slots.

#![allow(dead_code)]

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use matrix_sdk::{
    Client, Room,
    config::SyncSettings,
    ruma::{
        OwnedRoomId,
        api::client::{account::register, uiaa},
        events::room::message::OriginalSyncRoomMessageEvent,
    },
};
use serde_json::{Value, json};
use tokio::sync::mpsc;

mod lb;
mod process;
mod report;
// Only the binaries that measure a process use these.
#[allow(unused_imports)]
pub use lb::LoadBalancer;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use report::*;

pub const WAIT: Duration = Duration::from_secs(30);

pub struct TestEnv {
    pub hs_url: String,
    pub server_name: String,
    pub dir: PathBuf,
    pub bin: PathBuf,
}

fn required_var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite with scripts/test.sh, which starts Synapse")
    })
}

fn switchboard_bin() -> PathBuf {
    std::env::var("SWITCHBOARD_BIN")
        .map(PathBuf::from)
        // Integration tests know where cargo built the binary; the benchmark example does
        // not, and is given SWITCHBOARD_BIN by scripts/bench.sh.
        .unwrap_or_else(|_| match option_env!("CARGO_BIN_EXE_switchboard") {
            Some(bin) => bin.into(),
            None => panic!("SWITCHBOARD_BIN is not set"),
        })
}

impl TestEnv {
    /// The main Synapse (guest access on) and its slots.
    pub fn from_env() -> Self {
        Self {
            hs_url: required_var("SWITCHBOARD_TEST_HS_URL"),
            server_name: required_var("SWITCHBOARD_TEST_SERVER_NAME"),
            dir: required_var("SWITCHBOARD_TEST_DIR").into(),
            bin: switchboard_bin(),
        }
    }

    /// The second Synapse, with guest access off (like servers behind Matrix Authentication
    /// Service), and its own slots: `Slot::load(&TestEnv::noguest_from_env(), n)` and
    /// `Switchboard::start` work against it as against the main one.
    pub fn noguest_from_env() -> Self {
        Self {
            hs_url: required_var("SWITCHBOARD_TEST_NOGUEST_HS_URL"),
            server_name: required_var("SWITCHBOARD_TEST_NOGUEST_SERVER_NAME"),
            dir: PathBuf::from(required_var("SWITCHBOARD_TEST_DIR")).join("noguest"),
            bin: switchboard_bin(),
        }
    }

    /// The Synapse that delegates authentication to Matrix Authentication Service (which is
    /// not running: only what needs no MAS can work there), with one slot.
    pub fn mas_from_env() -> Self {
        Self {
            hs_url: required_var("SWITCHBOARD_TEST_MAS_HS_URL"),
            server_name: required_var("SWITCHBOARD_TEST_MAS_SERVER_NAME"),
            dir: PathBuf::from(required_var("SWITCHBOARD_TEST_DIR")).join("mas"),
            bin: switchboard_bin(),
        }
    }

    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }
}

/// One of the registrations Synapse was started with.
pub struct Slot {
    pub registration: PathBuf,
    pub listen: SocketAddr,
    pub hs_token: String,
    pub as_token: String,
    pub id: String,
}

impl Slot {
    pub fn load(env: &TestEnv, n: u32) -> anyhow::Result<Self> {
        let registration = env.dir.join(format!("appservices/{n}/registration.yaml"));
        let text = std::fs::read_to_string(&registration)
            .with_context(|| format!("reading {}", registration.display()))?;
        let yaml: serde_yaml::Value = serde_yaml::from_str(&text)?;
        let get = |k: &str| {
            yaml[k]
                .as_str()
                .map(str::to_owned)
                .with_context(|| format!("{k} missing"))
        };
        let url = get("url")?;
        let listen = url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()?;
        Ok(Self {
            registration,
            listen,
            hs_token: get("hs_token")?,
            as_token: get("as_token")?,
            id: get("id")?,
        })
    }
}

/// A Switchboard process under test.
pub struct Switchboard {
    child: Option<Child>,
    pub config: PathBuf,
    pub db_url: String,
    pub base: String,
    pub log: PathBuf,
    bin: PathBuf,
    /// `RUST_LOG` for the process.
    log_filter: String,
    _dir: tempfile::TempDir,
}

/// What the tests log: debug for Switchboard's own crates, so a failure's log tells the story.
pub const TEST_LOG_FILTER: &str =
    "info,switchboard_bridge=debug,switchboard_appservice=debug,sqlx=warn";

impl Switchboard {
    /// Writes a config with SQLite in a fresh directory and starts the binary.
    pub async fn start(env: &TestEnv, slot: &Slot, extra_toml: &str) -> anyhow::Result<Self> {
        Self::start_logging(env, slot, extra_toml, TEST_LOG_FILTER).await
    }

    /// Like [`Self::start`], with `RUST_LOG` set to `log_filter` (the benchmark runs at
    /// `info`, as a deployment would, instead of the tests' debug logging).
    pub async fn start_logging(
        env: &TestEnv,
        slot: &Slot,
        extra_toml: &str,
        log_filter: &str,
    ) -> anyhow::Result<Self> {
        Self::start_on(env, slot, extra_toml, log_filter, None).await
    }

    /// Like [`Self::start`], on a fresh database of the PostgreSQL cluster scripts/test.sh
    /// starts instead of SQLite.
    pub async fn start_on_postgres(
        env: &TestEnv,
        slot: &Slot,
        extra_toml: &str,
    ) -> anyhow::Result<Self> {
        let url = fresh_postgres_database("sbe2e").await?;
        Self::start_on(env, slot, extra_toml, TEST_LOG_FILTER, Some(url)).await
    }

    /// One of several instances on the PostgreSQL database `db_url`, listening on `listen`
    /// (the slot's address is the load balancer's, [`LoadBalancer`]), logging at `log_filter`.
    pub async fn start_instance(
        env: &TestEnv,
        slot: &Slot,
        listen: SocketAddr,
        extra_toml: &str,
        db_url: &str,
        log_filter: &str,
    ) -> anyhow::Result<Self> {
        Self::start_at(
            env,
            slot,
            listen,
            extra_toml,
            log_filter,
            Some(db_url.to_owned()),
        )
        .await
    }

    async fn start_on(
        env: &TestEnv,
        slot: &Slot,
        extra_toml: &str,
        log_filter: &str,
        db_url: Option<String>,
    ) -> anyhow::Result<Self> {
        Self::start_at(env, slot, slot.listen, extra_toml, log_filter, db_url).await
    }

    async fn start_at(
        env: &TestEnv,
        slot: &Slot,
        listen: SocketAddr,
        extra_toml: &str,
        log_filter: &str,
        db_url: Option<String>,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = dir.path().join("switchboard.db");
        let db_url = db_url.unwrap_or_else(|| format!("sqlite://{}", db.display()));
        let config = dir.path().join("config.toml");
        std::fs::write(
            &config,
            format!(
                "[homeserver]\nurl = {hs:?}\nserver_name = {sn:?}\n\n\
                 [appservice]\nregistration = {reg:?}\nlisten = \"{listen}\"\n\n\
                 [database]\nurl = {db_url:?}\n\n{extra_toml}\n",
                hs = env.hs_url,
                sn = env.server_name,
                reg = slot.registration.display().to_string(),
            ),
        )?;
        let mut sb = Self {
            child: None,
            config,
            db_url,
            base: format!("http://{listen}"),
            log: dir.path().join("switchboard.log"),
            bin: env.bin.clone(),
            log_filter: log_filter.to_owned(),
            _dir: dir,
        };
        sb.spawn().await?;
        Ok(sb)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        let child = Command::new(&self.bin)
            .args(["run", "--config"])
            .arg(&self.config)
            .env("RUST_LOG", &self.log_filter)
            .stdout(Stdio::from(log.try_clone()?))
            .stderr(Stdio::from(log))
            .spawn()
            .context("starting switchboard")?;
        self.child = Some(child);
        let deadline = Instant::now() + WAIT;
        let http = reqwest::Client::new();
        loop {
            if let Ok(r) = http.get(format!("{}/health", self.base)).send().await
                && r.status().is_success()
            {
                return Ok(());
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait()? {
                bail!(
                    "switchboard exited with {status}; log:\n{}",
                    self.log_text()
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "switchboard did not become healthy; log:\n{}",
                    self.log_text()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGKILL: no chance to flush or say goodbye, the harshest restart there is.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn().await
    }

    /// SIGTERM, as an operator's stop or a rolling restart does: it finishes, gives up what
    /// it holds among instances, and exits. Waits until it has.
    pub fn terminate(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status()?;
            child.wait()?;
        }
        Ok(())
    }

    /// Starts it again after [`Self::kill`] or [`Self::terminate`].
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(self.child.is_none(), "still running");
        self.spawn().await
    }

    /// The process ID of the running Switchboard, if it is running (the benchmark reads its
    /// CPU time and memory from `/proc/<pid>`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Runs `switchboard link-code --platform P --responder R` on this instance's config, as
    /// an operator would: the code it printed, or the command's error output.
    pub fn link_code(
        &self,
        env: &TestEnv,
        platform: &str,
        responder: &str,
    ) -> anyhow::Result<Result<String, String>> {
        let out = std::process::Command::new(&env.bin)
            .args([
                "link-code",
                "--platform",
                platform,
                "--responder",
                responder,
            ])
            .arg("--config")
            .arg(&self.config)
            .output()?;
        Ok(if out.status.success() {
            Ok(String::from_utf8(out.stdout)?.trim().to_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        })
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub async fn store(&self) -> anyhow::Result<switchboard_bridge::Store> {
        Ok(switchboard_bridge::Store::connect(&self.db_url).await?)
    }

    /// The last `n` warnings and errors in the log, one per line: for a test's error message,
    /// so a failure in CI (whose log keeps only the head of a test's output) says what
    /// Switchboard ran into.
    pub fn log_problems(&self, n: usize) -> String {
        let log = self.log_text();
        let problems: Vec<&str> = log
            .lines()
            .filter(|l| l.contains(" WARN ") || l.contains(" ERROR "))
            .collect();
        problems[problems.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Switchboard {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!("--- switchboard log ---\n{}", self.log_text());
        }
        // A test that fails by returning an error does not panic: to read its log, name a
        // directory to keep every log in.
        if let Some(dir) = std::env::var_os("SWITCHBOARD_TEST_LOG_DIR") {
            let name = self.log.parent().and_then(|p| p.file_name()).map_or_else(
                || "switchboard".into(),
                |n| n.to_string_lossy().into_owned(),
            );
            let _ = std::fs::copy(&self.log, Path::new(&dir).join(format!("{name}.log")));
        }
    }
}

/// A new, empty database on the PostgreSQL cluster scripts/test.sh starts
/// (`SWITCHBOARD_TEST_POSTGRES_URL`); its URL.
pub async fn fresh_postgres_database(prefix: &str) -> anyhow::Result<String> {
    let admin_url = required_var("SWITCHBOARD_TEST_POSTGRES_URL");
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros();
    let db = format!("{prefix}_{}_{micros}", std::process::id());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map_or(admin_url.as_str(), |(b, _)| b);
    Ok(format!("{base}/{db}"))
}

/// A timeline message as the widget sees it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub event_id: String,
    pub sender: String,
    pub msgtype: String,
    pub body: String,
    pub formatted_body: Option<String>,
    /// `content["m.relates_to"]`, `Null` when absent.
    pub relates_to: Value,
    /// `content["url"]` of a file or image, empty otherwise.
    pub url: String,
}

/// A visitor doing over HTTP exactly what `web-widget/switchboard-widget.js` does.
#[derive(Default)]
pub struct Visitor {
    http: reqwest::Client,
    pub hs: String,
    pub switchboard: String,
    pub user_id: String,
    pub token: String,
    pub room_id: Option<String>,
    since: Option<String>,
    pub seen: Vec<Seen>,
    /// Contents of the `org.switchboard.conversation` state events seen, in order.
    pub states: Vec<Value>,
    /// The events redactions seen named, in order.
    pub redacted: Vec<String>,
    txn: u32,
}

impl Visitor {
    /// Registers a guest and sets a neutral display name, as the widget does.
    pub async fn guest(env: &TestEnv, switchboard: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::new();
        let r: Value = http
            .post(format!(
                "{}/_matrix/client/v3/register?kind=guest",
                env.hs_url
            ))
            .json(&json!({}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let v = Self {
            http,
            hs: env.hs_url.clone(),
            switchboard: switchboard.to_owned(),
            user_id: r["user_id"].as_str().context("user_id")?.to_owned(),
            token: r["access_token"]
                .as_str()
                .context("access_token")?
                .to_owned(),
            room_id: None,
            since: None,
            seen: vec![],
            states: vec![],
            redacted: vec![],
            txn: 0,
        };
        let _ = v
            .http
            .put(format!(
                "{}/_matrix/client/v3/profile/{}/displayname",
                v.hs, v.user_id
            ))
            .bearer_auth(&v.token)
            .json(&json!({"displayname": "Visitor"}))
            .send()
            .await?;
        Ok(v)
    }

    /// Asks Switchboard for a visitor account (`POST /api/v1/visitors`), as the widget does
    /// when the homeserver has no guests (`visitor_mode: "accounts"`). Switchboard names it.
    pub async fn account(env: &TestEnv, switchboard: &str) -> anyhow::Result<Self> {
        let (status, body) = request_visitor_account(switchboard).await?;
        anyhow::ensure!(
            status == 201,
            "POST /api/v1/visitors answered {status}: {body}"
        );
        Ok(Self::signed_in(
            env,
            switchboard,
            body["user_id"].as_str().context("user_id")?,
            body["access_token"].as_str().context("access_token")?,
        ))
    }

    /// A visitor who already has a user and token (from wherever the test got them).
    pub fn signed_in(env: &TestEnv, switchboard: &str, user_id: &str, token: &str) -> Self {
        Self {
            http: reqwest::Client::new(),
            hs: env.hs_url.clone(),
            switchboard: switchboard.to_owned(),
            user_id: user_id.to_owned(),
            token: token.to_owned(),
            ..Self::default()
        }
    }

    pub async fn config(&self) -> anyhow::Result<Value> {
        Ok(self
            .http
            .get(format!("{}/api/v1/config", self.switchboard))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?)
    }

    /// `POST /api/v1/conversations`; returns the status and body, whatever they are.
    pub async fn request_conversation(
        &self,
        topic: &str,
        token: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = self
            .http
            .post(format!("{}/api/v1/conversations", self.switchboard))
            .json(&json!({"topic": topic}));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let r = req.send().await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    /// Starts a conversation and joins its room, as the widget does.
    pub async fn start(&mut self, topic: &str) -> anyhow::Result<String> {
        let (status, body) = self
            .request_conversation(topic, Some(&self.token.clone()))
            .await?;
        anyhow::ensure!(
            status == 201,
            "starting a conversation answered {status}: {body}"
        );
        let room = body["conversation_id"]
            .as_str()
            .context("conversation_id")?
            .to_owned();
        anyhow::ensure!(
            body["room_id"] == body["conversation_id"],
            "conversation ID is not the room ID: {body}"
        );
        let (status, body) = self.join(&room).await?;
        anyhow::ensure!(status == 200, "joining answered {status}: {body}");
        self.room_id = Some(room.clone());
        Ok(room)
    }

    pub async fn join(&self, room: &str) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .post(format!(
                "{}/_matrix/client/v3/join/{}",
                self.hs,
                urlencode(room)
            ))
            .bearer_auth(&self.token)
            .json(&json!({}))
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        let r = self
            .http
            .get(format!("{}{}", self.hs, path))
            .bearer_auth(&self.token)
            .send()
            .await?;
        let status = r.status().as_u16();
        Ok((status, r.json().await.unwrap_or(Value::Null)))
    }

    pub async fn send(&mut self, text: &str) -> anyhow::Result<String> {
        self.send_content(json!({"msgtype": "m.text", "body": text}))
            .await
    }

    pub async fn send_html(&mut self, text: &str, html: &str) -> anyhow::Result<String> {
        self.send_content(
            json!({"msgtype": "m.text", "body": text, "format": "org.matrix.custom.html", "formatted_body": html}),
        )
        .await
    }

    pub async fn send_content(&mut self, content: Value) -> anyhow::Result<String> {
        self.put_in_room("send/m.room.message/sbw-test", content)
            .await
    }

    /// `PUT /rooms/{room}/{what}-{txn}` with `body` as the visitor; the event ID it made.
    async fn put_in_room(&mut self, what: &str, body: Value) -> anyhow::Result<String> {
        self.txn += 1;
        let room = self.room_id.clone().context("no conversation yet")?;
        let r: Value = self
            .http
            .put(format!(
                "{}/_matrix/client/v3/rooms/{}/{what}-{}",
                self.hs,
                urlencode(&room),
                self.txn
            ))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        Ok(r["event_id"].as_str().context("event_id")?.to_owned())
    }

    /// Replaces the text of the visitor's message `original` (`m.replace`), as a Matrix
    /// client edits.
    pub async fn edit(&mut self, original: &str, text: &str) -> anyhow::Result<String> {
        self.send_content(json!({
            "msgtype": "m.text",
            "body": format!("* {text}"),
            "m.new_content": {"msgtype": "m.text", "body": text},
            "m.relates_to": {"rel_type": "m.replace", "event_id": original},
        }))
        .await
    }

    /// Redacts the visitor's event `event` (not open to guests: Synapse refuses them).
    pub async fn redact(&mut self, event: &str) -> anyhow::Result<String> {
        let what = format!("redact/{}/sbw-redact", urlencode(event));
        self.put_in_room(&what, json!({"reason": "typo"})).await
    }

    /// Long-polls `/sync` for the conversation room until `done` holds for what was seen.
    pub async fn sync_until(
        &mut self,
        what: &str,
        done: impl Fn(&[Seen]) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while !done(&self.seen) {
            if Instant::now() > deadline {
                bail!("visitor did not see {what} in time; saw {:#?}", self.seen);
            }
            self.sync_once().await?;
        }
        Ok(())
    }

    /// Long-polls `/sync` until a redaction of `event` was seen.
    pub async fn wait_for_redaction(&mut self, event: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + WAIT;
        while !self.redacted.iter().any(|r| r == event) {
            if Instant::now() > deadline {
                bail!(
                    "visitor saw no redaction of {event}; saw {:?}",
                    self.redacted
                );
            }
            self.sync_once().await?;
        }
        Ok(())
    }

    /// One `/sync` long poll (up to five seconds) of the conversation room.
    async fn sync_once(&mut self) -> anyhow::Result<()> {
        let room = self.room_id.clone().context("no conversation yet")?;
        let filter = json!({"room": {"rooms": [room], "timeline": {"limit": 50}}}).to_string();
        let mut req = self
            .http
            .get(format!("{}/_matrix/client/v3/sync", self.hs))
            .bearer_auth(&self.token)
            .query(&[("timeout", "5000"), ("filter", filter.as_str())]);
        if let Some(since) = &self.since {
            req = req.query(&[("since", since.as_str())]);
        }
        let r: Value = req.send().await?.error_for_status()?.json().await?;
        self.since = r["next_batch"].as_str().map(str::to_owned);
        let events = r["rooms"]["join"][&room]["timeline"]["events"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for e in events {
            if e["type"] == "org.switchboard.conversation" {
                self.states.push(e["content"].clone());
                continue;
            }
            if e["type"] == "m.room.redaction" {
                let of = e["redacts"].as_str().or(e["content"]["redacts"].as_str());
                self.redacted.extend(of.map(str::to_owned));
                continue;
            }
            if e["type"] != "m.room.message" {
                continue;
            }
            let event_id = e["event_id"].as_str().unwrap_or_default().to_owned();
            if self.seen.iter().any(|s| s.event_id == event_id) {
                continue;
            }
            self.seen.push(Seen {
                event_id,
                sender: e["sender"].as_str().unwrap_or_default().to_owned(),
                msgtype: e["content"]["msgtype"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                body: e["content"]["body"].as_str().unwrap_or_default().to_owned(),
                formatted_body: e["content"]["formatted_body"].as_str().map(str::to_owned),
                relates_to: e["content"]["m.relates_to"].clone(),
                url: e["content"]["url"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(())
    }

    /// The same visitor after a page reload: the widget keeps the token and room in
    /// sessionStorage and syncs again from scratch.
    pub fn reloaded(&self) -> Self {
        Self {
            http: reqwest::Client::new(),
            hs: self.hs.clone(),
            switchboard: self.switchboard.clone(),
            user_id: self.user_id.clone(),
            token: self.token.clone(),
            room_id: self.room_id.clone(),
            since: None,
            seen: vec![],
            states: vec![],
            redacted: vec![],
            txn: self.txn + 1000,
        }
    }

    pub fn bodies_from(&self, sender: &str) -> Vec<String> {
        self.seen
            .iter()
            .filter(|s| s.sender == sender)
            .map(|s| s.body.clone())
            .collect()
    }
}

/// `POST /api/v1/visitors` with no credentials, as the widget sends it; the status and body.
pub async fn request_visitor_account(switchboard: &str) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .post(format!("{switchboard}/api/v1/visitors"))
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// Every `m.room.message` event of `room` that `token` may read, oldest first (`/messages`,
/// a page of 500 at a time).
pub async fn room_messages(
    http: &reqwest::Client,
    hs: &str,
    token: &str,
    room: &str,
) -> anyhow::Result<Vec<Value>> {
    let mut events = Vec::new();
    let mut from: Option<String> = None;
    loop {
        let mut req = http
            .get(format!(
                "{hs}/_matrix/client/v3/rooms/{}/messages",
                urlencode(room)
            ))
            .bearer_auth(token)
            .query(&[("dir", "b"), ("limit", "500")]);
        if let Some(f) = &from {
            req = req.query(&[("from", f.as_str())]);
        }
        let page: Value = req.send().await?.error_for_status()?.json().await?;
        let chunk = page["chunk"].as_array().cloned().unwrap_or_default();
        events.extend(
            chunk
                .iter()
                .filter(|e| e["type"] == "m.room.message")
                .cloned(),
        );
        match page["end"].as_str() {
            Some(end) if !chunk.is_empty() => from = Some(end.to_owned()),
            _ => break,
        }
    }
    events.reverse();
    Ok(events)
}

pub fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends a raw appservice transaction to Switchboard, as Synapse would.
pub async fn push_transaction(
    base: &str,
    txn_id: &str,
    token: Option<&str>,
    body: &str,
) -> anyhow::Result<(u16, Value)> {
    let mut req = reqwest::Client::new()
        .put(format!("{base}/_matrix/app/v1/transactions/{txn_id}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// A loopback TCP port free now, from below the kernel's ephemeral range: one handed out by
/// binding port 0 can, once released, become the local end of any outgoing connection before
/// the process under test binds it (`scripts/free_ports.py` says the same for the slots).
pub fn free_port() -> anyhow::Result<u16> {
    let ephemeral_low: u16 = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse().ok())
        .unwrap_or(32768);
    let span = ephemeral_low.saturating_sub(10_000).max(1);
    let start = (std::process::id() as u64
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .subsec_nanos() as u64)
        % u64::from(span);
    for i in 0..u64::from(span) {
        let port = 10_000 + ((start + i) % u64::from(span)) as u16;
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return Ok(port);
        }
    }
    anyhow::bail!("no free port below {ephemeral_low}")
}

pub fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}{}{}", std::process::id(), nanos % 1_000_000_000)
}

pub async fn wait_for<T, F, Fut>(what: &str, mut f: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = Instant::now() + WAIT;
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn path_str(p: &Path) -> String {
    p.display().to_string()
}

/// A responder using an ordinary Matrix client.
pub struct MatrixResponder {
    pub client: Client,
    /// (room, sender, body) of every message their client receives, in order.
    messages: mpsc::UnboundedReceiver<(String, String, String)>,
    received: Vec<(String, String, String)>,
}

impl MatrixResponder {
    pub async fn register(env: &TestEnv, localpart: &str) -> anyhow::Result<Self> {
        let client = Client::builder()
            .homeserver_url(&env.hs_url)
            .build()
            .await?;
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.password = Some("correct horse battery staple".to_owned());
        request.auth = Some(uiaa::AuthData::Dummy(uiaa::Dummy::new()));
        client
            .matrix_auth()
            .register(request)
            .await
            .context("registering the responder")?;
        let (tx, messages) = mpsc::unbounded_channel();
        client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((
                    room.room_id().to_string(),
                    ev.sender.to_string(),
                    ev.content.body().to_owned(),
                ));
            }
        });
        let syncing = client.clone();
        tokio::spawn(async move {
            let _ = syncing
                .sync(SyncSettings::default().timeout(Duration::from_secs(5)))
                .await;
        });
        Ok(Self {
            client,
            messages,
            received: vec![],
        })
    }

    pub async fn accept_invite(&self, room: &str) -> anyhow::Result<Room> {
        let room_id = OwnedRoomId::try_from(room)?;
        wait_for("the responder's invite", || async {
            Ok(self
                .client
                .invited_rooms()
                .into_iter()
                .any(|r| r.room_id() == room_id)
                .then_some(()))
        })
        .await?;
        Ok(self.client.join_room_by_id(&room_id).await?)
    }

    /// Opens a direct chat with `bot` (Switchboard's bot user, which joins it for a registered
    /// responder) and waits until the bot is in it; `!` commands there set their status.
    pub async fn direct_chat_with(&self, bot: &matrix_sdk::ruma::UserId) -> anyhow::Result<Room> {
        let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
        request.invite = vec![bot.to_owned()];
        request.is_direct = true;
        let dm = self.client.create_room(request).await?;
        wait_for("the bot to join the direct chat", || async {
            let members = dm
                .members_no_sync(matrix_sdk::RoomMemberships::JOIN)
                .await?;
            Ok(members.iter().any(|m| m.user_id() == bot).then_some(()))
        })
        .await?;
        Ok(dm)
    }

    /// Waits until the responder's client has received `bodies` in `room` from `sender`.
    pub async fn wait_for_messages(
        &mut self,
        room: &str,
        sender: &str,
        bodies: &[&str],
    ) -> anyhow::Result<()> {
        self.wait_until(
            room,
            sender,
            |got| bodies.iter().all(|b| got.contains(b)),
            &format!("{bodies:?}"),
        )
        .await
    }

    /// Waits until some message in `room` from `sender` contains `needle`.
    pub async fn wait_for_text(
        &mut self,
        room: &str,
        sender: &str,
        needle: &str,
    ) -> anyhow::Result<()> {
        self.wait_until(
            room,
            sender,
            |got| got.iter().any(|b| b.contains(needle)),
            needle,
        )
        .await
    }

    async fn wait_until(
        &mut self,
        room: &str,
        sender: &str,
        done: impl Fn(&[&str]) -> bool,
        what: &str,
    ) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got: Vec<&str> = self
                .received
                .iter()
                .filter(|(r, s, _)| r == room && s == sender)
                .map(|(_, _, b)| b.as_str())
                .collect();
            if done(&got) {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, self.messages.recv()).await {
                Ok(Some(m)) => self.received.push(m),
                _ => anyhow::bail!("responder did not receive {what}; got {got:?}"),
            }
        }
    }

    /// Everything their client received, in any room.
    pub fn all_bodies(&self) -> Vec<String> {
        self.received.iter().map(|(_, _, b)| b.clone()).collect()
    }

    pub fn bodies(&self, room: &str, sender: &str) -> Vec<String> {
        self.received
            .iter()
            .filter(|(r, s, _)| r == room && s == sender)
            .map(|(_, _, b)| b.clone())
            .collect()
    }
}

/// The relay room a Matrix responder was offered a conversation in (their offer's handle).
pub async fn relay_room_of(
    store: &switchboard_bridge::Store,
    room: &str,
    responder_id: &str,
) -> anyhow::Result<String> {
    wait_for("the Matrix offer", || async {
        Ok(store
            .offers_for_room(room)
            .await?
            .into_iter()
            .find(|o| o.platform == "matrix" && o.responder_id == responder_id)
            .and_then(|o| o.remote_message_id))
    })
    .await
}

/// Offers the bot sent on Telegram that are still open (an accepted one is edited into
/// "You accepted the conversation with …", a withdrawn one into the reason).
pub fn open_offers(sent: &[telegram_standin::SentMessage]) -> Vec<&telegram_standin::SentMessage> {
    sent.iter()
        .filter(|m| {
            m.text
                .as_deref()
                .is_some_and(|t| t.contains("New conversation"))
        })
        .collect()
}

/// Waits until the bot has shown "typing…" in the Telegram chat `chat` (a `sendChatAction`
/// the stand-in took).
pub async fn telegram_typing_shown(
    tg: &telegram_standin::StandIn,
    chat: i64,
) -> anyhow::Result<()> {
    let chat = chat.to_string();
    wait_for(&format!("the chat action in chat {chat}"), || async {
        Ok(tg
            .requests()
            .iter()
            .any(|q| {
                let body = String::from_utf8_lossy(&q.body);
                q.method_lower == "sendchataction"
                    && q.status == 200
                    && body.contains(&chat)
                    && body.contains("typing")
            })
            .then_some(()))
    })
    .await
}

/// Waits for an open offer the bot sent `who` on Telegram; returns its text.
pub async fn telegram_offer(
    tg: &telegram_standin::StandIn,
    who: &telegram_standin::TgUser,
) -> anyhow::Result<String> {
    let sent = tg
        .wait_for_sent(who.id, |s| !open_offers(s).is_empty(), WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(open_offers(&sent)[0].text.clone().unwrap_or_default())
}

/// Waits until the initiator at (`platform`, `address`) has an open conversation; returns
/// the newest.
pub async fn initiator_conversation(
    store: &switchboard_bridge::Store,
    platform: &str,
    address: &str,
) -> anyhow::Result<switchboard_bridge::conversation::Conversation> {
    wait_for(
        &format!("the conversation of {platform} initiator {address}"),
        || async {
            Ok(store
                .open_initiator_conversations(platform, address)
                .await?
                .into_iter()
                .next())
        },
    )
    .await
}

/// Presses Accept on the first open offer the bot sent `who`; returns the offer's message ID.
pub fn accept_open_offer(tg: &telegram_standin::StandIn, who: &telegram_standin::TgUser) -> i64 {
    let sent = tg.sent(who.id);
    let offer = open_offers(&sent)[0];
    let data = offer.reply_markup.as_ref().expect("an offer has buttons")["inline_keyboard"][0][0]
        ["callback_data"]
        .as_str()
        .expect("Accept carries callback data")
        .to_owned();
    tg.user_presses(who, offer.message_id, &data);
    offer.message_id
}

/// A valid 2x1 PNG (the Telegram stand-in reads image headers as Telegram does).
pub const PNG: &[u8] = &[
    137, 80, 78, 71, 13, 10, 26, 10, 0, 0, 0, 13, 73, 72, 68, 82, 0, 0, 0, 2, 0, 0, 0, 1, 8, 2, 0,
    0, 0, 123, 64, 232, 221, 0, 0, 0, 13, 73, 68, 65, 84, 120, 156, 99, 248, 207, 0, 4, 255, 1, 7,
    0, 1, 255, 226, 35, 158, 89, 0, 0, 0, 0, 73, 69, 78, 68, 174, 66, 96, 130,
];

/// Puts `bytes` in the homeserver's media repository as the slot's bot and returns its
/// `mxc://` URI. Synapse lets no guest upload media, so a visitor's file is put there this
/// way and their message refers to it, as a visitor account's upload would.
pub async fn upload_media(
    env: &TestEnv,
    slot: &Slot,
    filename: &str,
    mimetype: &str,
    bytes: &[u8],
) -> anyhow::Result<String> {
    let upload: Value = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/media/v3/upload?filename={}",
            env.hs_url,
            urlencode(filename)
        ))
        .bearer_auth(&slot.as_token)
        .header("content-type", mimetype)
        .body(bytes.to_vec())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(upload["content_uri"]
        .as_str()
        .context("content_uri")?
        .to_owned())
}

/// Downloads `mxc` from the media repository with `token`.
pub async fn download_media(env: &TestEnv, token: &str, mxc: &str) -> anyhow::Result<Vec<u8>> {
    let (server, media_id) = mxc
        .trim_start_matches("mxc://")
        .split_once('/')
        .context("not an mxc URI")?;
    Ok(reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v1/media/download/{server}/{media_id}",
            env.hs_url
        ))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .bytes()
        .await?
        .to_vec())
}

/// Long-polls the visitor's sync until the room's `m.typing` lists `ghost`, for up to WAIT.
pub async fn ghost_typing_seen(visitor: &Visitor, room: &str, ghost: &str) -> anyhow::Result<bool> {
    typing_seen(&visitor.hs, &visitor.token, room, ghost).await
}

/// Long-polls the sync of the account with `token` on `hs` until the room's `m.typing`
/// lists `user`, for up to WAIT.
pub async fn typing_seen(hs: &str, token: &str, room: &str, user: &str) -> anyhow::Result<bool> {
    let ghost = user;
    let filter =
        serde_json::json!({"room": {"rooms": [room], "timeline": {"limit": 1}}}).to_string();
    let deadline = std::time::Instant::now() + WAIT;
    let mut since: Option<String> = None;
    while std::time::Instant::now() < deadline {
        let mut req = reqwest::Client::new()
            .get(format!("{hs}/_matrix/client/v3/sync"))
            .bearer_auth(token)
            .query(&[("timeout", "2000"), ("filter", filter.as_str())]);
        if let Some(s) = &since {
            req = req.query(&[("since", s.as_str())]);
        }
        let r: serde_json::Value = req.send().await?.error_for_status()?.json().await?;
        since = r["next_batch"].as_str().map(str::to_owned);
        let typing = r["rooms"]["join"][room]["ephemeral"]["events"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|e| e["type"] == "m.typing")
            .any(|e| {
                e["content"]["user_ids"]
                    .as_array()
                    .is_some_and(|ids| ids.iter().any(|id| id == ghost))
            });
        if typing {
            return Ok(true);
        }
    }
    Ok(false)
}

/// The `[discord]` section for the stand-in `dc` with bot token `token`, `extra` (lines such
/// as `initiators = true\n`) inside it.
pub fn discord_config(dc: &discord_standin::DiscordStandIn, token: &str, extra: &str) -> String {
    format!(
        "[discord]\ntoken = {token:?}\napplication_id = \"{app}\"\nguild = \"{guild}\"\n\
         api_url = {api:?}\n{extra}\n",
        app = dc.application_id(),
        guild = dc.guild_id(),
        api = dc.base_url(),
    )
}

/// Waits until Switchboard's bot has a gateway session with the Discord stand-in.
pub async fn discord_gateway_up(dc: &discord_standin::DiscordStandIn) -> anyhow::Result<()> {
    wait_for("the bot's gateway session", || async {
        Ok((dc.identify_count() > 0).then_some(()))
    })
    .await
}

/// `who` writes `first` to the bot in a direct chat (as an initiator) and waits for the topic
/// menu the bot answers with: (the direct chat, the menu's message).
pub async fn discord_topic_menu(
    dc: &discord_standin::DiscordStandIn,
    who: &discord_standin::DcUser,
    first: &str,
) -> anyhow::Result<(u64, discord_standin::DcMessage)> {
    let is_menu = |m: &discord_standin::DcMessage| m.components[0]["components"][0]["type"] == 3;
    let dm = dc.user_opens_dm(who);
    dc.user_sends(who, dm, first);
    let messages = discord_messages(dc, dm, "the topic menu", |m| m.iter().any(is_menu)).await?;
    let menu = messages.into_iter().find(is_menu).expect("waited for it");
    Ok((dm, menu))
}

/// The messages in a channel of the Discord stand-in, once `pred` holds for them (or an
/// error naming `what` and what there was).
pub async fn discord_messages(
    dc: &discord_standin::DiscordStandIn,
    channel: u64,
    what: &str,
    pred: impl Fn(&[discord_standin::DcMessage]) -> bool,
) -> anyhow::Result<Vec<discord_standin::DcMessage>> {
    let messages = dc.wait_for_messages(channel, &pred, WAIT).await;
    anyhow::ensure!(pred(&messages), "waiting for {what}: {messages:#?}");
    Ok(messages)
}
