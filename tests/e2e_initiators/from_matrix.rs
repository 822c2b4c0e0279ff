//! Initiators on Matrix: answered by a Telegram or a Discord responder, and someone writing in
//! the lobby answered in private.

use super::*;

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
