//! Erasing a conversation, end to end on a real Synapse: through the admin API, with the
//! room's messages redacted by the bot (no homeserver admin token; Switchboard on
//! PostgreSQL), or the room purged through Synapse's admin API (with one, given as a secret
//! file; on SQLite); in both cases the store keeps nothing of it. The periodic sweep is tested at store level, with a manual clock
//! (`bridge/tests/store_retention.rs`): days cannot pass here.

mod common;

use anyhow::Context;
use common::*;
use serde_json::{Value, json};

const ADMIN: &str = "retention-admin-token";
const TOPICS: &str = "[[topics]]\nid = \"support\"\nname = \"General support\"\n";

/// A conversation with two visitor messages in it, recorded in the store, then ended by the
/// visitor: what an erasure starts from. Returns the visitor and the room.
async fn closed_conversation(env: &TestEnv, sb: &Switchboard) -> anyhow::Result<(Visitor, String)> {
    let mut visitor = Visitor::guest(env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("my name is Jo Bloggs").await?;
    visitor.send("and I live at 1 Main Street").await?;
    let store = sb.store().await?;
    let visitor_lines = || async {
        let lines = store.messages(&room).await?;
        anyhow::Ok(
            lines
                .iter()
                .filter(|m| m.body.contains("Jo Bloggs") || m.body.contains("Main Street"))
                .count(),
        )
    };
    wait_for("the transcript", || async {
        Ok((visitor_lines().await? == 2).then_some(()))
    })
    .await?;

    // Still open: refused, and nothing is touched.
    let (status, body) = erase(sb, &room).await?;
    assert_eq!(status, 409, "{body}");
    assert_eq!(body["errcode"], "M_CONVERSATION_OPEN", "{body}");
    assert_eq!(visitor_lines().await?, 2);

    end_and_wait_closed(sb, &visitor, &store, &room).await?;
    store.close().await;
    Ok((visitor, room))
}

/// `DELETE /admin/v1/conversations/{room}`: status and body.
async fn erase(sb: &Switchboard, room: &str) -> anyhow::Result<(u16, Value)> {
    let r = reqwest::Client::new()
        .delete(format!(
            "{}/admin/v1/conversations/{}",
            sb.base,
            urlencode(room)
        ))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    let status = r.status().as_u16();
    Ok((status, r.json().await.unwrap_or(Value::Null)))
}

/// The store holds nothing of `room` (no conversation, transcript, deliveries, posts or
/// assignments) and nothing `visitor` sent, and the admin API no longer knows it.
async fn store_forgot(sb: &Switchboard, room: &str, visitor: &str) -> anyhow::Result<()> {
    let store = sb.store().await?;
    assert!(store.conversation(room).await?.is_none());
    assert!(store.messages(room).await?.is_empty());
    assert!(store.assignment_history(room).await?.is_empty());
    assert!(store.offers_for_room(room).await?.is_empty());
    store.close().await;
    let pool = sqlx::AnyPool::connect(&sb.db_url).await?;
    for table in [
        "messages",
        "room_posts",
        "outbox",
        "conversations",
        "offers",
    ] {
        let n: i64 = sqlx::Row::try_get(
            &sqlx::query(&format!(
                "SELECT COUNT(*) AS n FROM {table} WHERE room_id = $1"
            ))
            .bind(room)
            .fetch_one(&pool)
            .await?,
            "n",
        )?;
        assert_eq!(n, 0, "{table} still holds rows of the erased room");
    }
    // What the homeserver pushes after the erasure (the bot's redactions, our users leaving)
    // is recorded like any event of a room that is no conversation, for the sweep to take;
    // nothing of the visitor's is among it.
    let rows = sqlx::query("SELECT event_json FROM inbox WHERE room_id = $1")
        .bind(room)
        .fetch_all(&pool)
        .await?;
    for row in rows {
        let json: String = sqlx::Row::try_get(&row, "event_json")?;
        let event: Value = serde_json::from_str(&json)?;
        assert_ne!(event["sender"], visitor, "{json}");
        assert!(
            event["type"] == "m.room.redaction" || event["type"] == "m.room.member",
            "{json}"
        );
        assert!(
            !json.contains("Jo Bloggs") && !json.contains("Main Street"),
            "{json}"
        );
    }
    pool.close().await;
    let r = reqwest::Client::new()
        .get(format!(
            "{}/admin/v1/conversations/{}",
            sb.base,
            urlencode(room)
        ))
        .bearer_auth(ADMIN)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 404);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_erased_conversation_is_redacted_on_the_homeserver_and_gone_from_the_store()
-> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 0)?;
    // On PostgreSQL; the purge below runs on SQLite: the erasure is shown on both engines.
    let sb = Switchboard::start_on_postgres(
        &env,
        &slot,
        &format!("[admin]\ntoken = {ADMIN:?}\n\n{TOPICS}"),
    )
    .await?;
    assert!(sb.db_url.starts_with("postgres"));
    let (visitor, room) = closed_conversation(&env, &sb).await?;

    let (status, body) = erase(&sb, &room).await?;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["room_id"], room.as_str());
    assert_eq!(body["homeserver"]["method"], "redacted", "{body}");
    // The visitor's two messages and the bot's notices (welcome, and the one it posts when
    // the visitor ends).
    assert!(
        body["homeserver"]["events"].as_u64().unwrap_or(0) >= 3,
        "{body}"
    );
    assert_eq!(body["rows_deleted"]["conversations"], 1, "{body}");
    assert!(
        body["rows_deleted"]["messages"].as_u64() >= Some(2),
        "{body}"
    );

    // What the visitor's client reads from the homeserver now: every message redacted,
    // nothing of what they wrote left, and neither the bot nor anyone of ours in the room.
    let path = format!(
        "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
        urlencode(&room)
    );
    let (status, page) = visitor.get(&path).await?;
    assert_eq!(status, 200, "{page}");
    let chunk = page["chunk"].as_array().context("chunk")?;
    let messages: Vec<&Value> = chunk
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    assert!(messages.len() >= 3, "{page}");
    for m in &messages {
        assert_eq!(m["content"], json!({}), "not redacted: {m}");
        assert!(m["unsigned"]["redacted_because"].is_object(), "{m}");
    }
    let text = page.to_string();
    assert!(
        !text.contains("Jo Bloggs") && !text.contains("Main Street"),
        "{text}"
    );
    // Guests may not ask for `joined_members`; the room's state says the same.
    let (status, state) = visitor
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/state",
            urlencode(&room)
        ))
        .await?;
    assert_eq!(status, 200, "{state}");
    let joined: Vec<&str> = state
        .as_array()
        .context("state")?
        .iter()
        .filter(|e| e["type"] == "m.room.member" && e["content"]["membership"] == "join")
        .filter_map(|e| e["state_key"].as_str())
        .collect();
    assert_eq!(
        joined,
        [visitor.user_id.as_str()],
        "only the visitor is left"
    );

    store_forgot(&sb, &room, &visitor.user_id).await?;
    // Asked again: it is gone.
    let (status, body) = erase(&sb, &room).await?;
    assert_eq!(status, 404, "{body}");
    // The log names the erasure by room and counts, never the visitor.
    let log = sb.log_text();
    assert!(log.contains("conversation erased"), "{log}");
    Ok(())
}

/// A Synapse administrator, registered with the homeserver's shared secret (Synapse's admin
/// register API: an HMAC-SHA1 of the nonce, user, password and "admin"). Their access token.
async fn synapse_admin(env: &TestEnv) -> anyhow::Result<String> {
    use hmac::{Hmac, Mac};
    let secret = std::env::var("SWITCHBOARD_TEST_SHARED_SECRET")
        .context("SWITCHBOARD_TEST_SHARED_SECRET: run with scripts/test.sh")?;
    let http = reqwest::Client::new();
    let url = format!("{}/_synapse/admin/v1/register", env.hs_url);
    let nonce: Value = http.get(&url).send().await?.json().await?;
    let nonce = nonce["nonce"].as_str().context("nonce")?;
    let (user, password) = (unique("hsadmin"), "admin password of the test");
    let mut mac = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes())?;
    mac.update(format!("{nonce}\0{user}\0{password}\0admin").as_bytes());
    let mac: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let r: Value = http
        .post(&url)
        .json(&json!({"nonce": nonce, "username": user, "password": password, "admin": true, "mac": mac}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(r["access_token"]
        .as_str()
        .context("access_token")?
        .to_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_homeserver_admin_token_the_erased_room_is_purged() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 1)?;
    let admin_token = synapse_admin(&env).await?;
    // Given as a secret file, as a container secret is mounted.
    let dir = tempfile::tempdir()?;
    let token_file = dir.path().join("hs-admin-token");
    std::fs::write(&token_file, format!("{admin_token}\n"))?;
    let sb = Switchboard::start(
        &env,
        &slot,
        &format!(
            "[admin]\ntoken = {ADMIN:?}\n\n[retention]\ntranscript_days = 30\nhomeserver_admin_token_file = {:?}\n\n{TOPICS}",
            path_str(&token_file)
        ),
    )
    .await?;
    let (visitor, room) = closed_conversation(&env, &sb).await?;

    let (status, body) = erase(&sb, &room).await?;
    assert_eq!(status, 200, "{body}\n{}", sb.log_text());
    assert_eq!(
        body["homeserver"],
        json!({"method": "purged", "complete": true}),
        "{body}"
    );

    // Synapse knows no such room any more, and the visitor, removed from it, reads nothing.
    let r = reqwest::Client::new()
        .get(format!(
            "{}/_synapse/admin/v1/rooms/{}",
            env.hs_url,
            urlencode(&room)
        ))
        .bearer_auth(&admin_token)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 404);
    let (status, page) = visitor
        .get(&format!(
            "/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            urlencode(&room)
        ))
        .await?;
    assert_ne!(status, 200, "{page}");
    assert!(!page.to_string().contains("Jo Bloggs"), "{page}");

    store_forgot(&sb, &room, &visitor.user_id).await?;
    // The token is a secret: never in the log.
    let log = sb.log_text();
    assert!(!log.contains(&admin_token), "the admin token is in the log");
    assert!(log.contains("synapse admin API"), "{log}");
    Ok(())
}

/// A Matrix responder was offered the conversation in a relay room, where the bot quoted the
/// visitor: the erasure redacts that room too (the bot then leaves it), so the responder's
/// client no longer shows the visitor's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_erasure_reaches_a_matrix_responders_relay_room() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 2)?;
    let responder_local = unique("rae");
    let responder_id = env.user_id(&responder_local);
    let mut responder = MatrixResponder::register(&env, &responder_local).await?;
    let sb = Switchboard::start(
        &env,
        &slot,
        &format!(
            "[admin]\ntoken = {ADMIN:?}\n\n{TOPICS}\n\
             [[responders]]\nid = \"rae\"\ndisplay_name = \"Rae\"\ntopics = [\"support\"]\n\
             contacts = [{{ platform = \"matrix\", address = {responder_id:?} }}]\n"
        ),
    )
    .await?;
    let mut visitor = Visitor::guest(&env, &sb.base).await?;
    let room = visitor.start("support").await?;
    visitor.send("my name is Jo Bloggs").await?;
    let store = sb.store().await?;
    let relay = relay_room_of(&store, &room, "rae").await?;
    responder.accept_invite(&relay).await?;
    let bot = format!("@sbt2bot:{}", env.server_name);
    responder
        .wait_for_text(&relay, &bot, "my name is Jo Bloggs")
        .await?;
    end_and_wait_closed(&sb, &visitor, &store, &room).await?;

    let (status, body) = erase(&sb, &room).await?;
    assert_eq!(status, 200, "{body}");

    // What the responder's client reads in the relay room now.
    let token = responder
        .client
        .access_token()
        .context("the responder's token")?;
    let page: Value = reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{}/messages?dir=b&limit=100",
            env.hs_url,
            urlencode(&relay)
        ))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let chunk = page["chunk"].as_array().context("chunk")?;
    assert!(
        chunk.iter().any(|e| e["type"] == "m.room.message"),
        "{page}"
    );
    for m in chunk.iter().filter(|e| e["type"] == "m.room.message") {
        assert_eq!(m["content"], json!({}), "not redacted: {m}");
    }
    assert!(!page.to_string().contains("Jo Bloggs"), "{page}");
    store_forgot(&sb, &room, &visitor.user_id).await?;
    store.close().await;
    Ok(())
}

/// The visitor ends their conversation through the visitor API; waits until it is closed.
async fn end_and_wait_closed(
    sb: &Switchboard,
    visitor: &Visitor,
    store: &switchboard_bridge::Store,
    room: &str,
) -> anyhow::Result<()> {
    let r = reqwest::Client::new()
        .post(format!(
            "{}/api/v1/conversations/{}/end",
            sb.base,
            urlencode(room)
        ))
        .bearer_auth(&visitor.token)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 204);
    wait_for("the conversation to close", || async {
        Ok(
            (store.conversation(room).await?.map(|c| c.state.as_str()) == Some("closed"))
                .then_some(()),
        )
    })
    .await
}
