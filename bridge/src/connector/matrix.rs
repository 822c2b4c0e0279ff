//! Responders who use a Matrix client. Each conversation offered to one gets its own relay
//! room between them and the bot: the visitor's room is never shared with them, so they never
//! see the visitor's Matrix ID, and the visitor sees their ghost (with its pseudonym), never
//! their own account.
//!
//! The relay room is the offer's handle: joining it accepts, leaving it declines. What the
//! responder writes there is picked up from the homeserver's transactions by the bridge.

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use switchboard_appservice::{
    ClientError, HomeserverClient,
    ruma::{
        OwnedRoomId, OwnedUserId,
        api::client::room::{Visibility, create_room},
        events::room::message::{
            FileMessageEventContent, ImageMessageEventContent, MessageType, RoomMessageEventContent,
        },
    },
};
use tokio::sync::watch;

use super::{
    Attachment, Capabilities, Connector, ConnectorError, Delivery, FileKind, Offer, Platform,
    RemoteSink,
};

pub struct MatrixConnector {
    client: Arc<HomeserverClient>,
    /// The same connection without the client's own retries, for deliveries: the outbox
    /// retries them with its own backoff, so a homeserver outage does not hold the worker in
    /// the client's retry loop on every attempt.
    once: HomeserverClient,
}

impl MatrixConnector {
    pub fn new(client: Arc<HomeserverClient>) -> Self {
        let once = client.without_retries();
        Self { client, once }
    }

    /// One visitor message into the relay room as the bot, once: the outbox retries it.
    async fn post_to_relay_room(
        &self,
        room: &OwnedRoomId,
        txn: &str,
        content: &RoomMessageEventContent,
    ) -> Result<String, ConnectorError> {
        let event = self
            .once
            .send_message(room, None, txn, content)
            .await
            .map_err(connector_error)?;
        Ok(event.to_string())
    }

    fn relay_room(delivery: &Delivery) -> Result<OwnedRoomId, ConnectorError> {
        let handle = delivery.thread.as_deref().ok_or_else(|| {
            ConnectorError::Permanent("no relay room for this conversation".into())
        })?;
        OwnedRoomId::try_from(handle)
            .map_err(|e| ConnectorError::Permanent(format!("bad relay room {handle:?}: {e}")))
    }
}

fn connector_error(e: ClientError) -> ConnectorError {
    if e.is_transient() {
        ConnectorError::Transient(e.to_string())
    } else {
        ConnectorError::Permanent(e.to_string())
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[async_trait]
impl Connector for MatrixConnector {
    fn platform(&self) -> Platform {
        Platform::Matrix
    }

    /// The bot is exempt from the homeserver's rate limits (`rate_limited: false` in the
    /// registration), so nothing is paced.
    fn capabilities(&self) -> Capabilities {
        Capabilities {
            unreachable_hands_over: false,
            ..Capabilities::unpaced('!')
        }
    }

    /// Creates the relay room, invites the responder and explains the offer in it. The invite
    /// shows the topic and alias as the room name.
    async fn offer(&self, offer: &Offer, address: &str) -> Result<Option<String>, ConnectorError> {
        let user = OwnedUserId::try_from(address).map_err(|e| {
            ConnectorError::Permanent(format!("{address:?} is not a Matrix user ID: {e}"))
        })?;
        let mut request = create_room::v3::Request::new();
        request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        request.visibility = Visibility::Private;
        request.name = Some(format!("{} · {}", offer.topic_name, offer.visitor_alias));
        request.invite = vec![user];
        // Not retried by the client: a lost answer would leave a second room. The offer as a
        // whole is retried by routing instead.
        let room = self
            .client
            .create_room(request)
            .await
            .map_err(connector_error)?;
        let mut text = format!(
            "New conversation about {} from {}.",
            offer.topic_name, offer.visitor_alias
        );
        let mut html = format!(
            "<b>New conversation</b> about <b>{}</b> from {}.",
            escape(&offer.topic_name),
            escape(&offer.visitor_alias)
        );
        if let Some(language) = &offer.language {
            text.push_str(&format!(" Language: {language}."));
            html.push_str(&format!(" Language: {}.", escape(language)));
        }
        if let Some(summary) = &offer.summary {
            text.push_str(&format!("\n\n{summary}"));
            html.push_str(&format!(
                "<blockquote>{}</blockquote>",
                escape(summary).replace('\n', "<br>")
            ));
        } else if let Some(first) = &offer.first_message {
            text.push_str(&format!("\n\n> {first}"));
            html.push_str(&format!("<blockquote>{}</blockquote>", escape(first)));
        }
        text.push_str("\n\nJoin this room to accept the conversation; leave it to decline.");
        html.push_str("<p>Join this room to accept the conversation; leave it to decline.</p>");
        let notice = RoomMessageEventContent::notice_html(text, html);
        self.client
            .send_message(&room, None, "switchboard-offer", &notice)
            .await
            .map_err(connector_error)?;
        Ok(Some(room.to_string()))
    }

    /// Withdraws the invite, or removes a responder who joined too late, with the reason
    /// shown in their client.
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
        match self.client.kick(&room, &user, why).await {
            Ok(()) => Ok(()),
            // They left already: nothing to withdraw.
            Err(ClientError::Matrix { status: 403, .. }) => Ok(()),
            Err(e) => Err(connector_error(e)),
        }
    }

    /// The bot types in the relay room while the visitor types (the relay room is where the
    /// visitor's words appear for this responder).
    async fn typing(
        &self,
        _address: &str,
        thread: Option<&str>,
        typing: bool,
    ) -> Result<(), ConnectorError> {
        let Some(room) = thread.and_then(|t| OwnedRoomId::try_from(t).ok()) else {
            return Ok(());
        };
        let timeout = typing.then_some(Duration::from_secs(30));
        self.client
            .set_typing(&room, self.client.bot(), timeout)
            .await
            .map_err(connector_error)
    }

    /// One part: a text message's event content as JSON, headed by the visitor's alias; a
    /// file's caption.
    fn render(&self, delivery: &Delivery) -> Vec<String> {
        if let Some(media) = &delivery.media {
            return vec![format!("{}: {}", delivery.visitor_alias, media.filename)];
        }
        let body = format!("{}: {}", delivery.visitor_alias, delivery.body);
        let html = match &delivery.formatted_body {
            Some(html) => format!(
                "<b>{}</b>: {}",
                escape(&delivery.visitor_alias),
                crate::format::sanitise_matrix_html(html)
            ),
            None => format!(
                "<b>{}</b>: {}",
                escape(&delivery.visitor_alias),
                escape(&delivery.body)
            ),
        };
        let content = RoomMessageEventContent::text_html(body, html);
        vec![serde_json::to_string(&content).expect("event content always serialises")]
    }

    /// Posts the visitor's message into the relay room.
    async fn deliver(
        &self,
        delivery: &Delivery,
        index: usize,
        part: &str,
        _address: &str,
    ) -> Result<String, ConnectorError> {
        let room = Self::relay_room(delivery)?;
        let content: RoomMessageEventContent = serde_json::from_str(part)
            .map_err(|e| ConnectorError::Permanent(format!("unreadable rendered message: {e}")))?;
        // Keyed by the visitor's event (and the part): a retried delivery is answered with the
        // first event. Part 0 keeps the key messages had before they were split into parts.
        let txn = match index {
            0 => format!("relay-{}", delivery.event_id),
            n => format!("relay-{}-{n}", delivery.event_id),
        };
        self.post_to_relay_room(&room, &txn, &content).await
    }

    async fn deliver_file(
        &self,
        delivery: &Delivery,
        caption: &str,
        file: Attachment,
        _address: &str,
    ) -> Result<String, ConnectorError> {
        let room = Self::relay_room(delivery)?;
        let mimetype = file
            .mimetype
            .clone()
            .unwrap_or_else(|| "application/octet-stream".into());
        let mxc = self
            .once
            .upload_media(None, &mimetype, &file.filename, file.bytes)
            .await
            .map_err(connector_error)?;
        let caption = caption.to_owned();
        let msgtype = match file.kind {
            FileKind::Image => MessageType::Image(ImageMessageEventContent::plain(caption, mxc)),
            FileKind::File => MessageType::File(FileMessageEventContent::plain(caption, mxc)),
        };
        let content = RoomMessageEventContent::new(msgtype);
        let txn = format!("relay-file-{}", delivery.event_id);
        self.post_to_relay_room(&room, &txn, &content).await
    }

    /// A notice about a conversation goes into its relay room, as the bot. Notices about none
    /// (answers to `!` commands) are posted by the bridge into the direct chat they came
    /// from, so there is nothing to do here without a relay room.
    async fn notify(
        &self,
        _address: &str,
        thread: Option<&str>,
        text: &str,
    ) -> Result<Option<String>, ConnectorError> {
        let Some(room) = thread.and_then(|t| OwnedRoomId::try_from(t).ok()) else {
            return Ok(None);
        };
        let content = RoomMessageEventContent::notice_plain(text);
        // Fresh per notice (the same text may rightly be sent twice); the client's own retries
        // reuse it, so they cannot show it twice.
        let txn = format!("notice-{:016x}", rand::random::<u64>());
        let event = self
            .client
            .send_message(&room, None, &txn, &content)
            .await
            .map_err(connector_error)?;
        Ok(Some(event.to_string()))
    }

    /// The relay room is the conversation's place for this responder: once it is no longer
    /// theirs they are removed from it, with the reason shown in their client, so they do not
    /// write on into a room nobody reads.
    async fn conversation_closed(
        &self,
        address: &str,
        thread: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        self.close_offer(address, thread, why).await
    }

    /// Nothing to receive: the homeserver's transactions carry Matrix responders' messages.
    async fn run(self: Arc<Self>, _sink: Arc<dyn RemoteSink>, _shutdown: watch::Receiver<bool>) {}
}
