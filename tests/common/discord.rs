//! Discord through its stand-in: the config section, the gateway, the topic menu, messages.

use super::*;

/// The `[discord]` section for the stand-in `dc` with bot token `token`, `extra` (lines such
/// as `initiators = true\n`) inside it.
pub fn discord_config(dc: &discord_standin::DiscordStandIn, token: &str, extra: &str) -> String {
    format!(
        "[discord]\ntoken = {token:?}\napplication_id = \"{app}\"\nguild = \"{guild}\"\n\
         api_url = {api:?}\n{extra}\n",
        app = dc.application_id(),
        guild = dc.guild_id(),
        api = dc.base_url(),
    )
}

/// Waits until Switchboard's bot has a gateway session with the Discord stand-in.
pub async fn discord_gateway_up(dc: &discord_standin::DiscordStandIn) -> anyhow::Result<()> {
    wait_for("the bot's gateway session", || async {
        Ok((dc.identify_count() > 0).then_some(()))
    })
    .await
}

/// `who` writes `first` to the bot in a direct chat (as an initiator) and waits for the topic
/// menu the bot answers with: (the direct chat, the menu's message).
pub async fn discord_topic_menu(
    dc: &discord_standin::DiscordStandIn,
    who: &discord_standin::DcUser,
    first: &str,
) -> anyhow::Result<(u64, discord_standin::DcMessage)> {
    let is_menu = |m: &discord_standin::DcMessage| m.components[0]["components"][0]["type"] == 3;
    let dm = dc.user_opens_dm(who);
    dc.user_sends(who, dm, first);
    let messages = discord_messages(dc, dm, "the topic menu", |m| m.iter().any(is_menu)).await?;
    let menu = messages.into_iter().find(is_menu).expect("waited for it");
    Ok((dm, menu))
}

/// The messages in a channel of the Discord stand-in, once `pred` holds for them (or an
/// error naming `what` and what there was).
pub async fn discord_messages(
    dc: &discord_standin::DiscordStandIn,
    channel: u64,
    what: &str,
    pred: impl Fn(&[discord_standin::DcMessage]) -> bool,
) -> anyhow::Result<Vec<discord_standin::DcMessage>> {
    let messages = dc.wait_for_messages(channel, &pred, WAIT).await;
    anyhow::ensure!(pred(&messages), "waiting for {what}: {messages:#?}");
    Ok(messages)
}
