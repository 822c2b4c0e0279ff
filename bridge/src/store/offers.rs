//! Offers and assignments: which responders a conversation was offered to, who holds it, and
//! where (platform, address, thread).

use sqlx::Row;

use super::{Arg, Store, StoreError};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferRow {
    pub id: i64,
    pub room_id: String,
    pub responder_id: String,
    pub platform: String,
    pub address: String,
    pub state: String,
    pub remote_message_id: Option<String>,
    /// When the offer was made (unix ms), or made again (see [`Store::reopen_offer`]): tells
    /// one round of an offer from the next.
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentRow {
    pub room_id: String,
    pub responder_id: String,
    pub platform: String,
    pub address: String,
    pub ghost_user_id: String,
    pub state: String,
}

/// One entry of a conversation's assignment history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssignmentHistory {
    pub assignment: AssignmentRow,
    /// When they took it (unix ms).
    pub started_at: i64,
    /// When it was handed over or ended; `None` while they hold it.
    pub ended_at: Option<i64>,
    /// Why: the hand-off reason, or who ended the conversation.
    pub end_reason: Option<String>,
}

const OFFER_COLUMNS: &str =
    "id, room_id, responder_id, platform, address, state, remote_message_id, created_at";
const ASSIGNMENT_COLUMNS: &str = "room_id, responder_id, platform, address, ghost_user_id, state";

/// A conversation and its active assignments, each with its holder's thread (see
/// [`Store::conversation_with_holders`]).
pub type ConversationWithHolders = (
    crate::conversation::Conversation,
    Vec<(AssignmentRow, Option<String>)>,
);

fn offer_from_row(r: &sqlx::any::AnyRow) -> Result<OfferRow, StoreError> {
    Ok(OfferRow {
        id: r.try_get("id")?,
        room_id: r.try_get("room_id")?,
        responder_id: r.try_get("responder_id")?,
        platform: r.try_get("platform")?,
        address: r.try_get("address")?,
        state: r.try_get("state")?,
        remote_message_id: r.try_get("remote_message_id")?,
        created_at: r.try_get("created_at")?,
    })
}

fn assignment_from_row(r: &sqlx::any::AnyRow) -> Result<AssignmentRow, StoreError> {
    Ok(AssignmentRow {
        room_id: r.try_get("room_id")?,
        responder_id: r.try_get("responder_id")?,
        platform: r.try_get("platform")?,
        address: r.try_get("address")?,
        ghost_user_id: r.try_get("ghost_user_id")?,
        state: r.try_get("state")?,
    })
}

impl Store {
    /// Creates an open offer, or returns the existing one for this room and responder.
    pub async fn create_offer(
        &self,
        room_id: &str,
        responder_id: &str,
        platform: &str,
        address: &str,
    ) -> Result<OfferRow, StoreError> {
        sqlx::query(
            "INSERT INTO offers (room_id, responder_id, platform, address, state, created_at)
             VALUES ($1, $2, $3, $4, 'open', $5)
             ON CONFLICT (room_id, responder_id, platform, address) DO NOTHING",
        )
        .bind(room_id)
        .bind(responder_id)
        .bind(platform)
        .bind(address)
        .bind(self.now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        let row = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers
             WHERE room_id = $1 AND responder_id = $2 AND platform = $3 AND address = $4"
        ))
        .bind(room_id)
        .bind(responder_id)
        .bind(platform)
        .bind(address)
        .fetch_one(&self.pool)
        .await?;
        offer_from_row(&row)
    }

    pub async fn offer(&self, id: i64) -> Result<Option<OfferRow>, StoreError> {
        let row = sqlx::query(&format!("SELECT {OFFER_COLUMNS} FROM offers WHERE id = $1"))
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(offer_from_row).transpose()
    }

    /// Open offers made before `before_ms`, with the topic of their conversation and when
    /// they were made (unix ms), oldest first. Timers live in the database, so one due while Switchboard was down fires when it
    /// is back.
    pub async fn open_offers_before(
        &self,
        before_ms: i64,
    ) -> Result<Vec<(OfferRow, String, i64)>, StoreError> {
        let rows = sqlx::query(
            "SELECT o.id, o.room_id, o.responder_id, o.platform, o.address, o.state, o.remote_message_id, c.topic, o.created_at
             FROM offers o JOIN conversations c ON c.room_id = o.room_id
             WHERE o.state = 'open' AND o.created_at < $1 ORDER BY o.created_at, o.id",
        )
        .bind(before_ms)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok((
                    offer_from_row(r)?,
                    r.try_get("topic")?,
                    r.try_get("created_at")?,
                ))
            })
            .collect()
    }

    /// The offer whose remote handle (Telegram message, Matrix relay room) this is.
    pub async fn offer_by_handle(
        &self,
        platform: &str,
        handle: &str,
    ) -> Result<Option<OfferRow>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers WHERE platform = $1 AND remote_message_id = $2 ORDER BY id DESC LIMIT 1"
        ))
        .bind(platform)
        .bind(handle)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(offer_from_row).transpose()
    }

    pub async fn offers_for_room(&self, room_id: &str) -> Result<Vec<OfferRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers WHERE room_id = $1 ORDER BY id"
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(offer_from_row).collect()
    }

    /// One chat's open offers that have not gone out yet, oldest first. An offer is sent in
    /// the lane of the chat it goes to, in that chat's paced turn, not by routing itself.
    pub async fn unsent_offers_to(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<Vec<OfferRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {OFFER_COLUMNS} FROM offers
             WHERE state = 'open' AND remote_message_id IS NULL AND platform = $1 AND address = $2
             ORDER BY id"
        ))
        .bind(platform)
        .bind(address)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(offer_from_row).collect()
    }

    /// The chats (platform, address) with an open offer that has not gone out yet.
    pub async fn unsent_offer_chats(&self) -> Result<Vec<(String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT DISTINCT platform, address FROM offers
             WHERE state = 'open' AND remote_message_id IS NULL ORDER BY platform, address",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("platform")?, r.try_get("address")?)))
            .collect()
    }

    pub async fn set_offer_message(
        &self,
        id: i64,
        remote_message_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query("UPDATE offers SET remote_message_id = $1 WHERE id = $2")
            .bind(remote_message_id)
            .bind(id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// Moves an offer from `from` to `to`; false if it was not in `from` any more.
    pub async fn transition_offer(
        &self,
        id: i64,
        from: &str,
        to: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE offers SET state = $1 WHERE id = $2 AND state = $3")
            .bind(to)
            .bind(id)
            .bind(from)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The atomic claim: exactly one caller moves a waiting conversation to active, whichever
    /// platform its accept came from.
    pub async fn claim_conversation(&self, room_id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE conversations SET state = 'active', updated_at = $1 WHERE room_id = $2 AND state IN ('queued', 'offered', 'transferring')",
        )
        .bind(self.now_ms())
        .bind(room_id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn upsert_assignment(&self, a: &AssignmentRow) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO assignments (room_id, responder_id, platform, address, ghost_user_id, state, created_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7)
             ON CONFLICT (room_id, responder_id) DO UPDATE SET state = excluded.state,
                 platform = excluded.platform, address = excluded.address,
                 ghost_user_id = excluded.ghost_user_id, created_at = excluded.created_at,
                 ended_at = NULL, end_reason = NULL
             WHERE assignments.state <> excluded.state",
        )
        .bind(&a.room_id)
        .bind(&a.responder_id)
        .bind(&a.platform)
        .bind(&a.address)
        .bind(&a.ghost_user_id)
        .bind(&a.state)
        .bind(self.now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    pub async fn active_assignments_for_room(
        &self,
        room_id: &str,
    ) -> Result<Vec<AssignmentRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments WHERE room_id = $1 AND state = 'active'"
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment_from_row).collect()
    }

    /// The conversation's active assignments, each with the handle of the offer its holder
    /// accepted (`remote_message_id`: a Matrix responder's relay room), in one read.
    pub async fn active_assignments_with_threads(
        &self,
        room_id: &str,
    ) -> Result<Vec<(AssignmentRow, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.room_id, a.responder_id, a.platform, a.address, a.ghost_user_id, a.state,
                    o.remote_message_id
             FROM assignments a
             LEFT JOIN offers o ON o.room_id = a.room_id AND o.responder_id = a.responder_id
                  AND o.platform = a.platform AND o.address = a.address AND o.state = 'accepted'
             WHERE a.room_id = $1 AND a.state = 'active'",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((assignment_from_row(r)?, r.try_get("remote_message_id")?)))
            .collect()
    }

    /// The conversation in `room_id` with what [`Self::active_assignments_with_threads`]
    /// gives, in one read: what a lane needs before it relays a visitor's messages.
    pub async fn conversation_with_holders(
        &self,
        room_id: &str,
    ) -> Result<Option<ConversationWithHolders>, StoreError> {
        // Each row is the conversation with one holder (or, held by no one, with NULLs).
        let rows = self
            .hot_read(
                "SELECT c.room_id, c.topic, c.visitor_user_id, c.visitor_alias, c.state,
                        c.created_at, c.language, a.responder_id, a.platform, a.address,
                        a.ghost_user_id, a.state AS assignment_state, o.remote_message_id
                 FROM conversations c
                 LEFT JOIN assignments a ON a.room_id = c.room_id AND a.state = 'active'
                 LEFT JOIN offers o ON o.room_id = a.room_id AND o.responder_id = a.responder_id
                      AND o.platform = a.platform AND o.address = a.address
                      AND o.state = 'accepted'
                 WHERE c.room_id = $1",
                &[Arg::Text(room_id)],
                |r| {
                    let holder = match r.opt_text("responder_id")? {
                        Some(responder_id) => Some((
                            AssignmentRow {
                                room_id: room_id.to_owned(),
                                responder_id,
                                platform: r.text("platform")?,
                                address: r.text("address")?,
                                ghost_user_id: r.text("ghost_user_id")?,
                                state: r.text("assignment_state")?,
                            },
                            r.opt_text("remote_message_id")?,
                        )),
                        None => None,
                    };
                    Ok((super::conversation_from_row(r)?, holder))
                },
            )
            .await?;
        let mut rows = rows.into_iter();
        let Some((conversation, first)) = rows.next() else {
            return Ok(None);
        };
        let holders = first
            .into_iter()
            .chain(rows.filter_map(|(_, h)| h))
            .collect();
        Ok(Some((conversation, holders)))
    }

    /// Makes a finished offer (taken, declined, withdrawn, expired, or accepted by a holder
    /// who has since handed the conversation over) open again, as a new round: its message is
    /// forgotten so a new one goes out. For a conversation handed to this responder by name.
    /// False if it was open already.
    pub async fn reopen_offer(&self, id: i64) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE offers SET state = 'open', remote_message_id = NULL, created_at = $1
             WHERE id = $2 AND state <> 'open'",
        )
        .bind(self.now_ms())
        .bind(id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() > 0)
    }

    /// Where conversations are held on `platform` now: each active assignment's address and
    /// the handle of the offer it was accepted by (a Discord thread, a Telegram offer message),
    /// oldest handle first.
    pub async fn held_places(
        &self,
        platform: &str,
    ) -> Result<Vec<(String, Option<String>)>, StoreError> {
        let rows = sqlx::query(
            "SELECT a.address, o.remote_message_id
             FROM assignments a
             LEFT JOIN offers o ON o.room_id = a.room_id AND o.responder_id = a.responder_id
                  AND o.platform = a.platform AND o.address = a.address AND o.state = 'accepted'
             WHERE a.platform = $1 AND a.state = 'active'
             ORDER BY o.id",
        )
        .bind(platform)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("address")?, r.try_get("remote_message_id")?)))
            .collect()
    }

    /// Every active assignment with when it started (unix ms), oldest first.
    /// Ends an active assignment: `state` is `transferred` or `ended`, `reason` says why. Only
    /// an active one changes, so handling the same hand-off twice records it once.
    pub async fn finish_assignment(
        &self,
        room_id: &str,
        responder_id: &str,
        state: &str,
        reason: &str,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE assignments SET state = $1, ended_at = $2, end_reason = $3
             WHERE room_id = $4 AND responder_id = $5 AND state = 'active'",
        )
        .bind(state)
        .bind(self.now_ms())
        .bind(reason)
        .bind(room_id)
        .bind(responder_id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Who held a conversation, when, and why they stopped, oldest first.
    pub async fn assignment_history(
        &self,
        room_id: &str,
    ) -> Result<Vec<AssignmentHistory>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ASSIGNMENT_COLUMNS}, created_at, ended_at, end_reason FROM assignments
             WHERE room_id = $1 ORDER BY created_at, responder_id"
        ))
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AssignmentHistory {
                    assignment: assignment_from_row(r)?,
                    started_at: r.try_get("created_at")?,
                    ended_at: r.try_get("ended_at")?,
                    end_reason: r.try_get("end_reason")?,
                })
            })
            .collect()
    }

    pub async fn all_active_assignments(&self) -> Result<Vec<(AssignmentRow, i64)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ASSIGNMENT_COLUMNS}, created_at FROM assignments WHERE state = 'active' ORDER BY created_at"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((assignment_from_row(r)?, r.try_get("created_at")?)))
            .collect()
    }

    /// A responder's active conversations on one platform address, oldest first.
    pub async fn active_assignments_for_address(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<Vec<AssignmentRow>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {ASSIGNMENT_COLUMNS} FROM assignments
             WHERE platform = $1 AND address = $2 AND state = 'active' ORDER BY created_at, room_id"
        ))
        .bind(platform)
        .bind(address)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(assignment_from_row).collect()
    }
}
