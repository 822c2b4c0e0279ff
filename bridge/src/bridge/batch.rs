//! A run of plain visitor messages in one conversation, handled in one database transaction.
//!
//! Most events a busy conversation receives are the visitor's text messages while its state
//! stays as it is: recorded in the transcript, queued for whoever holds the conversation,
//! marked processed. Done one event at a time, each of those is a commit of its own (and on
//! SQLite with `synchronous=FULL`, a disk flush); a run of them is done here in one, with the
//! conversation read once. The effects are exactly those of `process_event` for each event,
//! in order; anything else (a file, a bot's or responder's event, a conversation that needs
//! routing) ends the run and goes through `process_event` on its own.

use serde_json::Value;
use tracing::Instrument;

use super::{Bridge, message_of, visitor_change_of};
use crate::{
    connector::Delivery,
    conversation::{Conversation, SenderRole},
    store::{AssignmentRow, InboxEvent, NewDelivery, StoreError, VisitorBatch},
};

impl Bridge {
    /// Handles the leading run of `events` (one room's, in order) that are plain visitor text
    /// messages needing no routing. Returns how many it handled: 0 when the first is not one,
    /// `None` when the room is not a conversation.
    pub(super) async fn handle_plain_run(
        &self,
        room: &str,
        events: &[InboxEvent],
    ) -> Result<Option<usize>, StoreError> {
        let _room = self.room_locks.lock(room).await;
        // The conversation and who holds it in one read: most runs need nothing else.
        let Some((conversation, holders)) = self.store.conversation_with_holders(room).await?
        else {
            return Ok(None);
        };
        // A waiting conversation is routed by a visitor message unless an offer is open
        // (then routing does nothing): only the latter is a plain run.
        if conversation.state.is_waiting()
            && !self
                .store
                .offers_for_room(room)
                .await?
                .iter()
                .any(|o| o.state == "open")
        {
            return Ok(Some(0));
        }
        let span = tracing::info_span!(
            "conversation",
            room_id = %room,
            alias = tracing::field::Empty,
            visitor = tracing::field::Empty
        );
        self.name_in_span(&span, &conversation);
        self.record_plain_run(room, &conversation, holders, events)
            .instrument(span)
            .await
            .map(Some)
    }

    /// The run itself, in the conversation's span: records the leading plain messages of
    /// `events` with their deliveries in one transaction. Returns how many.
    async fn record_plain_run(
        &self,
        room: &str,
        conversation: &Conversation,
        holders: Vec<(AssignmentRow, Option<String>)>,
        events: &[InboxEvent],
    ) -> Result<usize, StoreError> {
        let holders = self.remote_only(holders);
        let mut batch = VisitorBatch::default();
        for event in events {
            if event.room_id != room {
                break;
            }
            let Ok(json) = serde_json::from_str::<Value>(&event.event_json) else {
                break;
            };
            if json.get("sender").and_then(Value::as_str)
                != Some(conversation.visitor_user_id.as_str())
            {
                break;
            }
            if visitor_change_of(&json).is_some() {
                break; // an edit or a deletion: handled on its own
            }
            let Ok(Some((message, None))) = message_of(room, event.seq, SenderRole::Visitor, &json)
            else {
                // A file, or not a usable message: handled on its own (and an unusable one
                // logged there, once).
                break;
            };
            for (a, thread) in &holders {
                let delivery = Delivery {
                    room_id: room.to_owned(),
                    event_id: message.event_id.clone(),
                    thread: thread.clone(),
                    visitor_alias: conversation.visitor_alias.clone(),
                    body: message.body.clone(),
                    formatted_body: message.formatted_body.clone(),
                    media: None,
                    revises: None,
                    to_initiator: false,
                };
                batch.deliveries.push(NewDelivery {
                    room_id: room.to_owned(),
                    platform: a.platform.clone(),
                    address: a.address.clone(),
                    event_id: message.event_id.clone(),
                    payload_json: serde_json::to_string(&delivery)
                        .expect("a Delivery always serialises"),
                });
            }
            batch.processed.push(event.seq);
            batch.messages.push(message);
        }
        let n = batch.processed.len();
        if n == 0 {
            return Ok(0);
        }
        self.store.record_visitor_batch(batch).await?;
        let now = self.now_ms();
        for event in &events[..n] {
            crate::metrics::event_handled("homeserver", now - event.received_at, false);
        }
        for (a, _) in &holders {
            self.want_delivery(&a.platform, &a.address);
        }
        tracing::debug!(events = n, "visitor messages handled in one transaction");
        Ok(n)
    }
}
