//! Conversations started from a platform rather than the widget (issue 14).
//!
//! Someone who is not a responder writes to the bot on a platform whose connector takes
//! initiators (`Connector::takes_initiators`). What they write before they have picked a
//! topic is kept (`initiator_pending`) and they are asked for one (`Connector::ask_topic`).
//! Their pick (`RemoteEvent::TopicChosen`, or an answer naming a topic) starts a conversation
//! exactly like the widget's: a Matrix room whose ID is the conversation ID, in which they are
//! a *visitor ghost* (`@{ghost_prefix}visitor-{random}`, named with the conversation's alias),
//! so routing, offers, hand-off, time-outs and transcripts work unchanged, and no responder
//! learns more about them than about a widget visitor. What they write is posted by that
//! ghost (a room post, queued once per platform message); its echo from the homeserver is a
//! visitor message like any other. What the responder writes, and Switchboard's notices, are
//! queued in the outbox to the initiator's chat (`Delivery::to_initiator`) when their events
//! come back (`relay_to_initiator`), so they arrive once and in order like any delivery.
//!
//! Everything here runs in the lane of the initiator's chat (`LaneKey::From`), like a
//! responder's events; changes to one conversation take its room lock.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::{Bridge, VisitorChange, room_posts::RemoteRef, room_posts::RoomPost};
use crate::{
    config::TopicConfig,
    connector::{Delivery, MediaRef, RemoteEvent, Revision},
    conversation::{Conversation, ConversationState, Message, new_visitor_alias},
    store::{InitiatorRow, StoreError},
};

/// What the bot asks someone who writes to it for the first time, in the languages it knows
/// (by primary subtag); English for any other.
const TOPIC_QUESTIONS: &[(&str, &str)] = &[
    ("en", "Hello! What would you like to talk about?"),
    ("de", "Hallo! Worüber möchten Sie sprechen?"),
    ("es", "¡Hola! ¿De qué le gustaría hablar?"),
    ("fr", "Bonjour ! De quoi souhaitez-vous parler ?"),
    ("it", "Buongiorno! Di che cosa vorrebbe parlare?"),
    ("nl", "Hallo! Waarover wilt u praten?"),
    ("pl", "Dzień dobry! O czym chciałbyś porozmawiać?"),
    ("pt", "Olá! Sobre o que gostaria de falar?"),
    ("ru", "Здравствуйте! О чём вы хотели бы поговорить?"),
    ("uk", "Вітаємо! Про що ви хотіли б поговорити?"),
];

/// The topic question in `language`, if we have it in that language, else in English.
fn topic_question(language: Option<&str>) -> &'static str {
    let wanted = language.map(crate::routing::primary_subtag);
    TOPIC_QUESTIONS
        .iter()
        .find(|(tag, _)| wanted.is_some_and(|w| w.eq_ignore_ascii_case(tag)))
        .unwrap_or(&TOPIC_QUESTIONS[0])
        .1
}

/// How many messages an initiator may write before picking a topic; more are not kept
/// (they are asked again to pick one), so nobody can fill the store through a bot.
const MAX_PENDING: i64 = 20;

/// The window of `initiator_conversations_per_hour`.
const HOUR_MS: i64 = 3_600_000;

impl Bridge {
    /// Whether `event` on `platform` comes from an initiator: the platform takes them, the
    /// event is something a person writes or picks (or the platform saying they cannot be
    /// reached), and its address is no responder's. `/start CODE` is always a responder
    /// linking themselves, whoever sends it.
    pub(super) async fn is_initiator_event(
        &self,
        platform: &str,
        event: &RemoteEvent,
    ) -> Result<bool, StoreError> {
        let written = match event {
            RemoteEvent::Command { command, args, .. } => command != "start" || args.is_empty(),
            RemoteEvent::Message { .. }
            | RemoteEvent::Edit { .. }
            | RemoteEvent::TopicChosen { .. }
            | RemoteEvent::Unreachable { .. } => true,
            _ => false,
        };
        if !written
            || !self
                .remote(platform)
                .is_some_and(|(_, c)| c.takes_initiators())
        {
            return Ok(false);
        }
        Ok(self
            .responder_at(platform, event.address())
            .await?
            .is_none())
    }

    /// Handles what an initiator wrote or picked.
    pub(super) async fn handle_initiator(
        &self,
        platform: &str,
        event: RemoteEvent,
    ) -> Result<(), StoreError> {
        let address = event.address().to_owned();
        // Where they wrote, if the address alone is not enough (Matrix: the direct chat;
        // email: the mail thread): answers go there, and so does the conversation.
        let thread = match &event {
            RemoteEvent::Message { thread, .. }
            | RemoteEvent::Command { thread, .. }
            | RemoteEvent::TopicChosen { thread, .. }
            | RemoteEvent::Unreachable { thread, .. } => thread.clone(),
            _ => None,
        };
        let thread = thread.as_deref();
        // Their language, where the platform says: the question is asked in it, and it is
        // the conversation's language, as a browser's is for a widget visitor.
        let language = match &event {
            RemoteEvent::Message { language, .. }
            | RemoteEvent::Command { language, .. }
            | RemoteEvent::TopicChosen { language, .. } => language.clone(),
            _ => None,
        };
        let language = language.as_deref();
        match event {
            RemoteEvent::TopicChosen { topic, .. } => {
                self.initiator_chose(platform, &address, (thread, language), &topic)
                    .await
            }
            // What was sent to them never arrived (a bounce): their conversation in that
            // thread ends, as if they had ended it; nothing more is sent there.
            RemoteEvent::Unreachable { reason, .. } => {
                let Some(thread) = thread else {
                    return Ok(());
                };
                if let Some(c) = self
                    .store
                    .open_initiator_conversation_in(platform, &address, thread)
                    .await?
                {
                    let _room = self.room_locks.lock(&c.room_id).await;
                    tracing::warn!(room_id = %c.room_id, platform, %reason, "the initiator cannot be reached; the conversation ends");
                    self.end_by_visitor(&c.room_id).await?;
                }
                Ok(())
            }
            RemoteEvent::Command {
                command, reply_to, ..
            } => {
                let prefix = self.command_prefix(platform);
                match command.as_str() {
                    "end" => {
                        match self
                            .initiator_conversation(platform, &address, reply_to.as_deref(), thread)
                            .await?
                        {
                            Some(c) => {
                                let _room = self.room_locks.lock(&c.room_id).await;
                                self.end_by_visitor(&c.room_id).await?;
                            }
                            None => {
                                self.send_notice(
                                    platform,
                                    &address,
                                    thread,
                                    "You have no open conversation.",
                                )
                                .await;
                            }
                        }
                        Ok(())
                    }
                    "start" | "new" | "topics" => {
                        self.ask_initiator_topic(platform, &address, thread, language)
                            .await
                    }
                    _ => {
                        self.send_notice(
                            platform,
                            &address,
                            thread,
                            &format!(
                                "Write your message and someone will answer you here. \
                                 {prefix}new starts a conversation about another topic; \
                                 {prefix}end ends the conversation."
                            ),
                        )
                        .await;
                        Ok(())
                    }
                }
            }
            RemoteEvent::Message {
                ref reply_to,
                ref body,
                ref file,
                ..
            } => {
                if let Some(c) = self
                    .initiator_conversation(platform, &address, reply_to.as_deref(), thread)
                    .await?
                {
                    return self.post_from_initiator(&c, platform, event).await;
                }
                // Platforms without buttons: with no conversation open, a message that is
                // just a topic's number, ID or name picks it.
                if file.is_none()
                    && let Some(topic) = self.topic_named(body)
                {
                    let id = topic.id.clone();
                    return self
                        .initiator_chose(platform, &address, (thread, language), &id)
                        .await;
                }
                // Kept in order until they pick; they are asked with the first.
                let count = self
                    .store
                    .initiator_pending(platform, &address)
                    .await?
                    .len() as i64;
                let json = serde_json::to_string(&event).expect("a RemoteEvent serialises");
                if count >= MAX_PENDING {
                    return self
                        .ask_initiator_topic(platform, &address, thread, language)
                        .await;
                }
                self.store
                    .add_initiator_pending(platform, &address, &json)
                    .await?;
                if count == 0 {
                    self.ask_initiator_topic(platform, &address, thread, language)
                        .await?;
                }
                Ok(())
            }
            RemoteEvent::Edit {
                ref message_id,
                ref body,
                ref formatted_body,
                ..
            } => {
                // Only an edit of a message already in one of their conversations changes
                // anything; one written before a topic was picked goes as first written.
                let Some(room) = self
                    .store
                    .room_of_remote_message(platform, &address, message_id)
                    .await?
                else {
                    return Ok(());
                };
                let Some(c) = self
                    .store
                    .open_initiator_conversations(platform, &address)
                    .await?
                    .into_iter()
                    .find(|c| c.room_id == room)
                else {
                    return Ok(());
                };
                let txn = format!(
                    "{platform}-{address}-{message_id}-edit-{:x}",
                    super::relay::fnv1a(body.as_bytes())
                );
                self.post_as_visitor(
                    &c.room_id,
                    &txn,
                    RoomPost::Edit {
                        sender: c.visitor_user_id.clone(),
                        remote: RemoteRef {
                            platform: platform.to_owned(),
                            address: address.clone(),
                            message_id: message_id.clone(),
                        },
                        body: body.clone(),
                        formatted_body: formatted_body.clone(),
                    },
                )
                .await
            }
            _ => Ok(()),
        }
    }

    /// The initiator's conversation a message of theirs is meant for: the one the message
    /// it replies to belongs to, else the one whose answers go to the `thread` they wrote
    /// in (email: each conversation has its own mail thread), else the one they started
    /// last.
    async fn initiator_conversation(
        &self,
        platform: &str,
        address: &str,
        reply_to: Option<&str>,
        thread: Option<&str>,
    ) -> Result<Option<Conversation>, StoreError> {
        if let Some(reply_to) = reply_to
            && let Some(room) = self
                .store
                .room_of_remote_message(platform, address, reply_to)
                .await?
            && let Some(c) = self
                .store
                .open_initiator_conversations(platform, address)
                .await?
                .into_iter()
                .find(|c| c.room_id == room)
        {
            return Ok(Some(c));
        }
        if let Some(thread) = thread
            && let Some(c) = self
                .store
                .open_initiator_conversation_in(platform, address, thread)
                .await?
        {
            return Ok(Some(c));
        }
        Ok(self
            .store
            .open_initiator_conversations(platform, address)
            .await?
            .into_iter()
            .next())
    }

    /// The conversation an initiator typing at (`platform`, `address`, `thread`) is
    /// writing in, if they are one (the same choice as for their next message).
    pub(super) async fn initiator_typing_in(
        &self,
        platform: &str,
        address: &str,
        thread: Option<&str>,
    ) -> Result<Option<Conversation>, StoreError> {
        if !self
            .remote(platform)
            .is_some_and(|(_, c)| c.takes_initiators())
        {
            return Ok(None);
        }
        self.initiator_conversation(platform, address, None, thread)
            .await
    }

    /// The topic `answer` names: its number in the list `ask_topic` showed, its ID or its
    /// name (case and surrounding blanks aside).
    fn topic_named(&self, answer: &str) -> Option<&TopicConfig> {
        let answer = answer.trim();
        let topics = &self.config.topics;
        if let Ok(n) = answer.parse::<usize>() {
            return n.checked_sub(1).and_then(|i| topics.get(i));
        }
        topics
            .iter()
            .find(|t| t.id.eq_ignore_ascii_case(answer) || t.name.eq_ignore_ascii_case(answer))
    }

    /// Asks for a topic, in `language` where we can: the question and the topics' names.
    async fn ask_initiator_topic(
        &self,
        platform: &str,
        address: &str,
        thread: Option<&str>,
        language: Option<&str>,
    ) -> Result<(), StoreError> {
        let Some((_, c)) = self.remote(platform) else {
            return Ok(());
        };
        let topics: Vec<(String, String)> = self
            .config
            .topics
            .iter()
            .map(|t| (t.id.clone(), t.name_in(language).to_owned()))
            .collect();
        let ask = c.ask_topic(address, thread, topic_question(language), &topics);
        if let Err(e) = self.in_turn(c.as_ref(), address, ask).await {
            // They are asked again when they write /new, or after MAX_PENDING messages.
            tracing::warn!(error = %e, "could not ask an initiator for a topic");
        }
        Ok(())
    }

    /// The initiator picked `topic_id` (in `thread`, speaking `language` if known): their
    /// open conversation on that topic, or a new one, gets what they wrote while choosing.
    async fn initiator_chose(
        &self,
        platform: &str,
        address: &str,
        (thread, language): (Option<&str>, Option<&str>),
        topic_id: &str,
    ) -> Result<(), StoreError> {
        let Some(topic) = self.config.topic(topic_id).cloned() else {
            return self
                .ask_initiator_topic(platform, address, thread, language)
                .await;
        };
        let pending: Vec<(i64, Option<RemoteEvent>)> = self
            .store
            .initiator_pending(platform, address)
            .await?
            .into_iter()
            .map(|row| {
                let event = serde_json::from_str::<RemoteEvent>(&row.event_json)
                    .inspect_err(|e| tracing::warn!(error = %e, "an initiator's kept message is unreadable; left out"))
                    .ok();
                (row.seq, event)
            })
            .collect();
        // The language they picked in, else the one they wrote in last.
        let language = language.map(str::to_owned).or_else(|| {
            pending.iter().rev().find_map(|(_, e)| match e {
                Some(RemoteEvent::Message { language, .. }) => language.clone(),
                _ => None,
            })
        });
        let open = self
            .store
            .open_initiator_conversations(platform, address)
            .await?;
        let conversation = match open.into_iter().find(|c| c.topic == topic.id) {
            // Picked again from another thread (a new mail, another direct chat): answers
            // go where they wrote last.
            Some(c) => {
                if let Some(thread) = thread {
                    self.store.set_initiator_thread(&c.room_id, thread).await?;
                }
                c
            }
            None => {
                let key = self.initiator_key(platform, address);
                if self.store.is_initiator_blocked(&key).await? {
                    self.send_notice(
                        platform,
                        address,
                        thread,
                        "Sorry, you cannot start a conversation here.",
                    )
                    .await;
                    return Ok(());
                }
                let limit = i64::from(self.config.limits.initiator_conversations_per_hour);
                let since = self.now_ms() - HOUR_MS;
                if limit > 0
                    && self
                        .store
                        .initiator_conversations_since(&key, since)
                        .await?
                        >= limit
                {
                    self.send_notice(
                        platform,
                        address,
                        thread,
                        "You have started many conversations in the last hour; please try again later.",
                    )
                    .await;
                    return Ok(());
                }
                match self
                    .start_initiator_conversation(
                        platform,
                        address,
                        (thread, language),
                        &key,
                        &topic,
                    )
                    .await?
                {
                    Some(c) => c,
                    None => {
                        self.send_notice(
                            platform,
                            address,
                            thread,
                            "Sorry, the conversation could not be started. Please try again in a moment.",
                        )
                        .await;
                        return Ok(());
                    }
                }
            }
        };
        let last = pending.last().map(|(seq, _)| *seq);
        for (_, event) in pending {
            if let Some(event) = event {
                self.post_from_initiator(&conversation, platform, event)
                    .await?;
            }
        }
        if let Some(last) = last {
            self.store
                .clear_initiator_pending(platform, address, last)
                .await?;
        }
        Ok(())
    }

    /// A new conversation on `topic` for the initiator at (`platform`, `address`): a room
    /// like the widget's, with a fresh visitor ghost in it. `None`: the homeserver would not
    /// make the room (they are told to try again).
    async fn start_initiator_conversation(
        &self,
        platform: &str,
        address: &str,
        (thread, language): (Option<&str>, Option<String>),
        address_key: &str,
        topic: &TopicConfig,
    ) -> Result<Option<Conversation>, StoreError> {
        let ghost = match crate::visitor_account::new_visitor_user_id(
            &self.registration,
            self.server_name(),
        ) {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "cannot make a visitor user ID");
                return Ok(None);
            }
        };
        let room_id = match self.create_conversation_room(None, &topic.name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "could not create an initiator's conversation room");
                return Ok(None);
            }
        };
        let conversation = Conversation {
            room_id: room_id.to_string(),
            topic: topic.id.clone(),
            visitor_user_id: ghost.to_string(),
            visitor_alias: new_visitor_alias(),
            state: ConversationState::Queued,
            created_at: self.now_ms(),
            language,
        };
        let _room = self.room_locks.lock(&conversation.room_id).await;
        self.store.insert_conversation(&conversation).await?;
        self.store
            .insert_initiator(&InitiatorRow {
                room_id: conversation.room_id.clone(),
                platform: platform.to_owned(),
                address: address.to_owned(),
                thread: thread.map(str::to_owned),
                address_key: address_key.to_owned(),
                created_at: conversation.created_at,
            })
            .await?;
        self.set_state(
            &conversation.room_id,
            ConversationState::Queued,
            None,
            false,
        )
        .await?;
        // The ghost joins before anything it says (room posts go out in order).
        self.post(
            &conversation.room_id,
            "switchboard-visitor-join",
            RoomPost::Join {
                user: ghost.to_string(),
                display_name: conversation.visitor_alias.clone(),
            },
        )
        .await?;
        self.post_notice(
            &conversation.room_id,
            "switchboard-welcome",
            self.config.welcome_notice.replace("{topic}", &topic.name),
        )
        .await?;
        tracing::info!(room_id = %conversation.room_id, topic = %topic.id, platform, "conversation started by an initiator");
        Ok(Some(conversation))
    }

    /// Queues what the initiator wrote into their conversation, as its visitor ghost, once
    /// per platform message.
    async fn post_from_initiator(
        &self,
        conversation: &Conversation,
        platform: &str,
        event: RemoteEvent,
    ) -> Result<(), StoreError> {
        let RemoteEvent::Message {
            address,
            message_id,
            body,
            formatted_body,
            file,
            ..
        } = event
        else {
            return Ok(());
        };
        let (txn, op) = RoomPost::from_remote(
            conversation.visitor_user_id.clone(),
            (platform, &address, &message_id),
            body,
            formatted_body,
            file,
        );
        self.post_as_visitor(&conversation.room_id, &txn, op).await
    }

    /// A message in the conversation that is not the visitor's (the responder's, or a notice
    /// of Switchboard's), for the initiator, if a platform initiator started it: queued in
    /// the outbox to their chat, once per event.
    pub(super) async fn relay_to_initiator(
        &self,
        conversation: &Conversation,
        message: &Message,
        media: Option<MediaRef>,
    ) -> Result<(), StoreError> {
        let Some(initiator) = self.store.initiator_of(&conversation.room_id).await? else {
            return Ok(());
        };
        self.queue_for_initiator(
            conversation,
            &initiator,
            &message.event_id,
            (message.body.clone(), message.formatted_body.clone()),
            media,
            None,
        )
        .await
    }

    /// A responder's edit or deletion of their own message (`sender`'s), in a conversation a
    /// platform initiator started: the transcript is corrected and the change queued for the
    /// initiator like a visitor's change for a responder, so the message they were sent is
    /// edited or deleted where their platform allows. `false`: not such a conversation (the
    /// caller handles the event as before).
    pub(super) async fn relay_change_to_initiator(
        &self,
        conversation: &Conversation,
        sender: &str,
        change: &VisitorChange,
    ) -> Result<bool, StoreError> {
        let Some(initiator) = self.store.initiator_of(&conversation.room_id).await? else {
            return Ok(false);
        };
        let of = change.revision.of();
        let own = self
            .store
            .message_author(of)
            .await?
            .is_some_and(|(room, author)| room == conversation.room_id && author == sender);
        if !own {
            tracing::debug!("a change to a message that is not its sender's own; ignored");
            return Ok(true);
        }
        let text = match change.revision {
            Revision::Edit { .. } => Some((change.body.as_str(), change.formatted_body.as_deref())),
            Revision::Delete { .. } => None,
        };
        self.store.revise_message(of, text).await?;
        self.queue_for_initiator(
            conversation,
            &initiator,
            &change.event_id,
            (change.body.clone(), change.formatted_body.clone()),
            None,
            Some(change.revision.clone()),
        )
        .await?;
        Ok(true)
    }

    async fn queue_for_initiator(
        &self,
        conversation: &Conversation,
        initiator: &InitiatorRow,
        event_id: &str,
        (body, formatted_body): (String, Option<String>),
        media: Option<MediaRef>,
        revises: Option<Revision>,
    ) -> Result<(), StoreError> {
        let delivery = Delivery {
            room_id: conversation.room_id.clone(),
            event_id: event_id.to_owned(),
            visitor_alias: conversation.visitor_alias.clone(),
            body,
            formatted_body,
            media,
            thread: initiator.thread.clone(),
            revises,
            to_initiator: true,
        };
        let payload = serde_json::to_string(&delivery).expect("a Delivery always serialises");
        self.store
            .enqueue_outbox(
                &conversation.room_id,
                &initiator.platform,
                &initiator.address,
                event_id,
                &payload,
            )
            .await?;
        self.want_delivery(&initiator.platform, &initiator.address);
        Ok(())
    }

    /// Whether (`platform`, `address`) started the conversation in `room`.
    pub(super) async fn is_initiator_of(
        &self,
        room: &str,
        platform: &str,
        address: &str,
    ) -> Result<bool, StoreError> {
        Ok(self
            .store
            .initiator_of(room)
            .await?
            .is_some_and(|i| i.platform == platform && i.address == address))
    }

    /// The keyed hash of an initiator's address that limits and blocks count: HMAC-SHA256
    /// under a key derived from the appservice's `as_token`, so the same person gets the
    /// same key on every instance beside this homeserver, and the key says nothing of them.
    pub(crate) fn initiator_key(&self, platform: &str, address: &str) -> String {
        initiator_key(&self.registration.inner.as_token, platform, address)
    }
}

/// See [`Bridge::initiator_key`].
pub(crate) fn initiator_key(as_token: &str, platform: &str, address: &str) -> String {
    type HmacSha256 = Hmac<Sha256>;
    let mut derive = HmacSha256::new_from_slice(as_token.as_bytes()).expect("any key length");
    derive.update(b"switchboard initiator address key v1");
    let key = derive.finalize().into_bytes();
    let mut mac = HmacSha256::new_from_slice(&key).expect("any key length");
    mac.update(platform.as_bytes());
    mac.update(b"\0");
    mac.update(address.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_question_and_topic_names_follow_the_language_where_known() {
        assert_eq!(topic_question(None), TOPIC_QUESTIONS[0].1);
        assert_eq!(
            topic_question(Some("de-AT")),
            "Hallo! Worüber möchten Sie sprechen?"
        );
        assert_eq!(
            topic_question(Some("PT_br")),
            "Olá! Sobre o que gostaria de falar?"
        );
        assert_eq!(topic_question(Some("xx")), TOPIC_QUESTIONS[0].1);
        assert_eq!(topic_question(Some("")), TOPIC_QUESTIONS[0].1);
        let topic: TopicConfig = serde_json::from_value(serde_json::json!({
            "id": "billing",
            "name": "Billing",
            "names": { "de": "Abrechnung", "pt-BR": "Cobrança", "pt": "Faturação" },
        }))
        .unwrap();
        assert_eq!(topic.name_in(None), "Billing");
        assert_eq!(topic.name_in(Some("de-CH")), "Abrechnung");
        assert_eq!(topic.name_in(Some("pt-br")), "Cobrança");
        assert_eq!(topic.name_in(Some("pt-PT")), "Faturação");
        assert_eq!(topic.name_in(Some("fr")), "Billing");
        assert_eq!(topic.name_in(Some("  ")), "Billing");
    }

    #[test]
    fn the_address_key_is_stable_keyed_and_per_platform() {
        let a = initiator_key("token-one", "telegram", "42");
        assert_eq!(a, initiator_key("token-one", "telegram", "42"));
        assert_eq!(a.len(), 64);
        assert!(!a.contains("42"));
        assert_ne!(a, initiator_key("token-two", "telegram", "42"));
        assert_ne!(a, initiator_key("token-one", "discord", "42"));
        // The separator keeps ("telegram", "42") apart from ("telegram4", "2").
        assert_ne!(a, initiator_key("token-one", "telegram4", "2"));
    }
}
