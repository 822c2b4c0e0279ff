//! What the gateway's dispatches mean for the bridge: responders' messages, edits, button
//! presses and slash commands become [`RemoteEvent`]s, recorded (keyed by Discord's own IDs)
//! before anything is answered.
//!
//! Only what responders do counts: the bot's own messages, other bots' and webhooks' are
//! skipped, and in the guild only threads of the staff channel are conversations.

use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use serde_json::{Value, json};
use serenity::model::{
    application::{
        CommandDataOptionValue, CommandInteraction, ComponentInteraction,
        ComponentInteractionDataKind, Interaction,
    },
    channel::Message,
    event::MessageUpdateEvent,
    user::User,
};

use super::{
    COMMAND_PREFIX, DiscordConnector, SPEC, format,
    gateway::Dispatcher,
    rest::{Body, Route},
    thread_handle,
};
use crate::{
    cluster::Term,
    connector::{ConnectorError, FileKind, RemoteEvent, RemoteFile, RemoteSink},
};

/// How long an event is tried to be recorded while the store is away (see `Events::record`).
const RECORD_PATIENCE: Duration = Duration::from_secs(600);

/// The slash commands Switchboard registers (bulk overwrite), with their text forms
/// (`/end`) handled alike.
pub fn commands() -> Value {
    let plain = |name: &str, description: &str| json!({"name": name, "type": 1, "description": description});
    json!([
        plain("conversations", "List the conversations you hold"),
        {"name": "transfer", "type": 1, "description": "Hand this conversation to a colleague or another topic",
         "options": [{"name": "to", "type": 3, "required": false, "description": "A topic or a colleague's name"}]},
        plain("end", "End this conversation"),
        plain("available", "Get new conversations"),
        plain("away", "Get no new conversations for now"),
        plain("offline", "Get no new conversations until you are available again"),
        plain("help", "How Switchboard works"),
        {"name": "start", "type": 1, "description": "Link your Discord account with a code from the operator",
         "options": [{"name": "code", "type": 3, "required": true, "description": "The one-time code"}]},
    ])
}

/// The gateway's dispatches, handled for one connector.
pub struct Events<'a> {
    pub connector: &'a DiscordConnector,
    pub sink: &'a dyn RemoteSink,
    /// The lead the gateway runs under.
    pub term: &'a Term,
}

#[async_trait]
impl Dispatcher for Events<'_> {
    async fn dispatch(&self, name: &str, data: Value) {
        match name {
            "READY" => {
                let id = data["user"]["id"].as_str().and_then(|s| s.parse().ok());
                *self.connector.bot_user.lock().expect("bot user") = id;
                // A new session: nothing of what was written before it will be dispatched.
                // Handled before the next dispatch is read, so what was missed is recorded
                // before anything newer.
                self.catch_up().await;
            }
            "GUILD_CREATE" => {
                for thread in data["threads"].as_array().into_iter().flatten() {
                    self.learn_thread(thread).await;
                }
            }
            "THREAD_CREATE" | "THREAD_UPDATE" => self.learn_thread(&data).await,
            "MESSAGE_CREATE" => match Message::deserialize(&data) {
                Ok(m) => {
                    let in_guild = m.guild_id.is_some();
                    if let Some(place) = self.place(m.channel_id.get(), in_guild).await {
                        self.message(&m, place).await;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "discord: a message could not be read");
                    self.unreadable(&data).await;
                }
            },
            "MESSAGE_UPDATE" => match serde_json::from_value::<MessageUpdateEvent>(data) {
                Ok(m) => self.edit(&m).await,
                Err(e) => {
                    tracing::warn!(error = %e, "discord: an edit could not be read and was skipped")
                }
            },
            "MESSAGE_DELETE" => self.deleted(&data).await,
            "TYPING_START" => self.typing(&data).await,
            "INTERACTION_CREATE" => match serde_json::from_value::<Interaction>(data) {
                Ok(Interaction::Component(i)) => self.pressed(&i).await,
                Ok(Interaction::Command(i)) => self.command(&i).await,
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "discord: an interaction could not be read and was skipped")
                }
            },
            _ => {}
        }
    }
}

impl Events<'_> {
    async fn learn_thread(&self, thread: &Value) {
        let (Some(id), Some(staff)) = (
            thread["id"].as_str().and_then(|s| s.parse::<u64>().ok()),
            self.connector.staff_channel,
        ) else {
            return;
        };
        let ours = thread["parent_id"].as_str() == Some(&staff.to_string());
        self.connector.remember_thread(id, ours).await;
    }

    /// Records `event`, trying again while the store is away, for up to ten minutes. The
    /// dispatch is counted (the sequence number a resume replays from) only once this returns,
    /// and a counted dispatch is never sent again: giving up loses the event, where waiting
    /// only holds up the gateway (if Discord drops the session meanwhile, the resume replays
    /// the rest). The limit keeps a shutdown from waiting forever on a dead database.
    async fn record(&self, key: &str, event: &RemoteEvent) -> bool {
        let started = tokio::time::Instant::now();
        let mut wait = Duration::from_millis(200);
        for attempt in 1.. {
            match self.sink.record_remote(SPEC.platform(), key, event).await {
                Ok(()) => return true,
                Err(ConnectorError::Permanent(e)) => {
                    tracing::error!(error = %e, "discord: an event can never be recorded; skipped");
                    return false;
                }
                // The term ended (deposed: the sink refuses the records of a leader whose
                // lease was taken over; or stopping): the gateway session ends with it, and
                // the new leader's own session receives this event. While the renewal that
                // decides is under way (the store slow or away), this waits for it.
                Err(e) if !self.term.resumes().await => {
                    tracing::warn!(error = %e, "discord: an event was not recorded; this instance no longer leads");
                    return false;
                }
                Err(e) if started.elapsed() >= RECORD_PATIENCE => {
                    tracing::error!(error = %e, attempt, "discord: gave up recording an event");
                    return false;
                }
                Err(e) => {
                    tracing::error!(error = %e, attempt, "discord: could not record an event; trying again");
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(Duration::from_secs(5));
                }
            }
        }
        unreachable!("the attempts never run out")
    }

    fn is_own_or_bot(&self, author: &User) -> bool {
        author.bot || Some(author.id.get()) == *self.connector.bot_user.lock().expect("bot user")
    }

    /// Where a message was written, if it is a place conversations happen: the direct chat
    /// (`None`) or a staff thread (`Some(handle)`).
    async fn place(&self, channel: u64, in_guild: bool) -> Option<Option<String>> {
        if !in_guild {
            return Some(None);
        }
        self.connector
            .is_staff_thread(channel)
            .await
            .then(|| Some(thread_handle(channel)))
    }

    /// A message in a place conversations happen: the direct chat (`thread` `None`) or a
    /// staff thread.
    async fn message(&self, m: &Message, thread: Option<String>) {
        if m.webhook_id.is_some() || self.is_own_or_bot(&m.author) {
            return;
        }
        let address = m.author.id.get().to_string();
        let reply_to = m
            .message_reference
            .as_ref()
            .and_then(|r| r.message_id)
            .map(|id| id.get().to_string());
        let key = format!("m{}", m.id.get());
        let display_name =
            display_name(&m.author, m.member.as_ref().and_then(|p| p.nick.as_deref()));
        if !m.attachments.is_empty() {
            // Each file is a message of its own; the text goes with the first as its caption.
            for (i, a) in m.attachments.iter().enumerate() {
                let kind = if a
                    .content_type
                    .as_deref()
                    .is_some_and(|t| t.starts_with("image/"))
                {
                    FileKind::Image
                } else {
                    FileKind::File
                };
                let (body, formatted_body) = if i == 0 {
                    format::from_discord(&m.content)
                } else {
                    (String::new(), None)
                };
                let event = RemoteEvent::Message {
                    address: address.clone(),
                    message_id: if i == 0 {
                        m.id.get().to_string()
                    } else {
                        format!("{}.{i}", m.id.get())
                    },
                    reply_to: reply_to.clone(),
                    body: if body.is_empty() {
                        a.filename.clone()
                    } else {
                        body
                    },
                    formatted_body,
                    display_name: display_name.clone(),
                    file: Some(RemoteFile {
                        file_id: a.url.clone(),
                        mimetype: a.content_type.clone(),
                        filename: a.filename.clone(),
                        kind,
                    }),
                    thread: thread.clone(),
                    language: None,
                };
                let key = if i == 0 {
                    key.clone()
                } else {
                    format!("{key}.{i}")
                };
                self.record(&key, &event).await;
            }
            return;
        }
        let event = if let Some(command) = m.content.strip_prefix(COMMAND_PREFIX) {
            let (name, args) = command
                .split_once(char::is_whitespace)
                .unwrap_or((command, ""));
            RemoteEvent::Command {
                address,
                command: name.to_lowercase(),
                args: args.trim().to_owned(),
                reply_to,
                thread,
                language: None,
            }
        } else {
            let (body, formatted_body) = format::from_discord(&m.content);
            if body.trim().is_empty() {
                // Stickers, embeds only, or a file (not relayed yet).
                return;
            }
            RemoteEvent::Message {
                address,
                message_id: m.id.get().to_string(),
                reply_to,
                body,
                formatted_body,
                display_name,
                file: None,
                thread,
                language: None,
            }
        };
        self.record(&key, &event).await;
    }

    /// A responder typing where they hold a conversation: their ghost types in it. Discord
    /// shows "typing…" for ten seconds per signal, and so does the ghost.
    async fn typing(&self, data: &Value) {
        let id = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
        let (Some(user), Some(channel)) = (id(&data["user_id"]), id(&data["channel_id"])) else {
            return;
        };
        if Some(user) == *self.connector.bot_user.lock().expect("bot user") {
            return;
        }
        let Some(thread) = self.place(channel, !data["guild_id"].is_null()).await else {
            return;
        };
        self.sink.typing(
            SPEC.platform(),
            &user.to_string(),
            thread.as_deref(),
            Duration::from_secs(10),
        );
    }

    /// Records what responders wrote where they hold conversations while no gateway session
    /// was there to see it (Switchboard was down, or the session could not be resumed).
    /// Discord keeps it: each place's messages since the conversation's start there (its
    /// thread's creation, or the offer in the direct chat) are fetched and recorded under the
    /// same keys as live messages, so what was recorded already is not recorded again.
    async fn catch_up(&self) {
        let places = match self.sink.held_places(SPEC.platform()).await {
            Ok(places) => places,
            Err(e) => {
                tracing::error!(error = %e, "discord: cannot list the conversations held on Discord; what was written meanwhile is not fetched");
                return;
            }
        };
        // One fetch per channel, from the oldest conversation start in it.
        let mut channels: Vec<(u64, u64, Option<String>)> = Vec::new();
        for place in places {
            let handle = place.handle.as_deref();
            let (channel, since, thread) = match handle.and_then(super::thread_id) {
                Some(thread) => (thread, thread, Some(thread_handle(thread))),
                None => {
                    let Some(since) = handle.and_then(|h| h.parse::<u64>().ok()) else {
                        continue;
                    };
                    match self.connector.dm_channel(&place.address).await {
                        Ok(dm) => (dm, since, None),
                        Err(e) => {
                            tracing::warn!(error = %e, "discord: cannot open a direct chat to fetch what was written meanwhile");
                            continue;
                        }
                    }
                }
            };
            match channels.iter_mut().find(|(c, _, _)| *c == channel) {
                Some(known) => known.1 = known.1.min(since),
                None => channels.push((channel, since, thread)),
            }
        }
        for (channel, since, thread) in channels {
            self.catch_up_channel(channel, since, thread).await;
        }
    }

    async fn catch_up_channel(&self, channel: u64, mut after: u64, thread: Option<String>) {
        const PAGE: usize = 100;
        loop {
            let route = Route::new(
                reqwest::Method::GET,
                "/channels/{}/messages",
                format!("/channels/{channel}/messages?after={after}&limit={PAGE}"),
                channel,
            );
            let mut page: Vec<Message> = match self.connector.rest.call(route, Body::None).await {
                Ok(page) => page,
                Err(e) => {
                    tracing::warn!(error = %e, "discord: cannot fetch what was written meanwhile in a conversation");
                    return;
                }
            };
            // Discord answers newest first.
            page.sort_by_key(|m| m.id.get());
            let full = page.len() >= PAGE;
            for m in &page {
                self.message(m, thread.clone()).await;
                // An edit made while no session was there (or one seen live: same key).
                if let Some(at) = m.edited_timestamp {
                    self.record_edit(&m.author, m.id.get(), &m.content, Some(at.unix_timestamp()))
                        .await;
                }
                after = after.max(m.id.get());
            }
            if !full {
                return;
            }
        }
    }

    async fn edit(&self, m: &MessageUpdateEvent) {
        let (Some(author), Some(content)) = (&m.author, &m.content) else {
            return;
        };
        let at = m.edited_timestamp.map(|t| t.unix_timestamp());
        self.record_edit(author, m.id.get(), content, at).await;
    }

    /// Records a responder's edit, keyed by when it was made (`at`, unix seconds): each edit
    /// is its own event, and the same edit seen live and again in a catch-up is one.
    async fn record_edit(&self, author: &User, id: u64, content: &str, at: Option<i64>) {
        if self.is_own_or_bot(author) {
            return;
        }
        let (body, formatted_body) = format::from_discord(content);
        let event = RemoteEvent::Edit {
            address: author.id.get().to_string(),
            message_id: id.to_string(),
            body,
            formatted_body,
        };
        let at = at.unwrap_or_default();
        self.record(&format!("e{id}.{at}"), &event).await;
    }

    /// A message that did not read as Discord documents it, written by a responder where
    /// conversations happen: recorded as [`RemoteEvent::Unreadable`] under the message's
    /// key, so they are told it was not passed on instead of believing the visitor read it.
    async fn unreadable(&self, data: &Value) {
        let id = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
        let (Some(message), Some(channel), Some(author)) = (
            id(&data["id"]),
            id(&data["channel_id"]),
            id(&data["author"]["id"]),
        ) else {
            return;
        };
        if data["author"]["bot"].as_bool() == Some(true)
            || !data["webhook_id"].is_null()
            || Some(author) == *self.connector.bot_user.lock().expect("bot user")
            || self
                .place(channel, !data["guild_id"].is_null())
                .await
                .is_none()
        {
            return;
        }
        let event = RemoteEvent::Unreadable {
            address: author.to_string(),
        };
        self.record(&format!("m{message}"), &event).await;
    }

    /// A message deleted where conversations happen. Discord names only the message, not
    /// who wrote it: the bridge knows whose chat a message it relayed belongs to, and
    /// whether it was the responder's own (only those are taken back in the room).
    async fn deleted(&self, data: &Value) {
        let id = |v: &Value| v.as_str().and_then(|s| s.parse::<u64>().ok());
        let (Some(message), Some(channel)) = (id(&data["id"]), id(&data["channel_id"])) else {
            return;
        };
        if self
            .place(channel, !data["guild_id"].is_null())
            .await
            .is_none()
        {
            return;
        }
        let message_id = message.to_string();
        let address = match self
            .sink
            .chat_of_message(SPEC.platform(), &message_id)
            .await
        {
            Ok(Some(address)) => address,
            Ok(None) => return, // not a message Switchboard relayed
            Err(e) => {
                tracing::error!(error = %e, "discord: a deletion could not be looked up and is not passed on");
                return;
            }
        };
        let event = RemoteEvent::Delete {
            address,
            message_id,
        };
        self.record(&format!("d{message}"), &event).await;
    }

    /// Accept or Decline on an offer: recorded, then the press is acknowledged (the offer's
    /// message is edited by the bridge once the accept is handled).
    async fn pressed(&self, i: &ComponentInteraction) {
        let custom_id = i.data.custom_id.as_str();
        let (action, id) = custom_id.split_once(':').unwrap_or((custom_id, ""));
        let address = i.user.id.get().to_string();
        let event = match (action, id.parse::<i64>()) {
            ("accept", Ok(offer_id)) => RemoteEvent::Accept {
                offer_id,
                address,
                display_name: display_name(
                    &i.user,
                    i.member.as_ref().and_then(|m| m.nick.as_deref()),
                ),
            },
            ("decline", Ok(offer_id)) => RemoteEvent::Decline { offer_id, address },
            (super::messages::TOPIC_MENU, _) => match &i.data.kind {
                ComponentInteractionDataKind::StringSelect { values } if values.len() == 1 => {
                    RemoteEvent::TopicChosen {
                        address,
                        topic: values[0].clone(),
                        thread: None,
                        // The user's client language, as every interaction carries it.
                        language: Some(i.locale.clone()).filter(|l| !l.is_empty()),
                    }
                }
                _ => return,
            },
            _ => return,
        };
        let recorded = self.record(&format!("i{}", i.id.get()), &event).await;
        // 6: DEFERRED_UPDATE_MESSAGE, "got it", the message changes later.
        let answer = if recorded {
            json!({"type": 6})
        } else {
            unrecorded()
        };
        self.answer(i.id.get(), &i.token, answer).await;
    }

    async fn command(&self, i: &CommandInteraction) {
        let in_guild = i.guild_id.is_some();
        let address = i.user.id.get().to_string();
        let Some(thread) = self.place(i.channel_id.get(), in_guild).await else {
            let answer =
                ephemeral("Use this in your direct chat with me or in a conversation's thread.");
            return self.answer(i.id.get(), &i.token, answer).await;
        };
        let args = i
            .data
            .options
            .iter()
            .filter_map(|o| match &o.value {
                CommandDataOptionValue::String(s) => Some(s.clone()),
                CommandDataOptionValue::Integer(n) => Some(n.to_string()),
                _ => None,
            })
            .collect::<Vec<_>>()
            .join(" ");
        let event = RemoteEvent::Command {
            address,
            command: i.data.name.to_lowercase(),
            args,
            reply_to: None,
            thread,
            language: None,
        };
        let recorded = self.record(&format!("i{}", i.id.get()), &event).await;
        // The answer itself comes as a message where the command was used.
        let answer = if recorded {
            ephemeral(&format!("{COMMAND_PREFIX}{}: on it.", i.data.name))
        } else {
            unrecorded()
        };
        self.answer(i.id.get(), &i.token, answer).await;
    }

    /// Answers an interaction (within Discord's 3 seconds, or it shows as failed).
    async fn answer(&self, id: u64, token: &str, body: Value) {
        let route = Route::new(
            reqwest::Method::POST,
            "/interactions/{}/{}/callback",
            format!("/interactions/{id}/{token}/callback"),
            id,
        );
        if let Err(e) = self
            .connector
            .rest
            .call_empty(route, Body::Json(body))
            .await
        {
            tracing::warn!(error = %e, "discord: could not answer an interaction");
        }
    }
}

/// A reply only the person who pressed or typed sees (flag 64, EPHEMERAL).
fn ephemeral(text: &str) -> Value {
    json!({"type": 4, "data": {"content": text, "flags": 64, "allowed_mentions": {"parse": []}}})
}

fn unrecorded() -> Value {
    ephemeral("Switchboard could not take this in just now; please try again in a moment.")
}

/// The name a responder shows: their nickname in the guild, else their display name, else
/// their username.
fn display_name(user: &User, nick: Option<&str>) -> String {
    nick.map(str::to_owned)
        .or_else(|| user.global_name.clone())
        .unwrap_or_else(|| user.name.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_the_bridge_knows_is_registered_with_a_valid_name() {
        let commands = commands();
        let names: Vec<_> = commands
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        for name in [
            "conversations",
            "transfer",
            "end",
            "available",
            "away",
            "offline",
            "start",
            "help",
        ] {
            assert!(names.contains(&name), "{name}");
        }
        for c in commands.as_array().unwrap() {
            let name = c["name"].as_str().unwrap();
            assert!(
                name.len() <= 32 && name.chars().all(|ch| ch.is_ascii_lowercase()),
                "{name}"
            );
            let description = c["description"].as_str().unwrap();
            assert!(
                (1..=100).contains(&description.chars().count()),
                "{description}"
            );
        }
    }
}
