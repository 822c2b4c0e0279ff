//! Visitors on a homeserver that delegates authentication to Matrix Authentication Service.
//!
//! The Synapse here runs with `matrix_authentication_service.enabled` (scripts/synapse.sh,
//! `SYNAPSE_MAS=1`): no guests, no password logins, no open registration, and appservices may
//! register users only without a login. MAS itself is not running, so this shows that the
//! proxied visitor mode needs nothing from MAS: the whole conversation works, with a responder
//! on Telegram (a Matrix responder would need MAS to log in). Visitor accounts, which need an
//! appservice login, are refused there with a clear 503, and guests do not exist.

mod common;

use anyhow::Context;
use common::*;
use serde_json::Value;
use telegram_standin::StandIn;

const TOKEN: &str = "7575:mas-standin-token";

fn config(mode: &str, chat: i64) -> String {
    format!(
        "[visitors]\nmode = {mode:?}\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\n\n\
         [[responders]]\nid = \"tess\"\ndisplay_name = \"Tess\"\ntopics = [\"support\"]\n\
         contacts = [{{ platform = \"telegram\", address = \"{chat}\" }}]\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_visitors_work_where_auth_is_delegated_to_mas() -> anyhow::Result<()> {
    let env = TestEnv::mas_from_env();
    let slot = Slot::load(&env, 0)?;
    let tg = StandIn::start(TOKEN).await?;
    let tess = tg.user(7501, "Tess", None);
    let telegram = format!(
        "[telegram]\ntoken = {TOKEN:?}\napi_url = {:?}\npoll_timeout_secs = 1\n\n",
        tg.api_url()
    );

    // The homeserver really is MAS-delegated: no guests, and no appservice logins.
    let r = reqwest::Client::new()
        .post(format!(
            "{}/_matrix/client/v3/register?kind=guest",
            env.hs_url
        ))
        .json(&serde_json::json!({}))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 403, "guests must not exist here");

    // --- accounts mode cannot work here, and says why ---------------------------------------------
    {
        let sb = Switchboard::start(
            &env,
            &slot,
            &(telegram.clone() + config("accounts", tess.id).as_str()),
        )
        .await?;
        let (status, body) = request_visitor_account(&sb.base).await?;
        assert_eq!(status, 503, "{body}");
        assert!(
            body["error"].as_str().is_some_and(|e| !e.is_empty()),
            "a readable reason: {body}"
        );
    }

    // --- proxied mode: the whole conversation --------------------------------------------------
    let sb = Switchboard::start(
        &env,
        &slot,
        &(telegram + config("proxied", tess.id).as_str()),
    )
    .await?;
    let (status, session) = request_visitor_account(&sb.base).await?;
    assert_eq!(status, 201, "{session}");
    let token = session["access_token"].as_str().context("token")?;
    let user = session["user_id"].as_str().context("user_id")?;
    assert!(user.ends_with(":mas.localhost"), "{user}");
    let mut visitor = Visitor::signed_in(&env, &sb.base, user, token);
    visitor.hs = session["homeserver_url"]
        .as_str()
        .context("homeserver_url")?
        .to_owned();
    assert!(visitor.hs.ends_with("/visitor-proxy"), "{}", visitor.hs);
    let room = visitor.start("support").await?;
    visitor.send("Hello from behind MAS").await?;

    let sent = tg
        .wait_for_sent(
            tess.id,
            |s| s.iter().any(|m| m.reply_markup.is_some()),
            WAIT,
        )
        .await
        .map_err(anyhow::Error::msg)?;
    let offer = sent.iter().find(|m| m.reply_markup.is_some()).unwrap();
    assert!(
        offer
            .text
            .as_deref()
            .is_some_and(|t| t.contains("Hello from behind MAS") && !t.contains(user)),
        "{offer:?}"
    );
    let data = offer.reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["callback_data"]
        .as_str()
        .unwrap()
        .to_owned();
    tg.user_presses(&tess, offer.message_id, &data);
    visitor
        .sync_until("who answers", |seen| {
            seen.iter()
                .any(|s| s.body == "You are now talking with Tess.")
        })
        .await?;
    tg.user_sends(&tess, "Hi, Tess here.");
    visitor
        .sync_until("Tess's answer", |seen| {
            seen.iter().any(|s| s.body == "Hi, Tess here.")
        })
        .await?;
    visitor.send("Thanks!").await?;
    tg.wait_for_sent(
        tess.id,
        |s| {
            s.iter()
                .any(|m| m.text.as_deref().is_some_and(|t| t.ends_with("Thanks!")))
        },
        WAIT,
    )
    .await
    .map_err(anyhow::Error::msg)?;
    // Nothing that identifies the visitor reached Telegram.
    for r in tg.requests() {
        let body = String::from_utf8_lossy(&r.body);
        assert!(
            !body.contains(user) && !body.contains(&room) && !body.contains(token),
            "{body}"
        );
    }
    let states: Vec<&Value> = visitor.states.iter().collect();
    assert_eq!(
        states.last().map(|s| s["state"].clone()),
        Some(Value::from("active")),
        "{states:?}"
    );
    Ok(())
}
