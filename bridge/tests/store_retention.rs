//! Retention and erasure on both engines, each on a fresh store of its own (they delete):
//! erasing a conversation removes every row of its room and nothing else, and the sweep
//! forgets only conversations closed before its cutoff.

mod common;

use std::time::Duration;

use common::{conversation, message};
use switchboard_bridge::{
    Store,
    clock::{Clock, ManualClock},
    conversation::{ConversationState, SenderRole},
    store::{
        AssignmentRow, DeadLetterSource, Engine, EraseError, InitiatorRow, NewInboxEvent,
        StoreError,
    },
};

const DAY_MS: i64 = 24 * 60 * 60 * 1000;

/// The tables with a `room_id` column, read from the schema: a table added later is checked
/// by the erasure test without anyone remembering to list it.
async fn room_tables(pool: &sqlx::AnyPool, engine: Engine) -> anyhow::Result<Vec<String>> {
    use sqlx::Row as _;
    let sql = match engine {
        Engine::Sqlite => {
            "SELECT m.name AS t FROM sqlite_master m JOIN pragma_table_info(m.name) p
             WHERE m.type = 'table' AND p.name = 'room_id' ORDER BY m.name"
        }
        Engine::Postgres => {
            "SELECT CAST(table_name AS TEXT) AS t FROM information_schema.columns
             WHERE table_schema = 'public' AND column_name = 'room_id' ORDER BY table_name"
        }
    };
    let rows = sqlx::query(sql).fetch_all(pool).await?;
    Ok(rows
        .iter()
        .map(|r| r.try_get("t"))
        .collect::<Result<_, _>>()?)
}

/// How many rows each table holds about `room`, plus the connector state under `handle` and
/// the proxy sessions of `visitor`.
async fn rows_about(
    pool: &sqlx::AnyPool,
    engine: Engine,
    room: &str,
    handle: &str,
    visitor: &str,
) -> anyhow::Result<std::collections::BTreeMap<String, i64>> {
    use sqlx::Row as _;
    let mut counts = std::collections::BTreeMap::new();
    for table in room_tables(pool, engine).await? {
        let n: i64 = sqlx::query(&format!(
            "SELECT COUNT(*) AS n FROM {table} WHERE room_id = $1"
        ))
        .bind(room)
        .fetch_one(pool)
        .await?
        .try_get("n")?;
        counts.insert(table, n);
    }
    let n: i64 = sqlx::query(
        "SELECT COUNT(*) AS n FROM connector_state WHERE state_key LIKE $1 OR state_value = $2",
    )
    .bind(format!("%:{handle}"))
    .bind(handle)
    .fetch_one(pool)
    .await?
    .try_get("n")?;
    counts.insert("connector_state".into(), n);
    let n: i64 = sqlx::query("SELECT COUNT(*) AS n FROM visitor_sessions WHERE user_id = $1")
        .bind(visitor)
        .fetch_one(pool)
        .await?
        .try_get("n")?;
    counts.insert("visitor_sessions".into(), n);
    Ok(counts)
}

/// A conversation in `room` with a row in every table that can hold one: its events and
/// transcript (with a file), a delivery, dead letters, a room post, an offer with its handle
/// on email, the email connector's state under that handle, an assignment, the platform
/// message map, an initiator, and the visitor's proxy session. Closed at the clock's time
/// if `closed`.
async fn populated_conversation(
    store: &Store,
    room: &str,
    visitor: &str,
    handle: &str,
    closed: bool,
) -> anyhow::Result<()> {
    store
        .insert_conversation(&conversation(room, visitor, "support", store_now(store)))
        .await?;
    let (e1, e2) = (format!("$1{room}"), format!("$2{room}"));
    store
        .record_events(
            &format!("t{room}"),
            &[
                NewInboxEvent {
                    event_id: &e1,
                    room_id: room,
                    event_json: "{\"body\":\"my address is 1 Main St\"}",
                },
                NewInboxEvent {
                    event_id: &e2,
                    room_id: room,
                    event_json: "{}",
                },
            ],
        )
        .await?;
    let events = store.pending_events_in_room(room, 10).await?;
    store.mark_processed(events[0].seq).await?;
    store
        .record_message(&message(
            &e1,
            room,
            events[0].seq,
            SenderRole::Visitor,
            "hello",
        ))
        .await?;
    store
        .set_message_media(&e1, "{\"mxc\":\"mxc://x/file\"}")
        .await?;
    store
        .set_aside(DeadLetterSource::Inbox, events[1].seq, Some(room), "bad", 3)
        .await?;
    store
        .enqueue_outbox(room, "email", "ann@example.org", &e1, "{}")
        .await?;
    let (delivery, _) = store
        .pending_outbox_to("email", "ann@example.org", 100)
        .await?
        .into_iter()
        .find(|(d, _)| d.room_id == room)
        .expect("queued");
    store
        .set_aside(DeadLetterSource::Outbox, delivery.seq, None, "refused", 8)
        .await?;
    store.enqueue_room_post(room, "welcome", "{}").await?;
    let offer = store
        .create_offer(room, "ann", "email", "ann@example.org")
        .await?;
    store.set_offer_message(offer.id, handle).await?;
    store
        .put_connector_state(
            "email",
            &format!("thread:{handle}"),
            "{\"address\":\"ann\"}",
        )
        .await?;
    store
        .put_connector_state("email", &format!("sent:m{handle}"), handle)
        .await?;
    store
        .upsert_assignment(&AssignmentRow {
            room_id: room.into(),
            responder_id: "ann".into(),
            platform: "email".into(),
            address: "ann@example.org".into(),
            ghost_user_id: "@_sb_ann:x".into(),
            state: "active".into(),
        })
        .await?;
    store
        .map_remote_message(
            "email",
            "ann@example.org",
            &format!("<m{handle}>"),
            room,
            Some(&e1),
        )
        .await?;
    store
        .insert_initiator(&InitiatorRow {
            room_id: room.into(),
            platform: "telegram".into(),
            address: format!("tg-{room}"),
            thread: Some(format!("th-{handle}")),
            address_key: format!("key-{room}"),
            created_at: store_now(store),
        })
        .await?;
    store
        .insert_visitor_session(
            &format!("hash-{room}"),
            visitor,
            store_now(store) + 400 * DAY_MS,
        )
        .await?;
    if closed {
        store
            .set_conversation_state(room, ConversationState::Closed)
            .await?;
    }
    Ok(())
}

fn store_now(store: &Store) -> i64 {
    store.clock().now_ms()
}

async fn erasing_a_conversation_removes_every_row_of_its_room_and_nothing_else(
    store: &Store,
    url: &str,
) -> anyhow::Result<()> {
    let pool = sqlx::AnyPool::connect(url).await?;
    let engine = store.engine();
    let (a, b) = ("!erase-a:x", "!erase-b:x");
    populated_conversation(store, a, "@va:x", "aaaa", false).await?;
    populated_conversation(store, b, "@vb:x", "bbbb", false).await?;
    let before_a = rows_about(&pool, engine, a, "aaaa", "@va:x").await?;
    let before_b = rows_about(&pool, engine, b, "bbbb", "@vb:x").await?;
    // Every table with a room column holds something of each room, so the check below
    // means something for each.
    for (table, n) in &before_a {
        assert!(*n > 0, "the test puts a row in {table}");
    }

    // Still open: refused, and nothing goes.
    let refused = store.erase_conversation(a).await;
    assert!(
        matches!(refused, Err(EraseError::Open(ConversationState::Queued))),
        "{refused:?}"
    );
    assert_eq!(
        rows_about(&pool, engine, a, "aaaa", "@va:x").await?,
        before_a
    );

    store
        .set_conversation_state(a, ConversationState::Closed)
        .await?;
    let deleted = store.erase_conversation(a).await?;
    assert_eq!(deleted.of("conversations"), 1);
    assert_eq!(deleted.of("messages"), 1);
    assert_eq!(deleted.of("dead_letters"), 2);
    assert_eq!(deleted.of("connector_state"), 2);
    let after_a = rows_about(&pool, engine, a, "aaaa", "@va:x").await?;
    assert!(
        after_a.values().all(|n| *n == 0),
        "left of the erased room: {after_a:?}"
    );
    // The report counts what went: one more than the room's rows, the delivery's dead
    // letter, which names no room and is found through its outbox row.
    assert_eq!(
        deleted.total(),
        before_a.values().map(|n| *n as u64).sum::<u64>() + 1,
        "{deleted}"
    );
    // The other room keeps everything.
    assert_eq!(
        rows_about(&pool, engine, b, "bbbb", "@vb:x").await?,
        before_b
    );
    assert_eq!(store.messages(b).await?.len(), 1);
    assert!(store.initiator_of(b).await?.is_some());

    // Gone is gone.
    assert!(matches!(
        store.erase_conversation(a).await,
        Err(EraseError::NotFound)
    ));
    // A visitor with another conversation keeps their session.
    store
        .insert_conversation(&conversation("!erase-c:x", "@vb:x", "sales", 0))
        .await?;
    store
        .set_conversation_state(b, ConversationState::Closed)
        .await?;
    store.erase_conversation(b).await?;
    assert_eq!(
        store
            .visitor_session("hash-!erase-b:x", 0)
            .await?
            .as_deref(),
        Some("@vb:x")
    );
    pool.close().await;
    Ok(())
}

async fn the_sweep_forgets_only_conversations_closed_before_its_cutoff(
    store: &Store,
    url: &str,
) -> anyhow::Result<()> {
    const T0: i64 = 2_000_000_000_000;
    let clock = ManualClock::new(T0);
    let store = store.clone().with_clock(clock.clone());
    let pool = sqlx::AnyPool::connect(url).await?;
    let engine = store.engine();
    let count = |table: &'static str| {
        let pool = pool.clone();
        async move {
            use sqlx::Row as _;
            let n: i64 = sqlx::query(&format!("SELECT COUNT(*) AS n FROM {table}"))
                .fetch_one(&pool)
                .await?
                .try_get("n")?;
            anyhow::Ok(n)
        }
    };

    // Closed at T0, and open since T0; rows of no conversation from T0.
    populated_conversation(&store, "!old-closed:x", "@v1:x", "old1", true).await?;
    populated_conversation(&store, "!old-open:x", "@v2:x", "old2", false).await?;
    store
        .record_events(
            "relay",
            &[NewInboxEvent {
                event_id: "$relay-old",
                room_id: "!relay:x",
                event_json: "{}",
            }],
        )
        .await?;
    for e in store.pending_events_in_room("!relay:x", 10).await? {
        store.mark_processed(e.seq).await?;
    }
    store
        .record_remote_event("telegram", "old-update", "{\"text\":\"hi\"}")
        .await?;
    for e in store.pending_remote_events(10).await? {
        store.mark_remote_processed(e.seq).await?;
    }
    store
        .add_initiator_pending("telegram", "55", "{\"text\":\"before a topic\"}")
        .await?;
    // Closed 20 days later, and more loose rows then.
    clock.set(T0 + 20 * DAY_MS);
    populated_conversation(&store, "!new-closed:x", "@v3:x", "new3", true).await?;
    store
        .record_remote_event("telegram", "new-update", "{\"text\":\"hi\"}")
        .await?;
    for e in store.pending_remote_events(10).await? {
        store.mark_remote_processed(e.seq).await?;
    }
    // An unprocessed platform event is work still to do, however old.
    clock.set(T0);
    store
        .record_remote_event("telegram", "old-pending", "{}")
        .await?;

    let all_rooms = ["!old-closed:x", "!old-open:x", "!new-closed:x"];
    let mut before = Vec::new();
    for (room, handle, visitor) in [
        ("!old-closed:x", "old1", "@v1:x"),
        ("!old-open:x", "old2", "@v2:x"),
        ("!new-closed:x", "new3", "@v3:x"),
    ] {
        before.push(rows_about(&pool, engine, room, handle, visitor).await?);
    }

    // Exactly 30 days after the close: not before the cutoff yet, nothing goes.
    clock.set(T0 + 30 * DAY_MS);
    let deleted = store.sweep(30, None).await?;
    assert_eq!(deleted.total(), 0, "{deleted}");
    for room in all_rooms {
        assert!(store.conversation(room).await?.is_some(), "{room}");
    }

    // A millisecond later: the old closed conversation goes whole; the open one and the one
    // closed later stay whole; loose rows from before the cutoff go, later ones stay.
    clock.advance(Duration::from_millis(1));
    let remote_before = count("remote_inbox").await?;
    let deleted = store.sweep(30, None).await?;
    assert_eq!(deleted.of("conversations"), 1, "{deleted}");
    assert!(store.conversation("!old-closed:x").await?.is_none());
    let old = rows_about(&pool, engine, "!old-closed:x", "old1", "@v1:x").await?;
    assert!(old.values().all(|n| *n == 0), "left: {old:?}");
    assert_eq!(
        rows_about(&pool, engine, "!old-open:x", "old2", "@v2:x").await?,
        before[1]
    );
    assert_eq!(
        rows_about(&pool, engine, "!new-closed:x", "new3", "@v3:x").await?,
        before[2]
    );
    assert_eq!(deleted.of("remote_inbox"), 1, "{deleted}");
    assert_eq!(count("remote_inbox").await?, remote_before - 1);
    assert!(
        store
            .pending_remote_events(10)
            .await?
            .iter()
            .any(|e| e.event_json == "{}"),
        "the unprocessed event stays"
    );
    assert_eq!(deleted.of("inbox"), 1 + old_inbox(&before[0]), "{deleted}");
    assert_eq!(count("initiator_pending").await?, 0);
    assert_eq!(deleted.of("initiator_pending"), 1);

    // Once the later one is past the cutoff too, it goes as well, when the leader sweeps; a
    // leader deposed meanwhile (its lease run out and taken) erases nothing.
    clock.advance(Duration::from_millis(20 * DAY_MS as u64));
    let a = store
        .take_lease("leader", "a", 10_000)
        .await?
        .expect("free");
    clock.advance(Duration::from_millis(10_001));
    let b = store
        .take_lease("leader", "b", 10_000)
        .await?
        .expect("expired");
    assert!(
        matches!(
            store.sweep(30, Some(&a)).await,
            Err(StoreError::Deposed(lease)) if lease == "leader"
        ),
        "the deposed leader's sweep is refused"
    );
    assert!(store.conversation("!new-closed:x").await?.is_some());
    let deleted = store.sweep(30, Some(&b)).await?;
    assert_eq!(deleted.of("conversations"), 1, "{deleted}");
    assert!(store.conversation("!new-closed:x").await?.is_none());
    assert!(store.conversation("!old-open:x").await?.is_some());
    pool.close().await;
    Ok(())
}

/// The inbox rows a conversation had before the sweep.
fn old_inbox(before: &std::collections::BTreeMap<String, i64>) -> u64 {
    before.get("inbox").copied().unwrap_or(0) as u64
}

async fn retention_suite(store: Store, url: &str) -> anyhow::Result<()> {
    erasing_a_conversation_removes_every_row_of_its_room_and_nothing_else(&store, url).await?;
    store.close().await;
    Ok(())
}

async fn sweep_suite(store: Store, url: &str) -> anyhow::Result<()> {
    the_sweep_forgets_only_conversations_closed_before_its_cutoff(&store, url).await?;
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn retention_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, url) = common::fresh_sqlite(dir.path()).await?;
    retention_suite(store, &url).await?;
    let dir = tempfile::tempdir()?;
    let (store, url) = common::fresh_sqlite(dir.path()).await?;
    sweep_suite(store, &url).await
}

#[tokio::test]
async fn retention_on_postgres() -> anyhow::Result<()> {
    let (store, url) = common::fresh_postgres("sbret").await?;
    retention_suite(store, &url).await?;
    let (store, url) = common::fresh_postgres("sbsweep").await?;
    sweep_suite(store, &url).await
}
