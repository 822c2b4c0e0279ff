//! Initiators on Discord: talking with a Matrix responder, and handed across platforms in the
//! same room.

use super::*;

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
