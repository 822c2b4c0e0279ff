//! Relay benchmark: how long a message takes through Switchboard, end to end, on a real Synapse
//! and the Telegram stand-in. Run by `scripts/bench.sh`, which starts the services the same way
//! the test suite does and rewrites the relay section of `docs/benchmarks.md`.
//!
//! Measured, per sample, from the moment the sender's HTTP request goes out until the other
//! side has it:
//! - a visitor's first message → the offer on the responder's Telegram chat (routing included);
//! - a visitor's message → the responder's Telegram chat (inbox, outbox, Bot API call);
//! - a Telegram responder's message → the visitor's `/sync` (long poll, getUpdates, ghost send).
//!
//! This is a measurement, not a test: it asserts nothing about speed.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::*;
use telegram_standin::StandIn;

const TOKEN: &str = "7474:bench-standin-token";

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * (sorted.len() as f64 - 1.0)).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

struct Row {
    what: &'static str,
    samples: Vec<f64>,
}

impl Row {
    fn markdown(&self) -> String {
        let mut s = self.samples.clone();
        s.sort_by(f64::total_cmp);
        format!(
            "| {} | {} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} ms |",
            self.what,
            s.len(),
            percentile(&s, 50.0),
            percentile(&s, 95.0),
            s[0],
            s[s.len() - 1]
        )
    }
}

fn ms(since: Instant) -> f64 {
    since.elapsed().as_secs_f64() * 1000.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args()
        .nth(1)
        .map(|a| a.parse())
        .transpose()?
        .unwrap_or(30);
    let slot_no: u32 = std::env::var("SWITCHBOARD_BENCH_SLOT")
        .map(|s| s.parse())
        .unwrap_or(Ok(8))?;
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, slot_no)?;
    let tg = StandIn::start(TOKEN).await?;
    let bella = tg.user(9401, "Bella", None);
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 10\n\n\
         [visitors]\nconversations_per_minute = 1000\nburst = 1000\n\n\
         [[topics]]\nid = \"support\"\nname = \"Support\"\nstrategy = \"broadcast\"\noffer_timeout_secs = 3600\n\n\
         [[responders]]\nid = \"bella\"\ndisplay_name = \"Bella\"\ntopics = [\"support\"]\n\
         max_concurrent = 1000\ncontacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n",
        api = tg.api_url(),
        chat = bella.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;

    // --- first message → offer ------------------------------------------------------------------
    let mut offer = Row {
        what: "visitor's first message → offer on Telegram",
        samples: vec![],
    };
    let mut last = None;
    for i in 0..n {
        let mut v = Visitor::guest(&env, &sb.base).await?;
        v.start("support").await?;
        let text = format!("bench first message {i}");
        let t = Instant::now();
        v.send(&text).await?;
        tg.wait_for_sent(
            bella.id,
            |s| {
                s.iter()
                    .any(|m| m.text.as_deref().is_some_and(|x| x.contains(&text)))
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        offer.samples.push(ms(t));
        last = Some(v);
        // Every offer is a message to Bella's chat, paced like the rest (about one a second),
        // so samples are spaced as for visitor → Telegram: latency, not the pacing wait.
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    let mut visitor = last.expect("n > 0");

    // Bella takes the last conversation (and only that one).
    let sent = tg.sent(bella.id);
    let needle = format!("bench first message {}", n - 1);
    let m = sent
        .iter()
        .find(|m| {
            m.reply_markup.is_some() && m.text.as_deref().is_some_and(|x| x.contains(&needle))
        })
        .expect("the last offer");
    let data = m.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_owned();
    tg.user_presses(&bella, m.message_id, &data);
    visitor
        .sync_until("the accept", |seen| {
            seen.iter()
                .any(|s| s.body.starts_with("You are now talking with"))
        })
        .await?;

    // --- visitor → Telegram -------------------------------------------------------------------
    // Switchboard paces itself to about one message per second per Telegram chat (the Bot API
    // limit), so samples are spaced further apart than that: this is latency, not throughput.
    let mut to_tg = Row {
        what: "visitor's message → responder's Telegram chat",
        samples: vec![],
    };
    for i in 0..n {
        let text = format!("bench visitor message {i}");
        let t = Instant::now();
        visitor.send(&text).await?;
        tg.wait_for_sent(
            bella.id,
            // Relayed as "Visitor 1234:\n<text>".
            |s| {
                s.iter()
                    .any(|m| m.text.as_deref().is_some_and(|x| x.ends_with(&text)))
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        to_tg.samples.push(ms(t));
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }

    // --- Telegram → visitor -------------------------------------------------------------------
    let mut to_visitor = Row {
        what: "responder's Telegram message → visitor's /sync",
        samples: vec![],
    };
    for i in 0..n {
        let text = format!("bench responder message {i}");
        let t = Instant::now();
        tg.user_sends(&bella, &text);
        visitor
            .sync_until("the reply", |seen| seen.iter().any(|s| s.body == text))
            .await?;
        to_visitor.samples.push(ms(t));
    }

    let rows = [offer, to_tg, to_visitor];
    println!("| path | samples | median | p95 | min | max |");
    println!("|---|---|---|---|---|---|");
    for row in &rows {
        println!("{}", row.markdown());
    }
    Ok(())
}
