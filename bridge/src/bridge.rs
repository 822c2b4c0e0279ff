//! The centre: conversations, the inbox worker, and the homeserver's transactions.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use serde_json::Value;
use switchboard_appservice::{
    AppserviceRegistration, ClientError, EventSink, HomeserverClient, SinkError,
    ruma::{
        OwnedRoomId, OwnedServerName, OwnedUserId, ServerName, UserId,
        api::client::room::{Visibility, create_room},
        events::{
            AnyTimelineEvent, EmptyStateKey, InitialStateEvent,
            room::{
                guest_access::{GuestAccess, RoomGuestAccessEventContent},
                history_visibility::{HistoryVisibility, RoomHistoryVisibilityEventContent},
            },
        },
        serde::Raw,
    },
};
use tokio::sync::Notify;

use crate::{
    cluster::Cluster,
    config::BridgeConfig,
    connector::{Connector, FileKind, MediaRef, Platform, Revision},
    conversation::{Conversation, ConversationState, Message, SenderRole, new_visitor_alias},
    health::{Health, PartState},
    store::{NewInboxEvent, Store, StoreError},
};
pub use room_posts::RoomPostQueue;
use typing::TypingUpdate;

mod batch;
mod catch_up;
pub(crate) mod dispatch;
mod handoff;
mod initiators;
mod lanes;
mod lifecycle;
mod outbox;
mod pacing;
mod relay;
mod revisions;
mod room_posts;
mod service_levels;
mod sink;
mod token_owners;
mod typing;
mod worker;

/// Why a visitor's request failed. Mapped to HTTP only at the API edge.
#[derive(Debug, thiserror::Error)]
pub enum VisitorError {
    #[error("the access token was not accepted by the homeserver")]
    UnknownToken,
    #[error("no topic {0:?} is offered")]
    UnknownTopic(String),
    #[error("this account cannot start conversations")]
    Forbidden,
    #[error("no such conversation of this visitor")]
    NotYours,
    #[error("the homeserver is unavailable: {0}")]
    Homeserver(#[from] ClientError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// How many lanes' jobs run at once. Most of a job's time is spent waiting on a platform or
/// the database, so this is well above the number of cores; it bounds memory and connections
/// under a flood of conversations.
const LANE_CONCURRENCY: usize = 64;

/// How many deliveries one pass of a chat's lane reads from the store.
const DELIVERY_BATCH: i64 = 20;

/// The running bridge. Cheap to share behind an `Arc`; holds no global state.
pub struct Bridge {
    store: Store,
    client: Arc<HomeserverClient>,
    /// The same homeserver connection without the client's own retries, for the room-post
    /// queue, which retries with its own backoff instead of holding the worker (`room_posts.rs`).
    post_client: HomeserverClient,
    /// Some room post waits out a backoff after a failure (see `homeserver_is_up`).
    posts_waiting: std::sync::atomic::AtomicBool,
    /// Held by a room's posting pass (`room_posts.rs`, `post_room`). A pass posts the rows it
    /// read even if they are cancelled meanwhile; an erasure cancels a room's posts, then
    /// waits for that room's pass under way, so nothing lands after it redacts.
    post_locks: lanes::RoomLocks,
    registration: Arc<AppserviceRegistration>,
    config: BridgeConfig,
    connectors: HashMap<Platform, Arc<dyn Connector>>,
    /// Wakes the scheduler when a transaction, a remote event or a delivery has been recorded.
    inbox_ready: Notify,
    /// The queue of writes into rooms, shared with the Matrix connector (`room_posts.rs`).
    room_posts: RoomPostQueue,
    /// Work partitioned by conversation and by chat (see `lanes.rs` and `worker.rs`).
    lanes: lanes::Lanes,
    /// One lock per conversation, so work about it from different lanes happens in turn.
    room_locks: lanes::RoomLocks,
    /// The other instances on this database, if any (`cluster.rs`).
    cluster: Cluster,
    /// The chats a delivery is being made to right now (see `relay.rs`, `room_replied_to`).
    deliveries_in_flight: lanes::ChatsInFlight,
    /// How far the scheduler has handed out the inbox and the platform events.
    cursors: worker::Cursors,
    /// The bridge itself, once `run` has started the lanes. Work found while handling
    /// something (a transaction stored, a delivery queued, an offer recorded) goes straight
    /// to its lane. Work found before that is picked up by the scheduler's first full look
    /// when `run` starts it, or, in tests that drive the queues by hand, by the drains.
    running: std::sync::OnceLock<std::sync::Weak<Bridge>>,
    /// When the earliest delivery waiting out a retry or a paced slot falls due (unix ms).
    next_delivery_due: std::sync::atomic::AtomicI64,
    /// Platform events handed to a lane and not finished yet.
    remote_in_flight: Mutex<std::collections::HashSet<i64>>,
    /// Wakes the worker to route queued conversations again (a responder changed).
    register_changed: Arc<Notify>,
    server_name: OwnedServerName,
    /// The next free slot of each chat and platform, to keep to the platforms' rates.
    pacer: pacing::Pacer,
    /// Typing notifications on their way to the typing task (see `typing.rs`); the receiver
    /// is taken when the workers start.
    typing_tx: tokio::sync::mpsc::Sender<TypingUpdate>,
    typing_rx: Mutex<Option<tokio::sync::mpsc::Receiver<TypingUpdate>>>,
    /// How the parts are doing, for `/health` and `/ready` (see `health.rs`).
    health: Health,
    /// Links to visitors' files too large for a responder's platform; `None` where
    /// Switchboard's public address is not configured (such files are then refused).
    media_links: Option<crate::media_links::MediaLinks>,
    /// `[retention]`: the sweep's age limit, and how conversations are erased.
    retention: crate::retention::RetentionConfig,
    eraser: crate::retention::Eraser,
    /// Rooms to read again after the homeserver was away (`catch_up.rs`).
    catch_up: catch_up::CatchUp,
    /// Whose visitor tokens are whose, remembered briefly (`token_owners.rs`).
    token_owners: token_owners::TokenOwners,
}

impl Bridge {
    pub fn new(
        store: Store,
        client: Arc<HomeserverClient>,
        registration: Arc<AppserviceRegistration>,
        config: BridgeConfig,
        connectors: Vec<Arc<dyn Connector>>,
    ) -> Self {
        // Every call into a platform is cut off at the connector's declared time limit.
        let connectors = connectors
            .into_iter()
            .map(|c| {
                let timed: Arc<dyn Connector> = Arc::new(crate::connector::Timed::new(c));
                (timed.platform(), timed)
            })
            .collect();
        let server_name = client.bot().server_name().to_owned();
        let (typing_tx, typing_rx) = tokio::sync::mpsc::channel(typing::QUEUE);
        let post_client = client.without_retries();
        let store_clock = store.clock().clone();
        let media_links = config
            .limits
            .public_url
            .as_deref()
            .map(|url| crate::media_links::MediaLinks::new(&registration.inner.as_token, url));
        let retention = crate::retention::RetentionConfig::default();
        let eraser =
            crate::retention::Eraser::new(client.clone(), registration.clone(), &retention);
        Self {
            media_links,
            retention,
            eraser,
            room_posts: RoomPostQueue::new(store.clone()),
            store,
            post_client,
            posts_waiting: std::sync::atomic::AtomicBool::new(true),
            post_locks: lanes::RoomLocks::default(),
            client,
            registration,
            config,
            connectors,
            inbox_ready: Notify::new(),
            lanes: lanes::Lanes::new(LANE_CONCURRENCY, Cluster::alone()),
            room_locks: lanes::RoomLocks::default(),
            cluster: Cluster::alone(),
            deliveries_in_flight: lanes::ChatsInFlight::default(),
            cursors: worker::Cursors::default(),
            running: std::sync::OnceLock::new(),
            remote_in_flight: Mutex::default(),
            next_delivery_due: std::sync::atomic::AtomicI64::new(i64::MAX),
            register_changed: Arc::new(Notify::new()),
            server_name,
            pacer: pacing::Pacer::default(),
            typing_tx,
            typing_rx: Mutex::new(Some(typing_rx)),
            health: Health::with_clock(store_clock),
            catch_up: catch_up::CatchUp::default(),
            token_owners: token_owners::TokenOwners::default(),
        }
    }

    /// Reports into `health` (shared with the connectors and the health endpoints) instead of
    /// a handle of its own.
    pub fn with_health(mut self, health: Health) -> Self {
        self.health = health;
        self
    }

    /// Shares the work with the other instances of `cluster` (`cluster.rs`): lanes, room
    /// locks and posting passes become claims, the timers run only while this instance
    /// leads, and each platform's rate is shared among the instances live. Before `run`.
    pub fn with_cluster(mut self, cluster: Cluster) -> Self {
        self.pacer = pacing::Pacer::shared({
            let cluster = cluster.clone();
            move || cluster.instances()
        });
        self.lanes = lanes::Lanes::new(LANE_CONCURRENCY, cluster.clone());
        self.room_locks = lanes::RoomLocks::among(cluster.clone(), "room");
        // A posting pass holds its room's claim too, so an erasure on any instance waits for
        // a pass under way on another (`erase_conversation`).
        self.post_locks = lanes::RoomLocks::among(cluster.clone(), "posts");
        self.cluster = cluster;
        self
    }

    /// Posts the writes into rooms from `queue`, made from the same store and handed to the
    /// connectors (`BuildContext::room_writes`) before the bridge was built, so what they
    /// queue wakes this bridge's posting loop at once.
    pub fn with_room_posts(mut self, queue: RoomPostQueue) -> Self {
        self.room_posts = queue;
        self
    }

    /// Keeps and erases transcripts as `[retention]` says: the periodic sweep (when
    /// `transcript_days` is set) and erasure through Synapse's admin API (when its token is).
    pub fn with_retention(mut self, config: crate::retention::RetentionConfig) -> Self {
        self.eraser =
            crate::retention::Eraser::new(self.client.clone(), self.registration.clone(), &config);
        self.retention = config;
        self
    }

    pub fn health(&self) -> &Health {
        &self.health
    }

    /// The clock the bridge reads the time from: its store's (see `clock.rs`), so what it
    /// writes and what it compares with agree.
    pub fn clock(&self) -> &crate::clock::SharedClock {
        self.store.clock()
    }

    /// Links to visitors' files too large for a platform, if a public address is set.
    pub fn media_links(&self) -> Option<&crate::media_links::MediaLinks> {
        self.media_links.as_ref()
    }

    /// A file from the homeserver's media repository, as the bot: its type and bytes.
    pub async fn download_media(
        &self,
        mxc: &switchboard_appservice::ruma::MxcUri,
    ) -> Result<(Option<String>, Vec<u8>), ClientError> {
        self.client.download_media(mxc).await
    }

    /// Now, by the injected clock (unix ms).
    fn now_ms(&self) -> i64 {
        self.store.now_ms()
    }

    /// The bridge, if its lanes are running (see `running`).
    fn lanes_running(&self) -> Option<Arc<Self>> {
        self.running.get().and_then(std::sync::Weak::upgrade)
    }

    /// Makes the worker look at its queues now (e.g. after a dead letter was retried).
    pub fn wake(&self) {
        self.inbox_ready.notify_one();
    }

    fn server_name(&self) -> &ServerName {
        &self.server_name
    }

    pub fn config(&self) -> &BridgeConfig {
        &self.config
    }

    /// Names the conversation in `span` (one with `alias` and `visitor` fields): by the
    /// visitor's alias, and by their Matrix ID only when the operator asked for identifiers
    /// in the log (`[visitors] log_identifiers`).
    pub(crate) fn name_in_span(&self, span: &tracing::Span, conversation: &Conversation) {
        span.record("alias", conversation.visitor_alias.as_str());
        if self.config.limits.log_identifiers {
            span.record("visitor", conversation.visitor_user_id.as_str());
        }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Notify this after changing the register, so queued conversations are routed again.
    pub fn register_changed(&self) -> Arc<Notify> {
        self.register_changed.clone()
    }

    pub fn connectors(&self) -> impl Iterator<Item = &Arc<dyn Connector>> {
        self.connectors.values()
    }

    /// Starts (or, for a visitor who already has one on this topic, resumes) a conversation.
    ///
    /// `visitor_token` is the visitor's own homeserver access token: asking the homeserver who
    /// owns it is how we know which user to invite, without trusting anything the browser says.
    pub async fn start_conversation(
        &self,
        visitor_token: &str,
        topic_id: &str,
        language: Option<&str>,
    ) -> Result<Conversation, VisitorError> {
        let topic = self
            .config
            .topic(topic_id)
            .ok_or_else(|| VisitorError::UnknownTopic(topic_id.to_owned()))?
            .clone();
        let visitor = self.visitor_of(visitor_token).await?;
        // Our own bot and ghosts must never be visitors: that would let a responder's puppet
        // open conversations with itself. Visitor accounts live in our namespace too, but are
        // visitors by definition.
        if self.registration.owns(&visitor)
            && !crate::visitor_account::is_visitor_account(&self.registration, &visitor)
        {
            return Err(VisitorError::Forbidden);
        }
        if let Some(existing) = self
            .store
            .open_conversation_for_visitor(visitor.as_str(), &topic.id)
            .await?
        {
            return Ok(existing);
        }

        let room_id = self
            .create_conversation_room(Some(&visitor), &topic.name)
            .await?;
        let conversation = Conversation {
            room_id: room_id.to_string(),
            topic: topic.id.clone(),
            visitor_user_id: visitor.to_string(),
            visitor_alias: new_visitor_alias(),
            state: ConversationState::Queued,
            created_at: self.now_ms(),
            language: language.and_then(primary_language),
        };
        self.store.insert_conversation(&conversation).await?;
        self.set_state(room_id.as_str(), ConversationState::Queued, None, false)
            .await?;
        let span = tracing::info_span!(
            "conversation",
            room_id = %room_id,
            alias = tracing::field::Empty,
            visitor = tracing::field::Empty
        );
        self.name_in_span(&span, &conversation);
        span.in_scope(|| tracing::info!(topic = %topic.id, "conversation started"));
        // A fixed transaction ID per room: queued once, posted once. Responders are offered
        // the conversation when the visitor's first message arrives, so the offer can quote it
        // (`route`).
        self.post_notice(
            room_id.as_str(),
            "switchboard-welcome",
            self.config.welcome_notice.replace("{topic}", &topic.name),
        )
        .await?;
        Ok(conversation)
    }

    /// Ends the visitor's own conversation. As for starting one, the homeserver says whose
    /// token it is; another visitor's room ID gets them `NotYours`.
    pub async fn end_conversation(
        &self,
        visitor_token: &str,
        room_id: &str,
    ) -> Result<(), VisitorError> {
        let visitor = self.visitor_of(visitor_token).await?;
        match self.store.conversation(room_id).await? {
            Some(c) if c.visitor_user_id == visitor.as_str() => {
                if c.state != ConversationState::Closed {
                    let _room = self.room_locks.lock(room_id).await;
                    self.end_by_visitor(room_id).await?;
                }
                Ok(())
            }
            _ => Err(VisitorError::NotYours),
        }
    }

    /// Who owns this visitor token, asked of the homeserver (never taken from the browser).
    async fn visitor_of(&self, visitor_token: &str) -> Result<OwnedUserId, VisitorError> {
        // Proxied mode: the widget holds a session token Switchboard issued, which the
        // homeserver does not know; it is resolved from our own store instead (and only there,
        // so a homeserver token is no use in that mode). See `visitor_proxy.rs`.
        if self.config.limits.mode == crate::config::VisitorMode::Proxied {
            return crate::visitor_proxy::resolve_session(&self.store, visitor_token)
                .await?
                .ok_or(VisitorError::UnknownToken);
        }
        use token_owners::Owner;
        let owner = match self.token_owners.get(visitor_token) {
            Some(owner) => owner,
            None => {
                let owner = match self.client.whoami(visitor_token).await {
                    Ok(who) => Owner::Visitor(who.user_id),
                    Err(ClientError::Matrix {
                        status: 401 | 403, ..
                    }) => Owner::Nobody,
                    // Not an answer about the token: nothing to remember.
                    Err(e) => return Err(e.into()),
                };
                self.token_owners.remember(visitor_token, owner.clone());
                owner
            }
        };
        match owner {
            Owner::Visitor(user) => Ok(user),
            Owner::Nobody => Err(VisitorError::UnknownToken),
        }
    }

    /// The visitor is typing (or stopped) in their own conversation. Guests may not send
    /// `m.typing` on Synapse, so the widget tells us directly and we pass it to whoever holds
    /// the conversation, exactly as a typing event from the room would be.
    pub async fn visitor_typing(
        &self,
        visitor_token: &str,
        room_id: &str,
        typing: bool,
    ) -> Result<(), VisitorError> {
        let visitor = self.visitor_of(visitor_token).await?;
        match self.store.conversation(room_id).await? {
            Some(c) if c.visitor_user_id == visitor.as_str() => {
                self.queue_typing(TypingUpdate {
                    room_id: room_id.to_owned(),
                    user_ids: if typing {
                        vec![c.visitor_user_id]
                    } else {
                        vec![]
                    },
                });
                Ok(())
            }
            _ => Err(VisitorError::NotYours),
        }
    }

    /// A conversation's room, made by the bot. `visitor` is invited at once (a widget
    /// visitor joins it themselves); an initiator's visitor ghost is invited and joined by
    /// the room-post queue instead, after it is registered.
    async fn create_conversation_room(
        &self,
        visitor: Option<&UserId>,
        topic_name: &str,
    ) -> Result<OwnedRoomId, ClientError> {
        let mut request = create_room::v3::Request::new();
        // private_chat: joining needs an invite, so another visitor who learns the room ID
        // still cannot get in.
        request.preset = Some(create_room::v3::RoomPreset::PrivateChat);
        request.visibility = Visibility::Private;
        request.name = Some(topic_name.to_owned());
        request.invite = visitor.map(UserId::to_owned).into_iter().collect();
        request.initial_state = vec![
            // Guests may only join rooms that allow them explicitly.
            InitialStateEvent::new(
                EmptyStateKey,
                RoomGuestAccessEventContent::new(GuestAccess::CanJoin),
            )
            .to_raw_any(),
            // Responders joining later must see what the visitor already wrote.
            InitialStateEvent::new(
                EmptyStateKey,
                RoomHistoryVisibilityEventContent::new(HistoryVisibility::Shared),
            )
            .to_raw_any(),
        ];
        self.client.create_room(request).await
    }

    async fn process_event(&self, seq: i64, room_id: &str, json: &str) -> Result<(), StoreError> {
        let event: Value = match serde_json::from_str(json) {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(error = %e, "stored event is not JSON; skipped");
                return Ok(());
            }
        };
        // Work about this conversation from other lanes (a responder's accept, a hand-over)
        // waits until this event is handled, and this waits for it; read under the lock.
        let _room = self.room_locks.lock(room_id).await;
        let Some(conversation) = self.store.conversation(room_id).await? else {
            // Not a conversation: a Matrix responder's relay room or direct chat with the bot,
            // read by the Matrix connector into a remote event (`relay.rs`), handled in the
            // responder's lane like any platform's. (This lock is the relay room's own.)
            return self.homeserver_room_event(room_id, &event).await;
        };
        self.name_in_span(&tracing::Span::current(), &conversation);
        let sender = event
            .get("sender")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let role = self.role_of(&conversation, sender);
        if let Some(change) = visitor_change_of(&event) {
            if role == SenderRole::Visitor {
                return self.relay_visitor_change(&conversation, change).await;
            }
            // A responder's change, for a visitor on another platform.
            if self
                .relay_change_to_initiator(&conversation, sender, &change)
                .await?
            {
                return Ok(());
            }
        }
        let (message, media) = match message_of(room_id, seq, role, &event) {
            Ok(Some(message)) => message,
            Ok(None) => return Ok(()),
            Err(unusable) => {
                // Logged here only: every such event ends up here, the batch path stops at
                // it and leaves it to this one (`batch.rs`).
                unusable.log(role);
                return Ok(());
            }
        };
        if self.store.record_message(&message).await? {
            tracing::debug!(role = role.as_str(), "message recorded");
        }
        if let Some(media) = &media {
            let json = serde_json::to_string(media).expect("a MediaRef serialises");
            self.store
                .set_message_media(&message.event_id, &json)
                .await?;
        }
        if role != SenderRole::Visitor {
            // The responder's words and our notices, for a visitor on another platform.
            return self
                .relay_to_initiator(&conversation, &message, media)
                .await;
        }
        if conversation.state.is_waiting() {
            self.route(&conversation).await?;
        }
        self.relay_to_responders(
            &conversation,
            &message.event_id,
            &message.body,
            message.formatted_body.as_deref(),
            media,
            None,
        )
        .await
    }

    fn role_of(&self, conversation: &Conversation, user: &str) -> SenderRole {
        if user == conversation.visitor_user_id {
            SenderRole::Visitor
        } else if user == self.client.bot().as_str() {
            SenderRole::Bot
        } else {
            SenderRole::Responder
        }
    }

    /// Tells the homeserver we are up, so it delivers transactions queued while we were down
    /// at once instead of after its backoff.
    pub async fn ping_homeserver(&self) -> Result<Duration, ClientError> {
        let txn = format!("switchboard-startup-{}", self.now_ms());
        self.client.ping(&self.config.appservice_id, &txn).await
    }
}

/// The transcript entry an `m.room.message` event becomes, with the file it carries, if
/// any; `Ok(None)` for any other event. A message without a usable text body (a file's body
/// is its name) is [`Unusable`]: a numeric body, a `null` content or an empty text would
/// reach the responder as an empty "Visitor XXXX:" line, so such an event is left out, and
/// the caller that gives up on it says so in the log. Pure: logs nothing itself, since the
/// same event may be read more than once (the batch path reads it before handing it on).
fn message_of(
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
struct VisitorChange {
    /// The change's own event.
    event_id: String,
    revision: Revision,
    body: String,
    formatted_body: Option<String>,
}

/// The change `event` makes to an earlier message, if it is an edit or a redaction. An edit
/// whose new content has no text is not one this bridge can carry (left to `message_of`).
fn visitor_change_of(event: &Value) -> Option<VisitorChange> {
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
struct Unusable {
    content: &'static str,
    body: &'static str,
}

impl Unusable {
    fn log(self, role: SenderRole) {
        tracing::warn!(
            sender_role = role.as_str(),
            content = self.content,
            body = self.body,
            "message without a usable text body skipped"
        );
    }
}

/// What kind of JSON value this is, for a log line about an odd event.
fn json_kind(value: &Value) -> &'static str {
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
fn primary_language(tag: &str) -> Option<String> {
    let primary = tag.split(['-', '_']).next()?.to_ascii_lowercase();
    ((2..=8).contains(&primary.len()) && primary.chars().all(|c| c.is_ascii_lowercase()))
        .then_some(primary)
}

/// The file an `m.image`/`m.file`/`m.video`/`m.audio` message carries, if any.
fn media_of(content: &Value) -> Option<MediaRef> {
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

/// Pulls out what the inbox indexes. An event without an ID or room cannot be deduplicated or
/// routed, so it is logged and dropped alone.
fn index_fields(raw: &Raw<AnyTimelineEvent>) -> Option<(String, String)> {
    let event_id: String = raw.get_field("event_id").ok().flatten()?;
    let room_id: String = raw.get_field("room_id").ok().flatten()?;
    Some((event_id, room_id))
}

/// What of `events` goes into the inbox, as (event ID, room ID, JSON): all but the relayed
/// echoes and what lacks an event or room ID. A transaction and a catch-up record the same.
fn indexed_events<'a>(
    bot: &str,
    events: &'a [Raw<AnyTimelineEvent>],
) -> Vec<(String, String, &'a str)> {
    events
        .iter()
        .filter(|raw| !is_relayed_echo(bot, raw))
        .filter_map(|raw| match index_fields(raw) {
            Some((event_id, room_id)) => Some((event_id, room_id, raw.json().get())),
            None => {
                tracing::warn!("event without event_id or room_id skipped");
                None
            }
        })
        .collect()
}

/// The inbox rows of [`indexed_events`]' answer.
fn inbox_rows<'a>(indexed: &'a [(String, String, &'a str)]) -> Vec<NewInboxEvent<'a>> {
    indexed
        .iter()
        .map(|(event_id, room_id, json)| NewInboxEvent {
            event_id,
            room_id,
            event_json: json,
        })
        .collect()
}

/// Whether `raw` is the echo of a visitor message the bot relayed into a Matrix responder's
/// relay room ([`crate::connector::matrix::RELAYED_MARK`]): nothing to record or handle.
fn is_relayed_echo(bot: &str, raw: &Raw<AnyTimelineEvent>) -> bool {
    #[derive(serde::Deserialize)]
    struct Marked {
        #[serde(rename = "org.switchboard.relayed", default)]
        relayed: bool,
    }
    // Borrowed: the bot's ID needs no escaping, so a sender that does is not the bot.
    raw.get_field::<&str>("sender").ok().flatten() == Some(bot)
        && raw
            .get_field::<Marked>("content")
            .ok()
            .flatten()
            .is_some_and(|c| c.relayed)
}

#[async_trait]
impl crate::retention::EraseConversation for Bridge {
    async fn erase_conversation(
        &self,
        room_id: &str,
    ) -> Result<crate::retention::Erasure, crate::retention::EraseFailure> {
        // No event of the room is handled while it is erased: one handled meanwhile could
        // write a row back after its table was emptied.
        let _room = self.room_locks.lock(room_id).await;
        use crate::retention::EraseFailure;
        let conversation = self
            .store
            .conversation(room_id)
            .await?
            .ok_or(EraseFailure::NotFound)?;
        if conversation.state != ConversationState::Closed {
            return Err(EraseFailure::Open(conversation.state));
        }
        // What the connectors put on their platforms about it first (Matrix: the relay
        // rooms, where the bot posted the visitor's words), by the offers' handles, while the
        // store still has them.
        let mut handles: HashMap<String, Vec<String>> = HashMap::new();
        for offer in self.store.offers_for_room(room_id).await? {
            if let Some(handle) = offer.remote_message_id {
                // A notice still queued for a relay room would land after its redaction.
                self.store
                    .cancel_room_posts(&handle, "the conversation is being erased")
                    .await?;
                handles.entry(offer.platform).or_default().push(handle);
            }
        }
        self.store
            .cancel_room_posts(room_id, "the conversation is being erased")
            .await?;
        // A post a pass read before it was cancelled (the responder's "the visitor ended the
        // conversation", say) goes out with the pass under way: let it, then redact. With
        // other instances the posting lock is a claim, so this waits for a pass under way on
        // any of them. One room's lock at a time (they are not reentrant).
        drop(self.post_locks.lock(room_id).await);
        for handle in handles.values().flatten() {
            drop(self.post_locks.lock(handle).await);
        }
        for connector in self.connectors.values() {
            let platform = connector.platform().as_str();
            if let Some(handles) = handles.get(platform) {
                connector.erase_conversation(handles).await.map_err(|e| {
                    EraseFailure::Platform {
                        platform: platform.to_owned(),
                        error: e.to_string(),
                    }
                })?;
            }
        }
        self.eraser.erase(&self.store, room_id).await
    }
}

#[async_trait]
impl EventSink for Bridge {
    async fn record_transaction(
        &self,
        txn_id: &str,
        events: Vec<Raw<AnyTimelineEvent>>,
    ) -> Result<(), SinkError> {
        let started = std::time::Instant::now();
        let indexed = indexed_events(self.client.bot().as_str(), &events);
        if indexed.len() < events.len() {
            tracing::debug!(%txn_id, skipped = events.len() - indexed.len(), "relayed echoes or events without an ID skipped");
        }
        let new = match self
            .store
            .record_events(txn_id, &inbox_rows(&indexed))
            .await
        {
            Ok(new) => new,
            Err(e) => {
                crate::metrics::transaction(false, events.len(), 0, started.elapsed());
                return Err(SinkError(Box::new(e)));
            }
        };
        // Duplicates counted against what was indexed: a relayed echo skipped above is
        // neither new nor a duplicate.
        crate::metrics::transaction(true, indexed.len(), new as usize, started.elapsed());
        if new > 0
            && let Some(me) = self.lanes_running()
        {
            // Every room of the transaction: a room whose events were all duplicates finds
            // nothing pending, which is rare and cheap.
            let mut rooms: Vec<&str> = indexed.iter().map(|(_, room, _)| room.as_str()).collect();
            rooms.sort_unstable();
            rooms.dedup();
            for room in rooms {
                me.submit_room_inbox(room.to_owned());
            }
        }
        tracing::debug!(%txn_id, received = events.len(), new, "transaction stored");
        // The homeserver just talked to us.
        self.health
            .report(crate::health::HOMESERVER, PartState::Connected, None);
        self.homeserver_is_up().await;
        // It may have lost what it had queued for us when it went away (`catch_up.rs`).
        if let Some(me) = self.lanes_running() {
            if self.catch_up.awaiting() {
                me.homeserver_back();
            }
            // Or may strand one when the recovery our refusal started ends.
            me.watch_for_strands();
        }
        Ok(())
    }

    /// Ephemeral events (typing) are handed to the typing task, never recorded.
    fn ephemeral(&self, events: &[Value]) {
        for update in events.iter().filter_map(TypingUpdate::from_ephemeral) {
            // Our own users typing (ghosts, the bot in relay rooms) are echoes of what we did.
            let theirs: Vec<String> = update
                .user_ids
                .iter()
                .filter(|u| {
                    UserId::parse(u.as_str()).is_ok_and(|u| {
                        !self.registration.owns(&u)
                            || crate::visitor_account::is_visitor_account(&self.registration, &u)
                    })
                })
                .cloned()
                .collect();
            self.queue_typing(TypingUpdate {
                user_ids: theirs,
                ..update
            });
        }
    }

    fn refused(&self) {
        self.catch_up.refused();
    }

    async fn user_exists(&self, user_id: &UserId) -> bool {
        if user_id == self.client.bot() {
            return true;
        }
        // A ghost exists for every responder in the register.
        let Some(id) = user_id
            .localpart()
            .strip_prefix(&self.registration.ghost_prefix)
        else {
            return false;
        };
        matches!(self.store.responder(id).await, Ok(Some(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(sender: &str, content: Value) -> Raw<AnyTimelineEvent> {
        Raw::from_json(
            serde_json::value::to_raw_value(&serde_json::json!({
                "type": "m.room.message",
                "event_id": "$e",
                "room_id": "!relay:x",
                "sender": sender,
                "origin_server_ts": 1,
                "content": content,
            }))
            .unwrap(),
        )
    }

    #[test]
    fn only_the_bots_marked_posts_are_echoes_to_drop() {
        let marked = serde_json::json!({"msgtype": "m.text", "body": "V: hi", "org.switchboard.relayed": true});
        let plain = serde_json::json!({"msgtype": "m.text", "body": "V: hi"});
        assert!(is_relayed_echo("@bot:x", &raw("@bot:x", marked.clone())));
        // Anyone else may put the field in their content: theirs is still recorded.
        assert!(!is_relayed_echo("@bot:x", &raw("@alice:x", marked)));
        // The bot's other posts (notices in conversation rooms) are recorded.
        assert!(!is_relayed_echo("@bot:x", &raw("@bot:x", plain)));
        assert!(!is_relayed_echo(
            "@bot:x",
            &raw(
                "@bot:x",
                serde_json::json!({"org.switchboard.relayed": "yes"})
            )
        ));
    }
}
