//! The visitor API's side of a conversation: starting one (the room, the visitor's invite,
//! the welcome), ending it, and the visitor's typing.

use switchboard_appservice::{
    ClientError,
    ruma::{
        OwnedRoomId, OwnedUserId, UserId,
        api::client::room::{Visibility, create_room},
        events::{
            EmptyStateKey, InitialStateEvent,
            room::{
                guest_access::{GuestAccess, RoomGuestAccessEventContent},
                history_visibility::{HistoryVisibility, RoomHistoryVisibilityEventContent},
            },
        },
    },
};

use super::{Bridge, VisitorError, primary_language, token_owners, typing::TypingUpdate};
use crate::conversation::{Conversation, ConversationState, new_visitor_alias};

impl Bridge {
    /// Starts (or, for a visitor who already has one on this topic, resumes) a conversation.
    ///
    /// `visitor_token` is the visitor's own homeserver access token: asking the homeserver who
    /// owns it is how we know which user to invite, without trusting anything the browser says.
    pub async fn start_conversation(
        &self,
        visitor_token: &str,
        topic_id: &str,
        language: Option<&str>,
    ) -> Result<Conversation, VisitorError> {
        let topic = self
            .config
            .topic(topic_id)
            .ok_or_else(|| VisitorError::UnknownTopic(topic_id.to_owned()))?
            .clone();
        let visitor = self.visitor_of(visitor_token).await?;
        // Our own bot and ghosts must never be visitors: that would let a responder's puppet
        // open conversations with itself. Visitor accounts live in our namespace too, but are
        // visitors by definition.
        if self.registration.owns(&visitor)
            && !crate::visitor_account::is_visitor_account(&self.registration, &visitor)
        {
            return Err(VisitorError::Forbidden);
        }
        if let Some(existing) = self
            .store
            .open_conversation_for_visitor(visitor.as_str(), &topic.id)
            .await?
        {
            return Ok(existing);
        }

        let room_id = self
            .create_conversation_room(Some(&visitor), &topic.name)
            .await?;
        let conversation = Conversation {
            room_id: room_id.to_string(),
            topic: topic.id.clone(),
            visitor_user_id: visitor.to_string(),
            visitor_alias: new_visitor_alias(),
            state: ConversationState::Queued,
            created_at: self.now_ms(),
            language: language.and_then(primary_language),
        };
        self.store.insert_conversation(&conversation).await?;
        self.set_state(room_id.as_str(), ConversationState::Queued, None, false)
            .await?;
        let span = tracing::info_span!(
            "conversation",
            room_id = %room_id,
            alias = tracing::field::Empty,
            visitor = tracing::field::Empty
        );
        self.name_in_span(&span, &conversation);
        span.in_scope(|| tracing::info!(topic = %topic.id, "conversation started"));
        // A fixed transaction ID per room: queued once, posted once. Responders are offered
        // the conversation when the visitor's first message arrives, so the offer can quote it
        // (`route`).
        self.post_notice(
            room_id.as_str(),
            "switchboard-welcome",
            self.config.welcome_notice.replace("{topic}", &topic.name),
        )
        .await?;
        Ok(conversation)
    }

    /// Ends the visitor's own conversation. As for starting one, the homeserver says whose
    /// token it is; another visitor's room ID gets them `NotYours`.
    pub async fn end_conversation(
        &self,
        visitor_token: &str,
        room_id: &str,
    ) -> Result<(), VisitorError> {
        let visitor = self.visitor_of(visitor_token).await?;
        match self.store.conversation(room_id).await? {
            Some(c) if c.visitor_user_id == visitor.as_str() => {
                if c.state != ConversationState::Closed {
                    let _room = self.room_locks.lock(room_id).await;
                    self.end_by_visitor(room_id).await?;
                }
                Ok(())
            }
            _ => Err(VisitorError::NotYours),
        }
    }

    /// Who owns this visitor token, asked of the homeserver (never taken from the browser).
    async fn visitor_of(&self, visitor_token: &str) -> Result<OwnedUserId, VisitorError> {
        // Proxied mode: the widget holds a session token Switchboard issued, which the
        // homeserver does not know; it is resolved from our own store instead (and only there,
        // so a homeserver token is no use in that mode). See `visitor_proxy.rs`.
        if self.config.limits.mode == crate::config::VisitorMode::Proxied {
            return crate::visitor_proxy::resolve_session(&self.store, visitor_token)
                .await?
                .ok_or(VisitorError::UnknownToken);
        }
        use token_owners::Owner;
        let owner = match self.token_owners.get(visitor_token) {
            Some(owner) => owner,
            None => {
                let owner = match self.client.whoami(visitor_token).await {
                    Ok(who) => Owner::Visitor(who.user_id),
                    Err(ClientError::Matrix {
                        status: 401 | 403, ..
                    }) => Owner::Nobody,
                    // Not an answer about the token: nothing to remember.
                    Err(e) => return Err(e.into()),
                };
                self.token_owners.remember(visitor_token, owner.clone());
                owner
            }
        };
        match owner {
            Owner::Visitor(user) => Ok(user),
            Owner::Nobody => Err(VisitorError::UnknownToken),
        }
    }

    /// The visitor is typing (or stopped) in their own conversation. Guests may not send
    /// `m.typing` on Synapse, so the widget tells us directly and we pass it to whoever holds
    /// the conversation, exactly as a typing event from the room would be.
    pub async fn visitor_typing(
        &self,
        visitor_token: &str,
        room_id: &str,
        typing: bool,
    ) -> Result<(), VisitorError> {
        let visitor = self.visitor_of(visitor_token).await?;
        match self.store.conversation(room_id).await? {
            Some(c) if c.visitor_user_id == visitor.as_str() => {
                self.queue_typing(TypingUpdate {
                    room_id: room_id.to_owned(),
                    user_ids: if typing {
                        vec![c.visitor_user_id]
                    } else {
                        vec![]
                    },
                });
                Ok(())
            }
            _ => Err(VisitorError::NotYours),
        }
    }

    /// A conversation's room, made by the bot. `visitor` is invited at once (a widget
    /// visitor joins it themselves); an initiator's visitor ghost is invited and joined by
    /// the room-post queue instead, after it is registered.
    pub(super) async fn create_conversation_room(
        &self,
        visitor: Option<&UserId>,
        topic_name: &str,
    ) -> Result<OwnedRoomId, ClientError> {
        let mut request = create_room::v3::Request::new();
        // private_chat: joining needs an invite, so another visitor who learns the room ID
        // still cannot get in.
        request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        request.visibility = Visibility::Private;
        request.name = Some(topic_name.to_owned());
        request.invite = visitor.map(UserId::to_owned).into_iter().collect();
        request.initial_state = vec![
            // Guests may only join rooms that allow them explicitly.
            InitialStateEvent::new(
                EmptyStateKey,
                RoomGuestAccessEventContent::new(GuestAccess::CanJoin),
            )
            .to_raw_any(),
            // Responders joining later must see what the visitor already wrote.
            InitialStateEvent::new(
                EmptyStateKey,
                RoomHistoryVisibilityEventContent::new(HistoryVisibility::Shared),
            )
            .to_raw_any(),
        ];
        self.client.create_room(request).await
    }
}
