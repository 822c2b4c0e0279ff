//! Conversations and initiators through the API: blocking an initiator keeps only a keyed hash,
//! erasure of a closed conversation, and lists that hide visitor IDs.

use super::*;

#[tokio::test]
async fn an_initiator_is_blocked_by_their_conversation_and_only_a_keyed_hash_is_kept()
-> anyhow::Result<()> {
    let admin = admin().await?;
    let store = &admin.store;
    store
        .insert_conversation(&conversation(
            "!tg:x",
            "@_sb_visitor-abc:x",
            ConversationState::Active,
        ))
        .await?;
    store
        .insert_initiator(&switchboard_bridge::store::InitiatorRow {
            room_id: "!tg:x".into(),
            platform: "telegram".into(),
            address: "913572468".into(),
            thread: None,
            address_key: "hash-of-the-address".into(),
            created_at: 1,
        })
        .await?;
    store
        .insert_conversation(&conversation(
            "!web:x",
            "@guest:x",
            ConversationState::Active,
        ))
        .await?;
    let uri = "/admin/v1/conversations/!tg:x/initiator-block";
    let (status, body) = admin.call(Method::POST, uri, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, json!({"blocked": true, "changed": true}));
    assert!(
        !body.to_string().contains("913572468"),
        "the answer names nobody"
    );
    assert!(store.is_initiator_blocked("hash-of-the-address").await?);
    let (_, again) = admin.call(Method::POST, uri, None).await;
    assert_eq!(again, json!({"blocked": true, "changed": false}));
    let (status, body) = admin.call(Method::DELETE, uri, None).await;
    assert_eq!(
        (status, body),
        (StatusCode::OK, json!({"blocked": false, "changed": true}))
    );
    assert!(!store.is_initiator_blocked("hash-of-the-address").await?);
    // A widget visitor's conversation, or none at all, has no initiator to block.
    for room in ["!web:x", "!none:x"] {
        let (status, body) = admin
            .call(
                Method::POST,
                &format!("/admin/v1/conversations/{room}/initiator-block"),
                None,
            )
            .await;
        assert_eq!(
            (status, body["errcode"].as_str()),
            (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
            "{room}: {body}"
        );
    }
    Ok(())
}

/// Without a homeserver (no eraser given), `DELETE /admin/v1/conversations/{room}` erases the
/// store only and says so; an open conversation is refused and kept, an unknown one is 404,
/// and another conversation is left alone.
#[tokio::test]
async fn a_closed_conversation_is_erased_and_an_open_one_refused() -> anyhow::Result<()> {
    let admin = admin().await?;
    for room in ["!gone:x", "!kept:x"] {
        admin
            .store
            .insert_conversation(&Conversation {
                room_id: room.into(),
                topic: "support".into(),
                visitor_user_id: format!("@visitor-of-{room}"),
                visitor_alias: "Visitor 0A0A".into(),
                state: ConversationState::Active,
                created_at: 1,
                language: None,
            })
            .await?;
        admin
            .store
            .record_message(&Message {
                event_id: format!("$m{room}"),
                room_id: room.into(),
                inbox_seq: 1,
                sender: format!("@visitor-of-{room}"),
                sender_role: SenderRole::Visitor,
                msgtype: "m.text".into(),
                body: "please forget me".into(),
                formatted_body: None,
                origin_server_ts: 1,
            })
            .await?;
    }
    let (status, json) = admin
        .call(Method::DELETE, "/admin/v1/conversations/!gone:x", None)
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{json}");
    assert_eq!(json["errcode"], "M_CONVERSATION_OPEN");
    assert_eq!(admin.store.messages("!gone:x").await?.len(), 1);

    admin
        .store
        .set_conversation_state("!gone:x", ConversationState::Closed)
        .await?;
    let (status, json) = admin
        .call(Method::DELETE, "/admin/v1/conversations/!gone:x", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{json}");
    assert_eq!(
        json,
        json!({
            "room_id": "!gone:x",
            "homeserver": {"method": "not_asked"},
            "rows_deleted": {"conversations": 1, "messages": 1},
        })
    );
    assert!(admin.store.conversation("!gone:x").await?.is_none());
    assert!(admin.store.messages("!gone:x").await?.is_empty());
    assert_eq!(admin.store.messages("!kept:x").await?.len(), 1);
    let (status, _) = admin
        .call(Method::DELETE, "/admin/v1/conversations/!gone:x", None)
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn conversation_lists_hide_visitor_ids_which_only_the_transcript_shows() -> anyhow::Result<()>
{
    let admin = admin().await?;
    let store = &admin.store;
    store
        .insert_conversation(&conversation(
            "!aa:x",
            "@guest-secret-1:x",
            ConversationState::Queued,
        ))
        .await?;
    store
        .insert_conversation(&conversation(
            "!bb:x",
            "@guest-secret-2:x",
            ConversationState::Queued,
        ))
        .await?;
    store
        .set_conversation_state("!bb:x", ConversationState::Active)
        .await?;
    store
        .upsert_assignment(&AssignmentRow {
            room_id: "!bb:x".into(),
            responder_id: "alex".into(),
            platform: "telegram".into(),
            address: "7001".into(),
            ghost_user_id: "@_sb_alex:x".into(),
            state: "active".into(),
        })
        .await?;
    store
        .record_message(&Message {
            event_id: "$hello".into(),
            room_id: "!bb:x".into(),
            inbox_seq: 1,
            sender: "@guest-secret-2:x".into(),
            sender_role: SenderRole::Visitor,
            msgtype: "m.text".into(),
            body: "hello?".into(),
            formatted_body: None,
            origin_server_ts: 1_700_000_000_001,
        })
        .await?;

    let (status, list) = admin
        .call(Method::GET, "/admin/v1/conversations", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(!list.to_string().contains("guest-secret"), "{list}");
    assert_eq!(
        list["conversations"][0],
        json!({"room_id": "!aa:x", "topic": "support", "state": "queued",
               "visitor_alias": "Visitor AA", "created_at": 1_700_000_000_000_i64})
    );
    assert_eq!(list["conversations"].as_array().unwrap().len(), 2);

    let (_, active) = admin
        .call(Method::GET, "/admin/v1/conversations?state=active", None)
        .await;
    let rooms: Vec<&str> = active["conversations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["room_id"].as_str().unwrap())
        .collect();
    assert_eq!(rooms, ["!bb:x"]);
    let (status, bad) = admin
        .call(Method::GET, "/admin/v1/conversations?state=open", None)
        .await;
    assert_eq!(
        (status, &bad["field"]),
        (StatusCode::BAD_REQUEST, &json!("state"))
    );

    // The transcript view is where operators see who the visitor is.
    let (status, detail) = admin
        .call(Method::GET, "/admin/v1/conversations/!bb:x", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{detail}");
    assert_eq!(
        detail["conversation"]["visitor_user_id"],
        "@guest-secret-2:x"
    );
    assert_eq!(detail["conversation"]["state"], "active");
    assert_eq!(detail["assignments"][0]["responder_id"], "alex");
    assert_eq!(detail["transcript"][0]["body"], "hello?");
    assert_eq!(detail["transcript"][0]["sender_role"], "visitor");
    // Percent-encoded room IDs work too.
    let (status, _) = admin
        .call(Method::GET, "/admin/v1/conversations/%21bb%3Ax", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    Ok(())
}
