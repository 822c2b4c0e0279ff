//! Which endpoint a request is for. Paths are matched by segment, never by hand-written
//! strings per handler: `resolve` names the endpoint, its route template (for faults and
//! rate-limit buckets), its major parameter and whether it needs the bot's token.

mod app;
mod channels;
mod interactions;
pub(crate) mod messages;
mod webhooks;

use crate::error::{ApiError, ApiResult};
use crate::faults::RouteKey;
use crate::rest::{Reply, Req};
use crate::state::Shared;

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Auth {
    /// `Authorization: Bot <token>`; counts against the global limit.
    Bot,
    /// The path carries its own secret (webhook and interaction tokens), or it is public.
    Token,
}

/// `{user_id}` in thread-member paths may be `@me`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum UserRef {
    Me,
    Id(u64),
}

/// `{message_id}` in webhook paths may be `@original` (an interaction's first response).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum MessageRef {
    Original,
    Id(u64),
}

#[derive(Debug)]
pub(crate) enum Endpoint {
    Gateway,
    GatewayBot,
    CurrentUser,
    Application,
    OpenDm,
    GetChannel(u64),
    ModifyChannel(u64),
    GetMessages(u64),
    GetMessage(u64, u64),
    CreateMessage(u64),
    EditMessage(u64, u64),
    DeleteMessage(u64, u64),
    Typing(u64),
    CreateThread(u64),
    ThreadMembers(u64),
    GetThreadMember(u64, UserRef),
    AddThreadMember(u64, UserRef),
    RemoveThreadMember(u64, UserRef),
    CreateWebhook(u64),
    ChannelWebhooks(u64),
    ExecuteWebhook(u64, String),
    GetWebhookMessage(u64, String, MessageRef),
    EditWebhookMessage(u64, String, MessageRef),
    DeleteWebhookMessage(u64, String, MessageRef),
    InteractionCallback(u64, String),
    GetCommands(u64, Option<u64>),
    OverwriteCommands(u64, Option<u64>),
}

pub(crate) struct Resolved {
    pub endpoint: Endpoint,
    pub key: RouteKey,
    pub auth: Auth,
}

/// A path segment that must be a snowflake; Discord names the parameter when it is not.
fn snowflake(name: &str, segment: &str) -> ApiResult<u64> {
    segment.parse().map_err(|_| {
        ApiError::field(
            &[name],
            "NUMBER_TYPE_COERCE",
            &format!("Value \"{segment}\" is not snowflake."),
        )
    })
}

fn user_ref(segment: &str) -> ApiResult<UserRef> {
    if segment == "@me" {
        Ok(UserRef::Me)
    } else {
        snowflake("user_id", segment).map(UserRef::Id)
    }
}

fn message_ref(segment: &str) -> ApiResult<MessageRef> {
    if segment == "@original" {
        Ok(MessageRef::Original)
    } else {
        snowflake("message_id", segment).map(MessageRef::Id)
    }
}

/// Names the endpoint of `method` + path segments (after `/api/v10`).
pub(crate) fn resolve(method: &str, segments: &[&str]) -> ApiResult<Resolved> {
    use Endpoint as E;
    let mut major = None;
    let (template, allowed): (&'static str, &[&str]) = match segments {
        ["gateway"] => ("/gateway", &["GET"]),
        ["gateway", "bot"] => ("/gateway/bot", &["GET"]),
        ["users", "@me"] => ("/users/@me", &["GET"]),
        ["users", "@me", "channels"] => ("/users/@me/channels", &["POST"]),
        ["oauth2", "applications", "@me"] => ("/oauth2/applications/@me", &["GET"]),
        ["applications", "@me"] => ("/applications/@me", &["GET"]),
        ["channels", c, rest @ ..] => {
            major = Some(snowflake("channel_id", c)?);
            match rest {
                [] => ("/channels/{channel_id}", &["GET", "PATCH"]),
                ["messages"] => ("/channels/{channel_id}/messages", &["GET", "POST"]),
                ["messages", _] => (
                    "/channels/{channel_id}/messages/{message_id}",
                    &["GET", "PATCH", "DELETE"],
                ),
                ["typing"] => ("/channels/{channel_id}/typing", &["POST"]),
                ["threads"] => ("/channels/{channel_id}/threads", &["POST"]),
                ["thread-members"] => ("/channels/{channel_id}/thread-members", &["GET"]),
                ["thread-members", _] => (
                    "/channels/{channel_id}/thread-members/{user_id}",
                    &["GET", "PUT", "DELETE"],
                ),
                ["webhooks"] => ("/channels/{channel_id}/webhooks", &["GET", "POST"]),
                _ => return Err(ApiError::not_found()),
            }
        }
        ["webhooks", w, _] => {
            major = Some(snowflake("webhook_id", w)?);
            ("/webhooks/{webhook_id}/{webhook_token}", &["POST"])
        }
        ["webhooks", w, _, "messages", _] => {
            major = Some(snowflake("webhook_id", w)?);
            (
                "/webhooks/{webhook_id}/{webhook_token}/messages/{message_id}",
                &["GET", "PATCH", "DELETE"],
            )
        }
        ["interactions", i, _, "callback"] => {
            snowflake("interaction_id", i)?;
            (
                "/interactions/{interaction_id}/{interaction_token}/callback",
                &["POST"],
            )
        }
        ["applications", a, "commands"] => {
            major = Some(snowflake("application_id", a)?);
            ("/applications/{application_id}/commands", &["GET", "PUT"])
        }
        ["applications", a, "guilds", g, "commands"] => {
            snowflake("application_id", a)?;
            major = Some(snowflake("guild_id", g)?);
            (
                "/applications/{application_id}/guilds/{guild_id}/commands",
                &["GET", "PUT"],
            )
        }
        _ => return Err(ApiError::not_found()),
    };
    let Some(method) = allowed.iter().copied().find(|m| *m == method) else {
        return Err(ApiError::method_not_allowed());
    };
    let endpoint = match (method, segments) {
        ("GET", ["gateway"]) => E::Gateway,
        ("GET", ["gateway", "bot"]) => E::GatewayBot,
        ("GET", ["users", "@me"]) => E::CurrentUser,
        ("POST", ["users", "@me", "channels"]) => E::OpenDm,
        ("GET", [_, "applications", "@me"] | ["applications", "@me"]) => E::Application,
        (_, ["channels", _, rest @ ..]) => {
            let c = major.unwrap_or_default();
            match (method, rest) {
                ("GET", []) => E::GetChannel(c),
                ("PATCH", []) => E::ModifyChannel(c),
                ("GET", ["messages"]) => E::GetMessages(c),
                ("POST", ["messages"]) => E::CreateMessage(c),
                ("GET", ["messages", m]) => E::GetMessage(c, snowflake("message_id", m)?),
                ("PATCH", ["messages", m]) => E::EditMessage(c, snowflake("message_id", m)?),
                ("DELETE", ["messages", m]) => E::DeleteMessage(c, snowflake("message_id", m)?),
                ("POST", ["typing"]) => E::Typing(c),
                ("POST", ["threads"]) => E::CreateThread(c),
                ("GET", ["thread-members"]) => E::ThreadMembers(c),
                ("GET", ["thread-members", u]) => E::GetThreadMember(c, user_ref(u)?),
                ("PUT", ["thread-members", u]) => E::AddThreadMember(c, user_ref(u)?),
                ("DELETE", ["thread-members", u]) => E::RemoveThreadMember(c, user_ref(u)?),
                ("POST", ["webhooks"]) => E::CreateWebhook(c),
                ("GET", ["webhooks"]) => E::ChannelWebhooks(c),
                _ => return Err(ApiError::not_found()),
            }
        }
        ("POST", ["webhooks", _, token]) => {
            E::ExecuteWebhook(major.unwrap_or_default(), (*token).to_owned())
        }
        (_, ["webhooks", _, token, "messages", m]) => {
            let (w, t, m) = (
                major.unwrap_or_default(),
                (*token).to_owned(),
                message_ref(m)?,
            );
            match method {
                "GET" => E::GetWebhookMessage(w, t, m),
                "PATCH" => E::EditWebhookMessage(w, t, m),
                _ => E::DeleteWebhookMessage(w, t, m),
            }
        }
        ("POST", ["interactions", i, token, "callback"]) => {
            E::InteractionCallback(snowflake("interaction_id", i)?, (*token).to_owned())
        }
        (_, ["applications", a, rest @ ..]) => {
            let app = snowflake("application_id", a)?;
            let guild = match rest {
                ["guilds", _, "commands"] => major,
                _ => None,
            };
            if method == "GET" {
                E::GetCommands(app, guild)
            } else {
                E::OverwriteCommands(app, guild)
            }
        }
        _ => return Err(ApiError::not_found()),
    };
    let auth = match endpoint {
        E::Gateway
        | E::ExecuteWebhook(..)
        | E::GetWebhookMessage(..)
        | E::EditWebhookMessage(..)
        | E::DeleteWebhookMessage(..)
        | E::InteractionCallback(..) => Auth::Token,
        _ => Auth::Bot,
    };
    Ok(Resolved {
        endpoint,
        key: RouteKey {
            method,
            template,
            major,
        },
        auth,
    })
}

/// Runs an endpoint.
pub(crate) fn call(shared: &Shared, endpoint: Endpoint, req: Req) -> ApiResult<Reply> {
    use Endpoint as E;
    match endpoint {
        E::Gateway => app::gateway(shared),
        E::GatewayBot => app::gateway_bot(shared),
        E::CurrentUser => app::current_user(shared),
        E::Application => app::application(shared),
        E::GetCommands(app_id, guild) => app::get_commands(shared, app_id, guild),
        E::OverwriteCommands(app_id, guild) => app::overwrite_commands(shared, app_id, guild, &req),
        E::OpenDm => channels::open_dm(shared, &req),
        E::GetChannel(c) => channels::get(shared, c),
        E::ModifyChannel(c) => channels::modify(shared, c, &req),
        E::Typing(c) => channels::typing(shared, c),
        E::CreateThread(c) => channels::create_thread(shared, c, &req),
        E::ThreadMembers(c) => channels::thread_members(shared, c),
        E::GetThreadMember(c, u) => channels::thread_member(shared, c, u),
        E::AddThreadMember(c, u) => channels::add_thread_member(shared, c, u),
        E::RemoveThreadMember(c, u) => channels::remove_thread_member(shared, c, u),
        E::GetMessages(c) => messages::list(shared, c, &req),
        E::GetMessage(c, m) => messages::get(shared, c, m),
        E::CreateMessage(c) => messages::create(shared, c, req),
        E::EditMessage(c, m) => messages::edit(shared, c, m, req),
        E::DeleteMessage(c, m) => messages::delete(shared, c, m),
        E::CreateWebhook(c) => webhooks::create(shared, c, &req),
        E::ChannelWebhooks(c) => webhooks::list(shared, c),
        E::ExecuteWebhook(w, t) => {
            if interactions::is_followup(shared, w, &t) {
                interactions::followup(shared, &t, req)
            } else {
                webhooks::execute(shared, w, &t, req)
            }
        }
        E::GetWebhookMessage(w, t, m) => {
            if interactions::is_followup(shared, w, &t) {
                interactions::get_message(shared, &t, m)
            } else {
                webhooks::get_message(shared, w, &t, m, &req)
            }
        }
        E::EditWebhookMessage(w, t, m) => {
            if interactions::is_followup(shared, w, &t) {
                interactions::edit_message(shared, &t, m, req)
            } else {
                webhooks::edit_message(shared, w, &t, m, req)
            }
        }
        E::DeleteWebhookMessage(w, t, m) => {
            if interactions::is_followup(shared, w, &t) {
                interactions::delete_message(shared, &t, m)
            } else {
                webhooks::delete_message(shared, w, &t, m, &req)
            }
        }
        E::InteractionCallback(i, t) => interactions::callback(shared, i, &t, req),
    }
}

/// `GET /attachments/{channel_id}/{attachment_id}/{filename}`: the file and its type, like
/// Discord's CDN (no authorization).
pub(crate) fn attachment(shared: &Shared, rest: &str) -> Option<(String, Vec<u8>)> {
    let mut parts = rest.splitn(3, '/');
    let channel: u64 = parts.next()?.parse().ok()?;
    let id: u64 = parts.next()?.parse().ok()?;
    let filename = parts.next()?;
    let world = shared.world();
    world.messages.get(&channel)?.values().find_map(|m| {
        m.attachments
            .iter()
            .find(|a| a.id == id && a.filename == filename)
            .map(|a| {
                let content_type = a
                    .content_type
                    .clone()
                    .unwrap_or_else(|| "application/octet-stream".into());
                (content_type, a.bytes.clone())
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_resolve_to_templates_with_their_major_parameter() {
        let r = resolve("POST", &["channels", "42", "messages"])
            .ok()
            .unwrap();
        assert_eq!(r.key.template, "/channels/{channel_id}/messages");
        assert_eq!(r.key.major, Some(42));
        assert_eq!(r.auth, Auth::Bot);
        let r = resolve("POST", &["interactions", "1", "tok", "callback"])
            .ok()
            .unwrap();
        assert_eq!(r.auth, Auth::Token);
    }

    #[test]
    fn bad_paths_are_refused_like_discord() {
        assert_eq!(resolve("GET", &["nope"]).err().unwrap().status, 404);
        assert_eq!(resolve("DELETE", &["gateway"]).err().unwrap().status, 405);
        let e = resolve("GET", &["channels", "abc"]).err().unwrap();
        assert_eq!((e.status, e.code()), (400, 50035));
    }
}
