//! The Bot API methods: a dispatch table plus the small methods (bot info, commands, chats).
//! Message, file and update methods live in the submodules.

mod files;
mod messages;
mod polling;

use std::sync::Arc;
use std::time::Instant;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::state::{Shared, World};

pub(crate) use files::{download, image_size};

/// A successful answer: `{"ok":true,"result":...}` plus an optional `description`
/// (the real server adds one to setWebhook / deleteWebhook answers).
#[derive(Debug)]
pub(crate) struct Success {
    pub result: Value,
    pub description: Option<String>,
}

impl From<Value> for Success {
    fn from(result: Value) -> Self {
        Success {
            result,
            description: None,
        }
    }
}

/// Methods this stand-in implements, lowercase.
const IMPLEMENTED: &[&str] = &[
    "getme",
    "logout",
    "close",
    "setmycommands",
    "getmycommands",
    "deletemycommands",
    "getupdates",
    "setwebhook",
    "deletewebhook",
    "getwebhookinfo",
    "sendmessage",
    "editmessagetext",
    "editmessagecaption",
    "editmessagereplymarkup",
    "deletemessage",
    "answercallbackquery",
    "sendchataction",
    "getchat",
    "sendphoto",
    "senddocument",
    "getfile",
];

/// Real Bot API methods that this stand-in does not implement. They are refused with a
/// message that names the stand-in, rather than 404, so a test failure points at the gap
/// instead of suggesting the client misspelt a method.
const NOT_IMPLEMENTED: &[&str] = &[
    "forwardmessage",
    "forwardmessages",
    "copymessage",
    "copymessages",
    "sendaudio",
    "sendvideo",
    "sendanimation",
    "sendvoice",
    "sendvideonote",
    "sendpaidmedia",
    "sendmediagroup",
    "sendlocation",
    "sendvenue",
    "sendcontact",
    "sendpoll",
    "senddice",
    "setmessagereaction",
    "getuserprofilephotos",
    "banchatmember",
    "unbanchatmember",
    "restrictchatmember",
    "promotechatmember",
    "setchatadministratorcustomtitle",
    "setchatpermissions",
    "exportchatinvitelink",
    "createchatinvitelink",
    "setchatphoto",
    "deletechatphoto",
    "setchattitle",
    "setchatdescription",
    "pinchatmessage",
    "unpinchatmessage",
    "unpinallchatmessages",
    "leavechat",
    "getchatadministrators",
    "getchatmembercount",
    "getchatmember",
    "answerinlinequery",
    "setmyname",
    "getmyname",
    "setmydescription",
    "getmydescription",
    "setmyshortdescription",
    "getmyshortdescription",
    "setchatmenubutton",
    "getchatmenubutton",
    "editmessagemedia",
    "editmessagelivelocation",
    "stopmessagelivelocation",
    "stoppoll",
    "deletemessages",
    "sendsticker",
    "getstickerset",
    "sendinvoice",
    "sendgame",
    "getbusinessconnection",
    "getuserchatboosts",
    "setmydefaultadministratorrights",
    "getmydefaultadministratorrights",
];

/// Whether the Bot API has this (lowercase) method name at all; unknown names get 404.
pub(crate) fn exists(method: &str) -> bool {
    IMPLEMENTED.contains(&method) || NOT_IMPLEMENTED.contains(&method)
}

/// Runs a (lowercase) method.
pub(crate) async fn call(
    shared: &Arc<Shared>,
    method: &str,
    params: &Params,
) -> ApiResult<Success> {
    match method {
        "getme" => Ok(shared.world().bot.me_json().into()),
        // Both only matter for moving a bot between servers; here they just succeed.
        "logout" | "close" => Ok(json!(true).into()),
        "setmycommands" => set_my_commands(&mut shared.world(), params),
        "getmycommands" => get_my_commands(&shared.world(), params),
        "deletemycommands" => delete_my_commands(&mut shared.world(), params),
        "getupdates" => polling::get_updates(shared, params).await,
        "setwebhook" => polling::set_webhook(shared, params),
        "deletewebhook" => polling::delete_webhook(shared, params),
        "getwebhookinfo" => polling::get_webhook_info(shared),
        "sendmessage" => messages::send_message(shared, params),
        "editmessagetext" => messages::edit_message_text(shared, params),
        "editmessagecaption" => messages::edit_message_caption(shared, params),
        "editmessagereplymarkup" => messages::edit_message_reply_markup(shared, params),
        "deletemessage" => messages::delete_message(shared, params),
        "answercallbackquery" => messages::answer_callback_query(shared, params),
        "sendchataction" => send_chat_action(&shared.world(), params),
        "getchat" => get_chat(&shared.world(), params),
        "sendphoto" => files::send_photo(shared, params),
        "senddocument" => files::send_document(shared, params),
        "getfile" => files::get_file(shared, params),
        _ => Err(ApiError::bad_request(format!(
            "method \"{method}\" is not implemented by the Telegram stand-in"
        ))),
    }
}

/// `chat_id` as an integer. Private chats cannot be addressed by `@username`, so any
/// non-numeric id is a chat the bot cannot find.
pub(crate) fn chat_id(params: &Params) -> ApiResult<i64> {
    match params.str("chat_id").map(|s| s.trim().to_owned()) {
        None => Err(ApiError::bad_request("chat_id is empty")),
        Some(s) if s.is_empty() => Err(ApiError::bad_request("chat_id is empty")),
        Some(s) => s
            .parse()
            .map_err(|_| ApiError::bad_request("chat not found")),
    }
}

/// Refuses chats the bot has never seen.
pub(crate) fn require_chat(world: &World, chat_id: i64) -> ApiResult<()> {
    if world.chats.contains_key(&chat_id) {
        Ok(())
    } else {
        Err(ApiError::bad_request("chat not found"))
    }
}

/// Commands are stored per (scope, language); the key is their JSON.
fn commands_key(params: &Params) -> ApiResult<String> {
    let scope = params
        .json("scope")
        .map_err(|_| ApiError::bad_request("can't parse BotCommandScope JSON object"))?
        .unwrap_or_else(|| json!({ "type": "default" }));
    let language = params.str("language_code").unwrap_or_default();
    Ok(format!("{scope}|{language}"))
}

/// # `setMyCommands`
fn set_my_commands(world: &mut World, params: &Params) -> ApiResult<Success> {
    let commands = params
        .json("commands")
        .map_err(|_| ApiError::bad_request("can't parse commands JSON object"))?
        .ok_or_else(|| ApiError::bad_request("parameter \"commands\" is required"))?;
    let list = commands
        .as_array()
        .ok_or_else(|| ApiError::bad_request("field \"commands\" must be an Array"))?;
    if list.len() > 100 {
        return Err(ApiError::bad_request("too many commands specified"));
    }
    let mut clean = Vec::with_capacity(list.len());
    for item in list {
        let command = item.get("command").and_then(Value::as_str).unwrap_or("");
        let description = item
            .get("description")
            .and_then(Value::as_str)
            .unwrap_or("");
        let command_ok = (1..=32).contains(&command.len())
            && command
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !command_ok {
            return Err(ApiError::bad_request("BOT_COMMAND_INVALID"));
        }
        if !(1..=256).contains(&description.chars().count()) {
            return Err(ApiError::bad_request(
                "command description is empty or too long",
            ));
        }
        clean.push(json!({ "command": command, "description": description }));
    }
    world
        .commands
        .insert(commands_key(params)?, Value::Array(clean));
    Ok(json!(true).into())
}

/// # `getMyCommands`
fn get_my_commands(world: &World, params: &Params) -> ApiResult<Success> {
    Ok(world
        .commands
        .get(&commands_key(params)?)
        .cloned()
        .unwrap_or_else(|| json!([]))
        .into())
}

/// # `deleteMyCommands`
fn delete_my_commands(world: &mut World, params: &Params) -> ApiResult<Success> {
    world.commands.remove(&commands_key(params)?);
    Ok(json!(true).into())
}

/// # `sendChatAction`
fn send_chat_action(world: &World, params: &Params) -> ApiResult<Success> {
    let chat = chat_id(params)?;
    const ACTIONS: &[&str] = &[
        "typing",
        "upload_photo",
        "record_video",
        "upload_video",
        "record_voice",
        "upload_voice",
        "upload_document",
        "choose_sticker",
        "find_location",
        "record_video_note",
        "upload_video_note",
    ];
    let action = params.str("action").unwrap_or_default();
    if !ACTIONS.contains(&action.as_str()) {
        return Err(ApiError::bad_request("wrong parameter action in request"));
    }
    require_chat(world, chat)?;
    Ok(json!(true).into())
}

/// # `getChat`: a `ChatFullInfo` for a private chat.
fn get_chat(world: &World, params: &Params) -> ApiResult<Success> {
    let id = chat_id(params)?;
    let chat = world
        .chats
        .get(&id)
        .ok_or_else(|| ApiError::bad_request("chat not found"))?;
    let mut info = chat.json();
    info["accent_color_id"] = json!(0);
    info["max_reaction_count"] = json!(11);
    info["accepted_gift_types"] = json!({ "unlimited_gifts": true, "limited_gifts": true, "unique_gifts": true, "premium_subscription": true });
    Ok(info.into())
}

/// The time at which a send is attempted, checked against the per-chat interval.
pub(crate) fn check_send_interval(world: &World, chat: i64) -> ApiResult<Instant> {
    let now = Instant::now();
    match world.faults.check_send_interval(chat, now) {
        Some(err) => Err(err),
        None => Ok(now),
    }
}
