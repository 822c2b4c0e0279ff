//! HTTP edge: `/bot<token>/<method>` and `/file/bot<token>/<path>`, request recording,
//! fault injection and the `{ok, result}` / `{ok:false, error_code, description}` envelopes.

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::RecordedRequest;
use crate::error::{ApiError, ApiResult};
use crate::methods::{self, Success};
use crate::params::{Params, percent_decode};
use crate::state::Shared;

/// Bots may upload files of up to 50 MB.
const MAX_BODY: usize = 50 * 1024 * 1024;

/// The whole server as a router, so it can also be driven without a socket.
pub(crate) fn app(shared: Arc<Shared>) -> Router {
    // One catch-all handler: tokens contain ':' and method names are case-insensitive, so
    // matching the path by hand is simpler and closer to the real server than route patterns.
    Router::new()
        .fallback(handle)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(shared)
}

/// # `GET|POST /bot{token}/{method}` and `GET /file/bot{token}/{file_path}`
async fn handle(
    State(shared): State<Arc<Shared>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let path = uri.path().trim_start_matches('/');

    if let Some(rest) = path.strip_prefix("file/") {
        let index = record(&shared, "file", content_type, uri.query(), &body);
        let (status, bytes, mime) = methods::download(&shared, rest);
        set_status(&shared, index, status, 0);
        return (status_code(status), [(header::CONTENT_TYPE, mime)], bytes).into_response();
    }

    let (token_segment, method) = path.split_once('/').unwrap_or((path, ""));
    let index = record(&shared, method, content_type.clone(), uri.query(), &body);
    let outcome = serve(
        &shared,
        token_segment,
        method,
        uri.query(),
        content_type.as_deref(),
        &body,
    )
    .await;
    let items = match &outcome {
        Ok(Success { result, .. }) => result.as_array().map_or(0, Vec::len),
        Err(_) => 0,
    };
    let (status, envelope) = match outcome {
        Ok(Success {
            result,
            description,
        }) => {
            let mut envelope = json!({ "ok": true, "result": result });
            if let Some(description) = description {
                envelope["description"] = json!(description);
            }
            (200, envelope)
        }
        Err(error) => (error.code, error.to_envelope()),
    };
    set_status(&shared, index, status, items);
    (
        status_code(status),
        [(header::CONTENT_TYPE, "application/json")],
        envelope.to_string(),
    )
        .into_response()
}

/// Checks the token and method, applies armed faults, then runs the method.
async fn serve(
    shared: &Arc<Shared>,
    token_segment: &str,
    method: &str,
    query: Option<&str>,
    content_type: Option<&str>,
    body: &[u8],
) -> ApiResult<Success> {
    if shared.world().down {
        return Err(ApiError::new(502, "Bad Gateway"));
    }
    let token = percent_decode(token_segment, false);
    if token.strip_prefix("bot") != Some(shared.token.as_str()) {
        return Err(ApiError::unauthorized());
    }
    let method = method.to_ascii_lowercase();
    if !methods::exists(&method) {
        return Err(ApiError::not_found());
    }
    let params = Params::parse(query, content_type, body).await?;
    let chat = params.str("chat_id").and_then(|c| c.trim().parse().ok());
    // A hung call waits here, before anything is carried out (see `StandIn::hang`).
    let mut hung = shared.hung.subscribe();
    let _ = hung
        .wait_for(|h| {
            let all = h.contains(&None) && method != "getupdates";
            let this_chat = chat.is_some() && h.contains(&chat);
            !(all || this_chat)
        })
        .await;
    if let Some(fault) = shared.world().faults.check(&method, chat, Instant::now()) {
        return Err(fault);
    }
    methods::call(shared, &method, &params).await
}

/// Records a request as it arrives, so that even a request that is never answered (a
/// long poll cut short) is visible. Returns its index for `set_status`.
fn record(
    shared: &Shared,
    method: &str,
    content_type: Option<String>,
    query: Option<&str>,
    body: &[u8],
) -> usize {
    let mut world = shared.world();
    world.requests.push(RecordedRequest {
        method: method.to_owned(),
        method_lower: method.to_ascii_lowercase(),
        content_type,
        query: query.map(str::to_owned),
        body: body.to_vec(),
        status: 0,
        items: 0,
    });
    world.requests.len() - 1
}

fn set_status(shared: &Shared, index: usize, status: u16, items: usize) {
    if let Some(request) = shared.world().requests.get_mut(index) {
        request.status = status;
        request.items = items;
    }
}

fn status_code(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}
