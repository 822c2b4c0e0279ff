//! The HTTP API the widget uses: which topics exist, "start a conversation", and, where the
//! homeserver has no guests, "give me a visitor account".
//!
//! The visitor authenticates with their own homeserver access token; the bridge asks the
//! homeserver whose token it is, so a visitor can only ever get rooms for their own user.
//!
//! Cross-origin access is answered only for the origins the operator allowed
//! ([`AllowedOrigins`]); by default there are no CORS headers at all (same origin only).

use std::{net::IpAddr, net::SocketAddr, num::NonZeroU32, sync::Arc, time::Duration};

use axum::{
    Json, Router,
    extract::{ConnectInfo, State},
    http::{HeaderMap, HeaderValue, Method, StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock,
};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::{
    bridge::{Bridge, VisitorError},
    config::VisitorMode,
    visitor_account::VisitorAccounts,
};

#[derive(Clone)]
pub struct VisitorApiState {
    bridge: Arc<Bridge>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    accounts: Option<Arc<VisitorAccounts>>,
    /// Visitor accounts per client address.
    account_limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Visitor accounts from all addresses together (`None`: no ceiling).
    account_ceiling: Option<Arc<DefaultDirectRateLimiter>>,
    allowed_origins: AllowedOrigins,
}

fn non_zero(n: u32) -> NonZeroU32 {
    NonZeroU32::new(n.max(1)).expect("max(1) is non-zero")
}

impl VisitorApiState {
    pub fn new(bridge: Arc<Bridge>) -> Self {
        let limits = &bridge.config().limits;
        let limiter = RateLimiter::keyed(
            Quota::per_minute(non_zero(limits.conversations_per_minute))
                .allow_burst(non_zero(limits.burst)),
        );
        let account_limiter = RateLimiter::keyed(
            Quota::per_minute(non_zero(limits.accounts_per_minute))
                .allow_burst(non_zero(limits.accounts_burst)),
        );
        // Quota::per_hour(n) lets n through at once and then one every hour/n.
        let account_ceiling = NonZeroU32::new(limits.accounts_per_hour)
            .map(|n| Arc::new(RateLimiter::direct(Quota::per_hour(n))));
        Self {
            bridge,
            limiter: Arc::new(limiter),
            accounts: None,
            account_limiter: Arc::new(account_limiter),
            account_ceiling,
            allowed_origins: AllowedOrigins::default(),
        }
    }

    /// What `POST /api/v1/visitors` registers accounts with. It answers only when the
    /// configuration says `[visitors] mode = "accounts"` and this is set.
    pub fn with_visitor_accounts(mut self, accounts: VisitorAccounts) -> Self {
        self.accounts = Some(Arc::new(accounts));
        self
    }

    /// Which other origins may call the API from a browser (default: none).
    pub fn with_allowed_origins(mut self, origins: AllowedOrigins) -> Self {
        self.allowed_origins = origins;
        self
    }
}

/// The origins whose pages may call the visitor API from a browser (`[web] allowed_origins`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum AllowedOrigins {
    /// No CORS headers at all: only pages served by Switchboard itself (the demo page) can
    /// call the API from a browser.
    #[default]
    SameOrigin,
    /// `"*"`: any page on the web. Not recommended: any site could then start conversations
    /// in your name with its visitors' browsers.
    Any,
    /// Exactly these origins (`https://shop.example.org`).
    List(Vec<HeaderValue>),
}

impl AllowedOrigins {
    /// Reads the configured list. Each entry is an origin as browsers send it, `scheme://host`
    /// or `scheme://host:port` (no path, no trailing slash), or the single entry `"*"`.
    pub fn parse(origins: &[String]) -> Result<Self, String> {
        if origins.is_empty() {
            return Ok(Self::SameOrigin);
        }
        if origins.iter().any(|o| o == "*") {
            return if origins.len() == 1 {
                Ok(Self::Any)
            } else {
                Err("\"*\" allows every origin; it cannot be combined with others".into())
            };
        }
        let mut list = Vec::with_capacity(origins.len());
        for origin in origins {
            let url = url::Url::parse(origin).map_err(|e| {
                format!("{origin:?} is not an origin like https://shop.example.org: {e}")
            })?;
            if !matches!(url.scheme(), "http" | "https") {
                return Err(format!(
                    "{origin:?}: only http and https origins can embed the widget"
                ));
            }
            // Browsers send the origin in exactly this form; anything else would never match.
            let canonical = url.origin().ascii_serialization();
            if canonical != *origin {
                return Err(format!(
                    "{origin:?} is not an origin as browsers send it; write {canonical:?} (scheme, host and non-default port, no path or trailing slash)"
                ));
            }
            list.push(HeaderValue::from_str(&canonical).map_err(|e| format!("{origin:?}: {e}"))?);
        }
        Ok(Self::List(list))
    }
}

/// The CORS layer for `/api/v1/*`, or `None` when only the same origin may call it.
///
/// The widget authenticates with a bearer header, never cookies, so credentials are never
/// allowed; the allow-list decides which sites may use visitors' browsers to talk to us.
pub fn cors_layer(origins: &AllowedOrigins) -> Option<CorsLayer> {
    cors_layer_for(origins, [Method::GET, Method::POST])
}

/// The same CORS policy for other routes with their own methods (the visitor proxy's).
pub fn cors_layer_for<const N: usize>(
    origins: &AllowedOrigins,
    methods: [Method; N],
) -> Option<CorsLayer> {
    let allow_origin = match origins {
        AllowedOrigins::SameOrigin => return None,
        AllowedOrigins::Any => AllowOrigin::any(),
        AllowedOrigins::List(list) => AllowOrigin::list(list.iter().cloned()),
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods(methods)
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE])
            .max_age(Duration::from_secs(600)),
    )
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
    pub(crate) fn new(
        status: StatusCode,
        errcode: &'static str,
        message: impl Into<String>,
    ) -> Self {
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
    let cors = cors_layer(&state.allowed_origins);
    let routes = Router::new()
        .route("/api/v1/config", get(get_config))
        .route("/api/v1/visitors", post(post_visitor))
        .route("/api/v1/conversations", post(post_conversation))
        .route(
            "/api/v1/conversations/{room_id}/end",
            post(post_end_conversation),
        )
        .route("/api/v1/conversations/{room_id}/typing", post(post_typing))
        .with_state(state);
    match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    }
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
    Json(json!({
        "homeserver_url": config.public_homeserver_url,
        "visitor_mode": config.limits.mode.as_str(),
        "topics": topics,
    }))
}

/// # `POST /api/v1/visitors`
///
/// Only with `[visitors] mode = "accounts"` or `"proxied"` (otherwise 404 `M_NOT_FOUND`).
/// Registers a fresh visitor user in Switchboard's namespace and answers 201
/// `{"user_id", "access_token", "device_id", "homeserver_url"}`, used from then on exactly like
/// a guest's. In accounts mode that is the homeserver's token for that user alone; in proxied
/// mode it is a Switchboard session token and `homeserver_url` is Switchboard's visitor proxy
/// (see `visitor_proxy.rs`). Rate-limited per client address, and in total.
async fn post_visitor(
    State(state): State<VisitorApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let config = state.bridge.config();
    let mode = config.limits.mode;
    let accounts = match (&state.accounts, mode) {
        (Some(accounts), VisitorMode::Accounts | VisitorMode::Proxied) => accounts,
        _ => {
            return Err(ApiError::new(
                StatusCode::NOT_FOUND,
                "M_NOT_FOUND",
                "This server does not hand out visitor accounts: visitors join as guests of the homeserver.",
            ));
        }
    };
    let client = client_address(&headers, peer, config.limits.trust_forwarded_for);
    if let Err(not_until) = check_keyed(&state.account_limiter, &client) {
        return Err(too_many(
            "visitor",
            not_until,
            "Too many new chats from your address. Please wait a moment.",
        ));
    }
    if let Some(ceiling) = &state.account_ceiling
        && let Err(not_until) = ceiling.check()
    {
        tracing::warn!("the hourly ceiling of visitor accounts was reached");
        return Err(too_many(
            "visitor",
            not_until,
            "The chat is very busy right now. Please try again in a few minutes.",
        ));
    }
    let unavailable = || {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "M_UNKNOWN",
            "The chat service is unavailable right now. Please try again in a moment.",
        )
    };
    let body = if mode == VisitorMode::Proxied {
        let user_id = accounts.create_unlogged().await.map_err(|e| {
            tracing::error!(error = %e, "could not register a proxied visitor");
            unavailable()
        })?;
        let ttl = Duration::from_secs(config.limits.session_ttl_hours.saturating_mul(3600));
        let token = crate::visitor_proxy::issue_session(state.bridge.store(), &user_id, ttl)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "could not store a visitor session");
                unavailable()
            })?;
        json!({
            "user_id": user_id,
            "access_token": token,
            "device_id": crate::visitor_proxy::DEVICE_ID,
            "homeserver_url": format!(
                "{}{}",
                public_base(&config.limits, &headers),
                crate::visitor_proxy::PROXY_PREFIX
            ),
        })
    } else {
        let login = accounts.create().await.map_err(|e| {
            if e.errcode() == Some("M_APPSERVICE_LOGIN_UNSUPPORTED") {
                tracing::error!(error = %e, "the homeserver issues no tokens for appservice users \
                    (logins delegated to OAuth2/Matrix Authentication Service, or MSC4190): \
                    visitor accounts cannot work there; use [visitors] mode = \"proxied\"");
            } else {
                tracing::error!(error = %e, "could not create a visitor account");
            }
            unavailable()
        })?;
        json!({
            "user_id": login.user_id,
            "access_token": login.access_token,
            "device_id": login.device_id,
            "homeserver_url": config.public_homeserver_url,
        })
    };
    Ok((
        StatusCode::CREATED,
        // The body holds a credential: no cache, shared or private, may keep it.
        [(header::CACHE_CONTROL, "no-store")],
        Json(body),
    )
        .into_response())
}

/// Switchboard's address as the visitor's browser reaches it: `[visitors] public_url`, or the
/// request's `Host` (and, behind a trusted reverse proxy, `X-Forwarded-Proto`/`-Host`).
fn public_base(limits: &crate::config::VisitorLimits, headers: &HeaderMap) -> String {
    if let Some(url) = &limits.public_url {
        return url.trim_end_matches('/').to_owned();
    }
    let header_str = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            // The last hop is the one our proxy added, as for X-Forwarded-For.
            .and_then(|v| v.rsplit(',').next())
            .map(str::trim)
            .filter(|v| !v.is_empty())
    };
    let forwarded = |name| {
        limits
            .trust_forwarded_for
            .then(|| header_str(name))
            .flatten()
    };
    let scheme = forwarded("x-forwarded-proto")
        .filter(|p| matches!(*p, "http" | "https"))
        .unwrap_or("http");
    let host = forwarded("x-forwarded-host")
        .or_else(|| header_str(header::HOST.as_str()))
        .unwrap_or("localhost");
    format!("{scheme}://{host}")
}

/// A 429 with the time until the limiter lets the next request through.
/// Keys a limiter may hold before it forgets those that are back to a full allowance.
const KEYS_BEFORE_SWEEP: usize = 10_000;

/// Checks `key` against a keyed limiter. A keyed limiter keeps a cell per key for ever, so
/// once it holds many keys the ones indistinguishable from new are dropped first: memory
/// stays bounded however many addresses or visitors come by, and no limit is loosened.
pub(crate) fn check_keyed<K>(
    limiter: &DefaultKeyedRateLimiter<K>,
    key: &K,
) -> Result<(), governor::NotUntil<<governor::clock::DefaultClock as Clock>::Instant>>
where
    K: std::hash::Hash + Eq + Clone,
{
    if limiter.len() > KEYS_BEFORE_SWEEP {
        limiter.retain_recent();
    }
    limiter.check_key(key)
}

pub(crate) fn too_many(
    api: &'static str,
    not_until: governor::NotUntil<<governor::clock::DefaultClock as Clock>::Instant>,
    message: &str,
) -> ApiError {
    crate::metrics::rate_limited(api);
    let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
    let mut e = ApiError::new(StatusCode::TOO_MANY_REQUESTS, "M_LIMIT_EXCEEDED", message);
    e.retry_after = Some(wait.max(Duration::from_millis(1)));
    e
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

#[derive(Deserialize)]
struct TypingRequest {
    typing: bool,
}

/// `POST /api/v1/conversations/{room_id}/typing` with `{"typing": bool}`: the visitor is
/// typing. Guests may not send Matrix typing notices, so the widget sends them here.
async fn post_typing(
    State(state): State<VisitorApiState>,
    axum::extract::Path(room_id): axum::extract::Path<String>,
    headers: HeaderMap,
    Json(body): Json<TypingRequest>,
) -> Result<StatusCode, ApiError> {
    let token = bearer(&headers)?;
    state
        .bridge
        .visitor_typing(token, &room_id, body.typing)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The request's non-empty bearer token, if it has one.
pub(crate) fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .filter(|t| !t.is_empty())
}

fn bearer(headers: &HeaderMap) -> Result<&str, ApiError> {
    bearer_token(headers).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "M_MISSING_TOKEN",
            "Sign in to the homeserver first.",
        )
    })
}

/// The address a request comes from, for rate limiting (the visitor API's limits and the
/// admin API's lock-out): the peer, or behind a trusted proxy `X-Forwarded-For`'s last hop.
pub(crate) fn client_address(
    headers: &HeaderMap,
    peer: SocketAddr,
    trust_forwarded_for: bool,
) -> IpAddr {
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
    if let Err(not_until) = check_keyed(&state.limiter, &client) {
        return Err(too_many(
            "visitor",
            not_until,
            "Too many new conversations from your address. Please wait a moment.",
        ));
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
    use axum::body::Body;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use switchboard_appservice::{
        AppserviceRegistration, HomeserverClient, registration::GenerateOptions, ruma::UserId,
    };
    use tower::ServiceExt;

    use crate::{
        Store,
        config::{BridgeConfig, TopicConfig, VisitorLimits},
    };

    /// Just enough of a homeserver for the visitor API: versions, appservice registration
    /// (counting calls) and display names.
    async fn stub_homeserver(registrations: Arc<AtomicUsize>) -> String {
        let app = Router::new()
            .route(
                "/_matrix/client/versions",
                get(|| async { Json(json!({"versions": ["v1.11"]})) }),
            )
            .route(
                "/_matrix/client/v3/register",
                post(move |Json(body): Json<serde_json::Value>| {
                    let registrations = registrations.clone();
                    async move {
                        registrations.fetch_add(1, Ordering::SeqCst);
                        assert_eq!(body["type"], "m.login.application_service");
                        let user = format!("@{}:example.org", body["username"].as_str().unwrap());
                        // Proxied mode registers without a login: no token exists.
                        if body["inhibit_login"] == true {
                            return Json(json!({"user_id": user}));
                        }
                        Json(json!({"user_id": user, "access_token": "visitor-token", "device_id": "DEVICE"}))
                    }
                }),
            )
            .route(
                "/_matrix/client/v3/profile/{user}/displayname",
                axum::routing::put(|| async { Json(json!({})) }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        url
    }

    struct Api {
        router: Router,
        registrations: Arc<AtomicUsize>,
        _dir: tempfile::TempDir,
    }

    async fn api(limits: VisitorLimits, origins: &[&str]) -> Api {
        let registrations = Arc::new(AtomicUsize::new(0));
        let hs = stub_homeserver(registrations.clone()).await;
        let registration = Arc::new(AppserviceRegistration::generate(&GenerateOptions {
            id: "switchboard",
            url: "http://127.0.0.1:1",
            bot_localpart: "switchboard",
            ghost_prefix: "_sb_",
        }));
        let bot = UserId::parse("@switchboard:example.org").unwrap();
        let client = Arc::new(
            HomeserverClient::connect(&hs, &registration.inner.as_token, bot)
                .await
                .unwrap(),
        );
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("db").display()))
            .await
            .unwrap();
        let bridge = Arc::new(Bridge::new(
            store,
            client.clone(),
            registration.clone(),
            BridgeConfig {
                appservice_id: "switchboard".into(),
                server_name: "example.org".into(),
                public_homeserver_url: "https://matrix.example.org".into(),
                topics: vec![TopicConfig {
                    id: "support".into(),
                    name: "Support".into(),
                    names: Default::default(),
                    strategy: Default::default(),
                    offer_timeout_secs: 120,
                    first_reply_timeout_secs: None,
                    idle_limit_secs: None,
                    first_reply_target_secs: None,
                }],
                responders: vec![],
                limits,
                welcome_notice: String::new(),
                offline_message: String::new(),
            },
            vec![],
        ));
        let origins: Vec<String> = origins.iter().map(|o| o.to_string()).collect();
        let state = VisitorApiState::new(bridge)
            .with_allowed_origins(AllowedOrigins::parse(&origins).unwrap())
            .with_visitor_accounts(VisitorAccounts::new(client, registration));
        Api {
            router: router(state),
            registrations,
            _dir: dir,
        }
    }

    fn request(method: Method, path: &str, origin: Option<&str>) -> axum::http::Request<Body> {
        let mut builder = axum::http::Request::builder().method(method).uri(path);
        if let Some(origin) = origin {
            builder = builder.header(header::ORIGIN, origin);
        }
        let mut request = builder.body(Body::empty()).unwrap();
        let peer: SocketAddr = "192.0.2.7:40000".parse().unwrap();
        request.extensions_mut().insert(ConnectInfo(peer));
        request
    }

    async fn call(
        router: &Router,
        request: axum::http::Request<Body>,
    ) -> (Response, serde_json::Value) {
        let response = router.clone().oneshot(request).await.unwrap();
        let (parts, body) = response.into_parts();
        let bytes = axum::body::to_bytes(body, 1 << 20).await.unwrap();
        let json = serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null);
        (Response::from_parts(parts, Body::empty()), json)
    }

    fn allow_origin(response: &Response) -> Option<&str> {
        response
            .headers()
            .get(header::ACCESS_CONTROL_ALLOW_ORIGIN)
            .map(|v| v.to_str().unwrap())
    }

    fn preflight(path: &str, origin: &str) -> axum::http::Request<Body> {
        let mut r = request(Method::OPTIONS, path, Some(origin));
        let h = r.headers_mut();
        h.insert(
            header::ACCESS_CONTROL_REQUEST_METHOD,
            HeaderValue::from_static("POST"),
        );
        h.insert(
            header::ACCESS_CONTROL_REQUEST_HEADERS,
            HeaderValue::from_static("authorization,content-type"),
        );
        r
    }

    #[test]
    fn sweeping_a_full_limiter_loosens_no_limit() {
        let limiter: DefaultKeyedRateLimiter<u32> =
            RateLimiter::keyed(Quota::per_minute(NonZeroU32::new(1).unwrap()));
        assert!(check_keyed(&limiter, &0).is_ok());
        assert!(check_keyed(&limiter, &0).is_err());
        for key in 1..=(KEYS_BEFORE_SWEEP as u32 + 1) {
            let _ = check_keyed(&limiter, &key);
        }
        // The sweep ran (the table was over the bound), and key 0 is still limited.
        assert!(check_keyed(&limiter, &0).is_err());
        assert!(check_keyed(&limiter, &(KEYS_BEFORE_SWEEP as u32 + 7)).is_ok());
    }

    #[tokio::test]
    async fn cors_is_answered_for_listed_origins_only() {
        let api = api(VisitorLimits::default(), &["https://shop.example.org"]).await;
        let (r, body) = call(
            &api.router,
            request(
                Method::GET,
                "/api/v1/config",
                Some("https://shop.example.org"),
            ),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert_eq!(allow_origin(&r), Some("https://shop.example.org"));
        assert_eq!(body["topics"][0]["id"], "support");

        let (r, _) = call(
            &api.router,
            preflight("/api/v1/conversations", "https://shop.example.org"),
        )
        .await;
        assert!(r.status().is_success(), "{}", r.status());
        assert_eq!(allow_origin(&r), Some("https://shop.example.org"));
        let methods = r.headers()[header::ACCESS_CONTROL_ALLOW_METHODS]
            .to_str()
            .unwrap();
        assert!(methods.contains("POST"), "{methods}");
        let allowed = r.headers()[header::ACCESS_CONTROL_ALLOW_HEADERS]
            .to_str()
            .unwrap();
        assert!(allowed.contains("authorization"), "{allowed}");
        assert!(
            r.headers()
                .get(header::ACCESS_CONTROL_ALLOW_CREDENTIALS)
                .is_none()
        );

        for stranger in [
            "https://evil.example",
            "https://shop.example.org.evil.example",
            "null",
        ] {
            let (r, _) = call(
                &api.router,
                request(Method::GET, "/api/v1/config", Some(stranger)),
            )
            .await;
            assert_eq!(allow_origin(&r), None, "{stranger}");
            let (r, _) = call(&api.router, preflight("/api/v1/visitors", stranger)).await;
            assert_eq!(allow_origin(&r), None, "{stranger}");
        }
    }

    #[tokio::test]
    async fn no_origins_configured_means_no_cors_headers_at_all() {
        let api = api(VisitorLimits::default(), &[]).await;
        let (r, _) = call(
            &api.router,
            request(
                Method::GET,
                "/api/v1/config",
                Some("https://shop.example.org"),
            ),
        )
        .await;
        assert_eq!(r.status(), 200);
        assert!(
            !r.headers()
                .keys()
                .any(|k| k.as_str().starts_with("access-control-")),
            "{:?}",
            r.headers()
        );
        let (r, _) = call(
            &api.router,
            preflight("/api/v1/conversations", "https://shop.example.org"),
        )
        .await;
        assert_eq!(allow_origin(&r), None);

        let any = super::tests::api(VisitorLimits::default(), &["*"]).await;
        let (r, _) = call(
            &any.router,
            request(
                Method::GET,
                "/api/v1/config",
                Some("https://anywhere.example"),
            ),
        )
        .await;
        assert_eq!(allow_origin(&r), Some("*"));
    }

    #[tokio::test]
    async fn guest_mode_has_no_visitor_accounts() {
        let api = api(VisitorLimits::default(), &[]).await;
        let (_, config) = call(&api.router, request(Method::GET, "/api/v1/config", None)).await;
        assert_eq!(config["visitor_mode"], "guest");
        let (r, body) = call(&api.router, request(Method::POST, "/api/v1/visitors", None)).await;
        assert_eq!(r.status(), 404);
        assert_eq!(body["errcode"], "M_NOT_FOUND");
        assert!(body["error"].as_str().unwrap().contains("guests"), "{body}");
        assert_eq!(api.registrations.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn accounts_mode_hands_out_a_token_uncached_and_rate_limited_per_address() {
        let limits = VisitorLimits {
            mode: VisitorMode::Accounts,
            accounts_per_minute: 1,
            accounts_burst: 2,
            ..VisitorLimits::default()
        };
        let api = api(limits, &[]).await;
        let (_, config) = call(&api.router, request(Method::GET, "/api/v1/config", None)).await;
        assert_eq!(config["visitor_mode"], "accounts");

        let (r, body) = call(&api.router, request(Method::POST, "/api/v1/visitors", None)).await;
        assert_eq!(r.status(), 201, "{body}");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        let user = body["user_id"].as_str().unwrap();
        assert!(user.starts_with("@_sb_visitor-"), "{user}");
        assert_eq!(body["access_token"], "visitor-token");
        assert_eq!(body["device_id"], "DEVICE");
        assert_eq!(body["homeserver_url"], "https://matrix.example.org");

        let (r, _) = call(&api.router, request(Method::POST, "/api/v1/visitors", None)).await;
        assert_eq!(r.status(), 201, "the burst allows a second one");
        let (r, body) = call(&api.router, request(Method::POST, "/api/v1/visitors", None)).await;
        assert_eq!(r.status(), 429, "{body}");
        assert_eq!(body["errcode"], "M_LIMIT_EXCEEDED");
        assert!(body["retry_after_ms"].as_u64().unwrap() > 0, "{body}");
        assert!(r.headers().get(header::RETRY_AFTER).is_some());
        assert_eq!(
            api.registrations.load(Ordering::SeqCst),
            2,
            "a refused request registers nobody"
        );
    }

    #[tokio::test]
    async fn proxied_mode_hands_out_a_session_of_its_own_for_the_proxy() {
        let limits = VisitorLimits {
            mode: VisitorMode::Proxied,
            ..VisitorLimits::default()
        };
        let api = api(limits.clone(), &[]).await;
        let (_, config) = call(&api.router, request(Method::GET, "/api/v1/config", None)).await;
        assert_eq!(config["visitor_mode"], "proxied");
        let mut r = request(Method::POST, "/api/v1/visitors", None);
        r.headers_mut()
            .insert(header::HOST, HeaderValue::from_static("chat.example.org"));
        let (r, body) = call(&api.router, r).await;
        assert_eq!(r.status(), 201, "{body}");
        assert_eq!(r.headers()[header::CACHE_CONTROL], "no-store");
        assert!(
            body["user_id"]
                .as_str()
                .unwrap()
                .starts_with("@_sb_visitor-")
        );
        let token = body["access_token"].as_str().unwrap();
        assert!(
            token.starts_with("sbv_") && token != "visitor-token",
            "{token}"
        );
        assert_eq!(body["device_id"], "SWITCHBOARD");
        assert_eq!(
            body["homeserver_url"],
            "http://chat.example.org/visitor-proxy"
        );

        // Behind a trusted reverse proxy its scheme and host count; a configured URL wins.
        let trusting = VisitorLimits {
            trust_forwarded_for: true,
            ..limits.clone()
        };
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("127.0.0.1:29330"));
        headers.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        headers.insert(
            "x-forwarded-host",
            HeaderValue::from_static("chat.example.org"),
        );
        assert_eq!(public_base(&trusting, &headers), "https://chat.example.org");
        assert_eq!(public_base(&limits, &headers), "http://127.0.0.1:29330");
        let configured = VisitorLimits {
            public_url: Some("https://example.org/chat/".into()),
            ..limits
        };
        assert_eq!(
            public_base(&configured, &headers),
            "https://example.org/chat"
        );
    }

    #[tokio::test]
    async fn the_hourly_ceiling_holds_across_addresses() {
        let limits = VisitorLimits {
            mode: VisitorMode::Accounts,
            accounts_per_hour: 2,
            ..VisitorLimits::default()
        };
        let api = api(limits, &[]).await;
        let mut statuses = vec![];
        for i in 1..=3 {
            let mut r = request(Method::POST, "/api/v1/visitors", None);
            let peer: SocketAddr = format!("198.51.100.{i}:1000").parse().unwrap();
            r.extensions_mut().insert(ConnectInfo(peer));
            statuses.push(call(&api.router, r).await.0.status().as_u16());
        }
        assert_eq!(statuses, [201, 201, 429]);
    }

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
