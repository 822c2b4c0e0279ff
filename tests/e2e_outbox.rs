//! The outbox end to end: a visitor message long enough to be split reaches a Telegram
//! responder piece by piece, each piece exactly once and in order even when Telegram's flood
//! control refuses one in the middle; every message to one Telegram chat (pieces and notices
//! alike) keeps to about one per second, while a Matrix responder is not held to Telegram's
//! pace.

mod common;

use anyhow::Context;
use common::*;
use serde_json::Value;
use telegram_standin::{SentMessage, StandIn, TgUser};

/// Reuses e2e_telegram's slots: test binaries run one at a time.
const TELEGRAM_SLOT: u32 = 2;
const MATRIX_SLOT: u32 = 3;
const TOKEN: &str = "4343:standin-outbox-token";

/// Telegram allows about one message per second per chat; what the stand-in sees may come a
/// little early against our clock (HTTP latency varies), hence the tolerance.
const MIN_GAP_MS: i64 = 900;

fn texts(sent: &[SentMessage]) -> Vec<String> {
    sent.iter().filter_map(|m| m.text.clone()).collect()
}

/// Five paragraphs of 375 numbered words each (3000 characters): too long for one Telegram
/// message (4096), and each paragraph fits one, so the message becomes exactly five pieces.
fn five_piece_message() -> (String, Vec<String>) {
    let words: Vec<Vec<String>> = (0..5)
        .map(|p| (0..375).map(|w| format!("p{p}w{w:03}")).collect())
        .collect();
    let text = words
        .iter()
        .map(|p| p.join(" "))
        .collect::<Vec<_>>()
        .join("\n\n");
    (text, words.concat())
}

/// One of [`five_piece_message`]'s words, `p{paragraph}w{number}`.
fn is_word(w: &str) -> bool {
    w.len() == 6 && w.starts_with('p') && w.as_bytes()[2] == b'w'
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_message_resumes_after_a_429_and_each_chat_gets_one_message_a_second()
-> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, TELEGRAM_SLOT)?;
    let tg = StandIn::start(TOKEN).await?;
    let alex: TgUser = tg.user(7101, "Alexandra", None);
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[responders]]\nid = \"alex\"\ndisplay_name = \"Alexandra R.\"\ntopics = [\"support\"]\n\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\n",
        api = tg.api_url(),
        chat = alex.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;

    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("My kettle leaks").await?;
    let alias = sb
        .store()
        .await?
        .conversation(&room)
        .await?
        .context("stored")?
        .visitor_alias;
    let sent = tg
        .wait_for_sent(
            alex.id,
            |s| s.iter().any(|m| m.reply_markup.is_some()),
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let offer = sent.iter().find(|m| m.reply_markup.is_some()).unwrap();
    let accept = offer.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .context("accept button")?
        .to_owned();
    tg.user_presses(&alex, offer.message_id, &accept);
    let before = tg
        .wait_for_sent(
            alex.id,
            |s| {
                texts(s)
                    .iter()
                    .any(|t| t.starts_with("You are now talking with"))
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?
        .len();

    // Flood control strikes on the third message to this chat from now on: the third piece.
    tg.rate_limit_after("sendMessage", Some(alex.id), 2, 1, 2);
    let (long, words) = five_piece_message();
    visitor.send(&long).await?;
    tg.wait_for_sent(
        alex.id,
        |s| texts(s).iter().any(|t| t.contains("p2w000")),
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    // A notice to the same chat while the rest of the pieces are on their way, then the
    // visitor's next message: both keep to the chat's pace, and the message comes last.
    tg.user_sends(&alex, "/conversations");
    visitor.send("after the long one").await?;
    tg.wait_for_sent(
        alex.id,
        |s| {
            let t = texts(s);
            t.iter().any(|t| t.contains("after the long one"))
                && t.iter().any(|t| t.starts_with("Your conversations"))
        },
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    // Anything doubled would show up within a retry_after or two.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let sent: Vec<SentMessage> = tg.sent(alex.id).into_iter().skip(before).collect();
    assert!(sent.len() >= 7, "{:#?}", texts(&sent));

    assert!(
        tg.requests()
            .iter()
            .any(|r| r.method_lower == "sendmessage" && r.status == 429),
        "the stand-in never refused a piece"
    );
    let pieces: Vec<&str> = sent
        .iter()
        .filter_map(|m| m.text.as_deref())
        .filter(|t| t.split_whitespace().any(is_word))
        .collect();
    let received: Vec<&str> = pieces
        .iter()
        .flat_map(|p| p.split_whitespace())
        .filter(|w| is_word(w))
        .collect();
    assert_eq!(
        received,
        words,
        "each piece exactly once, in order ({} pieces arrived)",
        pieces.len()
    );
    assert_eq!(pieces.len(), 5, "{pieces:#?}");
    let header = format!("{alias}:");
    assert!(
        pieces[0].starts_with(&header),
        "the first piece names the visitor"
    );
    assert_eq!(
        pieces.iter().filter(|p| p.contains(&header)).count(),
        1,
        "the header came more than once"
    );
    let all = texts(&sent);
    let last_piece = all.iter().position(|t| t.contains("p4w374")).unwrap();
    let next = all
        .iter()
        .position(|t| t.contains("after the long one"))
        .unwrap();
    assert!(
        last_piece < next,
        "the next message overtook the long one: {all:#?}"
    );
    assert_eq!(
        all.iter()
            .filter(|t| t.contains("after the long one"))
            .count(),
        1
    );

    // Pieces, the notice and the next message: each at least about a second after the one
    // before, as the stand-in received them.
    let times: Vec<(i64, String)> = sent
        .iter()
        .map(|m| {
            let text = m.text.clone().unwrap_or_default();
            (m.received_at_ms, text.chars().take(30).collect())
        })
        .collect();
    for pair in times.windows(2) {
        assert!(
            pair[1].0 - pair[0].0 >= MIN_GAP_MS,
            "two messages to one chat {} ms apart: {:?} then {:?} (all: {times:?})",
            pair[1].0 - pair[0].0,
            pair[0].1,
            pair[1].1,
        );
    }
    Ok(())
}

/// The relayed messages' `origin_server_ts` in a relay room, read as the bot (which is in it).
async fn relayed_times(
    env: &TestEnv,
    slot: &Slot,
    relay: &str,
    prefix: &str,
) -> anyhow::Result<Vec<i64>> {
    let page: Value = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{}/messages?dir=f&limit=100",
            env.hs_url,
            urlencode(relay)
        ))
        .bearer_auth(&slot.as_token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(page["chunk"]
        .as_array()
        .context("chunk")?
        .iter()
        .filter(|e| {
            e["type"] == "m.room.message"
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains(prefix))
        })
        .filter_map(|e| e["origin_server_ts"].as_i64())
        .collect())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_responder_is_not_held_to_telegrams_pace() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, MATRIX_SLOT)?;
    let local = unique("pace");
    let responder_id = env.user_id(&local);
    let mut responder = MatrixResponder::register(&env, &local).await?;
    let sb = Switchboard::start(
        &env,
        &slot,
        &format!(
            "[[topics]]\nid = \"support\"\nname = \"General support\"\n\n\
             [[responders]]\nid = \"rae\"\ndisplay_name = \"Rae\"\ntopics = [\"support\"]\n\
             contacts = [{{ platform = \"matrix\", address = {responder_id:?} }}]\n"
        ),
    )
    .await?;
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("hello").await?;
    let store = sb.store().await?;
    let relay = relay_room_of(&store, &room, "rae").await?;
    responder.accept_invite(&relay).await?;
    wait_for("the conversation to become active", || async {
        Ok(
            (store.conversation(&room).await?.map(|c| c.state.as_str()) == Some("active"))
                .then_some(()),
        )
    })
    .await?;

    let burst = ["burst 1", "burst 2", "burst 3", "burst 4", "burst 5"];
    for text in burst {
        visitor.send(text).await?;
    }
    let bot = format!("@sbt{MATRIX_SLOT}bot:{}", env.server_name);
    wait_for("the burst in the relay room", || async {
        let times = relayed_times(&env, &slot, &relay, "burst").await?;
        Ok((times.len() == burst.len()).then_some(times))
    })
    .await?;
    let times = relayed_times(&env, &slot, &relay, "burst").await?;
    responder
        .wait_for_text(&relay, &bot, "burst 5")
        .await
        .context("the responder's client")?;
    let spread = times.iter().max().unwrap() - times.iter().min().unwrap();
    // Paced at one a second, five messages would take at least four seconds.
    assert!(
        spread < 2500,
        "five visitor messages reached the Matrix responder over {spread} ms: {times:?}"
    );
    Ok(())
}
