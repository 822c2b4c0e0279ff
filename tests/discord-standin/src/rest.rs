//! The HTTP edge: request recording, the outage switch, route resolution, armed faults,
//! `Authorization: Bot <token>`, rate limits and their headers, body decoding (JSON or
//! multipart), and turning `ApiError`s into Discord's JSON bodies.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Multipart, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde_json::{Value, json};

use crate::RecordedRequest;
use crate::error::{ApiError, ApiResult};
use crate::faults::Fault;
use crate::gateway::socket;
use crate::ratelimit::{BucketState, Limited};
use crate::routes::{self, Auth};
use crate::state::Shared;

/// A file may be at most 10 MiB (Discord's default upload limit since January 2025).
pub(crate) const MAX_FILE: usize = 10 * 1024 * 1024;
/// A whole request may be at most 25 MiB.
const MAX_REQUEST: usize = 25 * 1024 * 1024;

/// A decoded request, as the route handlers see it.
#[derive(Debug, Default)]
pub(crate) struct Req {
    pub query: HashMap<String, String>,
    /// The JSON body (or `payload_json`), `Null` when there was none.
    pub json: Value,
    pub files: Vec<Upload>,
}

/// One `files[n]` part of a multipart body.
#[derive(Debug, Clone)]
pub(crate) struct Upload {
    /// The `n` of `files[n]`, which payload `attachments[].id` refers to.
    pub index: String,
    pub filename: String,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// What a handler answers.
#[derive(Debug)]
pub(crate) enum Reply {
    Json(Value),
    /// 204 No Content.
    Empty,
}

/// The whole server as a router, so it can also be driven without a socket.
pub(crate) fn app(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/", get(socket::upgrade))
        .route("/gateway", get(socket::upgrade))
        .fallback(handle)
        // The size limits are Discord's and checked by hand, to answer them Discord's way.
        .layer(DefaultBodyLimit::disable())
        .with_state(shared)
}

/// Discord's JSON error body with its status (and rate-limit headers, if counted).
pub(crate) fn error_response(error: ApiError, bucket: Option<&BucketState>) -> Response {
    let mut response = json_response(error.status, &error.body);
    if let Some(bucket) = bucket {
        add_bucket_headers(response.headers_mut(), bucket);
    }
    response
}

fn json_response(status: u16, body: &Value) -> Response {
    (
        StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

fn add_bucket_headers(headers: &mut HeaderMap, bucket: &BucketState) {
    let mut set = |name: &'static str, value: String| {
        if let Ok(value) = HeaderValue::from_str(&value) {
            headers.insert(name, value);
        }
    };
    set("x-ratelimit-limit", bucket.limit.to_string());
    set("x-ratelimit-remaining", bucket.remaining.to_string());
    set("x-ratelimit-reset", format!("{:.3}", bucket.reset_at));
    set(
        "x-ratelimit-reset-after",
        format!("{:.3}", bucket.reset_after),
    );
    set("x-ratelimit-bucket", bucket.bucket.clone());
}

/// A 429 as Discord sends it: body with `retry_after` (seconds, float) and `global`,
/// `Retry-After` in whole seconds rounded up, and the scope.
fn too_many_requests(limited: &Limited) -> Response {
    let body = json!({
        "message": "You are being rate limited.",
        "retry_after": (limited.retry_after * 1000.0).ceil() / 1000.0,
        "global": limited.global,
    });
    let mut response = json_response(429, &body);
    let headers = response.headers_mut();
    if let Some(bucket) = &limited.bucket {
        add_bucket_headers(headers, bucket);
    }
    let retry = limited.retry_after.ceil().max(0.0) as u64;
    headers.insert("retry-after", HeaderValue::from(retry));
    let scope = if limited.global { "global" } else { "user" };
    headers.insert("x-ratelimit-scope", HeaderValue::from_static(scope));
    if limited.global {
        headers.insert("x-ratelimit-global", HeaderValue::from_static("true"));
    }
    response
}

/// A response whose body fails before its first byte: hyper then drops the connection
/// without having written the status line, which is how a server that dies mid-request looks.
fn closed_connection() -> Response {
    let failing = futures_util::stream::once(async {
        Err::<Bytes, std::io::Error>(std::io::Error::other("connection closed by fault"))
    });
    Response::new(Body::from_stream(failing))
}

/// Every REST request and `GET /attachments/...`.
async fn handle(State(shared): State<Arc<Shared>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
        return StatusCode::BAD_REQUEST.into_response();
    };
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    let index = record(&shared, method, uri, headers, &body);
    let response = serve(&shared, &parts, body).await;
    let status = response.status().as_u16();
    let mut world = shared.world();
    if matches!(status, 401 | 403 | 429) {
        world.invalid_requests += 1;
    }
    if let Some(request) = world.requests.get_mut(index) {
        request.status = status;
    }
    response
}

async fn serve(shared: &Arc<Shared>, parts: &Parts, body: Bytes) -> Response {
    let (method, uri, headers) = (&parts.method, &parts.uri, &parts.headers);
    if shared.world().down {
        return error_response(ApiError::new(502, 0, "502: Bad Gateway"), None);
    }
    let path = uri.path();
    if let Some(rest) = path.strip_prefix("/attachments/") {
        return match (method, routes::attachment(shared, rest)) {
            (&Method::GET, Some((content_type, bytes))) => {
                ([(header::CONTENT_TYPE, content_type)], bytes).into_response()
            }
            _ => error_response(ApiError::not_found(), None),
        };
    }
    let Some(api_path) = path.strip_prefix("/api/v10") else {
        return error_response(ApiError::not_found(), None);
    };
    let segments: Vec<&str> = api_path.split('/').filter(|s| !s.is_empty()).collect();
    let resolved = match routes::resolve(method.as_str(), &segments) {
        Ok(resolved) => resolved,
        Err(error) => return error_response(error, None),
    };
    let key = resolved.key;
    let fault = shared.world().faults.take(&key);
    let mut answer_after = None;
    match fault {
        Some(Fault::Hang(delay)) => tokio::time::sleep(delay).await,
        Some(Fault::AnswerLate(delay)) => answer_after = Some(delay),
        Some(Fault::CloseConnection) => return closed_connection(),
        Some(Fault::RateLimited {
            retry_after,
            global,
        }) => {
            return too_many_requests(&Limited {
                retry_after,
                global,
                bucket: None,
            });
        }
        Some(Fault::ServerError(status)) => {
            let reason = StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or("Server Error");
            return error_response(
                ApiError::new(status, 0, &format!("{status}: {reason}")),
                None,
            );
        }
        None => {}
    }
    if resolved.auth == Auth::Bot && !has_valid_auth(&shared.token, headers) {
        return error_response(ApiError::unauthorized(), None);
    }
    let counted = shared
        .world()
        .limits
        .check(&key, resolved.auth == Auth::Bot, Instant::now());
    let bucket = match counted {
        Ok(bucket) => bucket,
        Err(limited) => return too_many_requests(&limited),
    };
    let max_file = shared.world().max_file;
    let request = match decode(parts, body, max_file).await {
        Ok(request) => request,
        Err(error) => return error_response(error, Some(&bucket)),
    };
    let mut response = match routes::call(shared, resolved.endpoint, request) {
        Ok(Reply::Json(value)) => json_response(200, &value),
        Ok(Reply::Empty) => StatusCode::NO_CONTENT.into_response(),
        Err(error) => json_response(error.status, &error.body),
    };
    add_bucket_headers(response.headers_mut(), &bucket);
    if let Some(delay) = answer_after {
        // Done already; a client that gave up meanwhile never learns it.
        tokio::time::sleep(delay).await;
    }
    response
}

fn has_valid_auth(token: &str, headers: &HeaderMap) -> bool {
    headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.strip_prefix("Bot ") == Some(token))
}

/// Records a request as it arrives, the `Authorization` value blanked (tests scan requests
/// for leaked secrets; the bot token is not one the bot leaks by sending it here).
fn record(shared: &Shared, method: &Method, uri: &Uri, headers: &HeaderMap, body: &[u8]) -> usize {
    let recorded_headers = headers
        .iter()
        .map(|(name, value)| {
            let value = if name == header::AUTHORIZATION {
                "[redacted]".to_owned()
            } else {
                String::from_utf8_lossy(value.as_bytes()).into_owned()
            };
            (name.as_str().to_owned(), value)
        })
        .collect();
    let mut world = shared.world();
    world.requests.push(RecordedRequest {
        method: method.as_str().to_owned(),
        path: uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned()),
        headers: recorded_headers,
        has_valid_auth: has_valid_auth(&shared.token, headers),
        body: body.to_vec(),
        status: 0,
        at: Instant::now(),
    });
    world.requests.len() - 1
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => match (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                (Some(high), Some(low)) => {
                    out.push(high * 16 + low);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Decodes the query and the body: JSON, or multipart with `payload_json` and `files[n]`.
async fn decode(parts: &Parts, body: Bytes, max_file: usize) -> ApiResult<Req> {
    let (uri, headers) = (&parts.uri, &parts.headers);
    let query = uri
        .query()
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(k), percent_decode(v))
        })
        .collect();
    let mut request = Req {
        query,
        ..Req::default()
    };
    if body.len() > MAX_REQUEST {
        return Err(ApiError::new(413, 40005, "Request entity too large"));
    }
    if body.is_empty() {
        request.json = Value::Null;
        return Ok(request);
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_ascii_lowercase();
    if content_type.starts_with("application/json") {
        request.json = serde_json::from_slice(&body).map_err(|_| ApiError::invalid_json())?;
    } else if content_type.starts_with("multipart/form-data") {
        decode_multipart(parts, body, &mut request, max_file).await?;
    } else {
        return Err(ApiError::field(
            &[],
            "CONTENT_TYPE_INVALID",
            "Expected \"Content-Type\" header to be one of {'application/json', 'multipart/form-data'}.",
        ));
    }
    Ok(request)
}

async fn decode_multipart(
    parts: &Parts,
    body: Bytes,
    request: &mut Req,
    max_file: usize,
) -> ApiResult<()> {
    let mut http = Request::new(Body::from(body));
    *http.headers_mut() = parts.headers.clone();
    // The router's `DefaultBodyLimit::disable()` travels in the extensions; without it the
    // extractor would cut fields at 2 MB, before Discord's own 10 MiB check.
    *http.extensions_mut() = parts.extensions.clone();
    let malformed = || ApiError::field(&[], "MULTIPART_INVALID", "Malformed multipart body.");
    let mut multipart = Multipart::from_request(http, &())
        .await
        .map_err(|_| malformed())?;
    while let Some(field) = multipart.next_field().await.map_err(|_| malformed())? {
        let name = field.name().unwrap_or_default().to_owned();
        let filename = field.file_name().map(str::to_owned);
        let content_type = field.content_type().map(str::to_owned);
        let bytes = field.bytes().await.map_err(|_| malformed())?;
        if name == "payload_json" {
            request.json = serde_json::from_slice(&bytes).map_err(|_| ApiError::invalid_json())?;
        } else if let Some(filename) = filename {
            if bytes.len() > max_file {
                return Err(ApiError::new(413, 40005, "Request entity too large"));
            }
            let index = name
                .strip_prefix("files[")
                .and_then(|n| n.strip_suffix(']'))
                .unwrap_or(&name)
                .to_owned();
            request.files.push(Upload {
                index,
                filename,
                content_type,
                bytes: bytes.to_vec(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_are_percent_decoded() {
        assert_eq!(percent_decode("a%20b+c"), "a b c");
        assert_eq!(percent_decode("100%"), "100%");
    }
}
