//! Discord responders end to end: visitor → real Synapse → Switchboard → Discord stand-in
//! (REST and gateway) → Accept button → a private thread → replies as the responder's ghost,
//! with formatting, mentions that never ping, two conversations in two threads, the direct-chat
//! mode with a reply to the offer, and no visitor identifier in any byte sent to Discord.

mod common;

use std::time::Duration;

use anyhow::Context;
use common::discord_messages as wait_messages;
use common::*;
use discord_standin::{DcMessage, DcUser, DiscordStandIn};

const TOKEN: &str = "MTA.standin.bot-token";

/// The config section for the stand-in; `staff`: the staff channel, if any.
fn discord_section(dc: &DiscordStandIn, staff: Option<u64>) -> String {
    let mut s = format!(
        "[discord]\ntoken = {TOKEN:?}\napplication_id = \"{app}\"\nguild = \"{guild}\"\napi_url = {api:?}\n",
        app = dc.application_id(),
        guild = dc.guild_id(),
        api = dc.base_url(),
    );
    if let Some(staff) = staff {
        s.push_str(&format!("staff_channel = \"{staff}\"\n"));
    }
    s
}

fn responder(id: &str, pseudonym: &str, user: &DcUser) -> String {
    format!(
        "[[responders]]\nid = \"{id}\"\ndisplay_name = \"{pseudonym}\"\npseudonym = \"{pseudonym}\"\n\
         topics = [\"support\"]\nmax_concurrent = 5\ncontacts = [{{ platform = \"discord\", address = \"{}\" }}]\n\n",
        user.id
    )
}

const TOPICS: &str = "[[topics]]\nid = \"support\"\nname = \"General support\"\n";

/// The open offer (a message with an Accept button) that quotes `hint`: (message ID, custom ID).
fn offer_of(messages: &[DcMessage], hint: &str) -> Option<(u64, String)> {
    messages.iter().find_map(|m| {
        if !m.content.contains("New conversation") || !m.content.contains(hint) {
            return None;
        }
        let id = m.components[0]["components"][0]["custom_id"].as_str()?;
        id.starts_with("accept:").then(|| (m.id, id.to_owned()))
    })
}

async fn dm_of(dc: &DiscordStandIn, user: &DcUser) -> anyhow::Result<u64> {
    wait_for("the bot's direct chat", || async {
        Ok(dc.dm_channel_of(user))
    })
    .await
}

/// The private thread whose name holds `alias`, once `member` is in it. Switchboard opens the
/// thread and adds the responder in two calls, as Discord's API has it; until the second, the
/// responder cannot see the thread (the stand-in refuses their messages there, as Discord does).
async fn thread_for(
    dc: &DiscordStandIn,
    alias: &str,
    member: &DcUser,
) -> anyhow::Result<discord_standin::DcThread> {
    wait_for("the conversation's thread, the responder in it", || async {
        Ok(dc
            .threads()
            .into_iter()
            .find(|t| t.name.contains(alias) && t.members.contains(&member.id)))
    })
    .await
}

/// Presses Accept on the offer quoting `hint` and waits until the thread (or, without a staff
/// channel, the confirmation) is there.
async fn accept(dc: &DiscordStandIn, who: &DcUser, hint: &str) -> anyhow::Result<()> {
    let dm = dm_of(dc, who).await?;
    let messages = wait_messages(dc, dm, "the offer", |m| offer_of(m, hint).is_some()).await?;
    let (offer, custom_id) = offer_of(&messages, hint).unwrap();
    let press = dc.user_presses(who, dm, offer, &custom_id);
    let answer = dc
        .wait_for_interaction_response(&press, Duration::from_secs(3))
        .await
        .context("the button press was not answered within Discord's 3 seconds")?;
    assert_eq!(answer["type"], 6, "{answer}");
    Ok(())
}

fn alias_of(text: &str) -> String {
    text.split("from ")
        .nth(1)
        .unwrap_or_default()
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn discord_responder_answers_two_visitors_in_two_private_threads() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 2)?;
    let dc = DiscordStandIn::start(TOKEN).await?;
    let staff = dc.create_text_channel("support-staff");
    let sam = dc.user("sam");
    let config = format!(
        "{}\n{}{TOPICS}",
        discord_section(&dc, Some(staff)),
        responder("sam", "Sam (Support)", &sam)
    );
    let mut sb = Switchboard::start(&env, &slot, &config).await?;
    wait_for("the bot's gateway session", || async {
        Ok((dc.identify_count() > 0).then_some(()))
    })
    .await?;
    let commands: Vec<String> = dc
        .commands()
        .iter()
        .filter_map(|c| c["name"].as_str().map(str::to_owned))
        .collect();
    for name in [
        "conversations",
        "transfer",
        "end",
        "available",
        "away",
        "offline",
    ] {
        assert!(
            commands.iter().any(|c| c == name),
            "/{name} not registered: {commands:?}"
        );
    }

    // --- the offer: a direct message with the pseudonym, the topic, the first message, buttons --
    let mut v1 = Visitor::guest(&env, &sb.base).await?;
    let room1 = v1.start("support").await?;
    v1.send("My kettle **whistles** @everyone <@&123>").await?;
    let dm = dm_of(&dc, &sam).await?;
    let messages = wait_messages(&dc, dm, "the first offer", |m| {
        offer_of(m, "kettle").is_some()
    })
    .await?;
    let offer = messages
        .iter()
        .find(|m| m.content.contains("kettle"))
        .unwrap();
    assert!(
        offer.content.contains("General support"),
        "{}",
        offer.content
    );
    let alias1 = alias_of(&offer.content);
    assert!(alias1.starts_with("Visitor "), "{}", offer.content);
    assert_eq!(
        offer.allowed_mentions.as_ref().map(|a| a["parse"].clone()),
        Some(serde_json::json!([])),
        "offers ping nobody"
    );

    accept(&dc, &sam, "kettle").await?;
    let thread1 = thread_for(&dc, &alias1, &sam).await?;
    assert_eq!(thread1.parent_id, staff);
    assert_eq!(thread1.kind, 12, "a private thread");
    assert!(!thread1.invitable, "nobody else can be invited");
    // The offer now says it is theirs, without buttons.
    wait_messages(&dc, dm, "the offer marked accepted", |m| {
        m.iter().any(|m| {
            m.content.contains("You accepted")
                && m.components.as_array().is_none_or(|c| c.is_empty())
        })
    })
    .await?;

    // --- what the visitor wrote reaches the thread, mentions inert ------------------------------
    let relayed = wait_messages(&dc, thread1.id, "the first message in the thread", |m| {
        m.iter().any(|m| m.content.contains("kettle"))
    })
    .await?;
    let first = relayed
        .iter()
        .find(|m| m.content.contains("kettle"))
        .unwrap();
    assert_eq!(
        first.allowed_mentions.as_ref().map(|a| a["parse"].clone()),
        Some(serde_json::json!([])),
        "{first:?}"
    );
    assert!(
        first.content.contains(&alias1),
        "relayed messages name their visitor: {}",
        first.content
    );
    assert!(
        first.content.contains("\\*\\*whistles\\*\\*"),
        "the visitor's asterisks are shown, not formatting: {}",
        first.content
    );

    // --- responder → visitor: as the ghost, formatting kept -------------------------------------
    dc.user_sends(&sam, thread1.id, "**Hello!** Try _descaling_ it.");
    v1.sync_until("the responder's reply", |seen| {
        seen.iter().any(|s| s.body.contains("descaling"))
    })
    .await?;
    let reply = v1
        .seen
        .iter()
        .find(|s| s.body.contains("descaling"))
        .unwrap()
        .clone();
    let ghost = sb
        .store()
        .await?
        .active_assignments_for_room(&room1)
        .await?
        .first()
        .context("assignment")?
        .ghost_user_id
        .clone();
    assert_eq!(
        reply.sender, ghost,
        "the reply comes from the responder's ghost"
    );
    let html = reply.formatted_body.clone().context("formatting lost")?;
    assert!(html.contains("<strong>Hello!</strong>"), "{html}");
    assert!(html.contains("<em>descaling</em>"), "{html}");

    // Sam types in the thread: the visitor sees his ghost typing.
    dc.user_types(&sam, thread1.id);
    assert!(
        ghost_typing_seen(&v1, &room1, &ghost).await?,
        "the visitor never saw Sam typing"
    );

    // --- formatted visitor text becomes Discord markdown ---------------------------------------
    v1.send_html(
        "It is **still** loud",
        "It is <b>still</b> loud<img src=x onerror=alert(1)>",
    )
    .await?;
    let relayed = wait_messages(&dc, thread1.id, "the formatted message", |m| {
        m.iter().any(|m| m.content.contains("still"))
    })
    .await?;
    let formatted = relayed
        .iter()
        .find(|m| m.content.contains("still"))
        .unwrap();
    assert!(
        formatted.content.contains("**still**"),
        "{}",
        formatted.content
    );
    assert!(
        !formatted.content.contains("onerror"),
        "{}",
        formatted.content
    );

    // --- a second conversation in a second thread; replies land right -------------------------
    let mut v2 = Visitor::guest(&env, &sb.base).await?;
    let room2 = v2.start("support").await?;
    v2.send("Question about toasters").await?;
    let messages = wait_messages(&dc, dm, "the second offer", |m| {
        offer_of(m, "toasters").is_some()
    })
    .await?;
    let alias2 = alias_of(
        &messages
            .iter()
            .find(|m| m.content.contains("toasters"))
            .unwrap()
            .content,
    );
    accept(&dc, &sam, "toasters").await?;
    let thread2 = thread_for(&dc, &alias2, &sam).await?;
    assert_ne!(thread1.id, thread2.id);
    wait_messages(
        &dc,
        thread2.id,
        "the second conversation's first message",
        |m| m.iter().any(|m| m.content.contains("toasters")),
    )
    .await?;
    dc.user_sends(&sam, thread2.id, "Toasters: unplug first");
    dc.user_sends(&sam, thread1.id, "Kettle: vinegar works");
    v2.sync_until("the toaster answer", |seen| {
        seen.iter().any(|s| s.body.contains("unplug"))
    })
    .await?;
    v1.sync_until("the kettle answer", |seen| {
        seen.iter().any(|s| s.body.contains("vinegar"))
    })
    .await?;
    assert!(
        !v1.seen.iter().any(|s| s.body.contains("unplug")),
        "crossed threads"
    );
    assert!(
        !v2.seen.iter().any(|s| s.body.contains("vinegar")),
        "crossed threads"
    );

    // --- several lines in a row keep their order -----------------------------------------------
    for i in 0..5 {
        dc.user_sends(&sam, thread1.id, &format!("line {i}"));
    }
    v1.sync_until("five lines", |seen| seen.iter().any(|s| s.body == "line 4"))
        .await?;
    let lines: Vec<_> = v1
        .seen
        .iter()
        .filter(|s| s.body.starts_with("line "))
        .map(|s| s.body.clone())
        .collect();
    assert_eq!(lines, ["line 0", "line 1", "line 2", "line 3", "line 4"]);

    // --- /end in a thread ends that conversation: the thread is archived and locked -----------
    dc.user_sends(&sam, thread2.id, "/end");
    wait_for("the second thread archived and locked", || async {
        Ok(dc
            .threads()
            .into_iter()
            .find(|t| t.id == thread2.id && t.archived && t.locked && !t.members.contains(&sam.id)))
    })
    .await?;

    // --- no visitor identifier in any byte sent to Discord -------------------------------------
    for r in dc.requests() {
        let body = String::from_utf8_lossy(&r.body);
        let text = format!("{} {}", r.path, body);
        for secret in [
            &v1.user_id,
            &v2.user_id,
            &v1.token,
            &v2.token,
            &room1,
            &room2,
        ] {
            assert!(
                !text.contains(secret.as_str()),
                "{} carried a visitor identifier: {text}",
                r.method
            );
        }
        assert!(
            !text.contains(&format!(":{}", env.server_name)),
            "{} leaked a Matrix ID: {text}",
            r.method
        );
    }
    sb.kill();
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_staff_channel_the_direct_chat_carries_the_conversation() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 3)?;
    let dc = DiscordStandIn::start(TOKEN).await?;
    let kim = dc.user("kim");
    // A public address: files too large for Discord are passed on as links to it.
    let config = format!(
        "[visitors]\npublic_url = \"http://{}\"\n\n{}\n{}{TOPICS}",
        slot.listen,
        discord_section(&dc, None),
        responder("kim", "Kim", &kim)
    );
    let mut sb = Switchboard::start(&env, &slot, &config).await?;

    let mut v = Visitor::guest(&env, &sb.base).await?;
    v.start("support").await?;
    v.send("Is the shop open on Sunday?").await?;
    let dm = dm_of(&dc, &kim).await?;
    let messages = wait_messages(&dc, dm, "the offer", |m| offer_of(m, "Sunday").is_some()).await?;
    let (offer, _) = offer_of(&messages, "Sunday").unwrap();
    accept(&dc, &kim, "Sunday").await?;
    assert!(dc.threads().is_empty(), "no staff channel, no thread");
    wait_messages(&dc, dm, "the accept's confirmation", |m| {
        m.iter()
            .any(|m| m.content.contains("You are now talking with"))
    })
    .await?;
    // The offer quoted the first message; what follows arrives in the direct chat.
    v.send("And is there parking?").await?;
    wait_messages(
        &dc,
        dm,
        "the next message relayed into the direct chat",
        |m| m.iter().any(|m| m.content.contains("parking")),
    )
    .await?;
    // A reply to the offer itself routes to its conversation.
    dc.user_replies(&kim, dm, "Yes, 10 to 4.", offer);
    v.sync_until("the answer", |seen| {
        seen.iter().any(|s| s.body == "Yes, 10 to 4.")
    })
    .await?;

    // --- files both ways, through the homeserver's media repository ---------------------------
    let mxc = upload_media(&env, &slot, "map.png", "image/png", PNG).await?;
    v.send_content(serde_json::json!({"msgtype": "m.image", "body": "map.png", "url": mxc, "info": {"mimetype": "image/png"}}))
        .await?;
    let messages = wait_messages(&dc, dm, "the visitor's image", |m| {
        m.iter().any(|m| !m.attachments.is_empty())
    })
    .await?;
    let relayed = messages.iter().find(|m| !m.attachments.is_empty()).unwrap();
    assert_eq!(
        relayed.attachments[0].bytes, PNG,
        "the image changed on the way"
    );
    assert_eq!(relayed.attachments[0].filename, "map.png");
    assert!(relayed.content.contains("map.png"), "{}", relayed.content);

    dc.user_sends_file(
        &kim,
        dm,
        "Here is the leaflet",
        "leaflet.png",
        "image/png",
        PNG.to_vec(),
    );
    let visitor = v.user_id.clone();
    let from_kim = move |s: &Seen| s.msgtype == "m.image" && s.sender != visitor;
    v.sync_until("the responder's image", |seen| seen.iter().any(&from_kim))
        .await?;
    let image = v.seen.iter().find(|s| from_kim(s)).unwrap().clone();
    assert_eq!(image.body, "Here is the leaflet");
    let downloaded = download_media(&env, &v.token, &image.url).await?;
    assert_eq!(
        &downloaded[..],
        PNG,
        "the responder's image changed on the way"
    );

    // --- a file over Discord's 10 MiB: a link through Switchboard, not a refusal -----------------
    let big: Vec<u8> = (0..11 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let mxc = upload_media(&env, &slot, "site plan.pdf", "application/pdf", &big).await?;
    v.send_content(serde_json::json!({"msgtype": "m.file", "body": "site plan.pdf", "url": mxc, "info": {"mimetype": "application/pdf"}}))
        .await?;
    let messages = wait_messages(&dc, dm, "the link to the large file", |m| {
        m.iter().any(|m| m.content.contains("too large to attach"))
    })
    .await?;
    let text = &messages
        .iter()
        .find(|m| m.content.contains("too large to attach"))
        .unwrap()
        .content;
    assert!(text.contains("site plan.pdf (11 MB)"), "{text}");
    let link = text
        .split('<')
        .nth(1)
        .and_then(|rest| rest.split('>').next())
        .with_context(|| format!("no <link> in {text}"))?
        .to_owned();
    assert!(
        link.starts_with(&format!("http://{}/media/v1/", slot.listen)),
        "{link}"
    );
    assert!(!link.contains(&v.user_id) && !link.contains(v.room_id.as_deref().unwrap()));
    let http = reqwest::Client::new();
    let got = http.get(&link).send().await?;
    assert_eq!(got.status(), 200);
    assert_eq!(got.headers()["content-type"], "application/pdf");
    let disposition = got.headers()["content-disposition"].to_str()?.to_owned();
    assert!(disposition.starts_with("attachment;"), "{disposition}");
    assert!(disposition.contains("site%20plan%2Epdf"), "{disposition}");
    assert_eq!(got.headers()["x-content-type-options"], "nosniff");
    assert!(
        got.bytes().await? == big,
        "the linked file changed on the way"
    );
    // A link altered in any part opens nothing.
    let mut forged = link.clone();
    let at = forged.rfind('/').unwrap() - 3;
    let flipped = if &forged[at..at + 1] == "A" { "B" } else { "A" };
    forged.replace_range(at..at + 1, flipped);
    assert_eq!(http.get(&forged).send().await?.status(), 404, "{forged}");
    let renamed = format!("{}/plan.exe", &link[..link.rfind('/').unwrap()]);
    assert_eq!(http.get(&renamed).send().await?.status(), 404);

    // --- Discord refuses a file below the declared limit (413, 40005): a link again, and the
    // responder stays reachable -----------------------------------------------------------------
    dc.set_max_file(1000);
    let mxc = upload_media(&env, &slot, "notes.txt", "text/plain", &[b'n'; 2048]).await?;
    v.send_content(serde_json::json!({"msgtype": "m.file", "body": "notes.txt", "url": mxc, "info": {"mimetype": "text/plain"}}))
        .await?;
    wait_messages(&dc, dm, "the link after a 413", |m| {
        m.iter()
            .any(|m| m.content.contains("notes.txt (2 KB) is too large"))
    })
    .await?;
    v.send("Still there?").await?;
    wait_messages(&dc, dm, "the next message after the 413", |m| {
        m.iter().any(|m| m.content.contains("Still there?"))
    })
    .await?;
    assert!(
        dc.requests().iter().any(|r| r.status == 413),
        "Discord never refused the file"
    );
    sb.kill();
    Ok(())
}

/// The words `w0 … w{n-1}` as they arrived in `messages`, in order.
fn words(messages: &[DcMessage]) -> Vec<String> {
    messages
        .iter()
        .flat_map(|m| m.content.split_whitespace())
        .filter(|w| w.starts_with('w') && w[1..].chars().all(|c| c.is_ascii_digit()))
        .map(str::to_owned)
        .collect()
}

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

/// A responder links their Discord account with a one-time code through the `/start` slash
/// command, and `/conversations` and `/end` work as slash commands too: each interaction is
/// answered within Discord's 3 seconds, the answer itself arrives as a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_links_with_a_code_and_uses_slash_commands() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 6)?;
    let dc = DiscordStandIn::start(TOKEN).await?;
    let kai = dc.user("kai");
    let config = format!(
        "{}\n[[responders]]\nid = \"kai\"\ndisplay_name = \"Kai\"\ntopics = [\"support\"]\n\n{TOPICS}",
        discord_section(&dc, None)
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    wait_for("the slash commands registered", || async {
        Ok((!dc.commands().is_empty()).then_some(()))
    })
    .await?;
    let code = sb
        .link_code(&env, "discord", "kai")?
        .map_err(anyhow::Error::msg)?;

    let dm = dc.user_opens_dm(&kai);
    let slash =
        |name: &str, options: serde_json::Value| dc.user_runs_command(&kai, dm, name, options);
    let answered = |i: discord_standin::Interaction| {
        let dc = dc.clone();
        async move {
            dc.wait_for_interaction_response(&i, Duration::from_secs(3))
                .await
                .context("a slash command was not answered within 3 seconds")
        }
    };
    let answer = answered(slash("start", serde_json::json!({"code": "WRONGCODE1"}))).await?;
    assert_eq!(answer["type"], 4, "{answer}");
    wait_messages(&dc, dm, "the refusal of a wrong code", |m| {
        m.iter()
            .any(|m| m.content.contains("unknown, expired or already used"))
    })
    .await?;
    answered(slash("start", serde_json::json!({"code": code}))).await?;
    wait_messages(&dc, dm, "the link confirmation", |m| {
        m.iter().any(|m| m.content.starts_with("Linked."))
    })
    .await?;

    // Linked: Kai gets offers now.
    let mut v = Visitor::guest(&env, &sb.base).await?;
    v.start("support").await?;
    v.send("Where is my parcel?").await?;
    accept(&dc, &kai, "parcel").await?;
    answered(slash("conversations", serde_json::json!({}))).await?;
    wait_messages(&dc, dm, "the list of conversations", |m| {
        m.iter()
            .any(|m| m.content.contains("Your conversations (1)"))
    })
    .await?;
    answered(slash("end", serde_json::json!({}))).await?;
    wait_for("the conversation ended", || async {
        let store = sb.store().await?;
        Ok(store
            .active_assignments_for_address("discord", &kai.id.to_string())
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}

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
