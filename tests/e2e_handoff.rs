//! Hand-off when a responder ignores an offer: the conversation moves on to the next responder
//! within the topic's offer time-out, keeps its room, and a time-out that falls due while
//! Switchboard is down fires once when it is back.

mod common;

use std::time::Duration;

use common::*;
use telegram_standin::{SentMessage, StandIn, TgUser};

const SLOT: u32 = 5;
const TOKEN: &str = "7171:handoff-standin-token";

/// Waits until the bot has sent `chat` a message containing `needle`.
async fn wait_for_text(tg: &StandIn, chat: i64, needle: &str) -> anyhow::Result<Vec<SentMessage>> {
    tg.wait_for_sent(
        chat,
        |s| {
            s.iter()
                .any(|m| m.text.as_deref().is_some_and(|t| t.contains(needle)))
        },
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)
}

/// A responder on Telegram answering `support`, as config.
fn telegram_responder(id: &str, chat: i64) -> String {
    format!(
        "[[responders]]\nid = {id:?}\ndisplay_name = {id:?}\ntopics = [\"support\"]\n\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ignored_offer_moves_on_and_a_time_out_survives_a_restart() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let tg = StandIn::start(TOKEN).await?;
    let zoe: TgUser = tg.user(7104, "Zoe", None);
    let (tina, tom, trey): (TgUser, TgUser, TgUser) = (
        tg.user(7101, "Tina", None),
        tg.user(7102, "Tom", None),
        tg.user(7103, "Trey", None),
    );
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"round_robin\"\noffer_timeout_secs = 4\n\n{}{}{}",
        telegram_responder("tina", tina.id),
        telegram_responder("tom", tom.id),
        telegram_responder("trey", trey.id),
        api = tg.api_url(),
    ) + telegram_responder("zoe", zoe.id).as_str();
    let mut sb = Switchboard::start(&env, &slot, &config).await?;

    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("Is anyone there?").await?;

    // Round robin offers it to tina alone; she ignores it; within the time-out it moves to tom.
    tg.wait_for_sent(tina.id, |s| open_offers(s).len() == 1, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    assert!(
        open_offers(&tg.sent(tom.id)).is_empty(),
        "round robin offered to two at once"
    );
    tg.wait_for_sent(
        tom.id,
        |s| open_offers(s).len() == 1,
        Duration::from_secs(15),
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let tina_offer = tg
        .sent(tina.id)
        .into_iter()
        .find(|m| m.edited)
        .expect("tina's offer was withdrawn");
    assert_eq!(tina_offer.text.as_deref(), Some("This offer expired."));
    assert!(
        tina_offer.reply_markup.is_none(),
        "an expired offer must lose its buttons"
    );

    // Switchboard goes down while tom's offer is pending and stays down past its time-out.
    // (Once the offer's message ID is stored: a crash between sending an offer and storing
    // its ID is a known window in which the offer cannot be withdrawn on Telegram.)
    let store = sb.store().await?;
    wait_for("tom's offer to be stored", || async {
        Ok(store
            .offers_for_room(&room)
            .await?
            .iter()
            .any(|o| o.responder_id == "tom" && o.remote_message_id.is_some())
            .then_some(()))
    })
    .await?;
    sb.kill();
    tokio::time::sleep(Duration::from_secs(5)).await;
    sb.restart().await?;
    tg.wait_for_sent(trey.id, |s| open_offers(s).len() == 1, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;

    // Trey's offer says the visitor has been waiting: who was asked before, and what was said.
    let trey_offer = open_offers(&tg.sent(trey.id))[0]
        .text
        .clone()
        .unwrap_or_default();
    assert!(
        trey_offer
            .contains("Offered before to: tina (no answer in time), tom (no answer in time).")
            && trey_offer.contains("Is anyone there?"),
        "{trey_offer}"
    );
    // Trey takes it: the visitor sees one continuous conversation in the same room.
    accept_open_offer(&tg, &trey);
    wait_for_text(&tg, trey.id, "You are now talking").await?;
    tg.user_sends(&trey, "Sorry for the wait, I am here.");
    visitor
        .sync_until("trey's answer", |seen| {
            seen.iter()
                .any(|s| s.body == "Sorry for the wait, I am here.")
        })
        .await?;
    // Each time-out fired once: one offer per responder, one withdrawal each for tina and tom.
    let requests = tg.requests();
    let count = |method: &str, chat: i64, needle: &str| {
        requests
            .iter()
            .filter(|r| r.method_lower == method && r.status == 200)
            .filter(|r| {
                let body = String::from_utf8_lossy(&r.body);
                body.contains(&format!("\"chat_id\":{chat}")) && body.contains(needle)
            })
            .count()
    };
    for who in [&tina, &tom, &trey] {
        assert_eq!(
            count("sendmessage", who.id, "New conversation"),
            1,
            "offers to {}",
            who.first_name
        );
    }
    assert_eq!(count("editmessagetext", tina.id, "This offer expired."), 1);
    assert_eq!(
        count("editmessagetext", tom.id, "This offer expired."),
        1,
        "the time-out due while down fired twice"
    );
    assert_eq!(count("editmessagetext", trey.id, "This offer expired."), 0);
    assert_eq!(visitor.room_id.as_deref(), Some(room.as_str()));
    let states: Vec<(String, String)> = store
        .offers_for_room(&room)
        .await?
        .into_iter()
        .map(|o| (o.responder_id, o.state))
        .collect();
    assert_eq!(
        states,
        [
            ("tina".into(), "expired".into()),
            ("tom".into(), "expired".into()),
            ("trey".into(), "accepted".into())
        ]
    );

    // --- trey hands over: his ghost leaves, zoe gets a summary, the room stays the same --------
    tg.user_sends(&trey, "/transfer");
    let sent = tg
        .wait_for_sent(zoe.id, |s| open_offers(s).len() == 1, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    let offer = open_offers(&sent)[0];
    let text = offer.text.clone().unwrap_or_default();
    assert!(
        text.contains("trey handed this conversation over (transfer requested)"),
        "{text}"
    );
    assert!(
        text.contains("Is anyone there?") && text.contains("Sorry for the wait, I am here."),
        "{text}"
    );
    visitor
        .sync_until("the transfer notice", |seen| {
            seen.iter()
                .any(|s| s.body.contains("a colleague will take over"))
        })
        .await?;
    let trey_ghost = format!("@_sbt{SLOT}_trey:{}", env.server_name);
    let (_, member) = visitor
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            urlencode(&room),
            urlencode(&trey_ghost)
        ))
        .await?;
    assert_eq!(
        member["membership"], "leave",
        "the previous responder's ghost must leave"
    );
    let data = offer.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_owned();
    tg.user_presses(&zoe, offer.message_id, &data);
    visitor
        .sync_until("who answers now", |seen| {
            seen.iter()
                .any(|s| s.body == "You are now talking with Zoe.")
        })
        .await?;
    tg.user_sends(&zoe, "Hi, Zoe here, picking up.");
    visitor
        .sync_until("zoe's answer", |seen| {
            seen.iter().any(|s| s.body == "Hi, Zoe here, picking up.")
        })
        .await?;
    let history: Vec<(String, String)> = store
        .assignments_for_room(&room)
        .await?
        .into_iter()
        .map(|a| (a.responder_id, a.state))
        .collect();
    assert_eq!(
        history,
        [
            ("trey".into(), "transferred".into()),
            ("zoe".into(), "active".into())
        ]
    );
    // One room throughout: everything the visitor saw came through the same room's sync.
    assert_eq!(visitor.room_id.as_deref(), Some(room.as_str()));
    // The lifecycle as the widget sees it: the bot's state event at every step, the
    // expired offer and the restart included, each published once.
    let states: Vec<(String, u64)> = visitor
        .states
        .iter()
        .map(|s| {
            (
                s["state"].as_str().unwrap_or_default().to_owned(),
                s["transfers"].as_u64().unwrap_or(u64::MAX),
            )
        })
        .collect();
    let expected = [
        ("queued", 0),
        ("offered", 0),
        ("active", 0),
        ("transferring", 1),
        ("active", 1),
    ];
    assert_eq!(
        states,
        expected.map(|(s, n)| (s.to_owned(), n)),
        "{:#?}",
        visitor.states
    );
    assert_eq!(visitor.states[4]["responder"], "Zoe");
    assert_eq!(visitor.states[3]["responder"], serde_json::Value::Null);
    assert_eq!(
        store.conversation(&room).await?.unwrap().state.as_str(),
        "active"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_or_offline_responder_hands_the_conversation_over() -> anyhow::Result<()> {
    const TOKEN: &str = "7272:watchdog-standin-token";
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 6)?;
    let tg = StandIn::start(TOKEN).await?;
    let (ann, ben): (TgUser, TgUser) = (tg.user(7201, "Ann", None), tg.user(7202, "Ben", None));
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"round_robin\"\nfirst_reply_timeout_secs = 3\n\n{}{}",
        telegram_responder("ann", ann.id),
        telegram_responder("ben", ben.id),
        api = tg.api_url(),
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("Hello?").await?;

    // Ann accepts and then never answers: after the first-reply time-out, Ben is offered it.
    tg.wait_for_sent(ann.id, |s| open_offers(s).len() == 1, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    accept_open_offer(&tg, &ann);
    visitor
        .sync_until("ann", |seen| {
            seen.iter()
                .any(|s| s.body == "You are now talking with Ann.")
        })
        .await?;
    let sent = tg
        .wait_for_sent(ben.id, |s| open_offers(s).len() == 1, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    assert!(
        open_offers(&sent)[0]
            .text
            .as_deref()
            .unwrap_or_default()
            .contains("ann handed this conversation over (no first reply in time)")
    );
    wait_for_text(&tg, ann.id, "no first reply in time").await?;
    accept_open_offer(&tg, &ben);
    tg.user_sends(&ben, "Ben here.");
    visitor
        .sync_until("ben", |seen| seen.iter().any(|s| s.body == "Ben here."))
        .await?;

    // Ben goes offline: his conversation is handed over; nobody else is left, so the visitor
    // is told plainly and the conversation waits.
    tg.user_sends(&ben, "/offline");
    visitor
        .sync_until("the offline notice", |seen| {
            seen.iter().any(|s| s.body.contains("Nobody is available"))
        })
        .await?;
    let store = sb.store().await?;
    let history: Vec<(String, String)> = store
        .assignments_for_room(&room)
        .await?
        .into_iter()
        .map(|a| (a.responder_id, a.state))
        .collect();
    assert_eq!(
        history,
        [
            ("ann".into(), "transferred".into()),
            ("ben".into(), "transferred".into())
        ]
    );
    // Queued again, and the widget is told nobody is available (not merely "waiting").
    assert_eq!(
        visitor.states.last(),
        Some(&serde_json::json!({
            "state": "queued", "responder": null, "transfers": 2, "nobody_available": true
        })),
        "{:#?}",
        visitor.states
    );
    assert_eq!(
        store.conversation(&room).await?.unwrap().state.as_str(),
        "queued"
    );

    // --- the visitor ends the conversation; nobody else can --------------------------------------
    let http = reqwest::Client::new();
    let end_url = format!("{}/api/v1/conversations/{}/end", sb.base, urlencode(&room));
    let intruder = Visitor::guest(&env, &sb.base).await?;
    let r = http
        .post(&end_url)
        .bearer_auth(&intruder.token)
        .send()
        .await?;
    assert_eq!(
        r.status().as_u16(),
        404,
        "another visitor ended someone else's conversation"
    );
    assert_eq!(
        store.conversation(&room).await?.unwrap().state.as_str(),
        "queued"
    );
    let r = http
        .post(&end_url)
        .bearer_auth(&visitor.token)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 204);
    visitor
        .sync_until("the end notice", |seen| {
            seen.iter().any(|s| s.body == "The conversation has ended.")
        })
        .await?;
    assert_eq!(
        store.conversation(&room).await?.unwrap().state.as_str(),
        "closed"
    );
    Ok(())
}

/// `/transfer <responder>` hands the conversation to that colleague (if routing allows them:
/// here Quinn becomes available only after Pia took the conversation), and a `/transfer` to a
/// name that is neither a topic nor a responder is refused with a clear answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_named_transfer_goes_to_that_responder() -> anyhow::Result<()> {
    const TOKEN: &str = "7373:named-transfer-standin-token";
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 8)?;
    let tg = StandIn::start(TOKEN).await?;
    let (pia, quinn): (TgUser, TgUser) = (tg.user(7301, "Pia", None), tg.user(7302, "Quinn", None));
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\n{}\
         [[responders]]\nid = \"quinn\"\ndisplay_name = \"quinn\"\ntopics = [\"support\"]\nstatus = \"away\"\n\
         contacts = [{{ platform = \"telegram\", address = \"{quinn_chat}\" }}]\n",
        telegram_responder("pia", pia.id),
        api = tg.api_url(),
        quinn_chat = quinn.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("Hello, anyone?").await?;

    // Only Pia is available: she takes it.
    tg.wait_for_sent(pia.id, |s| open_offers(s).len() == 1, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    accept_open_offer(&tg, &pia);
    wait_for_text(&tg, pia.id, "You are now talking").await?;
    assert!(open_offers(&tg.sent(quinn.id)).is_empty(), "Quinn was away");

    // Quinn comes back; a transfer to a name nobody has is refused, one to Quinn goes to him.
    tg.user_sends(&quinn, "/available");
    wait_for_text(&tg, quinn.id, "available").await?;
    tg.user_sends(&pia, "/transfer nobody-by-that-name");
    wait_for_text(&tg, pia.id, "There is no topic or responder called").await?;
    assert_eq!(
        store_state(&sb, &room).await?,
        "active",
        "a refused transfer must leave the conversation with Pia"
    );
    tg.user_sends(&pia, "/transfer quinn");
    let sent = tg
        .wait_for_sent(quinn.id, |s| open_offers(s).len() == 1, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    let text = open_offers(&sent)[0].text.clone().unwrap_or_default();
    assert!(
        text.contains("pia handed this conversation over (transfer to quinn requested)"),
        "{text}"
    );
    accept_open_offer(&tg, &quinn);
    visitor
        .sync_until("Quinn", |seen| {
            seen.iter()
                .any(|s| s.body == "You are now talking with Quinn.")
        })
        .await?;
    assert_eq!(store_state(&sb, &room).await?, "active");
    Ok(())
}

async fn store_state(sb: &Switchboard, room: &str) -> anyhow::Result<String> {
    Ok(sb
        .store()
        .await?
        .conversation(room)
        .await?
        .map(|c| c.state.as_str().to_owned())
        .unwrap_or_default())
}
