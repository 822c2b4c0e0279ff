//! Nothing lost or doubled through 429s, dropped gateway connections and restarts.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_loses_and_doubles_nothing_through_429s_drops_and_restarts() -> anyhow::Result<()> {
    use discord_standin::{Fault, Route};
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 4)?;
    let dc = DiscordStandIn::start(TOKEN).await?;
    let staff = dc.create_text_channel("support-staff");
    let sam = dc.user("sam");
    // Rex does not accept direct messages: his offer cannot go out, Sam's does.
    let rex = dc.user("rex");
    dc.set_refuses_dms(&rex, true);
    let config = format!(
        "{}\n{}{}{TOPICS}",
        discord_section(&dc, Some(staff)),
        responder("rex", "Rex", &rex),
        responder("sam", "Sam (Support)", &sam)
    );
    let mut sb = Switchboard::start(&env, &slot, &config).await?;
    let mut v = Visitor::guest(&env, &sb.base).await?;
    v.start("support").await?;
    v.send("Hello there").await?;
    accept(&dc, &sam, "Hello there").await?;
    let dm = dm_of(&dc, &sam).await?;
    let alias = alias_of(
        &dc.messages(dm)
            .iter()
            .find(|m| m.content.contains("New conversation"))
            .context("offer")?
            .content,
    );
    let thread = thread_for(&dc, &alias, &sam).await?.id;
    assert!(
        dc.dm_channel_of(&rex).is_some(),
        "Rex's direct chat was tried"
    );
    assert!(
        dc.messages(dc.dm_channel_of(&rex).unwrap()).is_empty(),
        "but nothing reached him"
    );

    // --- a long message split in parts, paced by Discord's headers, one part meeting a 429 ----
    // One message per second in the thread: the bot learns it from the headers and waits
    // without sending; a 429 armed after the first part hits a later one.
    dc.set_bucket_limit(
        Route::CreateMessage {
            channel_id: Some(thread),
        },
        1,
        Duration::from_secs(1),
    );
    // A fresh window, so the new limit holds from the first request the bot sends under it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Only what the bot sends under this limit counts below: earlier, the accept's notices
    // and the first deliveries reach the thread from different lanes, and a 429 there is
    // the platform's limit doing its job, not a header ignored.
    let requests_before = dc.requests().len();
    let before = dc.messages(thread).len();
    let armer = {
        let dc = dc.clone();
        tokio::spawn(async move {
            dc.wait_for_messages(thread, |m| m.len() > before, WAIT)
                .await;
            dc.fail_next(
                Route::CreateMessage {
                    channel_id: Some(thread),
                },
                Fault::RateLimited {
                    retry_after: 1.0,
                    global: false,
                },
            );
        })
    };
    let long = (0..900)
        .map(|i| format!("w{i}"))
        .collect::<Vec<_>>()
        .join(" ");
    assert!(long.chars().count() > 2 * 2000, "three parts at least");
    v.send(&long).await?;
    let expected: Vec<String> = (0..900).map(|i| format!("w{i}")).collect();
    let arrived = wait_messages(&dc, thread, "every part of the long message", |m| {
        words(m).len() >= expected.len()
    })
    .await?;
    armer.await?;
    assert_eq!(
        words(&arrived),
        expected,
        "parts lost, doubled or out of order"
    );
    let in_thread: Vec<_> = dc.requests()[requests_before..]
        .iter()
        .filter(|r| r.path.contains(&format!("/channels/{thread}/messages")))
        .cloned()
        .collect();
    let limited = in_thread.iter().filter(|r| r.status == 429).count();
    let start = in_thread.first().map(|r| r.at);
    assert_eq!(
        limited,
        1,
        "exactly the armed 429: the headers' limits were kept; requests in the thread: {:?}",
        in_thread
            .iter()
            .map(|r| format!(
                "{} {} {} at +{} ms",
                r.method,
                r.path,
                r.status,
                start.map_or(0, |s| r.at.duration_since(s).as_millis())
            ))
            .collect::<Vec<_>>()
    );

    // --- the gateway drops: the session is resumed and what was written meanwhile replayed -----
    let resumes = dc.resume_count();
    dc.drop_gateway();
    dc.user_sends(&sam, thread, "during the drop 1");
    dc.user_sends(&sam, thread, "during the drop 2");
    v.sync_until("what was written during the drop", |seen| {
        seen.iter().any(|s| s.body == "during the drop 2")
    })
    .await?;
    assert!(
        dc.resume_count() > resumes,
        "the session was resumed, not identified anew"
    );

    // --- Switchboard is killed; what Sam writes and edits meanwhile is fetched after the restart
    let typo = dc.user_sends(&sam, thread, "Opening hours are 9 to 5 on Sundy");
    v.sync_until("the message to be corrected", |seen| {
        seen.iter().any(|s| s.body.ends_with("Sundy"))
    })
    .await?;
    let typo_event = v
        .seen
        .iter()
        .find(|s| s.body.ends_with("Sundy"))
        .unwrap()
        .event_id
        .clone();
    sb.kill();
    dc.user_sends(&sam, thread, "while down 1");
    dc.user_edits(&sam, thread, typo, "Opening hours are 9 to 5 on Sunday");
    dc.user_sends(&sam, thread, "while down 2");
    sb.restart().await?;
    v.sync_until("what was written while Switchboard was down", |seen| {
        seen.iter().any(|s| s.body == "while down 2")
    })
    .await?;
    let corrected = |s: &Seen| {
        s.relates_to["rel_type"] == "m.replace"
            && s.relates_to["event_id"] == typo_event.as_str()
            && s.body.ends_with("Sunday")
    };
    v.sync_until("the edit made while Switchboard was down", |seen| {
        seen.iter().any(corrected)
    })
    .await?;
    dc.user_sends(&sam, thread, "after the restart");
    v.sync_until("a live message after the restart", |seen| {
        seen.iter().any(|s| s.body == "after the restart")
    })
    .await?;
    let from_sam: Vec<String> = v
        .seen
        .iter()
        .filter(|s| {
            s.body.starts_with("during")
                || s.body.starts_with("while")
                || s.body.starts_with("after")
        })
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(
        from_sam,
        [
            "during the drop 1",
            "during the drop 2",
            "while down 1",
            "while down 2",
            "after the restart"
        ],
        "lost, doubled or out of order"
    );
    assert_eq!(
        v.seen.iter().filter(|s| corrected(s)).count(),
        1,
        "the edit doubled"
    );
    sb.kill();
    Ok(())
}
