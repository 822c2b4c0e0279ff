//! The inbox and the platforms' events: each recorded once, in arrival order; one conversation's
//! backlog leaves room for the others; events that can never work are set aside and retried.

use super::*;

pub(super) async fn inbox_dedups_by_event_id_and_keeps_arrival_order(
    store: &Store,
) -> anyhow::Result<()> {
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

pub(super) async fn remote_events_are_recorded_once_per_platform_key(
    store: &Store,
) -> anyhow::Result<()> {
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

pub(super) async fn one_conversations_backlog_leaves_room_for_the_others(
    store: &Store,
) -> anyhow::Result<()> {
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

pub(super) async fn never_working_events_are_set_aside_and_can_be_retried(
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
