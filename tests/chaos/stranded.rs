//! A transaction Synapse strands (appservice/src/txn_order.rs): its recoverer, finding nothing
//! more to send, marks the appservice up, and a transaction stored just before that mark is
//! never sent; the next ones go out directly. Made happen on purpose here, without killing
//! Switchboard or Synapse (either would start a catch-up that hides the fault): the store under
//! Switchboard goes away, so Switchboard refuses a visitor's message and Synapse stores it and
//! recovers; the test moves that transaction out of the recoverer's sight in Synapse's
//! database until the recoverer has marked us up, then puts it back, where Synapse's race
//! would have left it. The visitor's next
//! message must reach the responder after the stranded one, not before it or alone.

use std::time::{Duration, Instant};

use anyhow::Context;
use sqlx::Connection;

use super::{OneMatrixConversation, kill_postgres, room_bodies, start_postgres};
use crate::common::*;

/// Where the stranded transaction is parked while the recoverer looks (an appservice ID no
/// registration has).
const PARKED: &str = "parked-by-the-test";

pub async fn a_stranded_transaction_reaches_the_responder_before_the_ones_after_it(
    env: &TestEnv,
    slot_no: u32,
) -> anyhow::Result<()> {
    let slot = Slot::load(env, slot_no)?;
    let local = unique("strandr");
    let config = OneMatrixConversation::config(env, "strand", &local);
    let sb = Switchboard::start_on_postgres(env, &slot, &config).await?;
    let http = reqwest::Client::new();
    let OneMatrixConversation {
        bot,
        visitor,
        room,
        relay,
        token,
        ..
    } = OneMatrixConversation::open(env, &sb, slot_no, "strand", &local).await?;
    let to_responder = || room_bodies(&http, &env.hs_url, &token, &relay, &bot);
    let send = |body: &'static str| {
        let request = http
            .put(format!(
                "{}/_matrix/client/v3/rooms/{}/send/m.room.message/{}",
                env.hs_url,
                urlencode(&room),
                unique("strand")
            ))
            .bearer_auth(&visitor.token)
            .json(&serde_json::json!({"msgtype": "m.text", "body": body}));
        async move {
            request.send().await?.error_for_status()?;
            anyhow::Ok(())
        }
    };
    send("before the outage").await?;
    wait_for("the first message at the responder", || async {
        Ok(to_responder()
            .await?
            .iter()
            .any(|b| b.contains("before the outage"))
            .then_some(()))
    })
    .await?;

    // The store away: Synapse's transaction fails, it stores it and starts a recoverer.
    let synapse_db = env.dir.join("synapse/homeserver.db");
    let mut db = sqlx::SqliteConnection::connect(&format!("sqlite://{}", synapse_db.display()))
        .await
        .with_context(|| format!("opening {}", synapse_db.display()))?;
    kill_postgres(env).await?;
    send("stranded").await?;
    let deadline = Instant::now() + Duration::from_secs(20);
    let parked = loop {
        let parked = sqlx::query("UPDATE application_services_txns SET as_id = ? WHERE as_id = ?")
            .bind(PARKED)
            .bind(&slot.id)
            .execute(&mut db)
            .await?
            .rows_affected();
        if parked > 0 {
            break parked;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "Synapse never stored a transaction for us while the store was away"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!("parked {parked} transaction(s) Synapse had stored for us");
    // Switchboard answers 500 once its store gives up (30 s), Synapse marks us down, and its
    // recoverer looks, finds nothing and marks us up again.
    for (state, within) in [("down", 90), ("up", 60)] {
        let deadline = Instant::now() + Duration::from_secs(within);
        loop {
            let now: Option<Option<String>> =
                sqlx::query_scalar("SELECT state FROM application_services_state WHERE as_id = ?")
                    .bind(&slot.id)
                    .fetch_optional(&mut db)
                    .await?;
            if now.flatten().as_deref() == Some(state) {
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "Synapse never marked the appservice {state}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    start_postgres(env)?;
    // Switchboard's store answers again, so without the ordering the next transaction would
    // be recorded (a refusal for any other reason would start a recoverer, which would find
    // the stranded one, and the test would prove nothing).
    wait_for("Switchboard ready again", || async {
        let r = http.get(format!("{}/ready", sb.base)).send().await?;
        Ok(r.status().is_success().then_some(()))
    })
    .await?;
    // Put back where Synapse's race leaves it: stored, never to be sent by itself.
    sqlx::query("UPDATE application_services_txns SET as_id = ? WHERE as_id = ?")
        .bind(&slot.id)
        .bind(PARKED)
        .execute(&mut db)
        .await?;
    db.close().await?;

    send("after the outage").await?;
    let deadline = Instant::now() + Duration::from_secs(40);
    let got = loop {
        let got = to_responder().await?;
        let at = |text: &str| got.iter().position(|b| b.contains(text));
        if let (Some(_), Some(_)) = (at("stranded"), at("after the outage")) {
            break got;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the stranded message {} reach the responder, the one after it {}: {got:?}",
            if at("stranded").is_some() {
                "did"
            } else {
                "did not"
            },
            if at("after the outage").is_some() {
                "did"
            } else {
                "did not"
            },
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let at = |text: &str| got.iter().position(|b| b.contains(text));
    anyhow::ensure!(
        at("stranded") < at("after the outage"),
        "the stranded message reached the responder after the one sent after it: {got:?}"
    );
    anyhow::ensure!(
        sb.log_text().contains("transaction skips numbers"),
        "in order, but not because Switchboard refused the transaction that skipped numbers: \
         the test no longer strands one"
    );
    Ok(())
}
