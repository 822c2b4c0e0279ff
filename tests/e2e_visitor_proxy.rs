//! Proxied visitors (`[visitors] mode = "proxied"`), end to end on a real Synapse with guest
//! access OFF: Switchboard registers the visitor without a login (as it must behind Matrix
//! Authentication Service), hands the widget a session token of its own and a homeserver URL
//! that is its own narrow proxy, and the proxy lets that session reach its own conversation
//! and nothing else.

mod common;

use anyhow::Context;
use common::*;
use matrix_sdk::ruma::events::room::message::RoomMessageEventContent;
use serde_json::{Value, json};

/// Noguest slot 0, as e2e_visitor_accounts: cargo runs one test binary at a time, and this
/// binary starts one Switchboard on it (slot 1 is the browser tests').
const SLOT: u32 = 0;
const SHOP: &str = "https://shop.example.org";

/// A raw request through the proxy (or anywhere): status and JSON body.
async fn call(
    method: reqwest::Method,
    url: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new().request(method, url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let r = request.send().await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// A GET written by hand, so its path reaches Switchboard exactly as given; the status line.
async fn raw_get(base: &str, path: &str, token: &str) -> anyhow::Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let host = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await?;
    stream
        .write_all(
            format!(
                "GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n"
            )
            .as_bytes(),
        )
        .await?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).await?;
    Ok(answer.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxied_visitors_reach_their_own_conversation_and_nothing_else() -> anyhow::Result<()> {
    use reqwest::Method;
    let env = TestEnv::noguest_from_env();
    let slot = Slot::load(&env, SLOT)?;

    let responder_local = unique("resp");
    let responder_id = env.user_id(&responder_local);
    let mut responder = MatrixResponder::register(&env, &responder_local).await?;
    let sb = Switchboard::start(
        &env,
        &slot,
        &format!(
            "[visitors]\nmode = \"proxied\"\n\n\
             [web]\nallowed_origins = [{SHOP:?}]\n\n\
             [[topics]]\nid = \"support\"\nname = \"General support\"\n\n\
             [[responders]]\nid = \"resp\"\ndisplay_name = \"Rae\"\ntopics = [\"support\"]\n\
             contacts = [{{ platform = \"matrix\", address = {responder_id:?} }}]\n"
        ),
    )
    .await?;
    let proxy = format!("{}/visitor-proxy", sb.base);
    let client_api = format!("{proxy}/_matrix/client/v3");

    // --- the widget learns the mode and gets a session, not a homeserver token --------------------
    let config = Visitor::signed_in(&env, &sb.base, "", "").config().await?;
    assert_eq!(config["visitor_mode"], "proxied");
    let r = reqwest::Client::new()
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
    let session: Value = r.json().await?;
    assert_eq!(session["homeserver_url"], proxy.as_str());
    assert_eq!(session["device_id"], "SWITCHBOARD");
    let visitor_id = session["user_id"].as_str().context("user_id")?.to_owned();
    let token = session["access_token"]
        .as_str()
        .context("access_token")?
        .to_owned();
    assert!(
        visitor_id.starts_with(&format!("@_sbng{SLOT}_visitor-"))
            && visitor_id.ends_with(&format!(":{}", env.server_name)),
        "{visitor_id} is not a visitor user in Switchboard's namespace"
    );
    assert!(token.starts_with("sbv_"), "not a Switchboard session token");
    assert_ne!(token, slot.as_token);

    // The homeserver does not know the session token: it is not a homeserver credential.
    let (status, body) = call(
        Method::GET,
        &format!("{}/_matrix/client/v3/account/whoami", env.hs_url),
        Some(&token),
        None,
    )
    .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN")),
        "{body}"
    );
    // The user exists on the homeserver all the same, named neutrally.
    let (status, profile) = call(
        Method::GET,
        &format!(
            "{}/_matrix/client/v3/profile/{}/displayname",
            env.hs_url,
            urlencode(&visitor_id)
        ),
        None,
        None,
    )
    .await?;
    assert_eq!(
        (status, profile["displayname"].as_str()),
        (200, Some("Visitor"))
    );

    // --- the widget's whole flow, through the proxy ---------------------------------------------
    let mut visitor = Visitor::signed_in(&env, &sb.base, &visitor_id, &token);
    visitor.hs = proxy.clone();
    let (status, who) = visitor.get("/_matrix/client/v3/account/whoami").await?;
    assert_eq!(
        (status, who["user_id"].as_str()),
        (200, Some(visitor_id.as_str()))
    );
    let (status, _) = call(
        Method::PUT,
        &format!(
            "{client_api}/profile/{}/displayname",
            urlencode(&visitor_id)
        ),
        Some(&token),
        Some(json!({"displayname": "Visitor"})),
    )
    .await?;
    assert_eq!(status, 200, "the widget may name its own user");

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
    visitor.send("hello through the proxy").await?;
    let (status, _) = call(
        Method::POST,
        &format!(
            "{}/api/v1/conversations/{}/typing",
            sb.base,
            urlencode(&room)
        ),
        Some(&token),
        Some(json!({"typing": true})),
    )
    .await?;
    assert_eq!(status, 204, "Switchboard's own API takes the session token");

    let store = sb.store().await?;
    let stored = store.conversation(&room).await?.context("conversation")?;
    assert_eq!(stored.visitor_user_id, visitor_id);
    let relay = relay_room_of(&store, &room, "resp").await?;
    let joined = responder.accept_invite(&relay).await?;
    let bot = format!("@sbng{SLOT}bot:{}", env.server_name);
    responder
        .wait_for_text(&relay, &bot, "hello through the proxy")
        .await?;
    joined
        .send(RoomMessageEventContent::text_plain("hi, proxied visitor"))
        .await?;
    visitor
        .sync_until("the responder's reply", |seen| {
            seen.iter().any(|s| s.body == "hi, proxied visitor")
        })
        .await?;
    let ghost = format!("@_sbng{SLOT}_resp:{}", env.server_name);
    assert_eq!(visitor.bodies_from(&ghost), ["hi, proxied visitor"]);
    assert_eq!(
        visitor.bodies_from(&visitor_id),
        ["hello through the proxy"]
    );
    let (status, history) = visitor
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=20",
            urlencode(&room)
        ))
        .await?;
    assert_eq!(status, 200, "{history}");
    assert!(
        history.to_string().contains("hi, proxied visitor"),
        "{history}"
    );

    // --- another visitor's session reaches none of it --------------------------------------------
    let (status, other) = request_visitor_account(&sb.base).await?;
    assert_eq!(status, 201, "{other}");
    let intruder_token = other["access_token"].as_str().context("token")?.to_owned();
    let intruder_id = other["user_id"].as_str().context("user_id")?.to_owned();
    assert_ne!(intruder_id, visitor_id);
    let forbidden = |(status, body): (u16, Value), what: &str| {
        assert_eq!(
            (status, body["errcode"].as_str()),
            (403, Some("M_FORBIDDEN")),
            "{what}: {body}"
        );
    };
    let room_enc = urlencode(&room);
    forbidden(
        call(
            Method::POST,
            &format!("{client_api}/join/{room_enc}"),
            Some(&intruder_token),
            Some(json!({})),
        )
        .await?,
        "joining another visitor's room",
    );
    forbidden(
        call(
            Method::GET,
            &format!("{client_api}/rooms/{room_enc}/messages?dir=b"),
            Some(&intruder_token),
            None,
        )
        .await?,
        "reading another visitor's room",
    );
    forbidden(
        call(
            Method::PUT,
            &format!("{client_api}/rooms/{room_enc}/send/m.room.message/x1"),
            Some(&intruder_token),
            Some(json!({"msgtype": "m.text", "body": "intruding"})),
        )
        .await?,
        "writing into another visitor's room",
    );
    let filter = json!({"room": {"rooms": [room]}}).to_string();
    forbidden(
        call(
            Method::GET,
            &format!("{client_api}/sync?timeout=0&filter={}", urlencode(&filter)),
            Some(&intruder_token),
            None,
        )
        .await?,
        "syncing another visitor's room",
    );
    // Unfiltered, the intruder's sync shows no room at all.
    let (status, sync) = call(
        Method::GET,
        &format!("{client_api}/sync?timeout=0"),
        Some(&intruder_token),
        None,
    )
    .await?;
    assert_eq!(status, 200, "{sync}");
    assert!(!sync.to_string().contains(&room), "{sync}");
    let (status, _) = call(
        Method::POST,
        &format!("{}/api/v1/conversations/{room_enc}/end", sb.base),
        Some(&intruder_token),
        None,
    )
    .await?;
    assert_eq!(
        status, 404,
        "a second visitor ended the first one's conversation"
    );

    // --- the visitor's own session can do only what the widget needs ------------------------------
    let unrecognized = |(status, body): (u16, Value), what: &str| {
        assert_eq!(
            (status, body["errcode"].as_str()),
            (404, Some("M_UNRECOGNIZED")),
            "{what}: {body}"
        );
    };
    unrecognized(
        call(
            Method::POST,
            &format!("{client_api}/createRoom"),
            Some(&token),
            Some(json!({"invite": [responder_id]})),
        )
        .await?,
        "creating a room",
    );
    unrecognized(
        call(
            Method::GET,
            &format!("{client_api}/joined_rooms"),
            Some(&token),
            None,
        )
        .await?,
        "an endpoint the widget does not use",
    );
    unrecognized(
        call(
            Method::PUT,
            &format!("{client_api}/rooms/{room_enc}/state/m.room.name/"),
            Some(&token),
            Some(json!({"name": "renamed"})),
        )
        .await?,
        "changing room state",
    );
    unrecognized(
        call(
            Method::POST,
            &format!("{proxy}/_matrix/media/v3/upload"),
            Some(&token),
            Some(json!({})),
        )
        .await?,
        "uploading media",
    );
    forbidden(
        call(
            Method::PUT,
            &format!("{client_api}/rooms/{room_enc}/send/m.room.redaction/r1"),
            Some(&token),
            Some(json!({})),
        )
        .await?,
        "sending anything but messages",
    );
    forbidden(
        call(
            Method::PUT,
            &format!(
                "{client_api}/profile/{}/displayname",
                urlencode(&responder_id)
            ),
            Some(&token),
            Some(json!({"displayname": "hijacked"})),
        )
        .await?,
        "renaming another user",
    );
    // Identity assertion is Switchboard's alone: a visitor naming a user_id is refused.
    for path in [
        format!("/account/whoami?user_id={}", urlencode(&bot)),
        format!("/sync?timeout=0&user_id={}", urlencode(&ghost)),
        format!(
            "/rooms/{room_enc}/messages?dir=b&user_id={}",
            urlencode(&bot)
        ),
    ] {
        forbidden(
            call(
                Method::GET,
                &format!("{client_api}{path}"),
                Some(&token),
                None,
            )
            .await?,
            &format!("masquerading with {path}"),
        );
    }
    // Dot segments cannot walk out of the visitor's room to another path. (Sent raw: HTTP
    // clients, like the homeserver client inside Switchboard, resolve them before sending.)
    let status_line = raw_get(
        &sb.base,
        &format!(
            "/visitor-proxy/_matrix/client/v3/rooms/{room_enc}/state/%2E%2E/%2E%2E%2Fjoined_members"
        ),
        &token,
    )
    .await?;
    assert!(status_line.contains(" 400 "), "{status_line}");

    // --- tokens Switchboard did not issue, or issued and expired -----------------------------------
    for bad in ["sbv_notatoken", slot.as_token.as_str(), ""] {
        let (status, body) = call(
            Method::GET,
            &format!("{client_api}/account/whoami"),
            Some(bad),
            None,
        )
        .await?;
        assert_eq!(status, 401, "{bad:?}: {body}");
    }
    let expired = "sbv_expiredexpiredexpiredexpiredexpiredexpir";
    store
        .insert_visitor_session(
            &switchboard_bridge::visitor_proxy::hash_token(expired),
            &visitor_id,
            1,
        )
        .await?;
    let (status, body) = call(
        Method::GET,
        &format!("{client_api}/account/whoami"),
        Some(expired),
        None,
    )
    .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN")),
        "an expired session: {body}"
    );
    let (status, body) = visitor
        .request_conversation("support", Some(expired))
        .await?;
    assert_eq!(
        (status, body["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN")),
        "{body}"
    );
    // In proxied mode a homeserver token is no use at Switchboard's API either.
    let responder_token = responder.client.access_token().context("responder token")?;
    let (status, _) = visitor
        .request_conversation("support", Some(&responder_token))
        .await?;
    assert_eq!(status, 401);

    // --- CORS as for /api/v1: the embedding site only -----------------------------------------------
    let preflight = |origin: &'static str| {
        let url = format!("{client_api}/rooms/{room_enc}/send/m.room.message/t");
        async move {
            let r = reqwest::Client::new()
                .request(Method::OPTIONS, url)
                .header("origin", origin)
                .header("access-control-request-method", "PUT")
                .header(
                    "access-control-request-headers",
                    "authorization,content-type",
                )
                .send()
                .await?;
            anyhow::Ok(
                r.headers()
                    .get("access-control-allow-origin")
                    .map(|v| v.to_str().unwrap_or_default().to_owned()),
            )
        }
    };
    assert_eq!(preflight(SHOP).await?.as_deref(), Some(SHOP));
    assert_eq!(preflight("https://evil.example").await?, None);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guest_mode_has_no_visitor_proxy() -> anyhow::Result<()> {
    // Main Synapse, slot 11.
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 11)?;
    let sb = Switchboard::start(
        &env,
        &slot,
        "[[topics]]\nid = \"support\"\nname = \"General support\"\n",
    )
    .await?;
    let visitor = Visitor::guest(&env, &sb.base).await?;
    let (status, _) = call(
        reqwest::Method::GET,
        &format!("{}/visitor-proxy/_matrix/client/v3/account/whoami", sb.base),
        Some(&visitor.token),
        None,
    )
    .await?;
    assert_eq!(status, 404);
    Ok(())
}
