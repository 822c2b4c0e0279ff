//! A cross-platform path (issue 14): a person writes to the Telegram bot (an initiator),
//! picks Max's topic from its buttons, and Max answers from his Matrix client. Each direction
//! crosses Synapse twice, as a widget visitor's does: the initiator's message is posted by
//! their visitor ghost and relayed from its echo into Max's relay room; Max's reply is posted
//! by his ghost and relayed from its echo to Telegram.

use std::time::{Duration, Instant};

use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;

use crate::common::*;
use crate::paths::Bench;
use crate::report::{Row, ms, progress};

/// Spacing of samples into the initiator's Telegram chat: Switchboard keeps to about one
/// message a second per chat (these are latencies, not the wait).
const TELEGRAM_SPACING: Duration = Duration::from_millis(1100);

pub struct InitiatorPaths {
    pub to_matrix: Row,
    pub from_matrix: Row,
}

/// `n` initiator messages → Max's relay room, `paced` Max messages → the initiator.
pub async fn telegram_to_matrix(
    env: &TestEnv,
    b: &Bench,
    paced: usize,
    n: usize,
) -> anyhow::Result<InitiatorPaths> {
    let (tg, ivy) = (&b.tg, &b.ivy);
    progress("Telegram initiator: a conversation with Max");
    tg.user_sends(ivy, "hello Max from Telegram");
    let question = tg
        .wait_for_sent(ivy.id, |s| s.iter().any(|m| m.reply_markup.is_some()), WAIT)
        .await
        .map_err(anyhow::Error::msg)?
        .into_iter()
        .find(|m| m.reply_markup.is_some())
        .expect("waited for it");
    tg.user_presses(ivy, question.message_id, "topic:matrix");
    let store = b.sb.store().await?;
    let room = wait_for("the initiator's conversation", || async {
        Ok(store
            .open_initiator_conversations("telegram", &ivy.id.to_string())
            .await?
            .into_iter()
            .next())
    })
    .await?
    .room_id;
    let relay = relay_room_of(&store, &room, "max").await?;
    store.close().await;
    let max_room = b.max.accept_invite(&relay).await?;
    let mut max_sync =
        crate::paths::max_watching(env, b, &relay, "hello Max from Telegram").await?;
    tg.wait_for_sent(
        ivy.id,
        |s| {
            s.iter().any(|m| {
                m.text
                    .as_deref()
                    .is_some_and(|t| t.starts_with("You are now talking with"))
            })
        },
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    tokio::time::sleep(TELEGRAM_SPACING).await;

    progress(&format!("Telegram initiator: {n} messages → Max"));
    let mut to_matrix = Row::new(
        "Telegram initiator → Matrix responder: initiator's message → responder's `/sync` long poll (relay room)",
    );
    for i in 0..n {
        let text = format!("bench initiator message {i}");
        let t = Instant::now();
        tg.user_sends(ivy, &text);
        max_sync
            .sync_until("the relayed message", |seen| {
                seen.iter()
                    .any(|s| s.sender == b.bot_id && s.body.ends_with(&text))
            })
            .await?;
        to_matrix.samples.push(ms(t));
    }

    progress(&format!(
        "Telegram initiator: {paced} Max messages → the initiator"
    ));
    let mut from_matrix = Row::new(
        "Telegram initiator ← Matrix responder: responder's message (matrix-sdk) → initiator's Telegram chat",
    );
    for i in 0..paced {
        let text = format!("bench max answers {i}");
        let t = Instant::now();
        max_room
            .send(RoomMessageEventContent::text_plain(&text))
            .await?;
        tg.wait_for_sent(
            ivy.id,
            |s| s.iter().any(|m| m.text.as_deref() == Some(text.as_str())),
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        from_matrix.samples.push(ms(t));
        if i + 1 < paced {
            tokio::time::sleep(TELEGRAM_SPACING).await;
        }
    }
    Ok(InitiatorPaths {
        to_matrix,
        from_matrix,
    })
}
