//! Store tables for the responder register and routing: responders (seeded from the
//! configuration, edited by operators), round-robin cursors per topic, and load per responder.

use std::collections::HashMap;

use serde::{Serialize, de::DeserializeOwned};
use sqlx::{Row, any::AnyRow};

use super::{AssignmentRow, Store, StoreError};
use crate::responder::{Responder, ResponderStatus};

/// `source` of a responder seeded from the configuration file; start-up may overwrite it.
pub const SOURCE_CONFIG: &str = "config";
/// `source` of a responder an operator created or edited (admin API, CLI); start-up seeding
/// leaves it alone.
pub const SOURCE_ADMIN: &str = "admin";

const RESPONDER_COLUMNS: &str = "id, display_name, pseudonym, topics_json, languages_json, \
     timezone, hours_json, max_concurrent, status, contacts_json";

/// A responder's list-valued fields as stored (JSON text).
struct JsonColumns {
    topics: String,
    languages: String,
    hours: String,
    contacts: String,
}

fn to_json<T: Serialize>(value: &T) -> String {
    // Vec<String>, BTreeMap<String, Vec<String>> and Vec<Contact> always serialize.
    serde_json::to_string(value).expect("plain data serializes to JSON")
}

impl JsonColumns {
    fn of(r: &Responder) -> Self {
        Self {
            topics: to_json(&r.topics),
            languages: to_json(&r.languages),
            hours: to_json(&r.hours),
            contacts: to_json(&r.contacts),
        }
    }
}

fn json_column<T: DeserializeOwned>(r: &AnyRow, column: &str) -> Result<T, StoreError> {
    let text: String = r.try_get(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt {
        table: "responders",
        detail: format!("{column}: {e}"),
    })
}

fn responder_from_row(r: &AnyRow) -> Result<Responder, StoreError> {
    let status: String = r.try_get("status")?;
    Ok(Responder {
        id: r.try_get("id")?,
        display_name: r.try_get("display_name")?,
        pseudonym: r.try_get("pseudonym")?,
        topics: json_column(r, "topics_json")?,
        languages: json_column(r, "languages_json")?,
        timezone: r.try_get("timezone")?,
        hours: json_column(r, "hours_json")?,
        max_concurrent: r.try_get("max_concurrent")?,
        status: ResponderStatus::parse(&status).ok_or_else(|| StoreError::Corrupt {
            table: "responders",
            detail: format!("unknown status {status:?}"),
        })?,
        contacts: json_column(r, "contacts_json")?,
    })
}

impl Store {
    /// Adds a responder. Returns false, changing nothing, if one with this id exists.
    pub async fn insert_responder(&self, r: &Responder, source: &str) -> Result<bool, StoreError> {
        let json = JsonColumns::of(r);
        let now = self.now_ms();
        let done = sqlx::query(
            "INSERT INTO responders (id, display_name, pseudonym, topics_json, languages_json,
                 timezone, hours_json, max_concurrent, status, contacts_json, source,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&r.id)
        .bind(&r.display_name)
        .bind(r.pseudonym.as_deref())
        .bind(&json.topics)
        .bind(&json.languages)
        .bind(&r.timezone)
        .bind(&json.hours)
        .bind(r.max_concurrent)
        .bind(r.status.as_str())
        .bind(&json.contacts)
        .bind(source)
        .bind(now)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Seeds a responder at start-up: inserts it, or refreshes a row that came from the
    /// configuration too. A row an operator created or edited (source `admin`) is left as it
    /// is: the operator's edit wins over a configuration file that may predate it. The status
    /// of an existing row is kept as well, because it is live state (a responder who said
    /// "away" stays away across a restart), not configuration. Returns whether a row was
    /// written.
    pub async fn upsert_responder(&self, r: &Responder, source: &str) -> Result<bool, StoreError> {
        let json = JsonColumns::of(r);
        let now = self.now_ms();
        let done = sqlx::query(
            "INSERT INTO responders (id, display_name, pseudonym, topics_json, languages_json,
                 timezone, hours_json, max_concurrent, status, contacts_json, source,
                 created_at, updated_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12)
             ON CONFLICT (id) DO UPDATE SET
                 display_name = excluded.display_name, pseudonym = excluded.pseudonym,
                 topics_json = excluded.topics_json, languages_json = excluded.languages_json,
                 timezone = excluded.timezone, hours_json = excluded.hours_json,
                 max_concurrent = excluded.max_concurrent, contacts_json = excluded.contacts_json,
                 source = excluded.source, updated_at = excluded.updated_at
             WHERE responders.source = $13",
        )
        .bind(&r.id)
        .bind(&r.display_name)
        .bind(r.pseudonym.as_deref())
        .bind(&json.topics)
        .bind(&json.languages)
        .bind(&r.timezone)
        .bind(&json.hours)
        .bind(r.max_concurrent)
        .bind(r.status.as_str())
        .bind(&json.contacts)
        .bind(source)
        .bind(now)
        .bind(SOURCE_CONFIG)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Replaces every field of an existing responder, status included, and marks it as an
    /// operator's edit (source `admin`). Returns false if there is no such responder.
    pub async fn update_responder(&self, r: &Responder) -> Result<bool, StoreError> {
        let json = JsonColumns::of(r);
        let done = sqlx::query(
            "UPDATE responders SET display_name = $1, pseudonym = $2, topics_json = $3,
                 languages_json = $4, timezone = $5, hours_json = $6, max_concurrent = $7,
                 status = $8, contacts_json = $9, source = $10, updated_at = $11
             WHERE id = $12",
        )
        .bind(&r.display_name)
        .bind(r.pseudonym.as_deref())
        .bind(&json.topics)
        .bind(&json.languages)
        .bind(&r.timezone)
        .bind(&json.hours)
        .bind(r.max_concurrent)
        .bind(r.status.as_str())
        .bind(&json.contacts)
        .bind(SOURCE_ADMIN)
        .bind(self.now_ms())
        .bind(&r.id)
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(done.rows_affected() == 1)
    }

    pub async fn responder(&self, id: &str) -> Result<Option<Responder>, StoreError> {
        let row = sqlx::query(&format!(
            "SELECT {RESPONDER_COLUMNS} FROM responders WHERE id = $1"
        ))
        .bind(id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(responder_from_row).transpose()
    }

    /// Every responder, ordered by id.
    pub async fn list_responders(&self) -> Result<Vec<Responder>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RESPONDER_COLUMNS} FROM responders ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(responder_from_row).collect()
    }

    /// Where a responder came from: `config` or `admin`.
    pub async fn responder_source(&self, id: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT source FROM responders WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("source")).transpose()?)
    }

    /// Removes a responder from the register. Their conversations, assignments and links
    /// stay (transcripts name them). Returns false if there was no such responder.
    pub async fn remove_responder(&self, id: &str) -> Result<bool, StoreError> {
        let done = sqlx::query("DELETE FROM responders WHERE id = $1")
            .bind(id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// Sets whether a responder takes new conversations. Leaves `source` alone: a status is
    /// live state, not an edit of the register. Returns false if there is no such responder.
    pub async fn set_responder_status(
        &self,
        id: &str,
        status: ResponderStatus,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query("UPDATE responders SET status = $1, updated_at = $2 WHERE id = $3")
            .bind(status.as_str())
            .bind(self.now_ms())
            .bind(id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// The responder who lists this platform address among their contacts. The register is
    /// small (tens of rows), so a scan is cheaper than keeping a contact index in step.
    pub async fn responder_by_contact(
        &self,
        platform: &str,
        address: &str,
    ) -> Result<Option<Responder>, StoreError> {
        Ok(self.list_responders().await?.into_iter().find(|r| {
            r.contacts
                .iter()
                .any(|c| c.platform == platform && c.address == address)
        }))
    }

    /// Records when a responder was last offered a conversation (routing prefers whoever
    /// waited longest).
    pub async fn note_offered(&self, id: &str, at_ms: i64) -> Result<(), StoreError> {
        sqlx::query("UPDATE responders SET last_offered_at = $1 WHERE id = $2")
            .bind(at_ms)
            .bind(id)
            .execute(&mut *self.writer().await?)
            .await?;
        Ok(())
    }

    /// The whole register, each responder with when they were last offered a conversation
    /// (None if never), in one read: routing looks at all of them for every offer.
    pub async fn responders_with_offer_times(
        &self,
    ) -> Result<Vec<(Responder, Option<i64>)>, StoreError> {
        let rows = sqlx::query(&format!(
            "SELECT {RESPONDER_COLUMNS}, last_offered_at FROM responders ORDER BY id"
        ))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((responder_from_row(r)?, r.try_get("last_offered_at")?)))
            .collect()
    }

    /// The responder last offered a conversation on this topic.
    pub async fn routing_cursor(&self, topic: &str) -> Result<Option<String>, StoreError> {
        let row = sqlx::query("SELECT last_responder_id FROM routing_cursors WHERE topic = $1")
            .bind(topic)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.map(|r| r.try_get("last_responder_id")).transpose()?)
    }

    pub async fn set_routing_cursor(
        &self,
        topic: &str,
        responder_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO routing_cursors (topic, last_responder_id, updated_at) VALUES ($1, $2, $3)
             ON CONFLICT (topic) DO UPDATE
             SET last_responder_id = excluded.last_responder_id, updated_at = excluded.updated_at",
        )
        .bind(topic)
        .bind(responder_id)
        .bind(self.now_ms())
        .execute(&mut *self.writer().await?)
        .await?;
        Ok(())
    }

    /// How many conversations each responder holds right now (active assignments). Responders
    /// holding none are absent from the map.
    pub async fn active_conversation_counts(&self) -> Result<HashMap<String, i64>, StoreError> {
        let rows = sqlx::query(
            "SELECT responder_id, COUNT(*) AS n FROM assignments
             WHERE state = 'active' GROUP BY responder_id",
        )
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| Ok((r.try_get("responder_id")?, r.try_get("n")?)))
            .collect()
    }

    /// Every assignment a conversation has had, ended ones included, oldest first: who held
    /// it, for operators reading a transcript.
    pub async fn assignments_for_room(
        &self,
        room_id: &str,
    ) -> Result<Vec<AssignmentRow>, StoreError> {
        let rows = sqlx::query(
            "SELECT room_id, responder_id, platform, address, ghost_user_id, state
             FROM assignments WHERE room_id = $1 ORDER BY created_at, responder_id",
        )
        .bind(room_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                Ok(AssignmentRow {
                    room_id: r.try_get("room_id")?,
                    responder_id: r.try_get("responder_id")?,
                    platform: r.try_get("platform")?,
                    address: r.try_get("address")?,
                    ghost_user_id: r.try_get("ghost_user_id")?,
                    state: r.try_get("state")?,
                })
            })
            .collect()
    }
}
