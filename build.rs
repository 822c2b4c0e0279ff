//! Records which commit the binary is built from, for `switchboard --version` and the start-up
//! log, so a bug report can name the exact build.
//!
//! `SWITCHBOARD_BUILD_COMMIT` is `git rev-parse --short=12 HEAD`, with `-dirty` when tracked
//! files differ from that commit. Outside a git checkout (a source archive) it is taken from
//! the environment variable of the same name, or is `unknown`.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

const VAR: &str = "SWITCHBOARD_BUILD_COMMIT";

fn main() {
    println!("cargo:rerun-if-env-changed={VAR}");
    let commit = git_commit().unwrap_or_else(|| {
        std::env::var(VAR)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .unwrap_or_else(|| "unknown".to_owned())
    });
    println!("cargo:rustc-env={VAR}={commit}");
}

/// `git ARGS` in the package directory; `None` if git is missing or fails (not a checkout).
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

fn git_commit() -> Option<String> {
    let head = git(&["rev-parse", "--short=12", "HEAD"])?;
    watch_git_files();
    // `--no-optional-locks`: a build must not rewrite the index behind the developer's back
    // (and so retrigger itself through the index watched below).
    let status = git(&[
        "--no-optional-locks",
        "status",
        "--porcelain",
        "--untracked-files=no",
    ])?;
    Some(if status.is_empty() {
        head
    } else {
        format!("{head}-dirty")
    })
}

/// Tells cargo to run this script again when the commit or the tree's cleanliness may have
/// changed. Paths come from git itself, so a worktree (where `.git` is a file pointing
/// elsewhere, and refs live in the common directory) works like a plain clone.
fn watch_git_files() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let absolute = |p: String| -> PathBuf { here.join(p) };
    let Some(git_dir) = git(&["rev-parse", "--git-dir"]).map(absolute) else {
        return;
    };
    let common_dir = git(&["rev-parse", "--git-common-dir"])
        .map(absolute)
        .unwrap_or_else(|| git_dir.clone());
    let mut watched = vec![git_dir.join("HEAD"), git_dir.join("index")];
    // HEAD names a branch; the branch's ref file (or packed-refs) moves on every commit.
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(common_dir.join(branch));
    }
    watched.push(common_dir.join("packed-refs"));
    // Edits to tracked files make the tree dirty without touching anything under .git.
    if let Some(files) = git(&["ls-files", "-z"]) {
        watched.extend(
            files
                .split('\0')
                .filter(|f| !f.is_empty())
                .map(|f| here.join(f)),
        );
    }
    for path in watched {
        // A path that does not exist would make cargo rerun this script on every build.
        if path.exists() {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
}
