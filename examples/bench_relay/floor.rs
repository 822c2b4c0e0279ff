//! Synapse's own client → client floor, measured in the same run as the bridged paths: two
//! ordinary users in one room, no Switchboard anywhere. The receiving side is always a plain
//! `/sync` long poll (what the widget does, and how the benchmark watches the Matrix
//! responder's relay room); the sender is what the bridged path's sender uses:
//! - a plain HTTP `PUT /send` (what the widget does);
//! - a matrix-sdk `send` (what the Matrix responder's client does).
//!
//! Why not matrix-sdk's own sync loop on the receiving side: in the first run it took a p50
//! of about a second to hand a message to its event handler, which measures that client, not
//! the homeserver or Switchboard.

use std::time::{Duration, Instant};

use anyhow::Context;
use matrix_sdk::ruma::{
    OwnedUserId, api::client::room::create_room, events::room::message::RoomMessageEventContent,
};
use serde_json::{Value, json};

use crate::common::*;
use crate::report::{Row, ms};

/// Spacing of the paced floor's samples: that of the paths paced to one message a second per
/// chat (into a Telegram chat, `TELEGRAM_SPACING`; into a Discord channel, `DISCORD_SPACING`,
/// held equal below). A message sent after a second of quiet takes Synapse itself about
/// twice as long as one sent straight after the last (18.7 against 36.3 ms in one run on 2
/// cores), so each paced path is judged against a floor taken the same way.
pub const PACED: Duration = crate::paths::TELEGRAM_SPACING;
const _: () = assert!(
    crate::discord::DISCORD_SPACING.as_millis() == PACED.as_millis(),
    "the Discord paths are judged against the same paced floor"
);

/// The two floors: sent by a plain HTTP client, and by matrix-sdk.
pub struct Floor {
    pub from_plain: Row,
    pub from_sdk: Row,
}

/// Registers an ordinary user over plain HTTP, as a client without an SDK would.
pub async fn register(env: &TestEnv, localpart: &str) -> anyhow::Result<Visitor> {
    let r: Value = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/register", env.hs_url))
        .json(&json!({
            "username": localpart,
            "password": "correct horse battery staple",
            "auth": {"type": "m.login.dummy"},
        }))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(Visitor::signed_in(
        env,
        "",
        r["user_id"].as_str().context("user_id")?,
        r["access_token"].as_str().context("access_token")?,
    ))
}

/// Two ordinary users in a room of their own, both plain HTTP clients: the floor of the
/// paths towards a responder, sampled again while a flood runs (see `flood.rs`).
pub struct PlainPair {
    sender: Visitor,
    receiver: Visitor,
}

impl PlainPair {
    pub async fn new(env: &TestEnv) -> anyhow::Result<Self> {
        let mut sender = register(env, &unique("floorsend")).await?;
        let mut receiver = register(env, &unique("floorrecv")).await?;
        let r: Value = reqwest::Client::new()
            .post(format!("{}/_matrix/client/v3/createRoom", env.hs_url))
            .bearer_auth(&sender.token)
            .json(&json!({"invite": [receiver.user_id]}))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let room_id = r["room_id"].as_str().context("room_id")?.to_owned();
        let (status, body) = receiver.join(&room_id).await?;
        anyhow::ensure!(
            status == 200,
            "joining the floor room answered {status}: {body}"
        );
        sender.room_id = Some(room_id.clone());
        receiver.room_id = Some(room_id);
        let mut pair = Self { sender, receiver };
        pair.sample("floor warm-up").await?;
        Ok(pair)
    }

    /// One message from one to the other: `PUT /send` → the other's `/sync` long poll.
    pub async fn sample(&mut self, text: &str) -> anyhow::Result<f64> {
        let t = Instant::now();
        self.sender.send(text).await?;
        self.receiver
            .sync_until("the floor message", |seen| {
                seen.iter().any(|s| s.body == text)
            })
            .await?;
        Ok(ms(t))
    }
}

/// `n` samples each way, each sent `spacing` after the last one arrived (`Duration::ZERO`:
/// back to back; [`PACED`]: as the paced paths are sent).
pub async fn measure(env: &TestEnv, n: usize, spacing: Duration) -> anyhow::Result<Floor> {
    let plain_local = unique("floorplain");
    let mut plain = register(env, &plain_local).await?;
    let sdk_local = unique("floorsdk");
    let sdk = MatrixResponder::register(env, &sdk_local).await?;

    let mut request = create_room::v3::Request::new();
    request.invite = vec![OwnedUserId::try_from(plain.user_id.as_str())?];
    let room = sdk.client.create_room(request).await?;
    let room_id = room.room_id().to_string();
    let (status, body) = plain.join(&room_id).await?;
    anyhow::ensure!(
        status == 200,
        "joining the floor room answered {status}: {body}"
    );
    plain.room_id = Some(room_id.clone());
    // One message each way first: the first /sync is the initial one (later ones are
    // incremental long polls), and the first sends warm up both clients' connections.
    room.send(RoomMessageEventContent::text_plain("floor warm-up"))
        .await?;
    plain
        .sync_until("the warm-up", |seen| {
            seen.iter().any(|s| s.body == "floor warm-up")
        })
        .await?;
    let sdk_id = sdk.client.user_id().context("sdk user")?.to_string();
    let mut sdk_sync = Visitor::signed_in(
        env,
        "",
        &sdk_id,
        &sdk.client.access_token().context("sdk token")?,
    );
    sdk_sync.room_id = Some(room_id.clone());
    plain.send("floor warm-up back").await?;
    sdk_sync
        .sync_until("the warm-up", |seen| {
            seen.iter().any(|s| s.body == "floor warm-up back")
        })
        .await?;

    let paced = if spacing.is_zero() {
        String::new()
    } else {
        format!(", paced: {} ms after the last", spacing.as_millis())
    };
    let mut from_plain = Row::new(format!(
        "Synapse floor: client `PUT /send` → another user's `/sync` long poll{paced}"
    ));
    for i in 0..n {
        tokio::time::sleep(spacing).await;
        let text = format!("floor plain {i}");
        let t = Instant::now();
        plain.send(&text).await?;
        sdk_sync
            .sync_until("the floor message", |seen| {
                seen.iter().any(|s| s.body == text)
            })
            .await?;
        from_plain.samples.push(ms(t));
    }

    let mut from_sdk = Row::new(format!(
        "Synapse floor: matrix-sdk send → another user's `/sync` long poll{paced}"
    ));
    for i in 0..n {
        tokio::time::sleep(spacing).await;
        let text = format!("floor sdk {i}");
        let t = Instant::now();
        room.send(RoomMessageEventContent::text_plain(&text))
            .await?;
        plain
            .sync_until("the floor message", |seen| {
                seen.iter().any(|s| s.body == text)
            })
            .await?;
        from_sdk.samples.push(ms(t));
    }
    Ok(Floor {
        from_plain,
        from_sdk,
    })
}
