//! A Discord responder's conversations: two visitors in two private threads, and without a
//! staff channel the direct chat carrying the conversation.

use super::*;

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
