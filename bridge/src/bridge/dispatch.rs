//! Dispatching conversations to responders: the register, routing strategies, offers and the
//! queue of conversations nobody could take yet.

use std::collections::HashSet;

use tracing::Instrument;

use super::Bridge;
use crate::{
    clock::Clock,
    connector::{Offer, Platform},
    conversation::{Conversation, ConversationState, SenderRole},
    responder::{Contact, Responder, ResponderStatus},
    routing::{self, Candidate, RouteRequest},
    store::{Milestone, OfferRow, StoreError},
};

impl Bridge {
    /// Writes the configuration's responders into the register. Entries an operator changed
    /// through the admin API are left as they are.
    pub async fn seed_register(&self) -> Result<(), StoreError> {
        for r in &self.config.responders {
            self.store.upsert_responder(r, "config").await?;
        }
        Ok(())
    }

    /// A responder's contacts: the ones they linked themselves (`linked`, newest first), then
    /// the register's.
    fn with_linked_contacts(mut r: Responder, linked: Vec<(String, String)>) -> Responder {
        let mut contacts: Vec<Contact> = linked
            .into_iter()
            .map(|(platform, address)| Contact { platform, address })
            .collect();
        for c in r.contacts.drain(..) {
            if !contacts.contains(&c) {
                contacts.push(c);
            }
        }
        r.contacts = contacts;
        r
    }

    /// The register entry reached at this platform address (self-linked or registered).
    pub(super) async fn responder_at(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<Option<Responder>, StoreError> {
        if let Some(id) = self.store.linked_responder(platform, address).await?
            && let Some(r) = self.store.responder(&id).await?
        {
            return Ok(Some(r));
        }
        self.store.responder_by_contact(platform, address).await
    }

    /// Offers a waiting conversation that has no open offer to whoever routing picks; when
    /// nobody is eligible, tells the visitor (once) and leaves it queued.
    pub(super) async fn route(&self, conversation: &Conversation) -> Result<(), StoreError> {
        self.route_to(conversation, None).await
    }

    /// Like [`Self::route`], limited to one responder when `only` is given (a transfer to a
    /// named responder).
    pub(super) async fn route_to(
        &self,
        conversation: &Conversation,
        only: Option<&str>,
    ) -> Result<(), StoreError> {
        if !conversation.state.is_waiting() {
            return Ok(());
        }
        let offers = self.store.offers_for_room(&conversation.room_id).await?;
        if offers.iter().any(|o| o.state == "open") {
            return Ok(()); // someone is still considering it
        }
        if self
            .first_visitor_message(&conversation.room_id)
            .await?
            .is_none()
        {
            return Ok(()); // offered once the visitor has said something
        }
        let topic = self.config.topic(&conversation.topic);
        let strategy = topic.map(|t| t.strategy).unwrap_or_default();

        // Three reads whatever the register's size: a read per responder here made a
        // register of six take 5 ms before an offer went out (about 0.3 ms a statement, most
        // of it the hand-over to sqlx's connection thread and back), and a register of
        // hundreds would take that many times longer.
        let mut links = self.store.all_links().await?;
        let mut register = Vec::new();
        for (r, last_offered_at) in self.store.responders_with_offer_times().await? {
            if only.is_some_and(|id| id != r.id) {
                continue;
            }
            let linked = links.remove(&r.id).unwrap_or_default();
            let mut r = Self::with_linked_contacts(r, linked);
            // Only platforms we can reach count as contacts.
            r.contacts.retain(|c| {
                Platform::parse(&c.platform).is_some_and(|p| self.connectors.contains_key(&p))
            });
            register.push((r, last_offered_at));
        }
        let counts = self.store.active_conversation_counts().await?;
        let candidates: Vec<Candidate> = register
            .iter()
            .map(|(r, last_offered_at)| Candidate {
                responder: r,
                active: counts.get(&r.id).copied().unwrap_or(0),
                last_offered_at: *last_offered_at,
            })
            .collect();
        // Whoever already had an offer for this conversation (declined, taken, withdrawn)
        // is not asked again, unless the conversation is handed to them by name (to a
        // colleague who saw it taken, or back to whoever handed it on).
        let exclude: Vec<String> = offers
            .iter()
            .map(|o| o.responder_id.clone())
            .filter(|id| only != Some(id.as_str()))
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        let request = RouteRequest {
            topic: &conversation.topic,
            language: conversation.language.as_deref(),
            now: self.clock().now_utc(),
            exclude: &exclude,
        };
        let cursor = self.store.routing_cursor(&conversation.topic).await?;
        let chosen = routing::select(strategy, &candidates, &request, cursor.as_deref());
        let mut open = 0;
        for responder in chosen {
            open += self
                .offer_to(conversation, responder, only.is_some())
                .await?;
        }
        if open == 0 {
            tracing::info!(topic = %conversation.topic, "nobody is eligible; conversation queued");
            self.set_state(&conversation.room_id, ConversationState::Queued, None, true)
                .await?;
            self.tell_visitor_queued(conversation).await?;
            return Ok(());
        }
        // A hand-over stays "transferring" until the next responder accepts.
        let state = match conversation.state {
            ConversationState::Transferring => ConversationState::Transferring,
            _ => ConversationState::Offered,
        };
        self.set_state(&conversation.room_id, state, None, false)
            .await?;
        Ok(())
    }

    /// Offers the conversation to one responder on every platform where they can be reached:
    /// they answer from whichever is at hand, and the conversation stays on that platform.
    /// So one responder can hold one conversation on Telegram and the next on Matrix. Returns
    /// how many of these offers are open.
    ///
    /// The offers are recorded here and sent by the lane of the chat each goes to
    /// ([`Self::send_offers_to`]), in that chat's paced turn: a responder whose chat is busy
    /// (Telegram takes about one message a second per chat) holds up their own chat, not the
    /// conversation's lane, which goes on recording the visitor's messages.
    /// `named`: the conversation is handed to this responder by name, so an offer they had
    /// before is made again.
    async fn offer_to(
        &self,
        conversation: &Conversation,
        responder: &Responder,
        named: bool,
    ) -> Result<usize, StoreError> {
        let contacts: Vec<_> = responder
            .contacts
            .iter()
            .filter_map(|c| {
                let platform = Platform::parse(&c.platform)?;
                self.connectors
                    .contains_key(&platform)
                    .then_some((platform, c))
            })
            .collect();
        if contacts.is_empty() {
            return Ok(0);
        }
        self.store
            .note_offered(&responder.id, self.now_ms())
            .await?;
        self.store
            .set_routing_cursor(&conversation.topic, &responder.id)
            .await?;
        let mut open = 0;
        for (platform, contact) in contacts {
            let offer = self
                .store
                .create_offer(
                    &conversation.room_id,
                    &responder.id,
                    platform.as_str(),
                    &contact.address,
                )
                .await?;
            let reopened =
                offer.state != "open" && named && self.store.reopen_offer(offer.id).await?;
            if offer.state != "open" && !reopened {
                continue;
            }
            open += 1;
            if offer.remote_message_id.is_none() || reopened {
                self.want_offers_sent(platform.as_str(), &contact.address);
            }
        }
        Ok(open)
    }

    /// Starts the lane of this chat: an offer to it is waiting to go out. (Before the lanes
    /// run, the scheduler's first full look finds it, or a test's `drain_offers`.)
    fn want_offers_sent(&self, platform: &str, address: &str) {
        if let Some(me) = self.lanes_running() {
            me.submit_offers(platform.to_owned(), address.to_owned());
        }
    }

    /// Sends one chat's offers that have not gone out yet, oldest first; the lane of the chat
    /// runs this, so the wait for the chat's paced turn holds up nobody else.
    pub(super) async fn send_offers_to(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<(), StoreError> {
        for offer in self.store.unsent_offers_to(platform, address).await? {
            let span = tracing::info_span!("conversation", room_id = %offer.room_id);
            self.send_offer(&offer).instrument(span).await?;
        }
        Ok(())
    }

    /// Every chat's offers that have not gone out yet, and those of the conversations routed
    /// again because one could not be sent, all in this call: what the lanes do, without
    /// them, for tests that fix the order of everything.
    pub(super) async fn drain_offers(&self) -> Result<(), StoreError> {
        // Each round sends every unsent offer; one that fails routes its conversation to
        // responders who had no offer yet, so the rounds end.
        for _ in 0..16 {
            let chats = self.store.unsent_offer_chats().await?;
            if chats.is_empty() {
                break;
            }
            for (platform, address) in chats {
                self.send_offers_to(&platform, &address).await?;
            }
        }
        Ok(())
    }

    /// Sends one offer in its chat's turn, unless it was taken, declined, withdrawn or expired
    /// while it waited. One that cannot go out (the platform refuses it, or it is no longer
    /// configured) is given up, and the conversation is routed again: other contacts or
    /// responders may still answer, or the visitor is told nobody can (`route`).
    async fn send_offer(&self, offer: &OfferRow) -> Result<(), StoreError> {
        let remote = self.remote(&offer.platform);
        // The chat's turn first, without the conversation's lock: meanwhile its lane goes on.
        if let Some((_, connector)) = remote {
            self.wait_turn(connector.as_ref(), &offer.address).await;
        }
        let _room = self.room_locks.lock(&offer.room_id).await;
        let Some(current) = self.store.offer(offer.id).await? else {
            return Ok(());
        };
        if current.state != "open" || current.remote_message_id.is_some() {
            return Ok(());
        }
        let Some(conversation) = self.store.conversation(&offer.room_id).await? else {
            return Ok(());
        };
        let Some((platform, connector)) = remote else {
            tracing::warn!(responder = %offer.responder_id, platform = %offer.platform, "offer to a platform no longer configured given up");
            return self.give_up_offer(offer, &conversation).await;
        };
        let topic_name = self
            .config
            .topic(&conversation.topic)
            .map_or_else(|| conversation.topic.clone(), |t| t.name.clone());
        let request = Offer {
            offer_id: offer.id,
            room_id: conversation.room_id.clone(),
            topic_name,
            visitor_alias: conversation.visitor_alias.clone(),
            first_message: self.first_visitor_message(&conversation.room_id).await?,
            language: conversation.language.clone(),
            summary: self.handoff_summary(&conversation).await?,
        };
        match connector.offer(&request, &offer.address).await {
            Ok(handle) => {
                if let Some(handle) = handle {
                    self.store.set_offer_message(offer.id, &handle).await?;
                    // A reply to the offer (or to what it becomes once accepted) goes to
                    // this conversation, even if the visitor wrote nothing else yet.
                    self.store
                        .map_remote_message(
                            platform.as_str(),
                            &offer.address,
                            &handle,
                            &conversation.room_id,
                            None,
                        )
                        .await?;
                }
                tracing::info!(responder = %offer.responder_id, platform = platform.as_str(), "conversation offered");
                crate::metrics::offer(platform.as_str(), "sent");
                self.milestone(&conversation, Milestone::FirstOffer, platform.as_str())
                    .await?;
            }
            Err(e) => {
                tracing::warn!(responder = %offer.responder_id, platform = platform.as_str(), error = %e, "offer failed");
                return self.give_up_offer(offer, &conversation).await;
            }
        }
        Ok(())
    }

    /// Marks an offer that could not go out as failed and routes its conversation again.
    /// Called under the conversation's lock.
    async fn give_up_offer(
        &self,
        offer: &OfferRow,
        conversation: &Conversation,
    ) -> Result<(), StoreError> {
        if self
            .store
            .transition_offer(offer.id, "open", "failed")
            .await?
        {
            crate::metrics::offer(&offer.platform, "failed");
            self.route(conversation).await?;
        }
        Ok(())
    }

    /// For a conversation that was handed over, or offered before without success: who handed
    /// it over and why, who was asked before, and its last messages, so the next responder
    /// can pick up. Names the visitor only by alias.
    async fn handoff_summary(
        &self,
        conversation: &Conversation,
    ) -> Result<Option<String>, StoreError> {
        let note = self.store.handoff(&conversation.room_id).await?;
        // Who was asked before and did not take it, so the next one knows the visitor has
        // been waiting (one entry per responder, whichever platforms they were asked on).
        let mut earlier: Vec<(String, &'static str)> = Vec::new();
        for o in self.store.offers_for_room(&conversation.room_id).await? {
            let why = match o.state.as_str() {
                "expired" => "no answer in time",
                "declined" => "declined",
                "failed" => "could not be reached",
                _ => continue,
            };
            let name = self
                .store
                .responder(&o.responder_id)
                .await?
                .map_or_else(|| o.responder_id.clone(), |r| r.public_name().to_owned());
            if !earlier.iter().any(|(n, _)| *n == name) {
                earlier.push((name, why));
            }
        }
        if note.is_none() && earlier.is_empty() {
            return Ok(None);
        }
        let transcript = self.store.messages(&conversation.room_id).await?;
        let mut lines: Vec<String> = note.into_iter().collect();
        if !earlier.is_empty() {
            let asked: Vec<String> = earlier
                .iter()
                .map(|(name, why)| format!("{name} ({why})"))
                .collect();
            lines.push(format!("Offered before to: {}.", asked.join(", ")));
        }
        lines.push("Last messages:".to_owned());
        let last: Vec<_> = transcript
            .iter()
            .filter(|m| m.sender_role != SenderRole::Bot)
            .rev()
            .take(5)
            .collect();
        for m in last.into_iter().rev() {
            let who = match m.sender_role {
                SenderRole::Visitor => conversation.visitor_alias.as_str(),
                _ => "Responder",
            };
            lines.push(format!("{who}: {}", m.body));
        }
        Ok(Some(lines.join("\n")))
    }

    pub(super) async fn first_visitor_message(
        &self,
        room_id: &str,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .store
            .messages(room_id)
            .await?
            .into_iter()
            .find(|m| m.sender_role == SenderRole::Visitor)
            .map(|m| m.body))
    }

    async fn tell_visitor_queued(&self, conversation: &Conversation) -> Result<(), StoreError> {
        // One fixed transaction ID: however often routing finds nobody, the visitor is told once.
        self.post_notice(
            &conversation.room_id,
            "switchboard-queued",
            self.config.offline_message.clone(),
        )
        .await
    }

    /// Routes every waiting conversation again: someone may have become available, come into
    /// their working hours, or gained capacity. (The running service does this per room, in
    /// each room's lane: `worker.rs`.)
    pub async fn drain_queue(&self) -> Result<(), StoreError> {
        for conversation in self.store.waiting_conversations().await? {
            self.route_waiting(&conversation.room_id).await?;
        }
        self.drain_offers().await
    }

    /// Routes one conversation again if it is still waiting, under its lock.
    pub(super) async fn route_waiting(&self, room: &str) -> Result<(), StoreError> {
        let _room = self.room_locks.lock(room).await;
        let Some(conversation) = self.store.conversation(room).await? else {
            return Ok(());
        };
        let span = tracing::info_span!("conversation", room_id = %room);
        self.route(&conversation).instrument(span).await
    }

    /// Withdraws offers nobody answered within their topic's `offer_timeout_secs` and offers
    /// those conversations to the next eligible responders (who did not have them yet).
    pub async fn expire_offers(&self) -> Result<(), StoreError> {
        for room in self.rooms_with_expired_offers().await? {
            self.expire_offers_in(&room).await?;
        }
        self.drain_offers().await
    }

    /// The open offers past their topic's time-out, with their topic and creation time.
    async fn expired_offers(&self) -> Result<Vec<OfferRow>, StoreError> {
        let shortest = self
            .config
            .topics
            .iter()
            .map(|t| t.offer_timeout_secs)
            .min()
            .unwrap_or(120);
        let now = self.now_ms();
        // Made at or before the shortest time-out ago: `offer_expired` counts an offer made
        // exactly that long ago as expired, so the store's strict "before" is one ms later.
        Ok(self
            .store
            .open_offers_before(now - (shortest * 1000) as i64 + 1)
            .await?
            .into_iter()
            .filter(|(_, topic, created)| {
                let timeout = self
                    .config
                    .topic(topic)
                    .map(|t| t.offer_timeout_secs)
                    .unwrap_or(120);
                offer_expired(now, *created, timeout)
            })
            .map(|(offer, _, _)| offer)
            .collect())
    }

    /// Conversations with an offer past its time-out.
    pub(super) async fn rooms_with_expired_offers(&self) -> Result<Vec<String>, StoreError> {
        let mut rooms: Vec<String> = self
            .expired_offers()
            .await?
            .into_iter()
            .map(|o| o.room_id)
            .collect();
        rooms.sort();
        rooms.dedup();
        Ok(rooms)
    }

    /// Withdraws one conversation's offers past their time-out and routes it again, under
    /// its lock.
    pub(super) async fn expire_offers_in(&self, room: &str) -> Result<(), StoreError> {
        let _room = self.room_locks.lock(room).await;
        let span = tracing::info_span!("conversation", room_id = %room);
        let mut expired = false;
        for offer in self.expired_offers().await? {
            if offer.room_id != room
                || !self
                    .store
                    .transition_offer(offer.id, "open", "expired")
                    .await?
            {
                continue;
            }
            expired = true;
            crate::metrics::offer(&offer.platform, "expired");
            span.in_scope(|| tracing::info!(responder = %offer.responder_id, "offer not answered in time; withdrawn"));
            if let Err(e) = self
                .close_offer_on(&offer, "This offer expired.")
                .instrument(span.clone())
                .await
            {
                span.in_scope(|| tracing::warn!(error = %e, "could not withdraw an expired offer"));
            }
        }
        if expired && let Some(conversation) = self.store.conversation(room).await? {
            self.route(&conversation).instrument(span).await?;
        }
        Ok(())
    }

    /// Hands over conversations whose holder went offline, has not answered in time, or let
    /// the conversation idle past its topic's limits. (The running service hands each over in
    /// its room's lane: `worker.rs`.)
    pub async fn watch_responders(&self) -> Result<(), StoreError> {
        for (room, platform, address, why) in self.holders_past_limits().await? {
            let _room = self.room_locks.lock(&room).await;
            let span = tracing::info_span!("conversation", room_id = %room);
            self.hand_over_because(&room, &platform, &address, why)
                .instrument(span)
                .await?;
        }
        self.drain_offers().await
    }

    /// Every holder that must hand over now, as (room, platform, address, why).
    pub(super) async fn holders_past_limits(
        &self,
    ) -> Result<Vec<(String, String, String, &'static str)>, StoreError> {
        let now = self.now_ms();
        let mut due = Vec::new();
        for (a, started) in self.store.all_active_assignments().await? {
            let Some(conversation) = self.store.conversation(&a.room_id).await? else {
                continue;
            };
            let topic = self.config.topic(&conversation.topic);
            let status = self
                .store
                .responder(&a.responder_id)
                .await?
                .map(|r| r.status);
            let limits = Limits {
                first_reply_secs: topic.and_then(|t| t.first_reply_timeout_secs),
                idle_secs: topic.and_then(|t| t.idle_limit_secs),
            };
            // Called about once a second: read the two times only when a limit needs them,
            // never the whole transcript.
            let (last_reply, last_visitor) =
                if limits.first_reply_secs.is_some() || limits.idle_secs.is_some() {
                    self.store
                        .last_message_times(&a.room_id, &a.ghost_user_id, started)
                        .await?
                } else {
                    (None, None)
                };
            if let Some(why) =
                handover_reason(now, started, last_reply, last_visitor, status, limits)
            {
                due.push((a.room_id, a.platform, a.address, why));
            }
        }
        Ok(due)
    }

    /// A responder set their status from their platform (`/away`, `!available`, ...).
    pub(super) async fn set_status_from(
        &self,
        platform: &str,
        address: &str,
        status: ResponderStatus,
    ) -> Result<Option<String>, StoreError> {
        let Some(responder) = self.responder_at(platform, address).await? else {
            return Ok(None);
        };
        self.store
            .set_responder_status(&responder.id, status)
            .await?;
        tracing::info!(responder = %responder.id, status = status.as_str(), "status set by the responder");
        if status == ResponderStatus::Available {
            self.register_changed.notify_one();
        }
        let prefix = self.command_prefix(platform);
        Ok(Some(match status {
            ResponderStatus::Available => {
                "You are available: new conversations will be offered to you.".to_owned()
            }
            ResponderStatus::Away => {
                format!("You are away: no new conversations until you send {prefix}available.")
            }
            ResponderStatus::Offline => {
                format!("You are offline: no new conversations until you send {prefix}available.")
            }
        }))
    }
}

/// The hand-off limits of a topic.
#[derive(Debug, Clone, Copy, Default)]
pub struct Limits {
    pub first_reply_secs: Option<u64>,
    pub idle_secs: Option<u64>,
}

/// Whether an offer made at `created` (unix ms) is unanswered past its topic's time-out at
/// `now`. Pure, like [`handover_reason`]: the timer is a row in the database, so a time-out
/// that fell due while Switchboard was down is simply already expired when it is back.
pub fn offer_expired(now: i64, created: i64, timeout_secs: u64) -> bool {
    now - created >= (timeout_secs * 1000) as i64
}

/// Why a held conversation must be handed over now, if it must. Pure: every time is given
/// (unix ms), so the rule is tested without a clock.
pub fn handover_reason(
    now: i64,
    started: i64,
    last_reply: Option<i64>,
    last_visitor: Option<i64>,
    status: Option<ResponderStatus>,
    limits: Limits,
) -> Option<&'static str> {
    let over =
        |secs: Option<u64>, since: i64| secs.is_some_and(|s| now - since > (s * 1000) as i64);
    if status == Some(ResponderStatus::Offline) {
        return Some("they went offline");
    }
    match (last_reply, last_visitor) {
        (None, _) if over(limits.first_reply_secs, started) => Some("no first reply in time"),
        (Some(reply), Some(visitor)) if visitor > reply && over(limits.idle_secs, visitor) => {
            Some("silent while the visitor waited")
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1000;
    const LIMITS: Limits = Limits {
        first_reply_secs: Some(60),
        idle_secs: Some(300),
    };

    #[test]
    fn an_offer_expires_exactly_at_its_time_out() {
        let made = 1_000_000;
        assert!(!offer_expired(made, made, 120));
        assert!(!offer_expired(made + 120 * S - 1, made, 120));
        assert!(offer_expired(made + 120 * S, made, 120));
        // Due long ago (Switchboard was down): still expires, once it is looked at.
        assert!(offer_expired(made + 86_400 * S, made, 120));
        // A clock that went backwards does not expire anything.
        assert!(!offer_expired(made - 5 * S, made, 120));
    }

    #[test]
    fn no_first_reply_fires_only_after_the_limit() {
        let start = 1_000_000;
        assert_eq!(
            handover_reason(start + 60 * S, start, None, Some(start), None, LIMITS),
            None
        );
        assert_eq!(
            handover_reason(start + 60 * S + 1, start, None, Some(start), None, LIMITS),
            Some("no first reply in time")
        );
        // Without a limit it never fires.
        assert_eq!(
            handover_reason(start + 999 * S, start, None, None, None, Limits::default()),
            None
        );
    }

    #[test]
    fn idle_fires_only_while_the_visitor_is_the_one_waiting() {
        let start = 1_000_000;
        let reply = start + 10 * S;
        let visitor = start + 20 * S;
        assert_eq!(
            handover_reason(
                visitor + 300 * S,
                start,
                Some(reply),
                Some(visitor),
                None,
                LIMITS
            ),
            None
        );
        assert_eq!(
            handover_reason(
                visitor + 300 * S + 1,
                start,
                Some(reply),
                Some(visitor),
                None,
                LIMITS
            ),
            Some("silent while the visitor waited")
        );
        // The responder spoke last: nobody is waiting, however long it has been.
        assert_eq!(
            handover_reason(
                visitor + 9999 * S,
                start,
                Some(visitor + S),
                Some(visitor),
                None,
                LIMITS
            ),
            None
        );
    }

    #[test]
    fn going_offline_hands_over_at_once_and_away_does_not() {
        let start = 1_000_000;
        assert_eq!(
            handover_reason(
                start + 1,
                start,
                Some(start),
                None,
                Some(ResponderStatus::Offline),
                LIMITS
            ),
            Some("they went offline")
        );
        assert_eq!(
            handover_reason(
                start + 1,
                start,
                Some(start),
                None,
                Some(ResponderStatus::Away),
                LIMITS
            ),
            None
        );
    }
}
