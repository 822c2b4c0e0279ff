//! A homeserver outage longer than the client's own retries (about 23 s) delays what
//! responders write, and what Switchboard tells a Matrix responder, and never drops either. Switchboard reaches the real Synapse through a TCP
//! proxy the test can cut: while it is cut, every request Switchboard makes to the homeserver
//! fails as it would with Synapse down (connection refused or reset), while Synapse itself
//! keeps running for the visitor and the Matrix responder's own client.

mod common;

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use common::*;
use telegram_standin::StandIn;
use tokio::net::{TcpListener, TcpStream};

const SLOT: u32 = 4;
const TOKEN: &str = "8404:outage-standin-token";
/// Longer than the homeserver client's whole retry budget (8 attempts, about 23 s), which is
/// where messages used to be dropped.
const OUTAGE: Duration = Duration::from_secs(30);

/// A TCP proxy to the homeserver that can be cut: while cut, new connections are closed at
/// once and open ones are torn down.
struct CuttableProxy {
    url: String,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl CuttableProxy {
    async fn start(target: &str) -> anyhow::Result<Self> {
        let target = target.trim_start_matches("http://").to_owned();
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        let up = Arc::new(AtomicBool::new(true));
        let connections: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let (up2, conns2) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::SeqCst) {
                    drop(inbound); // the homeserver is "down"
                    continue;
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns2.lock().unwrap().push(task.abort_handle());
            }
        });
        Ok(Self {
            url,
            up,
            connections,
        })
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_responders_write_and_are_told_while_the_homeserver_is_down_arrives_once_it_is_back()
-> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let proxy = CuttableProxy::start(&env.hs_url).await?;
    // Switchboard talks to the homeserver through the proxy; everyone else directly.
    let via_proxy = TestEnv {
        hs_url: proxy.url.clone(),
        server_name: env.server_name.clone(),
        dir: env.dir.clone(),
        bin: env.bin.clone(),
    };
    let tg = StandIn::start(TOKEN).await?;
    let tina = tg.user(8404, "Tina", None);
    let mara_local = unique("mara");
    let mara_id = env.user_id(&mara_local);
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"support\"\nname = \"Support\"\n\n\
         [[topics]]\nid = \"sales\"\nname = \"Sales\"\n\n\
         [[responders]]\nid = \"tina\"\ndisplay_name = \"Tina\"\ntopics = [\"support\"]\n\
         contacts = [{{ platform = \"telegram\", address = \"{tina}\" }}]\n\n\
         [[responders]]\nid = \"mara\"\ndisplay_name = \"Mara\"\ntopics = [\"sales\"]\n\
         contacts = [{{ platform = \"matrix\", address = {mara_id:?} }}]\n",
        api = tg.api_url(),
        tina = tina.id,
    );
    let sb = Switchboard::start(&via_proxy, &slot, &config).await?;
    let store = sb.store().await?;
    let mut mara = MatrixResponder::register(&env, &mara_local).await?;

    // Tina (Telegram) holds one conversation, Mara (Matrix) another.
    let mut tinas_visitor = Visitor::guest(&env, &sb.base).await?;
    tinas_visitor.start("support").await?;
    tinas_visitor.send("Question for support").await?;
    tg.wait_for_sent(tina.id, |s| open_offers(s).len() == 1, WAIT)
        .await
        .map_err(anyhow::Error::msg)?;
    accept_open_offer(&tg, &tina);
    tinas_visitor
        .sync_until("Tina", |seen| {
            seen.iter()
                .any(|s| s.body == "You are now talking with Tina.")
        })
        .await?;

    let mut maras_visitor = Visitor::guest(&env, &sb.base).await?;
    let maras_room = maras_visitor.start("sales").await?;
    maras_visitor.send("Question for sales").await?;
    let relay = relay_room_of(&store, &maras_room, "mara").await?;
    let relay_room = mara.accept_invite(&relay).await?;
    maras_visitor
        .sync_until("Mara", |seen| {
            seen.iter()
                .any(|s| s.body.starts_with("You are now talking with"))
        })
        .await?;
    // Mara also has a direct chat with the bot, for her status.
    let bot =
        matrix_sdk::ruma::OwnedUserId::try_from(format!("@sbt{SLOT}bot:{}", env.server_name))?;
    let dm = mara.direct_chat_with(&bot).await?;
    let dm_id = dm.room_id().to_owned();

    // The homeserver goes away for longer than the client's retries last. Both responders
    // write meanwhile.
    proxy.cut();
    tg.user_sends(&tina, "First, while you were away");
    tg.user_sends(&tina, "Second, still away");
    relay_room
        .send(
            matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain(
                "Mara writes during the outage",
            ),
        )
        .await?;
    // And Mara steps away: the answer is a notice from the bot into her direct chat, due
    // while Switchboard cannot reach the homeserver (Synapse still pushes her message to it).
    dm.send(matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain("!away"))
        .await?;
    tokio::time::sleep(OUTAGE).await;
    assert!(
        sb.log_text().contains("homeserver unreachable"),
        "Switchboard never found the homeserver unreachable: the test proves nothing"
    );
    proxy.restore();

    // Everything arrives, once each, in order.
    tinas_visitor
        .sync_until("Tina's messages", |seen| {
            seen.iter().any(|s| s.body == "Second, still away")
        })
        .await?;
    maras_visitor
        .sync_until("Mara's message", |seen| {
            seen.iter()
                .any(|s| s.body == "Mara writes during the outage")
        })
        .await?;
    // A message written after the outage comes after them, and by then a duplicate of
    // either would have been seen.
    tg.user_sends(&tina, "Third, after the outage");
    tinas_visitor
        .sync_until("Tina's message after the outage", |seen| {
            seen.iter().any(|s| s.body == "Third, after the outage")
        })
        .await?;
    let tinas: Vec<&str> = tinas_visitor
        .seen
        .iter()
        .filter(|s| s.body.contains("away") || s.body.contains("after the outage"))
        .map(|s| s.body.as_str())
        .collect();
    assert_eq!(
        tinas,
        [
            "First, while you were away",
            "Second, still away",
            "Third, after the outage"
        ]
    );
    let maras = maras_visitor
        .seen
        .iter()
        .filter(|s| s.body == "Mara writes during the outage")
        .count();
    assert_eq!(maras, 1);
    // Mara is told she is away, once, although the notice was due while the homeserver was
    // out of reach (it used to be dropped after the client's retries).
    const AWAY: &str = "You are away: no new conversations until you send !available.";
    const BACK: &str = "You are available: new conversations will be offered to you.";
    mara.wait_for_messages(dm_id.as_str(), bot.as_str(), &[AWAY])
        .await?;
    // The answer to her next command comes after it in the same queue: by then a second
    // copy would have arrived.
    dm.send(
        matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain("!available"),
    )
    .await?;
    mara.wait_for_messages(dm_id.as_str(), bot.as_str(), &[BACK])
        .await?;
    let told = mara
        .bodies(dm_id.as_str(), bot.as_str())
        .into_iter()
        .filter(|b| b == AWAY)
        .count();
    assert_eq!(told, 1, "{:?}", mara.bodies(dm_id.as_str(), bot.as_str()));
    // Tina was never told her message failed.
    assert!(
        !tg.sent(tina.id).iter().any(|m| m
            .text
            .as_deref()
            .is_some_and(|t| t.contains("could not be delivered"))),
        "a message was reported lost"
    );
    Ok(())
}
