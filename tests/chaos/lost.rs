//! What Synapse loses when it is killed with events queued for us (matrix-org/synapse#11637):
//! it writes an appservice's events into a transaction only when the one before is answered,
//! so events waiting behind it live in memory only, and its appservice stream has already
//! moved past them. Made happen on purpose here: with Switchboard down, Synapse stores a
//! responder's and a visitor's message and keeps them queued; it is killed, and what it had
//! written down for us is deleted, as if it had died before writing it. Both messages must
//! still arrive, found by Switchboard reading the rooms once the homeserver is back.

use std::time::Duration;

use anyhow::Context;
use serde_json::json;

use super::{OneMatrixConversation, kill_9, room_bodies, script};
use crate::common::*;

pub async fn caught_up_after_the_homeserver_lost_them(
    env: &TestEnv,
    slot_no: u32,
) -> anyhow::Result<()> {
    let slot = Slot::load(env, slot_no)?;
    let local = unique("lostr");
    let config = OneMatrixConversation::config(env, "lost", &local);
    let mut sb = Switchboard::start(env, &slot, &config).await?;
    let http = reqwest::Client::new();
    let OneMatrixConversation {
        bot,
        visitor,
        room,
        relay,
        ghost,
        token,
        ..
    } = OneMatrixConversation::open(env, &sb, slot_no, "lost", &local).await?;

    // Switchboard away: Synapse stores both messages and keeps them for us.
    sb.kill();
    for (who, room, body) in [
        (
            token.as_str(),
            relay.as_str(),
            "stored but never pushed (responder)",
        ),
        (
            visitor.token.as_str(),
            room.as_str(),
            "stored but never pushed (visitor)",
        ),
    ] {
        http.put(format!(
            "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
            env.hs_url,
            urlencode(room),
            unique("lost")
        ))
        .bearer_auth(who)
        .json(&json!({"msgtype": "m.text", "body": body}))
        .send()
        .await?
        .error_for_status()?;
    }
    // Synapse tries to push them (and fails) before it is killed.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let dir = env.dir.join("synapse");
    kill_9(&dir.join("synapse.pid"), false).await?;
    forget_queued_transactions(&dir.join("homeserver.db")).await?;
    script(&["synapse.sh", "start", &dir.to_string_lossy()])?;
    sb.restart().await?;

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let to_visitor = room_bodies(&http, &env.hs_url, &visitor.token, &room, &ghost).await?;
        let to_responder = room_bodies(&http, &env.hs_url, &token, &relay, &bot).await?;
        let got_reply = to_visitor
            .iter()
            .any(|b| b.contains("stored but never pushed (responder)"));
        let got_question = to_responder
            .iter()
            .any(|b| b.contains("stored but never pushed (visitor)"));
        if got_reply && got_question {
            let log = sb.log_text();
            anyhow::ensure!(
                log.contains("caught up on events the homeserver had not pushed"),
                "both arrived, but not by a catch-up: the test no longer makes Synapse lose them"
            );
            return Ok(());
        }
        anyhow::ensure!(
            std::time::Instant::now() < deadline,
            "lost by the homeserver and never caught up on: the responder's reply reached the \
             visitor: {got_reply}; the visitor's message reached the responder: {got_question}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

/// Deletes the appservice transactions Synapse wrote down and had not had answered, in its
/// database (it is not running): what it would have lost had it died before writing them.
async fn forget_queued_transactions(db: &std::path::Path) -> anyhow::Result<()> {
    use sqlx::Connection;
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", db.display()))
        .await
        .with_context(|| format!("opening {}", db.display()))?;
    let gone = sqlx::query("DELETE FROM application_services_txns")
        .execute(&mut conn)
        .await?
        .rows_affected();
    eprintln!("deleted {gone} appservice transactions Synapse had written down");
    conn.close().await?;
    Ok(())
}
