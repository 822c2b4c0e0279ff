//! What connectors call into the bridge for: recording their platform's events (and the
//! Matrix connector's reading of homeserver events in rooms that are not conversations), the
//! places conversations are held (for a platform that does not deliver again what was written
//! while Switchboard was away), a responder's typing, and the lookups the Matrix reader asks.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use switchboard_appservice::ruma::{OwnedRoomId, OwnedUserId};

use super::Bridge;
use crate::{
    cluster::Term,
    connector::{
        ConnectorError, HandleOffer, HeldPlace, Platform, RemoteEvent, RemoteSink, RoomDirectory,
    },
    store::{Fence, Recorded, StoreError},
};

impl Bridge {
    /// Shows the ghost of the responder at `address` typing in the conversation they write in
    /// (the one `thread` names, else their only one).
    async fn show_remote_typing(
        &self,
        platform: Platform,
        address: &str,
        thread: Option<&str>,
        lasts: Duration,
    ) -> Result<(), StoreError> {
        let name = platform.as_str();
        let room = match thread {
            Some(thread) => self
                .store
                .offer_by_handle(name, thread)
                .await?
                .filter(|o| o.address == address)
                .map(|o| o.room_id),
            None => match self
                .store
                .active_assignments_for_address(name, address)
                .await?
                .as_slice()
            {
                [only] => Some(only.room_id.clone()),
                _ => None, // none, or several: which one is not known
            },
        };
        let ghost = match room {
            Some(room) => self
                .assignment_of(&room, name, address)
                .await?
                .map(|a| (room, a.ghost_user_id)),
            None => None,
        };
        // A responder's typing is shown to an initiator who started the conversation too
        // (once: the platforms that report typing repeat it while it goes on).
        let ghost = match ghost {
            Some((room, ghost)) => {
                self.show_typing_to_initiator(&room, true, None).await?;
                Some((room, ghost))
            }
            // Not a responder's: an initiator's typing shows as their visitor ghost's.
            None => self
                .initiator_typing_in(name, address, thread)
                .await?
                .map(|c| (c.room_id, c.visitor_user_id)),
        };
        let Some((room, ghost)) = ghost else {
            return Ok(());
        };
        let (Ok(room_id), Ok(ghost)) = (
            OwnedRoomId::try_from(room.as_str()),
            OwnedUserId::try_from(ghost.as_str()),
        ) else {
            return Ok(());
        };
        if let Err(e) = self.client.set_typing(&room_id, &ghost, Some(lasts)).await {
            tracing::debug!(error = %e, "ghost typing not shown");
        }
        Ok(())
    }
}

impl Bridge {
    /// An event in a room that is not a conversation (a Matrix responder's relay room or
    /// direct chat with the bot): the platform whose events arrive this way reads it
    /// (`Connector::homeserver_events`) and what it carries is recorded as that platform's
    /// remote event, keyed by the event ID, exactly like a Telegram update. It is handled
    /// later by [`Self::handle_remote`], in the lane of the responder's chat, in order with
    /// their other events; accepts, declines, ends and transfers take the conversation's
    /// lock there.
    pub(super) async fn homeserver_room_event(
        &self,
        room_id: &str,
        event: &serde_json::Value,
    ) -> Result<(), StoreError> {
        for connector in self.connectors.values() {
            let Some(reader) = connector.homeserver_events() else {
                continue;
            };
            if let Some((key, remote)) = reader.receive(self, room_id, event).await? {
                // Relaxed: the homeserver event it is read from is flushed already.
                let json = serde_json::to_string(&remote).expect("a RemoteEvent serialises");
                let recorded = self
                    .store
                    .record_derived_remote_event(connector.platform().as_str(), &key, &json)
                    .await?;
                self.remote_recorded(recorded);
            }
        }
        Ok(())
    }

    /// Records a platform's event once per (platform, key), as the holder of `fence` when
    /// there is one (see [`AsLeader`]), and wakes the scheduler.
    async fn record_remote_event(
        &self,
        platform: Platform,
        key: &str,
        event: &RemoteEvent,
        fence: Option<&Fence>,
    ) -> Result<Recorded, StoreError> {
        let json = serde_json::to_string(event).expect("a RemoteEvent serialises");
        let recorded = self
            .store
            .record_remote_event_as(fence, platform.as_str(), key, &json)
            .await?;
        self.remote_recorded(recorded);
        Ok(recorded)
    }

    /// Wakes the scheduler for a platform event just recorded, if it was new.
    fn remote_recorded(&self, recorded: Recorded) {
        if recorded == Recorded::New {
            self.cursors.remote_recorded();
            self.inbox_ready.notify_one();
        }
    }

    /// The sink a platform's receivers record into during `term`: what they record carries
    /// the term's fence (on PostgreSQL; an instance alone has none), so a leader deposed with
    /// events in hand (paused past its lease, cut off from the database) records none of them
    /// as leader. The events are the new leader's to record: its own long poll, gateway
    /// session or IMAP pass brings them, since this one acknowledged none of them.
    pub fn as_leader(self: &Arc<Self>, term: &Term) -> Arc<dyn RemoteSink> {
        Arc::new(AsLeader {
            bridge: self.clone(),
            term: term.clone(),
        })
    }
}

/// A [`RemoteSink`] whose records are fenced by a leader's term; see [`Bridge::as_leader`].
struct AsLeader {
    bridge: Arc<Bridge>,
    term: Term,
}

#[async_trait]
impl RemoteSink for AsLeader {
    async fn record_remote(
        &self,
        platform: Platform,
        key: &str,
        event: &RemoteEvent,
    ) -> Result<(), ConnectorError> {
        let recorded = self
            .bridge
            .record_remote_event(platform, key, event, self.term.fence())
            .await
            .map_err(|e| ConnectorError::Transient(e.to_string()))?;
        if recorded != Recorded::Deposed {
            return Ok(());
        }
        crate::metrics::fenced_off(platform.as_str());
        tracing::warn!(
            platform = platform.as_str(),
            epoch = self.term.epoch(),
            "a receiver's event was not recorded: this instance no longer leads, so it is not acknowledged and is left to the leader"
        );
        // Transient, not permanent: the mail stays unflagged, the update unconfirmed, and the
        // receiver stops once its term is seen to have ended.
        Err(ConnectorError::Transient(format!(
            "this instance no longer leads (its term {} was taken over or ran out)",
            self.term.epoch()
        )))
    }

    async fn held_places(&self, platform: Platform) -> Result<Vec<HeldPlace>, ConnectorError> {
        self.bridge.held_places(platform).await
    }

    async fn chat_of_message(
        &self,
        platform: Platform,
        message_id: &str,
    ) -> Result<Option<String>, ConnectorError> {
        self.bridge.chat_of_message(platform, message_id).await
    }

    fn typing(&self, platform: Platform, address: &str, thread: Option<&str>, lasts: Duration) {
        self.bridge.typing(platform, address, thread, lasts)
    }

    fn rooms(&self) -> &dyn RoomDirectory {
        self.bridge.as_ref()
    }
}

#[async_trait]
impl RemoteSink for Bridge {
    async fn record_remote(
        &self,
        platform: Platform,
        key: &str,
        event: &RemoteEvent,
    ) -> Result<(), ConnectorError> {
        self.record_remote_event(platform, key, event, None)
            .await
            .map(drop)
            .map_err(|e| ConnectorError::Transient(e.to_string()))
    }

    fn typing(&self, platform: Platform, address: &str, thread: Option<&str>, lasts: Duration) {
        let Some(me) = self.lanes_running() else {
            return;
        };
        let (address, thread) = (address.to_owned(), thread.map(str::to_owned));
        tokio::spawn(async move {
            if let Err(e) = me
                .show_remote_typing(platform, &address, thread.as_deref(), lasts)
                .await
            {
                tracing::debug!(error = %e, "a responder's typing was not shown");
            }
        });
    }

    async fn held_places(&self, platform: Platform) -> Result<Vec<HeldPlace>, ConnectorError> {
        Ok(self
            .store
            .held_places(platform.as_str())
            .await
            .map_err(|e| ConnectorError::Transient(e.to_string()))?
            .into_iter()
            .map(|(address, handle)| HeldPlace { address, handle })
            .collect())
    }

    async fn chat_of_message(
        &self,
        platform: Platform,
        message_id: &str,
    ) -> Result<Option<String>, ConnectorError> {
        self.store
            .chat_of_message(platform.as_str(), message_id)
            .await
            .map_err(|e| ConnectorError::Transient(e.to_string()))
    }

    fn rooms(&self) -> &dyn RoomDirectory {
        self
    }
}

#[async_trait]
impl RoomDirectory for Bridge {
    async fn offer_by_handle(
        &self,
        platform: Platform,
        handle: &str,
    ) -> Result<Option<HandleOffer>, StoreError> {
        Ok(self
            .store
            .offer_by_handle(platform.as_str(), handle)
            .await?
            .map(|o| HandleOffer {
                open: o.state == "open",
                offer_id: o.id,
                address: o.address,
            }))
    }

    async fn is_responder(&self, platform: Platform, address: &str) -> Result<bool, StoreError> {
        Ok(self
            .responder_at(platform.as_str(), address)
            .await?
            .is_some())
    }
}
