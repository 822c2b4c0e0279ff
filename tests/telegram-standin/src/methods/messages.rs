//! Sending, editing and deleting messages, and answering callback queries.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use super::{Success, chat_id, check_send_interval, require_chat};
use crate::error::{ApiError, ApiResult};
use crate::keyboard;
use crate::params::Params;
use crate::state::{Shared, StoredMessage, World, unix_now, unix_now_ms};
use crate::text::{self, Formatted, MAX_CAPTION_LEN, MAX_TEXT_LEN, utf16_len};

/// Which text a message field holds; it decides the parameter names and the limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) enum Field {
    Text,
    Caption,
}

/// Parses `text`/`caption` with `parse_mode` and `entities`/`caption_entities`, enforcing
/// the documented limits. Returns the formatted text and the parse_mode as given.
pub(crate) fn formatted_input(
    world: &World,
    params: &Params,
    field: Field,
) -> ApiResult<(Formatted, Option<String>)> {
    let (name, entities_name) = match field {
        Field::Text => ("text", "entities"),
        Field::Caption => ("caption", "caption_entities"),
    };
    let raw = params.str(name).unwrap_or_default();
    let parse_mode = params.str("parse_mode").filter(|m| !m.is_empty());
    let entities = params
        .json(entities_name)
        .map_err(|_| ApiError::bad_request("can't parse entities JSON object"))?;
    let users = |id: i64| world.known_user_json(id);
    let formatted = text::prepare(&raw, parse_mode.as_deref(), entities.as_ref(), &users)?;
    let length = utf16_len(&formatted.text);
    match field {
        Field::Text if formatted.text.is_empty() => {
            return Err(ApiError::bad_request("message text is empty"));
        }
        Field::Text if length > MAX_TEXT_LEN => {
            return Err(ApiError::bad_request("message is too long"));
        }
        Field::Caption if length > MAX_CAPTION_LEN => {
            return Err(ApiError::bad_request("message caption is too long"));
        }
        _ => {}
    }
    Ok((formatted, parse_mode))
}

/// Parses and validates `reply_markup`; `Ok(None)` when absent or not echoed in the Message.
pub(crate) fn reply_markup(params: &Params) -> ApiResult<Option<Value>> {
    match params.json("reply_markup") {
        Err(()) => Err(ApiError::bad_request(
            "can't parse reply keyboard markup JSON object",
        )),
        Ok(None) => Ok(None),
        Ok(Some(markup)) => keyboard::validate(&markup),
    }
}

/// Resolves `reply_parameters` (or the legacy `reply_to_message_id`) to a message id in `chat`.
pub(crate) fn reply_target(world: &World, chat: i64, params: &Params) -> ApiResult<Option<i64>> {
    let parameters = params
        .json("reply_parameters")
        .map_err(|_| ApiError::bad_request("can't parse reply parameters JSON object"))?;
    let (target_chat, message_id, allow_missing, quote) = match parameters {
        Some(rp) => {
            let message_id = rp.get("message_id").and_then(Value::as_i64).ok_or_else(|| {
                ApiError::bad_request("can't parse reply parameters JSON object: Field \"message_id\" must be of type Number")
            })?;
            let target_chat = match rp.get("chat_id") {
                None | Some(Value::Null) => chat,
                Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
                Some(Value::String(s)) => s
                    .parse()
                    .map_err(|_| ApiError::bad_request("chat not found"))?,
                Some(_) => return Err(ApiError::bad_request("chat not found")),
            };
            let allow = rp
                .get("allow_sending_without_reply")
                .and_then(Value::as_bool)
                .unwrap_or(false);
            let quote = rp.get("quote").and_then(Value::as_str).map(str::to_owned);
            (target_chat, message_id, allow, quote)
        }
        None => match params.i64("reply_to_message_id")? {
            Some(id) if id != 0 => (chat, id, params.bool("allow_sending_without_reply"), None),
            _ => return Ok(None),
        },
    };
    let target = world
        .chats
        .get(&target_chat)
        .and_then(|c| c.messages.get(&message_id));
    match target {
        None if allow_missing => Ok(None),
        None => Err(ApiError::bad_request("message to be replied not found")),
        Some(msg) => {
            if let Some(quote) = quote
                && !msg.body.text.contains(&quote)
            {
                return Err(ApiError::bad_request("QUOTE_TEXT_INVALID"));
            }
            // Replies across chats (external replies) are not modelled; only same-chat
            // replies carry reply_to_message.
            Ok((target_chat == chat).then_some(message_id))
        }
    }
}

/// Adds a bot message to `chat` and returns its `Message` JSON.
pub(crate) fn store_bot_message(
    world: &mut World,
    chat: i64,
    sent_at: Instant,
    mut message: StoredMessage,
) -> Value {
    let conversation = world
        .chats
        .get_mut(&chat)
        .expect("caller checked the chat exists");
    let id = conversation.next_message_id();
    message.message_id = id;
    conversation.messages.insert(id, message);
    world.faults.record_send(chat, sent_at);
    world.message_json(chat, id, true).expect("just stored")
}

/// # `sendMessage`
pub(crate) fn send_message(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    let chat = chat_id(params)?;
    let mut world = shared.world();
    let (body, parse_mode) = formatted_input(&world, params, Field::Text)?;
    let markup = reply_markup(params)?;
    require_chat(&world, chat)?;
    let reply_to = reply_target(&world, chat, params)?;
    let sent_at = check_send_interval(&world, chat)?;
    let message = StoredMessage {
        message_id: 0,
        from_bot: true,
        date: unix_now(),
        edit_date: None,
        received_at_ms: unix_now_ms(),
        edited_at_ms: None,
        body,
        parse_mode,
        file_id: None,
        reply_to,
        reply_markup: markup,
    };
    let json = store_bot_message(&mut world, chat, sent_at, message);
    drop(world);
    shared.notify_sent();
    Ok(json.into())
}

/// Finds the bot message an edit method targets.
fn edit_target<'w>(
    world: &'w mut World,
    params: &Params,
) -> ApiResult<(i64, &'w mut StoredMessage)> {
    if params.has("inline_message_id") {
        // Inline messages are never created here, so no inline_message_id can be valid.
        return Err(ApiError::bad_request("MESSAGE_ID_INVALID"));
    }
    let chat = chat_id(params)?;
    let message_id = params
        .i64("message_id")?
        .ok_or_else(|| ApiError::bad_request("message identifier is not specified"))?;
    let conversation = world
        .chats
        .get_mut(&chat)
        .ok_or_else(|| ApiError::bad_request("chat not found"))?;
    let message = conversation
        .messages
        .get_mut(&message_id)
        .ok_or_else(|| ApiError::bad_request("message to edit not found"))?;
    if !message.from_bot {
        return Err(ApiError::bad_request("message can't be edited"));
    }
    Ok((chat, message))
}

const NOT_MODIFIED: &str = "message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message";

/// Applies an edit of the body and/or the markup, refusing a no-op as Telegram does.
fn apply_edit(shared: &Arc<Shared>, params: &Params, field: Option<Field>) -> ApiResult<Success> {
    let mut world = shared.world();
    let new_body = match field {
        // Edits report an over-long text differently from sends.
        Some(field) => Some(formatted_input(&world, params, field).map_err(|e| {
            if e.description == "Bad Request: message is too long" {
                ApiError::bad_request("MESSAGE_TOO_LONG")
            } else {
                e
            }
        })?),
        None => None,
    };
    // Leaving out reply_markup in an edit removes the inline keyboard.
    let new_markup = reply_markup(params)?;
    let (chat, message) = edit_target(&mut world, params)?;
    match field {
        Some(Field::Text) if message.file_id.is_some() => {
            return Err(ApiError::bad_request(
                "there is no text in the message to edit",
            ));
        }
        Some(Field::Caption) if message.file_id.is_none() => {
            return Err(ApiError::bad_request(
                "there is no caption in the message to edit",
            ));
        }
        _ => {}
    }
    let same_body = new_body
        .as_ref()
        .is_none_or(|(body, _)| *body == message.body);
    if same_body && new_markup == message.reply_markup {
        return Err(ApiError::bad_request(NOT_MODIFIED));
    }
    if let Some((body, parse_mode)) = new_body {
        message.body = body;
        message.parse_mode = parse_mode;
    }
    message.reply_markup = new_markup;
    message.edit_date = Some(unix_now());
    message.edited_at_ms = Some(unix_now_ms());
    let id = message.message_id;
    let json = world.message_json(chat, id, true).expect("message exists");
    drop(world);
    shared.notify_sent();
    Ok(json.into())
}

/// # `editMessageText`
pub(crate) fn edit_message_text(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    apply_edit(shared, params, Some(Field::Text))
}

/// # `editMessageCaption`
pub(crate) fn edit_message_caption(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    apply_edit(shared, params, Some(Field::Caption))
}

/// # `editMessageReplyMarkup`
pub(crate) fn edit_message_reply_markup(
    shared: &Arc<Shared>,
    params: &Params,
) -> ApiResult<Success> {
    apply_edit(shared, params, None)
}

/// # `deleteMessage`: bots may delete their own and the user's messages in private chats.
pub(crate) fn delete_message(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    let chat = chat_id(params)?;
    let message_id = params
        .i64("message_id")?
        .ok_or_else(|| ApiError::bad_request("message identifier is not specified"))?;
    let removed = {
        let mut world = shared.world();
        let conversation = world
            .chats
            .get_mut(&chat)
            .ok_or_else(|| ApiError::bad_request("chat not found"))?;
        conversation.messages.remove(&message_id)
    };
    match removed {
        Some(_) => {
            shared.notify_sent();
            Ok(json!(true).into())
        }
        None => Err(ApiError::bad_request("message to delete not found")),
    }
}

/// # `answerCallbackQuery`: each query id can be answered once.
pub(crate) fn answer_callback_query(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    let too_old = || {
        ApiError::bad_request(
            "query is too old and response timeout expired or query ID is invalid",
        )
    };
    let id = params.str("callback_query_id").unwrap_or_default();
    let text = params.str("text").filter(|t| !t.is_empty());
    if text.as_ref().is_some_and(|t| t.chars().count() > 200) {
        return Err(ApiError::bad_request("MESSAGE_TOO_LONG"));
    }
    let mut world = shared.world();
    match world.callbacks.get_mut(&id) {
        Some(answered @ false) => *answered = true,
        _ => return Err(too_old()),
    }
    world.answered_callbacks.push((id, text));
    Ok(json!(true).into())
}
