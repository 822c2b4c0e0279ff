//! Telegram through its stand-in: offers, typing, accepting, and conversations started there.

use super::*;

/// Offers the bot sent on Telegram that are still open (an accepted one is edited into
/// "You accepted the conversation with …", a withdrawn one into the reason).
pub fn open_offers(sent: &[telegram_standin::SentMessage]) -> Vec<&telegram_standin::SentMessage> {
    sent.iter()
        .filter(|m| {
            m.text
                .as_deref()
                .is_some_and(|t| t.contains("New conversation"))
        })
        .collect()
}

/// Waits until the bot has shown "typing…" in the Telegram chat `chat` (a `sendChatAction`
/// the stand-in took).
pub async fn telegram_typing_shown(
    tg: &telegram_standin::StandIn,
    chat: i64,
) -> anyhow::Result<()> {
    let chat = chat.to_string();
    wait_for(&format!("the chat action in chat {chat}"), || async {
        Ok(tg
            .requests()
            .iter()
            .any(|q| {
                let body = String::from_utf8_lossy(&q.body);
                q.method_lower == "sendchataction"
                    && q.status == 200
                    && body.contains(&chat)
                    && body.contains("typing")
            })
            .then_some(()))
    })
    .await
}

/// Waits for an open offer the bot sent `who` on Telegram; returns its text.
pub async fn telegram_offer(
    tg: &telegram_standin::StandIn,
    who: &telegram_standin::TgUser,
) -> anyhow::Result<String> {
    let sent = tg
        .wait_for_sent(who.id, |s| !open_offers(s).is_empty(), WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    Ok(open_offers(&sent)[0].text.clone().unwrap_or_default())
}

/// Waits until the initiator at (`platform`, `address`) has an open conversation; returns
/// the newest.
pub async fn initiator_conversation(
    store: &switchboard_bridge::Store,
    platform: &str,
    address: &str,
) -> anyhow::Result<switchboard_bridge::conversation::Conversation> {
    wait_for(
        &format!("the conversation of {platform} initiator {address}"),
        || async {
            Ok(store
                .open_initiator_conversations(platform, address)
                .await?
                .into_iter()
                .next())
        },
    )
    .await
}

/// Presses Accept on the first open offer the bot sent `who`; returns the offer's message ID.
pub fn accept_open_offer(tg: &telegram_standin::StandIn, who: &telegram_standin::TgUser) -> i64 {
    let sent = tg.sent(who.id);
    let offer = open_offers(&sent)[0];
    let data = offer.reply_markup.as_ref().expect("an offer has buttons")["inline_keyboard"][0][0]
        ["callback_data"]
        .as_str()
        .expect("Accept carries callback data")
        .to_owned();
    tg.user_presses(who, offer.message_id, &data);
    offer.message_id
}
