//! Resident memory with many stored conversations. Each size gets a Switchboard of its own
//! (its own appservice slot): started once so it creates and migrates its SQLite database,
//! stopped, given `count` closed conversations through `Store::insert_conversation` (one
//! statement and commit each, on the file, while Switchboard is down), started again, left
//! to settle, and then its `VmRSS` is read.

use std::time::{Duration, Instant};

use switchboard_bridge::conversation::{Conversation, ConversationState};

use crate::common::*;
use crate::paths::LOG_FILTER;
use crate::procfs;
use crate::report::progress;

/// How long Switchboard is left alone after it reports healthy before its memory is read.
pub const SETTLE: Duration = Duration::from_secs(5);

pub struct Resident {
    pub conversations: usize,
    pub rss_mib: f64,
    /// How long the inserts took.
    pub insert_s: f64,
}

pub async fn measure(
    env: &TestEnv,
    slot_no: u32,
    count: usize,
    responder: &str,
) -> anyhow::Result<Resident> {
    progress(&format!(
        "RSS with {count} stored conversations (slot {slot_no})"
    ));
    let slot = Slot::load(env, slot_no)?;
    let config = format!(
        "[[topics]]\nid = \"support\"\nname = \"Support\"\n\n\
         [[responders]]\nid = \"rae\"\ndisplay_name = \"Rae\"\ntopics = [\"support\"]\n\
         contacts = [{{ platform = \"matrix\", address = {responder:?} }}]\n"
    );
    let mut sb = Switchboard::start_logging(env, &slot, &config, LOG_FILTER).await?;
    sb.kill();
    let inserting = Instant::now();
    let store = sb.store().await?;
    let created_at = 1_780_000_000_000;
    for i in 0..count {
        store
            .insert_conversation(&Conversation {
                room_id: format!("!benchstored{i:05}:{}", env.server_name),
                topic: "support".into(),
                visitor_user_id: format!("@benchvisitor{i:05}:{}", env.server_name),
                visitor_alias: format!("Visitor {:04X}", i % 0x10000),
                state: ConversationState::Closed,
                created_at: created_at + i as i64,
                language: Some("en".into()),
            })
            .await?;
    }
    store.close().await;
    let insert_s = inserting.elapsed().as_secs_f64();
    sb.restart().await?;
    tokio::time::sleep(SETTLE).await;
    let rss_mib = procfs::rss_mib(sb.pid().expect("running"))?;
    Ok(Resident {
        conversations: count,
        rss_mib,
        insert_s,
    })
}
