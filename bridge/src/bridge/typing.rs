//! Typing notifications, both ways, best effort.
//!
//! The homeserver pushes `m.typing` with each transaction (the registration asks for
//! ephemeral events). They are not recorded: a typing notice that arrives late is worse than
//! none, so they go through a small bounded queue that drops when full, to one task that
//! never holds up transactions or the inbox worker.
//!
//! - The visitor types in the conversation room → every responder holding the conversation
//!   sees it on their platform (Telegram: "typing…", renewed while it lasts; Matrix: the bot
//!   types in the relay room).
//! - A Matrix responder types in their relay room → their ghost types in the conversation room,
//!   which the widget shows. Telegram does not tell bots when a user types, so Telegram
//!   responders' typing cannot be shown.
//! - In a conversation someone started from a platform (issue 14), a responder typing where
//!   that is reported (Matrix, Discord) is shown to the initiator where they wrote, renewed as
//!   their platform needs; and an initiator typing on Discord is shown by their visitor ghost,
//!   and so to the responders (`sink.rs`). Matrix initiators' typing in their direct chat is
//!   not read yet.

use std::{collections::HashMap, sync::Arc, time::Duration};

use switchboard_appservice::ruma::{OwnedRoomId, OwnedUserId};
use tokio::{sync::mpsc, time::Instant};

use super::Bridge;
use crate::store::StoreError;

/// How often the typing task looks at what needs renewing or retrying.
const TICK: Duration = Duration::from_secs(1);
/// Stop renewing after this long even if no "stopped typing" came (a lost update must not
/// leave the responder watching "typing…" forever).
const RENEW_AT_MOST: Duration = Duration::from_secs(60);
/// Matrix responders type in their relay rooms, which the homeserver reports with every
/// other typing notice; only they are shown typing (by their ghost).
const MATRIX: &str = crate::connector::matrix::NAME;
/// How long a Matrix user is shown typing unless told otherwise.
const MATRIX_TYPING_TIMEOUT: Duration = Duration::from_secs(30);
/// Updates waiting for the typing task; beyond this they are dropped.
pub(super) const QUEUE: usize = 256;

/// One `m.typing` event: who is typing in a room now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TypingUpdate {
    pub room_id: String,
    pub user_ids: Vec<String>,
}

impl TypingUpdate {
    /// Reads an ephemeral event as pushed by the homeserver; `None` for anything that is not
    /// a well-formed `m.typing`.
    pub fn from_ephemeral(event: &serde_json::Value) -> Option<Self> {
        if event.get("type")?.as_str()? != "m.typing" {
            return None;
        }
        let room_id = event.get("room_id")?.as_str()?.to_owned();
        let user_ids = event
            .get("content")?
            .get("user_ids")?
            .as_array()?
            .iter()
            .filter_map(|u| u.as_str().map(str::to_owned))
            .collect();
        Some(Self { room_id, user_ids })
    }
}

/// What the typing task remembers between updates (owned by the task, not shared).
#[derive(Default)]
struct Typing {
    /// Conversation rooms whose visitor is typing: since when, when last shown, and when
    /// this instance learned it (store clock, ms; see [`Bridge::stopped_elsewhere`]).
    visitors: HashMap<String, (Instant, Instant, i64)>,
    /// Conversation rooms started from a platform in which a responder's ghost is typing:
    /// since when, and when last shown to the initiator.
    to_initiators: HashMap<String, (Instant, Instant)>,
    /// Relay rooms whose Matrix responder is typing: since when, and whether their ghost
    /// shows it yet. Right after an accept the ghost may not be in the room; it is tried
    /// again, since the homeserver sends no new notice while the responder keeps typing.
    responders: HashMap<String, (Instant, bool)>,
}

impl Bridge {
    /// Hands a typing update to the typing task; drops it if the task is behind.
    pub(super) fn queue_typing(&self, update: TypingUpdate) {
        if self.typing_tx.try_send(update).is_err() {
            tracing::debug!("typing update dropped");
        }
    }

    /// The typing task: runs until the bridge's sender is gone.
    pub(super) async fn run_typing(self: Arc<Self>, mut updates: mpsc::Receiver<TypingUpdate>) {
        let mut state = Typing::default();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                update = updates.recv() => {
                    let Some(update) = update else { return };
                    if let Err(e) = self.on_typing(&mut state, update).await {
                        tracing::warn!(error = %e, "typing update not handled");
                    }
                }
                _ = tick.tick() => {
                    if let Err(e) = self.on_tick(&mut state).await {
                        tracing::warn!(error = %e, "typing not renewed");
                    }
                }
            }
        }
    }

    /// Renews the visitor's "typing…" where the platform lets it lapse, and retries ghosts
    /// that could not show their responder typing yet.
    async fn on_tick(&self, state: &mut Typing) -> Result<(), StoreError> {
        state
            .visitors
            .retain(|_, (since, _, _)| since.elapsed() < RENEW_AT_MOST);
        let mut stopped = Vec::new();
        for (room, (_, _, learned)) in &state.visitors {
            if self.stopped_elsewhere(room, *learned).await? {
                stopped.push(room.clone());
            }
        }
        for room in stopped {
            state.visitors.remove(&room);
        }
        // Each holder's platform says how often its indicator must be sent again
        // (`Capabilities::typing_renewal`; Telegram's chat action lasts about five seconds).
        for (room, (_, shown, _)) in state.visitors.iter_mut() {
            if self
                .show_visitor_typing_as_due(room, shown.elapsed())
                .await?
            {
                *shown = Instant::now();
            }
        }
        // A Matrix responder's typing lapses like their own indicator does.
        state
            .to_initiators
            .retain(|_, (since, _)| since.elapsed() < MATRIX_TYPING_TIMEOUT);
        for (room, (_, shown)) in state.to_initiators.iter_mut() {
            if self
                .show_typing_to_initiator(room, true, Some(shown.elapsed()))
                .await?
            {
                *shown = Instant::now();
            }
        }
        state
            .responders
            .retain(|_, (since, _)| since.elapsed() < MATRIX_TYPING_TIMEOUT);
        for (relay, (_, shown)) in state.responders.iter_mut() {
            if !*shown {
                *shown = self.show_responder_typing(relay, true).await?;
            }
        }
        Ok(())
    }

    async fn on_typing(&self, state: &mut Typing, update: TypingUpdate) -> Result<(), StoreError> {
        let room = update.room_id.as_str();
        if let Some(conversation) = self.store.conversation(room).await? {
            let typing = update.user_ids.contains(&conversation.visitor_user_id);
            let was = state.visitors.contains_key(room);
            self.share_visitor_typing(room, typing).await;
            if typing && !was {
                state.visitors.insert(
                    room.to_owned(),
                    (Instant::now(), Instant::now(), self.now_ms()),
                );
            } else if !typing && was {
                state.visitors.remove(room);
            }
            if typing != was {
                self.show_visitor_typing(room, typing).await?;
            }
            return Ok(());
        }
        // A relay room: is the Matrix responder it belongs to typing?
        let Some(offer) = self.store.offer_by_handle(MATRIX, room).await? else {
            return Ok(());
        };
        let typing = update.user_ids.contains(&offer.address);
        if typing == state.responders.contains_key(room) {
            return Ok(());
        }
        let shown = self.show_responder_typing(room, typing).await?;
        if typing {
            state
                .responders
                .insert(room.to_owned(), (Instant::now(), shown));
        } else {
            state.responders.remove(room);
        }
        // Shown to an initiator straight away, not from the homeserver's echo of the ghost
        // typing: the homeserver does not send an appservice its own users' typing reliably
        // (Synapse 1.163 reported the room with nobody typing), and this is one hop less.
        let conversation = offer.room_id.as_str();
        if self.store.initiator_of(conversation).await?.is_some() {
            if typing {
                state
                    .to_initiators
                    .insert(conversation.to_owned(), (Instant::now(), Instant::now()));
            } else {
                state.to_initiators.remove(conversation);
            }
            self.show_typing_to_initiator(conversation, typing, None)
                .await?;
        }
        Ok(())
    }

    /// With other instances live, tells them whether the visitor of `room` is typing: the
    /// homeserver's pushes (and the visitor API's calls) are spread over the instances, so
    /// the update that says the visitor stopped may reach another instance than the one
    /// renewing "typing…" on the responder's platform. Best effort: typing is ephemeral.
    async fn share_visitor_typing(&self, room: &str, typing: bool) {
        if self.cluster.instances() < 2 {
            return;
        }
        if let Err(e) = self.store.put_visitor_typing(room, typing).await {
            tracing::debug!(error = %e, "a visitor's typing was not shared with the other instances");
        }
    }

    /// Whether another instance learned, after `learned` (store clock, ms), that the visitor
    /// of `room` stopped typing: then this one stops renewing it.
    async fn stopped_elsewhere(&self, room: &str, learned: i64) -> Result<bool, StoreError> {
        if self.cluster.instances() < 2 {
            return Ok(false);
        }
        Ok(matches!(
            self.store.visitor_typing(room).await?,
            Some((false, at)) if at >= learned
        ))
    }

    /// Shows (or stops) the ghost of the Matrix responder of `relay` typing in the
    /// conversation they hold. Returns whether the homeserver took it.
    async fn show_responder_typing(&self, relay: &str, typing: bool) -> Result<bool, StoreError> {
        let Some(offer) = self.store.offer_by_handle(MATRIX, relay).await? else {
            return Ok(true); // nothing to show it in, ever
        };
        let Some(assignment) = self
            .assignment_of(&offer.room_id, MATRIX, &offer.address)
            .await?
        else {
            return Ok(false); // not (yet, or any longer) theirs
        };
        let (Ok(room_id), Ok(ghost)) = (
            OwnedRoomId::try_from(offer.room_id.as_str()),
            OwnedUserId::try_from(assignment.ghost_user_id.as_str()),
        ) else {
            return Ok(true);
        };
        match self
            .client
            .set_typing(&room_id, &ghost, typing.then_some(MATRIX_TYPING_TIMEOUT))
            .await
        {
            Ok(()) => Ok(true),
            Err(e) => {
                // Typically: the ghost is still being brought into the room.
                tracing::debug!(error = %e, "ghost typing not shown yet");
                Ok(false)
            }
        }
    }

    /// Shows (or stops showing) the visitor typing to whoever holds the conversation.
    async fn show_visitor_typing(&self, room: &str, typing: bool) -> Result<(), StoreError> {
        self.send_visitor_typing(room, typing, None)
            .await
            .map(|_| ())
    }

    /// Shows the visitor still typing to the holders whose platform needs it renewed, once
    /// `shown_for` reaches the shortest renewal period among them. Returns whether it did.
    async fn show_visitor_typing_as_due(
        &self,
        room: &str,
        shown_for: Duration,
    ) -> Result<bool, StoreError> {
        self.send_visitor_typing(room, true, Some(shown_for)).await
    }

    /// With `renewing_after`, only to platforms that declare a renewal period, and only once
    /// the shortest of those has passed.
    async fn send_visitor_typing(
        &self,
        room: &str,
        typing: bool,
        renewing_after: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let mut holders = Vec::new();
        for a in self.store.active_assignments_for_room(room).await? {
            let Some((_, connector)) = self.remote(&a.platform) else {
                continue;
            };
            let capabilities = connector.capabilities();
            if capabilities.shares_room
                || (renewing_after.is_some() && capabilities.typing_renewal.is_none())
            {
                continue;
            }
            holders.push((a, connector.clone(), capabilities.typing_renewal));
        }
        if let Some(elapsed) = renewing_after {
            let due = holders.iter().filter_map(|(_, _, every)| *every).min();
            if due.is_none_or(|every| elapsed < every) {
                return Ok(false);
            }
        }
        for (a, connector, _) in &holders {
            let thread = self.thread_of(room, a).await?;
            if let Err(e) = connector
                .typing(&a.address, thread.as_deref(), typing)
                .await
            {
                tracing::debug!(platform = %a.platform, error = %e, "typing not shown");
            }
        }
        Ok(!holders.is_empty())
    }
}

impl Bridge {
    /// Shows (or stops showing) a responder typing to the initiator of `room`, where they
    /// wrote (nothing when no initiator started it). With `renewing_after`, only where their platform lets the indicator lapse, and
    /// only once its period has passed. Returns whether it was sent.
    pub(super) async fn show_typing_to_initiator(
        &self,
        room: &str,
        typing: bool,
        renewing_after: Option<Duration>,
    ) -> Result<bool, StoreError> {
        let Some(initiator) = self.store.initiator_of(room).await? else {
            return Ok(false);
        };
        let Some((_, connector)) = self.remote(&initiator.platform) else {
            return Ok(false);
        };
        if let Some(elapsed) = renewing_after {
            match connector.capabilities().typing_renewal {
                Some(every) if elapsed >= every => {}
                _ => return Ok(false),
            }
        }
        if let Err(e) = connector
            .typing(&initiator.address, initiator.thread.as_deref(), typing)
            .await
        {
            tracing::debug!(platform = %initiator.platform, error = %e, "typing not shown to the initiator");
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_typing_and_ignores_everything_else() {
        let event = json!({"type": "m.typing", "room_id": "!r:x",
                           "content": {"user_ids": ["@a:x", 7, "@b:x"]}});
        assert_eq!(
            TypingUpdate::from_ephemeral(&event),
            Some(TypingUpdate {
                room_id: "!r:x".into(),
                user_ids: vec!["@a:x".into(), "@b:x".into()]
            })
        );
        let nobody = json!({"type": "m.typing", "room_id": "!r:x", "content": {"user_ids": []}});
        assert_eq!(
            TypingUpdate::from_ephemeral(&nobody).map(|u| u.user_ids.len()),
            Some(0)
        );
        for other in [
            json!({"type": "m.receipt", "room_id": "!r:x", "content": {}}),
            json!({"type": "m.typing", "content": {"user_ids": []}}),
            json!({"type": "m.typing", "room_id": "!r:x"}),
            json!("not an object"),
        ] {
            assert_eq!(TypingUpdate::from_ephemeral(&other), None, "{other}");
        }
    }
}
