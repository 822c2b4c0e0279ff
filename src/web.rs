//! The widget script, the demo page and the health probe, served from the binary itself so a
//! deployment is one file.

use axum::{
    Router,
    http::{HeaderValue, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};

/// The minified bundle `scripts/widget.sh` builds from `web-widget/switchboard-widget.js` and
/// commits (its build checks the committed file is current).
const WIDGET_JS: &str = include_str!("../web-widget/dist/switchboard-widget.min.js");
const DEMO_HTML: &str = include_str!("../web-widget/demo.html");

/// The demo page's Content-Security-Policy. Scripts only from us (no inline script, no
/// `eval`), so a message rendered as HTML by mistake could not run code; network access only
/// to us and the homeserver; no plugins, frames, forms or `<base>`; and no other site may frame
/// the page. Inline styles are allowed: the demo page has a `<style>` block, and the widget
/// falls back to a `<style>` element where constructed stylesheets are missing.
pub fn demo_csp(homeserver_origin: &str) -> String {
    format!(
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
         connect-src 'self' {homeserver_origin}; img-src 'self' data: blob:; \
         base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
}

/// `scheme://host[:port]` of an absolute URL, as CSP source expressions want it.
pub fn origin_of(url: &str) -> anyhow::Result<String> {
    let uri: Uri = url
        .parse()
        .map_err(|e| anyhow::anyhow!("{url:?} is not a URL: {e}"))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some(scheme @ ("http" | "https")), Some(authority)) => {
            Ok(format!("{scheme}://{authority}"))
        }
        _ => anyhow::bail!("{url:?} is not an absolute http(s) URL"),
    }
}

/// The routes; `homeserver_url` is the homeserver as visitors' browsers reach it (for the
/// demo page's `connect-src`).
pub fn router(homeserver_url: &str) -> anyhow::Result<Router> {
    let csp = HeaderValue::from_str(&demo_csp(&origin_of(homeserver_url)?))?;
    Ok(Router::new()
        .route(
            "/",
            get(move || {
                let csp = csp.clone();
                async move { demo_page(csp) }
            }),
        )
        .route("/widget/switchboard-widget.js", get(widget_js))
        .route("/health", get(|| async { "ok" }))
        // Browsers ask for it on every page; answer quietly instead of with a 404.
        .route(
            "/favicon.ico",
            get(|| async { axum::http::StatusCode::NO_CONTENT }),
        )
        .layer(axum::middleware::map_response(asset_headers)))
}

/// On everything served here: browsers must take the content type as given (a script is never
/// sniffed into something else, nor anything else into a script), and no page or script we
/// serve leaks the host page's URL to the homeserver or anyone else it talks to.
async fn asset_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

/// # `GET /`
fn demo_page(csp: HeaderValue) -> impl IntoResponse {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            ),
            (header::CONTENT_SECURITY_POLICY, csp),
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::{body::Body, http::Request};
    use tower::ServiceExt;

    async fn get(path: &str) -> Response {
        router("https://matrix.example.org/some/path")
            .unwrap()
            .oneshot(Request::get(path).body(Body::empty()).unwrap())
            .await
            .unwrap()
    }

    fn header<'a>(response: &'a Response, name: &str) -> &'a str {
        response
            .headers()
            .get(name)
            .unwrap_or_else(|| panic!("no {name} header"))
            .to_str()
            .unwrap()
    }

    #[tokio::test]
    async fn demo_page_sends_a_strict_csp_naming_the_homeserver() {
        let page = get("/").await;
        assert_eq!(page.status(), 200);
        let csp = header(&page, "content-security-policy");
        for directive in [
            "default-src 'none'",
            "script-src 'self'",
            "style-src 'self' 'unsafe-inline'",
            "connect-src 'self' https://matrix.example.org;",
            "img-src 'self' data: blob:",
            "base-uri 'none'",
            "form-action 'none'",
            "frame-ancestors 'none'",
        ] {
            assert!(csp.contains(directive), "{directive} missing from {csp}");
        }
        let scripts = csp
            .split(';')
            .find(|d| d.trim().starts_with("script-src"))
            .unwrap();
        assert!(
            !scripts.contains("unsafe-inline") && !scripts.contains("unsafe-eval"),
            "{scripts}"
        );
        assert_eq!(header(&page, "x-content-type-options"), "nosniff");
        assert_eq!(header(&page, "referrer-policy"), "no-referrer");
    }

    #[tokio::test]
    async fn widget_script_is_served_as_javascript_never_sniffed_and_without_referrer() {
        let js = get("/widget/switchboard-widget.js").await;
        assert_eq!(js.status(), 200);
        assert!(header(&js, "content-type").starts_with("text/javascript"));
        assert_eq!(header(&js, "x-content-type-options"), "nosniff");
        assert_eq!(header(&js, "referrer-policy"), "no-referrer");
        // The widget is loaded with <script src> from other sites: no CORS needed, none sent.
        assert!(js.headers().get("access-control-allow-origin").is_none());
    }

    #[test]
    fn the_demo_page_has_no_inline_script_for_the_csp_to_block() {
        let lower = DEMO_HTML.to_ascii_lowercase();
        let mut rest = lower.as_str();
        while let Some(at) = rest.find("<script") {
            let tag_end = rest[at..].find('>').expect("a closed <script> tag") + at;
            assert!(
                rest[at..tag_end].contains("src="),
                "inline <script> in demo.html: {}",
                &rest[at..tag_end + 1]
            );
            rest = &rest[tag_end..];
        }
        assert!(!lower.contains(" onload=") && !lower.contains(" onclick="));
    }

    #[test]
    fn origins_for_the_csp() {
        assert_eq!(
            origin_of("http://127.0.0.1:8008").unwrap(),
            "http://127.0.0.1:8008"
        );
        assert_eq!(
            origin_of("https://matrix.example.org/_matrix/").unwrap(),
            "https://matrix.example.org"
        );
        assert!(origin_of("matrix.example.org").is_err());
        assert!(origin_of("ftp://matrix.example.org").is_err());
    }
}
