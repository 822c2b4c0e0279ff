//! Reading the homeserver's events in rooms that are not conversations (relay rooms, direct
//! chats with the bot) into the bridge's remote events. Pure: no I/O.

use serde_json::Value;

use super::COMMAND_PREFIX;
use crate::connector::{FileKind, HandleOffer, RemoteEvent, RemoteFile};
use crate::responder::ResponderStatus;

/// What one homeserver event in a room that is not a conversation means.
#[derive(Debug, PartialEq)]
pub enum Reading {
    /// A responder's event for the bridge, keyed by its event ID.
    Remote {
        key: String,
        event: Box<RemoteEvent>,
    },
    /// Someone invited the bot to a direct chat (`key`: the invite's event ID).
    Invited { inviter: String, key: String },
    /// Nothing for the bridge: the bot's own echo, someone else's event, small talk.
    Nothing,
}

/// Reads one event in `room_id`, which is the relay room of `relay` (a Matrix offer's handle)
/// or else a direct chat with the bot. Pure.
///
/// In a relay room only the responder the offer went to counts (the bot's own events echo
/// back too): joining accepts, leaving declines, `!end` and `!transfer [target]` are
/// commands, an `m.replace` is an edit, and anything else they write is a message for the
/// visitor (its formatted body sanitised to the spec's allow-list, a file fetched from the
/// media repository). In a direct chat, `!available`, `!away` and `!offline` set the
/// responder's status and any other `!` word asks for help; the answers go into that chat.
/// Where `initiators` may write (see [`MatrixConnector::with_initiators`]), a direct chat's
/// other messages are messages too, and `!end`, `!new` and `!topics` commands.
pub fn read_event(
    bot: &str,
    room_id: &str,
    relay: Option<&HandleOffer>,
    initiators: bool,
    event: &Value,
) -> Reading {
    let field = |name: &str| event.get(name).and_then(Value::as_str).unwrap_or_default();
    let sender = field("sender");
    let key = field("event_id").to_owned();
    if sender == bot || key.is_empty() {
        return Reading::Nothing;
    }
    let content = &event["content"];
    let membership = content["membership"].as_str();
    let Some(offer) = relay else {
        return match field("type") {
            "m.room.member" if field("state_key") == bot && membership == Some("invite") => {
                Reading::Invited {
                    inviter: sender.to_owned(),
                    key,
                }
            }
            "m.room.message" => {
                let body = content["body"].as_str().unwrap_or_default().trim();
                let Some(word) = body.strip_prefix(COMMAND_PREFIX) else {
                    if !initiators {
                        return Reading::Nothing;
                    }
                    let message = relay_room_message(room_id, &key, sender.to_owned(), content);
                    return Reading::Remote {
                        key,
                        event: Box::new(message),
                    };
                };
                let word = word.trim();
                let command = match ResponderStatus::parse(word) {
                    Some(status) => status.as_str(),
                    None if initiators && matches!(word, "end" | "new" | "topics") => word,
                    None => "help",
                }
                .to_owned();
                Reading::Remote {
                    key,
                    event: Box::new(RemoteEvent::Command {
                        address: sender.to_owned(),
                        command,
                        args: String::new(),
                        reply_to: None,
                        thread: Some(room_id.to_owned()),
                        language: None,
                    }),
                }
            }
            _ => Reading::Nothing,
        };
    };
    if sender != offer.address {
        return Reading::Nothing;
    }
    let address = offer.address.clone();
    let event = match (field("type"), membership) {
        ("m.room.member", Some("join")) => RemoteEvent::Accept {
            offer_id: offer.offer_id,
            display_name: content["displayname"]
                .as_str()
                .unwrap_or(&address)
                .to_owned(),
            address,
        },
        ("m.room.member", Some("leave")) => RemoteEvent::Decline {
            offer_id: offer.offer_id,
            address,
        },
        ("m.room.message", _) => relay_room_message(room_id, &key, address, content),
        _ => return Reading::Nothing,
    };
    Reading::Remote {
        key,
        event: Box::new(event),
    }
}

/// A responder's message in their relay room (see [`read_event`]).
fn relay_room_message(
    room_id: &str,
    event_id: &str,
    address: String,
    content: &Value,
) -> RemoteEvent {
    let html = |v: &Value| v.as_str().map(crate::format::sanitise_matrix_html);
    if content["m.relates_to"]["rel_type"] == "m.replace" {
        let new = &content["m.new_content"];
        return RemoteEvent::Edit {
            address,
            message_id: content["m.relates_to"]["event_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            body: new["body"].as_str().unwrap_or_default().to_owned(),
            formatted_body: html(&new["formatted_body"]),
        };
    }
    let body = content["body"].as_str().unwrap_or_default();
    let command = |name: &str, args: &str| RemoteEvent::Command {
        address: address.clone(),
        command: name.to_owned(),
        args: args.trim().to_owned(),
        reply_to: None,
        // The relay room is the offer's handle: it names the conversation.
        thread: Some(room_id.to_owned()),
        language: None,
    };
    let trimmed = body.trim();
    if trimmed == "!end" {
        return command("end", "");
    }
    // `!transfer`, `!transfer TOPIC`, `!transfer RESPONDER`: as `/transfer` on Telegram.
    if let Some(target) = trimmed.strip_prefix("!transfer")
        && (target.is_empty() || target.starts_with(char::is_whitespace))
    {
        return command("transfer", target);
    }
    RemoteEvent::Message {
        address: address.clone(),
        message_id: event_id.to_owned(),
        reply_to: None,
        body: body.to_owned(),
        formatted_body: html(&content["formatted_body"]),
        display_name: address.clone(),
        file: file_of(content),
        thread: Some(room_id.to_owned()),
        language: None,
    }
}

/// The file an `m.image`/`m.file`/`m.video`/`m.audio` message carries, if any.
fn file_of(content: &Value) -> Option<RemoteFile> {
    let kind = match content["msgtype"].as_str()? {
        "m.image" => FileKind::Image,
        "m.file" | "m.video" | "m.audio" => FileKind::File,
        _ => return None,
    };
    let mxc = content["url"].as_str()?.to_owned();
    let body = content["body"].as_str().unwrap_or("file");
    Some(RemoteFile {
        file_id: mxc,
        mimetype: content["info"]["mimetype"].as_str().map(str::to_owned),
        filename: content["filename"].as_str().unwrap_or(body).to_owned(),
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const BOT: &str = "@switchboard:example.org";
    const SAM: &str = "@sam:example.org";
    const RELAY: &str = "!relay:example.org";

    fn offer() -> HandleOffer {
        HandleOffer {
            open: true,
            offer_id: 7,
            address: SAM.into(),
        }
    }

    fn in_relay(event: Value) -> Reading {
        read_event(BOT, RELAY, Some(&offer()), false, &event)
    }

    fn remote(reading: Reading) -> (String, RemoteEvent) {
        match reading {
            Reading::Remote { key, event } => (key, *event),
            other => panic!("expected a remote event, got {other:?}"),
        }
    }

    fn message(sender: &str, content: Value) -> Value {
        json!({"type": "m.room.message", "event_id": "$m", "room_id": RELAY,
               "sender": sender, "content": content})
    }

    #[test]
    fn joining_the_relay_room_accepts_the_offer_under_the_event_id() {
        let (key, event) = remote(in_relay(json!({
            "type": "m.room.member", "event_id": "$join", "sender": SAM, "state_key": SAM,
            "content": {"membership": "join", "displayname": "Sam"}
        })));
        assert_eq!(key, "$join");
        assert_eq!(
            event,
            RemoteEvent::Accept {
                offer_id: 7,
                address: SAM.into(),
                display_name: "Sam".into()
            }
        );
    }

    #[test]
    fn leaving_the_relay_room_declines_the_offer() {
        let (_, event) = remote(in_relay(json!({
            "type": "m.room.member", "event_id": "$leave", "sender": SAM, "state_key": SAM,
            "content": {"membership": "leave"}
        })));
        assert_eq!(
            event,
            RemoteEvent::Decline {
                offer_id: 7,
                address: SAM.into()
            }
        );
    }

    #[test]
    fn the_bots_own_events_and_strangers_are_ignored() {
        // The bot removing the responder (a kick is a leave sent by the bot).
        let kick = json!({
            "type": "m.room.member", "event_id": "$kick", "sender": BOT, "state_key": SAM,
            "content": {"membership": "leave"}
        });
        assert_eq!(in_relay(kick), Reading::Nothing);
        // The bot's own messages echo back.
        assert_eq!(
            in_relay(message(
                BOT,
                json!({"msgtype": "m.text", "body": "Visitor 7F3A: hi"})
            )),
            Reading::Nothing
        );
        assert_eq!(
            read_event(
                BOT,
                "!dm:x",
                None,
                false,
                &message(BOT, json!({"body": "!help"}))
            ),
            Reading::Nothing
        );
        // Someone else in the relay room.
        assert_eq!(
            in_relay(message(
                "@eve:x",
                json!({"msgtype": "m.text", "body": "!end"})
            )),
            Reading::Nothing
        );
    }

    #[test]
    fn an_m_replace_is_an_edit_of_the_original_with_its_html_sanitised() {
        let (_, event) = remote(in_relay(message(
            SAM,
            json!({
                "msgtype": "m.text", "body": "* fixed",
                "m.new_content": {"msgtype": "m.text", "body": "fixed",
                    "format": "org.matrix.custom.html",
                    "formatted_body": "<b>fixed</b><script>x()</script><img src=\"https://t.example/p.png\">"},
                "m.relates_to": {"rel_type": "m.replace", "event_id": "$orig"}
            }),
        )));
        let RemoteEvent::Edit {
            address,
            message_id,
            body,
            formatted_body,
        } = event
        else {
            panic!("{event:?}")
        };
        assert_eq!(
            (address.as_str(), message_id.as_str(), body.as_str()),
            (SAM, "$orig", "fixed")
        );
        let html = formatted_body.unwrap();
        assert!(html.starts_with("<b>fixed</b>"), "{html}");
        assert!(
            !html.contains("script") && !html.contains("t.example"),
            "{html}"
        );
    }

    #[test]
    fn end_and_transfer_in_the_relay_room_are_commands_about_its_conversation() {
        let (_, end) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.text", "body": " !end "}),
        )));
        assert_eq!(
            end,
            RemoteEvent::Command {
                address: SAM.into(),
                command: "end".into(),
                args: String::new(),
                reply_to: None,
                thread: Some(RELAY.into()),
                language: None,
            }
        );
        let (_, transfer) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.text", "body": "!transfer  sales"}),
        )));
        assert!(
            matches!(&transfer, RemoteEvent::Command { command, args, .. } if command == "transfer" && args == "sales"),
            "{transfer:?}"
        );
        // Any other `!` text is a message for the visitor, as before.
        let (_, other) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.text", "body": "!transferred it"}),
        )));
        assert!(matches!(other, RemoteEvent::Message { .. }), "{other:?}");
    }

    #[test]
    fn a_message_is_relayed_with_its_html_sanitised_and_its_file() {
        let (key, event) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.text", "body": "hello",
                   "format": "org.matrix.custom.html",
                   "formatted_body": "<i>hello</i><a href=\"javascript:x()\">x</a>"}),
        )));
        assert_eq!(key, "$m");
        let RemoteEvent::Message {
            message_id,
            thread,
            body,
            formatted_body,
            file,
            ..
        } = event
        else {
            panic!("{event:?}")
        };
        assert_eq!(
            (message_id.as_str(), thread.as_deref(), body.as_str()),
            ("$m", Some(RELAY), "hello")
        );
        let html = formatted_body.unwrap();
        assert!(
            html.starts_with("<i>hello</i>") && !html.contains("javascript"),
            "{html}"
        );
        assert_eq!(file, None);

        let (_, event) = remote(in_relay(message(
            SAM,
            json!({"msgtype": "m.image", "body": "cat.png", "url": "mxc://x/cat",
                   "info": {"mimetype": "image/png"}}),
        )));
        let RemoteEvent::Message { file, .. } = event else {
            panic!()
        };
        assert_eq!(
            file,
            Some(RemoteFile {
                file_id: "mxc://x/cat".into(),
                mimetype: Some("image/png".into()),
                filename: "cat.png".into(),
                kind: FileKind::Image
            })
        );
    }

    #[test]
    fn in_a_direct_chat_status_words_are_commands_and_the_rest_asks_for_help() {
        let dm = "!dm:example.org";
        let command_of = |body: &str| match read_event(
            BOT,
            dm,
            None,
            false,
            &message(SAM, json!({"msgtype": "m.text", "body": body})),
        ) {
            Reading::Remote { event, .. } => match *event {
                RemoteEvent::Command {
                    command, thread, ..
                } => {
                    assert_eq!(thread.as_deref(), Some(dm), "answered in the direct chat");
                    Some(command)
                }
                other => panic!("{other:?}"),
            },
            Reading::Nothing => None,
            other => panic!("{other:?}"),
        };
        assert_eq!(command_of("!away").as_deref(), Some("away"));
        assert_eq!(command_of(" !available ").as_deref(), Some("available"));
        assert_eq!(command_of("!offline").as_deref(), Some("offline"));
        assert_eq!(command_of("!help").as_deref(), Some("help"));
        assert_eq!(command_of("!end").as_deref(), Some("help"));
        assert_eq!(command_of("hello"), None, "small talk is not answered");
    }

    #[test]
    fn an_invite_to_a_direct_chat_is_noticed() {
        let invite = json!({
            "type": "m.room.member", "event_id": "$i", "sender": SAM, "state_key": BOT,
            "content": {"membership": "invite"}
        });
        assert_eq!(
            read_event(BOT, "!dm:x", None, false, &invite),
            Reading::Invited {
                inviter: SAM.into(),
                key: "$i".into()
            }
        );
    }

    #[test]
    fn where_initiators_may_write_a_direct_chat_carries_their_messages_and_commands() {
        let dm = "!dm:example.org";
        let read = |body: &str| {
            read_event(
                BOT,
                dm,
                None,
                true,
                &message(SAM, json!({"msgtype": "m.text", "body": body})),
            )
        };
        let Reading::Remote { key, event } = read("hello, I need help") else {
            panic!("a message")
        };
        assert_eq!(key, "$m");
        let RemoteEvent::Message {
            address,
            message_id,
            body,
            thread,
            ..
        } = *event
        else {
            panic!("{event:?}")
        };
        assert_eq!(
            (
                address.as_str(),
                message_id.as_str(),
                body.as_str(),
                thread.as_deref()
            ),
            (SAM, "$m", "hello, I need help", Some(dm))
        );
        for (body, command) in [
            ("!end", "end"),
            ("!new", "new"),
            ("!away", "away"),
            ("!what", "help"),
        ] {
            match read(body) {
                Reading::Remote { event, .. } => {
                    assert!(
                        matches!(&*event, RemoteEvent::Command { command: c, thread, .. }
                            if c == command && thread.as_deref() == Some(dm)),
                        "{body}: {event:?}"
                    );
                }
                other => panic!("{body}: {other:?}"),
            }
        }
    }
}
