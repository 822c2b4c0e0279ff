//! The Discord paths: a responder on the Discord stand-in who takes a conversation into a
//! private thread of the staff channel, and the latency of each direction.

use std::time::{Duration, Instant};

use discord_standin::{DcUser, DiscordStandIn};

use crate::common::*;
use crate::paths::Bench;
use crate::report::{Row, ms, progress};

pub const TOKEN: &str = "MTA.bench.discord-bot-token";

/// Spacing of samples into one Discord channel: Discord's bucket for creating messages (the
/// stand-in's, as Discord's, five per five seconds per channel) is kept by Switchboard from the
/// headers, and these are latencies, not the wait.
pub const DISCORD_SPACING: Duration = Duration::from_millis(1100);

/// The stand-in and the responder on it, made before Switchboard starts (its configuration
/// names them).
pub struct DiscordSide {
    pub dc: DiscordStandIn,
    pub staff: u64,
    /// Holds the Discord conversation.
    pub dora: DcUser,
}

impl DiscordSide {
    pub async fn start() -> anyhow::Result<Self> {
        let dc = DiscordStandIn::start(TOKEN).await?;
        let staff = dc.create_text_channel("support-staff");
        let dora = dc.user("dora");
        Ok(Self { dc, staff, dora })
    }

    /// The `[discord]` section of Switchboard's configuration. It takes initiators for the
    /// Discord → Telegram path (`initiators.rs`); Dora, a responder, is never taken for one.
    pub fn section(&self) -> String {
        format!(
            "[discord]\ntoken = {TOKEN:?}\napplication_id = \"{}\"\nguild = \"{}\"\n\
             staff_channel = \"{}\"\napi_url = {:?}\ninitiators = true\n\n",
            self.dc.application_id(),
            self.dc.guild_id(),
            self.staff,
            self.dc.base_url(),
        )
    }
}

pub struct DiscordPaths {
    pub offer: Row,
    pub to_discord: Row,
    pub from_discord: Row,
}

/// `paced` first messages → offers (and as many visitor messages into the thread), `n`
/// responder messages → the visitor.
pub async fn discord(
    env: &TestEnv,
    b: &Bench,
    paced: usize,
    n: usize,
) -> anyhow::Result<DiscordPaths> {
    let (dc, dora) = (&b.discord.dc, &b.discord.dora);
    progress(&format!("Discord: {paced} first messages → offers"));
    let mut offer = Row::new(
        "Discord responder: visitor's first message → offer in their direct chat (sent once the welcome shows)",
    );
    // Dora has written to the bot before (as a responder must, to share a direct chat): the
    // chat exists, and the offers are watched there as they arrive, not polled.
    let dm = dc.user_opens_dm(dora);
    let mut last = None;
    for i in 0..paced {
        let mut v = Visitor::guest(env, &b.base).await?;
        v.start("discord").await?;
        v.sync_until("the welcome", |seen| {
            seen.iter()
                .any(|s| s.sender == b.bot_id && s.msgtype == "m.notice")
        })
        .await?;
        let text = format!("bench first message {i}");
        let t = Instant::now();
        v.send(&text).await?;
        let offered =
            |m: &[discord_standin::DcMessage]| m.iter().any(|m| m.content.contains(&text));
        let seen = dc.wait_for_messages(dm, offered, WAIT).await;
        anyhow::ensure!(offered(&seen), "no offer for {text:?}");
        offer.samples.push(ms(t));
        last = Some((i, v));
        tokio::time::sleep(DISCORD_SPACING).await;
    }
    let (last_i, mut visitor) = last.expect("paced > 0");

    // Dora takes the last conversation into its thread.
    let needle = format!("bench first message {last_i}");
    let m = dc
        .messages(dm)
        .into_iter()
        .find(|m| m.content.contains(&needle))
        .expect("the last offer");
    let custom_id = m.components[0]["components"][0]["custom_id"]
        .as_str()
        .expect("Accept")
        .to_owned();
    let press = dc.user_presses(dora, dm, m.id, &custom_id);
    dc.wait_for_interaction_response(&press, Duration::from_secs(3))
        .await
        .ok_or_else(|| anyhow::anyhow!("the Accept press was not answered"))?;
    let thread = wait_for("the conversation's thread", || async {
        Ok(dc
            .threads()
            .into_iter()
            .find(|t| t.members.contains(&dora.id))
            .map(|t| t.id))
    })
    .await?;
    visitor
        .sync_until("the accept", |seen| {
            seen.iter()
                .any(|s| s.body.starts_with("You are now talking with"))
        })
        .await?;
    tokio::time::sleep(DISCORD_SPACING).await;

    progress(&format!(
        "Discord: {paced} visitor messages → Dora's thread"
    ));
    let mut to_discord = Row::new("Discord responder: visitor's message → responder's thread");
    for i in 0..paced {
        let text = format!("bench visitor message {i}");
        let t = Instant::now();
        visitor.send(&text).await?;
        let arrived = dc
            .wait_for_messages(
                thread,
                |m| m.iter().any(|m| m.content.ends_with(&text)),
                WAIT,
            )
            .await;
        anyhow::ensure!(
            arrived.iter().any(|m| m.content.ends_with(&text)),
            "{text} did not reach the thread"
        );
        to_discord.samples.push(ms(t));
        if i + 1 < paced {
            tokio::time::sleep(DISCORD_SPACING).await;
        }
    }

    progress(&format!("Discord: {n} Dora messages → visitor"));
    let mut from_discord = Row::new("Discord responder: responder's message → visitor's `/sync`");
    for i in 0..n {
        let text = format!("bench responder message {i}");
        let t = Instant::now();
        dc.user_sends(dora, thread, &text);
        visitor
            .sync_until("the reply", |seen| seen.iter().any(|s| s.body == text))
            .await?;
        from_discord.samples.push(ms(t));
    }
    Ok(DiscordPaths {
        offer,
        to_discord,
        from_discord,
    })
}
