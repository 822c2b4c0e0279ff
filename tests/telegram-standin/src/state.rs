//! Everything the stand-in remembers: chats and their messages, files, callback queries, bot
//! commands, the update queue, the webhook, recorded requests and fault knobs.
//!
//! One `std::sync::Mutex` guards it all. A std mutex (not tokio's) is right here because no
//! critical section awaits: handlers lock, read or change, unlock, and only then wait (long
//! polling waits on a `watch` channel, never while holding the lock).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value, json};
use tokio::sync::watch;

use crate::faults::Faults;
use crate::text::Formatted;
use crate::updates::{UpdateQueue, Webhook};
use crate::{RecordedRequest, SentMessage, TgUser};

/// State shared by the HTTP handlers, the webhook sender and the test-facing `StandIn`.
pub(crate) struct Shared {
    pub token: String,
    pub world: Mutex<World>,
    /// Bumped whenever the update queue or the active poller changes; long polls and the
    /// webhook sender wait on it.
    pub updates_signal: watch::Sender<u64>,
    /// Bumped whenever a bot message is sent, edited or deleted; `wait_for_sent` waits on it.
    pub sent_signal: watch::Sender<u64>,
    /// Which calls hang (see `StandIn::hang`): every call but `getUpdates` (`None` in the
    /// set) or the calls to given chats. Changed only through `watch`, so hung calls wake
    /// when it changes.
    pub hung: watch::Sender<std::collections::HashSet<Option<i64>>>,
    /// Becomes `true` when the last `StandIn` handle is dropped or `stop` is called.
    pub shutdown: watch::Receiver<bool>,
    /// Client used to POST updates to a webhook.
    pub http: reqwest::Client,
}

impl Shared {
    /// Locks the state. A panic in another test thread must not poison every later call, so
    /// a poisoned lock is taken over as it is.
    pub fn world(&self) -> MutexGuard<'_, World> {
        self.world
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn notify_updates(&self) {
        self.updates_signal.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn notify_sent(&self) {
        self.sent_signal.send_modify(|v| *v = v.wrapping_add(1));
    }

    pub fn is_shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }
}

/// The bot this server pretends to be.
#[derive(Debug, Clone)]
pub(crate) struct BotIdentity {
    pub id: i64,
    pub first_name: String,
    pub username: String,
}

impl BotIdentity {
    /// Telegram tokens are `<bot id>:<secret>`; the id part is the bot's user id.
    pub fn from_token(token: &str) -> Self {
        let id = token
            .split(':')
            .next()
            .and_then(|s| s.parse().ok())
            .unwrap_or(7_000_000_001);
        BotIdentity {
            id,
            first_name: "Switchboard Test Bot".into(),
            username: "switchboard_test_bot".into(),
        }
    }

    /// The `User` object for the bot (as in `Message.from`).
    pub fn user_json(&self) -> Value {
        json!({ "id": self.id, "is_bot": true, "first_name": self.first_name, "username": self.username })
    }

    /// What `getMe` returns: the `User` plus the bot-only fields teloxide's `Me` requires.
    pub fn me_json(&self) -> Value {
        let mut me = self.user_json();
        let extra = json!({
            "can_join_groups": true,
            "can_read_all_group_messages": false,
            "supports_inline_queries": false,
            "can_connect_to_business": false,
            "has_main_web_app": false,
        });
        if let (Some(me), Some(extra)) = (me.as_object_mut(), extra.as_object()) {
            me.extend(extra.clone());
        }
        me
    }
}

/// What kind of file a message or file_id carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FileKind {
    Photo,
    Document,
}

/// A stored file, reachable through getFile and the download URL.
#[derive(Debug, Clone)]
pub(crate) struct StoredFile {
    pub file_id: String,
    pub file_unique_id: String,
    pub file_path: String,
    pub kind: FileKind,
    pub bytes: Vec<u8>,
    pub width: u32,
    pub height: u32,
    pub file_name: Option<String>,
    pub mime_type: Option<String>,
}

/// One message in a chat, from the user or from the bot.
#[derive(Debug, Clone)]
pub(crate) struct StoredMessage {
    pub message_id: i64,
    pub from_bot: bool,
    pub date: i64,
    pub edit_date: Option<i64>,
    /// When the stand-in accepted the message, in unix milliseconds (`date` has seconds
    /// only), so tests can see how fast a bot sends to one chat.
    pub received_at_ms: i64,
    /// When the last edit was accepted, in unix milliseconds.
    pub edited_at_ms: Option<i64>,
    /// The text, or the caption of a media message.
    pub body: Formatted,
    /// `parse_mode` of the last send or edit, as the bot gave it.
    pub parse_mode: Option<String>,
    /// The file of a photo or document message.
    pub file_id: Option<String>,
    pub reply_to: Option<i64>,
    /// The inline keyboard, as echoed in `Message.reply_markup`.
    pub reply_markup: Option<Value>,
}

/// A private chat between the bot and one user. Its id is the user's id.
#[derive(Debug, Clone)]
pub(crate) struct Chat {
    pub user: TgUser,
    pub messages: BTreeMap<i64, StoredMessage>,
    /// In a private chat both sides' messages share one increasing id sequence.
    next_message_id: i64,
}

impl Chat {
    /// The `Chat` object.
    pub fn json(&self) -> Value {
        let mut chat =
            json!({ "id": self.user.id, "first_name": self.user.first_name, "type": "private" });
        if let Some(username) = &self.user.username {
            chat["username"] = json!(username);
        }
        chat
    }

    pub fn next_message_id(&mut self) -> i64 {
        self.next_message_id += 1;
        self.next_message_id
    }
}

/// The `User` object of a simulated human.
pub(crate) fn user_json(user: &TgUser) -> Value {
    let mut json = json!({ "id": user.id, "is_bot": false, "first_name": user.first_name });
    if let Some(language) = &user.language_code {
        json["language_code"] = json!(language);
    }
    if let Some(username) = &user.username {
        json["username"] = json!(username);
    }
    json
}

/// Current time in unix seconds, as `Message.date` carries it.
pub(crate) fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Current time in unix milliseconds, for what tests observe (never sent to the bot).
pub(crate) fn unix_now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// All mutable state.
pub(crate) struct World {
    pub bot: BotIdentity,
    pub chats: BTreeMap<i64, Chat>,
    pub files: HashMap<String, StoredFile>,
    next_file: u64,
    /// Issued callback query ids and whether each was answered.
    pub callbacks: HashMap<String, bool>,
    next_callback: u64,
    pub answered_callbacks: Vec<(String, Option<String>)>,
    /// Bot commands by scope and language (`setMyCommands`).
    pub commands: BTreeMap<String, Value>,
    pub updates: UpdateQueue,
    pub webhook: Option<Webhook>,
    pub requests: Vec<RecordedRequest>,
    pub faults: Faults,
    /// While set, every call answers 502 Bad Gateway, as when Telegram's front ends are up
    /// and the Bot API behind them is not; updates and messages are kept for afterwards.
    pub down: bool,
}

impl World {
    pub fn new(bot: BotIdentity) -> Self {
        World {
            bot,
            chats: BTreeMap::new(),
            files: HashMap::new(),
            next_file: 0,
            callbacks: HashMap::new(),
            next_callback: 0,
            answered_callbacks: Vec::new(),
            commands: BTreeMap::new(),
            updates: UpdateQueue::new(),
            webhook: None,
            requests: Vec::new(),
            faults: Faults::default(),
            down: false,
        }
    }

    /// Makes the private chat with `user` known (or refreshes the user's names).
    pub fn ensure_chat(&mut self, user: &TgUser) -> &mut Chat {
        let chat = self.chats.entry(user.id).or_insert_with(|| Chat {
            user: user.clone(),
            messages: BTreeMap::new(),
            next_message_id: 0,
        });
        chat.user = user.clone();
        chat
    }

    /// The `User` JSON of a known user, for `tg://user?id=` mentions.
    pub fn known_user_json(&self, id: i64) -> Option<Value> {
        self.chats.get(&id).map(|c| user_json(&c.user))
    }

    /// Stores bytes as a new file and returns its file_id.
    pub fn store_file(
        &mut self,
        kind: FileKind,
        bytes: Vec<u8>,
        (width, height): (u32, u32),
        file_name: Option<String>,
        mime_type: Option<String>,
    ) -> String {
        self.next_file += 1;
        let n = self.next_file;
        // Real file_ids are opaque URL-safe strings; these only look the part.
        let (prefix, folder, ext) = match kind {
            FileKind::Photo => ("AgACAgIAAxkBAAI", "photos", "jpg".to_owned()),
            FileKind::Document => (
                "BQACAgIAAxkBAAI",
                "documents",
                file_name
                    .as_deref()
                    .and_then(|f| f.rsplit_once('.'))
                    .map(|(_, e)| e.to_owned())
                    .unwrap_or_else(|| "bin".into()),
            ),
        };
        let file = StoredFile {
            file_id: format!("{prefix}{n:08X}_standin"),
            file_unique_id: format!("AQAD{n:08X}"),
            file_path: format!("{folder}/file_{n}.{ext}"),
            kind,
            bytes,
            width,
            height,
            file_name,
            mime_type,
        };
        let id = file.file_id.clone();
        self.files.insert(id.clone(), file);
        id
    }

    pub fn file_by_path(&self, path: &str) -> Option<&StoredFile> {
        self.files.values().find(|f| f.file_path == path)
    }

    /// Issues a new callback query id.
    pub fn issue_callback_id(&mut self) -> String {
        self.next_callback += 1;
        let id = format!("{}", 4_395_000_000_000_000_000u64 + self.next_callback);
        self.callbacks.insert(id.clone(), false);
        id
    }

    /// A `Message` object. `with_reply` adds `reply_to_message` (one level only: Telegram never
    /// nests a reply inside a reply).
    pub fn message_json(&self, chat_id: i64, message_id: i64, with_reply: bool) -> Option<Value> {
        let chat = self.chats.get(&chat_id)?;
        let msg = chat.messages.get(&message_id)?;
        let mut obj = Map::new();
        obj.insert("message_id".into(), json!(msg.message_id));
        let from = if msg.from_bot {
            self.bot.user_json()
        } else {
            user_json(&chat.user)
        };
        obj.insert("from".into(), from);
        obj.insert("chat".into(), chat.json());
        obj.insert("date".into(), json!(msg.date));
        if let Some(edit_date) = msg.edit_date {
            obj.insert("edit_date".into(), json!(edit_date));
        }
        if with_reply
            && let Some(reply) = msg
                .reply_to
                .and_then(|id| self.message_json(chat_id, id, false))
        {
            obj.insert("reply_to_message".into(), reply);
        }
        let file = msg.file_id.as_ref().and_then(|id| self.files.get(id));
        match file {
            None => {
                obj.insert("text".into(), json!(msg.body.text));
                if !msg.body.entities.is_empty() {
                    obj.insert("entities".into(), json!(msg.body.entities_json()));
                }
            }
            Some(file) => {
                match file.kind {
                    FileKind::Photo => {
                        obj.insert(
                            "photo".into(),
                            json!([{
                                "file_id": file.file_id,
                                "file_unique_id": file.file_unique_id,
                                "file_size": file.bytes.len(),
                                "width": file.width,
                                "height": file.height,
                            }]),
                        );
                    }
                    FileKind::Document => {
                        let mut doc = json!({
                            "file_id": file.file_id,
                            "file_unique_id": file.file_unique_id,
                            "file_size": file.bytes.len(),
                        });
                        if let Some(name) = &file.file_name {
                            doc["file_name"] = json!(name);
                        }
                        if let Some(mime) = &file.mime_type {
                            doc["mime_type"] = json!(mime);
                        }
                        obj.insert("document".into(), doc);
                    }
                }
                if !msg.body.text.is_empty() {
                    obj.insert("caption".into(), json!(msg.body.text));
                    if !msg.body.entities.is_empty() {
                        obj.insert("caption_entities".into(), json!(msg.body.entities_json()));
                    }
                }
            }
        }
        if let Some(markup) = &msg.reply_markup {
            obj.insert("reply_markup".into(), markup.clone());
        }
        Some(Value::Object(obj))
    }

    /// The bot's messages in a chat, as tests see them.
    pub fn sent_messages(&self, chat_id: i64) -> Vec<SentMessage> {
        let Some(chat) = self.chats.get(&chat_id) else {
            return Vec::new();
        };
        chat.messages
            .values()
            .filter(|m| m.from_bot)
            .map(|m| {
                let file = m.file_id.as_ref().and_then(|id| self.files.get(id));
                let (text, caption) = match file {
                    None => (Some(m.body.text.clone()), None),
                    Some(_) => (None, Some(m.body.text.clone()).filter(|c| !c.is_empty())),
                };
                SentMessage {
                    message_id: m.message_id,
                    chat_id,
                    text,
                    caption,
                    entities: m.body.entities_json(),
                    parse_mode: m.parse_mode.clone(),
                    reply_to_message_id: m.reply_to,
                    reply_markup: m.reply_markup.clone(),
                    edited: m.edit_date.is_some(),
                    received_at_ms: m.received_at_ms,
                    edited_at_ms: m.edited_at_ms,
                    kind: match file.map(|f| f.kind) {
                        None => "text",
                        Some(FileKind::Photo) => "photo",
                        Some(FileKind::Document) => "document",
                    }
                    .to_owned(),
                    file_bytes: file.map(|f| f.bytes.clone()),
                }
            })
            .collect()
    }
}
