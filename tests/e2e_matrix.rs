//! The walking skeleton, end to end on a real Synapse: a visitor (doing what the widget does)
//! starts a conversation, a Matrix responder (a real matrix-sdk client) answers, and
//! Switchboard survives replays, bad tokens and a hard restart without losing or doubling
//! anything.

mod common;

use anyhow::Context;
use common::*;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use serde_json::json;
use switchboard_bridge::conversation::SenderRole;

const SLOT: u32 = 0;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_and_matrix_responder_talk_through_a_conversation_room() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let responder_local = unique("resp");
    let responder_id = env.user_id(&responder_local);
    let mut responder = MatrixResponder::register(&env, &responder_local).await?;

    let mut sb = Switchboard::start(
        &env,
        &slot,
        &format!(
            "[visitors]\nconversations_per_minute = 1\nburst = 6\n\n\
             [[topics]]\nid = \"support\"\nname = \"General support\"\n\n\
             [[responders]]\nid = \"resp\"\ndisplay_name = \"Rae\"\ntopics = [\"support\"]\n\
             contacts = [{{ platform = \"matrix\", address = {responder_id:?} }}]\n"
        ),
    )
    .await?;

    // The widget's first call: where is the homeserver, which topics are there.
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let config = visitor.config().await?;
    assert_eq!(config["homeserver_url"], env.hs_url);
    assert_eq!(
        config["topics"],
        json!([{"id": "support", "name": "General support"}])
    );

    // Unknown topics and missing tokens are refused with a readable error.
    let (status, body) = visitor
        .request_conversation("nope", Some(&visitor.token.clone()))
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM")),
        "{body}"
    );
    let (status, body) = visitor.request_conversation("support", None).await?;
    assert_eq!(status, 401, "{body}");

    // --- the conversation is a room, and the responder is offered it ---------------------------
    let room = visitor.start("support").await?;
    assert!(
        room.starts_with('!'),
        "conversation ID {room} is not a room ID"
    );
    let store = sb.store().await?;
    let stored = store
        .conversation(&room)
        .await?
        .context("conversation not stored under its room ID")?;
    assert_eq!(stored.topic, "support");
    // Starting again (a double click, a reload) resumes the same conversation.
    let (status, again) = visitor
        .request_conversation("support", Some(&visitor.token.clone()))
        .await?;
    assert_eq!(
        (status, again["conversation_id"].as_str()),
        (201, Some(room.as_str()))
    );

    let mut sent = Vec::new();
    for text in ["hello 1", "hello 2", "hello 3"] {
        sent.push(visitor.send(text).await?);
    }
    // The responder is offered the conversation in a relay room of their own, never the
    // visitor's room: the invite carries the topic and the visitor's alias.
    let alias = stored.visitor_alias.clone();
    let relay = relay_room_of(&store, &room, "resp").await?;
    let bot = format!("@sbt{SLOT}bot:{}", env.server_name);
    let joined = responder.accept_invite(&relay).await?;
    assert_eq!(
        joined.name().as_deref(),
        Some(format!("General support · {alias}").as_str()),
        "the invite should carry the topic and the alias"
    );
    responder.wait_for_text(&relay, &bot, "> hello 1").await?;
    let (h2, h3) = (format!("{alias}: hello 2"), format!("{alias}: hello 3"));
    responder
        .wait_for_messages(&relay, &bot, &[&h2, &h3])
        .await?;
    let relayed: Vec<String> = responder
        .bodies(&relay, &bot)
        .into_iter()
        .filter(|b| b.starts_with(&alias))
        .collect();
    assert_eq!(relayed, [h2.clone(), h3.clone()], "visitor→responder order");
    // The visitor corrects a message: the responder's client gets it replaced in place
    // (`m.replace`, whose fallback body starts "* "), not a second message.
    visitor.edit(&sent[2], "hello 3, corrected").await?;
    let corrected = format!("* {alias}: hello 3, corrected");
    responder
        .wait_for_messages(&relay, &bot, &[&corrected])
        .await?;
    assert!(
        !responder
            .bodies(&relay, &bot)
            .iter()
            .any(|b| b.contains("(edited)")),
        "an edit must replace the message, not follow it"
    );

    // --- responder → visitor, live, in order -----------------------------------------------------
    for text in ["reply 1", "reply 2"] {
        joined
            .send(RoomMessageEventContent::text_plain(text))
            .await?;
    }
    visitor
        .sync_until("both replies", |seen| {
            seen.iter().filter(|s| s.body.starts_with("reply")).count() == 2
        })
        .await?;
    // The visitor sees the responder's ghost, never their own account.
    let ghost = format!("@_sbt{SLOT}_resp:{}", env.server_name);
    assert_eq!(
        visitor.bodies_from(&ghost),
        ["reply 1", "reply 2"],
        "responder→visitor order"
    );
    assert!(
        visitor.bodies_from(&responder_id).is_empty(),
        "the responder's own account appeared in the visitor's room"
    );
    // The homeserver sent the bot's relayed posts back to us before the replies: those echoes
    // were acknowledged without being recorded (they need nothing), while the relay room's
    // other events, the responder's join and replies among them, were recorded and handled.
    let db = sqlx::SqlitePool::connect(&sb.db_url).await?;
    let relay_rows: Vec<(String, Option<i64>)> =
        sqlx::query_as("SELECT event_json, processed_at FROM inbox WHERE room_id = ?1")
            .bind(&relay)
            .fetch_all(&db)
            .await?;
    db.close().await;
    let echoes = relay_rows
        .iter()
        .filter_map(|(json, _)| serde_json::from_str::<serde_json::Value>(json).ok())
        .filter(|e| {
            e["sender"] == bot.as_str()
                && e["content"]["body"]
                    .as_str()
                    .is_some_and(|b| b.contains("hello 2") || b.contains("hello 3"))
        })
        .count();
    assert_eq!(echoes, 0, "an echo of a relayed post was recorded");
    assert!(
        relay_rows
            .iter()
            .filter(|(json, _)| json.contains(&responder_id))
            .count()
            >= 3,
        "the responder's join and two replies should be recorded: {relay_rows:?}"
    );
    assert!(relay_rows.iter().all(|(_, done)| done.is_some()));
    assert!(
        visitor
            .seen
            .iter()
            .any(|s| s.msgtype == "m.notice" && s.body.contains("General support")),
        "the visitor should see the welcome notice: {:?}",
        visitor.seen
    );
    wait_for("the conversation to become active", || async {
        Ok(
            (store.conversation(&room).await?.map(|c| c.state.as_str()) == Some("active"))
                .then_some(()),
        )
    })
    .await?;

    // --- another visitor cannot get into this conversation ---------------------------------------
    let intruder = Visitor::guest(&env, &sb.base).await?;
    let (status, body) = intruder.join(&room).await?;
    assert_eq!(
        status, 403,
        "a second visitor joined the first visitor's room: {body}"
    );
    let (status, _) = intruder
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b",
            urlencode(&room)
        ))
        .await?;
    assert_eq!(
        status, 403,
        "a second visitor could read the first visitor's room"
    );

    // --- the homeserver's endpoints refuse wrong tokens and malformed bodies ---------------------
    let valid_empty = r#"{"events": []}"#;
    let (status, body) =
        push_transaction(&sb.base, "t-bad", Some("not-the-hs-token"), valid_empty).await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (403, Some("M_FORBIDDEN"))
    );
    // No token at all is a different mistake from a wrong one (the spec's M_MISSING_TOKEN),
    // on every endpoint the homeserver calls.
    let (status, body) = push_transaction(&sb.base, "t-none", None, valid_empty).await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );
    let http = reqwest::Client::new();
    for (method, path) in [
        (
            reqwest::Method::GET,
            "/_matrix/app/v1/users/@nobody:localhost",
        ),
        (
            reqwest::Method::GET,
            "/_matrix/app/v1/rooms/%23nowhere:localhost",
        ),
        (reqwest::Method::POST, "/_matrix/app/v1/ping"),
    ] {
        let r = http
            .request(method.clone(), format!("{}{path}", sb.base))
            .json(&json!({}))
            .send()
            .await?;
        let status = r.status().as_u16();
        let body: serde_json::Value = r.json().await.unwrap_or_default();
        assert_eq!(
            (status, body["errcode"].as_str()),
            (401, Some("M_MISSING_TOKEN")),
            "{method} {path}"
        );
    }
    let (status, body) =
        push_transaction(&sb.base, "t-junk", Some(&slot.hs_token), "{not json").await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_NOT_JSON"))
    );
    let (status, body) = push_transaction(
        &sb.base,
        "t-shape",
        Some(&slot.hs_token),
        r#"{"events": 7}"#,
    )
    .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (400, Some("M_BAD_JSON"))
    );

    // --- a replayed transaction creates no duplicate ----------------------------------------------
    // Take a real event from the room and push it again, twice, under new transaction IDs (as
    // Synapse does when it reuses IDs after a restart), next to one event we cannot even index.
    let hello1 = visitor.seen_or_fetch_first(&room).await?;
    let replay =
        json!({"events": [{"type": "m.room.message", "content": {"body": "no ids"}}, hello1]})
            .to_string();
    for txn in ["replay-a", "replay-b", "replay-a"] {
        let (status, body) = push_transaction(&sb.base, txn, Some(&slot.hs_token), &replay).await?;
        assert_eq!(status, 200, "{body}");
    }
    let transcript = wait_for("the transcript", || async {
        let m = store.messages(&room).await?;
        Ok((m.iter().filter(|m| m.body.starts_with("reply")).count() == 2).then_some(m))
    })
    .await?;
    let hello1_count = transcript.iter().filter(|m| m.body == "hello 1").count();
    assert_eq!(
        hello1_count, 1,
        "a replayed event was recorded twice: {transcript:#?}"
    );

    // --- a hard restart in mid-conversation loses nothing ------------------------------------------
    sb.kill();
    for text in ["while down 1", "while down 2", "while down 3"] {
        visitor.send(text).await?;
    }
    sb.restart().await?;
    let down: Vec<String> = (1..=3)
        .map(|i| format!("{alias}: while down {i}"))
        .collect();
    let down: Vec<&str> = down.iter().map(String::as_str).collect();
    responder.wait_for_messages(&relay, &bot, &down).await?;
    joined
        .send(RoomMessageEventContent::text_plain("after restart"))
        .await?;
    visitor
        .sync_until("the reply after the restart", |seen| {
            seen.iter().any(|s| s.body == "after restart")
        })
        .await?;

    let transcript = wait_for("the messages sent while Switchboard was down", || async {
        let m = store.messages(&room).await?;
        Ok(m.iter().any(|m| m.body == "after restart").then_some(m))
    })
    .await?;
    // The transcript holds what the visitor said last: their correction replaced the text.
    let visitor_said: Vec<&str> = transcript
        .iter()
        .filter(|m| m.sender_role == SenderRole::Visitor)
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(
        visitor_said,
        [
            "hello 1",
            "hello 2",
            "hello 3, corrected",
            "while down 1",
            "while down 2",
            "while down 3"
        ],
        "the transcript lost, doubled or reordered visitor messages"
    );
    let responder_said: Vec<&str> = transcript
        .iter()
        .filter(|m| m.sender_role == SenderRole::Responder)
        .map(|m| m.body.as_str())
        .collect();
    assert_eq!(responder_said, ["reply 1", "reply 2", "after restart"]);
    // Nothing the responder's client ever received names the visitor.
    for body in responder.all_bodies() {
        assert!(
            !body.contains(&visitor.user_id),
            "the responder saw the visitor's Matrix ID: {body}"
        );
    }
    let mut ids: Vec<&str> = transcript.iter().map(|m| m.event_id.as_str()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(
        ids.len(),
        transcript.len(),
        "duplicate event IDs in the transcript"
    );

    // --- after a page reload the widget finds the whole conversation again -----------------------
    let mut reloaded = visitor.reloaded();
    reloaded
        .sync_until("the history after a reload", |seen| {
            seen.iter().any(|s| s.body == "after restart")
        })
        .await?;
    let history: Vec<&str> = reloaded
        .seen
        .iter()
        .filter(|s| s.msgtype == "m.text")
        .map(|s| s.body.as_str())
        .collect();
    assert_eq!(
        history,
        [
            "hello 1",
            "hello 2",
            "hello 3",
            "* hello 3, corrected", // the edit event, as /sync gives it
            "reply 1",
            "reply 2",
            "while down 1",
            "while down 2",
            "while down 3",
            "after restart"
        ]
    );

    // --- starting conversations is rate-limited per client address --------------------------------
    // The limiter lives in memory and started afresh with the restart above: the configured
    // burst of 6 passes (to be refused for the bogus token), the 7th is throttled.
    let mut limited = None;
    for attempt in 1..=10 {
        let (status, body) = visitor
            .request_conversation("support", Some("bogus"))
            .await?;
        if status == 429 {
            limited = Some((attempt, body));
            break;
        }
        assert_eq!(status, 401, "{body}");
    }
    let (attempt, body) = limited.context("never rate-limited")?;
    assert_eq!(
        attempt, 7,
        "the burst of 6 should pass and the 7th be throttled"
    );
    assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
    assert!(body["retry_after_ms"].as_u64().unwrap_or(0) > 0, "{body}");
    Ok(())
}

/// The spec caps an event at 65536 bytes. Synapse never sends a larger one, so the homeserver's
/// side is played here with raw transactions carrying events of a real conversation room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_over_64_kib_is_refused_alone_and_its_neighbours_are_kept() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    // Slot 1 belongs to tests/homeserver_client.rs, another binary; binaries run one at a time.
    let slot = Slot::load(&env, 1)?;
    let sb = Switchboard::start(
        &env,
        &slot,
        "[[topics]]\nid = \"support\"\nname = \"General support\"\n",
    )
    .await?;
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    let store = sb.store().await?;

    let event = |id: &str, body: &str| {
        json!({
            "type": "m.room.message",
            "event_id": id,
            "room_id": room,
            "sender": visitor.user_id,
            "origin_server_ts": 1_700_000_000_000u64,
            "content": {"msgtype": "m.text", "body": body},
            "unsigned": {"age": 1},
        })
    };
    let big_id = format!("${}", unique("oversized"));
    let big = event(&big_id, &"x".repeat(70_000));
    let small = event(
        &format!("${}", unique("beside")),
        "beside the oversized one",
    );
    let txn = json!({"events": [big, small]}).to_string();
    let (status, body) =
        push_transaction(&sb.base, "t-oversized", Some(&slot.hs_token), &txn).await?;
    assert_eq!(
        status, 200,
        "the transaction as a whole must be taken: {body}"
    );

    // Both arrived in one transaction, the big one first: once the small one is in the
    // transcript, the big one would be too had it been taken.
    let transcript = wait_for("the event beside the oversized one", || async {
        let m = store.messages(&room).await?;
        Ok(m.iter()
            .any(|m| m.body == "beside the oversized one")
            .then_some(m))
    })
    .await?;
    assert!(
        !transcript.iter().any(|m| m.body.starts_with("xxxx")),
        "the oversized event was stored"
    );
    assert!(
        sb.log_text().contains(&big_id),
        "the refusal is not logged with the event ID"
    );
    Ok(())
}

impl Visitor {
    /// The raw event of the visitor's first message, as the homeserver serves it.
    async fn seen_or_fetch_first(&self, room: &str) -> anyhow::Result<serde_json::Value> {
        let (status, body) = self
            .get(&format!(
                "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=50",
                urlencode(room)
            ))
            .await?;
        anyhow::ensure!(status == 200, "{body}");
        let mut event = body["chunk"]
            .as_array()
            .and_then(|c| {
                c.iter()
                    .find(|e| e["content"]["body"] == "hello 1")
                    .cloned()
            })
            .context("hello 1 not in the room's history")?;
        event["room_id"] = json!(room);
        Ok(event)
    }
}
