//! The REST calls the connector makes besides sending: opening a responder's direct chat,
//! posting and editing with mentions off, telling staff threads from other channels,
//! registering the slash commands; and how a failed call is taken (retried or not).

use reqwest::Method;
use serde_json::{Value, json};
use serenity::model::{channel::Channel, channel::Message};

use super::{
    DiscordConnector, events, format,
    rest::{Body, RestError, Route, codes},
    thread_id,
};
use crate::connector::ConnectorError;

impl DiscordConnector {
    pub(super) fn user(address: &str) -> Result<u64, ConnectorError> {
        address
            .parse::<u64>()
            .map_err(|_| ConnectorError::Permanent(format!("{address:?} is not a Discord user ID")))
    }

    /// The responder's direct-message channel with the bot.
    pub(super) async fn dm_channel(&self, address: &str) -> Result<u64, ConnectorError> {
        let user = Self::user(address)?;
        if let Some(&channel) = self.dms.lock().await.get(&user) {
            return Ok(channel);
        }
        let route = Route::new(
            Method::POST,
            "/users/@me/channels",
            "/users/@me/channels".into(),
            "",
        );
        let channel: Channel = self
            .rest
            .call(route, Body::Json(json!({"recipient_id": user.to_string()})))
            .await
            .map_err(|e| self.refusal("open a direct chat", e))?;
        let id = channel.id().get();
        self.dms.lock().await.insert(user, id);
        Ok(id)
    }

    /// Where something about a conversation goes: its thread, else the direct chat.
    pub(super) async fn channel_for(
        &self,
        address: &str,
        thread: Option<&str>,
    ) -> Result<u64, ConnectorError> {
        match thread.and_then(thread_id) {
            Some(thread) => Ok(thread),
            None => self.dm_channel(address).await,
        }
    }

    /// Posts a message; `body` holds its fields besides `allowed_mentions`, which is always
    /// empty so nothing relayed pings anyone.
    pub(super) async fn post(
        &self,
        channel: u64,
        mut body: Value,
    ) -> Result<Message, ConnectorError> {
        body["allowed_mentions"] = json!({"parse": []});
        let route = Route::new(
            Method::POST,
            "/channels/{}/messages",
            format!("/channels/{channel}/messages"),
            channel,
        );
        self.rest
            .call(route, Body::Json(body))
            .await
            .map_err(|e| self.refusal("send a message", e))
    }

    pub(super) async fn edit(
        &self,
        channel: u64,
        message: &str,
        body: Value,
    ) -> Result<(), ConnectorError> {
        let route = Route::new(
            Method::PATCH,
            "/channels/{}/messages/{}",
            format!("/channels/{channel}/messages/{message}"),
            channel,
        );
        match self.rest.call::<Value>(route, Body::Json(body)).await {
            Ok(_) => Ok(()),
            // Deleted meanwhile: there is nothing left to mark.
            Err(e) if e.code() == Some(codes::UNKNOWN_MESSAGE) => Ok(()),
            Err(e) => Err(self.refusal("edit a message", e)),
        }
    }

    /// A failed call as the bridge should take it, logged with what Discord said: a responder
    /// who refuses direct messages, a channel that is gone, a full guild are never retried.
    pub(super) fn refusal(&self, what: &str, e: RestError) -> ConnectorError {
        match e.code() {
            Some(codes::CANNOT_DM) => tracing::warn!(
                "discord: cannot {what}: the responder does not accept direct messages from the bot (50007)"
            ),
            Some(codes::UNKNOWN_CHANNEL) => {
                tracing::warn!("discord: cannot {what}: the channel or thread is gone (10003)")
            }
            Some(code) => tracing::warn!(code, error = %e, "discord: cannot {what}"),
            None => tracing::debug!(error = %e, "discord: cannot {what} now"),
        }
        e.into()
    }

    /// Text for a message of Switchboard's own, escaped so it shows as written.
    pub(super) fn plain(text: &str) -> String {
        format::to_discord(text, None, None).concat()
    }

    /// Whether `channel`, a guild channel a message arrived in, is a thread of the staff
    /// channel (asked from Discord once, then remembered).
    pub(super) async fn is_staff_thread(&self, channel: u64) -> bool {
        let Some(staff) = self.staff_channel else {
            return false;
        };
        if let Some(&known) = self.staff_threads.lock().await.get(&channel) {
            return known;
        }
        let route = Route::new(
            Method::GET,
            "/channels/{}",
            format!("/channels/{channel}"),
            channel,
        );
        match self.rest.call::<Value>(route, Body::None).await {
            Ok(c) => {
                let in_guild = self
                    .guild
                    .is_none_or(|g| c["guild_id"].as_str() == Some(&g.to_string()));
                let known = in_guild
                    && c["parent_id"].as_str() == Some(&staff.to_string())
                    && matches!(c["type"].as_u64(), Some(11 | 12));
                self.staff_threads.lock().await.insert(channel, known);
                known
            }
            Err(e) => {
                tracing::warn!(error = %e, "discord: cannot tell whether a channel is a staff thread");
                false
            }
        }
    }

    pub(super) async fn remember_thread(&self, channel: u64, is_staff_thread: bool) {
        self.staff_threads
            .lock()
            .await
            .insert(channel, is_staff_thread);
    }

    /// Registers the slash commands, globally: a guild's commands do not show in direct
    /// messages, where offers arrive and responders link their account.
    pub(super) async fn register_commands(&self) {
        let (template, path, major) = (
            "/applications/{}/commands",
            format!("/applications/{}/commands", self.application_id),
            self.application_id.to_string(),
        );
        let route = Route::new(Method::PUT, template, path, major);
        if let Err(e) = self
            .rest
            .call::<Value>(route, Body::Json(events::commands()))
            .await
        {
            tracing::warn!(error = %e, "discord: could not register the slash commands; their text forms still work");
        }
    }
}
