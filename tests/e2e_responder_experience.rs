//! What responders meet, on a real Synapse with the Telegram stand-in and a real Matrix client
//! (each test was written against a defect found by trying Switchboard from outside):
//!
//! - a reply to an offer, or to a notice about a conversation, reaches that conversation, even
//!   for a visitor who wrote only the message the offer quotes;
//! - malformed visitor events (a numeric `body`, `null` content, no body, a blank one) relay
//!   nothing, are logged once each, and the next real message still arrives;
//! - a queued conversation is offered as soon as a responder frees capacity, not at the next
//!   periodic look at the queue;
//! - a Matrix responder whose conversation is taken from them is told in its relay room and
//!   removed from it.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use telegram_standin::{SentMessage, StandIn, TgUser};

async fn wait_for_sent(
    tg: &StandIn,
    chat: i64,
    what: impl Fn(&[SentMessage]) -> bool,
) -> anyhow::Result<Vec<SentMessage>> {
    tg.wait_for_sent(chat, what, WAIT)
        .await
        .map_err(anyhow::Error::msg)
}

fn has_text(sent: &[SentMessage], needle: &str) -> bool {
    sent.iter()
        .any(|m| m.text.as_deref().is_some_and(|t| t.contains(needle)))
}

/// Switchboard on `slot` with Tina answering `support` on Telegram (`tina_extra`: more of
/// her register entry).
async fn with_tina(
    env: &TestEnv,
    slot: u32,
    token: &str,
    chat: i64,
    tina_extra: &str,
) -> anyhow::Result<(Switchboard, StandIn, TgUser, Slot)> {
    let slot = Slot::load(env, slot)?;
    let tg = StandIn::start(token).await?;
    let tina = tg.user(chat, "Tina", None);
    let config = format!(
        "[telegram]\ntoken = {token:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"support\"\nname = \"Support\"\n\n\
         [[responders]]\nid = \"tina\"\ndisplay_name = \"Tina\"\ntopics = [\"support\"]\n{tina_extra}\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n",
        api = tg.api_url(),
    );
    let sb = Switchboard::start(env, &slot, &config).await?;
    Ok((sb, tg, tina, slot))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_an_offer_or_a_notice_reaches_its_conversation() -> anyhow::Result<()> {
    const TOKEN: &str = "8101:replies-standin-token";
    let env = TestEnv::from_env();
    let (sb, tg, tina, _slot) = with_tina(&env, 0, TOKEN, 8101, "").await?;
    let store = sb.store().await?;

    // Two visitors, each writing once: that one message is all Tina sees of them (quoted in
    // the offer).
    let mut first = Visitor::guest(&env, &sb.base).await?;
    let first_room = first.start("support").await?;
    first.send("Is the shop open on Sunday?").await?;
    wait_for_sent(&tg, tina.id, |s| open_offers(s).len() == 1).await?;
    accept_open_offer(&tg, &tina);
    let first_alias = store
        .conversation(&first_room)
        .await?
        .unwrap()
        .visitor_alias;
    let now_talking = format!("You are now talking with {first_alias}");
    let sent = wait_for_sent(&tg, tina.id, |s| has_text(s, &now_talking)).await?;
    let notice_id = sent
        .iter()
        .find(|m| m.text.as_deref().is_some_and(|t| t.contains(&now_talking)))
        .unwrap()
        .message_id;

    let mut second = Visitor::guest(&env, &sb.base).await?;
    second.start("support").await?;
    second.send("Do you ship to Norway?").await?;
    wait_for_sent(&tg, tina.id, |s| open_offers(s).len() == 1).await?;
    let second_offer = accept_open_offer(&tg, &tina);
    let second_alias = store
        .conversation(second.room_id.as_deref().unwrap())
        .await?
        .unwrap()
        .visitor_alias;
    wait_for_sent(&tg, tina.id, |s| {
        has_text(s, &format!("You are now talking with {second_alias}"))
    })
    .await?;

    // Tina holds two conversations. A reply to the second visitor's offer (by now the
    // "accepted" message) answers the second visitor; a reply to the "now talking" notice of
    // the first answers the first.
    tg.user_sends_with(&tina, "We ship to Norway, yes.", vec![], Some(second_offer));
    tg.user_sends_with(&tina, "Open 10 to 4 on Sundays.", vec![], Some(notice_id));
    second
        .sync_until("Tina's answer about Norway", |seen| {
            seen.iter().any(|s| s.body == "We ship to Norway, yes.")
        })
        .await?;
    first
        .sync_until("Tina's answer about Sunday", |seen| {
            seen.iter().any(|s| s.body == "Open 10 to 4 on Sundays.")
        })
        .await?;
    assert!(
        !first.seen.iter().any(|s| s.body.contains("Norway"))
            && !second.seen.iter().any(|s| s.body.contains("Sunday")),
        "an answer reached the wrong visitor"
    );
    assert!(
        !has_text(&tg.sent(tina.id), "several conversations"),
        "the bot asked which conversation although Tina replied to one"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_visitor_messages_relay_nothing_and_the_next_one_still_arrives()
-> anyhow::Result<()> {
    const TOKEN: &str = "8202:malformed-standin-token";
    let env = TestEnv::from_env();
    let (sb, tg, tina, slot) = with_tina(&env, 1, TOKEN, 8202, "").await?;
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("Hello").await?;
    wait_for_sent(&tg, tina.id, |s| open_offers(s).len() == 1).await?;
    accept_open_offer(&tg, &tina);
    visitor
        .sync_until("Tina", |seen| {
            seen.iter()
                .any(|s| s.body.starts_with("You are now talking with"))
        })
        .await?;
    let alias = sb
        .store()
        .await?
        .conversation(&room)
        .await?
        .unwrap()
        .visitor_alias;

    // Synapse refuses such content from clients (400), so it arrives the way the outside
    // test sent it: in a pushed transaction, as from a homeserver that lets it through.
    let odd = |n: u32, content: serde_json::Value| {
        json!({
            "type": "m.room.message", "event_id": format!("$malformed{n}-{}", unique("")),
            "room_id": room, "sender": visitor.user_id, "origin_server_ts": 1,
            "content": content,
        })
    };
    let body = json!({"events": [
        odd(0, json!({"msgtype": "m.text", "body": 42})),
        odd(1, serde_json::Value::Null),
        odd(2, json!({"msgtype": "m.text"})),
        odd(3, json!({"msgtype": "m.text", "body": "   "})),
        odd(4, json!({"msgtype": "m.text", "body": ["a", "list"]})),
    ]});
    let (status, _) = push_transaction(
        &sb.base,
        &unique("malformed"),
        Some(&slot.hs_token),
        &body.to_string(),
    )
    .await?;
    assert_eq!(status, 200, "odd events must not fail the transaction");
    visitor.send("Are you there?").await?;

    let sent = wait_for_sent(&tg, tina.id, |s| has_text(s, "Are you there?")).await?;
    let relayed: Vec<&str> = sent
        .iter()
        .filter_map(|m| m.text.as_deref())
        .filter(|t| t.starts_with(&alias))
        .collect();
    assert_eq!(
        relayed,
        [format!("{alias}:\nAre you there?").as_str()],
        "only the real message may reach Tina; everything sent: {sent:#?}"
    );
    // Each once: the batch path stops at such an event without a word, and the event is
    // logged where it is handled on its own.
    assert_eq!(
        sb.log_text()
            .matches("message without a usable text body skipped")
            .count(),
        5,
        "each skipped event is logged, once"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_conversation_is_offered_as_soon_as_its_responder_frees_capacity()
-> anyhow::Result<()> {
    const TOKEN: &str = "8303:capacity-standin-token";
    let env = TestEnv::from_env();
    let (sb, tg, tina, _slot) = with_tina(&env, 2, TOKEN, 8303, "max_concurrent = 1\n").await?;
    let mut first = Visitor::guest(&env, &sb.base).await?;
    first.start("support").await?;
    first.send("First in line").await?;
    wait_for_sent(&tg, tina.id, |s| open_offers(s).len() == 1).await?;
    accept_open_offer(&tg, &tina);
    wait_for_sent(&tg, tina.id, |s| has_text(s, "You are now talking with")).await?;

    // Tina is at capacity: the second visitor waits in the queue.
    let mut second = Visitor::guest(&env, &sb.base).await?;
    second.start("support").await?;
    second.send("Second in line").await?;
    second
        .sync_until("the queue notice", |seen| {
            seen.iter().any(|s| s.body.contains("Nobody is available"))
        })
        .await?;
    assert_eq!(
        open_offers(&tg.sent(tina.id)).len(),
        0,
        "Tina is at capacity"
    );

    // Tina ends the first conversation: the second is offered at once. The queue is also
    // looked at every 30 s, so a wait of that order means only the periodic check found it.
    let ended = Instant::now();
    tg.user_sends(&tina, "/end");
    wait_for_sent(&tg, tina.id, |s| open_offers(s).len() == 1).await?;
    let waited = ended.elapsed();
    assert!(
        waited < Duration::from_secs(8),
        "the queued conversation was offered {waited:?} after Tina freed capacity"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_responder_is_told_and_removed_when_their_conversation_is_taken()
-> anyhow::Result<()> {
    let env = TestEnv::from_env();
    const SLOT: u32 = 3;
    let slot = Slot::load(&env, SLOT)?;
    let mara_local = unique("mara");
    let mara_id = env.user_id(&mara_local);
    let config = format!(
        "[[topics]]\nid = \"support\"\nname = \"Support\"\nfirst_reply_timeout_secs = 3\n\n\
         [[responders]]\nid = \"mara\"\ndisplay_name = \"Mara\"\ntopics = [\"support\"]\n\
         contacts = [{{ platform = \"matrix\", address = {mara_id:?} }}]\n"
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let mut mara = MatrixResponder::register(&env, &mara_local).await?;
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("Anyone there?").await?;
    let store = sb.store().await?;
    let relay = relay_room_of(&store, &room, "mara").await?;
    mara.accept_invite(&relay).await?;
    let bot = format!("@sbt{SLOT}bot:{}", env.server_name);
    mara.wait_for_text(&relay, &bot, "You are now talking with")
        .await?;

    // Mara never answers: after the first-reply limit the conversation is taken from her. She
    // is told why, in the relay room, and removed from it.
    mara.wait_for_text(
        &relay,
        &bot,
        "handed to a colleague: no first reply in time",
    )
    .await?;
    let relay_id = matrix_sdk::ruma::OwnedRoomId::try_from(relay.as_str())?;
    wait_for("Mara to be removed from the relay room", || async {
        Ok(mara
            .client
            .get_room(&relay_id)
            .is_some_and(|r| r.state() == matrix_sdk::RoomState::Left)
            .then_some(()))
    })
    .await?;
    Ok(())
}
