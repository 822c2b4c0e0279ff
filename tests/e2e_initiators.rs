//! Conversations started from a platform rather than the widget (issue 14): a person writes
//! to the operator's Telegram bot, picks a topic from its buttons, and talks with a responder
//! who answers from a Matrix client. They are a visitor ghost with a pseudonym in the room;
//! nothing of who they are on Telegram reaches the responder.

mod common;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_telegram_initiator_talks_with_a_matrix_responder() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 0)?;
    let tg = StandIn::start(TOKEN).await?;
    // Her Telegram app is in German (de-AT): she is asked in German where we can.
    let ana = tg
        .user(ANA_ID, ANA_NAME, Some(ANA_HANDLE))
        .speaking(Some("de-AT"));
    let local = unique("sam");
    let sam_id = env.user_id(&local);
    let mut sam = MatrixResponder::register(&env, &local).await?;
    let bot_id = format!("@sbt0bot:{}", env.server_name);
    let mut sb = Switchboard::start(&env, &slot, &config(&tg, &sam_id)).await?;
    let store = sb.store().await?;

    // --- Ana writes before choosing: she is asked for a topic, her words are kept -------------
    tg.user_sends(&ana, "Hello, my order 1234 is late");
    let question = topic_question(&tg, &ana, 0).await?;
    let buttons: Vec<(String, String)> = question.reply_markup.as_ref().unwrap()["inline_keyboard"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|row| row.as_array().unwrap().clone())
        .map(|b| {
            (
                b["text"].as_str().unwrap().to_owned(),
                b["callback_data"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        question.text.as_deref(),
        Some("Hallo! Worüber möchten Sie sprechen?")
    );
    // A topic with a German name shows it; one without shows its own.
    assert_eq!(
        buttons,
        [
            ("Allgemeine Hilfe".to_owned(), "topic:support".to_owned()),
            ("Billing".to_owned(), "topic:billing".to_owned())
        ]
    );
    tg.user_sends(&ana, "It was due on Monday");
    tg.user_presses(&ana, question.message_id, "topic:support");

    // --- a conversation like the widget's: a room, a visitor ghost, an offer -------------------
    let conversation = wait_for("Ana's conversation", || async {
        Ok(store
            .open_initiator_conversations("telegram", &ANA_ID.to_string())
            .await?
            .into_iter()
            .next())
    })
    .await?;
    let room = conversation.room_id.clone();
    assert!(room.starts_with('!'), "{room}");
    assert_eq!(conversation.topic, "support");
    // Her app's language is the conversation's, as a browser's is for the widget.
    assert_eq!(conversation.language.as_deref(), Some("de-AT"));
    assert!(
        conversation.visitor_user_id.contains("visitor-")
            && !conversation.visitor_user_id.contains(&ANA_ID.to_string()),
        "the visitor ghost names nobody: {}",
        conversation.visitor_user_id
    );
    // Switchboard's welcome reaches her like any notice in the room.
    let welcome = DEFAULT_WELCOME_NOTICE.replace("{topic}", "General support");
    ana_receives(&tg, &ana, &[welcome.as_str()]).await?;
    let relay = relay_room_of(&store, &room, "sam").await?;
    let relay_chat = sam.accept_invite(&relay).await?;
    // What she wrote before choosing reaches Sam.
    sam.wait_for_text(&relay, &bot_id, "It was due on Monday")
        .await?;
    ana_receives(&tg, &ana, &["You are now talking with Sam."]).await?;

    // --- both ways, in order ---------------------------------------------------------------------
    let mut reply_ids = Vec::new();
    for i in 1..=3 {
        let sent = relay_chat
            .send(RoomMessageEventContent::text_plain(format!("reply {i}")))
            .await?;
        reply_ids.push(sent.response.event_id);
    }
    let mut more_ids = Vec::new();
    for i in 1..=3 {
        more_ids.push(tg.user_sends(&ana, &format!("more {i}")));
    }
    let got = ana_receives(&tg, &ana, &["reply 1", "reply 2", "reply 3"]).await?;
    let replies: Vec<&String> = got.iter().filter(|t| t.starts_with("reply ")).collect();
    assert_eq!(replies, ["reply 1", "reply 2", "reply 3"], "{got:?}");
    sam.wait_for_text(&relay, &bot_id, "more 3").await?;
    let relayed = sam.bodies(&relay, &bot_id);
    let order: Vec<usize> = [
        "Hello, my order 1234 is late",
        "It was due on Monday",
        "more 1",
        "more 2",
        "more 3",
    ]
    .iter()
    .map(|w| {
        relayed
            .iter()
            .position(|b| b.contains(w))
            .unwrap_or_else(|| panic!("{w:?} did not reach Sam: {relayed:?}"))
    })
    .collect();
    assert!(
        order.windows(2).all(|w| w[0] < w[1]),
        "out of order: {relayed:?}"
    );

    // --- Ana corrects a message: the transcript and Sam's copy change, nothing is added -------
    tg.user_edits(&ana, more_ids[1], "more 2, fixed");
    sam.wait_for_text(&relay, &bot_id, "more 2, fixed").await?;
    wait_for("the corrected transcript", || async {
        Ok(store
            .messages(&room)
            .await?
            .iter()
            .any(|m| m.sender == conversation.visitor_user_id && m.body == "more 2, fixed")
            .then_some(()))
    })
    .await?;

    // --- Sam corrects a reply: Ana's copy is edited in place, not sent again ---------------------
    let edit = RoomMessageEventContent::text_plain("reply 2, corrected")
        .make_replacement(ReplacementMetadata::new(reply_ids[1].clone(), None));
    relay_chat.send(edit).await?;
    let sent = tg
        .wait_for_sent(
            ana.id,
            |s| texts(s).iter().any(|t| t == "reply 2, corrected"),
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let corrected: Vec<&SentMessage> = sent
        .iter()
        .filter(|m| m.text.as_deref() == Some("reply 2, corrected"))
        .collect();
    assert!(
        corrected.len() == 1 && corrected[0].edited,
        "edited in place: {corrected:?}"
    );
    let now = texts(&sent);
    assert!(
        !now.iter().any(|t| t == "reply 2" || t.starts_with("* ")),
        "no old text and no fallback copy: {now:?}"
    );

    // --- Sam typing in Matrix shows as "typing…" in Ana's Telegram chat --------------------------
    relay_chat.typing_notice(true).await?;
    telegram_typing_shown(&tg, ANA_ID).await?;
    relay_chat.typing_notice(false).await?;

    // --- a restart mid-conversation loses and doubles nothing ------------------------------------
    sb.kill();
    tg.user_sends(&ana, "while down 1");
    tg.user_sends(&ana, "while down 2");
    relay_chat
        .send(RoomMessageEventContent::text_plain("reply while down"))
        .await?;
    sb.restart().await?;
    let got = ana_receives(&tg, &ana, &["reply while down"]).await?;
    sam.wait_for_text(&relay, &bot_id, "while down 2").await?;
    let relayed = sam.bodies(&relay, &bot_id);
    for w in ["while down 1", "while down 2", "more 1"] {
        assert_eq!(
            relayed.iter().filter(|b| b.contains(w)).count(),
            1,
            "{w:?} lost or doubled: {relayed:?}"
        );
    }
    for w in ["reply 1", "reply while down"] {
        assert_eq!(
            got.iter().filter(|t| *t == w).count(),
            1,
            "{w:?} lost or doubled: {got:?}"
        );
    }
    let transcript = store.messages(&room).await?;
    let visitor_said: Vec<&str> = transcript
        .iter()
        .filter(|m| m.sender == conversation.visitor_user_id)
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(
        visitor_said,
        [
            "Hello, my order 1234 is late",
            "It was due on Monday",
            "more 1",
            "more 2, fixed",
            "more 3",
            "while down 1",
            "while down 2"
        ]
    );

    // --- nothing of who Ana is on Telegram reaches Sam --------------------------------------------
    let readable = everything_sam_can_read(&env, &sam).await?;
    let mut everything = sam.all_bodies().join("\n");
    everything.push_str(&readable);
    for secret in [
        ANA_ID.to_string(),
        ANA_NAME.to_owned(),
        ANA_HANDLE.to_owned(),
    ] {
        assert!(
            !everything.contains(&secret),
            "the responder could read {secret:?}"
        );
    }
    assert!(
        everything.contains(&conversation.visitor_alias),
        "Sam knows her by her pseudonym"
    );

    // --- /end ends it for both; writing again asks for a topic again -----------------------------
    tg.user_sends(&ana, "/end");
    ana_receives(&tg, &ana, &["The conversation has ended."]).await?;
    sam.wait_for_text(&relay, &bot_id, "ended").await?;
    wait_for("the conversation closed", || async {
        Ok(
            (store.conversation(&room).await?.map(|c| c.state) == Some(ConversationState::Closed))
                .then_some(()),
        )
    })
    .await?;
    tg.user_sends(&ana, "One more thing");
    topic_question(&tg, &ana, 1).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initiator_who_blocks_the_bot_ends_their_conversation() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 1)?;
    let tg = StandIn::start(TOKEN).await?;
    let bo = tg.user(424_242_001, "Bo", None);
    let local = unique("sam");
    let sam_id = env.user_id(&local);
    let mut sam = MatrixResponder::register(&env, &local).await?;
    let bot_id = format!("@sbt1bot:{}", env.server_name);
    let sb = Switchboard::start(&env, &slot, &config(&tg, &sam_id)).await?;
    let store = sb.store().await?;

    // A pick with nothing written yet starts the conversation; the first message routes it.
    tg.user_sends(&bo, "/start");
    let question = topic_question(&tg, &bo, 0).await?;
    tg.user_presses(&bo, question.message_id, "topic:billing");
    let room = wait_for("Bo's conversation", || async {
        Ok(store
            .open_initiator_conversations("telegram", &bo.id.to_string())
            .await?
            .into_iter()
            .next())
    })
    .await?
    .room_id;
    tg.user_sends(&bo, "Why was I charged twice?");
    let relay = relay_room_of(&store, &room, "sam").await?;
    let relay_chat = sam.accept_invite(&relay).await?;
    sam.wait_for_text(&relay, &bot_id, "charged twice").await?;
    ana_receives(&tg, &bo, &["You are now talking with Sam."]).await?;

    // Bo blocks the bot: Telegram refuses every send to him for good (403).
    tg.fail_next("sendMessage", 403, "Forbidden: bot was blocked by the user");
    relay_chat
        .send(RoomMessageEventContent::text_plain("Let me check"))
        .await?;
    wait_for("the conversation closed", || async {
        Ok(
            (store.conversation(&room).await?.map(|c| c.state) == Some(ConversationState::Closed))
                .then_some(()),
        )
    })
    .await?;
    sam.wait_for_text(&relay, &bot_id, "ended").await?;
    let held = store.active_assignments_for_room(&room).await?;
    assert!(held.is_empty(), "Sam still holds it: {held:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_initiator_talks_with_a_telegram_responder() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 2)?;
    let tg = StandIn::start(TOKEN).await?;
    let mia = tg.user(73_001, "Mia", None);
    let iris_local = unique("iris-initiator");
    let iris_id = env.user_id(&iris_local);
    let mut iris = MatrixResponder::register(&env, &iris_local).await?;
    let bot_id = format!("@sbt2bot:{}", env.server_name);
    let config = format!(
        "[matrix]\ninitiators = true\n\n\
         [telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\n\
         [[topics]]\nid = \"billing\"\nname = \"Billing\"\nstrategy = \"broadcast\"\n\n\
         [[responders]]\nid = \"mia\"\ndisplay_name = \"Mia Example\"\npseudonym = \"Mia\"\n\
         topics = [\"billing\"]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n",
        api = tg.api_url(),
        chat = mia.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let store = sb.store().await?;

    // --- Iris invites the bot to a direct chat: it joins and asks what it is about ------------
    let bot = matrix_sdk::ruma::UserId::parse(bot_id.as_str())?;
    let dm = iris.direct_chat_with(&bot).await?;
    let dm_id = dm.room_id().to_string();
    iris.wait_for_text(&dm_id, &bot_id, "What would you like to talk about?")
        .await?;
    iris.wait_for_text(&dm_id, &bot_id, "2. Billing").await?;
    dm.send(RoomMessageEventContent::text_plain("2")).await?;
    let conversation = initiator_conversation(&store, "matrix", &iris_id).await?;
    assert_eq!(conversation.topic, "billing");
    let welcome = DEFAULT_WELCOME_NOTICE.replace("{topic}", "Billing");
    iris.wait_for_text(&dm_id, &bot_id, &welcome).await?;

    // --- her first message is offered to Mia on Telegram; they talk both ways in order -------
    dm.send(RoomMessageEventContent::text_plain("I was charged twice"))
        .await?;
    tg.wait_for_sent(mia.id, |s| !open_offers(s).is_empty(), WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    accept_open_offer(&tg, &mia);
    iris.wait_for_text(&dm_id, &bot_id, "You are now talking with Mia.")
        .await?;
    for i in 1..=3 {
        dm.send(RoomMessageEventContent::text_plain(format!("detail {i}")))
            .await?;
    }
    let sent = tg
        .wait_for_sent(
            mia.id,
            |s| texts(s).iter().any(|t| t.contains("detail 3")),
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let to_mia = texts(&sent);
    // Her first message was quoted in the offer; accepting it keeps the quote.
    assert!(
        to_mia
            .iter()
            .any(|t| t.starts_with("You accepted the conversation with")
                && t.contains("I was charged twice")),
        "{to_mia:?}"
    );
    let at = |w: &str| {
        to_mia
            .iter()
            .position(|t| t.contains(w))
            .unwrap_or_else(|| panic!("{w:?} did not reach Mia: {to_mia:?}"))
    };
    assert!(
        at("detail 1") < at("detail 2") && at("detail 2") < at("detail 3"),
        "out of order: {to_mia:?}"
    );
    for i in 1..=3 {
        tg.user_sends(&mia, &format!("answer {i}"));
    }
    iris.wait_for_messages(&dm_id, &bot_id, &["answer 1", "answer 2", "answer 3"])
        .await?;
    let answers: Vec<String> = iris
        .bodies(&dm_id, &bot_id)
        .into_iter()
        .filter(|b| b.starts_with("answer "))
        .collect();
    assert_eq!(answers, ["answer 1", "answer 2", "answer 3"]);

    // --- nothing Switchboard sent to Telegram names Iris ----------------------------------------
    for request in tg.requests() {
        let bytes = String::from_utf8_lossy(&request.body).into_owned()
            + request.query.as_deref().unwrap_or_default();
        for secret in [iris_id.as_str(), iris_local.as_str(), dm_id.as_str()] {
            assert!(
                !bytes.contains(secret),
                "{} to Telegram held {secret:?}: {bytes}",
                request.method
            );
        }
    }

    // --- !end ends it for both -------------------------------------------------------------------
    dm.send(RoomMessageEventContent::text_plain("!end")).await?;
    iris.wait_for_text(&dm_id, &bot_id, "The conversation has ended.")
        .await?;
    tg.wait_for_sent(
        mia.id,
        |s| texts(s).iter().any(|t| t.contains("ended")),
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    Ok(())
}

const DC_TOKEN: &str = "MTA.initiators.bot-token";

fn has_text(messages: &[DcMessage], text: &str) -> bool {
    messages.iter().any(|m| m.content == text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_discord_initiator_talks_with_a_matrix_responder() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 3)?;
    let dc = DiscordStandIn::start(DC_TOKEN).await?;
    let dora = dc.user("dora_secret_handle_31");
    let local = unique("sam");
    let sam_id = env.user_id(&local);
    let mut sam = MatrixResponder::register(&env, &local).await?;
    let bot_id = format!("@sbt3bot:{}", env.server_name);
    let config = format!(
        "{discord}\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\n\
         [[topics]]\nid = \"billing\"\nname = \"Billing\"\nstrategy = \"broadcast\"\n\n\
         [[responders]]\nid = \"sam\"\ndisplay_name = \"Sam Example\"\npseudonym = \"Sam\"\n\
         topics = [\"support\"]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"matrix\", address = {sam_id:?} }}]\n",
        discord = discord_config(&dc, DC_TOKEN, "initiators = true\n"),
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let store = sb.store().await?;
    discord_gateway_up(&dc).await?;

    // --- Dora writes to the bot: a topic menu comes back; her pick starts the conversation ----
    let (dm, menu) = discord_topic_menu(&dc, &dora, "Hi, my parcel is lost").await?;
    assert_eq!(
        menu.allowed_mentions,
        Some(serde_json::json!({"parse": []}))
    );
    let pick = dc.user_selects(&dora, dm, menu.id, "topic", &["support"]);
    let answer = dc
        .wait_for_interaction_response(&pick, std::time::Duration::from_secs(3))
        .await
        .ok_or_else(|| anyhow::anyhow!("the pick was not answered within Discord's 3 seconds"))?;
    assert_eq!(answer["type"], 6, "{answer}");
    let conversation = wait_for("Dora's conversation", || async {
        Ok(store
            .open_initiator_conversations("discord", &dora.id.to_string())
            .await?
            .into_iter()
            .next())
    })
    .await?;
    assert_eq!(conversation.topic, "support");
    // The pick's interaction says her client's language.
    assert_eq!(conversation.language.as_deref(), Some("en-US"));
    let room = conversation.room_id.clone();

    // --- Sam takes it in Matrix: what she wrote first reaches him, then both ways in order ----
    let relay = relay_room_of(&store, &room, "sam").await?;
    let relay_chat = sam.accept_invite(&relay).await?;
    sam.wait_for_text(&relay, &bot_id, "my parcel is lost")
        .await?;
    discord_messages(&dc, dm, "who answers", |m| {
        has_text(m, "You are now talking with Sam.")
    })
    .await?;
    for i in 1..=3 {
        relay_chat
            .send(RoomMessageEventContent::text_plain(format!("reply {i}")))
            .await?;
    }
    for i in 1..=3 {
        dc.user_sends(&dora, dm, &format!("more {i}"));
    }
    let messages = discord_messages(&dc, dm, "Sam's replies", |m| has_text(m, "reply 3")).await?;
    let replies: Vec<&str> = messages
        .iter()
        .map(|m| m.content.as_str())
        .filter(|c| c.starts_with("reply "))
        .collect();
    assert_eq!(replies, ["reply 1", "reply 2", "reply 3"]);
    assert!(
        messages
            .iter()
            .filter(|m| m.author_id != dora.id)
            .all(|m| m.allowed_mentions == Some(serde_json::json!({"parse": []}))),
        "every message of the bot's pings nobody"
    );
    sam.wait_for_text(&relay, &bot_id, "more 3").await?;
    let relayed = sam.bodies(&relay, &bot_id);
    let at = |w: &str| relayed.iter().position(|b| b.contains(w));
    assert!(
        at("more 1") < at("more 2") && at("more 2") < at("more 3") && at("more 1").is_some(),
        "{relayed:?}"
    );

    // --- typing both ways: Dora's shows to Sam (the bot types in his room), his to her ---------
    dc.user_types(&dora, dm);
    let sam_token = sam.client.access_token().expect("logged in");
    assert!(
        typing_seen(&env.hs_url, &sam_token, &relay, &bot_id).await?,
        "Sam never saw Dora typing"
    );
    relay_chat.typing_notice(true).await?;
    let typing_path = format!("/channels/{dm}/typing");
    wait_for("Discord's typing in Dora's chat", || async {
        Ok(dc
            .requests()
            .iter()
            .any(|r| r.method == "POST" && r.path.ends_with(&typing_path))
            .then_some(()))
    })
    .await?;

    // --- nothing of who Dora is on Discord reaches Sam --------------------------------------------
    let mut everything = sam.all_bodies().join("\n");
    everything.push_str(&everything_sam_can_read(&env, &sam).await?);
    for secret in [dora.id.to_string(), dora.username.clone(), dm.to_string()] {
        assert!(
            !everything.contains(&secret),
            "the responder could read {secret:?}"
        );
    }

    // --- /end (a slash command) ends it for both -----------------------------------------------
    let end = dc.user_runs_command(&dora, dm, "end", serde_json::json!({}));
    dc.wait_for_interaction_response(&end, std::time::Duration::from_secs(3))
        .await
        .ok_or_else(|| anyhow::anyhow!("/end was not answered within 3 seconds"))?;
    discord_messages(&dc, dm, "the end", |m| {
        has_text(m, "The conversation has ended.")
    })
    .await?;
    sam.wait_for_text(&relay, &bot_id, "ended").await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_initiators_conversation_is_handed_across_platforms_in_the_same_room()
-> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 4)?;
    let tg = StandIn::start(TOKEN).await?;
    let ana = tg.user(ANA_ID, ANA_NAME, Some(ANA_HANDLE));
    let mia = tg.user(73_002, "Mia", None);
    let local = unique("sam");
    let sam_id = env.user_id(&local);
    let mut sam = MatrixResponder::register(&env, &local).await?;
    let bot_id = format!("@sbt4bot:{}", env.server_name);
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\ninitiators = true\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\n\
         [[topics]]\nid = \"sales\"\nname = \"Sales\"\nstrategy = \"broadcast\"\n\n\
         [[responders]]\nid = \"sam\"\ndisplay_name = \"Sam Example\"\npseudonym = \"Sam\"\n\
         topics = [\"support\"]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"matrix\", address = {sam_id:?} }}]\n\n\
         [[responders]]\nid = \"mia\"\ndisplay_name = \"Mia Example\"\npseudonym = \"Mia\"\n\
         topics = [\"sales\"]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"telegram\", address = \"{mia_chat}\" }}]\n",
        api = tg.api_url(),
        mia_chat = mia.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let store = sb.store().await?;

    // --- Ana (Telegram) starts on support; Sam takes it in Matrix --------------------------------
    tg.user_sends(&ana, "I want to upgrade my plan");
    let question = topic_question(&tg, &ana, 0).await?;
    tg.user_presses(&ana, question.message_id, "topic:support");
    let room = wait_for("Ana's conversation", || async {
        Ok(store
            .open_initiator_conversations("telegram", &ANA_ID.to_string())
            .await?
            .into_iter()
            .next())
    })
    .await?
    .room_id;
    let relay = relay_room_of(&store, &room, "sam").await?;
    let relay_chat = sam.accept_invite(&relay).await?;
    sam.wait_for_text(&relay, &bot_id, "upgrade my plan")
        .await?;
    relay_chat
        .send(RoomMessageEventContent::text_plain(
            "Sales can help you with that",
        ))
        .await?;
    ana_receives(
        &tg,
        &ana,
        &[
            "You are now talking with Sam.",
            "Sales can help you with that",
        ],
    )
    .await?;

    // --- Sam hands it to sales: Mia takes it on Telegram, in the same room -----------------------
    relay_chat
        .send(RoomMessageEventContent::text_plain("!transfer sales"))
        .await?;
    tg.wait_for_sent(mia.id, |s| !open_offers(s).is_empty(), WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    accept_open_offer(&tg, &mia);
    ana_receives(
        &tg,
        &ana,
        &[
            "One moment, please: a colleague will take over.",
            "You are now talking with Mia.",
        ],
    )
    .await?;
    tg.user_sends(&mia, "Hi, Mia from sales here");
    tg.user_sends(&ana, "Great, which plans are there?");
    ana_receives(&tg, &ana, &["Hi, Mia from sales here"]).await?;
    tg.wait_for_sent(
        mia.id,
        |s| {
            texts(s)
                .iter()
                .any(|t| t.contains("which plans are there?"))
        },
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    let open = store
        .open_initiator_conversations("telegram", &ANA_ID.to_string())
        .await?;
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0].room_id, room, "the conversation kept its room");
    let held = store.active_assignments_for_room(&room).await?;
    assert_eq!(
        held.iter()
            .map(|a| a.responder_id.as_str())
            .collect::<Vec<_>>(),
        ["mia"]
    );

    // --- Mia, on Telegram like Ana, learns nothing of who Ana is there ---------------------------
    for sent in tg.sent(mia.id) {
        let text = format!("{sent:?}");
        for secret in [
            ANA_ID.to_string(),
            ANA_NAME.to_owned(),
            ANA_HANDLE.to_owned(),
        ] {
            assert!(!text.contains(&secret), "Mia was sent {secret:?}: {text}");
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_matrix_initiator_is_answered_by_a_discord_responder() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 5)?;
    let dc = DiscordStandIn::start(DC_TOKEN).await?;
    let dan = dc.user("dan_responder");
    // A second user of the homeserver, not a responder: the initiator.
    let iris_local = unique("iris-initiator");
    let iris_id = env.user_id(&iris_local);
    let mut iris = MatrixResponder::register(&env, &iris_local).await?;
    let bot_id = format!("@sbt5bot:{}", env.server_name);
    let config = format!(
        "[matrix]\ninitiators = true\n\n{discord}\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\n\
         [[topics]]\nid = \"billing\"\nname = \"Billing\"\nstrategy = \"broadcast\"\n\n\
         [[responders]]\nid = \"dan\"\ndisplay_name = \"Dan Example\"\npseudonym = \"Dan\"\n\
         topics = [\"billing\"]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"discord\", address = \"{dan_id}\" }}]\n",
        discord = discord_config(&dc, DC_TOKEN, ""),
        dan_id = dan.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let store = sb.store().await?;
    discord_gateway_up(&dc).await?;

    // --- Iris invites the bot, picks Billing by its number, writes --------------------------------
    let bot = matrix_sdk::ruma::UserId::parse(bot_id.as_str())?;
    let dm = iris.direct_chat_with(&bot).await?;
    let dm_id = dm.room_id().to_string();
    iris.wait_for_text(&dm_id, &bot_id, "2. Billing").await?;
    dm.send(RoomMessageEventContent::text_plain("2")).await?;
    initiator_conversation(&store, "matrix", &iris_id).await?;
    dm.send(RoomMessageEventContent::text_plain("I was charged twice"))
        .await?;

    // --- Dan is offered it in his direct chat with the bot on Discord and accepts -----------------
    let dan_dm = wait_for("Dan's direct chat", || async { Ok(dc.dm_channel_of(&dan)) }).await?;
    let messages = discord_messages(&dc, dan_dm, "the offer", |m| {
        m.iter().any(|m| {
            m.content.contains("charged twice")
                && m.components[0]["components"][0]["custom_id"]
                    .as_str()
                    .is_some_and(|id| id.starts_with("accept:"))
        })
    })
    .await?;
    let offer = messages
        .iter()
        .find(|m| {
            m.content.contains("charged twice")
                && m.components[0]["components"][0]["custom_id"].is_string()
        })
        .unwrap();
    let accept = offer.components[0]["components"][0]["custom_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let press = dc.user_presses(&dan, dan_dm, offer.id, &accept);
    dc.wait_for_interaction_response(&press, std::time::Duration::from_secs(3))
        .await
        .ok_or_else(|| anyhow::anyhow!("Accept was not answered within Discord's 3 seconds"))?;
    iris.wait_for_text(&dm_id, &bot_id, "You are now talking with Dan.")
        .await?;

    // --- both ways in order ----------------------------------------------------------------------
    for i in 1..=3 {
        dm.send(RoomMessageEventContent::text_plain(format!("detail {i}")))
            .await?;
    }
    let messages = discord_messages(&dc, dan_dm, "Iris's details", |m| {
        m.iter().any(|m| m.content.contains("detail 3"))
    })
    .await?;
    let at = |w: &str| messages.iter().position(|m| m.content.contains(w));
    assert!(
        at("detail 1").is_some()
            && at("detail 1") < at("detail 2")
            && at("detail 2") < at("detail 3"),
        "out of order: {messages:#?}"
    );
    for i in 1..=3 {
        dc.user_sends(&dan, dan_dm, &format!("answer {i}"));
    }
    iris.wait_for_messages(&dm_id, &bot_id, &["answer 1", "answer 2", "answer 3"])
        .await?;
    let answers: Vec<String> = iris
        .bodies(&dm_id, &bot_id)
        .into_iter()
        .filter(|b| b.starts_with("answer "))
        .collect();
    assert_eq!(answers, ["answer 1", "answer 2", "answer 3"]);

    // --- nothing Switchboard sent to Discord names Iris ------------------------------------------
    for request in dc.requests() {
        let bytes = format!(
            "{} {}",
            String::from_utf8_lossy(&request.body),
            request.path
        );
        for secret in [iris_id.as_str(), iris_local.as_str(), dm_id.as_str()] {
            assert!(
                !bytes.contains(secret),
                "{} {} to Discord held {secret:?}: {bytes}",
                request.method,
                request.path
            );
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn someone_writing_in_the_matrix_lobby_is_answered_in_private() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 6)?;
    let tg = StandIn::start(TOKEN).await?;
    let mia = tg.user(73_006, "Mia", None);
    // An operator's public lobby room.
    let host = MatrixResponder::register(&env, &unique("lobbyhost")).await?;
    let mut request = matrix_sdk::ruma::api::client::room::create_room::v3::Request::new();
    request.preset =
        Some(matrix_sdk::ruma::api::client::room::create_room::v3::RoomPreset::PublicChat);
    request.name = Some("Ask us anything".to_owned());
    let lobby = host.client.create_room(request).await?;
    let lobby_id = lobby.room_id().to_owned();
    let bot_id = format!("@sbt6bot:{}", env.server_name);
    let config = format!(
        "[matrix]\ninitiators = true\nlobby = \"{lobby_id}\"\n\n\
         [telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\n\
         [[topics]]\nid = \"billing\"\nname = \"Billing\"\nstrategy = \"broadcast\"\n\n\
         [[responders]]\nid = \"mia\"\ndisplay_name = \"Mia Example\"\npseudonym = \"Mia\"\n\
         topics = [\"billing\"]\nmax_concurrent = 5\n\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n",
        api = tg.api_url(),
        chat = mia.id,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    let store = sb.store().await?;
    let bot = matrix_sdk::ruma::UserId::parse(bot_id.as_str())?;
    wait_for("the bot in the lobby", || async {
        let members = lobby
            .members_no_sync(matrix_sdk::RoomMemberships::JOIN)
            .await?;
        Ok(members.iter().any(|m| m.user_id() == bot).then_some(()))
    })
    .await?;

    // --- Lena writes in the lobby: the bot invites her to a private chat and asks there ---------
    let lena_local = unique("lena");
    let lena_id = env.user_id(&lena_local);
    let mut lena = MatrixResponder::register(&env, &lena_local).await?;
    let in_lobby = lena.client.join_room_by_id(&lobby_id).await?;
    in_lobby
        .send(RoomMessageEventContent::text_plain(
            "Hello, I was charged twice",
        ))
        .await?;
    let dm_id = wait_for("Lena's invite to a private chat", || async {
        Ok(lena
            .client
            .invited_rooms()
            .into_iter()
            .map(|r| r.room_id().to_owned())
            .find(|r| *r != lobby_id))
    })
    .await?;
    let dm = lena.accept_invite(dm_id.as_str()).await?;
    let dm_id = dm_id.to_string();
    lena.wait_for_text(&dm_id, &bot_id, "2. Billing").await?;
    dm.send(RoomMessageEventContent::text_plain("2")).await?;
    let conversation = initiator_conversation(&store, "matrix", &lena_id).await?;
    assert_eq!(conversation.topic, "billing");

    // --- her lobby words are offered to Mia; the answer comes to the private chat ---------------
    let offer = telegram_offer(&tg, &mia).await?;
    assert!(offer.contains("charged twice"), "{offer}");
    accept_open_offer(&tg, &mia);
    tg.user_sends(&mia, "Let me check that for you");
    lena.wait_for_text(&dm_id, &bot_id, "Let me check that for you")
        .await?;

    // --- writing in the lobby again continues in the same private chat -----------------------------
    in_lobby
        .send(RoomMessageEventContent::text_plain("It was order 88"))
        .await?;
    tg.wait_for_sent(
        mia.id,
        |s| texts(s).iter().any(|t| t.contains("It was order 88")),
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    assert_eq!(
        store
            .open_initiator_conversations("matrix", &lena_id)
            .await?
            .len(),
        1
    );
    // The bot never spoke in the lobby.
    assert!(
        lena.bodies(lobby_id.as_str(), &bot_id).is_empty(),
        "the bot wrote in the lobby"
    );
    Ok(())
}
