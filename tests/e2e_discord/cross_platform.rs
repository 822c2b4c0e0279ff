//! A conversation handed from Discord to Telegram and back.

use super::*;

/// A conversation handed from a Discord responder to a Telegram responder and back: the
/// visitor's room never changes, each holder answers as their own ghost, and the Discord
/// responder's first thread is closed when they hand over (a new one opens when it comes back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_conversation_goes_from_discord_to_telegram_and_back() -> anyhow::Result<()> {
    const TG_TOKEN: &str = "5151:discord-handoff-standin-token";
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 5)?;
    let dc = DiscordStandIn::start(TOKEN).await?;
    let staff = dc.create_text_channel("support-staff");
    let sam = dc.user("sam");
    let tg = telegram_standin::StandIn::start(TG_TOKEN).await?;
    let alex = tg.user(7101, "Alexandra", Some("alex_tg"));
    let config = format!(
        "{}\n[telegram]\ntoken = {TG_TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n{}\
         [[responders]]\nid = \"alex\"\ndisplay_name = \"Alex\"\npseudonym = \"Alex\"\n\
         topics = [\"support\"]\nmax_concurrent = 5\ncontacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n\n{TOPICS}",
        discord_section(&dc, Some(staff)),
        responder("sam", "Sam (Support)", &sam),
        api = tg.api_url(),
        chat = alex.id,
    );
    let mut sb = Switchboard::start(&env, &slot, &config).await?;
    let mut v = Visitor::guest(&env, &sb.base).await?;
    let room = v.start("support").await?;
    v.send("My order never came").await?;
    accept(&dc, &sam, "order").await?;
    let dm = dm_of(&dc, &sam).await?;
    let alias = alias_of(
        &dc.messages(dm)
            .iter()
            .find(|m| m.content.contains("New conversation"))
            .context("offer")?
            .content,
    );
    let first_thread = thread_for(&dc, &alias, &sam).await?.id;
    dc.user_sends(&sam, first_thread, "Sam here, passing you to Alex");
    v.sync_until("Sam's answer", |seen| {
        seen.iter().any(|s| s.body.contains("Sam here"))
    })
    .await?;

    // --- Discord → Telegram ----------------------------------------------------------------------
    dc.user_sends(&sam, first_thread, "/transfer alex");
    tg.wait_for_sent(
        alex.id,
        |s| {
            s.iter().any(|m| {
                m.text
                    .as_deref()
                    .is_some_and(|t| t.contains("New conversation") && t.contains(&alias))
            })
        },
        WAIT,
    )
    .await
    .map_err(|e| anyhow::anyhow!("the hand-off offer on Telegram: {e}\n{}", sb.log_text()))?;
    accept_open_offer(&tg, &alex);
    wait_for(
        "Sam out of his thread, the thread archived and locked",
        || async {
            Ok(dc.threads().into_iter().find(|t| {
                t.id == first_thread && t.archived && t.locked && !t.members.contains(&sam.id)
            }))
        },
    )
    .await?;
    tg.user_sends(&alex, "Alex here: it ships tomorrow");
    v.sync_until("Alex's answer", |seen| {
        seen.iter().any(|s| s.body.contains("Alex here"))
    })
    .await?;

    // --- Telegram → Discord ----------------------------------------------------------------------
    tg.user_sends(&alex, "/transfer sam");
    // The first offer now reads "You accepted …"; the new one is an offer again.
    let offers = wait_messages(&dc, dm, "the offer back on Discord", |m| {
        m.iter()
            .any(|m| m.content.contains("New conversation") && m.content.contains(&alias))
    })
    .await?;
    let back = offers
        .iter()
        .rev()
        .find(|m| m.content.contains("New conversation"))
        .unwrap();
    let custom_id = back.components[0]["components"][0]["custom_id"]
        .as_str()
        .context("Accept button")?
        .to_owned();
    let press = dc.user_presses(&sam, dm, back.id, &custom_id);
    dc.wait_for_interaction_response(&press, Duration::from_secs(3))
        .await
        .context("the press was not answered")?;
    let second_thread = wait_for("Sam's new thread, Sam in it", || async {
        Ok(dc
            .threads()
            .into_iter()
            .find(|t| {
                t.name.contains(&alias) && t.id != first_thread && t.members.contains(&sam.id)
            })
            .map(|t| t.id))
    })
    .await?;
    dc.user_sends(&sam, second_thread, "Sam again: anything else?");
    v.sync_until("Sam's second answer", |seen| {
        seen.iter().any(|s| s.body.contains("Sam again"))
    })
    .await?;

    // The same room all along, each holder as their own ghost.
    assert_eq!(v.room_id.as_deref(), Some(room.as_str()));
    let sender = |needle: &str| {
        v.seen
            .iter()
            .find(|s| s.body.contains(needle))
            .map(|s| s.sender.clone())
            .unwrap()
    };
    assert_eq!(sender("Sam here"), sender("Sam again"));
    assert_ne!(sender("Sam here"), sender("Alex here"));
    sb.kill();
    Ok(())
}
