//! The gateway (v10, JSON encoding): sessions, their sequence numbers and replay buffers, the
//! opcodes a client sends, and dispatching events to sessions whose intents ask for them.
//!
//! A session outlives its connection: every dispatch is kept in the session's log, so a client
//! that RESUMEs with the last `s` it saw gets exactly the events it missed. The socket side
//! (upgrade, read/write loop, timeouts) is in `gateway/socket.rs`.

pub(crate) mod socket;

use std::collections::HashMap;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::shapes::{mentions_user, merge};
use crate::state::{DM, Shared, World};

/// Gateway intents used to decide who gets what.
pub(crate) mod intents {
    pub const GUILDS: u64 = 1 << 0;
    pub const GUILD_MEMBERS: u64 = 1 << 1;
    pub const GUILD_PRESENCES: u64 = 1 << 8;
    pub const GUILD_MESSAGES: u64 = 1 << 9;
    pub const GUILD_MESSAGE_TYPING: u64 = 1 << 11;
    pub const DIRECT_MESSAGES: u64 = 1 << 12;
    pub const DIRECT_MESSAGE_TYPING: u64 = 1 << 14;
    pub const MESSAGE_CONTENT: u64 = 1 << 15;
    /// Every intent Discord defines (bits 0-16, 20, 21, 24, 25); other bits are refused with 4013.
    pub const KNOWN: u64 = 0x1_FFFF | (1 << 20) | (1 << 21) | (1 << 24) | (1 << 25);
    pub const PRIVILEGED: u64 = GUILD_MEMBERS | GUILD_PRESENCES | MESSAGE_CONTENT;
}

/// What the socket task is told to do.
#[derive(Debug)]
pub(crate) enum Out {
    Frame(String),
    /// Send a close frame with this code and reason, then end.
    Close(u16, String),
    /// End without a close frame, as a dropped TCP connection looks to the client.
    Abort,
}

#[derive(Debug)]
pub(crate) struct Connection {
    tx: mpsc::UnboundedSender<Out>,
    /// The session this connection identified or resumed, once it has.
    session: Option<String>,
}

#[derive(Debug)]
pub(crate) struct Session {
    intents: u64,
    seq: u64,
    /// Every dispatch sent to this session, as (s, frame), for RESUME.
    log: Vec<(u64, String)>,
    connection: Option<u64>,
    /// `invalidate_sessions` was called: the next RESUME gets INVALID_SESSION.
    invalidated: bool,
}

#[derive(Debug)]
pub(crate) struct GatewayState {
    next_connection: u64,
    connections: HashMap<u64, Connection>,
    sessions: HashMap<String, Session>,
    pub frames_received: Vec<Value>,
    pub identify_count: usize,
    pub resume_count: usize,
    pub heartbeat_interval: Duration,
    /// How long a new connection may take to IDENTIFY or RESUME.
    pub identify_timeout: Duration,
}

impl Default for GatewayState {
    fn default() -> Self {
        GatewayState {
            next_connection: 0,
            connections: HashMap::new(),
            sessions: HashMap::new(),
            frames_received: Vec::new(),
            identify_count: 0,
            resume_count: 0,
            // Discord's usual value.
            heartbeat_interval: Duration::from_millis(41_250),
            identify_timeout: Duration::from_secs(20),
        }
    }
}

fn frame(op: u8, d: Value) -> String {
    json!({ "op": op, "d": d, "s": null, "t": null }).to_string()
}

fn dispatch_frame(seq: u64, t: &str, d: &Value) -> String {
    json!({ "op": 0, "s": seq, "t": t, "d": d }).to_string()
}

/// A gateway close the socket task carries out.
pub(crate) type CloseCode = (u16, &'static str);

impl GatewayState {
    pub fn connect(&mut self) -> (u64, mpsc::UnboundedReceiver<Out>) {
        let (tx, rx) = mpsc::unbounded_channel();
        self.next_connection += 1;
        let id = self.next_connection;
        self.connections
            .insert(id, Connection { tx, session: None });
        (id, rx)
    }

    /// Forgets a connection that ended; its session stays, to be resumed.
    pub fn disconnect(&mut self, connection: u64) {
        if let Some(conn) = self.connections.remove(&connection)
            && let Some(session) = conn.session.and_then(|s| self.sessions.get_mut(&s))
            && session.connection == Some(connection)
        {
            session.connection = None;
        }
    }

    pub fn send(&self, connection: u64, out: Out) {
        if let Some(conn) = self.connections.get(&connection) {
            let _ = conn.tx.send(out);
        }
    }

    pub fn is_identified(&self, connection: u64) -> bool {
        self.connections
            .get(&connection)
            .is_some_and(|c| c.session.is_some())
    }

    /// Connections with a live session.
    pub fn live_sessions(&self) -> usize {
        self.connections
            .values()
            .filter(|c| c.session.is_some())
            .count()
    }

    pub fn broadcast(&self, make: impl Fn() -> Out) {
        for conn in self.connections.values() {
            let _ = conn.tx.send(make());
        }
    }

    pub fn invalidate_all(&mut self) {
        for session in self.sessions.values_mut() {
            session.invalidated = true;
        }
    }

    /// Sends one dispatch to one session (logging it for replay).
    fn dispatch_to(&mut self, session_id: &str, t: &str, d: &Value) {
        let Some(session) = self.sessions.get_mut(session_id) else {
            return;
        };
        session.seq += 1;
        let text = dispatch_frame(session.seq, t, d);
        session.log.push((session.seq, text.clone()));
        if let Some(conn) = session.connection.and_then(|c| self.connections.get(&c)) {
            let _ = conn.tx.send(Out::Frame(text));
        }
    }
}

/// Who an event is for: the intents a session must have all of, and, for messages, the
/// version sent to sessions without MESSAGE_CONTENT.
pub(crate) struct Audience {
    pub intents: u64,
    pub without_content: Option<Value>,
}

impl Audience {
    pub fn needs(intents: u64) -> Audience {
        Audience {
            intents,
            without_content: None,
        }
    }
}

impl World {
    /// Dispatches an event to every session whose intents cover it.
    pub fn dispatch(&mut self, t: &str, d: Value, audience: Audience) {
        let ids: Vec<String> = self.gateway.sessions.keys().cloned().collect();
        for id in ids {
            let session = &self.gateway.sessions[&id];
            if session.intents & audience.intents != audience.intents {
                continue;
            }
            let stripped = session.intents & intents::MESSAGE_CONTENT == 0;
            match (&audience.without_content, stripped) {
                (Some(blank), true) => {
                    let blank = blank.clone();
                    self.gateway.dispatch_to(&id, t, &blank);
                }
                _ => self.gateway.dispatch_to(&id, t, &d),
            }
        }
    }

    /// MESSAGE_CREATE or MESSAGE_UPDATE for a stored message, with the intent its channel
    /// needs and the content blanked for sessions without MESSAGE_CONTENT where Discord does
    /// (guild messages by others that do not mention the bot).
    pub fn dispatch_message(&mut self, t: &str, channel_id: u64, message_id: u64) {
        let Some(message) = self.message(channel_id, message_id) else {
            return;
        };
        let d = self.message_json(message, true);
        let is_dm = self.channel(channel_id).is_some_and(|c| c.kind == DM);
        let by_bot = matches!(message.author, crate::state::Author::User(id) if id == self.bot_id);
        let exempt = is_dm || by_bot || mentions_user(&message.content, self.bot_id);
        let without_content = (!exempt).then(|| {
            let mut blank = d.clone();
            merge(
                &mut blank,
                json!({ "content": "", "embeds": [], "attachments": [], "components": [] }),
            );
            blank
        });
        let intent = if is_dm {
            intents::DIRECT_MESSAGES
        } else {
            intents::GUILD_MESSAGES
        };
        self.dispatch(
            t,
            d,
            Audience {
                intents: intent,
                without_content,
            },
        );
    }

    /// Handles IDENTIFY: checks it, starts a session, sends READY (and GUILD_CREATE).
    pub(crate) fn identify(
        &mut self,
        token: &str,
        connection: u64,
        d: &Value,
    ) -> Result<(), CloseCode> {
        if self.gateway.is_identified(connection) {
            return Err((4005, "Already authenticated."));
        }
        let given = d["token"]
            .as_str()
            .ok_or((4002, "Error while decoding payload."))?;
        if given.strip_prefix("Bot ").unwrap_or(given) != token {
            return Err((4004, "Authentication failed."));
        }
        let properties = &d["properties"];
        if !["os", "browser", "device"]
            .iter()
            .all(|k| properties[k].is_string())
        {
            return Err((4002, "Error while decoding payload."));
        }
        let wanted = d["intents"].as_u64().ok_or((4013, "Invalid intent(s)."))?;
        if wanted & !intents::KNOWN != 0 {
            return Err((4013, "Invalid intent(s)."));
        }
        if wanted & intents::PRIVILEGED != 0 && !self.privileged_intents_allowed {
            return Err((4014, "Disallowed intent(s)."));
        }
        let shard = match d.get("shard") {
            None | Some(Value::Null) => None,
            Some(s) => match (s[0].as_u64(), s[1].as_u64()) {
                (Some(id), Some(count)) if id < count => Some((id, count)),
                _ => return Err((4010, "Invalid shard.")),
            },
        };
        self.gateway.identify_count += 1;
        let session_id = format!("{:032x}", self.ids.next() ^ 0x5eed_0000_0000_0000);
        self.gateway.sessions.insert(
            session_id.clone(),
            Session {
                intents: wanted,
                seq: 0,
                log: Vec::new(),
                connection: Some(connection),
                invalidated: false,
            },
        );
        if let Some(conn) = self.gateway.connections.get_mut(&connection) {
            conn.session = Some(session_id.clone());
        }
        // Guilds are split across shards by `(guild_id >> 22) % shard_count`.
        let guild_here = shard.is_none_or(|(id, count)| (self.guild_id >> 22) % count == id);
        let mut ready = json!({
            "v": 10,
            "user": self.current_user_json(),
            "guilds": if guild_here { json!([{ "id": self.guild_id.to_string(), "unavailable": true }]) } else { json!([]) },
            "session_id": session_id,
            "resume_gateway_url": format!("{}/gateway", self.base_url.replacen("http", "ws", 1)),
            "application": { "id": self.application_id.to_string(), "flags": self.application_flags() },
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "guild_join_requests": [],
            "session_type": "normal",
            "geo_ordered_rtc_regions": [],
            "_trace": ["[\"discord-standin\"]"],
        });
        if let Some((id, count)) = shard {
            ready["shard"] = json!([id, count]);
        }
        self.gateway.dispatch_to(&session_id, "READY", &ready);
        if guild_here && wanted & intents::GUILDS != 0 {
            let guild = self.guild_create_json();
            self.gateway
                .dispatch_to(&session_id, "GUILD_CREATE", &guild);
        }
        Ok(())
    }

    /// Handles RESUME: replays what the session missed, then RESUMED; or INVALID_SESSION.
    pub(crate) fn resume(
        &mut self,
        token: &str,
        connection: u64,
        d: &Value,
    ) -> Result<(), CloseCode> {
        if self.gateway.is_identified(connection) {
            return Err((4005, "Already authenticated."));
        }
        let given = d["token"]
            .as_str()
            .ok_or((4002, "Error while decoding payload."))?;
        if given.strip_prefix("Bot ").unwrap_or(given) != token {
            return Err((4004, "Authentication failed."));
        }
        let session_id = d["session_id"].as_str().unwrap_or_default().to_owned();
        let seq = d["seq"].as_u64();
        self.gateway.resume_count += 1;
        let usable = self
            .gateway
            .sessions
            .get(&session_id)
            .is_some_and(|s| !s.invalidated);
        if !usable {
            self.gateway.sessions.remove(&session_id);
            self.gateway
                .send(connection, Out::Frame(frame(9, json!(false))));
            return Ok(());
        }
        let session = self.gateway.sessions.get_mut(&session_id).expect("checked");
        let Some(seq) = seq.filter(|s| *s <= session.seq) else {
            return Err((4007, "Invalid seq."));
        };
        // A session has one connection: a resume from elsewhere ends the old one.
        let old = session.connection.replace(connection);
        let missed: Vec<String> = session
            .log
            .iter()
            .filter(|(s, _)| *s > seq)
            .map(|(_, text)| text.clone())
            .collect();
        if let Some(old) = old.filter(|o| *o != connection) {
            self.gateway.send(old, Out::Abort);
        }
        if let Some(conn) = self.gateway.connections.get_mut(&connection) {
            conn.session = Some(session_id.clone());
        }
        for text in missed {
            self.gateway.send(connection, Out::Frame(text));
        }
        self.gateway.dispatch_to(
            &session_id,
            "RESUMED",
            &json!({ "_trace": ["[\"discord-standin\"]"] }),
        );
        Ok(())
    }
}

/// Handles one payload a client sent: `Ok(true)` for a heartbeat, `Ok(false)` for anything
/// else accepted, or the close the payload calls for.
pub(crate) fn handle_payload(
    shared: &Shared,
    connection: u64,
    text: &str,
) -> Result<bool, CloseCode> {
    let decode_error = (4002, "Error while decoding payload.");
    let mut world = shared.world();
    let parsed: Option<Value> = serde_json::from_str(text).ok();
    world.gateway.frames_received.push(
        parsed
            .clone()
            .unwrap_or_else(|| json!({ "unparsed": text })),
    );
    let payload = parsed.filter(Value::is_object).ok_or(decode_error)?;
    let op = payload["op"].as_u64().ok_or(decode_error)?;
    let d = &payload["d"];
    let identified = world.gateway.is_identified(connection);
    match op {
        1 => {
            if !(d.is_null() || d.is_u64()) {
                return Err(decode_error);
            }
            world
                .gateway
                .send(connection, Out::Frame(frame(11, Value::Null)));
            Ok(true)
        }
        2 => world.identify(&shared.token, connection, d).map(|()| false),
        6 => world.resume(&shared.token, connection, d).map(|()| false),
        // Presence, voice state, guild member and soundboard requests: accepted and not acted
        // on (see the crate's known differences).
        3 | 4 | 8 | 31 if identified => Ok(false),
        3 | 4 | 8 | 31 => Err((4003, "Not authenticated.")),
        _ if !identified => Err((4003, "Not authenticated.")),
        _ => Err((4001, "Unknown opcode.")),
    }
}

/// The first frame of every connection.
pub(crate) fn hello(interval: Duration) -> Out {
    Out::Frame(frame(
        10,
        json!({ "heartbeat_interval": interval.as_millis() as u64, "_trace": ["[\"discord-standin\"]"] }),
    ))
}

/// A server-side heartbeat request (op 1), which clients must answer at once.
pub(crate) fn heartbeat_request(seq: Option<u64>) -> Out {
    Out::Frame(frame(1, json!(seq)))
}

/// op 7 RECONNECT.
pub(crate) fn reconnect() -> Out {
    Out::Frame(frame(7, Value::Null))
}
