//! What goes out: the outbox in order, a split delivery resuming at its first unsent part, and
//! the queue of posts into rooms.

use super::*;

pub(super) async fn assignments_mapping_and_outbox_keep_order(store: &Store) -> anyhow::Result<()> {
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

async fn pending(store: &Store, event_id: &str) -> anyhow::Result<OutboxRow> {
    store
        .pending_outbox(10)
        .await?
        .into_iter()
        .map(|(row, _)| row)
        .find(|row| row.event_id == event_id)
        .ok_or_else(|| anyhow::anyhow!("no pending outbox row for {event_id}"))
}

pub(super) async fn a_split_delivery_resumes_at_its_first_unsent_part(
    store: &Store,
) -> anyhow::Result<()> {
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

pub(super) async fn room_posts_queue_once_and_wait_out_their_retries(
    store: &Store,
) -> anyhow::Result<()> {
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
pub(super) async fn a_remote_post_is_queued_mapped_and_transcribed_once(
    store: &Store,
) -> anyhow::Result<()> {
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
