//! The binary itself: `--version` names its commit, `openapi` prints each API's document, the
//! example registration is what `generate-registration` writes, the start-up log names the
//! version, and logs can be JSON lines.

use super::*;

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
