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

    /// Whether a user in our namespace exists (answers the homeserver's user query).
    async fn user_exists(&self, user_id: &UserId) -> bool;
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
}

impl AppserviceState {
    pub fn new(registration: Arc<crate::AppserviceRegistration>, sink: Arc<dyn EventSink>) -> Self {
        Self { hs_token: registration.inner.hs_token.as_str().into(), namespace: registration, sink }
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
        Self { status, errcode, message: message.into() }
    }
}

impl IntoResponse for MatrixError {
    fn into_response(self) -> Response {
        (self.status, Json(json!({ "errcode": self.errcode, "error": self.message }))).into_response()
    }
}

/// Synapse sends at most 100 events of at most 64 KiB each per transaction.
const MAX_TRANSACTION_BYTES: usize = 100 * 65536 + 65536;

/// The routes the homeserver calls, all behind the `hs_token` check.
pub fn router(state: AppserviceState) -> Router {
    Router::new()
        .route("/_matrix/app/v1/transactions/{txn_id}", put(put_transaction))
        .route("/_matrix/app/v1/users/{user_id}", get(get_user))
        .route("/_matrix/app/v1/rooms/{alias}", get(get_room_alias))
        .route("/_matrix/app/v1/ping", post(post_ping))
        .layer(DefaultBodyLimit::max(MAX_TRANSACTION_BYTES))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_hs_token))
        .with_state(state)
}

/// Checks the homeserver's token: `Authorization: Bearer` (current spec) or the legacy
/// `access_token` query parameter. The comparison runs in constant time so the token cannot be
/// guessed byte by byte from response timings.
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
        q.split('&').find_map(|kv| kv.strip_prefix("access_token=")).map(str::to_owned)
    });
    let presented = from_header.map(str::to_owned).or(from_query);
    match presented {
        Some(token) if bool::from(token.as_bytes().ct_eq(state.hs_token.as_bytes())) => {
            next.run(request).await
        }
        Some(_) => MatrixError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", "Bad hs_token").into_response(),
        None => MatrixError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", "Missing hs_token")
            .into_response(),
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
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        return Err(MatrixError::new(StatusCode::BAD_REQUEST, "M_NOT_JSON", "Body is not JSON"));
    }
    let http_request = http::Request::builder()
        .method(http::Method::PUT)
        .uri(uri)
        .body(body)
        .map_err(|e| MatrixError::new(StatusCode::BAD_REQUEST, "M_UNRECOGNIZED", e.to_string()))?;
    let request = push_events::v1::Request::try_from_http_request(http_request, &[&txn_id])
        .map_err(|e| {
            MatrixError::new(StatusCode::BAD_REQUEST, "M_BAD_JSON", format!("Malformed transaction: {e}"))
        })?;
    let count = request.events.len();
    state.sink.record_transaction(&txn_id, request.events).await.map_err(|e| {
        tracing::error!(%txn_id, error = %e, "could not record transaction; the homeserver will retry");
        MatrixError::new(StatusCode::INTERNAL_SERVER_ERROR, "M_UNKNOWN", "Could not record transaction")
    })?;
    tracing::debug!(%txn_id, count, "transaction recorded");
    Ok(Json(json!({})))
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
    MatrixError::new(StatusCode::NOT_FOUND, "M_NOT_FOUND", "Switchboard provides no room aliases")
}

/// # `POST /_matrix/app/v1/ping`
async fn post_ping() -> Json<serde_json::Value> {
    Json(json!({}))
}
