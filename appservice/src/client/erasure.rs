//! Erasing a conversation from the homeserver: every message redacted by the bot (what the
//! spec offers everywhere), or the room deleted and purged with Synapse's admin API.

use std::time::Duration;

use ruma::{OwnedEventId, RoomId};
use serde::Deserialize;

use super::{ClientError, HomeserverClient, execute_raw};

impl HomeserverClient {
    /// Redacts, as the bot, every message event of `room` not redacted yet, newest first,
    /// under a transaction ID made from the event's ID (so doing it again redacts nothing
    /// twice), and answers how many it redacted. State events stay (they are the room:
    /// name, members). The bot needs the power to redact others' events: in a room it
    /// created it has power level 100. Pages through the whole timeline (one request per
    /// hundred events, one per redaction).
    pub async fn redact_room_messages(
        &self,
        room: &RoomId,
        reason: &str,
    ) -> Result<u64, ClientError> {
        let mut from: Option<String> = None;
        let mut redacted = 0;
        loop {
            let (chunk, end) = self.messages_backward(room, from.as_deref(), 100).await?;
            for raw in &chunk {
                let Ok(event) = raw.deserialize_as_unchecked::<serde_json::Value>() else {
                    continue;
                };
                let Some(event_id) = redactable(&event) else {
                    continue;
                };
                self.redact(
                    room,
                    &self.bot,
                    &event_id,
                    &format!("switchboard-erase-{event_id}"),
                    Some(reason),
                )
                .await?;
                redacted += 1;
            }
            match end {
                Some(end) if !chunk.is_empty() => from = Some(end),
                _ => return Ok(redacted),
            }
        }
    }

    /// Deletes `room` with Synapse's admin API, `DELETE /_synapse/admin/v2/rooms/{room_id}`
    /// with `purge`: every local member is removed and the room's events are deleted from
    /// Synapse's database. Synapse does it in the background; this waits for its
    /// `delete_status` to say `complete` (or `failed`, an error) for at most `wait`, and
    /// answers whether it finished meanwhile.
    ///
    /// Not in the Matrix spec, so ruma has no type for it: the two paths are built here, with
    /// the room ID as an encoded path segment. `admin_token` is a Synapse administrator's
    /// access token (the appservice's `as_token` is not one); it travels in the
    /// `Authorization` header only.
    pub async fn synapse_purge_room(
        &self,
        room: &RoomId,
        admin_token: &str,
        wait: Duration,
    ) -> Result<bool, ClientError> {
        let url = self.admin_url(&["_synapse", "admin", "v2", "rooms", room.as_str()])?;
        let request = self
            .http
            .delete(url)
            .bearer_auth(admin_token)
            .json(&serde_json::json!({ "purge": true, "block": false }))
            .build()
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let (_, _, body) = execute_raw(&self.http, request).await?;
        #[derive(Deserialize)]
        struct Started {
            delete_id: String,
        }
        let started: Started =
            serde_json::from_slice(&body).map_err(|e| ClientError::Response(e.to_string()))?;
        let status_url = self.admin_url(&[
            "_synapse",
            "admin",
            "v2",
            "rooms",
            "delete_status",
            &started.delete_id,
        ])?;
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let request = self
                .http
                .get(status_url.clone())
                .bearer_auth(admin_token)
                .build()
                .map_err(|e| ClientError::Build(e.to_string()))?;
            let (_, _, body) = execute_raw(&self.http, request).await?;
            #[derive(Deserialize)]
            struct Status {
                status: String,
                #[serde(default)]
                error: Option<String>,
            }
            let status: Status =
                serde_json::from_slice(&body).map_err(|e| ClientError::Response(e.to_string()))?;
            match status.status.as_str() {
                "complete" => return Ok(true),
                "failed" => {
                    return Err(ClientError::Matrix {
                        status: 500,
                        errcode: "M_UNKNOWN".into(),
                        message: format!(
                            "Synapse could not delete the room: {}",
                            status.error.unwrap_or_default()
                        ),
                        retry_after: None,
                    });
                }
                // scheduled, active, shutting_down, purging
                _ if tokio::time::Instant::now() >= deadline => return Ok(false),
                _ => tokio::time::sleep(Duration::from_millis(250)).await,
            }
        }
    }

    /// `segments` after the homeserver's base URL, each percent-encoded as one segment.
    fn admin_url(&self, segments: &[&str]) -> Result<reqwest::Url, ClientError> {
        let mut url =
            reqwest::Url::parse(&self.base_url).map_err(|e| ClientError::Build(e.to_string()))?;
        url.path_segments_mut()
            .map_err(|()| ClientError::Build("the homeserver URL cannot have a path".into()))?
            .pop_if_empty()
            .extend(segments);
        Ok(url)
    }
}

/// The ID of `event` if it is a message event with content left to redact: not a state
/// event, not a redaction, not redacted already.
fn redactable(event: &serde_json::Value) -> Option<OwnedEventId> {
    if event.get("state_key").is_some() {
        return None;
    }
    if event.get("type").and_then(|t| t.as_str()) == Some("m.room.redaction") {
        return None;
    }
    let redacted = event
        .pointer("/unsigned/redacted_because")
        .is_some_and(|r| !r.is_null());
    let empty = event
        .get("content")
        .and_then(|c| c.as_object())
        .is_none_or(|c| c.is_empty());
    if redacted || empty {
        return None;
    }
    event.get("event_id")?.as_str()?.parse().ok()
}

#[cfg(test)]
mod redactable_tests {
    use super::redactable;
    use serde_json::json;

    #[test]
    fn only_message_events_with_content_are_redacted() {
        let message =
            json!({"type": "m.room.message", "event_id": "$a", "content": {"body": "hi"}});
        assert_eq!(
            redactable(&message).map(|e| e.to_string()),
            Some("$a".into())
        );
        for skipped in [
            json!({"type": "m.room.name", "state_key": "", "event_id": "$s", "content": {"name": "x"}}),
            json!({"type": "m.room.redaction", "event_id": "$r", "redacts": "$a", "content": {}}),
            json!({"type": "m.room.message", "event_id": "$d", "content": {},
                   "unsigned": {"redacted_because": {"type": "m.room.redaction"}}}),
        ] {
            assert_eq!(redactable(&skipped), None, "{skipped}");
        }
    }
}
