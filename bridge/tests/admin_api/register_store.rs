//! The store methods behind the register, on every engine.

use super::*;

async fn register_crud_round_trips(store: &Store) -> anyhow::Result<()> {
    let mut alex = responder("alex");
    alex.pseudonym = Some("Sam".into());
    alex.hours.insert(
        "sun".into(),
        vec!["22:00-02:00".into(), "10:00-11:00".into()],
    );
    assert!(store.insert_responder(&alex, SOURCE_ADMIN).await?);
    assert!(
        !store
            .insert_responder(&responder("alex"), SOURCE_ADMIN)
            .await?,
        "an id is taken once"
    );
    assert!(
        store
            .insert_responder(&responder("bo"), SOURCE_ADMIN)
            .await?
    );
    assert_eq!(store.responder("alex").await?, Some(alex.clone()));
    assert_eq!(store.responder("nobody").await?, None);
    let ids: Vec<String> = store
        .list_responders()
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(ids, ["alex", "bo"]);

    alex.max_concurrent = 7;
    alex.status = ResponderStatus::Offline;
    assert!(store.update_responder(&alex).await?);
    assert_eq!(store.responder("alex").await?, Some(alex.clone()));
    assert!(!store.update_responder(&responder("nobody")).await?);

    assert!(
        store
            .set_responder_status("alex", ResponderStatus::Away)
            .await?
    );
    assert_eq!(
        store.responder("alex").await?.unwrap().status,
        ResponderStatus::Away
    );
    assert!(
        !store
            .set_responder_status("nobody", ResponderStatus::Away)
            .await?
    );

    assert_eq!(
        store
            .responder_by_contact("telegram", "7004")
            .await?
            .map(|r| r.id)
            .as_deref(),
        Some("alex")
    );
    assert_eq!(store.responder_by_contact("matrix", "7004").await?, None);

    assert!(store.remove_responder("bo").await?);
    assert!(!store.remove_responder("bo").await?);
    assert_eq!(store.responder("bo").await?, None);
    Ok(())
}

async fn seeding_never_overwrites_an_operators_edit(store: &Store) -> anyhow::Result<()> {
    let mut seeded = responder("cfg");
    assert!(store.upsert_responder(&seeded, SOURCE_CONFIG).await?);
    assert_eq!(
        store.responder_source("cfg").await?.as_deref(),
        Some(SOURCE_CONFIG)
    );

    // A changed configuration refreshes a configured row, but not its live status.
    store
        .set_responder_status("cfg", ResponderStatus::Away)
        .await?;
    seeded.display_name = "Renamed in config".into();
    seeded.topics = vec!["sales".into()];
    assert!(store.upsert_responder(&seeded, SOURCE_CONFIG).await?);
    let stored = store.responder("cfg").await?.unwrap();
    assert_eq!(
        (
            stored.display_name.as_str(),
            stored.topics.clone(),
            stored.status
        ),
        (
            "Renamed in config",
            vec!["sales".to_owned()],
            ResponderStatus::Away
        )
    );

    // Once an operator edits it, seeding leaves it alone.
    let mut edited = stored.clone();
    edited.max_concurrent = 9;
    assert!(store.update_responder(&edited).await?);
    assert_eq!(
        store.responder_source("cfg").await?.as_deref(),
        Some(SOURCE_ADMIN)
    );
    seeded.display_name = "Config again".into();
    assert!(!store.upsert_responder(&seeded, SOURCE_CONFIG).await?);
    assert_eq!(store.responder("cfg").await?, Some(edited));

    // Likewise one an operator created.
    let mut made = responder("made");
    made.display_name = "Operator's".into();
    store.insert_responder(&made, SOURCE_ADMIN).await?;
    assert!(
        !store
            .upsert_responder(&responder("made"), SOURCE_CONFIG)
            .await?
    );
    assert_eq!(store.responder("made").await?, Some(made));
    // A status change is not an edit: the row stays configured.
    store
        .upsert_responder(&responder("live"), SOURCE_CONFIG)
        .await?;
    store
        .set_responder_status("live", ResponderStatus::Offline)
        .await?;
    assert_eq!(
        store.responder_source("live").await?.as_deref(),
        Some(SOURCE_CONFIG)
    );
    Ok(())
}

async fn offers_cursors_and_load_are_tracked(store: &Store) -> anyhow::Result<()> {
    store
        .insert_responder(&responder("rr"), SOURCE_ADMIN)
        .await?;
    // rr's entry in the register: Some(when last offered), None while never offered.
    let offered = async || {
        let register = store.responders_with_offer_times().await?;
        anyhow::Ok(
            register
                .into_iter()
                .find(|(r, _)| r.id == "rr")
                .map(|(_, at)| at),
        )
    };
    assert_eq!(offered().await?, Some(None));
    store.note_offered("rr", 1_700_000_000_123).await?;
    assert_eq!(offered().await?, Some(Some(1_700_000_000_123)));

    assert_eq!(store.routing_cursor("support").await?, None);
    store.set_routing_cursor("support", "alex").await?;
    store.set_routing_cursor("support", "rr").await?;
    store.set_routing_cursor("billing/*", "alex").await?;
    assert_eq!(
        store.routing_cursor("support").await?.as_deref(),
        Some("rr")
    );
    assert_eq!(
        store.routing_cursor("billing/*").await?.as_deref(),
        Some("alex")
    );

    let assign = |room: &str, who: &str, state: &str| AssignmentRow {
        room_id: room.into(),
        responder_id: who.into(),
        platform: "telegram".into(),
        address: "1".into(),
        ghost_user_id: format!("@_sb_{who}:x"),
        state: state.into(),
    };
    for a in [
        assign("!l1:x", "rr", "active"),
        assign("!l2:x", "rr", "active"),
        assign("!l3:x", "rr", "ended"),
        assign("!l3:x", "alex", "active"),
    ] {
        store.upsert_assignment(&a).await?;
    }
    let counts = store.active_conversation_counts().await?;
    assert_eq!(counts.get("rr"), Some(&2));
    assert_eq!(counts.get("alex"), Some(&1));
    assert_eq!(counts.len(), 2);
    let held: Vec<(String, String)> = store
        .assignments_for_room("!l3:x")
        .await?
        .into_iter()
        .map(|a| (a.responder_id, a.state))
        .collect();
    assert_eq!(held.len(), 2, "ended assignments are part of the history");
    assert!(held.contains(&("rr".into(), "ended".into())));
    Ok(())
}

async fn suite(store: Store) -> anyhow::Result<()> {
    register_crud_round_trips(&store).await?;
    seeding_never_overwrites_an_operators_edit(&store).await?;
    offers_cursors_and_load_are_tracked(&store).await?;
    store.close().await;
    Ok(())
}

#[tokio::test]
async fn register_store_suite_on_sqlite() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (store, _) = common::fresh_sqlite(dir.path()).await?;
    assert_eq!(store.engine(), Engine::Sqlite);
    suite(store).await
}

#[tokio::test]
async fn register_store_suite_on_postgres() -> anyhow::Result<()> {
    let (store, _) = common::fresh_postgres("sbadmin").await?;
    assert_eq!(store.engine(), Engine::Postgres);
    suite(store).await
}
