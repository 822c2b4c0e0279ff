//! Edits and deletions after the fact, both ways.
//!
//! A visitor's edit or redaction of a message already relayed reaches the responders holding
//! the conversation through the outbox, in order with the visitor's other messages (an edit
//! never overtakes the message it edits): where the platform can change what it was sent
//! (`Capabilities::revises_deliveries`) the messages it became are edited or deleted in place;
//! elsewhere the edit arrives as a new message marked as edited, a deletion as a short note.
//! A responder's deletion on their platform redacts what their ghost posted.

use switchboard_appservice::ruma::{OwnedEventId, RoomId};

use super::{
    Bridge, VisitorChange,
    outbox::RowOutcome,
    room_posts::{PostError, RemoteRef, RoomPost},
};
use crate::{
    connector::{Connector, Delivery, Revision},
    conversation::Conversation,
    store::{OutboxRow, StoreError},
};

/// A Discord message with several files is recorded as one message per file, the second
/// and later keyed `<id>.<n>` (see the Discord connector); Discord allows ten files.
const MAX_FILES_PER_MESSAGE: usize = 10;

impl Delivery {
    /// What a visitor's change becomes on a platform that cannot change what it sent: the
    /// edited text marked as such, or a note that a message was deleted.
    pub(super) fn into_new_message(mut self) -> Delivery {
        match self.revises.take() {
            Some(Revision::Edit { .. }) => {
                self.body = format!("(edited) {}", self.body);
                self.formatted_body = self
                    .formatted_body
                    .map(|html| format!("<i>(edited)</i> {html}"));
            }
            Some(Revision::Delete { .. }) => {
                self.body = "(deleted an earlier message)".to_owned();
                self.formatted_body = None;
            }
            None => {}
        }
        self
    }
}

impl Bridge {
    /// The visitor edited or deleted one of their messages: the transcript follows, and
    /// every responder holding the conversation elsewhere gets the change. A change to
    /// anything but the visitor's own message in this conversation is ignored (a client may
    /// send an `m.replace` naming any event).
    pub(super) async fn relay_visitor_change(
        &self,
        conversation: &Conversation,
        change: VisitorChange,
    ) -> Result<(), StoreError> {
        let of = change.revision.of();
        let theirs = self
            .store
            .message_author(of)
            .await?
            .is_some_and(|(room, sender)| {
                room == conversation.room_id && sender == conversation.visitor_user_id
            });
        if !theirs {
            tracing::debug!("a change to a message that is not the visitor's own; ignored");
            return Ok(());
        }
        let text = match change.revision {
            Revision::Edit { .. } => Some((change.body.as_str(), change.formatted_body.as_deref())),
            Revision::Delete { .. } => None,
        };
        self.store.revise_message(of, text).await?;
        self.relay_to_responders(
            conversation,
            &change.event_id,
            &change.body,
            change.formatted_body.as_deref(),
            None,
            Some(change.revision.clone()),
        )
        .await
    }

    /// Carries a visitor's change to the messages `sent_before` (what the original became
    /// for this responder, in order) on a platform that can change them.
    ///
    /// An edit is rendered like any message. Its part k replaces message k; parts beyond
    /// the original's are sent as new messages, mapped to the original so a later edit finds
    /// them; messages beyond the edit's parts are deleted. A deletion deletes them all. Each
    /// step takes its paced slot and is recorded as it is done (an edited or new part moves
    /// `parts_sent`; a deleted message leaves the map), so a retry or a restart resumes
    /// where it stopped. Editing or deleting twice is harmless; a new part is sent twice
    /// only if we crash between Discord's answer and our record, as for any message.
    pub(super) async fn deliver_revision(
        &self,
        row: &OutboxRow,
        delivery: &Delivery,
        connector: &dyn Connector,
        sent_before: Vec<String>,
    ) -> Result<RowOutcome, StoreError> {
        let platform = connector.platform();
        let caps = connector.capabilities();
        let revision = delivery
            .revises
            .as_ref()
            .expect("only a revision comes here");
        // Parts are recorded against the original, so a later change finds them.
        let as_original = OutboxRow {
            event_id: revision.of().to_owned(),
            ..row.clone()
        };
        let keep = match revision {
            Revision::Delete { .. } => 0,
            Revision::Edit { .. } => {
                let parts = self.parts_of(row, connector, delivery).await?;
                let mut done = row.parts_sent.max(0) as usize;
                while done < parts.len() {
                    if let Err(at) = self.paced_slot(platform, &row.address, &caps).await {
                        return Ok(RowOutcome::Later(at));
                    }
                    let part = &parts[done];
                    let result = match sent_before.get(done) {
                        Some(id) => connector
                            .edit_delivered(delivery, id, part, &row.address)
                            .await
                            .map(|()| id.clone()),
                        None => connector.deliver(delivery, done, part, &row.address).await,
                    };
                    match result {
                        Ok(id) => {
                            super::outbox::record_sent(|| {
                                self.store.outbox_part_sent(&as_original, done as i64, &id)
                            })
                            .await?;
                            done += 1;
                        }
                        Err(e) => {
                            return self.row_failed(row, platform, &caps, e, done, false).await;
                        }
                    }
                }
                parts.len()
            }
        };
        // Read again: what a pass before a restart deleted is gone from the map already, and
        // parts sent as new messages above are in it now.
        let mut now_sent = self
            .store
            .messages_sent_for(&row.platform, &row.address, &row.room_id, revision.of())
            .await?;
        let surplus = now_sent.split_off(keep.min(now_sent.len()));
        for id in surplus {
            if let Err(at) = self.paced_slot(platform, &row.address, &caps).await {
                return Ok(RowOutcome::Later(at));
            }
            if let Err(e) = connector
                .delete_delivered(delivery, &id, &row.address)
                .await
            {
                let step = row.parts_sent.max(0) as usize;
                return self.row_failed(row, platform, &caps, e, step, false).await;
            }
            self.store
                .forget_remote_message(&row.platform, &row.address, &id)
                .await?;
        }
        self.store.outbox_done(row.seq).await?;
        tracing::debug!(platform = %row.platform, "visitor's change carried to the responder");
        Ok(RowOutcome::Delivered)
    }

    /// A responder deleted a message on their platform: the event their ghost posted for it
    /// is redacted (and so are the events of the other files it carried), while they still
    /// hold the conversation. Only their own messages count: a deleted copy of a visitor's
    /// message changes nothing in the room.
    pub(super) async fn delete_from_remote(
        &self,
        platform: &str,
        address: &str,
        message_id: &str,
    ) -> Result<(), StoreError> {
        let Some((room, assignment)) = self.held_message(platform, address, message_id).await?
        else {
            return Ok(());
        };
        let ids = std::iter::once(message_id.to_owned())
            .chain((1..MAX_FILES_PER_MESSAGE).map(|n| format!("{message_id}.{n}")));
        for id in ids {
            let Some((_, event)) = self.store.remote_message(platform, address, &id).await? else {
                break;
            };
            if let Some(event) = &event {
                let ghosts = self
                    .store
                    .message_author(event)
                    .await?
                    .is_some_and(|(_, sender)| sender == assignment.ghost_user_id);
                if !ghosts {
                    continue; // a visitor's message relayed to them, not theirs to take back
                }
            }
            let txn = format!("{platform}-{address}-{id}-delete");
            self.post(
                &room,
                &txn,
                RoomPost::Redact {
                    sender: assignment.ghost_user_id.clone(),
                    remote: RemoteRef {
                        platform: platform.to_owned(),
                        address: address.to_owned(),
                        message_id: id,
                    },
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Posts a queued [`RoomPost::Redact`]: the event the remote message became (looked up
    /// now, since it is posted by an earlier row of the same room) is redacted by the ghost,
    /// and the transcript forgets its text.
    pub(super) async fn redact_posted(
        &self,
        room: &RoomId,
        txn: &str,
        sender: &str,
        remote: &RemoteRef,
    ) -> Result<(), PostError> {
        let Some((_, Some(event))) = self
            .store
            .remote_message(&remote.platform, &remote.address, &remote.message_id)
            .await?
        else {
            return Err(PostError::Never(
                "the deleted message was never posted".into(),
            ));
        };
        let event_id = OwnedEventId::try_from(event.as_str())
            .map_err(|e| PostError::Never(format!("bad event ID: {e}")))?;
        let ghost = super::room_posts::user_id(sender)?;
        self.post_client
            .redact(room, &ghost, &event_id, txn, Some("deleted by its author"))
            .await?;
        self.store.revise_message(&event, None).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::bridge::visitor_change_of;

    fn delivery(revises: Option<Revision>) -> Delivery {
        Delivery {
            room_id: "!r:x".into(),
            event_id: "$change".into(),
            visitor_alias: "Visitor 7F3A".into(),
            body: "the red one".into(),
            formatted_body: Some("the <b>red</b> one".into()),
            media: None,
            thread: None,
            revises,
            to_initiator: false,
        }
    }

    #[test]
    fn an_edit_takes_its_text_from_the_new_content_not_the_fallback() {
        let change = visitor_change_of(&json!({
            "type": "m.room.message", "event_id": "$e2",
            "content": {
                "msgtype": "m.text", "body": "* the red one",
                "m.new_content": {"msgtype": "m.text", "body": "the red one",
                                  "format": "org.matrix.custom.html",
                                  "formatted_body": "the <b>red</b> one"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$e1"}
            }
        }))
        .unwrap();
        assert_eq!(change.event_id, "$e2");
        assert_eq!(change.revision, Revision::Edit { of: "$e1".into() });
        assert_eq!(change.body, "the red one");
        assert_eq!(change.formatted_body.as_deref(), Some("the <b>red</b> one"));
    }

    #[test]
    fn a_redaction_names_its_target_at_the_top_or_in_the_content() {
        for event in [
            json!({"type": "m.room.redaction", "event_id": "$r", "redacts": "$e1", "content": {}}),
            json!({"type": "m.room.redaction", "event_id": "$r", "content": {"redacts": "$e1"}}),
        ] {
            let change = visitor_change_of(&event).unwrap();
            assert_eq!(change.revision, Revision::Delete { of: "$e1".into() });
        }
    }

    #[test]
    fn plain_messages_replies_and_empty_edits_are_no_changes() {
        for event in [
            json!({"type": "m.room.message", "event_id": "$e", "content": {"msgtype": "m.text", "body": "hi"}}),
            json!({"type": "m.room.message", "event_id": "$e", "content": {"msgtype": "m.text", "body": "hi",
                   "m.relates_to": {"m.in_reply_to": {"event_id": "$x"}}}}),
            json!({"type": "m.room.message", "event_id": "$e", "content": {"msgtype": "m.text", "body": "* ",
                   "m.new_content": {"msgtype": "m.text", "body": " "},
                   "m.relates_to": {"rel_type": "m.replace", "event_id": "$x"}}}),
            json!({"type": "m.room.redaction", "event_id": "$r", "content": {}}),
        ] {
            assert_eq!(visitor_change_of(&event), None, "{event}");
        }
    }

    #[test]
    fn where_nothing_can_be_changed_an_edit_is_marked_and_a_deletion_noted() {
        let edit = delivery(Some(Revision::Edit { of: "$e1".into() })).into_new_message();
        assert_eq!(edit.revises, None);
        assert_eq!(edit.body, "(edited) the red one");
        assert_eq!(
            edit.formatted_body.as_deref(),
            Some("<i>(edited)</i> the <b>red</b> one")
        );
        let deletion = delivery(Some(Revision::Delete { of: "$e1".into() })).into_new_message();
        assert_eq!(deletion.body, "(deleted an earlier message)");
        assert_eq!(deletion.formatted_body, None);
        assert_eq!(delivery(None).into_new_message().body, "the red one");
    }
}
