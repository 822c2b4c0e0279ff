//! One store suite, written once and run against every engine: SQLite (the default) and
//! PostgreSQL (a throwaway cluster started by scripts/test.sh). Retention and erasure are in
//! `store_retention.rs`, milestones and gauges in `store_stats.rs`, leases in
//! `store_leases.rs`: each on stores of their own.

mod common;

use std::time::Duration;

use common::{conversation, message};
use switchboard_bridge::{
    Store, StoreError,
    clock::ManualClock,
    conversation::{ConversationState, SenderRole},
    store::{
        AssignmentRow, DeadLetterSource, Engine, InitiatorRow, LINK_CODE_TTL_MS, NewDelivery,
        NewInboxEvent, OfferRow, OutboxRow, Recorded, RemotePost, VisitorBatch,
    },
};

async fn inbox_dedups_by_event_id_and_keeps_arrival_order(store: &Store) -> anyhow::Result<()> {
    let ev = |id: &'static str| NewInboxEvent {
        event_id: id,
        room_id: "!r:x",
        event_json: "{}",
    };
    // A transaction of typing notifications only has no timeline events to record.
    assert_eq!(store.record_events("t0", &[]).await?, 0);
    assert_eq!(store.record_events("t1", &[ev("$a"), ev("$b")]).await?, 2);
    // The same events again under another transaction ID, plus one new one.
    assert_eq!(
        store
            .record_events("t2", &[ev("$b"), ev("$a"), ev("$c")])
            .await?,
        1
    );
    assert_eq!(store.count_inbox().await?, 3);

    let pending = store.pending_events(10).await?;
    let ids: Vec<&str> = pending.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["$a", "$b", "$c"]);

    store.mark_processed(pending[0].seq).await?;
    let ids: Vec<String> = store
        .pending_events(10)
        .await?
        .into_iter()
        .map(|e| e.event_id)
        .collect();
    assert_eq!(ids, ["$b", "$c"]);
    // The limit bounds a batch.
    assert_eq!(store.pending_events(1).await?.len(), 1);

    // What the lanes read: which rooms have new work after a cursor, and one room's events
    // without the others'. A transaction of more events than one multi-row insert holds is
    // recorded whole, in order.
    let many: Vec<String> = (0..250).map(|i| format!("$m{i}")).collect();
    let rows: Vec<NewInboxEvent<'_>> = many
        .iter()
        .enumerate()
        .map(|(i, id)| NewInboxEvent {
            event_id: id,
            room_id: if i % 2 == 0 { "!even:x" } else { "!odd:x" },
            event_json: "{}",
        })
        .collect();
    assert_eq!(store.record_events("t3", &rows).await?, 250);
    assert_eq!(
        store.record_events("t3", &rows).await?,
        0,
        "a replay adds nothing"
    );
    let mut rooms = store.pending_inbox_rooms().await?;
    rooms.sort();
    assert_eq!(rooms, ["!even:x", "!odd:x", "!r:x"]);
    let odd = store.pending_events_in_room("!odd:x", 3).await?;
    let ids: Vec<&str> = odd.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids, ["$m1", "$m3", "$m5"]);
    for e in store.pending_events_in_room("!odd:x", 1000).await? {
        store.mark_processed(e.seq).await?;
    }
    assert!(store.pending_events_in_room("!odd:x", 10).await?.is_empty());
    for e in store.pending_events(1000).await? {
        store.mark_processed(e.seq).await?;
    }
    assert!(store.pending_inbox_rooms().await?.is_empty());
    Ok(())
}

async fn conversations_are_keyed_by_room_and_resumable(store: &Store) -> anyhow::Result<()> {
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

async fn transcript_records_each_message_once_in_inbox_order(store: &Store) -> anyhow::Result<()> {
    assert!(
        store
            .record_message(&message("$2", "!t:x", 2, SenderRole::Responder, "second"))
            .await?
    );
    assert!(
        store
            .record_message(&message("$1", "!t:x", 1, SenderRole::Visitor, "first"))
            .await?
    );
    assert!(
        store
            .record_message(&message("$3", "!other:x", 3, SenderRole::Bot, "elsewhere"))
            .await?
    );
    // Processing the same event again (after a crash before mark_processed) changes nothing.
    assert!(
        !store
            .record_message(&message("$1", "!t:x", 1, SenderRole::Visitor, "first"))
            .await?
    );

    let transcript = store.messages("!t:x").await?;
    assert_eq!(
        transcript,
        vec![
            message("$1", "!t:x", 1, SenderRole::Visitor, "first"),
            message("$2", "!t:x", 2, SenderRole::Responder, "second"),
        ]
    );
    // A message's file is kept beside it (for relaying it after a late accept).
    assert_eq!(store.message_media("$1").await?, None);
    store
        .set_message_media("$1", r#"{"mxc":"mxc://x/y"}"#)
        .await?;
    assert_eq!(
        store.message_media("$1").await?.as_deref(),
        Some(r#"{"mxc":"mxc://x/y"}"#)
    );
    assert_eq!(store.message_media("$2").await?, None);

    // The two times the holders' limits need, read without the transcript.
    let base = 1_700_000_000_000;
    assert_eq!(
        store
            .last_message_times("!t:x", "@someone:localhost", base)
            .await?,
        (Some(base + 2), Some(base + 1))
    );
    assert_eq!(
        store
            .last_message_times("!t:x", "@someone:localhost", base + 3)
            .await?,
        (None, Some(base + 1)),
        "a reply before the holder started does not count"
    );
    assert_eq!(
        store.last_message_times("!none:x", "@a:x", 0).await?,
        (None, None)
    );
    Ok(())
}

async fn remote_events_are_recorded_once_per_platform_key(store: &Store) -> anyhow::Result<()> {
    assert!(
        store
            .record_remote_event("telegram", "100.0", r#"{"a":1}"#)
            .await?
    );
    assert!(
        !store
            .record_remote_event("telegram", "100.0", r#"{"a":1}"#)
            .await?,
        "a redelivered update was recorded twice"
    );
    // The same key on another platform is another event.
    assert!(
        store
            .record_remote_event("discord", "100.0", r#"{"b":2}"#)
            .await?
    );
    let pending = store.pending_remote_events(10).await?;
    assert_eq!(
        pending
            .iter()
            .map(|e| e.platform.as_str())
            .collect::<Vec<_>>(),
        ["telegram", "discord"]
    );
    store.mark_remote_processed(pending[0].seq).await?;
    assert_eq!(store.pending_remote_events(10).await?.len(), 1);
    // One read from a homeserver event (a Matrix responder's), recorded relaxed: once too,
    // in order after the others, and a repeat of the key is known whichever way it comes.
    assert_eq!(
        store
            .record_derived_remote_event("matrix", "$relay1", r#"{"c":3}"#)
            .await?,
        Recorded::New
    );
    assert_eq!(
        store
            .record_derived_remote_event("matrix", "$relay1", r#"{"c":3}"#)
            .await?,
        Recorded::Known
    );
    assert!(
        !store
            .record_remote_event("matrix", "$relay1", r#"{"c":3}"#)
            .await?
    );
    let pending = store.pending_remote_events(10).await?;
    let platforms: Vec<&str> = pending.iter().map(|e| e.platform.as_str()).collect();
    assert_eq!(platforms, ["discord", "matrix"]);
    Ok(())
}

async fn exactly_one_claim_wins_and_offers_move_once(store: &Store) -> anyhow::Result<()> {
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
async fn offers_per_contact_and_the_lifecycle(store: &Store) -> anyhow::Result<()> {
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

async fn assignments_mapping_and_outbox_keep_order(store: &Store) -> anyhow::Result<()> {
    let assignment = |room: &str, state: &str| AssignmentRow {
        room_id: room.into(),
        responder_id: "alex".into(),
        platform: "telegram".into(),
        address: "7001".into(),
        ghost_user_id: "@_sb_alex:x".into(),
        state: state.into(),
    };
    store
        .upsert_assignment(&assignment("!r1:x", "active"))
        .await?;
    store
        .upsert_assignment(&assignment("!r2:x", "active"))
        .await?;
    assert_eq!(
        store
            .active_assignments_for_address("telegram", "7001")
            .await?
            .len(),
        2
    );
    store
        .upsert_assignment(&assignment("!r2:x", "ended"))
        .await?;
    let active = store
        .active_assignments_for_address("telegram", "7001")
        .await?;
    assert_eq!(active, vec![assignment("!r1:x", "active")]);
    assert!(store.active_assignments_for_room("!r2:x").await?.is_empty());
    // With the handle of the offer the holder accepted, once there is one.
    assert_eq!(
        store.active_assignments_with_threads("!r1:x").await?,
        vec![(assignment("!r1:x", "active"), None)]
    );
    let offer = store
        .create_offer("!r1:x", "alex", "telegram", "7001")
        .await?;
    store.set_offer_message(offer.id, "!relay:x").await?;
    assert_eq!(
        store.active_assignments_with_threads("!r1:x").await?,
        vec![(assignment("!r1:x", "active"), None)],
        "an open offer is not the holder's"
    );
    assert!(store.transition_offer(offer.id, "open", "accepted").await?);
    assert_eq!(
        store.active_assignments_with_threads("!r1:x").await?,
        vec![(assignment("!r1:x", "active"), Some("!relay:x".to_owned()))]
    );

    store
        .map_remote_message("telegram", "7001", "10", "!r1:x", Some("$e1"))
        .await?;
    store
        .map_remote_message("telegram", "7001", "10", "!r2:x", None)
        .await?; // first mapping stands
    assert_eq!(
        store
            .room_of_remote_message("telegram", "7001", "10")
            .await?
            .as_deref(),
        Some("!r1:x")
    );
    assert_eq!(
        store
            .room_of_remote_message("telegram", "7002", "10")
            .await?,
        None
    );

    for (event, body) in [("$o1", "one"), ("$o2", "two"), ("$o1", "one again")] {
        store
            .enqueue_outbox("!r1:x", "telegram", "7001", event, body)
            .await?;
    }
    store
        .enqueue_outbox("!r2:x", "telegram", "7002", "$o3", "other chat")
        .await?;
    let mut lanes = store.outbox_lanes().await?;
    lanes.sort();
    let keys: Vec<(&str, &str)> = lanes
        .iter()
        .map(|(p, a, _)| (p.as_str(), a.as_str()))
        .collect();
    assert_eq!(keys, [("telegram", "7001"), ("telegram", "7002")]);
    let to_7001: Vec<String> = store
        .pending_outbox_to("telegram", "7001", 10)
        .await?
        .into_iter()
        .map(|(r, _)| r.payload_json)
        .collect();
    assert_eq!(to_7001, ["one", "two"], "one chat's rows, in order");
    let other = store.pending_outbox_to("telegram", "7002", 10).await?;
    store.outbox_done(other[0].0.seq).await?;
    let pending = store.pending_outbox(10).await?;
    let bodies: Vec<&str> = pending
        .iter()
        .map(|(r, _)| r.payload_json.as_str())
        .collect();
    assert_eq!(
        bodies,
        ["one", "two"],
        "an event is queued once per address, in order"
    );
    let (first, _) = &pending[0];
    store.outbox_retry_at(first.seq, 123).await?;
    let (row, due) = &store.pending_outbox(10).await?[0];
    assert_eq!((row.seq, row.attempts, *due), (first.seq, 1, 123));
    store.outbox_done(first.seq).await?;
    store.outbox_failed(pending[1].0.seq).await?;
    assert!(store.pending_outbox(10).await?.is_empty());
    Ok(())
}

/// The pending outbox row of this event.
/// A conversation and who holds it, read together: none, then two holders (one with the
/// handle of the offer they accepted), and never one whose assignment ended.
async fn a_conversation_is_read_with_its_holders(store: &Store) -> anyhow::Result<()> {
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

async fn pending(store: &Store, event_id: &str) -> anyhow::Result<OutboxRow> {
    store
        .pending_outbox(10)
        .await?
        .into_iter()
        .map(|(row, _)| row)
        .find(|row| row.event_id == event_id)
        .ok_or_else(|| anyhow::anyhow!("no pending outbox row for {event_id}"))
}

async fn a_split_delivery_resumes_at_its_first_unsent_part(store: &Store) -> anyhow::Result<()> {
    store
        .enqueue_outbox("!r3:x", "telegram", "7003", "$p1", "{}")
        .await?;
    let row = pending(store, "$p1").await?;
    assert_eq!((row.parts.clone(), row.parts_sent), (None, 0));

    let parts = ["one".to_owned(), "two".into(), "three".into()];
    assert_eq!(store.outbox_set_parts(row.seq, &parts).await?, parts);
    assert_eq!(
        store.outbox_set_parts(row.seq, &["other".into()]).await?,
        parts,
        "the first rendering stands"
    );
    store.outbox_retry_at(row.seq, 0).await?;
    let row = pending(store, "$p1").await?;
    assert_eq!(
        (row.parts.as_deref(), row.parts_sent, row.attempts),
        (Some(&parts[..]), 0, 1)
    );

    assert_eq!(store.outbox_part_sent(&row, 0, "m1").await?, 1);
    assert_eq!(
        store.outbox_part_sent(&row, 0, "m1").await?,
        1,
        "recording a part twice changes nothing"
    );
    // Read back as after a restart: the next attempt starts at part 1, with a fresh count.
    let row = pending(store, "$p1").await?;
    assert_eq!((row.parts_sent, row.attempts), (1, 0));
    assert_eq!(
        store.remote_message("telegram", "7003", "m1").await?,
        Some(("!r3:x".to_owned(), Some("$p1".to_owned()))),
        "a part is mapped to its conversation as it is recorded"
    );
    assert_eq!(store.outbox_part_sent(&row, 1, "m2").await?, 2);
    assert_eq!(store.outbox_part_sent(&row, 2, "m3").await?, 3);
    assert_eq!(
        store
            .room_of_remote_message("telegram", "7003", "m3")
            .await?
            .as_deref(),
        Some("!r3:x")
    );
    store.outbox_done(row.seq).await?;
    assert!(store.pending_outbox(10).await?.is_empty());

    // A one-part row: its part recorded as sent and the row done in the same commit, also
    // when that part had been recorded already (a second pass after a crash).
    store
        .enqueue_outbox("!r3:x", "telegram", "7003", "$p2", "{}")
        .await?;
    let row = pending(store, "$p2").await?;
    assert_eq!(
        store
            .outbox_part_sent_done(&row, 0, "m4", true, true)
            .await?,
        1
    );
    assert!(store.pending_outbox(10).await?.is_empty());
    assert_eq!(
        store.remote_message("telegram", "7003", "m4").await?,
        Some(("!r3:x".to_owned(), Some("$p2".to_owned())))
    );
    store
        .enqueue_outbox("!r3:x", "telegram", "7003", "$p3", "{}")
        .await?;
    let row = pending(store, "$p3").await?;
    assert_eq!(store.outbox_part_sent(&row, 0, "m5").await?, 1);
    assert_eq!(
        store
            .outbox_part_sent_done(&row, 0, "m5", true, false)
            .await?,
        1
    );
    assert!(store.pending_outbox(10).await?.is_empty());
    // Relaxed records of a two-part row, first pass (on SQLite in a file these run on the
    // calling thread): each part mapped as it is recorded, the row done with the last.
    store
        .enqueue_outbox("!r3:x", "telegram", "7003", "$p4", "{}")
        .await?;
    let row = pending(store, "$p4").await?;
    for (index, id, done) in [(0, "m6", false), (1, "m7", true)] {
        assert_eq!(
            store
                .outbox_part_sent_done(&row, index, id, done, false)
                .await?,
            index + 1
        );
        assert_eq!(
            store.remote_message("telegram", "7003", id).await?,
            Some(("!r3:x".to_owned(), Some("$p4".to_owned())))
        );
        assert_eq!(store.pending_outbox(10).await?.is_empty(), done);
    }
    Ok(())
}

async fn link_codes_work_once_and_move_a_responder(store: &Store) -> anyhow::Result<()> {
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

async fn visitor_sessions_resolve_until_they_expire(store: &Store) -> anyhow::Result<()> {
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

/// Every unposted write, in queue order, read as the posting lanes read them: room by room.
async fn all_room_posts(
    store: &Store,
) -> anyhow::Result<Vec<switchboard_bridge::store::RoomPostRow>> {
    let mut all = Vec::new();
    for (room, _) in store.room_post_rooms().await? {
        all.extend(store.pending_room_posts_in(&room).await?);
    }
    all.sort_by_key(|p| p.seq);
    Ok(all)
}

async fn room_posts_queue_once_and_wait_out_their_retries(store: &Store) -> anyhow::Result<()> {
    let room = "!posts:x";
    assert!(store.enqueue_room_post(room, "t1", "{\"op\":1}").await?);
    assert!(
        !store.enqueue_room_post(room, "t1", "{\"op\":1}").await?,
        "the same post queued twice is one post"
    );
    assert!(store.enqueue_room_post(room, "t2", "{\"op\":2}").await?);
    // The same transaction ID in another room is another post.
    assert!(store.enqueue_room_post("!other:x", "t1", "{}").await?);
    let pending = all_room_posts(store).await?;
    let keys: Vec<(&str, &str)> = pending
        .iter()
        .map(|p| (p.room_id.as_str(), p.txn_id.as_str()))
        .collect();
    assert_eq!(keys, [(room, "t1"), (room, "t2"), ("!other:x", "t1")]);
    // Each room's own queue, in order, for its posting lane.
    let mine: Vec<String> = store
        .pending_room_posts_in(room)
        .await?
        .into_iter()
        .map(|p| p.txn_id)
        .collect();
    assert_eq!(mine, ["t1", "t2"]);

    // A failed attempt waits; the homeserver coming back makes it due at once.
    let far = pending[0].next_attempt_at + 3_600_000;
    store
        .room_post_retry_at(pending[0].seq, far, "connection refused")
        .await?;
    let first = &store.pending_room_posts_in(room).await?[0];
    assert_eq!((first.attempts, first.next_attempt_at), (1, far));
    // The room is due when its first post is: the one waiting holds the one behind it.
    let mut rooms = store.room_post_rooms().await?;
    rooms.sort();
    assert_eq!(
        rooms,
        [
            ("!other:x".to_owned(), pending[2].next_attempt_at),
            (room.to_owned(), far)
        ]
    );
    assert_eq!(store.retry_room_posts_now().await?, 1);
    assert!(store.pending_room_posts_in(room).await?[0].next_attempt_at < far);

    store.room_post_done(pending[0].seq).await?;
    store
        .room_post_failed(pending[1].seq, "M_FORBIDDEN: not in room")
        .await?;
    let left: Vec<String> = all_room_posts(store)
        .await?
        .into_iter()
        .map(|p| p.room_id)
        .collect();
    assert_eq!(left, ["!other:x"]);
    let failed = store.failed_room_posts(10).await?;
    assert_eq!(failed.len(), 1);
    assert_eq!(failed[0].1, "M_FORBIDDEN: not in room");
    Ok(())
}

/// A responder's message on its way into the room (`Store::queue_remote_post`): mapped to the
/// room, in the transcript provisionally and queued, all at once; handled again (its event
/// redone after a crash), nothing of it twice.
async fn a_remote_post_is_queued_mapped_and_transcribed_once(store: &Store) -> anyhow::Result<()> {
    let room = "!remote-post:x";
    let m = message("pending:r1", room, 0, SenderRole::Responder, "on it");
    let post = RemotePost {
        room_id: room,
        txn_id: "telegram-7005-m1",
        op_json: "{\"op\":\"message\"}",
        remote: Some(("telegram", "7005", "m1")),
        provisional: Some(&m),
    };
    assert!(store.queue_remote_post(&post).await?);
    assert!(
        !store.queue_remote_post(&post).await?,
        "queued again, it is the same post"
    );
    let queued: Vec<(String, String)> = store
        .pending_room_posts_in(room)
        .await?
        .into_iter()
        .map(|p| (p.txn_id, p.op_json))
        .collect();
    assert_eq!(
        queued,
        [(
            "telegram-7005-m1".to_owned(),
            "{\"op\":\"message\"}".to_owned()
        )]
    );
    assert_eq!(
        store
            .room_of_remote_message("telegram", "7005", "m1")
            .await?,
        Some(room.to_owned())
    );
    let bodies: Vec<String> = store
        .messages(room)
        .await?
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(bodies, ["on it"]);
    // Posted and confirmed, then handled again (a stop before its event was marked
    // processed): no second provisional entry beside the confirmed one.
    store.confirm_message("pending:r1", "$r1").await?;
    assert!(!store.queue_remote_post(&post).await?);
    let ids: Vec<String> = store
        .messages(room)
        .await?
        .into_iter()
        .map(|m| m.event_id)
        .collect();
    assert_eq!(ids, ["$r1"]);
    // A post with nothing to map or transcribe (a bot's) is only queued.
    let plain = RemotePost {
        room_id: room,
        txn_id: "notice-1",
        op_json: "{}",
        remote: None,
        provisional: None,
    };
    assert!(store.queue_remote_post(&plain).await?);
    assert_eq!(store.pending_room_posts_in(room).await?.len(), 2);
    assert_eq!(store.messages(room).await?.len(), 1);
    Ok(())
}

async fn provisional_transcript_entries_become_their_event(store: &Store) -> anyhow::Result<()> {
    let room = "!provisional:x";
    let mut m = message("pending:a", room, 0, SenderRole::Responder, "on my way");
    store.record_provisional_message(&m).await?;
    m.event_id = "pending:b".into();
    m.body = "second".into();
    store.record_provisional_message(&m).await?;
    m.event_id = "pending:c".into();
    m.body = "never posted".into();
    store.record_provisional_message(&m).await?;
    // a: posted, the echo comes later (and is then a no-op); b: the echo was recorded first.
    store.confirm_message("pending:a", "$a").await?;
    let echo = message("$b", room, 99, SenderRole::Responder, "second");
    assert!(store.record_message(&echo).await?);
    store.confirm_message("pending:b", "$b").await?;
    let echo_a = message("$a", room, 100, SenderRole::Responder, "on my way");
    assert!(!store.record_message(&echo_a).await?, "a is already there");
    store.forget_message("pending:c").await?;
    let ids: Vec<String> = store
        .messages(room)
        .await?
        .into_iter()
        .map(|m| m.event_id)
        .collect();
    assert_eq!(ids, ["$a", "$b"]);

    // Two replies decided in order; the first one's echo is recorded (later in the inbox than
    // either was decided) before it is confirmed, while the second still waits for its echo.
    // The first stays first (CI once read them swapped).
    let room = "!provisional-race:x";
    let mut x = message("pending:x", room, 0, SenderRole::Responder, "reply 1");
    x.origin_server_ts = 1_000;
    store.record_provisional_message(&x).await?;
    let mut y = message("pending:y", room, 0, SenderRole::Responder, "reply 2");
    y.origin_server_ts = 1_001;
    store.record_provisional_message(&y).await?;
    let mut echo_x = message("$x", room, 500, SenderRole::Responder, "reply 1");
    echo_x.origin_server_ts = 2_000;
    assert!(store.record_message(&echo_x).await?);
    store.confirm_message("pending:x", "$x").await?;
    let said: Vec<(String, String)> = store
        .messages(room)
        .await?
        .into_iter()
        .map(|m| (m.event_id, m.body))
        .collect();
    assert_eq!(
        said,
        [
            ("$x".to_owned(), "reply 1".to_owned()),
            ("pending:y".to_owned(), "reply 2".to_owned())
        ]
    );
    Ok(())
}

async fn connector_state_is_kept_per_platform_and_taken_once(store: &Store) -> anyhow::Result<()> {
    assert_eq!(store.connector_state("email", "thread:t1").await?, None);
    store
        .put_connector_state("email", "thread:t1", "{\"ids\":[]}")
        .await?;
    store
        .put_connector_state("email", "thread:t1", "{\"ids\":[\"<a@x>\"]}")
        .await?;
    store
        .put_connector_state("discord", "thread:t1", "other")
        .await?;
    assert_eq!(
        store
            .connector_state("email", "thread:t1")
            .await?
            .as_deref(),
        Some("{\"ids\":[\"<a@x>\"]}"),
        "a put replaces"
    );
    assert_eq!(
        store
            .connector_state("discord", "thread:t1")
            .await?
            .as_deref(),
        Some("other"),
        "keys are per platform"
    );
    // Taken once: of two concurrent takes, one gets the value.
    store
        .put_connector_state("email", "link:l1", "offer 7")
        .await?;
    let (a, b) = tokio::join!(
        store.take_connector_state("email", "link:l1"),
        store.take_connector_state("email", "link:l1")
    );
    let got: Vec<_> = [a?, b?].into_iter().flatten().collect();
    assert_eq!(got, ["offer 7"]);
    assert_eq!(store.connector_state("email", "link:l1").await?, None);
    Ok(())
}

async fn changed_messages_are_found_and_kept_in_step(store: &Store) -> anyhow::Result<()> {
    let room = "!revised:x";
    // A message sent in three parts (IDs out of text order: "9" < "10" as numbers), another
    // event's part, and a responder's message in the same chat.
    for (id, event) in [
        ("10", "$long"),
        ("9", "$long"),
        ("11", "$long"),
        ("12", "$other"),
    ] {
        store
            .map_remote_message("discord", "u1", id, room, Some(event))
            .await?;
    }
    assert_eq!(
        store
            .messages_sent_for("discord", "u1", room, "$long")
            .await?,
        ["9", "10", "11"],
        "in the order they were sent"
    );
    assert!(
        store
            .messages_sent_for("discord", "u2", room, "$long")
            .await?
            .is_empty(),
        "another responder's chat"
    );
    assert_eq!(
        store.chat_of_message("discord", "12").await?.as_deref(),
        Some("u1")
    );
    assert_eq!(store.chat_of_message("telegram", "12").await?, None);
    store.forget_remote_message("discord", "u1", "11").await?;
    assert_eq!(
        store
            .messages_sent_for("discord", "u1", room, "$long")
            .await?,
        ["9", "10"]
    );

    store
        .record_message(&message("$long", room, 1, SenderRole::Visitor, "blue"))
        .await?;
    store
        .record_message(&message("$gone", room, 2, SenderRole::Visitor, "4111"))
        .await?;
    store.set_message_media("$gone", "{}").await?;
    store
        .revise_message("$long", Some(("red", Some("<b>red</b>"))))
        .await?;
    store.revise_message("$gone", None).await?;
    let transcript = store.messages(room).await?;
    assert_eq!(transcript[0].body, "red");
    assert_eq!(transcript[0].formatted_body.as_deref(), Some("<b>red</b>"));
    assert_eq!(transcript[1].body, "(deleted)");
    assert_eq!(
        store.message_media("$gone").await?,
        None,
        "its file goes too"
    );
    assert_eq!(
        store.message_author("$long").await?,
        Some((room.to_owned(), "@someone:localhost".to_owned()))
    );
    Ok(())
}

async fn one_conversations_backlog_leaves_room_for_the_others(store: &Store) -> anyhow::Result<()> {
    // A conversation with a long backlog queued first, then one message of another.
    for n in 0..300 {
        store
            .enqueue_outbox("!busy:x", "telegram", "1", &format!("$busy{n}"), "{}")
            .await?;
        store
            .enqueue_room_post("!busy:x", &format!("busy{n}"), "{}")
            .await?;
    }
    store
        .enqueue_outbox("!quiet:x", "telegram", "2", "$quiet", "{}")
        .await?;
    store.enqueue_room_post("!quiet:x", "quiet", "{}").await?;
    // A batch of 200 still holds the quiet conversation's row, after a bounded share of the
    // busy one's, in queue order.
    let outbox: Vec<_> = store
        .pending_outbox(200)
        .await?
        .into_iter()
        .filter(|(r, _)| r.room_id == "!busy:x" || r.room_id == "!quiet:x")
        .collect();
    let busy = outbox
        .iter()
        .filter(|(r, _)| r.room_id == "!busy:x")
        .count();
    assert!(
        busy as i64 <= switchboard_bridge::store::PER_ROOM_BATCH,
        "{busy}"
    );
    assert_eq!(
        outbox.last().map(|(r, _)| r.event_id.as_str()),
        Some("$quiet")
    );
    assert_eq!(
        outbox[0].0.event_id, "$busy0",
        "queue order holds within the busy one"
    );
    assert!(
        store
            .room_post_rooms()
            .await?
            .iter()
            .any(|(room, _)| room == "!quiet:x")
    );
    assert!(
        store.pending_room_posts_in("!busy:x").await?.len() as i64
            <= switchboard_bridge::store::PER_ROOM_BATCH
    );
    // Delivered rows make room for the next ones of the same conversation, still in order.
    for (row, _) in outbox.iter().filter(|(r, _)| r.room_id == "!busy:x") {
        store.outbox_done(row.seq).await?;
    }
    let next = store.pending_outbox(200).await?;
    let next_busy = next.iter().find(|(r, _)| r.room_id == "!busy:x");
    assert_eq!(
        next_busy.map(|(r, _)| r.event_id.clone()),
        Some(format!("$busy{busy}"))
    );
    Ok(())
}

async fn routing_reads_only_waiting_conversations(store: &Store) -> anyhow::Result<()> {
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

async fn never_working_events_are_set_aside_and_can_be_retried(
    store: &Store,
) -> anyhow::Result<()> {
    // One row of each kind of work, each among others of its queue.
    let ev = |id: &'static str| NewInboxEvent {
        event_id: id,
        room_id: "!dead:x",
        event_json: "{}",
    };
    store
        .record_events("t-dead", &[ev("$dead"), ev("$alive")])
        .await?;
    let inbox_seq = |id: &'static str| async move {
        let pending = store.pending_events(100).await?;
        anyhow::Ok(
            pending
                .into_iter()
                .find(|e| e.event_id == id)
                .map(|e| e.seq),
        )
    };
    let dead_event = inbox_seq("$dead").await?.expect("pending");
    store
        .record_remote_event("telegram", "dead.0", r#"{"dead":true}"#)
        .await?;
    let remote_seq = || async {
        let pending = store.pending_remote_events(100).await?;
        anyhow::Ok(
            pending
                .into_iter()
                .find(|e| e.event_json == r#"{"dead":true}"#)
                .map(|e| e.seq),
        )
    };
    let dead_remote = remote_seq().await?.expect("pending");
    store
        .enqueue_outbox("!dead:x", "telegram", "7001", "$dead", "payload")
        .await?;
    let delivery = || async {
        let pending = store.pending_outbox(1000).await?;
        anyhow::Ok(pending.into_iter().find(|(row, _)| row.event_id == "$dead"))
    };
    let (dead_delivery, _) = delivery().await?.expect("pending");
    store.outbox_retry_at(dead_delivery.seq, i64::MAX).await?;

    // Set aside: out of its queue, with the reason, in one step.
    let a = store
        .set_aside(
            DeadLetterSource::Inbox,
            dead_event,
            Some("!dead:x"),
            "boom",
            5,
        )
        .await?;
    let b = store
        .set_aside(DeadLetterSource::Remote, dead_remote, None, "bad", 3)
        .await?;
    let c = store
        .set_aside(
            DeadLetterSource::Outbox,
            dead_delivery.seq,
            Some("!dead:x"),
            &"x".repeat(5000),
            9,
        )
        .await?;
    assert_eq!(inbox_seq("$dead").await?, None);
    assert!(
        inbox_seq("$alive").await?.is_some(),
        "the conversation goes on"
    );
    assert_eq!(remote_seq().await?, None);
    assert!(delivery().await?.is_none());

    // Listed newest first; a second set-aside of the same row updates it.
    let again = store
        .set_aside(
            DeadLetterSource::Inbox,
            dead_event,
            Some("!dead:x"),
            "still boom",
            6,
        )
        .await?;
    assert_eq!(again, a);
    let letters = store.dead_letters(10).await?;
    assert_eq!(
        letters.iter().map(|l| l.id).collect::<Vec<_>>(),
        [c, b, a],
        "{letters:?}"
    );
    let inbox_letter = &letters[2];
    assert_eq!(
        (
            inbox_letter.source,
            inbox_letter.source_seq,
            inbox_letter.room_id.as_deref(),
            inbox_letter.reason.as_str(),
            inbox_letter.attempts
        ),
        (
            DeadLetterSource::Inbox,
            dead_event,
            Some("!dead:x"),
            "still boom",
            6
        )
    );
    assert_eq!(letters[1].room_id, None);
    assert_eq!(
        letters[0].reason.chars().count(),
        switchboard_bridge::store::MAX_REASON_CHARS + 1,
        "reasons are kept short"
    );
    assert_eq!(store.dead_letters(1).await?.len(), 1);

    // A row that does not exist is not set aside, and nothing is recorded.
    assert!(matches!(
        store
            .set_aside(DeadLetterSource::Remote, 999_999, None, "?", 1)
            .await,
        Err(StoreError::NoSuchRow { .. })
    ));
    assert_eq!(store.dead_letters(10).await?.len(), 3);

    // Retried: the dead letter is gone and its row pending again.
    let retried = store.retry_dead_letter(a).await?.expect("known");
    assert_eq!(retried, *inbox_letter);
    assert_eq!(inbox_seq("$dead").await?, Some(dead_event));
    assert_eq!(store.retry_dead_letter(a).await?, None, "retried once");
    store.retry_dead_letter(b).await?.expect("known");
    assert_eq!(remote_seq().await?, Some(dead_remote));
    store.retry_dead_letter(c).await?.expect("known");
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as i64;
    let (row, due) = delivery().await?.expect("pending again");
    assert_eq!(row.attempts, 0);
    assert!(due <= before, "due now, not at its old backoff");
    assert!(store.dead_letters(10).await?.is_empty());
    assert_eq!(store.retry_dead_letter(123_456).await?, None);

    // Leave nothing pending for the rest of the suite.
    store.mark_processed(dead_event).await?;
    store
        .mark_processed(inbox_seq("$alive").await?.expect("pending"))
        .await?;
    store.mark_remote_processed(dead_remote).await?;
    store.outbox_done(row.seq).await?;
    Ok(())
}

/// A run of visitor messages is stored in one transaction: transcript, deliveries and the
/// processed marks, each row once, also past one multi-row statement's hundred rows.
async fn a_run_of_visitor_messages_is_stored_whole(store: &Store) -> anyhow::Result<()> {
    let ids: Vec<String> = (0..150).map(|i| format!("$run{i}")).collect();
    let rows: Vec<NewInboxEvent<'_>> = ids
        .iter()
        .map(|id| NewInboxEvent {
            event_id: id,
            room_id: "!run:x",
            event_json: "{}",
        })
        .collect();
    store.record_events("t-run", &rows).await?;
    let pending = store.pending_events_in_room("!run:x", 1000).await?;
    assert_eq!(pending.len(), 150);
    let mut batch = VisitorBatch::default();
    for (i, e) in pending.iter().enumerate() {
        batch.messages.push(message(
            &e.event_id,
            "!run:x",
            e.seq,
            SenderRole::Visitor,
            &format!("line {i}"),
        ));
        batch.deliveries.push(NewDelivery {
            room_id: "!run:x".into(),
            platform: "telegram".into(),
            address: "7009".into(),
            event_id: e.event_id.clone(),
            payload_json: format!("p{i}"),
        });
        batch.processed.push(e.seq);
    }
    store.record_visitor_batch(batch.clone()).await?;
    // Again, as after a crash before anything else moved: nothing doubles.
    store.record_visitor_batch(batch).await?;
    assert!(store.pending_events_in_room("!run:x", 10).await?.is_empty());
    let transcript = store.messages("!run:x").await?;
    assert_eq!(transcript.len(), 150);
    assert_eq!(transcript[149].body, "line 149");
    let queued = store.pending_outbox_to("telegram", "7009", 1000).await?;
    let payloads: Vec<String> = queued.into_iter().map(|(r, _)| r.payload_json).collect();
    assert_eq!(payloads.len(), 150);
    assert_eq!(payloads[0], "p0");
    assert_eq!(payloads[149], "p149");
    for (row, _) in store.pending_outbox_to("telegram", "7009", 1000).await? {
        store.outbox_done(row.seq).await?;
    }

    // Runs from many lanes at once are written in groups; each is stored whole, once.
    let rooms: Vec<String> = (0..12).map(|r| format!("!group{r}:x")).collect();
    let mut runs = Vec::new();
    for room in &rooms {
        let ids: Vec<String> = (0..7).map(|i| format!("${room}-{i}")).collect();
        let rows: Vec<NewInboxEvent<'_>> = ids
            .iter()
            .map(|id| NewInboxEvent {
                event_id: id,
                room_id: room,
                event_json: "{}",
            })
            .collect();
        store.record_events(&format!("t-{room}"), &rows).await?;
        let mut batch = VisitorBatch::default();
        for e in store.pending_events_in_room(room, 100).await? {
            batch.messages.push(message(
                &e.event_id,
                room,
                e.seq,
                SenderRole::Visitor,
                &e.event_id,
            ));
            batch.processed.push(e.seq);
        }
        runs.push(batch);
    }
    let writers: Vec<_> = runs
        .into_iter()
        .map(|batch| {
            let store = store.clone();
            tokio::spawn(async move { store.record_visitor_batch(batch).await })
        })
        .collect();
    for w in writers {
        w.await??;
    }
    for room in &rooms {
        assert!(
            store.pending_events_in_room(room, 10).await?.is_empty(),
            "{room}"
        );
        let transcript = store.messages(room).await?;
        assert_eq!(transcript.len(), 7, "{room}");
        assert_eq!(transcript[6].body, format!("${room}-6"));
    }
    Ok(())
}

/// Every timestamp the store writes is its clock's, and every "is it due yet" it answers is
/// judged by that clock: moving a manual clock changes the answers, with no sleep. The time
/// is years away from the system's, so a timestamp taken from the system could not pass.
async fn time_is_read_from_the_clock_the_store_was_given(store: &Store) -> anyhow::Result<()> {
    const T0: i64 = 2_000_000_000_000;
    let clock = ManualClock::new(T0);
    let store = store.clone().with_clock(clock.clone());
    let room = "!clock:x";
    store
        .insert_conversation(&conversation(room, "@clock:x", "support", T0))
        .await?;

    // Written at the clock's time: an offer, a room post, a delivery.
    let offer = store
        .create_offer(room, "clockwise", "telegram", "77")
        .await?;
    let made_at = |open: Vec<(OfferRow, String, i64)>| {
        open.into_iter()
            .find(|(o, _, _)| o.id == offer.id)
            .map(|(_, _, created)| created)
    };
    assert_eq!(made_at(store.open_offers_before(T0 + 1).await?), Some(T0));
    assert_eq!(
        made_at(store.open_offers_before(T0).await?),
        None,
        "not made before its own time"
    );
    assert!(store.enqueue_room_post(room, "clock-1", "{}").await?);
    let post = store
        .pending_room_posts_in(room)
        .await?
        .into_iter()
        .next()
        .expect("queued");
    assert_eq!(
        post.next_attempt_at, T0,
        "due at once, by the store's clock"
    );
    store
        .enqueue_outbox(room, "telegram", "clock-chat", "$clock", "{}")
        .await?;
    let (delivery, due) = store
        .pending_outbox_to("telegram", "clock-chat", 10)
        .await?
        .pop()
        .expect("queued");
    assert_eq!(due, T0);
    // Made due "now" again after a backoff: the clock's now, not the system's.
    store
        .room_post_retry_at(post.seq, T0 + 60_000, "busy")
        .await?;
    clock.advance(Duration::from_secs(5));
    assert_eq!(store.retry_room_posts_now().await?, 1);
    let post = store
        .pending_room_posts_in(room)
        .await?
        .into_iter()
        .next()
        .expect("still queued");
    assert_eq!(post.next_attempt_at, T0 + 5_000);

    // A link code lasts its 24 hours by this clock: still good a millisecond before, gone at.
    clock.set(T0);
    store
        .create_link_code("CLOCK-EARLY", "clockwise", "telegram")
        .await?;
    store
        .create_link_code("CLOCK-LATE", "clockwise", "telegram")
        .await?;
    clock.advance(Duration::from_millis(LINK_CODE_TTL_MS as u64 - 1));
    assert_eq!(
        store
            .redeem_link_code("CLOCK-EARLY", "telegram", "77")
            .await?
            .as_deref(),
        Some("clockwise")
    );
    clock.advance(Duration::from_millis(1));
    assert_eq!(
        store
            .redeem_link_code("CLOCK-LATE", "telegram", "78")
            .await?,
        None,
        "expired once the clock moved past its day"
    );

    // Leave nothing open or queued for the rest of the suite.
    store
        .transition_offer(offer.id, "open", "withdrawn")
        .await?;
    store.room_post_done(post.seq).await?;
    store.outbox_done(delivery.seq).await?;
    store
        .set_conversation_state(room, ConversationState::Closed)
        .await?;
    Ok(())
}

/// Telegram chat 42's open conversation answered in `thread`, by room.
async fn in_thread(store: &Store, thread: &str) -> anyhow::Result<Option<String>> {
    Ok(store
        .open_initiator_conversation_in("telegram", "42", thread)
        .await?
        .map(|c| c.room_id))
}

async fn initiators_are_found_by_address_counted_by_key_and_blocked(
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

async fn suite(store: Store) -> anyhow::Result<()> {
    room_posts_queue_once_and_wait_out_their_retries(&store).await?;
    provisional_transcript_entries_become_their_event(&store).await?;
    a_remote_post_is_queued_mapped_and_transcribed_once(&store).await?;
    changed_messages_are_found_and_kept_in_step(&store).await?;
    connector_state_is_kept_per_platform_and_taken_once(&store).await?;
    link_codes_work_once_and_move_a_responder(&store).await?;
    remote_events_are_recorded_once_per_platform_key(&store).await?;
    exactly_one_claim_wins_and_offers_move_once(&store).await?;
    offers_per_contact_and_the_lifecycle(&store).await?;
    assignments_mapping_and_outbox_keep_order(&store).await?;
    a_split_delivery_resumes_at_its_first_unsent_part(&store).await?;
    inbox_dedups_by_event_id_and_keeps_arrival_order(&store).await?;
    conversations_are_keyed_by_room_and_resumable(&store).await?;
    a_conversation_is_read_with_its_holders(&store).await?;
    transcript_records_each_message_once_in_inbox_order(&store).await?;
    visitor_sessions_resolve_until_they_expire(&store).await?;
    a_run_of_visitor_messages_is_stored_whole(&store).await?;
    initiators_are_found_by_address_counted_by_key_and_blocked(&store).await?;
    // Last: they leave queued rows behind.
    one_conversations_backlog_leaves_room_for_the_others(&store).await?;
    routing_reads_only_waiting_conversations(&store).await?;
    never_working_events_are_set_aside_and_can_be_retried(&store).await?;
    time_is_read_from_the_clock_the_store_was_given(&store).await?;
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn store_suite_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, url) = common::fresh_sqlite(dir.path()).await?;
    assert_eq!(store.engine(), Engine::Sqlite);
    suite(store).await?;
    // Reopening runs the migrations again, which must be a no-op, and the data is still there.
    let reopened = Store::connect(&url).await?;
    assert_eq!(reopened.count_inbox().await?, 489);
    Ok(())
}

#[tokio::test]
async fn store_suite_on_postgres() -> anyhow::Result<()> {
    let (store, url) = common::fresh_postgres("sbtest").await?;
    assert_eq!(store.engine(), Engine::Postgres);
    suite(store).await?;
    let reopened = Store::connect(&url).await?;
    assert_eq!(reopened.count_inbox().await?, 489);
    reopened.close().await;
    Ok(())
}

#[tokio::test]
async fn unsupported_database_urls_are_refused_clearly() {
    let err = Store::connect("mysql://localhost/x")
        .await
        .err()
        .expect("must fail");
    assert!(
        err.to_string().contains("sqlite://PATH or postgres://"),
        "{err}"
    );
}
