//! A homeserver client for the bot and its ghosts.
//!
//! Every request is built from a ruma endpoint type (no hand-written paths) and sent with the
//! `as_token`; `user_id=` asserts which of our users it acts as. Sends that can be retried are
//! retried with backoff; callers give them deterministic transaction IDs so a retry can never
//! produce a second event, and a message whose answer was lost is looked for before it is sent
//! again (`client/sent.rs`).

mod erasure;
mod sent;

pub use sent::SENT_UNDER;

use std::{borrow::Cow, time::Duration};

use ruma::{
    EventId, MxcUri, OwnedDeviceId, OwnedEventId, OwnedMxcUri, OwnedRoomId, OwnedUserId, RoomId,
    UserId,
    api::{
        AppserviceUserIdentity, IncomingResponse, OutgoingRequest, OutgoingRequestAppserviceExt,
        SupportedVersions,
        auth_scheme::{AuthScheme, SendAccessToken},
        client::{
            account::{register, whoami},
            appservice::request_ping,
            authenticated_media::get_content,
            discovery::get_supported_versions,
            media::create_content,
            membership::{invite_user, join_room_by_id, kick_user, leave_room},
            message::{get_message_events, send_message_event},
            profile::set_display_name,
            redact::redact_event,
            room::create_room,
            state::send_state_event,
            typing::create_typing_event,
        },
        path_builder::VersionHistory,
    },
    events::{
        AnyMessageLikeEventContent, AnyStateEventContent, AnyTimelineEvent, MessageLikeEventContent,
    },
    serde::Raw,
};
use serde::Deserialize;

/// Errors talking to the homeserver.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The homeserver could not be reached or the connection broke.
    #[error("homeserver unreachable: {0}")]
    Transport(#[source] reqwest::Error),
    /// The homeserver answered with a Matrix error.
    #[error("homeserver refused ({status} {errcode}): {message}")]
    Matrix {
        status: u16,
        errcode: String,
        message: String,
        retry_after: Option<Duration>,
    },
    /// We could not build the request (an invalid argument).
    #[error("cannot build request: {0}")]
    Build(String),
    /// The homeserver's answer did not have the documented shape.
    #[error("unexpected homeserver response: {0}")]
    Response(String),
}

impl ClientError {
    /// Whether trying the same request again later may succeed.
    pub fn is_transient(&self) -> bool {
        match self {
            ClientError::Transport(_) => true,
            ClientError::Matrix { status, .. } => *status == 429 || *status >= 500,
            _ => false,
        }
    }

    pub fn errcode(&self) -> Option<&str> {
        match self {
            ClientError::Matrix { errcode, .. } => Some(errcode),
            _ => None,
        }
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    #[serde(default)]
    errcode: String,
    #[serde(default)]
    error: String,
    retry_after_ms: Option<u64>,
}

/// A user's own session, as the homeserver issued it at registration.
#[derive(Clone)]
pub struct UserLogin {
    pub user_id: OwnedUserId,
    pub access_token: String,
    pub device_id: OwnedDeviceId,
}

impl std::fmt::Debug for UserLogin {
    // Hand-written so the access token can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("UserLogin")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .finish_non_exhaustive()
    }
}

/// How often and how patiently transient failures are retried.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    pub attempts: u32,
    pub first_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 8,
            first_delay: Duration::from_millis(200),
            max_delay: Duration::from_secs(10),
        }
    }
}

/// The bot's connection to its homeserver.
#[derive(Clone)]
pub struct HomeserverClient {
    http: reqwest::Client,
    base_url: String,
    as_token: String,
    bot: OwnedUserId,
    versions: SupportedVersions,
    retry: RetryPolicy,
    /// Shared by every clone: see `client/sent.rs`.
    unanswered: sent::Unanswered,
}

impl std::fmt::Debug for HomeserverClient {
    // Hand-written so the as_token can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HomeserverClient")
            .field("base_url", &self.base_url)
            .field("bot", &self.bot)
            .finish()
    }
}

impl HomeserverClient {
    /// Connects: asks the homeserver which spec versions it speaks, so every later request
    /// uses a path it understands.
    pub async fn connect(
        base_url: &str,
        as_token: &str,
        bot: OwnedUserId,
    ) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .map_err(ClientError::Transport)?;
        let base_url = base_url.trim_end_matches('/').to_owned();
        let request = get_supported_versions::Request::new()
            .try_into_http_request::<Vec<u8>>(&base_url, SendAccessToken::None, ())
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let response: get_supported_versions::Response = execute(&http, request).await?;
        let versions =
            SupportedVersions::from_parts(&response.versions, &response.unstable_features);
        Ok(Self {
            http,
            base_url,
            as_token: as_token.to_owned(),
            bot,
            versions,
            retry: RetryPolicy::default(),
            unanswered: Default::default(),
        })
    }

    /// A client that has asked the homeserver nothing, so knows none of the spec versions it
    /// speaks: every request made with it fails to build (`ClientError::Build`). For holding
    /// a client where one is needed while the homeserver may be unreachable:
    /// `switchboard check-config` builds every platform's connector to check its
    /// credentials, whatever the homeserver's state, and sends nothing through it.
    pub fn unconnected(base_url: &str, as_token: &str, bot: OwnedUserId) -> Self {
        Self {
            http: reqwest::Client::new(),
            base_url: base_url.trim_end_matches('/').to_owned(),
            as_token: as_token.to_owned(),
            bot,
            versions: SupportedVersions::from_parts(&[], &Default::default()),
            retry: RetryPolicy::default(),
            unanswered: Default::default(),
        }
    }

    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The same connection making each request once: for callers that keep their own queue
    /// and backoff, so an unreachable homeserver does not hold them in this client's retries.
    pub fn without_retries(&self) -> Self {
        self.clone().with_retry_policy(RetryPolicy {
            attempts: 1,
            ..RetryPolicy::default()
        })
    }

    pub fn bot(&self) -> &UserId {
        &self.bot
    }

    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// Sends one request as the bot (`as_user = None`) or as one of our ghosts, once.
    pub async fn send_once<R>(
        &self,
        request: R,
        as_user: Option<&UserId>,
    ) -> Result<R::IncomingResponse, ClientError>
    where
        R: OutgoingRequest<PathBuilder = VersionHistory>,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        let identity = as_user.map(AppserviceUserIdentity::new).unwrap_or_default();
        let http_request = request
            .try_into_http_request_with_identity::<Vec<u8>>(
                &self.base_url,
                SendAccessToken::Appservice(&self.as_token),
                identity,
                Cow::Borrowed(&self.versions),
            )
            .map_err(|e| ClientError::Build(e.to_string()))?;
        execute(&self.http, http_request).await
    }

    /// Sends a request, retrying transient failures (transport errors, 429 with its
    /// `retry_after_ms`, 5xx) with exponential backoff. Only for idempotent requests.
    pub async fn send<R>(
        &self,
        request: R,
        as_user: Option<&UserId>,
    ) -> Result<R::IncomingResponse, ClientError>
    where
        R: OutgoingRequest<PathBuilder = VersionHistory> + Clone,
        for<'a> R::Authentication: AuthScheme<Input<'a> = SendAccessToken<'a>>,
    {
        self.retrying(|| self.send_once(request.clone(), as_user))
            .await
    }

    /// Makes attempts until one succeeds, fails for good, or the policy's attempts are spent,
    /// waiting with exponential backoff (or the homeserver's `retry_after_ms`) in between.
    async fn retrying<T, A>(&self, mut attempt_once: impl FnMut() -> A) -> Result<T, ClientError>
    where
        A: std::future::Future<Output = Result<T, ClientError>>,
    {
        let mut delay = self.retry.first_delay;
        let mut attempt = 1;
        loop {
            match attempt_once().await {
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    let wait = match &e {
                        ClientError::Matrix {
                            retry_after: Some(after),
                            ..
                        } => *after,
                        _ => delay,
                    };
                    tracing::warn!(error = %e, attempt, wait_ms = wait.as_millis() as u64, "homeserver request failed; retrying");
                    tokio::time::sleep(wait).await;
                    delay = (delay * 2).min(self.retry.max_delay);
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// Asks who owns a user's access token (used to learn which user a visitor's widget is).
    /// The token is the visitor's, not ours.
    pub async fn whoami(&self, user_token: &str) -> Result<whoami::v3::Response, ClientError> {
        let http_request = whoami::v3::Request::new()
            .try_into_http_request::<Vec<u8>>(
                &self.base_url,
                SendAccessToken::IfRequired(user_token),
                Cow::Borrowed(&self.versions),
            )
            .map_err(|e| ClientError::Build(e.to_string()))?;
        execute(&self.http, http_request).await
    }

    /// Sends a request the caller built (method, path below the homeserver's base URL, query
    /// pairs, optional body) as one of our users, with the `as_token` and `user_id=` identity
    /// assertion, and hands back the homeserver's answer unread, whatever its status, so it
    /// can be streamed on. For Switchboard's visitor proxy, which checks beforehand that the
    /// path is one a visitor may use; `path` must be built from validated, percent-encoded
    /// segments. `timeout` replaces the client's own (a long-polling `/sync` needs more).
    /// Any `user_id` in `query` is refused: only `as_user` may be asserted.
    pub async fn forward_as(
        &self,
        method: http::Method,
        path: &str,
        query: &[(String, String)],
        as_user: &UserId,
        body: Option<(String, bytes::Bytes)>,
        timeout: Duration,
    ) -> Result<reqwest::Response, ClientError> {
        if !path.starts_with("/_matrix/") {
            return Err(ClientError::Build(format!("not a Matrix path: {path}")));
        }
        if query.iter().any(|(k, _)| k == "user_id") {
            return Err(ClientError::Build(
                "user_id is asserted by the caller".into(),
            ));
        }
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(&self.as_token)
            .query(query)
            .query(&[("user_id", as_user.as_str())])
            .timeout(timeout);
        if let Some((content_type, bytes)) = body {
            request = request
                .header(http::header::CONTENT_TYPE, content_type)
                .body(bytes);
        }
        request.send().await.map_err(ClientError::Transport)
    }

    /// Whether the homeserver answers at all: the unauthenticated versions request, made
    /// once, cut off after `wait`. For watching the homeserver go away and come back.
    pub async fn reachable(&self, wait: Duration) -> Result<(), ClientError> {
        let request = get_supported_versions::Request::new()
            .try_into_http_request::<Vec<u8>>(&self.base_url, SendAccessToken::None, ())
            .map_err(|e| ClientError::Build(e.to_string()))?;
        match tokio::time::timeout(
            wait,
            execute::<get_supported_versions::Response>(&self.http, request),
        )
        .await
        {
            Ok(answer) => answer.map(|_| ()),
            Err(_) => Err(ClientError::Response(format!("no answer within {wait:?}"))),
        }
    }

    /// Makes the homeserver ping us back, which also makes it retry queued transactions at once.
    pub async fn ping(&self, appservice_id: &str, txn_id: &str) -> Result<Duration, ClientError> {
        let mut request = request_ping::v1::Request::new(appservice_id.to_owned());
        request.transaction_id = Some(txn_id.into());
        let response = self.send_once(request, None).await?;
        Ok(response.duration)
    }

    /// Registers a ghost user in our namespace; an existing one is fine.
    pub async fn register_ghost(&self, localpart: &str) -> Result<(), ClientError> {
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.login_type = Some(register::LoginType::ApplicationService);
        request.inhibit_login = true;
        match self.send(request, None).await {
            Ok(_) => Ok(()),
            Err(e) if e.errcode() == Some("M_USER_IN_USE") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Registers a new user in our namespace and logs them in: the answer carries an access
    /// token for that user alone (not the `as_token`), which may be handed to whoever is to
    /// act as that user. Not retried: a retry after a lost answer would find the name taken;
    /// callers pick a fresh localpart instead.
    pub async fn register_with_login(
        &self,
        localpart: &str,
        device_name: &str,
    ) -> Result<UserLogin, ClientError> {
        let mut request = register::v3::Request::new();
        request.username = Some(localpart.to_owned());
        request.login_type = Some(register::LoginType::ApplicationService);
        request.inhibit_login = false;
        request.initial_device_display_name = Some(device_name.to_owned());
        let response = self.send_once(request, None).await?;
        match (response.access_token, response.device_id) {
            (Some(access_token), Some(device_id)) => Ok(UserLogin {
                user_id: response.user_id,
                access_token,
                device_id,
            }),
            _ => Err(ClientError::Response(
                "the homeserver registered the user but issued no access token".into(),
            )),
        }
    }

    pub async fn set_displayname(&self, user: &UserId, name: &str) -> Result<(), ClientError> {
        // The generic profile-field endpoint needs spec v1.16 on the server; this older one
        // works on every homeserver and serves the same path.
        #[allow(deprecated)]
        let request = set_display_name::v3::Request::new(user.to_owned(), Some(name.to_owned()));
        self.send(request, Some(user)).await.map(|_| ())
    }

    /// Creates a room as the bot. Not retried: a retry after a lost answer would make two rooms.
    pub async fn create_room(
        &self,
        request: create_room::v3::Request,
    ) -> Result<OwnedRoomId, ClientError> {
        Ok(self.send_once(request, None).await?.room_id)
    }

    /// Invites `user`; succeeds also when they are already invited or in the room.
    pub async fn invite(
        &self,
        room: &RoomId,
        user: &UserId,
        as_user: Option<&UserId>,
    ) -> Result<(), ClientError> {
        let request = invite_user::v3::Request::new(
            room.to_owned(),
            invite_user::v3::InvitationRecipient::UserId(invite_user::v3::InviteUserId::new(
                user.to_owned(),
            )),
        );
        match self.send(request, as_user).await {
            Ok(_) => Ok(()),
            // Inviting someone who is already invited or joined leaves the room as a retry
            // wants it; the homeserver only tells us so in the message of a 403.
            Err(ClientError::Matrix {
                status: 403,
                ref message,
                ..
            }) if message.contains("already") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Removes `user` from the room (or withdraws their invite), as the bot.
    pub async fn kick(
        &self,
        room: &RoomId,
        user: &UserId,
        reason: &str,
    ) -> Result<(), ClientError> {
        let mut request = kick_user::v3::Request::new(room.to_owned(), user.to_owned());
        request.reason = Some(reason.to_owned());
        self.send(request, None).await.map(|_| ())
    }

    /// Redacts `event` in `room` as `as_user`, under a caller-chosen transaction ID so a
    /// retry redacts once.
    pub async fn redact(
        &self,
        room: &RoomId,
        as_user: &UserId,
        event: &EventId,
        txn_id: &str,
        reason: Option<&str>,
    ) -> Result<OwnedEventId, ClientError> {
        let mut request =
            redact_event::v3::Request::new(room.to_owned(), event.to_owned(), txn_id.into());
        request.reason = reason.map(str::to_owned);
        Ok(self.send(request, Some(as_user)).await?.event_id)
    }

    pub async fn join(&self, room: &RoomId, as_user: &UserId) -> Result<(), ClientError> {
        self.send(
            join_room_by_id::v3::Request::new(room.to_owned()),
            Some(as_user),
        )
        .await
        .map(|_| ())
    }

    pub async fn leave(&self, room: &RoomId, as_user: &UserId) -> Result<(), ClientError> {
        self.send(leave_room::v3::Request::new(room.to_owned()), Some(as_user))
            .await
            .map(|_| ())
    }

    /// One page of `room`'s timeline as the bot sees it, newest first, from `from` (the end
    /// of the room when `None`): its events, and where the next (older) page starts, `None`
    /// once the start of the room is reached.
    pub async fn messages_backward(
        &self,
        room: &RoomId,
        from: Option<&str>,
        limit: u32,
    ) -> Result<(Vec<Raw<AnyTimelineEvent>>, Option<String>), ClientError> {
        let mut request = get_message_events::v3::Request::backward(room.to_owned());
        request.from = from.map(str::to_owned);
        request.limit = limit.into();
        let response = self.send(request, None).await?;
        Ok((response.chunk, response.end))
    }

    /// Uploads a file to the homeserver's media repository as `as_user` (or the bot).
    pub async fn upload_media(
        &self,
        as_user: Option<&UserId>,
        content_type: &str,
        filename: &str,
        bytes: Vec<u8>,
    ) -> Result<OwnedMxcUri, ClientError> {
        let mut request = create_content::v3::Request::new(bytes);
        request.content_type = Some(content_type.to_owned());
        request.filename = Some(filename.to_owned());
        // Not retried: a retry after a lost answer would store the file twice, harmlessly but
        // wastefully; the caller retries the whole relay instead.
        Ok(self.send_once(request, as_user).await?.content_uri)
    }

    /// Downloads a file from the media repository (authenticated media, as the bot).
    pub async fn download_media(
        &self,
        uri: &MxcUri,
    ) -> Result<(Option<String>, Vec<u8>), ClientError> {
        let request = get_content::v1::Request::from_uri(uri)
            .map_err(|e| ClientError::Build(e.to_string()))?;
        let response = self.send(request, None).await?;
        Ok((response.content_type, response.file))
    }

    /// Sends a message event with a caller-chosen, deterministic transaction ID: the homeserver
    /// answers a repeated (sender, txn_id) with the first event, and a send whose answer was
    /// lost is looked for before it is tried again (`client/sent.rs`), so retries do not
    /// duplicate.
    pub async fn send_message<C>(
        &self,
        room: &RoomId,
        as_user: Option<&UserId>,
        txn_id: &str,
        content: &C,
    ) -> Result<OwnedEventId, ClientError>
    where
        C: MessageLikeEventContent,
    {
        let json = serde_json::to_value(content).map_err(|e| ClientError::Build(e.to_string()))?;
        self.send_tagged(
            room,
            as_user,
            txn_id,
            &content.event_type().to_string(),
            json,
        )
        .await
    }

    /// Sets a state event whose type is only known at run time (e.g. Switchboard's own
    /// `org.switchboard.conversation`). State is idempotent: sending it again replaces it.
    pub async fn send_state_raw(
        &self,
        room: &RoomId,
        event_type: &str,
        state_key: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, ClientError> {
        let body = Raw::<AnyStateEventContent>::from_json(
            serde_json::value::to_raw_value(content)
                .map_err(|e| ClientError::Build(e.to_string()))?,
        );
        let request = send_state_event::v3::Request::new_raw(
            room.to_owned(),
            event_type.into(),
            state_key.to_owned(),
            body,
        );
        Ok(self.send(request, None).await?.event_id)
    }

    /// Shows `user` (one of our users) as typing in `room` for up to `timeout`, or stops it.
    /// Sent once, not retried: a late typing notice is worse than none.
    pub async fn set_typing(
        &self,
        room: &RoomId,
        user: &UserId,
        timeout: Option<Duration>,
    ) -> Result<(), ClientError> {
        let state = match timeout {
            Some(t) => {
                create_typing_event::v3::Typing::Yes(create_typing_event::v3::TypingInfo::new(t))
            }
            None => create_typing_event::v3::Typing::No,
        };
        let request =
            create_typing_event::v3::Request::new(user.to_owned(), room.to_owned(), state);
        self.send_once(request, Some(user)).await.map(|_| ())
    }

    /// Like [`Self::send_message`] for an event type and content held as JSON (a queued post,
    /// or a Matrix responder's message copied as it is).
    pub async fn send_message_raw(
        &self,
        room: &RoomId,
        as_user: Option<&UserId>,
        txn_id: &str,
        event_type: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, ClientError> {
        self.send_tagged(room, as_user, txn_id, event_type, content.clone())
            .await
    }

    /// One attempt at sending a message event held as JSON, as it is.
    async fn send_message_raw_once(
        &self,
        room: &RoomId,
        as_user: Option<&UserId>,
        txn_id: &str,
        event_type: &str,
        content: &serde_json::Value,
    ) -> Result<OwnedEventId, ClientError> {
        let body = Raw::<AnyMessageLikeEventContent>::from_json(
            serde_json::value::to_raw_value(content)
                .map_err(|e| ClientError::Build(e.to_string()))?,
        );
        let request = send_message_event::v3::Request::new_raw(
            room.to_owned(),
            txn_id.into(),
            event_type.into(),
            body,
        );
        Ok(self.send_once(request, as_user).await?.event_id)
    }

    /// Like [`Self::send_message`] for content whose type is only known at run time.
    pub async fn send_any_message(
        &self,
        room: &RoomId,
        as_user: Option<&UserId>,
        txn_id: &str,
        content: &AnyMessageLikeEventContent,
    ) -> Result<OwnedEventId, ClientError> {
        self.send_message(room, as_user, txn_id, content).await
    }
}

async fn execute<R: IncomingResponse>(
    http: &reqwest::Client,
    request: http::Request<Vec<u8>>,
) -> Result<R, ClientError> {
    let request =
        reqwest::Request::try_from(request).map_err(|e| ClientError::Build(e.to_string()))?;
    let (status, headers, body) = execute_raw(http, request).await?;
    let mut builder = http::Response::builder().status(status);
    for (name, value) in &headers {
        builder = builder.header(name, value);
    }
    let response = builder
        .body(body)
        .map_err(|e| ClientError::Response(e.to_string()))?;
    R::try_from_http_response(response).map_err(|e| ClientError::Response(e.to_string()))
}

/// Sends `request`; a successful answer's status, headers and body, or the Matrix error it
/// was.
async fn execute_raw(
    http: &reqwest::Client,
    request: reqwest::Request,
) -> Result<
    (
        reqwest::StatusCode,
        reqwest::header::HeaderMap,
        bytes::Bytes,
    ),
    ClientError,
> {
    let response = http
        .execute(request)
        .await
        .map_err(ClientError::Transport)?;
    let status = response.status();
    let headers = response.headers().clone();
    let body = response.bytes().await.map_err(ClientError::Transport)?;
    if !status.is_success() {
        let parsed: ErrorBody = serde_json::from_slice(&body).unwrap_or(ErrorBody {
            errcode: "M_UNKNOWN".into(),
            error: String::from_utf8_lossy(&body).chars().take(200).collect(),
            retry_after_ms: None,
        });
        return Err(ClientError::Matrix {
            status: status.as_u16(),
            errcode: parsed.errcode,
            message: parsed.error,
            retry_after: parsed.retry_after_ms.map(Duration::from_millis),
        });
    }
    Ok((status, headers, body))
}
