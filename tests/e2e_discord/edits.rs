//! Edits and deletions, both ways.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn edits_and_deletions_reach_both_sides() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 7)?;
    let dc = DiscordStandIn::start(TOKEN).await?;
    let staff = dc.create_text_channel("support-staff");
    let sam = dc.user("sam");
    // A visitor account: Synapse lets no guest redact.
    let config = format!(
        "[visitors]\nmode = \"accounts\"\n\n{}\n{}{TOPICS}",
        discord_section(&dc, Some(staff)),
        responder("sam", "Sam", &sam)
    );
    let mut sb = Switchboard::start(&env, &slot, &config).await?;
    let mut v = Visitor::account(&env, &sb.base).await?;
    v.start("support").await?;
    let blue = v.send("I ordered the blue teapot").await?;
    accept(&dc, &sam, "blue teapot").await?;
    let dm = dm_of(&dc, &sam).await?;
    let alias = alias_of(
        &dc.messages(dm)
            .iter()
            .find(|m| m.content.contains("blue teapot"))
            .context("the offer")?
            .content,
    );
    let thread = thread_for(&dc, &alias, &sam).await?.id;
    wait_messages(&dc, thread, "the first message in the thread", |m| {
        m.iter().any(|m| m.content.contains("blue teapot"))
    })
    .await?;

    // --- the visitor's edit changes the message in place -----------------------------------------
    v.edit(&blue, "I ordered the red teapot").await?;
    let messages = wait_messages(&dc, thread, "the edit", |m| {
        m.iter().any(|m| m.content.contains("red teapot"))
    })
    .await?;
    let edited: Vec<_> = messages
        .iter()
        .filter(|m| m.content.contains("teapot"))
        .collect();
    assert_eq!(
        edited.len(),
        1,
        "edited in place, not sent again: {messages:#?}"
    );
    assert!(edited[0].edited, "{:?}", edited[0]);
    assert!(edited[0].content.contains(&alias), "{}", edited[0].content);

    // --- a long message, split in three, edited short: one part edited, two deleted ------------
    let long: Vec<String> = (0..900).map(|i| format!("w{i}")).collect();
    let long_id = v.send(&long.join(" ")).await?;
    let messages = wait_messages(&dc, thread, "the long message in parts", |m| {
        words(m).len() == long.len()
    })
    .await?;
    let parts = messages
        .iter()
        .filter(|m| !words(std::slice::from_ref(*m)).is_empty())
        .count();
    assert!(parts >= 3, "split into {parts}");
    v.edit(&long_id, "Sorry, wrong window").await?;
    let messages = wait_messages(&dc, thread, "the long message edited short", |m| {
        words(m).is_empty() && m.iter().any(|m| m.content.contains("wrong window"))
    })
    .await?;
    assert_eq!(
        messages
            .iter()
            .filter(|m| m.content.contains("wrong window"))
            .count(),
        1
    );

    // --- the visitor deletes a message: it goes from the thread ---------------------------------
    let secret = v.send("my card number is 4111").await?;
    wait_messages(&dc, thread, "the message to delete", |m| {
        m.iter().any(|m| m.content.contains("4111"))
    })
    .await?;
    v.redact(&secret).await?;
    wait_messages(&dc, thread, "the deletion", |m| {
        !m.iter().any(|m| m.content.contains("4111"))
    })
    .await?;

    // --- the responder edits and deletes: the ghost's event is replaced, then redacted -----------
    let said = dc.user_sends(&sam, thread, "It ships on Monday");
    let visitor = v.user_id.clone();
    v.sync_until("the responder's message", |seen| {
        seen.iter().any(|s| s.body == "It ships on Monday")
    })
    .await?;
    let ghost_event = v
        .seen
        .iter()
        .find(|s| s.body == "It ships on Monday")
        .unwrap()
        .clone();
    assert_ne!(ghost_event.sender, visitor);
    dc.user_edits(&sam, thread, said, "It ships on Tuesday");
    v.sync_until("the responder's edit", |seen| {
        seen.iter().any(|s| {
            s.relates_to["rel_type"] == "m.replace"
                && s.relates_to["event_id"] == ghost_event.event_id.as_str()
        })
    })
    .await?;
    // A visitor's "edit" of the responder's message is no edit of theirs: nothing changes.
    v.edit(&ghost_event.event_id, "It ships never").await?;
    dc.user_deletes(&sam, thread, said);
    v.wait_for_redaction(&ghost_event.event_id).await?;
    let touched = dc
        .requests()
        .into_iter()
        .filter(|r| r.method != "GET" && r.path.ends_with(&format!("/messages/{said}")))
        .count();
    assert_eq!(
        touched, 0,
        "Switchboard changed the responder's own message"
    );
    // What the visitor took back is gone from what a next responder would be shown too.
    let store = sb.store().await?;
    let transcript = store.messages(v.room_id.as_deref().unwrap()).await?;
    assert!(
        !transcript.iter().any(|m| m.body.contains("4111")),
        "{transcript:#?}"
    );
    assert!(
        transcript
            .iter()
            .any(|m| m.body == "I ordered the red teapot"),
        "{transcript:#?}"
    );
    sb.kill();
    Ok(())
}
