//! Routing on a real Synapse with two Matrix responders and a Telegram responder: broadcast
//! with simultaneous accepts has exactly one owner, least_busy picks the least busy, and a
//! queued conversation is offered as soon as a responder becomes available.

mod common;

use common::*;
use serde_json::{Value, json};
use telegram_standin::{StandIn, TgUser};

const SLOT: u32 = 4;
const TOKEN: &str = "6161:routing-standin-token";
const ADMIN: &str = "admin-token-for-tests";

fn responder_toml(id: &str, topics: &str, contact: (&str, &str), status: &str) -> String {
    format!(
        "[[responders]]\nid = {id:?}\ndisplay_name = \"{id} (real name)\"\npseudonym = \"{id}\"\ntopics = {topics}\n\
         status = {status:?}\nmax_concurrent = 5\ncontacts = [{{ platform = {:?}, address = {:?} }}]\n\n",
        contact.0, contact.1
    )
}

async fn admin(
    sb: &Switchboard,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut req = reqwest::Client::new()
        .request(method, format!("{}{path}", sb.base))
        .bearer_auth(ADMIN);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routing_offers_claims_and_drains_the_queue() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let tg = StandIn::start(TOKEN).await?;
    let tina: TgUser = tg.user(9001, "Tina", None);
    let (m1_local, m2_local) = (unique("mone"), unique("mtwo"));
    let (m1_id, m2_id) = (env.user_id(&m1_local), env.user_id(&m2_local));
    let mut m1 = MatrixResponder::register(&env, &m1_local).await?;
    let mut m2 = MatrixResponder::register(&env, &m2_local).await?;

    let config = format!(
        "[admin]\ntoken = {ADMIN:?}\n\n[telegram]\ntoken = {TOKEN:?}\napi_url = {api:?}\npoll_timeout_secs = 1\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\nstrategy = \"broadcast\"\n\n\
         [[topics]]\nid = \"billing\"\nname = \"Billing\"\nstrategy = \"least_busy\"\n\n\
         [[topics]]\nid = \"sales\"\nname = \"Sales\"\n\n{r1}{r2}{r3}",
        api = tg.api_url(),
        r1 = responder_toml(
            "mone",
            r#"["support", "billing/*"]"#,
            ("matrix", &m1_id),
            "available"
        ),
        r2 = responder_toml(
            "mtwo",
            r#"["support", "sales"]"#,
            ("matrix", &m2_id),
            "available"
        ),
        r3 = responder_toml(
            "tina",
            r#"["support", "billing/*"]"#,
            ("telegram", &tina.id.to_string()),
            "available"
        ),
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;

    // The admin API refuses requests without its token.
    let r = reqwest::Client::new()
        .get(format!("{}/admin/v1/responders", sb.base))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 401);
    let (status, list) = admin(&sb, reqwest::Method::GET, "/admin/v1/responders", None).await?;
    assert_eq!(status, 200, "{list}");
    assert_eq!(
        list["responders"].as_array().map(Vec::len),
        Some(3),
        "the register is seeded from the config"
    );

    // --- broadcast: all three are offered; they accept at once; exactly one owns it -------------
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("Broadcast me").await?;
    let sent = tg
        .wait_for_sent(
            tina.id,
            |s| s.iter().any(|m| m.reply_markup.is_some()),
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let offer = sent.iter().find(|m| m.reply_markup.is_some()).unwrap();
    let data = offer.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_owned();
    let store = sb.store().await?;
    let relay1 =
        matrix_sdk::ruma::OwnedRoomId::try_from(relay_room_of(&store, &room, "mone").await?)?;
    let relay2 =
        matrix_sdk::ruma::OwnedRoomId::try_from(relay_room_of(&store, &room, "mtwo").await?)?;
    for (r, relay) in [(&m1, &relay1), (&m2, &relay2)] {
        wait_for("both Matrix invites", || async {
            Ok(r.client
                .invited_rooms()
                .iter()
                .any(|x| x.room_id() == relay)
                .then_some(()))
        })
        .await?;
    }
    // Everyone accepts at the same moment.
    tg.user_presses(&tina, offer.message_id, &data);
    let (j1, j2) = tokio::join!(
        m1.client.join_room_by_id(&relay1),
        m2.client.join_room_by_id(&relay2)
    );
    let _ = (j1, j2); // a loser's join may race with the withdrawal of its invite
    let owners = wait_for("the claim", || async {
        let a = store.active_assignments_for_room(&room).await?;
        Ok((!a.is_empty()).then_some(a))
    })
    .await?;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let owners_after = store.active_assignments_for_room(&room).await?;
    assert_eq!(
        owners_after.len(),
        1,
        "more than one owner: {owners_after:?}"
    );
    assert_eq!(owners[0].responder_id, owners_after[0].responder_id);
    let winner = owners_after[0].responder_id.clone();
    let offers = store.offers_for_room(&room).await?;
    assert_eq!(
        offers.iter().filter(|o| o.state == "accepted").count(),
        1,
        "{offers:?}"
    );
    assert!(
        offers
            .iter()
            .all(|o| o.state == "accepted" || o.state == "taken"),
        "{offers:?}"
    );
    if winner != "tina" {
        tg.wait_for_sent(
            tina.id,
            |s| {
                s.iter()
                    .any(|m| m.text.as_deref().is_some_and(|t| t.contains("taken")))
            },
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    }

    // --- least_busy: of mone and tina (billing), the one without a conversation gets it ---------
    let busy = if winner == "mtwo" {
        None
    } else {
        Some(winner.clone())
    };
    let mut v2 = Visitor::guest(&env, &sb.base).await?;
    let room2 = v2.start("billing").await?;
    v2.send("Where is my invoice?").await?;
    let offers2 = wait_for("the billing offer", || async {
        let o = store.offers_for_room(&room2).await?;
        Ok((!o.is_empty()).then_some(o))
    })
    .await?;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let offers2_after = store.offers_for_room(&room2).await?;
    assert_eq!(
        offers2_after.len(),
        1,
        "least_busy offers to one responder: {offers2_after:?}"
    );
    let chosen = &offers2[0].responder_id;
    match busy.as_deref() {
        Some("mone") => assert_eq!(chosen, "tina"),
        Some("tina") => assert_eq!(chosen, "mone"),
        _ => assert!(chosen == "mone" || chosen == "tina"),
    }

    // --- the queue: nobody available for sales; it drains when mtwo becomes available ----------
    let (status, body) = admin(
        &sb,
        reqwest::Method::PUT,
        "/admin/v1/responders/mtwo/status",
        Some(json!({"status": "away"})),
    )
    .await?;
    assert_eq!(status, 200, "{body}");
    let mut v3 = Visitor::guest(&env, &sb.base).await?;
    let room3 = v3.start("sales").await?;
    v3.send("Do you sell kettles in bulk?").await?;
    v3.sync_until("the offline notice", |seen| {
        seen.iter().any(|s| s.body.contains("Nobody is available"))
    })
    .await?;
    assert!(
        store.offers_for_room(&room3).await?.is_empty(),
        "an away responder was offered a conversation"
    );
    let (status, _) = admin(
        &sb,
        reqwest::Method::PUT,
        "/admin/v1/responders/mtwo/status",
        Some(json!({"status": "available"})),
    )
    .await?;
    assert_eq!(status, 200);
    let relay3 = relay_room_of(&store, &room3, "mtwo").await?;
    let joined = m2.accept_invite(&relay3).await?;
    let bot_id = format!("@sbt{SLOT}bot:{}", env.server_name);
    m2.wait_for_text(&relay3, &bot_id, "Do you sell kettles in bulk?")
        .await?;
    joined
        .send(
            matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain("We do!"),
        )
        .await?;
    v3.sync_until("the answer", |seen| seen.iter().any(|s| s.body == "We do!"))
        .await?;

    // --- responders set their own status from their platform ------------------------------------
    let status_of = |id: &'static str| {
        let store = store.clone();
        async move {
            Ok::<_, anyhow::Error>(
                store
                    .responder(id)
                    .await?
                    .map(|r| r.status.as_str().to_owned()),
            )
        }
    };
    tg.user_sends(&tina, "/away");
    wait_for("tina away", || async {
        Ok((status_of("tina").await?.as_deref() == Some("away")).then_some(()))
    })
    .await?;
    tg.user_sends(&tina, "/available");
    wait_for("tina available", || async {
        Ok((status_of("tina").await?.as_deref() == Some("available")).then_some(()))
    })
    .await?;
    // A Matrix responder uses a direct chat with the bot, never the visitor's room.
    let bot =
        matrix_sdk::ruma::OwnedUserId::try_from(format!("@sbt{SLOT}bot:{}", env.server_name))?;
    let dm = m1.direct_chat_with(&bot).await?;
    let dm_id = dm.room_id().to_owned();
    dm.send(matrix_sdk::ruma::events::room::message::RoomMessageEventContent::text_plain("!away"))
        .await?;
    wait_for("mone away", || async {
        Ok((status_of("mone").await?.as_deref() == Some("away")).then_some(()))
    })
    .await?;
    m1.wait_for_messages(
        dm_id.as_str(),
        bot.as_str(),
        &["You are away: no new conversations until you send !available."],
    )
    .await?;

    // --- nothing sent to any responder names a visitor --------------------------------------------
    for body in m1.all_bodies().into_iter().chain(m2.all_bodies()) {
        for visitor_id in [&visitor.user_id, &v2.user_id, &v3.user_id] {
            assert!(
                !body.contains(visitor_id.as_str()),
                "a Matrix responder saw a visitor's Matrix ID: {body}"
            );
        }
        assert!(
            !body.contains("127.0.0.1"),
            "a Matrix responder saw an address: {body}"
        );
    }
    for r in tg.requests() {
        let body = String::from_utf8_lossy(&r.body);
        for secret in [
            &visitor.user_id,
            &v2.user_id,
            &v3.user_id,
            &visitor.token,
            &room,
            &room2,
            &room3,
        ] {
            assert!(
                !body.contains(secret.as_str()),
                "{} carried a visitor identifier: {body}",
                r.method
            );
        }
        assert!(
            !body.contains("127.0.0.1"),
            "{} carried an address: {body}",
            r.method
        );
    }
    Ok(())
}
