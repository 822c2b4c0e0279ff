//! The transcript: each message once in inbox order, a visitor's run stored whole, provisional
//! entries that become their event, and changed messages kept in step.

use super::*;

pub(super) async fn transcript_records_each_message_once_in_inbox_order(
    store: &Store,
) -> anyhow::Result<()> {
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

pub(super) async fn provisional_transcript_entries_become_their_event(
    store: &Store,
) -> anyhow::Result<()> {
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

pub(super) async fn changed_messages_are_found_and_kept_in_step(
    store: &Store,
) -> anyhow::Result<()> {
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

/// A run of visitor messages is stored in one transaction: transcript, deliveries and the
/// processed marks, each row once, also past one multi-row statement's hundred rows.
pub(super) async fn a_run_of_visitor_messages_is_stored_whole(store: &Store) -> anyhow::Result<()> {
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
