//! Instances sharing one store (`bridge/src/cluster.rs`), on both engines: a claim is held by
//! one instance at a time and passes on when given up or when its holder stops renewing it;
//! one instance leads, another takes over once it stops, and a leader whose lease was taken
//! ends its term and is fenced off. Real time, with leases of under a second.

mod common;

use std::time::Duration;

use switchboard_bridge::{
    Store,
    cluster::{Cluster, LEADER_LEASE, Term},
    store::Recorded,
};
use tokio::{sync::watch, time::timeout};

const LEASE: Duration = Duration::from_millis(900);

fn instance(store: &Store, name: &str) -> Cluster {
    Cluster::shared(store.clone(), name.to_owned(), LEASE)
}

/// Runs `cluster`'s renewals and contention until the returned sender says stop.
fn running(cluster: &Cluster) -> (watch::Sender<bool>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = watch::channel(false);
    let cluster = cluster.clone();
    let task = tokio::spawn(async move { cluster.run(stopped).await });
    (stop, task)
}

/// The term `cluster` leads in, once it leads (within `within`).
async fn leading(cluster: &Cluster, within: Duration) -> anyhow::Result<Term> {
    let mut terms = cluster.terms();
    let term = timeout(within, terms.wait_for(Option::is_some))
        .await
        .map_err(|_| anyhow::anyhow!("{:?} did not lead in time", cluster.holder()))??
        .clone();
    Ok(term.expect("some"))
}

async fn a_claim_is_held_by_one_instance_at_a_time(
    store: &Store,
    db: &sqlx::AnyPool,
) -> anyhow::Result<()> {
    let a = instance(store, "a");
    let b = instance(store, "b");
    let claim = a.claim("lane/room/!r").await;
    let waiting = {
        let b = b.clone();
        tokio::spawn(async move { b.claim("lane/room/!r").await })
    };
    // Another key is free meanwhile.
    let other = timeout(Duration::from_secs(2), b.claim("lane/room/!other")).await?;
    tokio::time::sleep(LEASE / 2).await;
    assert!(!waiting.is_finished(), "b waits while a holds the claim");
    drop(claim);
    let b_claim = timeout(Duration::from_secs(2), waiting)
        .await
        .map_err(|_| anyhow::anyhow!("b did not get the claim a gave up"))??;
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT name, holder FROM leases WHERE name LIKE 'claim/%' ORDER BY name")
            .fetch_all(db)
            .await?;
    assert_eq!(
        rows,
        [
            ("claim/lane/room/!other".to_owned(), "b".to_owned()),
            ("claim/lane/room/!r".to_owned(), "b".to_owned())
        ]
    );
    drop((b_claim, other));
    Ok(())
}

async fn a_claim_of_an_instance_that_died_passes_on_when_it_expires_and_not_before(
    store: &Store,
) -> anyhow::Result<()> {
    let a = instance(store, "a");
    let b = instance(store, "b");
    // a holds two claims and keeps renewing them: held well past a lease.
    let (stop_a, a_task) = running(&a);
    let kept = a.claim("lane/to/telegram/1").await;
    let died = a.claim("lane/to/telegram/2").await;
    let taker = {
        let b = b.clone();
        tokio::spawn(async move { b.claim("lane/to/telegram/1").await })
    };
    tokio::time::sleep(LEASE * 2).await;
    assert!(!taker.is_finished(), "renewed: still a's after two leases");
    taker.abort();
    // a dies: nothing renews or gives up what it held.
    stop_a.send(true)?;
    a_task.await?;
    std::mem::forget(kept);
    std::mem::forget(died);
    let started = tokio::time::Instant::now();
    let took = timeout(LEASE * 3, b.claim("lane/to/telegram/2"))
        .await
        .map_err(|_| anyhow::anyhow!("b did not take the dead instance's claim"))?;
    assert!(
        started.elapsed() >= LEASE / 3,
        "taken only once it expired ({:?})",
        started.elapsed()
    );
    drop(took);
    Ok(())
}

async fn one_instance_leads_and_another_takes_over_when_it_stops(
    store: &Store,
) -> anyhow::Result<()> {
    let a = instance(store, "a");
    let b = instance(store, "b");
    let (stop_a, a_task) = running(&a);
    let term_a = leading(&a, Duration::from_secs(3)).await?;
    let (stop_b, b_task) = running(&b);
    b.contended().await;
    assert!(a.leads() && !b.leads(), "one leader");
    tokio::time::sleep(LEASE * 2).await;
    assert!(
        term_a.holds() && !b.leads(),
        "a keeps leading while it renews"
    );
    // Each counts two instances live, and so keeps to half of each platform's rate.
    assert_eq!((a.instances(), b.instances()), (2, 2));

    // a stops (and gives up what it held): its term ends, and b leads within a renewal.
    stop_a.send(true)?;
    a_task.await?;
    assert!(*term_a.ended().borrow() && !term_a.holds());
    a.leave().await;
    let term_b = leading(&b, LEASE).await?;
    assert_eq!(term_b.epoch(), term_a.epoch() + 1);
    // a gave up its presence too: b counts itself alone at its next renewal.
    timeout(LEASE, async {
        while b.instances() != 1 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .map_err(|_| anyhow::anyhow!("b still counts {} instances", b.instances()))?;
    let lease = store.lease(LEADER_LEASE).await?.expect("held");
    assert_eq!(
        (lease.holder.as_str(), lease.epoch),
        ("b", term_b.epoch() as i64)
    );
    stop_b.send(true)?;
    b_task.await?;
    b.leave().await;
    assert_eq!(store.lease(LEADER_LEASE).await?, None, "given up");
    Ok(())
}

async fn a_leader_whose_lease_was_taken_ends_its_term_and_is_fenced_off(
    store: &Store,
    db: &sqlx::AnyPool,
) -> anyhow::Result<()> {
    let a = instance(store, "a");
    let (stop_a, a_task) = running(&a);
    let term = leading(&a, Duration::from_secs(3)).await?;
    let fence = term.fence().expect("shared").clone();
    // What the leader's receivers record carries its fence (`Bridge::as_leader`).
    let record = |key: &'static str| {
        let (store, fence) = (store.clone(), fence.clone());
        async move {
            anyhow::Ok(
                store
                    .record_remote_event_as(Some(&fence), "telegram", key, "{}")
                    .await?,
            )
        }
    };
    assert_eq!(record("1.0").await?, Recorded::New);
    // What another instance does once a's lease ran out while a stalled: take it over.
    sqlx::query("UPDATE leases SET holder = 'b', epoch = epoch + 1 WHERE name = $1")
        .bind(LEADER_LEASE)
        .execute(db)
        .await?;
    let mut ended = term.ended();
    timeout(LEASE, ended.wait_for(|e| *e))
        .await
        .map_err(|_| anyhow::anyhow!("a's term did not end"))??;
    assert!(!term.holds() && !a.leads());
    assert_eq!(
        record("2.0").await?,
        Recorded::Deposed,
        "a write as the deposed leader is refused"
    );
    assert_eq!(store.pending_remote_events(10).await?.len(), 1);
    stop_a.send(true)?;
    a_task.await?;
    Ok(())
}

async fn suite(store: Store, url: String) -> anyhow::Result<()> {
    // The rows, looked at and changed directly.
    let db = sqlx::AnyPool::connect(&url).await?;
    a_claim_is_held_by_one_instance_at_a_time(&store, &db).await?;
    a_claim_of_an_instance_that_died_passes_on_when_it_expires_and_not_before(&store).await?;
    one_instance_leads_and_another_takes_over_when_it_stops(&store).await?;
    sqlx::query("DELETE FROM leases").execute(&db).await?;
    a_leader_whose_lease_was_taken_ends_its_term_and_is_fenced_off(&store, &db).await?;
    db.close().await;
    store.close().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_work_and_lead_in_turn_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, url) = common::fresh_sqlite(dir.path()).await?;
    suite(store, url).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_share_work_and_lead_in_turn_on_postgres() -> anyhow::Result<()> {
    let (store, url) = common::fresh_postgres("sbcluster").await?;
    suite(store, url).await
}
