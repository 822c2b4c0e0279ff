//! Crash bursts (issue 16, points 1 to 3): nothing lost, doubled or reordered, with Matrix,
//! Telegram, Discord and email responders, while Switchboard, then Synapse, then the
//! PostgreSQL under Switchboard is killed with SIGKILL mid-burst, while the platforms (the
//! stand-ins and the mail server) misbehave, and while Synapse is away for a long outage.
//!
//! The short form runs in the ordinary test suite. `scripts/chaos.sh` runs the long form
//! (`SWITCHBOARD_CHAOS=long`: 20 conversations, 1 000 messages each way per victim, more
//! kills) and has the outcome written to `SWITCHBOARD_CHAOS_REPORT`, which it puts in
//! `docs/reliability.md`. `SWITCHBOARD_CHAOS_SEED` repeats a run.
//!
//! This binary kills the test run's shared Synapse and PostgreSQL and starts them again with
//! their own scripts: its two tests take turns (`KILLS_SYNAPSE`), and the suite runs its
//! binaries one at a time. The second, `what_synapse_lost_…`, makes Synapse lose a message
//! on purpose (`chaos/lost.rs`) and checks that Switchboard catches up on it.

mod chaos;
mod common;
mod mail_thread;
mod mailbox;

use std::time::Duration;

use chaos::{Outcome, Plan, TABLE_HEAD, Victim};
use common::*;

/// Slot 8: e2e_handoff's named transfer and the benchmark use it, never at the same time.
const SLOT: u32 = 8;

fn plan(long: bool, seed: u64) -> Plan {
    if long {
        Plan {
            conversations: 20,
            per_way: 50,
            window: Duration::from_secs(75),
            kills: 5,
            max_down: Duration::from_secs(3),
            seed,
        }
    } else {
        Plan {
            conversations: 8,
            per_way: 10,
            window: Duration::from_secs(15),
            kills: 3,
            max_down: Duration::from_secs(2),
            seed,
        }
    }
}

fn report(outcomes: &[Outcome], long: bool, seed: u64) -> String {
    let mut out = format!(
        "{} form, seed {seed}: per victim {} conversations (their responders in turn on Matrix, \
         Telegram, Discord and email), {} messages each way in each, sent over {} s while the \
         victim was killed (SIGKILL) at random points and started again; then the platforms \
         misbehaved in turn: the Telegram and Discord stand-ins (429s, 500s, a dropped \
         connection or a hanging call, an answer after the client's timeout, away for a while) \
         and the mail server (its SMTP front answering Switchboard's mail 451, dropping the \
         connection or hanging; SMTP and IMAP away for a while); then Synapse was killed once and kept down for a long outage while \
         everyone kept writing; last, two instances shared one PostgreSQL behind HAProxy and \
         were hit in turn: the leader killed, the other one killed, the leader paused past its \
         lease, both restarted one after the other. The last column is how long after the last message was sent \
         that platform's conversations held everything.\n\n{TABLE_HEAD}",
        if long { "Long" } else { "Short" },
        outcomes.first().map_or(0, |o| o.plan.conversations),
        outcomes.first().map_or(0, |o| o.plan.per_way),
        outcomes.first().map_or(0, |o| o.plan.window.as_secs()),
    );
    for o in outcomes {
        out.push_str(&o.rows());
    }
    for o in outcomes.iter().filter(|o| !o.answers_while_down.is_empty()) {
        let answers: Vec<String> = o
            .answers_while_down
            .iter()
            .map(|(status, errcode, took)| {
                format!("{status} {errcode} in {:.1} s", took.as_secs_f64())
            })
            .collect();
        out.push_str(&format!(
            "\n{}: while Synapse was down, a visitor starting a conversation was answered: {}.\n",
            o.victim.name(),
            answers.join("; ")
        ));
    }
    let faults: Vec<String> = outcomes.iter().flat_map(Outcome::faults).collect();
    if !faults.is_empty() {
        out.push_str("\nWhere it went wrong:\n\n");
        for f in &faults {
            out.push_str(&format!("- {f}\n"));
        }
    }
    let doubles = |kind: fn(&Outcome, &chaos::Tally) -> usize| -> usize {
        outcomes
            .iter()
            .flat_map(|o| o.tallies.iter().map(move |t| kind(o, t)))
            .sum()
    };
    let folded = doubles(|_, t| t.folded);
    if folded > 0 {
        out.push_str(&format!(
            "\n{folded} mails reached an email responder twice with one Message-ID: sent again \
             after Switchboard was killed between the SMTP server's 250 and the record of the \
             send. A client that folds copies of one Message-ID (Gmail does) shows one; they are \
             counted once above.\n"
        ));
    }
    let resent = doubles(Outcome::resent_doubles);
    if resent > 0 {
        out.push_str(&format!(
            "\n{resent} of the doubles are visitor messages to a Telegram responder that the Bot \
             API accepted in the instant before Switchboard was killed, before the send was \
             recorded: sent again after the restart. The Bot API has no idempotency key nor a way \
             for a bot to read what it sent, so such a message is doubled rather than lost. (A \
             mail sent again that way keeps its Message-ID and is counted once.)\n"
        ));
    }
    out
}

/// What went wrong in one victim's run, one sentence each; empty when all held.
fn problems(o: &Outcome, seed: u64) -> Vec<String> {
    let mut problems = Vec::new();
    if o.kills.len() != o.plan.kills {
        problems.push(format!(
            "{} of {} kills happened",
            o.kills.len(),
            o.plan.kills
        ));
    }
    // Issue 17: the other instance leads within 5 s of the dead leader's lease expiring (it
    // expires at most a lease after the kill).
    for kill in &o.kills {
        if let Some((what, took)) = &kill.takeover
            && *took > Duration::from_secs(chaos::LEASE_SECONDS + 5)
        {
            problems.push(format!(
                "{what}: led again only {:.1} s after",
                took.as_secs_f64()
            ));
        }
    }
    // A visitor is told the service is unavailable, in words a client can act on.
    for (status, errcode, _) in &o.answers_while_down {
        if *status != 503 || errcode.is_empty() {
            problems.push(format!(
                "while Synapse was down the visitor API answered {status} {errcode:?}"
            ));
        }
    }
    let (sent, lost, doubled, out_of_order) = o.totals();
    if sent == 0 {
        problems.push("nothing was sent".into());
    }
    let beyond_us: usize = o.tallies.iter().map(|t| o.resent_doubles(t)).sum();
    let copies: usize = o.tallies.iter().map(|t| o.folded_beyond_resends(t)).sum();
    let doubled = doubled - beyond_us;
    if (lost, doubled, copies, out_of_order) != (0, 0, 0, 0) {
        problems.push(format!(
            "{lost} lost, {doubled} doubled, {copies} mails sent twice with one Message-ID, \
             {out_of_order} out of order (seed {seed}): {}",
            o.faults().join(" | ")
        ));
    }
    problems
}

/// Both tests here kill the main Synapse and use one slot: one at a time.
static KILLS_SYNAPSE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_synapse_lost_when_killed_is_caught_up_on_when_it_returns() -> anyhow::Result<()> {
    let _one_at_a_time = KILLS_SYNAPSE.lock().await;
    chaos::lost::caught_up_after_the_homeserver_lost_them(&TestEnv::from_env(), SLOT).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transaction_synapse_strands_reaches_the_responder_before_the_ones_after_it()
-> anyhow::Result<()> {
    // It kills the PostgreSQL under the crash bursts and edits Synapse's database.
    let _one_at_a_time = KILLS_SYNAPSE.lock().await;
    chaos::stranded::a_stranded_transaction_reaches_the_responder_before_the_ones_after_it(
        &TestEnv::from_env(),
        SLOT,
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_doubled_or_reordered_when_switchboard_synapse_or_postgres_is_killed_mid_burst()
-> anyhow::Result<()> {
    let _one_at_a_time = KILLS_SYNAPSE.lock().await;
    let env = TestEnv::from_env();
    let long = std::env::var("SWITCHBOARD_CHAOS").is_ok_and(|v| v == "long");
    let seed = match std::env::var("SWITCHBOARD_CHAOS_SEED") {
        Ok(s) => s.parse()?,
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    };
    let mut outcomes = Vec::new();
    // `SWITCHBOARD_CHAOS_ONLY=postgres` (or `switchboard`, `synapse`) runs one victim: to
    // look into what a run found.
    let only = std::env::var("SWITCHBOARD_CHAOS_ONLY").ok();
    for (n, victim) in [
        Victim::Switchboard,
        Victim::Synapse,
        Victim::Postgres,
        Victim::Platforms,
        Victim::SynapseOutage,
        Victim::Instances,
    ]
    .into_iter()
    .enumerate()
    .filter(|(_, v)| only.as_deref().is_none_or(|o| v.key() == o))
    {
        // Each victim its own kill points, all from the one seed.
        let mut plan = plan(long, seed.wrapping_add(1000 * n as u64));
        match victim {
            // Synapse takes seconds to start again: fewer kills, each down longer.
            Victim::Synapse => plan.kills = plan.kills.div_ceil(2),
            // Point 3 of issue 16: five minutes (20 s in the short form) without the
            // homeserver while visitors and responders keep writing.
            // Point 2: each of the five kinds of fault once (twice in the long form), a call
            // left hanging and the platforms (the mail server too) away for 5 s (60 s in the
            // long form).
            Victim::Platforms => {
                plan.kills = if long { 10 } else { 5 };
                plan.max_down = Duration::from_secs(if long { 60 } else { 5 });
            }
            // Each of the four ways of hitting one of two instances once (twice in the long
            // form).
            Victim::Instances => plan.kills = if long { 8 } else { 4 },
            Victim::SynapseOutage => {
                plan.kills = 1;
                plan.max_down = Duration::from_secs(if long { 300 } else { 20 });
            }
            _ => {}
        }
        let outcome = chaos::run(&env, SLOT, victim, &plan).await?;
        // One line per victim, as soon as it is done: a failure's reason stays at the head
        // of the output, which is what a CI log that keeps only its ends shows.
        let problems = problems(&outcome, seed);
        eprintln!(
            "{}: {}",
            victim.name(),
            if problems.is_empty() {
                format!("ok ({})", outcome.summary())
            } else {
                format!("FAILED: {}", problems.join("; "))
            }
        );
        outcomes.push(outcome);
    }
    let table = report(&outcomes, long, seed);
    eprintln!("{table}");
    if let Ok(path) = std::env::var("SWITCHBOARD_CHAOS_REPORT") {
        std::fs::write(path, &table)?;
    }
    let problems: Vec<String> = outcomes
        .iter()
        .flat_map(|o| {
            problems(o, seed)
                .into_iter()
                .map(|p| format!("{}: {p}", o.victim.name()))
        })
        .collect();
    assert!(problems.is_empty(), "{}", problems.join("\n"));
    Ok(())
}
