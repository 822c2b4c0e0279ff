//! The transaction order guard's state shared through the store (issue 17,
//! `bridge/src/store/appservice_state.rs`), on both engines: two instances' guards, each with
//! a store of its own on one database, take the homeserver's transactions spread over them,
//! and a transaction one refused is known to the other when it comes back. Also whether a
//! visitor is typing, which one instance records and another reads.

mod common;

use std::{sync::Arc, time::Duration};

use switchboard_appservice::txn_order::{SharedOrder, TransactionOrder, Verdict};
use switchboard_bridge::{Store, clock::ManualClock, store::Engine};

async fn take(order: &TransactionOrder, id: &str) {
    assert_eq!(order.check(id).await, Verdict::Take, "{id}");
    order.recorded(id).await;
}

async fn suite(a_store: Store, b_store: Store) -> anyhow::Result<()> {
    assert!(a_store.load().await?.is_none(), "nothing saved yet");
    let a = TransactionOrder::shared(Arc::new(a_store.clone()));
    let b = TransactionOrder::shared(Arc::new(b_store.clone()));
    // Round robin over the two: no transaction is a skip.
    for n in 1..=10u64 {
        take(if n % 2 == 1 { &a } else { &b }, &n.to_string()).await;
    }
    // 11 stranded: a refuses 12; the homeserver's recoverer sends 11 to b, then 12 to a.
    assert_eq!(a.check("12").await, Verdict::HoldBack { last: 10 });
    take(&b, "11").await;
    take(&a, "12").await;
    // Refused by b and sent again first, to a: the numbers are shared with other appservices,
    // so the next skip is taken unchecked by either.
    assert_eq!(b.check("20").await, Verdict::HoldBack { last: 12 });
    take(&a, "20").await;
    take(&b, "25").await;
    // A guard started later (an instance restarted) reads where the others are.
    let c = TransactionOrder::shared(Arc::new(b_store.clone()));
    take(&c, "26").await;
    assert!(a_store.load().await?.is_some());
    visitor_typing_is_shared(&a_store, &b_store).await?;
    a_store.close().await;
    b_store.close().await;
    Ok(())
}

/// One instance records that a visitor stopped typing; the other, which showed them typing
/// since before that, reads it (`bridge/typing.rs`). Rows of rooms quiet for two minutes go.
async fn visitor_typing_is_shared(a: &Store, b: &Store) -> anyhow::Result<()> {
    let started = 1_800_000_000_000;
    let clock = ManualClock::new(started);
    let (a, b) = (
        a.clone().with_clock(clock.clone()),
        b.clone().with_clock(clock.clone()),
    );
    assert_eq!(b.visitor_typing("!r:x").await?, None);
    a.put_visitor_typing("!r:x", true).await?;
    clock.advance(Duration::from_secs(3));
    b.put_visitor_typing("!r:x", false).await?;
    assert_eq!(
        a.visitor_typing("!r:x").await?,
        Some((false, started + 3_000)),
        "stopped, after a learned it started"
    );
    b.put_visitor_typing("!other:x", true).await?;
    clock.advance(Duration::from_secs(121));
    a.put_visitor_typing("!third:x", true).await?;
    assert_eq!(
        b.visitor_typing("!r:x").await?,
        None,
        "quiet for two minutes"
    );
    assert_eq!(b.visitor_typing("!other:x").await?, None);
    assert!(b.visitor_typing("!third:x").await?.is_some());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_order_is_shared_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, _) = common::fresh_sqlite(dir.path()).await?;
    assert_eq!(store.engine(), Engine::Sqlite);
    // One instance on SQLite, but the store keeps the state the same way.
    suite(store.clone(), store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_transaction_order_is_shared_on_postgres() -> anyhow::Result<()> {
    let (a, url) = common::fresh_postgres("sbtxnorder").await?;
    assert_eq!(a.engine(), Engine::Postgres);
    let b = Store::connect(&url).await?;
    suite(a, b).await
}
