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

mod discord;
mod lb;
mod matrix_responder;
mod media;
mod process;
mod report;
mod switchboard;
mod telegram;
mod visitor;
// Each test binary uses some of these.
#[allow(unused_imports)]
pub use discord::*;
#[allow(unused_imports)]
pub use lb::LoadBalancer;
#[allow(unused_imports)]
pub use matrix_responder::*;
#[allow(unused_imports)]
pub use media::*;
#[allow(unused_imports)]
pub use process::*;
#[allow(unused_imports)]
pub use report::*;
#[allow(unused_imports)]
pub use switchboard::*;
#[allow(unused_imports)]
pub use telegram::*;
#[allow(unused_imports)]
pub use visitor::*;

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
