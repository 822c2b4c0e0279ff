//! A database server that goes away: what is asked of the store meanwhile fails soon, as
//! retry-later, instead of waiting out sqlx's 30-second wait for a connection (every
//! homeserver transaction and visitor request hung that long before its error), and the store
//! works again once the server is back.

mod common;

use std::time::{Duration, Instant};

use sqlx::Connection;
use switchboard_bridge::{Store, store::SERVER_ACQUIRE_TIMEOUT};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
};

/// A TCP forwarder in front of the test PostgreSQL that can be cut and restored, as a server
/// that stops and comes back looks to a client: cut, every connection is dropped and the port
/// refuses new ones (nobody listens on it); restored, it listens again on the same port.
struct Cable {
    port: u16,
    up: watch::Sender<bool>,
}

impl Cable {
    async fn to(target: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let (up, mut watching) = watch::channel(true);
        // Watched by the loop below, between its turns; each turn waits on a clone of it.
        tokio::spawn(async move {
            let mut listener = Some(listener);
            loop {
                let Some(open) = &listener else {
                    if watching.wait_for(|up| *up).await.is_err() {
                        return;
                    }
                    listener = TcpListener::bind(("127.0.0.1", port)).await.ok();
                    continue;
                };
                let mut down = watching.clone();
                tokio::select! {
                    accepted = open.accept() => {
                        let Ok((mut client, _)) = accepted else { return };
                        let mut cut = watching.clone();
                        let target = target.clone();
                        tokio::spawn(async move {
                            let Ok(mut server) = TcpStream::connect(&target).await else {
                                return;
                            };
                            tokio::select! {
                                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                                _ = cut.wait_for(|up| !*up) => {}
                            }
                        });
                    }
                    _ = async { down.wait_for(|up| !*up).await.map(|_| ()) } => listener = None,
                }
            }
        });
        Ok(Self { port, up })
    }

    fn cut(&self) {
        self.up.send_replace(false);
    }

    fn restore(&self) {
        self.up.send_replace(true);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_database_server_gone_writes_fail_soon_as_retry_later() -> anyhow::Result<()> {
    let (direct, url) = common::fresh_postgres("sbgone").await?;
    let mut through = url::Url::parse(&url)?;
    let target = format!(
        "{}:{}",
        through.host_str().expect("a host"),
        through.port().unwrap_or(5432)
    );
    let cable = Cable::to(target).await?;
    through
        .set_port(Some(cable.port))
        .expect("a URL with a port");
    let store = Store::connect(through.as_str()).await?;
    assert!(
        store
            .record_remote_event("telegram", "before", "{}")
            .await?
    );

    cable.cut();
    // The first ask may fail at once, on the connection that was dropped under it; the next
    // finds no connection and must open one while the server refuses.
    let _ = store
        .record_remote_event("telegram", "meanwhile", "{}")
        .await;
    let asked = Instant::now();
    let error = store
        .record_remote_event("telegram", "meanwhile", "{}")
        .await
        .expect_err("the server is gone");
    let waited = asked.elapsed();
    assert!(
        error.is_transient(),
        "retry-later, not never-works: {error}"
    );
    // sqlx alone waits 30 s; the bound leaves room for a slow machine.
    assert!(
        waited < SERVER_ACQUIRE_TIMEOUT + Duration::from_secs(10),
        "failed only after {waited:?}: {error}"
    );

    cable.restore();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match store.record_remote_event("telegram", "after", "{}").await {
            Ok(recorded) => {
                assert!(recorded);
                break;
            }
            Err(e) if Instant::now() < deadline => {
                assert!(e.is_transient(), "{e}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("the store did not come back: {e}"),
        }
    }
    let mut look = sqlx::AnyConnection::connect(&url).await?;
    let keys: Vec<(String,)> = sqlx::query_as("SELECT event_key FROM remote_inbox ORDER BY seq")
        .fetch_all(&mut look)
        .await?;
    let keys: Vec<&str> = keys.iter().map(|(k,)| k.as_str()).collect();
    assert_eq!(
        keys,
        ["before", "after"],
        "nothing recorded while it was gone"
    );
    look.close().await?;
    store.close().await;
    direct.close().await;
    Ok(())
}
