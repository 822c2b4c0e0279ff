//! The update queue (what `getUpdates` hands out) and webhook delivery.
//!
//! Semantics from the `getUpdates` and `setWebhook` docs:
//! * `update_id`s strictly increase;
//! * an update is confirmed, and forgotten for good, once `getUpdates` is called with an
//!   `offset` higher than its id; a negative offset keeps only the last `-offset` updates;
//! * `allowed_updates` is remembered across calls and decides which updates are *created*
//!   (updates already queued are not filtered again);
//! * while a webhook is set, updates go to it by HTTPS POST, in order, retried until the
//!   receiver answers 2xx.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use crate::state::{Shared, unix_now};

/// Update types delivered when `allowed_updates` was never given (or given as `[]`): every type
/// except these three, which must be asked for explicitly.
const OPT_IN_TYPES: &[&str] = &["chat_member", "message_reaction", "message_reaction_count"];

/// Every `Update` field name, used to validate `allowed_updates`.
pub(crate) const UPDATE_TYPES: &[&str] = &[
    "message",
    "edited_message",
    "channel_post",
    "edited_channel_post",
    "business_connection",
    "business_message",
    "edited_business_message",
    "deleted_business_messages",
    "message_reaction",
    "message_reaction_count",
    "inline_query",
    "chosen_inline_result",
    "callback_query",
    "shipping_query",
    "pre_checkout_query",
    "purchased_paid_media",
    "poll",
    "poll_answer",
    "my_chat_member",
    "chat_member",
    "chat_join_request",
    "chat_boost",
    "removed_chat_boost",
];

#[derive(Debug, Clone)]
struct Pending {
    id: i64,
    update: Value,
}

/// Queued, unconfirmed updates plus long-poll bookkeeping.
#[derive(Debug)]
pub(crate) struct UpdateQueue {
    next_id: i64,
    pending: VecDeque<Pending>,
    /// `None`: the default set. Otherwise the types the bot asked for.
    allowed: Option<Vec<String>>,
    /// Incremented by every getUpdates; the newest one is the only one allowed to wait.
    pub poll_generation: u64,
    pub active_poller: Option<u64>,
}

impl UpdateQueue {
    pub fn new() -> Self {
        // Real ids start at an arbitrary large number; starting far from 0 catches clients
        // that assume otherwise.
        UpdateQueue {
            next_id: 727_000_001,
            pending: VecDeque::new(),
            allowed: None,
            poll_generation: 0,
            active_poller: None,
        }
    }

    /// Queues `{"update_id": N, kind: payload}` unless `kind` is filtered out. Returns the id.
    pub fn push(&mut self, kind: &str, payload: Value) -> Option<i64> {
        let wanted = match &self.allowed {
            Some(list) => list.iter().any(|t| t == kind),
            None => !OPT_IN_TYPES.contains(&kind),
        };
        if !wanted {
            return None;
        }
        let id = self.next_id;
        self.next_id += 1;
        let mut update = json!({ "update_id": id });
        update[kind] = payload;
        self.pending.push_back(Pending { id, update });
        Some(id)
    }

    /// Applies a getUpdates `offset`.
    pub fn confirm(&mut self, offset: i64) {
        if offset > 0 {
            while self.pending.front().is_some_and(|p| p.id < offset) {
                self.pending.pop_front();
            }
        } else if offset < 0 {
            let keep = offset.unsigned_abs() as usize;
            while self.pending.len() > keep {
                self.pending.pop_front();
            }
        }
    }

    /// The first `limit` unconfirmed updates (they stay queued until confirmed).
    pub fn peek(&self, limit: usize) -> Vec<Value> {
        self.pending
            .iter()
            .take(limit)
            .map(|p| p.update.clone())
            .collect()
    }

    /// The oldest update, for webhook delivery.
    pub fn front(&self) -> Option<(i64, Value)> {
        self.pending.front().map(|p| (p.id, p.update.clone()))
    }

    /// Forgets one update (delivered to a webhook).
    pub fn remove(&mut self, id: i64) {
        self.pending.retain(|p| p.id != id);
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn clear(&mut self) {
        self.pending.clear();
    }

    /// Sets the filter; an empty list means the default set.
    pub fn set_allowed(&mut self, list: Vec<String>) {
        self.allowed = if list.is_empty() { None } else { Some(list) };
    }

    pub fn allowed(&self) -> Option<&[String]> {
        self.allowed.as_deref()
    }
}

/// A webhook set with `setWebhook`.
#[derive(Debug, Clone)]
pub(crate) struct Webhook {
    pub url: String,
    pub secret_token: Option<String>,
    pub max_connections: u32,
    pub ip_address: Option<String>,
    pub last_error: Option<(i64, String)>,
}

impl Webhook {
    /// The `WebhookInfo` object.
    pub fn info_json(&self, pending: usize, allowed: Option<&[String]>) -> Value {
        let mut info = json!({
            "url": self.url,
            "has_custom_certificate": false,
            "pending_update_count": pending,
            "max_connections": self.max_connections,
        });
        if let Some(ip) = &self.ip_address {
            info["ip_address"] = json!(ip);
        }
        if let Some((date, message)) = &self.last_error {
            info["last_error_date"] = json!(date);
            info["last_error_message"] = json!(message);
        }
        if let Some(allowed) = allowed {
            info["allowed_updates"] = json!(allowed);
        }
        info
    }
}

/// Delivers queued updates to the webhook, one at a time and in order, until shutdown.
/// A failed delivery (non-2xx or connection error) is retried after a backoff that grows
/// from 50 ms to 2 s; later updates wait behind it, as ordering demands.
pub(crate) async fn deliver_webhooks(shared: Arc<Shared>) {
    let mut signal = shared.updates_signal.subscribe();
    let mut shutdown = shared.shutdown.clone();
    let mut failures: u32 = 0;
    loop {
        signal.borrow_and_update();
        if shared.is_shutting_down() {
            return;
        }
        let job = {
            let world = shared.world();
            match (&world.webhook, world.updates.front()) {
                (Some(hook), Some((id, update))) => {
                    Some((hook.url.clone(), hook.secret_token.clone(), id, update))
                }
                _ => None,
            }
        };
        let Some((url, secret, id, update)) = job else {
            tokio::select! {
                _ = signal.changed() => {}
                _ = shutdown.changed() => {}
            }
            continue;
        };
        let mut request = shared
            .http
            .post(&url)
            .json(&update)
            .timeout(Duration::from_secs(10));
        if let Some(secret) = &secret {
            request = request.header("X-Telegram-Bot-Api-Secret-Token", secret);
        }
        let outcome = match request.send().await {
            Ok(response) if response.status().is_success() => Ok(()),
            Ok(response) => Err(format!(
                "Wrong response from the webhook: {}",
                response.status()
            )),
            Err(e) if e.is_connect() => Err("Connection refused".to_owned()),
            Err(e) if e.is_timeout() => Err("Read timeout expired".to_owned()),
            Err(_) => Err("Connection error".to_owned()),
        };
        match outcome {
            Ok(()) => {
                shared.world().updates.remove(id);
                failures = 0;
                shared.notify_updates();
            }
            Err(message) => {
                tracing::debug!(%message, update_id = id, "webhook delivery failed");
                if let Some(hook) = shared.world().webhook.as_mut().filter(|h| h.url == url) {
                    hook.last_error = Some((unix_now(), message));
                }
                failures = failures.saturating_add(1);
            }
        }
        if failures > 0 {
            let backoff = Duration::from_millis(50u64.saturating_mul(1 << failures.min(6)))
                .min(Duration::from_secs(2));
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = shutdown.changed() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_confirm_and_negative_offsets_keep_the_tail() {
        let mut q = UpdateQueue::new();
        let ids: Vec<i64> = (0..5)
            .map(|i| q.push("message", json!({ "n": i })).unwrap())
            .collect();
        q.confirm(ids[2]);
        assert_eq!(q.len(), 3);
        q.confirm(-1);
        assert_eq!(
            q.peek(10),
            vec![json!({ "update_id": ids[4], "message": { "n": 4 } })]
        );
    }

    #[test]
    fn allowed_updates_filter_new_updates_only() {
        let mut q = UpdateQueue::new();
        q.push("callback_query", json!({}));
        q.set_allowed(vec!["message".into()]);
        assert!(q.push("callback_query", json!({})).is_none());
        assert_eq!(q.len(), 1);
        assert!(q.push("message_reaction", json!({})).is_none());
        q.set_allowed(vec![]);
        assert!(
            q.push("message_reaction", json!({})).is_none(),
            "opt-in types need asking for"
        );
    }
}
