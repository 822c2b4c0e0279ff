//! Which sites' pages may call the visitor API from a browser: the CORS policy.

use std::time::Duration;

use axum::http::{HeaderValue, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

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
