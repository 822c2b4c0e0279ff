//! The HTTP API the widget uses: which topics exist, and "start a conversation".
//!
//! The visitor authenticates with their own homeserver access token; the bridge asks the
//! homeserver whose token it is, so a visitor can only ever get rooms for their own user.

use std::{net::IpAddr, net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::bridge::{Bridge, VisitorError};

#[derive(Clone)]
pub struct VisitorApiState {
    bridge: Arc<Bridge>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
}

impl VisitorApiState {
    pub fn new(bridge: Arc<Bridge>) -> Self {
        let limits = &bridge.config().limits;
        let per_minute =
            NonZeroU32::new(limits.conversations_per_minute.max(1)).expect("max(1) is non-zero");
        let burst = NonZeroU32::new(limits.burst.max(1)).expect("max(1) is non-zero");
        let limiter = RateLimiter::keyed(Quota::per_minute(per_minute).allow_burst(burst));
        Self {
            bridge,
            limiter: Arc::new(limiter),
        }
    }
}

/// An error as the widget sees it: a Matrix-style body with a sentence a person can read.
/// Internal error text (SQL, homeserver replies) is logged, never sent.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    errcode: &'static str,
    message: String,
    retry_after: Option<Duration>,
}

impl ApiError {
    fn new(status: StatusCode, errcode: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            errcode,
            message: message.into(),
            retry_after: None,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({ "errcode": self.errcode, "error": self.message });
        let mut response = match self.retry_after {
            Some(after) => {
                body["retry_after_ms"] = json!(after.as_millis() as u64);
                let secs = after.as_secs().max(1).to_string();
                (self.status, [(header::RETRY_AFTER, secs)], Json(body)).into_response()
            }
            None => (self.status, Json(body)).into_response(),
        };
        response.headers_mut().insert(
            header::CACHE_CONTROL,
            header::HeaderValue::from_static("no-store"),
        );
        response
    }
}

impl From<VisitorError> for ApiError {
    fn from(e: VisitorError) -> Self {
        match e {
            VisitorError::UnknownToken => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "Your chat session has expired. Please start again.",
            ),
            VisitorError::UnknownTopic(t) => ApiError::new(
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                format!("There is no topic called {t:?}."),
            ),
            VisitorError::NotYours => ApiError::new(
                StatusCode::NOT_FOUND,
                "M_NOT_FOUND",
                "There is no such conversation.",
            ),
            VisitorError::Forbidden => ApiError::new(
                StatusCode::FORBIDDEN,
                "M_FORBIDDEN",
                "This account cannot start conversations.",
            ),
            other => {
                tracing::error!(error = %other, "a visitor request failed");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "M_UNKNOWN",
                    "The chat service is unavailable right now. Please try again in a moment.",
                )
            }
        }
    }
}

pub fn router(state: VisitorApiState) -> Router {
    // The widget runs on the operator's site, another origin than ours. It authenticates with
    // a bearer header, never cookies, so answering CORS for any origin exposes nothing.
    let cors = tower_http::cors::CorsLayer::new()
        .allow_origin(tower_http::cors::Any)
        .allow_methods([axum::http::Method::GET, axum::http::Method::POST])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE]);
    Router::new()
        .route("/api/v1/config", get(get_config))
        .route("/api/v1/conversations", post(post_conversation))
        .route(
            "/api/v1/conversations/{room_id}/end",
            post(post_end_conversation),
        )
        .layer(cors)
        .with_state(state)
}

#[derive(Serialize)]
struct TopicView<'a> {
    id: &'a str,
    name: &'a str,
}

/// # `GET /api/v1/config`
///
/// Where the homeserver is and which topics are offered.
async fn get_config(State(state): State<VisitorApiState>) -> Json<serde_json::Value> {
    let config = state.bridge.config();
    let topics: Vec<TopicView<'_>> = config
        .topics
        .iter()
        .map(|t| TopicView {
            id: &t.id,
            name: &t.name,
        })
        .collect();
    Json(json!({ "homeserver_url": config.public_homeserver_url, "topics": topics }))
}

/// # `POST /api/v1/conversations/{roomId}/end`
///
/// `Authorization: Bearer <the visitor's homeserver access token>`. Ends the visitor's own
/// conversation; any other room ID answers 404, so nobody learns which rooms exist.
async fn post_end_conversation(
    State(state): State<VisitorApiState>,
    axum::extract::Path(room_id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    let token = bearer(&headers)?;
    state.bridge.end_conversation(token, &room_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "M_MISSING_TOKEN",
                "Sign in to the homeserver first.",
            )
        })
}

/// The address a visitor's request comes from, for rate limiting.
fn client_address(headers: &HeaderMap, peer: SocketAddr, trust_forwarded_for: bool) -> IpAddr {
    if trust_forwarded_for {
        let last_hop = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .last()
            .and_then(|ip| ip.trim().parse().ok());
        if let Some(ip) = last_hop {
            return ip;
        }
    }
    peer.ip()
}

#[derive(Deserialize)]
struct StartRequest {
    topic: String,
    /// The visitor's language (e.g. the browser's `navigator.language`), optional.
    language: Option<String>,
}

/// # `POST /api/v1/conversations`
///
/// `Authorization: Bearer <the visitor's homeserver access token>`, body `{"topic": "..."}`.
/// Answers 201 `{"conversation_id", "room_id"}` (the same value: a conversation is a room).
async fn post_conversation(
    State(state): State<VisitorApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    // Rate-limit before anything costs us a homeserver round trip.
    let client = client_address(
        &headers,
        peer,
        state.bridge.config().limits.trust_forwarded_for,
    );
    if let Err(not_until) = state.limiter.check_key(&client) {
        let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "M_LIMIT_EXCEEDED",
            "Too many new conversations from your address. Please wait a moment.",
        );
        e.retry_after = Some(wait.max(Duration::from_millis(1)));
        return Err(e);
    }
    let token = bearer(&headers)?;
    let request: StartRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_BAD_JSON",
            format!("Expected {{\"topic\": \"...\"}}: {e}"),
        )
    })?;
    let conversation = state
        .bridge
        .start_conversation(token, &request.topic, request.language.as_deref())
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(json!({ "conversation_id": conversation.room_id, "room_id": conversation.room_id })),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_is_used_only_when_trusted_and_only_its_last_hop() {
        let peer: SocketAddr = "10.0.0.1:5000".parse().unwrap();
        let mut headers = HeaderMap::new();
        headers.insert("x-forwarded-for", "1.2.3.4, 203.0.113.9".parse().unwrap());
        assert_eq!(client_address(&headers, peer, false), peer.ip());
        assert_eq!(
            client_address(&headers, peer, true),
            "203.0.113.9".parse::<IpAddr>().unwrap()
        );
        headers.insert("x-forwarded-for", "garbage".parse().unwrap());
        assert_eq!(client_address(&headers, peer, true), peer.ip());
        assert_eq!(client_address(&HeaderMap::new(), peer, true), peer.ip());
    }
}
