//! The outbox: visitor messages on their way to responders on other platforms, rendered into
//! the platform's parts once, sent part by part in order per conversation, paced as each
//! connector declares, retried with backoff, and never sent twice once a part went out.

mod files;
mod retry;

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use tracing::Instrument;

use super::{Bridge, lanes::LaneKey};
use crate::{
    connector::{Connector, Delivery, MediaRef, Revision},
    conversation::Conversation,
    store::{AssignmentRow, DeadLetterSource, OutboxRow, StoreError},
};
use files::PartSent;
use retry::for_recipient;
pub(super) use retry::record_sent;

/// The most visitor messages one batched platform message carries (email: one mail).
const MAX_BATCH: usize = 50;

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
