//! The routing milestones of each conversation (first offer, first accept, first reply), set
//! once, and what a responder's reply answers: the times the routing service levels are
//! measured by (`metrics.rs`, and the per-topic report).

use sqlx::Row;

use super::{Store, StoreError};
use crate::conversation::SenderRole;

/// A milestone in a conversation's routing, each reached once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Milestone {
    FirstOffer,
    Accepted,
    FirstReply,
}

impl Milestone {
    fn column(self) -> &'static str {
        match self {
            Milestone::FirstOffer => "first_offer_at",
            Milestone::Accepted => "accepted_at",
            Milestone::FirstReply => "first_reply_at",
        }
    }
}

impl Store {
    /// Records that `room` reached `milestone` at `at` (unix ms) if it had not yet, and then
    /// answers when the conversation started; `None` if it had reached it before (or there is
    /// no such conversation). An accept also records the responder's platform, which the
    /// conversation's service levels are reported under.
    pub async fn reach_milestone(
        &self,
        room_id: &str,
        milestone: Milestone,
        at: i64,
        platform: &str,
    ) -> Result<Option<i64>, StoreError> {
        let column = milestone.column();
        let also = if milestone == Milestone::Accepted {
            ", responder_platform = $3"
        } else {
            ""
        };
        let sql = format!(
            "UPDATE conversations SET {column} = $2{also}
             WHERE room_id = $1 AND {column} IS NULL RETURNING created_at"
        );
        let mut query = sqlx::query(&sql).bind(room_id).bind(at);
        if milestone == Milestone::Accepted {
            query = query.bind(platform);
        }
        let row = query.fetch_optional(&mut *self.writer().await?).await?;
        Ok(row.map(|r| r.try_get("created_at")).transpose()?)
    }

    /// What a responder's reply written now answers, read before it is recorded: the
    /// conversation's topic and start, whether a responder replied before, and the oldest of
    /// the visitor's messages since a responder last wrote (as the homeserver stamped it;
    /// `None` if the visitor wrote nothing since). One read; `None` without the conversation.
    pub async fn reply_context(&self, room_id: &str) -> Result<Option<ReplyContext>, StoreError> {
        let row = sqlx::query(
            "SELECT c.topic, c.created_at, c.first_reply_at,
                    (SELECT MIN(m.origin_server_ts) FROM messages m
                     WHERE m.room_id = c.room_id AND m.sender_role = $2
                       AND m.origin_server_ts > COALESCE(
                           (SELECT MAX(r.origin_server_ts) FROM messages r
                            WHERE r.room_id = c.room_id AND r.sender_role = $3), 0)
                    ) AS waiting_since
             FROM conversations c WHERE c.room_id = $1",
        )
        .bind(room_id)
        .bind(SenderRole::Visitor.as_str())
        .bind(SenderRole::Responder.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|r| {
            Ok(ReplyContext {
                topic: r.try_get("topic")?,
                created_at: r.try_get("created_at")?,
                replied_before: r.try_get::<Option<i64>, _>("first_reply_at")?.is_some(),
                waiting_since: r.try_get("waiting_since")?,
            })
        })
        .transpose()
    }
}

/// See [`Store::reply_context`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyContext {
    pub topic: String,
    pub created_at: i64,
    pub replied_before: bool,
    pub waiting_since: Option<i64>,
}

/// A conversation as the service-level report reads it (see `crate::service_levels`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelInput {
    pub topic: String,
    /// The platform of the responder who first accepted it; `None` if nobody did.
    pub platform: Option<String>,
    /// That responder, whose working hours the wait is measured in.
    pub responder_id: Option<String>,
    pub created_at: i64,
    pub first_reply_at: Option<i64>,
    /// When it closed, if it did (the wait of one never answered ends there).
    pub closed_at: Option<i64>,
}

impl Store {
    /// The conversations started in `[from, to)` (unix ms), for the service-level report.
    pub async fn level_inputs(&self, from: i64, to: i64) -> Result<Vec<LevelInput>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.topic, c.responder_platform, c.created_at, c.first_reply_at, c.state,
                    c.updated_at,
                    (SELECT a.responder_id FROM assignments a WHERE a.room_id = c.room_id
                     ORDER BY a.created_at LIMIT 1) AS responder_id
             FROM conversations c WHERE c.created_at >= $1 AND c.created_at < $2
             ORDER BY c.created_at",
        )
        .bind(from)
        .bind(to)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let state: String = r.try_get("state")?;
                Ok(LevelInput {
                    topic: r.try_get("topic")?,
                    platform: r.try_get("responder_platform")?,
                    responder_id: r.try_get("responder_id")?,
                    created_at: r.try_get("created_at")?,
                    first_reply_at: r.try_get("first_reply_at")?,
                    closed_at: if state == "closed" {
                        Some(r.try_get("updated_at")?)
                    } else {
                        None
                    },
                })
            })
            .collect()
    }
}
