//! The endpoints the homeserver calls: transactions, user and alias queries, ping.
//!
//! A transaction is answered 200 only after the [`EventSink`] has durably recorded its events;
//! anything the events trigger happens later, outside the request. If recording fails we answer
//! 500 and the homeserver retries the same transaction, so nothing is lost.

use std::sync::Arc;

use axum::{
    Json, Router,
    body::Bytes,
    extract::{DefaultBodyLimit, Path, Request, State},
    http::{HeaderMap, StatusCode, Uri},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use ruma::{
    OwnedUserId, UserId,
    api::{IncomingRequest, appservice::event::push_events},
    events::AnyTimelineEvent,
    serde::Raw,
};
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::txn_order::{TransactionOrder, Verdict};

/// Where transactions go. Implemented by the bridge; this crate never interprets events.
#[async_trait::async_trait]
pub trait EventSink: Send + Sync + 'static {
    /// Durably record the events of one transaction before returning.
    ///
    /// Must be idempotent by event ID: the homeserver may send the same events again, under the
    /// same or a different transaction ID (Synapse reuses IDs after a restart on SQLite). Must not
    /// process the events inline; queue that work. An error makes the homeserver retry later.
    async fn record_transaction(
        &self,
        txn_id: &str,
        events: Vec<Raw<AnyTimelineEvent>>,
    ) -> Result<(), SinkError>;

    /// Ephemeral events (typing, receipts) that came with a transaction, after it was
    /// recorded. Not durable and not retried: called once, must return at once (queue work).
    fn ephemeral(&self, _events: &[serde_json::Value]) {}

    /// Whether a user in our namespace exists (answers the homeserver's user query).
    async fn user_exists(&self, user_id: &UserId) -> bool;

    /// A transaction was just refused (held back for order, or not recorded): Synapse now
    /// counts us as down and its recoverer sends what it stored, and the end of that recovery
    /// can strand one transaction for good (`txn_order.rs`). Called before the refusal is
    /// answered; must return at once.
    fn refused(&self) {}
}

/// The sink could not record a transaction. The text is logged, never sent to the homeserver.
#[derive(Debug, thiserror::Error)]
#[error("recording the transaction failed: {0}")]
pub struct SinkError(pub Box<dyn std::error::Error + Send + Sync>);

/// State of the appservice routes.
#[derive(Clone)]
pub struct AppserviceState {
    hs_token: Arc<str>,
    namespace: Arc<crate::AppserviceRegistration>,
    sink: Arc<dyn EventSink>,
    order: Arc<TransactionOrder>,
}

impl AppserviceState {
    pub fn new(registration: Arc<crate::AppserviceRegistration>, sink: Arc<dyn EventSink>) -> Self {
        Self {
            hs_token: registration.inner.hs_token.as_str().into(),
            namespace: registration,
            sink,
            order: Arc::default(),
        }
    }

    /// Shares the transaction order guard's state with the other instances behind the same
    /// URL (`txn_order.rs`), so the homeserver's pushes may be spread over them.
    pub fn with_shared_order(mut self, shared: Arc<dyn crate::txn_order::SharedOrder>) -> Self {
        self.order = Arc::new(TransactionOrder::shared(shared));
        self
    }
}

/// A Matrix-style error body, the only error shape the homeserver understands.
#[derive(Debug)]
pub struct MatrixError {
    pub status: StatusCode,
    pub errcode: &'static str,
    pub message: String,
}

impl MatrixError {
    pub fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
        }
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({ "errcode": self.errcode, "error": self.message })),
        )
            .into_response()
    }
}

/// Synapse sends at most 100 events of at most 64 KiB each per transaction.
const MAX_TRANSACTION_BYTES: usize = 100 * 65536 + 65536;

/// The spec's limit on the size of one event (client-server API, "Size limits").
const MAX_EVENT_BYTES: usize = 65536;

/// The routes the homeserver calls, all behind the `hs_token` check.
pub fn router(state: AppserviceState) -> Router {
    Router::new()
        .route(
            "/_matrix/app/v1/transactions/{txn_id}",
            put(put_transaction),
        )
        .route("/_matrix/app/v1/users/{user_id}", get(get_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(get_room_alias))
        .route("/_matrix/app/v1/ping", post(post_ping))
        .layer(DefaultBodyLimit::max(MAX_TRANSACTION_BYTES))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            require_hs_token,
        ))
        .with_state(state)
}

/// Checks the homeserver's token: `Authorization: Bearer` (current spec) or the legacy
/// `access_token` query parameter. The comparison runs in constant time so the token cannot be
/// guessed byte by byte from response timings.
///
/// No credentials at all (neither the header nor the parameter) is 401 `M_MISSING_TOKEN`, as
/// the Matrix APIs answer a request without an access token; credentials that are not our
/// `hs_token` are 403 `M_FORBIDDEN`, as the Application Service API requires.
async fn require_hs_token(
    State(state): State<AppserviceState>,
    headers: HeaderMap,
    uri: Uri,
    request: Request,
    next: Next,
) -> Response {
    let from_header = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let from_query = uri.query().and_then(|q| {
        q.split('&')
            .find_map(|kv| kv.strip_prefix("access_token="))
            .map(str::to_owned)
    });
    let presented = from_header.map(str::to_owned).or(from_query);
    let any_credentials = headers.contains_key(axum::http::header::AUTHORIZATION)
        || uri.query().is_some_and(|q| {
            q.split('&')
                .any(|kv| kv == "access_token" || kv.starts_with("access_token="))
        });
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(state.hs_token.as_bytes())) => {
            next.run(request).await
        }
        _ if !any_credentials => MatrixError::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing hs_token",
        )
        .into_response(),
        _ => MatrixError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", "Bad hs_token").into_response(),
    }
}

/// # `PUT /_matrix/app/v1/transactions/{txnId}`
///
/// Events stay `Raw` here: one event we cannot decode must not fail the other 99.
async fn put_transaction(
    State(state): State<AppserviceState>,
    Path(txn_id): Path<String>,
    uri: Uri,
    body: Bytes,
) -> Result<Json<serde_json::Value>, MatrixError> {
    // Checked without building anything: the body is parsed for real just below.
    if serde_json::from_slice::<serde::de::IgnoredAny>(&body).is_err() {
        return Err(MatrixError::new(
            StatusCode::BAD_REQUEST,
            "M_NOT_JSON",
            "Body is not JSON",
        ));
    }
    let http_request = http::Request::builder()
        .method(http::Method::PUT)
        .uri(uri)
        .body(body)
        .map_err(|e| MatrixError::new(StatusCode::BAD_REQUEST, "M_UNRECOGNIZED", e.to_string()))?;
    let request = push_events::v1::Request::try_from_http_request(http_request, &[&txn_id])
        .map_err(|e| {
            MatrixError::new(
                StatusCode::BAD_REQUEST,
                "M_BAD_JSON",
                format!("Malformed transaction: {e}"),
            )
        })?;
    let events: Vec<Raw<AnyTimelineEvent>> = request
        .events
        .into_iter()
        .filter(|raw| {
            let size = event_size(raw);
            if size <= MAX_EVENT_BYTES {
                return true;
            }
            // No homeserver may create such an event; storing it whole would let one
            // misbehaving server fill the inbox. Refused alone, so the others still count.
            tracing::warn!(
                %txn_id,
                event_id = raw.get_field::<String>("event_id").ok().flatten().as_deref().unwrap_or("?"),
                room_id = raw.get_field::<String>("room_id").ok().flatten().as_deref().unwrap_or("?"),
                size,
                limit = MAX_EVENT_BYTES,
                "event larger than the spec allows refused"
            );
            false
        })
        .collect();
    let count = events.len();
    if let Verdict::HoldBack { last } = state.order.check(&txn_id).await {
        // See `txn_order.rs`: the homeserver may have stranded a transaction before this one.
        tracing::info!(
            %txn_id,
            last,
            "transaction skips numbers after the last one recorded: refused once, so that the \
             homeserver sends any it held back first"
        );
        state.sink.refused();
        return Err(MatrixError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            format!(
                "Transaction {txn_id} skips numbers after {last}: send the ones before it first"
            ),
        ));
    }
    if let Err(e) = state.sink.record_transaction(&txn_id, events).await {
        state.order.failed().await;
        state.sink.refused();
        tracing::error!(%txn_id, error = %e, "could not record transaction; the homeserver will retry");
        return Err(MatrixError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "M_UNKNOWN",
            "Could not record transaction",
        ));
    }
    state.order.recorded(&txn_id).await;
    // Parsed one by one, so one odd ephemeral event does not hide the others.
    let ephemeral: Vec<serde_json::Value> = request
        .ephemeral
        .iter()
        .filter_map(|raw| serde_json::from_str(raw.json().get()).ok())
        .collect();
    if !ephemeral.is_empty() {
        state.sink.ephemeral(&ephemeral);
    }
    tracing::debug!(%txn_id, count, "transaction recorded");
    Ok(Json(json!({})))
}

/// The size of an event as far as the spec's limit goes. The limit applies to the event as the
/// homeserver stores it (with hashes and signatures, larger than what reaches us) but not to
/// `unsigned`, which the homeserver adds on delivery (e.g. `prev_content` of a state event),
/// so an event is measured without `unsigned`, compactly re-encoded. Cheap for the usual
/// event: anything whose raw JSON fits is within the limit.
fn event_size(raw: &Raw<AnyTimelineEvent>) -> usize {
    let json = raw.json().get();
    if json.len() <= MAX_EVENT_BYTES {
        return json.len();
    }
    match serde_json::from_str::<serde_json::Value>(json) {
        Ok(serde_json::Value::Object(mut event)) => {
            event.remove("unsigned");
            serde_json::to_vec(&event).map_or(json.len(), |v| v.len())
        }
        _ => json.len(),
    }
}

/// # `GET /_matrix/app/v1/users/{userId}`
async fn get_user(
    State(state): State<AppserviceState>,
    Path(user_id): Path<String>,
) -> Result<Json<serde_json::Value>, MatrixError> {
    let not_found = || MatrixError::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", "No such user");
    let user_id = OwnedUserId::try_from(user_id).map_err(|_| not_found())?;
    if state.namespace.owns(&user_id) && state.sink.user_exists(&user_id).await {
        Ok(Json(json!({})))
    } else {
        Err(not_found())
    }
}

/// # `GET /_matrix/app/v1/rooms/{roomAlias}`
///
/// Switchboard publishes no aliases: conversations are reached by room ID only.
async fn get_room_alias(Path(_alias): Path<String>) -> MatrixError {
    MatrixError::new(
        StatusCode::NOT_FOUND,
        "M_NOT_FOUND",
        "Switchboard provides no room aliases",
    )
}

/// # `POST /_matrix/app/v1/ping`
async fn post_ping() -> Json<serde_json::Value> {
    Json(json!({}))
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use tower::ServiceExt;

    use super::*;
    use crate::registration::GenerateOptions;

    /// Records what it is given, and can be told to fail like a full disk.
    #[derive(Default)]
    struct RecordingSink {
        transactions: Mutex<Vec<(String, Vec<String>)>>,
        fail: bool,
    }

    #[async_trait::async_trait]
    impl EventSink for RecordingSink {
        async fn record_transaction(
            &self,
            txn_id: &str,
            events: Vec<Raw<AnyTimelineEvent>>,
        ) -> Result<(), SinkError> {
            if self.fail {
                return Err(SinkError("disk full".into()));
            }
            let events = events.iter().map(|e| e.json().get().to_owned()).collect();
            self.transactions
                .lock()
                .unwrap()
                .push((txn_id.to_owned(), events));
            Ok(())
        }
        async fn user_exists(&self, user_id: &UserId) -> bool {
            user_id.localpart() == "_sb_known"
        }
    }

    fn app(sink: Arc<RecordingSink>) -> (Router, String) {
        let registration = crate::AppserviceRegistration::generate(&GenerateOptions {
            id: "test",
            url: "http://127.0.0.1:1",
            bot_localpart: "bot",
            ghost_prefix: "_sb_",
        });
        let token = registration.inner.hs_token.clone();
        (
            router(AppserviceState::new(Arc::new(registration), sink)),
            token,
        )
    }

    async fn call(
        app: &Router,
        method: &str,
        uri: &str,
        auth: Option<&str>,
        body: &str,
    ) -> (StatusCode, serde_json::Value) {
        let mut req = http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json");
        if let Some(token) = auth {
            req = req.header("authorization", format!("Bearer {token}"));
        }
        let response = app
            .clone()
            .oneshot(req.body(Body::from(body.to_owned())).unwrap())
            .await
            .unwrap();
        let status = response.status();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null),
        )
    }

    const EVENT: &str = r#"{"type":"m.room.message","event_id":"$e1","room_id":"!r:x","sender":"@a:x","origin_server_ts":1,"content":{"msgtype":"m.text","body":"hi"}}"#;

    /// Every endpoint the homeserver calls, as (method, path, body).
    const ENDPOINTS: [(&str, &str, &str); 4] = [
        ("PUT", "/_matrix/app/v1/transactions/1", r#"{"events":[]}"#),
        ("GET", "/_matrix/app/v1/users/@_sb_known:x", ""),
        ("GET", "/_matrix/app/v1/rooms/%23a:x", ""),
        ("POST", "/_matrix/app/v1/ping", r#"{"transaction_id":"p"}"#),
    ];

    #[tokio::test]
    async fn a_wrong_hs_token_is_forbidden_and_records_nothing() {
        let sink = Arc::new(RecordingSink::default());
        let (app, _) = app(sink.clone());
        let body = format!(r#"{{"events":[{EVENT}]}}"#);
        for auth in [Some("wrong"), Some("")] {
            let (status, json) =
                call(&app, "PUT", "/_matrix/app/v1/transactions/1", auth, &body).await;
            assert_eq!(status, StatusCode::FORBIDDEN);
            assert_eq!(json["errcode"], "M_FORBIDDEN");
        }
        for (method, uri, body) in ENDPOINTS {
            let (status, json) = call(&app, method, uri, Some("wrong"), body).await;
            assert_eq!(
                (status, json["errcode"].as_str()),
                (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
                "{method} {uri}"
            );
            let uri = format!("{uri}?access_token=wrong");
            let (status, json) = call(&app, method, &uri, None, body).await;
            assert_eq!(
                (status, json["errcode"].as_str()),
                (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
                "{method} {uri}"
            );
        }
        assert!(sink.transactions.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn no_token_at_all_is_401_missing_token_on_every_endpoint() {
        let sink = Arc::new(RecordingSink::default());
        let (app, _) = app(sink.clone());
        for (method, uri, body) in ENDPOINTS {
            let (status, json) = call(&app, method, uri, None, body).await;
            assert_eq!(
                (status, json["errcode"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("M_MISSING_TOKEN")),
                "{method} {uri}"
            );
        }
        assert!(sink.transactions.lock().unwrap().is_empty());
    }

    /// An `m.room.message` whose body makes the event `bytes` long or longer.
    fn event_of_size(event_id: &str, bytes: usize) -> String {
        let body = "x".repeat(bytes);
        format!(
            r#"{{"type":"m.room.message","event_id":"{event_id}","room_id":"!r:x","sender":"@a:x","origin_server_ts":1,"content":{{"msgtype":"m.text","body":"{body}"}}}}"#
        )
    }

    #[tokio::test]
    async fn an_event_over_64_kib_is_refused_alone() {
        let sink = Arc::new(RecordingSink::default());
        let (app, token) = app(sink.clone());
        // Just under the limit is fine; one over it is not, and its neighbours still count.
        let fits = event_of_size("$fits", 65536 - 250);
        assert!(fits.len() <= 65536);
        let body = format!(
            r#"{{"events":[{big}, {EVENT}, {fits}]}}"#,
            big = event_of_size("$big", 65536),
        );
        let (status, _) = call(
            &app,
            "PUT",
            "/_matrix/app/v1/transactions/big",
            Some(&token),
            &body,
        )
        .await;
        assert_eq!(status, StatusCode::OK, "the other events must be taken");
        let recorded = sink.transactions.lock().unwrap();
        let ids: Vec<&str> = recorded[0]
            .1
            .iter()
            .map(|e| {
                if e.contains("$big") {
                    "$big"
                } else if e.contains("$fits") {
                    "$fits"
                } else {
                    "$e1"
                }
            })
            .collect();
        assert_eq!(ids, ["$e1", "$fits"]);
    }

    #[tokio::test]
    async fn what_the_homeserver_adds_in_unsigned_does_not_count_towards_the_limit() {
        let sink = Arc::new(RecordingSink::default());
        let (app, token) = app(sink.clone());
        // A state event near the limit arrives with its previous content in `unsigned`,
        // which is not part of the event the limit applies to.
        let prev = "p".repeat(60_000);
        let event = format!(
            r#"{{"type":"m.room.topic","state_key":"","event_id":"$topic","room_id":"!r:x","sender":"@a:x","origin_server_ts":1,"content":{{"topic":"{t}"}},"unsigned":{{"prev_content":{{"topic":"{prev}"}}}}}}"#,
            t = "t".repeat(60_000)
        );
        assert!(event.len() > 65536);
        let body = format!(r#"{{"events":[{event}]}}"#);
        let (status, _) = call(
            &app,
            "PUT",
            "/_matrix/app/v1/transactions/u",
            Some(&token),
            &body,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(sink.transactions.lock().unwrap()[0].1.len(), 1);
    }

    /// A transaction that skips numbers is refused once (the homeserver may have stranded
    /// one before it, `txn_order.rs`), recorded once the ones before it came, and recorded as
    /// it is when it comes back first.
    #[tokio::test]
    async fn a_transaction_that_skips_numbers_waits_for_the_ones_before_it() {
        let sink = Arc::new(RecordingSink::default());
        let (app, token) = app(sink.clone());
        let put = |id: &'static str| {
            let app = app.clone();
            let token = token.clone();
            async move {
                let uri = format!("/_matrix/app/v1/transactions/{id}");
                let (status, json) =
                    call(&app, "PUT", &uri, Some(&token), r#"{"events":[]}"#).await;
                (status, json["errcode"].as_str().map(str::to_owned))
            }
        };
        assert_eq!(put("41").await.0, StatusCode::OK);
        assert_eq!(
            put("43").await,
            (StatusCode::SERVICE_UNAVAILABLE, Some("M_UNKNOWN".into()))
        );
        assert_eq!(put("42").await.0, StatusCode::OK);
        assert_eq!(put("43").await.0, StatusCode::OK);
        // Refused, and sent again before anything lower: taken.
        assert_eq!(put("50").await.0, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(put("50").await.0, StatusCode::OK);
        let ids: Vec<String> = sink
            .transactions
            .lock()
            .unwrap()
            .iter()
            .map(|(id, _)| id.clone())
            .collect();
        assert_eq!(ids, ["41", "42", "43", "50"]);
    }

    #[tokio::test]
    async fn legacy_access_token_query_parameter_is_accepted() {
        let sink = Arc::new(RecordingSink::default());
        let (app, token) = app(sink.clone());
        let uri = format!("/_matrix/app/v1/transactions/7?access_token={token}");
        let (status, _) = call(&app, "PUT", &uri, None, r#"{"events":[]}"#).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(sink.transactions.lock().unwrap()[0].0, "7");
    }

    #[tokio::test]
    async fn malformed_bodies_get_400_with_a_matrix_code() {
        let sink = Arc::new(RecordingSink::default());
        let (app, token) = app(sink.clone());
        let uri = "/_matrix/app/v1/transactions/1";
        let (status, json) = call(&app, "PUT", uri, Some(&token), "{oops").await;
        assert_eq!(
            (status, json["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_NOT_JSON"))
        );
        let (status, json) = call(&app, "PUT", uri, Some(&token), r#"{"events":{}}"#).await;
        assert_eq!(
            (status, json["errcode"].as_str()),
            (StatusCode::BAD_REQUEST, Some("M_BAD_JSON"))
        );
        assert!(sink.transactions.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn an_odd_event_does_not_fail_its_transaction() {
        let sink = Arc::new(RecordingSink::default());
        let (app, token) = app(sink.clone());
        let body = format!(r#"{{"events":[{{"type":42}}, "not even an object", {EVENT}]}}"#);
        let (status, _) = call(
            &app,
            "PUT",
            "/_matrix/app/v1/transactions/9",
            Some(&token),
            &body,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        let recorded = sink.transactions.lock().unwrap();
        assert_eq!(
            recorded[0].1.len(),
            3,
            "every event is handed on raw, the odd ones too"
        );
        assert!(recorded[0].1[2].contains("$e1"));
    }

    #[tokio::test]
    async fn a_transaction_that_cannot_be_recorded_is_not_acknowledged() {
        let sink = Arc::new(RecordingSink {
            fail: true,
            ..Default::default()
        });
        let (app, token) = app(sink);
        let body = format!(r#"{{"events":[{EVENT}]}}"#);
        let (status, json) = call(
            &app,
            "PUT",
            "/_matrix/app/v1/transactions/1",
            Some(&token),
            &body,
        )
        .await;
        assert_eq!(
            status,
            StatusCode::INTERNAL_SERVER_ERROR,
            "the homeserver must retry"
        );
        assert!(
            !json["error"].as_str().unwrap().contains("disk"),
            "internal errors stay internal"
        );
    }

    #[tokio::test]
    async fn user_query_answers_only_for_known_users_in_our_namespace() {
        let (app, token) = app(Arc::new(RecordingSink::default()));
        let (status, _) = call(
            &app,
            "GET",
            "/_matrix/app/v1/users/@_sb_known:x",
            Some(&token),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        for user in ["@_sb_unknown:x", "@alice:x", "not-a-user-id"] {
            let (status, json) = call(
                &app,
                "GET",
                &format!("/_matrix/app/v1/users/{user}"),
                Some(&token),
                "",
            )
            .await;
            assert_eq!(
                (status, json["errcode"].as_str()),
                (StatusCode::NOT_FOUND, Some("M_NOT_FOUND")),
                "{user}"
            );
        }
        let (status, _) = call(
            &app,
            "GET",
            "/_matrix/app/v1/rooms/%23a:x",
            Some(&token),
            "",
        )
        .await;
        assert_eq!(status, StatusCode::NOT_FOUND);
        let (status, _) = call(
            &app,
            "POST",
            "/_matrix/app/v1/ping",
            Some(&token),
            r#"{"transaction_id":"p"}"#,
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
}
