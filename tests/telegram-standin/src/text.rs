//! Message text with its entities, measured the way Telegram measures it.
//!
//! Telegram counts entity offsets and lengths, and the 4096 limit, in UTF-16 code units, so an
//! emoji outside the Basic Multilingual Plane counts as 2. Everything here works in those units.

use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::{html, markdown};

/// Most text a message may carry, in UTF-16 code units after entity parsing.
pub(crate) const MAX_TEXT_LEN: usize = 4096;
/// Most text a media caption may carry.
pub(crate) const MAX_CAPTION_LEN: usize = 1024;

/// One `MessageEntity`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entity {
    pub kind: String,
    /// UTF-16 code units from the start of the text.
    pub offset: usize,
    /// UTF-16 code units.
    pub length: usize,
    pub url: Option<String>,
    pub language: Option<String>,
    pub custom_emoji_id: Option<String>,
    pub user: Option<Value>,
    /// For `date_time` only: the moment the text stands for.
    pub unix_time: Option<i64>,
    /// For `date_time` only, optional: how clients render it (e.g. `wDT`, `r`).
    pub date_time_format: Option<String>,
}

impl Entity {
    /// An entity with no extra fields.
    pub fn new(kind: &str, offset: usize, length: usize) -> Self {
        Entity {
            kind: kind.to_owned(),
            offset,
            length,
            url: None,
            language: None,
            custom_emoji_id: None,
            user: None,
            unix_time: None,
            date_time_format: None,
        }
    }

    fn end(&self) -> usize {
        self.offset + self.length
    }

    /// The `MessageEntity` JSON object.
    pub fn to_json(&self) -> Value {
        let mut obj = Map::new();
        obj.insert("offset".into(), json!(self.offset));
        obj.insert("length".into(), json!(self.length));
        obj.insert("type".into(), json!(self.kind));
        if let Some(url) = &self.url {
            obj.insert("url".into(), json!(url));
        }
        if let Some(language) = &self.language {
            obj.insert("language".into(), json!(language));
        }
        if let Some(id) = &self.custom_emoji_id {
            obj.insert("custom_emoji_id".into(), json!(id));
        }
        if let Some(user) = &self.user {
            obj.insert("user".into(), user.clone());
        }
        if let Some(time) = self.unix_time {
            obj.insert("unix_time".into(), json!(time));
        }
        if let Some(format) = &self.date_time_format {
            obj.insert("date_time_format".into(), json!(format));
        }
        Value::Object(obj)
    }
}

/// Text plus entities, as a `Message` carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Formatted {
    pub text: String,
    pub entities: Vec<Entity>,
}

impl Formatted {
    /// Entities as the JSON array a `Message` carries.
    pub fn entities_json(&self) -> Vec<Value> {
        self.entities.iter().map(Entity::to_json).collect()
    }
}

/// Builds output text while tracking the UTF-16 position, for the parsers.
#[derive(Debug, Default)]
pub(crate) struct TextBuilder {
    pub text: String,
    pub utf16: usize,
}

impl TextBuilder {
    pub fn push(&mut self, c: char) {
        self.text.push(c);
        self.utf16 += c.len_utf16();
    }
}

/// Length in UTF-16 code units.
pub(crate) fn utf16_len(s: &str) -> usize {
    s.encode_utf16().count()
}

/// What a user may look up when an HTML link is `tg://user?id=N` (a `text_mention`).
pub(crate) type UserLookup<'a> = &'a dyn Fn(i64) -> Option<Value>;

/// Turns `text` + `parse_mode` / `entities` into what the message will hold, refusing what
/// Telegram refuses. `parse_mode` wins over explicit `entities` when both are given, as in the
/// real server. Automatic entities (URLs, @mentions, /commands, #hashtags) are added last.
pub(crate) fn prepare(
    text: &str,
    parse_mode: Option<&str>,
    entities: Option<&Value>,
    users: UserLookup<'_>,
) -> ApiResult<Formatted> {
    let parsed = match parse_mode.map(str::trim).filter(|m| !m.is_empty()) {
        Some(mode) => match mode.to_ascii_lowercase().as_str() {
            "html" => html::parse(text, users).map_err(ApiError::cant_parse_entities)?,
            "markdownv2" => markdown::parse_v2(text).map_err(ApiError::cant_parse_entities)?,
            "markdown" => markdown::parse_legacy(text).map_err(ApiError::cant_parse_entities)?,
            _ => return Err(ApiError::bad_request("unsupported parse_mode")),
        },
        None => Formatted {
            text: text.to_owned(),
            entities: match entities {
                Some(list) => explicit_entities(list, utf16_len(text))?,
                None => Vec::new(),
            },
        },
    };
    let mut formatted = normalize(trim(parsed));
    add_automatic_entities(&mut formatted);
    Ok(formatted)
}

/// Reads an explicit `entities` array; clips entities that run past the text, as Telegram does.
pub(crate) fn explicit_entities(list: &Value, text_len: usize) -> ApiResult<Vec<Entity>> {
    let Some(items) = list.as_array() else {
        return Err(ApiError::bad_request("can't parse entities JSON object"));
    };
    let mut out = Vec::new();
    for item in items {
        let bad = |what: &str| ApiError::bad_request(format!("can't parse MessageEntity: {what}"));
        let obj = item
            .as_object()
            .ok_or_else(|| bad("MessageEntity must be an Object"))?;
        let kind = obj
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| bad("Field \"type\" must be of type String"))?;
        if !KNOWN_ENTITY_TYPES.contains(&kind) {
            return Err(bad("Unsupported type specified"));
        }
        let offset = obj
            .get("offset")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("Field \"offset\" must be of type Number"))?;
        let length = obj
            .get("length")
            .and_then(Value::as_i64)
            .ok_or_else(|| bad("Field \"length\" must be of type Number"))?;
        if offset < 0 || length < 0 {
            return Err(bad("Entity offset and length must be non-negative"));
        }
        let (offset, length) = (offset as usize, length as usize);
        if offset >= text_len || length == 0 {
            continue;
        }
        let mut entity = Entity::new(kind, offset, length.min(text_len - offset));
        match kind {
            "text_link" => {
                let url = obj
                    .get("url")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("Field \"url\" must be of type String"))?;
                entity.url = Some(url.to_owned());
            }
            "text_mention" => {
                let user = obj
                    .get("user")
                    .filter(|u| u.is_object())
                    .ok_or_else(|| bad("Field \"user\" must be of type Object"))?;
                entity.user = Some(user.clone());
            }
            "custom_emoji" => {
                let id = obj
                    .get("custom_emoji_id")
                    .and_then(Value::as_str)
                    .ok_or_else(|| bad("Field \"custom_emoji_id\" must be of type String"))?;
                entity.custom_emoji_id = Some(id.to_owned());
            }
            "pre" => {
                entity.language = obj
                    .get("language")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            }
            "date_time" => {
                let time = obj
                    .get("unix_time")
                    .and_then(Value::as_i64)
                    .ok_or_else(|| bad("Field \"unix_time\" must be of type Number"))?;
                entity.unix_time = Some(time);
                entity.date_time_format = obj
                    .get("date_time_format")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
            }
            _ => {}
        }
        out.push(entity);
    }
    Ok(out)
}

/// Every `MessageEntity.type` the Bot API documents.
const KNOWN_ENTITY_TYPES: &[&str] = &[
    "mention",
    "hashtag",
    "cashtag",
    "bot_command",
    "url",
    "email",
    "phone_number",
    "bold",
    "italic",
    "underline",
    "strikethrough",
    "spoiler",
    "blockquote",
    "expandable_blockquote",
    "code",
    "pre",
    "text_link",
    "text_mention",
    "custom_emoji",
    // Added to the Bot API after the entity types above; clients older than that (teloxide
    // 0.17 among them) cannot parse it, which is what tests of their robustness need.
    "date_time",
];

/// Telegram strips leading and trailing whitespace from message text; entities move with it
/// and are clipped to what is left.
fn trim(f: Formatted) -> Formatted {
    let is_ws = |c: char| matches!(c, ' ' | '\n' | '\t' | '\r');
    let lead: usize = f
        .text
        .chars()
        .take_while(|c| is_ws(*c))
        .map(char::len_utf16)
        .sum();
    let trimmed = f.text.trim_matches(is_ws).to_owned();
    let len = utf16_len(&trimmed);
    let entities = f
        .entities
        .into_iter()
        .filter_map(|mut e| {
            let start = e.offset.saturating_sub(lead).min(len);
            let end = e.end().saturating_sub(lead).min(len);
            (end > start).then(|| {
                e.offset = start;
                e.length = end - start;
                e
            })
        })
        .collect();
    Formatted {
        text: trimmed,
        entities,
    }
}

/// Entity rules from "Formatting options": nothing nests inside `code`/`pre`; adjacent or
/// overlapping entities of the same splittable type become one; order is by offset, longer first.
fn normalize(mut f: Formatted) -> Formatted {
    let verbatim: Vec<(usize, usize)> = f
        .entities
        .iter()
        .filter(|e| e.kind == "code" || e.kind == "pre")
        .map(|e| (e.offset, e.end()))
        .collect();
    f.entities.retain(|e| {
        let inside_other = verbatim.iter().any(|&(s, t)| {
            s <= e.offset
                && e.end() <= t
                && !((e.kind == "code" || e.kind == "pre") && (s, t) == (e.offset, e.end()))
        });
        !inside_other
    });
    sort_entities(&mut f.entities);
    let splittable = ["bold", "italic", "underline", "strikethrough", "spoiler"];
    let mut merged: Vec<Entity> = Vec::new();
    for e in f.entities {
        if splittable.contains(&e.kind.as_str())
            && let Some(prev) = merged
                .iter_mut()
                .rev()
                .find(|p| p.kind == e.kind && p.end() >= e.offset)
        {
            let end = prev.end().max(e.end());
            prev.length = end - prev.offset;
            continue;
        }
        merged.push(e);
    }
    sort_entities(&mut merged);
    Formatted {
        text: f.text,
        entities: merged,
    }
}

fn sort_entities(entities: &mut [Entity]) {
    entities.sort_by(|a, b| a.offset.cmp(&b.offset).then(b.length.cmp(&a.length)));
}

/// The entities Telegram's server finds by itself in any text: `url` (http/https), `mention`
/// (@username), `bot_command` (/command) and `hashtag`. Not inside code, pre or links.
pub(crate) fn add_automatic_entities(f: &mut Formatted) {
    let blocked: Vec<(usize, usize)> = f
        .entities
        .iter()
        .filter(|e| {
            matches!(
                e.kind.as_str(),
                "code" | "pre" | "text_link" | "text_mention" | "url" | "custom_emoji"
            )
        })
        .map(|e| (e.offset, e.end()))
        .collect();
    let found = detect(&f.text);
    for e in found {
        if !blocked.iter().any(|&(s, t)| e.offset < t && s < e.end()) {
            f.entities.push(e);
        }
    }
    sort_entities(&mut f.entities);
}

fn detect(text: &str) -> Vec<Entity> {
    let chars: Vec<char> = text.chars().collect();
    // UTF-16 position of each char index, plus one past the end.
    let mut pos = Vec::with_capacity(chars.len() + 1);
    let mut p = 0;
    for c in &chars {
        pos.push(p);
        p += c.len_utf16();
    }
    pos.push(p);
    let word = |c: char| c.is_alphanumeric() || c == '_';
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let prev_ok = i == 0 || !word(chars[i - 1]) && chars[i - 1] != '/' && chars[i - 1] != '@';
        let rest: String = chars[i..chars.len().min(i + 8)].iter().collect();
        let lower = rest.to_ascii_lowercase();
        if prev_ok && (lower.starts_with("http://") || lower.starts_with("https://")) {
            let mut j = i;
            while j < chars.len() && !chars[j].is_whitespace() {
                j += 1;
            }
            while j > i
                && matches!(
                    chars[j - 1],
                    '.' | ',' | ';' | ':' | '!' | '?' | ')' | ']' | '\'' | '"'
                )
            {
                j -= 1;
            }
            let scheme_len = if lower.starts_with("https://") { 8 } else { 7 };
            if j > i + scheme_len {
                out.push(Entity::new("url", pos[i], pos[j] - pos[i]));
                i = j;
                continue;
            }
        }
        let c = chars[i];
        if prev_ok && (c == '/' || c == '@' || c == '#') {
            let mut j = i + 1;
            while j < chars.len() && word(chars[j]) {
                j += 1;
            }
            let name: String = chars[i + 1..j].iter().collect();
            let kind = match c {
                '/' if (1..=64).contains(&name.len())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    // "/start@SomeBot" is one command entity.
                    if j < chars.len() && chars[j] == '@' {
                        let mut k = j + 1;
                        while k < chars.len() && word(chars[k]) {
                            k += 1;
                        }
                        if k > j + 1 {
                            j = k;
                        }
                    }
                    Some("bot_command")
                }
                '@' if (5..=32).contains(&name.len())
                    && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') =>
                {
                    Some("mention")
                }
                '#' if !name.is_empty() && !name.chars().all(|c| c.is_ascii_digit()) => {
                    Some("hashtag")
                }
                _ => None,
            };
            if let Some(kind) = kind {
                out.push(Entity::new(kind, pos[i], pos[j] - pos[i]));
                i = j;
                continue;
            }
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_users(_: i64) -> Option<Value> {
        None
    }

    #[test]
    fn trims_and_shifts_entities() {
        let f = prepare("  <b>hi</b> \n", Some("HTML"), None, &no_users).unwrap();
        assert_eq!(f.text, "hi");
        assert_eq!(f.entities, vec![Entity::new("bold", 0, 2)]);
    }

    #[test]
    fn detects_urls_commands_mentions_hashtags() {
        let f = prepare(
            "/start see https://example.com/x. @someone #tag",
            None,
            None,
            &no_users,
        )
        .unwrap();
        let kinds: Vec<(&str, usize, usize)> = f
            .entities
            .iter()
            .map(|e| (e.kind.as_str(), e.offset, e.length))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("bot_command", 0, 6),
                ("url", 11, 21),
                ("mention", 34, 8),
                ("hashtag", 43, 4)
            ]
        );
    }

    #[test]
    fn merges_adjacent_bold() {
        let f = prepare("<b>a</b><b>b</b>", Some("HTML"), None, &no_users).unwrap();
        assert_eq!(f.entities, vec![Entity::new("bold", 0, 2)]);
    }

    #[test]
    fn explicit_entities_are_clipped() {
        let f = prepare(
            "hello",
            None,
            Some(&json!([{"type":"bold","offset":3,"length":10}])),
            &no_users,
        )
        .unwrap();
        assert_eq!(f.entities, vec![Entity::new("bold", 3, 2)]);
    }

    #[test]
    fn unknown_parse_mode_is_refused() {
        let err = prepare("x", Some("BBCode"), None, &no_users).unwrap_err();
        assert_eq!(err.description, "Bad Request: unsupported parse_mode");
    }
}
