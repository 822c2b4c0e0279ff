//! Leases (`bridge/src/store/leases.rs`), on both engines: one holder at a time, taken over
//! only once expired or given up, and a deposed holder's writes fenced off by its epoch.

mod common;

use std::time::Duration;

use switchboard_bridge::{
    Store,
    clock::ManualClock,
    store::{Engine, Fence, Recorded},
};

const T0: i64 = 1_800_000_000_000;

/// Whether a write as the holder of `fence` (a Telegram update, keyed and carrying `value`,
/// as the leader's receiver records it) was made.
async fn writes(store: &Store, fence: &Fence, value: &str) -> anyhow::Result<bool> {
    let recorded = store
        .record_remote_event_as(Some(fence), "telegram", value, value)
        .await?;
    Ok(recorded != Recorded::Deposed)
}

/// The Telegram update recorded last.
async fn last_recorded(store: &Store) -> anyhow::Result<Option<String>> {
    Ok(store
        .pending_remote_events(1000)
        .await?
        .into_iter()
        .filter(|e| e.platform == "telegram")
        .map(|e| e.event_json)
        .next_back())
}
const TTL: i64 = 10_000;

async fn one_holder_at_a_time_and_a_deposed_one_is_fenced_off(store: &Store) -> anyhow::Result<()> {
    let clock = ManualClock::new(T0);
    let store = store.clone().with_clock(clock.clone());
    assert_eq!(store.lease("leader").await?, None, "never taken");

    let a = store.take_lease("leader", "a", TTL).await?.expect("free");
    assert_eq!(a.epoch, 1);
    assert_eq!(
        store.take_lease("leader", "b", TTL).await?,
        None,
        "held by a"
    );
    let held = store.lease("leader").await?.expect("held");
    assert_eq!(
        (held.holder.as_str(), held.epoch, held.expires_at),
        ("a", 1, T0 + TTL)
    );
    // Other leases are other rows.
    assert!(store.take_lease("other", "b", TTL).await?.is_some());

    // Renewed before it runs out, it stays a's past the first expiry.
    clock.advance(Duration::from_millis(9_000));
    assert!(store.renew_lease(&a, TTL).await?);
    clock.advance(Duration::from_millis(5_000));
    assert_eq!(store.take_lease("leader", "b", TTL).await?, None);
    assert!(writes(&store, &a, "41").await?);

    // a stalls (SIGSTOP) past the expiry: b takes over, one epoch later.
    clock.advance(Duration::from_millis(TTL as u64));
    assert_eq!(
        store.lease("leader").await?,
        None,
        "expired: nobody holds it"
    );
    let b = store
        .take_lease("leader", "b", TTL)
        .await?
        .expect("expired");
    assert_eq!(b.epoch, 2);
    // a wakes up: it cannot renew, and what it writes as leader is not written.
    assert!(!store.renew_lease(&a, TTL).await?);
    assert!(!writes(&store, &a, "40").await?);
    assert!(writes(&store, &b, "42").await?);
    assert_eq!(last_recorded(&store).await?.as_deref(), Some("42"));
    // Nor can it give up what it no longer holds.
    assert!(!store.release_lease(&a).await?);

    // Taken again by its own holder: a new epoch, and the old one is fenced off too.
    let b2 = store
        .take_lease("leader", "b", TTL)
        .await?
        .expect("b holds it");
    assert_eq!(b2.epoch, 3);
    assert!(!writes(&store, &b, "43").await?);

    // Given up at a clean shutdown: taken at once, without waiting out the expiry.
    assert!(store.release_lease(&b2).await?);
    assert_eq!(store.lease("leader").await?, None);
    let a2 = store
        .take_lease("leader", "a", TTL)
        .await?
        .expect("given up");
    assert_eq!(a2.epoch, 4);
    // A write fenced by a lease that expired, with nobody else taking it, is refused too.
    clock.advance(Duration::from_millis(TTL as u64 + 1));
    assert!(!writes(&store, &a2, "44").await?);
    assert_eq!(last_recorded(&store).await?.as_deref(), Some("42"));
    Ok(())
}

/// A platform's event recorded by a receiver as leader (`Store::record_remote_event_as`): once
/// per key while the lead holds; nothing at all once it was taken over or ran out.
async fn a_deposed_leader_records_no_platform_event(store: &Store) -> anyhow::Result<()> {
    let clock = ManualClock::new(T0 + 1_000_000);
    let store = store.clone().with_clock(clock.clone());
    let pending = |store: Store| async move {
        anyhow::Ok(
            store
                .pending_remote_events(1000)
                .await?
                .into_iter()
                .filter(|e| e.platform == "discord")
                .map(|e| e.event_json)
                .collect::<Vec<_>>(),
        )
    };
    let a = store.take_lease("lead", "a", TTL).await?.expect("free");
    let record = |fence: Option<Fence>, key: &'static str| {
        let store = store.clone();
        async move {
            anyhow::Ok(
                store
                    .record_remote_event_as(fence.as_ref(), "discord", key, &format!("\"{key}\""))
                    .await?,
            )
        }
    };
    assert_eq!(record(Some(a.clone()), "1.0").await?, Recorded::New);
    assert_eq!(record(Some(a.clone()), "1.0").await?, Recorded::Known);

    // a stalls past its lease; b takes over. a wakes up with an update in hand.
    clock.advance(Duration::from_millis(TTL as u64 + 1));
    assert_eq!(
        record(Some(a.clone()), "2.0").await?,
        Recorded::Deposed,
        "expired, even before anyone took over"
    );
    let b = store.take_lease("lead", "b", TTL).await?.expect("expired");
    assert_eq!(record(Some(a.clone()), "2.0").await?, Recorded::Deposed);
    assert_eq!(
        pending(store.clone()).await?,
        ["\"1.0\""],
        "nothing of a's after its lead"
    );
    // The update is the new leader's to record; an entry point any instance serves (a
    // webhook) records without a fence.
    assert_eq!(record(Some(b.clone()), "2.0").await?, Recorded::New);
    assert_eq!(record(None, "3.0").await?, Recorded::New);
    assert_eq!(record(Some(a), "4.0").await?, Recorded::Deposed);
    assert_eq!(
        pending(store.clone()).await?,
        ["\"1.0\"", "\"2.0\"", "\"3.0\""]
    );
    Ok(())
}

/// Live instances, counted by their presence rows: one that stops renewing drops out once its
/// row expires, and its row is deleted a lease later.
async fn live_instances_are_counted(store: &Store) -> anyhow::Result<()> {
    let clock = ManualClock::new(T0 + 2_000_000);
    let store = store.clone().with_clock(clock.clone());
    assert_eq!(store.mark_present("present/", "a", TTL).await?, 1);
    assert_eq!(store.mark_present("present/", "b", TTL).await?, 2);
    assert_eq!(
        store.mark_present("present/", "a", TTL).await?,
        2,
        "a again"
    );
    // Other leases are not instances.
    assert_eq!(store.mark_present("elsewhere/", "c", TTL).await?, 1);
    // b stops; a keeps renewing.
    clock.advance(Duration::from_millis(TTL as u64 / 2));
    assert_eq!(store.mark_present("present/", "a", TTL).await?, 2);
    clock.advance(Duration::from_millis(TTL as u64 / 2 + 1));
    assert_eq!(
        store.mark_present("present/", "a", TTL).await?,
        1,
        "b expired"
    );
    assert!(store.lease("present/b").await?.is_none());
    clock.advance(Duration::from_millis(TTL as u64));
    store.mark_present("present/", "a", TTL).await?;
    assert!(store.lease("present/a").await?.is_some());
    // b's row is gone: taking its name starts again at the first epoch.
    let taken = store
        .take_lease("present/b", "z", TTL)
        .await?
        .expect("free");
    assert_eq!(taken.epoch, 1, "the expired row was deleted");
    Ok(())
}

/// Instances racing for a free lease: exactly one gets it.
async fn exactly_one_of_many_takers_wins(store: &Store) -> anyhow::Result<()> {
    let takers: Vec<_> = (0..8)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.take_lease("race", &format!("i{i}"), 60_000).await })
        })
        .collect();
    let mut won: Vec<Fence> = Vec::new();
    for taker in takers {
        won.extend(taker.await??);
    }
    assert_eq!(won.len(), 1, "{won:?}");
    assert_eq!(
        store.lease("race").await?.map(|l| l.holder),
        Some(won[0].holder.clone())
    );
    Ok(())
}

async fn suite(store: Store) -> anyhow::Result<()> {
    one_holder_at_a_time_and_a_deposed_one_is_fenced_off(&store).await?;
    exactly_one_of_many_takers_wins(&store).await?;
    a_deposed_leader_records_no_platform_event(&store).await?;
    live_instances_are_counted(&store).await?;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, _) = common::fresh_sqlite(dir.path()).await?;
    assert_eq!(store.engine(), Engine::Sqlite);
    suite(store).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leases_on_postgres() -> anyhow::Result<()> {
    let (store, _) = common::fresh_postgres("sblease").await?;
    assert_eq!(store.engine(), Engine::Postgres);
    suite(store).await
}
