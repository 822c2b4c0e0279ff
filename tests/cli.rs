//! The binary's own command line: `--version` names the commit it was built from, the
//! committed example `registration.yaml` is exactly what `generate-registration` writes
//! (tokens aside), so the two cannot drift apart, the `dead-letters` commands work on the
//! database, and `link-code` names its platform (none of these needs a service); and
//! `check-config` against the real parts `scripts/test.sh` starts (Synapse, PostgreSQL) and
//! the Telegram and Discord stand-ins.

mod common;

use std::{
    path::Path,
    process::{Command, Output},
};

use anyhow::{Context, bail};

const BIN: &str = env!("CARGO_BIN_EXE_switchboard");

fn switchboard(args: &[&str]) -> anyhow::Result<Output> {
    // Cargo builds this very binary for the test; SWITCHBOARD_BIN may point elsewhere.
    let out = Command::new(BIN)
        .args(args)
        .output()
        .with_context(|| format!("running {BIN}"))?;
    if !out.status.success() {
        bail!(
            "switchboard {args:?} exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

/// `git ARGS` in the source tree; `None` outside a git checkout (e.g. a source tarball).
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

#[test]
fn version_names_the_commit_the_binary_was_built_from() -> anyhow::Result<()> {
    let out = switchboard(&["--version"])?;
    let version = String::from_utf8(out.stdout)?.trim().to_owned();
    let prefix = format!("switchboard {} (", env!("CARGO_PKG_VERSION"));
    let commit = version
        .strip_prefix(&prefix)
        .and_then(|rest| rest.strip_suffix(')'))
        .with_context(|| format!("expected `{prefix}COMMIT)`, got {version:?}"))?;
    match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(head) => {
            // The test binary and the switchboard binary are built by the same `cargo test`,
            // from the same tree, so the commit must be the one checked out now.
            let dirty = git(&[
                "--no-optional-locks",
                "status",
                "--porcelain",
                "--untracked-files=no",
            ])
            .is_some_and(|s| !s.is_empty());
            let expected = if dirty { format!("{head}-dirty") } else { head };
            assert_eq!(commit, expected, "from {version:?}");
        }
        // Outside git the build falls back to SWITCHBOARD_BUILD_COMMIT, then "unknown".
        None => assert!(!commit.is_empty(), "{version:?}"),
    }
    Ok(())
}

/// `switchboard openapi admin|visitor` prints the very documents the service serves, with no
/// configuration at all.
#[test]
fn openapi_prints_each_apis_document() -> anyhow::Result<()> {
    for (api, document, prefix) in [
        (
            "admin",
            switchboard_bridge::admin_api::openapi(),
            "/admin/v1/",
        ),
        (
            "visitor",
            switchboard_bridge::visitor_api::openapi(),
            "/api/v1/",
        ),
    ] {
        let out = switchboard(&["openapi", api])?;
        let printed: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("`openapi {api}` printed no JSON"))?;
        assert_eq!(printed, serde_json::to_value(document)?, "{api}");
        assert_eq!(printed["openapi"], "3.1.0");
        let paths = printed["paths"].as_object().context("paths")?;
        assert!(
            !paths.is_empty() && paths.keys().all(|p| p.starts_with(prefix)),
            "{api}: {:?}",
            paths.keys().collect::<Vec<_>>()
        );
    }
    let refused = Command::new(BIN).args(["openapi", "telegram"]).output()?;
    assert!(!refused.status.success());
    Ok(())
}

/// The committed example registration's text, and the `generate-registration` command its
/// header names (without the leading `switchboard`).
fn example_registration() -> anyhow::Result<(String, String)> {
    let example =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("registration.yaml"))?;
    let command = example
        .lines()
        .find_map(|l| l.strip_prefix("# Example output of `switchboard "))
        .and_then(|l| l.split_once('`'))
        .map(|(cmd, _)| cmd.to_owned())
        .context("the example's first line names no `switchboard ...` command")?;
    Ok((example, command))
}

/// The placeholder the example carries instead of real tokens.
const PLACEHOLDER: &str = "EXAMPLE-ONLY-run-switchboard-generate-registration-for-real-tokens";

#[test]
fn the_example_registration_is_what_generate_registration_writes() -> anyhow::Result<()> {
    // The example's header comment names the exact command that produced it; run that.
    let (example, command) = example_registration()?;
    let mut args: Vec<&str> = command.split_whitespace().collect();
    args.extend(["--output", "-"]);
    let generated = String::from_utf8(switchboard(&args)?.stdout)?;

    // Only the random tokens may differ: put the placeholder in their place.
    let mut tokens = 0;
    let normalised: String = generated
        .lines()
        .map(|line| match line.split_once(": ") {
            Some((key @ ("as_token" | "hs_token"), value)) => {
                assert!(
                    value.len() >= 32 && value.chars().all(|c| c.is_ascii_alphanumeric()),
                    "{key} is not a fresh random token: {value:?}"
                );
                tokens += 1;
                format!("{key}: {PLACEHOLDER}\n")
            }
            _ => format!("{line}\n"),
        })
        .collect();
    assert_eq!(tokens, 2, "generated:\n{generated}");
    let body: String = example
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(
        body, normalised,
        "registration.yaml differs from `switchboard {command}`: regenerate the example"
    );
    Ok(())
}

#[test]
fn the_start_up_log_names_the_version_even_when_start_up_fails() -> anyhow::Result<()> {
    let version = String::from_utf8(switchboard(&["--version"])?.stdout)?;
    let version = version.trim().trim_start_matches("switchboard ");
    let dir = tempfile::tempdir()?;
    let out = Command::new(BIN)
        .args(["run", "--config"])
        .arg(dir.path().join("no-such-config.toml"))
        .env("RUST_LOG", "info")
        .output()?;
    assert!(!out.status.success(), "it started without a configuration");
    // tracing writes to standard output, the final error to standard error.
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(
        log.lines()
            .next()
            .is_some_and(|first| first.contains("starting") && first.contains(version)),
        "the first log line does not name version {version:?}:\n{log}"
    );
    Ok(())
}

/// `SWITCHBOARD_LOG_FORMAT=json`: every log line is a JSON object a collector can read, with
/// the level and the fields; a format it does not know is refused before anything runs.
#[test]
fn logs_can_be_json_lines() -> anyhow::Result<()> {
    let version = String::from_utf8(switchboard(&["--version"])?.stdout)?;
    let version = version.trim().trim_start_matches("switchboard ").to_owned();
    let dir = tempfile::tempdir()?;
    let run = |format: &str| {
        Command::new(BIN)
            .args(["run", "--config"])
            .arg(dir.path().join("no-such-config.toml"))
            .env("RUST_LOG", "info")
            .env("SWITCHBOARD_LOG_FORMAT", format)
            .output()
    };
    let out = run("json")?;
    assert!(!out.status.success(), "it started without a configuration");
    let log = String::from_utf8_lossy(&out.stdout);
    assert!(!log.trim().is_empty(), "nothing logged");
    for line in log.lines() {
        let entry: serde_json::Value =
            serde_json::from_str(line).map_err(|e| anyhow::anyhow!("not JSON ({e}): {line}"))?;
        assert!(entry["level"].is_string(), "no level: {line}");
    }
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap_or_default())?;
    assert_eq!(first["level"], "INFO");
    assert_eq!(first["fields"]["message"], "switchboard starting");
    assert!(
        first["fields"]["version"]
            .as_str()
            .is_some_and(|v| v.contains(&version)),
        "{first}"
    );
    let out = run("xml")?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("SWITCHBOARD_LOG_FORMAT=\"xml\""), "{err}");
    assert!(out.stdout.is_empty(), "logged before refusing: {out:?}");
    Ok(())
}

#[test]
fn dead_letters_are_listed_and_a_retry_puts_the_event_back_in_the_inbox() -> anyhow::Result<()> {
    use switchboard_bridge::{
        Store,
        store::{DeadLetterSource, NewInboxEvent},
    };
    let dir = tempfile::tempdir()?;
    let (config, db) = offline_config(dir.path(), "")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let (seq, id) = runtime.block_on(async {
        let store = Store::connect(&db).await?;
        store
            .record_events(
                "t1",
                &[NewInboxEvent {
                    event_id: "$stuck",
                    room_id: "!room:example.org",
                    event_json: "{}",
                }],
            )
            .await?;
        let seq = store.pending_events(1).await?[0].seq;
        let id = store
            .set_aside(
                DeadLetterSource::Inbox,
                seq,
                Some("!room:example.org"),
                "database error: disk I/O error",
                5,
            )
            .await?;
        store.close().await;
        anyhow::Ok((seq, id))
    })?;
    let config = config.to_str().context("a UTF-8 path")?;

    let list =
        String::from_utf8(switchboard(&["dead-letters", "list", "--config", config])?.stdout)?;
    let mut lines = list.lines();
    let header = lines.next().context("a header")?;
    assert!(
        header.starts_with("ID") && header.contains("REASON"),
        "{list}"
    );
    let row = lines.next().context("a row")?;
    for expected in [
        id.to_string(),
        format!("inbox {seq}"),
        "!room:example.org".into(),
        "database error: disk I/O error".into(),
    ] {
        assert!(row.contains(&expected), "{expected:?} missing from {row:?}");
    }

    let id = id.to_string();
    let retried = String::from_utf8(
        switchboard(&["dead-letters", "retry", &id, "--config", config])?.stdout,
    )?;
    assert!(
        retried.contains(&format!("retried dead letter {id}")),
        "{retried}"
    );
    let again = Command::new(BIN)
        .args(["dead-letters", "retry", &id, "--config", config])
        .output()?;
    assert!(!again.status.success(), "a dead letter was retried twice");
    assert!(
        String::from_utf8_lossy(&again.stderr).contains(&format!("no dead letter {id}")),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let list =
        String::from_utf8(switchboard(&["dead-letters", "list", "--config", config])?.stdout)?;
    assert_eq!(list.lines().count(), 1, "only the header is left: {list}");
    let pending = runtime.block_on(async {
        let store = Store::connect(&db).await?;
        let pending = store.pending_events(10).await?;
        store.close().await;
        anyhow::Ok(pending)
    })?;
    assert_eq!(
        pending
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        ["$stuck"],
        "the event is waiting for the worker again"
    );
    Ok(())
}

/// SQLite serves one running Switchboard at a time: `run` is refused while another holds the
/// database's instance lock (this test holds it, as a running instance would), with a message
/// that names it, before it touches the database or the homeserver.
#[test]
fn a_second_instance_on_the_same_sqlite_database_is_refused() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (config, _) = offline_config(dir.path(), "")?;
    // A registration as the example's header says to make one.
    let (_, command) = example_registration()?;
    let registration = dir.path().join("registration.yaml");
    let mut args: Vec<&str> = command.split_whitespace().collect();
    args.extend(["--output", registration.to_str().context("a UTF-8 path")?]);
    anyhow::ensure!(
        switchboard(&args)?.status.success(),
        "generate-registration"
    );
    let running = std::fs::File::create(dir.path().join("switchboard.db.instance-lock"))?;
    running.lock()?;
    let mut second = Command::new(BIN)
        .args(["run", "--config"])
        .arg(&config)
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    // Refused at once; one that got past the lock would wait for the homeserver.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = second.try_wait()? {
            break status;
        }
        if std::time::Instant::now() > deadline {
            second.kill()?;
            anyhow::bail!("the second instance was not refused: it kept running");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut second.stderr.take().context("stderr")?, &mut err)?;
    assert!(!status.success());
    assert!(
        err.contains("another Switchboard") && err.contains("switchboard.db.instance-lock"),
        "{err}"
    );
    assert!(
        !dir.path().join("switchboard.db").exists(),
        "the refused instance did not touch the database"
    );
    drop(running);
    Ok(())
}

/// A configuration in `dir` with a fresh SQLite database and a homeserver nobody listens at,
/// for the commands that only use the database; `extra` is appended. Answers its path and
/// the database URL.
fn offline_config(
    dir: &std::path::Path,
    extra: &str,
) -> anyhow::Result<(std::path::PathBuf, String)> {
    let db = format!("sqlite://{}", dir.join("switchboard.db").display());
    let config = dir.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[homeserver]\nurl = \"http://127.0.0.1:9\"\nserver_name = \"example.org\"\n\n\
             [appservice]\nregistration = \"registration.yaml\"\nlisten = \"127.0.0.1:0\"\n\n\
             [database]\nurl = \"{db}\"\n\n{extra}"
        ),
    )?;
    Ok((config, db))
}

/// `conversations erase --store-only` erases a closed conversation from the database without
/// a homeserver (the configuration names one nobody listens on) and prints what it deleted;
/// without `--store-only` it needs the homeserver and says so, deleting nothing; an open
/// conversation is refused with what to do.
#[test]
fn a_closed_conversation_is_erased_from_the_database_on_the_command_line() -> anyhow::Result<()> {
    use switchboard_bridge::{
        Store,
        conversation::{Conversation, ConversationState},
    };
    let dir = tempfile::tempdir()?;
    let (config, db) = offline_config(dir.path(), "")?;
    let runtime = tokio::runtime::Runtime::new()?;
    let conversation = |room: &str, state| Conversation {
        room_id: room.into(),
        topic: "support".into(),
        visitor_user_id: "@123:example.org".into(),
        visitor_alias: "Visitor 1B2C".into(),
        state,
        created_at: 1,
        language: None,
    };
    runtime.block_on(async {
        let store = Store::connect(&db).await?;
        store
            .insert_conversation(&conversation(
                "!closed:example.org",
                ConversationState::Closed,
            ))
            .await?;
        store
            .insert_conversation(&conversation(
                "!open:example.org",
                ConversationState::Active,
            ))
            .await?;
        store.close().await;
        anyhow::Ok(())
    })?;
    let config = config.to_str().context("a UTF-8 path")?;
    let erase = |args: &[&str]| {
        let mut all = vec!["conversations", "erase", "--config", config];
        all.extend_from_slice(args);
        Command::new(BIN).args(&all).output()
    };

    let out = erase(&["!open:example.org", "--store-only"])?;
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("not closed") && err.contains("ends it"),
        "{err}"
    );

    let out = erase(&["!closed:example.org"])?;
    assert!(!out.status.success(), "erased without its homeserver");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--store-only"), "{err}");

    let out = erase(&["!closed:example.org", "--store-only"])?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The JSON follows the log lines the command writes to standard output too.
    let stdout = String::from_utf8(out.stdout)?;
    let json = stdout
        .find("\n{")
        .map_or(stdout.as_str(), |at| &stdout[at + 1..]);
    let printed: serde_json::Value = serde_json::from_str(json).context(stdout.clone())?;
    assert_eq!(printed["homeserver"]["method"], "not_asked");
    assert_eq!(printed["rows_deleted"]["conversations"], 1);
    assert!(String::from_utf8_lossy(&out.stderr).contains("still on the homeserver"));
    let left = runtime.block_on(async {
        let store = Store::connect(&db).await?;
        let left = (
            store.conversation("!closed:example.org").await?.is_some(),
            store.conversation("!open:example.org").await?.is_some(),
        );
        store.close().await;
        anyhow::Ok(left)
    })?;
    assert_eq!(left, (false, true));
    Ok(())
}

/// `link-code` assumes no platform: without `--platform` it refuses and names the platforms
/// whose responders link by code (from the registry); with one of them it issues a code; a
/// platform without a bot to send it to is refused with the same list.
#[test]
fn link_code_needs_a_platform_and_names_the_ones_it_knows() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (config, _db) = offline_config(
        dir.path(),
        "[[responders]]\nid = \"alex\"\ndisplay_name = \"Alex\"\ntopics = [\"support\"]\n",
    )?;
    let config = config.to_str().context("a UTF-8 path")?;
    let run = |extra: &[&str]| {
        let mut args = vec!["link-code", "--responder", "alex", "--config", config];
        args.extend_from_slice(extra);
        Command::new(BIN).args(&args).output()
    };

    let without = run(&[])?;
    let stderr = String::from_utf8_lossy(&without.stderr);
    assert!(
        !without.status.success(),
        "a code was issued for no platform"
    );
    assert!(
        stderr.contains("--platform is required") && stderr.contains("one of: telegram"),
        "{stderr}"
    );

    let issued = run(&["--platform", "telegram"])?;
    assert!(
        issued.status.success(),
        "{}",
        String::from_utf8_lossy(&issued.stderr)
    );
    assert_eq!(String::from_utf8(issued.stdout)?.trim().len(), 10);

    let matrix = run(&["--platform", "matrix"])?;
    let stderr = String::from_utf8_lossy(&matrix.stderr);
    assert!(!matrix.status.success());
    assert!(
        stderr.contains("with a bot to send them to (telegram, discord)"),
        "{stderr}"
    );
    Ok(())
}

/// `switchboard check-config --config CONFIG --timeout 3`: whether it exited 0, and what it
/// printed (standard output, then standard error). Run off the async runtime, which serves
/// the stand-ins it talks to meanwhile.
async fn check_config(config: &Path) -> anyhow::Result<(bool, String)> {
    let config = config.to_owned();
    tokio::task::spawn_blocking(move || {
        let out = Command::new(BIN)
            .args(["check-config", "--timeout", "3", "--config"])
            .arg(&config)
            .output()?;
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        anyhow::Ok((out.status.success(), text))
    })
    .await?
}

/// The line `check-config` printed for `what` at `level` (`ok`, `warn`, `FAIL`), if any.
fn check_line<'a>(output: &'a str, level: &str, what: &str) -> Option<&'a str> {
    output.lines().find(|line| {
        let mut words = line.split_whitespace();
        words.next() == Some(level) && words.next() == Some(what)
    })
}

/// A configuration for the main Synapse with `registration`, listening where slot 0's
/// registration sends events. check-config binds nothing and asks the homeserver for nothing
/// but `/versions` and `whoami`, so it may read the slot's registration while the slot is
/// another test binary's (test binaries run one at a time anyway).
fn check_config_toml(
    env: &common::TestEnv,
    slot: &common::Slot,
    registration: &Path,
    database: &str,
    extra: &str,
) -> String {
    format!(
        "[homeserver]\nurl = {hs:?}\nserver_name = {server:?}\n\n\
         [appservice]\nregistration = {reg:?}\nlisten = \"{listen}\"\n\n\
         [database]\nurl = {database:?}\n\n{extra}",
        hs = env.hs_url,
        server = env.server_name,
        reg = registration.display().to_string(),
        listen = slot.listen,
    )
}

const CHECK_TG_TOKEN: &str = "7001:check-config-telegram-secret";
const CHECK_DC_TOKEN: &str = "MTA.check-config.discord-secret";

/// A configuration that works end to end: every check is listed as ok, the command exits 0,
/// and nothing it printed holds a token (the registration's, Telegram's, Discord's). The
/// database is read, never created or migrated: a new SQLite file is reported as missing
/// (and stays so); once `Store::connect` migrated it, every migration is applied; the
/// PostgreSQL server is read as it is.
#[tokio::test]
async fn check_config_lists_every_check_as_ok_for_a_working_configuration() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let tg = telegram_standin::StandIn::start(CHECK_TG_TOKEN).await?;
    let dc = discord_standin::DiscordStandIn::start(CHECK_DC_TOKEN).await?;
    let dir = tempfile::tempdir()?;
    let db_file = dir.path().join("switchboard.db");
    let db = format!("sqlite://{}", db_file.display());
    let platforms = format!(
        "[telegram]\ntoken = {CHECK_TG_TOKEN:?}\napi_url = {tg_api:?}\n\n\
         [discord]\ntoken = {CHECK_DC_TOKEN:?}\napplication_id = \"{app}\"\napi_url = {dc_api:?}\n",
        tg_api = tg.api_url(),
        app = dc.application_id(),
        dc_api = dc.base_url(),
    );
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        check_config_toml(&env, &slot, &slot.registration, &db, &platforms),
    )?;

    let (passed, out) = check_config(&config).await?;
    assert!(passed, "check-config failed:\n{out}");
    let bot = env.user_id(&format!("sbt{}bot", 0));
    let homeserver = check_line(&out, "ok", "homeserver").context(out.clone())?;
    assert!(
        homeserver.contains(&env.hs_url)
            && homeserver.contains("(Synapse ")
            && homeserver.contains("as_token accepted")
            && homeserver.contains(&bot),
        "{out}"
    );
    for what in ["config", "registration", "matrix"] {
        assert!(
            check_line(&out, "ok", what).is_some(),
            "no ok {what}:\n{out}"
        );
    }
    let database = check_line(&out, "ok", "database").context(out.clone())?;
    assert!(database.contains("does not exist yet"), "{out}");
    assert!(!db_file.exists(), "check-config created the database");
    let telegram = check_line(&out, "ok", "telegram").context(out.clone())?;
    assert!(telegram.contains("getMe: @"), "{out}");
    let discord = check_line(&out, "ok", "discord").context(out.clone())?;
    assert!(discord.contains("GET /users/@me"), "{out}");
    assert!(
        !out.contains("FAIL") && !out.contains("warn "),
        "a failure or warning in a working configuration:\n{out}"
    );
    for secret in [
        slot.as_token.as_str(),
        slot.hs_token.as_str(),
        CHECK_TG_TOKEN,
        CHECK_DC_TOKEN,
    ] {
        assert!(!out.contains(secret), "a secret was printed:\n{out}");
    }

    // Migrated by what `run` uses: every migration this build has is applied.
    let migrations =
        std::fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("bridge/migrations/sqlite"))?
            .count();
    switchboard_bridge::Store::connect(&db).await?.close().await;
    let (passed, out) = check_config(&config).await?;
    assert!(passed, "{out}");
    let database = check_line(&out, "ok", "database").context(out.clone())?;
    assert!(
        database.contains(&format!("{migrations} migrations applied, none pending")),
        "{out}"
    );

    // PostgreSQL, as the test server is.
    let pg = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")?;
    std::fs::write(
        &config,
        check_config_toml(&env, &slot, &slot.registration, &pg, ""),
    )?;
    let (passed, out) = check_config(&config).await?;
    assert!(passed, "{out}");
    assert!(
        check_line(&out, "ok", "database").is_some_and(|l| l.contains("postgres://")),
        "{out}"
    );
    Ok(())
}

/// A registration the homeserver does not list (its as_token unknown to it) is reported as
/// such, with how to fix it, and the command exits non-zero, printing neither token.
#[tokio::test]
async fn check_config_reports_a_registration_the_homeserver_does_not_know() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let dir = tempfile::tempdir()?;
    let unknown_token = "check-config-unknown-as-token-0123456789";
    let registration = dir.path().join("registration.yaml");
    std::fs::write(
        &registration,
        std::fs::read_to_string(&slot.registration)?.replace(&slot.as_token, unknown_token),
    )?;
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        check_config_toml(&env, &slot, &registration, &db, ""),
    )?;

    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "an unknown as_token passed:\n{out}");
    let homeserver = check_line(&out, "FAIL", "homeserver").context(out.clone())?;
    assert!(
        homeserver.contains("M_UNKNOWN_TOKEN")
            && homeserver.contains("app_service_config_files")
            && homeserver.contains(&registration.display().to_string()),
        "{out}"
    );
    // The other checks still ran.
    assert!(check_line(&out, "ok", "database").is_some(), "{out}");
    assert!(out.contains("1 check failed"), "{out}");
    for secret in [unknown_token, slot.hs_token.as_str()] {
        assert!(!out.contains(secret), "a token was printed:\n{out}");
    }
    Ok(())
}

/// Wrong Telegram and Discord bot tokens, checked against the stand-ins: each platform's
/// line says FAIL, why, and where the right token comes from; neither token is printed.
#[tokio::test]
async fn check_config_reports_wrong_platform_tokens_without_printing_them() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let tg = telegram_standin::StandIn::start(CHECK_TG_TOKEN).await?;
    let dc = discord_standin::DiscordStandIn::start(CHECK_DC_TOKEN).await?;
    let wrong_tg = "7001:a-wrong-telegram-token";
    let wrong_dc = "MTA.a-wrong.discord-token";
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let config = dir.path().join("config.toml");
    // The Discord token from a file, as container secrets are mounted.
    let dc_token_file = dir.path().join("discord-token");
    std::fs::write(&dc_token_file, format!("{wrong_dc}\n"))?;
    std::fs::write(
        &config,
        check_config_toml(
            &env,
            &slot,
            &slot.registration,
            &db,
            &format!(
                "[telegram]\ntoken = {wrong_tg:?}\napi_url = {tg_api:?}\n\n\
                 [discord]\ntoken_file = {file:?}\napplication_id = \"{app}\"\napi_url = {dc_api:?}\n",
                tg_api = tg.api_url(),
                file = dc_token_file.display().to_string(),
                app = dc.application_id(),
                dc_api = dc.base_url(),
            ),
        ),
    )?;

    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "wrong tokens passed:\n{out}");
    let telegram = check_line(&out, "FAIL", "telegram").context(out.clone())?;
    assert!(
        telegram.contains("getMe")
            && telegram.contains("Unauthorized")
            && telegram.contains("@BotFather"),
        "{out}"
    );
    let discord = check_line(&out, "FAIL", "discord").context(out.clone())?;
    assert!(
        discord.contains("401") && discord.contains("Reset Token"),
        "{out}"
    );
    assert!(check_line(&out, "ok", "homeserver").is_some(), "{out}");
    assert!(out.contains("2 checks failed"), "{out}");
    for secret in [wrong_tg, wrong_dc, slot.as_token.as_str()] {
        assert!(!out.contains(secret), "a token was printed:\n{out}");
    }
    Ok(())
}

/// A database that cannot be reached fails clearly and in bounded time, never printing a
/// PostgreSQL password: a SQLite file in a directory that does not exist, a PostgreSQL port
/// nothing listens on, and one that takes the connection but never answers (cut off at
/// `--timeout`).
#[tokio::test]
async fn check_config_fails_clearly_on_an_unreachable_database() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    // Bound and never accepted: the kernel completes the connection, nobody answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0")?;
    let password = "db-secret-password";
    let cases = [
        (
            format!(
                "sqlite://{}",
                dir.path().join("no-such-dir/switchboard.db").display()
            ),
            "no-such-dir",
        ),
        (
            format!("postgres://switchboard:{password}@{closed}/switchboard"),
            "Connection refused",
        ),
        (
            format!(
                "postgres://switchboard:{password}@{}/switchboard",
                silent.local_addr()?
            ),
            "no answer within 3 s",
        ),
    ];
    for (url, says) in cases {
        std::fs::write(
            &config,
            check_config_toml(&env, &slot, &slot.registration, &url, ""),
        )?;
        let started = std::time::Instant::now();
        let (passed, out) = check_config(&config).await?;
        assert!(!passed, "{url}: passed:\n{out}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(20),
            "{url}: took {:?}",
            started.elapsed()
        );
        let database = check_line(&out, "FAIL", "database").context(out.clone())?;
        assert!(
            database.contains(says) && database.contains("database.url"),
            "{url}: {out}"
        );
        assert!(!out.contains(password), "the password was printed:\n{out}");
        assert!(check_line(&out, "ok", "homeserver").is_some(), "{out}");
    }
    drop(silent);
    Ok(())
}

/// The `[email]` section (and `[visitors] public_url`, which it needs) for the test mail
/// server `scripts/test.sh` starts, logging in to SMTP and IMAP with `password`.
fn check_email_section(password: &str) -> anyhow::Result<String> {
    let var =
        |name: &str| std::env::var(name).with_context(|| format!("{name}: run scripts/test.sh"));
    Ok(format!(
        "[visitors]\npublic_url = \"http://127.0.0.1:1\"\n\n\
         [email]\ndomain = \"example.test\"\nfrom_address = \"support@example.test\"\n\n\
         [email.smtp]\nhost = \"127.0.0.1\"\nport = {smtp}\nsecurity = \"none\"\n\
         username = \"support@example.test\"\npassword = {password:?}\n\n\
         [email.imap]\nhost = \"127.0.0.1\"\nport = {imap}\nsecurity = \"none\"\n\
         username = \"check-config@example.test\"\npassword = {password:?}\n\n\
         [email.authentication]\nnameservers = [{dns:?}]\n",
        smtp = var("SWITCHBOARD_TEST_SMTP_PORT")?,
        imap = var("SWITCHBOARD_TEST_IMAP_PORT")?,
        dns = var("SWITCHBOARD_TEST_DNS")?,
    ))
}

/// Email against the real mail server (Dovecot behind an SMTP front): with the right
/// password SMTP takes the AUTH and IMAP the login, nothing sent; with a wrong one both
/// refusals are named, the command fails, and the password is printed nowhere.
#[tokio::test]
async fn check_config_logs_in_to_smtp_and_imap_and_names_a_refused_login() -> anyhow::Result<()> {
    let env = common::TestEnv::from_env();
    let slot = common::Slot::load(&env, 0)?;
    let dir = tempfile::tempdir()?;
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let config = dir.path().join("config.toml");
    let password = std::env::var("SWITCHBOARD_TEST_MAIL_PASSWORD")?;
    std::fs::write(
        &config,
        check_config_toml(
            &env,
            &slot,
            &slot.registration,
            &db,
            &check_email_section(&password)?,
        ),
    )?;
    let (passed, out) = check_config(&config).await?;
    assert!(passed, "{out}");
    let email = check_line(&out, "ok", "email").context(out.clone())?;
    assert!(
        email.contains("AUTH accepted")
            && email.contains("logged in as \"check-config@example.test\""),
        "{out}"
    );
    assert!(!out.contains(&password), "the password was printed:\n{out}");

    let wrong = "a-wrong-mail-password";
    std::fs::write(
        &config,
        check_config_toml(
            &env,
            &slot,
            &slot.registration,
            &db,
            &check_email_section(wrong)?,
        ),
    )?;
    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "a wrong mail password passed:\n{out}");
    let email = check_line(&out, "FAIL", "email").context(out.clone())?;
    assert!(
        email.contains("SMTP") && email.contains("535") && email.contains("refused the login"),
        "{out}"
    );
    assert!(!out.contains(wrong), "the password was printed:\n{out}");
    Ok(())
}

/// Without a configuration nothing else is tried, and the line says which file; with a
/// registration file that is not there, the registration fails naming the file and how to
/// make one, the homeserver (whose token it holds) is skipped, and the rest is still checked.
#[tokio::test]
async fn check_config_names_a_missing_configuration_or_registration() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("config.toml");
    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "{out}");
    let line = check_line(&out, "FAIL", "config").context(out.clone())?;
    assert!(line.contains("config.toml"), "{out}");
    assert!(check_line(&out, "skip", "everything").is_some(), "{out}");

    let registration = dir.path().join("no-such-registration.yaml");
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    std::fs::write(
        &config,
        format!(
            "[homeserver]\nurl = \"http://127.0.0.1:9\"\nserver_name = \"example.org\"\n\n\
             [appservice]\nregistration = {reg:?}\nlisten = \"127.0.0.1:29330\"\n\n\
             [database]\nurl = {db:?}\n",
            reg = registration.display().to_string(),
        ),
    )?;
    let (passed, out) = check_config(&config).await?;
    assert!(!passed, "{out}");
    let line = check_line(&out, "FAIL", "registration").context(out.clone())?;
    assert!(
        line.contains("no-such-registration.yaml") && line.contains("generate-registration"),
        "{out}"
    );
    assert!(check_line(&out, "skip", "homeserver").is_some(), "{out}");
    assert!(check_line(&out, "ok", "database").is_some(), "{out}");
    assert!(check_line(&out, "ok", "matrix").is_some(), "{out}");
    assert!(out.contains("1 check failed"), "{out}");
    Ok(())
}

#[test]
fn service_levels_report_first_reply_waits_against_the_topics_target() -> anyhow::Result<()> {
    use switchboard_bridge::{
        Store,
        conversation::{Conversation, ConversationState},
        store::Milestone,
    };
    let dir = tempfile::tempdir()?;
    let (config, db) = offline_config(
        dir.path(),
        "[[topics]]\nid = \"support\"\nname = \"Support\"\nfirst_reply_target_secs = 300\n",
    )?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let store = Store::connect(&db).await?;
        // Answered after 2 and after 9 minutes; one more started a day ago, unanswered.
        for (room, started, reply) in [
            ("!a:example.org", now - 3_600_000, Some(120_000)),
            ("!b:example.org", now - 3_000_000, Some(540_000)),
            ("!c:example.org", now - 86_400_000, None),
        ] {
            store
                .insert_conversation(&Conversation {
                    room_id: room.into(),
                    topic: "support".into(),
                    visitor_user_id: "@v:example.org".into(),
                    visitor_alias: "Visitor 0001".into(),
                    state: ConversationState::Queued,
                    created_at: started,
                    language: None,
                })
                .await?;
            if let Some(after) = reply {
                store
                    .reach_milestone(room, Milestone::Accepted, started + 1_000, "telegram")
                    .await?;
                store
                    .reach_milestone(room, Milestone::FirstReply, started + after, "telegram")
                    .await?;
            }
        }
        store.close().await;
        anyhow::Ok(())
    })?;
    let config = config.to_str().context("a UTF-8 path")?;
    let out = switchboard(&["service-levels", "--config", config, "--json"])?;
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let levels = report["levels"].as_array().context("levels")?;
    let telegram = levels
        .iter()
        .find(|l| l["platform"] == "telegram")
        .context("a telegram row")?;
    assert_eq!(telegram["topic"], "support");
    assert_eq!(telegram["target_secs"], 300);
    assert_eq!(
        (telegram["met"].as_u64(), telegram["missed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(telegram["met_share"], 0.5);
    assert_eq!(telegram["median_wait_secs"], 120.0);
    assert_eq!(telegram["p90_wait_secs"], 540.0);
    let nobody = levels
        .iter()
        .find(|l| l["platform"] == "none")
        .context("the unanswered one")?;
    assert_eq!(nobody["missed"], 1);

    let text = String::from_utf8(switchboard(&["service-levels", "--config", config])?.stdout)?;
    let row = text
        .lines()
        .find(|l| l.starts_with("support") && l.contains("telegram"))
        .with_context(|| format!("no support/telegram row in:\n{text}"))?;
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert_eq!(
        cells,
        [
            "support", "telegram", "300", "s", "2", "2", "50%", "0", "120", "s", "540", "s"
        ]
    );

    let bad = Command::new(BIN)
        .args(["service-levels", "--config", config, "--from", "last week"])
        .output()?;
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("--from") && err.contains("RFC 3339"), "{err}");
    Ok(())
}
