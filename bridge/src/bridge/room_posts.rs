//! Writes into rooms: a responder's message posted as their ghost, notices, the conversation's
//! state event, ghosts joining and leaving.
//!
//! None of them is sent where it is decided. The step that decides one records it in
//! `room_posts` (in the same pass that marks its cause processed), and the worker posts the
//! queue in order per room, retrying with backoff for as long as the homeserver is away. So a
//! homeserver outage of any length delays what responders write, never drops it, and the
//! event that caused a post is never held up waiting for the homeserver. One room's failing
//! post holds up only the posts behind it in that room.
//!
//! The Matrix connector writes through the same queue ([`RoomPostQueue`], handed to it as
//! `connector::RoomWrites`): what the bot tells a Matrix responder in their relay room or
//! direct chat (notices, the offer's text) and removing them from a relay room. Those are
//! writes into rooms that fail only when the homeserver does, which is what this queue is
//! for. The outbox (`outbox.rs`) was the other candidate, and would keep notices in order with
//! the visitor's messages to the same responder; but its rows are visitor messages, one per
//! visitor event and conversation, sent through `Connector::deliver`, and a row that fails
//! for good makes the responder unreachable and hands the conversation over, which a lost
//! notice must not. Here a notice is one more write into a room, under a transaction ID kept
//! with its row. The price: a notice and a visitor message to the same relay room travel in
//! different queues, so after an outage they may arrive in another order than they were sent.

mod perform;

use std::{sync::Arc, time::Duration};

use async_trait::async_trait;
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use switchboard_appservice::{ClientError, ruma::events::room::message::RoomMessageEventContent};
use tokio::sync::Notify;
use tracing::Instrument;

use super::{Bridge, lanes::LaneKey};
use crate::{
    connector::{ConnectorError, FileKind, RemoteFile, RoomWrites},
    conversation::{Message, SenderRole},
    health::{HOMESERVER, PartState},
    store::{RoomPostRow, Store, StoreError},
};
pub(super) use perform::user_id;

/// The remote message a post carries, so the Matrix event it becomes is mapped to it (replies
/// and edits on the platform then find it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RemoteRef {
    pub platform: String,
    pub address: String,
    pub message_id: String,
}

/// What to write into a room. Stored as JSON in `room_posts.op_json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub(crate) enum RoomPost {
    /// A message event as the bot (`sender: None`) or one of our ghosts, with the row's
    /// transaction ID, so the homeserver too answers a repeat with the first event.
    Message {
        sender: Option<String>,
        content: Value,
        #[serde(default)]
        remote: Option<RemoteRef>,
    },
    /// A responder's deletion: redacts the event their message became (looked up when
    /// posted, like an edit's original).
    Redact { sender: String, remote: RemoteRef },
    /// A responder's edit: replaces the event their original message became (looked up when
    /// posted, since the original is posted by an earlier row of the same room).
    Edit {
        sender: String,
        remote: RemoteRef,
        body: String,
        formatted_body: Option<String>,
    },
    /// A responder's file: fetched from their platform and uploaded as their ghost when posted.
    File {
        sender: String,
        remote: RemoteRef,
        file: RemoteFile,
        caption: String,
    },
    /// A state event of the bot's (the conversation's lifecycle state).
    State {
        event_type: String,
        state_key: String,
        content: Value,
    },
    /// A ghost registered, named, invited and joined.
    Join { user: String, display_name: String },
    /// One of our users leaves.
    Leave { user: String },
    /// The bot removes someone (a Matrix responder from their relay room, or their invite to
    /// it), with the reason shown in their client.
    Kick { user: String, reason: String },
}

impl RoomPost {
    /// The platform message this post carries, if it carries one (a message or a file): what
    /// is mapped to the room when it is queued.
    fn carried(&self) -> Option<&RemoteRef> {
        match self {
            RoomPost::Message {
                remote: Some(r), ..
            }
            | RoomPost::File { remote: r, .. } => Some(r),
            _ => None,
        }
    }

    /// What message `message_id`, written at `address` on `platform`, becomes in the room,
    /// posted as `sender` (a responder's ghost, or an initiator's visitor ghost): a file with
    /// its caption, or a text whose formatted body is sanitised to the Matrix spec's
    /// allow-list. With its transaction ID, derived from the message: if the event that
    /// carried it is handled again after a crash, it is queued once, and the homeserver
    /// answers a repeated send with the first event.
    pub(super) fn from_remote(
        sender: String,
        (platform, address, message_id): (&str, &str, &str),
        body: String,
        formatted_body: Option<String>,
        file: Option<RemoteFile>,
    ) -> (String, RoomPost) {
        let txn = format!("{platform}-{address}-{message_id}");
        let remote = RemoteRef {
            platform: platform.to_owned(),
            address: address.to_owned(),
            message_id: message_id.to_owned(),
        };
        (
            txn,
            RoomPost::remote_message(sender, remote, body, formatted_body, file),
        )
    }

    fn remote_message(
        sender: String,
        remote: RemoteRef,
        body: String,
        formatted_body: Option<String>,
        file: Option<RemoteFile>,
    ) -> RoomPost {
        match file {
            Some(file) => RoomPost::File {
                sender,
                remote,
                file,
                caption: body,
            },
            None => {
                let content = match formatted_body {
                    Some(html) => RoomMessageEventContent::text_html(
                        body,
                        crate::format::sanitise_matrix_html(&html),
                    ),
                    None => RoomMessageEventContent::text_plain(body),
                };
                RoomPost::Message {
                    sender: Some(sender),
                    content: serde_json::to_value(&content).expect("content serialises"),
                    remote: Some(remote),
                }
            }
        }
    }
}

/// Why a post did not go through.
#[derive(Debug)]
pub(super) enum PostError {
    /// The homeserver is away or busy: try again later, as long as it takes.
    RetryLater(String),
    /// Refused for good (bad content, not allowed): set aside so the room goes on.
    Never(String),
    Store(StoreError),
}

impl From<ClientError> for PostError {
    fn from(e: ClientError) -> Self {
        if e.is_transient() {
            PostError::RetryLater(e.to_string())
        } else {
            PostError::Never(e.to_string())
        }
    }
}

impl From<StoreError> for PostError {
    fn from(e: StoreError) -> Self {
        PostError::Store(e)
    }
}

/// The wait before the next attempt after `attempts` failed ones: doubling from half a second
/// up to 30 s, with up to a fifth added at random so many rooms do not retry in lockstep.
/// Never gives up: only the homeserver coming back ends it.
fn post_retry_delay(attempts: i64, jitter: f64) -> Duration {
    let base = 500u64.saturating_mul(1 << attempts.clamp(0, 6)).min(30_000);
    Duration::from_millis(base + (base as f64 * jitter.clamp(0.0, 0.2)) as u64)
}

/// The queue itself: records a post and wakes the loop that posts them. Made from the store
/// before the bridge, so connectors built before it can be handed one (as
/// `connector::RoomWrites`); the bridge is then given the same one
/// (`Bridge::with_room_posts`), so it is woken by what they queue.
#[derive(Clone)]
pub struct RoomPostQueue {
    store: Store,
    ready: Arc<Notify>,
    /// What the loop was woken for since it last looked: the rooms something was queued in
    /// (their lanes are started without reading the queue), and whether it must look at the
    /// whole queue (a backoff ended, a post failed).
    woken: Arc<std::sync::Mutex<Wakes>>,
}

/// See [`RoomPostQueue::woken`].
#[derive(Default)]
pub(super) struct Wakes {
    pub rooms: std::collections::HashSet<String>,
    pub everything: bool,
}

impl RoomPostQueue {
    pub fn new(store: Store) -> Self {
        Self {
            store,
            ready: Arc::new(Notify::new()),
            woken: Arc::default(),
        }
    }

    /// Records `op` for `room` under `txn_id` (queued twice, posted once) and wakes the loop
    /// for that room.
    pub(super) async fn enqueue(
        &self,
        room: &str,
        txn_id: &str,
        op: &RoomPost,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(op).expect("a RoomPost serialises");
        if self.store.enqueue_room_post(room, txn_id, &json).await? {
            self.queued(room);
        }
        Ok(())
    }

    /// Wakes the loop for `room`, where a post was just queued.
    fn queued(&self, room: &str) {
        self.woken
            .lock()
            .expect("room post wakes")
            .rooms
            .insert(room.to_owned());
        self.ready.notify_one();
    }

    /// Makes the posting loop look at the whole queue now.
    pub(super) fn wake(&self) {
        self.woken.lock().expect("room post wakes").everything = true;
        self.ready.notify_one();
    }

    /// Resolves when the loop was woken, with what it was woken for (and forgets it).
    pub(super) async fn woken(&self) -> Wakes {
        self.ready.notified().await;
        self.take_wakes()
    }

    /// What the loop was woken for, if anything, forgotten as it is taken.
    fn take_wakes(&self) -> Wakes {
        std::mem::take(&mut *self.woken.lock().expect("room post wakes"))
    }
}

#[async_trait]
impl RoomWrites for RoomPostQueue {
    async fn send_message(
        &self,
        room: &str,
        txn: &str,
        content: Value,
    ) -> Result<(), ConnectorError> {
        let op = RoomPost::Message {
            sender: None,
            content,
            remote: None,
        };
        self.enqueue(room, txn, &op).await.map_err(not_queued)
    }

    async fn remove(
        &self,
        room: &str,
        txn: &str,
        user: &str,
        reason: &str,
    ) -> Result<(), ConnectorError> {
        let op = RoomPost::Kick {
            user: user.to_owned(),
            reason: reason.to_owned(),
        };
        self.enqueue(room, txn, &op).await.map_err(not_queued)
    }
}

/// The database did not take a write: worth trying again, as a platform that is away is.
fn not_queued(e: StoreError) -> ConnectorError {
    ConnectorError::Transient(format!("could not queue a write into a room: {e}"))
}

impl Bridge {
    /// Queues `op` for `room` under `txn_id` (its key: queued twice, posted once) and wakes
    /// the worker to post it.
    pub(super) async fn post(
        &self,
        room: &str,
        txn_id: &str,
        op: RoomPost,
    ) -> Result<(), StoreError> {
        self.map_remote(room, &op).await?;
        // And it is part of the conversation from now on, for summaries and time limits.
        if let Some(message) = provisional_message(room, txn_id, &op, self.now_ms()) {
            self.store.record_provisional_message(&message).await?;
        }
        tracing::debug!(room_id = %room, txn = %txn_id, "queueing a post into the room");
        self.room_posts.enqueue(room, txn_id, &op).await
    }

    /// [`Self::post`] for a responder's message from their platform: what it records goes
    /// in one relaxed commit ([`crate::store::Store::queue_remote_post`], which says why that
    /// is safe). Only for a post caused by a recorded platform event that is marked processed
    /// after it: that is the whole argument. The flushed commits it replaces were three disk
    /// flushes (and three hand-offs to sqlx's thread) between the responder's message and its
    /// post, on the path a reply takes to the visitor.
    pub(super) async fn post_remote_message(
        &self,
        room: &str,
        txn_id: &str,
        op: RoomPost,
    ) -> Result<(), StoreError> {
        tracing::debug!(room_id = %room, txn = %txn_id, "queueing a post into the room");
        self.queue_remote(room, txn_id, op, true).await
    }

    /// Queues `op`, caused by a recorded platform event (see [`Self::post_remote_message`]),
    /// with its remote message mapped to the room and, if `transcribe`, its provisional
    /// transcript entry, in one relaxed commit.
    async fn queue_remote(
        &self,
        room: &str,
        txn_id: &str,
        op: RoomPost,
        transcribe: bool,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_string(&op).expect("a RoomPost serialises");
        let remote = op.carried().map(|r| {
            (
                r.platform.as_str(),
                r.address.as_str(),
                r.message_id.as_str(),
            )
        });
        let provisional = transcribe
            .then(|| provisional_message(room, txn_id, &op, self.now_ms()))
            .flatten();
        let queued = self
            .store
            .queue_remote_post(&crate::store::RemotePost {
                room_id: room,
                txn_id,
                op_json: &json,
                remote,
                provisional: provisional.as_ref(),
            })
            .await?;
        if queued {
            self.room_posts.queued(room);
        }
        Ok(())
    }

    /// Queues what a visitor who writes from a platform said, as their visitor ghost. Like
    /// [`Self::post_remote_message`] (it too is caused by a recorded platform event, marked
    /// processed after it) but with no provisional transcript entry: a visitor's message
    /// enters the transcript when its event comes back, as a visitor's (the event routes the
    /// conversation and is relayed to its holders then).
    pub(super) async fn post_as_visitor(
        &self,
        room: &str,
        txn_id: &str,
        op: RoomPost,
    ) -> Result<(), StoreError> {
        self.queue_remote(room, txn_id, op, false).await
    }

    /// A remote message belongs to this room from the moment it is queued: a reply or an
    /// edit that comes before it is posted (the homeserver may be away) still finds it.
    async fn map_remote(&self, room: &str, op: &RoomPost) -> Result<(), StoreError> {
        if let Some(r) = op.carried() {
            self.store
                .map_remote_message(&r.platform, &r.address, &r.message_id, room, None)
                .await?;
        }
        Ok(())
    }

    /// Queues a notice from the bot to the room, once per `txn_id`.
    pub(super) async fn post_notice(
        &self,
        room: &str,
        txn_id: &str,
        text: impl Into<String>,
    ) -> Result<(), StoreError> {
        let content = RoomMessageEventContent::notice_plain(text.into());
        self.post(
            room,
            txn_id,
            RoomPost::Message {
                sender: None,
                content: serde_json::to_value(&content).expect("content serialises"),
                remote: None,
            },
        )
        .await
    }

    /// Hands each room with a post due to its posting lane (`LaneKey::Posts`), and returns
    /// when the next post not yet due will be. Rooms post in parallel: one room's slow or
    /// failing post holds up only the posts behind it in that room.
    pub(super) async fn schedule_room_posts(
        self: &Arc<Self>,
    ) -> Result<Option<Duration>, StoreError> {
        let now = self.now_ms();
        let mut next: Option<i64> = None;
        for (room, due) in self.store.room_post_rooms().await? {
            if due <= now {
                self.start_posting(room);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        Ok(next.map(|at| Duration::from_millis((at - self.now_ms()).max(0) as u64)))
    }

    /// Starts the posting lane of a room (or has it look again once it is done). A room
    /// whose next post is not due yet finds that out there, and has the whole queue looked
    /// at, which schedules it for when it is due.
    pub(super) fn start_posting(self: &Arc<Self>, room: String) {
        let me = self.clone();
        let key = LaneKey::Posts(room.clone());
        let job = async move {
            match me.post_room(&room).await {
                // A post waits out a backoff: the loop looks again when it is due.
                Ok(Some(_)) => me.room_posts.wake(),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(room_id = %room, error = %e, "posting into a room failed; retrying");
                    me.room_posts.wake();
                }
            }
        };
        self.lanes.submit(key, Some("posts"), Box::pin(job));
    }

    /// Posts every due row of every room, each room in order, all in this call: what the
    /// posting lanes do, without them, for tests that fix the order of everything. Returns
    /// when the next row is due, if one is waiting.
    pub async fn drain_room_posts(&self) -> Result<Option<Duration>, StoreError> {
        let mut next: Option<i64> = None;
        for (room, _) in self.store.room_post_rooms().await? {
            if let Some(at) = self.post_room(&room).await? {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        Ok(next.map(|at| Duration::from_millis((at - self.now_ms()).max(0) as u64)))
    }

    /// Posts one room's due rows in order, until none is left or one must wait (not due yet,
    /// or the homeserver did not take it): then returns when it is due. Holds the room's
    /// posting lock meanwhile, which an erasure waits for (`erase_conversation`), so nothing
    /// this pass read lands after the erasure redacts.
    async fn post_room(&self, room: &str) -> Result<Option<i64>, StoreError> {
        let _posting = self.post_locks.lock(room).await;
        loop {
            let rows = self.store.pending_room_posts_in(room).await?;
            if rows.is_empty() {
                return Ok(None);
            }
            for row in rows {
                if row.next_attempt_at > self.now_ms() {
                    return Ok(Some(row.next_attempt_at));
                }
                let span =
                    tracing::info_span!("conversation", room_id = %row.room_id, post = %row.txn_id);
                match self.post_row(&row).instrument(span.clone()).await {
                    Ok(()) => {
                        span.in_scope(|| tracing::debug!(seq = row.seq, "posted into the room"));
                        self.health.report(HOMESERVER, PartState::Connected, None);
                        self.store.room_post_done(row.seq).await?
                    }
                    Err(PostError::Store(e)) => return Err(e),
                    Err(PostError::RetryLater(e)) => {
                        self.health
                            .report(HOMESERVER, PartState::Degraded, Some(e.clone()));
                        self.posts_waiting
                            .store(true, std::sync::atomic::Ordering::SeqCst);
                        let wait =
                            post_retry_delay(row.attempts, rand::thread_rng().gen_range(0.0..0.2));
                        span.in_scope(|| tracing::warn!(error = %e, attempts = row.attempts + 1, wait_ms = wait.as_millis() as u64, "homeserver did not take a post; will retry"));
                        let at = self.now_ms() + wait.as_millis() as i64;
                        self.store.room_post_retry_at(row.seq, at, &e).await?;
                        return Ok(Some(at));
                    }
                    Err(PostError::Never(e)) => {
                        span.in_scope(|| tracing::error!(error = %e, "homeserver refused a post for good; set aside"));
                        self.store.room_post_failed(row.seq, &e).await?;
                        self.store
                            .forget_message(&provisional_id(&row.room_id, &row.txn_id))
                            .await?;
                        self.tell_author_not_posted(&row).await;
                    }
                }
            }
        }
    }

    /// The homeserver just showed it is up (it pushed us a transaction): posts waiting out a
    /// backoff are tried at once instead of up to 30 s later.
    pub(super) async fn homeserver_is_up(&self) {
        if !self
            .posts_waiting
            .swap(false, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        match self.store.retry_room_posts_now().await {
            Ok(n) if n > 0 => {
                tracing::info!(posts = n, "homeserver is back; retrying waiting posts now");
                self.room_posts.wake();
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, "could not reschedule waiting posts");
                self.posts_waiting
                    .store(true, std::sync::atomic::Ordering::SeqCst);
            }
        }
    }

    /// A responder's message that can never be posted: they are told, so they can send it
    /// again, instead of believing the visitor read it.
    async fn tell_author_not_posted(&self, row: &RoomPostRow) {
        let Ok(op) = serde_json::from_str::<RoomPost>(&row.op_json) else {
            return;
        };
        let (remote, what) = match &op {
            RoomPost::Message {
                remote: Some(r), ..
            } => (
                r,
                "Your message could not be delivered. Please send it again.",
            ),
            RoomPost::File { remote, .. } => (
                remote,
                "Your file could not be delivered. Please send it again.",
            ),
            _ => return,
        };
        self.notify_about(&row.room_id, &remote.platform, &remote.address, what)
            .await;
    }
}

/// The transcript ID of a responder's message until the homeserver gives it an event ID.
fn provisional_id(room: &str, txn: &str) -> String {
    format!("pending:{room}:{txn}")
}

/// A responder's message (text or file) as the transcript keeps it, from the moment it is
/// queued (`now`, unix ms); `None` for every other post.
fn provisional_message(room: &str, txn: &str, op: &RoomPost, now: i64) -> Option<Message> {
    let (sender, msgtype, body, formatted_body) = match op {
        RoomPost::Message {
            sender: Some(sender),
            content,
            remote: Some(_),
        } => (
            sender,
            content["msgtype"].as_str().unwrap_or("m.text").to_owned(),
            content["body"].as_str().unwrap_or_default().to_owned(),
            content["formatted_body"].as_str().map(str::to_owned),
        ),
        RoomPost::File {
            sender,
            file,
            caption,
            ..
        } => (
            sender,
            match file.kind {
                FileKind::Image => "m.image",
                FileKind::File => "m.file",
            }
            .to_owned(),
            if caption.is_empty() {
                file.filename.clone()
            } else {
                caption.clone()
            },
            None,
        ),
        _ => return None,
    };
    Some(Message {
        event_id: provisional_id(room, txn),
        room_id: room.to_owned(),
        inbox_seq: 0,
        sender: sender.clone(),
        sender_role: SenderRole::Responder,
        msgtype,
        body,
        formatted_body,
        origin_server_ts: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_thirty_seconds_and_never_give_up() {
        let waits: Vec<u128> = (0..10)
            .map(|n| post_retry_delay(n, 0.0).as_millis())
            .collect();
        assert_eq!(
            waits,
            [
                500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000
            ]
        );
        assert_eq!(post_retry_delay(1_000_000, 0.0), Duration::from_secs(30));
        // Jitter adds at most a fifth.
        assert_eq!(post_retry_delay(0, 0.2), Duration::from_millis(600));
        assert_eq!(post_retry_delay(0, 5.0), Duration::from_millis(600));
    }

    #[test]
    fn posts_keep_their_shape_in_the_store() {
        let op = RoomPost::Edit {
            sender: "@_sb_tina:example.org".into(),
            remote: RemoteRef {
                platform: "telegram".into(),
                address: "42".into(),
                message_id: "7".into(),
            },
            body: "fixed".into(),
            formatted_body: None,
        };
        let json = serde_json::to_string(&op).unwrap();
        assert!(json.contains(r#""op":"edit""#), "{json}");
        assert_eq!(serde_json::from_str::<RoomPost>(&json).unwrap(), op);
    }
}
