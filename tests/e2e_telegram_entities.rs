//! Telegram adds entity types over time, and teloxide cannot parse an update that carries one
//! it does not know. A responder's reply with such an entity (`date_time`, which teloxide 0.17
//! predates) must still reach the visitor with its text and the formatting that is known, by
//! long polling and by webhook alike.

mod common;

use anyhow::Context;
use common::*;
use serde_json::json;
use telegram_standin::{SentMessage, StandIn, TgUser};

/// Test binaries run one at a time, so these may reuse slots of other binaries.
const POLLING_SLOT: u32 = 0;
const WEBHOOK_SLOT: u32 = 1;

const REPLY: &str = "Meet at 22:45 tomorrow, bring the receipt";

fn offer_of(sent: &[SentMessage]) -> Option<(i64, String)> {
    sent.iter().find_map(|m| {
        let data = m.reply_markup.as_ref()?["inline_keyboard"][0][0]["callback_data"]
            .as_str()?
            .to_owned();
        Some((m.message_id, data))
    })
}

/// A visitor asks, `responder` accepts on Telegram and replies with a bold word and a
/// `date_time` entity; returns what the visitor saw.
async fn reply_with_a_date_time_entity(
    env: &TestEnv,
    sb: &Switchboard,
    tg: &StandIn,
    responder: &TgUser,
) -> anyhow::Result<Seen> {
    let mut visitor = Visitor::guest(env, &sb.base).await?;
    visitor.start("support").await?;
    visitor.send("When can I bring the kettle back?").await?;
    let sent = tg
        .wait_for_sent(responder.id, |s| offer_of(s).is_some(), WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("waiting for the offer: {e}"))?;
    let (offer, data) = offer_of(&sent).context("offer")?;
    tg.user_presses(responder, offer, &data);
    tg.wait_for_sent(
        responder.id,
        |s| {
            s.iter().any(|m| {
                m.text
                    .as_deref()
                    .is_some_and(|t| t.contains("You are now talking with"))
            })
        },
        WAIT,
    )
    .await
    .map_err(|e| anyhow::anyhow!("waiting for the accept confirmation: {e}"))?;

    tg.user_sends_with(
        responder,
        REPLY,
        vec![
            json!({"type": "bold", "offset": 0, "length": 4}),
            json!({"type": "date_time", "offset": 8, "length": 14, "unix_time": 1_800_000_000, "date_time_format": "t"}),
        ],
        None,
    );
    visitor
        .sync_until("the reply with a date_time entity", |seen| {
            seen.iter().any(|s| s.body.contains("receipt"))
        })
        .await?;
    Ok(visitor
        .seen
        .into_iter()
        .find(|s| s.body.contains("receipt"))
        .unwrap())
}

fn assert_text_and_known_formatting_kept(reply: &Seen, sb: &Switchboard) {
    assert_eq!(reply.body, REPLY, "the text must arrive whole");
    let html = reply.formatted_body.as_deref().unwrap_or_default();
    assert!(
        html.contains("<strong>Meet</strong>") || html.contains("<b>Meet</b>"),
        "the known bold formatting was lost: {html:?}"
    );
    assert!(
        html.contains("22:45 tomorrow"),
        "the date's text was lost: {html:?}"
    );
    let log = sb.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("date_time")),
        "the unknown entity type is not named in a warning"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_an_unknown_entity_type_arrives_by_long_polling() -> anyhow::Result<()> {
    const TOKEN: &str = "6161:entities-polling-token";
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, POLLING_SLOT)?;
    let tg = StandIn::start(TOKEN).await?;
    let alex = tg.user(9101, "Alexandra", None);
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[responders]]\nid = \"alex\"\ndisplay_name = \"Alexandra R.\"\ntopics = [\"support\"]\n\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\n",
        api = tg.api_url(),
        chat = alex.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let reply = reply_with_a_date_time_entity(&env, &sb, &tg, &alex).await?;
    assert_text_and_known_formatting_kept(&reply, &sb);
    // The update was confirmed, not left to come back forever.
    wait_for("the update to be confirmed", || async {
        Ok((tg.pending_updates() == 0).then_some(()))
    })
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_with_an_unknown_entity_type_arrives_by_webhook() -> anyhow::Result<()> {
    const TOKEN: &str = "6262:entities-webhook-token";
    const SECRET: &str = "entities-webhook-secret";
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, WEBHOOK_SLOT)?;
    let tg = StandIn::start(TOKEN).await?;
    let sam = tg.user(9202, "Samuel", None);
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\nwebhook_url = \"http://{listen}/telegram/webhook\"\n\
         webhook_secret = {SECRET:?}\n\n\
         [[responders]]\nid = \"sam\"\ndisplay_name = \"Samuel S.\"\ntopics = [\"support\"]\n\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\n",
        api = tg.api_url(),
        listen = slot.listen,
        chat = sam.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let reply = reply_with_a_date_time_entity(&env, &sb, &tg, &sam).await?;
    assert_text_and_known_formatting_kept(&reply, &sb);
    Ok(())
}
