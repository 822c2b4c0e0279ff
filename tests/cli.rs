//! The binary's own command line, no services needed: the committed example
//! `registration.yaml` is exactly what `generate-registration` writes (tokens aside), so the
//! two cannot drift apart.

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
