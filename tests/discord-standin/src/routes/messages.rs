//! Messages: create (JSON or multipart), edit, delete, list, get. `post` is shared with
//! webhooks and interaction responses, which create messages the same way.

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::gateway::{Audience, intents};
use crate::rest::{Reply, Req, Upload};
use crate::state::{AttachmentRec, Author, ChannelRec, DM, MessageRec, Shared, World, unix_now_ms};
use crate::validate::{self, MessageInput, Purpose, snowflake};

/// A message about to be created.
pub(crate) struct NewMessage {
    pub author: Author,
    pub input: MessageInput,
    pub files: Vec<Upload>,
    pub application_id: Option<u64>,
    pub interaction_metadata: Option<Value>,
    /// Message type other than DEFAULT/REPLY (e.g. 20 for a slash command's response).
    pub kind: Option<u8>,
}

impl NewMessage {
    pub fn by(author: Author, input: MessageInput, files: Vec<Upload>) -> NewMessage {
        NewMessage {
            author,
            input,
            files,
            application_id: None,
            interaction_metadata: None,
            kind: None,
        }
    }
}

/// The JSON body (or `payload_json`); an absent body counts as `{}`.
pub(crate) fn body(req: &Req) -> Value {
    if req.json.is_null() {
        json!({})
    } else {
        req.json.clone()
    }
}

/// Attachment records for the uploaded files; `attachments[]` in the payload may name them
/// (`id` = the `n` of `files[n]`) to set a filename or description.
fn attachments(
    world: &mut World,
    files: Vec<Upload>,
    described: Option<&Vec<Value>>,
) -> ApiResult<Vec<AttachmentRec>> {
    let mut out = Vec::new();
    for file in files {
        let entry = described.and_then(|list| {
            list.iter().find(|a| {
                a.get("id").and_then(snowflake).map(|id| id.to_string()) == Some(file.index.clone())
            })
        });
        let filename = entry
            .and_then(|e| e["filename"].as_str())
            .unwrap_or(&file.filename)
            .to_owned();
        out.push(AttachmentRec {
            id: world.ids.next(),
            filename,
            content_type: file.content_type,
            description: entry
                .and_then(|e| e["description"].as_str())
                .map(str::to_owned),
            bytes: file.bytes,
        });
    }
    Ok(out)
}

/// Creates a message in a channel the caller has already checked, and dispatches it.
pub(crate) fn post(world: &mut World, channel_id: u64, new: NewMessage) -> ApiResult<u64> {
    if new.input.is_empty(new.files.len()) {
        return Err(ApiError::new(400, 50006, "Cannot send an empty message"));
    }
    let mut reference = None;
    if let Some((message_id, ref_channel, fail_if_missing)) = new.input.reference {
        let in_channel = ref_channel.unwrap_or(channel_id);
        let found = in_channel == channel_id && world.message(in_channel, message_id).is_some();
        if found {
            reference = Some((in_channel, message_id));
        } else if fail_if_missing {
            return Err(ApiError::field(
                &["message_reference"],
                "MESSAGE_REFERENCE_UNKNOWN_MESSAGE",
                "Unknown message",
            ));
        }
    }
    let attachments = attachments(world, new.files, new.input.attachments.as_ref())?;
    let id = world.ids.next();
    let message = MessageRec {
        id,
        channel_id,
        author: new.author,
        content: new.input.content.unwrap_or_default(),
        components: new.input.components.unwrap_or_else(|| json!([])),
        embeds: new.input.embeds.unwrap_or_else(|| json!([])),
        attachments,
        allowed_mentions: new.input.allowed_mentions,
        reference,
        kind: new.kind.unwrap_or(if reference.is_some() { 19 } else { 0 }),
        flags: new.input.flags.unwrap_or(0),
        tts: new.input.tts,
        nonce: new.input.nonce,
        edited_ms: None,
        application_id: new.application_id,
        interaction_metadata: new.interaction_metadata,
    };
    if world.store_message(message) {
        announce_thread(world, channel_id, "THREAD_UPDATE");
    }
    world.dispatch_message("MESSAGE_CREATE", channel_id, id);
    Ok(id)
}

/// THREAD_CREATE / THREAD_UPDATE for a thread.
pub(crate) fn announce_thread(world: &mut World, thread_id: u64, t: &str) {
    let Some(channel) = world.channel(thread_id) else {
        return;
    };
    let mut d = world.channel_json(channel);
    if t == "THREAD_CREATE" {
        d["newly_created"] = json!(true);
    }
    world.dispatch(t, d, Audience::needs(intents::GUILDS));
}

/// The channel, if the bot can see it.
pub(crate) fn visible_channel(world: &World, channel_id: u64) -> ApiResult<ChannelRec> {
    world
        .channel(channel_id)
        .cloned()
        .ok_or_else(ApiError::unknown_channel)
}

/// # `POST /channels/{channel_id}/messages`
pub(crate) fn create(shared: &Shared, channel_id: u64, req: Req) -> ApiResult<Reply> {
    let input = validate::message(&body(&req), Purpose::Create)?;
    let mut world = shared.world();
    let channel = visible_channel(&world, channel_id)?;
    if channel.kind == DM
        && let Some(user) = channel.recipient
        && world.refuses_dms.contains(&user)
    {
        return Err(ApiError::new(
            403,
            50007,
            "Cannot send messages to this user",
        ));
    }
    let author = Author::User(world.bot_id);
    // With `enforce_nonce`, a nonce this author used within the last minutes names the
    // message it made, which is returned instead of a second one.
    let now = std::time::Instant::now();
    let nonce = input
        .nonce
        .as_ref()
        .filter(|_| input.enforce_nonce)
        .map(|n| {
            (
                world.bot_id,
                n.as_str().map_or_else(|| n.to_string(), str::to_owned),
            )
        });
    world
        .nonces
        .retain(|_, (_, _, at)| now.duration_since(*at) < crate::state::NONCE_LIFETIME);
    if let Some(key) = &nonce
        && let Some(&(channel, message, _)) = world.nonces.get(key)
        && let Some(message) = world.message(channel, message)
    {
        let value = world.message_json(message, false);
        return Ok(Reply::Json(value));
    }
    let id = post(
        &mut world,
        channel_id,
        NewMessage::by(author, input, req.files),
    )?;
    if let Some(key) = nonce {
        world.nonces.insert(key, (channel_id, id, now));
    }
    let message = world.message(channel_id, id).expect("just stored");
    let value = world.message_json(message, false);
    drop(world);
    shared.notify_messages();
    Ok(Reply::Json(value))
}

/// Applies an edit's given fields to a stored message (shared with webhook and interaction
/// edits). Returns the message JSON after dispatching MESSAGE_UPDATE.
pub(crate) fn apply_edit(
    world: &mut World,
    channel_id: u64,
    message_id: u64,
    input: MessageInput,
    files: Vec<Upload>,
) -> ApiResult<Value> {
    if world
        .channel(channel_id)
        .and_then(|c| c.thread.as_ref())
        .is_some_and(|t| t.archived)
    {
        return Err(ApiError::archived_thread());
    }
    let new_attachments = attachments(world, files, input.attachments.as_ref())?;
    let message = world
        .messages
        .get_mut(&channel_id)
        .and_then(|m| m.get_mut(&message_id))
        .ok_or_else(ApiError::unknown_message)?;
    let mut edited = message.clone();
    if let Some(content) = input.content {
        edited.content = content;
    }
    if let Some(embeds) = input.embeds {
        edited.embeds = embeds;
    }
    if let Some(components) = input.components {
        edited.components = components;
    }
    if input.allowed_mentions.is_some() {
        edited.allowed_mentions = input.allowed_mentions;
    }
    if let Some(flags) = input.flags {
        edited.flags = flags;
    }
    if let Some(keep) = &input.attachments {
        // `attachments` in an edit lists the existing attachments to keep.
        let kept: Vec<u64> = keep
            .iter()
            .filter_map(|a| a.get("id").and_then(snowflake))
            .collect();
        edited.attachments.retain(|a| kept.contains(&a.id));
    }
    edited.attachments.extend(new_attachments);
    let blank = edited.content.is_empty()
        && edited.embeds.as_array().is_none_or(Vec::is_empty)
        && edited.components.as_array().is_none_or(Vec::is_empty)
        && edited.attachments.is_empty();
    if blank {
        return Err(ApiError::new(400, 50006, "Cannot send an empty message"));
    }
    edited.edited_ms = Some(unix_now_ms());
    *message = edited;
    world.dispatch_message("MESSAGE_UPDATE", channel_id, message_id);
    let message = world.message(channel_id, message_id).expect("exists");
    Ok(world.message_json(message, false))
}

/// # `PATCH /channels/{channel_id}/messages/{message_id}`
pub(crate) fn edit(
    shared: &Shared,
    channel_id: u64,
    message_id: u64,
    req: Req,
) -> ApiResult<Reply> {
    let input = validate::message(&body(&req), Purpose::Edit)?;
    let mut world = shared.world();
    visible_channel(&world, channel_id)?;
    let message = world
        .message(channel_id, message_id)
        .ok_or_else(ApiError::unknown_message)?;
    if message.author != Author::User(world.bot_id) {
        return Err(ApiError::new(
            403,
            50005,
            "Cannot edit a message authored by another user",
        ));
    }
    let value = apply_edit(&mut world, channel_id, message_id, input, req.files)?;
    drop(world);
    shared.notify_messages();
    Ok(Reply::Json(value))
}

/// Removes a message and dispatches MESSAGE_DELETE.
pub(crate) fn remove(world: &mut World, channel_id: u64, message_id: u64) -> ApiResult<()> {
    world
        .messages
        .get_mut(&channel_id)
        .and_then(|m| m.remove(&message_id))
        .ok_or_else(ApiError::unknown_message)?;
    let channel = world.channel(channel_id);
    let is_dm = channel.is_some_and(|c| c.kind == DM);
    let mut d = json!({ "id": message_id.to_string(), "channel_id": channel_id.to_string() });
    if let Some(guild) = channel.and_then(|c| c.guild_id) {
        d["guild_id"] = json!(guild.to_string());
    }
    let intent = if is_dm {
        intents::DIRECT_MESSAGES
    } else {
        intents::GUILD_MESSAGES
    };
    world.dispatch("MESSAGE_DELETE", d, Audience::needs(intent));
    Ok(())
}

/// # `DELETE /channels/{channel_id}/messages/{message_id}`
pub(crate) fn delete(shared: &Shared, channel_id: u64, message_id: u64) -> ApiResult<Reply> {
    let mut world = shared.world();
    let channel = visible_channel(&world, channel_id)?;
    let message = world
        .message(channel_id, message_id)
        .ok_or_else(ApiError::unknown_message)?;
    // In a DM a bot may delete only its own messages; in the guild it has Manage Messages.
    if channel.kind == DM && message.author != Author::User(world.bot_id) {
        return Err(ApiError::new(
            403,
            50003,
            "Cannot execute action on a DM channel",
        ));
    }
    remove(&mut world, channel_id, message_id)?;
    drop(world);
    shared.notify_messages();
    Ok(Reply::Empty)
}

/// A message as REST shows it to this application: without the MESSAGE_CONTENT intent
/// enabled for the app, others' guild messages that do not mention it come without content.
fn rest_view(world: &World, message: &MessageRec) -> Value {
    let mut value = world.message_json(message, false);
    let in_guild = world
        .channel(message.channel_id)
        .is_some_and(|c| c.guild_id.is_some());
    let own = message.author == Author::User(world.bot_id);
    let mentioned = crate::shapes::mentions_user(&message.content, world.bot_id);
    if !world.privileged_intents_allowed && in_guild && !own && !mentioned {
        crate::shapes::merge(
            &mut value,
            json!({ "content": "", "embeds": [], "attachments": [], "components": [] }),
        );
    }
    value
}

fn query_snowflake(req: &Req, name: &str) -> ApiResult<Option<u64>> {
    match req.query.get(name) {
        None => Ok(None),
        Some(v) => v.parse().map(Some).map_err(|_| {
            ApiError::field(
                &[name],
                "NUMBER_TYPE_COERCE",
                &format!("Value \"{v}\" is not snowflake."),
            )
        }),
    }
}

/// # `GET /channels/{channel_id}/messages?before=&after=&around=&limit=`
///
/// Newest first, as Discord answers; `after` gives the `limit` messages right after the id.
pub(crate) fn list(shared: &Shared, channel_id: u64, req: &Req) -> ApiResult<Reply> {
    let limit = match req.query.get("limit") {
        None => 50,
        Some(v) => match v.parse::<i64>() {
            Ok(n) if n > 100 => {
                return Err(ApiError::field(
                    &["limit"],
                    "NUMBER_TYPE_MAX",
                    "int value should be less than or equal to 100.",
                ));
            }
            Ok(n) if n < 1 => {
                return Err(ApiError::field(
                    &["limit"],
                    "NUMBER_TYPE_MIN",
                    "int value should be greater than or equal to 1.",
                ));
            }
            Ok(n) => n as usize,
            Err(_) => {
                return Err(ApiError::field(
                    &["limit"],
                    "NUMBER_TYPE_COERCE",
                    &format!("Value \"{v}\" is not int."),
                ));
            }
        },
    };
    let (before, after, around) = (
        query_snowflake(req, "before")?,
        query_snowflake(req, "after")?,
        query_snowflake(req, "around")?,
    );
    let world = shared.world();
    visible_channel(&world, channel_id)?;
    let Some(all) = world.messages.get(&channel_id) else {
        return Ok(Reply::Json(json!([])));
    };
    let mut picked: Vec<&MessageRec> = if let Some(after) = after {
        all.range(after + 1..).take(limit).map(|(_, m)| m).collect()
    } else if let Some(around) = around {
        let older: Vec<_> = all
            .range(..around)
            .rev()
            .take(limit / 2)
            .map(|(_, m)| m)
            .collect();
        let newer: Vec<_> = all
            .range(around..)
            .take(limit - older.len())
            .map(|(_, m)| m)
            .collect();
        older.into_iter().chain(newer).collect()
    } else {
        let end = before.unwrap_or(u64::MAX);
        all.range(..end).rev().take(limit).map(|(_, m)| m).collect()
    };
    picked.sort_by_key(|m| std::cmp::Reverse(m.id));
    let values: Vec<Value> = picked.into_iter().map(|m| rest_view(&world, m)).collect();
    Ok(Reply::Json(Value::Array(values)))
}

/// # `GET /channels/{channel_id}/messages/{message_id}`
pub(crate) fn get(shared: &Shared, channel_id: u64, message_id: u64) -> ApiResult<Reply> {
    let world = shared.world();
    visible_channel(&world, channel_id)?;
    let message = world
        .message(channel_id, message_id)
        .ok_or_else(ApiError::unknown_message)?;
    Ok(Reply::Json(rest_view(&world, message)))
}
