//! Offers answered: a responder takes one (an atomic claim; the other offers of that
//! conversation closed on their platforms) or declines it, and an offer closed on its platform.

use tracing::Instrument;

use super::{Bridge, room_posts::RoomPost};
use crate::{
    connector::{ConnectorError, MediaRef, Platform},
    conversation::{ConversationState, SenderRole},
    store::{AssignmentRow, Milestone, OfferRow, StoreError},
};

impl Bridge {
    /// A responder accepted an offer: the conversation is claimed for them, unless someone
    /// was quicker.
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
        // The claim's log lines in the conversation's span. Instrumented, never entered with
        // a guard: a guard held across an await stays entered on the thread while the task
        // sleeps, so whatever else that thread ran was logged in this conversation, and the
        // span, exited on another thread, was never closed (the soak found it).
        let claimed = async {
            if self.store.claim_conversation(&offer.room_id).await? {
                return Ok(true);
            }
            self.store
                .transition_offer(offer_id, "open", "taken")
                .await?;
            Ok::<_, StoreError>(false)
        }
        .instrument(tracing::info_span!("conversation", room_id = %offer.room_id))
        .await?;
        if !claimed {
            let taken = "Someone else has already taken this conversation.";
            // Where the offer cannot be edited, the notice below says it alone.
            if let (Some(handle), Some((_, c))) = (&offer.remote_message_id, self.remote(platform))
                && c.capabilities().edits
                && let Err(e) = self
                    .in_turn(c.as_ref(), address, c.close_offer(address, handle, taken))
                    .await
            {
                tracing::warn!(error = %e, "could not withdraw the late accept's offer");
            }
            self.notify(platform, address, taken).await;
            return Ok(());
        }
        self.store
            .transition_offer(offer_id, "open", "accepted")
            .await?;
        crate::metrics::offer(platform, "accepted");
        let Some(conversation) = self.store.conversation(&offer.room_id).await? else {
            return Ok(());
        };
        self.milestone(&conversation, Milestone::Accepted, platform)
            .await?;
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
            &format!("switchboard-join-{}-{}", offer.id, offer.created_at),
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
            &format!("switchboard-now-{}-{}", offer.id, offer.created_at),
            format!("You are now talking with {name}."),
        )
        .await?;
        // Other open offers for this conversation are taken now.
        self.withdraw_other_offers(&offer).await?;
        // The offer becomes the "accepted" message where it can be edited; elsewhere the
        // notice below is the answer.
        if let (Some(msg), Some((_, c))) = (&offer.remote_message_id, self.remote(platform))
            && c.capabilities().edits
        {
            let mut text = format!(
                "You accepted the conversation with {}.",
                conversation.visitor_alias
            );
            // The offer quoted the visitor's first message, which is not sent again below:
            // the edit must not take it away from the responder.
            if let Some(first) = self.first_visitor_message(&offer.room_id).await? {
                text.push_str(&format!(
                    "\n\n{}: {}",
                    conversation.visitor_alias,
                    crate::format::truncate_chars(&first, 1000)
                ));
            }
            let edit = c.offer_accepted(address, msg, &text);
            let _ = self.in_turn(c.as_ref(), address, edit).await;
        }
        // Where a held conversation is a place of its own (a Discord thread), it is made now;
        // its handle replaces the offer's, so deliveries, notices and what the responder writes
        // there name this conversation. Without it, the conversation stays where the offer was.
        let mut own_place = false;
        if let (Some(msg), Some((_, c))) = (&offer.remote_message_id, self.remote(platform)) {
            let topic_name = self
                .config
                .topic(&conversation.topic)
                .map_or_else(|| conversation.topic.clone(), |t| t.name.clone());
            let open =
                c.conversation_opened(address, msg, &conversation.visitor_alias, &topic_name);
            match self.in_turn(c.as_ref(), address, open).await {
                Ok(Some(handle)) => {
                    self.store.set_offer_message(offer.id, &handle).await?;
                    own_place = true;
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "the conversation got no place of its own; it stays where the offer was");
                }
            }
        }
        let end = format!("{}end", self.command_prefix(platform));
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
        // is a file follows too). A conversation in a place of its own gets all of it there,
        // the quoted message too: that is where the responder reads it from now on.
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
            if i == 0 && media.is_none() && !own_place {
                continue; // quoted in the offer
            }
            self.relay_to_responders(
                &conversation,
                &m.event_id,
                &m.body,
                m.formatted_body.as_deref(),
                media,
                None,
            )
            .await?;
        }
        Ok(())
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
        crate::metrics::offer(&offer.platform, "declined");
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
            let _ = self
                .close_offer_on(&o, "You declined this conversation.")
                .await;
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
                && let Err(e) = self.close_offer_on(&other, &text).await
            {
                tracing::warn!(error = %e, "could not withdraw an offer");
            }
        }
        Ok(())
    }

    /// Closes an open offer on its platform, saying `why`: the offer message is edited in
    /// place where the platform edits messages (`Capabilities::edits`); elsewhere it cannot
    /// change, so `why` goes out as a new message naming the conversation it was about. In
    /// the chat's turn. An offer that never reached its platform (no handle) has nothing to
    /// close.
    pub(super) async fn close_offer_on(
        &self,
        offer: &OfferRow,
        why: &str,
    ) -> Result<(), ConnectorError> {
        let (Some(handle), Some((_, c))) = (&offer.remote_message_id, self.remote(&offer.platform))
        else {
            return Ok(());
        };
        if c.capabilities().edits {
            let close = c.close_offer(&offer.address, handle, why);
            return self.in_turn(c.as_ref(), &offer.address, close).await;
        }
        let text = match self.store.conversation(&offer.room_id).await {
            Ok(Some(conversation)) => {
                let topic = self
                    .config
                    .topic(&conversation.topic)
                    .map_or(conversation.topic.as_str(), |t| t.name.as_str());
                format!(
                    "The offer of {} ({topic}): {why}",
                    conversation.visitor_alias
                )
            }
            _ => why.to_owned(),
        };
        let tell = c.notify(&offer.address, Some(handle), &text);
        self.in_turn(c.as_ref(), &offer.address, tell)
            .await
            .map(|_| ())
    }
}
