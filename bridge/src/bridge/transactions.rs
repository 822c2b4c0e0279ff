//! The homeserver's transactions: what the appservice endpoint hands over is indexed,
//! recorded in the inbox once per event ID, and only then acknowledged; the echoes of the
//! bot's own relayed posts are dropped.

use async_trait::async_trait;
use serde_json::Value;
use switchboard_appservice::{
    EventSink, SinkError,
    ruma::{UserId, events::AnyTimelineEvent, serde::Raw},
};

use super::{Bridge, typing::TypingUpdate};
use crate::{health::PartState, store::NewInboxEvent};

/// Pulls out what the inbox indexes. An event without an ID or room cannot be deduplicated or
/// routed, so it is logged and dropped alone.
pub(super) fn index_fields(raw: &Raw<AnyTimelineEvent>) -> Option<(String, String)> {
    let event_id: String = raw.get_field("event_id").ok().flatten()?;
    let room_id: String = raw.get_field("room_id").ok().flatten()?;
    Some((event_id, room_id))
}

/// What of `events` goes into the inbox, as (event ID, room ID, JSON): all but the relayed
/// echoes and what lacks an event or room ID. A transaction and a catch-up record the same.
pub(super) fn indexed_events<'a>(
    bot: &str,
    events: &'a [Raw<AnyTimelineEvent>],
) -> Vec<(String, String, &'a str)> {
    events
        .iter()
        .filter(|raw| !is_relayed_echo(bot, raw))
        .filter_map(|raw| match index_fields(raw) {
            Some((event_id, room_id)) => Some((event_id, room_id, raw.json().get())),
            None => {
                tracing::warn!("event without event_id or room_id skipped");
                None
            }
        })
        .collect()
}

/// The inbox rows of [`indexed_events`]' answer.
pub(super) fn inbox_rows<'a>(indexed: &'a [(String, String, &'a str)]) -> Vec<NewInboxEvent<'a>> {
    indexed
        .iter()
        .map(|(event_id, room_id, json)| NewInboxEvent {
            event_id,
            room_id,
            event_json: json,
        })
        .collect()
}

/// Whether `raw` is the echo of a visitor message the bot relayed into a Matrix responder's
/// relay room ([`crate::connector::matrix::RELAYED_MARK`]): nothing to record or handle.
pub(super) fn is_relayed_echo(bot: &str, raw: &Raw<AnyTimelineEvent>) -> bool {
    #[derive(serde::Deserialize)]
    struct Marked {
        #[serde(rename = "org.switchboard.relayed", default)]
        relayed: bool,
    }
    // Borrowed: the bot's ID needs no escaping, so a sender that does is not the bot.
    raw.get_field::<&str>("sender").ok().flatten() == Some(bot)
        && raw
            .get_field::<Marked>("content")
            .ok()
            .flatten()
            .is_some_and(|c| c.relayed)
}

#[async_trait]
impl EventSink for Bridge {
    async fn record_transaction(
        &self,
        txn_id: &str,
        events: Vec<Raw<AnyTimelineEvent>>,
    ) -> Result<(), SinkError> {
        let started = std::time::Instant::now();
        let indexed = indexed_events(self.client.bot().as_str(), &events);
        if indexed.len() < events.len() {
            tracing::debug!(%txn_id, skipped = events.len() - indexed.len(), "relayed echoes or events without an ID skipped");
        }
        let new = match self
            .store
            .record_events(txn_id, &inbox_rows(&indexed))
            .await
        {
            Ok(new) => new,
            Err(e) => {
                crate::metrics::transaction(false, events.len(), 0, started.elapsed());
                return Err(SinkError(Box::new(e)));
            }
        };
        // Duplicates counted against what was indexed: a relayed echo skipped above is
        // neither new nor a duplicate.
        crate::metrics::transaction(true, indexed.len(), new as usize, started.elapsed());
        if new > 0
            && let Some(me) = self.lanes_running()
        {
            // Every room of the transaction: a room whose events were all duplicates finds
            // nothing pending, which is rare and cheap.
            let mut rooms: Vec<&str> = indexed.iter().map(|(_, room, _)| room.as_str()).collect();
            rooms.sort_unstable();
            rooms.dedup();
            for room in rooms {
                me.submit_room_inbox(room.to_owned());
            }
        }
        tracing::debug!(%txn_id, received = events.len(), new, "transaction stored");
        // The homeserver just talked to us.
        self.health
            .report(crate::health::HOMESERVER, PartState::Connected, None);
        self.homeserver_is_up().await;
        // It may have lost what it had queued for us when it went away (`catch_up.rs`).
        if let Some(me) = self.lanes_running() {
            if self.catch_up.awaiting() {
                me.homeserver_back();
            }
            // Or may strand one when the recovery our refusal started ends.
            me.watch_for_strands();
        }
        Ok(())
    }

    /// Ephemeral events (typing) are handed to the typing task, never recorded.
    fn ephemeral(&self, events: &[Value]) {
        for update in events.iter().filter_map(TypingUpdate::from_ephemeral) {
            // Our own users typing (ghosts, the bot in relay rooms) are echoes of what we did.
            let theirs: Vec<String> = update
                .user_ids
                .iter()
                .filter(|u| {
                    UserId::parse(u.as_str()).is_ok_and(|u| {
                        !self.registration.owns(&u)
                            || crate::visitor_account::is_visitor_account(&self.registration, &u)
                    })
                })
                .cloned()
                .collect();
            self.queue_typing(TypingUpdate {
                user_ids: theirs,
                ..update
            });
        }
    }

    fn refused(&self) {
        self.catch_up.refused();
    }

    async fn user_exists(&self, user_id: &UserId) -> bool {
        if user_id == self.client.bot() {
            return true;
        }
        // A ghost exists for every responder in the register.
        let Some(id) = user_id
            .localpart()
            .strip_prefix(&self.registration.ghost_prefix)
        else {
            return false;
        };
        matches!(self.store.responder(id).await, Ok(Some(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(sender: &str, content: Value) -> Raw<AnyTimelineEvent> {
        Raw::from_json(
            serde_json::value::to_raw_value(&serde_json::json!({
                "type": "m.room.message",
                "event_id": "$e",
                "room_id": "!relay:x",
                "sender": sender,
                "origin_server_ts": 1,
                "content": content,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn only_the_bots_marked_posts_are_echoes_to_drop() {
        let marked = serde_json::json!({"msgtype": "m.text", "body": "V: hi", "org.switchboard.relayed": true});
        let plain = serde_json::json!({"msgtype": "m.text", "body": "V: hi"});
        assert!(is_relayed_echo("@bot:x", &raw("@bot:x", marked.clone())));
        // Anyone else may put the field in their content: theirs is still recorded.
        assert!(!is_relayed_echo("@bot:x", &raw("@alice:x", marked)));
        // The bot's other posts (notices in conversation rooms) are recorded.
        assert!(!is_relayed_echo("@bot:x", &raw("@bot:x", plain)));
        assert!(!is_relayed_echo(
            "@bot:x",
            &raw(
                "@bot:x",
                serde_json::json!({"org.switchboard.relayed": "yes"})
            )
        ));
    }
}
