//! The binary's own command line, no services needed: `--version` names the commit it was
//! built from, the committed example `registration.yaml` is exactly what
//! `generate-registration` writes (tokens aside), so the two cannot drift apart, the
//! `dead-letters` commands work on the database, and `link-code` names its platform.

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

/// The placeholder the example carries instead of real tokens.
const PLACEHOLDER: &str = "EXAMPLE-ONLY-run-switchboard-generate-registration-for-real-tokens";

#[test]
fn the_example_registration_is_what_generate_registration_writes() -> anyhow::Result<()> {
    let example_path = Path::new(env!("CARGO_MANIFEST_DIR")).join("registration.yaml");
    let example = std::fs::read_to_string(&example_path)?;
    // The example's header comment names the exact command that produced it; run that.
    let command = example
        .lines()
        .find_map(|l| l.strip_prefix("# Example output of `switchboard "))
        .and_then(|l| l.split_once('`'))
        .map(|(cmd, _)| cmd.to_owned())
        .context("the example's first line names no `switchboard ...` command")?;
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
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[homeserver]\nurl = \"http://127.0.0.1:9\"\nserver_name = \"example.org\"\n\n\
             [appservice]\nregistration = \"registration.yaml\"\nlisten = \"127.0.0.1:0\"\n\n\
             [database]\nurl = \"{db}\"\n"
        ),
    )?;
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
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[homeserver]\nurl = \"http://127.0.0.1:9\"\nserver_name = \"example.org\"\n\n\
             [appservice]\nregistration = \"registration.yaml\"\nlisten = \"127.0.0.1:0\"\n\n\
             [database]\nurl = \"{db}\"\n"
        ),
    )?;
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
    let db = format!("sqlite://{}", dir.path().join("switchboard.db").display());
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[homeserver]\nurl = \"http://127.0.0.1:9\"\nserver_name = \"example.org\"\n\n\
             [appservice]\nregistration = \"registration.yaml\"\nlisten = \"127.0.0.1:0\"\n\n\
             [database]\nurl = \"{db}\"\n\n\
             [[responders]]\nid = \"alex\"\ndisplay_name = \"Alex\"\ntopics = [\"support\"]\n"
        ),
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
