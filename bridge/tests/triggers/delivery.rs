//! What crosses between the visitor and the responder, and how: the batch window, a
//! rate-limited part, files within and beyond what a platform takes, and a responder's
//! formatting reaching the room within the spec's allow-list.

use super::*;

#[tokio::test]
async fn lines_written_within_the_batch_window_go_out_as_one_message() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.tg.declare(Capabilities {
        batch_window: Duration::from_secs(5),
        ..RecordingConnector::STANDARD
    });
    w.ann_holds_it().await?;
    let sent = |w: &World| -> Vec<String> {
        w.tg.calls()
            .into_iter()
            .filter(|c| c.starts_with("deliver ") || c.starts_with("batch "))
            .collect()
    };
    let before = sent(&w);
    for (id, text) in [("$v2", "one"), ("$v3", "two"), ("$v4", "three")] {
        w.room_event(VISITOR, id, text).await?;
        w.clock.advance(Duration::from_secs(1));
    }
    // Not before the window of the first has passed.
    assert!(w.bridge.drain_outbox().await?.is_some());
    assert_eq!(sent(&w), before, "nothing goes out within the window");
    w.clock.advance(Duration::from_secs(3));
    w.bridge.drain_outbox().await?;
    let after: Vec<String> = sent(&w).into_iter().skip(before.len()).collect();
    assert_eq!(after, ["batch 1: one / two / three"]);
    assert!(w.store().pending_outbox(10).await?.is_empty());
    // Each line's event is done; a reply to the message finds the conversation.
    let id = format!("message-{}", w.tg.next_id.load(Ordering::SeqCst) - 1);
    assert_eq!(
        w.store()
            .room_of_remote_message("telegram", "1", &id)
            .await?
            .as_deref(),
        Some(ROOM)
    );
    Ok(())
}

#[tokio::test]
async fn a_rate_limited_part_is_retried_alone_and_the_rest_follows_in_order() -> anyhow::Result<()>
{
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    *w.tg.rate_limit_part.lock().unwrap() = Some(("three".into(), Duration::from_millis(50)));
    w.room_event(VISITOR, "$v2", "one | two | three | four | five")
        .await?;
    w.room_event(VISITOR, "$v3", "next").await?;
    w.drain_outbox().await?;
    let relayed: Vec<String> =
        w.tg.calls()
            .into_iter()
            .filter(|c| c.starts_with("deliver ") || c.starts_with("429 "))
            .collect();
    assert_eq!(
        relayed,
        [
            "deliver 1: one",
            "deliver 1: two",
            "429 1: three",
            "deliver 1: three",
            "deliver 1: four",
            "deliver 1: five",
            "deliver 1: next",
        ],
        "each part once, in order, the next message after the last part"
    );
    // Every part is mapped, so a reply to any of them finds the conversation.
    for id in 1..=6 {
        assert_eq!(
            w.store()
                .room_of_remote_message("telegram", "1", &format!("message-{id}"))
                .await?
                .as_deref(),
            Some(ROOM),
            "message-{id}"
        );
    }
    assert!(w.store().pending_outbox(10).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_file_sent_before_the_accept_reaches_the_responder_as_a_file() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.room_content(
        VISITOR,
        "$img",
        json!({"msgtype": "m.image", "body": "leak.jpg", "url": "mxc://test/leak",
               "info": {"mimetype": "image/jpeg"}}),
    )
    .await?;
    w.room_event(VISITOR, "$v3", "See the photo.").await?;
    w.ann_holds_it().await?;
    w.drain_outbox().await?;
    let delivered: Vec<String> =
        w.tg.calls()
            .into_iter()
            .filter(|c| c.starts_with("deliver ") || c.starts_with("file "))
            .collect();
    // The first message was quoted in the offer; the photo follows as a photo, in order.
    assert_eq!(delivered, ["file 1: leak.jpg", "deliver 1: See the photo."]);
    Ok(())
}

/// A visitor's file larger than the responder's platform declares it takes is not uploaded
/// (to be refused, retried, or to make the responder look unreachable): the responder gets a
/// notice in its place, the visitor is told, and the conversation goes on with her.
#[tokio::test]
async fn a_file_larger_than_the_platform_takes_becomes_a_notice_both_ways() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    // The stub homeserver serves every download as two bytes (`{}`).
    w.tg.declare(Capabilities {
        files: Some(FileLimits { max_bytes: 1 }),
        ..RecordingConnector::STANDARD
    });
    w.room_content(
        VISITOR,
        "$big",
        json!({"msgtype": "m.file", "body": "manual.pdf", "url": "mxc://test/manual"}),
    )
    .await?;
    w.room_event(VISITOR, "$v3", "Page 4.").await?;
    w.ann_holds_it().await?;
    w.drain_outbox().await?;
    let to_ann: Vec<String> = w
        .tg
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("deliver ") || c.starts_with("file ") || c.contains("manual.pdf"))
        .collect();
    assert_eq!(
        to_ann,
        [
            "notify 1: Visitor 00AB sent a file, manual.pdf (2 bytes), larger than Telegram takes (1 byte); it was not passed on.",
            "deliver 1: Page 4.",
        ]
    );
    assert!(
        w.hs.sent_bodies().contains(
            &"Your file manual.pdf was not passed on: it is 2 bytes, more than the 1 byte the responder can receive."
                .to_owned()
        ),
        "{:?}",
        w.hs.sent_bodies()
    );
    assert_eq!(w.state().await?, ConversationState::Active, "Ann keeps it");
    assert!(w.store().pending_outbox(10).await?.is_empty());
    assert!(w.store().dead_letters(10).await?.is_empty());
    Ok(())
}

/// A platform that declares no files gets none: a notice in its place, and the visitor told.
#[tokio::test]
async fn a_file_to_a_platform_without_files_becomes_a_notice_both_ways() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.tg.declare(Capabilities {
        files: None,
        ..RecordingConnector::STANDARD
    });
    w.ann_holds_it().await?;
    w.room_content(
        VISITOR,
        "$img",
        json!({"msgtype": "m.image", "body": "leak.jpg", "url": "mxc://test/leak"}),
    )
    .await?;
    w.drain_outbox().await?;
    let calls = w.tg.calls();
    assert!(
        calls.contains(
            &"notify 1: Visitor 00AB sent a file, leak.jpg, which cannot be sent on Telegram; it was not passed on."
                .to_owned()
        ),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.starts_with("file ")), "{calls:?}");
    assert!(
        w.hs.sent_bodies().iter().any(|b| b.starts_with(
            "Your file leak.jpg was not passed on: the responder cannot receive files here."
        )),
        "{:?}",
        w.hs.sent_bodies()
    );
    assert_eq!(w.state().await?, ConversationState::Active);
    Ok(())
}

#[tokio::test]
async fn a_responders_formatting_reaches_the_room_within_the_spec_allow_list() -> anyhow::Result<()>
{
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    let html = r#"<b>Hi</b> <img src="https://tracker.example/p.png" alt="pic"><script>x()</script><a href="javascript:x()" onclick="x()">here</a>"#;
    w.remote(
        "80.message",
        RemoteEvent::Message {
            address: "1".into(),
            message_id: "80".into(),
            reply_to: None,
            body: "Hi here".into(),
            formatted_body: Some(html.into()),
            display_name: "Ann".into(),
            file: None,
            thread: None,
            language: None,
        },
    )
    .await?;
    w.remote(
        "81.edit",
        RemoteEvent::Edit {
            address: "1".into(),
            message_id: "80".into(),
            body: "Hi there".into(),
            formatted_body: Some(html.replace("here", "there")),
        },
    )
    .await?;
    let sent: Vec<Value> =
        w.hs.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "PUT" && p.contains("/send/m.room.message/"))
            .map(|(_, _, body)| body.clone())
            .filter(|body| body["body"].as_str().is_some_and(|b| b.contains("Hi ")))
            .collect();
    assert_eq!(sent.len(), 2, "the message and its edit: {sent:?}");
    let message = sent[0]["formatted_body"].as_str().unwrap_or_default();
    assert_eq!(message, r#"<b>Hi</b> <img alt="pic"><a>here</a>"#);
    let edit = sent[1]["m.new_content"]["formatted_body"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(edit, r#"<b>Hi</b> <img alt="pic"><a>there</a>"#);
    Ok(())
}
