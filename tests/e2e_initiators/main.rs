//! Conversations started from a platform rather than the widget (issue 14): a person writes
//! to the operator's Telegram bot, picks a topic from its buttons, and talks with a responder
//! who answers from a Matrix client. They are a visitor ghost with a pseudonym in the room;
//! nothing of who they are on Telegram reaches the responder.

#[path = "../common/mod.rs"]
mod common;
mod from_discord;
mod from_matrix;
mod from_telegram;

use common::*;
use discord_standin::{DcMessage, DiscordStandIn};
use matrix_sdk::ruma::events::room::message::{ReplacementMetadata, RoomMessageEventContent};
use switchboard_bridge::{config::DEFAULT_WELCOME_NOTICE, conversation::ConversationState};
use telegram_standin::{SentMessage, StandIn, TgUser};

const TOKEN: &str = "8484:initiators-standin-token";

/// Who writes to the bot: an ID, a name and a handle no responder may ever see.
const ANA_ID: i64 = 913_572_468;
const ANA_NAME: &str = "Anastasiya-Initiatorova";
const ANA_HANDLE: &str = "ana_secret_handle_77";

fn config(tg: &StandIn, sam_id: &str) -> String {
    format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\ninitiators = true\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\
         names = {{ de = \"Allgemeine Hilfe\" }}\n\n\
         [[topics]]\nid = \"billing\"\nname = \"Billing\"\nstrategy = \"broadcast\"\n\n\
         [[responders]]\nid = \"sam\"\ndisplay_name = \"Sam Example\"\npseudonym = \"Sam\"\n\
         topics = [\"support\", \"billing\"]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"matrix\", address = {sam_id:?} }}]\n",
        api = tg.api_url(),
    )
}

fn texts(sent: &[SentMessage]) -> Vec<String> {
    sent.iter().filter_map(|m| m.text.clone()).collect()
}

/// Waits until the bot has sent Ana a message with topic buttons beyond the first `seen`,
/// and returns it.
async fn topic_question(tg: &StandIn, ana: &TgUser, seen: usize) -> anyhow::Result<SentMessage> {
    let sent = tg
        .wait_for_sent(
            ana.id,
            |s| s.iter().filter(|m| m.reply_markup.is_some()).count() > seen,
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(sent
        .into_iter()
        .filter(|m| m.reply_markup.is_some())
        .nth(seen)
        .expect("counted above"))
}

/// Waits until Ana has received every one of `wanted`, and returns all texts she has.
async fn ana_receives(tg: &StandIn, ana: &TgUser, wanted: &[&str]) -> anyhow::Result<Vec<String>> {
    let sent = tg
        .wait_for_sent(
            ana.id,
            |s| {
                let t = texts(s);
                wanted.iter().all(|w| t.iter().any(|x| x == w))
            },
            WAIT,
        )
        .await
        .map_err(|e| anyhow::anyhow!("Ana did not receive {wanted:?}: {e}"))?;
    Ok(texts(&sent))
}

/// Everything the responder's account can read from the homeserver (a full-state `/sync`),
/// as one text, for a byte scan.
async fn everything_sam_can_read(env: &TestEnv, sam: &MatrixResponder) -> anyhow::Result<String> {
    let token = sam.client.access_token().expect("logged in");
    let body = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/sync?full_state=true&timeout=0",
            env.hs_url
        ))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    Ok(body)
}

const DC_TOKEN: &str = "MTA.initiators.bot-token";

fn has_text(messages: &[DcMessage], text: &str) -> bool {
    messages.iter().any(|m| m.content == text)
}
