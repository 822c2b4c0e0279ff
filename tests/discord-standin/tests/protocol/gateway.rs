//! The gateway seen from a raw WebSocket client: HELLO, IDENTIFY checks and close codes,
//! heartbeats, sequence numbers, RESUME replay, INVALID_SESSION and intents.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, connect_async};

use super::{Api, TOKEN};

const GUILDS: u64 = 1;
const GUILD_MESSAGES: u64 = 1 << 9;
const DIRECT_MESSAGES: u64 = 1 << 12;
const MESSAGE_CONTENT: u64 = 1 << 15;

struct Gateway {
    socket: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

/// What the server sent next: a payload, or a close code.
#[derive(Debug)]
enum Next {
    Payload(Value),
    Closed(Option<u16>),
}

impl Gateway {
    async fn connect(url: &str) -> Gateway {
        let (socket, _) = connect_async(url).await.expect("gateway connects");
        Gateway { socket }
    }

    /// Connects with `?v=10&encoding=json` and reads HELLO.
    async fn open(api: &Api) -> (Gateway, Value) {
        let mut gateway =
            Gateway::connect(&format!("{}/?v=10&encoding=json", api.dc.gateway_url())).await;
        let hello = gateway.payload().await;
        (gateway, hello)
    }

    async fn send(&mut self, payload: Value) {
        self.socket
            .send(Message::Text(payload.to_string()))
            .await
            .expect("send");
    }

    async fn next(&mut self) -> Next {
        loop {
            let message = tokio::time::timeout(Duration::from_secs(5), self.socket.next())
                .await
                .expect("the server said something within 5 s");
            match message {
                Some(Ok(Message::Text(text))) => {
                    return Next::Payload(serde_json::from_str(&text).expect("JSON"));
                }
                Some(Ok(Message::Close(frame))) => {
                    return Next::Closed(frame.map(|f| f.code.into()));
                }
                Some(Ok(_)) => continue,
                Some(Err(_)) | None => return Next::Closed(None),
            }
        }
    }

    async fn payload(&mut self) -> Value {
        match self.next().await {
            Next::Payload(value) => value,
            closed => panic!("expected a payload, got {closed:?}"),
        }
    }

    async fn close_code(&mut self) -> Option<u16> {
        loop {
            if let Next::Closed(code) = self.next().await {
                return code;
            }
        }
    }

    /// The next dispatch of type `t` (skipping others).
    async fn dispatch(&mut self, t: &str) -> Value {
        loop {
            let payload = self.payload().await;
            if payload["op"] == 0 && payload["t"] == t {
                return payload;
            }
        }
    }

    async fn identify(&mut self, intents: Value) {
        self.send(json!({"op": 2, "d": {"token": TOKEN, "intents": intents,
            "properties": {"os": "linux", "browser": "test", "device": "test"}}}))
            .await;
    }
}

#[tokio::test]
async fn identify_is_checked_and_answered_with_ready_and_guild_create() {
    let api = Api::start().await;
    api.dc.create_text_channel("general");
    let (mut gw, hello) = Gateway::open(&api).await;
    assert_eq!(hello["op"], 10);
    assert_eq!(hello["d"]["heartbeat_interval"], 41250);
    gw.identify(json!(GUILDS | GUILD_MESSAGES)).await;
    let ready = gw.payload().await;
    assert_eq!(
        (ready["t"].as_str(), ready["s"].as_u64()),
        (Some("READY"), Some(1))
    );
    assert_eq!(ready["d"]["v"], 10);
    assert_eq!(ready["d"]["guilds"][0]["unavailable"], true);
    assert_eq!(ready["d"]["user"]["id"], api.dc.bot_user_id().to_string());
    assert!(
        ready["d"]["resume_gateway_url"]
            .as_str()
            .unwrap()
            .ends_with("/gateway")
    );
    let guild = gw.payload().await;
    assert_eq!(
        (guild["t"].as_str(), guild["s"].as_u64()),
        (Some("GUILD_CREATE"), Some(2))
    );
    assert_eq!(guild["d"]["channels"][0]["name"], "general");
    gw.send(json!({"op": 1, "d": 2})).await;
    assert_eq!(gw.payload().await["op"], 11, "heartbeats are acknowledged");
    gw.identify(json!(GUILDS)).await;
    assert_eq!(
        gw.close_code().await,
        Some(4005),
        "a second IDENTIFY is refused"
    );
    assert_eq!(api.dc.identify_count(), 1);

    let (mut gw, _) = Gateway::open(&api).await;
    gw.send(json!({"op": 2, "d": {"token": "wrong", "intents": 0, "properties": {"os": "x", "browser": "x", "device": "x"}}})).await;
    assert_eq!(gw.close_code().await, Some(4004));
    let (mut gw, _) = Gateway::open(&api).await;
    gw.identify(json!("513")).await;
    assert_eq!(
        gw.close_code().await,
        Some(4013),
        "intents must be an integer"
    );
    let (mut gw, _) = Gateway::open(&api).await;
    gw.send(json!({"op": 3, "d": {}})).await;
    assert_eq!(
        gw.close_code().await,
        Some(4003),
        "nothing but heartbeats before IDENTIFY"
    );
    api.dc.set_privileged_intents_allowed(false);
    let (mut gw, _) = Gateway::open(&api).await;
    gw.identify(json!(GUILDS | MESSAGE_CONTENT)).await;
    assert_eq!(gw.close_code().await, Some(4014));

    let mut old = Gateway::connect(&format!("{}/?v=9", api.dc.gateway_url())).await;
    assert_eq!(old.close_code().await, Some(4012));
    let mut etf = Gateway::connect(&format!("{}/?v=10&encoding=etf", api.dc.gateway_url())).await;
    assert_eq!(etf.close_code().await, Some(4002));
    let mut garbage = Gateway::open(&api).await.0;
    garbage
        .socket
        .send(Message::Text("{not json".into()))
        .await
        .unwrap();
    assert_eq!(garbage.close_code().await, Some(4002));
}

#[tokio::test]
async fn message_content_needs_its_intent_except_in_dms_and_mentions() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("general");
    let user = api.dc.user("visitor");
    let dm = api.dc.user_opens_dm(&user);
    let (mut without, _) = Gateway::open(&api).await;
    without
        .identify(json!(GUILD_MESSAGES | DIRECT_MESSAGES))
        .await;
    without.dispatch("READY").await;
    let (mut with, _) = Gateway::open(&api).await;
    with.identify(json!(GUILD_MESSAGES | MESSAGE_CONTENT)).await;
    with.dispatch("READY").await;

    api.dc.user_sends(&user, channel, "secret words");
    let blank = without.dispatch("MESSAGE_CREATE").await;
    assert_eq!(blank["d"]["content"], "");
    assert_eq!(blank["d"]["guild_id"], api.dc.guild_id().to_string());
    assert_eq!(
        blank["d"]["member"]["roles"],
        json!([]),
        "guild messages carry a partial member"
    );
    assert_eq!(
        with.dispatch("MESSAGE_CREATE").await["d"]["content"],
        "secret words"
    );

    api.dc
        .user_sends(&user, channel, &format!("<@{}> help", api.dc.bot_user_id()));
    assert_ne!(
        without.dispatch("MESSAGE_CREATE").await["d"]["content"],
        "",
        "mentions of the bot keep content"
    );
    with.dispatch("MESSAGE_CREATE").await;
    api.dc.user_sends(&user, dm, "in private");
    let private = without.dispatch("MESSAGE_CREATE").await;
    assert_eq!(private["d"]["content"], "in private");
    assert!(private["d"].get("guild_id").is_none());
    api.dc.user_sends(&user, channel, "after the DM");
    let next = with.dispatch("MESSAGE_CREATE").await;
    assert_eq!(
        next["d"]["content"], "after the DM",
        "no DMs without DIRECT_MESSAGES"
    );
}

#[tokio::test]
async fn resume_replays_missed_dispatches_and_invalid_sessions_are_refused() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("general");
    let user = api.dc.user("visitor");
    let (mut gw, _) = Gateway::open(&api).await;
    gw.identify(json!(GUILDS | GUILD_MESSAGES | MESSAGE_CONTENT))
        .await;
    let ready = gw.dispatch("READY").await;
    let session = ready["d"]["session_id"].as_str().unwrap().to_owned();
    let resume_url = ready["d"]["resume_gateway_url"]
        .as_str()
        .unwrap()
        .to_owned();
    api.dc.user_sends(&user, channel, "seen");
    let seen = gw.dispatch("MESSAGE_CREATE").await;
    let last = seen["s"].as_u64().unwrap();
    api.dc.drop_gateway();
    assert_eq!(gw.close_code().await, None, "dropped without a close frame");
    api.dc.user_sends(&user, channel, "missed 1");
    api.dc.user_sends(&user, channel, "missed 2");

    let mut again = Gateway::connect(&format!("{resume_url}?v=10&encoding=json")).await;
    assert_eq!(again.payload().await["op"], 10);
    again
        .send(json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": last}}))
        .await;
    let first = again.payload().await;
    let second = again.payload().await;
    let resumed = again.payload().await;
    assert_eq!(
        (first["d"]["content"].as_str(), first["s"].as_u64()),
        (Some("missed 1"), Some(last + 1))
    );
    assert_eq!(
        (second["d"]["content"].as_str(), second["s"].as_u64()),
        (Some("missed 2"), Some(last + 2))
    );
    assert_eq!(
        (resumed["t"].as_str(), resumed["s"].as_u64()),
        (Some("RESUMED"), Some(last + 3))
    );
    assert_eq!(api.dc.resume_count(), 1);
    assert_eq!(api.dc.gateway_sessions(), 1);

    api.dc.invalidate_sessions();
    api.dc.drop_gateway();
    let (mut third, _) = Gateway::open(&api).await;
    third
        .send(json!({"op": 6, "d": {"token": TOKEN, "session_id": session, "seq": last + 3}}))
        .await;
    let invalid = third.payload().await;
    assert_eq!(
        (invalid["op"].as_u64(), &invalid["d"]),
        (Some(9), &json!(false))
    );
    let frames = api.dc.gateway_frames_received();
    assert_eq!(frames.iter().filter(|f| f["op"] == 6).count(), 2);
}
