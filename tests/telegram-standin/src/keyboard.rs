//! `reply_markup` validation. The real server refuses a malformed keyboard outright, so a
//! client bug here must fail the send, not slip through.

use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};

/// The button kinds of an `InlineKeyboardButton`, one of which each button must use.
const INLINE_BUTTON_ACTIONS: &[&str] = &[
    "url",
    "callback_data",
    "web_app",
    "login_url",
    "switch_inline_query",
    "switch_inline_query_current_chat",
    "switch_inline_query_chosen_chat",
    "copy_text",
    "callback_game",
    "pay",
];

/// Validates a `reply_markup`. Returns what a sent `Message` echoes back in its own
/// `reply_markup`: the inline keyboard for `InlineKeyboardMarkup`, nothing for reply keyboards,
/// `ReplyKeyboardRemove` and `ForceReply` (which Telegram never shows in the Message).
pub(crate) fn validate(markup: &Value) -> ApiResult<Option<Value>> {
    let cant_parse = || ApiError::bad_request("can't parse reply keyboard markup JSON object");
    let obj = markup.as_object().ok_or_else(cant_parse)?;
    if let Some(rows) = obj.get("inline_keyboard") {
        return validate_inline(rows).map(Some);
    }
    if let Some(rows) = obj.get("keyboard") {
        let rows = rows
            .as_array()
            .ok_or_else(|| ApiError::bad_request("field \"keyboard\" must be an Array"))?;
        for row in rows {
            let row = row.as_array().ok_or_else(|| {
                ApiError::bad_request("field \"keyboard\" must be an Array of Arrays")
            })?;
            for button in row {
                let ok = button.is_string() || button.get("text").is_some_and(Value::is_string);
                if !ok {
                    return Err(ApiError::bad_request(
                        "can't parse keyboard button: Field \"text\" must be of type String",
                    ));
                }
            }
        }
        return Ok(None);
    }
    if obj.get("remove_keyboard") == Some(&Value::Bool(true))
        || obj.get("force_reply") == Some(&Value::Bool(true))
    {
        return Ok(None);
    }
    Err(cant_parse())
}

fn validate_inline(rows: &Value) -> ApiResult<Value> {
    let button_error = |detail: &str| {
        ApiError::bad_request(format!("can't parse inline keyboard button: {detail}"))
    };
    let rows = rows
        .as_array()
        .ok_or_else(|| ApiError::bad_request("field \"inline_keyboard\" must be an Array"))?;
    let mut clean_rows = Vec::with_capacity(rows.len());
    for row in rows {
        let row = row.as_array().ok_or_else(|| {
            ApiError::bad_request("field \"inline_keyboard\" must be an Array of Arrays")
        })?;
        let mut clean_row = Vec::with_capacity(row.len());
        for button in row {
            let button = button
                .as_object()
                .ok_or_else(|| button_error("InlineKeyboardButton must be an Object"))?;
            let text = button
                .get("text")
                .and_then(Value::as_str)
                .ok_or_else(|| button_error("Field \"text\" must be of type String"))?;
            let actions: Vec<&str> = INLINE_BUTTON_ACTIONS
                .iter()
                .copied()
                .filter(|a| button.get(*a).is_some_and(|v| !v.is_null()))
                .collect();
            match actions.as_slice() {
                [] => {
                    return Err(button_error(
                        "Text buttons are unallowed in the inline keyboard",
                    ));
                }
                [_] => {}
                // The real server silently uses the first field it recognises; refusing the
                // ambiguity is stricter, on purpose, so a client bug shows up in tests.
                _ => {
                    return Err(button_error(
                        "exactly one of the optional fields must be used",
                    ));
                }
            }
            if text.is_empty() {
                return Err(ApiError::bad_request("BUTTON_TEXT_INVALID"));
            }
            let action = actions[0];
            let value = &button[action];
            match action {
                "callback_data" => {
                    let data = value.as_str().ok_or_else(|| {
                        button_error("Field \"callback_data\" must be of type String")
                    })?;
                    if data.is_empty() || data.len() > 64 {
                        return Err(ApiError::bad_request("BUTTON_DATA_INVALID"));
                    }
                }
                "url" => {
                    let url = value
                        .as_str()
                        .ok_or_else(|| button_error("Field \"url\" must be of type String"))?;
                    if !valid_button_url(url) {
                        return Err(ApiError::bad_request("BUTTON_URL_INVALID"));
                    }
                }
                _ => {}
            }
            let mut clean = Map::new();
            clean.insert("text".into(), json!(text));
            clean.insert(action.into(), value.clone());
            clean_row.push(Value::Object(clean));
        }
        clean_rows.push(Value::Array(clean_row));
    }
    Ok(json!({ "inline_keyboard": clean_rows }))
}

/// `http(s)://host...` or `tg://...`; Telegram refuses anything without a usable scheme and host.
fn valid_button_url(url: &str) -> bool {
    if let Some(rest) = url.strip_prefix("tg://") {
        return !rest.is_empty();
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return false;
    };
    let host = rest.split(['/', '?', '#']).next().unwrap_or("");
    matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https")
        && !host.is_empty()
        && !host.contains(' ')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_callback_and_url_buttons() {
        let markup = json!({"inline_keyboard": [[{"text": "Yes", "callback_data": "y"}, {"text": "Site", "url": "https://e.x"}]]});
        assert_eq!(validate(&markup).unwrap(), Some(markup));
    }

    #[test]
    fn refuses_bad_buttons() {
        let long = "x".repeat(65);
        let cases = [
            (
                json!({"inline_keyboard": [[{"text": "a", "callback_data": long}]]}),
                "Bad Request: BUTTON_DATA_INVALID",
            ),
            (
                json!({"inline_keyboard": [[{"text": "a", "callback_data": ""}]]}),
                "Bad Request: BUTTON_DATA_INVALID",
            ),
            (
                json!({"inline_keyboard": [[{"text": "a", "url": "not a url"}]]}),
                "Bad Request: BUTTON_URL_INVALID",
            ),
            (
                json!({"inline_keyboard": [[{"text": "a"}]]}),
                "Bad Request: can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard",
            ),
            (
                json!({"inline_keyboard": [[{"callback_data": "x"}]]}),
                "Bad Request: can't parse inline keyboard button: Field \"text\" must be of type String",
            ),
            (
                json!({"nonsense": 1}),
                "Bad Request: can't parse reply keyboard markup JSON object",
            ),
        ];
        for (markup, expected) in cases {
            assert_eq!(
                validate(&markup).unwrap_err().description,
                expected,
                "{markup}"
            );
        }
    }

    #[test]
    fn reply_keyboards_are_not_echoed() {
        assert_eq!(
            validate(&json!({"keyboard": [["a", {"text": "b"}]]})).unwrap(),
            None
        );
        assert_eq!(validate(&json!({"remove_keyboard": true})).unwrap(), None);
    }
}
