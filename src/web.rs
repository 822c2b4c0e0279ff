//! The widget script, the demo page and the health probe, served from the binary itself so a
//! deployment is one file.

use axum::{Router, http::header, response::IntoResponse, routing::get};

const WIDGET_JS: &str = include_str!("../web-widget/switchboard-widget.js");
const DEMO_HTML: &str = include_str!("../web-widget/demo.html");

/// The demo page may load scripts only from us and talk to us and the homeserver; inline
/// script is not allowed, so a message rendered as HTML by mistake could not run code.
const DEMO_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     connect-src *; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'";

pub fn router() -> Router {
    Router::new()
        .route("/", get(demo_page))
        .route("/widget/switchboard-widget.js", get(widget_js))
        .route("/health", get(|| async { "ok" }))
        // Browsers ask for it on every page; answer quietly instead of with a 404.
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
}

/// # `GET /`
async fn demo_page() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, DEMO_CSP),
        ],
        DEMO_HTML,
    )
}

/// # `GET /widget/switchboard-widget.js`
async fn widget_js() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        WIDGET_JS,
    )
}
