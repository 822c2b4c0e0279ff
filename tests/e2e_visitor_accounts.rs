//! Visitor accounts, end to end on a real Synapse with guest access OFF: Switchboard registers
//! each visitor in its own namespace and hands the widget a token for that user alone;
//! everything afterwards is what a guest does, and a visitor still reaches only their own room.

mod common;

use anyhow::Context;
use common::*;
use matrix_sdk::ruma::{UserId, events::room::message::RoomMessageEventContent};
use serde_json::{Value, json};

/// Noguest slot 0 (slot 1 is the browser tests').
const SLOT: u32 = 0;
const ADMIN_TOKEN: &str = "visitor-accounts-admin-token";
const SHOP: &str = "https://shop.example.org";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn visitor_accounts_work_where_guests_are_refused() -> anyhow::Result<()> {
    let env = TestEnv::noguest_from_env();
    let slot = Slot::load(&env, SLOT)?;
    let http = reqwest::Client::new();

    // --- this homeserver refuses guests: the mode matters ----------------------------------------
    let r = http
        .post(format!(
            "{}/_matrix/client/v3/register?kind=guest",
            env.hs_url
        ))
        .json(&json!({}))
        .send()
        .await?;
    let status = r.status().as_u16();
    let body: Value = r.json().await.unwrap_or_default();
    assert_eq!(status, 403, "guest registration should be refused: {body}");

    let responder_local = unique("resp");
    let responder_id = env.user_id(&responder_local);
    let mut responder = MatrixResponder::register(&env, &responder_local).await?;
    let sb = Switchboard::start(
        &env,
        &slot,
        &format!(
            "[visitors]\nmode = \"accounts\"\naccounts_per_minute = 1\naccounts_burst = 3\n\n\
             [web]\nallowed_origins = [{SHOP:?}]\n\n\
             [admin]\ntoken = {ADMIN_TOKEN:?}\n\n\
             [[topics]]\nid = \"support\"\nname = \"General support\"\n\n\
             [[responders]]\nid = \"resp\"\ndisplay_name = \"Rae\"\ntopics = [\"support\"]\n\
             contacts = [{{ platform = \"matrix\", address = {responder_id:?} }}]\n"
        ),
    )
    .await?;

    // --- the widget learns the mode, then asks for an account -------------------------------------
    let config: Value = http
        .get(format!("{}/api/v1/config", sb.base))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(config["visitor_mode"], "accounts");
    assert_eq!(config["homeserver_url"], env.hs_url);

    let r = http
        .post(format!("{}/api/v1/visitors", sb.base))
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 201);
    assert_eq!(
        r.headers()
            .get("cache-control")
            .and_then(|v| v.to_str().ok()),
        Some("no-store"),
        "a credential must never be cached"
    );
    let account: Value = r.json().await?;
    assert_eq!(account["homeserver_url"], env.hs_url);
    assert!(account["device_id"].as_str().is_some_and(|d| !d.is_empty()));
    let visitor_id = account["user_id"].as_str().context("user_id")?.to_owned();
    let visitor_token = account["access_token"]
        .as_str()
        .context("access_token")?
        .to_owned();
    let prefix = format!("@_sbng{SLOT}_visitor-");
    assert!(
        visitor_id.starts_with(&prefix) && visitor_id.ends_with(&format!(":{}", env.server_name)),
        "{visitor_id} is not a visitor account in Switchboard's namespace"
    );
    assert_ne!(visitor_token, slot.as_token, "the widget got the as_token");
    let mut visitor = Visitor::signed_in(&env, &sb.base, &visitor_id, &visitor_token);

    // The token is that user's, and named neutrally.
    let (status, who) = visitor.get("/_matrix/client/v3/account/whoami").await?;
    assert_eq!(
        (status, who["user_id"].as_str()),
        (200, Some(visitor_id.as_str()))
    );
    let (_, profile) = visitor
        .get(&format!(
            "/_matrix/client/v3/profile/{}/displayname",
            urlencode(&visitor_id)
        ))
        .await?;
    assert_eq!(profile["displayname"], "Visitor");

    // --- the token acts for that user alone ---------------------------------------------------------
    // Identity assertion (`?user_id=`) is for the as_token only: with the visitor's token the
    // homeserver must never act as anyone else, neither the bot, a ghost nor an outsider.
    for other in [
        format!("@sbng{SLOT}bot:{}", env.server_name),
        format!("@_sbng{SLOT}_resp:{}", env.server_name),
        responder_id.clone(),
    ] {
        let (status, who) = visitor
            .get(&format!(
                "/_matrix/client/v3/account/whoami?user_id={}",
                urlencode(&other)
            ))
            .await?;
        assert_ne!(
            who["user_id"].as_str(),
            Some(other.as_str()),
            "the visitor's token acted as {other} ({status})"
        );
    }
    // Nor can it register users in Switchboard's namespace, as the as_token could.
    let r = http
        .post(format!("{}/_matrix/client/v3/register", env.hs_url))
        .bearer_auth(&visitor_token)
        .json(&json!({"type": "m.login.application_service", "username": format!("_sbng{SLOT}_visitor-forged")}))
        .send()
        .await?;
    assert!(
        !r.status().is_success(),
        "the visitor's token registered a namespace user"
    );
    // And Switchboard does not take it for the homeserver.
    let (status, _) = push_transaction(
        &sb.base,
        "from-visitor",
        Some(&visitor_token),
        r#"{"events": []}"#,
    )
    .await?;
    assert_eq!(status, 403);

    // --- everything afterwards is what a guest does --------------------------------------------
    let room = visitor.start("support").await?;
    let (status, join_rules) = visitor
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state/m.room.join_rules/",
            urlencode(&room)
        ))
        .await?;
    assert_eq!(
        (status, join_rules["join_rule"].as_str()),
        (200, Some("invite"))
    );
    visitor.send("hello from an account").await?;

    let store = sb.store().await?;
    let stored = store.conversation(&room).await?.context("conversation")?;
    assert_eq!(stored.visitor_user_id, visitor_id);
    let relay = relay_room_of(&store, &room, "resp").await?;
    let joined = responder.accept_invite(&relay).await?;
    let bot = format!("@sbng{SLOT}bot:{}", env.server_name);
    responder
        .wait_for_text(&relay, &bot, "hello from an account")
        .await?;
    joined
        .send(RoomMessageEventContent::text_plain("hi, account holder"))
        .await?;
    visitor
        .sync_until("the responder's reply", |seen| {
            seen.iter().any(|s| s.body == "hi, account holder")
        })
        .await?;
    let ghost = format!("@_sbng{SLOT}_resp:{}", env.server_name);
    assert_eq!(visitor.bodies_from(&ghost), ["hi, account holder"]);

    // The visitor is in their own room and no other.
    let (_, rooms) = visitor.get("/_matrix/client/v3/joined_rooms").await?;
    assert_eq!(rooms["joined_rooms"], json!([room]));

    // --- a second visitor account cannot get in --------------------------------------------------
    let intruder = Visitor::account(&env, &sb.base).await?;
    assert_ne!(intruder.user_id, visitor_id);
    let (status, body) = intruder.join(&room).await?;
    assert_eq!(
        status, 403,
        "a second visitor joined the first one's room: {body}"
    );
    let (status, _) = intruder
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b",
            urlencode(&room)
        ))
        .await?;
    assert_eq!(status, 403, "a second visitor read the first one's room");
    let r = http
        .post(format!(
            "{}/api/v1/conversations/{}/end",
            sb.base,
            urlencode(&room)
        ))
        .bearer_auth(&intruder.token)
        .send()
        .await?;
    assert_eq!(
        r.status().as_u16(),
        404,
        "a second visitor ended the first one's conversation"
    );

    // --- the responder never sees who the visitor is on Matrix -------------------------------------
    let visitor_uid = UserId::parse(&visitor_id)?;
    assert!(
        joined.get_member_no_sync(&visitor_uid).await?.is_none(),
        "the visitor is a member of the responder's relay room"
    );
    for body in responder.all_bodies() {
        assert!(
            !body.contains(&visitor_id) && !body.contains(visitor_uid.localpart()),
            "the responder received the visitor's Matrix ID: {body}"
        );
    }

    // --- accounts are rate-limited per address --------------------------------------------------
    // The burst was 3: the visitor, the intruder, and one more.
    let (status, body) = request_visitor_account(&sb.base).await?;
    assert_eq!(status, 201, "{body}");
    let (status, body) = request_visitor_account(&sb.base).await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED")),
        "{body}"
    );
    assert!(
        body["retry_after_ms"].as_u64().is_some_and(|ms| ms > 0),
        "{body}"
    );

    // --- CORS only for the embedding site, and never on the admin API ----------------------------
    let cors = |path: &str, origin: &str, preflight: bool| {
        let request = if preflight {
            http.request(reqwest::Method::OPTIONS, format!("{}{path}", sb.base))
                .header("access-control-request-method", "POST")
                .header("access-control-request-headers", "authorization")
        } else {
            http.get(format!("{}{path}", sb.base))
        };
        let origin = origin.to_owned();
        async move {
            let r = request.header("origin", origin).send().await?;
            anyhow::Ok(
                r.headers()
                    .get("access-control-allow-origin")
                    .map(|v| v.to_str().unwrap_or_default().to_owned()),
            )
        }
    };
    assert_eq!(
        cors("/api/v1/config", SHOP, false).await?.as_deref(),
        Some(SHOP)
    );
    assert_eq!(
        cors("/api/v1/visitors", SHOP, true).await?.as_deref(),
        Some(SHOP)
    );
    assert_eq!(
        cors("/api/v1/config", "https://evil.example", false).await?,
        None
    );
    assert_eq!(
        cors("/api/v1/visitors", "https://evil.example", true).await?,
        None
    );
    assert_eq!(cors("/admin/v1/responders", SHOP, true).await?, None);
    assert_eq!(cors("/admin/v1/responders", SHOP, false).await?, None);
    // What Switchboard logs at its usual levels never names the visitor (the test's own
    // debug lines may: they are for developers).
    let named: Vec<String> = sb
        .log_text()
        .lines()
        .filter(|l| !l.contains("DEBUG") && !l.contains("TRACE"))
        .filter(|l| l.contains(&visitor_id))
        .map(str::to_owned)
        .collect();
    assert!(
        named.is_empty(),
        "the visitor's user ID was logged: {named:#?}"
    );
    // Nor their address, at any level.
    assert!(
        !sb.log_text().contains("client=127.0.0.1"),
        "the visitor's address was logged"
    );
    // Their conversation's lines carry its alias instead, in the span they were written in.
    assert!(
        sb.log_text()
            .lines()
            .any(|l| l.contains("alias") && l.contains(&stored.visitor_alias)),
        "no log line names the conversation by its alias {:?}",
        stored.visitor_alias
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_mode_hands_out_no_accounts() -> anyhow::Result<()> {
    // The main Synapse has guests; Switchboard's default mode uses them. Main slot 10.
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 10)?;
    let sb = Switchboard::start(
        &env,
        &slot,
        "[[topics]]\nid = \"support\"\nname = \"General support\"\n",
    )
    .await?;
    let visitor = Visitor::guest(&env, &sb.base).await?;
    assert_eq!(visitor.config().await?["visitor_mode"], "guest");
    let (status, body) = request_visitor_account(&sb.base).await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (404, Some("M_NOT_FOUND")),
        "{body}"
    );
    // No allowed_origins: no CORS headers at all.
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/config", sb.base))
        .header("origin", SHOP)
        .send()
        .await?;
    assert!(r.headers().get("access-control-allow-origin").is_none());
    Ok(())
}

/// With `[visitors] log_identifiers = true` the operator asked for them: the conversation's
/// span names the visitor's Matrix ID beside the alias, and the visitor API logs the address
/// that started it. (Off, the default, is the first test's last check: nothing at info names
/// the visitor.) Noguest slot 1: binaries run one at a time, and the widget's is elsewhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identifiers_are_logged_only_when_the_operator_turns_them_on() -> anyhow::Result<()> {
    let env = TestEnv::noguest_from_env();
    let slot = Slot::load(&env, 1)?;
    let sb = Switchboard::start(
        &env,
        &slot,
        "[visitors]\nmode = \"accounts\"\nlog_identifiers = true\n\n\
         [[topics]]\nid = \"support\"\nname = \"General support\"\n",
    )
    .await?;
    let (status, account) = request_visitor_account(&sb.base).await?;
    assert_eq!(status, 201, "{account}");
    let visitor_id = account["user_id"].as_str().context("user_id")?.to_owned();
    let token = account["access_token"].as_str().context("token")?;
    let mut visitor = Visitor::signed_in(&env, &sb.base, &visitor_id, token);
    let room = visitor.start("support").await?;
    visitor.send("please log me").await?;
    let store = sb.store().await?;
    let stored = store.conversation(&room).await?.context("conversation")?;
    wait_for("the message handled", || async {
        Ok(store
            .messages(&room)
            .await?
            .iter()
            .any(|m| m.body == "please log me")
            .then_some(()))
    })
    .await?;

    let log = sb.log_text();
    let info: Vec<&str> = log
        .lines()
        .filter(|l| l.contains(" INFO ") || l.contains(" WARN ") || l.contains(" ERROR "))
        .collect();
    // The conversation's span, at info, names both (a span's recorded text is quoted).
    let visitor_field = format!("visitor={visitor_id:?}");
    assert!(
        info.iter().any(|l| l.contains("conversation started")
            && l.contains(&visitor_field)
            && l.contains(&stored.visitor_alias)),
        "no `conversation started` line names {visitor_id} and {}:\n{log}",
        stored.visitor_alias
    );
    assert!(
        info.iter()
            .any(|l| l.contains("visitor API: conversation started")
                && l.contains("client=127.0.0.1")),
        "the starting address was not logged:\n{log}"
    );
    // The handling of the visitor's message ran in a span naming them too.
    assert!(
        log.lines().any(|l| l.contains(&visitor_field)
            && l.contains(&stored.visitor_alias)
            && !l.contains("conversation started")),
        "no event-handling line carries the visitor's ID:\n{log}"
    );
    Ok(())
}
