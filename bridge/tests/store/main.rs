//! One store suite, written once and run against every engine: SQLite (the default) and
//! PostgreSQL (a throwaway cluster started by scripts/test.sh). Retention and erasure are in
//! `store_retention.rs`, milestones and gauges in `store_stats.rs`, leases in
//! `store_leases.rs`: each on stores of their own.

#[path = "../common/mod.rs"]
mod common;
mod conversations;
mod deliveries;
mod inbox;
mod people;
mod state;
mod transcript;

use std::time::Duration;

use common::{conversation, message};
use switchboard_bridge::{
    Store, StoreError,
    clock::ManualClock,
    conversation::{ConversationState, SenderRole},
    store::{
        AssignmentRow, DeadLetterSource, Engine, InitiatorRow, LINK_CODE_TTL_MS, NewDelivery,
        NewInboxEvent, OfferRow, OutboxRow, Recorded, RemotePost, VisitorBatch,
    },
};

async fn suite(store: Store) -> anyhow::Result<()> {
    deliveries::room_posts_queue_once_and_wait_out_their_retries(&store).await?;
    transcript::provisional_transcript_entries_become_their_event(&store).await?;
    deliveries::a_remote_post_is_queued_mapped_and_transcribed_once(&store).await?;
    transcript::changed_messages_are_found_and_kept_in_step(&store).await?;
    state::connector_state_is_kept_per_platform_and_taken_once(&store).await?;
    people::link_codes_work_once_and_move_a_responder(&store).await?;
    inbox::remote_events_are_recorded_once_per_platform_key(&store).await?;
    conversations::exactly_one_claim_wins_and_offers_move_once(&store).await?;
    conversations::offers_per_contact_and_the_lifecycle(&store).await?;
    deliveries::assignments_mapping_and_outbox_keep_order(&store).await?;
    deliveries::a_split_delivery_resumes_at_its_first_unsent_part(&store).await?;
    inbox::inbox_dedups_by_event_id_and_keeps_arrival_order(&store).await?;
    conversations::conversations_are_keyed_by_room_and_resumable(&store).await?;
    conversations::a_conversation_is_read_with_its_holders(&store).await?;
    transcript::transcript_records_each_message_once_in_inbox_order(&store).await?;
    people::visitor_sessions_resolve_until_they_expire(&store).await?;
    transcript::a_run_of_visitor_messages_is_stored_whole(&store).await?;
    people::initiators_are_found_by_address_counted_by_key_and_blocked(&store).await?;
    // Last: they leave queued rows behind.
    inbox::one_conversations_backlog_leaves_room_for_the_others(&store).await?;
    conversations::routing_reads_only_waiting_conversations(&store).await?;
    inbox::never_working_events_are_set_aside_and_can_be_retried(&store).await?;
    state::time_is_read_from_the_clock_the_store_was_given(&store).await?;
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn store_suite_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, url) = common::fresh_sqlite(dir.path()).await?;
    assert_eq!(store.engine(), Engine::Sqlite);
    suite(store).await?;
    // Reopening runs the migrations again, which must be a no-op, and the data is still there.
    let reopened = Store::connect(&url).await?;
    assert_eq!(reopened.count_inbox().await?, 489);
    Ok(())
}

#[tokio::test]
async fn store_suite_on_postgres() -> anyhow::Result<()> {
    let (store, url) = common::fresh_postgres("sbtest").await?;
    assert_eq!(store.engine(), Engine::Postgres);
    suite(store).await?;
    let reopened = Store::connect(&url).await?;
    assert_eq!(reopened.count_inbox().await?, 489);
    reopened.close().await;
    Ok(())
}

#[tokio::test]
async fn unsupported_database_urls_are_refused_clearly() {
    let err = Store::connect("mysql://localhost/x")
        .await
        .err()
        .expect("must fail");
    assert!(
        err.to_string().contains("sqlite://PATH or postgres://"),
        "{err}"
    );
}
