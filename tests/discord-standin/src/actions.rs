//! What tests do as Discord users: join, open DMs, send, reply, upload, edit, delete, type,
//! press buttons and run slash commands. Each action changes the state and dispatches the
//! gateway events Discord would. A test asking for something Discord would not allow (posting
//! where the user has no access, pressing a button that is not there) panics with the reason.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::gateway::{Audience, intents};
use crate::state::{
    AttachmentRec, Author, ChannelRec, DM, GUILD_TEXT, InteractionRec, MessageRec, PUBLIC_THREAD,
    UserRec, World, unix_now_ms,
};
use crate::{DcAttachment, DcMessage, DcUser, DiscordStandIn, Interaction, author_id};

/// Permissions of an administrator, as a string (Discord's form for permission bitsets).
const ALL_PERMISSIONS: &str = "2251799813685247";

pub(crate) fn public_message(world: &World, m: &MessageRec) -> DcMessage {
    let json = world.message_json(m, false);
    let (webhook_username, webhook_avatar_url) = match &m.author {
        Author::Webhook {
            username,
            avatar_url,
            ..
        } => (Some(username.clone()), avatar_url.clone()),
        Author::User(_) => (None, None),
    };
    DcMessage {
        id: m.id,
        channel_id: m.channel_id,
        author_id: author_id(&m.author),
        content: m.content.clone(),
        components: m.components.clone(),
        embeds: m.embeds.clone(),
        attachments: m
            .attachments
            .iter()
            .map(|a| DcAttachment {
                id: a.id,
                filename: a.filename.clone(),
                size: a.bytes.len(),
                content_type: a.content_type.clone(),
                description: a.description.clone(),
                url: world.attachment_json(m.channel_id, a)["url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
                bytes: a.bytes.clone(),
            })
            .collect(),
        webhook_id: match &m.author {
            Author::Webhook { id, .. } => Some(*id),
            Author::User(_) => m.application_id,
        },
        webhook_username,
        webhook_avatar_url,
        message_reference: json.get("message_reference").cloned(),
        allowed_mentions: m.allowed_mentions.clone(),
        mention_everyone: json["mention_everyone"].as_bool().unwrap_or(false),
        mentions: json["mentions"]
            .as_array()
            .map(|list| {
                list.iter()
                    .filter_map(|u| u["id"].as_str()?.parse().ok())
                    .collect()
            })
            .unwrap_or_default(),
        edited: m.edited_ms.is_some(),
        flags: m.flags,
        kind: m.kind,
    }
}

/// The channel a user acts in; panics if it does not exist or the user has no access.
fn channel_for(world: &World, user: &DcUser, channel_id: u64) -> ChannelRec {
    let channel = world
        .channel(channel_id)
        .unwrap_or_else(|| panic!("channel {channel_id} does not exist"))
        .clone();
    if channel.kind == PUBLIC_THREAD && world.members.contains_key(&user.id) {
        return channel;
    }
    assert!(
        world.user_can_post(user.id, &channel),
        "user {} ({}) has no access to channel {channel_id} (type {}): private threads need \
         membership, DMs are between the bot and their recipient",
        user.username,
        user.id,
        channel.kind
    );
    channel
}

/// The values a string select (type 3) with `custom_id` under a message offers, and how
/// many may be picked (`min_values`, `max_values`; Discord's defaults are 1 and 1).
fn find_select(components: &Value, custom_id: &str) -> Option<(Vec<String>, usize, usize)> {
    let select = components
        .as_array()?
        .iter()
        .filter_map(|row| row["components"].as_array())
        .flatten()
        .find(|c| c["type"] == 3 && c["custom_id"] == custom_id)?;
    let values = select["options"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["value"].as_str().map(str::to_owned))
        .collect();
    let bound = |field: &str| select[field].as_u64().map_or(1, |n| n as usize);
    Some((values, bound("min_values"), bound("max_values")))
}

fn find_button(components: &Value, custom_id: &str) -> bool {
    components.as_array().is_some_and(|rows| {
        rows.iter().any(|row| {
            row["components"].as_array().is_some_and(|c| {
                c.iter()
                    .any(|b| b["type"] == 2 && b["custom_id"] == custom_id)
            })
        })
    })
}

impl DiscordStandIn {
    /// A new guild text channel (type 0); dispatches CHANNEL_CREATE.
    pub fn create_text_channel(&self, name: &str) -> u64 {
        let mut world = self.world();
        let id = world.ids.next();
        let position = world
            .channels
            .values()
            .filter(|c| c.kind == GUILD_TEXT)
            .count() as u64;
        let channel = ChannelRec {
            id,
            kind: GUILD_TEXT,
            name: Some(name.to_owned()),
            guild_id: Some(world.guild_id),
            parent_id: None,
            recipient: None,
            thread: None,
            last_message_id: None,
            position,
        };
        let value = world.channel_json(&channel);
        world.channels.insert(id, channel);
        world.dispatch("CHANNEL_CREATE", value, Audience::needs(intents::GUILDS));
        id
    }

    /// A new user who joins the guild; dispatches GUILD_MEMBER_ADD.
    pub fn user(&self, username: &str) -> DcUser {
        let mut world = self.world();
        let id = world.ids.next();
        world.users.insert(
            id,
            UserRec {
                id,
                username: username.to_owned(),
                bot: false,
            },
        );
        world.members.insert(id, unix_now_ms());
        let mut member = world.member_json(id, true);
        member["guild_id"] = json!(world.guild_id.to_string());
        world.dispatch(
            "GUILD_MEMBER_ADD",
            member,
            Audience::needs(intents::GUILD_MEMBERS),
        );
        DcUser {
            id,
            username: username.to_owned(),
        }
    }

    /// Whether the user refuses DMs from the bot (then the bot's messages to their DM
    /// channel get 403 50007).
    pub fn set_refuses_dms(&self, user: &DcUser, refuses: bool) {
        let mut world = self.world();
        if refuses {
            world.refuses_dms.insert(user.id);
        } else {
            world.refuses_dms.remove(&user.id);
        }
    }

    /// The largest file an upload may carry from now on (Discord answers 413 with code
    /// 40005 above it).
    pub fn set_max_file(&self, bytes: usize) {
        self.world().max_file = bytes;
    }

    /// The DM channel the bot has with the user, if one was opened.
    pub fn dm_channel_of(&self, user: &DcUser) -> Option<u64> {
        self.world().dm_with(user.id)
    }

    /// The user opens a DM with the bot (as when writing to it first); returns its id. The
    /// same channel as `POST /users/@me/channels` gives the bot.
    pub fn user_opens_dm(&self, user: &DcUser) -> u64 {
        let mut world = self.world();
        if let Some(id) = world.dm_with(user.id) {
            return id;
        }
        let id = world.ids.next();
        world.channels.insert(
            id,
            ChannelRec {
                id,
                kind: DM,
                name: None,
                guild_id: None,
                parent_id: None,
                recipient: Some(user.id),
                thread: None,
                last_message_id: None,
                position: 0,
            },
        );
        id
    }

    fn user_message(
        &self,
        user: &DcUser,
        channel_id: u64,
        content: &str,
        reply_to: Option<u64>,
        attachment: Option<AttachmentRec>,
    ) -> u64 {
        let id = {
            let mut world = self.world();
            let channel = channel_for(&world, user, channel_id);
            if let Some(meta) = &channel.thread {
                assert!(
                    !meta.locked,
                    "thread {channel_id} is locked: users cannot post"
                );
                if !meta.members.contains_key(&user.id) {
                    // Posting in a public thread joins it.
                    let now = unix_now_ms();
                    if let Some(t) = world
                        .channels
                        .get_mut(&channel_id)
                        .and_then(|c| c.thread.as_mut())
                    {
                        t.members.insert(user.id, now);
                    }
                }
            }
            if let Some(reply) = reply_to {
                assert!(
                    world.message(channel_id, reply).is_some(),
                    "message {reply} is not in channel {channel_id}"
                );
            }
            let id = world.ids.next();
            let message = MessageRec {
                id,
                channel_id,
                author: Author::User(user.id),
                content: content.to_owned(),
                components: json!([]),
                embeds: json!([]),
                attachments: attachment.into_iter().collect(),
                allowed_mentions: None,
                reference: reply_to.map(|r| (channel_id, r)),
                kind: if reply_to.is_some() { 19 } else { 0 },
                flags: 0,
                tts: false,
                nonce: None,
                edited_ms: None,
                application_id: None,
                interaction_metadata: None,
            };
            if world.store_message(message) {
                crate::routes::messages::announce_thread(&mut world, channel_id, "THREAD_UPDATE");
            }
            world.dispatch_message("MESSAGE_CREATE", channel_id, id);
            id
        };
        self.shared().notify_messages();
        id
    }

    /// The user sends a message to a DM channel, thread or guild channel; dispatches
    /// MESSAGE_CREATE. Returns the message id.
    pub fn user_sends(&self, user: &DcUser, channel_id: u64, content: &str) -> u64 {
        self.user_message(user, channel_id, content, None, None)
    }

    /// The user replies to a message (type 19, `message_reference` and `referenced_message`).
    pub fn user_replies(
        &self,
        user: &DcUser,
        channel_id: u64,
        content: &str,
        reply_to: u64,
    ) -> u64 {
        self.user_message(user, channel_id, content, Some(reply_to), None)
    }

    /// The user sends a file (with optional text); it is served at the attachment's `url`.
    pub fn user_sends_file(
        &self,
        user: &DcUser,
        channel_id: u64,
        content: &str,
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> u64 {
        let id = self.world().ids.next();
        let attachment = AttachmentRec {
            id,
            filename: filename.to_owned(),
            content_type: Some(content_type.to_owned()),
            description: None,
            bytes,
        };
        self.user_message(user, channel_id, content, None, Some(attachment))
    }

    /// The user edits their message; dispatches MESSAGE_UPDATE with `edited_timestamp`.
    pub fn user_edits(&self, user: &DcUser, channel_id: u64, message_id: u64, content: &str) {
        {
            let mut world = self.world();
            channel_for(&world, user, channel_id);
            let message = world
                .messages
                .get_mut(&channel_id)
                .and_then(|m| m.get_mut(&message_id))
                .filter(|m| m.author == Author::User(user.id))
                .unwrap_or_else(|| {
                    panic!(
                        "{} has no message {message_id} in {channel_id}",
                        user.username
                    )
                });
            message.content = content.to_owned();
            message.edited_ms = Some(unix_now_ms());
            world.dispatch_message("MESSAGE_UPDATE", channel_id, message_id);
        }
        self.shared().notify_messages();
    }

    /// The user deletes their message; dispatches MESSAGE_DELETE.
    pub fn user_deletes(&self, user: &DcUser, channel_id: u64, message_id: u64) {
        {
            let mut world = self.world();
            channel_for(&world, user, channel_id);
            let theirs = world
                .message(channel_id, message_id)
                .is_some_and(|m| m.author == Author::User(user.id));
            assert!(
                theirs,
                "{} has no message {message_id} in {channel_id}",
                user.username
            );
            crate::routes::messages::remove(&mut world, channel_id, message_id).expect("exists");
        }
        self.shared().notify_messages();
    }

    /// The user starts typing; dispatches TYPING_START.
    pub fn user_types(&self, user: &DcUser, channel_id: u64) {
        let mut world = self.world();
        let channel = channel_for(&world, user, channel_id);
        let mut d = json!({
            "channel_id": channel_id.to_string(),
            "user_id": user.id.to_string(),
            "timestamp": unix_now_ms() / 1000,
        });
        let intent = if let Some(guild) = channel.guild_id {
            d["guild_id"] = json!(guild.to_string());
            d["member"] = world.member_json(user.id, true);
            intents::GUILD_MESSAGE_TYPING
        } else {
            intents::DIRECT_MESSAGE_TYPING
        };
        world.dispatch("TYPING_START", d, Audience::needs(intent));
    }

    /// Common fields of an interaction from `user` in `channel`.
    fn interaction_base(
        world: &mut World,
        user: &DcUser,
        channel: &ChannelRec,
        kind: u8,
        data: Value,
    ) -> (u64, String, Value) {
        let id = world.ids.next();
        let token = format!(
            "interaction-token-{id:x}-{:x}",
            id.rotate_left(29) ^ 0x51ab_c0de
        );
        let mut channel_json = world.channel_json(channel);
        if let Some(object) = channel_json.as_object_mut() {
            object.remove("recipients");
        }
        let mut value = json!({
            "id": id.to_string(),
            "application_id": world.application_id.to_string(),
            "type": kind,
            "data": data,
            "channel_id": channel.id.to_string(),
            "channel": channel_json,
            "token": token,
            "version": 1,
            "app_permissions": ALL_PERMISSIONS,
            "locale": "en-US",
            "entitlements": [],
            "attachment_size_limit": world.max_file,
        });
        if let Some(guild) = channel.guild_id {
            let mut member = world.member_json(user.id, true);
            member["permissions"] = json!(ALL_PERMISSIONS);
            value["guild_id"] = json!(guild.to_string());
            value["guild_locale"] = json!("en-US");
            value["guild"] = json!({ "id": guild.to_string(), "locale": "en-US", "features": [] });
            value["member"] = member;
            value["authorizing_integration_owners"] = json!({ "0": guild.to_string() });
            value["context"] = json!(0);
        } else {
            value["user"] = world.user_json(user.id);
            value["authorizing_integration_owners"] = json!({ "0": world.guild_id.to_string() });
            value["context"] = json!(1);
        }
        (id, token, value)
    }

    fn start_interaction(&self, world: &mut World, public: Interaction) -> Interaction {
        world.interactions.insert(
            public.id,
            InteractionRec {
                public: public.clone(),
                created: Instant::now(),
                payload: public.payload.clone(),
                response: None,
                answered_after: None,
                original_message: None,
            },
        );
        world.dispatch(
            "INTERACTION_CREATE",
            public.payload.clone(),
            Audience::needs(0),
        );
        public
    }

    /// The user presses the button with `custom_id` under a message; dispatches
    /// INTERACTION_CREATE (type 3). Panics if the message has no such button.
    pub fn user_presses(
        &self,
        user: &DcUser,
        channel_id: u64,
        message_id: u64,
        custom_id: &str,
    ) -> Interaction {
        let world = self.world();
        let channel = channel_for(&world, user, channel_id);
        let message = world
            .message(channel_id, message_id)
            .unwrap_or_else(|| panic!("message {message_id} is not in channel {channel_id}"))
            .clone();
        assert!(
            find_button(&message.components, custom_id),
            "message {message_id} has no button with custom_id {custom_id:?}; its components: {}",
            message.components
        );
        let data = json!({ "custom_id": custom_id, "component_type": 2 });
        self.component_interaction(world, user, channel, message, data)
    }

    /// The user picks `values` in the string select with `custom_id` under a message;
    /// dispatches INTERACTION_CREATE (type 3, `component_type` 3, `values`). Panics if the
    /// message has no such select, a value is not one of its options, or there are fewer or
    /// more values than it allows (Discord's client lets none of that through).
    pub fn user_selects(
        &self,
        user: &DcUser,
        channel_id: u64,
        message_id: u64,
        custom_id: &str,
        values: &[&str],
    ) -> Interaction {
        // Checked without holding the world, so a refused pick leaves it usable.
        let (channel, message) = {
            let world = self.world();
            let channel = channel_for(&world, user, channel_id);
            let message = world.message(channel_id, message_id).cloned();
            (channel, message)
        };
        let message = message
            .unwrap_or_else(|| panic!("message {message_id} is not in channel {channel_id}"));
        let (offered, min, max) = find_select(&message.components, custom_id).unwrap_or_else(|| {
            panic!(
                "message {message_id} has no select with custom_id {custom_id:?}; its components: {}",
                message.components
            )
        });
        assert!(
            (min..=max).contains(&values.len()),
            "{} values picked where the select takes {min} to {max}",
            values.len()
        );
        for value in values {
            assert!(
                offered.iter().any(|o| o == value),
                "{value:?} is not an option of select {custom_id:?}: {offered:?}"
            );
        }
        let data = json!({ "custom_id": custom_id, "component_type": 3, "values": values });
        self.component_interaction(self.world(), user, channel, message, data)
    }

    /// Dispatches a component interaction (type 3) on `message` with `data`.
    fn component_interaction(
        &self,
        mut world: std::sync::MutexGuard<'_, World>,
        user: &DcUser,
        channel: ChannelRec,
        message: MessageRec,
        data: Value,
    ) -> Interaction {
        let channel_id = channel.id;
        let message_id = message.id;
        let (id, token, mut payload) = Self::interaction_base(&mut world, user, &channel, 3, data);
        let mut message_json = world.message_json(&message, false);
        if let Some(guild) = channel.guild_id {
            message_json["guild_id"] = json!(guild.to_string());
        }
        payload["message"] = message_json;
        let public = Interaction {
            id,
            token,
            kind: 3,
            channel_id,
            message_id: Some(message_id),
            user_id: user.id,
            payload,
        };
        self.start_interaction(&mut world, public)
    }

    /// The user runs a registered slash command (global, or for the guild in guild
    /// channels) with `options` given as `{"name": value}` (or as Discord's option array);
    /// dispatches INTERACTION_CREATE (type 2). Panics if no such command is registered or
    /// the options do not fit it.
    pub fn user_runs_command(
        &self,
        user: &DcUser,
        channel_id: u64,
        name: &str,
        options: Value,
    ) -> Interaction {
        let mut world = self.world();
        let channel = channel_for(&world, user, channel_id);
        let guild = channel.guild_id;
        let command = world
            .commands
            .iter()
            .find(|(g, c)| c["name"] == name && c["type"] == 1 && (g.is_none() || *g == guild))
            .map(|(_, c)| c.clone())
            .unwrap_or_else(|| {
                panic!("no slash command {name:?} is registered for channel {channel_id}")
            });
        let defined = command["options"].as_array().cloned().unwrap_or_default();
        let given: Vec<(String, Value)> = match &options {
            Value::Object(map) => map.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            Value::Array(list) => list
                .iter()
                .map(|o| {
                    (
                        o["name"].as_str().unwrap_or_default().to_owned(),
                        o["value"].clone(),
                    )
                })
                .collect(),
            Value::Null => Vec::new(),
            other => panic!("options must be an object or an array, not {other}"),
        };
        let mut wire = Vec::new();
        let mut resolved_users = BTreeMap::new();
        for (option_name, value) in &given {
            let definition = defined
                .iter()
                .find(|d| d["name"] == option_name.as_str())
                .unwrap_or_else(|| panic!("command {name:?} has no option {option_name:?}"));
            let kind = definition["type"].as_u64().unwrap_or(3);
            let fits = match kind {
                3 => value.is_string(),
                4 => value.is_i64() || value.is_u64(),
                5 => value.is_boolean(),
                10 => value.is_number(),
                6..=9 | 11 => value.is_string(),
                _ => true,
            };
            assert!(
                fits,
                "option {option_name:?} of {name:?} has type {kind}; {value} does not fit"
            );
            if kind == 6
                && let Some(id) = value.as_str().and_then(|s| s.parse::<u64>().ok())
            {
                resolved_users.insert(id.to_string(), world.user_json(id));
            }
            wire.push(json!({ "name": option_name, "type": kind, "value": value }));
        }
        for definition in &defined {
            let required = definition["required"].as_bool().unwrap_or(false);
            let present = given.iter().any(|(n, _)| definition["name"] == n.as_str());
            assert!(
                !required || present,
                "command {name:?} needs option {}",
                definition["name"]
            );
        }
        let mut data = json!({
            "id": command["id"],
            "name": name,
            "type": 1,
            "options": wire,
        });
        if let Some(g) = command.get("guild_id") {
            data["guild_id"] = g.clone();
        }
        if !resolved_users.is_empty() {
            data["resolved"] = json!({ "users": resolved_users });
        }
        let (id, token, payload) = Self::interaction_base(&mut world, user, &channel, 2, data);
        let public = Interaction {
            id,
            token,
            kind: 2,
            channel_id,
            message_id: None,
            user_id: user.id,
            payload,
        };
        self.start_interaction(&mut world, public)
    }

    /// The body of the bot's accepted callback for this interaction, if it answered in time.
    pub fn interaction_response(&self, interaction: &Interaction) -> Option<Value> {
        self.world()
            .interactions
            .get(&interaction.id)
            .and_then(|i| i.response.clone())
    }

    /// How long after the interaction was created the accepted callback came.
    pub fn interaction_answered_after(&self, interaction: &Interaction) -> Option<Duration> {
        self.world()
            .interactions
            .get(&interaction.id)
            .and_then(|i| i.answered_after)
    }

    /// Waits for the bot's callback for this interaction, up to `timeout`.
    pub async fn wait_for_interaction_response(
        &self,
        interaction: &Interaction,
        timeout: Duration,
    ) -> Option<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut signal = self.shared().interactions_signal.subscribe();
        loop {
            signal.borrow_and_update();
            if let Some(response) = self.interaction_response(interaction) {
                return Some(response);
            }
            if tokio::time::timeout_at(deadline, signal.changed())
                .await
                .is_err()
            {
                return None;
            }
        }
    }
}
