//! Discord responders end to end: visitor → real Synapse → Switchboard → Discord stand-in
//! (REST and gateway) → Accept button → a private thread → replies as the responder's ghost,
//! with formatting, mentions that never ping, two conversations in two threads, the direct-chat
//! mode with a reply to the offer, and no visitor identifier in any byte sent to Discord.

mod commands;
#[path = "../common/mod.rs"]
mod common;
mod cross_platform;
mod edits;
mod faults;
mod threads;

use std::time::Duration;

use anyhow::Context;
use common::discord_messages as wait_messages;
use common::*;
use discord_standin::{DcMessage, DcUser, DiscordStandIn};

const TOKEN: &str = "MTA.standin.bot-token";

/// The config section for the stand-in; `staff`: the staff channel, if any.
fn discord_section(dc: &DiscordStandIn, staff: Option<u64>) -> String {
    let mut s = format!(
        "[discord]\ntoken = {TOKEN:?}\napplication_id = \"{app}\"\nguild = \"{guild}\"\napi_url = {api:?}\n",
        app = dc.application_id(),
        guild = dc.guild_id(),
        api = dc.base_url(),
    );
    if let Some(staff) = staff {
        s.push_str(&format!("staff_channel = \"{staff}\"\n"));
    }
    s
}

fn responder(id: &str, pseudonym: &str, user: &DcUser) -> String {
    format!(
        "[[responders]]\nid = \"{id}\"\ndisplay_name = \"{pseudonym}\"\npseudonym = \"{pseudonym}\"\n\
         topics = [\"support\"]\nmax_concurrent = 5\ncontacts = [{{ platform = \"discord\", address = \"{}\" }}]\n\n",
        user.id
    )
}

const TOPICS: &str = "[[topics]]\nid = \"support\"\nname = \"General support\"\n";

/// The open offer (a message with an Accept button) that quotes `hint`: (message ID, custom ID).
fn offer_of(messages: &[DcMessage], hint: &str) -> Option<(u64, String)> {
    messages.iter().find_map(|m| {
        if !m.content.contains("New conversation") || !m.content.contains(hint) {
            return None;
        }
        let id = m.components[0]["components"][0]["custom_id"].as_str()?;
        id.starts_with("accept:").then(|| (m.id, id.to_owned()))
    })
}

async fn dm_of(dc: &DiscordStandIn, user: &DcUser) -> anyhow::Result<u64> {
    wait_for("the bot's direct chat", || async {
        Ok(dc.dm_channel_of(user))
    })
    .await
}

/// The private thread whose name holds `alias`, once `member` is in it. Switchboard opens the
/// thread and adds the responder in two calls, as Discord's API has it; until the second, the
/// responder cannot see the thread (the stand-in refuses their messages there, as Discord does).
async fn thread_for(
    dc: &DiscordStandIn,
    alias: &str,
    member: &DcUser,
) -> anyhow::Result<discord_standin::DcThread> {
    wait_for("the conversation's thread, the responder in it", || async {
        Ok(dc
            .threads()
            .into_iter()
            .find(|t| t.name.contains(alias) && t.members.contains(&member.id)))
    })
    .await
}

/// Presses Accept on the offer quoting `hint` and waits until the thread (or, without a staff
/// channel, the confirmation) is there.
async fn accept(dc: &DiscordStandIn, who: &DcUser, hint: &str) -> anyhow::Result<()> {
    let dm = dm_of(dc, who).await?;
    let messages = wait_messages(dc, dm, "the offer", |m| offer_of(m, hint).is_some()).await?;
    let (offer, custom_id) = offer_of(&messages, hint).unwrap();
    let press = dc.user_presses(who, dm, offer, &custom_id);
    let answer = dc
        .wait_for_interaction_response(&press, Duration::from_secs(3))
        .await
        .context("the button press was not answered within Discord's 3 seconds")?;
    assert_eq!(answer["type"], 6, "{answer}");
    Ok(())
}

fn alias_of(text: &str) -> String {
    text.split("from ")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// The words `w0 … w{n-1}` as they arrived in `messages`, in order.
fn words(messages: &[DcMessage]) -> Vec<String> {
    messages
        .iter()
        .flat_map(|m| m.content.split_whitespace())
        .filter(|w| w.starts_with('w') && w[1..].chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}
