//! The admin API, driven through its router without a socket, and the store methods behind
//! it, run on every engine (SQLite here; PostgreSQL started by scripts/test.sh).

mod auth;
#[path = "../common/mod.rs"]
mod common;
mod contract;
mod conversations;
mod operations;
mod register_store;
mod responders;

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
