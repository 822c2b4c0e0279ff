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
    body::Bytes,
    extract::{ConnectInfo, State, rejection::BytesRejection},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use governor::{
    DefaultDirectRateLimiter, DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock,
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use utoipa::{OpenApi as _, ToSchema, openapi::OpenApi};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    bridge::{Bridge, VisitorError},
    config::VisitorMode,
    openapi::{self as doc, ErrorBody},
    visitor_account::VisitorAccounts,
};

mod origins;

pub use origins::{AllowedOrigins, cors_layer, cors_layer_for};

/// Where the visitor API's OpenAPI document is served.
pub const OPENAPI_PATH: &str = "/api/v1/openapi.json";

#[derive(Clone)]
pub struct VisitorApiState {
    bridge: Arc<Bridge>,
    limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    accounts: Option<Arc<VisitorAccounts>>,
    /// Visitor accounts per client address.
    account_limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
    /// Visitor accounts from all addresses together (`None`: no ceiling).
    account_ceiling: Option<Arc<DefaultDirectRateLimiter>>,
    /// Calls about an existing conversation (typing, end) per client address.
    call_limiter: Arc<DefaultKeyedRateLimiter<IpAddr>>,
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
        let call_limiter = RateLimiter::keyed(
            Quota::per_second(non_zero(limits.requests_per_second))
                .allow_burst(non_zero(limits.requests_per_second.saturating_mul(5))),
        );
        Self {
            call_limiter: Arc::new(call_limiter),
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
        let mut body = ErrorBody::new(self.errcode, self.message);
        let mut response = match self.retry_after {
            Some(after) => {
                body.retry_after_ms = Some(after.as_millis() as u64);
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

/// The visitor API's description: its title and version, and the token its conversation
/// routes take.
#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Switchboard visitor API",
        description = "What the chat widget calls: the topics, a visitor account where the \
            homeserver has no guests, starting and ending a conversation, typing. Messages \
            themselves go through the homeserver's client-server API (or Switchboard's visitor \
            proxy, a subset of it), not through this API."
    ),
    components(schemas(ErrorBody))
)]
struct VisitorDocument;

/// Every visitor route, each registered with its description.
fn routes() -> OpenApiRouter<VisitorApiState> {
    let mut document = VisitorDocument::openapi();
    document.info.version = env!("CARGO_PKG_VERSION").to_owned();
    OpenApiRouter::with_openapi(document)
        .routes(routes!(get_config))
        .routes(routes!(post_visitor))
        .routes(routes!(post_conversation))
        .routes(routes!(post_end_conversation))
        .routes(routes!(post_typing))
}

/// The visitor API's OpenAPI 3.1 document, as served at [`OPENAPI_PATH`].
pub fn openapi() -> OpenApi {
    let (_, mut document) = routes().split_for_parts();
    complete(&mut document);
    document
}

/// The routes that act for a visitor (`/api/v1/conversations…`) take their token; the
/// others take none.
fn complete(document: &mut OpenApi) {
    let with_token = |path: &str, _| path.starts_with("/api/v1/conversations");
    doc::require_bearer(
        document,
        "visitor_token",
        "The visitor's access token: a guest's or visitor account's homeserver token, or in \
         proxied mode the session token `POST /api/v1/visitors` gave.",
        with_token,
    );
    doc::answer_everywhere(
        document,
        "401",
        doc::error_answer(
            "No token (`M_MISSING_TOKEN`), or one the homeserver does not know \
             (`M_UNKNOWN_TOKEN`): the session expired.",
        ),
        with_token,
    );
    doc::answer_everywhere(
        document,
        "503",
        doc::error_answer("The homeserver or the store failed; try again in a moment."),
        with_token,
    );
}

/// The visitor routes, with the CORS policy the operator chose, and the API's OpenAPI document.
pub fn router(state: VisitorApiState) -> Router {
    let cors = cors_layer(&state.allowed_origins);
    let (routes, mut document) = routes().split_for_parts();
    complete(&mut document);
    let routes = routes
        .route(OPENAPI_PATH, doc::serve(&document))
        .with_state(state);
    match cors {
        Some(cors) => routes.layer(cors),
        None => routes,
    }
}

/// A topic a visitor may pick.
#[derive(Debug, Serialize, ToSchema)]
pub struct TopicView {
    /// What `POST /api/v1/conversations` takes as `topic`.
    pub id: String,
    /// What the widget shows.
    pub name: String,
}

/// What the widget needs before the visitor writes.
#[derive(Debug, Serialize, ToSchema)]
pub struct WidgetConfig {
    /// The homeserver the widget talks to (in proxied mode, the visitor token's
    /// `homeserver_url` replaces it).
    pub homeserver_url: String,
    /// How visitors get a Matrix identity: `guest`, `accounts` or `proxied`.
    #[schema(example = "guest")]
    pub visitor_mode: String,
    /// The topics offered, in the configuration's order.
    pub topics: Vec<TopicView>,
}

/// Get the topics and where the homeserver is.
#[utoipa::path(
    get,
    path = "/api/v1/config",
    responses((status = 200, description = "The widget's settings.", body = WidgetConfig))
)]
async fn get_config(State(state): State<VisitorApiState>) -> Json<WidgetConfig> {
    let config = state.bridge.config();
    Json(WidgetConfig {
        homeserver_url: config.public_homeserver_url.clone(),
        visitor_mode: config.limits.mode.as_str().to_owned(),
        topics: config
            .topics
            .iter()
            .map(|t| TopicView {
                id: t.id.clone(),
                name: t.name.clone(),
            })
            .collect(),
    })
}

/// A visitor's identity, used from then on exactly like a guest's.
#[derive(Debug, Serialize, ToSchema)]
pub struct VisitorSession {
    pub user_id: String,
    /// A credential: the homeserver's token for this user alone (accounts mode) or a
    /// Switchboard session token (proxied mode). Never the appservice's.
    pub access_token: String,
    pub device_id: String,
    /// Where to use the token: the homeserver, or Switchboard's visitor proxy.
    pub homeserver_url: String,
}

/// Get a visitor identity where the homeserver has no guests.
///
/// Only with `[visitors] mode = "accounts"` or `"proxied"`. Registers a fresh visitor user in
/// Switchboard's namespace. In accounts mode the token is the homeserver's for that user
/// alone; in proxied mode it is a Switchboard session token and `homeserver_url` is
/// Switchboard's visitor proxy. Rate-limited per client address, and in total per hour.
#[utoipa::path(
    post,
    path = "/api/v1/visitors",
    responses(
        (status = 201, description = "A fresh visitor identity; the answer is not to be cached.", body = VisitorSession),
        (status = 404, description = "Visitors join as the homeserver's guests here (`M_NOT_FOUND`).", body = ErrorBody),
        (status = 429, description = "Too many from this address, or in total this hour (`M_LIMIT_EXCEEDED`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Whole seconds until a retry may succeed."))),
        (status = 503, description = "The homeserver or the store failed; try again in a moment.", body = ErrorBody),
    )
)]
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
    if let Err(not_until) = check_keyed(&state.account_limiter, &limit_key(client)) {
        log_refused(&config.limits, client);
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
        VisitorSession {
            user_id: user_id.to_string(),
            access_token: token,
            device_id: crate::visitor_proxy::DEVICE_ID.to_owned(),
            homeserver_url: format!(
                "{}{}",
                public_base(&config.limits, &headers),
                crate::visitor_proxy::PROXY_PREFIX
            ),
        }
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
        VisitorSession {
            user_id: login.user_id.to_string(),
            access_token: login.access_token,
            device_id: login.device_id.to_string(),
            homeserver_url: config.public_homeserver_url.clone(),
        }
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

/// Logs a request refused for its rate with its address, only with `[visitors]
/// log_identifiers` (the count is in the metrics either way).
fn log_refused(limits: &crate::config::VisitorLimits, client: IpAddr) {
    if limits.log_identifiers {
        tracing::info!(client = %client, "visitor API: refused for its rate");
    }
}

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

/// A 429 with the time until the limiter lets the next request through.
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

/// End the visitor's conversation.
///
/// Any room but the visitor's own answers 404, so nobody learns which rooms exist.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{room_id}/end",
    params(("room_id" = String, Path, description = "The conversation's room ID.")),
    responses(
        (status = 204, description = "Ended (or ended already)."),
        (status = 404, description = "Not a conversation of this visitor's (`M_NOT_FOUND`).", body = ErrorBody),
        (status = 429, description = "Too many calls from this address (`M_LIMIT_EXCEEDED`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Whole seconds until a retry may succeed."))),
    )
)]
async fn post_end_conversation(
    State(state): State<VisitorApiState>,
    axum::extract::Path(room_id): axum::extract::Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    check_call_rate(&state, &headers, peer)?;
    let token = bearer(&headers)?;
    state.bridge.end_conversation(token, &room_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Whether the visitor is typing now.
#[derive(Deserialize, ToSchema)]
struct TypingRequest {
    typing: bool,
}

/// Say whether the visitor is typing.
///
/// Guests may not send Matrix typing notices, so the widget sends them here; the responder
/// sees them where their platform shows typing.
#[utoipa::path(
    post,
    path = "/api/v1/conversations/{room_id}/typing",
    params(("room_id" = String, Path, description = "The conversation's room ID.")),
    request_body = TypingRequest,
    responses(
        (status = 204, description = "Passed on."),
        (status = 400, description = "The body is not `{\"typing\": true|false}` (`M_BAD_JSON`, `M_NOT_JSON`).", body = ErrorBody),
        (status = 404, description = "Not a conversation of this visitor's (`M_NOT_FOUND`).", body = ErrorBody),
        (status = 429, description = "Too many calls from this address (`M_LIMIT_EXCEEDED`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Whole seconds until a retry may succeed."))),
    )
)]
async fn post_typing(
    State(state): State<VisitorApiState>,
    axum::extract::Path(room_id): axum::extract::Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<StatusCode, ApiError> {
    check_call_rate(&state, &headers, peer)?;
    let token = bearer(&headers)?;
    let body: TypingRequest = json_body(body, "{\"typing\": true}")?;
    state
        .bridge
        .visitor_typing(token, &room_id, body.typing)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// The per-address limit on calls about an existing conversation, checked before the token
/// costs a homeserver round trip.
fn check_call_rate(
    state: &VisitorApiState,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<(), ApiError> {
    let limits = &state.bridge.config().limits;
    let client = client_address(headers, peer, limits.trust_forwarded_for);
    check_keyed(&state.call_limiter, &limit_key(client)).map_err(|not_until| {
        log_refused(limits, client);
        too_many(
            "visitor",
            not_until,
            "Too many requests from your address. Please slow down.",
        )
    })
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

/// What a per-address limit counts `ip` as. An IPv4 address is one client. An IPv6 host is
/// normally given a whole /64 and can pick any address in it, so the /64 is the client: keyed by
/// the full address, one host could start a fresh allowance with every request. An
/// IPv4-mapped IPv6 address is its IPv4 address.
pub(crate) fn limit_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from_bits(
                v6.to_bits() & !u128::from(u64::MAX),
            )),
        },
    }
}

/// A request body as JSON, or a 400 saying what was expected (`example`).
fn json_body<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    example: &str,
) -> Result<T, ApiError> {
    let body = body.map_err(|e| ApiError::new(e.status(), "M_BAD_JSON", e.body_text()))?;
    serde_json::from_slice(&body).map_err(|e| {
        let errcode = if e.is_syntax() || e.is_eof() {
            "M_NOT_JSON"
        } else {
            "M_BAD_JSON"
        };
        ApiError::new(
            StatusCode::BAD_REQUEST,
            errcode,
            format!("Expected {example}: {e}"),
        )
    })
}

/// The conversation to start.
#[derive(Deserialize, ToSchema)]
struct StartRequest {
    /// A topic id from `GET /api/v1/config`.
    topic: String,
    /// The visitor's language (e.g. the browser's `navigator.language`), optional.
    #[schema(nullable = false)]
    language: Option<String>,
}

/// A started conversation.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConversationStarted {
    /// The conversation's identifier everywhere: its room ID.
    pub conversation_id: String,
    /// The same value: a conversation is a room, which the visitor has joined.
    pub room_id: String,
}

/// Start a conversation.
///
/// Creates the conversation's room with the visitor in it. Rate-limited per client address.
#[utoipa::path(
    post,
    path = "/api/v1/conversations",
    request_body = StartRequest,
    responses(
        (status = 201, description = "Started.", body = ConversationStarted),
        (status = 400, description = "No such topic (`M_INVALID_PARAM`), or a body that is not `{\"topic\": …}` (`M_BAD_JSON`, `M_NOT_JSON`).", body = ErrorBody),
        (status = 403, description = "This identity may not start conversations (`M_FORBIDDEN`).", body = ErrorBody),
        (status = 429, description = "Too many new conversations from this address (`M_LIMIT_EXCEEDED`).", body = ErrorBody,
            headers(("Retry-After" = u64, description = "Whole seconds until a retry may succeed."))),
    )
)]
async fn post_conversation(
    State(state): State<VisitorApiState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(StatusCode, Json<ConversationStarted>), ApiError> {
    // Rate-limit before anything costs us a homeserver round trip.
    let client = client_address(
        &headers,
        peer,
        state.bridge.config().limits.trust_forwarded_for,
    );
    if let Err(not_until) = check_keyed(&state.limiter, &limit_key(client)) {
        log_refused(&state.bridge.config().limits, client);
        return Err(too_many(
            "visitor",
            not_until,
            "Too many new conversations from your address. Please wait a moment.",
        ));
    }
    let token = bearer(&headers)?;
    let request: StartRequest = json_body(body, "{\"topic\": \"...\"}")?;
    let conversation = state
        .bridge
        .start_conversation(token, &request.topic, request.language.as_deref())
        .await?;
    if state.bridge.config().limits.log_identifiers {
        tracing::info!(
            room_id = %conversation.room_id,
            visitor = %conversation.visitor_user_id,
            client = %client,
            "visitor API: conversation started or resumed"
        );
    }
    Ok((
        StatusCode::CREATED,
        Json(ConversationStarted {
            conversation_id: conversation.room_id.clone(),
            room_id: conversation.room_id,
        }),
    ))
}

/// For `crate::fuzzing`: the bodies a browser sends, read as the handlers read them.
#[doc(hidden)]
pub(crate) mod fuzz_support {
    use super::*;

    pub(crate) fn bodies(data: &[u8]) {
        let body = || Ok(Bytes::copy_from_slice(data));
        if let Ok(start) = json_body::<StartRequest>(body(), "a start") {
            let _ = (start.topic.len(), start.language.map(|l| l.len()));
        }
        let _ = json_body::<TypingRequest>(body(), "typing").map(|t| t.typing);
    }
}

#[cfg(test)]
mod tests;
