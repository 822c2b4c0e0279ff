//! Every hand-off trigger, deterministically, through the real bridge code: a real store
//! (SQLite), the real routing and hand-off logic, a recording connector in place of Telegram
//! and a recording stub in place of the homeserver. Nothing runs in the background: each
//! test calls the worker's steps itself (`drain_inbox`, `drain_remote`, `drain_outbox`,
//! `expire_offers`, `watch_responders`), so what happens, and in which order, is fixed.
//! Time is a manual clock given to the store (and so to the bridge): a test moves it past a
//! limit instead of waiting for one, and nothing sleeps. (The end-to-end tests on Synapse show
//! the same triggers with real time limits.)

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use async_trait::async_trait;
use axum::{
    Json, Router,
    body::Bytes,
    http::{Method, StatusCode, Uri},
    response::IntoResponse,
};
use serde_json::{Value, json};
use switchboard_appservice::{
    AppserviceRegistration, EventSink, HomeserverClient,
    registration::GenerateOptions,
    ruma::{OwnedUserId, events::AnyTimelineEvent, serde::Raw},
};
use switchboard_bridge::{
    Bridge, Store,
    bridge::RoomPostQueue,
    clock::{Clock, ManualClock},
    config::{BridgeConfig, TopicConfig, VisitorLimits},
    connector::{
        Attachment, Capabilities, Connector, ConnectorError, Delivery, FileLimits, Offer, Platform,
        RemoteEvent, RemoteSink, matrix::MatrixConnector, telegram,
    },
    conversation::{Conversation, ConversationState},
    responder::{Responder, ResponderStatus},
    store::DeadLetterSource,
};

const ROOM: &str = "!conversation:test";
/// Where every test's clock starts: Wednesday 2024-06-05 06:30 UTC (08:30 in Berlin).
const T0: i64 = 1_717_569_000_000;
const VISITOR: &str = "@guest1:test";

/// Stands in for Synapse: answers what the bridge asks with the smallest valid answer and
/// records every request (method, path, body).
struct StubHomeserver {
    base: String,
    requests: Arc<Mutex<Vec<(String, String, Value)>>>,
    /// While set, every request is answered 502 (a proxy in front of a homeserver that is
    /// down) and recorded in `refused` instead.
    down: Arc<AtomicBool>,
    refused: Arc<Mutex<Vec<(String, String, Value)>>>,
}

type Recorded = Arc<Mutex<Vec<(String, String, Value)>>>;

impl StubHomeserver {
    async fn start() -> anyhow::Result<Self> {
        let requests: Recorded = Arc::default();
        let refused: Recorded = Arc::default();
        let down = Arc::new(AtomicBool::new(false));
        let (seen, turned_away, is_down) = (requests.clone(), refused.clone(), down.clone());
        let counter = Arc::new(AtomicUsize::new(0));
        let app = Router::new().fallback(move |method: Method, uri: Uri, body: Bytes| {
            let (seen, counter) = (seen.clone(), counter.clone());
            let (turned_away, is_down) = (turned_away.clone(), is_down.clone());
            async move {
                // Path and query: identity assertion (`user_id=`) travels in the query.
                let path = uri
                    .path_and_query()
                    .map(|p| p.as_str().to_owned())
                    .unwrap_or_default();
                let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                if is_down.load(Ordering::SeqCst) {
                    turned_away
                        .lock()
                        .unwrap()
                        .push((method.to_string(), path, body));
                    let error = json!({"errcode": "M_UNKNOWN", "error": "Bad Gateway"});
                    return (StatusCode::BAD_GATEWAY, Json(error)).into_response();
                }
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let bare = path.split('?').next().unwrap_or_default().to_owned();
                let answer = if bare.ends_with("/versions") {
                    json!({"versions": ["v1.11"]})
                } else if path.contains("/send/") || path.contains("/state/") {
                    json!({"event_id": format!("$stub{n}")})
                } else if bare.contains("/join") {
                    json!({"room_id": ROOM})
                } else if bare.ends_with("/messages") {
                    // Nothing of ours stored there (what a lost answer is looked for in).
                    json!({"chunk": [], "start": "t0"})
                } else if bare.ends_with("/register") {
                    json!({"user_id": format!("@{}:test", body["username"].as_str().unwrap_or("x"))})
                } else if bare.ends_with("/createRoom") {
                    json!({"room_id": format!("!room{n}:test")})
                } else {
                    json!({})
                };
                seen.lock().unwrap().push((method.to_string(), path, body));
                Json(answer).into_response()
            }
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let base = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Self {
            base,
            requests,
            down,
            refused,
        })
    }

    fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// What reached a room whose ID contains `room`, in order: the bodies of messages sent
    /// there (with the path, whose last segment is the transaction ID) and `kick: REASON`
    /// for removals.
    fn writes_into(requests: &Recorded, room: &str) -> Vec<(String, String)> {
        requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, p, _)| p.contains(room))
            .filter_map(|(m, p, b)| {
                if m == "PUT" && p.contains("/send/m.room.message/") {
                    Some((p.clone(), b["body"].as_str()?.to_owned()))
                } else if m == "POST" && p.contains("/kick") {
                    Some((p.clone(), format!("kick: {}", b["reason"].as_str()?)))
                } else {
                    None
                }
            })
            .collect()
    }

    /// The `org.switchboard.conversation` contents published, in order.
    fn states(&self) -> Vec<Value> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "PUT" && p.contains("/state/org.switchboard.conversation"))
            .map(|(_, _, b)| b.clone())
            .collect()
    }

    /// Bodies of the messages sent into rooms.
    fn sent_bodies(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "PUT" && p.contains("/send/m.room.message/"))
            .filter_map(|(_, _, b)| b["body"].as_str().map(str::to_owned))
            .collect()
    }

    fn left(&self) -> Vec<String> {
        self.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "POST" && p.contains("/leave"))
            .map(|(_, p, _)| p.clone())
            .collect()
    }
}

/// Stands in for the Telegram connector: records what the bridge asks of it; deliveries can
/// be made to fail for good, or one part to be refused once with a rate limit. Its "platform"
/// splits a message at " | " into parts, and paces nothing.
#[derive(Default)]
struct RecordingConnector {
    calls: Mutex<Vec<String>>,
    offers: Mutex<Vec<(String, Offer)>>,
    unreachable: AtomicBool,
    next_id: AtomicUsize,
    /// The next delivery of this part is refused with 429 and this `retry_after`.
    rate_limit_part: Mutex<Option<(String, Duration)>>,
    /// Notices are numbered apart from offers and messages, whose IDs tests name.
    notices: AtomicUsize,
    /// What it declares instead of [`RecordingConnector::STANDARD`], if set.
    declared: Mutex<Option<Capabilities>>,
    /// The next delivery of this part is shown at once (recorded as "showing", with its
    /// message ID) and answered only this much later, as a slow platform would.
    slow_part: Mutex<Option<(String, Duration)>>,
}

impl RecordingConnector {
    /// Unpaced, files up to 50 MB, edits: what it declares unless a test says otherwise.
    const STANDARD: Capabilities = Capabilities {
        files: Some(FileLimits {
            max_bytes: 50 * 1024 * 1024,
        }),
        edits: true,
        ..Capabilities::unpaced('/')
    };

    fn declare(&self, caps: Capabilities) {
        *self.declared.lock().unwrap() = Some(caps);
    }

    /// As a real platform would: a message that cannot be edited is refused for good (and
    /// the attempt recorded).
    fn can_edit(&self, address: &str, what: &str) -> Result<(), ConnectorError> {
        if self.capabilities().edits {
            Ok(())
        } else {
            self.calls
                .lock()
                .unwrap()
                .push(format!("refused edit {address}: {what}"));
            Err(ConnectorError::Permanent(
                "Bad Request: message can't be edited".into(),
            ))
        }
    }

    fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// The offers sent to `address`, oldest first.
    fn offers_to(&self, address: &str) -> Vec<Offer> {
        self.offers
            .lock()
            .unwrap()
            .iter()
            .filter(|(a, _)| a == address)
            .map(|(_, o)| o.clone())
            .collect()
    }
}

#[async_trait]
impl Connector for RecordingConnector {
    fn platform(&self) -> Platform {
        telegram::SPEC.platform()
    }

    fn capabilities(&self) -> Capabilities {
        self.declared.lock().unwrap().unwrap_or(Self::STANDARD)
    }

    fn render(&self, delivery: &Delivery) -> Vec<String> {
        delivery.body.split(" | ").map(str::to_owned).collect()
    }

    async fn offer(&self, offer: &Offer, address: &str) -> Result<Option<String>, ConnectorError> {
        self.offers
            .lock()
            .unwrap()
            .push((address.to_owned(), offer.clone()));
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        Ok(Some(format!("offer-message-{id}")))
    }

    async fn offer_accepted(
        &self,
        address: &str,
        _handle: &str,
        text: &str,
    ) -> Result<(), ConnectorError> {
        self.can_edit(address, text)?;
        self.calls
            .lock()
            .unwrap()
            .push(format!("accepted {address}: {text}"));
        Ok(())
    }

    async fn close_offer(
        &self,
        address: &str,
        _remote_message_id: &str,
        why: &str,
    ) -> Result<(), ConnectorError> {
        self.can_edit(address, why)?;
        self.calls
            .lock()
            .unwrap()
            .push(format!("close {address}: {why}"));
        Ok(())
    }

    async fn deliver(
        &self,
        _delivery: &Delivery,
        _index: usize,
        part: &str,
        address: &str,
    ) -> Result<String, ConnectorError> {
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(ConnectorError::Permanent(
                "Forbidden: bot was blocked by the user".into(),
            ));
        }
        let limited = self
            .rate_limit_part
            .lock()
            .unwrap()
            .take_if(|(p, _)| *p == part)
            .map(|(_, after)| after);
        if let Some(after) = limited {
            self.calls
                .lock()
                .unwrap()
                .push(format!("429 {address}: {part}"));
            return Err(ConnectorError::RetryAfter(after));
        }
        let slow = self
            .slow_part
            .lock()
            .unwrap()
            .take_if(|(p, _)| *p == part)
            .map(|(_, after)| after);
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        if let Some(after) = slow {
            self.calls
                .lock()
                .unwrap()
                .push(format!("showing {address}: {part} as message-{id}"));
            tokio::time::sleep(after).await;
        }
        self.calls
            .lock()
            .unwrap()
            .push(format!("deliver {address}: {part}"));
        Ok(format!("message-{id}"))
    }

    async fn deliver_batch(
        &self,
        deliveries: &[Delivery],
        address: &str,
    ) -> Result<String, ConnectorError> {
        let bodies: Vec<&str> = deliveries.iter().map(|d| d.body.as_str()).collect();
        self.calls
            .lock()
            .unwrap()
            .push(format!("batch {address}: {}", bodies.join(" / ")));
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        Ok(format!("message-{id}"))
    }

    async fn deliver_file(
        &self,
        _delivery: &Delivery,
        _caption: &str,
        file: Attachment,
        address: &str,
    ) -> Result<String, ConnectorError> {
        // As a real platform would: what it does not take is refused for good.
        match self.capabilities().files {
            Some(limits) if file.bytes.len() as u64 <= limits.max_bytes => {}
            _ => {
                return Err(ConnectorError::Permanent(
                    "Bad Request: file is too big".into(),
                ));
            }
        }
        self.calls
            .lock()
            .unwrap()
            .push(format!("file {address}: {}", file.filename));
        let id = self.next_id.fetch_add(1, Ordering::SeqCst);
        Ok(format!("message-{id}"))
    }

    async fn notify(
        &self,
        address: &str,
        _thread: Option<&str>,
        text: &str,
    ) -> Result<Option<String>, ConnectorError> {
        self.calls
            .lock()
            .unwrap()
            .push(format!("notify {address}: {text}"));
        let n = self.notices.fetch_add(1, Ordering::SeqCst);
        Ok(Some(format!("notice-{n}")))
    }

    async fn run(
        self: Arc<Self>,
        _sink: Arc<dyn RemoteSink>,
        _term: switchboard_bridge::cluster::Term,
    ) {
    }
}

struct Limits {
    offer_timeout_secs: u64,
    first_reply_timeout_secs: Option<u64>,
    idle_limit_secs: Option<u64>,
}

const NO_LIMITS: Limits = Limits {
    offer_timeout_secs: 3600,
    first_reply_timeout_secs: None,
    idle_limit_secs: None,
};

struct World {
    bridge: Arc<Bridge>,
    hs: StubHomeserver,
    tg: Arc<RecordingConnector>,
    /// The time everything reads, the stub homeserver's timestamps included.
    clock: ManualClock,
    /// What [`World::restart`] builds a bridge from again.
    config: BridgeConfig,
    _dir: tempfile::TempDir,
}

fn responder(id: &str, chat: &str, topics: &[&str]) -> Responder {
    serde_json::from_value(json!({
        "id": id,
        "display_name": id,
        "pseudonym": format!("{}{}", id[..1].to_uppercase(), &id[1..]),
        "topics": topics,
        "max_concurrent": 5,
        "contacts": [{"platform": "telegram", "address": chat}],
    }))
    .expect("a valid responder")
}

fn topic(id: &str, limits: &Limits) -> TopicConfig {
    TopicConfig {
        id: id.into(),
        name: id.into(),
        names: Default::default(),
        // Round robin offers one responder at a time: the order of events is fixed.
        strategy: serde_json::from_value(json!("round_robin")).unwrap(),
        offer_timeout_secs: limits.offer_timeout_secs,
        first_reply_timeout_secs: limits.first_reply_timeout_secs,
        idle_limit_secs: limits.idle_limit_secs,
        first_reply_target_secs: None,
    }
}

/// A bridge with Ann and Ben answering `support` on Telegram (chats 1 and 2) and Cleo
/// answering `billing` (chat 3), and one conversation whose visitor has written once.
async fn world(limits: Limits) -> anyhow::Result<World> {
    world_of(
        limits,
        vec![
            responder("ann", "1", &["support"]),
            responder("ben", "2", &["support"]),
            responder("cleo", "3", &["billing"]),
        ],
    )
    .await
}

/// The same with the given register, at [`T0`].
async fn world_of(limits: Limits, responders: Vec<Responder>) -> anyhow::Result<World> {
    let dir = tempfile::tempdir()?;
    let clock = ManualClock::new(T0);
    let (store, _) = common::fresh_sqlite(dir.path()).await?;
    let store = store.with_clock(clock.clone());
    let hs = StubHomeserver::start().await?;
    let config = BridgeConfig {
        appservice_id: "triggers".into(),
        server_name: "test".into(),
        public_homeserver_url: hs.base.clone(),
        topics: vec![topic("support", &limits), topic("billing", &limits)],
        responders,
        limits: VisitorLimits::default(),
        welcome_notice: "Welcome.".into(),
        offline_message: "Nobody is available right now.".into(),
    };
    let tg = Arc::new(RecordingConnector::default());
    let bridge = bridge_on(&store, &hs, &tg, &config).await?;
    bridge.seed_register().await?;
    store
        .insert_conversation(&Conversation {
            room_id: ROOM.into(),
            topic: "support".into(),
            visitor_user_id: VISITOR.into(),
            visitor_alias: "Visitor 00AB".into(),
            state: ConversationState::Queued,
            created_at: 1,
            language: None,
        })
        .await?;
    let w = World {
        bridge,
        hs,
        tg,
        clock,
        config,
        _dir: dir,
    };
    w.room_event(VISITOR, "$v1", "My kettle leaks.").await?;
    Ok(w)
}

/// A bridge on `store`, talking to the stub homeserver, with the recording connector in
/// place of Telegram and the real Matrix connector.
async fn bridge_on(
    store: &Store,
    hs: &StubHomeserver,
    tg: &Arc<RecordingConnector>,
    config: &BridgeConfig,
) -> anyhow::Result<Arc<Bridge>> {
    let registration = Arc::new(AppserviceRegistration::generate(&GenerateOptions {
        id: "triggers",
        url: "http://127.0.0.1:1",
        bot_localpart: "bot",
        ghost_prefix: "_sb_",
    }));
    let bot: OwnedUserId = "@bot:test".try_into()?;
    let client = Arc::new(HomeserverClient::connect(&hs.base, "as-token", bot).await?);
    let connector: Arc<dyn Connector> = tg.clone();
    // Matrix responders' events come with the homeserver's transactions (the stub's); what
    // the bot says to them is queued with the bridge's room posts, as `main` wires it.
    let room_posts = RoomPostQueue::new(store.clone());
    let matrix: Arc<dyn Connector> = Arc::new(MatrixConnector::new(
        client.clone(),
        Arc::new(room_posts.clone()),
    ));
    Ok(Arc::new(
        Bridge::new(
            store.clone(),
            client,
            registration,
            config.clone(),
            vec![connector, matrix],
        )
        .with_room_posts(room_posts),
    ))
}

impl World {
    fn store(&self) -> &Store {
        self.bridge.store()
    }

    /// Switchboard stopped and started again: a new bridge on the same database, with
    /// nothing of the old one's memory.
    async fn restart(&mut self) -> anyhow::Result<()> {
        let store = self.store().clone();
        self.bridge = bridge_on(&store, &self.hs, &self.tg, &self.config).await?;
        Ok(())
    }

    /// A message event in the conversation room, as the homeserver pushes it, processed.
    async fn room_event(&self, sender: &str, event_id: &str, body: &str) -> anyhow::Result<()> {
        self.room_content(sender, event_id, json!({"msgtype": "m.text", "body": body}))
            .await
    }

    async fn room_content(
        &self,
        sender: &str,
        event_id: &str,
        content: Value,
    ) -> anyhow::Result<()> {
        self.content_in(ROOM, sender, event_id, content).await
    }

    /// [`World::room_content`] in any conversation's room.
    async fn content_in(
        &self,
        room: &str,
        sender: &str,
        event_id: &str,
        content: Value,
    ) -> anyhow::Result<()> {
        let now = self.clock.now_ms();
        let event = json!({
            "type": "m.room.message", "event_id": event_id, "room_id": room, "sender": sender,
            "origin_server_ts": now, "content": content,
        });
        let raw = Raw::from_json(serde_json::value::to_raw_value(&event)?);
        self.bridge
            .record_transaction(&format!("txn-{event_id}"), vec![raw])
            .await?;
        self.bridge.drain_inbox().await?;
        self.settle().await
    }

    /// Events the homeserver pushes in one transaction, recorded and handled (a Matrix
    /// responder's, in relay rooms and direct chats, become remote events, handled too); what
    /// they queue for rooms is not posted yet.
    async fn pushed(&self, txn: &str, events: Vec<Raw<AnyTimelineEvent>>) -> anyhow::Result<()> {
        self.bridge.record_transaction(txn, events).await?;
        self.bridge.drain_inbox().await?;
        self.bridge.drain_remote().await?;
        Ok(())
    }

    /// Something from Telegram, recorded and handled.
    async fn remote(&self, key: &str, event: RemoteEvent) -> anyhow::Result<()> {
        self.bridge
            .record_remote(telegram::SPEC.platform(), key, &event)
            .await?;
        self.bridge.drain_remote().await?;
        self.settle().await
    }

    async fn accept(&self, chat: &str, name: &str) -> anyhow::Result<()> {
        let offer_id = self.open_offer_of(chat).await?;
        self.remote(
            &format!("accept-{offer_id}"),
            RemoteEvent::Accept {
                offer_id,
                address: chat.into(),
                display_name: name.into(),
            },
        )
        .await
    }

    async fn command(&self, chat: &str, command: &str, args: &str) -> anyhow::Result<()> {
        self.remote(
            &format!("command-{chat}-{command}-{args}"),
            RemoteEvent::Command {
                address: chat.into(),
                command: command.into(),
                args: args.into(),
                reply_to: None,
                thread: None,
                language: None,
            },
        )
        .await
    }

    async fn open_offer_of(&self, chat: &str) -> anyhow::Result<i64> {
        self.store()
            .offers_for_room(ROOM)
            .await?
            .into_iter()
            .find(|o| o.address == chat && o.state == "open")
            .map(|o| o.id)
            .ok_or_else(|| anyhow::anyhow!("no open offer to chat {chat}"))
    }

    /// Posts what the last steps queued for the rooms (the worker does this on every pass).
    async fn settle(&self) -> anyhow::Result<()> {
        let left = self.bridge.drain_room_posts().await?;
        anyhow::ensure!(
            left.is_none(),
            "the stub homeserver takes every post at once"
        );
        Ok(())
    }

    /// Delivers the outbox until nothing is due any more (moving the clock past retries).
    async fn drain_outbox(&self) -> anyhow::Result<()> {
        for _ in 0..10 {
            match self.bridge.drain_outbox().await? {
                Some(wait) if wait <= Duration::from_secs(2) => self.clock.advance(wait),
                _ => return self.settle().await,
            }
        }
        self.settle().await
    }

    async fn state(&self) -> anyhow::Result<ConversationState> {
        Ok(self
            .store()
            .conversation(ROOM)
            .await?
            .expect("the conversation")
            .state)
    }

    async fn holders(&self) -> anyhow::Result<Vec<(String, String)>> {
        Ok(self
            .store()
            .assignments_for_room(ROOM)
            .await?
            .into_iter()
            .map(|a| (a.responder_id, a.state))
            .collect())
    }

    /// Ann takes the conversation (she is first in the round).
    async fn ann_holds_it(&self) -> anyhow::Result<()> {
        assert_eq!(self.tg.offers_to("1").len(), 1, "Ann is offered it first");
        assert!(self.tg.offers_to("2").is_empty());
        self.accept("1", "Ann").await?;
        assert_eq!(self.state().await?, ConversationState::Active);
        Ok(())
    }

    /// After a hand-off away from Ann: Ben has been offered it with a summary saying `why`.
    async fn handed_to_ben_because(&self, why: &str) -> anyhow::Result<()> {
        assert_eq!(self.state().await?, ConversationState::Transferring);
        assert_eq!(
            self.holders().await?,
            [("ann".to_owned(), "transferred".to_owned())]
        );
        let to_ben = self.tg.offers_to("2");
        assert_eq!(to_ben.len(), 1, "{:?}", self.tg.calls());
        let summary = to_ben[0].summary.clone().unwrap_or_default();
        assert!(
            summary.contains(&format!("Ann handed this conversation over ({why})")),
            "{summary}"
        );
        assert!(summary.contains("My kettle leaks."), "{summary}");
        assert!(
            self.hs.left().iter().any(|p| p.contains("_sb_ann")),
            "Ann's ghost must leave: {:?}",
            self.hs.left()
        );
        assert!(
            self.hs
                .sent_bodies()
                .iter()
                .any(|b| b.contains("a colleague will take over")),
            "the visitor is told"
        );
        let last = self.hs.states().last().cloned().unwrap_or_default();
        assert_eq!(last["state"], "transferring");
        assert_eq!(last["transfers"], 1);
        Ok(())
    }
}

#[tokio::test]
async fn an_offer_left_unanswered_moves_on_to_the_next_responder() -> anyhow::Result<()> {
    let w = world(Limits {
        offer_timeout_secs: 0,
        ..NO_LIMITS
    })
    .await?;
    assert_eq!(w.state().await?, ConversationState::Offered);
    assert_eq!(w.tg.offers_to("1").len(), 1);
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert!(
        w.tg.calls()
            .contains(&"close 1: This offer expired.".to_owned()),
        "{:?}",
        w.tg.calls()
    );
    let to_ben = w.tg.offers_to("2");
    assert_eq!(to_ben.len(), 1);
    let summary = to_ben[0].summary.clone().unwrap_or_default();
    assert!(
        summary.contains("Offered before to: Ann (no answer in time)."),
        "{summary}"
    );
    assert_eq!(w.state().await?, ConversationState::Offered);
    // Ben lets it lapse too: nobody is left, so it is queued and the visitor is told.
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert_eq!(w.state().await?, ConversationState::Queued);
    let last = w.hs.states().last().cloned().unwrap_or_default();
    assert_eq!(last["nobody_available"], true);
    assert!(
        w.hs.sent_bodies()
            .contains(&"Nobody is available right now.".to_owned())
    );
    // Looking again changes nothing and publishes nothing new.
    let published = w.hs.states().len();
    w.bridge.expire_offers().await?;
    w.settle().await?;
    w.bridge.drain_queue().await?;
    w.settle().await?;
    assert_eq!(w.hs.states().len(), published);
    Ok(())
}

/// The offer's time-out is the row's time and the clock's: a millisecond before it nothing
/// moves, at it the offer is withdrawn and the next responder asked. Nobody waits two minutes.
#[tokio::test]
async fn an_offer_expires_exactly_when_the_clock_reaches_its_time_out() -> anyhow::Result<()> {
    let w = world(Limits {
        offer_timeout_secs: 120,
        ..NO_LIMITS
    })
    .await?;
    assert_eq!(w.tg.offers_to("1").len(), 1, "Ann is asked at once");
    w.clock.advance(Duration::from_millis(120_000 - 1));
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert!(w.tg.calls().is_empty(), "{:?}", w.tg.calls());
    assert!(w.tg.offers_to("2").is_empty(), "Ben is not asked yet");
    assert_eq!(w.state().await?, ConversationState::Offered);

    w.clock.advance(Duration::from_millis(1));
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert_eq!(w.tg.calls(), ["close 1: This offer expired."]);
    assert_eq!(w.tg.offers_to("2").len(), 1, "Ben is asked now");
    let ann = w
        .store()
        .offers_for_room(ROOM)
        .await?
        .into_iter()
        .find(|o| o.address == "1")
        .expect("Ann's offer");
    assert_eq!(ann.state, "expired");
    Ok(())
}

/// Working hours are judged at the clock's time, in the responder's own zone: Ann works
/// from 09:00 in Berlin, so a visitor writing at 08:30 there waits, and is offered to her
/// when the clock reaches nine, not a minute before.
#[tokio::test]
async fn working_hours_are_judged_at_the_clocks_time_in_the_responders_zone() -> anyhow::Result<()>
{
    let mut ann = responder("ann", "1", &["support"]);
    ann.timezone = "Europe/Berlin".into();
    ann.hours = [("wed".to_owned(), vec!["09:00-17:00".to_owned()])].into();
    // The world starts at 06:30 UTC, 08:30 in Berlin; the visitor has written.
    let w = world_of(NO_LIMITS, vec![ann]).await?;
    assert!(w.tg.offers_to("1").is_empty(), "not before her hours");
    assert_eq!(w.state().await?, ConversationState::Queued);
    assert!(
        w.hs.sent_bodies()
            .contains(&"Nobody is available right now.".to_owned())
    );

    w.clock.advance(Duration::from_secs(29 * 60)); // 08:59 in Berlin
    w.bridge.drain_queue().await?;
    w.settle().await?;
    assert!(w.tg.offers_to("1").is_empty(), "08:59 is still before nine");

    w.clock.advance(Duration::from_secs(60)); // 09:00 in Berlin
    w.bridge.drain_queue().await?;
    w.settle().await?;
    assert_eq!(w.tg.offers_to("1").len(), 1, "offered at nine");
    assert_eq!(w.state().await?, ConversationState::Offered);
    Ok(())
}

#[tokio::test]
async fn a_decline_moves_on_at_once() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    let offer_id = w.open_offer_of("1").await?;
    w.remote(
        "decline",
        RemoteEvent::Decline {
            offer_id,
            address: "1".into(),
        },
    )
    .await?;
    assert!(
        w.tg.calls()
            .contains(&"close 1: You declined this conversation.".to_owned())
    );
    let summary = w.tg.offers_to("2")[0].summary.clone().unwrap_or_default();
    assert!(summary.contains("Ann (declined)"), "{summary}");
    Ok(())
}

#[tokio::test]
async fn no_first_reply_in_time_hands_over() -> anyhow::Result<()> {
    let w = world(Limits {
        first_reply_timeout_secs: Some(0),
        ..NO_LIMITS
    })
    .await?;
    w.ann_holds_it().await?;
    w.clock.advance(Duration::from_millis(5)); // past a limit of zero
    w.bridge.watch_responders().await?;
    w.settle().await?;
    w.handed_to_ben_because("no first reply in time").await?;
    assert!(
        w.tg.calls().iter().any(|c| c.starts_with("notify 1: The conversation with this visitor was handed to a colleague: no first reply in time")),
        "{:?}",
        w.tg.calls()
    );
    Ok(())
}

#[tokio::test]
async fn silence_while_the_visitor_waits_hands_over() -> anyhow::Result<()> {
    let w = world(Limits {
        idle_limit_secs: Some(0),
        ..NO_LIMITS
    })
    .await?;
    w.ann_holds_it().await?;
    // Ann answered (her ghost's message comes back from the homeserver), then the visitor
    // wrote again and Ann stays silent.
    w.room_event("@_sb_ann:test", "$r1", "Let me check.")
        .await?;
    w.drain_outbox().await?;
    w.clock.advance(Duration::from_millis(5));
    w.bridge.watch_responders().await?;
    w.settle().await?;
    assert_eq!(
        w.state().await?,
        ConversationState::Active,
        "nobody waits while the responder spoke last"
    );
    w.clock.advance(Duration::from_millis(5));
    w.room_event(VISITOR, "$v2", "Hello?").await?;
    w.drain_outbox().await?;
    w.clock.advance(Duration::from_millis(5));
    w.bridge.watch_responders().await?;
    w.settle().await?;
    w.handed_to_ben_because("silent while the visitor waited")
        .await?;
    Ok(())
}

#[tokio::test]
async fn going_offline_hands_over() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    w.bridge.watch_responders().await?;
    w.settle().await?;
    assert_eq!(w.state().await?, ConversationState::Active);
    w.store()
        .set_responder_status("ann", ResponderStatus::Offline)
        .await?;
    w.bridge.watch_responders().await?;
    w.settle().await?;
    w.handed_to_ben_because("they went offline").await?;
    Ok(())
}

#[tokio::test]
async fn an_unreachable_platform_hands_over() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    w.tg.unreachable.store(true, Ordering::SeqCst);
    w.room_event(VISITOR, "$v2", "Are you there?").await?;
    w.drain_outbox().await?;
    w.handed_to_ben_because("their platform could not be reached")
        .await?;
    Ok(())
}

#[tokio::test]
async fn lines_written_within_the_batch_window_go_out_as_one_message() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.tg.declare(Capabilities {
        batch_window: Duration::from_secs(5),
        ..RecordingConnector::STANDARD
    });
    w.ann_holds_it().await?;
    let sent = |w: &World| -> Vec<String> {
        w.tg.calls()
            .into_iter()
            .filter(|c| c.starts_with("deliver ") || c.starts_with("batch "))
            .collect()
    };
    let before = sent(&w);
    for (id, text) in [("$v2", "one"), ("$v3", "two"), ("$v4", "three")] {
        w.room_event(VISITOR, id, text).await?;
        w.clock.advance(Duration::from_secs(1));
    }
    // Not before the window of the first has passed.
    assert!(w.bridge.drain_outbox().await?.is_some());
    assert_eq!(sent(&w), before, "nothing goes out within the window");
    w.clock.advance(Duration::from_secs(3));
    w.bridge.drain_outbox().await?;
    let after: Vec<String> = sent(&w).into_iter().skip(before.len()).collect();
    assert_eq!(after, ["batch 1: one / two / three"]);
    assert!(w.store().pending_outbox(10).await?.is_empty());
    // Each line's event is done; a reply to the message finds the conversation.
    let id = format!("message-{}", w.tg.next_id.load(Ordering::SeqCst) - 1);
    assert_eq!(
        w.store()
            .room_of_remote_message("telegram", "1", &id)
            .await?
            .as_deref(),
        Some(ROOM)
    );
    Ok(())
}

#[tokio::test]
async fn a_bounce_of_a_held_conversation_hands_it_over_and_of_an_offer_declines_it()
-> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    let handle = w
        .store()
        .offers_for_room(ROOM)
        .await?
        .into_iter()
        .find(|o| o.address == "1")
        .and_then(|o| o.remote_message_id)
        .expect("Ann's offer has a handle");
    // About a conversation that is not Ann's to lose: nothing happens, nobody is told.
    w.remote(
        "bounce-0",
        RemoteEvent::Unreachable {
            address: "2".into(),
            thread: Some(handle.clone()),
            reason: "the mail bounced (5.1.1)".into(),
        },
    )
    .await?;
    assert_eq!(w.state().await?, ConversationState::Active);
    w.remote(
        "bounce-1",
        RemoteEvent::Unreachable {
            address: "1".into(),
            thread: Some(handle),
            reason: "the mail bounced (5.1.1)".into(),
        },
    )
    .await?;
    w.handed_to_ben_because("their address could not be reached")
        .await?;
    // Ben's offer bounces too: it counts as declined, and nobody else answers support.
    let to_ben = w
        .store()
        .offers_for_room(ROOM)
        .await?
        .into_iter()
        .find(|o| o.address == "2")
        .expect("Ben's offer");
    w.remote(
        "bounce-2",
        RemoteEvent::Unreachable {
            address: "2".into(),
            thread: to_ben.remote_message_id.clone(),
            reason: "the mail bounced (5.1.1)".into(),
        },
    )
    .await?;
    let state = w
        .store()
        .offers_for_room(ROOM)
        .await?
        .into_iter()
        .find(|o| o.id == to_ben.id)
        .expect("Ben's offer")
        .state;
    assert_eq!(state, "declined");
    Ok(())
}

#[tokio::test]
async fn a_rate_limited_part_is_retried_alone_and_the_rest_follows_in_order() -> anyhow::Result<()>
{
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    *w.tg.rate_limit_part.lock().unwrap() = Some(("three".into(), Duration::from_millis(50)));
    w.room_event(VISITOR, "$v2", "one | two | three | four | five")
        .await?;
    w.room_event(VISITOR, "$v3", "next").await?;
    w.drain_outbox().await?;
    let relayed: Vec<String> =
        w.tg.calls()
            .into_iter()
            .filter(|c| c.starts_with("deliver ") || c.starts_with("429 "))
            .collect();
    assert_eq!(
        relayed,
        [
            "deliver 1: one",
            "deliver 1: two",
            "429 1: three",
            "deliver 1: three",
            "deliver 1: four",
            "deliver 1: five",
            "deliver 1: next",
        ],
        "each part once, in order, the next message after the last part"
    );
    // Every part is mapped, so a reply to any of them finds the conversation.
    for id in 1..=6 {
        assert_eq!(
            w.store()
                .room_of_remote_message("telegram", "1", &format!("message-{id}"))
                .await?
                .as_deref(),
            Some(ROOM),
            "message-{id}"
        );
    }
    assert!(w.store().pending_outbox(10).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn transfer_to_anyone_to_a_topic_and_end() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    w.command("1", "transfer", "").await?;
    w.handed_to_ben_because("transfer requested").await?;

    // Ben takes it and sends it on to billing: only Cleo answers billing.
    w.accept("2", "Ben").await?;
    w.command("2", "transfer", "billing").await?;
    assert_eq!(w.state().await?, ConversationState::Transferring);
    let to_cleo = w.tg.offers_to("3");
    assert_eq!(to_cleo.len(), 1);
    assert_eq!(to_cleo[0].topic_name, "billing");
    assert!(
        to_cleo[0].summary.as_deref().unwrap_or_default().contains(
            "Ben handed this conversation over (transfer to the topic billing requested)"
        )
    );
    assert_eq!(
        w.store().conversation(ROOM).await?.unwrap().topic,
        "billing"
    );

    // Cleo takes it and ends it.
    w.accept("3", "Cleo").await?;
    assert_eq!(w.hs.states().last().unwrap()["transfers"], 2);
    assert_eq!(w.hs.states().last().unwrap()["responder"], "Cleo");
    w.command("3", "end", "").await?;
    assert_eq!(w.state().await?, ConversationState::Closed);
    assert_eq!(
        w.holders().await?,
        [
            ("ann".to_owned(), "transferred".to_owned()),
            ("ben".to_owned(), "transferred".to_owned()),
            ("cleo".to_owned(), "ended".to_owned()),
        ]
    );
    // Who held it, and why each one stopped, is kept.
    let history: Vec<(String, Option<String>, bool)> = w
        .store()
        .assignment_history(ROOM)
        .await?
        .into_iter()
        .map(|h| {
            (
                h.assignment.responder_id,
                h.end_reason,
                h.ended_at.is_some_and(|end| end >= h.started_at),
            )
        })
        .collect();
    assert_eq!(
        history,
        [
            (
                "ann".to_owned(),
                Some("transfer requested".to_owned()),
                true
            ),
            (
                "ben".to_owned(),
                Some("transfer to the topic billing requested".to_owned()),
                true
            ),
            (
                "cleo".to_owned(),
                Some("ended by the responder".to_owned()),
                true
            ),
        ]
    );
    let states: Vec<String> =
        w.hs.states()
            .iter()
            .map(|s| s["state"].as_str().unwrap_or_default().to_owned())
            .collect();
    assert_eq!(
        states,
        [
            "offered",
            "active",
            "transferring",
            "active",
            "transferring",
            "active",
            "closed"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn a_file_sent_before_the_accept_reaches_the_responder_as_a_file() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.room_content(
        VISITOR,
        "$img",
        json!({"msgtype": "m.image", "body": "leak.jpg", "url": "mxc://test/leak",
               "info": {"mimetype": "image/jpeg"}}),
    )
    .await?;
    w.room_event(VISITOR, "$v3", "See the photo.").await?;
    w.ann_holds_it().await?;
    w.drain_outbox().await?;
    let delivered: Vec<String> =
        w.tg.calls()
            .into_iter()
            .filter(|c| c.starts_with("deliver ") || c.starts_with("file "))
            .collect();
    // The first message was quoted in the offer; the photo follows as a photo, in order.
    assert_eq!(delivered, ["file 1: leak.jpg", "deliver 1: See the photo."]);
    Ok(())
}

/// On a platform that declares no edits, an offer cannot change once sent: closing it says
/// why in a new message naming the conversation, and an accepted offer is answered by the
/// notice alone, never by an edit the platform would refuse.
#[tokio::test]
async fn offers_on_a_platform_without_edits_are_closed_by_a_new_message() -> anyhow::Result<()> {
    let w = world(Limits {
        offer_timeout_secs: 120,
        ..NO_LIMITS
    })
    .await?;
    w.tg.declare(Capabilities {
        edits: false,
        ..RecordingConnector::STANDARD
    });
    w.clock.advance(Duration::from_secs(120));
    w.bridge.expire_offers().await?;
    w.settle().await?;
    assert_eq!(
        w.tg.calls(),
        ["notify 1: The offer of Visitor 00AB (support): This offer expired."]
    );
    w.accept("2", "Ben").await?;
    assert_eq!(w.state().await?, ConversationState::Active);
    let to_ben: Vec<String> =
        w.tg.calls()
            .into_iter()
            .filter(|c| c.contains(" 2: "))
            .collect();
    assert_eq!(
        to_ben,
        [
            "notify 2: You are now talking with Visitor 00AB. Reply to their messages to answer; /end closes the conversation."
        ]
    );
    Ok(())
}

/// A visitor's file larger than the responder's platform declares it takes is not uploaded
/// (to be refused, retried, or to make the responder look unreachable): the responder gets a
/// notice in its place, the visitor is told, and the conversation goes on with her.
#[tokio::test]
async fn a_file_larger_than_the_platform_takes_becomes_a_notice_both_ways() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    // The stub homeserver serves every download as two bytes (`{}`).
    w.tg.declare(Capabilities {
        files: Some(FileLimits { max_bytes: 1 }),
        ..RecordingConnector::STANDARD
    });
    w.room_content(
        VISITOR,
        "$big",
        json!({"msgtype": "m.file", "body": "manual.pdf", "url": "mxc://test/manual"}),
    )
    .await?;
    w.room_event(VISITOR, "$v3", "Page 4.").await?;
    w.ann_holds_it().await?;
    w.drain_outbox().await?;
    let to_ann: Vec<String> = w
        .tg
        .calls()
        .into_iter()
        .filter(|c| c.starts_with("deliver ") || c.starts_with("file ") || c.contains("manual.pdf"))
        .collect();
    assert_eq!(
        to_ann,
        [
            "notify 1: Visitor 00AB sent a file, manual.pdf (2 bytes), larger than Telegram takes (1 byte); it was not passed on.",
            "deliver 1: Page 4.",
        ]
    );
    assert!(
        w.hs.sent_bodies().contains(
            &"Your file manual.pdf was not passed on: it is 2 bytes, more than the 1 byte the responder can receive."
                .to_owned()
        ),
        "{:?}",
        w.hs.sent_bodies()
    );
    assert_eq!(w.state().await?, ConversationState::Active, "Ann keeps it");
    assert!(w.store().pending_outbox(10).await?.is_empty());
    assert!(w.store().dead_letters(10).await?.is_empty());
    Ok(())
}

/// A platform that declares no files gets none: a notice in its place, and the visitor told.
#[tokio::test]
async fn a_file_to_a_platform_without_files_becomes_a_notice_both_ways() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.tg.declare(Capabilities {
        files: None,
        ..RecordingConnector::STANDARD
    });
    w.ann_holds_it().await?;
    w.room_content(
        VISITOR,
        "$img",
        json!({"msgtype": "m.image", "body": "leak.jpg", "url": "mxc://test/leak"}),
    )
    .await?;
    w.drain_outbox().await?;
    let calls = w.tg.calls();
    assert!(
        calls.contains(
            &"notify 1: Visitor 00AB sent a file, leak.jpg, which cannot be sent on Telegram; it was not passed on."
                .to_owned()
        ),
        "{calls:?}"
    );
    assert!(!calls.iter().any(|c| c.starts_with("file ")), "{calls:?}");
    assert!(
        w.hs.sent_bodies().iter().any(|b| b.starts_with(
            "Your file leak.jpg was not passed on: the responder cannot receive files here."
        )),
        "{:?}",
        w.hs.sent_bodies()
    );
    assert_eq!(w.state().await?, ConversationState::Active);
    Ok(())
}

/// A Matrix responder who writes in their relay room after the conversation stopped being
/// theirs (ended, or handed to a colleague) gets a clear answer there, and nothing of it
/// reaches the visitor.
#[tokio::test]
async fn writing_in_a_relay_room_no_longer_yours_gets_a_clear_answer() -> anyhow::Result<()> {
    const RELAY: &str = "!relay:test";
    const MARA: &str = "@mara:test";
    let w = world(NO_LIMITS).await?;
    let offer = w.store().create_offer(ROOM, "mara", "matrix", MARA).await?;
    w.store().set_offer_message(offer.id, RELAY).await?;
    w.store()
        .transition_offer(offer.id, "open", "accepted")
        .await?;
    let event = json!({
        "type": "m.room.message", "event_id": "$late", "room_id": RELAY, "sender": MARA,
        "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": "Still there?"},
    });
    let raw = Raw::from_json(serde_json::value::to_raw_value(&event)?);
    w.bridge.record_transaction("txn-late", vec![raw]).await?;
    // The Matrix connector reads it into a remote event, handled in the responder's lane.
    w.bridge.drain_inbox().await?;
    w.bridge.drain_remote().await?;
    w.settle().await?;
    let sent: Vec<(String, Value)> =
        w.hs.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "PUT" && p.contains("/send/m.room.message/"))
            .map(|(_, p, b)| (p.clone(), b.clone()))
            .collect();
    let answers: Vec<&str> = sent
        .iter()
        .filter(|(p, _)| p.contains("relay"))
        .filter_map(|(_, b)| b["body"].as_str())
        .collect();
    assert_eq!(answers.len(), 1, "{sent:#?}");
    assert!(answers[0].contains("no longer yours"), "{answers:?}");
    assert!(
        !sent
            .iter()
            .any(|(_, b)| b["body"].as_str() == Some("Still there?")),
        "the late message reached the visitor: {sent:#?}"
    );
    Ok(())
}

/// A Matrix responder accepts by joining their relay room: the Matrix connector reads the join
/// into an Accept that is handled like Telegram's (in their lane, under the conversation's
/// lock), so they hold the conversation; a join the homeserver delivers again (another
/// transaction, after a restart) changes nothing; leaving afterwards does not decline.
#[tokio::test]
async fn joining_a_relay_room_accepts_once_however_often_the_join_arrives() -> anyhow::Result<()> {
    const RELAY: &str = "!relay:test";
    const MARA: &str = "@mara:test";
    let w = world(NO_LIMITS).await?;
    let offer = w.store().create_offer(ROOM, "ann", "matrix", MARA).await?;
    w.store().set_offer_message(offer.id, RELAY).await?;
    let member = |id: &str, membership: &str| {
        let event = json!({
            "type": "m.room.member", "event_id": id, "room_id": RELAY, "sender": MARA,
            "state_key": MARA, "origin_server_ts": 1,
            "content": {"membership": membership, "displayname": "Mara"},
        });
        Raw::from_json(serde_json::value::to_raw_value(&event).expect("JSON"))
    };
    for txn in ["txn-join", "txn-join-again"] {
        w.pushed(txn, vec![member("$join", "join")]).await?;
        w.settle().await?;
    }
    assert_eq!(w.state().await?, ConversationState::Active);
    let holders = w.store().active_assignments_for_room(ROOM).await?;
    assert_eq!(holders.len(), 1);
    assert_eq!(
        (holders[0].platform.as_str(), holders[0].address.as_str()),
        ("matrix", MARA)
    );
    let mut told: Vec<String> =
        w.hs.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "PUT" && p.contains("/send/m.room.message/"))
            .filter_map(|(_, _, b)| b["body"].as_str().map(str::to_owned))
            .filter(|b| b.starts_with("You are now talking with"))
            .collect();
    // The visitor is told once who they talk with, and Mara once in her relay room (with
    // Matrix's way of writing commands). Different rooms: in either order.
    told.sort();
    assert_eq!(
        told,
        [
            "You are now talking with Ann.",
            "You are now talking with Visitor 00AB. Reply to their messages to answer; !end closes the conversation.",
        ],
        "each told once"
    );

    w.pushed("txn-leave", vec![member("$leave", "leave")])
        .await?;
    assert_eq!(w.state().await?, ConversationState::Active, "not declined");
    Ok(())
}

/// What the bot tells a Matrix responder while the homeserver is down (here: that the
/// conversation they ended has ended, and the answer to a `!help` in their direct chat), and
/// their removal from the relay room, are kept until it is back, across a restart, and then
/// arrive once each, in order, every attempt under the same transaction ID. (They used to be
/// sent at once and dropped when the homeserver did not answer.)
#[tokio::test]
async fn a_matrix_responders_notices_while_the_homeserver_is_down_arrive_once_it_is_back()
-> anyhow::Result<()> {
    const RELAY: &str = "!relay:test";
    const DIRECT: &str = "!directchat:test";
    const MARA: &str = "@mara:test";
    let mut w = world(NO_LIMITS).await?;
    let offer = w.store().create_offer(ROOM, "ann", "matrix", MARA).await?;
    w.store().set_offer_message(offer.id, RELAY).await?;
    let event = |room: &str, id: &str, content: Value| {
        let (kind, key) = if content.get("membership").is_some() {
            ("m.room.member", Some(MARA))
        } else {
            ("m.room.message", None)
        };
        let mut event = json!({
            "type": kind, "event_id": id, "room_id": room, "sender": MARA,
            "origin_server_ts": 1, "content": content,
        });
        if let Some(key) = key {
            event["state_key"] = json!(key);
        }
        Raw::from_json(serde_json::value::to_raw_value(&event).expect("JSON"))
    };
    // Mara accepts by joining her relay room, while the homeserver is up.
    let join = json!({"membership": "join", "displayname": "Mara"});
    w.pushed("txn-join", vec![event(RELAY, "$join", join)])
        .await?;
    w.settle().await?;
    assert_eq!(w.state().await?, ConversationState::Active);

    // The homeserver goes away (it still pushed us what Mara wrote, as Synapse does from
    // its own queue while we cannot reach it). Mara ends the conversation and asks for help.
    w.hs.set_down(true);
    let text = |body: &str| json!({"msgtype": "m.text", "body": body});
    w.pushed(
        "txn-mara",
        vec![
            event(RELAY, "$end", text("!end")),
            event(DIRECT, "$help", text("!help")),
        ],
    )
    .await?;
    assert_eq!(w.state().await?, ConversationState::Closed);
    // Tried, refused, tried again later (past the backoff of every room's first post): the
    // second try first looks whether the first one was stored (its answer was a 502), and
    // that read is refused too.
    for _ in 0..2 {
        let wait = w.bridge.drain_room_posts().await?;
        assert!(wait.is_some(), "the refused posts wait for a retry");
        w.clock.advance(Duration::from_secs(2));
    }
    let refused = StubHomeserver::writes_into(&w.hs.refused, "relay");
    assert!(
        refused.iter().any(|(_, b)| b == "Conversation ended."),
        "the notice was tried while the homeserver was down: {refused:#?}"
    );
    let looked =
        w.hs.refused
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "GET" && p.contains("relay") && p.contains("/messages"))
            .count();
    assert!(looked >= 1, "the retry looked for the notice first");

    // The homeserver comes back, and Switchboard restarts (it starts once the homeserver
    // answers): the new process posts what the old one had queued.
    w.hs.set_down(false);
    w.restart().await?;
    w.clock.advance(Duration::from_secs(60));
    w.settle().await?;

    let relay = StubHomeserver::writes_into(&w.hs.requests, "relay");
    let bodies: Vec<&str> = relay.iter().map(|(_, b)| b.as_str()).collect();
    assert_eq!(
        bodies,
        [
            "You are now talking with Visitor 00AB. Reply to their messages to answer; !end closes the conversation.",
            "Conversation ended.",
            "kick: Conversation ended.",
        ],
        "Mara is told once, then removed"
    );
    // Every attempt carried the transaction ID it finally went through with, so a lost
    // answer could not have shown it twice.
    let posted_as = &relay[1].0;
    assert!(
        refused
            .iter()
            .filter(|(_, b)| b == "Conversation ended.")
            .all(|(p, _)| p == posted_as),
        "{posted_as} vs {refused:#?}"
    );
    let direct = StubHomeserver::writes_into(&w.hs.requests, "directchat");
    assert_eq!(direct.len(), 1, "{direct:#?}");
    assert!(
        direct[0]
            .1
            .starts_with("Switchboard relays website visitors to you."),
        "{direct:#?}"
    );
    assert!(
        direct[0].1.contains("!end"),
        "Matrix's commands: {direct:#?}"
    );
    // The visitor's side too, once.
    let ended =
        w.hs.sent_bodies()
            .into_iter()
            .filter(|b| b == "The conversation has ended.")
            .count();
    assert_eq!(ended, 1);
    Ok(())
}

/// A Telegram update the connector could not read at all is recorded like any other event,
/// and its sender is told (through the bridge, at the chat's pace) that nothing was passed on.
#[tokio::test]
async fn an_unreadable_update_gets_its_sender_a_clear_answer() -> anyhow::Result<()> {
    let w = world(NO_LIMITS).await?;
    w.remote(
        "77.unreadable",
        RemoteEvent::Unreadable {
            address: "1".into(),
        },
    )
    .await?;
    let told: Vec<String> =
        w.tg.calls()
            .into_iter()
            .filter(|c| c.starts_with("notify 1: "))
            .collect();
    assert_eq!(told.len(), 1, "{told:?}");
    assert!(told[0].contains("could not be read"), "{told:?}");
    Ok(())
}

/// An event that can never be handled (here: its conversation's row is corrupt) is set aside
/// as a dead letter with its reason, and the other conversation's events go on. Retried after
/// the row is repaired, it is handled like any other.
#[tokio::test]
async fn an_event_that_can_never_work_is_set_aside_and_the_others_go_on() -> anyhow::Result<()> {
    const BROKEN: &str = "!broken:test";
    let w = world(NO_LIMITS).await?;
    w.store()
        .insert_conversation(&Conversation {
            room_id: BROKEN.into(),
            topic: "support".into(),
            visitor_user_id: "@guest2:test".into(),
            visitor_alias: "Visitor 00CD".into(),
            state: ConversationState::Queued,
            created_at: 1,
            language: None,
        })
        .await?;
    let url = format!("sqlite://{}", w._dir.path().join("store.db").display());
    let db = sqlx::AnyPool::connect(&url).await?;
    sqlx::query("UPDATE conversations SET state = 'no-such-state' WHERE room_id = $1")
        .bind(BROKEN)
        .execute(&db)
        .await?;

    let event = |room: &str, sender: &str, id: &str, body: &str| {
        let e = json!({
            "type": "m.room.message", "event_id": id, "room_id": room, "sender": sender,
            "origin_server_ts": 1, "content": {"msgtype": "m.text", "body": body},
        });
        Raw::from_json(serde_json::value::to_raw_value(&e).unwrap())
    };
    // The broken conversation's event arrives first, in the same transaction as the other's.
    w.bridge
        .record_transaction(
            "txn-mixed",
            vec![
                event(BROKEN, "@guest2:test", "$b1", "Hello?"),
                event(ROOM, VISITOR, "$v2", "Still leaking."),
            ],
        )
        .await?;
    w.bridge.drain_inbox().await?;
    let transcript: Vec<String> = w
        .store()
        .messages(ROOM)
        .await?
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert!(
        transcript.contains(&"Still leaking.".to_owned()),
        "the other conversation went on: {transcript:?}"
    );
    let dead = w.store().dead_letters(10).await?;
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].source, DeadLetterSource::Inbox);
    assert_eq!(dead[0].room_id.as_deref(), Some(BROKEN));
    assert!(dead[0].reason.contains("corrupt"), "{:?}", dead[0].reason);
    assert!(
        !dead[0].reason.contains("Hello?"),
        "the reason holds no content"
    );
    assert_eq!(w.store().pending_events(10).await?.len(), 0);

    // Repaired and retried: handled once, and no longer a dead letter.
    sqlx::query("UPDATE conversations SET state = 'queued' WHERE room_id = $1")
        .bind(BROKEN)
        .execute(&db)
        .await?;
    assert!(w.store().retry_dead_letter(dead[0].id).await?.is_some());
    w.bridge.drain_inbox().await?;
    let broken: Vec<String> = w
        .store()
        .messages(BROKEN)
        .await?
        .into_iter()
        .map(|m| m.body)
        .collect();
    assert_eq!(broken, ["Hello?"]);
    assert!(w.store().dead_letters(10).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_responders_formatting_reaches_the_room_within_the_spec_allow_list() -> anyhow::Result<()>
{
    let w = world(NO_LIMITS).await?;
    w.ann_holds_it().await?;
    let html = r#"<b>Hi</b> <img src="https://tracker.example/p.png" alt="pic"><script>x()</script><a href="javascript:x()" onclick="x()">here</a>"#;
    w.remote(
        "80.message",
        RemoteEvent::Message {
            address: "1".into(),
            message_id: "80".into(),
            reply_to: None,
            body: "Hi here".into(),
            formatted_body: Some(html.into()),
            display_name: "Ann".into(),
            file: None,
            thread: None,
            language: None,
        },
    )
    .await?;
    w.remote(
        "81.edit",
        RemoteEvent::Edit {
            address: "1".into(),
            message_id: "80".into(),
            body: "Hi there".into(),
            formatted_body: Some(html.replace("here", "there")),
        },
    )
    .await?;
    let sent: Vec<Value> =
        w.hs.requests
            .lock()
            .unwrap()
            .iter()
            .filter(|(m, p, _)| m == "PUT" && p.contains("/send/m.room.message/"))
            .map(|(_, _, body)| body.clone())
            .filter(|body| body["body"].as_str().is_some_and(|b| b.contains("Hi ")))
            .collect();
    assert_eq!(sent.len(), 2, "the message and its edit: {sent:?}");
    let message = sent[0]["formatted_body"].as_str().unwrap_or_default();
    assert_eq!(message, r#"<b>Hi</b> <img alt="pic"><a>here</a>"#);
    let edit = sent[1]["m.new_content"]["formatted_body"]
        .as_str()
        .unwrap_or_default();
    assert_eq!(edit, r#"<b>Hi</b> <img alt="pic"><a>there</a>"#);
    Ok(())
}

/// Ann (chat 1) writes `body` as a Telegram reply to message `reply_to`.
fn anns_reply(message_id: &str, reply_to: &str, body: &str) -> RemoteEvent {
    RemoteEvent::Message {
        address: "1".into(),
        message_id: message_id.into(),
        reply_to: Some(reply_to.into()),
        body: body.into(),
        formatted_body: None,
        display_name: "Ann".into(),
        file: None,
        thread: None,
        language: None,
    }
}

/// A responder holding two conversations replies to our message before its mapping to its
/// conversation is written (a platform shows our message as soon as it takes it; which
/// conversation it belongs to is written once the send's answer is back). The reply waits for
/// the delivery under way and reaches that conversation, where it used to be answered "which
/// conversation?" and relayed nowhere. A reply to a message of no conversation waits for
/// nothing when no delivery is under way.
#[tokio::test]
async fn a_reply_that_comes_before_its_message_is_mapped_reaches_its_conversation()
-> anyhow::Result<()> {
    const SECOND: &str = "!second:test";
    let w = world_of(NO_LIMITS, vec![responder("ann", "1", &["support"])]).await?;
    w.accept("1", "Ann").await?;
    w.store()
        .insert_conversation(&Conversation {
            room_id: SECOND.into(),
            topic: "support".into(),
            visitor_user_id: "@v2:test".into(),
            visitor_alias: "Visitor 00CD".into(),
            state: ConversationState::Queued,
            created_at: 2,
            language: None,
        })
        .await?;
    w.content_in(
        SECOND,
        "@v2:test",
        "$second-1",
        json!({"msgtype": "m.text", "body": "Second visitor here."}),
    )
    .await?;
    let offer = w
        .store()
        .offers_for_room(SECOND)
        .await?
        .into_iter()
        .find(|o| o.state == "open")
        .expect("the second conversation is offered to Ann");
    w.remote(
        "accept-second",
        RemoteEvent::Accept {
            offer_id: offer.id,
            address: "1".into(),
            display_name: "Ann".into(),
        },
    )
    .await?;
    assert_eq!(
        w.store()
            .active_assignments_for_address("telegram", "1")
            .await?
            .len(),
        2,
        "Ann holds both"
    );

    // The second visitor writes again; the platform shows it to Ann at once but answers
    // our send only 300 ms later, and she replies to it in between.
    w.tg.slow_part.lock().unwrap().replace((
        "Second visitor again.".to_owned(),
        Duration::from_millis(300),
    ));
    w.content_in(
        SECOND,
        "@v2:test",
        "$second-2",
        json!({"msgtype": "m.text", "body": "Second visitor again."}),
    )
    .await?;
    let bridge = w.bridge.clone();
    let delivering = tokio::spawn(async move { bridge.drain_outbox().await });
    let shown = loop {
        let showing = w.tg.calls().into_iter().find_map(|c| {
            c.strip_prefix("showing 1: Second visitor again. as ")
                .map(str::to_owned)
        });
        if let Some(id) = showing {
            break id;
        }
        anyhow::ensure!(!delivering.is_finished(), "the delivery ended unseen");
        tokio::time::sleep(Duration::from_millis(5)).await;
    };
    w.remote(
        "reply-early",
        anns_reply("81", &shown, "For the second visitor."),
    )
    .await?;
    delivering.await??;
    let second: Vec<String> = StubHomeserver::writes_into(&w.hs.requests, SECOND)
        .into_iter()
        .map(|(_, body)| body)
        .collect();
    assert!(
        second.iter().any(|b| b == "For the second visitor."),
        "the reply to {shown} reaches the second conversation: {second:?}"
    );
    assert!(
        !w.tg
            .calls()
            .iter()
            .any(|c| c.contains("several conversations")),
        "Ann is not asked which conversation: {:?}",
        w.tg.calls()
    );

    // A reply to a message of no conversation (a notice about none of them), with nothing
    // being delivered to her: no mapping can come, so she is asked which conversation she
    // means straight away, not after a wait.
    let started = std::time::Instant::now();
    w.remote(
        "reply-to-notice",
        anns_reply("82", "notice-99", "Which one was that?"),
    )
    .await?;
    let waited = started.elapsed();
    assert!(
        w.tg.calls()
            .iter()
            .any(|c| c.contains("several conversations")),
        "a reply to a message of no conversation is answered: {:?}",
        w.tg.calls()
    );
    assert!(
        waited < Duration::from_secs(5),
        "nothing was being delivered, so nothing was waited for (took {waited:?})"
    );
    Ok(())
}
