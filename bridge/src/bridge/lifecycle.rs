//! The conversation's lifecycle state: stored, and published into the room so the widget can
//! show it (see [`ConversationStatus`]).

use super::{Bridge, room_posts::RoomPost};
use crate::{
    conversation::{ConversationState, ConversationStatus},
    store::StoreError,
};

impl Bridge {
    /// Moves a conversation to `state` and tells the room. `responder` is the public name of
    /// who answers (for `active`); `nobody_available` marks a queue nobody can serve now.
    ///
    /// The store is the source of truth and is written first. The room event is queued only
    /// when it differs from the last one queued, so repeated routing passes over a queued
    /// conversation do not fill the visitor's timeline; the queue posts it until the
    /// homeserver takes it.
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
        // Queued like every write into the room, so it reaches the room in order with the
        // notices around it, however long the homeserver is away. Each change is its own post
        // (a state may come back: active, transferring, active).
        self.post(
            room,
            &format!("switchboard-state-{:016x}", rand::random::<u64>()),
            RoomPost::State {
                event_type: ConversationStatus::EVENT_TYPE.to_owned(),
                state_key: String::new(),
                content: json,
            },
        )
        .await?;
        self.store.set_published_status(room, &text).await?;
        tracing::info!(room_id = %room, state = state.as_str(), "conversation state");
        Ok(())
    }
}
