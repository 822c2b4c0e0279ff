//! The responder register through the API: create, read, replace, patch and delete; conflicts
//! and unknown IDs; each invalid field named; a status change that wakes the bridge.

use super::*;

#[tokio::test]
async fn responders_round_trip_through_create_read_replace_patch_and_delete() -> anyhow::Result<()>
{
    let admin = admin().await?;

    let (status, created) = admin
        .call(Method::POST, "/admin/v1/responders", Some(alex()))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created, alex());
    assert!(admin.was_notified().await);

    let (status, got) = admin
        .call(Method::GET, "/admin/v1/responders/alex", None)
        .await;
    assert_eq!((status, &got), (StatusCode::OK, &alex()));

    // Defaults fill what a creation leaves out.
    let (status, minimal) = admin
        .call(
            Method::POST,
            "/admin/v1/responders",
            Some(json!({"id": "bo", "display_name": "Bo"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED);
    assert_eq!(
        (
            &minimal["timezone"],
            &minimal["max_concurrent"],
            &minimal["status"]
        ),
        (&json!("UTC"), &json!(3), &json!("available"))
    );
    assert!(admin.was_notified().await);

    let (status, list) = admin.call(Method::GET, "/admin/v1/responders", None).await;
    assert_eq!(status, StatusCode::OK);
    let ids: Vec<&str> = list["responders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["alex", "bo"]);

    // PATCH changes the given fields only; null removes the pseudonym.
    let (status, patched) = admin
        .call(
            Method::PATCH,
            "/admin/v1/responders/alex",
            Some(json!({"max_concurrent": 5, "pseudonym": null, "topics": ["sales"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    let mut expected = alex();
    expected["max_concurrent"] = json!(5);
    expected["pseudonym"] = Value::Null;
    expected["topics"] = json!(["sales"]);
    assert_eq!(patched, expected);
    assert!(admin.was_notified().await);
    assert_eq!(
        admin.store.responder_source("alex").await?.as_deref(),
        Some(SOURCE_ADMIN)
    );

    // PUT replaces the whole responder: what it leaves out returns to the defaults.
    let (status, replaced) = admin
        .call(
            Method::PUT,
            "/admin/v1/responders/alex",
            Some(json!({"display_name": "Alex E.", "contacts": [{"platform": "matrix", "address": "@alex:example.org"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{replaced}");
    let mut expected = serde_json::to_value(admin_api::responder_with_defaults("alex", "Alex E."))?;
    expected["contacts"] = json!([{"platform": "matrix", "address": "@alex:example.org"}]);
    assert_eq!(replaced, expected);
    assert_eq!(
        admin
            .call(Method::GET, "/admin/v1/responders/alex", None)
            .await
            .1,
        expected
    );
    assert!(admin.was_notified().await);
    // The body's id may be given if it is the path's.
    let (status, _) = admin
        .call(Method::PUT, "/admin/v1/responders/alex", Some(alex()))
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(admin.was_notified().await);

    let (status, body) = admin
        .call(Method::DELETE, "/admin/v1/responders/alex", None)
        .await;
    assert_eq!((status, body), (StatusCode::NO_CONTENT, Value::Null));
    assert!(admin.was_notified().await);
    let (status, body) = admin
        .call(Method::GET, "/admin/v1/responders/alex", None)
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::NOT_FOUND, Some("M_NOT_FOUND"))
    );
    Ok(())
}

#[tokio::test]
async fn a_taken_id_conflicts_and_unknown_ids_are_not_found() -> anyhow::Result<()> {
    let admin = admin().await?;
    assert_eq!(
        admin
            .call(Method::POST, "/admin/v1/responders", Some(alex()))
            .await
            .0,
        StatusCode::CREATED
    );
    assert!(admin.was_notified().await);
    let mut other = alex();
    other["display_name"] = json!("Someone else");
    let (status, body) = admin
        .call(Method::POST, "/admin/v1/responders", Some(other))
        .await;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (StatusCode::CONFLICT, Some("M_EXISTS"))
    );
    // The first one stands.
    assert_eq!(
        admin.store.responder("alex").await?.unwrap().display_name,
        "Alex Example"
    );

    let calls = [
        (Method::GET, "/admin/v1/responders/nobody", None),
        (
            Method::PUT,
            "/admin/v1/responders/nobody",
            Some(json!({"display_name": "N"})),
        ),
        (
            Method::PATCH,
            "/admin/v1/responders/nobody",
            Some(json!({"max_concurrent": 2})),
        ),
        (Method::DELETE, "/admin/v1/responders/nobody", None),
        (
            Method::PUT,
            "/admin/v1/responders/nobody/status",
            Some(json!({"status": "away"})),
        ),
        (Method::GET, "/admin/v1/conversations/!nowhere:x", None),
    ];
    for (method, uri, body) in calls {
        let (status, json) = admin.call(method.clone(), uri, body).await;
        assert_eq!(
            (status, json["errcode"].as_str()),
            (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
            "{method} {uri}"
        );
    }
    assert!(
        !admin.was_notified().await,
        "failed requests change nothing"
    );
    assert!(admin.store.responder("nobody").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn each_invalid_field_is_named_in_the_error() -> anyhow::Result<()> {
    let admin = admin().await?;
    let with = |field: &str, value: Value| {
        let mut body = alex();
        body[field] = value;
        body
    };
    let cases = [
        (
            "unknown platform",
            with(
                "contacts",
                json!([{"platform": "carrier-pigeon", "address": "7001"}]),
            ),
            "M_INVALID_PARAM",
            "contacts[0].platform",
        ),
        (
            "malformed hours",
            with("hours", json!({"mon": ["9-17"]})),
            "M_INVALID_PARAM",
            "hours.mon[0]",
        ),
        (
            "unknown weekday",
            with("hours", json!({"monday": ["09:00-17:00"]})),
            "M_INVALID_PARAM",
            "hours.monday",
        ),
        (
            "negative capacity",
            with("max_concurrent", json!(-1)),
            "M_INVALID_PARAM",
            "max_concurrent",
        ),
        (
            "bad time zone",
            with("timezone", json!("Mars/Olympus")),
            "M_INVALID_PARAM",
            "timezone",
        ),
        (
            "bad id",
            with("id", json!("Alex Example")),
            "M_INVALID_PARAM",
            "id",
        ),
        (
            "unknown JSON field",
            with("max_concurent", json!(2)),
            "M_BAD_JSON",
            "max_concurent",
        ),
        (
            "wrong type",
            with("max_concurrent", json!("two")),
            "M_BAD_JSON",
            "max_concurrent",
        ),
        (
            "unknown status",
            with("status", json!("busy")),
            "M_BAD_JSON",
            "status",
        ),
        (
            "unknown contact member",
            with(
                "contacts",
                json!([{"platform": "telegram", "address": "1", "note": "x"}]),
            ),
            "M_BAD_JSON",
            "contacts",
        ),
        (
            "missing name",
            {
                let mut b = alex();
                b.as_object_mut().unwrap().remove("display_name");
                b
            },
            "M_BAD_JSON",
            "display_name",
        ),
    ];
    for (case, body, errcode, field) in cases {
        let (status, json) = admin
            .call(Method::POST, "/admin/v1/responders", Some(body))
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{case}: {json}");
        assert_eq!(json["errcode"], errcode, "{case}: {json}");
        assert_eq!(json["field"], field, "{case}: {json}");
        let error = json["error"].as_str().unwrap();
        assert!(error.starts_with(&format!("{field}: ")), "{case}: {error}");
    }
    assert!(
        admin.store.list_responders().await?.is_empty(),
        "nothing invalid was stored"
    );

    // Edits are validated the same way, and the body's id cannot rename a responder.
    admin
        .call(Method::POST, "/admin/v1/responders", Some(alex()))
        .await;
    let (status, json) = admin
        .call(
            Method::PATCH,
            "/admin/v1/responders/alex",
            Some(json!({"max_concurrent": 0})),
        )
        .await;
    assert_eq!(
        (status, &json["field"]),
        (StatusCode::BAD_REQUEST, &json!("max_concurrent"))
    );
    let (status, json) = admin
        .call(
            Method::PUT,
            "/admin/v1/responders/alex",
            Some(with("id", json!("sam"))),
        )
        .await;
    assert_eq!(
        (status, &json["field"]),
        (StatusCode::BAD_REQUEST, &json!("id"))
    );
    let (status, json) = admin
        .call_as(
            Some(&format!("Bearer {TOKEN}")),
            Method::POST,
            "/admin/v1/responders",
            Some("{\"id\": ".into()),
        )
        .await;
    assert_eq!(
        (status, &json["errcode"]),
        (StatusCode::BAD_REQUEST, &json!("M_NOT_JSON"))
    );
    assert_eq!(
        admin.store.responder("alex").await?.unwrap().max_concurrent,
        2
    );
    Ok(())
}

#[tokio::test]
async fn a_status_change_is_stored_and_wakes_the_bridge() -> anyhow::Result<()> {
    let admin = admin().await?;
    admin
        .call(Method::POST, "/admin/v1/responders", Some(alex()))
        .await;
    assert!(admin.was_notified().await);
    assert!(!admin.was_notified().await);

    let (status, body) = admin
        .call(
            Method::PUT,
            "/admin/v1/responders/alex/status",
            Some(json!({"status": "away"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["status"], "away");
    assert!(
        admin.was_notified().await,
        "a status change must wake the bridge"
    );
    assert_eq!(
        admin.store.responder("alex").await?.unwrap().status,
        ResponderStatus::Away
    );

    let (status, body) = admin
        .call(
            Method::PUT,
            "/admin/v1/responders/alex/status",
            Some(json!({"status": "asleep"})),
        )
        .await;
    assert_eq!(
        (status, &body["field"]),
        (StatusCode::BAD_REQUEST, &json!("status"))
    );
    assert!(!admin.was_notified().await);
    Ok(())
}
