//! Platform events commit in the order of their numbers (`Store::record_remote_event`): the
//! scheduler reads them after a cursor, so one numbered earlier but committed later would be
//! passed over while a later event of the same chat went first. On PostgreSQL, where several
//! receivers insert at once, an insert waits while another holds the queue's order lock.

mod common;

use std::time::Duration;

use sqlx::Connection;
use switchboard_bridge::store::REMOTE_INBOX_ORDER_LOCK;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_events_commit_in_the_order_of_their_numbers_on_postgres() -> anyhow::Result<()> {
    let (store, url) = common::fresh_postgres("sborder").await?;
    // Another writer in the middle of its insert: it holds the lock, has drawn its number and
    // has not committed.
    let mut other = sqlx::AnyConnection::connect(&url).await?;
    let mut tx = other.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(REMOTE_INBOX_ORDER_LOCK)
        .execute(&mut *tx)
        .await?;
    sqlx::query(
        "INSERT INTO remote_inbox (platform, event_key, event_json, received_at)
         VALUES ('telegram', 'first', '{}', 1)",
    )
    .execute(&mut *tx)
    .await?;

    let second = {
        let store = store.clone();
        tokio::spawn(async move { store.record_remote_event("telegram", "second", "{}").await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !second.is_finished(),
        "the second insert waits for the first to commit"
    );
    tx.commit().await?;
    assert!(second.await??, "recorded once the first committed");

    let order: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, event_key FROM remote_inbox ORDER BY seq")
            .fetch_all(&mut other)
            .await?;
    let keys: Vec<&str> = order.iter().map(|(_, k)| k.as_str()).collect();
    assert_eq!(keys, ["first", "second"], "numbered in commit order");
    other.close().await?;
    store.close().await;
    Ok(())
}
