//! Opening the same store suite on both engines.

#![allow(dead_code)]

pub mod openapi;

use switchboard_bridge::{
    Store,
    conversation::{Conversation, ConversationState, Message, SenderRole},
};

/// A fresh PostgreSQL database on the throwaway cluster scripts/test.sh starts, so a suite
/// starts from an empty schema every time. Returns the store and its URL (to reopen it).
pub async fn fresh_postgres(prefix: &str) -> anyhow::Result<(Store, String)> {
    let admin_url = std::env::var("SWITCHBOARD_TEST_POSTGRES_URL").expect(
        "SWITCHBOARD_TEST_POSTGRES_URL is not set: run the suite with scripts/test.sh, which starts PostgreSQL",
    );
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_micros();
    let db = format!("{prefix}_{}_{micros}", std::process::id());
    sqlx::any::install_default_drivers();
    let admin = sqlx::AnyPool::connect(&admin_url).await?;
    sqlx::query(&format!("CREATE DATABASE {db}"))
        .execute(&admin)
        .await?;
    admin.close().await;
    let base = admin_url
        .rsplit_once('/')
        .map(|(b, _)| b)
        .unwrap_or(&admin_url);
    let url = format!("{base}/{db}");
    Ok((Store::connect(&url).await?, url))
}

/// A fresh SQLite file in `dir`; returns the store and its URL.
pub async fn fresh_sqlite(dir: &std::path::Path) -> anyhow::Result<(Store, String)> {
    let url = format!("sqlite://{}", dir.join("store.db").display());
    Ok((Store::connect(&url).await?, url))
}

/// A queued conversation to store, as the store suites write them.
pub fn conversation(room: &str, visitor: &str, topic: &str, created_at: i64) -> Conversation {
    Conversation {
        room_id: room.into(),
        topic: topic.into(),
        visitor_user_id: visitor.into(),
        visitor_alias: "Visitor 00AA".into(),
        state: ConversationState::Queued,
        created_at,
        language: Some("en".into()),
    }
}

/// A transcript line of `role` with its body (a responder's also as bold HTML).
pub fn message(event_id: &str, room: &str, seq: i64, role: SenderRole, body: &str) -> Message {
    Message {
        event_id: event_id.into(),
        room_id: room.into(),
        inbox_seq: seq,
        sender: "@someone:localhost".into(),
        sender_role: role,
        msgtype: "m.text".into(),
        body: body.into(),
        formatted_body: (role == SenderRole::Responder).then(|| format!("<b>{body}</b>")),
        origin_server_ts: 1_700_000_000_000 + seq,
    }
}
