//! Responders who use a Matrix client: they are invited into the conversation room itself.

use std::sync::Arc;

use async_trait::async_trait;
use switchboard_appservice::{
    ClientError, HomeserverClient,
    ruma::{OwnedRoomId, OwnedUserId},
};

use super::{Capabilities, Connector, ConnectorError, Offer, Platform};

pub struct MatrixConnector {
    client: Arc<HomeserverClient>,
}

impl MatrixConnector {
    pub fn new(client: Arc<HomeserverClient>) -> Self {
        Self { client }
    }
}

#[async_trait]
impl Connector for MatrixConnector {
    fn platform(&self) -> Platform {
        Platform::Matrix
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities { shares_room: true }
    }

    /// The invite is the offer: the responder's client shows the room, named after the topic,
    /// and once they join they see the visitor's messages.
    async fn offer(&self, offer: &Offer, address: &str) -> Result<(), ConnectorError> {
        let user = OwnedUserId::try_from(address).map_err(|e| {
            ConnectorError::Permanent(format!("{address:?} is not a Matrix user ID: {e}"))
        })?;
        let room = OwnedRoomId::try_from(offer.room_id.as_str())
            .map_err(|e| ConnectorError::Permanent(format!("bad room ID: {e}")))?;
        match self.client.invite(&room, &user, None).await {
            Ok(()) => Ok(()),
            // Already invited or joined: the offer stands, which is what a retry wants.
            Err(ClientError::Matrix {
                status: 403,
                ref message,
                ..
            }) if message.contains("already in the room") || message.contains("is already") => {
                Ok(())
            }
            Err(e) if e.is_transient() => Err(ConnectorError::Transient(e.to_string())),
            Err(e) => Err(ConnectorError::Permanent(e.to_string())),
        }
    }
}
