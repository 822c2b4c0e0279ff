//! A Matrix responder's relay room: writing in one no longer theirs, joining it to accept,
//! and notices held while the homeserver is down.

use super::*;

/// A Matrix responder who writes in their relay room after the conversation stopped being
/// theirs (ended, or handed to a colleague) gets a clear answer there, and nothing of it
/// reaches the visitor.
#[tokio::test]
async fn writing_in_a_relay_room_no_longer_yours_gets_a_clear_answer() -> anyhow::Result<()> {
    const RELAY: &str = "!relay:test";
    const MARA: &str = "@mara:test";
    let w = world(NO_LIMITS).await?;
    let offer = w.store().create_offer(ROOM, "mara", "matrix", MARA).await?;
    w.store().set_offer_message(offer.id, RELAY).await?;
    w.store()
        .transition_offer(offer.id, "open", "accepted")
        .await?;
    let event = json!({
        "type": "m.room.message", "event_id": "$late", "room_id": RELAY, "sender": MARA,
        "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "Still there?"},
    });
    let raw = Raw::from_json(serde_json::value::to_raw_value(&event)?);
    w.bridge.record_transaction("txn-late", vec![raw]).await?;
    // The Matrix connector reads it into a remote event, handled in the responder's lane.
    w.bridge.drain_inbox().await?;
    w.bridge.drain_remote().await?;
    w.settle().await?;
    let sent: Vec<(String, Value)> =
        w.hs.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "PUT" && p.contains("/send/m.room.message/"))
            .map(|(_, p, b)| (p.clone(), b.clone()))
            .collect();
    let answers: Vec<&str> = sent
        .iter()
        .filter(|(p, _)| p.contains("relay"))
        .filter_map(|(_, b)| b["body"].as_str())
        .collect();
    assert_eq!(answers.len(), 1, "{sent:#?}");
    assert!(answers[0].contains("no longer yours"), "{answers:?}");
    assert!(
        !sent
            .iter()
            .any(|(_, b)| b["body"].as_str() == Some("Still there?")),
        "the late message reached the visitor: {sent:#?}"
    );
    Ok(())
}

/// A Matrix responder accepts by joining their relay room: the Matrix connector reads the join
/// into an Accept that is handled like Telegram's (in their lane, under the conversation's
/// lock), so they hold the conversation; a join the homeserver delivers again (another
/// transaction, after a restart) changes nothing; leaving afterwards does not decline.
#[tokio::test]
async fn joining_a_relay_room_accepts_once_however_often_the_join_arrives() -> anyhow::Result<()> {
    const RELAY: &str = "!relay:test";
    const MARA: &str = "@mara:test";
    let w = world(NO_LIMITS).await?;
    let offer = w.store().create_offer(ROOM, "ann", "matrix", MARA).await?;
    w.store().set_offer_message(offer.id, RELAY).await?;
    let member = |id: &str, membership: &str| {
        let event = json!({
            "type": "m.room.member", "event_id": id, "room_id": RELAY, "sender": MARA,
            "state_key": MARA, "origin_server_ts": 1,
            "content": {"membership": membership, "displayname": "Mara"},
        });
        Raw::from_json(serde_json::value::to_raw_value(&event).expect("JSON"))
    };
    for txn in ["txn-join", "txn-join-again"] {
        w.pushed(txn, vec![member("$join", "join")]).await?;
        w.settle().await?;
    }
    assert_eq!(w.state().await?, ConversationState::Active);
    let holders = w.store().active_assignments_for_room(ROOM).await?;
    assert_eq!(holders.len(), 1);
    assert_eq!(
        (holders[0].platform.as_str(), holders[0].address.as_str()),
        ("matrix", MARA)
    );
    let mut told: Vec<String> =
        w.hs.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "PUT" && p.contains("/send/m.room.message/"))
            .filter_map(|(_, _, b)| b["body"].as_str().map(str::to_owned))
            .filter(|b| b.starts_with("You are now talking with"))
            .collect();
    // The visitor is told once who they talk with, and Mara once in her relay room (with
    // Matrix's way of writing commands). Different rooms: in either order.
    told.sort();
    assert_eq!(
        told,
        [
            "You are now talking with Ann.",
            "You are now talking with Visitor 00AB. Reply to their messages to answer; !end closes the conversation.",
        ],
        "each told once"
    );

    w.pushed("txn-leave", vec![member("$leave", "leave")])
        .await?;
    assert_eq!(w.state().await?, ConversationState::Active, "not declined");
    Ok(())
}

/// What the bot tells a Matrix responder while the homeserver is down (here: that the
/// conversation they ended has ended, and the answer to a `!help` in their direct chat), and
/// their removal from the relay room, are kept until it is back, across a restart, and then
/// arrive once each, in order, every attempt under the same transaction ID. (They used to be
/// sent at once and dropped when the homeserver did not answer.)
#[tokio::test]
async fn a_matrix_responders_notices_while_the_homeserver_is_down_arrive_once_it_is_back()
-> anyhow::Result<()> {
    const RELAY: &str = "!relay:test";
    const DIRECT: &str = "!directchat:test";
    const MARA: &str = "@mara:test";
    let mut w = world(NO_LIMITS).await?;
    let offer = w.store().create_offer(ROOM, "ann", "matrix", MARA).await?;
    w.store().set_offer_message(offer.id, RELAY).await?;
    let event = |room: &str, id: &str, content: Value| {
        let (kind, key) = if content.get("membership").is_some() {
            ("m.room.member", Some(MARA))
        } else {
            ("m.room.message", None)
        };
        let mut event = json!({
            "type": kind, "event_id": id, "room_id": room, "sender": MARA,
            "origin_server_ts": 1, "content": content,
        });
        if let Some(key) = key {
            event["state_key"] = json!(key);
        }
        Raw::from_json(serde_json::value::to_raw_value(&event).expect("JSON"))
    };
    // Mara accepts by joining her relay room, while the homeserver is up.
    let join = json!({"membership": "join", "displayname": "Mara"});
    w.pushed("txn-join", vec![event(RELAY, "$join", join)])
        .await?;
    w.settle().await?;
    assert_eq!(w.state().await?, ConversationState::Active);

    // The homeserver goes away (it still pushed us what Mara wrote, as Synapse does from
    // its own queue while we cannot reach it). Mara ends the conversation and asks for help.
    w.hs.set_down(true);
    let text = |body: &str| json!({"msgtype": "m.text", "body": body});
    w.pushed(
        "txn-mara",
        vec![
            event(RELAY, "$end", text("!end")),
            event(DIRECT, "$help", text("!help")),
        ],
    )
    .await?;
    assert_eq!(w.state().await?, ConversationState::Closed);
    // Tried, refused, tried again later (past the backoff of every room's first post): the
    // second try first looks whether the first one was stored (its answer was a 502), and
    // that read is refused too.
    for _ in 0..2 {
        let wait = w.bridge.drain_room_posts().await?;
        assert!(wait.is_some(), "the refused posts wait for a retry");
        w.clock.advance(Duration::from_secs(2));
    }
    let refused = StubHomeserver::writes_into(&w.hs.refused, "relay");
    assert!(
        refused.iter().any(|(_, b)| b == "Conversation ended."),
        "the notice was tried while the homeserver was down: {refused:#?}"
    );
    let looked =
        w.hs.refused
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "GET" && p.contains("relay") && p.contains("/messages"))
            .count();
    assert!(looked >= 1, "the retry looked for the notice first");

    // The homeserver comes back, and Switchboard restarts (it starts once the homeserver
    // answers): the new process posts what the old one had queued.
    w.hs.set_down(false);
    w.restart().await?;
    w.clock.advance(Duration::from_secs(60));
    w.settle().await?;

    let relay = StubHomeserver::writes_into(&w.hs.requests, "relay");
    let bodies: Vec<&str> = relay.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "You are now talking with Visitor 00AB. Reply to their messages to answer; !end closes the conversation.",
            "Conversation ended.",
            "kick: Conversation ended.",
        ],
        "Mara is told once, then removed"
    );
    // Every attempt carried the transaction ID it finally went through with, so a lost
    // answer could not have shown it twice.
    let posted_as = &relay[1].0;
    assert!(
        refused
            .iter()
            .filter(|(_, b)| b == "Conversation ended.")
            .all(|(p, _)| p == posted_as),
        "{posted_as} vs {refused:#?}"
    );
    let direct = StubHomeserver::writes_into(&w.hs.requests, "directchat");
    assert_eq!(direct.len(), 1, "{direct:#?}");
    assert!(
        direct[0]
            .1
            .starts_with("Switchboard relays website visitors to you."),
        "{direct:#?}"
    );
    assert!(
        direct[0].1.contains("!end"),
        "Matrix's commands: {direct:#?}"
    );
    // The visitor's side too, once.
    let ended =
        w.hs.sent_bodies()
            .into_iter()
            .filter(|b| b == "The conversation has ended.")
            .count();
    assert_eq!(ended, 1);
    Ok(())
}
