//! `getUpdates` (with long polling) and the webhook methods.

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::Success;
use crate::error::{ApiError, ApiResult};
use crate::params::Params;
use crate::state::Shared;
use crate::updates::{UPDATE_TYPES, Webhook};

/// The real server caps long-poll timeouts at 50 seconds.
const MAX_POLL_TIMEOUT: i64 = 50;

const WEBHOOK_ACTIVE: &str = "can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first";
const TERMINATED: &str =
    "terminated by other getUpdates request; make sure that only one bot instance is running";

/// Parses `allowed_updates`; `None` means "keep the previous setting".
fn allowed_updates(params: &Params) -> ApiResult<Option<Vec<String>>> {
    let bad = || ApiError::bad_request("can't parse allowed updates JSON object");
    let Some(list) = params.json("allowed_updates").map_err(|_| bad())? else {
        return Ok(None);
    };
    let items = list.as_array().ok_or_else(bad)?;
    // Unknown names are ignored, as by the real server.
    let names = items
        .iter()
        .filter_map(Value::as_str)
        .filter(|n| UPDATE_TYPES.contains(n))
        .map(str::to_owned)
        .collect();
    Ok(Some(names))
}

/// Clears `active_poller` when a getUpdates ends in any way, including the client hanging up
/// (axum drops the handler future then).
struct PollGuard<'a> {
    shared: &'a Shared,
    generation: u64,
}

impl Drop for PollGuard<'_> {
    fn drop(&mut self) {
        let mut world = self.shared.world();
        if world.updates.active_poller == Some(self.generation) {
            world.updates.active_poller = None;
        }
    }
}

/// # `getUpdates`
///
/// Answers at once when updates are queued; otherwise holds the request until one arrives or
/// `timeout` seconds pass. A newer getUpdates ends a waiting one with 409.
pub(crate) async fn get_updates(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    let offset = params.i64("offset")?.unwrap_or(0);
    let limit = params.i64("limit")?.unwrap_or(100).clamp(1, 100) as usize;
    let timeout = params
        .i64("timeout")?
        .unwrap_or(0)
        .clamp(0, MAX_POLL_TIMEOUT) as u64;
    let allowed = allowed_updates(params)?;

    let generation = {
        let mut world = shared.world();
        if world.webhook.is_some() {
            return Err(ApiError::conflict(WEBHOOK_ACTIVE));
        }
        if let Some(allowed) = allowed {
            world.updates.set_allowed(allowed);
        }
        world.updates.confirm(offset);
        world.updates.poll_generation += 1;
        let generation = world.updates.poll_generation;
        world.updates.active_poller = Some(generation);
        generation
    };
    // Wake any older poller so that it notices it has been superseded.
    shared.notify_updates();
    let _guard = PollGuard { shared, generation };

    let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
    let mut signal = shared.updates_signal.subscribe();
    let mut shutdown = shared.shutdown.clone();
    loop {
        // Mark the current version seen *before* looking, so no change can slip between
        // the look and the wait.
        signal.borrow_and_update();
        {
            let world = shared.world();
            if world.updates.active_poller != Some(generation) {
                return Err(ApiError::conflict(TERMINATED));
            }
            if world.webhook.is_some() {
                return Err(ApiError::conflict(WEBHOOK_ACTIVE));
            }
            let updates = world.updates.peek(limit);
            if !updates.is_empty() || timeout == 0 || shared.is_shutting_down() {
                return Ok(json!(updates).into());
            }
        }
        tokio::select! {
            _ = signal.changed() => {}
            _ = shutdown.changed() => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(json!([]).into()),
        }
    }
}

/// A webhook URL the stand-in accepts. Telegram requires HTTPS on ports 443, 80, 88 or 8443
/// and refuses private addresses; loopback plain-HTTP URLs are let through so tests can
/// receive webhooks, everything else follows the real rules.
fn check_webhook_url(url: &str) -> ApiResult<()> {
    let bad = |why: &str| ApiError::bad_request(format!("bad webhook: {why}"));
    let (scheme, rest) = url.split_once("://").ok_or_else(|| bad("invalid URL"))?;
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.ends_with(']') || authority.starts_with('[') => {
            (h, p.parse::<u16>().ok())
        }
        _ => (authority, None),
    };
    if host.is_empty() {
        return Err(bad("invalid URL"));
    }
    let loopback = host == "localhost" || host.starts_with("127.") || host == "[::1]";
    if loopback && matches!(scheme, "http" | "https") {
        return Ok(());
    }
    if scheme != "https" {
        return Err(bad("An HTTPS URL must be provided for webhook"));
    }
    if port.is_some_and(|p| ![443, 80, 88, 8443].contains(&p)) {
        return Err(bad(
            "Webhook can be set up only on ports 80, 88, 443 or 8443",
        ));
    }
    Ok(())
}

/// # `setWebhook`
pub(crate) fn set_webhook(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    let url = params.str("url").unwrap_or_default();
    if url.is_empty() {
        // An empty URL removes the webhook, like deleteWebhook.
        return delete_webhook(shared, params);
    }
    check_webhook_url(&url)?;
    let secret = params.str("secret_token").filter(|s| !s.is_empty());
    if let Some(secret) = &secret {
        let allowed_chars = secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if secret.len() > 256 || !allowed_chars {
            return Err(ApiError::bad_request(
                "secret token contains unallowed characters",
            ));
        }
    }
    let max_connections = params.i64("max_connections")?.unwrap_or(40).clamp(1, 100) as u32;
    let allowed = allowed_updates(params)?;
    {
        let mut world = shared.world();
        if params.bool("drop_pending_updates") {
            world.updates.clear();
        }
        if let Some(allowed) = allowed {
            world.updates.set_allowed(allowed);
        }
        let ip_address = params.str("ip_address").filter(|s| !s.is_empty());
        world.webhook = Some(Webhook {
            url,
            secret_token: secret,
            max_connections,
            ip_address,
            last_error: None,
        });
    }
    // Wakes the webhook sender, and any long poll (which must now fail with 409).
    shared.notify_updates();
    Ok(Success {
        result: json!(true),
        description: Some("Webhook was set".into()),
    })
}

/// # `deleteWebhook`
pub(crate) fn delete_webhook(shared: &Arc<Shared>, params: &Params) -> ApiResult<Success> {
    let had_webhook = {
        let mut world = shared.world();
        if params.bool("drop_pending_updates") {
            world.updates.clear();
        }
        world.webhook.take().is_some()
    };
    shared.notify_updates();
    let description = if had_webhook {
        "Webhook was deleted"
    } else {
        "Webhook is already deleted"
    };
    Ok(Success {
        result: json!(true),
        description: Some(description.into()),
    })
}

/// # `getWebhookInfo`
pub(crate) fn get_webhook_info(shared: &Arc<Shared>) -> ApiResult<Success> {
    let world = shared.world();
    let pending = world.updates.len();
    let info = match &world.webhook {
        Some(hook) => hook.info_json(pending, world.updates.allowed()),
        None => {
            json!({ "url": "", "has_custom_certificate": false, "pending_update_count": pending })
        }
    };
    Ok(info.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls() {
        assert!(check_webhook_url("http://127.0.0.1:4321/hook").is_ok());
        assert!(check_webhook_url("https://bot.example.org/hook").is_ok());
        assert!(check_webhook_url("https://bot.example.org:8443/hook").is_ok());
        assert_eq!(
            check_webhook_url("http://bot.example.org/hook")
                .unwrap_err()
                .description,
            "Bad Request: bad webhook: An HTTPS URL must be provided for webhook"
        );
        assert!(check_webhook_url("https://bot.example.org:9999/").is_err());
        assert!(check_webhook_url("nonsense").is_err());
    }
}
