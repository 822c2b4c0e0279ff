//! The widget script, the demo page and the health probes (`/health`, `/ready`), served from
//! the binary itself so a deployment is one file.

use std::time::Duration;

use axum::{
    Json, Router,
    extract::State,
    http::{HeaderValue, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::get,
};
use switchboard_bridge::{
    Store,
    health::{DATABASE, Health, PartState},
};

/// How long `/ready` waits for the database to answer `SELECT 1`.
const DATABASE_PING_TIMEOUT: Duration = Duration::from_secs(2);

/// What the health probes look at: the parts' reports, and the database to ask directly.
#[derive(Clone)]
pub struct Probes {
    pub health: Health,
    pub store: Store,
}

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
pub fn router(homeserver_url: &str, probes: Probes) -> anyhow::Result<Router> {
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
        .merge(
            Router::new()
                .route("/health", get(health))
                .route("/ready", get(ready))
                .with_state(probes),
        )
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

/// # `GET /health`
///
/// Liveness: 200 `{"status":"ok"}` while the worker's heartbeat is fresh, 503
/// `{"status":"down"}` otherwise (a supervisor should restart the process). Nothing else is
/// said: this is for load balancers and supervisors, without authentication.
async fn health(State(probes): State<Probes>) -> Response {
    let (status, word) = if probes.health.live() {
        (StatusCode::OK, "ok")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "down")
    };
    #[derive(serde::Serialize)]
    struct Liveness {
        status: &'static str,
    }
    (
        status,
        [(header::CACHE_CONTROL, "no-store")],
        Json(Liveness { status: word }),
    )
        .into_response()
}

/// # `GET /ready`
///
/// Readiness: asks the database for `SELECT 1` (at most two seconds), then answers every
/// part's report (`switchboard_bridge::health::HealthReport`): 200 when the database, the
/// homeserver and the worker are connected, 503 otherwise. Connectors are reported but do not
/// make the service unready. Error texts in it are redacted (no URLs, tokens or IDs).
async fn ready(State(probes): State<Probes>) -> Response {
    let health = &probes.health;
    match tokio::time::timeout(DATABASE_PING_TIMEOUT, probes.store.ping()).await {
        Ok(Ok(())) => health.report(DATABASE, PartState::Connected, None),
        Ok(Err(e)) => health.report(DATABASE, PartState::Down, Some(e.to_string())),
        Err(_) => health.report(
            DATABASE,
            PartState::Down,
            Some(format!(
                "no answer within {} s",
                DATABASE_PING_TIMEOUT.as_secs()
            )),
        ),
    }
    let report = health.snapshot();
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, [(header::CACHE_CONTROL, "no-store")], Json(report)).into_response()
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
    use serde_json::json;
    use switchboard_bridge::{
        clock::ManualClock,
        health::{HOMESERVER, WORKER},
    };
    use tower::ServiceExt;

    /// The routes on a fresh SQLite store, with a health handle on a clock the test moves.
    struct App {
        router: Router,
        health: Health,
        clock: ManualClock,
        store: Store,
        _dir: tempfile::TempDir,
    }

    async fn app() -> App {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::connect(&format!("sqlite://{}", dir.path().join("db").display()))
            .await
            .unwrap();
        let clock = ManualClock::new(1_000_000);
        let health = Health::with_clock(clock.clone());
        let probes = Probes {
            health: health.clone(),
            store: store.clone(),
        };
        App {
            router: router("https://matrix.example.org/some/path", probes).unwrap(),
            health,
            clock,
            store,
            _dir: dir,
        }
    }

    impl App {
        async fn get(&self, path: &str) -> Response {
            self.router
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).unwrap())
                .await
                .unwrap()
        }

        async fn get_json(&self, path: &str) -> (StatusCode, serde_json::Value) {
            let response = self.get(path).await;
            let status = response.status();
            assert_eq!(header(&response, "cache-control"), "no-store");
            let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
                .await
                .unwrap();
            (status, serde_json::from_slice(&bytes).unwrap())
        }
    }

    async fn get(path: &str) -> Response {
        app().await.get(path).await
    }

    #[tokio::test]
    async fn health_is_ok_while_the_worker_beats_and_503_when_it_stops() {
        let app = app().await;
        // Not started yet.
        assert_eq!(
            app.get_json("/health").await,
            (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "down"}))
        );
        app.health.heartbeat(WORKER);
        assert_eq!(
            app.get_json("/health").await,
            (StatusCode::OK, json!({"status": "ok"}))
        );
        // A minute and more without a beat: the worker is stuck.
        app.clock.advance(std::time::Duration::from_secs(61));
        assert_eq!(
            app.get_json("/health").await,
            (StatusCode::SERVICE_UNAVAILABLE, json!({"status": "down"}))
        );
    }

    #[tokio::test]
    async fn ready_asks_the_database_and_reports_every_part() {
        let app = app().await;
        app.health.heartbeat(WORKER);
        let telegram = app.health.part("telegram");
        telegram.degraded(
            "A network error: error sending request for url (https://api.telegram.org/bot123:SECRET/GetUpdates)",
        );
        // The homeserver has not been heard from: not ready, and it says why.
        let (status, report) = app.get_json("/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(report["ready"], false);
        assert_eq!(report["parts"]["database"]["state"], "connected");
        assert_eq!(report["parts"]["homeserver"]["state"], "down");

        app.health.report(HOMESERVER, PartState::Connected, None);
        let (status, report) = app.get_json("/ready").await;
        assert_eq!(status, StatusCode::OK, "{report}");
        assert_eq!(report["ready"], true);
        assert_eq!(report["live"], true);
        for part in ["database", "homeserver", "worker"] {
            assert_eq!(report["parts"][part]["state"], "connected", "{part}");
            assert_eq!(report["parts"][part]["essential"], true, "{part}");
        }
        // A degraded connector is reported, with its error redacted, and does not make the
        // service unready.
        let tg = &report["parts"]["telegram"];
        assert_eq!(
            (tg["state"].as_str(), tg["essential"].as_bool()),
            (Some("degraded"), Some(false))
        );
        let error = tg["last_error"]["message"].as_str().unwrap();
        assert!(
            !error.contains("SECRET") && !error.contains("telegram.org"),
            "{error}"
        );
        assert_eq!(tg["last_error"]["at"], 1_000_000);

        // The database goes away: down, with the error, and not ready.
        app.store.close().await;
        let (status, report) = app.get_json("/ready").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(report["parts"]["database"]["state"], "down");
        assert!(report["parts"]["database"]["last_error"]["message"].is_string());
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
