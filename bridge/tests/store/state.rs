//! The connectors' own state, and time read from the clock the store was given.

use super::*;

pub(super) async fn connector_state_is_kept_per_platform_and_taken_once(
    store: &Store,
) -> anyhow::Result<()> {
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

/// Every timestamp the store writes is its clock's, and every "is it due yet" it answers is
/// judged by that clock: moving a manual clock changes the answers, with no sleep. The time
/// is years away from the system's, so a timestamp taken from the system could not pass.
pub(super) async fn time_is_read_from_the_clock_the_store_was_given(
    store: &Store,
) -> anyhow::Result<()> {
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
