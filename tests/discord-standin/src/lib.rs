//! A local stand-in for Discord's API, REST v10 and gateway v10 (JSON encoding), for
//! Switchboard's tests.
//!
//! It speaks Discord's documented wire protocol on `127.0.0.1`, on one port: REST under
//! `{base_url}/api/v10`, the gateway at `ws://127.0.0.1:PORT` (what `GET /gateway` names) and
//! `ws://127.0.0.1:PORT/gateway` (READY's `resume_gateway_url`), uploaded files under
//! `{base_url}/attachments/...` as Discord's CDN serves them. A real client such as serenity can
//! be pointed at it with `HttpBuilder::new(token).proxy(base_url).ratelimiter_disabled(true)`.
//! It refuses what Discord refuses, with Discord's status codes and JSON error bodies
//! (`{"code": N, "message": "...", "errors": {...}}`), because a stand-in that accepts anything
//! proves nothing. Rate limits are real: every answer carries `X-RateLimit-*` headers and a
//! client that ignores them gets 429s.
//!
//! Tests act as Discord users through [`DiscordStandIn`] (`user_sends`, `user_presses`,
//! `user_runs_command`, ...), which changes the state and dispatches the gateway events a bot
//! would get; they look at what the bot did through `messages`, `threads`, `requests`,
//! `interaction_response` and `gateway_frames_received`, and break things with `fail_next`,
//! `drop_gateway`, `invalidate_sessions` and `set_down`.
//!
//! # Known differences from the real server
//!
//! * One guild, created at start, with the bot and a guild owner as members; no roles beyond
//!   `@everyone`, no permissions: the bot may do everything in the guild (send in locked
//!   threads, delete others' guild messages), users may post wherever the test says (private
//!   threads only as members, DMs only their own).
//! * Channel types: guild text (0), DM (1), public (11) and private (12) threads. No forums,
//!   voice, announcement channels, threads started from a message, pins, reactions, polls,
//!   stickers, or message forwarding (`message_reference.type` 1 is refused).
//! * Codes in `errors` trees other than the `BASE_TYPE_*` and `NUMBER_TYPE_*` families are
//!   close approximations of Discord's names. A body that is not JSON gets Discord's 50109
//!   ("The request body contains invalid JSON."), not 50035.
//! * `allowed_mentions` with `parse: ["users"]` and a non-empty `users` list is refused; an
//!   empty list next to `parse` is accepted. `mentions` and `mention_everyone` reflect what the
//!   sender's `allowed_mentions` let through.
//! * Bucket sizes are the stand-in's own (create message: 5 per 5 s per channel; most routes
//!   20 per second; global 50 per second), changeable with [`DiscordStandIn::set_bucket_limit`].
//!   The `shared` scope never occurs; interaction callbacks and webhook-token calls do not
//!   count against the global limit. Nothing is banned after too many invalid requests; they
//!   are only counted ([`DiscordStandIn::invalid_request_count`]).
//! * Gateway: no transport or payload compression (IDENTIFY's `compress` is ignored; asking
//!   for `compress=zlib-stream` closes with 4002), no ETF, no sharding beyond the guild filter,
//!   no presence, voice or member-chunk answers (op 3, 4, 8 and 31 are accepted and ignored),
//!   no identify rate limit. A connection that misses heartbeats for 1.5 intervals, or does
//!   not identify within 20 s, is closed with 4009.
//! * Interaction callbacks always answer 204 (`with_response` is ignored); ephemeral
//!   responses and follow-ups are recorded but never appear in [`DiscordStandIn::messages`].
//!   Responses to component interactions have message type 0, to slash commands type 20.
//!   The 3-second deadline can be shortened with [`DiscordStandIn::set_interaction_deadline`].
//! * Attachment URLs have no signature (`ex`, `is`, `hm`) and never expire.
//! * Without the MESSAGE_CONTENT intent (or with privileged intents disallowed, for REST),
//!   content, embeds, attachments and components of guild messages by others that do not
//!   mention the bot are blank, as on Discord; replies to the bot are not exempted here.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use std::time::Duration;
//! use discord_standin::DiscordStandIn;
//!
//! let discord = DiscordStandIn::start("test-bot-token").await?;
//! let alice = discord.user("alice");
//! let dm = discord.user_opens_dm(&alice);
//! discord.user_sends(&alice, dm, "hello");
//! // ... run the bot against discord.base_url() ...
//! let replies = discord
//!     .wait_for_messages(dm, |m| m.len() >= 2, Duration::from_secs(5))
//!     .await;
//! # Ok(()) }
//! ```

// `json!` with Discord's wide objects (the guild) needs more than the default 128.
#![recursion_limit = "256"]

mod actions;
mod error;
mod faults;
mod gateway;
mod ratelimit;
mod rest;
mod routes;
mod shapes;
mod state;
mod validate;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use crate::faults::{Fault, Route};
use crate::state::{Author, Shared, World};

/// A simulated Discord user, member of the guild.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DcUser {
    pub id: u64,
    pub username: String,
}

/// A file attached to a message.
#[derive(Debug, Clone, PartialEq)]
pub struct DcAttachment {
    pub id: u64,
    pub filename: String,
    pub size: usize,
    pub content_type: Option<String>,
    pub description: Option<String>,
    /// Where it is served, `{base_url}/attachments/{channel_id}/{id}/{filename}`.
    pub url: String,
    pub bytes: Vec<u8>,
}

/// A message as it now is in a channel (edits applied).
#[derive(Debug, Clone, PartialEq)]
pub struct DcMessage {
    pub id: u64,
    pub channel_id: u64,
    /// The user who wrote it, or the webhook's id for webhook messages.
    pub author_id: u64,
    pub content: String,
    pub components: Value,
    pub embeds: Value,
    pub attachments: Vec<DcAttachment>,
    pub webhook_id: Option<u64>,
    /// The name a webhook message shows (the webhook's name or the `username` override).
    pub webhook_username: Option<String>,
    pub webhook_avatar_url: Option<String>,
    /// `{type, message_id, channel_id, guild_id?}` for replies.
    pub message_reference: Option<Value>,
    /// `allowed_mentions` exactly as the sender gave it (`None` if absent).
    pub allowed_mentions: Option<Value>,
    /// Whether `mention_everyone` came out true (`@everyone`/`@here` and allowed).
    pub mention_everyone: bool,
    /// Ids of users the message pinged (after `allowed_mentions`).
    pub mentions: Vec<u64>,
    pub edited: bool,
    pub flags: u64,
    /// Message type (0 default, 19 reply, 20 slash command response).
    pub kind: u8,
}

/// A thread as it now is.
#[derive(Debug, Clone, PartialEq)]
pub struct DcThread {
    pub id: u64,
    pub parent_id: u64,
    pub name: String,
    /// 11 public, 12 private.
    pub kind: u8,
    pub invitable: bool,
    pub archived: bool,
    pub locked: bool,
    pub auto_archive_duration: u64,
    pub members: Vec<u64>,
    pub owner_id: u64,
}

/// One REST request, recorded as it arrived.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    pub method: String,
    /// Path and query, e.g. `/api/v10/webhooks/1/tok?wait=true`.
    pub path: String,
    /// Every header; the value of `Authorization` is replaced by `[redacted]`.
    pub headers: Vec<(String, String)>,
    /// Whether it carried `Authorization: Bot <the token>`.
    pub has_valid_auth: bool,
    pub body: Vec<u8>,
    /// The status answered; 0 while unanswered (or if the connection was closed).
    pub status: u16,
    /// When it arrived, so tests can tell how requests were spaced.
    pub at: std::time::Instant,
}

/// An interaction a user started (button press or slash command).
#[derive(Debug, Clone, PartialEq)]
pub struct Interaction {
    pub id: u64,
    pub token: String,
    /// 2 APPLICATION_COMMAND, 3 MESSAGE_COMPONENT.
    pub kind: u8,
    pub channel_id: u64,
    /// The message whose component was used.
    pub message_id: Option<u64>,
    pub user_id: u64,
    /// The interaction object as INTERACTION_CREATE carried it.
    pub payload: Value,
}

/// Stops the server when the last handle is dropped.
struct Handle {
    shared: Arc<Shared>,
    addr: SocketAddr,
    shutdown: watch::Sender<bool>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        self.shutdown.send_replace(true);
    }
}

/// A running stand-in. Cheap to clone; the server stops when the last clone is dropped or
/// [`DiscordStandIn::stop`] is called.
#[derive(Clone)]
pub struct DiscordStandIn {
    inner: Arc<Handle>,
}

impl fmt::Debug for DiscordStandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DiscordStandIn")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl DiscordStandIn {
    /// Starts a server accepting this bot token on `127.0.0.1` and a free port.
    pub async fn start(bot_token: &str) -> std::io::Result<DiscordStandIn> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(bot_token, listener)
    }

    /// Like [`DiscordStandIn::start`], on a listener the caller bound (e.g. a fixed port).
    pub fn serve(bot_token: &str, listener: TcpListener) -> std::io::Result<DiscordStandIn> {
        let addr = listener.local_addr()?;
        let base_url = format!("http://{addr}");
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let shared = Arc::new(Shared {
            token: bot_token.to_owned(),
            base_url: base_url.clone(),
            world: Mutex::new(World::new(base_url)),
            messages_signal: watch::channel(0).0,
            interactions_signal: watch::channel(0).0,
            shutdown: shutdown_rx.clone(),
        });
        let app = rest::app(shared.clone());
        let mut stop = shutdown_rx;
        tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "discord stand-in server stopped");
            }
        });
        Ok(DiscordStandIn {
            inner: Arc::new(Handle {
                shared,
                addr,
                shutdown: shutdown_tx,
            }),
        })
    }

    /// Stops serving: gateway connections end, new connections are refused.
    pub fn stop(&self) {
        self.inner.shutdown.send_replace(true);
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.shared().world()
    }

    /// `http://127.0.0.1:PORT`; REST is at `{base_url}/api/v10/...`.
    pub fn base_url(&self) -> String {
        self.inner.shared.base_url.clone()
    }

    /// The gateway URL `GET /gateway` answers, `ws://127.0.0.1:PORT`.
    pub fn gateway_url(&self) -> String {
        self.base_url().replacen("http", "ws", 1)
    }

    /// The bot token this server accepts.
    pub fn token(&self) -> &str {
        &self.inner.shared.token
    }

    pub fn application_id(&self) -> u64 {
        self.world().application_id
    }

    /// The bot's user id (the same as the application id, as on Discord).
    pub fn bot_user_id(&self) -> u64 {
        self.world().bot_id
    }

    pub fn guild_id(&self) -> u64 {
        self.world().guild_id
    }

    // --- what the bot did ---

    /// Every message now in the channel, oldest first, edits applied, deleted ones gone.
    pub fn messages(&self, channel_id: u64) -> Vec<DcMessage> {
        let world = self.world();
        world
            .messages
            .get(&channel_id)
            .map(|list| {
                list.values()
                    .map(|m| actions::public_message(&world, m))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until `pred` holds for the channel's messages, or `timeout` passes; returns the
    /// messages either way (so the caller's assertion shows what was there).
    pub async fn wait_for_messages(
        &self,
        channel_id: u64,
        pred: impl Fn(&[DcMessage]) -> bool,
        timeout: Duration,
    ) -> Vec<DcMessage> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut signal = self.shared().messages_signal.subscribe();
        loop {
            signal.borrow_and_update();
            let messages = self.messages(channel_id);
            if pred(&messages) {
                return messages;
            }
            if tokio::time::timeout_at(deadline, signal.changed())
                .await
                .is_err()
            {
                return messages;
            }
        }
    }

    /// Every thread in the guild.
    pub fn threads(&self) -> Vec<DcThread> {
        let world = self.world();
        world
            .channels
            .values()
            .filter_map(|c| {
                let t = c.thread.as_ref()?;
                Some(DcThread {
                    id: c.id,
                    parent_id: c.parent_id.unwrap_or_default(),
                    name: c.name.clone().unwrap_or_default(),
                    kind: c.kind,
                    invitable: t.invitable,
                    archived: t.archived,
                    locked: t.locked,
                    auto_archive_duration: t.auto_archive_duration,
                    members: t.members.keys().copied().collect(),
                    owner_id: t.owner_id,
                })
            })
            .collect()
    }

    /// Every REST request so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.world().requests.clone()
    }

    /// Answers with status 401, 403 or 429 so far (Discord bans clients that make 10,000 of
    /// these in 10 minutes).
    pub fn invalid_request_count(&self) -> usize {
        self.world().invalid_requests
    }

    /// Every gateway payload the bot sent (IDENTIFY, heartbeats, RESUME, ...), parsed.
    pub fn gateway_frames_received(&self) -> Vec<Value> {
        self.world().gateway.frames_received.clone()
    }

    /// Registered application commands, global and guild, as `PUT` answered them.
    pub fn commands(&self) -> Vec<Value> {
        self.world()
            .commands
            .iter()
            .map(|(_, c)| c.clone())
            .collect()
    }

    /// Connections with an identified (or resumed) session.
    pub fn gateway_sessions(&self) -> usize {
        self.world().gateway.live_sessions()
    }

    pub fn identify_count(&self) -> usize {
        self.world().gateway.identify_count
    }

    pub fn resume_count(&self) -> usize {
        self.world().gateway.resume_count
    }

    // --- faults and knobs ---

    /// The next request matching `route` gets `fault` instead of its normal handling
    /// (before authorization and rate limits). Several armed faults fire in order.
    pub fn fail_next(&self, route: Route, fault: Fault) {
        self.world().faults.arm(route, fault);
    }

    /// Changes a bucket's size: `limit` requests per `per`, counted per major parameter.
    /// `Route::Any` changes the default of routes without a limit of their own.
    pub fn set_bucket_limit(&self, route: Route, limit: u32, per: Duration) {
        self.world()
            .limits
            .set(route, ratelimit::Limit { limit, per });
    }

    /// Changes the global limit (default 50 requests per second); counting starts afresh.
    pub fn set_global_limit(&self, limit: u32, per: Duration) {
        self.world()
            .limits
            .set_global(ratelimit::Limit { limit, per });
    }

    /// Ends every gateway connection without a close frame, as a network failure does; the
    /// sessions stay, so the client should RESUME and get what it missed.
    pub fn drop_gateway(&self) {
        self.world().gateway.broadcast(|| gateway::Out::Abort);
    }

    /// Closes every gateway connection with this close code and reason.
    pub fn close_gateway(&self, code: u16, reason: &str) {
        self.world()
            .gateway
            .broadcast(|| gateway::Out::Close(code, reason.to_owned()));
    }

    /// The next RESUME of every existing session gets op 9 INVALID_SESSION `d: false`.
    pub fn invalidate_sessions(&self) {
        self.world().gateway.invalidate_all();
    }

    /// Sends op 7 RECONNECT on every connection.
    pub fn send_reconnect(&self) {
        self.world().gateway.broadcast(gateway::reconnect);
    }

    /// Sends op 1 HEARTBEAT (a request for an immediate heartbeat) on every connection.
    pub fn request_heartbeat(&self) {
        self.world()
            .gateway
            .broadcast(|| gateway::heartbeat_request(None));
    }

    /// While down, every REST call answers 502 and the gateway refuses connections.
    pub fn set_down(&self, down: bool) {
        let mut world = self.world();
        world.down = down;
        if down {
            world.gateway.broadcast(|| gateway::Out::Abort);
        }
    }

    /// Creating (or unarchiving) a thread beyond `n` active ones answers 160006.
    pub fn set_active_thread_limit(&self, n: usize) {
        self.world().active_thread_limit = n;
    }

    /// The HELLO `heartbeat_interval` for new connections (default 41.25 s).
    pub fn set_heartbeat_interval(&self, interval: Duration) {
        self.world().gateway.heartbeat_interval = interval;
    }

    /// Whether the application may use privileged intents (default yes). When not, IDENTIFY
    /// with one closes with 4014 and REST hides others' guild message content.
    pub fn set_privileged_intents_allowed(&self, allowed: bool) {
        self.world().privileged_intents_allowed = allowed;
    }

    /// How long after creation an interaction callback is still accepted (default 3 s).
    pub fn set_interaction_deadline(&self, deadline: Duration) {
        self.world().interaction_deadline = deadline;
    }
}

/// The author id as [`DcMessage::author_id`] reports it.
fn author_id(author: &Author) -> u64 {
    match author {
        Author::User(id) | Author::Webhook { id, .. } => *id,
    }
}
