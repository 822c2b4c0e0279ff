//! Discord's gateway: one websocket session that brings the bot's events, read in order.
//!
//! The protocol, as Discord documents it: the gateway says HELLO (op 10) with a heartbeat
//! interval; the bot IDENTIFYs (op 2) with its token and intents, or RESUMEs (op 6) a session
//! it had, naming the last sequence number it saw so the gateway replays what it missed; then
//! dispatches (op 0) arrive numbered, and the bot heartbeats (op 1) every interval, the first
//! after a random fraction of it, expecting an ACK (op 11) before the next. A missing ACK means
//! a dead connection: reconnect and resume. RECONNECT (op 7) asks for the same;
//! INVALID_SESSION (op 9) says whether the session can still be resumed.
//!
//! Why not serenity's client: it hands every event to its handler in a task of its own, so two
//! messages a responder writes back to back may be recorded in either order. Here each
//! dispatch is handled, and awaited, before the next frame is read. Gateway events are never
//! acknowledged to Discord, so a session that could not be resumed loses what was written
//! meanwhile; the connector fetches that over REST on READY (see `catch_up` in the
//! connector).

use std::time::Duration;

use async_trait::async_trait;
use backon::BackoffBuilder;
use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{sync::watch, time::Instant};
use tokio_tungstenite::tungstenite::{Message, protocol::CloseFrame};

use super::rest::{Rest, Route};
use crate::{cluster::Term, health::PartReporter};

/// Receives the gateway's dispatches, one at a time and in order.
#[async_trait]
pub trait Dispatcher: Send + Sync {
    /// One dispatch (`t`, `d`), READY and RESUMED included. Returns when it is handled: the
    /// next is not read before.
    async fn dispatch(&self, name: &str, data: Value);
}

/// What the gateway connection needs.
pub struct GatewayConfig<'a> {
    pub rest: &'a Rest,
    pub token: &'a str,
    /// The gateway intents (a bit set) to identify with.
    pub intents: u64,
    pub health: Option<&'a PartReporter>,
}

/// A session the gateway can resume.
struct Session {
    id: String,
    resume_url: String,
    /// The last dispatch's sequence number.
    seq: Option<u64>,
}

/// How one connection ended.
enum Ended {
    Shutdown,
    /// Reconnecting cannot help (bad token, intents not allowed): Discord closed with a code
    /// that says so.
    Fatal(String),
    /// Reconnect (and resume if the session is still there).
    Lost(String),
}

/// The close codes after which Discord documents that reconnecting is pointless.
fn is_fatal(code: u16) -> Option<&'static str> {
    Some(match code {
        4004 => "authentication failed: the bot token is wrong",
        4010 => "invalid shard",
        4011 => "sharding required",
        4012 => "invalid API version",
        4013 => "invalid intents",
        4014 => "disallowed intents: enable the Message Content intent for the application",
        _ => return None,
    })
}

/// Runs the gateway while `term` holds, reconnecting with backoff: until the term ends, or
/// this instance's own clock says it ran out, which is asked before connecting and before
/// each event is handed on (a leader paused past its lease hands on nothing once it resumes,
/// even what the socket had buffered).
pub async fn run(config: GatewayConfig<'_>, dispatcher: &dyn Dispatcher, term: &Term) {
    let mut shutdown = term.ended();
    let mut session: Option<Session> = None;
    let new_backoff = || {
        backon::ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(500))
            .with_max_delay(Duration::from_secs(60))
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut backoff = new_backoff();
    loop {
        if *shutdown.borrow() || !term.resumes().await {
            return;
        }
        let url = match &session {
            Some(s) => s.resume_url.clone(),
            None => match gateway_url(config.rest).await {
                Ok(url) => url,
                Err(e) => {
                    report_lost(&config, &e);
                    if !pause(&mut backoff, &mut shutdown).await {
                        return;
                    }
                    continue;
                }
            },
        };
        let mut connected = false;
        match connection(
            &config,
            &url,
            &mut session,
            dispatcher,
            term,
            &mut shutdown,
            &mut connected,
        )
        .await
        {
            Ended::Shutdown => return,
            Ended::Fatal(why) => {
                tracing::error!(
                    reason = why,
                    "discord: the gateway refused the bot; not reconnecting"
                );
                if let Some(h) = config.health {
                    h.down(format!("gateway: {why}"));
                }
                let _ = shutdown.wait_for(|stop| *stop).await;
                return;
            }
            Ended::Lost(why) => {
                if connected {
                    backoff = new_backoff();
                }
                report_lost(&config, &why);
                if !pause(&mut backoff, &mut shutdown).await {
                    return;
                }
            }
        }
    }
}

fn report_lost(config: &GatewayConfig<'_>, why: &str) {
    tracing::warn!(
        reason = why,
        "discord: gateway connection lost; reconnecting"
    );
    if let Some(h) = config.health {
        h.degraded(format!("gateway: {why}"));
    }
}

/// Waits the next backoff step; false if shut down meanwhile.
async fn pause(
    backoff: &mut impl Iterator<Item = Duration>,
    shutdown: &mut watch::Receiver<bool>,
) -> bool {
    let wait = backoff.next().unwrap_or(Duration::from_secs(60));
    tokio::select! {
        _ = tokio::time::sleep(wait) => true,
        _ = stopped(shutdown) => false,
    }
}

/// Returns once `shutdown` turns true (the guard `wait_for` returns is not `Send`, so it is
/// dropped here rather than held across a `select!`).
async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}

/// `GET /gateway`: where to connect.
async fn gateway_url(rest: &Rest) -> Result<String, String> {
    #[derive(serde::Deserialize)]
    struct Gateway {
        url: String,
    }
    let route = Route::new(reqwest::Method::GET, "/gateway", "/gateway".into(), "");
    rest.call::<Gateway>(route, super::rest::Body::None)
        .await
        .map(|g| g.url)
        .map_err(|e| e.to_string())
}

type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One websocket connection, from HELLO until it ends.
async fn connection(
    config: &GatewayConfig<'_>,
    url: &str,
    session: &mut Option<Session>,
    dispatcher: &dyn Dispatcher,
    term: &Term,
    shutdown: &mut watch::Receiver<bool>,
    connected: &mut bool,
) -> Ended {
    // Discord's URLs have no path, a stand-in's may: the query goes on whatever is there.
    let address = match url::Url::parse(url) {
        Ok(mut u) => {
            u.set_query(Some("v=10&encoding=json"));
            u.to_string()
        }
        Err(e) => return Ended::Lost(format!("the gateway URL is invalid: {e}")),
    };
    let socket = match tokio::time::timeout(
        Duration::from_secs(30),
        tokio_tungstenite::connect_async(&address),
    )
    .await
    {
        Ok(Ok((socket, _))) => socket,
        Ok(Err(e)) => return Ended::Lost(format!("cannot connect: {e}")),
        Err(_) => return Ended::Lost("connecting timed out".into()),
    };
    let (mut tx, mut rx) = socket.split();
    let interval = match hello(&mut rx).await {
        Ok(interval) => interval,
        Err(why) => return Ended::Lost(why),
    };
    let opening = match session {
        Some(s) => json!({"op": 6, "d": {"token": config.token, "session_id": s.id, "seq": s.seq}}),
        None => json!({"op": 2, "d": {
            "token": config.token,
            "intents": config.intents,
            "properties": {"os": std::env::consts::OS, "browser": "switchboard", "device": "switchboard"},
        }}),
    };
    if let Err(e) = tx.send(Message::Text(opening.to_string())).await {
        return Ended::Lost(format!("cannot send: {e}"));
    }
    // The first heartbeat goes after a random fraction of the interval, as Discord asks, so
    // that many clients reconnecting at once do not heartbeat in step.
    let mut next_beat = Instant::now() + interval.mul_f64(rand::random::<f64>());
    let mut acknowledged = true;
    loop {
        let frame = tokio::select! {
            _ = tokio::time::sleep_until(next_beat) => {
                if !acknowledged {
                    return Ended::Lost("no heartbeat acknowledgement".into());
                }
                let seq = session.as_ref().and_then(|s| s.seq);
                if let Err(e) = tx.send(Message::Text(json!({"op": 1, "d": seq}).to_string())).await {
                    return Ended::Lost(format!("cannot send: {e}"));
                }
                acknowledged = false;
                next_beat = Instant::now() + interval;
                continue;
            }
            frame = rx.next() => frame,
            _ = stopped(shutdown) => {
                let _ = tx.send(Message::Close(None)).await;
                return Ended::Shutdown;
            }
        };
        let text = match frame {
            None => return Ended::Lost("the gateway closed the connection".into()),
            Some(Err(e)) => return Ended::Lost(format!("websocket error: {e}")),
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => return closed(frame, session),
            // Pings are answered by tungstenite; we asked for JSON without compression.
            Some(Ok(_)) => continue,
        };
        let payload: Value = match serde_json::from_str(&text) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!(error = %e, "discord: unreadable gateway payload skipped");
                continue;
            }
        };
        match payload["op"].as_u64() {
            Some(0) if !term.resumes().await => {
                // Not handed on, and not counted: the instance that leads now has its own
                // session and gets the event there.
                let _ = tx.send(Message::Close(None)).await;
                return Ended::Shutdown;
            }
            Some(0) => {
                let name = payload["t"].as_str().unwrap_or_default().to_owned();
                let seq = payload["s"].as_u64();
                let data = payload.get("d").cloned().unwrap_or(Value::Null);
                if name == "READY" {
                    *session = Some(Session {
                        id: data["session_id"].as_str().unwrap_or_default().to_owned(),
                        resume_url: data["resume_gateway_url"]
                            .as_str()
                            .map_or_else(|| url.to_owned(), str::to_owned),
                        seq,
                    });
                }
                if name == "READY" || name == "RESUMED" {
                    *connected = true;
                    tracing::info!(event = name, "discord: gateway session up");
                    if let Some(h) = config.health {
                        h.connected();
                    }
                }
                dispatcher.dispatch(&name, data).await;
                // Counted only once handled: a resume replays from here.
                if let (Some(s), Some(seq)) = (session.as_mut(), seq) {
                    s.seq = Some(seq);
                }
            }
            Some(1) => {
                let seq = session.as_ref().and_then(|s| s.seq);
                if let Err(e) = tx
                    .send(Message::Text(json!({"op": 1, "d": seq}).to_string()))
                    .await
                {
                    return Ended::Lost(format!("cannot send: {e}"));
                }
            }
            Some(7) => return Ended::Lost("the gateway asked to reconnect".into()),
            Some(9) => {
                if payload["d"].as_bool() != Some(true) {
                    *session = None;
                }
                // Discord asks for a wait of 1 to 5 seconds before identifying again.
                let wait = Duration::from_millis(1000 + rand::random::<u64>() % 4000);
                tokio::time::sleep(wait).await;
                return Ended::Lost("the session was invalidated".into());
            }
            Some(11) => acknowledged = true,
            _ => {}
        }
    }
}

/// Reads HELLO: the heartbeat interval.
async fn hello(rx: &mut futures_util::stream::SplitStream<Socket>) -> Result<Duration, String> {
    let frame = tokio::time::timeout(Duration::from_secs(30), rx.next())
        .await
        .map_err(|_| "no HELLO from the gateway".to_owned())?;
    let text = match frame {
        Some(Ok(Message::Text(text))) => text,
        Some(Ok(other)) => return Err(format!("expected HELLO, got {other:?}")),
        Some(Err(e)) => return Err(format!("websocket error: {e}")),
        None => return Err("closed before HELLO".into()),
    };
    let payload: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
    match (
        payload["op"].as_u64(),
        payload["d"]["heartbeat_interval"].as_u64(),
    ) {
        (Some(10), Some(ms)) if ms > 0 => Ok(Duration::from_millis(ms)),
        _ => Err("expected HELLO with a heartbeat interval".into()),
    }
}

/// What a close frame from the gateway means for the session.
fn closed(frame: Option<CloseFrame<'_>>, session: &mut Option<Session>) -> Ended {
    let code = frame.as_ref().map(|f| u16::from(f.code)).unwrap_or(1005);
    let reason = frame.map(|f| f.reason.to_string()).unwrap_or_default();
    if let Some(why) = is_fatal(code) {
        return Ended::Fatal(format!("{why} ({code})"));
    }
    // Invalid sequence and session timeout: the session cannot be resumed.
    if matches!(code, 4007 | 4009) {
        *session = None;
    }
    Ended::Lost(format!("closed by the gateway ({code} {reason})"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_documented_close_codes_stop_reconnecting() {
        for code in [4004, 4010, 4011, 4012, 4013, 4014] {
            assert!(is_fatal(code).is_some(), "{code}");
        }
        for code in [
            1000, 1001, 1006, 4000, 4001, 4002, 4003, 4005, 4007, 4008, 4009,
        ] {
            assert!(is_fatal(code).is_none(), "{code}");
        }
    }

    #[test]
    fn a_timed_out_session_is_not_resumed() {
        let mut session = Some(Session {
            id: "s".into(),
            resume_url: "ws://x".into(),
            seq: Some(3),
        });
        let frame = |code: u16| {
            Some(CloseFrame {
                code: code.into(),
                reason: "".into(),
            })
        };
        assert!(matches!(closed(frame(4000), &mut session), Ended::Lost(_)));
        assert!(session.is_some(), "an unknown error keeps the session");
        assert!(matches!(closed(frame(4009), &mut session), Ended::Lost(_)));
        assert!(session.is_none());
        assert!(matches!(closed(frame(4004), &mut session), Ended::Fatal(_)));
    }
}
