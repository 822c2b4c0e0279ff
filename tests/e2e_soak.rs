//! The soak (issue 16, point 4): many conversations held at once by Telegram responders, every
//! visitor writing at a steady pace and every message answered: 150 for five minutes here (the
//! short form, in the ordinary test suite), 500 for thirty (`scripts/soak.sh`, the long form;
//! setting up 500 takes Synapse about eight minutes on two cores, too long for the suite). See
//! `soak/mod.rs` for what is measured. It fails if a message is lost, doubled or reordered,
//! if after the warm-up Switchboard's memory, file descriptors or live tasks grow past the
//! bounds stated there, or if a later window's p99 latency drifts past its bound.
//!
//! `SWITCHBOARD_SOAK=long` picks the long form; `SWITCHBOARD_SOAK_CONVERSATIONS` and
//! `SWITCHBOARD_SOAK_SECS` change the size of either (for a quick try); the figures are
//! written to `SWITCHBOARD_SOAK_REPORT` when set, which `scripts/soak.sh` puts in
//! `docs/reliability.md`.

mod common;
mod soak;

use std::time::Duration;

use common::*;

/// Slot 7: e2e_multi_platform's and e2e_abuse's; binaries run one at a time.
const SLOT: u32 = 7;

fn env_number(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_conversations_at_a_steady_rate_leak_nothing_and_lose_nothing() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let long = std::env::var("SWITCHBOARD_SOAK").is_ok_and(|v| v == "long");
    let plan = soak::Plan {
        conversations: env_number("SWITCHBOARD_SOAK_CONVERSATIONS").unwrap_or(if long {
            500
        } else {
            150
        }) as usize,
        responders: 25,
        duration: Duration::from_secs(env_number("SWITCHBOARD_SOAK_SECS").unwrap_or(if long {
            30 * 60
        } else {
            5 * 60
        })),
        every: Duration::from_secs(60),
        windows: 10,
        seed: env_number("SWITCHBOARD_SOAK_SEED").unwrap_or_else(|| fastrand::u64(..)),
    };
    eprintln!("soak: {plan:?}");
    let outcome = soak::run(&env, SLOT, &plan).await?;
    let faults = outcome.faults();
    let report = format!(
        "{} form: {} conversations held by {} Telegram responders (the stand-in, {} each), every visitor \
         writing a numbered message about once a minute (a random gap of 30 to 90 s) and every message \
         answered by its responder as a reply to it, for {} s, cut into {} windows (seed {}).\n\n{}",
        if long { "Long" } else { "Short" },
        plan.conversations,
        plan.responders,
        plan.conversations.div_ceil(plan.responders),
        plan.duration.as_secs(),
        plan.windows,
        plan.seed,
        outcome.rows(),
    );
    finish_report(report, &faults, "SWITCHBOARD_SOAK_REPORT")
}
