//! Telegram responders end to end: visitor → real Synapse → Switchboard → Telegram stand-in →
//! Accept → reply → Synapse → visitor, with formatting, two concurrent conversations, a 429,
//! a restart with updates pending, and no visitor identifier in any byte sent to Telegram.

mod common;

use anyhow::Context;
use common::*;
use serde_json::json;
use telegram_standin::{SentMessage, StandIn, TgUser};

const SLOT: u32 = 2;

const TOKEN: &str = "4242:standin-secret-token";

fn offer_of(sent: &[SentMessage], alias_hint: &str) -> Option<(i64, String)> {
    sent.iter().find_map(|m| {
        let text = m.text.as_deref()?;
        if !text.contains("New conversation") || !text.contains(alias_hint) {
            return None;
        }
        let markup = m.reply_markup.as_ref()?;
        let data = markup["inline_keyboard"][0][0]["callback_data"]
            .as_str()?
            .to_owned();
        Some((m.message_id, data))
    })
}

async fn wait_sent(
    tg: &StandIn,
    chat: i64,
    what: &str,
    pred: impl Fn(&[SentMessage]) -> bool,
) -> anyhow::Result<Vec<SentMessage>> {
    tg.wait_for_sent(chat, pred, WAIT)
        .await
        .map_err(|e| anyhow::anyhow!("waiting for {what}: {e}"))
}

fn texts(sent: &[SentMessage]) -> Vec<String> {
    sent.iter().filter_map(|m| m.text.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_responder_accepts_and_answers_two_visitors() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let tg = StandIn::start(TOKEN).await?;
    let alex: TgUser = tg.user(7001, "Alexandra", Some("alex_tg"));
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[responders]]\nid = \"alex\"\ndisplay_name = \"Alexandra R.\"\npseudonym = \"Alex (Support)\"\n\
         topics = [\"support\"]\nmax_concurrent = 5\ncontacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\n",
        api = tg.api_url(),
        chat = alex.id,
    );
    let mut sb = Switchboard::start(&env, &slot, &config).await?;

    // --- visitor 1: the offer carries topic, first message and alias, nothing identifying ------
    let mut v1 = Visitor::guest(&env, &sb.base).await?;
    let room1 = v1.start("support").await?;
    v1.send("My kettle <script> whistles & sings").await?;
    let alias1 = sb
        .store()
        .await?
        .conversation(&room1)
        .await?
        .context("stored")?
        .visitor_alias;
    let sent = wait_sent(&tg, alex.id, "the first offer", |s| {
        offer_of(s, "kettle").is_some()
    })
    .await?;
    let offer_text = sent[0].text.clone().unwrap_or_default();
    assert!(offer_text.contains("General support"), "{offer_text}");
    assert!(offer_text.contains(&alias1), "{offer_text}");
    assert!(
        offer_text.contains("My kettle <script> whistles & sings"),
        "the quote must arrive as plain text: {offer_text}"
    );
    let (offer_msg, data) = offer_of(&sent, "kettle").unwrap();
    assert!(data.starts_with("accept:"), "{data}");

    tg.user_presses(&alex, offer_msg, &data);
    wait_sent(&tg, alex.id, "the accept confirmation", |s| {
        texts(s)
            .iter()
            .any(|t| t.contains("You are now talking with"))
    })
    .await?;
    let ghost = sb
        .store()
        .await?
        .active_assignments_for_room(&room1)
        .await?
        .first()
        .context("assignment")?
        .ghost_user_id
        .clone();
    assert!(ghost.contains("_sbt2_alex"), "{ghost}");

    // --- responder → visitor: as the ghost, formatting kept -------------------------------------
    tg.user_sends_with(
        &alex,
        "Hello! Try descaling it.",
        vec![
            json!({"type": "bold", "offset": 0, "length": 6}),
            json!({"type": "italic", "offset": 11, "length": 12}),
        ],
        None,
    );
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
    assert_eq!(
        reply.sender, ghost,
        "the reply must come from the responder's ghost"
    );
    let html = reply.formatted_body.clone().context("formatting lost")?;
    assert!(
        html.contains("<strong>Hello!</strong>") || html.contains("<b>Hello!</b>"),
        "{html}"
    );
    assert!(
        html.contains("<em>descaling it</em>") || html.contains("<i>descaling it</i>"),
        "{html}"
    );

    // --- visitor → responder: formatting survives, sanitised -------------------------------------
    let loud = v1
        .send_html(
            "It is **still** loud",
            "It is <b>still</b> loud<img src=x onerror=alert(1)>",
        )
        .await?;
    let sent = wait_sent(&tg, alex.id, "the formatted visitor message", |s| {
        texts(s).iter().any(|t| t.contains("still"))
    })
    .await?;
    let relayed = sent
        .iter()
        .find(|m| m.text.as_deref().is_some_and(|t| t.contains("still")))
        .unwrap();
    assert!(
        relayed.text.as_deref().unwrap().contains(&alias1),
        "relayed messages name their conversation"
    );
    assert!(
        relayed
            .entities
            .iter()
            .any(|e| e["type"] == "bold" && e["length"] == 5),
        "bold lost on the way to Telegram: {:?}",
        relayed.entities
    );
    let v1_msg_on_tg = relayed.message_id;

    // --- the visitor's edit changes the message in place, still headed by the alias -------------
    v1.edit(&loud, "It is quieter now").await?;
    let sent = wait_sent(&tg, alex.id, "the visitor's edit", |s| {
        s.iter().any(|m| {
            m.message_id == v1_msg_on_tg
                && m.edited
                && m.text.as_deref().is_some_and(|t| t.contains("quieter"))
        })
    })
    .await?;
    let edited = sent.iter().find(|m| m.message_id == v1_msg_on_tg).unwrap();
    assert!(edited.text.as_deref().unwrap().contains(&alias1));
    assert!(
        !texts(&sent).iter().any(|t| t.contains("(edited)")),
        "edited in place, not sent again"
    );

    // --- visitor 2: a second concurrent conversation -------------------------------------------
    let mut v2 = Visitor::guest(&env, &sb.base).await?;
    let room2 = v2.start("support").await?;
    v2.send("Question about toasters").await?;
    let sent = wait_sent(&tg, alex.id, "the second offer", |s| {
        offer_of(s, "toasters").is_some()
    })
    .await?;
    let (offer2, data2) = offer_of(&sent, "toasters").unwrap();
    tg.user_presses(&alex, offer2, &data2);
    wait_sent(&tg, alex.id, "the second accept", |s| {
        texts(s)
            .iter()
            .filter(|t| t.contains("You are now talking with"))
            .count()
            == 2
    })
    .await?;

    // A plain message with two conversations open: the bot asks instead of guessing.
    tg.user_sends(&alex, "ambiguous");
    wait_sent(&tg, alex.id, "the which-one question", |s| {
        texts(s).iter().any(|t| t.contains("several conversations"))
    })
    .await?;
    // A reply to visitor 1's older message lands in visitor 1's room, not the newer one.
    tg.user_sends_with(&alex, "For kettle person only", vec![], Some(v1_msg_on_tg));
    v1.sync_until("the targeted reply", |seen| {
        seen.iter().any(|s| s.body == "For kettle person only")
    })
    .await?;
    v2.sync_until("visitor 2's history", |seen| {
        seen.iter().any(|s| s.body == "Question about toasters")
    })
    .await?;
    assert!(
        !v2.seen
            .iter()
            .any(|s| s.body.contains("kettle person") || s.body == "ambiguous"),
        "a reply crossed conversations"
    );
    assert!(
        !v1.seen.iter().any(|s| s.body == "ambiguous"),
        "an ambiguous message was guessed into a room"
    );

    // --- 429 with retry_after: the message still arrives, once, in order ---------------------------
    tg.rate_limit_next("sendMessage", Some(alex.id), 1, 2);
    v1.send("after the rate limit 1").await?;
    v1.send("after the rate limit 2").await?;
    let sent = wait_sent(&tg, alex.id, "messages after the 429", |s| {
        texts(s)
            .iter()
            .any(|t| t.contains("after the rate limit 2"))
    })
    .await?;
    let order: Vec<String> = texts(&sent)
        .into_iter()
        .filter(|t| t.contains("after the rate limit"))
        .collect();
    assert_eq!(order.len(), 2, "doubled or lost: {order:?}");
    assert!(
        order[0].contains("limit 1") && order[1].contains("limit 2"),
        "out of order: {order:?}"
    );
    assert!(
        tg.requests().iter().any(|r| r.status == 429),
        "the stand-in never answered 429"
    );

    // --- restart while Telegram updates are pending: nothing lost, nothing doubled ---------------
    sb.kill();
    tg.user_sends_with(
        &alex,
        "sent while Switchboard was down",
        vec![],
        Some(v1_msg_on_tg),
    );
    assert!(tg.pending_updates() >= 1);
    sb.restart().await?;
    v1.sync_until("the reply sent during the restart", |seen| {
        seen.iter()
            .any(|s| s.body == "sent while Switchboard was down")
    })
    .await?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let mut again = v1.reloaded();
    again
        .sync_until("the full history", |seen| {
            seen.iter()
                .any(|s| s.body == "sent while Switchboard was down")
        })
        .await?;
    assert_eq!(
        again
            .seen
            .iter()
            .filter(|s| s.body == "sent while Switchboard was down")
            .count(),
        1,
        "doubled after restart"
    );
    assert_eq!(
        again
            .seen
            .iter()
            .filter(|s| s.body == "For kettle person only")
            .count(),
        1
    );

    // --- a Telegram edit becomes a Matrix edit (m.replace) of the ghost's message ----------------
    let typo = tg.user_sends_with(&alex, "Descale with vinegr", vec![], Some(v1_msg_on_tg));
    v1.sync_until("the message with a typo", |seen| {
        seen.iter().any(|s| s.body == "Descale with vinegr")
    })
    .await?;
    tg.user_edits(&alex, typo, "Descale with vinegar");
    v1.sync_until("the edit", |seen| {
        seen.iter().any(|s| s.body.contains("Descale with vinegar"))
    })
    .await?;
    let edit = v1
        .seen
        .iter()
        .find(|s| s.body.contains("Descale with vinegar"))
        .unwrap();
    assert_eq!(edit.sender, ghost);
    assert_eq!(
        edit.relates_to["rel_type"], "m.replace",
        "an edit must replace, not add: {:?}",
        edit.relates_to
    );
    let original = v1
        .seen
        .iter()
        .find(|s| s.body == "Descale with vinegr")
        .unwrap();
    assert_eq!(edit.relates_to["event_id"], original.event_id.as_str());

    // --- /conversations lists both; /end (as a reply) ends only that one ---------------------------
    tg.user_sends(&alex, "/conversations");
    wait_sent(&tg, alex.id, "the conversation list", |s| {
        texts(s)
            .iter()
            .any(|t| t.starts_with("Your conversations (2)"))
    })
    .await?;
    tg.user_sends_with(&alex, "/end", vec![], Some(v1_msg_on_tg));
    v1.sync_until("the end notice", |seen| {
        seen.iter().any(|s| s.body == "The conversation has ended.")
    })
    .await?;
    let store = sb.store().await?;
    assert_eq!(
        store.conversation(&room1).await?.unwrap().state.as_str(),
        "closed"
    );
    assert_eq!(
        store.conversation(&room2).await?.unwrap().state.as_str(),
        "active"
    );
    // With one conversation left, a plain message goes to it.
    tg.user_sends(&alex, "Only you now");
    v2.sync_until("the plain message", |seen| {
        seen.iter().any(|s| s.body == "Only you now")
    })
    .await?;

    // --- photos both ways, through the homeserver's media repository -----------------------------
    let mxc = upload_media(&env, &slot, "kettle.png", "image/png", PNG).await?;
    v2.send_content(json!({"msgtype": "m.image", "body": "kettle.png", "url": mxc, "info": {"mimetype": "image/png"}}))
        .await?;
    let sent = wait_sent(&tg, alex.id, "the visitor's photo", |s| {
        s.iter().any(|m| m.kind == "photo")
    })
    .await?;
    let photo = sent.iter().find(|m| m.kind == "photo").unwrap();
    assert_eq!(
        photo.file_bytes.as_deref(),
        Some(PNG),
        "the photo's bytes changed on the way"
    );
    assert!(
        photo
            .caption
            .as_deref()
            .unwrap_or_default()
            .contains("kettle.png")
    );

    tg.user_sends_photo(&alex, PNG.to_vec(), Some("Here is the manual page"));
    let visitor2 = v2.user_id.clone();
    let from_responder = move |s: &Seen| s.msgtype == "m.image" && s.sender != visitor2;
    v2.sync_until("the responder's photo", |seen| {
        seen.iter().any(&from_responder)
    })
    .await?;
    let image = v2.seen.iter().find(|s| from_responder(s)).unwrap().clone();
    assert_eq!(image.body, "Here is the manual page");
    let downloaded = download_media(&env, &v2.token, &image.url).await?;
    assert_eq!(
        &downloaded[..],
        PNG,
        "the responder's photo changed on the way"
    );

    // A document goes as a document, and a message over Telegram's 4096 limit is split.
    v2.send_content(json!({"msgtype": "m.file", "body": "manual.pdf", "url": mxc, "info": {"mimetype": "application/pdf"}}))
        .await?;
    let long: String = (0..700).map(|i| format!("word{i} ")).collect();
    v2.send(&long).await?;
    let sent = wait_sent(&tg, alex.id, "the document and the long message", |s| {
        s.iter().any(|m| m.kind == "document")
            && s.iter()
                .any(|m| m.text.as_deref().is_some_and(|t| t.ends_with("word699")))
    })
    .await?;
    let doc = sent.iter().find(|m| m.kind == "document").unwrap();
    assert_eq!(doc.file_bytes.as_deref(), Some(PNG));
    let parts: Vec<&str> = sent
        .iter()
        .filter_map(|m| m.text.as_deref())
        .filter(|t| t.contains("word") && !t.contains("vinegar"))
        .collect();
    assert!(
        parts.len() >= 2,
        "a {}-character message was not split: {parts:?}",
        long.len()
    );
    assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096));
    let rejoined: Vec<&str> = parts
        .iter()
        .flat_map(|p| p.split_whitespace())
        .filter(|w| w.starts_with("word"))
        .collect();
    assert_eq!(rejoined.len(), 700, "words lost or doubled in the split");

    // --- no visitor identifier in any byte sent to Telegram ------------------------------------
    for r in tg.requests() {
        let body = String::from_utf8_lossy(&r.body);
        for secret in [
            &v1.user_id,
            &v2.user_id,
            &v1.token,
            &v2.token,
            &room1,
            &room2,
        ] {
            assert!(
                !body.contains(secret.as_str()),
                "{} carried a visitor identifier: {body}",
                r.method
            );
        }
        // Room IDs carry no server name; a `:server` suffix could only come from a Matrix user ID.
        assert!(
            !body.contains(&format!(":{}", env.server_name)),
            "{} leaked a Matrix ID: {body}",
            r.method
        );
    }
    drop(sb);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_mode_and_responders_who_link_themselves() -> anyhow::Result<()> {
    const TOKEN: &str = "5151:webhook-standin-token";
    const SECRET: &str = "s3cret_Webhook-1";
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 3)?;
    let tg = StandIn::start(TOKEN).await?;
    let sam: TgUser = tg.user(8001, "Samuel", None);
    let config = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\nwebhook_url = \"http://{listen}/telegram/webhook\"\nwebhook_secret = {SECRET:?}\n\n\
         [[responders]]\nid = \"sam\"\ndisplay_name = \"Samuel S.\"\ntopics = [\"support\"]\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\n",
        api = tg.api_url(),
        listen = slot.listen,
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;

    // The webhook route refuses requests without Telegram's secret, and malformed updates.
    let http = reqwest::Client::new();
    let url = format!("{}/telegram/webhook", sb.base);
    let update = json!({"update_id": 1, "message": {"message_id": 1, "date": 0, "chat": {"id": 8001, "type": "private"}, "text": "/help"}});
    for secret in [None, Some("wrong")] {
        let mut req = http.post(&url).json(&update);
        if let Some(s) = secret {
            req = req.header("X-Telegram-Bot-Api-Secret-Token", s);
        }
        assert_eq!(
            req.send().await?.status(),
            403,
            "secret {secret:?} was accepted"
        );
    }
    let r = http
        .post(&url)
        .header("X-Telegram-Bot-Api-Secret-Token", SECRET)
        .body("{nope")
        .send()
        .await?;
    assert_eq!(r.status(), 400);

    // Switchboard registered the webhook with its secret and never long-polls.
    wait_for("setWebhook", || async {
        Ok(tg
            .requests()
            .iter()
            .any(|r| r.method_lower == "setwebhook" && r.status == 200)
            .then_some(()))
    })
    .await?;
    let set = tg
        .requests()
        .into_iter()
        .find(|r| r.method_lower == "setwebhook")
        .unwrap();
    assert!(String::from_utf8_lossy(&set.body).contains(SECRET));

    // --- a responder links their Telegram account with a one-time code --------------------------
    let code = sb
        .link_code(&env, "telegram", "sam")?
        .map_err(anyhow::Error::msg)?;
    assert_eq!(code.len(), 10, "{code}");
    assert!(
        sb.link_code(&env, "telegram", "nobody")?.is_err(),
        "a code for an unknown responder was issued"
    );

    tg.user_sends(&sam, "/start WRONGCODE1");
    wait_sent(&tg, sam.id, "the refusal of a wrong code", |s| {
        texts(s)
            .iter()
            .any(|t| t.contains("unknown, expired or already used"))
    })
    .await?;
    tg.user_sends(&sam, &format!("/start {code}"));
    wait_sent(&tg, sam.id, "the link confirmation", |s| {
        texts(s).iter().any(|t| t.starts_with("Linked."))
    })
    .await?;
    tg.user_sends(&sam, &format!("/start {code}"));
    wait_sent(&tg, sam.id, "the refusal of a used code", |s| {
        texts(s)
            .iter()
            .filter(|t| t.contains("unknown, expired or already used"))
            .count()
            == 2
    })
    .await?;

    // --- offers, accept and replies all travel over the webhook -----------------------------------
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("Hello over a webhook").await?;
    let sent = wait_sent(&tg, sam.id, "the offer", |s| {
        offer_of(s, "webhook").is_some()
    })
    .await?;
    let (offer, data) = offer_of(&sent, "webhook").unwrap();
    tg.user_presses(&sam, offer, &data);
    wait_sent(&tg, sam.id, "the accept confirmation", |s| {
        texts(s)
            .iter()
            .any(|t| t.contains("You are now talking with"))
    })
    .await?;
    tg.user_sends(&sam, "Hi from Telegram via webhook");
    visitor
        .sync_until("the reply", |seen| {
            seen.iter()
                .any(|s| s.body == "Hi from Telegram via webhook")
        })
        .await?;

    // Without a pseudonym the ghost carries the responder's Telegram first name.
    let ghost = visitor
        .seen
        .iter()
        .find(|s| s.body == "Hi from Telegram via webhook")
        .unwrap()
        .sender
        .clone();
    let (status, member) = visitor
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            urlencode(&room),
            urlencode(&ghost)
        ))
        .await?;
    assert_eq!(status, 200, "{member}");
    assert_eq!(member["displayname"], "Samuel");
    assert!(
        !tg.requests().iter().any(|r| r.method_lower == "getupdates"),
        "webhook mode must not long-poll"
    );
    Ok(())
}
