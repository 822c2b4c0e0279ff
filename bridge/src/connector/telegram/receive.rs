//! Receiving from Telegram: long polling (`getUpdates`) while this instance leads, or the
//! webhook Telegram posts to. Every update is recorded through the [`RemoteSink`] before it is
//! confirmed to Telegram (the next poll's offset, or the webhook's 200), so a crash or restart
//! neither loses nor doubles one.

use std::{sync::Arc, time::Duration};

use teloxide::{
    RequestError,
    payloads::{GetUpdates, GetUpdatesSetters, SetWebhookSetters},
    prelude::Requester,
    requests::JsonRequest,
    types::{AllowedUpdate, MaybeInaccessibleMessage, Message, Update, UpdateKind},
};
use tokio::sync::watch;

use super::{
    COMMAND_PREFIX, SPEC, TelegramConnector, WEBHOOK_PATH, Webhook, format, raw_update, reqwest_url,
};
use crate::cluster::Term;
use crate::connector::{FileKind, RemoteEvent, RemoteFile, RemoteSink};

impl TelegramConnector {
    const ALLOWED: [AllowedUpdate; 3] = [
        AllowedUpdate::Message,
        AllowedUpdate::EditedMessage,
        AllowedUpdate::CallbackQuery,
    ];

    /// Records every event of one update; true when all of them are stored.
    async fn record_update(&self, update: &Update, sink: &dyn RemoteSink) -> bool {
        let key = update.id.0.to_string();
        for (i, event) in Self::events_of(update).iter().enumerate() {
            if let Err(e) = sink
                .record_remote(SPEC.platform(), &format!("{key}.{i}"), event)
                .await
            {
                tracing::error!(error = %e, "telegram: could not record an update; it will come again");
                return false;
            }
        }
        tracing::debug!(update_id = update.id.0, "telegram: update recorded");
        if let UpdateKind::CallbackQuery(q) = &update.kind {
            // Stops the button's spinner; the outcome arrives as a message.
            if let Err(e) = self.bot.answer_callback_query(q.id.clone()).await {
                tracing::debug!(error = %self.redact.clean(e), "telegram: answerCallbackQuery failed");
            }
        }
        true
    }

    /// An update nothing could be made of: logged, and recorded as [`RemoteEvent::Unreadable`]
    /// when it names a chat, so the bridge tells the sender (a reply is never lost without a
    /// word to anyone). True when it may be confirmed to Telegram: it is recorded, or there is
    /// nothing to record; it would only come back just as unreadable.
    async fn record_unreadable(
        &self,
        unreadable: raw_update::Unreadable,
        sink: &dyn RemoteSink,
    ) -> bool {
        tracing::error!(
            update_id = unreadable.update_id,
            chat = unreadable.chat.map(|c| c.0),
            reason = %unreadable.reason,
            "telegram: an update could not be read and was skipped"
        );
        let (Some(id), Some(chat)) = (unreadable.update_id, unreadable.chat) else {
            return true;
        };
        let event = RemoteEvent::Unreadable {
            address: chat.0.to_string(),
        };
        match sink
            .record_remote(SPEC.platform(), &format!("{id}.unreadable"), &event)
            .await
        {
            Ok(()) => true,
            Err(e) => {
                tracing::error!(error = %e, "telegram: could not record an unreadable update; it will come again");
                false
            }
        }
    }

    /// Webhook mode's `run`: (re)registers the webhook until Telegram accepts it, then waits.
    async fn register_webhook(&self, webhook: &Webhook, mut shutdown: watch::Receiver<bool>) {
        let url = match reqwest_url(&webhook.url) {
            Ok(u) => u,
            Err(e) => {
                tracing::error!(error = %e, "telegram: webhook URL is invalid");
                return;
            }
        };
        let mut backoff = Duration::from_millis(500);
        loop {
            let request = self
                .bot
                .set_webhook(url.clone())
                .secret_token(webhook.secret.clone())
                .allowed_updates(Self::ALLOWED);
            match request.await {
                Ok(_) => {
                    tracing::info!("telegram: webhook registered");
                    self.report(Ok(()));
                    break;
                }
                Err(e) => {
                    self.report(Err(&e));
                    tracing::warn!(error = %self.redact.clean(e), "telegram: setWebhook failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.changed() => return,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(60));
                }
            }
        }
        let _ = shutdown.wait_for(|stop| *stop).await;
    }

    /// Turns one update into the events it carries (none for kinds we do not handle).
    fn events_of(update: &Update) -> Vec<RemoteEvent> {
        match &update.kind {
            UpdateKind::Message(m) => message_event(m).into_iter().collect(),
            UpdateKind::EditedMessage(m) => {
                let Some(text) = m.text() else { return vec![] };
                let (body, formatted_body) =
                    format::telegram_to_matrix(text, m.entities().unwrap_or_default());
                vec![RemoteEvent::Edit {
                    address: m.chat.id.0.to_string(),
                    message_id: m.id.0.to_string(),
                    body,
                    formatted_body,
                }]
            }
            UpdateKind::CallbackQuery(q) => {
                let address = match &q.message {
                    Some(MaybeInaccessibleMessage::Regular(m)) => m.chat.id.0.to_string(),
                    Some(MaybeInaccessibleMessage::Inaccessible(m)) => m.chat.id.0.to_string(),
                    None => q.from.id.0.to_string(),
                };
                let data = q.data.as_deref().unwrap_or_default();
                let (action, id) = data.split_once(':').unwrap_or((data, ""));
                match (action, id.parse::<i64>()) {
                    ("accept", Ok(offer_id)) => vec![RemoteEvent::Accept {
                        offer_id,
                        address,
                        display_name: q.from.first_name.clone(),
                    }],
                    ("decline", Ok(offer_id)) => vec![RemoteEvent::Decline { offer_id, address }],
                    ("topic", _) if !id.is_empty() => vec![RemoteEvent::TopicChosen {
                        address,
                        topic: id.to_owned(),
                        thread: None,
                        language: q.from.language_code.clone(),
                    }],
                    _ => vec![],
                }
            }
            _ => vec![],
        }
    }

    /// Long polling (or registering the webhook), while this instance leads: Telegram ends
    /// one of two concurrent `getUpdates` with 409.
    pub(super) async fn receive(self: Arc<Self>, sink: Arc<dyn RemoteSink>, term: Term) {
        let mut shutdown = term.ended();
        if let Some(webhook) = &self.webhook {
            return self.register_webhook(webhook, shutdown).await;
        }
        // Long polling and webhooks exclude each other; make sure no webhook is left behind.
        match self.bot.delete_webhook().await {
            Ok(_) => self.report(Ok(())),
            Err(e) => {
                self.report(Err(&e));
                tracing::warn!(error = %self.redact.clean(e), "telegram: deleteWebhook failed");
            }
        }
        let mut offset: i32 = 0;
        let mut backoff = Duration::from_millis(500);
        loop {
            // Checked by this instance's own clock before each poll: while its lead has run
            // out by that clock, the poller waits for the renewal under way to decide; a
            // leader that stalled past its lease finds its term ended and polls no more.
            if *shutdown.borrow() || !term.resumes().await {
                return;
            }
            // Raw JSON, parsed by `raw_update`: teloxide's own parsing loses messages that
            // carry formatting it does not know.
            let get_updates = GetUpdates::new()
                .offset(offset)
                .timeout(self.poll_timeout.as_secs() as u32)
                .allowed_updates(Self::ALLOWED);
            let request =
                JsonRequest::new(self.bot.clone(), raw_update::GetRawUpdates(get_updates));
            let updates = tokio::select! {
                r = request => r,
                _ = shutdown.changed() => return,
            };
            let updates = match updates {
                Ok(u) => {
                    backoff = Duration::from_millis(500);
                    self.report(Ok(()));
                    u
                }
                Err(e) => {
                    self.report(Err(&e));
                    let wait = match &e {
                        RequestError::RetryAfter(after) => after.duration(),
                        _ => backoff,
                    };
                    tracing::warn!(error = %self.redact.clean(&e), wait_ms = wait.as_millis() as u64, "telegram: getUpdates failed");
                    tokio::time::sleep(wait).await;
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            for raw in updates {
                let update = match raw_update::parse(raw) {
                    Ok(update) => update,
                    Err(unreadable) => {
                        let id = unreadable.update_id;
                        if !self.record_unreadable(unreadable, sink.as_ref()).await {
                            tokio::time::sleep(backoff).await;
                            break; // offset stays put: the update comes again
                        }
                        if let Some(id) = id {
                            offset = id as i32 + 1;
                        }
                        continue;
                    }
                };
                if !self.record_update(&update, sink.as_ref()).await {
                    tokio::time::sleep(backoff).await;
                    break; // offset stays put: the update comes again
                }
                // The next getUpdates with this offset confirms the update to Telegram.
                offset = update.id.0 as i32 + 1;
            }
        }
    }

    /// The webhook's route, when Telegram is to post updates rather than be polled.
    pub(super) fn webhook_router(
        self: Arc<Self>,
        sink: Arc<dyn RemoteSink>,
    ) -> Option<axum::Router> {
        self.webhook.as_ref()?;
        Some(
            axum::Router::new()
                .route(WEBHOOK_PATH, axum::routing::post(receive_update))
                .with_state((self, sink)),
        )
    }
}

/// The photo (largest size) or document a message carries.
fn file_of(m: &Message) -> Option<RemoteFile> {
    if let Some(sizes) = m.photo() {
        let largest = sizes.iter().max_by_key(|p| p.width * p.height)?;
        return Some(RemoteFile {
            file_id: largest.file.id.0.clone(),
            mimetype: Some("image/jpeg".into()),
            filename: format!("photo-{}.jpg", m.id.0),
            kind: FileKind::Image,
        });
    }
    let doc = m.document()?;
    let mimetype = doc.mime_type.as_ref().map(|m| m.to_string());
    let kind = if mimetype.as_deref().is_some_and(|m| m.starts_with("image/")) {
        FileKind::Image
    } else {
        FileKind::File
    };
    Some(RemoteFile {
        file_id: doc.file.id.0.clone(),
        mimetype,
        filename: doc
            .file_name
            .clone()
            .unwrap_or_else(|| format!("file-{}", m.id.0)),
        kind,
    })
}

fn message_event(m: &Message) -> Option<RemoteEvent> {
    let address = m.chat.id.0.to_string();
    let reply_to = m.reply_to_message().map(|r| r.id.0.to_string());
    let display_name = m
        .from
        .as_ref()
        .map(|u| u.first_name.clone())
        .unwrap_or_default();
    let language = m.from.as_ref().and_then(|u| u.language_code.clone());
    if let Some(file) = file_of(m) {
        let caption = m.caption().unwrap_or_default();
        let (body, formatted_body) =
            format::telegram_to_matrix(caption, m.caption_entities().unwrap_or_default());
        return Some(RemoteEvent::Message {
            address,
            message_id: m.id.0.to_string(),
            reply_to,
            body,
            formatted_body,
            display_name,
            file: Some(file),
            thread: None,
            language: language.clone(),
        });
    }
    let text = m.text()?;
    if let Some(command) = text.strip_prefix(COMMAND_PREFIX) {
        let (name, args) = command
            .split_once(char::is_whitespace)
            .unwrap_or((command, ""));
        // `/end@SwitchboardBot` in groups: drop the bot's name.
        let name = name.split('@').next().unwrap_or(name).to_lowercase();
        return Some(RemoteEvent::Command {
            address,
            command: name,
            args: args.trim().to_owned(),
            reply_to,
            thread: None,
            language: language.clone(),
        });
    }
    let (body, formatted_body) = format::telegram_to_matrix(text, m.entities().unwrap_or_default());
    Some(RemoteEvent::Message {
        address,
        message_id: m.id.0.to_string(),
        reply_to,
        body,
        formatted_body,
        display_name,
        file: None,
        thread: None,
        language,
    })
}

/// # `POST /telegram/webhook`
///
/// Checks Telegram's secret header in constant time, records the update, and only then
/// answers 200; any other answer makes Telegram deliver the update again.
async fn receive_update(
    axum::extract::State((connector, sink)): axum::extract::State<(
        Arc<TelegramConnector>,
        Arc<dyn RemoteSink>,
    )>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> (axum::http::StatusCode, &'static str) {
    use axum::http::StatusCode;
    use subtle::ConstantTimeEq;
    let Some(webhook) = &connector.webhook else {
        return (StatusCode::NOT_FOUND, "webhook mode is off");
    };
    let presented = headers
        .get("x-telegram-bot-api-secret-token")
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    if !bool::from(presented.ct_eq(webhook.secret.as_bytes())) {
        return (StatusCode::FORBIDDEN, "wrong or missing secret token");
    }
    let raw: serde_json::Value = match serde_json::from_slice(&body) {
        Ok(raw) => raw,
        Err(e) => {
            tracing::warn!(error = %e, "telegram: malformed webhook update refused");
            return (StatusCode::BAD_REQUEST, "malformed update");
        }
    };
    let update = match raw_update::parse(raw) {
        Ok(update) => update,
        // JSON, but not an update at all.
        Err(unreadable) if unreadable.update_id.is_none() => {
            tracing::warn!(reason = %unreadable.reason, "telegram: webhook body is not an update; refused");
            return (StatusCode::BAD_REQUEST, "malformed update");
        }
        Err(unreadable) => {
            return if connector.record_unreadable(unreadable, sink.as_ref()).await {
                (StatusCode::OK, "")
            } else {
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "could not record the update",
                )
            };
        }
    };
    if connector.record_update(&update, sink.as_ref()).await {
        (StatusCode::OK, "")
    } else {
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not record the update",
        )
    }
}
