//! Timing the routing service levels as conversations reach them: the first offer, the first
//! accept, the first reply, and every wait a reply ends (histograms in `metrics.rs`, by topic
//! and the responder's platform). Each milestone is stored once (`store/service_levels.rs`),
//! so a retried step is not timed twice.

use super::Bridge;
use crate::{
    conversation::Conversation,
    metrics::{self, Slo},
    store::{Milestone, ReplyContext, StoreError},
};

impl Bridge {
    /// A topic as a metric label: a configured topic's ID, else `other` (a topic since
    /// removed from the configuration, or anything else that never should be a series).
    pub(super) fn topic_label(&self, topic: &str) -> String {
        if self.config.topic(topic).is_some() {
            topic.to_owned()
        } else {
            "other".to_owned()
        }
    }

    /// Records that `conversation` reached `milestone` with a responder on `platform` and,
    /// the first time only, observes how long after its start that was.
    pub(super) async fn milestone(
        &self,
        conversation: &Conversation,
        milestone: Milestone,
        platform: &str,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        if let Some(started) = self
            .store
            .reach_milestone(&conversation.room_id, milestone, now, platform)
            .await?
        {
            let slo = match milestone {
                Milestone::FirstOffer => Slo::TimeToOffer,
                Milestone::Accepted => Slo::TimeToAccept,
                Milestone::FirstReply => Slo::TimeToFirstReply,
            };
            metrics::slo(
                slo,
                &self.topic_label(&conversation.topic),
                platform,
                now - started,
            );
        }
        Ok(())
    }

    /// A responder on `platform` replied in `room`, given what the reply answers (read
    /// before the reply was recorded): the first reply's milestone, and the visitor's wait
    /// it ends.
    pub(super) async fn replied(
        &self,
        room: &str,
        platform: &str,
        before: ReplyContext,
    ) -> Result<(), StoreError> {
        let now = self.now_ms();
        let topic = self.topic_label(&before.topic);
        if !before.replied_before
            && let Some(started) = self
                .store
                .reach_milestone(room, Milestone::FirstReply, now, platform)
                .await?
        {
            metrics::slo(Slo::TimeToFirstReply, &topic, platform, now - started);
        }
        if let Some(since) = before.waiting_since {
            metrics::slo(Slo::ReplyWait, &topic, platform, now - since);
        }
        Ok(())
    }
}
