//! The gateway's socket: the HTTP upgrade to WebSocket, and one task per connection that
//! writes what the state queues for it, reads what the client sends, and enforces the
//! identify and heartbeat deadlines.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hyper_util::rt::TokioIo;
use tokio::time::Instant;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role};

use super::{Out, handle_payload, hello};
use crate::error::ApiError;
use crate::rest::error_response;
use crate::state::Shared;

/// Checks the query Discord's gateway reads: `v=10` and `encoding=json` (the default). Other
/// versions and encodings are refused the way Discord refuses them, after the upgrade, with a
/// close code.
fn check_query(query: Option<&str>) -> Result<(), (u16, &'static str)> {
    let mut version = None;
    for pair in query
        .unwrap_or_default()
        .split('&')
        .filter(|p| !p.is_empty())
    {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        match key {
            "v" => version = Some(value.to_owned()),
            "encoding" if value != "json" => return Err((4002, "Error while decoding payload.")),
            // Transport compression is not implemented; a client asking for it could not read
            // the plain frames it would get.
            "compress" => return Err((4002, "Error while decoding payload.")),
            _ => {}
        }
    }
    match version.as_deref() {
        Some("10") => Ok(()),
        _ => Err((4012, "Invalid API version")),
    }
}

/// # `GET /` and `GET /gateway` with `Upgrade: websocket`
///
/// `GET /api/v10/gateway` names the first as the gateway URL; READY's `resume_gateway_url`
/// names the second, so a test can see which one a client resumed on.
pub(crate) async fn upgrade(State(shared): State<Arc<Shared>>, mut request: Request) -> Response {
    if shared.world().down {
        return error_response(ApiError::new(502, 0, "502: Bad Gateway"), None);
    }
    let key = request
        .headers()
        .get("sec-websocket-key")
        .and_then(|k| k.to_str().ok())
        .map(str::to_owned);
    let wants_ws = request
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let Some(key) = key.filter(|_| wants_ws) else {
        return error_response(ApiError::not_found(), None);
    };
    let verdict = check_query(request.uri().query());
    let on_upgrade = hyper::upgrade::on(&mut request);
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let socket =
            WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None).await;
        run(shared, socket, verdict).await;
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("sec-websocket-accept", derive_accept_key(key.as_bytes()))
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}

fn close_message(code: u16, reason: &str) -> Message {
    Message::Close(Some(CloseFrame {
        code: CloseCode::from(code),
        reason: reason.to_owned().into(),
    }))
}

/// One connection, from HELLO to close.
async fn run<S>(
    shared: Arc<Shared>,
    mut socket: WebSocketStream<S>,
    verdict: Result<(), (u16, &'static str)>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    if let Err((code, reason)) = verdict {
        let _ = socket.send(close_message(code, reason)).await;
        return;
    }
    let (connection, mut rx, interval, identify_timeout) = {
        let mut world = shared.world();
        let (id, rx) = world.gateway.connect();
        let interval = world.gateway.heartbeat_interval;
        world.gateway.send(id, hello(interval));
        (id, rx, interval, world.gateway.identify_timeout)
    };
    let mut shutdown = shared.shutdown.clone();
    // Discord allows some slack past the interval before it gives up on a silent client.
    let heartbeat_grace = interval + interval / 2;
    let mut identify_deadline = Some(Instant::now() + identify_timeout);
    let mut heartbeat_deadline = Instant::now() + heartbeat_grace;
    loop {
        let deadline = identify_deadline.map_or(heartbeat_deadline, |d| d.min(heartbeat_deadline));
        tokio::select! {
            out = rx.recv() => match out {
                Some(Out::Frame(text)) => {
                    if socket.send(Message::Text(text)).await.is_err() { break; }
                }
                Some(Out::Close(code, reason)) => {
                    let _ = socket.send(close_message(code, &reason)).await;
                    break;
                }
                Some(Out::Abort) | None => break,
            },
            incoming = socket.next() => match incoming {
                Some(Ok(Message::Text(text))) => {
                    let result = handle_payload(&shared, connection, &text);
                    if shared.world().gateway.is_identified(connection) {
                        identify_deadline = None;
                    }
                    if result == Ok(true) {
                        heartbeat_deadline = Instant::now() + heartbeat_grace;
                    }
                    if let Err((code, reason)) = result {
                        // Flush what was queued before the close (e.g. nothing, or an ACK).
                        while let Ok(Out::Frame(text)) = rx.try_recv() {
                            let _ = socket.send(Message::Text(text)).await;
                        }
                        let _ = socket.send(close_message(code, reason)).await;
                        break;
                    }
                }
                Some(Ok(Message::Binary(_))) => {
                    shared.world().gateway.frames_received.push(serde_json::json!({ "binary": true }));
                    let _ = socket.send(close_message(4002, "Error while decoding payload.")).await;
                    break;
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => {}
            },
            () = tokio::time::sleep_until(deadline) => {
                let _ = socket.send(close_message(4009, "Session timed out.")).await;
                break;
            }
            _ = shutdown.changed() => break,
        }
    }
    shared.world().gateway.disconnect(connection);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_query_must_ask_for_version_10_and_json() {
        assert_eq!(check_query(Some("v=10")), Ok(()));
        assert_eq!(check_query(Some("v=10&encoding=json")), Ok(()));
        assert_eq!(check_query(Some("v=9")).unwrap_err().0, 4012);
        assert_eq!(check_query(None).unwrap_err().0, 4012);
        assert_eq!(check_query(Some("v=10&encoding=etf")).unwrap_err().0, 4002);
    }
}
