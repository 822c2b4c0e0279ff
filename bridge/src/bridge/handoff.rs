//! Ending a responder's hold on a conversation: a transfer they ask for, a hand-over they did
//! not ask for (time limits, offline, unreachable), and the end of the conversation by either
//! side. Whoever stops holding it is told, their ghost leaves, and routing looks again.

use switchboard_appservice::ruma::OwnedUserId;

use super::{Bridge, room_posts::RoomPost};
use crate::{
    conversation::ConversationState,
    store::{AssignmentRow, StoreError},
};

impl Bridge {
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
        crate::metrics::handoff(forced);
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
        let round = self.round_of(room, &assignment).await?;
        self.post_notice(
            room,
            &format!("switchboard-transfer-{}-{round}", assignment.responder_id),
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

    /// Which time this holder holds the conversation: when the offer they accepted was made
    /// (a conversation handed back to someone by name is offered to them again). Keys the
    /// room posts of their stint, so a second stint's are not taken for repeats of the first.
    async fn round_of(&self, room: &str, holder: &AssignmentRow) -> Result<i64, StoreError> {
        Ok(self
            .accepted_offer_of(room, holder)
            .await?
            .map_or(0, |o| o.created_at))
    }

    /// Queues the holder's ghost leaving the room, once per stint (see [`Self::round_of`]).
    /// Only our own users are made to leave.
    async fn ghost_leaves(&self, room: &str, holder: &AssignmentRow) -> Result<(), StoreError> {
        if !OwnedUserId::try_from(holder.ghost_user_id.as_str())
            .is_ok_and(|ghost| self.registration.owns(&ghost))
        {
            return Ok(());
        }
        self.post(
            room,
            &format!(
                "switchboard-leave-{}-{}",
                holder.responder_id,
                self.round_of(room, holder).await?
            ),
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
            {
                let _ = self.close_offer_on(&offer, "The visitor left.").await;
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
