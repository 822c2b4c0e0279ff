//! What happens to the victim of a crash burst: the kills (SIGKILL to Switchboard, Synapse or
//! PostgreSQL, then a start again), the platforms' faults, and the scripts that start and stop
//! the test services.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::Context;
use discord_standin::DiscordStandIn;
use serde_json::{Value, json};
use telegram_standin::StandIn;

use super::{Kill, Plan, Under, Victim};
use crate::{common::*, mail_thread::Mail};

/// Kills the victim `plan.kills` times at random points of the window, each time starting it
/// again after a random while; returns when each kill happened and how long it was down, and
/// what the visitor API answered `probe` (a visitor token it has not seen) starting a conversation while
/// Synapse was down.
pub(super) async fn kill_repeatedly(
    env: &TestEnv,
    under: &mut Under,
    (tg, dc, mail): (&StandIn, &DiscordStandIn, &Mail),
    victim: Victim,
    plan: &Plan,
    started: Instant,
    probe: Option<&str>,
) -> anyhow::Result<(Vec<Kill>, Vec<(u16, String, Duration)>)> {
    let mut answers = Vec::new();
    let mut rng = fastrand::Rng::with_seed(plan.seed);
    let window = plan.window.as_secs_f64();
    let mut points: Vec<f64> = (0..plan.kills)
        .map(|_| window * (0.05 + 0.9 * rng.f64()))
        .collect();
    points.sort_by(f64::total_cmp);
    let mut kills = Vec::new();
    for point in points {
        if let Some(wait) = Duration::from_secs_f64(point).checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
        let pause = match victim {
            Victim::SynapseOutage | Victim::Platforms => plan.max_down,
            _ => plan.max_down.mul_f64(0.2 + 0.8 * rng.f64()),
        };
        let killed = Instant::now();
        // A kill due while the last one was still down happens as soon as that is over.
        let at = started.elapsed();
        let mut takeover = None;
        match victim {
            Victim::Switchboard => {
                let sb = under.one()?;
                sb.kill();
                tokio::time::sleep(pause).await;
                sb.restart().await?;
            }
            Victim::Instances => {
                let (what, took) = under.hit(kills.len(), pause, tg).await?;
                takeover = took.map(|t| (what, t));
            }
            Victim::Platforms => {
                misbehave(tg, dc, mail, kills.len(), pause).await?;
            }
            Victim::Synapse | Victim::SynapseOutage => {
                let dir = env.dir.join("synapse");
                kill_9(&dir.join("synapse.pid"), false).await?;
                if let Some(token) = probe {
                    let asked = Instant::now();
                    let r = reqwest::Client::new()
                        .post(format!("{}/api/v1/conversations", under.base()))
                        .bearer_auth(token)
                        .json(&json!({"topic": "c0"}))
                        .send()
                        .await?;
                    let status = r.status().as_u16();
                    let body: Value = r.json().await.unwrap_or_default();
                    let errcode = body["errcode"].as_str().unwrap_or("").to_owned();
                    answers.push((status, errcode, asked.elapsed()));
                }
                tokio::time::sleep(pause.saturating_sub(killed.elapsed())).await;
                script(&["synapse.sh", "start", &path_str(&dir)])?;
            }
            Victim::Postgres => {
                kill_postgres(env).await?;
                tokio::time::sleep(pause).await;
                start_postgres(env)?;
            }
        }
        kills.push(Kill {
            at,
            down: killed.elapsed(),
            takeover,
        });
    }
    Ok((kills, answers))
}

/// Fault round `round` of [`Victim::Platforms`], on both stand-ins and the mail server at
/// once; each fault hits whichever send comes next (on the mail server, Switchboard's next
/// mail: its envelope sender is in the run's mail domain, the responders' are not). `away` is
/// how long a hang or an absence lasts.
async fn misbehave(
    tg: &StandIn,
    dc: &DiscordStandIn,
    mail: &Mail,
    round: usize,
    away: Duration,
) -> anyhow::Result<()> {
    use crate::mailbox::SmtpFault;
    use discord_standin::{Fault, Route};
    let next_send = || Route::CreateMessage { channel_id: None };
    let ours = mail.domain.as_str();
    match round % 5 {
        0 => {
            tg.rate_limit_next("sendMessage", None, 2, 2);
            mail.server.fail_next(ours, SmtpFault::TryLater)?;
            mail.server.fail_next(ours, SmtpFault::TryLater)?;
            dc.fail_next(
                next_send(),
                Fault::RateLimited {
                    retry_after: 2.0,
                    global: false,
                },
            );
        }
        1 => {
            tg.fail_next("sendMessage", 500, "Internal Server Error");
            dc.fail_next(next_send(), Fault::ServerError(500));
            mail.server.fail_next(ours, SmtpFault::Drop)?;
        }
        2 => {
            // Discord closes the connection unanswered; Telegram's sends hang until then,
            // and those whose client gave up meanwhile are never carried out. The mail
            // server answers one mail that late (within Switchboard's SMTP timeout, so it
            // is delivered), holding up that conversation's mail meanwhile.
            dc.fail_next(next_send(), Fault::CloseConnection);
            mail.server.fail_next(ours, SmtpFault::Hang(away))?;
            tg.hang(None);
            tokio::time::sleep(away).await;
            tg.release();
        }
        3 => {
            // Carried out, answered after Switchboard's 30 s timeout: its retry carries the
            // same nonce, and Discord answers with the message the first attempt made. Not
            // played on Telegram or SMTP, which have no idempotency key.
            dc.fail_next(next_send(), Fault::AnswerLate(Duration::from_secs(32)));
        }
        _ => {
            // The mail server entirely: SMTP refuses connections, and Switchboard's IMAP
            // session (IDLE) is cut; it comes back with its mailboxes on the same ports.
            let dir = path_str(&mail.server.dir);
            script(&["mail.sh", "stop", &dir])?;
            tg.set_down(true);
            dc.set_down(true);
            tokio::time::sleep(away).await;
            tg.set_down(false);
            dc.set_down(false);
            script(&["mail.sh", "start", &dir])?;
        }
    }
    Ok(())
}

/// SIGKILL to the test PostgreSQL (the one under every Switchboard started on PostgreSQL).
pub(super) async fn kill_postgres(env: &TestEnv) -> anyhow::Result<()> {
    kill_9(&env.dir.join("pg/data/postmaster.pid"), true).await
}

/// Starts the test PostgreSQL again, on its port.
pub(super) fn start_postgres(env: &TestEnv) -> anyhow::Result<()> {
    let url = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL")?;
    let port = url
        .rsplit(':')
        .next()
        .and_then(|p| p.split('/').next())
        .context("no port in SWITCHBOARD_TEST_POSTGRES_URL")?
        .to_owned();
    script(&[
        "postgres.sh",
        "start",
        &path_str(&env.dir.join("pg")),
        &port,
    ])
}

/// SIGKILL to the process whose ID is the first line of `pid_file` and, for PostgreSQL, to its
/// children at the same moment (the backends would otherwise outlive the postmaster); waits
/// until they are gone.
pub(super) async fn kill_9(pid_file: &Path, children_too: bool) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(pid_file)
        .with_context(|| format!("reading {}", pid_file.display()))?;
    let pid = text.lines().next().unwrap_or_default().trim().to_owned();
    anyhow::ensure!(!pid.is_empty(), "{} names no process", pid_file.display());
    let mut victims = vec![pid.clone()];
    if children_too {
        let children = std::process::Command::new("pgrep")
            .args(["-P", &pid])
            .output()?;
        victims.extend(
            String::from_utf8_lossy(&children.stdout)
                .split_whitespace()
                .map(str::to_owned),
        );
    }
    std::process::Command::new("kill")
        .arg("-KILL")
        .args(&victims)
        .status()?;
    let deadline = Instant::now() + Duration::from_secs(10);
    for victim in &victims {
        while running(victim) {
            anyhow::ensure!(
                Instant::now() < deadline,
                "process {victim} outlived SIGKILL"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(())
}

/// Whether a process runs: a killed one may linger as a zombie until something reaps it (in
/// some containers nothing does).
fn running(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|s| {
        s.split_whitespace()
            .nth(2)
            .is_some_and(|state| state != "Z")
    })
}

/// Runs one of the project's scripts, as `scripts/test.sh` does.
pub(super) fn script(args: &[&str]) -> anyhow::Result<()> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(args[0]);
    let status = std::process::Command::new("bash")
        .arg(&path)
        .args(&args[1..])
        .stdout(std::process::Stdio::null())
        .status()?;
    anyhow::ensure!(
        status.success(),
        "{} {:?} failed",
        path.display(),
        &args[1..]
    );
    Ok(())
}
