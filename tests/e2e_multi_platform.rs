//! One responder, three conversations at once, on two platforms: two taken on Telegram, one
//! through a Matrix client. Every reply must land in its own conversation, and every visitor
//! message must reach the responder on the platform that conversation lives on, and only there.

mod common;

use common::*;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use telegram_standin::{SentMessage, StandIn};

const SLOT: u32 = 7;
const TOKEN: &str = "7373:multi-platform-standin-token";

fn text_of(m: &SentMessage) -> &str {
    m.text.as_deref().unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_responder_holds_three_conversations_on_two_platforms() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let tg = StandIn::start(TOKEN).await?;
    let mia_tg = tg.user(9301, "Mia", None);
    let local = unique("mia");
    let mia_mx_id = env.user_id(&local);
    let mut mia_mx = MatrixResponder::register(&env, &local).await?;
    let bot_id = format!("@sbt{SLOT}bot:{}", env.server_name);

    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\n\
         [[responders]]\nid = \"mia\"\ndisplay_name = \"Mia Example\"\npseudonym = \"Mia\"\n\
         topics = [\"support\"]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"telegram\", address = \"{tg_chat}\" }}, \
                     {{ platform = \"matrix\", address = {mia_mx_id:?} }}]\n",
        api = tg.api_url(),
        tg_chat = mia_tg.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let store = sb.store().await?;

    // --- three visitors write; each conversation is offered on both of Mia's platforms ---------
    let mut visitors = Vec::new();
    let mut rooms = Vec::new();
    for i in 0..3 {
        let mut v = Visitor::guest(&env, &sb.base).await?;
        rooms.push(v.start("support").await?);
        v.send(&format!("Question {i} from visitor {i}")).await?;
        visitors.push(v);
    }
    for room in &rooms {
        let offers = wait_for("an offer on each platform", || async {
            let o = store.offers_for_room(room).await?;
            Ok((o.len() == 2 && o.iter().all(|o| o.remote_message_id.is_some())).then_some(o))
        })
        .await?;
        let mut platforms: Vec<_> = offers.iter().map(|o| o.platform.as_str()).collect();
        platforms.sort_unstable();
        assert_eq!(platforms, ["matrix", "telegram"], "{offers:?}");
    }
    let sent = tg
        .wait_for_sent(
            mia_tg.id,
            |s| s.iter().filter(|m| m.reply_markup.is_some()).count() == 3,
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let tg_offer = |i: usize| {
        sent.iter()
            .find(|m| m.reply_markup.is_some() && text_of(m).contains(&format!("Question {i} ")))
            .cloned()
            .expect("an offer quoting the visitor's first message")
    };

    // --- Mia takes 0 and 1 on Telegram and 2 in her Matrix client -------------------------------
    for i in [0, 1] {
        let offer = tg_offer(i);
        let data = offer.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"]
            .as_str()
            .unwrap()
            .to_owned();
        tg.user_presses(&mia_tg, offer.message_id, &data);
        visitors[i]
            .sync_until("who answers", |seen| {
                seen.iter()
                    .any(|s| s.body == "You are now talking with Mia.")
            })
            .await?;
    }
    let relay2 = relay_room_of(&store, &rooms[2], "mia").await?;
    let relay_chat = mia_mx.accept_invite(&relay2).await?;
    visitors[2]
        .sync_until("who answers", |seen| {
            seen.iter()
                .any(|s| s.body == "You are now talking with Mia.")
        })
        .await?;
    for (i, room) in rooms.iter().enumerate() {
        let held = store.active_assignments_for_room(room).await?;
        let want = if i < 2 { "telegram" } else { "matrix" };
        assert_eq!(held.len(), 1, "{held:?}");
        assert_eq!(
            (held[0].responder_id.as_str(), held[0].platform.as_str()),
            ("mia", want)
        );
        // Her offer on the other platform is closed, not left dangling.
        let offers = store.offers_for_room(room).await?;
        assert!(
            offers.iter().all(|o| o.state != "open"),
            "an offer stayed open after the accept: {offers:?}"
        );
    }
    // The Telegram offer for the conversation she took in Matrix says so.
    let offer2 = tg_offer(2).message_id;
    tg.wait_for_sent(
        mia_tg.id,
        |s| {
            s.iter().any(|m| {
                m.message_id == offer2
                    && m.reply_markup.is_none()
                    && text_of(m).contains("You took this conversation on Matrix")
            })
        },
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;

    // --- visitors write again; each message reaches the platform its conversation lives on ------
    for (i, v) in visitors.iter_mut().enumerate() {
        v.send(&format!("Follow-up {i}")).await?;
    }
    let sent = tg
        .wait_for_sent(
            mia_tg.id,
            |s| {
                (0..2).all(|i| {
                    s.iter()
                        .any(|m| text_of(m).contains(&format!("Follow-up {i}")))
                })
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    mia_mx
        .wait_for_text(&relay2, &bot_id, "Follow-up 2")
        .await?;
    assert!(
        !sent.iter().any(|m| text_of(m).contains("Follow-up 2")),
        "conversation 2 lives in Matrix, yet reached Telegram"
    );
    assert!(
        !mia_mx
            .all_bodies()
            .iter()
            .any(|b| b.contains("Follow-up 0") || b.contains("Follow-up 1")),
        "Telegram conversations reached her Matrix client: {:?}",
        mia_mx.all_bodies()
    );

    // --- replies: Telegram replies by quoting, Matrix in the relay room ---------------------------
    // Two conversations are open on Telegram, so an unquoted message is not guessed. The bot's
    // answer is a service message; Telegram rate-limits it once, and it still arrives.
    tg.rate_limit_next("sendMessage", Some(mia_tg.id), 1, 1);
    tg.user_sends(&mia_tg, "Which one is this?");
    tg.wait_for_sent(
        mia_tg.id,
        |s| {
            s.iter()
                .any(|m| text_of(m).contains("several conversations"))
        },
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    assert!(
        tg.requests()
            .iter()
            .any(|r| r.method_lower == "sendmessage" && r.status == 429),
        "the stand-in never rate-limited the service message"
    );
    // Reply to the newer conversation first, then the older, to catch any "latest wins" guess.
    for i in [1, 0] {
        let quoted = sent
            .iter()
            .find(|m| text_of(m).contains(&format!("Follow-up {i}")))
            .unwrap()
            .message_id;
        tg.user_sends_with(&mia_tg, &format!("Answer for {i}"), vec![], Some(quoted));
    }
    relay_chat
        .send(RoomMessageEventContent::text_plain("Answer for 2"))
        .await?;

    let ghost = format!("@_sbt{SLOT}_mia:{}", env.server_name);
    for (i, v) in visitors.iter_mut().enumerate() {
        let mine = format!("Answer for {i}");
        v.sync_until("their answer", |seen| seen.iter().any(|s| s.body == mine))
            .await?;
    }
    // Give any stray delivery time to arrive, then read each transcript as recorded.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    for (i, room) in rooms.iter().enumerate() {
        let answers: Vec<_> = store
            .messages(room)
            .await?
            .into_iter()
            .filter(|m| m.sender == ghost)
            .map(|m| m.body)
            .collect();
        assert_eq!(answers, [format!("Answer for {i}")], "conversation {i}");
    }

    // --- typing, both ways --------------------------------------------------------------------
    // Visitor 0 types: Mia sees "typing…" in the Telegram chat that holds the conversation.
    let http = reqwest::Client::new();
    let v0 = &visitors[0];
    // Guests may not send m.typing on Synapse; the widget tells Switchboard instead.
    let r = http
        .post(format!(
            "{}/api/v1/conversations/{}/typing",
            sb.base,
            urlencode(&rooms[0])
        ))
        .bearer_auth(&v0.token)
        .json(&serde_json::json!({"typing": true}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 204);
    // Not for anyone else's conversation.
    let r = http
        .post(format!(
            "{}/api/v1/conversations/{}/typing",
            sb.base,
            urlencode(&rooms[1])
        ))
        .bearer_auth(&v0.token)
        .json(&serde_json::json!({"typing": true}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 404);
    telegram_typing_shown(&tg, mia_tg.id).await?;
    // Mia types in her Matrix client: visitor 2 sees her ghost typing in the conversation.
    relay_chat.typing_notice(true).await?;
    assert!(
        ghost_typing_seen(&visitors[2], &rooms[2], &ghost).await?,
        "visitor 2 never saw Mia typing"
    );

    assert!(
        !mia_mx
            .all_bodies()
            .iter()
            .any(|b| b.contains(&visitors[0].user_id)),
        "a visitor's Matrix ID reached the responder"
    );
    Ok(())
}
