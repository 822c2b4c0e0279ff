//! Offers: an unanswered one moves on, one expires exactly at its time-out, working hours in
//! the responder's zone, a decline, and offers closed by a new message where edits are not
//! possible.

use super::*;

#[tokio::test]
async fn an_offer_left_unanswered_moves_on_to_the_next_responder() -> anyhow::Result<()> {
    let w = world(Limits {
        offer_timeout_secs: 0,
        ..NO_LIMITS
    })
    .await?;
    assert_eq!(w.state().await?, ConversationState::Offered);
    assert_eq!(w.tg.offers_to("1").len(), 1);
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert!(
        w.tg.calls()
            .contains(&"close 1: This offer expired.".to_owned()),
        "{:?}",
        w.tg.calls()
    );
    let to_ben = w.tg.offers_to("2");
    assert_eq!(to_ben.len(), 1);
    let summary = to_ben[0].summary.clone().unwrap_or_default();
    assert!(
        summary.contains("Offered before to: Ann (no answer in time)."),
        "{summary}"
    );
    assert_eq!(w.state().await?, ConversationState::Offered);
    // Ben lets it lapse too: nobody is left, so it is queued and the visitor is told.
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert_eq!(w.state().await?, ConversationState::Queued);
    let last = w.hs.states().last().cloned().unwrap_or_default();
    assert_eq!(last["nobody_available"], true);
    assert!(
        w.hs.sent_bodies()
            .contains(&"Nobody is available right now.".to_owned())
    );
    // Looking again changes nothing and publishes nothing new.
    let published = w.hs.states().len();
    w.bridge.expire_offers().await?;
    w.settle().await?;
    w.bridge.drain_queue().await?;
    w.settle().await?;
    assert_eq!(w.hs.states().len(), published);
    Ok(())
}

/// The offer's time-out is the row's time and the clock's: a millisecond before it nothing
/// moves, at it the offer is withdrawn and the next responder asked. Nobody waits two minutes.
#[tokio::test]
async fn an_offer_expires_exactly_when_the_clock_reaches_its_time_out() -> anyhow::Result<()> {
    let w = world(Limits {
        offer_timeout_secs: 120,
        ..NO_LIMITS
    })
    .await?;
    assert_eq!(w.tg.offers_to("1").len(), 1, "Ann is asked at once");
    w.clock.advance(Duration::from_millis(120_000 - 1));
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert!(w.tg.calls().is_empty(), "{:?}", w.tg.calls());
    assert!(w.tg.offers_to("2").is_empty(), "Ben is not asked yet");
    assert_eq!(w.state().await?, ConversationState::Offered);

    w.clock.advance(Duration::from_millis(1));
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert_eq!(w.tg.calls(), ["close 1: This offer expired."]);
    assert_eq!(w.tg.offers_to("2").len(), 1, "Ben is asked now");
    let ann = w
        .store()
        .offers_for_room(ROOM)
        .await?
        .into_iter()
        .find(|o| o.address == "1")
        .expect("Ann's offer");
    assert_eq!(ann.state, "expired");
    Ok(())
}

/// Working hours are judged at the clock's time, in the responder's own zone: Ann works
/// from 09:00 in Berlin, so a visitor writing at 08:30 there waits, and is offered to her
/// when the clock reaches nine, not a minute before.
#[tokio::test]
async fn working_hours_are_judged_at_the_clocks_time_in_the_responders_zone() -> anyhow::Result<()>
{
    let mut ann = responder("ann", "1", &["support"]);
    ann.timezone = "Europe/Berlin".into();
    ann.hours = [("wed".to_owned(), vec!["09:00-17:00".to_owned()])].into();
    // The world starts at 06:30 UTC, 08:30 in Berlin; the visitor has written.
    let w = world_of(NO_LIMITS, vec![ann]).await?;
    assert!(w.tg.offers_to("1").is_empty(), "not before her hours");
    assert_eq!(w.state().await?, ConversationState::Queued);
    assert!(
        w.hs.sent_bodies()
            .contains(&"Nobody is available right now.".to_owned())
    );

    w.clock.advance(Duration::from_secs(29 * 60)); // 08:59 in Berlin
    w.bridge.drain_queue().await?;
    w.settle().await?;
    assert!(w.tg.offers_to("1").is_empty(), "08:59 is still before nine");

    w.clock.advance(Duration::from_secs(60)); // 09:00 in Berlin
    w.bridge.drain_queue().await?;
    w.settle().await?;
    assert_eq!(w.tg.offers_to("1").len(), 1, "offered at nine");
    assert_eq!(w.state().await?, ConversationState::Offered);
    Ok(())
}

#[tokio::test]
async fn a_decline_moves_on_at_once() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    let offer_id = w.open_offer_of("1").await?;
    w.remote(
        "decline",
        RemoteEvent::Decline {
            offer_id,
            address: "1".into(),
        },
    )
    .await?;
    assert!(
        w.tg.calls()
            .contains(&"close 1: You declined this conversation.".to_owned())
    );
    let summary = w.tg.offers_to("2")[0].summary.clone().unwrap_or_default();
    assert!(summary.contains("Ann (declined)"), "{summary}");
    Ok(())
}

/// On a platform that declares no edits, an offer cannot change once sent: closing it says
/// why in a new message naming the conversation, and an accepted offer is answered by the
/// notice alone, never by an edit the platform would refuse.
#[tokio::test]
async fn offers_on_a_platform_without_edits_are_closed_by_a_new_message() -> anyhow::Result<()> {
    let w = world(Limits {
        offer_timeout_secs: 120,
        ..NO_LIMITS
    })
    .await?;
    w.tg.declare(Capabilities {
        edits: false,
        ..RecordingConnector::STANDARD
    });
    w.clock.advance(Duration::from_secs(120));
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert_eq!(
        w.tg.calls(),
        ["notify 1: The offer of Visitor 00AB (support): This offer expired."]
    );
    w.accept("2", "Ben").await?;
    assert_eq!(w.state().await?, ConversationState::Active);
    let to_ben: Vec<String> =
        w.tg.calls()
            .into_iter()
            .filter(|c| c.contains(" 2: "))
            .collect();
    assert_eq!(
        to_ben,
        [
            "notify 2: You are now talking with Visitor 00AB. Reply to their messages to answer; /end closes the conversation."
        ]
    );
    Ok(())
}
