//! The appservice's homeserver client against a real Synapse: ghosts, identity assertion and
//! deterministic transaction IDs.

mod common;

use std::sync::Arc;

use anyhow::Context;
use common::*;
use serde_json::Value;
use switchboard_appservice::{
    AppserviceRegistration, HomeserverClient,
    ruma::{
        ServerName, api::client::room::create_room, events::room::message::RoomMessageEventContent,
    },
};

const SLOT: u32 = 1;

#[tokio::test]
async fn ghosts_act_through_identity_assertion_and_retried_sends_do_not_duplicate()
-> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let registration = Arc::new(AppserviceRegistration::load(&slot.registration)?);
    let server = <&ServerName>::try_from(env.server_name.as_str())?;
    let bot = registration.bot_user_id(server)?;
    let client = HomeserverClient::connect(&env.hs_url, &slot.as_token, bot.clone()).await?;

    // A ghost in our namespace, registered twice (the second must be a harmless no-op).
    let key = unique("g");
    let ghost = registration.ghost_user_id(&key, server)?;
    let localpart = ghost.localpart().to_owned();
    client.register_ghost(&localpart).await?;
    client
        .register_ghost(&localpart)
        .await
        .context("registering an existing ghost must succeed")?;
    client.set_displayname(&ghost, "Alex (Support)").await?;

    let mut request = create_room::v3::Request::new();
    request.name = Some("client test".into());
    let room = client.create_room(request).await?;
    client.invite(&room, &ghost, None).await?;
    client.join(&room, &ghost).await?;

    // The same transaction ID twice: the homeserver must hand back the first event.
    let content = RoomMessageEventContent::text_plain("only once");
    let first = client
        .send_message(&room, Some(&ghost), "fixed-txn-1", &content)
        .await?;
    let second = client
        .send_message(&room, Some(&ghost), "fixed-txn-1", &content)
        .await?;
    assert_eq!(first, second, "a retried send produced a second event");
    let other = client
        .send_message(&room, Some(&ghost), "fixed-txn-2", &content)
        .await?;
    assert_ne!(first, other);

    // Read the room back with the bot's identity: who sent what, under which name.
    let http = reqwest::Client::new();
    let url = |path: String| format!("{}{path}", env.hs_url);
    let messages: Value = http
        .get(url(format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=f&limit=50",
            urlencode(room.as_str())
        )))
        .bearer_auth(&slot.as_token)
        .send()
        .await?
        .json()
        .await?;
    let texts: Vec<(&str, &str)> = messages["chunk"]
        .as_array()
        .context("chunk")?
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .map(|e| {
            (
                e["sender"].as_str().unwrap_or(""),
                e["content"]["body"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        texts,
        [(ghost.as_str(), "only once"), (ghost.as_str(), "only once")]
    );
    let member: Value = http
        .get(url(format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.member/{}",
            urlencode(room.as_str()),
            urlencode(ghost.as_str())
        )))
        .bearer_auth(&slot.as_token)
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(member["displayname"], "Alex (Support)");
    assert_eq!(member["membership"], "join");

    client.leave(&room, &ghost).await?;
    let err = client
        .send_message(&room, Some(&ghost), "after-leave", &content)
        .await
        .expect_err("a ghost that left cannot speak in the room");
    assert_eq!(err.errcode(), Some("M_FORBIDDEN"));

    // A user outside our namespace cannot be impersonated.
    let outsider = <&switchboard_appservice::ruma::UserId>::try_from(
        format!("@notours:{}", env.server_name).as_str(),
    )?
    .to_owned();
    let err = client
        .send_message(&room, Some(&outsider), "impersonate", &content)
        .await
        .expect_err("identity assertion outside the namespace must fail");
    assert!(
        matches!(
            err.errcode(),
            Some("M_EXCLUSIVE" | "M_FORBIDDEN" | "M_UNKNOWN_TOKEN")
        ),
        "{err}"
    );
    Ok(())
}

#[tokio::test]
async fn whoami_tells_a_visitor_token_from_a_bad_one() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let registration = AppserviceRegistration::load(&slot.registration)?;
    let server = <&ServerName>::try_from(env.server_name.as_str())?;
    let client = HomeserverClient::connect(
        &env.hs_url,
        &slot.as_token,
        registration.bot_user_id(server)?,
    )
    .await?;
    let guest = Visitor::guest(&env, "http://unused").await?;
    let who = client.whoami(&guest.token).await?;
    assert_eq!(who.user_id.as_str(), guest.user_id);
    assert!(who.is_guest);
    let err = client
        .whoami("syt_not_a_real_token")
        .await
        .expect_err("a bad token must be refused");
    assert_eq!(err.errcode(), Some("M_UNKNOWN_TOKEN"));
    Ok(())
}
