//! The JSON objects Discord sends, built from the stored state: users, members, channels and
//! threads, messages, the guild, the application, webhooks. Field sets follow Discord's
//! object tables; the protocol tests check that serenity's models accept every one of them.

use serde_json::{Value, json};

use crate::state::{
    AttachmentRec, Author, ChannelRec, DM, MessageRec, WebhookRec, World, iso8601, snowflake_ms,
};

/// Application flags telling which privileged intents the app may use
/// (`GATEWAY_PRESENCE`, `GATEWAY_GUILD_MEMBERS`, `GATEWAY_MESSAGE_CONTENT`).
const FLAGS_PRIVILEGED_ALLOWED: u64 = (1 << 12) | (1 << 14) | (1 << 18);
/// Their `_LIMITED` counterparts: no privileged intents.
const FLAGS_PRIVILEGED_LIMITED: u64 = (1 << 13) | (1 << 15) | (1 << 19);

/// Does the content mention this user (`<@id>` or the older `<@!id>`)?
pub(crate) fn mentions_user(content: &str, user_id: u64) -> bool {
    content.contains(&format!("<@{user_id}>")) || content.contains(&format!("<@!{user_id}>"))
}

/// User ids mentioned in content, in order of first appearance.
fn mentioned_ids(content: &str) -> Vec<u64> {
    let mut ids = Vec::new();
    let mut rest = content;
    while let Some(start) = rest.find("<@") {
        rest = &rest[start + 2..];
        let digits = rest.strip_prefix('!').unwrap_or(rest);
        let end = digits.find('>').unwrap_or(0);
        if let Ok(id) = digits[..end].parse::<u64>()
            && !ids.contains(&id)
        {
            ids.push(id);
        }
    }
    ids
}

impl World {
    /// A user object as Discord embeds it in messages and members.
    pub fn user_json(&self, id: u64) -> Value {
        let Some(user) = self.users.get(&id) else {
            return json!({ "id": id.to_string(), "username": "deleted_user", "discriminator": "0",
                "global_name": null, "avatar": null, "public_flags": 0 });
        };
        let mut value = json!({
            "id": id.to_string(),
            "username": user.username,
            "global_name": if user.bot { Value::Null } else { json!(user.username) },
            "discriminator": "0",
            "avatar": null,
            "avatar_decoration_data": null,
            "banner": null,
            "accent_color": null,
            "public_flags": 0,
            "flags": 0,
        });
        if user.bot {
            value["bot"] = json!(true);
        }
        value
    }

    /// `GET /users/@me` for the bot: the user object plus the account fields.
    pub fn current_user_json(&self) -> Value {
        let mut value = self.user_json(self.bot_id);
        let extra = json!({ "verified": true, "mfa_enabled": false, "locale": "en-US",
            "email": null, "premium_type": 0, "bio": "" });
        merge(&mut value, extra);
        value
    }

    /// A guild member object; `with_user` adds the nested `user` (members inside messages
    /// and mentions leave it out, as Discord does).
    pub fn member_json(&self, user_id: u64, with_user: bool) -> Value {
        let joined = self.members.get(&user_id).copied().unwrap_or(0);
        let mut value = json!({
            "roles": [],
            "joined_at": iso8601(joined),
            "premium_since": null,
            "deaf": false,
            "mute": false,
            "flags": 0,
            "pending": false,
            "nick": null,
            "avatar": null,
            "communication_disabled_until": null,
        });
        if with_user {
            value["user"] = self.user_json(user_id);
        }
        value
    }

    pub fn thread_member_json(&self, thread_id: u64, user_id: u64, joined_ms: u64) -> Value {
        json!({
            "id": thread_id.to_string(),
            "user_id": user_id.to_string(),
            "join_timestamp": iso8601(joined_ms),
            "flags": 0,
        })
    }

    /// A channel object: guild text channel, DM or thread.
    pub fn channel_json(&self, channel: &ChannelRec) -> Value {
        let id = channel.id.to_string();
        let last = channel.last_message_id.map(|m| m.to_string());
        if channel.kind == DM {
            let recipient = channel.recipient.unwrap_or_default();
            return json!({ "id": id, "type": DM, "last_message_id": last, "flags": 0,
                "recipients": [self.user_json(recipient)] });
        }
        let mut value = json!({
            "id": id,
            "type": channel.kind,
            "guild_id": channel.guild_id.map(|g| g.to_string()),
            "name": channel.name,
            "last_message_id": last,
            "rate_limit_per_user": 0,
            "flags": 0,
            "parent_id": channel.parent_id.map(|p| p.to_string()),
        });
        if let Some(thread) = &channel.thread {
            let mut meta = json!({
                "archived": thread.archived,
                "auto_archive_duration": thread.auto_archive_duration,
                "archive_timestamp": iso8601(thread.archive_timestamp_ms),
                "locked": thread.locked,
                "create_timestamp": iso8601(thread.create_timestamp_ms),
            });
            if channel.kind == crate::state::PRIVATE_THREAD {
                meta["invitable"] = json!(thread.invitable);
            }
            let count = self.messages.get(&channel.id).map_or(0, |m| m.len());
            merge(
                &mut value,
                json!({
                    "owner_id": thread.owner_id.to_string(),
                    "thread_metadata": meta,
                    "message_count": count,
                    "member_count": thread.members.len().min(50),
                    "total_message_sent": thread.total_message_sent,
                }),
            );
        } else {
            merge(
                &mut value,
                json!({ "position": channel.position, "permission_overwrites": [],
                    "topic": null, "nsfw": false, "default_thread_rate_limit_per_user": 0 }),
            );
        }
        value
    }

    pub fn attachment_json(&self, channel_id: u64, attachment: &AttachmentRec) -> Value {
        let url = format!(
            "{}/attachments/{channel_id}/{}/{}",
            self.base_url, attachment.id, attachment.filename
        );
        let mut value = json!({
            "id": attachment.id.to_string(),
            "filename": attachment.filename,
            "size": attachment.bytes.len(),
            "url": url,
            "proxy_url": url,
        });
        if let Some(content_type) = &attachment.content_type {
            value["content_type"] = json!(content_type);
        }
        if let Some(description) = &attachment.description {
            value["description"] = json!(description);
        }
        value
    }

    /// Is `user_id` pinged by this message, given what its sender allowed?
    fn mention_allowed(&self, message: &MessageRec, what: &str, user_id: Option<u64>) -> bool {
        let Some(allowed) = &message.allowed_mentions else {
            return true;
        };
        let parse = allowed["parse"].as_array();
        if parse.is_some_and(|p| p.iter().any(|v| v == what)) {
            return true;
        }
        match user_id {
            Some(id) => allowed["users"]
                .as_array()
                .is_some_and(|u| u.iter().any(|v| v.as_str() == Some(&id.to_string()))),
            None => false,
        }
    }

    /// A message object. `gateway` adds what gateway events carry on top of REST objects
    /// (`guild_id`, and `member` for guild messages by users).
    pub fn message_json(&self, message: &MessageRec, gateway: bool) -> Value {
        let channel = self.channels.get(&message.channel_id);
        let guild_id = channel.and_then(|c| c.guild_id);
        let (author, author_user) = match &message.author {
            Author::User(id) => (self.user_json(*id), Some(*id)),
            Author::Webhook {
                id,
                username,
                avatar_url: _,
            } => (
                json!({ "id": id.to_string(), "username": username, "avatar": null,
                    "discriminator": "0000", "bot": true, "global_name": null, "public_flags": 0 }),
                None,
            ),
        };
        let mut mentions: Vec<u64> = mentioned_ids(&message.content)
            .into_iter()
            .filter(|id| self.users.contains_key(id))
            .filter(|id| self.mention_allowed(message, "users", Some(*id)))
            .collect();
        if let Some((ref_channel, ref_id)) = message.reference
            && let Some(Author::User(replied)) =
                self.message(ref_channel, ref_id).map(|m| &m.author)
        {
            // A reply pings its author unless the sender said `replied_user: false`; with
            // `allowed_mentions` given, Discord's default is not to.
            let ping = message
                .allowed_mentions
                .as_ref()
                .is_none_or(|a| a["replied_user"].as_bool().unwrap_or(false));
            if ping && !mentions.contains(replied) {
                mentions.push(*replied);
            }
        }
        let mention_everyone = (message.content.contains("@everyone")
            || message.content.contains("@here"))
            && self.mention_allowed(message, "everyone", None);
        let mentions: Vec<Value> = mentions
            .into_iter()
            .map(|id| {
                let mut user = self.user_json(id);
                if gateway && guild_id.is_some() && self.members.contains_key(&id) {
                    user["member"] = self.member_json(id, false);
                }
                user
            })
            .collect();
        let mut value = json!({
            "id": message.id.to_string(),
            "channel_id": message.channel_id.to_string(),
            "author": author,
            "content": message.content,
            "timestamp": iso8601(snowflake_ms(message.id)),
            "edited_timestamp": message.edited_ms.map(iso8601),
            "tts": message.tts,
            "mention_everyone": mention_everyone,
            "mentions": mentions,
            "mention_roles": [],
            "attachments": message.attachments.iter()
                .map(|a| self.attachment_json(message.channel_id, a)).collect::<Vec<_>>(),
            "embeds": message.embeds,
            "components": message.components,
            "pinned": false,
            "type": message.kind,
            "flags": message.flags,
        });
        if let Author::Webhook { id, .. } = &message.author {
            value["webhook_id"] = json!(id.to_string());
        }
        if let Some(application_id) = message.application_id {
            value["application_id"] = json!(application_id.to_string());
            value["webhook_id"] = json!(application_id.to_string());
        }
        if let Some(metadata) = &message.interaction_metadata {
            value["interaction_metadata"] = metadata.clone();
        }
        if let Some(nonce) = &message.nonce {
            value["nonce"] = nonce.clone();
        }
        if let Some((ref_channel, ref_id)) = message.reference {
            let mut reference = json!({ "type": 0, "message_id": ref_id.to_string(),
                "channel_id": ref_channel.to_string() });
            if let Some(guild) = guild_id {
                reference["guild_id"] = json!(guild.to_string());
            }
            value["message_reference"] = reference;
            // Replies carry the message they answer (null once it is deleted).
            value["referenced_message"] =
                self.message(ref_channel, ref_id).map_or(Value::Null, |m| {
                    let mut inner = self.message_json(m, false);
                    if gateway && let Some(guild) = guild_id {
                        inner["guild_id"] = json!(guild.to_string());
                    }
                    inner
                });
        }
        if channel.is_some_and(ChannelRec::is_thread) {
            let position = self
                .messages
                .get(&message.channel_id)
                .map_or(0, |m| m.range(..message.id).count());
            value["position"] = json!(position);
        }
        if gateway && let Some(guild) = guild_id {
            value["guild_id"] = json!(guild.to_string());
            if let Some(user) = author_user
                && self.members.contains_key(&user)
            {
                value["member"] = self.member_json(user, false);
            }
        }
        value
    }

    /// The `d` of GUILD_CREATE: the guild with its channels, threads and members.
    pub fn guild_create_json(&self) -> Value {
        let mut channels = Vec::new();
        let mut threads = Vec::new();
        for channel in self.channels.values() {
            if channel.guild_id != Some(self.guild_id) {
                continue;
            }
            if channel.thread.as_ref().is_some_and(|t| !t.archived) {
                threads.push(self.channel_json(channel));
            } else if !channel.is_thread() {
                channels.push(self.channel_json(channel));
            }
        }
        let members: Vec<Value> = self
            .members
            .keys()
            .map(|id| self.member_json(*id, true))
            .collect();
        let guild_id = self.guild_id.to_string();
        json!({
            "id": guild_id,
            "name": "Switchboard Test Guild",
            "icon": null, "icon_hash": null, "splash": null, "discovery_splash": null,
            "owner_id": self.guild_owner().to_string(),
            "afk_channel_id": null, "afk_timeout": 300,
            "widget_enabled": false, "widget_channel_id": null,
            "verification_level": 0, "default_message_notifications": 1,
            "explicit_content_filter": 0,
            "roles": [{
                "id": guild_id, "name": "@everyone", "color": 0, "colors": {"primary_color": 0,
                "secondary_color": null, "tertiary_color": null}, "hoist": false,
                "icon": null, "unicode_emoji": null, "position": 0,
                "permissions": "2248473465835073", "managed": false, "mentionable": false,
                "flags": 0,
            }],
            "emojis": [], "features": [], "mfa_level": 0, "application_id": null,
            "system_channel_id": null, "system_channel_flags": 0, "rules_channel_id": null,
            "max_presences": null, "max_members": 500000, "vanity_url_code": null,
            "description": null, "banner": null, "premium_tier": 0,
            "premium_subscription_count": 0, "preferred_locale": "en-US",
            "public_updates_channel_id": null, "max_video_channel_users": 25,
            "max_stage_video_channel_users": 50, "nsfw_level": 0, "stickers": [],
            "premium_progress_bar_enabled": false, "safety_alerts_channel_id": null,
            "incidents_data": null,
            "joined_at": iso8601(self.members.get(&self.bot_id).copied().unwrap_or(0)),
            "large": false, "unavailable": false,
            "member_count": self.members.len(),
            "voice_states": [], "members": members, "channels": channels, "threads": threads,
            "presences": [], "stage_instances": [], "guild_scheduled_events": [],
            "soundboard_sounds": [],
        })
    }

    pub fn application_flags(&self) -> u64 {
        if self.privileged_intents_allowed {
            FLAGS_PRIVILEGED_ALLOWED
        } else {
            FLAGS_PRIVILEGED_LIMITED
        }
    }

    /// `GET /applications/@me`.
    pub fn application_json(&self) -> Value {
        json!({
            "id": self.application_id.to_string(),
            "name": "Switchboard Test Bot",
            "icon": null,
            "description": "",
            "summary": "",
            "type": null,
            "bot_public": false,
            "bot_require_code_grant": false,
            "verify_key": format!("{:064x}", self.application_id),
            "flags": self.application_flags(),
            "owner": self.user_json(self.guild_owner()),
            "team": null,
            "bot": self.user_json(self.bot_id),
            "guild_id": null,
            "approximate_guild_count": 1,
            "redirect_uris": [],
            "interactions_endpoint_url": null,
            "role_connections_verification_url": null,
            "tags": [],
            "integration_types_config": {"0": {}},
            "terms_of_service_url": null,
            "privacy_policy_url": null,
            "rpc_origins": [],
        })
    }

    pub fn webhook_json(&self, webhook: &WebhookRec) -> Value {
        json!({
            "id": webhook.id.to_string(),
            "type": 1,
            "guild_id": self.guild_id.to_string(),
            "channel_id": webhook.channel_id.to_string(),
            "user": self.user_json(webhook.creator),
            "name": webhook.name,
            "avatar": null,
            "token": webhook.token,
            "application_id": self.application_id.to_string(),
            "url": format!("{}/api/webhooks/{}/{}", self.base_url, webhook.id, webhook.token),
        })
    }
}

/// Copies the fields of `extra` into `value` (both objects).
pub(crate) fn merge(value: &mut Value, extra: Value) {
    if let (Value::Object(target), Value::Object(source)) = (value, extra) {
        target.extend(source);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mentions_are_found_in_both_forms() {
        assert_eq!(
            mentioned_ids("hi <@12> and <@!34> and <@12> <@x>"),
            vec![12, 34]
        );
        assert!(mentions_user("<@!5>", 5));
        assert!(!mentions_user("<@55>", 5));
    }
}
