//! Dead letters: work that never succeeds, set aside with its reason so its conversation goes
//! on, listed for operators and retried on request.
//!
//! A dead letter points at the row its work came from (`source`, `source_seq`). Setting aside
//! and retrying each change the dead letter and that row in one transaction, so the row is
//! never both set aside and pending, nor lost between the two.

use serde::Serialize;
use sqlx::Row;

use super::{Store, StoreError};

/// At most this many characters of a reason are kept: enough for any error message, not a
/// place to store payloads.
pub const MAX_REASON_CHARS: usize = 1000;

/// Where a dead letter's work came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeadLetterSource {
    /// An event the homeserver pushed (table `inbox`).
    Inbox,
    /// An event from a remote platform, e.g. a Telegram update (table `remote_inbox`).
    Remote,
    /// A delivery to a responder's platform (table `outbox`).
    Outbox,
}

impl DeadLetterSource {
    pub const ALL: [DeadLetterSource; 3] = [Self::Inbox, Self::Remote, Self::Outbox];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Inbox => "inbox",
            Self::Remote => "remote",
            Self::Outbox => "outbox",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|source| source.as_str() == s)
    }

    /// The statement that takes the source row out of its queue: the state it is left in
    /// when handled (inbox, remote) or given up on (outbox), so it is not picked again.
    fn set_aside_sql(self) -> &'static str {
        match self {
            Self::Inbox => "UPDATE inbox SET processed_at = $1 WHERE seq = $2",
            Self::Remote => "UPDATE remote_inbox SET processed_at = $1 WHERE seq = $2",
            Self::Outbox => "UPDATE outbox SET failed_at = $1 WHERE seq = $2",
        }
    }

    /// The statement that puts the source row back in its queue (`$1`: the row, `$2`: now).
    /// An outbox row starts over with no attempts and is due at once; the parts it already
    /// delivered stay delivered (`parts_sent` is kept), so a retry sends only what is missing.
    fn retry_sql(self) -> &'static str {
        match self {
            Self::Inbox => "UPDATE inbox SET processed_at = NULL WHERE seq = $1",
            Self::Remote => "UPDATE remote_inbox SET processed_at = NULL WHERE seq = $1",
            Self::Outbox => {
                "UPDATE outbox SET failed_at = NULL, attempts = 0, next_attempt_at = $2
                 WHERE seq = $1"
            }
        }
    }

    fn table(self) -> &'static str {
        match self {
            Self::Inbox => "inbox",
            Self::Remote => "remote_inbox",
            Self::Outbox => "outbox",
        }
    }
}

impl std::fmt::Display for DeadLetterSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One piece of work set aside. `reason` is error text, never the work's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct DeadLetter {
    pub id: i64,
    pub source: DeadLetterSource,
    pub source_seq: i64,
    pub room_id: Option<String>,
    pub reason: String,
    pub attempts: i64,
    /// Milliseconds since the Unix epoch.
    pub created_at: i64,
}

const COLUMNS: &str = "id, source, source_seq, room_id, reason, attempts, created_at";

fn row_from(r: &sqlx::any::AnyRow) -> Result<DeadLetter, StoreError> {
    let source: String = r.try_get("source")?;
    Ok(DeadLetter {
        id: r.try_get("id")?,
        source: DeadLetterSource::parse(&source).ok_or_else(|| StoreError::Corrupt {
            table: "dead_letters",
            detail: format!("unknown source {source:?}"),
        })?,
        source_seq: r.try_get("source_seq")?,
        room_id: r.try_get("room_id")?,
        reason: r.try_get("reason")?,
        attempts: r.try_get("attempts")?,
        created_at: r.try_get("created_at")?,
    })
}

/// The reason as stored: at most [`MAX_REASON_CHARS`] characters, cut on a character boundary.
fn stored_reason(reason: &str) -> String {
    match reason.char_indices().nth(MAX_REASON_CHARS) {
        Some((cut, _)) => format!("{}…", &reason[..cut]),
        None => reason.to_owned(),
    }
}

impl Store {
    /// Sets the work of row `seq` of `source` aside with `reason` (error text only: never put
    /// the event's content here) after `attempts` tries, and takes that row out of its queue,
    /// in one transaction. Setting the same row aside again updates the reason and attempts.
    /// Returns the dead letter's id; [`StoreError::NoSuchRow`] if the source row does not
    /// exist (nothing is recorded then).
    pub async fn set_aside(
        &self,
        source: DeadLetterSource,
        seq: i64,
        room_id: Option<&str>,
        reason: &str,
        attempts: i64,
    ) -> Result<i64, StoreError> {
        let now = self.now_ms();
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;
        // The write comes first: a SQLite transaction that reads before writing may find
        // another writer in its way and fail instead of waiting.
        let id: i64 = sqlx::query(
            "INSERT INTO dead_letters (source, source_seq, room_id, reason, attempts, created_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (source, source_seq)
             DO UPDATE SET reason = excluded.reason, attempts = excluded.attempts,
                           room_id = excluded.room_id
             RETURNING id",
        )
        .bind(source.as_str())
        .bind(seq)
        .bind(room_id)
        .bind(stored_reason(reason))
        .bind(attempts)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
        .try_get("id")?;
        let marked = sqlx::query(source.set_aside_sql())
            .bind(now)
            .bind(seq)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if marked == 0 {
            tx.rollback().await?;
            return Err(StoreError::NoSuchRow {
                table: source.table(),
                seq,
            });
        }
        tx.commit().await?;
        Ok(id)
    }

    /// Dead letters, newest first.
    pub async fn dead_letters(&self, limit: i64) -> Result<Vec<DeadLetter>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM dead_letters ORDER BY created_at DESC, id DESC LIMIT $1"
        ))
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(row_from).collect()
    }

    /// Removes dead letter `id` and puts its source row back in its queue, in one
    /// transaction: inbox and remote events become unprocessed, an outbox row pending again
    /// with no attempts and due now. Returns what was removed; `None` if there is no such
    /// dead letter. A running worker picks the row up when woken or at its next look.
    pub async fn retry_dead_letter(&self, id: i64) -> Result<Option<DeadLetter>, StoreError> {
        let mut writer = self.writer().await?;
        let mut tx = sqlx::Connection::begin(&mut *writer).await?;
        let row = sqlx::query(&format!(
            "DELETE FROM dead_letters WHERE id = $1 RETURNING {COLUMNS}"
        ))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(letter) = row.as_ref().map(row_from).transpose()? else {
            return Ok(None);
        };
        let mut retry = sqlx::query(letter.source.retry_sql()).bind(letter.source_seq);
        if letter.source == DeadLetterSource::Outbox {
            retry = retry.bind(self.now_ms());
        }
        retry.execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(letter))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_round_trip_through_their_names() {
        for source in DeadLetterSource::ALL {
            assert_eq!(DeadLetterSource::parse(source.as_str()), Some(source));
            assert_eq!(
                serde_json::to_value(source).unwrap(),
                serde_json::json!(source.as_str())
            );
        }
        assert_eq!(DeadLetterSource::parse("room_posts"), None);
    }

    #[test]
    fn long_reasons_are_cut_on_a_character_boundary() {
        assert_eq!(stored_reason("short"), "short");
        let long = "é".repeat(MAX_REASON_CHARS + 5);
        let stored = stored_reason(&long);
        assert_eq!(stored.chars().count(), MAX_REASON_CHARS + 1);
        assert!(stored.ends_with('…'));
    }
}
