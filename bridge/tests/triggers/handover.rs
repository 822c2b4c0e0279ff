//! Hand-over triggers: no first reply, silence while the visitor waits, going offline, an
//! unreachable platform, a bounce, and transfers.

use super::*;

#[tokio::test]
async fn no_first_reply_in_time_hands_over() -> anyhow::Result<()> {
    let w = world(Limits {
        first_reply_timeout_secs: Some(0),
        ..NO_LIMITS
    })
    .await?;
    w.ann_holds_it().await?;
    w.clock.advance(Duration::from_millis(5)); // past a limit of zero
    w.bridge.watch_responders().await?;
    w.settle().await?;
    w.handed_to_ben_because("no first reply in time").await?;
    assert!(
        w.tg.calls().iter().any(|c| c.starts_with("notify 1: The conversation with this visitor was handed to a colleague: no first reply in time")),
        "{:?}",
        w.tg.calls()
    );
    Ok(())
}

#[tokio::test]
async fn silence_while_the_visitor_waits_hands_over() -> anyhow::Result<()> {
    let w = world(Limits {
        idle_limit_secs: Some(0),
        ..NO_LIMITS
    })
    .await?;
    w.ann_holds_it().await?;
    // Ann answered (her ghost's message comes back from the homeserver), then the visitor
    // wrote again and Ann stays silent.
    w.room_event("@_sb_ann:test", "$r1", "Let me check.")
        .await?;
    w.drain_outbox().await?;
    w.clock.advance(Duration::from_millis(5));
    w.bridge.watch_responders().await?;
    w.settle().await?;
    assert_eq!(
        w.state().await?,
        ConversationState::Active,
        "nobody waits while the responder spoke last"
    );
    w.clock.advance(Duration::from_millis(5));
    w.room_event(VISITOR, "$v2", "Hello?").await?;
    w.drain_outbox().await?;
    w.clock.advance(Duration::from_millis(5));
    w.bridge.watch_responders().await?;
    w.settle().await?;
    w.handed_to_ben_because("silent while the visitor waited")
        .await?;
    Ok(())
}

#[tokio::test]
async fn going_offline_hands_over() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    w.bridge.watch_responders().await?;
    w.settle().await?;
    assert_eq!(w.state().await?, ConversationState::Active);
    w.store()
        .set_responder_status("ann", ResponderStatus::Offline)
        .await?;
    w.bridge.watch_responders().await?;
    w.settle().await?;
    w.handed_to_ben_because("they went offline").await?;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_platform_hands_over() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    w.tg.unreachable.store(true, Ordering::SeqCst);
    w.room_event(VISITOR, "$v2", "Are you there?").await?;
    w.drain_outbox().await?;
    w.handed_to_ben_because("their platform could not be reached")
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_bounce_of_a_held_conversation_hands_it_over_and_of_an_offer_declines_it()
-> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    let handle = w
        .store()
        .offers_for_room(ROOM)
        .await?
        .into_iter()
        .find(|o| o.address == "1")
        .and_then(|o| o.remote_message_id)
        .expect("Ann's offer has a handle");
    // About a conversation that is not Ann's to lose: nothing happens, nobody is told.
    w.remote(
        "bounce-0",
        RemoteEvent::Unreachable {
            address: "2".into(),
            thread: Some(handle.clone()),
            reason: "the mail bounced (5.1.1)".into(),
        },
    )
    .await?;
    assert_eq!(w.state().await?, ConversationState::Active);
    w.remote(
        "bounce-1",
        RemoteEvent::Unreachable {
            address: "1".into(),
            thread: Some(handle),
            reason: "the mail bounced (5.1.1)".into(),
        },
    )
    .await?;
    w.handed_to_ben_because("their address could not be reached")
        .await?;
    // Ben's offer bounces too: it counts as declined, and nobody else answers support.
    let to_ben = w
        .store()
        .offers_for_room(ROOM)
        .await?
        .into_iter()
        .find(|o| o.address == "2")
        .expect("Ben's offer");
    w.remote(
        "bounce-2",
        RemoteEvent::Unreachable {
            address: "2".into(),
            thread: to_ben.remote_message_id.clone(),
            reason: "the mail bounced (5.1.1)".into(),
        },
    )
    .await?;
    let state = w
        .store()
        .offers_for_room(ROOM)
        .await?
        .into_iter()
        .find(|o| o.id == to_ben.id)
        .expect("Ben's offer")
        .state;
    assert_eq!(state, "declined");
    Ok(())
}

#[tokio::test]
async fn transfer_to_anyone_to_a_topic_and_end() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    w.command("1", "transfer", "").await?;
    w.handed_to_ben_because("transfer requested").await?;

    // Ben takes it and sends it on to billing: only Cleo answers billing.
    w.accept("2", "Ben").await?;
    w.command("2", "transfer", "billing").await?;
    assert_eq!(w.state().await?, ConversationState::Transferring);
    let to_cleo = w.tg.offers_to("3");
    assert_eq!(to_cleo.len(), 1);
    assert_eq!(to_cleo[0].topic_name, "billing");
    assert!(
        to_cleo[0].summary.as_deref().unwrap_or_default().contains(
            "Ben handed this conversation over (transfer to the topic billing requested)"
        )
    );
    assert_eq!(
        w.store().conversation(ROOM).await?.unwrap().topic,
        "billing"
    );

    // Cleo takes it and ends it.
    w.accept("3", "Cleo").await?;
    assert_eq!(w.hs.states().last().unwrap()["transfers"], 2);
    assert_eq!(w.hs.states().last().unwrap()["responder"], "Cleo");
    w.command("3", "end", "").await?;
    assert_eq!(w.state().await?, ConversationState::Closed);
    assert_eq!(
        w.holders().await?,
        [
            ("ann".to_owned(), "transferred".to_owned()),
            ("ben".to_owned(), "transferred".to_owned()),
            ("cleo".to_owned(), "ended".to_owned()),
        ]
    );
    // Who held it, and why each one stopped, is kept.
    let history: Vec<(String, Option<String>, bool)> = w
        .store()
        .assignment_history(ROOM)
        .await?
        .into_iter()
        .map(|h| {
            (
                h.assignment.responder_id,
                h.end_reason,
                h.ended_at.is_some_and(|end| end >= h.started_at),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (
                "ann".to_owned(),
                Some("transfer requested".to_owned()),
                true
            ),
            (
                "ben".to_owned(),
                Some("transfer to the topic billing requested".to_owned()),
                true
            ),
            (
                "cleo".to_owned(),
                Some("ended by the responder".to_owned()),
                true
            ),
        ]
    );
    let states: Vec<String> =
        w.hs.states()
            .iter()
            .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
            .collect();
    assert_eq!(
        states,
        [
            "offered",
            "active",
            "transferring",
            "active",
            "transferring",
            "active",
            "closed"
        ]
    );
    Ok(())
}
