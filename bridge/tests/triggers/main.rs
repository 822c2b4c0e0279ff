//! Every hand-off trigger, deterministically, through the real bridge code: a real store
//! (SQLite), the real routing and hand-off logic, a recording connector in place of Telegram
//! and a recording stub in place of the homeserver. Nothing runs in the background: each
//! test calls the worker's steps itself (`drain_inbox`, `drain_remote`, `drain_outbox`,
//! `expire_offers`, `watch_responders`), so what happens, and in which order, is fixed.
//! Time is a manual clock given to the store (and so to the bridge): a test moves it past a
//! limit instead of waiting for one, and nothing sleeps. (The end-to-end tests on Synapse show
//! the same triggers with real time limits.)

#[path = "../common/mod.rs"]
mod common;
mod delivery;
mod handover;
mod incoming;
mod matrix_responder;
mod offers;

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
