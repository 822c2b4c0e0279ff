//! Commands that work on the database without a service: dead letters, erasure, link codes and
//! service levels; and a second instance on one SQLite database refused.

use super::*;

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
