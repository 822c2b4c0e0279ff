//! Platform events that are bad or early: an unreadable update, an event that can never
//! work, a reply that arrives before its message is mapped.

use super::*;

/// A Telegram update the connector could not read at all is recorded like any other event,
/// and its sender is told (through the bridge, at the chat's pace) that nothing was passed on.
#[tokio::test]
async fn an_unreadable_update_gets_its_sender_a_clear_answer() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.remote(
        "77.unreadable",
        RemoteEvent::Unreadable {
            address: "1".into(),
        },
    )
    .await?;
    let told: Vec<String> =
        w.tg.calls()
            .into_iter()
            .filter(|c| c.starts_with("notify 1: "))
            .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains("could not be read"), "{told:?}");
    Ok(())
}

/// An event that can never be handled (here: its conversation's row is corrupt) is set aside
/// as a dead letter with its reason, and the other conversation's events go on. Retried after
/// the row is repaired, it is handled like any other.
#[tokio::test]
async fn an_event_that_can_never_work_is_set_aside_and_the_others_go_on() -> anyhow::Result<()> {
    const BROKEN: &str = "!broken:test";
    let w = world(NO_LIMITS).await?;
    w.store()
        .insert_conversation(&Conversation {
            room_id: BROKEN.into(),
            topic: "support".into(),
            visitor_user_id: "@guest2:test".into(),
            visitor_alias: "Visitor 00CD".into(),
            state: ConversationState::Queued,
            created_at: 1,
            language: None,
        })
        .await?;
    let url = format!("sqlite://{}", w._dir.path().join("store.db").display());
    let db = sqlx::AnyPool::connect(&url).await?;
    sqlx::query("UPDATE conversations SET state = 'no-such-state' WHERE room_id = $1")
        .bind(BROKEN)
        .execute(&db)
        .await?;

    let event = |room: &str, sender: &str, id: &str, body: &str| {
        let e = json!({
            "type": "m.room.message", "event_id": id, "room_id": room, "sender": sender,
            "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": body},
        });
        Raw::from_json(serde_json::value::to_raw_value(&e).unwrap())
    };
    // The broken conversation's event arrives first, in the same transaction as the other's.
    w.bridge
        .record_transaction(
            "txn-mixed",
            vec![
                event(BROKEN, "@guest2:test", "$b1", "Hello?"),
                event(ROOM, VISITOR, "$v2", "Still leaking."),
            ],
        )
        .await?;
    w.bridge.drain_inbox().await?;
    let transcript: Vec<String> = w
        .store()
        .messages(ROOM)
        .await?
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert!(
        transcript.contains(&"Still leaking.".to_owned()),
        "the other conversation went on: {transcript:?}"
    );
    let dead = w.store().dead_letters(10).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source, DeadLetterSource::Inbox);
    assert_eq!(dead[0].room_id.as_deref(), Some(BROKEN));
    assert!(dead[0].reason.contains("corrupt"), "{:?}", dead[0].reason);
    assert!(
        !dead[0].reason.contains("Hello?"),
        "the reason holds no content"
    );
    assert_eq!(w.store().pending_events(10).await?.len(), 0);

    // Repaired and retried: handled once, and no longer a dead letter.
    sqlx::query("UPDATE conversations SET state = 'queued' WHERE room_id = $1")
        .bind(BROKEN)
        .execute(&db)
        .await?;
    assert!(w.store().retry_dead_letter(dead[0].id).await?.is_some());
    w.bridge.drain_inbox().await?;
    let broken: Vec<String> = w
        .store()
        .messages(BROKEN)
        .await?
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(broken, ["Hello?"]);
    assert!(w.store().dead_letters(10).await?.is_empty());
    Ok(())
}

/// Ann (chat 1) writes `body` as a Telegram reply to message `reply_to`.
fn anns_reply(message_id: &str, reply_to: &str, body: &str) -> RemoteEvent {
    RemoteEvent::Message {
        address: "1".into(),
        message_id: message_id.into(),
        reply_to: Some(reply_to.into()),
        body: body.into(),
        formatted_body: None,
        display_name: "Ann".into(),
        file: None,
        thread: None,
        language: None,
    }
}

/// A responder holding two conversations replies to our message before its mapping to its
/// conversation is written (a platform shows our message as soon as it takes it; which
/// conversation it belongs to is written once the send's answer is back). The reply waits for
/// the delivery under way and reaches that conversation, where it used to be answered "which
/// conversation?" and relayed nowhere. A reply to a message of no conversation waits for
/// nothing when no delivery is under way.
#[tokio::test]
async fn a_reply_that_comes_before_its_message_is_mapped_reaches_its_conversation()
-> anyhow::Result<()> {
    const SECOND: &str = "!second:test";
    let w = world_of(NO_LIMITS, vec![responder("ann", "1", &["support"])]).await?;
    w.accept("1", "Ann").await?;
    w.store()
        .insert_conversation(&Conversation {
            room_id: SECOND.into(),
            topic: "support".into(),
            visitor_user_id: "@v2:test".into(),
            visitor_alias: "Visitor 00CD".into(),
            state: ConversationState::Queued,
            created_at: 2,
            language: None,
        })
        .await?;
    w.content_in(
        SECOND,
        "@v2:test",
        "$second-1",
        json!({"msgtype": "m.text", "body": "Second visitor here."}),
    )
    .await?;
    let offer = w
        .store()
        .offers_for_room(SECOND)
        .await?
        .into_iter()
        .find(|o| o.state == "open")
        .expect("the second conversation is offered to Ann");
    w.remote(
        "accept-second",
        RemoteEvent::Accept {
            offer_id: offer.id,
            address: "1".into(),
            display_name: "Ann".into(),
        },
    )
    .await?;
    assert_eq!(
        w.store()
            .active_assignments_for_address("telegram", "1")
            .await?
            .len(),
        2,
        "Ann holds both"
    );

    // The second visitor writes again; the platform shows it to Ann at once but answers
    // our send only 300 ms later, and she replies to it in between.
    w.tg.slow_part.lock().unwrap().replace((
        "Second visitor again.".to_owned(),
        Duration::from_millis(300),
    ));
    w.content_in(
        SECOND,
        "@v2:test",
        "$second-2",
        json!({"msgtype": "m.text", "body": "Second visitor again."}),
    )
    .await?;
    let bridge = w.bridge.clone();
    let delivering = tokio::spawn(async move { bridge.drain_outbox().await });
    let shown = loop {
        let showing = w.tg.calls().into_iter().find_map(|c| {
            c.strip_prefix("showing 1: Second visitor again. as ")
                .map(str::to_owned)
        });
        if let Some(id) = showing {
            break id;
        }
        anyhow::ensure!(!delivering.is_finished(), "the delivery ended unseen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    w.remote(
        "reply-early",
        anns_reply("81", &shown, "For the second visitor."),
    )
    .await?;
    delivering.await??;
    let second: Vec<String> = StubHomeserver::writes_into(&w.hs.requests, SECOND)
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert!(
        second.iter().any(|b| b == "For the second visitor."),
        "the reply to {shown} reaches the second conversation: {second:?}"
    );
    assert!(
        !w.tg
            .calls()
            .iter()
            .any(|c| c.contains("several conversations")),
        "Ann is not asked which conversation: {:?}",
        w.tg.calls()
    );

    // A reply to a message of no conversation (a notice about none of them), with nothing
    // being delivered to her: no mapping can come, so she is asked which conversation she
    // means straight away, not after a wait.
    let started = std::time::Instant::now();
    w.remote(
        "reply-to-notice",
        anns_reply("82", "notice-99", "Which one was that?"),
    )
    .await?;
    let waited = started.elapsed();
    assert!(
        w.tg.calls()
            .iter()
            .any(|c| c.contains("several conversations")),
        "a reply to a message of no conversation is answered: {:?}",
        w.tg.calls()
    );
    assert!(
        waited < Duration::from_secs(5),
        "nothing was being delivered, so nothing was waited for (took {waited:?})"
    );
    Ok(())
}
