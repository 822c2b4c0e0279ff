//! The visitor API through its router, against a stub homeserver.

use super::*;
use axum::{
    body::Body,
    http::{HeaderValue, Method},
    routing::{get, post},
};
use serde_json::json;
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

#[test]
fn an_ipv6_host_is_limited_as_its_slash_64_and_a_mapped_ipv4_as_itself() {
    let key = |s: &str| limit_key(s.parse().unwrap());
    assert_eq!(key("203.0.113.9"), key("203.0.113.9"));
    assert_ne!(key("203.0.113.9"), key("203.0.113.10"));
    // Any address a host picks in its /64 is the same client; the next /64 is another.
    assert_eq!(
        key("2001:db8:1:2::1"),
        key("2001:db8:1:2:ffff:eeee:dddd:cccc")
    );
    assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2::"));
    assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
    assert_eq!(key("::ffff:203.0.113.9"), key("203.0.113.9"));
}
