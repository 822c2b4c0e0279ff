//! The outbox: visitor messages on their way to responders on other platforms, rendered into
//! the platform's parts once, sent part by part in order per conversation, paced as each
//! connector declares, retried with backoff, and never sent twice once a part went out.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use backon::BackoffBuilder;

use switchboard_appservice::ruma::OwnedMxcUri;
use tracing::Instrument;

use super::{Bridge, lanes::LaneKey};
use crate::media_links::LINK_LIFETIME;
use crate::{
    connector::{
        Attachment, Capabilities, Connector, ConnectorError, Delivery, MediaRef, Platform, Revision,
    },
    conversation::Conversation,
    store::{AssignmentRow, DeadLetterSource, OutboxRow, StoreError},
};

/// The most visitor messages one batched platform message carries (email: one mail).
const MAX_BATCH: usize = 50;

/// How the record of a sent message is retried while the store is away: 100 ms growing to
/// 5 s, with jitter, for about ten minutes; a longer outage stops the whole service anyway.
fn record_backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(125)
        .with_jitter()
        .build()
}

impl Bridge {
    /// Queues a visitor message for every responder holding the conversation remotely.
    pub(super) async fn relay_to_responders(
        &self,
        conversation: &Conversation,
        event_id: &str,
        body: &str,
        formatted_body: Option<&str>,
        media: Option<MediaRef>,
        revises: Option<Revision>,
    ) -> Result<(), StoreError> {
        for (a, thread) in self.remote_holders(conversation).await? {
            let delivery = Delivery {
                room_id: conversation.room_id.clone(),
                event_id: event_id.to_owned(),
                thread,
                visitor_alias: conversation.visitor_alias.clone(),
                body: body.to_owned(),
                formatted_body: formatted_body.map(str::to_owned),
                media: media.clone(),
                revises: revises.clone(),
                to_initiator: false,
            };
            let payload = serde_json::to_string(&delivery).expect("a Delivery always serialises");
            self.store
                .enqueue_outbox(
                    &conversation.room_id,
                    &a.platform,
                    &a.address,
                    event_id,
                    &payload,
                )
                .await?;
            self.want_delivery(&a.platform, &a.address);
        }
        Ok(())
    }

    /// Who holds the conversation on a platform the bridge relays to (not one that shares
    /// the room), each with the connector's handle of it: the offer they accepted (see
    /// [`Self::thread_of`]).
    pub(super) async fn remote_holders(
        &self,
        conversation: &Conversation,
    ) -> Result<Vec<(AssignmentRow, Option<String>)>, StoreError> {
        Ok(self.remote_only(
            self.store
                .active_assignments_with_threads(&conversation.room_id)
                .await?,
        ))
    }

    /// Of a conversation's active assignments, those on a platform the bridge relays to.
    pub(super) fn remote_only(
        &self,
        assignments: Vec<(AssignmentRow, Option<String>)>,
    ) -> Vec<(AssignmentRow, Option<String>)> {
        assignments
            .into_iter()
            .filter(|(a, _)| {
                self.remote(&a.platform)
                    .is_some_and(|(_, connector)| !connector.capabilities().shares_room)
            })
            .collect()
    }

    /// The connector's handle of this conversation with the responder holding it (Matrix:
    /// their relay room): the one offer they accepted, on the platform they hold it on.
    pub(super) async fn thread_of(
        &self,
        room: &str,
        holder: &AssignmentRow,
    ) -> Result<Option<String>, StoreError> {
        Ok(self
            .accepted_offer_of(room, holder)
            .await?
            .and_then(|o| o.remote_message_id))
    }

    /// The offer the holder accepted, on the platform and address they hold it on.
    pub(super) async fn accepted_offer_of(
        &self,
        room: &str,
        holder: &AssignmentRow,
    ) -> Result<Option<crate::store::OfferRow>, StoreError> {
        Ok(self
            .store
            .offers_for_room(room)
            .await?
            .into_iter()
            .find(|o| {
                o.responder_id == holder.responder_id
                    && o.platform == holder.platform
                    && o.address == holder.address
                    && o.state == "accepted"
            }))
    }

    /// Hands each chat with deliveries due to its lane (`LaneKey::To`), and returns when the
    /// next delivery not yet due will be. Only lanes with new work are looked at, unless
    /// `full`: then every chat with undelivered rows is.
    pub(super) async fn schedule_deliveries(
        self: &Arc<Self>,
        full: bool,
    ) -> Result<Option<Duration>, StoreError> {
        if full {
            // Offers recorded before a restart (or before the lanes ran), or whose lane
            // stopped on a store failure.
            for (platform, address) in self.store.unsent_offer_chats().await? {
                self.submit_offers(platform, address);
            }
        }
        if !full {
            let next = self.next_delivery_due.load(Ordering::SeqCst);
            if next == i64::MAX {
                return Ok(None);
            }
            let now = self.now_ms();
            if next > now {
                return Ok(Some(Duration::from_millis((next - now) as u64)));
            }
        }
        // A retry fell due (or a full look): read which chats have undelivered rows.
        self.next_delivery_due.store(i64::MAX, Ordering::SeqCst);
        let now = self.now_ms();
        let mut next: Option<i64> = None;
        for (platform, address, due) in self.store.outbox_lanes().await? {
            if due <= now {
                self.submit_delivery(platform, address);
            } else {
                next = Some(next.map_or(due, |n| n.min(due)));
            }
        }
        if let Some(at) = next {
            self.next_delivery_due.fetch_min(at, Ordering::SeqCst);
        }
        Ok(next.map(|at| Duration::from_millis((at - self.now_ms()).max(0) as u64)))
    }

    /// Starts the lane of a chat to send its offers that have not gone out yet.
    pub(super) fn submit_offers(self: &Arc<Self>, platform: String, address: String) {
        self.submit_to_chat(platform, address, "offers", |me, platform, address| async move {
            if let Err(e) = me.send_offers_to(&platform, &address).await {
                // Picked up again by the scheduler's next full look.
                tracing::error!(platform = %platform, error = %e, "sending offers failed; retrying later");
            }
        });
    }

    pub(super) fn submit_delivery(self: &Arc<Self>, platform: String, address: String) {
        self.submit_to_chat(platform, address, "deliver", |me, platform, address| async move {
            match me.drain_chat(&platform, &address).await {
                Ok(Some(at)) => {
                    me.next_delivery_due.fetch_min(at, Ordering::SeqCst);
                    me.inbox_ready.notify_one();
                }
                Ok(None) => {}
                Err(e) => {
                    tracing::error!(platform = %platform, error = %e, "delivery failed; retrying later");
                    me.next_delivery_due
                        .fetch_min(me.now_ms() + 1000, Ordering::SeqCst);
                }
            }
        });
    }

    /// Hands `job` to the lane of the chat it is about (`LaneKey::To`); a job of this `kind`
    /// already queued there is not queued twice.
    fn submit_to_chat<F, Fut>(
        self: &Arc<Self>,
        platform: String,
        address: String,
        kind: &'static str,
        job: F,
    ) where
        F: FnOnce(Arc<Self>, String, String) -> Fut,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let key = LaneKey::To {
            platform: platform.clone(),
            address: address.clone(),
        };
        self.lanes.submit(
            key,
            Some(kind),
            Box::pin(job(self.clone(), platform, address)),
        );
    }

    /// Starts the lane of this chat: a delivery was queued for it. (Before the lanes run,
    /// the scheduler's first full look finds it, or a test's `drain_outbox`.)
    pub(super) fn want_delivery(&self, platform: &str, address: &str) {
        if let Some(me) = self.lanes_running() {
            me.submit_delivery(platform.to_owned(), address.to_owned());
        }
    }

    /// Delivers every due row of every chat, each chat in order, all in this call: what the
    /// lanes do, without them, for tests that fix the order of everything. Returns when the
    /// next row is due, if one is waiting.
    pub async fn drain_outbox(&self) -> Result<Option<Duration>, StoreError> {
        let mut next: Option<i64> = None;
        for (platform, address, _) in self.store.outbox_lanes().await? {
            if let Some(at) = self.drain_chat(&platform, &address).await? {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
        }
        // A hand-over routes the conversation again.
        self.drain_offers().await?;
        Ok(next.map(|at| Duration::from_millis((at - self.now_ms()).max(0) as u64)))
    }

    /// Delivers one chat's due rows, oldest first; the lane of the chat runs one of these at
    /// a time. Returns when its first undelivered row is next due, if one is waiting.
    ///
    /// A row is sent part by part (see [`Connector::render`]): each part takes its own paced
    /// slot, and is recorded (`parts_sent`, its remote message mapped) as soon as the platform
    /// accepts it, so a 429 or a failure on part k retries part k and never resends parts
    /// before it, also after a restart. Waiting for a paced slot happens here, in the chat's
    /// own lane, so it holds up nobody else.
    ///
    /// One window remains: a crash between the platform accepting a part and our recording
    /// it resends that one part (Telegram has no idempotency key; Matrix's transaction IDs
    /// make the resend harmless there). The same holds for a call cut off by the connector's
    /// `call_timeout` that the platform did carry out.
    pub(super) async fn drain_chat(
        &self,
        platform_name: &str,
        address: &str,
    ) -> Result<Option<i64>, StoreError> {
        // Until this ends, a reply from this chat may name a message of ours not mapped yet.
        let _in_flight = self.deliveries_in_flight.enter(platform_name, address);
        loop {
            let rows = self
                .store
                .pending_outbox_to(platform_name, address, super::DELIVERY_BATCH)
                .await?;
            // A short batch was all there was: rows queued since then start this lane again
            // (`want_delivery`), so there is no need to read once more to find none.
            let all = rows.len() < super::DELIVERY_BATCH as usize;
            if rows.is_empty() {
                return Ok(None);
            }
            // Where the platform sends messages together, a new message waits the window
            // out for the ones written after it.
            let window = self
                .remote(platform_name)
                .map_or(0, |(_, c)| c.capabilities().batch_window.as_millis() as i64);
            let mut next = 0;
            while next < rows.len() {
                let (row, due_at) = &rows[next];
                let due_at = if row.attempts == 0 {
                    due_at + window
                } else {
                    *due_at
                };
                if due_at > self.now_ms() {
                    return Ok(Some(due_at));
                }
                let span = tracing::info_span!("conversation", room_id = %row.room_id, event_id = %row.event_id);
                let batch = if window > 0 {
                    self.batch_at(&rows[next..])
                } else {
                    Vec::new()
                };
                let outcome = if batch.is_empty() {
                    next += 1;
                    self.deliver_row(row).instrument(span.clone()).await?
                } else {
                    next += batch.len();
                    self.deliver_batch(&batch).instrument(span.clone()).await?
                };
                match outcome {
                    RowOutcome::Delivered => {}
                    RowOutcome::Later(at) => return Ok(Some(at)),
                    RowOutcome::Unreachable => {
                        let _room = self.room_locks.lock(&row.room_id).await;
                        if self
                            .is_initiator_of(&row.room_id, &row.platform, &row.address)
                            .await?
                        {
                            // The person who started it cannot be reached (they blocked the
                            // bot): their conversation ends, as if they had ended it.
                            tracing::info!(room_id = %row.room_id, "the initiator cannot be reached; ending their conversation");
                            self.end_by_visitor(&row.room_id).instrument(span).await?;
                        } else {
                            // The responder cannot be reached: someone else takes over.
                            self.hand_over_because(
                                &row.room_id,
                                &row.platform,
                                &row.address,
                                "their platform could not be reached",
                            )
                            .instrument(span)
                            .await?;
                        }
                    }
                }
            }
            if all {
                return Ok(None);
            }
        }
    }

    /// The run of rows at the head of `rows` that go out together as one message: text
    /// messages of one conversation (one room, one thread), none begun, none a file or a
    /// change. Empty when the first row is not one of them.
    fn batch_at(&self, rows: &[(OutboxRow, i64)]) -> Vec<(OutboxRow, Delivery)> {
        let mut batch: Vec<(OutboxRow, Delivery)> = Vec::new();
        for (row, _) in rows {
            let Ok(delivery) = serde_json::from_str::<Delivery>(&row.payload_json) else {
                break;
            };
            let plain = row.parts_sent == 0
                && row.parts.is_none()
                && delivery.media.is_none()
                && delivery.revises.is_none();
            let same = batch.first().is_none_or(|(first, d)| {
                first.room_id == row.room_id && d.thread == delivery.thread
            });
            if !plain || !same || batch.len() >= MAX_BATCH {
                break;
            }
            batch.push((row.clone(), delivery));
        }
        batch
    }

    /// Sends a run of text messages as one platform message (`Connector::deliver_batch`).
    /// All of it is recorded as sent once the platform accepts it; a failure retries the
    /// run from its first row, with whatever was queued after it by then.
    async fn deliver_batch(
        &self,
        batch: &[(OutboxRow, Delivery)],
    ) -> Result<RowOutcome, StoreError> {
        let head = &batch[0].0;
        let Some((platform, connector)) = self.remote(&head.platform) else {
            return Ok(RowOutcome::Later(self.now_ms() + 1000));
        };
        let caps = for_recipient(connector.capabilities(), &batch[0].1);
        if let Err(at) = self.paced_slot(platform, &head.address, &caps).await {
            return Ok(RowOutcome::Later(at));
        }
        let deliveries: Vec<Delivery> = batch.iter().map(|(_, d)| d.clone()).collect();
        match connector.deliver_batch(&deliveries, &head.address).await {
            Ok(message_id) => {
                for (row, _) in batch {
                    record_sent(|| {
                        self.store.outbox_part_sent_done(
                            row,
                            0,
                            &message_id,
                            true,
                            !caps.idempotent_sends,
                        )
                    })
                    .await?;
                }
                tracing::debug!(platform = %head.platform, messages = batch.len(), "delivered to responder as one message");
                Ok(RowOutcome::Delivered)
            }
            Err(e) => self.row_failed(head, platform, &caps, e, 0, true).await,
        }
    }

    /// Sends what is left of one row, part by part.
    async fn deliver_row(&self, row: &OutboxRow) -> Result<RowOutcome, StoreError> {
        let Some((platform, connector)) = self.remote(&row.platform) else {
            self.store.outbox_failed(row.seq).await?;
            return Ok(RowOutcome::Delivered);
        };
        let delivery: Delivery = match serde_json::from_str(&row.payload_json) {
            Ok(d) => d,
            Err(e) => {
                tracing::error!(error = %e, "undecodable outbox row set aside");
                self.set_aside(
                    DeadLetterSource::Outbox,
                    row.seq,
                    Some(&row.room_id),
                    &format!("undecodable delivery: {e}"),
                    row.attempts,
                )
                .await?;
                return Ok(RowOutcome::Delivered);
            }
        };
        let caps = for_recipient(connector.capabilities(), &delivery);
        let delivery = match &delivery.revises {
            None => delivery,
            Some(revision) => {
                let sent_before = self
                    .store
                    .messages_sent_for(&row.platform, &row.address, &row.room_id, revision.of())
                    .await?;
                if sent_before.is_empty() {
                    // The responder was never sent the original (it came before they held
                    // the conversation): nothing of theirs to change.
                    self.store.outbox_done(row.seq).await?;
                    return Ok(RowOutcome::Delivered);
                }
                if caps.revises_deliveries {
                    return self
                        .deliver_revision(row, &delivery, connector.as_ref(), sent_before)
                        .await;
                }
                delivery.into_new_message()
            }
        };
        let parts = self.parts_of(row, connector.as_ref(), &delivery).await?;
        let mut sent = row.parts_sent.max(0) as usize;
        let mut failure = None;
        while sent < parts.len() {
            if let Err(at) = self.paced_slot(platform, &row.address, &caps).await {
                return Ok(RowOutcome::Later(at));
            }
            let call = std::time::Instant::now();
            let result = self
                .deliver_one(
                    connector.as_ref(),
                    &delivery,
                    sent,
                    &parts[sent],
                    &row.address,
                )
                .await;
            if result.is_ok() {
                crate::metrics::delivery_time(&row.platform, call.elapsed());
            }
            match result {
                Ok(PartSent::Message(message_id)) => {
                    let last = sent + 1 == parts.len();
                    record_sent(|| {
                        self.store.outbox_part_sent_done(
                            row,
                            sent as i64,
                            &message_id,
                            last,
                            !caps.idempotent_sends,
                        )
                    })
                    .await?;
                    sent += 1;
                    if last {
                        tracing::debug!(platform = %row.platform, parts = parts.len(), "delivered to responder");
                        crate::metrics::delivery(&row.platform, "sent", "none");
                        return Ok(RowOutcome::Delivered);
                    }
                }
                Ok(PartSent::FileRefused(refusal)) => {
                    // Told instead of sent: the visitor in their room, the responder where
                    // the file would have gone (this part's slot). Neither is a failure of
                    // the responder's platform, so nothing is retried or handed over.
                    let media = delivery.media.as_ref().expect("only a file is refused");
                    self.post_notice(
                        &row.room_id,
                        &format!("switchboard-file-refused-{}", row.event_id),
                        refusal.to_visitor(&media.filename),
                    )
                    .await?;
                    let text = refusal.to_responder(
                        &delivery.visitor_alias,
                        &media.filename,
                        platform.display_name(),
                    );
                    match connector
                        .notify(&row.address, delivery.thread.as_deref(), &text)
                        .await
                    {
                        Ok(Some(notice)) => {
                            record_sent(|| self.store.outbox_part_sent(row, sent as i64, &notice))
                                .await?;
                        }
                        Ok(None) => {}
                        Err(e) => {
                            failure = Some(e);
                            break;
                        }
                    }
                    tracing::info!(platform = %row.platform, ?refusal, "file not relayed: the platform does not take it");
                    sent += 1;
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        let Some(e) = failure else {
            self.store.outbox_done(row.seq).await?;
            tracing::debug!(platform = %row.platform, parts = parts.len(), "delivered to responder");
            crate::metrics::delivery(&row.platform, "sent", "none");
            return Ok(RowOutcome::Delivered);
        };
        self.row_failed(row, platform, &caps, e, sent, true).await
    }

    /// The parts a row's delivery becomes: rendered once, stored before the first part goes
    /// out, and never again. A message of one part is not stored: until that part is
    /// recorded as sent nothing of the row has gone out, so rendering it again later cannot
    /// split it differently from what a responder already saw (and it saves a disk flush per
    /// message).
    pub(super) async fn parts_of(
        &self,
        row: &OutboxRow,
        connector: &dyn Connector,
        delivery: &Delivery,
    ) -> Result<Vec<String>, StoreError> {
        Ok(match &row.parts {
            Some(parts) => parts.clone(),
            None => {
                let rendered = connector.render(delivery);
                if rendered.len() <= 1 {
                    rendered
                } else {
                    self.store.outbox_set_parts(row.seq, &rendered).await?
                }
            }
        })
    }

    /// Takes this chat's next paced slot, waiting for it here if it comes soon; `Err(at)`:
    /// not before `at` (unix ms), so the row is left for then.
    pub(super) async fn paced_slot(
        &self,
        platform: Platform,
        address: &str,
        caps: &Capabilities,
    ) -> Result<(), i64> {
        let now = self.now_ms();
        if let Err(free_at) = self.pacer.try_take(platform, address, caps, now) {
            let latest = now + MAX_PACING_WAIT.as_millis() as i64;
            let Some(at) = self.pacer.reserve_by(platform, address, caps, now, latest) else {
                return Err(free_at);
            };
            // The chat's own slot, reserved: waiting here holds up only this chat. Once
            // the wait is over the slot is ours, without asking the clock again (a
            // test's clock that stands still would otherwise keep us waiting).
            tokio::time::sleep(Duration::from_millis((at - now).max(0) as u64)).await;
        }
        Ok(())
    }

    /// A row whose step `sent` failed with `e`: retried later with backoff, or set aside for
    /// good. A visitor message that can never be delivered makes the responder unreachable
    /// (`hands_over`); a change to one already delivered does not.
    pub(super) async fn row_failed(
        &self,
        row: &OutboxRow,
        platform: Platform,
        caps: &Capabilities,
        e: ConnectorError,
        sent: usize,
        hands_over: bool,
    ) -> Result<RowOutcome, StoreError> {
        // Parts accepted in this pass started the count afresh (see `outbox_part_sent`).
        let attempts = if sent > row.parts_sent as usize {
            0
        } else {
            row.attempts
        };
        let delay = retry_delay(&e, attempts, caps.unreachable_hands_over);
        let outcome = if delay.is_some() { "retry" } else { "failed" };
        crate::metrics::delivery(&row.platform, outcome, e.kind());
        match delay {
            Some(wait) => {
                tracing::warn!(error = %e, part = sent, wait_ms = wait.as_millis() as u64, "delivery failed; will retry");
                let at = self.now_ms() + wait.as_millis() as i64;
                if let ConnectorError::RetryAfter(_) = e {
                    // Nothing else goes to this chat before then (notices included).
                    self.pacer.hold(platform, &row.address, at);
                }
                self.store.outbox_retry_at(row.seq, at).await?;
                Ok(RowOutcome::Later(at))
            }
            None => {
                tracing::error!(error = %e, part = sent, "delivery failed for good");
                self.set_aside(
                    DeadLetterSource::Outbox,
                    row.seq,
                    Some(&row.room_id),
                    &e.to_string(),
                    row.attempts + 1,
                )
                .await?;
                Ok(if hands_over {
                    RowOutcome::Unreachable
                } else {
                    RowOutcome::Delivered
                })
            }
        }
    }

    /// One part of an outbox row to its platform: text as text; a file fetched from the media
    /// repository first (a failing download is worth retrying, like a failing send). A file
    /// the platform does not carry, or larger than it takes (its declared
    /// `Capabilities::files`), is not sent: an upload the platform must refuse would only be
    /// retried or, refused for good, make the responder look unreachable.
    async fn deliver_one(
        &self,
        connector: &dyn Connector,
        delivery: &Delivery,
        index: usize,
        part: &str,
        address: &str,
    ) -> Result<PartSent, ConnectorError> {
        let Some(media) = &delivery.media else {
            return connector
                .deliver(delivery, index, part, address)
                .await
                .map(PartSent::Message);
        };
        let Some(limits) = connector.capabilities().files else {
            return self
                .deliver_link(connector, delivery, media, None, index, address)
                .await
                .unwrap_or(Ok(PartSent::FileRefused(FileRefusal::NotCarried)));
        };
        let uri = OwnedMxcUri::from(media.mxc.as_str());
        let (mimetype, bytes) = self.client.download_media(&uri).await.map_err(|e| {
            if e.is_transient() {
                ConnectorError::Transient(e.to_string())
            } else {
                ConnectorError::Permanent(e.to_string())
            }
        })?;
        let size = bytes.len() as u64;
        if size > limits.max_bytes {
            let refusal = FileRefusal::TooLarge {
                size,
                max: limits.max_bytes,
            };
            return self
                .deliver_link(connector, delivery, media, Some(size), index, address)
                .await
                .unwrap_or(Ok(PartSent::FileRefused(refusal)));
        }
        let attachment = Attachment {
            bytes,
            mimetype: media.mimetype.clone().or(mimetype),
            filename: media.filename.clone(),
            kind: media.kind,
        };
        match connector
            .deliver_file(delivery, part, attachment, address)
            .await
        {
            Err(ConnectorError::FileTooLarge(why)) => {
                // Smaller than the platform declared it takes, yet refused for its size.
                tracing::warn!(platform = connector.platform().as_str(), size, %why, "the platform refused a file for its size (413)");
                let refusal = FileRefusal::TooLarge {
                    size,
                    max: limits.max_bytes.min(size.saturating_sub(1)),
                };
                self.deliver_link(connector, delivery, media, Some(size), index, address)
                    .await
                    .unwrap_or(Ok(PartSent::FileRefused(refusal)))
            }
            other => other.map(PartSent::Message),
        }
    }

    /// A file the platform does not take, sent as a message with a link to it through
    /// Switchboard (`media_links.rs`) in its place, headed like the visitor's messages and
    /// with their caption; `None` where no link can be made (no public address configured),
    /// so the file is refused as before.
    async fn deliver_link(
        &self,
        connector: &dyn Connector,
        delivery: &Delivery,
        media: &MediaRef,
        size: Option<u64>,
        index: usize,
        address: &str,
    ) -> Option<Result<PartSent, ConnectorError>> {
        let expires = (self.now_ms() / 1000).max(0) as u64 + LINK_LIFETIME.as_secs();
        let url = self
            .media_links
            .as_ref()?
            .link(&media.mxc, &media.filename, expires)?;
        // Caption and name are cut so the whole text fits one message on any platform
        // (Discord's 2000 characters being the least): one part, with the link at its end.
        let caption = crate::format::truncate_chars(&delivery.body, 1000);
        let filename = crate::format::truncate_chars(&media.filename, 100);
        let mut body = if caption.trim() == media.filename.trim() {
            String::new()
        } else {
            format!("{caption}\n")
        };
        let size = size
            .map(|s| format!(" ({})", human_size(s)))
            .unwrap_or_default();
        body.push_str(&format!(
            "{filename}{size} is too large to attach on {}; download it here (the link works for {} days): {url}",
            connector.platform().display_name(),
            LINK_LIFETIME.as_secs() / 86_400,
        ));
        let text = Delivery {
            body,
            formatted_body: None,
            media: None,
            ..delivery.clone()
        };
        let part = connector.render(&text).swap_remove(0);
        Some(
            connector
                .deliver(&text, index, &part, address)
                .await
                .map(PartSent::Message),
        )
    }

    /// Waits for the next free slot of this chat on the connector's platform: for notices,
    /// offers and edits of offers, which are sent at once rather than queued. The outbox
    /// does not wait (see `drain_outbox`). The one worker waits here, so never longer than
    /// `NOTICE_PATIENCE`: a chat held longer (after a 429 with a long `retry_after`) is sent
    /// to at once, and the platform's refusal is handled as it was before pacing.
    pub(super) async fn wait_turn(&self, connector: &dyn Connector, address: &str) {
        let now = self.now_ms();
        let latest = now + NOTICE_PATIENCE.as_millis() as i64;
        let platform = connector.platform();
        let caps = connector.capabilities();
        match self.pacer.reserve_by(platform, address, &caps, now, latest) {
            Some(at) if at > now => {
                tokio::time::sleep(Duration::from_millis((at - now) as u64)).await;
            }
            Some(_) => {}
            None => tracing::debug!(
                platform = platform.as_str(),
                "chat busy past our patience; sending anyway"
            ),
        }
    }

    /// Runs `send`, one message (or edit) to `address` on the connector's platform, in that
    /// chat's turn. `send` is a future not yet polled, so nothing is sent before the turn.
    pub(super) async fn in_turn<T>(
        &self,
        connector: &dyn Connector,
        address: &str,
        send: impl std::future::Future<Output = T>,
    ) -> T {
        self.wait_turn(connector, address).await;
        send.await
    }
}

/// What became of one part the platform answered for.
enum PartSent {
    /// The platform took it as this message.
    Message(String),
    /// A file the platform does not take: not sent (see `deliver_one`).
    FileRefused(FileRefusal),
}

/// Why a visitor's file is not relayed to the responder's platform.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FileRefusal {
    /// The platform carries no files (`Capabilities::files` is `None`).
    NotCarried,
    /// Larger than the platform's `max_bytes`.
    TooLarge { size: u64, max: u64 },
}

impl FileRefusal {
    /// What the visitor is told in their room; the responder's platform is not named.
    fn to_visitor(self, filename: &str) -> String {
        match self {
            Self::NotCarried => format!(
                "Your file {filename} was not passed on: the responder cannot receive files here. Please describe it in a message instead."
            ),
            Self::TooLarge { size, max } => format!(
                "Your file {filename} was not passed on: it is {}, more than the {} the responder can receive.",
                human_size(size),
                human_size(max)
            ),
        }
    }

    /// What the responder is told where the file would have arrived.
    fn to_responder(self, alias: &str, filename: &str, platform: &str) -> String {
        match self {
            Self::NotCarried => format!(
                "{alias} sent a file, {filename}, which cannot be sent on {platform}; it was not passed on."
            ),
            Self::TooLarge { size, max } => format!(
                "{alias} sent a file, {filename} ({}), larger than {platform} takes ({}); it was not passed on.",
                human_size(size),
                human_size(max)
            ),
        }
    }
}

/// Records what just reached a platform. The responder has it now: were the record lost
/// to a store outage, the row would go out again and, on a platform that cannot tell
/// (Telegram has no idempotency key), the responder would get it twice. So a transient
/// store failure is retried here, holding up only this chat, for as long as
/// [`record_backoff`] allows. (Found by the crash bursts, `tests/e2e_chaos.rs`: PostgreSQL
/// killed under Switchboard doubled a Telegram message.)
pub(super) async fn record_sent<T, Fut>(record: impl Fn() -> Fut) -> Result<T, StoreError>
where
    Fut: Future<Output = Result<T, StoreError>>,
{
    let mut backoff = record_backoff();
    loop {
        match record().await {
            Err(e) if e.is_transient() => match backoff.next() {
                Some(wait) => {
                    tracing::warn!(error = %e, retry_in_ms = wait.as_millis() as u64, "the store did not take the record of a sent message; trying again, not resending");
                    tokio::time::sleep(wait).await;
                }
                None => return Err(e),
            },
            other => return other,
        }
    }
}

/// A size for people: bytes below a KiB, else KB or MB (of 1024), one decimal where needed.
fn human_size(bytes: u64) -> String {
    let scaled = |unit: f64, name: &str| {
        let n = bytes as f64 / unit;
        let text = format!("{n:.1}");
        format!("{} {name}", text.strip_suffix(".0").unwrap_or(&text))
    };
    match bytes {
        1 => "1 byte".into(),
        0..1024 => format!("{bytes} bytes"),
        1024..1_048_576 => scaled(1024.0, "KB"),
        _ => scaled(1_048_576.0, "MB"),
    }
}

/// What became of one outbox row in one pass.
pub(super) enum RowOutcome {
    /// Every part went out (or the row was set aside).
    Delivered,
    /// To be tried again at this time (unix ms).
    Later(i64),
    /// Failed for good: the responder counts as unreachable.
    Unreachable,
}

/// The longest a chat's lane waits for its next paced slot before leaving the row for later.
const MAX_PACING_WAIT: Duration = Duration::from_secs(2);

/// How long a service message to a responder may wait for pacing and retries.
pub(super) const NOTICE_PATIENCE: Duration = Duration::from_secs(5);

/// Transient delivery failures are retried this many times before the responder counts as
/// unreachable (about four minutes of backoff).
const DELIVERY_ATTEMPTS: i64 = 12;

/// How long to wait before retrying a delivery that failed with `error` after `attempts`
/// earlier failures, or `None` to give up, which hands the conversation over. A platform
/// whose connector declares that unreachability does not hand over (`may_give_up` false:
/// Matrix, where the platform is the homeserver itself) is retried as long as it takes. Pure,
/// so the "unreachable after retries" trigger is tested without waiting.
/// The platform's capabilities as they apply to `delivery`'s recipient. A delivery to an
/// initiator is retried for as long as their platform fails for a passing reason: giving up
/// would end their conversation (see `drain_chat`), where a responder is merely replaced.
fn for_recipient(caps: Capabilities, delivery: &Delivery) -> Capabilities {
    if delivery.to_initiator {
        Capabilities {
            unreachable_hands_over: false,
            ..caps
        }
    } else {
        caps
    }
}

pub fn retry_delay(error: &ConnectorError, attempts: i64, may_give_up: bool) -> Option<Duration> {
    match error {
        // The platform said when; a rate limit is not a failure of the responder.
        ConnectorError::RetryAfter(after) => Some(*after),
        ConnectorError::Transient(_) if attempts < DELIVERY_ATTEMPTS || !may_give_up => Some(
            Duration::from_millis(500 * 2u64.pow(attempts.clamp(0, 6) as u32)),
        ),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The record of a sent message outlasts a store outage (retried, never given up while
    /// the failures are transient and the backoff lasts) and a lasting fault is not retried.
    #[tokio::test(start_paused = true)]
    async fn a_sent_part_is_recorded_once_the_store_is_back() {
        let calls = std::sync::atomic::AtomicU32::new(0);
        let recorded = record_sent(|| async {
            match calls.fetch_add(1, Ordering::SeqCst) {
                0..5 => Err(StoreError::Database(sqlx::Error::PoolTimedOut)),
                n => Ok(n),
            }
        })
        .await;
        assert_eq!(recorded.unwrap(), 5, "tried until the store took it");

        let calls = std::sync::atomic::AtomicU32::new(0);
        let refused: Result<(), _> = record_sent(|| async {
            calls.fetch_add(1, Ordering::SeqCst);
            Err(StoreError::Corrupt {
                table: "outbox",
                detail: "unreadable".into(),
            })
        })
        .await;
        assert!(refused.is_err());
        assert_eq!(
            calls.load(Ordering::SeqCst),
            1,
            "a lasting fault is not retried"
        );

        // An outage longer than the backoff ends in the error, after minutes, not at once.
        let started = tokio::time::Instant::now();
        let gone: Result<(), _> =
            record_sent(|| async { Err(StoreError::Database(sqlx::Error::PoolTimedOut)) }).await;
        assert!(gone.is_err());
        assert!(
            started.elapsed() >= Duration::from_secs(300),
            "{:?}",
            started.elapsed()
        );
    }

    #[test]
    fn file_sizes_read_as_people_write_them() {
        assert_eq!(human_size(1), "1 byte");
        assert_eq!(human_size(2), "2 bytes");
        assert_eq!(human_size(1536), "1.5 KB");
        assert_eq!(human_size(50 * 1024 * 1024), "50 MB");
        assert_eq!(human_size(60 * 1024 * 1024 + 300 * 1024), "60.3 MB");
    }

    #[test]
    fn transient_failures_back_off_then_give_up() {
        let e = ConnectorError::Transient("connection reset".into());
        let waits: Vec<_> = (0..DELIVERY_ATTEMPTS)
            .map(|n| retry_delay(&e, n, true).map(|d| d.as_millis()))
            .collect();
        assert_eq!(
            waits,
            [
                500, 1000, 2000, 4000, 8000, 16000, 32000, 32000, 32000, 32000, 32000, 32000
            ]
            .map(Some)
        );
        assert_eq!(
            retry_delay(&e, DELIVERY_ATTEMPTS, true),
            None,
            "the twelfth failure makes the responder unreachable"
        );
    }

    #[test]
    fn a_platform_that_is_the_homeserver_is_waited_for_however_long() {
        let e = ConnectorError::Transient("homeserver unreachable".into());
        assert_eq!(
            retry_delay(&e, DELIVERY_ATTEMPTS * 100, false),
            Some(Duration::from_millis(32_000))
        );
        let refused = ConnectorError::Permanent("M_FORBIDDEN".into());
        assert_eq!(retry_delay(&refused, 0, false), None);
    }

    #[test]
    fn permanent_failures_give_up_at_once_and_rate_limits_never_do() {
        let blocked = ConnectorError::Permanent("bot was blocked by the user".into());
        assert_eq!(retry_delay(&blocked, 0, true), None);
        let limited = ConnectorError::RetryAfter(Duration::from_secs(7));
        assert_eq!(retry_delay(&limited, 0, true), Some(Duration::from_secs(7)));
        assert_eq!(
            retry_delay(&limited, 1000, true),
            Some(Duration::from_secs(7))
        );
    }
}
