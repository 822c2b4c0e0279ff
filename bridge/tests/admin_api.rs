//! The admin API, driven through its router without a socket, and the store methods behind
//! it, run on every engine (SQLite here; PostgreSQL started by scripts/test.sh).

mod common;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Body,
    extract::ConnectInfo,
    http::{Method, Request, StatusCode, header},
};
use serde_json::{Value, json};
use switchboard_bridge::{
    Store,
    admin_api::{self, AdminState},
    conversation::{Conversation, ConversationState, Message, SenderRole},
    responder::{Contact, Responder, ResponderStatus},
    store::{
        AssignmentRow, DeadLetterSource, Engine, Milestone, NewInboxEvent, SOURCE_ADMIN,
        SOURCE_CONFIG,
    },
};
use tokio::sync::Notify;
use tower::ServiceExt;

use common::openapi::{Contract, Exchange};

const TOKEN: &str = "admin-secret-token";

struct Admin {
    router: Router,
    /// The document the router serves: every call below is checked against it.
    contract: Contract,
    store: Store,
    changed: Arc<Notify>,
    /// How often the worker was woken (`AdminState::with_wake`).
    woken: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

async fn admin() -> anyhow::Result<Admin> {
    let dir = tempfile::tempdir()?;
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("db").display())).await?;
    let changed = Arc::new(Notify::new());
    let state = AdminState::new(
        store.clone(),
        TOKEN,
        changed.clone(),
        vec!["matrix".into(), "telegram".into()],
    )?;
    let woken = Arc::new(AtomicUsize::new(0));
    let counter = woken.clone();
    let state = state.with_wake(move || {
        counter.fetch_add(1, Ordering::SeqCst);
    });
    let router = admin_api::router(state);
    let contract = served_document(&router).await;
    Ok(Admin {
        router,
        contract,
        store,
        changed,
        woken,
        _dir: dir,
    })
}

impl Admin {
    /// Sends a request with the right token; answers the status and the JSON body (Null if
    /// there is none).
    async fn call(&self, method: Method, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call_as(
            Some(&format!("Bearer {TOKEN}")),
            method,
            uri,
            body.map(|b| b.to_string()),
        )
        .await
    }

    async fn call_as(
        &self,
        authorization: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<String>,
    ) -> (StatusCode, Value) {
        let (status, _, json) = self.call_from(None, authorization, method, uri, body).await;
        (status, json)
    }

    /// Like `call_as`, as if from `peer` (wrong tokens are counted per address); answers the
    /// headers too.
    async fn call_from(
        &self,
        peer: Option<SocketAddr>,
        authorization: Option<&str>,
        method: Method,
        uri: &str,
        body: Option<String>,
    ) -> (StatusCode, axum::http::HeaderMap, Value) {
        let mut request = Request::builder().method(method.clone()).uri(uri);
        if let Some(peer) = peer {
            request = request.extension(ConnectInfo(peer));
        }
        if let Some(auth) = authorization {
            request = request.header(header::AUTHORIZATION, auth);
        }
        let request = match &body {
            Some(body) => request
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.clone())),
            None => request.body(Body::empty()),
        }
        .expect("valid request");
        let response = self
            .router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible");
        let status = response.status();
        let headers = response.headers().clone();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
            .await
            .expect("body");
        self.contract.check(&Exchange {
            method: method.as_str(),
            uri,
            authorization: authorization.is_some(),
            request_body: body.as_deref().map(str::as_bytes),
            status: status.as_u16(),
            response_headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect(),
            response_body: &bytes,
        });
        let json = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("the admin API answers JSON")
        };
        (status, headers, json)
    }

    /// Whether `changed` was notified since the last look (consumes the notification).
    async fn was_notified(&self) -> bool {
        tokio::time::timeout(Duration::from_millis(50), self.changed.notified())
            .await
            .is_ok()
    }
}

/// The OpenAPI document `router` serves, without a token.
async fn served_document(router: &Router) -> Contract {
    let response = router
        .clone()
        .oneshot(
            Request::get(admin_api::OPENAPI_PATH)
                .body(Body::empty())
                .expect("valid request"),
        )
        .await
        .expect("infallible");
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let served: Value = serde_json::from_slice(&bytes).expect("the document is JSON");
    assert_eq!(
        served,
        serde_json::to_value(admin_api::openapi()).expect("JSON"),
        "the router serves the document admin_api::openapi() gives"
    );
    Contract::new(served)
}

fn alex() -> Value {
    json!({
        "id": "alex",
        "display_name": "Alex Example",
        "pseudonym": "Sam",
        "topics": ["billing/*"],
        "languages": ["en", "de"],
        "timezone": "Europe/Berlin",
        "hours": { "mon": ["09:00-17:00"] },
        "max_concurrent": 2,
        "status": "available",
        "contacts": [{ "platform": "telegram", "address": "7001" }]
    })
}

fn conversation(room: &str, visitor: &str, state: ConversationState) -> Conversation {
    Conversation {
        room_id: room.into(),
        topic: "support".into(),
        visitor_user_id: visitor.into(),
        visitor_alias: format!("Visitor {}", &room[1..3].to_uppercase()),
        state,
        created_at: 1_700_000_000_000,
        language: None,
    }
}

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_token() -> anyhow::Result<()> {
    let admin = admin().await?;
    admin
        .store
        .insert_responder(&responder("alex"), SOURCE_ADMIN)
        .await?;
    // Every route the document describes, so a route added later is held to this too.
    let routes: Vec<(Method, String)> = admin
        .contract
        .operations()
        .into_iter()
        .map(|(method, template)| {
            let id = if template.contains("dead-letters") {
                "1"
            } else {
                "alex"
            };
            let uri = template.replace("{id}", id).replace("{room_id}", "!room:x");
            (method.parse().expect("a method"), uri)
        })
        .collect();
    assert_eq!(routes.len(), 15, "{routes:?}");
    let body = || Some(json!({"display_name": "Mallory", "status": "offline"}).to_string());
    for (i, (method, uri)) in routes.iter().enumerate() {
        let uri = uri.as_str();
        // Each route's wrong tokens from an address of their own: the lock-out after five
        // from one address is tested below.
        let peer = SocketAddr::from(([192, 0, 2, i as u8 + 1], 40000));
        for missing in [None, Some("Basic YWRtaW46YWRtaW4="), Some(TOKEN)] {
            let (status, json) = admin.call_as(missing, method.clone(), uri, body()).await;
            assert_eq!(
                (status, json["errcode"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("M_MISSING_TOKEN")),
                "{method} {uri} with authorization {missing:?}"
            );
        }
        for wrong in [
            "Bearer wrong",
            "Bearer ",
            "Bearer admin-secret-token2",
            "Bearer admin-secret-toke",
        ] {
            let (status, _, json) = admin
                .call_from(Some(peer), Some(wrong), method.clone(), uri, body())
                .await;
            assert_eq!(
                (status, json["errcode"].as_str()),
                (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
                "{method} {uri} with {wrong:?}"
            );
            // The refusal says nothing about the token.
            assert_eq!(json["error"], "Invalid admin token");
        }
    }
    // Nothing got through: the responder is unchanged and nobody was woken.
    assert_eq!(
        admin.store.responder("alex").await?,
        Some(responder("alex"))
    );
    assert!(!admin.was_notified().await);
    assert_eq!(admin.woken.load(Ordering::SeqCst), 0);
    Ok(())
}

#[tokio::test]
async fn an_address_presenting_wrong_tokens_is_locked_out_whatever_it_sends_next()
-> anyhow::Result<()> {
    let admin = admin().await?;
    let guesser = SocketAddr::from(([198, 51, 100, 7], 50000));
    let operator = SocketAddr::from(([198, 51, 100, 8], 50000));
    let list = |peer, token: &'static str| {
        let admin = &admin;
        async move {
            admin
                .call_from(
                    Some(peer),
                    Some(token),
                    Method::GET,
                    "/admin/v1/responders",
                    None,
                )
                .await
        }
    };
    for _ in 0..5 {
        assert_eq!(list(guesser, "Bearer guess").await.0, StatusCode::FORBIDDEN);
    }
    let (status, headers, json) = list(guesser, "Bearer guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json["errcode"], "M_LIMIT_EXCEEDED");
    let after: u64 = headers[header::RETRY_AFTER].to_str()?.parse()?;
    assert!((1..=12).contains(&after), "Retry-After {after}");
    // Locked out: even the right token is refused from there, so a guess that happens to be
    // right is not told apart from the wrong ones.
    let right = "Bearer admin-secret-token";
    assert_eq!(list(guesser, right).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(list(operator, right).await.0, StatusCode::OK);
    // A missing token is a client set up wrong, not a guess: it never locks anyone out.
    for _ in 0..10 {
        let (status, _, _) = admin
            .call_from(
                Some(operator),
                None,
                Method::GET,
                "/admin/v1/responders",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(list(operator, right).await.0, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn an_empty_token_is_refused_at_construction() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("db").display())).await?;
    for token in ["", "   "] {
        let err = AdminState::new(store.clone(), token, Arc::new(Notify::new()), vec![])
            .err()
            .expect("an empty token must be refused");
        assert!(err.to_string().contains("[admin]"), "{err}");
    }
    Ok(())
}

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

// ---- the store suite for the register, on every engine --------------------------------------

fn responder(id: &str) -> Responder {
    Responder {
        id: id.into(),
        display_name: format!("{id} name"),
        pseudonym: None,
        topics: vec!["support".into()],
        languages: vec!["en".into()],
        timezone: "UTC".into(),
        hours: [("mon".to_owned(), vec!["09:00-17:00".to_owned()])].into(),
        max_concurrent: 3,
        status: ResponderStatus::Available,
        contacts: vec![Contact {
            platform: "telegram".into(),
            address: format!("{}", 7000 + id.len()),
        }],
    }
}

async fn register_crud_round_trips(store: &Store) -> anyhow::Result<()> {
    let mut alex = responder("alex");
    alex.pseudonym = Some("Sam".into());
    alex.hours.insert(
        "sun".into(),
        vec!["22:00-02:00".into(), "10:00-11:00".into()],
    );
    assert!(store.insert_responder(&alex, SOURCE_ADMIN).await?);
    assert!(
        !store
            .insert_responder(&responder("alex"), SOURCE_ADMIN)
            .await?,
        "an id is taken once"
    );
    assert!(
        store
            .insert_responder(&responder("bo"), SOURCE_ADMIN)
            .await?
    );
    assert_eq!(store.responder("alex").await?, Some(alex.clone()));
    assert_eq!(store.responder("nobody").await?, None);
    let ids: Vec<String> = store
        .list_responders()
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["alex", "bo"]);

    alex.max_concurrent = 7;
    alex.status = ResponderStatus::Offline;
    assert!(store.update_responder(&alex).await?);
    assert_eq!(store.responder("alex").await?, Some(alex.clone()));
    assert!(!store.update_responder(&responder("nobody")).await?);

    assert!(
        store
            .set_responder_status("alex", ResponderStatus::Away)
            .await?
    );
    assert_eq!(
        store.responder("alex").await?.unwrap().status,
        ResponderStatus::Away
    );
    assert!(
        !store
            .set_responder_status("nobody", ResponderStatus::Away)
            .await?
    );

    assert_eq!(
        store
            .responder_by_contact("telegram", "7004")
            .await?
            .map(|r| r.id)
            .as_deref(),
        Some("alex")
    );
    assert_eq!(store.responder_by_contact("matrix", "7004").await?, None);

    assert!(store.remove_responder("bo").await?);
    assert!(!store.remove_responder("bo").await?);
    assert_eq!(store.responder("bo").await?, None);
    Ok(())
}

async fn seeding_never_overwrites_an_operators_edit(store: &Store) -> anyhow::Result<()> {
    let mut seeded = responder("cfg");
    assert!(store.upsert_responder(&seeded, SOURCE_CONFIG).await?);
    assert_eq!(
        store.responder_source("cfg").await?.as_deref(),
        Some(SOURCE_CONFIG)
    );

    // A changed configuration refreshes a configured row, but not its live status.
    store
        .set_responder_status("cfg", ResponderStatus::Away)
        .await?;
    seeded.display_name = "Renamed in config".into();
    seeded.topics = vec!["sales".into()];
    assert!(store.upsert_responder(&seeded, SOURCE_CONFIG).await?);
    let stored = store.responder("cfg").await?.unwrap();
    assert_eq!(
        (
            stored.display_name.as_str(),
            stored.topics.clone(),
            stored.status
        ),
        (
            "Renamed in config",
            vec!["sales".to_owned()],
            ResponderStatus::Away
        )
    );

    // Once an operator edits it, seeding leaves it alone.
    let mut edited = stored.clone();
    edited.max_concurrent = 9;
    assert!(store.update_responder(&edited).await?);
    assert_eq!(
        store.responder_source("cfg").await?.as_deref(),
        Some(SOURCE_ADMIN)
    );
    seeded.display_name = "Config again".into();
    assert!(!store.upsert_responder(&seeded, SOURCE_CONFIG).await?);
    assert_eq!(store.responder("cfg").await?, Some(edited));

    // Likewise one an operator created.
    let mut made = responder("made");
    made.display_name = "Operator's".into();
    store.insert_responder(&made, SOURCE_ADMIN).await?;
    assert!(
        !store
            .upsert_responder(&responder("made"), SOURCE_CONFIG)
            .await?
    );
    assert_eq!(store.responder("made").await?, Some(made));
    // A status change is not an edit: the row stays configured.
    store
        .upsert_responder(&responder("live"), SOURCE_CONFIG)
        .await?;
    store
        .set_responder_status("live", ResponderStatus::Offline)
        .await?;
    assert_eq!(
        store.responder_source("live").await?.as_deref(),
        Some(SOURCE_CONFIG)
    );
    Ok(())
}

async fn offers_cursors_and_load_are_tracked(store: &Store) -> anyhow::Result<()> {
    store
        .insert_responder(&responder("rr"), SOURCE_ADMIN)
        .await?;
    // rr's entry in the register: Some(when last offered), None while never offered.
    let offered = async || {
        let register = store.responders_with_offer_times().await?;
        anyhow::Ok(
            register
                .into_iter()
                .find(|(r, _)| r.id == "rr")
                .map(|(_, at)| at),
        )
    };
    assert_eq!(offered().await?, Some(None));
    store.note_offered("rr", 1_700_000_000_123).await?;
    assert_eq!(offered().await?, Some(Some(1_700_000_000_123)));

    assert_eq!(store.routing_cursor("support").await?, None);
    store.set_routing_cursor("support", "alex").await?;
    store.set_routing_cursor("support", "rr").await?;
    store.set_routing_cursor("billing/*", "alex").await?;
    assert_eq!(
        store.routing_cursor("support").await?.as_deref(),
        Some("rr")
    );
    assert_eq!(
        store.routing_cursor("billing/*").await?.as_deref(),
        Some("alex")
    );

    let assign = |room: &str, who: &str, state: &str| AssignmentRow {
        room_id: room.into(),
        responder_id: who.into(),
        platform: "telegram".into(),
        address: "1".into(),
        ghost_user_id: format!("@_sb_{who}:x"),
        state: state.into(),
    };
    for a in [
        assign("!l1:x", "rr", "active"),
        assign("!l2:x", "rr", "active"),
        assign("!l3:x", "rr", "ended"),
        assign("!l3:x", "alex", "active"),
    ] {
        store.upsert_assignment(&a).await?;
    }
    let counts = store.active_conversation_counts().await?;
    assert_eq!(counts.get("rr"), Some(&2));
    assert_eq!(counts.get("alex"), Some(&1));
    assert_eq!(counts.len(), 2);
    let held: Vec<(String, String)> = store
        .assignments_for_room("!l3:x")
        .await?
        .into_iter()
        .map(|a| (a.responder_id, a.state))
        .collect();
    assert_eq!(held.len(), 2, "ended assignments are part of the history");
    assert!(held.contains(&("rr".into(), "ended".into())));
    Ok(())
}

async fn suite(store: Store) -> anyhow::Result<()> {
    register_crud_round_trips(&store).await?;
    seeding_never_overwrites_an_operators_edit(&store).await?;
    offers_cursors_and_load_are_tracked(&store).await?;
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn register_store_suite_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, _) = common::fresh_sqlite(dir.path()).await?;
    assert_eq!(store.engine(), Engine::Sqlite);
    suite(store).await
}

#[tokio::test]
async fn register_store_suite_on_postgres() -> anyhow::Result<()> {
    let (store, _) = common::fresh_postgres("sbadmin").await?;
    assert_eq!(store.engine(), Engine::Postgres);
    suite(store).await
}

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
