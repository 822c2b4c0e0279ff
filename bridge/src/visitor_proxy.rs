//! Proxied visitors (`[visitors] mode = "proxied"`): a narrow Matrix client-server proxy.
//!
//! Switchboard registers the visitor's user in its own namespace *without* logging it in, so
//! the homeserver never issues a token for it (this is what works behind Matrix Authentication
//! Service or with MSC4190, where appservice logins are refused). The widget gets a session
//! token of Switchboard's own instead (`sbv_` + 43 random characters; only its SHA-256 is
//! stored, with an expiry) and uses `{switchboard}/visitor-proxy` as its homeserver URL.
//!
//! The proxy answers only what the widget needs, and only for the visitor's own conversation
//! rooms (looked up in the store by visitor user ID): `whoami` (answered here), joining,
//! sending `m.room.message`, reading messages and state, setting their own display name, and
//! `/sync` with a filter limited to their rooms. Each is forwarded with the `as_token` and the
//! `user_id=` identity assertion for that visitor alone; the visitor can name no other user.
//! Everything else answers `404 M_UNRECOGNIZED`, other rooms and users `403 M_FORBIDDEN`.
//! Paths sent on are rebuilt from decoded, checked and re-encoded segments, never copied.

use std::{num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    Router,
    body::{Body, Bytes},
    extract::{Path, RawQuery, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{MethodRouter, any, get, post, put},
};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use rand::Rng;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use switchboard_appservice::{
    HomeserverClient,
    ruma::{OwnedUserId, UserId},
};

use crate::{
    bridge::Bridge,
    store::{Store, StoreError},
    visitor_api::{AllowedOrigins, ApiError, cors_layer_for, too_many},
};

/// Where the proxy is mounted; the widget is told `{switchboard}/visitor-proxy`.
pub const PROXY_PREFIX: &str = "/visitor-proxy";

/// The device ID proxied visitors are told they have (they have none on the homeserver).
pub const DEVICE_ID: &str = "SWITCHBOARD";

/// Every session token starts with this, so one found somewhere is recognisable.
const TOKEN_PREFIX: &str = "sbv_";

/// The longest a proxied `/sync` may long-poll, whatever the widget asks.
const MAX_SYNC_TIMEOUT_MS: u64 = 60_000;

/// The SHA-256 of a session token, hex: what the store keeps instead of the token.
pub fn hash_token(token: &str) -> String {
    Sha256::digest(token.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A fresh session token: the prefix and 43 characters of `[A-Za-z0-9]` (about 256 bits).
fn new_token() -> String {
    let random: String = rand::thread_rng()
        .sample_iter(rand::distributions::Alphanumeric)
        .take(43)
        .map(char::from)
        .collect();
    format!("{TOKEN_PREFIX}{random}")
}

/// Issues a session for `user`, valid for `ttl`; returns the token (stored only as a hash).
pub async fn issue_session(
    store: &Store,
    user: &UserId,
    ttl: Duration,
) -> Result<String, StoreError> {
    let token = new_token();
    let expires_at = store
        .now_ms()
        .saturating_add(ttl.as_millis().min(i64::MAX as u128) as i64);
    store
        .insert_visitor_session(&hash_token(&token), user.as_str(), expires_at)
        .await?;
    Ok(token)
}

/// The visitor a session token belongs to, if it is one of ours and has not expired.
pub async fn resolve_session(
    store: &Store,
    token: &str,
) -> Result<Option<OwnedUserId>, StoreError> {
    if !token.starts_with(TOKEN_PREFIX) {
        return Ok(None);
    }
    let Some(user) = store
        .visitor_session(&hash_token(token), store.now_ms())
        .await?
    else {
        return Ok(None);
    };
    Ok(UserId::parse(user).ok())
}

#[derive(Clone)]
pub struct ProxyState {
    bridge: Arc<Bridge>,
    client: Arc<HomeserverClient>,
    /// Joins, sends and profile changes per visitor. Needed because requests made with the
    /// `as_token` are exempt from the homeserver's own rate limits (`rate_limited: false`).
    write_limiter: Arc<DefaultKeyedRateLimiter<OwnedUserId>>,
    allowed_origins: AllowedOrigins,
}

impl ProxyState {
    pub fn new(bridge: Arc<Bridge>, client: Arc<HomeserverClient>) -> Self {
        // A person typing sends a few messages a minute; this lets a burst of 20 through,
        // then 2 a second.
        let quota = Quota::per_second(NonZeroU32::new(2).expect("non-zero"))
            .allow_burst(NonZeroU32::new(20).expect("non-zero"));
        Self {
            bridge,
            client,
            write_limiter: Arc::new(RateLimiter::keyed(quota)),
            allowed_origins: AllowedOrigins::default(),
        }
    }

    /// Which other origins may call the proxy from a browser (the same list as `/api/v1`).
    pub fn with_allowed_origins(mut self, origins: AllowedOrigins) -> Self {
        self.allowed_origins = origins;
        self
    }

    fn store(&self) -> &Store {
        self.bridge.store()
    }
}

/// Anything else in the proxy's space answers this, whatever the method.
fn unrecognized_route<S: Clone + Send + Sync + 'static>(
    method_router: MethodRouter<S>,
) -> MethodRouter<S> {
    method_router.fallback(unrecognized)
}

async fn unrecognized() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "M_UNRECOGNIZED",
        "Switchboard's visitor proxy does not serve this request.",
    )
}

pub fn router(state: ProxyState) -> Router {
    let cors = cors_layer_for(
        &state.allowed_origins,
        [Method::GET, Method::POST, Method::PUT],
    );
    let c = "/visitor-proxy/_matrix/client/v3";
    let routes = Router::new()
        .route(
            &format!("{c}/account/whoami"),
            unrecognized_route(get(whoami)),
        )
        .route(
            &format!("{c}/join/{{room}}"),
            unrecognized_route(post(join)),
        )
        .route(
            &format!("{c}/rooms/{{room}}/send/{{event_type}}/{{txn}}"),
            unrecognized_route(put(send)),
        )
        .route(
            &format!("{c}/rooms/{{room}}/messages"),
            unrecognized_route(get(messages)),
        )
        .route(
            &format!("{c}/rooms/{{room}}/state"),
            unrecognized_route(get(all_state)),
        )
        .route(
            &format!("{c}/rooms/{{room}}/state/{{event_type}}"),
            unrecognized_route(get(state_event_empty_key)),
        )
        .route(
            &format!("{c}/rooms/{{room}}/state/{{event_type}}/"),
            unrecognized_route(get(state_event_empty_key)),
        )
        .route(
            &format!("{c}/rooms/{{room}}/state/{{event_type}}/{{state_key}}"),
            unrecognized_route(get(state_event)),
        )
        .route(
            &format!("{c}/profile/{{user}}/displayname"),
            unrecognized_route(put(set_displayname)),
        )
        .route(&format!("{c}/sync"), unrecognized_route(get(sync)))
        .route(PROXY_PREFIX, any(unrecognized))
        .route("/visitor-proxy/{*rest}", any(unrecognized))
        .with_state(state);
    match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    }
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "M_FORBIDDEN", message)
}

fn store_failed(e: StoreError) -> ApiError {
    tracing::error!(error = %e, "visitor proxy: store failed");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "M_UNKNOWN",
        "The chat service is unavailable right now. Please try again in a moment.",
    )
}

/// Who is asking: the session token from `Authorization: Bearer`, resolved in our store.
/// A query naming a `user_id` (identity assertion) is refused outright: only Switchboard
/// asserts identities, and only the session's own.
async fn authenticate(
    state: &ProxyState,
    headers: &HeaderMap,
    raw_query: Option<&str>,
) -> Result<OwnedUserId, ApiError> {
    if query_pairs(raw_query).any(|(k, _)| k == "user_id") {
        return Err(forbidden("A visitor can only act as themselves."));
    }
    let token = crate::visitor_api::bearer_token(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Missing access token.",
        )
    })?;
    resolve_session(state.store(), token)
        .await
        .map_err(store_failed)?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::UNAUTHORIZED,
                "M_UNKNOWN_TOKEN",
                "Your chat session has expired. Please start again.",
            )
        })
}

/// Refuses every room that is not one of the visitor's conversations.
async fn own_room(state: &ProxyState, visitor: &UserId, room: &str) -> Result<(), ApiError> {
    if state
        .store()
        .is_visitor_room(visitor.as_str(), room)
        .await
        .map_err(store_failed)?
    {
        Ok(())
    } else {
        Err(forbidden("You can only reach your own conversation."))
    }
}

fn check_write_rate(state: &ProxyState, visitor: &OwnedUserId) -> Result<(), ApiError> {
    crate::visitor_api::check_keyed(&state.write_limiter, visitor).map_err(|not_until| {
        too_many(
            "proxy",
            not_until,
            "You are sending too fast. Please wait a moment.",
        )
    })
}

fn query_pairs(raw: Option<&str>) -> impl Iterator<Item = (String, String)> + '_ {
    url::form_urlencoded::parse(raw.unwrap_or_default().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
}

/// The query parameters named in `allowed`, in order; everything else is dropped.
fn allowed_query(raw: Option<&str>, allowed: &[&str]) -> Vec<(String, String)> {
    query_pairs(raw)
        .filter(|(k, _)| allowed.contains(&k.as_str()))
        .collect()
}

/// One path segment for the homeserver: percent-encoded except for unreserved characters, so
/// it can never become several segments; `.` and `..` (which URL parsers resolve) and empty
/// segments are refused.
fn segment(s: &str) -> Result<String, ApiError> {
    if s.is_empty() || s == "." || s == ".." {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "M_INVALID_PARAM",
            "Invalid path segment.",
        ));
    }
    Ok(encode(s))
}

fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Sends the request on as `visitor` and streams the homeserver's answer back: status,
/// content type and body, nothing else (no headers of the homeserver's reach the browser).
/// The body is passed through as it arrives, so a long-polling `/sync` is not buffered;
/// when the browser goes away, axum drops this future or the body, which drops the
/// homeserver request with it.
async fn forward(
    state: &ProxyState,
    method: Method,
    path: String,
    query: Vec<(String, String)>,
    visitor: &UserId,
    body: Option<Bytes>,
    timeout: Duration,
) -> Result<Response, ApiError> {
    let body = body.map(|b| ("application/json".to_owned(), b));
    let upstream = state
        .client
        .forward_as(method, &path, &query, visitor, body, timeout)
        .await
        .map_err(|e| {
            tracing::warn!(error = %e, "visitor proxy: homeserver unreachable");
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "M_UNKNOWN",
                "The chat service cannot reach its homeserver right now.",
            )
        })?;
    let status =
        StatusCode::from_u16(upstream.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = upstream
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok())
        .unwrap_or_else(|| HeaderValue::from_static("application/json"));
    let chunks = futures_util::stream::unfold(Some(upstream), |upstream| async move {
        let mut upstream = upstream?;
        match upstream.chunk().await {
            Ok(Some(bytes)) => Some((Ok(bytes), Some(upstream))),
            Ok(None) => None,
            // End the stream after reporting the error once.
            Err(e) => Some((Err(std::io::Error::other(e)), None)),
        }
    });
    let mut response = Response::new(Body::from_stream(chunks));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, content_type);
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}

const SHORT: Duration = Duration::from_secs(30);

/// # `GET /visitor-proxy/_matrix/client/v3/account/whoami`
///
/// Answered here from the session: the visitor has no device on the homeserver.
async fn whoami(
    State(state): State<ProxyState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let visitor = authenticate(&state, &headers, q.as_deref()).await?;
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        axum::Json(json!({"user_id": visitor, "device_id": DEVICE_ID, "is_guest": false})),
    )
        .into_response())
}

/// # `POST /visitor-proxy/_matrix/client/v3/join/{roomId}`
///
/// Only the visitor's own conversation rooms.
async fn join(
    State(state): State<ProxyState>,
    Path(room): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let visitor = authenticate(&state, &headers, q.as_deref()).await?;
    own_room(&state, &visitor, &room).await?;
    check_write_rate(&state, &visitor)?;
    let path = format!("/_matrix/client/v3/join/{}", segment(&room)?);
    let body = if body.is_empty() {
        Bytes::from_static(b"{}")
    } else {
        body
    };
    let query = allowed_query(q.as_deref(), &["via", "server_name"]);
    forward(
        &state,
        Method::POST,
        path,
        query,
        &visitor,
        Some(body),
        SHORT,
    )
    .await
}

/// # `PUT /visitor-proxy/_matrix/client/v3/rooms/{roomId}/send/m.room.message/{txnId}`
///
/// Only `m.room.message`, only in the visitor's own conversation rooms.
async fn send(
    State(state): State<ProxyState>,
    Path((room, event_type, txn)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let visitor = authenticate(&state, &headers, q.as_deref()).await?;
    if event_type != "m.room.message" {
        return Err(forbidden("Visitors can only send messages."));
    }
    own_room(&state, &visitor, &room).await?;
    check_write_rate(&state, &visitor)?;
    let path = format!(
        "/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
        segment(&room)?,
        segment(&txn)?
    );
    forward(
        &state,
        Method::PUT,
        path,
        vec![],
        &visitor,
        Some(body),
        SHORT,
    )
    .await
}

/// # `GET /visitor-proxy/_matrix/client/v3/rooms/{roomId}/messages`
async fn messages(
    State(state): State<ProxyState>,
    Path(room): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let visitor = authenticate(&state, &headers, q.as_deref()).await?;
    own_room(&state, &visitor, &room).await?;
    let path = format!("/_matrix/client/v3/rooms/{}/messages", segment(&room)?);
    let query = allowed_query(q.as_deref(), &["from", "to", "dir", "limit", "filter"]);
    forward(&state, Method::GET, path, query, &visitor, None, SHORT).await
}

/// # `GET /visitor-proxy/_matrix/client/v3/rooms/{roomId}/state`
async fn all_state(
    State(state): State<ProxyState>,
    Path(room): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let visitor = authenticate(&state, &headers, q.as_deref()).await?;
    own_room(&state, &visitor, &room).await?;
    let path = format!("/_matrix/client/v3/rooms/{}/state", segment(&room)?);
    forward(&state, Method::GET, path, vec![], &visitor, None, SHORT).await
}

/// # `GET /visitor-proxy/_matrix/client/v3/rooms/{roomId}/state/{eventType}[/]`
async fn state_event_empty_key(
    state: State<ProxyState>,
    Path((room, event_type)): Path<(String, String)>,
    q: RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    state_event(state, Path((room, event_type, String::new())), q, headers).await
}

/// # `GET /visitor-proxy/_matrix/client/v3/rooms/{roomId}/state/{eventType}/{stateKey}`
async fn state_event(
    State(state): State<ProxyState>,
    Path((room, event_type, state_key)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let visitor = authenticate(&state, &headers, q.as_deref()).await?;
    own_room(&state, &visitor, &room).await?;
    // The state key may be empty (most room state) but may not walk out of the path.
    let key = if state_key.is_empty() {
        String::new()
    } else {
        segment(&state_key)?
    };
    let path = format!(
        "/_matrix/client/v3/rooms/{}/state/{}/{key}",
        segment(&room)?,
        segment(&event_type)?
    );
    forward(&state, Method::GET, path, vec![], &visitor, None, SHORT).await
}

/// # `PUT /visitor-proxy/_matrix/client/v3/profile/{userId}/displayname`
///
/// The visitor's own display name only.
async fn set_displayname(
    State(state): State<ProxyState>,
    Path(user): Path<String>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let visitor = authenticate(&state, &headers, q.as_deref()).await?;
    if user != visitor.as_str() {
        return Err(forbidden("A visitor can only change their own name."));
    }
    check_write_rate(&state, &visitor)?;
    let path = format!("/_matrix/client/v3/profile/{}/displayname", segment(&user)?);
    forward(
        &state,
        Method::PUT,
        path,
        vec![],
        &visitor,
        Some(body),
        SHORT,
    )
    .await
}

/// # `GET /visitor-proxy/_matrix/client/v3/sync`
///
/// Long-polls the homeserver with a filter that lets through the visitor's own conversation
/// rooms only (and no presence). The widget's own filter is kept where it stays within those
/// rooms; one naming any other room is refused; a stored filter ID is replaced.
async fn sync(
    State(state): State<ProxyState>,
    RawQuery(q): RawQuery,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let visitor = authenticate(&state, &headers, q.as_deref()).await?;
    let own = state
        .store()
        .visitor_rooms(visitor.as_str())
        .await
        .map_err(store_failed)?;
    let mut query = allowed_query(q.as_deref(), &["since", "full_state", "set_presence"]);
    let requested = query_pairs(q.as_deref()).find(|(k, _)| k == "filter");
    let filter = sync_filter(requested.as_ref().map(|(_, v)| v.as_str()), &own)?;
    query.push(("filter".into(), filter.to_string()));
    let timeout_ms = query_pairs(q.as_deref())
        .find(|(k, _)| k == "timeout")
        .and_then(|(_, v)| v.parse::<u64>().ok())
        .unwrap_or(0)
        .min(MAX_SYNC_TIMEOUT_MS);
    query.push(("timeout".into(), timeout_ms.to_string()));
    // Generous: the homeserver holds the request up to timeout_ms, then must still compute
    // and send the answer.
    let limit = Duration::from_millis(timeout_ms) + Duration::from_secs(60);
    let path = "/_matrix/client/v3/sync".to_owned();
    forward(&state, Method::GET, path, query, &visitor, None, limit).await
}

/// The filter a proxied `/sync` runs with: the widget's (inline JSON) with `room.rooms`
/// limited to the visitor's own rooms and presence switched off. A filter that names a room
/// that is not theirs is refused rather than quietly narrowed, so a bug shows.
fn sync_filter(requested: Option<&str>, own_rooms: &[String]) -> Result<Value, ApiError> {
    let mut filter = match requested.map(str::trim) {
        Some(text) if text.starts_with('{') => {
            let value: Value = serde_json::from_str(text).map_err(|_| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "M_INVALID_PARAM",
                    "The filter is not valid JSON.",
                )
            })?;
            if !value.is_object() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "M_INVALID_PARAM",
                    "The filter must be a JSON object.",
                ));
            }
            value
        }
        // No filter, or the ID of a stored one we cannot see into: use our own.
        _ => json!({}),
    };
    if !filter["room"].is_object() {
        filter["room"] = json!({});
    }
    let rooms = match &filter["room"]["rooms"] {
        Value::Null => own_rooms.to_vec(),
        Value::Array(named) => {
            let mut rooms = Vec::with_capacity(named.len());
            for room in named {
                match room.as_str() {
                    Some(r) if own_rooms.iter().any(|o| o == r) => rooms.push(r.to_owned()),
                    _ => return Err(forbidden("You can only reach your own conversation.")),
                }
            }
            rooms
        }
        _ => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "M_INVALID_PARAM",
                "room.rooms must be a list of room IDs.",
            ));
        }
    };
    filter["room"]["rooms"] = json!(rooms);
    filter["presence"] = json!({"types": []});
    Ok(filter)
}

/// What `switchboard_bridge::fuzzing::visitor_proxy` runs: the parts of a proxied request
/// that come from the browser and are read here (a path segment, the query, the sync filter),
/// each checked against what it must give.
pub(crate) mod fuzz_support {
    use super::*;

    /// The rooms the fuzzed visitor owns.
    const OWN: [&str; 2] = ["!a:example.org", "!b:example.org"];

    /// A path segment: refused, or one segment that decodes back to exactly what was given.
    pub(crate) fn path_segment(s: &str) {
        let Ok(encoded) = segment(s) else {
            assert!(s.is_empty() || s == "." || s == "..", "{s:?} refused");
            return;
        };
        assert!(!encoded.is_empty() && encoded != "." && encoded != "..");
        let bytes = encoded.as_bytes();
        let mut decoded = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let b = bytes[i];
            if b == b'%' {
                let hex = encoded.get(i + 1..i + 3).expect("two digits after %");
                assert!(
                    hex.bytes().all(|h| matches!(h, b'0'..=b'9' | b'A'..=b'F')),
                    "%{hex} in {encoded}"
                );
                decoded.push(u8::from_str_radix(hex, 16).expect("hex"));
                i += 3;
            } else {
                assert!(
                    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~'),
                    "{:?} unencoded in {encoded}",
                    b as char
                );
                decoded.push(b);
                i += 1;
            }
        }
        assert_eq!(decoded, s.as_bytes(), "{encoded} is not {s:?}");
    }

    /// A query: only the named parameters go on, every one of them, in order.
    pub(crate) fn query(raw: &str) {
        let allowed = ["since", "full_state", "set_presence"];
        let kept = allowed_query(Some(raw), &allowed);
        let named: Vec<_> = query_pairs(Some(raw))
            .filter(|(k, _)| allowed.contains(&k.as_str()))
            .collect();
        assert_eq!(kept, named);
    }

    /// A `/sync` filter: refused, or one that reaches only the visitor's rooms with presence
    /// off, whatever else it says.
    pub(crate) fn filter(requested: &str) {
        let own: Vec<String> = OWN.map(str::to_owned).into();
        let Ok(filter) = sync_filter(Some(requested), &own) else {
            return;
        };
        let rooms = filter["room"]["rooms"]
            .as_array()
            .unwrap_or_else(|| panic!("no room list in {filter}"));
        for room in rooms {
            assert!(
                room.as_str().is_some_and(|r| OWN.contains(&r)),
                "{room} in {filter}"
            );
        }
        assert_eq!(filter["presence"], json!({"types": []}), "{filter}");
    }

    /// The headers both visitor APIs read: a bearer token is what follows `Bearer `, and the
    /// client address is the peer's unless `X-Forwarded-For` is trusted and its last hop is an
    /// address.
    pub(crate) fn headers(value: &str) {
        let Ok(value) = HeaderValue::from_str(value) else {
            return;
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.clone());
        headers.insert("x-forwarded-for", value.clone());
        let text = value.to_str().ok();
        if let Some(token) = crate::visitor_api::bearer_token(&headers) {
            assert!(!token.is_empty());
            assert_eq!(text, Some(format!("Bearer {token}").as_str()));
        }
        let peer: std::net::SocketAddr = ([192, 0, 2, 1], 4000).into();
        assert_eq!(
            crate::visitor_api::client_address(&headers, peer, false),
            peer.ip()
        );
        let client = crate::visitor_api::client_address(&headers, peer, true);
        if client != peer.ip() {
            let last = text.and_then(|t| t.rsplit(',').next()).map(str::trim);
            assert_eq!(last.and_then(|l| l.parse().ok()), Some(client));
        }
        if let std::net::IpAddr::V6(v6) = crate::visitor_api::limit_key(client) {
            assert_eq!(v6.to_bits() as u64, 0, "{v6} is not a /64");
            assert!(v6.to_ipv4_mapped().is_none());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_random_prefixed_and_stored_only_as_a_hash() {
        let a = new_token();
        let b = new_token();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX) && a.len() == TOKEN_PREFIX.len() + 43);
        let hash = hash_token(&a);
        assert_eq!(hash.len(), 64);
        assert!(!hash.contains(&a[TOKEN_PREFIX.len()..]));
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn the_sync_filter_reaches_only_own_rooms() {
        let own = vec!["!a:x".to_owned(), "!b:x".to_owned()];
        // The widget's filter: kept, presence off.
        let widget = json!({"room": {"rooms": ["!a:x"], "timeline": {"limit": 50}}}).to_string();
        let f = sync_filter(Some(&widget), &own).unwrap();
        assert_eq!(f["room"]["rooms"], json!(["!a:x"]));
        assert_eq!(f["room"]["timeline"]["limit"], 50);
        assert_eq!(f["presence"], json!({"types": []}));
        // No filter, or a stored filter's ID: all own rooms and nothing else.
        for requested in [None, Some("12"), Some("{}")] {
            let f = sync_filter(requested, &own).unwrap();
            assert_eq!(f["room"]["rooms"], json!(own), "{requested:?}");
        }
        // A visitor without conversations sees no rooms at all.
        assert_eq!(sync_filter(None, &[]).unwrap()["room"]["rooms"], json!([]));
        // Another room, or something that is not a list: refused.
        let other = json!({"room": {"rooms": ["!a:x", "!other:x"]}}).to_string();
        assert!(sync_filter(Some(&other), &own).is_err());
        let odd = json!({"room": {"rooms": "!a:x"}}).to_string();
        assert!(sync_filter(Some(&odd), &own).is_err());
        assert!(sync_filter(Some("{not json"), &own).is_err());
    }

    #[test]
    fn path_segments_cannot_walk_out_of_their_place() {
        assert_eq!(
            segment("!room:example.org").unwrap(),
            "%21room%3Aexample.org"
        );
        assert_eq!(segment("a/../b").unwrap(), "a%2F..%2Fb");
        for bad in ["", ".", ".."] {
            assert!(segment(bad).is_err(), "{bad:?}");
        }
    }
}
