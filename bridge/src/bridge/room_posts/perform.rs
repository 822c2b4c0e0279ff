//! One post carried out at the homeserver: a single request each attempt (the queue in
//! `room_posts.rs` does the retrying), the event it became mapped to the platform's message,
//! and a responder's file fetched from their platform and uploaded first.

use std::time::Duration;

use switchboard_appservice::{
    ClientError,
    ruma::{
        OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId, UInt,
        events::room::{
            ImageInfo,
            message::{
                FileInfo, FileMessageEventContent, ImageMessageEventContent, MessageType,
                ReplacementMetadata, RoomMessageEventContent,
            },
        },
    },
};

use super::{PostError, RemoteRef, RoomPost, provisional_id};
use crate::{
    bridge::Bridge,
    connector::{ConnectorError, FileKind, RemoteFile},
    store::RoomPostRow,
};

/// One post may take this long before it counts as a failure to retry: a homeserver that
/// hangs must not hold the worker for the client's whole retry budget.
const POST_TIMEOUT: Duration = Duration::from_secs(20);

impl Bridge {
    pub(super) async fn post_row(&self, row: &RoomPostRow) -> Result<(), PostError> {
        let op: RoomPost = serde_json::from_str(&row.op_json)
            .map_err(|e| PostError::Never(format!("undecodable post: {e}")))?;
        let room = OwnedRoomId::try_from(row.room_id.as_str())
            .map_err(|e| PostError::Never(format!("bad room ID: {e}")))?;
        match tokio::time::timeout(POST_TIMEOUT, self.perform(&room, &row.txn_id, op)).await {
            Ok(result) => result,
            Err(_) => Err(PostError::RetryLater(format!(
                "no answer from the homeserver within {POST_TIMEOUT:?}"
            ))),
        }
    }

    async fn perform(&self, room: &RoomId, txn: &str, op: RoomPost) -> Result<(), PostError> {
        // Each attempt is a single request: the queue does the retrying, with its own backoff,
        // so the worker never sits in the client's retry loop while the homeserver is away.
        let client = &self.post_client;
        match op {
            RoomPost::Message {
                sender,
                content,
                remote,
            } => {
                let sender = sender.as_deref().map(user_id).transpose()?;
                let event = client
                    .send_message_raw(room, sender.as_deref(), txn, "m.room.message", &content)
                    .await?;
                if remote.is_some() {
                    self.store
                        .confirm_message(&provisional_id(room.as_str(), txn), event.as_str())
                        .await?;
                }
                self.map_posted(room, remote.as_ref(), &event).await
            }
            RoomPost::Edit {
                sender,
                remote,
                body,
                formatted_body,
            } => {
                let Some((_, Some(original))) = self
                    .store
                    .remote_message(&remote.platform, &remote.address, &remote.message_id)
                    .await?
                else {
                    return Err(PostError::Never(
                        "the edited message was never posted".into(),
                    ));
                };
                let original = OwnedEventId::try_from(original.as_str())
                    .map_err(|e| PostError::Never(format!("bad original event ID: {e}")))?;
                let content = match formatted_body {
                    Some(html) => RoomMessageEventContent::text_html(
                        body,
                        crate::format::sanitise_matrix_html(&html),
                    ),
                    None => RoomMessageEventContent::text_plain(body),
                }
                .make_replacement(ReplacementMetadata::new(original, None));
                client
                    .send_message(room, Some(&user_id(&sender)?), txn, &content)
                    .await?;
                Ok(())
            }
            RoomPost::File {
                sender,
                remote,
                file,
                caption,
            } => {
                let ghost = user_id(&sender)?;
                let content = self
                    .file_content(&remote.platform, &ghost, &file, &caption)
                    .await?;
                let event = client
                    .send_message(room, Some(&ghost), txn, &content)
                    .await?;
                self.store
                    .confirm_message(&provisional_id(room.as_str(), txn), event.as_str())
                    .await?;
                self.map_posted(room, Some(&remote), &event).await
            }
            RoomPost::Redact { sender, remote } => {
                self.redact_posted(room, txn, &sender, &remote).await
            }
            RoomPost::State {
                event_type,
                state_key,
                content,
            } => {
                client
                    .send_state_raw(room, &event_type, &state_key, &content)
                    .await?;
                Ok(())
            }
            RoomPost::Join { user, display_name } => {
                let ghost = user_id(&user)?;
                client.register_ghost(ghost.localpart()).await?;
                client.set_displayname(&ghost, &display_name).await?;
                client.invite(room, &ghost, None).await?;
                client.join(room, &ghost).await?;
                Ok(())
            }
            RoomPost::Leave { user } => match client.leave(room, &user_id(&user)?).await {
                // Not (or no longer) in the room: what leaving wanted is already so.
                Err(ClientError::Matrix { status: 403, .. }) => Ok(()),
                other => Ok(other?),
            },
            RoomPost::Kick { user, reason } => {
                match client.kick(room, &user_id(&user)?, &reason).await {
                    // They left already: nothing to remove them from.
                    Err(ClientError::Matrix { status: 403, .. }) => Ok(()),
                    other => Ok(other?),
                }
            }
        }
    }

    async fn map_posted(
        &self,
        room: &RoomId,
        remote: Option<&RemoteRef>,
        event: &OwnedEventId,
    ) -> Result<(), PostError> {
        if let Some(r) = remote {
            self.store
                .map_remote_message(
                    &r.platform,
                    &r.address,
                    &r.message_id,
                    room.as_str(),
                    Some(event.as_str()),
                )
                .await?;
        }
        Ok(())
    }

    /// Fetches a responder's file from their platform and uploads it to the media repository
    /// as their ghost; the message shows it as an image or a file.
    async fn file_content(
        &self,
        platform: &str,
        ghost: &OwnedUserId,
        file: &RemoteFile,
        caption: &str,
    ) -> Result<RoomMessageEventContent, PostError> {
        let (_, connector) = self
            .remote(platform)
            .ok_or_else(|| PostError::Never(format!("no {platform} connector")))?;
        let attachment = connector.fetch_file(file).await.map_err(|e| match e {
            ConnectorError::Permanent(e) => PostError::Never(e),
            other => PostError::RetryLater(other.to_string()),
        })?;
        let mimetype = attachment
            .mimetype
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let size = attachment.bytes.len();
        let mxc: OwnedMxcUri = self
            .post_client
            .upload_media(
                Some(ghost),
                &mimetype,
                &attachment.filename,
                attachment.bytes,
            )
            .await?;
        let body = if caption.is_empty() {
            attachment.filename.clone()
        } else {
            caption.to_owned()
        };
        let msgtype = match attachment.kind {
            FileKind::Image => {
                let mut info = ImageInfo::new();
                info.mimetype = Some(mimetype);
                info.size = UInt::new(size as u64);
                let mut image = ImageMessageEventContent::plain(body, mxc);
                image.filename = Some(attachment.filename);
                image.info = Some(Box::new(info));
                MessageType::Image(image)
            }
            FileKind::File => {
                let mut info = FileInfo::new();
                info.mimetype = Some(mimetype);
                info.size = UInt::new(size as u64);
                let mut f = FileMessageEventContent::plain(body, mxc);
                f.filename = Some(attachment.filename);
                f.info = Some(Box::new(info));
                MessageType::File(f)
            }
        };
        Ok(RoomMessageEventContent::new(msgtype))
    }
}

pub(in crate::bridge) fn user_id(s: &str) -> Result<OwnedUserId, PostError> {
    OwnedUserId::try_from(s).map_err(|e| PostError::Never(format!("bad user ID {s:?}: {e}")))
}
