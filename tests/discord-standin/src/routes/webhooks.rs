//! Channel webhooks: creating and listing them (bot token), executing them and editing or
//! deleting their messages (webhook token, no `Authorization`), also into threads.

use serde_json::Value;

use super::MessageRef;
use super::messages::{self, NewMessage, apply_edit, body, visible_channel};
use crate::error::{ApiError, ApiResult, FormErrors};
use crate::rest::{Reply, Req};
use crate::state::{Author, GUILD_TEXT, Shared, WebhookRec, World};
use crate::validate::{self, Purpose, webhook_name};

/// # `POST /channels/{channel_id}/webhooks`
pub(crate) fn create(shared: &Shared, channel_id: u64, req: &Req) -> ApiResult<Reply> {
    let mut errors = FormErrors::default();
    let name = match req.json.get("name") {
        Some(Value::String(name)) => {
            webhook_name(&mut errors, "name", name);
            name.clone()
        }
        _ => {
            errors.add(&["name"], "BASE_TYPE_REQUIRED", "This field is required");
            String::new()
        }
    };
    errors.into_result()?;
    let mut world = shared.world();
    let channel = visible_channel(&world, channel_id)?;
    if channel.kind != GUILD_TEXT {
        return Err(ApiError::wrong_channel_type());
    }
    let id = world.ids.next();
    let token = format!(
        "whtok-{:x}-{:x}",
        id,
        id.rotate_left(17) ^ 0x9e37_79b9_7f4a_7c15
    );
    let webhook = WebhookRec {
        id,
        token,
        name,
        channel_id,
        creator: world.bot_id,
    };
    let value = world.webhook_json(&webhook);
    world.webhooks.insert(id, webhook);
    Ok(Reply::Json(value))
}

/// # `GET /channels/{channel_id}/webhooks`
pub(crate) fn list(shared: &Shared, channel_id: u64) -> ApiResult<Reply> {
    let world = shared.world();
    visible_channel(&world, channel_id)?;
    let list: Vec<Value> = world
        .webhooks
        .values()
        .filter(|w| w.channel_id == channel_id)
        .map(|w| world.webhook_json(w))
        .collect();
    Ok(Reply::Json(Value::Array(list)))
}

fn webhook(world: &World, id: u64, token: &str) -> ApiResult<WebhookRec> {
    world
        .webhooks
        .get(&id)
        .filter(|w| w.token == token)
        .cloned()
        .ok_or_else(ApiError::unknown_webhook)
}

/// The channel a webhook call is for: the webhook's channel, or `thread_id` which must be a
/// thread under it.
fn target_channel(world: &World, webhook: &WebhookRec, req: &Req) -> ApiResult<u64> {
    let Some(raw) = req.query.get("thread_id") else {
        return Ok(webhook.channel_id);
    };
    let thread_id: u64 = raw.parse().map_err(|_| {
        ApiError::field(
            &["thread_id"],
            "NUMBER_TYPE_COERCE",
            &format!("Value \"{raw}\" is not snowflake."),
        )
    })?;
    let thread = world
        .channel(thread_id)
        .ok_or_else(ApiError::unknown_channel)?;
    if !thread.is_thread() || thread.parent_id != Some(webhook.channel_id) {
        return Err(ApiError::unknown_channel());
    }
    Ok(thread_id)
}

/// # `POST /webhooks/{webhook_id}/{webhook_token}?wait=&thread_id=`
pub(crate) fn execute(shared: &Shared, id: u64, token: &str, req: Req) -> ApiResult<Reply> {
    let input = validate::message(&body(&req), Purpose::Webhook)?;
    let mut world = shared.world();
    let webhook = webhook(&world, id, token)?;
    let channel_id = target_channel(&world, &webhook, &req)?;
    let author = Author::Webhook {
        id,
        username: input.username.clone().unwrap_or(webhook.name.clone()),
        avatar_url: input.avatar_url.clone(),
    };
    let message_id = messages::post(
        &mut world,
        channel_id,
        NewMessage::by(author, input, req.files),
    )?;
    let wait = req
        .query
        .get("wait")
        .is_some_and(|w| w == "true" || w == "1");
    let reply = if wait {
        let message = world.message(channel_id, message_id).expect("just stored");
        Reply::Json(world.message_json(message, false))
    } else {
        Reply::Empty
    };
    drop(world);
    shared.notify_messages();
    Ok(reply)
}

/// The webhook's own message in the target channel.
fn own_message(
    world: &World,
    webhook: &WebhookRec,
    req: &Req,
    message: MessageRef,
) -> ApiResult<(u64, u64)> {
    let channel_id = target_channel(world, webhook, req)?;
    let MessageRef::Id(message_id) = message else {
        return Err(ApiError::unknown_message());
    };
    let stored = world
        .message(channel_id, message_id)
        .ok_or_else(ApiError::unknown_message)?;
    match &stored.author {
        Author::Webhook { id, .. } if *id == webhook.id => Ok((channel_id, message_id)),
        _ => Err(ApiError::unknown_message()),
    }
}

/// # `GET /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}`
pub(crate) fn get_message(
    shared: &Shared,
    id: u64,
    token: &str,
    message: MessageRef,
    req: &Req,
) -> ApiResult<Reply> {
    let world = shared.world();
    let webhook = webhook(&world, id, token)?;
    let (channel_id, message_id) = own_message(&world, &webhook, req, message)?;
    let message = world.message(channel_id, message_id).expect("checked");
    Ok(Reply::Json(world.message_json(message, false)))
}

/// # `PATCH /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}`
pub(crate) fn edit_message(
    shared: &Shared,
    id: u64,
    token: &str,
    message: MessageRef,
    req: Req,
) -> ApiResult<Reply> {
    let input = validate::message(&body(&req), Purpose::Edit)?;
    let mut world = shared.world();
    let webhook = webhook(&world, id, token)?;
    let (channel_id, message_id) = own_message(&world, &webhook, &req, message)?;
    let value = apply_edit(&mut world, channel_id, message_id, input, req.files)?;
    drop(world);
    shared.notify_messages();
    Ok(Reply::Json(value))
}

/// # `DELETE /webhooks/{webhook_id}/{webhook_token}/messages/{message_id}`
pub(crate) fn delete_message(
    shared: &Shared,
    id: u64,
    token: &str,
    message: MessageRef,
    req: &Req,
) -> ApiResult<Reply> {
    let mut world = shared.world();
    let webhook = webhook(&world, id, token)?;
    let (channel_id, message_id) = own_message(&world, &webhook, req, message)?;
    messages::remove(&mut world, channel_id, message_id)?;
    drop(world);
    shared.notify_messages();
    Ok(Reply::Empty)
}
