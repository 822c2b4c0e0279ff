//! The OpenAPI document against the API: every documented operation answers as documented, and
//! the check itself catches every kind of drift.

use super::*;

/// Every operation the OpenAPI document describes, called once on its way to success, and
/// every success it documents seen: with `Admin::call` checking each exchange against the
/// document, nothing the API answers can differ from what the document says.
#[tokio::test]
async fn every_documented_operation_answers_as_the_document_says() -> anyhow::Result<()> {
    let admin = admin().await?;
    let store = &admin.store;
    let ok = |(status, body): (StatusCode, Value), want: StatusCode| {
        assert_eq!(status, want, "{body}");
        body
    };
    // The register.
    ok(
        admin.call(Method::GET, "/admin/v1/responders", None).await,
        StatusCode::OK,
    );
    ok(
        admin
            .call(Method::POST, "/admin/v1/responders", Some(alex()))
            .await,
        StatusCode::CREATED,
    );
    ok(
        admin
            .call(Method::GET, "/admin/v1/responders/alex", None)
            .await,
        StatusCode::OK,
    );
    ok(
        admin
            .call(
                Method::PUT,
                "/admin/v1/responders/alex",
                Some(json!({"display_name": "Alex", "pseudonym": null})),
            )
            .await,
        StatusCode::OK,
    );
    ok(
        admin
            .call(
                Method::PATCH,
                "/admin/v1/responders/alex",
                Some(json!({"topics": ["billing"], "hours": {"tue": ["22:00-02:00"]}})),
            )
            .await,
        StatusCode::OK,
    );
    ok(
        admin
            .call(
                Method::PUT,
                "/admin/v1/responders/alex/status",
                Some(json!({"status": "away"})),
            )
            .await,
        StatusCode::OK,
    );
    // Conversations: one started from a platform (it has an initiator), closed.
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
    ok(
        admin
            .call(Method::GET, "/admin/v1/conversations?state=active", None)
            .await,
        StatusCode::OK,
    );
    ok(
        admin
            .call(Method::GET, "/admin/v1/conversations/!tg:x", None)
            .await,
        StatusCode::OK,
    );
    let block = "/admin/v1/conversations/%21tg%3Ax/initiator-block";
    ok(admin.call(Method::POST, block, None).await, StatusCode::OK);
    ok(
        admin.call(Method::DELETE, block, None).await,
        StatusCode::OK,
    );
    ok(
        admin
            .call(
                Method::GET,
                "/admin/v1/service-levels?from=2023-11-01T00:00:00Z&to=2023-12-01T00:00:00Z",
                None,
            )
            .await,
        StatusCode::OK,
    );
    store
        .set_conversation_state("!tg:x", ConversationState::Closed)
        .await?;
    let erased = ok(
        admin
            .call(Method::DELETE, "/admin/v1/conversations/!tg:x", None)
            .await,
        StatusCode::OK,
    );
    assert_eq!(erased["homeserver"]["method"], "not_asked", "{erased}");
    // Dead letters.
    store
        .record_events(
            "t",
            &[NewInboxEvent {
                event_id: "$e",
                room_id: "!r:x",
                event_json: "{}",
            }],
        )
        .await?;
    let pending = store.pending_events(10).await?;
    let letter = store
        .set_aside(
            DeadLetterSource::Inbox,
            pending[0].seq,
            Some("!r:x"),
            "bad event",
            1,
        )
        .await?;
    ok(
        admin
            .call(Method::GET, "/admin/v1/dead-letters?limit=5", None)
            .await,
        StatusCode::OK,
    );
    ok(
        admin
            .call(
                Method::POST,
                &format!("/admin/v1/dead-letters/{letter}/retry"),
                None,
            )
            .await,
        StatusCode::OK,
    );
    ok(
        admin
            .call(Method::DELETE, "/admin/v1/responders/alex", None)
            .await,
        StatusCode::NO_CONTENT,
    );

    assert_eq!(
        admin.contract.never_called(),
        Vec::<(String, String)>::new()
    );
    assert_eq!(admin.contract.successes_never_seen(), Vec::<String>::new());
    Ok(())
}

/// The check itself fails where the API and its document part: an undocumented status, a
/// body missing a member or carrying one the document does not know, a request the document
/// refuses being accepted, an undocumented route. (Without this, a checker that let
/// everything through would look the same as one that holds.)
#[tokio::test]
async fn the_document_check_catches_every_kind_of_drift() -> anyhow::Result<()> {
    let admin = admin().await?;
    let fails = |method: &str, uri: &str, request: Option<&str>, status: u16, body: &str| {
        let contract = admin.contract.clone();
        let (method, uri, request, body) = (
            method.to_owned(),
            uri.to_owned(),
            request.map(str::to_owned),
            body.to_owned(),
        );
        std::panic::catch_unwind(move || {
            contract.check(&Exchange {
                method: &method,
                uri: &uri,
                authorization: true,
                request_body: request.as_deref().map(str::as_bytes),
                status,
                response_headers: vec![("content-type".into(), "application/json".into())],
                response_body: body.as_bytes(),
            });
        })
        .is_err()
    };
    let status_body = r#"{"status":"away"}"#;
    let alex = alex().to_string();
    // What holds passes…
    assert!(!fails(
        "PUT",
        "/admin/v1/responders/alex/status",
        Some(status_body),
        200,
        &alex
    ));
    assert!(!fails(
        "GET",
        "/admin/v1/dead-letters?limit=3",
        None,
        200,
        r#"{"dead_letters":[]}"#
    ));
    // …and each kind of drift does not.
    let drift = [
        (
            "an undocumented status",
            "GET",
            "/admin/v1/dead-letters",
            None,
            418,
            r#"{"dead_letters":[]}"#.to_owned(),
        ),
        (
            "a missing member",
            "GET",
            "/admin/v1/dead-letters",
            None,
            200,
            "{}".to_owned(),
        ),
        (
            "an undescribed member",
            "GET",
            "/admin/v1/dead-letters",
            None,
            200,
            r#"{"dead_letters":[],"total":0}"#.to_owned(),
        ),
        (
            "a wrongly typed member",
            "GET",
            "/admin/v1/responders/alex",
            None,
            200,
            alex.replace("\"max_concurrent\":2", "\"max_concurrent\":\"2\""),
        ),
        (
            "an error body without its code",
            "GET",
            "/admin/v1/responders/bob",
            None,
            404,
            r#"{"error":"No such responder"}"#.to_owned(),
        ),
        (
            "a refused request accepted",
            "PUT",
            "/admin/v1/responders/alex/status",
            Some(r#"{"status":"busy"}"#),
            200,
            alex.clone(),
        ),
        (
            "an undocumented query parameter accepted",
            "GET",
            "/admin/v1/dead-letters?limt=3",
            None,
            200,
            r#"{"dead_letters":[]}"#.to_owned(),
        ),
        (
            "a parameter out of range accepted",
            "GET",
            "/admin/v1/dead-letters?limit=0",
            None,
            200,
            r#"{"dead_letters":[]}"#.to_owned(),
        ),
        (
            "an undocumented route",
            "GET",
            "/admin/v1/nothing",
            None,
            200,
            "{}".to_owned(),
        ),
        (
            "an undocumented method",
            "POST",
            "/admin/v1/dead-letters",
            None,
            200,
            "{}".to_owned(),
        ),
        (
            "a body where none is documented",
            "DELETE",
            "/admin/v1/responders/alex",
            None,
            204,
            "{}".to_owned(),
        ),
    ];
    for (what, method, uri, request, status, body) in drift {
        assert!(
            fails(method, uri, request, status, &body),
            "{what} went unnoticed"
        );
    }
    Ok(())
}
