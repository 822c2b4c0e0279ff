//! Channels, DMs, typing, threads and thread members.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use super::UserRef;
use super::messages::{announce_thread, visible_channel};
use crate::error::{ApiError, ApiResult, FormErrors};
use crate::gateway::{Audience, intents};
use crate::rest::{Reply, Req};
use crate::state::{
    ChannelRec, DM, GUILD_TEXT, PRIVATE_THREAD, PUBLIC_THREAD, Shared, ThreadMeta, World,
    unix_now_ms,
};
use crate::validate::snowflake;

const ARCHIVE_DURATIONS: [u64; 4] = [60, 1440, 4320, 10080];

/// # `POST /users/@me/channels`
///
/// Opens (or finds) the DM channel with `recipient_id`.
pub(crate) fn open_dm(shared: &Shared, req: &Req) -> ApiResult<Reply> {
    let Some(recipient) = req.json.get("recipient_id").and_then(snowflake) else {
        return Err(ApiError::field(
            &["recipient_id"],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        ));
    };
    let mut world = shared.world();
    if recipient == world.bot_id || !world.users.contains_key(&recipient) {
        return Err(ApiError::new(400, 50033, "Invalid Recipient(s)"));
    }
    let id = match world.dm_with(recipient) {
        Some(id) => id,
        None => {
            let id = world.ids.next();
            world.channels.insert(
                id,
                ChannelRec {
                    id,
                    kind: DM,
                    name: None,
                    guild_id: None,
                    parent_id: None,
                    recipient: Some(recipient),
                    thread: None,
                    last_message_id: None,
                    position: 0,
                },
            );
            id
        }
    };
    let value = world.channel_json(&world.channels[&id]);
    Ok(Reply::Json(value))
}

/// # `GET /channels/{channel_id}`
pub(crate) fn get(shared: &Shared, channel_id: u64) -> ApiResult<Reply> {
    let world = shared.world();
    let channel = visible_channel(&world, channel_id)?;
    Ok(Reply::Json(world.channel_json(&channel)))
}

fn bool_field(errors: &mut FormErrors, body: &Value, field: &str) -> Option<bool> {
    match body.get(field) {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            errors.add(
                &[field],
                "BASE_TYPE_BOOLEAN",
                "Must be either true or false.",
            );
            None
        }
    }
}

fn name_field(errors: &mut FormErrors, body: &Value, required: bool) -> Option<String> {
    match body.get("name") {
        None | Some(Value::Null) if required => {
            errors.add(&["name"], "BASE_TYPE_REQUIRED", "This field is required");
            None
        }
        None | Some(Value::Null) => None,
        Some(Value::String(name)) => {
            let len = name.chars().count();
            if !(1..=100).contains(&len) {
                errors.add(
                    &["name"],
                    "BASE_TYPE_BAD_LENGTH",
                    "Must be between 1 and 100 in length.",
                );
            }
            Some(name.clone())
        }
        Some(_) => {
            errors.add(&["name"], "BASE_TYPE_STRING", "Must be a string.");
            None
        }
    }
}

fn archive_duration(errors: &mut FormErrors, body: &Value) -> Option<u64> {
    let value = body.get("auto_archive_duration").filter(|v| !v.is_null())?;
    match value.as_u64().filter(|d| ARCHIVE_DURATIONS.contains(d)) {
        Some(d) => Some(d),
        None => {
            errors.add(
                &["auto_archive_duration"],
                "BASE_TYPE_CHOICES",
                "Value must be one of {60, 1440, 4320, 10080}.",
            );
            None
        }
    }
}

fn thread_limit_reached(world: &World) -> bool {
    world.active_threads() >= world.active_thread_limit
}

/// # `PATCH /channels/{channel_id}`
///
/// Threads take `name`, `archived`, `locked`, `invitable`, `auto_archive_duration`; guild text
/// channels take `name`.
pub(crate) fn modify(shared: &Shared, channel_id: u64, req: &Req) -> ApiResult<Reply> {
    let body = &req.json;
    let mut errors = FormErrors::default();
    let name = name_field(&mut errors, body, false);
    let archived = bool_field(&mut errors, body, "archived");
    let locked = bool_field(&mut errors, body, "locked");
    let invitable = bool_field(&mut errors, body, "invitable");
    let duration = archive_duration(&mut errors, body);
    errors.into_result()?;
    let mut world = shared.world();
    let channel = visible_channel(&world, channel_id)?;
    if channel.kind == DM {
        return Err(ApiError::new(
            400,
            50003,
            "Cannot execute action on a DM channel",
        ));
    }
    let Some(thread) = channel.thread.clone() else {
        if let Some(name) = name {
            world.channels.get_mut(&channel_id).expect("exists").name = Some(name);
        }
        let value = world.channel_json(&world.channels[&channel_id]);
        world.dispatch(
            "CHANNEL_UPDATE",
            value.clone(),
            Audience::needs(intents::GUILDS),
        );
        return Ok(Reply::Json(value));
    };
    if archived == Some(false) && thread.archived && thread_limit_reached(&world) {
        return Err(ApiError::new(
            400,
            160006,
            "Maximum number of active threads reached",
        ));
    }
    // An archived thread can only be unarchived (possibly together with other changes).
    if thread.archived && archived != Some(false) && (name.is_some() || invitable.is_some()) {
        return Err(ApiError::archived_thread());
    }
    if invitable.is_some() && channel.kind != PRIVATE_THREAD {
        return Err(ApiError::field(
            &["invitable"],
            "BASE_TYPE_INVALID",
            "Only private threads can be invitable.",
        ));
    }
    let record = world.channels.get_mut(&channel_id).expect("exists");
    if let Some(name) = name {
        record.name = Some(name);
    }
    let meta = record.thread.as_mut().expect("is a thread");
    if let Some(archived) = archived
        && archived != meta.archived
    {
        meta.archived = archived;
        meta.archive_timestamp_ms = unix_now_ms();
    }
    if let Some(locked) = locked {
        meta.locked = locked;
    }
    if let Some(invitable) = invitable {
        meta.invitable = invitable;
    }
    if let Some(duration) = duration {
        meta.auto_archive_duration = duration;
    }
    announce_thread(&mut world, channel_id, "THREAD_UPDATE");
    let value = world.channel_json(&world.channels[&channel_id]);
    Ok(Reply::Json(value))
}

/// # `POST /channels/{channel_id}/typing`
pub(crate) fn typing(shared: &Shared, channel_id: u64) -> ApiResult<Reply> {
    visible_channel(&shared.world(), channel_id)?;
    Ok(Reply::Empty)
}

/// # `POST /channels/{channel_id}/threads` (a thread without a starter message)
pub(crate) fn create_thread(shared: &Shared, channel_id: u64, req: &Req) -> ApiResult<Reply> {
    let body = &req.json;
    let mut errors = FormErrors::default();
    let name = name_field(&mut errors, body, true);
    let invitable = bool_field(&mut errors, body, "invitable");
    let duration = archive_duration(&mut errors, body).unwrap_or(4320);
    // Discord's default for threads without a message is a private thread.
    let kind = match body.get("type").filter(|v| !v.is_null()) {
        None => PRIVATE_THREAD,
        Some(v) => match v.as_u64() {
            Some(11) => PUBLIC_THREAD,
            Some(12) => PRIVATE_THREAD,
            _ => {
                errors.add(
                    &["type"],
                    "BASE_TYPE_CHOICES",
                    "Value must be one of {10, 11, 12}.",
                );
                PRIVATE_THREAD
            }
        },
    };
    errors.into_result()?;
    let mut world = shared.world();
    let parent = visible_channel(&world, channel_id)?;
    // Private threads exist only in normal text channels; threads not inside threads or DMs.
    if parent.kind != GUILD_TEXT {
        return Err(ApiError::wrong_channel_type());
    }
    if thread_limit_reached(&world) {
        return Err(ApiError::new(
            400,
            160006,
            "Maximum number of active threads reached",
        ));
    }
    let id = world.ids.next();
    let now = unix_now_ms();
    let bot = world.bot_id;
    world.channels.insert(
        id,
        ChannelRec {
            id,
            kind,
            name: name.clone(),
            guild_id: parent.guild_id,
            parent_id: Some(channel_id),
            recipient: None,
            thread: Some(ThreadMeta {
                archived: false,
                locked: false,
                invitable: kind == PRIVATE_THREAD && invitable.unwrap_or(true),
                auto_archive_duration: duration,
                archive_timestamp_ms: now,
                create_timestamp_ms: now,
                owner_id: bot,
                members: BTreeMap::from([(bot, now)]),
                total_message_sent: 0,
            }),
            last_message_id: None,
            position: 0,
        },
    );
    announce_thread(&mut world, id, "THREAD_CREATE");
    let mut value = world.channel_json(&world.channels[&id]);
    value["member"] = world.thread_member_json(id, bot, now);
    Ok(Reply::Json(value))
}

fn thread_of(world: &World, channel_id: u64) -> ApiResult<(ChannelRec, ThreadMeta)> {
    let channel = visible_channel(world, channel_id)?;
    let thread = channel
        .thread
        .clone()
        .ok_or_else(ApiError::wrong_channel_type)?;
    Ok((channel, thread))
}

/// # `GET /channels/{channel_id}/thread-members`
pub(crate) fn thread_members(shared: &Shared, channel_id: u64) -> ApiResult<Reply> {
    let world = shared.world();
    let (_, thread) = thread_of(&world, channel_id)?;
    let list: Vec<Value> = thread
        .members
        .iter()
        .map(|(user, joined)| world.thread_member_json(channel_id, *user, *joined))
        .collect();
    Ok(Reply::Json(Value::Array(list)))
}

/// # `GET /channels/{channel_id}/thread-members/{user_id}`
pub(crate) fn thread_member(shared: &Shared, channel_id: u64, user: UserRef) -> ApiResult<Reply> {
    let world = shared.world();
    let (_, thread) = thread_of(&world, channel_id)?;
    let user = match user {
        UserRef::Me => world.bot_id,
        UserRef::Id(id) => id,
    };
    let joined = thread
        .members
        .get(&user)
        .ok_or_else(ApiError::unknown_member)?;
    Ok(Reply::Json(
        world.thread_member_json(channel_id, user, *joined),
    ))
}

/// THREAD_MEMBERS_UPDATE. Without GUILD_MEMBERS a session hears only about the bot itself.
fn announce_members(
    world: &mut World,
    thread_id: u64,
    added: Option<(u64, u64)>,
    removed: Option<u64>,
) {
    let count = world
        .channel(thread_id)
        .and_then(|c| c.thread.as_ref())
        .map_or(0, |t| t.members.len());
    let mut d = json!({
        "id": thread_id.to_string(),
        "guild_id": world.guild_id.to_string(),
        "member_count": count.min(50),
    });
    let mut about = 0;
    if let Some((user, joined)) = added {
        let mut member = world.thread_member_json(thread_id, user, joined);
        member["member"] = world.member_json(user, true);
        d["added_members"] = json!([member]);
        about = user;
    }
    if let Some(user) = removed {
        d["removed_member_ids"] = json!([user.to_string()]);
        about = user;
    }
    let needs = if about == world.bot_id {
        intents::GUILDS
    } else {
        intents::GUILDS | intents::GUILD_MEMBERS
    };
    world.dispatch("THREAD_MEMBERS_UPDATE", d, Audience::needs(needs));
}

fn member_target(world: &World, user: UserRef) -> ApiResult<u64> {
    let id = match user {
        UserRef::Me => world.bot_id,
        UserRef::Id(id) => id,
    };
    if !world.users.contains_key(&id) {
        return Err(ApiError::unknown_user());
    }
    if !world.members.contains_key(&id) {
        return Err(ApiError::unknown_member());
    }
    Ok(id)
}

/// # `PUT /channels/{channel_id}/thread-members/{user_id}`
pub(crate) fn add_thread_member(
    shared: &Shared,
    channel_id: u64,
    user: UserRef,
) -> ApiResult<Reply> {
    let mut world = shared.world();
    let (_, thread) = thread_of(&world, channel_id)?;
    if thread.archived {
        return Err(ApiError::archived_thread());
    }
    let user = member_target(&world, user)?;
    if thread.members.contains_key(&user) {
        return Ok(Reply::Empty);
    }
    let now = unix_now_ms();
    if let Some(meta) = world
        .channels
        .get_mut(&channel_id)
        .and_then(|c| c.thread.as_mut())
    {
        meta.members.insert(user, now);
    }
    announce_members(&mut world, channel_id, Some((user, now)), None);
    Ok(Reply::Empty)
}

/// # `DELETE /channels/{channel_id}/thread-members/{user_id}`
pub(crate) fn remove_thread_member(
    shared: &Shared,
    channel_id: u64,
    user: UserRef,
) -> ApiResult<Reply> {
    let mut world = shared.world();
    let (_, thread) = thread_of(&world, channel_id)?;
    if thread.archived {
        return Err(ApiError::archived_thread());
    }
    let user = member_target(&world, user)?;
    if !thread.members.contains_key(&user) {
        return Err(ApiError::unknown_member());
    }
    if let Some(meta) = world
        .channels
        .get_mut(&channel_id)
        .and_then(|c| c.thread.as_mut())
    {
        meta.members.remove(&user);
    }
    announce_members(&mut world, channel_id, None, Some(user));
    Ok(Reply::Empty)
}
