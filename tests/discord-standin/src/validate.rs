//! Checking message bodies the way Discord does: lengths counted in Unicode characters, the
//! component tree (action rows of buttons and selects), embeds, `allowed_mentions`,
//! `message_reference`, flags and nonces. Every problem lands in one `errors` tree, so a body
//! with two mistakes is refused naming both, as Discord's 50035 answers do.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::error::{ApiError, ApiResult, FormErrors};

/// Message flags a bot may set when sending: SUPPRESS_EMBEDS and SUPPRESS_NOTIFICATIONS.
const SENDABLE_FLAGS: u64 = (1 << 2) | (1 << 12);
/// EPHEMERAL, allowed on interaction responses and follow-ups only.
pub(crate) const EPHEMERAL: u64 = 1 << 6;

/// Where a message body comes from; each allows slightly different fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Purpose {
    Create,
    Edit,
    Webhook,
    Interaction,
}

/// The fields of a message body after validation. `None` means "not given" (which matters
/// for edits: only given fields change).
#[derive(Debug, Default, Clone)]
pub(crate) struct MessageInput {
    pub content: Option<String>,
    pub embeds: Option<Value>,
    pub components: Option<Value>,
    pub allowed_mentions: Option<Value>,
    /// `(message_id, channel_id if given, fail_if_not_exists)`.
    pub reference: Option<(u64, Option<u64>, bool)>,
    pub flags: Option<u64>,
    pub tts: bool,
    pub nonce: Option<Value>,
    /// `enforce_nonce`: a repeat of the nonce by the same author returns the first message.
    pub enforce_nonce: bool,
    pub has_stickers: bool,
    /// The `attachments` array of the payload, as given.
    pub attachments: Option<Vec<Value>>,
    pub username: Option<String>,
    pub avatar_url: Option<String>,
}

impl MessageInput {
    /// Would this message show nothing? (Discord refuses those with 50006.)
    pub fn is_empty(&self, file_count: usize) -> bool {
        let blank = |v: &Option<Value>| {
            v.as_ref()
                .is_none_or(|v| v.as_array().is_none_or(Vec::is_empty))
        };
        self.content.as_deref().is_none_or(str::is_empty)
            && blank(&self.embeds)
            && blank(&self.components)
            && file_count == 0
            && !self.has_stickers
    }
}

fn char_len(s: &str) -> usize {
    s.chars().count()
}

/// Parses a snowflake given as a string or a number.
pub(crate) fn snowflake(value: &Value) -> Option<u64> {
    match value {
        Value::String(s) => s.parse().ok(),
        Value::Number(n) => n.as_u64(),
        _ => None,
    }
}

fn max_len(errors: &mut FormErrors, path: &[&str], s: &str, max: usize) {
    if char_len(s) > max {
        errors.add(
            path,
            "BASE_TYPE_MAX_LENGTH",
            &format!("Must be {max} or fewer in length."),
        );
    }
}

fn bad_length(errors: &mut FormErrors, path: &[&str], len: usize, min: usize, max: usize) {
    if len < min || len > max {
        errors.add(
            path,
            "BASE_TYPE_BAD_LENGTH",
            &format!("Must be between {min} and {max} in length."),
        );
    }
}

fn string_field<'a>(errors: &mut FormErrors, path: &[&str], value: &'a Value) -> Option<&'a str> {
    match value {
        Value::Null => None,
        Value::String(s) => Some(s),
        _ => {
            errors.add(path, "BASE_TYPE_STRING", "Must be a string.");
            None
        }
    }
}

/// Checks a message body. `body` must be the decoded JSON (or `payload_json`).
pub(crate) fn message(body: &Value, purpose: Purpose) -> ApiResult<MessageInput> {
    let Some(object) = body.as_object() else {
        return Err(ApiError::field(
            &[],
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType",
        ));
    };
    let mut errors = FormErrors::default();
    let mut input = MessageInput::default();
    if let Some(content) = object.get("content")
        && let Some(text) = string_field(&mut errors, &["content"], content)
    {
        max_len(&mut errors, &["content"], text, 2000);
        input.content = Some(text.to_owned());
    }
    if let Some(embeds) = object.get("embeds").filter(|v| !v.is_null()) {
        input.embeds = Some(check_embeds(&mut errors, embeds));
    }
    if let Some(components) = object.get("components").filter(|v| !v.is_null()) {
        check_components(&mut errors, components);
        input.components = Some(components.clone());
    }
    if let Some(allowed) = object.get("allowed_mentions").filter(|v| !v.is_null()) {
        check_allowed_mentions(&mut errors, allowed);
        input.allowed_mentions = Some(allowed.clone());
    }
    if let Some(reference) = object.get("message_reference").filter(|v| !v.is_null()) {
        if purpose == Purpose::Create {
            input.reference = check_reference(&mut errors, reference);
        } else {
            errors.add(
                &["message_reference"],
                "BASE_TYPE_INVALID",
                "Unknown field.",
            );
        }
    }
    if let Some(flags) = object.get("flags").filter(|v| !v.is_null()) {
        let allowed = match purpose {
            Purpose::Interaction => SENDABLE_FLAGS | EPHEMERAL,
            _ => SENDABLE_FLAGS,
        };
        match flags.as_u64() {
            Some(f) if f & !allowed == 0 => input.flags = Some(f),
            Some(_) => errors.add(&["flags"], "MESSAGE_FLAGS_INVALID", "Invalid flags"),
            None => errors.add(&["flags"], "NUMBER_TYPE_COERCE", "Value is not int."),
        }
    }
    match object.get("enforce_nonce") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => input.enforce_nonce = *b,
        Some(_) => errors.add(
            &["enforce_nonce"],
            "BASE_TYPE_BOOLEAN",
            "Must be either true or false.",
        ),
    }
    match object.get("tts") {
        None | Some(Value::Null) => {}
        Some(Value::Bool(b)) => input.tts = *b,
        Some(_) => errors.add(
            &["tts"],
            "BASE_TYPE_BOOLEAN",
            "Must be either true or false.",
        ),
    }
    if let Some(nonce) = object.get("nonce").filter(|v| !v.is_null()) {
        match nonce {
            Value::String(s) => max_len(&mut errors, &["nonce"], s, 25),
            Value::Number(n) if n.is_i64() || n.is_u64() => {}
            _ => errors.add(
                &["nonce"],
                "BASE_TYPE_STRING",
                "Must be a string or integer.",
            ),
        }
        input.nonce = Some(nonce.clone());
    }
    input.has_stickers = object
        .get("sticker_ids")
        .and_then(Value::as_array)
        .is_some_and(|s| !s.is_empty());
    if let Some(attachments) = object.get("attachments").filter(|v| !v.is_null()) {
        match attachments.as_array() {
            Some(list) => {
                for (i, item) in list.iter().enumerate() {
                    let index = i.to_string();
                    if item.get("id").and_then(snowflake).is_none() {
                        errors.add(
                            &["attachments", &index, "id"],
                            "BASE_TYPE_REQUIRED",
                            "This field is required",
                        );
                    }
                }
                input.attachments = Some(list.clone());
            }
            None => errors.add(&["attachments"], "BASE_TYPE_LIST", "Must be a list."),
        }
    }
    if purpose == Purpose::Webhook {
        if let Some(name) = object.get("username")
            && let Some(name) = string_field(&mut errors, &["username"], name)
        {
            webhook_name(&mut errors, "username", name);
            input.username = Some(name.to_owned());
        }
        if let Some(url) = object.get("avatar_url") {
            input.avatar_url = string_field(&mut errors, &["avatar_url"], url).map(str::to_owned);
        }
    }
    errors.into_result()?;
    Ok(input)
}

/// Webhook names and username overrides: 1-80 characters, and Discord keeps "clyde" and
/// "discord" for itself.
pub(crate) fn webhook_name(errors: &mut FormErrors, field: &str, name: &str) {
    bad_length(errors, &[field], char_len(name), 1, 80);
    let lower = name.to_lowercase();
    for reserved in ["clyde", "discord"] {
        if lower.contains(reserved) {
            errors.add(
                &[field],
                "USERNAME_INVALID_CONTAINS",
                &format!("Username cannot contain \"{reserved}\""),
            );
        }
    }
}

fn check_embeds(errors: &mut FormErrors, embeds: &Value) -> Value {
    let Some(list) = embeds.as_array() else {
        errors.add(&["embeds"], "BASE_TYPE_LIST", "Must be a list.");
        return embeds.clone();
    };
    if list.len() > 10 {
        errors.add(
            &["embeds"],
            "BASE_TYPE_MAX_LENGTH",
            "Must be 10 or fewer in length.",
        );
    }
    let mut total = 0;
    let mut out = Vec::new();
    for (i, embed) in list.iter().enumerate() {
        let index = i.to_string();
        let Some(object) = embed.as_object() else {
            errors.add(
                &["embeds", &index],
                "DICT_TYPE_CONVERT",
                "Only dictionaries may be used in a DictType",
            );
            continue;
        };
        for (field, max) in [("title", 256), ("description", 4096)] {
            if let Some(text) = object.get(field).and_then(Value::as_str) {
                max_len(errors, &["embeds", &index, field], text, max);
                total += char_len(text);
            }
        }
        if let Some(text) = embed["footer"]["text"].as_str() {
            max_len(errors, &["embeds", &index, "footer", "text"], text, 2048);
            total += char_len(text);
        }
        if let Some(text) = embed["author"]["name"].as_str() {
            max_len(errors, &["embeds", &index, "author", "name"], text, 256);
            total += char_len(text);
        }
        if let Some(fields) = object.get("fields").and_then(Value::as_array) {
            if fields.len() > 25 {
                errors.add(
                    &["embeds", &index, "fields"],
                    "BASE_TYPE_MAX_LENGTH",
                    "Must be 25 or fewer in length.",
                );
            }
            for (j, field) in fields.iter().enumerate() {
                let j = j.to_string();
                for (key, max) in [("name", 256), ("value", 1024)] {
                    match field[key].as_str() {
                        Some(text) => {
                            max_len(errors, &["embeds", &index, "fields", &j, key], text, max);
                            total += char_len(text);
                        }
                        None => errors.add(
                            &["embeds", &index, "fields", &j, key],
                            "BASE_TYPE_REQUIRED",
                            "This field is required",
                        ),
                    }
                }
            }
        }
        let mut echoed = embed.clone();
        if echoed.get("type").is_none() {
            echoed["type"] = json!("rich");
        }
        out.push(echoed);
    }
    if total > 6000 {
        errors.add(
            &["embeds"],
            "MESSAGE_EMBED_SIZE_EXCEEDED",
            "Embed size exceeds maximum size of 6000",
        );
    }
    Value::Array(out)
}

fn check_components(errors: &mut FormErrors, components: &Value) {
    let Some(rows) = components.as_array() else {
        errors.add(&["components"], "BASE_TYPE_LIST", "Must be a list.");
        return;
    };
    if rows.len() > 5 {
        errors.add(
            &["components"],
            "BASE_TYPE_MAX_LENGTH",
            "Must be 5 or fewer in length.",
        );
    }
    let mut seen = HashSet::new();
    for (i, row) in rows.iter().enumerate() {
        let i = i.to_string();
        if row["type"].as_u64() != Some(1) {
            errors.add(
                &["components", &i, "type"],
                "BASE_TYPE_CHOICES",
                "Value must be one of {1}.",
            );
            continue;
        }
        let Some(children) = row["components"].as_array() else {
            errors.add(
                &["components", &i, "components"],
                "BASE_TYPE_REQUIRED",
                "This field is required",
            );
            continue;
        };
        bad_length(
            errors,
            &["components", &i, "components"],
            children.len(),
            1,
            5,
        );
        let has_select = children
            .iter()
            .any(|c| matches!(c["type"].as_u64(), Some(3 | 5..=8)));
        if has_select && children.len() > 1 {
            errors.add(
                &["components", &i, "components"],
                "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
                "The specified component exceeds the maximum width",
            );
        }
        for (j, child) in children.iter().enumerate() {
            let j = j.to_string();
            let path = ["components", i.as_str(), "components", j.as_str()];
            check_component(errors, &path, child, &mut seen);
        }
    }
}

fn check_component(
    errors: &mut FormErrors,
    path: &[&str; 4],
    c: &Value,
    seen: &mut HashSet<String>,
) {
    let at = |field: &'static str| -> Vec<&str> {
        let mut p = path.to_vec();
        p.push(field);
        p
    };
    let kind = c["type"].as_u64();
    let custom_id = c.get("custom_id").and_then(Value::as_str);
    let mut check_custom_id = |errors: &mut FormErrors| match custom_id {
        None => errors.add(
            &at("custom_id"),
            "BASE_TYPE_REQUIRED",
            "This field is required",
        ),
        Some(id) => {
            bad_length(errors, &at("custom_id"), char_len(id), 1, 100);
            if !seen.insert(id.to_owned()) {
                errors.add(
                    &at("custom_id"),
                    "COMPONENT_CUSTOM_ID_DUPLICATED",
                    "Component custom id cannot be duplicated",
                );
            }
        }
    };
    match kind {
        Some(2) => {
            let style = c["style"].as_u64();
            match style {
                Some(1..=4) => {
                    check_custom_id(errors);
                    if c.get("url").is_some() {
                        errors.add(
                            &at("url"),
                            "BUTTON_COMPONENT_URL_NOT_ALLOWED",
                            "A button with a custom_id cannot have a url",
                        );
                    }
                }
                Some(5) => {
                    match c["url"].as_str() {
                        Some(url)
                            if url.starts_with("https://")
                                || url.starts_with("http://")
                                || url.starts_with("discord://") =>
                        {
                            max_len(errors, &at("url"), url, 512);
                        }
                        Some(_) => {
                            errors.add(&at("url"), "URL_TYPE_INVALID_URL", "Not a well formed URL.")
                        }
                        None => errors.add(
                            &at("url"),
                            "BUTTON_COMPONENT_URL_REQUIRED",
                            "A link button requires a url",
                        ),
                    }
                    if custom_id.is_some() {
                        errors.add(
                            &at("custom_id"),
                            "BUTTON_COMPONENT_CUSTOM_ID_NOT_ALLOWED",
                            "A link button cannot have a custom_id",
                        );
                    }
                }
                _ => errors.add(
                    &at("style"),
                    "BASE_TYPE_CHOICES",
                    "Value must be one of {1, 2, 3, 4, 5, 6}.",
                ),
            }
            match c.get("label").and_then(Value::as_str) {
                Some(label) => max_len(errors, &at("label"), label, 80),
                None if c.get("emoji").is_none() => errors.add(
                    &at("label"),
                    "BUTTON_COMPONENT_LABEL_OR_EMOJI_REQUIRED",
                    "A button requires a label or an emoji",
                ),
                None => {}
            }
        }
        Some(3) => {
            check_custom_id(errors);
            match c["options"].as_array() {
                Some(options) => {
                    bad_length(errors, &at("options"), options.len(), 1, 25);
                    for (k, option) in options.iter().enumerate() {
                        let k = k.to_string();
                        for field in ["label", "value"] {
                            let mut p = at("options");
                            p.push(&k);
                            p.push(field);
                            match option[field].as_str() {
                                Some(text) => bad_length(errors, &p, char_len(text), 1, 100),
                                None => {
                                    errors.add(&p, "BASE_TYPE_REQUIRED", "This field is required")
                                }
                            }
                        }
                    }
                }
                None => errors.add(
                    &at("options"),
                    "BASE_TYPE_REQUIRED",
                    "This field is required",
                ),
            }
        }
        Some(5..=8) => check_custom_id(errors),
        _ => errors.add(
            &at("type"),
            "BASE_TYPE_CHOICES",
            "Value must be one of {2, 3, 5, 6, 7, 8}.",
        ),
    }
}

fn check_allowed_mentions(errors: &mut FormErrors, allowed: &Value) {
    let Some(object) = allowed.as_object() else {
        errors.add(
            &["allowed_mentions"],
            "DICT_TYPE_CONVERT",
            "Only dictionaries may be used in a DictType",
        );
        return;
    };
    let mut parsed = Vec::new();
    if let Some(parse) = object.get("parse") {
        match parse.as_array() {
            Some(list) => {
                for (i, item) in list.iter().enumerate() {
                    match item.as_str() {
                        Some(kind @ ("users" | "roles" | "everyone")) => parsed.push(kind),
                        _ => errors.add(
                            &["allowed_mentions", "parse", &i.to_string()],
                            "BASE_TYPE_CHOICES",
                            "Value must be one of {'everyone', 'roles', 'users'}.",
                        ),
                    }
                }
            }
            None => errors.add(
                &["allowed_mentions", "parse"],
                "BASE_TYPE_LIST",
                "Must be a list.",
            ),
        }
    }
    for kind in ["users", "roles"] {
        let Some(list) = object.get(kind) else {
            continue;
        };
        match list.as_array() {
            Some(ids) => {
                if ids.len() > 100 {
                    errors.add(
                        &["allowed_mentions", kind],
                        "BASE_TYPE_MAX_LENGTH",
                        "Must be 100 or fewer in length.",
                    );
                }
                for (i, id) in ids.iter().enumerate() {
                    if snowflake(id).is_none() {
                        errors.add(
                            &["allowed_mentions", kind, &i.to_string()],
                            "NUMBER_TYPE_COERCE",
                            &format!("Value \"{id}\" is not snowflake."),
                        );
                    }
                }
                if parsed.contains(&kind) && !ids.is_empty() {
                    errors.add(
                        &["allowed_mentions"],
                        "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE",
                        &format!("parse:[\"{kind}\"] and {kind}: [ids...] are mutually exclusive."),
                    );
                }
            }
            None => errors.add(
                &["allowed_mentions", kind],
                "BASE_TYPE_LIST",
                "Must be a list.",
            ),
        }
    }
    if let Some(replied) = object.get("replied_user")
        && !replied.is_boolean()
    {
        errors.add(
            &["allowed_mentions", "replied_user"],
            "BASE_TYPE_BOOLEAN",
            "Must be either true or false.",
        );
    }
}

fn check_reference(errors: &mut FormErrors, reference: &Value) -> Option<(u64, Option<u64>, bool)> {
    if reference["type"].as_u64().is_some_and(|t| t != 0) {
        errors.add(
            &["message_reference", "type"],
            "BASE_TYPE_CHOICES",
            "Only replies (type 0) are supported by the stand-in.",
        );
        return None;
    }
    let Some(message_id) = reference.get("message_id").and_then(snowflake) else {
        errors.add(
            &["message_reference", "message_id"],
            "BASE_TYPE_REQUIRED",
            "This field is required",
        );
        return None;
    };
    let channel_id = reference.get("channel_id").and_then(snowflake);
    let fail = reference["fail_if_not_exists"].as_bool().unwrap_or(true);
    Some((message_id, channel_id, fail))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(body: Value) -> Value {
        message(&body, Purpose::Create).unwrap_err().body
    }

    #[test]
    fn content_is_counted_in_characters_not_bytes() {
        assert!(message(&json!({"content": "é".repeat(2000)}), Purpose::Create).is_ok());
        let body = refused(json!({"content": "a".repeat(2001)}));
        assert_eq!(
            body["errors"]["content"]["_errors"][0]["code"],
            "BASE_TYPE_MAX_LENGTH"
        );
    }

    #[test]
    fn buttons_need_a_custom_id_unless_they_are_links() {
        let body = refused(json!({"components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "Take"},
            {"type": 2, "style": 5, "label": "Docs", "url": "https://example.org"},
        ]}]}));
        let errors = &body["errors"]["components"]["0"]["components"];
        assert_eq!(
            errors["0"]["custom_id"]["_errors"][0]["code"],
            "BASE_TYPE_REQUIRED"
        );
        assert!(errors.get("1").is_none(), "the link button is fine: {body}");
    }

    #[test]
    fn custom_ids_are_unique_and_at_most_100_characters() {
        let body = refused(json!({"components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "a", "custom_id": "x"},
            {"type": 2, "style": 2, "label": "b", "custom_id": "x"},
            {"type": 2, "style": 2, "label": "c", "custom_id": "y".repeat(101)},
        ]}]}));
        let errors = &body["errors"]["components"]["0"]["components"];
        assert_eq!(
            errors["1"]["custom_id"]["_errors"][0]["code"],
            "COMPONENT_CUSTOM_ID_DUPLICATED"
        );
        assert_eq!(
            errors["2"]["custom_id"]["_errors"][0]["code"],
            "BASE_TYPE_BAD_LENGTH"
        );
    }

    #[test]
    fn parse_users_and_a_user_list_are_exclusive() {
        let body = refused(
            json!({"content": "x", "allowed_mentions": {"parse": ["users"], "users": ["1"]}}),
        );
        assert_eq!(
            body["errors"]["allowed_mentions"]["_errors"][0]["code"],
            "MESSAGE_ALLOWED_MENTIONS_PARSE_EXCLUSIVE"
        );
        let body = refused(json!({"content": "x", "allowed_mentions": {"parse": ["nobody"]}}));
        assert!(body["errors"]["allowed_mentions"]["parse"]["0"].is_object());
        assert!(
            message(
                &json!({"content": "x", "allowed_mentions": {"parse": []}}),
                Purpose::Create
            )
            .is_ok()
        );
    }

    #[test]
    fn emptiness_looks_at_every_kind_of_content() {
        let input = message(&json!({"content": "", "embeds": []}), Purpose::Create).unwrap();
        assert!(input.is_empty(0));
        assert!(!input.is_empty(1));
        let input = message(&json!({"embeds": [{"title": "t"}]}), Purpose::Create).unwrap();
        assert!(!input.is_empty(0));
    }
}
