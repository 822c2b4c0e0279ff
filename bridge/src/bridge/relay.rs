//! Relaying between conversation rooms and responders on remote platforms: offers, claims,
//! the ordered outbox, and what responders do on their platform.

use std::{collections::HashSet, sync::Arc, time::Duration};

use async_trait::async_trait;
use switchboard_appservice::ruma::{
    OwnedMxcUri, OwnedUserId, events::room::message::RoomMessageEventContent,
};
use tracing::Instrument;

use super::{
    Bridge,
    room_posts::{RemoteRef, RoomPost},
};
use crate::{
    connector::{
        Attachment, Connector, ConnectorError, Delivery, MediaRef, Platform, RemoteEvent,
        RemoteSink,
    },
    conversation::{Conversation, ConversationState, SenderRole},
    responder::ResponderStatus,
    store::{AssignmentRow, OfferRow, StoreError, now_ms},
};

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

    /// Queues a visitor message for every responder holding the conversation remotely.
    pub(super) async fn relay_to_responders(
        &self,
        conversation: &Conversation,
        event_id: &str,
        body: &str,
        formatted_body: Option<&str>,
        media: Option<MediaRef>,
    ) -> Result<(), StoreError> {
        for a in self
            .store
            .active_assignments_for_room(&conversation.room_id)
            .await?
        {
            let Some((_, connector)) = self.remote(&a.platform) else {
                continue;
            };
            if connector.capabilities().shares_room {
                continue;
            }
            let thread = self.thread_of(&conversation.room_id, &a).await?;
            let delivery = Delivery {
                room_id: conversation.room_id.clone(),
                event_id: event_id.to_owned(),
                thread,
                visitor_alias: conversation.visitor_alias.clone(),
                body: body.to_owned(),
                formatted_body: formatted_body.map(str::to_owned),
                media: media.clone(),
            };
            let payload = serde_json::to_string(&delivery).expect("a Delivery always serialises");
            self.store
                .enqueue_outbox(
                    &conversation.room_id,
                    &a.platform,
                    &a.address,
                    event_id,
                    &payload,
                )
                .await?;
        }
        Ok(())
    }

    /// The connector's handle of this conversation with the responder holding it (Matrix:
    /// their relay room): the one offer they accepted, on the platform they hold it on.
    pub(super) async fn thread_of(
        &self,
        room: &str,
        holder: &AssignmentRow,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .offers_for_room(room)
            .await?
            .into_iter()
            .find(|o| {
                o.responder_id == holder.responder_id
                    && o.platform == holder.platform
                    && o.address == holder.address
                    && o.state == "accepted"
            })
            .and_then(|o| o.remote_message_id))
    }

    /// Delivers due outbox rows, oldest first, never overtaking an earlier undelivered row of
    /// the same conversation. Returns when the next row is due, if any is waiting.
    ///
    /// A row is sent part by part (see [`Connector::render`]): each part takes its own paced
    /// slot, and is recorded (`parts_sent`, its remote message mapped) as soon as the platform
    /// accepts it, so a 429 or a failure on part k retries part k and never resends parts
    /// before it, also after a restart. A part whose slot is not free yet is left for a later
    /// pass, which is scheduled for it: nothing here waits while other chats have work.
    ///
    /// One window remains: a crash between the platform accepting a part and our recording
    /// it resends that one part (Telegram has no idempotency key; Matrix's transaction IDs
    /// make the resend harmless there).
    pub async fn drain_outbox(&self) -> Result<Option<Duration>, StoreError> {
        let mut blocked_rooms = HashSet::new();
        let mut next_due: Option<i64> = None;
        for (row, due_at) in self.store.pending_outbox(200).await? {
            if blocked_rooms.contains(&row.room_id) {
                continue;
            }
            if due_at > now_ms() {
                blocked_rooms.insert(row.room_id.clone());
                next_due = Some(next_due.map_or(due_at, |n| n.min(due_at)));
                continue;
            }
            let span = tracing::info_span!("conversation", room_id = %row.room_id, event_id = %row.event_id);
            let Some((platform, connector)) = self.remote(&row.platform) else {
                self.store.outbox_failed(row.seq).await?;
                continue;
            };
            let delivery: Delivery = match serde_json::from_str(&row.payload_json) {
                Ok(d) => d,
                Err(e) => {
                    tracing::error!(error = %e, "undecodable outbox row dropped");
                    self.store.outbox_failed(row.seq).await?;
                    continue;
                }
            };
            // Rendered once, stored before the first part goes out, and never again.
            let parts = match &row.parts {
                Some(parts) => parts.clone(),
                None => {
                    self.store
                        .outbox_set_parts(row.seq, &connector.render(&delivery))
                        .await?
                }
            };
            let caps = connector.capabilities();
            let mut sent = row.parts_sent.max(0) as usize;
            let mut failure = None;
            while sent < parts.len() {
                if let Err(free_at) = self.pacer.try_take(platform, &row.address, &caps, now_ms()) {
                    next_due = Some(next_due.map_or(free_at, |n| n.min(free_at)));
                    break;
                }
                let result = self
                    .deliver_one(
                        connector.as_ref(),
                        &delivery,
                        sent,
                        &parts[sent],
                        &row.address,
                    )
                    .instrument(span.clone())
                    .await;
                match result {
                    Ok(message_id) => {
                        self.store
                            .outbox_part_sent(&row, sent as i64, &message_id)
                            .await?;
                        sent += 1;
                    }
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            let _enter = span.enter();
            if sent >= parts.len() {
                self.store.outbox_done(row.seq).await?;
                tracing::debug!(platform = %row.platform, parts = parts.len(), "delivered to responder");
                continue;
            }
            // Later rows of this conversation wait for the rest of this one.
            blocked_rooms.insert(row.room_id.clone());
            let Some(e) = failure else {
                continue; // paced: the next part goes in a later pass
            };
            // Parts accepted in this pass started the count afresh (see `outbox_part_sent`).
            let attempts = if sent > row.parts_sent as usize {
                0
            } else {
                row.attempts
            };
            match retry_delay(&e, attempts, caps.unreachable_hands_over) {
                Some(wait) => {
                    tracing::warn!(error = %e, part = sent, wait_ms = wait.as_millis() as u64, "delivery failed; will retry");
                    let at = now_ms() + wait.as_millis() as i64;
                    if let ConnectorError::RetryAfter(_) = e {
                        // Nothing else goes to this chat before then (notices included).
                        self.pacer.hold(platform, &row.address, at);
                    }
                    self.store.outbox_retry_at(row.seq, at).await?;
                    next_due = Some(next_due.map_or(at, |n| n.min(at)));
                }
                None => {
                    tracing::error!(error = %e, part = sent, "delivery failed for good");
                    self.store.outbox_failed(row.seq).await?;
                    blocked_rooms.remove(&row.room_id);
                    // The responder cannot be reached: someone else takes over.
                    drop(_enter);
                    self.hand_over_because(
                        &row.room_id,
                        &row.platform,
                        &row.address,
                        "their platform could not be reached",
                    )
                    .await?;
                }
            }
        }
        Ok(next_due.map(|at| Duration::from_millis((at - now_ms()).max(0) as u64)))
    }

    /// One part of an outbox row to its platform: text as text; a file fetched from the media
    /// repository first (a failing download is worth retrying, like a failing send).
    async fn deliver_one(
        &self,
        connector: &dyn Connector,
        delivery: &Delivery,
        index: usize,
        part: &str,
        address: &str,
    ) -> Result<String, ConnectorError> {
        let Some(media) = &delivery.media else {
            return connector.deliver(delivery, index, part, address).await;
        };
        let uri = OwnedMxcUri::from(media.mxc.as_str());
        let (mimetype, bytes) = self.client.download_media(&uri).await.map_err(|e| {
            if e.is_transient() {
                ConnectorError::Transient(e.to_string())
            } else {
                ConnectorError::Permanent(e.to_string())
            }
        })?;
        let attachment = Attachment {
            bytes,
            mimetype: media.mimetype.clone().or(mimetype),
            filename: media.filename.clone(),
            kind: media.kind,
        };
        connector
            .deliver_file(delivery, part, attachment, address)
            .await
    }

    /// Waits for the next free slot of this chat on the connector's platform: for notices,
    /// offers and edits of offers, which are sent at once rather than queued. The outbox
    /// does not wait (see `drain_outbox`). The one worker waits here, so never longer than
    /// `NOTICE_PATIENCE`: a chat held longer (after a 429 with a long `retry_after`) is sent
    /// to at once, and the platform's refusal is handled as it was before pacing.
    pub(super) async fn wait_turn(&self, connector: &dyn Connector, address: &str) {
        let now = now_ms();
        let latest = now + NOTICE_PATIENCE.as_millis() as i64;
        let platform = connector.platform();
        let caps = connector.capabilities();
        match self.pacer.reserve_by(platform, address, &caps, now, latest) {
            Some(at) if at > now => {
                tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
            }
            Some(_) => {}
            None => tracing::debug!(
                platform = platform.as_str(),
                "chat busy past our patience; sending anyway"
            ),
        }
    }

    /// Runs `send`, one message (or edit) to `address` on the connector's platform, in that
    /// chat's turn. `send` is a future not yet polled, so nothing is sent before the turn.
    pub(super) async fn in_turn<T>(
        &self,
        connector: &dyn Connector,
        address: &str,
        send: impl std::future::Future<Output = T>,
    ) -> T {
        self.wait_turn(connector, address).await;
        send.await
    }

    /// Handles recorded remote events in arrival order.
    pub async fn drain_remote(&self) -> Result<usize, StoreError> {
        let batch = self.store.pending_remote_events(100).await?;
        for e in &batch {
            match serde_json::from_str::<RemoteEvent>(&e.event_json) {
                Ok(event) => self.handle_remote(&e.platform, event).await?,
                Err(err) => tracing::error!(error = %err, "undecodable remote event skipped"),
            }
            self.store.mark_remote_processed(e.seq).await?;
        }
        Ok(batch.len())
    }

    /// Sends a responder a service message (offer taken, command answers, hand-off notes).
    /// These are short and rare, so they are sent at once rather than queued, but they keep
    /// to the per-chat pacing and wait out a rate limit within `NOTICE_PATIENCE`, so a 429
    /// no longer drops them. Other failures, or a longer wait, are logged and the notice is
    /// dropped: the one worker must not stall on one platform.
    async fn notify(&self, platform: &str, address: &str, text: &str) {
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
    async fn send_notice(
        &self,
        platform: &str,
        address: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Option<String> {
        let (_, c) = self.remote(platform)?;
        let give_up_at = now_ms() + NOTICE_PATIENCE.as_millis() as i64;
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
                Some(wait) if now_ms() + (wait.as_millis() as i64) < give_up_at => {
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

    async fn handle_remote(&self, platform: &str, event: RemoteEvent) -> Result<(), StoreError> {
        match event {
            RemoteEvent::Accept {
                offer_id,
                address,
                display_name,
            } => {
                self.accept(platform, offer_id, &address, &display_name)
                    .await
            }
            RemoteEvent::Decline { offer_id, address } => {
                let Some(offer) = self.store.offer(offer_id).await? else {
                    return Ok(());
                };
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
                ..
            } => {
                let Some(room) = self
                    .pick_conversation(platform, &address, reply_to.as_deref())
                    .await?
                else {
                    return Ok(());
                };
                let Some(assignment) = self.assignment_of(&room, platform, &address).await? else {
                    return Ok(());
                };
                let remote = RemoteRef {
                    platform: platform.to_owned(),
                    address: address.clone(),
                    message_id: message_id.clone(),
                };
                // Deterministic: if this event is handled again after a crash, it is queued
                // once, and the homeserver answers a repeated send with the first event.
                let txn = format!("{platform}-{address}-{message_id}");
                let sender = assignment.ghost_user_id;
                let op = match file {
                    Some(file) => RoomPost::File {
                        sender,
                        remote,
                        file,
                        caption: body,
                    },
                    None => {
                        let content = match formatted_body {
                            Some(html) => RoomMessageEventContent::text_html(body, html),
                            None => RoomMessageEventContent::text_plain(body),
                        };
                        RoomPost::Message {
                            sender: Some(sender),
                            content: serde_json::to_value(&content).expect("content serialises"),
                            remote: Some(remote),
                        }
                    }
                };
                self.post(&room, &txn, op).await
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
            RemoteEvent::Command {
                address,
                command,
                reply_to,
                args,
            } => {
                match command.as_str() {
                    "conversations" => {
                        let list = self.describe_conversations(platform, &address).await?;
                        self.notify(platform, &address, &list).await;
                    }
                    "end" => {
                        if let Some(room) = self
                            .pick_conversation(platform, &address, reply_to.as_deref())
                            .await?
                        {
                            self.end_assignment(&room, platform, &address).await?;
                        }
                    }
                    "transfer" => {
                        if let Some(room) = self
                            .pick_conversation(platform, &address, reply_to.as_deref())
                            .await?
                        {
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
                        self.notify(platform, &address, &text).await;
                    }
                    "start" | "help" => {
                        self.notify(
                            platform,
                            &address,
                            "Switchboard relays website visitors to you. Reply to a visitor's message to answer it; \
                             /conversations lists yours, /end ends one (reply to one of its messages if you hold several); \
                             /away, /offline and /available set whether you get new conversations.",
                        )
                        .await;
                    }
                    other => {
                        self.notify(
                            platform,
                            &address,
                            &format!("Unknown command /{other}. Try /help."),
                        )
                        .await;
                    }
                }
                Ok(())
            }
        }
    }

    /// A responder declined an offer (on any of their platforms): every offer of that
    /// conversation to them is closed, on every platform, and routing moves on.
    pub(super) async fn decline(&self, offer: &OfferRow) -> Result<(), StoreError> {
        if !self
            .store
            .transition_offer(offer.id, "open", "declined")
            .await?
        {
            return Ok(());
        }
        for o in self.store.offers_for_room(&offer.room_id).await? {
            if o.responder_id != offer.responder_id
                || (o.id != offer.id
                    && !self
                        .store
                        .transition_offer(o.id, "open", "declined")
                        .await?)
            {
                continue;
            }
            if let (Some(handle), Some((_, c))) = (&o.remote_message_id, self.remote(&o.platform)) {
                let close = c.close_offer(&o.address, handle, "You declined this conversation.");
                let _ = self.in_turn(c.as_ref(), &o.address, close).await;
            }
        }
        // Someone else may take it (routing skips whoever already had it).
        if let Some(conversation) = self.store.conversation(&offer.room_id).await? {
            self.route(&conversation).await?;
        }
        // And the queue is looked at again at once rather than at the next periodic check.
        self.register_changed.notify_one();
        Ok(())
    }

    /// After a claim, every other open offer of the conversation is closed on its platform:
    /// other responders' as taken, the winner's offers on their other platforms as answered.
    async fn withdraw_other_offers(&self, winner: &OfferRow) -> Result<(), StoreError> {
        for other in self.store.offers_for_room(&winner.room_id).await? {
            if other.id == winner.id {
                continue;
            }
            let (state, text) = if other.responder_id == winner.responder_id {
                (
                    "withdrawn",
                    format!(
                        "You took this conversation on {}.",
                        Platform::parse(&winner.platform)
                            .map_or("another platform", Platform::display_name)
                    ),
                )
            } else {
                (
                    "taken",
                    "Another responder took this conversation.".to_owned(),
                )
            };
            if self.store.transition_offer(other.id, "open", state).await?
                && let (Some(handle), Some((_, c))) =
                    (&other.remote_message_id, self.remote(&other.platform))
                && let Err(e) = self
                    .in_turn(
                        c.as_ref(),
                        &other.address,
                        c.close_offer(&other.address, handle, &text),
                    )
                    .await
            {
                tracing::warn!(error = %e, "could not withdraw an offer");
            }
        }
        Ok(())
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
        let Some((room, _)) = self
            .store
            .remote_message(platform, address, message_id)
            .await?
        else {
            return Ok(()); // not a message we relayed (or a visitor message shown to them)
        };
        let Some(assignment) = self.assignment_of(&room, platform, address).await? else {
            return Ok(());
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

    /// Hands a conversation over: the responder's ghost leaves, the visitor is told, and the
    /// conversation is routed again to someone who has not had it, with a summary. `target`
    /// may name a topic (route there) or a responder (offer to them only); empty: anyone.
    pub(super) async fn transfer(
        &self,
        room: &str,
        platform: &str,
        address: &str,
        target: &str,
    ) -> Result<(), StoreError> {
        self.hand_over(room, platform, address, target, None).await
    }

    /// A hand-off the responder did not ask for (`why` says what happened). Nothing is asked
    /// of them; they are told.
    pub(super) async fn hand_over_because(
        &self,
        room: &str,
        platform: &str,
        address: &str,
        why: &str,
    ) -> Result<(), StoreError> {
        self.hand_over(room, platform, address, "", Some(why)).await
    }

    async fn hand_over(
        &self,
        room: &str,
        platform: &str,
        address: &str,
        target: &str,
        forced: Option<&str>,
    ) -> Result<(), StoreError> {
        let Some(assignment) = self.assignment_of(room, platform, address).await? else {
            self.notify(platform, address, "That conversation is not yours.")
                .await;
            return Ok(());
        };
        let target = target.trim();
        let mut only = None;
        if !target.is_empty() {
            if self.config.topic(target).is_some() {
                self.store.set_conversation_topic(room, target).await?;
            } else if self.store.responder(target).await?.is_some() {
                only = Some(target.to_owned());
            } else {
                self.notify(
                    platform,
                    address,
                    &format!("There is no topic or responder called {target:?}."),
                )
                .await;
                return Ok(());
            }
        }
        let name = self
            .store
            .responder(&assignment.responder_id)
            .await?
            .map(|r| r.public_name().to_owned())
            .unwrap_or_else(|| assignment.responder_id.clone());
        let why = match (target.is_empty(), &only) {
            _ if forced.is_some() => forced.unwrap_or_default().to_owned(),
            (true, _) => "transfer requested".to_owned(),
            (false, Some(r)) => format!("transfer to {r} requested"),
            (false, None) => format!("transfer to the topic {target} requested"),
        };
        tracing::info!(room_id = %room, responder = %assignment.responder_id, %why, "conversation handed over");
        self.store
            .finish_assignment(room, &assignment.responder_id, "transferred", &why)
            .await?;
        self.store
            .set_handoff(
                room,
                &format!("{name} handed this conversation over ({why})."),
            )
            .await?;
        self.set_state(room, ConversationState::Transferring, None, false)
            .await?;
        // The ghost leaves first, so by the time the visitor reads that a colleague takes
        // over, the previous responder is gone from the room.
        self.ghost_leaves(room, &assignment).await?;
        let handovers = self.store.assignments_for_room(room).await?.len();
        self.post_notice(
            room,
            &format!("switchboard-transfer-{handovers}"),
            "One moment, please: a colleague will take over.",
        )
        .await?;
        let told = match forced {
            Some(why) => {
                format!("The conversation with this visitor was handed to a colleague: {why}.")
            }
            None => "Handed over. Thank you!".to_owned(),
        };
        self.release(room, &assignment, &told).await?;
        if let Some(conversation) = self.store.conversation(room).await? {
            self.route_to(&conversation, only.as_deref()).await?;
        }
        Ok(())
    }

    /// Queues the holder's ghost leaving the room (once per holder: a responder is never
    /// offered the same conversation twice). Only our own users are made to leave.
    async fn ghost_leaves(&self, room: &str, holder: &AssignmentRow) -> Result<(), StoreError> {
        if !OwnedUserId::try_from(holder.ghost_user_id.as_str())
            .is_ok_and(|ghost| self.registration.owns(&ghost))
        {
            return Ok(());
        }
        self.post(
            room,
            &format!("switchboard-leave-{}", holder.responder_id),
            RoomPost::Leave {
                user: holder.ghost_user_id.clone(),
            },
        )
        .await
    }

    /// The responder no longer holds the conversation (ended, handed over, taken from them):
    /// they are told where they hold it (so a reply there gets a clear answer), their side of
    /// it is closed on their platform (Matrix: they leave the relay room), and queued
    /// conversations are routed again at once, since they have room for another now.
    async fn release(
        &self,
        room: &str,
        holder: &AssignmentRow,
        text: &str,
    ) -> Result<(), StoreError> {
        self.notify_about(room, &holder.platform, &holder.address, text)
            .await;
        if let (Some((_, c)), Some(thread)) = (
            self.remote(&holder.platform),
            self.thread_of(room, holder).await?,
        ) && let Err(e) = c.conversation_closed(&holder.address, &thread, text).await
        {
            tracing::warn!(room_id = %room, error = %e, "could not close the responder's side of the conversation");
        }
        self.register_changed.notify_one();
        Ok(())
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

    /// Which conversation a responder's message is meant for: the one it replies to, else their
    /// only active one. With several and no reply, ask rather than guess.
    async fn pick_conversation(
        &self,
        platform: &str,
        address: &str,
        reply_to: Option<&str>,
    ) -> Result<Option<String>, StoreError> {
        let active = self
            .store
            .active_assignments_for_address(platform, address)
            .await?;
        if let Some(reply_to) = reply_to
            && let Some(room) = self
                .store
                .room_of_remote_message(platform, address, reply_to)
                .await?
        {
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
                "Accept this conversation first (the Accept button on its offer); nothing was sent to the visitor."
            } else {
                "That conversation is no longer yours (it ended or was handed to a colleague); nothing was sent to the visitor."
            };
            self.notify(platform, address, text).await;
            return Ok(None);
        }
        match active.as_slice() {
            [only] => Ok(Some(only.room_id.clone())),
            [] => {
                self.notify(
                    platform,
                    address,
                    "You have no open conversation right now.",
                )
                .await;
                Ok(None)
            }
            _ => {
                let list = self.describe_conversations(platform, address).await?;
                self.notify(
                    platform,
                    address,
                    &format!("You have several conversations. Reply to a message from the one you mean.\n\n{list}"),
                )
                .await;
                Ok(None)
            }
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

    pub(super) async fn accept(
        &self,
        platform: &str,
        offer_id: i64,
        address: &str,
        display_name: &str,
    ) -> Result<(), StoreError> {
        let Some(offer) = self.store.offer(offer_id).await? else {
            return Ok(());
        };
        // The accept must come from the chat the offer went to.
        if offer.platform != platform || offer.address != address {
            tracing::warn!(
                offer_id,
                "accept from another chat than the offer's ignored"
            );
            return Ok(());
        }
        if offer.state != "open" {
            self.notify(
                platform,
                address,
                "This conversation is no longer available.",
            )
            .await;
            return Ok(());
        }
        let span = tracing::info_span!("conversation", room_id = %offer.room_id);
        let _g = span.enter();
        if !self.store.claim_conversation(&offer.room_id).await? {
            self.store
                .transition_offer(offer_id, "open", "taken")
                .await?;
            drop(_g);
            let taken = "Someone else has already taken this conversation.";
            if let (Some(handle), Some((_, c))) = (&offer.remote_message_id, self.remote(platform))
                && let Err(e) = self
                    .in_turn(c.as_ref(), address, c.close_offer(address, handle, taken))
                    .await
            {
                tracing::warn!(error = %e, "could not withdraw the late accept's offer");
            }
            self.notify(platform, address, taken).await;
            return Ok(());
        }
        drop(_g);
        self.store
            .transition_offer(offer_id, "open", "accepted")
            .await?;
        let Some(conversation) = self.store.conversation(&offer.room_id).await? else {
            return Ok(());
        };
        // What visitors see: the pseudonym, else the name the responder shows on their platform.
        let name = self
            .store
            .responder(&offer.responder_id)
            .await?
            .and_then(|r| r.pseudonym)
            .unwrap_or_else(|| display_name.to_owned());
        let ghost = match self
            .registration
            .ghost_user_id(&offer.responder_id, self.server_name())
        {
            Ok(g) => g,
            Err(e) => {
                tracing::error!(error = %e, "responder ID cannot be a ghost localpart");
                return Ok(());
            }
        };
        self.store
            .upsert_assignment(&AssignmentRow {
                room_id: offer.room_id.clone(),
                responder_id: offer.responder_id.clone(),
                platform: platform.to_owned(),
                address: address.to_owned(),
                ghost_user_id: ghost.to_string(),
                state: "active".into(),
            })
            .await?;
        // One join and one notice per accepted offer, however often this accept is handled.
        self.post(
            &offer.room_id,
            &format!("switchboard-join-{}", offer.id),
            RoomPost::Join {
                user: ghost.to_string(),
                display_name: name.clone(),
            },
        )
        .await?;
        self.set_state(
            &offer.room_id,
            ConversationState::Active,
            Some(name.clone()),
            false,
        )
        .await?;
        self.post_notice(
            &offer.room_id,
            &format!("switchboard-now-{}", offer.id),
            format!("You are now talking with {name}."),
        )
        .await?;
        // Other open offers for this conversation are taken now.
        self.withdraw_other_offers(&offer).await?;
        if let (Some(msg), Some((_, c))) = (&offer.remote_message_id, self.remote(platform)) {
            let text = format!(
                "You accepted the conversation with {}.",
                conversation.visitor_alias
            );
            let edit = c.offer_accepted(address, msg, &text);
            let _ = self.in_turn(c.as_ref(), address, edit).await;
        }
        let end = self.remote(platform).map_or_else(
            || "/end".to_owned(),
            |(_, c)| format!("{}end", c.capabilities().command_prefix),
        );
        self.notify_about(
            &offer.room_id,
            platform,
            address,
            &format!(
                "You are now talking with {}. Reply to their messages to answer; {end} closes the conversation.",
                conversation.visitor_alias
            ),
        )
        .await;
        // Whatever the visitor wrote after the message quoted in the offer follows in order,
        // files included (the offer could only quote a file's name, so a first message that
        // is a file follows too).
        let transcript = self.store.messages(&offer.room_id).await?;
        for (i, m) in transcript
            .iter()
            .filter(|m| m.sender_role == SenderRole::Visitor)
            .enumerate()
        {
            let media: Option<MediaRef> = self
                .store
                .message_media(&m.event_id)
                .await?
                .and_then(|json| serde_json::from_str(&json).ok());
            if i == 0 && media.is_none() {
                continue; // quoted in the offer
            }
            self.relay_to_responders(
                &conversation,
                &m.event_id,
                &m.body,
                m.formatted_body.as_deref(),
                media,
            )
            .await?;
        }
        Ok(())
    }

    pub(super) async fn end_assignment(
        &self,
        room: &str,
        platform: &str,
        address: &str,
    ) -> Result<(), StoreError> {
        let Some(a) = self.assignment_of(room, platform, address).await? else {
            return Ok(());
        };
        self.store
            .finish_assignment(room, &a.responder_id, "ended", "ended by the responder")
            .await?;
        self.set_state(room, ConversationState::Closed, None, false)
            .await?;
        self.post_notice(room, "switchboard-ended", "The conversation has ended.")
            .await?;
        self.ghost_leaves(room, &a).await?;
        self.release(room, &a, "Conversation ended.").await
    }

    /// The visitor ended the conversation: whoever holds it is told, their ghost leaves, open
    /// offers are withdrawn, and the conversation is closed.
    pub(super) async fn end_by_visitor(&self, room: &str) -> Result<(), StoreError> {
        for a in self.store.active_assignments_for_room(room).await? {
            self.store
                .finish_assignment(room, &a.responder_id, "ended", "ended by the visitor")
                .await?;
            self.ghost_leaves(room, &a).await?;
            self.release(room, &a, "The visitor ended the conversation.")
                .await?;
        }
        for offer in self.store.offers_for_room(room).await? {
            if self
                .store
                .transition_offer(offer.id, "open", "withdrawn")
                .await?
                && let (Some(handle), Some((_, c))) =
                    (&offer.remote_message_id, self.remote(&offer.platform))
            {
                let close = c.close_offer(&offer.address, handle, "The visitor left.");
                let _ = self.in_turn(c.as_ref(), &offer.address, close).await;
            }
        }
        self.set_state(room, ConversationState::Closed, None, false)
            .await?;
        self.post_notice(room, "switchboard-ended", "The conversation has ended.")
            .await?;
        tracing::info!(room_id = %room, "the visitor ended the conversation");
        Ok(())
    }
}

/// How long a service message to a responder may wait for pacing and retries.
const NOTICE_PATIENCE: Duration = Duration::from_secs(5);

/// Transient delivery failures are retried this many times before the responder counts as
/// unreachable (about four minutes of backoff).
const DELIVERY_ATTEMPTS: i64 = 12;

/// How long to wait before retrying a delivery that failed with `error` after `attempts`
/// earlier failures, or `None` to give up, which hands the conversation over. A platform
/// whose connector declares that unreachability does not hand over (`may_give_up` false:
/// Matrix, where the platform is the homeserver itself) is retried as long as it takes. Pure,
/// so the "unreachable after retries" trigger is tested without waiting.
pub fn retry_delay(error: &ConnectorError, attempts: i64, may_give_up: bool) -> Option<Duration> {
    match error {
        // The platform said when; a rate limit is not a failure of the responder.
        ConnectorError::RetryAfter(after) => Some(*after),
        ConnectorError::Transient(_) if attempts < DELIVERY_ATTEMPTS || !may_give_up => Some(
            Duration::from_millis(500 * 2u64.pow(attempts.clamp(0, 6) as u32)),
        ),
        _ => None,
    }
}

/// A small stable hash (FNV-1a) for transaction IDs; std's hasher is randomly seeded.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf29ce484222325, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x100000001b3)
    })
}

#[async_trait]
impl RemoteSink for Bridge {
    async fn record_remote(
        &self,
        platform: Platform,
        key: &str,
        event: &RemoteEvent,
    ) -> Result<(), ConnectorError> {
        let json =
            serde_json::to_string(event).map_err(|e| ConnectorError::Permanent(e.to_string()))?;
        let new = self
            .store
            .record_remote_event(platform.as_str(), key, &json)
            .await
            .map_err(|e| ConnectorError::Transient(e.to_string()))?;
        if new {
            self.inbox_ready.notify_one();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_failures_back_off_then_give_up() {
        let e = ConnectorError::Transient("connection reset".into());
        let waits: Vec<_> = (0..DELIVERY_ATTEMPTS)
            .map(|n| retry_delay(&e, n, true).map(|d| d.as_millis()))
            .collect();
        assert_eq!(
            waits,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000, 32000, 32000, 32000
            ]
            .map(Some)
        );
        assert_eq!(
            retry_delay(&e, DELIVERY_ATTEMPTS, true),
            None,
            "the twelfth failure makes the responder unreachable"
        );
    }

    #[test]
    fn a_platform_that_is_the_homeserver_is_waited_for_however_long() {
        let e = ConnectorError::Transient("homeserver unreachable".into());
        assert_eq!(
            retry_delay(&e, DELIVERY_ATTEMPTS * 100, false),
            Some(Duration::from_millis(32_000))
        );
        let refused = ConnectorError::Permanent("M_FORBIDDEN".into());
        assert_eq!(retry_delay(&refused, 0, false), None);
    }

    #[test]
    fn permanent_failures_give_up_at_once_and_rate_limits_never_do() {
        let blocked = ConnectorError::Permanent("bot was blocked by the user".into());
        assert_eq!(retry_delay(&blocked, 0, true), None);
        let limited = ConnectorError::RetryAfter(Duration::from_secs(7));
        assert_eq!(retry_delay(&limited, 0, true), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_delay(&limited, 1000, true),
            Some(Duration::from_secs(7))
        );
    }
}
