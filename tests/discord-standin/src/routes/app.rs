//! The bot's own objects: gateway URLs, `@me`, the application, and application commands
//! (bulk overwrite and list, global and per guild).

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, FormErrors};
use crate::rest::{Reply, Req};
use crate::state::Shared;

fn gateway_url(shared: &Shared) -> String {
    shared.base_url.replacen("http", "ws", 1)
}

/// # `GET /gateway`
pub(crate) fn gateway(shared: &Shared) -> ApiResult<Reply> {
    Ok(Reply::Json(json!({ "url": gateway_url(shared) })))
}

/// # `GET /gateway/bot`
pub(crate) fn gateway_bot(shared: &Shared) -> ApiResult<Reply> {
    let used = shared.world().gateway.identify_count;
    Ok(Reply::Json(json!({
        "url": gateway_url(shared),
        "shards": 1,
        "session_start_limit": {
            "total": 1000,
            "remaining": 1000usize.saturating_sub(used).max(1) - 1,
            "reset_after": 86_400_000,
            "max_concurrency": 1,
        },
    })))
}

/// # `GET /users/@me`
pub(crate) fn current_user(shared: &Shared) -> ApiResult<Reply> {
    Ok(Reply::Json(shared.world().current_user_json()))
}

/// # `GET /applications/@me` and `GET /oauth2/applications/@me`
pub(crate) fn application(shared: &Shared) -> ApiResult<Reply> {
    Ok(Reply::Json(shared.world().application_json()))
}

/// Command and option names: 1-32 letters, digits, `-` or `_`, no upper case (for slash
/// commands; Discord's `^[-_\p{L}\p{N}\p{sc=Deva}\p{sc=Thai}]{1,32}$`).
fn valid_name(name: &str, slash: bool) -> bool {
    let len = name.chars().count();
    (1..=32).contains(&len)
        && (!slash
            || name
                .chars()
                .all(|c| (c.is_alphanumeric() || c == '-' || c == '_') && !c.is_uppercase()))
}

fn check_options(errors: &mut FormErrors, path: &mut Vec<String>, options: &Value) {
    let Some(list) = options.as_array() else {
        push_error(errors, path, "options", "BASE_TYPE_LIST", "Must be a list.");
        return;
    };
    if list.len() > 25 {
        push_error(
            errors,
            path,
            "options",
            "BASE_TYPE_MAX_LENGTH",
            "Must be 25 or fewer in length.",
        );
    }
    let mut optional_seen = false;
    for (i, option) in list.iter().enumerate() {
        path.push("options".into());
        path.push(i.to_string());
        let kind = option["type"].as_u64();
        if !matches!(kind, Some(1..=11)) {
            push_error(
                errors,
                path,
                "type",
                "BASE_TYPE_CHOICES",
                "Value must be one of {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11}.",
            );
        }
        if !option["name"].as_str().is_some_and(|n| valid_name(n, true)) {
            push_error(
                errors,
                path,
                "name",
                "APPLICATION_COMMAND_INVALID_NAME",
                "Command name is invalid",
            );
        }
        let description = option["description"]
            .as_str()
            .map_or(0, |d| d.chars().count());
        if !(1..=100).contains(&description) {
            push_error(
                errors,
                path,
                "description",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            );
        }
        let required = option["required"].as_bool().unwrap_or(false);
        if required && optional_seen {
            push_error(
                errors,
                path,
                "required",
                "APPLICATION_COMMAND_OPTIONS_REQUIRED_INVALID",
                "Required options must be placed before non-required options",
            );
        }
        optional_seen |= !required;
        if let Some(choices) = option["choices"].as_array()
            && choices.len() > 25
        {
            push_error(
                errors,
                path,
                "choices",
                "BASE_TYPE_MAX_LENGTH",
                "Must be 25 or fewer in length.",
            );
        }
        if let Some(nested) = option.get("options") {
            check_options(errors, path, nested);
        }
        path.truncate(path.len() - 2);
    }
}

fn push_error(errors: &mut FormErrors, path: &[String], field: &str, code: &str, message: &str) {
    let mut full: Vec<&str> = path.iter().map(String::as_str).collect();
    full.push(field);
    errors.add(&full, code, message);
}

/// # `PUT /applications/{application_id}/commands` and `.../guilds/{guild_id}/commands`
///
/// Replaces the whole list; commands keep their id when their name stays.
pub(crate) fn overwrite_commands(
    shared: &Shared,
    app_id: u64,
    guild: Option<u64>,
    req: &Req,
) -> ApiResult<Reply> {
    let mut world = shared.world();
    if app_id != world.application_id || guild.is_some_and(|g| g != world.guild_id) {
        return Err(ApiError::missing_access());
    }
    let Some(list) = req.json.as_array() else {
        return Err(ApiError::field(&[], "BASE_TYPE_LIST", "Must be a list."));
    };
    let mut errors = FormErrors::default();
    if list.len() > 100 {
        errors.add(
            &[],
            "BASE_TYPE_MAX_LENGTH",
            "Must be 100 or fewer in length.",
        );
    }
    let mut names = Vec::new();
    for (i, command) in list.iter().enumerate() {
        let mut path = vec![i.to_string()];
        let kind = command["type"].as_u64().unwrap_or(1);
        let slash = kind == 1;
        let name = command["name"].as_str().unwrap_or_default();
        if !valid_name(name, slash) {
            push_error(
                &mut errors,
                &path,
                "name",
                "APPLICATION_COMMAND_INVALID_NAME",
                "Command name is invalid",
            );
        }
        if names.contains(&(kind, name)) {
            push_error(
                &mut errors,
                &path,
                "name",
                "APPLICATION_COMMANDS_DUPLICATE_NAME",
                "Application command names must be unique",
            );
        }
        names.push((kind, name));
        let description = command["description"]
            .as_str()
            .unwrap_or_default()
            .chars()
            .count();
        if slash && !(1..=100).contains(&description) {
            push_error(
                &mut errors,
                &path,
                "description",
                "BASE_TYPE_BAD_LENGTH",
                "Must be between 1 and 100 in length.",
            );
        }
        if !slash && description > 0 {
            push_error(
                &mut errors,
                &path,
                "description",
                "APPLICATION_COMMAND_DESCRIPTION_INVALID",
                "Description must be empty for user and message commands",
            );
        }
        if let Some(options) = command.get("options").filter(|o| !o.is_null()) {
            check_options(&mut errors, &mut path, options);
        }
    }
    errors.into_result()?;
    let previous: Vec<Value> = world
        .commands
        .iter()
        .filter(|(g, _)| *g == guild)
        .map(|(_, c)| c.clone())
        .collect();
    let mut answered = Vec::new();
    for command in list {
        let kind = command["type"].as_u64().unwrap_or(1);
        let name = command["name"].as_str().unwrap_or_default();
        let id = previous
            .iter()
            .find(|c| c["name"] == name && c["type"] == kind)
            .and_then(|c| c["id"].as_str().map(str::to_owned))
            .unwrap_or_else(|| world.ids.next().to_string());
        let mut value = json!({
            "id": id,
            "application_id": app_id.to_string(),
            "version": world.ids.next().to_string(),
            "default_member_permissions": command.get("default_member_permissions").cloned().unwrap_or(Value::Null),
            "type": kind,
            "name": name,
            "name_localizations": null,
            "description": command["description"].as_str().unwrap_or_default(),
            "description_localizations": null,
            "nsfw": command["nsfw"].as_bool().unwrap_or(false),
            "integration_types": command.get("integration_types").cloned().unwrap_or(json!([0])),
            "contexts": command.get("contexts").cloned().unwrap_or(Value::Null),
        });
        if let Some(options) = command.get("options").filter(|o| !o.is_null()) {
            value["options"] = options.clone();
        }
        match guild {
            Some(g) => value["guild_id"] = json!(g.to_string()),
            None => {
                value["dm_permission"] = json!(command["dm_permission"].as_bool().unwrap_or(true))
            }
        }
        answered.push(value);
    }
    world.commands.retain(|(g, _)| *g != guild);
    world
        .commands
        .extend(answered.iter().map(|c| (guild, c.clone())));
    Ok(Reply::Json(Value::Array(answered)))
}

/// # `GET /applications/{application_id}/commands` and `.../guilds/{guild_id}/commands`
pub(crate) fn get_commands(shared: &Shared, app_id: u64, guild: Option<u64>) -> ApiResult<Reply> {
    let world = shared.world();
    if app_id != world.application_id || guild.is_some_and(|g| g != world.guild_id) {
        return Err(ApiError::missing_access());
    }
    let list: Vec<Value> = world
        .commands
        .iter()
        .filter(|(g, _)| *g == guild)
        .map(|(_, c)| c.clone())
        .collect();
    Ok(Reply::Json(Value::Array(list)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slash_command_names_are_lowercase_words() {
        assert!(valid_name("take", true));
        assert!(valid_name("übernehmen-2", true));
        assert!(!valid_name("Take", true));
        assert!(!valid_name("two words", true));
        assert!(!valid_name(&"x".repeat(33), true));
        assert!(valid_name("Take Over", false));
    }
}
