//! The binary's own command line: `--version` names the commit it was built from, the
//! committed example `registration.yaml` is exactly what `generate-registration` writes
//! (tokens aside), so the two cannot drift apart, the `dead-letters` commands work on the
//! database, and `link-code` names its platform (none of these needs a service); and
//! `check-config` against the real parts `scripts/test.sh` starts (Synapse, PostgreSQL) and
//! the Telegram and Discord stand-ins.

mod binary;
mod check_config;
#[path = "../common/mod.rs"]
mod common;
mod offline;

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
