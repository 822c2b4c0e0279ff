//! Initiators on Telegram: talking with a Matrix responder, and blocking the bot.

use super::*;

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
