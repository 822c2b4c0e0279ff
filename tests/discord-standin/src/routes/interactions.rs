//! Interaction responses: the callback (once, within 3 s), then follow-ups and `@original`
//! edits through `/webhooks/{application_id}/{interaction_token}` for 15 minutes.

use std::time::Instant;

use serde_json::{Value, json};

use super::MessageRef;
use super::messages::{self, NewMessage, apply_edit};
use crate::error::{ApiError, ApiResult};
use crate::rest::{Reply, Req};
use crate::state::{Author, INTERACTION_TOKEN_LIFETIME, InteractionRec, MessageRec, Shared, World};
use crate::validate::{self, EPHEMERAL, Purpose};

/// Message flag LOADING: a deferred response's "thinking..." placeholder.
const LOADING: u64 = 1 << 7;

/// Is `/webhooks/{id}/{token}` an interaction's webhook rather than a channel webhook?
pub(crate) fn is_followup(shared: &Shared, webhook_id: u64, token: &str) -> bool {
    let world = shared.world();
    webhook_id == world.application_id
        && world.interactions.values().any(|i| i.public.token == token)
}

fn metadata(world: &World, rec: &InteractionRec) -> Value {
    let user = rec.public.user_id;
    let mut value = json!({
        "id": rec.public.id.to_string(),
        "type": rec.public.kind,
        "user": world.user_json(user),
        "authorizing_integration_owners": if rec.payload["guild_id"].is_string() {
            json!({ "0": rec.payload["guild_id"] })
        } else {
            json!({ "1": user.to_string() })
        },
    });
    if let Some(message_id) = rec.public.message_id {
        value["interacted_message_id"] = json!(message_id.to_string());
    }
    value
}

/// Creates the response message of an interaction (types 4 and 5).
fn response_message(
    world: &mut World,
    rec: &InteractionRec,
    input: validate::MessageInput,
    files: Vec<crate::rest::Upload>,
    loading: bool,
) -> ApiResult<u64> {
    let channel_id = rec.public.channel_id;
    let kind = if rec.public.kind == 2 {
        Some(20)
    } else {
        Some(0)
    };
    if loading {
        // A placeholder with no content, which `post` would refuse as empty.
        let id = world.ids.next();
        world.store_message(MessageRec {
            id,
            channel_id,
            author: Author::User(world.bot_id),
            content: String::new(),
            components: json!([]),
            embeds: json!([]),
            attachments: Vec::new(),
            allowed_mentions: None,
            reference: None,
            kind: kind.unwrap_or(0),
            flags: LOADING | input.flags.unwrap_or(0),
            tts: false,
            nonce: None,
            edited_ms: None,
            application_id: Some(world.application_id),
            interaction_metadata: Some(metadata(world, rec)),
        });
        world.dispatch_message("MESSAGE_CREATE", channel_id, id);
        return Ok(id);
    }
    let mut new = NewMessage::by(Author::User(world.bot_id), input, files);
    new.application_id = Some(world.application_id);
    new.interaction_metadata = Some(metadata(world, rec));
    new.kind = kind;
    messages::post(world, channel_id, new)
}

/// # `POST /interactions/{interaction_id}/{interaction_token}/callback`
pub(crate) fn callback(shared: &Shared, id: u64, token: &str, req: Req) -> ApiResult<Reply> {
    let mut world = shared.world();
    let rec = world
        .interactions
        .get(&id)
        .filter(|i| i.public.token == token)
        .cloned()
        .ok_or_else(ApiError::unknown_interaction)?;
    let elapsed = rec.created.elapsed();
    if elapsed > world.interaction_deadline {
        return Err(ApiError::unknown_interaction());
    }
    if rec.response.is_some() {
        return Err(ApiError::new(
            400,
            40060,
            "Interaction has already been acknowledged",
        ));
    }
    let kind = req.json.get("type").and_then(Value::as_u64);
    let allowed: &[u64] = if rec.public.kind == 3 {
        &[4, 5, 6, 7, 9]
    } else {
        &[4, 5, 9]
    };
    let Some(kind) = kind.filter(|k| allowed.contains(k)) else {
        let list: Vec<String> = allowed.iter().map(u64::to_string).collect();
        return Err(ApiError::field(
            &["type"],
            "BASE_TYPE_CHOICES",
            &format!("Value must be one of {{{}}}.", list.join(", ")),
        ));
    };
    let data = req
        .json
        .get("data")
        .cloned()
        .filter(|d| !d.is_null())
        .unwrap_or_else(|| json!({}));
    let mut original = None;
    let mut messages_changed = false;
    match kind {
        4 | 5 => {
            let input = validate::message(&data, Purpose::Interaction)?;
            let ephemeral = input.flags.unwrap_or(0) & EPHEMERAL != 0;
            if kind == 4 && input.is_empty(req.files.len()) {
                return Err(ApiError::new(400, 50006, "Cannot send an empty message"));
            }
            // Ephemeral responses are seen only by the user who interacted: not in the channel.
            if !ephemeral {
                original = Some(response_message(
                    &mut world,
                    &rec,
                    input,
                    req.files,
                    kind == 5,
                )?);
                messages_changed = true;
            }
        }
        7 => {
            let input = validate::message(&data, Purpose::Edit)?;
            let message_id = rec
                .public
                .message_id
                .expect("component interactions have a message");
            apply_edit(
                &mut world,
                rec.public.channel_id,
                message_id,
                input,
                req.files,
            )?;
            original = Some(message_id);
            messages_changed = true;
        }
        6 => original = rec.public.message_id,
        _ => {
            let ok = data["custom_id"].is_string()
                && data["title"].is_string()
                && data["components"].is_array();
            if !ok {
                return Err(ApiError::field(
                    &["data"],
                    "BASE_TYPE_REQUIRED",
                    "A modal needs custom_id, title and components.",
                ));
            }
        }
    }
    if let Some(stored) = world.interactions.get_mut(&id) {
        stored.response = Some(req.json.clone());
        stored.answered_after = Some(elapsed);
        stored.original_message = original;
    }
    drop(world);
    shared.notify_interactions();
    if messages_changed {
        shared.notify_messages();
    }
    Ok(Reply::Empty)
}

/// The interaction owning a token, while the token is valid.
fn by_token(world: &World, token: &str) -> ApiResult<InteractionRec> {
    world
        .interactions
        .values()
        .find(|i| i.public.token == token)
        .filter(|i| Instant::now().duration_since(i.created) < INTERACTION_TOKEN_LIFETIME)
        .cloned()
        .ok_or_else(ApiError::unknown_webhook)
}

/// # `POST /webhooks/{application_id}/{interaction_token}` (follow-up message)
pub(crate) fn followup(shared: &Shared, token: &str, req: Req) -> ApiResult<Reply> {
    let data = messages::body(&req);
    let input = validate::message(&data, Purpose::Interaction)?;
    let mut world = shared.world();
    let rec = by_token(&world, token)?;
    if rec.response.is_none() {
        return Err(ApiError::unknown_webhook());
    }
    if input.flags.unwrap_or(0) & EPHEMERAL != 0 {
        if input.is_empty(req.files.len()) {
            return Err(ApiError::new(400, 50006, "Cannot send an empty message"));
        }
        // Shown to one user only: answered as a message, never stored in the channel.
        let id = world.ids.next();
        let message = MessageRec {
            id,
            channel_id: rec.public.channel_id,
            author: Author::User(world.bot_id),
            content: input.content.unwrap_or_default(),
            components: input.components.unwrap_or_else(|| json!([])),
            embeds: input.embeds.unwrap_or_else(|| json!([])),
            attachments: Vec::new(),
            allowed_mentions: input.allowed_mentions,
            reference: None,
            kind: 0,
            flags: input.flags.unwrap_or(0),
            tts: false,
            nonce: None,
            edited_ms: None,
            application_id: Some(world.application_id),
            interaction_metadata: Some(metadata(&world, &rec)),
        };
        return Ok(Reply::Json(world.message_json(&message, false)));
    }
    let mut new = NewMessage::by(Author::User(world.bot_id), input, req.files);
    new.application_id = Some(world.application_id);
    new.interaction_metadata = Some(metadata(&world, &rec));
    let channel_id = rec.public.channel_id;
    let id = messages::post(&mut world, channel_id, new)?;
    let value = world.message_json(world.message(channel_id, id).expect("stored"), false);
    drop(world);
    shared.notify_messages();
    Ok(Reply::Json(value))
}

/// The message `@original` or a follow-up id stands for.
fn target(world: &World, rec: &InteractionRec, message: MessageRef) -> ApiResult<u64> {
    let id = match message {
        MessageRef::Original => rec.original_message,
        MessageRef::Id(id) => Some(id),
    }
    .ok_or_else(ApiError::unknown_message)?;
    let stored = world
        .message(rec.public.channel_id, id)
        .ok_or_else(ApiError::unknown_message)?;
    let ours = stored.author == Author::User(world.bot_id);
    ours.then_some(id).ok_or_else(ApiError::unknown_message)
}

/// # `GET /webhooks/{application_id}/{interaction_token}/messages/{message_id|@original}`
pub(crate) fn get_message(shared: &Shared, token: &str, message: MessageRef) -> ApiResult<Reply> {
    let world = shared.world();
    let rec = by_token(&world, token)?;
    let id = target(&world, &rec, message)?;
    let stored = world.message(rec.public.channel_id, id).expect("checked");
    Ok(Reply::Json(world.message_json(stored, false)))
}

/// # `PATCH /webhooks/{application_id}/{interaction_token}/messages/{message_id|@original}`
pub(crate) fn edit_message(
    shared: &Shared,
    token: &str,
    message: MessageRef,
    req: Req,
) -> ApiResult<Reply> {
    let input = validate::message(&messages::body(&req), Purpose::Edit)?;
    let mut world = shared.world();
    let rec = by_token(&world, token)?;
    let id = target(&world, &rec, message)?;
    let channel_id = rec.public.channel_id;
    // Editing a deferred response replaces its "thinking..." placeholder.
    if let Some(stored) = world
        .messages
        .get_mut(&channel_id)
        .and_then(|m| m.get_mut(&id))
    {
        stored.flags &= !LOADING;
    }
    let value = apply_edit(&mut world, channel_id, id, input, req.files)?;
    drop(world);
    shared.notify_messages();
    Ok(Reply::Json(value))
}

/// # `DELETE /webhooks/{application_id}/{interaction_token}/messages/{message_id|@original}`
pub(crate) fn delete_message(
    shared: &Shared,
    token: &str,
    message: MessageRef,
) -> ApiResult<Reply> {
    let mut world = shared.world();
    let rec = by_token(&world, token)?;
    let id = target(&world, &rec, message)?;
    messages::remove(&mut world, rec.public.channel_id, id)?;
    drop(world);
    shared.notify_messages();
    Ok(Reply::Empty)
}
