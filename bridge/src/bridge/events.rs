//! Reading homeserver events: the transcript entry a message becomes, a visitor's edit or
//! deletion, the file a message carries. Pure: nothing here logs or touches the store.

use serde_json::Value;

use crate::{
    connector::{FileKind, MediaRef, Revision},
    conversation::{Message, SenderRole},
};

/// The transcript entry an `m.room.message` event becomes, with the file it carries, if
/// any; `Ok(None)` for any other event. A message without a usable text body (a file's body
/// is its name) is [`Unusable`]: a numeric body, a `null` content or an empty text would
/// reach the responder as an empty "Visitor XXXX:" line, so such an event is left out, and
/// the caller that gives up on it says so in the log. Pure: logs nothing itself, since the
/// same event may be read more than once (the batch path reads it before handing it on).
pub(super) fn message_of(
    room_id: &str,
    seq: i64,
    role: SenderRole,
    event: &Value,
) -> Result<Option<(Message, Option<MediaRef>)>, Unusable> {
    let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or_default();
    if field("type") != "m.room.message" {
        return Ok(None);
    }
    let content = &event["content"];
    let media = media_of(content);
    let body = content.get("body").and_then(Value::as_str);
    if body.is_none_or(|b| b.trim().is_empty() && media.is_none()) {
        return Err(Unusable {
            content: json_kind(content),
            body: json_kind(&content["body"]),
        });
    }
    let text = |name: &str| content.get(name).and_then(Value::as_str).map(str::to_owned);
    let message = Message {
        event_id: field("event_id").to_owned(),
        room_id: room_id.to_owned(),
        inbox_seq: seq,
        sender: field("sender").to_owned(),
        sender_role: role,
        msgtype: text("msgtype").unwrap_or_default(),
        body: text("body").unwrap_or_default(),
        formatted_body: text("formatted_body"),
        origin_server_ts: event
            .get("origin_server_ts")
            .and_then(Value::as_i64)
            .unwrap_or_default(),
    };
    Ok(Some((message, media)))
}

/// A visitor's change to a message they sent earlier: an edit (`m.replace`, its new text
/// from `m.new_content`) or a redaction.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct VisitorChange {
    /// The change's own event.
    pub(super) event_id: String,
    pub(super) revision: Revision,
    pub(super) body: String,
    pub(super) formatted_body: Option<String>,
}

/// The change `event` makes to an earlier message, if it is an edit or a redaction. An edit
/// whose new content has no text is not one this bridge can carry (left to `message_of`).
pub(super) fn visitor_change_of(event: &Value) -> Option<VisitorChange> {
    let event_id = event.get("event_id").and_then(Value::as_str)?.to_owned();
    let content = &event["content"];
    match event.get("type").and_then(Value::as_str)? {
        "m.room.redaction" => {
            // Room versions up to 10 name the redacted event at the top; 11 in the content.
            let of = event
                .get("redacts")
                .or_else(|| content.get("redacts"))
                .and_then(Value::as_str)?;
            Some(VisitorChange {
                event_id,
                revision: Revision::Delete { of: of.to_owned() },
                body: String::new(),
                formatted_body: None,
            })
        }
        "m.room.message" if content["m.relates_to"]["rel_type"] == "m.replace" => {
            let of = content["m.relates_to"]["event_id"].as_str()?;
            let new = &content["m.new_content"];
            let body = new.get("body").and_then(Value::as_str)?;
            if body.trim().is_empty() {
                return None;
            }
            let formatted_body = (new.get("format").and_then(Value::as_str)
                == Some("org.matrix.custom.html"))
            .then(|| new.get("formatted_body").and_then(Value::as_str))
            .flatten()
            .map(str::to_owned);
            Some(VisitorChange {
                event_id,
                revision: Revision::Edit { of: of.to_owned() },
                body: body.to_owned(),
                formatted_body,
            })
        }
        _ => None,
    }
}

/// An `m.room.message` without a usable text body, by the shape of what it had (never its
/// content, which is the visitor's).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Unusable {
    content: &'static str,
    body: &'static str,
}

impl Unusable {
    pub(super) fn log(self, role: SenderRole) {
        tracing::warn!(
            sender_role = role.as_str(),
            content = self.content,
            body = self.body,
            "message without a usable text body skipped"
        );
    }
}

/// What kind of JSON value this is, for a log line about an odd event.
pub(super) fn json_kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null or missing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(s) if s.trim().is_empty() => "an empty string",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The primary subtag of a browser's language tag (`de-AT` → `de`), if it looks like one.
/// Anything else is dropped rather than passed on to responders.
pub(super) fn primary_language(tag: &str) -> Option<String> {
    let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
    ((2..=8).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_lowercase()))
        .then_some(primary)
}

/// The file an `m.image`/`m.file`/`m.video`/`m.audio` message carries, if any.
pub(super) fn media_of(content: &Value) -> Option<MediaRef> {
    let kind = match content.get("msgtype").and_then(Value::as_str)? {
        "m.image" => FileKind::Image,
        "m.file" | "m.video" | "m.audio" => FileKind::File,
        _ => return None,
    };
    let mxc = content.get("url").and_then(Value::as_str)?.to_owned();
    let body = content
        .get("body")
        .and_then(Value::as_str)
        .unwrap_or("file");
    Some(MediaRef {
        mxc,
        mimetype: content["info"]
            .get("mimetype")
            .and_then(Value::as_str)
            .map(str::to_owned),
        filename: content
            .get("filename")
            .and_then(Value::as_str)
            .unwrap_or(body)
            .to_owned(),
        kind,
    })
}
