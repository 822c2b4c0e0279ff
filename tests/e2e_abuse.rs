//! The abuse flood (issue 16, point 6): the visitor API under a flood from many client
//! addresses while a well-behaved visitor keeps talking (see `abuse/mod.rs`). Every answer
//! must be the right one for its request (no 5xx, no dropped connection but for a body over
//! the limit), no address may get more visitor accounts than its limit, made-up tokens reach
//! nobody's conversation, and every message of the well-behaved visitor reaches the
//! responder, in order.
//!
//! Twice: against the visitor API in accounts mode, then in proxied mode with the visitor
//! proxy flooded too. The short form runs in the ordinary test suite: 40 addresses for 20 s
//! each.
//! `scripts/abuse.sh` runs the long form (`SWITCHBOARD_ABUSE=long`: 200 addresses for two
//! minutes) and has the figures written to `SWITCHBOARD_ABUSE_REPORT`, which it puts in
//! `docs/reliability.md`. Speed is reported, not asserted.

mod abuse;
mod common;

use std::time::Duration;

use common::*;

/// Slot 7: e2e_multi_platform's; binaries run one at a time.
const SLOT: u32 = 7;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_from_many_addresses_is_refused_in_words_and_holds_up_no_visitor()
-> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let long = std::env::var("SWITCHBOARD_ABUSE").is_ok_and(|v| v == "long");
    let plan = if long {
        abuse::Plan {
            addresses: 200,
            window: Duration::from_secs(120),
        }
    } else {
        abuse::Plan {
            addresses: 40,
            window: Duration::from_secs(20),
        }
    };
    let mut report = format!(
        "{} form: {} client addresses (127.0.0.2 upwards, one request in flight each, as fast \
         as answers come) for {} s, with the default per-address limits, while one visitor from \
         another address sends a message every second (Telegram's pace for one chat) to a Telegram responder (the \
         stand-in). Once against the visitor API in accounts mode, once in proxied mode with the \
         visitor proxy flooded too.\n",
        if long { "Long" } else { "Short" },
        plan.addresses,
        plan.window.as_secs(),
    );
    let mut faults = Vec::new();
    for mode in [abuse::Mode::Accounts, abuse::Mode::Proxied] {
        let outcome = abuse::run(&env, SLOT, mode, plan).await?;
        report.push_str(&format!("\n**{}**\n\n{}", mode.name(), outcome.rows()));
        faults.extend(
            outcome
                .faults()
                .into_iter()
                .map(|f| format!("{}: {f}", mode.name())),
        );
        assert!(outcome.total() > 0 && outcome.good_sent > 5);
    }
    finish_report(report, &faults, "SWITCHBOARD_ABUSE_REPORT")
}
