//! Reading updates from the JSON Telegram sent, so that formatting teloxide does not know
//! cannot lose a message.
//!
//! Telegram adds entity types to the Bot API over time (`date_time` is one teloxide 0.17 does
//! not know). teloxide's `Message` then falls back to its content-less `MessageKind::Empty`:
//! the update parses, the text is gone, and the reply would vanish without a trace. Other
//! breakage makes the whole update `UpdateKind::Error`. So updates are fetched as raw JSON
//! ([`GetRawUpdates`]), and before parsing, every entity teloxide cannot read is removed,
//! wherever it is (text, caption, a quoted or replied-to message): the text stays, only that
//! formatting goes. What still cannot be read is reported with its chat, so the sender can be
//! told.

use std::time::Duration;

use serde::Serialize;
use serde_json::Value;
use teloxide::{
    payloads::GetUpdates,
    requests::Payload,
    types::{ChatId, MessageCommon, MessageEntity, MessageKind, Update, UpdateKind},
};

/// `getUpdates`, answered as raw JSON. teloxide's own `GetUpdates` parses each update and
/// loses what it cannot parse before we could see it.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub(super) struct GetRawUpdates(pub GetUpdates);

impl Payload for GetRawUpdates {
    type Output = Vec<Value>;
    const NAME: &'static str = GetUpdates::NAME;

    /// The long poll must not be cut short by the HTTP client's own timeout.
    fn timeout_hint(&self) -> Option<Duration> {
        self.0.timeout_hint()
    }
}

/// An update that cannot be read even without the formatting teloxide does not know.
#[derive(Debug, thiserror::Error)]
#[error("telegram update {update_id:?} cannot be read: {reason}")]
pub(super) struct Unreadable {
    /// `None` only for JSON that is not an update at all.
    pub update_id: Option<u32>,
    /// The chat the update came from, when its JSON names one.
    pub chat: Option<ChatId>,
    /// Why it could not be read (the parser's message; never the text of the message).
    pub reason: String,
}

/// Parses one update as Telegram sent it, first dropping the formatting entities teloxide
/// cannot read (logged as a warning naming their types).
pub(super) fn parse(mut raw: Value) -> Result<Update, Unreadable> {
    let mut dropped = Vec::new();
    drop_unreadable_entities(&mut raw, &mut dropped);
    let unreadable = |reason: String| Unreadable {
        update_id: raw["update_id"]
            .as_u64()
            .and_then(|id| u32::try_from(id).ok()),
        chat: chat_of(&raw),
        reason,
    };
    // From text, not from the `Value`: teloxide's `UpdateKind` only reads borrowed keys, which
    // a `Value` cannot lend, and would take every update for an error.
    let update: Update = serde_json::from_str(&raw.to_string())
        .map_err(|e| unreadable(format!("not an update: {e}")))?;
    let lost_content = match &update.kind {
        UpdateKind::Error(_) => true,
        // Only a message whose content could not be parsed comes out empty while it has text.
        UpdateKind::Message(m) | UpdateKind::EditedMessage(m) => {
            matches!(m.kind, MessageKind::Empty {})
                && payload(&raw).is_some_and(|(_, p)| p.get("text").or(p.get("caption")).is_some())
        }
        _ => false,
    };
    if lost_content {
        return Err(unreadable(why_unreadable(&raw)));
    }
    if !dropped.is_empty() {
        tracing::warn!(
            update_id = update.id.0,
            dropped_entity_types = ?dropped,
            "telegram: a message carried formatting teloxide cannot parse; its text is kept without that formatting"
        );
    }
    Ok(update)
}

/// Removes, from every `*entities` array anywhere in `value`, the entities that do not parse
/// as a `MessageEntity`, and notes their `type`.
fn drop_unreadable_entities(value: &mut Value, dropped: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if key.ends_with("entities")
                    && let Value::Array(entities) = item
                {
                    entities.retain(|entity| {
                        // From text, for the same reason as in `parse`.
                        let readable =
                            serde_json::from_str::<MessageEntity>(&entity.to_string()).is_ok();
                        if !readable {
                            let kind = entity["type"].as_str().unwrap_or("(no type)");
                            dropped.push(kind.to_owned());
                        }
                        readable
                    });
                } else {
                    drop_unreadable_entities(item, dropped);
                }
            }
        }
        Value::Array(items) => {
            for item in items {
                drop_unreadable_entities(item, dropped);
            }
        }
        _ => {}
    }
}

/// The update's payload: the one field besides `update_id`.
fn payload(value: &Value) -> Option<(&str, &Value)> {
    value
        .as_object()?
        .iter()
        .find(|(key, _)| *key != "update_id")
        .map(|(key, payload)| (key.as_str(), payload))
}

/// The chat a message, an edit or a button press came from.
fn chat_of(value: &Value) -> Option<ChatId> {
    let (_, payload) = payload(value)?;
    ["/chat/id", "/message/chat/id"]
        .iter()
        .find_map(|pointer| payload.pointer(pointer)?.as_i64())
        .map(ChatId)
}

/// The parser's own account of what is wrong, for the log.
fn why_unreadable(value: &Value) -> String {
    let Some((kind, payload)) = payload(value) else {
        return "the update carries nothing".to_owned();
    };
    let json = payload.to_string();
    let error = match kind {
        "message" | "edited_message" => serde_json::from_str::<teloxide::types::Message>(&json)
            .err()
            // A message that parses, but only as an empty one: its content is what failed.
            .or_else(|| serde_json::from_str::<MessageCommon>(&json).err()),
        "callback_query" => serde_json::from_str::<teloxide::types::CallbackQuery>(&json).err(),
        _ => return format!("{kind:?} is not an update kind teloxide knows"),
    };
    match error {
        Some(e) => format!("{kind}: {e}"),
        None => format!("{kind}: teloxide parses it, but not as an update"),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn update_with(kind: &str, message: Value) -> Value {
        json!({"update_id": 77, kind: message})
    }

    fn message(entities_key: &str, entities: Value) -> Value {
        let mut m = json!({
            "message_id": 5,
            "date": 1_700_000_000,
            "chat": {"id": 4242, "type": "private", "first_name": "Alex"},
            "from": {"id": 4242, "is_bot": false, "first_name": "Alex"},
        });
        let text_key = if entities_key == "entities" {
            "text"
        } else {
            "caption"
        };
        m[text_key] = json!("Meet at 22:45 tomorrow");
        m[entities_key] = entities;
        if entities_key == "caption_entities" {
            m["document"] = json!({"file_id": "f", "file_unique_id": "u", "file_size": 3});
        }
        m
    }

    fn entities() -> Value {
        json!([
            {"type": "bold", "offset": 0, "length": 4},
            {"type": "date_time", "offset": 8, "length": 14, "unix_time": 1_800_000_000}
        ])
    }

    /// Parses as teloxide's own `GetUpdates` does: from text, nothing dropped.
    fn teloxide_parse(raw: &Value) -> Update {
        serde_json::from_str(&raw.to_string()).unwrap()
    }

    #[test]
    fn teloxide_alone_loses_the_text_of_a_message_with_an_unknown_entity_type() {
        // The premise: without `parse`, such a message comes out empty, its text gone.
        let raw = update_with("message", message("entities", entities()));
        let UpdateKind::Message(m) = teloxide_parse(&raw).kind else {
            panic!()
        };
        assert!(matches!(m.kind, MessageKind::Empty {}));
        assert_eq!(m.text(), None);
        // ... because of that entity alone.
        let known = json!([{"type": "bold", "offset": 0, "length": 4}]);
        let raw = update_with("message", message("entities", known));
        let UpdateKind::Message(m) = teloxide_parse(&raw).kind else {
            panic!()
        };
        assert_eq!(m.text(), Some("Meet at 22:45 tomorrow"));
    }

    #[test]
    fn an_unknown_entity_is_dropped_and_the_text_and_known_formatting_are_kept() {
        let raw = update_with("message", message("entities", entities()));
        let update = parse(raw).unwrap();
        assert_eq!(update.id.0, 77);
        let UpdateKind::Message(m) = update.kind else {
            panic!("{update:?}")
        };
        assert_eq!(m.text(), Some("Meet at 22:45 tomorrow"));
        let kinds: Vec<_> = m.entities().unwrap().iter().map(|e| &e.kind).collect();
        assert_eq!(
            kinds,
            [&teloxide::types::MessageEntityKind::Bold],
            "only the unknown entity goes"
        );
    }

    #[test]
    fn edits_captions_and_replied_to_messages_are_recovered_too() {
        let raw = update_with("edited_message", message("entities", entities()));
        let UpdateKind::EditedMessage(m) = parse(raw).unwrap().kind else {
            panic!()
        };
        assert_eq!(m.text(), Some("Meet at 22:45 tomorrow"));

        let raw = update_with("message", message("caption_entities", entities()));
        let UpdateKind::Message(m) = parse(raw).unwrap().kind else {
            panic!()
        };
        assert_eq!(m.caption(), Some("Meet at 22:45 tomorrow"));
        assert_eq!(m.caption_entities().unwrap().len(), 1);

        let mut reply = message("entities", json!([]));
        reply["text"] = json!("ok");
        reply["reply_to_message"] = message("entities", entities());
        let UpdateKind::Message(m) = parse(update_with("message", reply)).unwrap().kind else {
            panic!()
        };
        assert_eq!(m.text(), Some("ok"));
        let replied = m.reply_to_message().unwrap();
        assert_eq!(replied.text(), Some("Meet at 22:45 tomorrow"));
    }

    #[test]
    fn an_update_broken_otherwise_is_unreadable_and_names_its_chat() {
        // Broken beyond its entities: the whole update is an error to teloxide.
        let mut broken = message("entities", entities());
        broken["date"] = json!("yesterday");
        let err = parse(update_with("message", broken)).unwrap_err();
        assert_eq!(err.update_id, Some(77));
        assert_eq!(err.chat, Some(ChatId(4242)));
        assert!(err.reason.starts_with("message: "), "{}", err.reason);
        assert!(
            !err.to_string().contains("22:45"),
            "the message's text stays out of logs: {err}"
        );

        // Its content unreadable: teloxide would hand on an empty message.
        let mut odd = message("entities", json!([]));
        odd["text"] = json!(42);
        let err = parse(update_with("edited_message", odd)).unwrap_err();
        assert_eq!(err.chat, Some(ChatId(4242)));
        assert!(err.reason.starts_with("edited_message: "), "{}", err.reason);

        let raw = json!({"update_id": 78, "something_new": {"id": 1}});
        let err = parse(raw).unwrap_err();
        assert_eq!((err.update_id, err.chat), (Some(78), None));
        assert!(err.reason.contains("something_new"), "{}", err.reason);
    }

    #[test]
    fn an_empty_message_without_text_is_not_mistaken_for_a_lost_one() {
        let mut m = message("entities", json!([]));
        m.as_object_mut().unwrap().remove("text");
        m.as_object_mut().unwrap().remove("entities");
        let update = parse(update_with("message", m)).unwrap();
        assert!(matches!(update.kind, UpdateKind::Message(_)));
    }
}
