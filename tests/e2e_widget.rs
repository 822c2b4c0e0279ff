//! The embeddable widget in a real browser (Debian's headless Chromium driven by
//! `tests/browser/*.mjs` through playwright-core), against a real Switchboard and Synapse, with
//! a Matrix responder on a real client answering at the same time:
//!
//! - a visitor opens the demo page (served with its CSP), picks a topic, sends, sees the
//!   responder type and reply without a reload, sees an XSS payload rendered inert (and the
//!   allowed formatting kept), reloads into the same conversation, loses the network, sends,
//!   and gets everything through exactly once; the panel is keyboard- and phone-usable;
//! - the same flow with guest access off, through Switchboard's visitor accounts, and through
//!   its visitor proxy;
//! - the sanitiser's allow-list, case by case, in the browser.
//!
//! `scripts/test.sh` runs `scripts/widget.sh setup` first (chromium, npm packages, bundle check).

mod common;

use std::{path::PathBuf, process::Stdio, time::Duration};

use anyhow::{Context, bail};
use common::*;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, BufReader},
    process::{Child, Command},
    sync::mpsc,
};

/// Appservice slot of the guest-mode run (the guest-enabled Synapse).
const SLOT: u32 = 9;
/// Appservice slot of the accounts-mode run (the Synapse with guest access off).
const NOGUEST_SLOT: u32 = 1;
/// How long one browser flow may take, all waits included.
const BROWSER_LIMIT: Duration = Duration::from_secs(300);

// Shared with tests/browser/widget-flow.mjs.
const FIRST: &str = "Hello from the browser";
const REPLY: &str = "Hi, this is Rae.";
const XSS_TEXT: &str = "bold and safe";
const XSS_HTML: &str = "<img src=x onerror=\"window.__xss=1\"><script>window.__xss=2</script>\
     <b>bold</b> and safe <a href=\"javascript:window.__xss=3\">js</a> \
     <a href=\"https://example.org/\">a link</a>";
const OFFLINE: &str = "Sent while offline";
const BACK: &str = "Welcome back";
const HANDOFF_ASK: &str = "Could someone from sales help me?";
const SAM_REPLY: &str = "Sam from sales here.";
const BYE: &str = "Thanks, that is all.";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn config(responder_id: &str, sam_id: &str, extra: &str) -> String {
    format!(
        "{extra}\n\n[[topics]]\nid = \"support\"\nname = \"General support\"\n\n\
         [[topics]]\nid = \"sales\"\nname = \"Sales\"\n\n\
         [[responders]]\nid = \"rae\"\ndisplay_name = \"Rae Responder\"\npseudonym = \"Rae\"\ntopics = [\"support\", \"sales\"]\n\
         contacts = [{{ platform = \"matrix\", address = {responder_id:?} }}]\n\n\
         [[responders]]\nid = \"sam\"\ndisplay_name = \"Sam Sales\"\npseudonym = \"Sam\"\ntopics = [\"sales\"]\n\
         contacts = [{{ platform = \"matrix\", address = {sam_id:?} }}]\n"
    )
}

/// `node tests/browser/<script>` with its stdout lines on a channel and its stderr collected.
struct BrowserScript {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
    stderr: tokio::task::JoinHandle<String>,
    /// "headless Chromium <version>" once the script has announced it, for failure messages.
    browser: String,
}

impl BrowserScript {
    fn spawn(script: &str, env: &[(&str, String)]) -> anyhow::Result<Self> {
        let dir = repo().join("tests/browser");
        anyhow::ensure!(
            dir.join("node_modules/playwright-core").exists(),
            "tests/browser/node_modules is missing: run scripts/widget.sh setup (scripts/test.sh does)"
        );
        let mut cmd = Command::new("node");
        cmd.arg(dir.join(script))
            .current_dir(&dir)
            .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd
            .spawn()
            .context("starting node (is Node.js installed?)")?;
        let stdout = child.stdout.take().context("node stdout")?;
        let mut stderr_pipe = child.stderr.take().context("node stderr")?;
        let (tx, lines) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = tx.send(line);
            }
        });
        let stderr = tokio::spawn(async move {
            let mut text = String::new();
            let _ = stderr_pipe.read_to_string(&mut text).await;
            text
        });
        Ok(Self {
            child,
            lines,
            stderr,
            browser: "a browser whose version was not announced".to_owned(),
        })
    }

    /// Waits for the exit and fails with the script's own words unless it succeeded.
    async fn finish(mut self) -> anyhow::Result<Vec<String>> {
        let status = match tokio::time::timeout(BROWSER_LIMIT, self.child.wait()).await {
            Ok(status) => status?,
            Err(_) => {
                let _ = self.child.kill().await;
                bail!(
                    "the browser script ran past {BROWSER_LIMIT:?} in {}:\n{}",
                    self.browser,
                    self.stderr.await?
                );
            }
        };
        let stderr = self.stderr.await?;
        eprintln!("{stderr}");
        let mut rest = vec![];
        while let Ok(line) = self.lines.try_recv() {
            rest.push(line);
        }
        anyhow::ensure!(
            status.success(),
            "the browser test failed ({status}) in {}:\n{stderr}",
            self.browser
        );
        Ok(rest)
    }

    /// The Chromium version the script announces first (`BROWSER <version>`, from `launch()` in
    /// tests/browser/lib.mjs), printed here so every run's log says which browser it used: apt
    /// installs whatever Debian ships that day, and a browser result means little without it.
    async fn browser_version(&mut self) -> anyhow::Result<String> {
        let version = self.expect_line("BROWSER ").await?;
        anyhow::ensure!(
            version.split('.').count() >= 3
                && version
                    .split('.')
                    .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
            "the browser script announced no Chromium version, only {version:?}"
        );
        self.browser = format!("headless Chromium {version}");
        eprintln!("[e2e_widget] {}", self.browser);
        Ok(version)
    }

    /// The next stdout line starting with `prefix` (its remainder), before the deadline.
    async fn expect_line(&mut self, prefix: &str) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) => {
                    if let Some(rest) = line.strip_prefix(prefix) {
                        return Ok(rest.trim().to_owned());
                    }
                }
                Ok(None) => bail!("the browser script exited before printing {prefix:?}"),
                Err(_) => bail!("the browser script did not print {prefix:?} in time"),
            }
        }
    }
}

/// Calls the homeserver as the appservice (as `user`, or as its bot when `None`).
async fn as_request(
    hs: &str,
    as_token: &str,
    method: reqwest::Method,
    path: &str,
    user: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = reqwest::Client::new()
        .request(method, format!("{hs}{path}"))
        .bearer_auth(as_token);
    if let Some(u) = user {
        req = req.query(&[("user_id", u)]);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// The responder's side of the browser flow, run while the browser does the visitor's.
async fn respond(
    env: &TestEnv,
    slot: &Slot,
    sb: &Switchboard,
    responder: &mut MatrixResponder,
    sam: &mut MatrixResponder,
    room: &str,
) -> anyhow::Result<()> {
    let store = sb.store().await?;
    let relay = relay_room_of(&store, room, "rae").await?;
    let joined = responder.accept_invite(&relay).await?;
    let (_, me) = as_request(
        &env.hs_url,
        &slot.as_token,
        reqwest::Method::GET,
        "/_matrix/client/v3/account/whoami",
        None,
        None,
    )
    .await?;
    let bot = me["user_id"]
        .as_str()
        .context("the bot's user ID")?
        .to_owned();
    responder.wait_for_text(&relay, &bot, FIRST).await?;

    // The responder types in their relay room; Switchboard shows their ghost typing in the
    // visitor's room, and the widget shows "Rae is typing…" under the ghost's name.
    // Kept up for a few seconds (the client's notice lasts four), so the browser, which starts
    // looking once its own typing is out, finds it before the reply clears it.
    for _ in 0..4 {
        joined.typing_notice(true).await?;
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    joined
        .send(RoomMessageEventContent::text_plain(REPLY))
        .await?;
    joined
        .send(RoomMessageEventContent::text_html(XSS_TEXT, XSS_HTML))
        .await?;

    // The browser reloads, then goes offline and sends; answer once that message is through.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(150);
    while let Err(e) = responder.wait_for_text(&relay, &bot, OFFLINE).await {
        if tokio::time::Instant::now() > deadline {
            return Err(e);
        }
    }
    joined
        .send(RoomMessageEventContent::text_plain(BACK))
        .await?;

    // The visitor asks for sales: Rae hands over to that topic; Sam, who answers sales only,
    // is offered it with the summary, takes it and answers in the same room.
    responder.wait_for_text(&relay, &bot, HANDOFF_ASK).await?;
    joined
        .send(RoomMessageEventContent::text_plain("!transfer sales"))
        .await?;
    let sam_relay = relay_room_of(&store, room, "sam").await?;
    let sam_chat = sam.accept_invite(&sam_relay).await?;
    sam.wait_for_text(&sam_relay, &bot, "Rae handed this conversation over")
        .await?;
    sam_chat
        .send(RoomMessageEventContent::text_plain(SAM_REPLY))
        .await?;
    // The visitor says goodbye; Sam ends the conversation from his relay room.
    sam.wait_for_text(&sam_relay, &bot, BYE).await?;
    sam_chat
        .send(RoomMessageEventContent::text_plain("!end"))
        .await?;
    Ok(())
}

/// One whole browser flow: the browser as the visitor, `respond` as the responder, together.
async fn browser_flow(
    env: &TestEnv,
    slot: &Slot,
    extra_toml: &str,
    mode: &str,
    screenshots: bool,
) -> anyhow::Result<()> {
    let responder_local = unique("rae");
    let responder_id = env.user_id(&responder_local);
    let mut responder = MatrixResponder::register(env, &responder_local).await?;
    let sam_local = unique("sam");
    let mut sam = MatrixResponder::register(env, &sam_local).await?;
    let sb = Switchboard::start(
        env,
        slot,
        &config(&responder_id, &env.user_id(&sam_local), extra_toml),
    )
    .await?;
    let out = tempfile::tempdir()?;

    let mut vars = vec![
        ("SWITCHBOARD_URL", sb.base.clone()),
        ("EXPECT_MODE", mode.to_owned()),
        ("TOPIC", "support".to_owned()),
        ("RESPONDER_NAME", "Rae".to_owned()),
        ("FAILURE_DIR", path_str(out.path())),
    ];
    if screenshots {
        vars.push(("SCREENSHOT_DIR", path_str(&repo().join("docs/images"))));
    }
    let mut browser = BrowserScript::spawn("widget-flow.mjs", &vars)?;
    if let Err(e) = browser.browser_version().await {
        let why = browser.finish().await.err();
        bail!("{e}; {why:?}");
    }
    let room = match browser.expect_line("ROOM ").await {
        Ok(room) => room,
        Err(e) => {
            let why = browser.finish().await.err();
            bail!("{e}; {why:?}");
        }
    };
    anyhow::ensure!(room.starts_with('!'), "not a room ID: {room}");

    // Whichever side fails first ends the run with its own message.
    let mut responded = false;
    let done = {
        let responder_side = respond(env, slot, &sb, &mut responder, &mut sam, &room);
        tokio::pin!(responder_side);
        loop {
            tokio::select! {
                r = &mut responder_side, if !responded => {
                    if let Err(e) = r {
                        let browser_said = browser.finish().await.err();
                        bail!("responder side failed: {e:#}\nbrowser: {browser_said:?}");
                    }
                    responded = true;
                }
                status = browser.child.wait() => {
                    let _ = status?;
                    break browser.finish().await?;
                }
            }
        }
    };
    anyhow::ensure!(
        done.iter().any(|l| l == "DONE"),
        "the browser script ended without DONE: {done:?}"
    );
    anyhow::ensure!(responded, "the browser finished before the responder did");

    // What the responder received: each visitor message exactly once.
    let store = sb.store().await?;
    let relay = relay_room_of(&store, &room, "rae").await?;
    let everything = responder.all_bodies();
    for text in [FIRST, OFFLINE] {
        let n = everything.iter().filter(|b| b.contains(text)).count();
        assert_eq!(
            n, 1,
            "the responder got {text:?} {n} times in {relay}: {everything:?}"
        );
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_in_chromium_talks_to_a_matrix_responder_as_a_guest() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    browser_flow(&env, &slot, "", "guest", true).await
}

/// The same flow on a homeserver with guest access off: Switchboard provisions visitor accounts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_in_chromium_uses_visitor_accounts_where_guests_are_off() -> anyhow::Result<()> {
    let Ok(hs_url) = std::env::var("SWITCHBOARD_TEST_NOGUEST_HS_URL") else {
        eprintln!(
            "skipped: SWITCHBOARD_TEST_NOGUEST_HS_URL is not set (scripts/test.sh starts that Synapse)"
        );
        return Ok(());
    };
    let main = TestEnv::from_env();
    let env = TestEnv {
        hs_url,
        server_name: std::env::var("SWITCHBOARD_TEST_NOGUEST_SERVER_NAME")
            .unwrap_or(main.server_name),
        dir: main.dir.join("noguest"),
        bin: main.bin,
    };
    // Guests really are refused there, so the widget cannot be passing as a guest.
    let r = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/client/v3/register?kind=guest",
            env.hs_url
        ))
        .json(&json!({}))
        .send()
        .await?;
    assert!(
        !r.status().is_success(),
        "the no-guest Synapse registered a guest"
    );
    let slot = Slot::load(&env, NOGUEST_SLOT)?;
    browser_flow(
        &env,
        &slot,
        "[visitors]\nmode = \"accounts\"\n",
        "accounts",
        false,
    )
    .await
}

/// The same flow with guest access off and no homeserver token at all: Switchboard's visitor
/// proxy (`[visitors] mode = "proxied"`), the widget unchanged. Noguest slot 0: the other
/// binaries that use it (e2e_visitor_accounts, e2e_visitor_proxy) never run at the same time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn widget_in_chromium_talks_through_the_visitor_proxy() -> anyhow::Result<()> {
    let env = TestEnv::noguest_from_env();
    let slot = Slot::load(&env, 0)?;
    browser_flow(
        &env,
        &slot,
        "[visitors]\nmode = \"proxied\"\n",
        "proxied",
        false,
    )
    .await
}

#[tokio::test]
async fn sanitiser_keeps_only_the_allow_list_in_chromium() -> anyhow::Result<()> {
    let mut script = BrowserScript::spawn("sanitizer.mjs", &[])?;
    if let Err(e) = script.browser_version().await {
        let why = script.finish().await.err();
        bail!("{e}; {why:?}");
    }
    script.finish().await?;
    Ok(())
}
