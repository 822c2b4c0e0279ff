//! Conversations, offers and who holds them: keyed by room, one claim wins, offers per contact,
//! a conversation read with its holders, routing reading only the waiting ones.

use super::*;

pub(super) async fn conversations_are_keyed_by_room_and_resumable(
    store: &Store,
) -> anyhow::Result<()> {
    store
        .insert_conversation(&conversation("!one:x", "@g1:x", "support", 10))
        .await?;
    store
        .insert_conversation(&conversation("!two:x", "@g1:x", "sales", 20))
        .await?;
    store
        .insert_conversation(&conversation("!three:x", "@g2:x", "support", 30))
        .await?;
    // A room is one conversation: inserting it twice is an error, not a second row.
    assert!(
        store
            .insert_conversation(&conversation("!one:x", "@g9:x", "support", 40))
            .await
            .is_err()
    );

    let one = store.conversation("!one:x").await?.expect("stored");
    assert_eq!(
        (one.visitor_user_id.as_str(), one.topic.as_str()),
        ("@g1:x", "support")
    );
    assert_eq!(one.state, ConversationState::Queued);
    assert!(store.conversation("!missing:x").await?.is_none());

    let open = store
        .open_conversation_for_visitor("@g1:x", "support")
        .await?
        .expect("open");
    assert_eq!(open.room_id, "!one:x");
    assert!(
        store
            .set_conversation_state("!one:x", ConversationState::Active)
            .await?
    );
    assert_eq!(
        store.conversation("!one:x").await?.unwrap().state,
        ConversationState::Active
    );
    assert!(
        store
            .set_conversation_state("!one:x", ConversationState::Closed)
            .await?
    );
    assert!(
        store
            .open_conversation_for_visitor("@g1:x", "support")
            .await?
            .is_none()
    );
    assert!(
        !store
            .set_conversation_state("!missing:x", ConversationState::Closed)
            .await?
    );

    let rooms: Vec<String> = store
        .list_conversations()
        .await?
        .into_iter()
        .map(|c| c.room_id)
        .collect();
    assert_eq!(
        rooms,
        ["!one:x", "!two:x", "!three:x", "!claim:x", "!life:x"]
    );
    Ok(())
}

pub(super) async fn exactly_one_claim_wins_and_offers_move_once(
    store: &Store,
) -> anyhow::Result<()> {
    store
        .insert_conversation(&conversation("!claim:x", "@g5:x", "support", 50))
        .await?;
    let a = store
        .create_offer("!claim:x", "alex", "telegram", "7001")
        .await?;
    let again = store
        .create_offer("!claim:x", "alex", "telegram", "7001")
        .await?;
    assert_eq!(a, again, "offering twice must return the same offer");
    let b = store
        .create_offer("!claim:x", "sam", "telegram", "7002")
        .await?;
    assert_ne!(a.id, b.id);
    store.set_offer_message(a.id, "55").await?;
    assert_eq!(
        store
            .offer(a.id)
            .await?
            .unwrap()
            .remote_message_id
            .as_deref(),
        Some("55")
    );

    assert!(store.claim_conversation("!claim:x").await?);
    assert!(
        !store.claim_conversation("!claim:x").await?,
        "a second claim must lose"
    );
    assert!(store.transition_offer(a.id, "open", "accepted").await?);
    assert!(
        !store.transition_offer(a.id, "open", "taken").await?,
        "an offer moves out of open once"
    );
    assert!(store.transition_offer(b.id, "open", "taken").await?);
    let states: Vec<String> = store
        .offers_for_room("!claim:x")
        .await?
        .into_iter()
        .map(|o| o.state)
        .collect();
    assert_eq!(states, ["accepted", "taken"]);
    Ok(())
}

/// One responder is offered a conversation on each of their platforms (one row per contact);
/// only waiting conversations can be claimed, whichever waiting state they are in; the last
/// published status is kept so it is not sent twice.
pub(super) async fn offers_per_contact_and_the_lifecycle(store: &Store) -> anyhow::Result<()> {
    store
        .insert_conversation(&conversation("!life:x", "@g9:x", "support", 60))
        .await?;
    let tg = store
        .create_offer("!life:x", "mia", "telegram", "9301")
        .await?;
    let mx = store
        .create_offer("!life:x", "mia", "matrix", "@mia:x")
        .await?;
    assert_ne!(tg.id, mx.id, "one offer per contact");
    assert_eq!(
        store
            .create_offer("!life:x", "mia", "matrix", "@mia:x")
            .await?,
        mx
    );
    assert_eq!(store.offers_for_room("!life:x").await?.len(), 2);

    for state in [ConversationState::Offered, ConversationState::Transferring] {
        store.set_conversation_state("!life:x", state).await?;
        assert!(store.claim_conversation("!life:x").await?, "{state:?}");
        assert_eq!(
            store.conversation("!life:x").await?.unwrap().state,
            ConversationState::Active
        );
    }
    store
        .set_conversation_state("!life:x", ConversationState::Closed)
        .await?;
    assert!(
        !store.claim_conversation("!life:x").await?,
        "a closed conversation cannot be claimed"
    );

    assert_eq!(store.published_status("!life:x").await?, None);
    store
        .set_published_status("!life:x", r#"{"state":"closed"}"#)
        .await?;
    assert_eq!(
        store.published_status("!life:x").await?.as_deref(),
        Some(r#"{"state":"closed"}"#)
    );
    Ok(())
}

/// The pending outbox row of this event.
/// A conversation and who holds it, read together: none, then two holders (one with the
/// handle of the offer they accepted), and never one whose assignment ended.
pub(super) async fn a_conversation_is_read_with_its_holders(store: &Store) -> anyhow::Result<()> {
    assert!(store.conversation_with_holders("!h:x").await?.is_none());
    let started = conversation("!h:x", "@gh:x", "support", 50);
    store.insert_conversation(&started).await?;
    let (read, holders) = store
        .conversation_with_holders("!h:x")
        .await?
        .expect("the conversation");
    assert_eq!(read.room_id, "!h:x");
    assert_eq!(read.visitor_user_id, "@gh:x");
    assert!(holders.is_empty(), "nobody holds it yet");
    let assignment = |who: &str, address: &str, state: &str| AssignmentRow {
        room_id: "!h:x".into(),
        responder_id: who.into(),
        platform: "telegram".into(),
        address: address.into(),
        ghost_user_id: format!("@_sb_{who}:x"),
        state: state.into(),
    };
    store
        .upsert_assignment(&assignment("hana", "8001", "active"))
        .await?;
    store
        .upsert_assignment(&assignment("hugo", "8002", "active"))
        .await?;
    store
        .upsert_assignment(&assignment("hedy", "8003", "ended"))
        .await?;
    let offer = store
        .create_offer("!h:x", "hana", "telegram", "8001")
        .await?;
    store.set_offer_message(offer.id, "42").await?;
    assert!(store.transition_offer(offer.id, "open", "accepted").await?);
    let (_, mut holders) = store
        .conversation_with_holders("!h:x")
        .await?
        .expect("the conversation");
    holders.sort_by(|a, b| a.0.responder_id.cmp(&b.0.responder_id));
    assert_eq!(
        holders,
        vec![
            (assignment("hana", "8001", "active"), Some("42".to_owned())),
            (assignment("hugo", "8002", "active"), None),
        ]
    );
    // The same as the two reads it replaces.
    let mut apart = store.active_assignments_with_threads("!h:x").await?;
    apart.sort_by(|a, b| a.0.responder_id.cmp(&b.0.responder_id));
    assert_eq!(holders, apart);
    Ok(())
}

pub(super) async fn routing_reads_only_waiting_conversations(store: &Store) -> anyhow::Result<()> {
    let states = [
        ("!w-queued:x", ConversationState::Queued),
        ("!w-offered:x", ConversationState::Offered),
        ("!w-active:x", ConversationState::Active),
        ("!w-transferring:x", ConversationState::Transferring),
        ("!w-closed:x", ConversationState::Closed),
    ];
    for (i, (room, state)) in states.iter().enumerate() {
        store
            .insert_conversation(&conversation(room, "@v:x", "waiting", 10 + i as i64))
            .await?;
        store.set_conversation_state(room, *state).await?;
    }
    let waiting: Vec<String> = store
        .waiting_conversations()
        .await?
        .into_iter()
        .filter(|c| c.topic == "waiting")
        .map(|c| c.room_id)
        .collect();
    assert_eq!(
        waiting,
        ["!w-queued:x", "!w-offered:x", "!w-transferring:x"]
    );
    Ok(())
}
