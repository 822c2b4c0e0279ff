//! The conversation's lifecycle state: stored, and published into the room so the widget can
//! show it (see [`ConversationStatus`]).

use switchboard_appservice::ruma::OwnedRoomId;

use super::Bridge;
use crate::{
    conversation::{ConversationState, ConversationStatus},
    store::StoreError,
};

impl Bridge {
    /// Moves a conversation to `state` and tells the room. `responder` is the public name of
    /// who answers (for `active`); `nobody_available` marks a queue nobody can serve now.
    ///
    /// The store is the source of truth and is written first. The room event is sent only
    /// when it differs from the last one published, so repeated routing passes over a queued
    /// conversation do not fill the visitor's timeline. A failed publish is retried the next
    /// time the state is set.
    pub(super) async fn set_state(
        &self,
        room: &str,
        state: ConversationState,
        responder: Option<String>,
        nobody_available: bool,
    ) -> Result<(), StoreError> {
        self.store.set_conversation_state(room, state).await?;
        let transfers = self
            .store
            .assignments_for_room(room)
            .await?
            .iter()
            .filter(|a| a.state == "transferred")
            .count() as u32;
        let status = ConversationStatus {
            state,
            responder: responder.filter(|_| state == ConversationState::Active),
            transfers,
            nobody_available: nobody_available && state == ConversationState::Queued,
        };
        let json = serde_json::to_value(&status).expect("a plain struct serialises");
        let text = json.to_string();
        if self.store.published_status(room).await?.as_deref() == Some(text.as_str()) {
            return Ok(());
        }
        let Ok(room_id) = OwnedRoomId::try_from(room) else {
            return Ok(());
        };
        match self
            .client
            .send_state_raw(&room_id, ConversationStatus::EVENT_TYPE, "", &json)
            .await
        {
            Ok(_) => self.store.set_published_status(room, &text).await?,
            Err(e) => {
                tracing::warn!(room_id = %room, error = %e, "could not publish the conversation state")
            }
        }
        tracing::info!(room_id = %room, state = state.as_str(), "conversation state");
        Ok(())
    }
}
