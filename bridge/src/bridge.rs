//! The centre: the [`Bridge`] every part works through, and the handling of one conversation's
//! events. The homeserver's transactions are recorded in `transactions.rs`, events are read in
//! `events.rs`, the visitor API's side is in `visitors.rs`, and the lanes that run everything
//! in `worker.rs` and `lanes.rs`.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use serde_json::Value;
use switchboard_appservice::{
    AppserviceRegistration, ClientError, HomeserverClient,
    ruma::{OwnedServerName, ServerName},
};
use tokio::sync::Notify;

use crate::{
    cluster::Cluster,
    config::BridgeConfig,
    connector::{Connector, Platform},
    conversation::{Conversation, ConversationState, SenderRole},
    health::Health,
    store::{Store, StoreError},
};
pub use room_posts::RoomPostQueue;
use typing::TypingUpdate;

mod batch;
mod catch_up;
mod claims;
pub(crate) mod dispatch;
mod events;
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
mod transactions;
mod typing;
mod visitors;
mod worker;
use events::{VisitorChange, message_of, primary_language, visitor_change_of};
use transactions::{inbox_rows, indexed_events};

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
