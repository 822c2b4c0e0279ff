//! What responders do on their platform, and what they are told: their messages and commands,
//! which conversation a message is for, notices. Offers answered are in `claims.rs`; the
//! visitor's side goes through the outbox (`outbox.rs`).

use std::sync::Arc;

use super::{
    Bridge,
    pacing::NOTICE_PATIENCE,
    room_posts::{RemoteRef, RoomPost},
};
use crate::{
    connector::{Connector, ConnectorError, Platform, RemoteEvent},
    responder::ResponderStatus,
    store::{AssignmentRow, StoreError},
};

/// How long a reply to a message not mapped yet waits, at most, for the delivery under way
/// to its chat to map it (see `room_replied_to`; it looks again whenever a delivery ends). Long enough for a
/// paced slot and a slow platform call; it holds up only that responder's own lane.
const REPLY_MAPPING_PATIENCE: std::time::Duration = std::time::Duration::from_secs(10);

impl Bridge {
    fn connector(&self, platform: Platform) -> Option<&Arc<dyn Connector>> {
        self.connectors.get(&platform)
    }

    pub(super) fn remote(&self, platform: &str) -> Option<(Platform, &Arc<dyn Connector>)> {
        let p = Platform::parse(platform)?;
        Some((p, self.connector(p)?))
    }

    /// Links the platform address to the responder an operator issued `code` for.
    async fn link(&self, platform: &str, address: &str, code: &str) -> Result<(), StoreError> {
        match self.store.redeem_link_code(code, platform, address).await? {
            Some(responder_id) => {
                tracing::info!(%responder_id, platform, "responder linked their account");
                let name = self
                    .store
                    .responder(&responder_id)
                    .await?
                    .and_then(|r| r.pseudonym);
                // A newly reachable responder may take a queued conversation.
                self.register_changed.notify_one();
                let text = match name {
                    Some(n) => format!("Linked. You will receive conversations as {n}."),
                    None => "Linked. You will receive conversations here.".to_owned(),
                };
                self.notify(platform, address, &text).await;
            }
            None => {
                self.notify(platform, address, "This link code is unknown, expired or already used. Ask your operator for a new one.")
                    .await;
            }
        }
        Ok(())
    }

    /// Sends a responder a service message (offer taken, command answers, hand-off notes).
    /// These are short and rare, so the bridge hands them to the connector at once rather
    /// than through the outbox, but they keep to the per-chat pacing and wait out a rate
    /// limit within `NOTICE_PATIENCE`, so a 429 no longer drops them. Other failures, or a
    /// longer wait, are logged and the notice is dropped: the one worker must not stall on one
    /// platform. (The Matrix connector never fails that way: it queues its notices durably
    /// with the room posts, see `room_posts.rs`.)
    pub(super) async fn notify(&self, platform: &str, address: &str, text: &str) {
        self.send_notice(platform, address, None, text).await;
    }

    /// Like [`Self::notify`], about one conversation: shown where the responder was offered
    /// or holds it (Matrix: its relay room), and mapped to it, so a reply to this notice goes
    /// to that conversation like a reply to any of its messages.
    pub(super) async fn notify_about(&self, room: &str, platform: &str, address: &str, text: &str) {
        let thread = match self.store.offers_for_room(room).await {
            Ok(offers) => offers
                .into_iter()
                .filter(|o| o.platform == platform && o.address == address)
                .find_map(|o| o.remote_message_id),
            Err(e) => {
                tracing::warn!(room_id = %room, error = %e, "could not look up the offer's thread");
                None
            }
        };
        let Some(id) = self
            .send_notice(platform, address, thread.as_deref(), text)
            .await
        else {
            return;
        };
        if let Err(e) = self
            .store
            .map_remote_message(platform, address, &id, room, None)
            .await
        {
            tracing::warn!(room_id = %room, error = %e, "could not map a notice to its conversation");
        }
    }

    /// Sends a notice; returns the platform's ID of the message it became, if it went out.
    pub(super) async fn send_notice(
        &self,
        platform: &str,
        address: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Option<String> {
        let (_, c) = self.remote(platform)?;
        // A timer, not a timestamp: tokio's time, like the sleeps it bounds.
        let give_up_at = tokio::time::Instant::now() + NOTICE_PATIENCE;
        loop {
            self.wait_turn(c.as_ref(), address).await;
            let e = match c.notify(address, thread, text).await {
                Ok(id) => return id,
                Err(e) => e,
            };
            // Only a rate limit is waited out: when the platform is down, retrying within
            // seconds rarely helps and would hold up the worker for everyone else.
            let wait = match e {
                ConnectorError::RetryAfter(after) => Some(after),
                _ => None,
            };
            match wait {
                Some(wait) if tokio::time::Instant::now() + wait < give_up_at => {
                    tracing::debug!(error = %e, wait_ms = wait.as_millis() as u64, "notice not sent; retrying");
                    tokio::time::sleep(wait).await;
                }
                _ => {
                    tracing::warn!(error = %e, "could not notify responder; notice dropped");
                    return None;
                }
            }
        }
    }

    pub(super) async fn handle_remote(
        &self,
        platform: &str,
        event: RemoteEvent,
    ) -> Result<(), StoreError> {
        if self.is_initiator_event(platform, &event).await? {
            return self.handle_initiator(platform, event).await;
        }
        match event {
            RemoteEvent::Accept {
                offer_id,
                address,
                display_name,
            } => {
                let Some(offer) = self.store.offer(offer_id).await? else {
                    return Ok(());
                };
                let _room = self.room_locks.lock(&offer.room_id).await;
                self.accept(platform, offer_id, &address, &display_name)
                    .await
            }
            RemoteEvent::Decline { offer_id, address } => {
                let Some(offer) = self.store.offer(offer_id).await? else {
                    return Ok(());
                };
                let _room = self.room_locks.lock(&offer.room_id).await;
                if offer.platform != platform || offer.address != address {
                    return Ok(());
                }
                self.decline(&offer).await
            }
            RemoteEvent::Message {
                address,
                message_id,
                reply_to,
                body,
                formatted_body,
                file,
                thread,
                ..
            } => {
                let Some(room) = self
                    .pick_conversation(platform, &address, reply_to.as_deref(), thread.as_deref())
                    .await?
                else {
                    return Ok(());
                };
                let Some(assignment) = self.assignment_of(&room, platform, &address).await? else {
                    return Ok(());
                };
                // Read before the reply is recorded: what it answers, for the service levels.
                let answers = self.store.reply_context(&room).await?;
                let (txn, op) = RoomPost::from_remote(
                    assignment.ghost_user_id,
                    (platform, &address, &message_id),
                    body,
                    formatted_body,
                    file,
                );
                self.post_remote_message(&room, &txn, op).await?;
                match answers {
                    Some(answers) => self.replied(&room, platform, answers).await,
                    None => Ok(()),
                }
            }
            RemoteEvent::Edit {
                address,
                message_id,
                body,
                formatted_body,
            } => {
                self.edit_from_remote(platform, &address, &message_id, body, formatted_body)
                    .await
            }
            RemoteEvent::Delete {
                address,
                message_id,
            } => {
                self.delete_from_remote(platform, &address, &message_id)
                    .await
            }
            RemoteEvent::Unreachable {
                address,
                thread,
                reason,
            } => {
                self.unreachable(platform, &address, thread.as_deref(), &reason)
                    .await
            }
            // A pick of a topic from someone who turned out to be a responder (or on a
            // platform no longer taking initiators): nothing to do.
            RemoteEvent::TopicChosen { .. } => Ok(()),
            RemoteEvent::Unreadable { address } => {
                self.notify(
                    platform,
                    &address,
                    "Sorry, your last message could not be read and was not passed on. \
                     Please send it again, without special formatting.",
                )
                .await;
                Ok(())
            }
            RemoteEvent::Command {
                address,
                command,
                reply_to,
                args,
                thread,
                ..
            } => {
                // Answers go where the command was written (Matrix: that room).
                let thread = thread.as_deref();
                let to = address.as_str();
                let answer = |text: String| async move {
                    self.send_notice(platform, to, thread, &text).await;
                };
                let prefix = self.command_prefix(platform);
                match command.as_str() {
                    "conversations" => {
                        answer(self.describe_conversations(platform, &address).await?).await;
                    }
                    "end" => {
                        if let Some(room) = self
                            .pick_conversation(platform, &address, reply_to.as_deref(), thread)
                            .await?
                        {
                            let _room = self.room_locks.lock(&room).await;
                            self.end_assignment(&room, platform, &address).await?;
                        }
                    }
                    "transfer" => {
                        if let Some(room) = self
                            .pick_conversation(platform, &address, reply_to.as_deref(), thread)
                            .await?
                        {
                            let _room = self.room_locks.lock(&room).await;
                            self.transfer(&room, platform, &address, &args).await?;
                        }
                    }
                    "start" if !args.is_empty() => {
                        self.link(platform, &address, &args).await?;
                    }
                    "available" | "away" | "offline" => {
                        let status = ResponderStatus::parse(&command).expect("matched above");
                        let text = self
                            .set_status_from(platform, &address, status)
                            .await?
                            .unwrap_or_else(|| "You are not a registered responder.".to_owned());
                        answer(text).await;
                    }
                    "start" | "help" => {
                        answer(format!(
                            "Switchboard relays website visitors to you. Reply to a visitor's message to answer it; \
                             {prefix}conversations lists yours, {prefix}end ends one (reply to one of its messages if you hold several); \
                             {prefix}away, {prefix}offline and {prefix}available set whether you get new conversations."
                        ))
                        .await;
                    }
                    other => {
                        answer(format!(
                            "Unknown command {prefix}{other}. Try {prefix}help."
                        ))
                        .await;
                    }
                }
                Ok(())
            }
        }
    }

    /// The platform reported that what went to `address` about the conversation `thread`
    /// names cannot arrive (a bounce): an offer still open there is declined, a conversation
    /// they hold goes to someone else. Only those: anything else is ignored without a word,
    /// since a notice to an address that bounces would only bounce again.
    async fn unreachable(
        &self,
        platform: &str,
        address: &str,
        thread: Option<&str>,
        reason: &str,
    ) -> Result<(), StoreError> {
        let Some(thread) = thread else {
            tracing::warn!(platform, reason, "a responder's address is unreachable");
            return Ok(());
        };
        let Some(offer) = self
            .store
            .offer_by_handle(platform, thread)
            .await?
            .filter(|o| o.address == address)
        else {
            return Ok(());
        };
        let _room = self.room_locks.lock(&offer.room_id).await;
        let span = tracing::info_span!("conversation", room_id = %offer.room_id);
        if offer.state == "open" {
            tracing::warn!(parent: &span, platform, reason, "the offer could not reach the responder; declined");
            return self.decline(&offer).await;
        }
        if self
            .assignment_of(&offer.room_id, platform, address)
            .await?
            .is_none()
        {
            return Ok(());
        }
        tracing::warn!(parent: &span, platform, reason, "the responder cannot be reached; handing over");
        self.hand_over_because(
            &offer.room_id,
            platform,
            address,
            "their address could not be reached",
        )
        .await
    }

    /// How commands start on `platform` (`/` on Telegram), as its connector declares.
    pub(super) fn command_prefix(&self, platform: &str) -> char {
        self.remote(platform)
            .map_or('/', |(_, c)| c.capabilities().command_prefix)
    }

    /// A responder edited a message: the Matrix event it became is replaced (`m.replace`), so
    /// the visitor sees the corrected text in place.
    pub(super) async fn edit_from_remote(
        &self,
        platform: &str,
        address: &str,
        message_id: &str,
        body: String,
        formatted_body: Option<String>,
    ) -> Result<(), StoreError> {
        let Some((room, assignment)) = self.held_message(platform, address, message_id).await?
        else {
            return Ok(()); // not a message we relayed, or no longer theirs
        };
        // One edit of one message is one event: the hash of the new text keeps a redelivered
        // edit from posting twice, while a second, different edit still goes through. Only the
        // ghost's own events can be replaced by the ghost; the original is looked up when the
        // edit is posted, after the original itself (same room, earlier in the queue).
        let txn = format!(
            "{platform}-{address}-{message_id}-edit-{:x}",
            fnv1a(body.as_bytes())
        );
        self.post(
            &room,
            &txn,
            RoomPost::Edit {
                sender: assignment.ghost_user_id,
                remote: RemoteRef {
                    platform: platform.to_owned(),
                    address: address.to_owned(),
                    message_id: message_id.to_owned(),
                },
                body,
                formatted_body,
            },
        )
        .await
    }

    /// The conversation a remote message belongs to and the assignment of `address` in it,
    /// if the message is mapped and they still hold the conversation.
    pub(super) async fn held_message(
        &self,
        platform: &str,
        address: &str,
        message_id: &str,
    ) -> Result<Option<(String, AssignmentRow)>, StoreError> {
        let Some((room, _)) = self
            .store
            .remote_message(platform, address, message_id)
            .await?
        else {
            return Ok(None);
        };
        Ok(self
            .assignment_of(&room, platform, address)
            .await?
            .map(|a| (room, a)))
    }

    /// The active assignment of this platform address in this conversation, if it holds it.
    pub(super) async fn assignment_of(
        &self,
        room: &str,
        platform: &str,
        address: &str,
    ) -> Result<Option<AssignmentRow>, StoreError> {
        Ok(self
            .store
            .active_assignments_for_room(room)
            .await?
            .into_iter()
            .find(|a| a.platform == platform && a.address == address))
    }

    /// Which conversation a responder's message is meant for: the one whose place (`thread`,
    /// an offer's handle: a Matrix relay room) they wrote in, else the one it replies to, else
    /// their only active one. With several and no reply, ask rather than guess. Notices go to
    /// `thread`, where the responder wrote.
    async fn pick_conversation(
        &self,
        platform: &str,
        address: &str,
        reply_to: Option<&str>,
        thread: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let active = self
            .store
            .active_assignments_for_address(platform, address)
            .await?;
        // Where the responder wrote names the conversation when it is an offer's handle (a
        // Matrix relay room); else the message they reply to may.
        let in_thread = match thread {
            Some(thread) => self
                .store
                .offer_by_handle(platform, thread)
                .await?
                .filter(|o| o.address == address)
                .map(|o| o.room_id),
            None => None,
        };
        let replied = match (&in_thread, reply_to) {
            (None, Some(reply_to)) => self.room_replied_to(platform, address, reply_to).await?,
            _ => None,
        };
        if let Some(room) = in_thread.or(replied) {
            if active.iter().any(|a| a.room_id == room) {
                return Ok(Some(room));
            }
            // A reply to an offer they have not accepted yet, or to a conversation that is
            // no longer theirs: say which, and relay nothing.
            let offered = self
                .store
                .offers_for_room(&room)
                .await?
                .iter()
                .any(|o| o.platform == platform && o.address == address && o.state == "open");
            let text = if offered {
                let how = self
                    .remote(platform)
                    .map_or("the Accept button on its offer", |(_, c)| c.how_to_accept());
                format!("Accept this conversation first ({how}); nothing was sent to the visitor.")
            } else {
                "That conversation is no longer yours (it ended or was handed to a colleague); nothing was sent to the visitor.".to_owned()
            };
            self.send_notice(platform, address, thread, &text).await;
            return Ok(None);
        }
        match active.as_slice() {
            [only] => Ok(Some(only.room_id.clone())),
            [] => {
                self.send_notice(
                    platform,
                    address,
                    thread,
                    "You have no open conversation right now.",
                )
                .await;
                Ok(None)
            }
            _ => {
                let list = self.describe_conversations(platform, address).await?;
                self.send_notice(
                    platform,
                    address,
                    thread,
                    &format!("You have several conversations. Reply to a message from the one you mean.\n\n{list}"),
                )
                .await;
                Ok(None)
            }
        }
    }

    /// The conversation of the message a responder replies to. The platform shows our message
    /// as soon as it takes it, and which conversation it belongs to is written once its answer
    /// is back, so a quick reply can come before that. Such a reply can only come while a
    /// delivery to this chat is under way (the message it names was being sent when the reply
    /// was written), so a reply to a message not known yet waits for that delivery (in this
    /// chat's lane only), looking again as it goes. With no delivery under way it is at once a
    /// reply to no conversation's message (a notice, say): unknown, with several conversations
    /// open, it would otherwise be answered "which one?" and relayed nowhere.
    async fn room_replied_to(
        &self,
        platform: &str,
        address: &str,
        reply_to: &str,
    ) -> Result<Option<String>, StoreError> {
        let deadline = tokio::time::Instant::now() + REPLY_MAPPING_PATIENCE;
        loop {
            // Both asked before the lookup: a delivery that ends between the two has written
            // its mapping by then, and the lookup sees it; one that ends after it wakes us.
            let ended = self.deliveries_in_flight.next_end();
            let in_flight = self.deliveries_in_flight.contains(platform, address);
            let room = self
                .store
                .room_of_remote_message(platform, address, reply_to)
                .await?;
            if room.is_some() || !in_flight || tokio::time::Instant::now() >= deadline {
                return Ok(room);
            }
            let _ = tokio::time::timeout_at(deadline, ended).await;
        }
    }

    async fn describe_conversations(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<String, StoreError> {
        let active = self
            .store
            .active_assignments_for_address(platform, address)
            .await?;
        if active.is_empty() {
            return Ok("You have no open conversation.".into());
        }
        let mut lines = vec![format!("Your conversations ({}):", active.len())];
        for a in active {
            if let Some(c) = self.store.conversation(&a.room_id).await? {
                let topic = self
                    .config
                    .topic(&c.topic)
                    .map(|t| t.name.as_str())
                    .unwrap_or(&c.topic);
                lines.push(format!("• {} — {}", c.visitor_alias, topic));
            }
        }
        Ok(lines.join("\n"))
    }
}

/// A small stable hash (FNV-1a) for transaction IDs; std's hasher is randomly seeded.
pub(super) fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}
