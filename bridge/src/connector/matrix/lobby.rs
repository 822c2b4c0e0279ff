//! A lobby room (`[matrix] lobby`, issue 14): a room anyone may join (typically public, in
//! the room directory) where people ask for help. What someone who is not a responder writes
//! there starts a conversation of theirs, continued in private: the bot makes a direct chat
//! with them, invites them to it, and their lobby message is read as if written there, so
//! the topic question and everything after go to that chat, never to the lobby. What they
//! wrote in the lobby stays visible to whoever is in it; the bot says nothing there, so
//! nobody else learns that they talk with it.
//!
//! Each person gets one such chat, remembered in the connector's state (`lobby-dm:USER`),
//! so writing in the lobby again continues there instead of opening another.

use std::{sync::Arc, time::Duration};

use serde_json::Value;
use switchboard_appservice::ruma::{
    OwnedRoomId, OwnedUserId, api::client::room::Visibility, api::client::room::create_room,
};
use tokio::sync::watch;

use super::{MatrixConnector, SPEC, connector_error, read::Reading, read_event};
use crate::connector::{ConnectorError, ConnectorState, RemoteEvent, RoomDirectory};
use crate::store::StoreError;

/// First wait before trying to join the lobby again; doubled up to [`JOIN_RETRY_MAX`].
const JOIN_RETRY_MIN: Duration = Duration::from_secs(5);
const JOIN_RETRY_MAX: Duration = Duration::from_secs(300);

/// The lobby room and where the private chats it opened are remembered.
pub struct Lobby {
    pub room: OwnedRoomId,
    state: Arc<dyn ConnectorState>,
}

impl Lobby {
    pub fn new(room: OwnedRoomId, state: Arc<dyn ConnectorState>) -> Self {
        Lobby { room, state }
    }
}

impl MatrixConnector {
    /// Joins the lobby (a public room, or one the bot was invited to), trying again with a
    /// growing wait until it works or Switchboard stops: the homeserver may be starting.
    pub(super) async fn join_lobby(&self, lobby: &Lobby, mut shutdown: watch::Receiver<bool>) {
        let mut wait = JOIN_RETRY_MIN;
        loop {
            match self.client.join(&lobby.room, self.client.bot()).await {
                Ok(()) => {
                    tracing::info!(room_id = %lobby.room, "in the lobby");
                    return;
                }
                Err(e) => {
                    tracing::warn!(room_id = %lobby.room, error = %e, retry_in_secs = wait.as_secs(), "could not join the lobby");
                }
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            wait = (wait * 2).min(JOIN_RETRY_MAX);
        }
    }

    /// An event in the lobby: a message from someone who is not a responder starts (or
    /// continues) their conversation in their private chat with the bot; anything else is
    /// nothing for the bridge. If the private chat cannot be made, the message is not passed
    /// on (logged): they see no invite and may write again.
    pub(super) async fn lobby_event(
        &self,
        lobby: &Lobby,
        rooms: &dyn RoomDirectory,
        event: &Value,
    ) -> Result<Option<(String, RemoteEvent)>, StoreError> {
        let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or_default();
        let sender = field("sender");
        let bot = self.client.bot().as_str();
        if field("type") != "m.room.message" || sender == bot || sender.is_empty() {
            return Ok(None);
        }
        // Responders have their own places; what they say in the lobby is theirs to say.
        if rooms.is_responder(SPEC.platform(), sender).await? {
            return Ok(None);
        }
        let chat = match self.private_chat(lobby, sender).await {
            Ok(chat) => chat,
            Err(e) => {
                tracing::warn!(error = %e, "could not open a private chat for someone in the lobby");
                return Ok(None);
            }
        };
        Ok(match read_event(bot, &chat, None, true, event) {
            Reading::Remote { key, event } => Some((key, *event)),
            Reading::Invited { .. } | Reading::Nothing => None,
        })
    }

    /// The private chat of `user` with the bot, made (and `user` invited) the first time.
    async fn private_chat(&self, lobby: &Lobby, user: &str) -> Result<String, ConnectorError> {
        let key = format!("lobby-dm:{user}");
        if let Some(room) = lobby.state.get(SPEC.platform(), &key).await? {
            return Ok(room);
        }
        let invitee = OwnedUserId::try_from(user)
            .map_err(|e| ConnectorError::Permanent(format!("{user:?} is not a user ID: {e}")))?;
        let mut request = create_room::v3::Request::new();
        request.preset = Some(create_room::v3::RoomPreset::TrustedPrivateChat);
        request.visibility = Visibility::Private;
        request.is_direct = true;
        request.invite = vec![invitee];
        // Not retried by the client: a lost answer would make a second room.
        let room = self
            .client
            .create_room(request)
            .await
            .map_err(connector_error)?;
        lobby
            .state
            .put(SPEC.platform(), &key, room.as_str())
            .await?;
        tracing::info!(room_id = %room, "a private chat opened from the lobby");
        Ok(room.to_string())
    }
}
