//! One-off faults armed by tests: a route's next request is answered with a 429, a server
//! error, an answer that comes late, or a connection closed without an answer.

use std::time::Duration;

/// Which REST requests a fault or a rate limit applies to. `None` ids match any channel or
/// webhook.
#[derive(Debug, Clone, PartialEq)]
pub enum Route {
    /// Every REST request (for [`crate::DiscordStandIn::set_bucket_limit`]: the default limit of
    /// routes without their own).
    Any,
    /// `POST /channels/{channel_id}/messages`.
    CreateMessage { channel_id: Option<u64> },
    /// `PATCH /channels/{channel_id}/messages/{message_id}`.
    EditMessage { channel_id: Option<u64> },
    /// `DELETE /channels/{channel_id}/messages/{message_id}`.
    DeleteMessage { channel_id: Option<u64> },
    /// `POST /channels/{channel_id}/threads`.
    CreateThread { channel_id: Option<u64> },
    /// `PUT` and `DELETE /channels/{channel_id}/thread-members/{user_id}`.
    ThreadMember { channel_id: Option<u64> },
    /// `POST /users/@me/channels`.
    OpenDm,
    /// `POST /webhooks/{webhook_id}/{webhook_token}`.
    ExecuteWebhook { webhook_id: Option<u64> },
    /// `POST /interactions/{interaction_id}/{interaction_token}/callback`.
    InteractionCallback,
    /// Any route by method and template as Discord's docs write it, e.g.
    /// `("GET", "/gateway/bot")` or `("PATCH", "/channels/{channel_id}")`.
    Template { method: String, template: String },
}

/// What an armed fault does to the one request it catches.
#[derive(Debug, Clone, PartialEq)]
pub enum Fault {
    /// 429 with `retry_after` (seconds) and `global`, headers as a real 429 has them. Only this
    /// request is refused: the bucket itself is not emptied.
    RateLimited { retry_after: f64, global: bool },
    /// That status with `{"message": "<status>: <reason>", "code": 0}`.
    ServerError(u16),
    /// Answer only after this long (then carry the request out normally, if the client is
    /// still waiting; a client that hangs up first gets nothing done).
    Hang(Duration),
    /// Close the connection without answering (the request is not carried out).
    CloseConnection,
    /// Carry the request out at once, then answer only after this long: a client whose
    /// timeout is shorter sees a failure although the request landed.
    AnswerLate(Duration),
}

/// What identifies a request for matching: method, template and major parameter.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RouteKey {
    pub method: &'static str,
    pub template: &'static str,
    pub major: Option<u64>,
}

impl Route {
    pub(crate) fn matches(&self, key: &RouteKey) -> bool {
        let id_matches = |want: &Option<u64>| want.is_none() || *want == key.major;
        let is = |method: &str, template: &str| key.method == method && key.template == template;
        match self {
            Route::Any => true,
            Route::CreateMessage { channel_id } => {
                is("POST", "/channels/{channel_id}/messages") && id_matches(channel_id)
            }
            Route::EditMessage { channel_id } => {
                is("PATCH", "/channels/{channel_id}/messages/{message_id}")
                    && id_matches(channel_id)
            }
            Route::DeleteMessage { channel_id } => {
                is("DELETE", "/channels/{channel_id}/messages/{message_id}")
                    && id_matches(channel_id)
            }
            Route::CreateThread { channel_id } => {
                is("POST", "/channels/{channel_id}/threads") && id_matches(channel_id)
            }
            Route::ThreadMember { channel_id } => {
                (is("PUT", "/channels/{channel_id}/thread-members/{user_id}")
                    || is("DELETE", "/channels/{channel_id}/thread-members/{user_id}"))
                    && id_matches(channel_id)
            }
            Route::OpenDm => is("POST", "/users/@me/channels"),
            Route::ExecuteWebhook { webhook_id } => {
                is("POST", "/webhooks/{webhook_id}/{webhook_token}") && id_matches(webhook_id)
            }
            Route::InteractionCallback => is(
                "POST",
                "/interactions/{interaction_id}/{interaction_token}/callback",
            ),
            Route::Template { method, template } => is(method, template),
        }
    }
}

/// Armed faults, each firing once, in the order they were armed.
#[derive(Debug, Default)]
pub(crate) struct Faults {
    armed: Vec<(Route, Fault)>,
}

impl Faults {
    pub fn arm(&mut self, route: Route, fault: Fault) {
        self.armed.push((route, fault));
    }

    /// Takes the first fault armed for this request, if any.
    pub fn take(&mut self, key: &RouteKey) -> Option<Fault> {
        let index = self.armed.iter().position(|(r, _)| r.matches(key))?;
        Some(self.armed.remove(index).1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn create_message(channel: u64) -> RouteKey {
        RouteKey {
            method: "POST",
            template: "/channels/{channel_id}/messages",
            major: Some(channel),
        }
    }

    #[test]
    fn a_fault_fires_once_and_only_for_its_channel() {
        let mut faults = Faults::default();
        faults.arm(
            Route::CreateMessage {
                channel_id: Some(7),
            },
            Fault::ServerError(500),
        );
        assert_eq!(faults.take(&create_message(8)), None);
        assert_eq!(
            faults.take(&create_message(7)),
            Some(Fault::ServerError(500))
        );
        assert_eq!(faults.take(&create_message(7)), None);
    }

    #[test]
    fn templates_match_method_and_path() {
        let route = Route::Template {
            method: "GET".into(),
            template: "/channels/{channel_id}/messages".into(),
        };
        assert!(!route.matches(&create_message(1)));
        let get = RouteKey {
            method: "GET",
            ..create_message(1)
        };
        assert!(route.matches(&get));
    }
}
