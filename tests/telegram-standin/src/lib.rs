//! A local stand-in for the Telegram Bot API server, for Switchboard's tests.
//!
//! It speaks the documented wire protocol (`https://core.telegram.org/bots/api`) on
//! `127.0.0.1`, so a real client such as teloxide can be pointed at it with
//! `Bot::new(token).set_api_url(url)`. It refuses what the real server refuses, with the same
//! envelopes and messages, because a stand-in that accepts anything proves nothing.
//!
//! Tests act as Telegram users through [`StandIn`] (`user_sends`, `user_presses`, ...), and
//! look at what the bot did (`sent`, `requests`, `answered_callbacks`). Fault knobs inject
//! flood-control 429s and other errors.
//!
//! # Known differences from the real server
//!
//! * Only private chats exist (chat id = user id). Groups, channels, topics, inline mode,
//!   payments, stickers and albums are absent; real methods that are not implemented answer
//!   400 `method "x" is not implemented by the Telegram stand-in` (not 404).
//! * Webhooks on loopback hosts may use plain HTTP and any port (Telegram demands HTTPS on
//!   443/80/88/8443 and refuses private addresses; other hosts get those refusals here too).
//!   Delivery is one update at a time, retried after 50 ms .. 2 s.
//! * A photo keeps one `PhotoSize` (no thumbnails); HTTP URLs as `InputFile` are refused
//!   with `failed to get HTTP URL content` (no outside network).
//! * An inline button with more than one action field is refused (Telegram silently uses one).
//! * Text limits are counted in UTF-16 code units. Automatic entities cover http(s) URLs,
//!   @mentions, /commands and #hashtags only.
//! * `date_time` entities (with `unix_time` and `date_time_format`) are taken only as explicit
//!   `entities`, from bots and in [`StandIn::user_sends_with`]; HTML and MarkdownV2 have no
//!   syntax for them here. teloxide 0.17 does not know this type, which lets tests show what a
//!   bot does with entity types newer than its library.
//! * Callback queries never time out; `logOut`/`close` have no lockout; messages can be
//!   deleted at any age; update ids never jump and updates never expire.
//! * Replies to another chat are checked but not rendered as `external_reply`.
//! * Descriptions of rarely hit refusals (command lists, malformed JSON parameters, explicit
//!   entity fields) are close approximations, not copies.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use telegram_standin::StandIn;
//! let tg = StandIn::start("123456:TEST-TOKEN").await?;
//! let alice = tg.user(1001, "Alice", Some("alice"));
//! tg.user_sends(&alice, "/start");
//! // ... run the bot against tg.api_url() ...
//! let replies = tg.wait_for_sent(alice.id, |m| !m.is_empty(), std::time::Duration::from_secs(5)).await;
//! # Ok(()) }
//! ```

mod error;
mod faults;
mod html;
mod keyboard;
mod markdown;
mod methods;
mod params;
mod server;
mod state;
mod text;
mod updates;

use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::state::{
    BotIdentity, FileKind, Shared, StoredMessage, World, unix_now, unix_now_ms, user_json,
};
use crate::text::Formatted;

/// A simulated Telegram user. Their private chat with the bot has the same id as the user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TgUser {
    /// User id, and id of the private chat with the bot.
    pub id: i64,
    pub first_name: String,
    pub username: Option<String>,
    /// `User.language_code`: the language of their Telegram app (`en` unless set with
    /// [`TgUser::speaking`]).
    pub language_code: Option<String>,
}

impl TgUser {
    /// The same person, their app set to `language_code` (`None`: Telegram sends none).
    pub fn speaking(mut self, language_code: Option<&str>) -> Self {
        self.language_code = language_code.map(str::to_owned);
        self
    }
}

/// A message the bot has in a chat, in its current state (after any edits).
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    pub message_id: i64,
    pub chat_id: i64,
    /// The text after entity parsing, for text messages.
    pub text: Option<String>,
    /// The caption after entity parsing, for photos and documents that have one.
    pub caption: Option<String>,
    /// `MessageEntity` objects of the text or caption, offsets in UTF-16 code units.
    pub entities: Vec<Value>,
    /// The `parse_mode` the bot gave with the last send or edit.
    pub parse_mode: Option<String>,
    pub reply_to_message_id: Option<i64>,
    /// The inline keyboard, as `Message.reply_markup` shows it.
    pub reply_markup: Option<Value>,
    /// Whether the message was edited after it was sent.
    pub edited: bool,
    /// When the stand-in accepted the send, in unix milliseconds: how fast a bot sends to
    /// one chat is observable (`Message.date` has whole seconds only).
    pub received_at_ms: i64,
    /// When the stand-in accepted the last edit, in unix milliseconds.
    pub edited_at_ms: Option<i64>,
    /// `"text"`, `"photo"` or `"document"`.
    pub kind: String,
    /// The bytes of the photo or document.
    pub file_bytes: Option<Vec<u8>>,
}

/// One HTTP request the stand-in received, recorded before it was answered.
#[derive(Debug, Clone, PartialEq)]
pub struct RecordedRequest {
    /// The method name as sent (e.g. `SendMessage`); `file` for file downloads.
    pub method: String,
    /// The method name in lower case.
    pub method_lower: String,
    pub content_type: Option<String>,
    /// The raw query string, if any (parameters may travel there too).
    pub query: Option<String>,
    /// The raw request body.
    pub body: Vec<u8>,
    /// The HTTP status answered; 0 while the request is still being handled (or if the
    /// client hung up before the answer).
    pub status: u16,
    /// How many items a successful answer's `result` array carried (`getUpdates`: the
    /// updates handed out by this call); 0 for any other answer.
    pub items: usize,
}

/// Stops the server when the last `StandIn` clone is dropped.
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

/// A running stand-in server. Cheap to clone; the server stops when the last clone is
/// dropped or [`StandIn::stop`] is called.
#[derive(Clone)]
pub struct StandIn {
    inner: Arc<Handle>,
}

impl fmt::Debug for StandIn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StandIn")
            .field("addr", &self.inner.addr)
            .finish_non_exhaustive()
    }
}

impl StandIn {
    /// Starts a server for the bot with this token on `127.0.0.1` and a free port. The bot's
    /// user id is the number before `:` in the token, as with real tokens.
    pub async fn start(token: &str) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        Self::serve(token, listener)
    }

    /// Like [`StandIn::start`], on a listener the caller bound (e.g. a fixed port).
    pub fn serve(token: &str, listener: TcpListener) -> std::io::Result<StandIn> {
        let addr = listener.local_addr()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(std::io::Error::other)?;
        let shared = Arc::new(Shared {
            token: token.to_owned(),
            world: Mutex::new(World::new(BotIdentity::from_token(token))),
            updates_signal: watch::channel(0).0,
            sent_signal: watch::channel(0).0,
            hung: watch::channel(Default::default()).0,
            shutdown: shutdown_rx.clone(),
            http,
        });
        let app = server::app(shared.clone());
        let mut stop = shutdown_rx;
        tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = stop.wait_for(|stopped| *stopped).await;
                })
                .await;
            if let Err(error) = result {
                tracing::warn!(%error, "telegram stand-in server stopped");
            }
        });
        tokio::spawn(updates::deliver_webhooks(shared.clone()));
        Ok(StandIn {
            inner: Arc::new(Handle {
                shared,
                addr,
                shutdown: shutdown_tx,
            }),
        })
    }

    /// Stops serving: pending long polls return, new connections are refused.
    pub fn stop(&self) {
        self.inner.shutdown.send_replace(true);
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }

    fn world(&self) -> std::sync::MutexGuard<'_, World> {
        self.shared().world()
    }

    /// Base URL for `Bot::set_api_url` / `TELOXIDE_API_URL`, e.g. `http://127.0.0.1:PORT/`.
    pub fn api_url(&self) -> String {
        format!("http://{}/", self.inner.addr)
    }

    /// The token this server accepts.
    pub fn token(&self) -> &str {
        &self.inner.shared.token
    }

    /// The bot's `User` object (as in `Message.from` of the bot's messages).
    pub fn bot_user(&self) -> Value {
        self.world().bot.user_json()
    }

    // --- acting as a human Telegram user ---

    /// A user who has started a private chat with the bot (so the bot may message them).
    pub fn user(&self, id: i64, first_name: &str, username: Option<&str>) -> TgUser {
        let user = TgUser {
            id,
            first_name: first_name.to_owned(),
            username: username.map(str::to_owned),
            language_code: Some("en".to_owned()),
        };
        self.world().ensure_chat(&user);
        user
    }

    /// The user sends a text message; queues `Update{message}` and returns the message_id.
    /// URLs, @mentions, /commands and #hashtags get entities, as Telegram adds them.
    pub fn user_sends(&self, from: &TgUser, text: &str) -> i64 {
        self.user_sends_with(from, text, Vec::new(), None)
    }

    /// Like [`StandIn::user_sends`], with formatting entities (offsets in UTF-16 code units)
    /// and optionally as a reply. Panics if `reply_to_message_id` is not in that chat.
    pub fn user_sends_with(
        &self,
        from: &TgUser,
        text: &str,
        entities: Vec<Value>,
        reply_to_message_id: Option<i64>,
    ) -> i64 {
        let entities = text::explicit_entities(&json!(entities), text::utf16_len(text))
            .unwrap_or_else(|e| panic!("user_sends_with: invalid entities: {}", e.description));
        let mut body = Formatted {
            text: text.to_owned(),
            entities,
        };
        text::add_automatic_entities(&mut body);
        self.user_message(from, body, None, reply_to_message_id)
    }

    /// The user sends a photo (any bytes; PNG/GIF/JPEG dimensions are read when present).
    /// The file can be fetched with getFile and downloaded.
    pub fn user_sends_photo(&self, from: &TgUser, bytes: Vec<u8>, caption: Option<&str>) -> i64 {
        let size = methods::image_size(&bytes).unwrap_or((1, 1));
        let file_id = self
            .world()
            .store_file(FileKind::Photo, bytes, size, None, None);
        let mut body = Formatted {
            text: caption.unwrap_or_default().to_owned(),
            entities: Vec::new(),
        };
        text::add_automatic_entities(&mut body);
        self.user_message(from, body, Some(file_id), None)
    }

    fn user_message(
        &self,
        from: &TgUser,
        body: Formatted,
        file_id: Option<String>,
        reply_to: Option<i64>,
    ) -> i64 {
        let id = {
            let mut world = self.world();
            let chat = world.ensure_chat(from);
            if let Some(reply) = reply_to {
                assert!(
                    chat.messages.contains_key(&reply),
                    "message {reply} does not exist in chat {}",
                    from.id
                );
            }
            let id = chat.next_message_id();
            chat.messages.insert(
                id,
                StoredMessage {
                    message_id: id,
                    from_bot: false,
                    date: unix_now(),
                    edit_date: None,
                    received_at_ms: unix_now_ms(),
                    edited_at_ms: None,
                    body,
                    parse_mode: None,
                    file_id,
                    reply_to,
                    reply_markup: None,
                },
            );
            let payload = world.message_json(from.id, id, true).expect("just stored");
            world.updates.push("message", payload);
            id
        };
        self.shared().notify_updates();
        id
    }

    /// The user edits one of their messages; queues `Update{edited_message}`.
    /// Panics if `message_id` is not the user's own message in their chat.
    pub fn user_edits(&self, from: &TgUser, message_id: i64, new_text: &str) {
        {
            let mut world = self.world();
            let chat = world
                .chats
                .get_mut(&from.id)
                .unwrap_or_else(|| panic!("no chat with user {}", from.id));
            let message = chat
                .messages
                .get_mut(&message_id)
                .filter(|m| !m.from_bot)
                .unwrap_or_else(|| panic!("user {} has no message {message_id}", from.id));
            let mut body = Formatted {
                text: new_text.to_owned(),
                entities: Vec::new(),
            };
            text::add_automatic_entities(&mut body);
            message.body = body;
            message.edit_date = Some(unix_now());
            message.edited_at_ms = Some(unix_now_ms());
            let payload = world
                .message_json(from.id, message_id, true)
                .expect("exists");
            world.updates.push("edited_message", payload);
        }
        self.shared().notify_updates();
    }

    /// The user presses the inline button with this `callback_data` under the bot's message;
    /// queues `Update{callback_query}` and returns the callback query id. Panics if the
    /// message has no such button.
    pub fn user_presses(&self, from: &TgUser, message_id: i64, callback_data: &str) -> String {
        let id = {
            let mut world = self.world();
            let message = world
                .chats
                .get(&from.id)
                .and_then(|c| c.messages.get(&message_id))
                .filter(|m| m.from_bot)
                .unwrap_or_else(|| {
                    panic!("the bot has no message {message_id} in chat {}", from.id)
                });
            let has_button = message
                .reply_markup
                .as_ref()
                .and_then(|m| m["inline_keyboard"].as_array())
                .into_iter()
                .flatten()
                .filter_map(Value::as_array)
                .flatten()
                .any(|button| button["callback_data"].as_str() == Some(callback_data));
            assert!(
                has_button,
                "message {message_id} has no inline button with callback_data {callback_data:?}"
            );
            let message_json = world
                .message_json(from.id, message_id, true)
                .expect("exists");
            let id = world.issue_callback_id();
            let payload = json!({
                "id": id,
                "from": user_json(from),
                "message": message_json,
                "chat_instance": format!("{}", 8_100_000_000_000_000_000u64.wrapping_add(from.id as u64)),
                "data": callback_data,
            });
            world.updates.push("callback_query", payload);
            id
        };
        self.shared().notify_updates();
        id
    }

    // --- what the bot did ---

    /// Every message the bot has in that chat (sent, then possibly edited; deleted ones are
    /// gone), oldest first.
    pub fn sent(&self, chat_id: i64) -> Vec<SentMessage> {
        self.world().sent_messages(chat_id)
    }

    /// Waits until `pred` holds for the bot's messages in the chat, or `timeout` passes.
    /// The error describes what the chat held at the deadline.
    pub async fn wait_for_sent(
        &self,
        chat_id: i64,
        pred: impl Fn(&[SentMessage]) -> bool,
        timeout: Duration,
    ) -> Result<Vec<SentMessage>, String> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut signal = self.shared().sent_signal.subscribe();
        loop {
            signal.borrow_and_update();
            let messages = self.sent(chat_id);
            if pred(&messages) {
                return Ok(messages);
            }
            if tokio::time::timeout_at(deadline, signal.changed())
                .await
                .is_err()
            {
                return Err(format!(
                    "timed out after {timeout:?} waiting for the bot's messages in chat {chat_id}; it has {messages:#?}"
                ));
            }
        }
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.world().requests.clone()
    }

    /// Successful `answerCallbackQuery` calls: (callback_query_id, text).
    pub fn answered_callbacks(&self) -> Vec<(String, Option<String>)> {
        self.world().answered_callbacks.clone()
    }

    /// Updates not yet confirmed by a getUpdates offset (or delivered to a webhook).
    pub fn pending_updates(&self) -> usize {
        self.world().updates.len()
    }

    // --- fault injection ---

    /// The next `count` calls of `method` (to `chat_id`, if given) answer 429
    /// `Too Many Requests: retry after N` with `parameters.retry_after = N`; and until N seconds
    /// have passed since such a 429, further matching calls get 429 too, so a client that
    /// ignores retry_after keeps failing.
    pub fn rate_limit_next(
        &self,
        method: &str,
        chat_id: Option<i64>,
        count: u32,
        retry_after_secs: u32,
    ) {
        self.rate_limit_after(method, chat_id, 0, count, retry_after_secs);
    }

    /// Like [`StandIn::rate_limit_next`], but the first `after` matching calls are served
    /// normally: `rate_limit_after("sendMessage", Some(chat), 2, 1, 2)` refuses the third
    /// message to that chat (e.g. the third part of a long text) with `retry after 2`, as
    /// Telegram's flood control does in the middle of a burst. Every matching call counts
    /// towards `after`, whether or not it then succeeds.
    pub fn rate_limit_after(
        &self,
        method: &str,
        chat_id: Option<i64>,
        after: u32,
        count: u32,
        retry_after_secs: u32,
    ) {
        self.world()
            .faults
            .add_rate_limit(method, chat_id, after, count, retry_after_secs);
    }

    /// The next call of `method` answers `{"ok":false,"error_code":error_code,"description":description}`.
    pub fn fail_next(&self, method: &str, error_code: u16, description: &str) {
        self.world()
            .faults
            .add_failure(method, error_code, description);
    }

    /// Makes calls hang, as a server that accepts the connection and never answers: with
    /// `Some(chat)`, every call naming that `chat_id`; with `None`, every call but
    /// `getUpdates`. A hung call is not carried out while it hangs; when `release` is called,
    /// calls still waiting go on normally, and calls whose client gave up (closed the
    /// connection) are never carried out, as with a real server that never got to them.
    pub fn hang(&self, chat_id: Option<i64>) {
        self.shared().hung.send_modify(|h| {
            h.insert(chat_id);
        });
    }

    /// Takes the Bot API away (`true`: every call, `getUpdates` too, answers 502 Bad
    /// Gateway) or brings it back; what users sent meanwhile waits in the update queue.
    pub fn set_down(&self, down: bool) {
        self.world().down = down;
    }

    /// Ends every `hang`.
    pub fn release(&self) {
        self.shared().hung.send_modify(|h| h.clear());
    }

    /// Sends (sendMessage/sendPhoto/sendDocument) to one chat closer together than `d` get 429
    /// with retry_after, modelling Telegram's per-chat limit. `None` turns it off.
    pub fn min_interval_per_chat(&self, d: Option<Duration>) {
        self.world().faults.set_min_interval(d);
    }
}
