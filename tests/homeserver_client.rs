//! The appservice's homeserver client against a real Synapse: ghosts, identity assertion and
//! deterministic transaction IDs.

mod common;

use std::sync::Arc;

use anyhow::Context;
use common::*;
use serde_json::Value;
use switchboard_appservice::{
    AppserviceRegistration, HomeserverClient,
    client::ClientError,
    ruma::{
        ServerName, api::client::room::create_room, events::room::message::RoomMessageEventContent,
    },
};

const SLOT: u32 = 1;

/// The first fifty events of `room`, read with the bot's identity.
async fn first_messages(
    env: &TestEnv,
    slot: &Slot,
    room: &switchboard_appservice::ruma::RoomId,
) -> anyhow::Result<Value> {
    Ok(reqwest::Client::new()
        .get(format!(
            "{}/_matrix/client/v3/rooms/{}/messages?dir=f&limit=50",
            env.hs_url,
            urlencode(room.as_str())
        ))
        .bearer_auth(&slot.as_token)
        .send()
        .await?
        .json()
        .await?)
}

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
    let messages = first_messages(&env, &slot, &room).await?;
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

/// A reverse proxy in front of Synapse that passes everything on, except that the first answer
/// to each message send whose body says "lose this answer" is replaced by a 502, after Synapse
/// stored the event: what a Synapse killed between storing and answering, or a proxy whose
/// upstream timed out, looks like to us. A send whose body says "answer slowly" is answered
/// 3 s late. It counts the sends that reach Synapse.
#[derive(Clone)]
struct Lossy {
    upstream: String,
    http: reqwest::Client,
    /// The path of every `PUT …/send/…` passed on, in order.
    sends: Arc<std::sync::Mutex<Vec<String>>>,
    /// The sends (paths) whose answer was lost.
    lost: Arc<std::sync::Mutex<std::collections::HashSet<String>>>,
}

impl Lossy {
    async fn start(upstream: &str) -> anyhow::Result<(Self, String)> {
        let lossy = Lossy {
            upstream: upstream.trim_end_matches('/').to_owned(),
            http: reqwest::Client::new(),
            sends: Default::default(),
            lost: Default::default(),
        };
        let app = axum::Router::new()
            .fallback(Self::pass)
            .with_state(lossy.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}", listener.local_addr()?);
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok((lossy, url))
    }

    async fn pass(
        axum::extract::State(lossy): axum::extract::State<Lossy>,
        request: axum::extract::Request,
    ) -> axum::response::Response {
        use axum::response::IntoResponse;
        let (parts, body) = request.into_parts();
        let Ok(body) = axum::body::to_bytes(body, usize::MAX).await else {
            return axum::http::StatusCode::BAD_REQUEST.into_response();
        };
        let path = parts.uri.path().to_owned();
        let target = format!(
            "{}{}",
            lossy.upstream,
            parts.uri.path_and_query().map_or("/", |p| p.as_str())
        );
        let mut forward = lossy.http.request(parts.method.clone(), target);
        for (name, value) in &parts.headers {
            if name != axum::http::header::HOST {
                forward = forward.header(name, value);
            }
        }
        let is_send = parts.method == axum::http::Method::PUT && path.contains("/send/");
        if is_send {
            lossy.sends.lock().unwrap().push(path.clone());
        }
        let lose = is_send
            && String::from_utf8_lossy(&body).contains("lose this answer")
            && lossy.lost.lock().unwrap().insert(path);
        let slow = is_send && String::from_utf8_lossy(&body).contains("answer slowly");
        let Ok(answer) = forward.body(body).send().await else {
            return axum::http::StatusCode::BAD_GATEWAY.into_response();
        };
        if lose {
            return (axum::http::StatusCode::BAD_GATEWAY, "upstream timed out").into_response();
        }
        if slow {
            tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        }
        let status = answer.status();
        let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
        let bytes = answer.bytes().await.unwrap_or_default();
        let mut response = (status, bytes).into_response();
        if let Some(content_type) = content_type {
            response
                .headers_mut()
                .insert(axum::http::header::CONTENT_TYPE, content_type);
        }
        response
    }

    fn sends_of(&self, txn_id: &str) -> usize {
        let suffix = format!("/{txn_id}");
        self.sends
            .lock()
            .unwrap()
            .iter()
            .filter(|p| p.ends_with(&suffix))
            .count()
    }
}

/// Synapse keeps an appservice's transaction IDs in memory only, so a send it stored and never
/// answered would become a second event once it restarts. The client tags each message with a
/// hash of its transaction ID and, after an attempt without a clear answer, looks for the
/// stored event instead of sending again: within its own retries, and in a later call with the
/// same transaction ID (what the posting queues do).
#[tokio::test]
async fn a_message_whose_answer_was_lost_is_found_and_not_sent_again() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, SLOT)?;
    let registration = Arc::new(AppserviceRegistration::load(&slot.registration)?);
    let server = <&ServerName>::try_from(env.server_name.as_str())?;
    let bot = registration.bot_user_id(server)?;
    let (lossy, proxy_url) = Lossy::start(&env.hs_url).await?;
    let client = HomeserverClient::connect(&proxy_url, &slot.as_token, bot.clone()).await?;

    let ghost = registration.ghost_user_id(&unique("lost"), server)?;
    client.register_ghost(ghost.localpart()).await?;
    let room = client.create_room(create_room::v3::Request::new()).await?;
    client.invite(&room, &ghost, None).await?;
    client.join(&room, &ghost).await?;

    // Retried within one call: the second attempt finds the event the first one stored.
    let txn = unique("lost-answer");
    let content = RoomMessageEventContent::text_plain("lose this answer");
    let event = client
        .send_message(&room, Some(&ghost), &txn, &content)
        .await?;
    assert_eq!(lossy.sends_of(&txn), 1, "sent again after the lost answer");

    // Tried again by a later call, as a queue does after its own backoff: the same.
    let once = client.without_retries();
    let txn_later = unique("lost-answer-later");
    let later = RoomMessageEventContent::text_plain("lose this answer, then ask again");
    let first_try = once
        .send_message(&room, None, &txn_later, &later)
        .await
        .expect_err("the answer was lost");
    assert!(
        matches!(first_try, ClientError::Matrix { status: 502, .. }),
        "{first_try}"
    );
    let event_later = once.send_message(&room, None, &txn_later, &later).await?;
    assert_eq!(
        lossy.sends_of(&txn_later),
        1,
        "sent again after the lost answer"
    );

    // Given up on by the caller while the homeserver stored it and took its time to answer
    // (the posting queues and the connectors put a time limit on each attempt): the same.
    let txn_slow = unique("slow-answer");
    let slow = RoomMessageEventContent::text_plain("answer slowly");
    let cut_short = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        once.send_message(&room, None, &txn_slow, &slow),
    )
    .await;
    assert!(cut_short.is_err(), "the attempt was to be cut short");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let event_slow = once.send_message(&room, None, &txn_slow, &slow).await?;
    assert_eq!(lossy.sends_of(&txn_slow), 1, "sent again after giving up");

    // A send that was answered is not looked for: an ordinary retry goes to the homeserver,
    // which answers with the first event.
    let txn_plain = unique("answered");
    let plain = RoomMessageEventContent::text_plain("answered at once");
    let first = client
        .send_message(&room, Some(&ghost), &txn_plain, &plain)
        .await?;
    let again = client
        .send_message(&room, Some(&ghost), &txn_plain, &plain)
        .await?;
    assert_eq!(first, again);
    assert_eq!(lossy.sends_of(&txn_plain), 2);

    // The room holds each message once, under the event the client answered with, tagged with
    // a hash that shows nothing of the transaction ID.
    let messages = first_messages(&env, &slot, &room).await?;
    let events: Vec<&Value> = messages["chunk"]
        .as_array()
        .context("chunk")?
        .iter()
        .filter(|e| e["type"] == "m.room.message")
        .collect();
    let ids_of = |body: &str| -> Vec<&str> {
        events
            .iter()
            .filter(|e| e["content"]["body"] == body)
            .filter_map(|e| e["event_id"].as_str())
            .collect()
    };
    assert_eq!(ids_of("lose this answer"), [event.as_str()]);
    assert_eq!(
        ids_of("lose this answer, then ask again"),
        [event_later.as_str()]
    );
    assert_eq!(ids_of("answered at once"), [first.as_str()]);
    assert_eq!(ids_of("answer slowly"), [event_slow.as_str()]);
    let tagged = events
        .iter()
        .find(|e| e["event_id"] == event.as_str())
        .context("the event")?;
    let tag = tagged["content"][switchboard_appservice::client::SENT_UNDER]
        .as_str()
        .context("tagged")?;
    assert_eq!(tag, client.sent_under(&txn));
    assert!(!tag.contains(&txn) && !tagged["content"].to_string().contains(&txn));
    Ok(())
}
