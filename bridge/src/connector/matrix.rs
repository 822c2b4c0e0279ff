//! Responders who use a Matrix client: they are invited into the conversation room itself.

use std::sync::Arc;

use tokio::sync::watch;

use async_trait::async_trait;
use switchboard_appservice::{
    HomeserverClient,
    ruma::{OwnedRoomId, OwnedUserId},
};

use super::{Capabilities, Connector, ConnectorError, Delivery, Offer, Platform, RemoteSink};

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
    async fn offer(&self, offer: &Offer, address: &str) -> Result<Option<String>, ConnectorError> {
        let user = OwnedUserId::try_from(address).map_err(|e| {
            ConnectorError::Permanent(format!("{address:?} is not a Matrix user ID: {e}"))
        })?;
        let room = OwnedRoomId::try_from(offer.room_id.as_str())
            .map_err(|e| ConnectorError::Permanent(format!("bad room ID: {e}")))?;
        match self.client.invite(&room, &user, None).await {
            // The invite lives in the room: the room ID is the offer's handle.
            Ok(()) => Ok(Some(offer.room_id.clone())),
            Err(e) if e.is_transient() => Err(ConnectorError::Transient(e.to_string())),
            Err(e) => Err(ConnectorError::Permanent(e.to_string())),
        }
    }

    /// Withdraws the invite (`handle` is the room ID), with the reason shown in their client.
    async fn close_offer(
        &self,
        address: &str,
        handle: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        let (Ok(room), Ok(user)) = (
            OwnedRoomId::try_from(handle),
            OwnedUserId::try_from(address),
        ) else {
            return Err(ConnectorError::Permanent(format!(
                "bad Matrix offer handle {handle:?}"
            )));
        };
        self.client.kick(&room, &user, why).await.map_err(|e| {
            if e.is_transient() {
                ConnectorError::Transient(e.to_string())
            } else {
                ConnectorError::Permanent(e.to_string())
            }
        })
    }

    /// Never called: the responder reads the room itself.
    async fn deliver(
        &self,
        _delivery: &Delivery,
        _address: &str,
    ) -> Result<Vec<String>, ConnectorError> {
        Ok(vec![])
    }

    /// Matrix responders see Switchboard's notices in the room itself.
    async fn notify(&self, _address: &str, _text: &str) -> Result<(), ConnectorError> {
        Ok(())
    }

    /// Nothing to receive: the homeserver's transactions carry Matrix responders' messages.
    async fn run(self: Arc<Self>, _sink: Arc<dyn RemoteSink>, _shutdown: watch::Receiver<bool>) {}
}
