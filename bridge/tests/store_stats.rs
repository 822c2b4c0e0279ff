//! Milestones and the store's gauges on both engines, each on a store of its own, so every
//! count is exact.

mod common;

use common::{conversation, message};
use switchboard_bridge::{
    Store,
    conversation::{ConversationState, SenderRole},
    store::{AssignmentRow, LevelInput, Milestone, OutboxDepth, ReplyContext, StoreGauges},
};

/// On a store of its own: every count is exact.
async fn milestones_are_reached_once_and_the_gauges_count(store: &Store) -> anyhow::Result<()> {
    assert_eq!(store.gauges().await?, StoreGauges::default());
    let room = "!levels:x";
    store
        .insert_conversation(&conversation(room, "@v:x", "support", 1_000))
        .await?;
    let other = conversation("!levels-2:x", "@w:x", "support", 2_000);
    store.insert_conversation(&other).await?;
    store
        .set_conversation_state(&other.room_id, ConversationState::Active)
        .await?;
    // Each milestone answers the start once: a retried step is not timed twice.
    for milestone in [
        Milestone::FirstOffer,
        Milestone::Accepted,
        Milestone::FirstReply,
    ] {
        assert_eq!(
            store
                .reach_milestone(room, milestone, 5_000, "telegram")
                .await?,
            Some(1_000)
        );
        assert_eq!(
            store
                .reach_milestone(room, milestone, 6_000, "telegram")
                .await?,
            None
        );
    }
    assert_eq!(
        store
            .reach_milestone("!nowhere:x", Milestone::Accepted, 1, "telegram")
            .await?,
        None
    );
    // What the service-level report reads: both conversations, the first one answered.
    store
        .upsert_assignment(&AssignmentRow {
            room_id: room.into(),
            responder_id: "ann".into(),
            platform: "telegram".into(),
            address: "1".into(),
            ghost_user_id: "@_sb_ann:x".into(),
            state: "active".into(),
        })
        .await?;
    let inputs = store.level_inputs(0, 10_000).await?;
    assert_eq!(
        inputs,
        [
            LevelInput {
                topic: "support".into(),
                platform: Some("telegram".into()),
                responder_id: Some("ann".into()),
                created_at: 1_000,
                first_reply_at: Some(5_000),
                closed_at: None,
            },
            LevelInput {
                topic: "support".into(),
                platform: None,
                responder_id: None,
                created_at: 2_000,
                first_reply_at: None,
                closed_at: None,
            }
        ]
    );
    assert_eq!(store.level_inputs(1_500, 10_000).await?.len(), 1);

    // What a reply answers: the visitor's oldest message since the responder last wrote.
    let at = |event: &str, seq, role, ts| {
        let mut m = message(event, room, seq, role, "text");
        m.origin_server_ts = ts;
        m
    };
    for m in [
        at("$v1", 1, SenderRole::Visitor, 10_000),
        at("$r1", 2, SenderRole::Responder, 11_000),
        at("$v2", 3, SenderRole::Visitor, 12_000),
        at("$v3", 4, SenderRole::Visitor, 13_000),
    ] {
        store.record_message(&m).await?;
    }
    let answers = store.reply_context(room).await?.expect("a conversation");
    assert_eq!(
        answers,
        ReplyContext {
            topic: "support".into(),
            created_at: 1_000,
            replied_before: true,
            waiting_since: Some(12_000),
        }
    );
    store
        .record_message(&at("$r2", 5, SenderRole::Responder, 14_000))
        .await?;
    assert_eq!(
        store.reply_context(room).await?.unwrap().waiting_since,
        None
    );
    let fresh = store.reply_context(&other.room_id).await?.unwrap();
    assert!(!fresh.replied_before);

    // Queues: two chats on one platform, one of them deeper. (The inbox stays empty: the
    // inbox tests count every row.)
    for (chat, event) in [("1", "$a"), ("1", "$b"), ("1", "$c"), ("2", "$d")] {
        store
            .enqueue_outbox(room, "telegram", chat, event, "{}")
            .await?;
    }
    let g = store.gauges().await?;
    assert_eq!(
        g.conversations,
        [("active".to_owned(), 1), ("queued".to_owned(), 1)]
    );
    assert_eq!(
        (g.inbox_pending, g.remote_inbox_pending, g.offers_open),
        (0, 0, 0)
    );
    assert_eq!(
        g.outbox_pending,
        [OutboxDepth {
            platform: "telegram".into(),
            rows: 4,
            deepest_lane: 3
        }]
    );
    // Leave nothing pending for the tests that follow.
    for chat in ["1", "2"] {
        for (row, _) in store.pending_outbox_to("telegram", chat, 10).await? {
            store.outbox_done(row.seq).await?;
        }
    }
    assert_eq!(store.gauges().await?.outbox_pending, []);
    Ok(())
}

#[tokio::test]
async fn milestones_and_gauges_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, _) = common::fresh_sqlite(dir.path()).await?;
    milestones_are_reached_once_and_the_gauges_count(&store).await
}

#[tokio::test]
async fn milestones_and_gauges_on_postgres() -> anyhow::Result<()> {
    let (store, _) = common::fresh_postgres("sbgauges").await?;
    milestones_are_reached_once_and_the_gauges_count(&store).await
}
