//! Sending a message event once, even when the homeserver's answer is lost.
//!
//! A retried send carries the same transaction ID, and a homeserver answers a repeated one with
//! the first event, but Synapse keeps an appservice's transaction IDs in memory only (it stores
//! them for requests made with a device, and ours have none). When Synapse dies after storing
//! an event and before answering, or a proxy in front of it answers 502 or 504 while it
//! stored it, the retry becomes a second event: the crash bursts saw such doubles in visitor
//! rooms and relay rooms whenever Synapse was killed (`docs/reliability.md`).
//!
//! So every message event we send is tagged under its transaction ID ([`SENT_UNDER`]: a keyed
//! hash, so nothing of the ID, which may name a responder's chat, shows), and a send whose last
//! attempt ended without a clear answer (the connection broke, a timeout, a 5xx) first looks
//! in the room for an event of the same sender with that tag, and takes it instead of sending
//! again. A send counts as unanswered from the moment it goes out until a clear answer comes,
//! so one dropped mid-request by a caller's timeout counts too. Which sends are unanswered is
//! kept in memory, shared by every clone of the client:
//! the case it is for is the homeserver restarting under a running Switchboard. A Switchboard
//! that restarts meanwhile sends again, and Synapse, which did not restart, answers the repeated
//! transaction ID with the first event.

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
};

use hmac::{Hmac, Mac};
use ruma::{
    OwnedEventId, RoomId, UserId,
    api::client::{filter::RoomEventFilter, message::get_message_events},
};
use serde_json::Value;
use sha2::Sha256;

use super::{ClientError, HomeserverClient};

/// The content field that tags a message event with the transaction it was sent under.
pub const SENT_UNDER: &str = "org.switchboard.sent_under";

/// How many of the sender's latest events in the room are looked through. The unanswered event
/// is normally the sender's latest there: what comes after it in its conversation waits for it.
const LOOK_BACK: u32 = 50;

/// How many unanswered sends are remembered; past it the set is emptied (a send forgotten so
/// is sent again without looking, as before this existed), so it cannot grow without bound.
const REMEMBERED: usize = 4096;

/// The sends whose last attempt had no clear answer, as `room \n sender \n txn`.
#[derive(Debug, Default, Clone)]
pub(super) struct Unanswered(Arc<Mutex<HashSet<String>>>);

impl Unanswered {
    fn key(room: &RoomId, sender: &UserId, txn_id: &str) -> String {
        format!("{room}\n{sender}\n{txn_id}")
    }

    fn contains(&self, key: &str) -> bool {
        self.0.lock().expect("unanswered sends").contains(key)
    }

    fn mark(&self, key: String) {
        let mut keys = self.0.lock().expect("unanswered sends");
        if keys.len() >= REMEMBERED {
            keys.clear();
        }
        keys.insert(key);
    }

    fn clear(&self, key: &str) {
        self.0.lock().expect("unanswered sends").remove(key);
    }
}

/// Whether an attempt may have been stored although it failed: the request may have reached
/// the homeserver and its answer was lost or was an error after the fact. A Matrix error below
/// 500 (a refusal, a rate limit) says nothing was stored.
fn unclear(error: &ClientError) -> bool {
    match error {
        ClientError::Transport(_) | ClientError::Response(_) => true,
        ClientError::Matrix { status, .. } => *status >= 500,
        ClientError::Build(_) => false,
    }
}

impl HomeserverClient {
    /// The tag of the events sent under `txn_id`: HMAC-SHA-256 keyed with the `as_token`, so
    /// only we can make it or tell which transaction it names.
    pub fn sent_under(&self, txn_id: &str) -> String {
        let mut mac =
            Hmac::<Sha256>::new_from_slice(self.as_token.as_bytes()).expect("any key length");
        mac.update(txn_id.as_bytes());
        mac.finalize().into_bytes()[..16]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    /// The event `as_user` (the bot when `None`) sent into `room` tagged `tag`, if the
    /// homeserver has one among the sender's latest.
    async fn find_sent(
        &self,
        room: &RoomId,
        as_user: Option<&UserId>,
        tag: &str,
    ) -> Result<Option<OwnedEventId>, ClientError> {
        let sender = as_user.unwrap_or(&self.bot);
        let mut filter = RoomEventFilter::default();
        filter.senders = Some(vec![sender.to_owned()]);
        let mut request = get_message_events::v3::Request::backward(room.to_owned());
        request.limit = LOOK_BACK.into();
        request.filter = filter;
        let response = self.send_once(request, as_user).await?;
        Ok(response.chunk.iter().find_map(|raw| {
            let content = raw.get_field::<Value>("content").ok().flatten()?;
            if content.get(SENT_UNDER)?.as_str()? != tag {
                return None;
            }
            raw.get_field::<OwnedEventId>("event_id").ok().flatten()
        }))
    }

    /// Sends a message event of `event_type` under `txn_id`, tagged ([`SENT_UNDER`]), retried
    /// as [`Self::send`] retries; an attempt after one without a clear answer (in this call
    /// or an earlier one) first looks for the event that attempt may have stored.
    pub(super) async fn send_tagged(
        &self,
        room: &RoomId,
        as_user: Option<&UserId>,
        txn_id: &str,
        event_type: &str,
        mut content: Value,
    ) -> Result<OwnedEventId, ClientError> {
        let tag = self.sent_under(txn_id);
        if let Some(fields) = content.as_object_mut() {
            fields.insert(SENT_UNDER.to_owned(), Value::String(tag.clone()));
        }
        let key = Unanswered::key(room, as_user.unwrap_or(&self.bot), txn_id);
        self.retrying(|| async {
            if self.unanswered.contains(&key) {
                match self.find_sent(room, as_user, &tag).await {
                    Ok(Some(event)) => {
                        tracing::info!(%room, %event, "a send whose answer was lost had been stored; not sent again");
                        self.unanswered.clear(&key);
                        return Ok(event);
                    }
                    Ok(None) => {}
                    // The homeserver is still away: this attempt fails like a send would.
                    Err(e) if e.is_transient() => return Err(e),
                    // It cannot be looked for (the homeserver refuses the read): sent again,
                    // risking a double rather than losing the message.
                    Err(e) => {
                        tracing::warn!(%room, error = %e, "could not look for a send whose answer was lost; sending it again");
                    }
                }
            }
            // Marked until a clear answer comes: an attempt cut short by a caller's timeout
            // (the posting queues' and the connectors' limits drop it mid-request) stays
            // unanswered.
            self.unanswered.mark(key.clone());
            let sent = self
                .send_message_raw_once(room, as_user, txn_id, event_type, &content)
                .await;
            let answered = match &sent {
                Ok(_) => true,
                Err(e) => !unclear(e),
            };
            if answered {
                self.unanswered.clear(&key);
            }
            sent
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_answer_that_says_nothing_was_stored_is_clear() {
        let matrix = |status| ClientError::Matrix {
            status,
            errcode: "M_UNKNOWN".into(),
            message: String::new(),
            retry_after: None,
        };
        assert!(unclear(&matrix(500)) && unclear(&matrix(502)) && unclear(&matrix(504)));
        assert!(!unclear(&matrix(429)) && !unclear(&matrix(403)) && !unclear(&matrix(400)));
        assert!(unclear(&ClientError::Response("cut short".into())));
        assert!(!unclear(&ClientError::Build("bad".into())));
    }

    #[test]
    fn the_set_of_unanswered_sends_stays_bounded() {
        let unanswered = Unanswered::default();
        for i in 0..REMEMBERED * 2 + 1 {
            unanswered.mark(format!("k{i}"));
        }
        assert!(unanswered.0.lock().unwrap().len() <= REMEMBERED);
        assert!(unanswered.contains(&format!("k{}", REMEMBERED * 2)));
        unanswered.clear(&format!("k{}", REMEMBERED * 2));
        assert!(!unanswered.contains(&format!("k{}", REMEMBERED * 2)));
    }
}
