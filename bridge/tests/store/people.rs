//! Who is who: link codes that move a responder, visitor sessions until they expire, and
//! initiators found by address, counted by key and blocked.

use super::*;

pub(super) async fn link_codes_work_once_and_move_a_responder(store: &Store) -> anyhow::Result<()> {
    store.create_link_code("CODE1", "alex", "telegram").await?;
    store.create_link_code("CODE2", "alex", "telegram").await?;
    assert_eq!(
        store.redeem_link_code("CODE1", "discord", "1").await?,
        None,
        "a code is for one platform"
    );
    assert_eq!(
        store
            .redeem_link_code("CODE1", "telegram", "7001")
            .await?
            .as_deref(),
        Some("alex")
    );
    assert_eq!(
        store.redeem_link_code("CODE1", "telegram", "7009").await?,
        None,
        "a code works once"
    );
    assert_eq!(
        store.redeem_link_code("NOPE", "telegram", "7001").await?,
        None
    );
    assert_eq!(
        store.linked_responder("telegram", "7001").await?.as_deref(),
        Some("alex")
    );
    // Linking again moves the responder to the new chat.
    assert_eq!(
        store
            .redeem_link_code("CODE2", "telegram", "7002")
            .await?
            .as_deref(),
        Some("alex")
    );
    assert_eq!(store.linked_responder("telegram", "7001").await?, None);
    // Every responder's links in one read, each's newest first. (Linked a few milliseconds
    // apart: `linked_at` is the clock's milliseconds.)
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    store.create_link_code("CODE3", "alex", "discord").await?;
    store.create_link_code("CODE4", "bo", "telegram").await?;
    store.redeem_link_code("CODE3", "discord", "d1").await?;
    store.redeem_link_code("CODE4", "telegram", "7100").await?;
    let pair = |p: &str, a: &str| (p.to_owned(), a.to_owned());
    assert_eq!(
        store.all_links().await?,
        [
            (
                "alex".to_owned(),
                vec![pair("discord", "d1"), pair("telegram", "7002")]
            ),
            ("bo".to_owned(), vec![pair("telegram", "7100")]),
        ]
        .into()
    );
    Ok(())
}

pub(super) async fn visitor_sessions_resolve_until_they_expire(
    store: &Store,
) -> anyhow::Result<()> {
    let now = 1_800_000_000_000;
    store
        .insert_visitor_session("hash-live", "@v1:x", i64::MAX)
        .await?;
    store
        .insert_visitor_session("hash-soon", "@v1:x", now + 1000)
        .await?;
    assert_eq!(
        store.visitor_session("hash-live", now).await?.as_deref(),
        Some("@v1:x")
    );
    assert_eq!(
        store.visitor_session("hash-soon", now).await?.as_deref(),
        Some("@v1:x")
    );
    // Past its expiry a session is gone, and an unknown hash was never there.
    assert_eq!(store.visitor_session("hash-soon", now + 1000).await?, None);
    assert_eq!(store.visitor_session("hash-unknown", now).await?, None);
    // A visitor's rooms are their conversations', and no one else's.
    store
        .insert_conversation(&conversation("!v1a:x", "@v1:x", "support", 10))
        .await?;
    store
        .insert_conversation(&conversation("!v1b:x", "@v1:x", "sales", 20))
        .await?;
    store
        .insert_conversation(&conversation("!v2:x", "@v2:x", "support", 30))
        .await?;
    assert_eq!(store.visitor_rooms("@v1:x").await?, ["!v1a:x", "!v1b:x"]);
    assert!(store.is_visitor_room("@v1:x", "!v1b:x").await?);
    assert!(!store.is_visitor_room("@v1:x", "!v2:x").await?);
    assert!(store.visitor_rooms("@nobody:x").await?.is_empty());
    assert_eq!(store.revoke_visitor_sessions("@v1:x").await?, 2);
    assert_eq!(store.visitor_session("hash-live", now).await?, None);
    Ok(())
}

/// Telegram chat 42's open conversation answered in `thread`, by room.
async fn in_thread(store: &Store, thread: &str) -> anyhow::Result<Option<String>> {
    Ok(store
        .open_initiator_conversation_in("telegram", "42", thread)
        .await?
        .map(|c| c.room_id))
}

pub(super) async fn initiators_are_found_by_address_counted_by_key_and_blocked(
    store: &Store,
) -> anyhow::Result<()> {
    let row = |room: &str, address: &str, key: &str, at: i64| InitiatorRow {
        room_id: room.into(),
        platform: "telegram".into(),
        address: address.into(),
        thread: (address == "42").then(|| "!dm:x".into()),
        address_key: key.into(),
        created_at: at,
    };
    for (room, topic, at) in [("!i-a:x", "support", 100), ("!i-b:x", "billing", 200)] {
        store
            .insert_conversation(&conversation(room, "@_sb_visitor-a:x", topic, at))
            .await?;
        store
            .insert_initiator(&row(room, "42", "key-42", at))
            .await?;
    }
    // Once per room: a second insert (a pick handled again) changes nothing.
    store
        .insert_initiator(&row("!i-a:x", "99", "key-99", 300))
        .await?;
    assert_eq!(
        store.initiator_of("!i-a:x").await?,
        Some(row("!i-a:x", "42", "key-42", 100))
    );
    assert_eq!(store.initiator_of("!nobody:x").await?, None);
    // Answers follow where they picked the topic last.
    store.set_initiator_thread("!i-a:x", "!dm2:x").await?;
    assert_eq!(
        store.initiator_of("!i-a:x").await?.and_then(|r| r.thread),
        Some("!dm2:x".to_owned())
    );
    let open: Vec<String> = store
        .open_initiator_conversations("telegram", "42")
        .await?
        .into_iter()
        .map(|c| c.room_id)
        .collect();
    assert_eq!(open, ["!i-b:x", "!i-a:x"], "newest first");
    assert_eq!(in_thread(store, "!dm2:x").await?.as_deref(), Some("!i-a:x"));
    assert_eq!(in_thread(store, "!dm:x").await?.as_deref(), Some("!i-b:x"));
    store
        .set_conversation_state("!i-b:x", ConversationState::Closed)
        .await?;
    assert_eq!(
        in_thread(store, "!dm:x").await?,
        None,
        "a closed one is not open"
    );
    let open: Vec<String> = store
        .open_initiator_conversations("telegram", "42")
        .await?
        .into_iter()
        .map(|c| c.room_id)
        .collect();
    assert_eq!(open, ["!i-a:x"], "a closed one is not open");
    assert!(
        store
            .open_initiator_conversations("discord", "42")
            .await?
            .is_empty()
    );
    assert_eq!(store.initiator_conversations_since("key-42", 0).await?, 2);
    assert_eq!(store.initiator_conversations_since("key-42", 150).await?, 1);
    assert_eq!(store.initiator_conversations_since("key-7", 0).await?, 0);

    // What they wrote before choosing: kept in order, cleared up to what was queued.
    assert!(store.initiator_pending("telegram", "7").await?.is_empty());
    store.add_initiator_pending("telegram", "7", "one").await?;
    store.add_initiator_pending("telegram", "7", "two").await?;
    store
        .add_initiator_pending("telegram", "8", "other")
        .await?;
    let kept = store.initiator_pending("telegram", "7").await?;
    let texts: Vec<&str> = kept.iter().map(|p| p.event_json.as_str()).collect();
    assert_eq!(texts, ["one", "two"]);
    store
        .clear_initiator_pending("telegram", "7", kept[0].seq)
        .await?;
    let texts: Vec<String> = store
        .initiator_pending("telegram", "7")
        .await?
        .into_iter()
        .map(|p| p.event_json)
        .collect();
    assert_eq!(texts, ["two"]);
    assert_eq!(store.initiator_pending("telegram", "8").await?.len(), 1);

    assert!(!store.is_initiator_blocked("key-42").await?);
    assert!(store.block_initiator("key-42").await?);
    assert!(!store.block_initiator("key-42").await?, "blocked once");
    assert!(store.is_initiator_blocked("key-42").await?);
    assert!(!store.is_initiator_blocked("key-99").await?);
    assert!(store.unblock_initiator("key-42").await?);
    assert!(!store.unblock_initiator("key-42").await?);
    assert!(!store.is_initiator_blocked("key-42").await?);
    Ok(())
}
