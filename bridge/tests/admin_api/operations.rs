//! What operators watch and fix: dead letters listed and retried, service levels per topic
//! and platform.

use super::*;

#[tokio::test]
async fn dead_letters_are_listed_newest_first_and_a_retry_puts_the_work_back_and_wakes_the_worker()
-> anyhow::Result<()> {
    let admin = admin().await?;
    let (status, json) = admin
        .call(Method::GET, "/admin/v1/dead-letters", None)
        .await;
    assert_eq!(
        (status, json),
        (StatusCode::OK, json!({"dead_letters": []}))
    );

    let ev = |id: &'static str| NewInboxEvent {
        event_id: id,
        room_id: "!r:x",
        event_json: "{}",
    };
    admin
        .store
        .record_events("t", &[ev("$one"), ev("$two")])
        .await?;
    let pending = admin.store.pending_events(10).await?;
    let first = admin
        .store
        .set_aside(
            DeadLetterSource::Inbox,
            pending[0].seq,
            Some("!r:x"),
            "store failed: database is locked",
            5,
        )
        .await?;
    let second = admin
        .store
        .set_aside(
            DeadLetterSource::Inbox,
            pending[1].seq,
            None,
            "bad event",
            1,
        )
        .await?;
    assert!(admin.store.pending_events(10).await?.is_empty());

    let (status, json) = admin
        .call(Method::GET, "/admin/v1/dead-letters", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    let letters = json["dead_letters"].as_array().expect("a list");
    assert_eq!(
        letters.iter().map(|l| l["id"].as_i64()).collect::<Vec<_>>(),
        [Some(second), Some(first)]
    );
    let created_at = letters[1]["created_at"].as_i64().expect("a time");
    assert_eq!(
        letters[1],
        json!({
            "id": first, "source": "inbox", "source_seq": pending[0].seq, "room_id": "!r:x",
            "reason": "store failed: database is locked", "attempts": 5, "created_at": created_at
        })
    );
    let (status, json) = admin
        .call(Method::GET, "/admin/v1/dead-letters?limit=1", None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["dead_letters"].as_array().map(Vec::len), Some(1));
    let (status, json) = admin
        .call(Method::GET, "/admin/v1/dead-letters?limit=0", None)
        .await;
    assert_eq!(
        (status, json["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("limit"))
    );

    let retry = format!("/admin/v1/dead-letters/{first}/retry");
    let (status, json) = admin.call(Method::POST, &retry, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["id"], first);
    assert_eq!(json["reason"], "store failed: database is locked");
    assert_eq!(
        admin.woken.load(Ordering::SeqCst),
        1,
        "the worker was woken"
    );
    assert_eq!(
        admin
            .store
            .pending_events(10)
            .await?
            .iter()
            .map(|e| e.event_id.as_str())
            .collect::<Vec<_>>(),
        ["$one"]
    );

    // Retried once: the second time it is unknown, and nothing is woken for it.
    let (status, json) = admin.call(Method::POST, &retry, None).await;
    assert_eq!(
        (status, json["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    let (status, json) = admin
        .call(Method::POST, "/admin/v1/dead-letters/abc/retry", None)
        .await;
    assert_eq!(
        (status, json["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("id"))
    );
    assert_eq!(admin.woken.load(Ordering::SeqCst), 1);
    let (_, json) = admin
        .call(Method::GET, "/admin/v1/dead-letters", None)
        .await;
    assert_eq!(json["dead_letters"].as_array().map(Vec::len), Some(1));
    Ok(())
}

#[tokio::test]
async fn service_levels_are_reported_per_topic_and_platform_over_a_window() -> anyhow::Result<()> {
    let admin = admin().await?;
    let now = admin.store.clock().now_ms();
    let mut c = conversation("!sl:x", "@v:x", ConversationState::Active);
    c.created_at = now - 600_000;
    admin.store.insert_conversation(&c).await?;
    admin
        .store
        .reach_milestone("!sl:x", Milestone::Accepted, now - 590_000, "telegram")
        .await?;
    admin
        .store
        .reach_milestone("!sl:x", Milestone::FirstReply, now - 540_000, "telegram")
        .await?;
    let (status, body) = admin
        .call(Method::GET, "/admin/v1/service-levels", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let levels = body["levels"].as_array().expect("levels");
    assert_eq!(levels.len(), 1, "{body}");
    assert_eq!(levels[0]["platform"], "telegram");
    assert_eq!(levels[0]["answered"], 1);
    assert_eq!(levels[0]["median_wait_secs"], 60.0);
    // Without a target for the topic: waits, no share.
    assert_eq!(levels[0]["met_share"], Value::Null);
    // A window that ends before it started holds nothing.
    let (status, body) = admin
        .call(
            Method::GET,
            "/admin/v1/service-levels?from=2020-01-01T00:00:00Z&to=2020-01-02T00:00:00Z",
            None,
        )
        .await;
    assert_eq!(
        (status, body["levels"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(0))
    );
    for (query, field) in [
        ("from=yesterday", "from"),
        ("to=2020-13-01T00:00:00Z", "to"),
    ] {
        let (status, body) = admin
            .call(
                Method::GET,
                &format!("/admin/v1/service-levels?{query}"),
                None,
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{query}");
        assert_eq!(body["field"], field, "{body}");
    }
    Ok(())
}
