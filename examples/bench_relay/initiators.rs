//! Cross-platform paths (issue 14): a person who is no responder writes to the bot (an
//! initiator), picks a topic, and a responder on another platform answers. Ivy writes to the
//! Telegram bot, picks Max's topic from its buttons, and Max answers from his Matrix client;
//! Dina writes to the Discord bot, picks Tess's topic from its menu, and Tess accepts the
//! offer and answers in her Telegram chat. Each direction crosses Synapse as a widget
//! visitor's does: the initiator's message is posted by their visitor ghost and relayed from
//! its echo to the responder; the responder's reply is posted by their ghost and relayed from
//! its echo to the initiator. With Max that is twice, as his relay room is a room too (the
//! relayed message there; his own message to Switchboard); with Tess once.

use std::time::{Duration, Instant};

use discord_standin::DcUser;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;

use crate::common::*;
use crate::discord::DISCORD_SPACING;
use crate::paths::{Bench, TELEGRAM_SPACING};
use crate::report::{Row, ms, progress};

pub struct InitiatorPaths {
    pub to_responder: Row,
    pub to_initiator: Row,
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
    crate::paths::told_talking(tg, ivy.id).await?;
    tokio::time::sleep(TELEGRAM_SPACING).await;

    progress(&format!("Telegram initiator: {n} messages → Max"));
    let mut to_responder = Row::new(
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
        to_responder.samples.push(ms(t));
    }

    progress(&format!(
        "Telegram initiator: {paced} Max messages → the initiator"
    ));
    let mut to_initiator = Row::new(
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
        to_initiator.samples.push(ms(t));
        if i + 1 < paced {
            tokio::time::sleep(TELEGRAM_SPACING).await;
        }
    }
    Ok(InitiatorPaths {
        to_responder,
        to_initiator,
    })
}

/// `paced` initiator messages → Tess's chat, `paced` Tess messages → the initiator: both
/// directions end in a chat Switchboard paces its sending to.
pub async fn discord_to_telegram(b: &Bench, paced: usize) -> anyhow::Result<InitiatorPaths> {
    let (tg, tess, dc) = (&b.tg, &b.tess, &b.discord.dc);
    progress("Discord initiator: a conversation with Tess");
    let (dina, dm) = discord_conversation(b).await?;
    // Tess's chat has just had the offer and its close.
    tokio::time::sleep(TELEGRAM_SPACING).await;

    progress(&format!("Discord initiator: {paced} messages → Tess"));
    let mut to_responder =
        Row::new("Discord initiator → Telegram responder: initiator's message → responder's chat");
    for i in 0..paced {
        let text = format!("bench discord initiator message {i}");
        let t = Instant::now();
        dc.user_sends(&dina, dm, &text);
        tg.wait_for_sent(
            tess.id,
            // Relayed as "Visitor 1234:\n<text>".
            |s| {
                s.iter()
                    .any(|m| m.text.as_deref().is_some_and(|x| x.ends_with(&text)))
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
        to_responder.samples.push(ms(t));
        if i + 1 < paced {
            tokio::time::sleep(TELEGRAM_SPACING).await;
        }
    }

    progress(&format!(
        "Discord initiator: {paced} Tess messages → the initiator"
    ));
    let mut to_initiator = Row::new(
        "Discord initiator ← Telegram responder: responder's message → initiator's direct chat with the bot",
    );
    for i in 0..paced {
        let text = format!("bench tess answers {i}");
        let t = Instant::now();
        tg.user_sends(tess, &text);
        // To an initiator without a heading: the text as Tess wrote it.
        discord_messages(dc, dm, "Tess's answer", |m| {
            m.iter().any(|m| m.content == text)
        })
        .await?;
        to_initiator.samples.push(ms(t));
        if i + 1 < paced {
            tokio::time::sleep(DISCORD_SPACING).await;
        }
    }
    Ok(InitiatorPaths {
        to_responder,
        to_initiator,
    })
}

/// Dina, a Discord user who is no responder, writes to the bot, picks Tess's topic from the
/// menu it answers with, and Tess accepts the offer in her Telegram chat. Dina and her direct
/// chat with the bot.
async fn discord_conversation(b: &Bench) -> anyhow::Result<(DcUser, u64)> {
    let dc = &b.discord.dc;
    let dina = dc.user("dina");
    let (dm, menu) = discord_topic_menu(dc, &dina, "hello Tess from Discord").await?;
    let pick = dc.user_selects(&dina, dm, menu.id, "topic", &["tess"]);
    dc.wait_for_interaction_response(&pick, Duration::from_secs(3))
        .await
        .ok_or_else(|| anyhow::anyhow!("the topic pick was not answered"))?;
    // What she wrote before picking starts the conversation, and so its offer.
    telegram_offer(&b.tg, &b.tess).await?;
    accept_open_offer(&b.tg, &b.tess);
    discord_messages(dc, dm, "who answers", |m| {
        m.iter()
            .any(|m| m.content.starts_with("You are now talking with"))
    })
    .await?;
    Ok((dina, dm))
}
