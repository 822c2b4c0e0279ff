//! REST as Discord answers it: the bot token, unknown routes, message content limits, allowed
//! mentions, direct messages to users who refuse them, replies, history pages, and files as
//! multipart served like the CDN.

use super::*;

#[tokio::test]
async fn rest_needs_the_bot_token_and_unknown_routes_are_404() {
    let api = Api::start().await;
    let missing = api.send("GET", "/users/@me", None, None).await;
    assert_eq!(
        (missing.status, &missing.body),
        (401, &json!({"message": "401: Unauthorized", "code": 0}))
    );
    let wrong = api
        .send("GET", "/users/@me", None, Some("Bot not-the-token"))
        .await;
    assert_eq!(wrong.status, 401);
    let bare = api.send("GET", "/users/@me", None, Some(TOKEN)).await;
    assert_eq!(bare.status, 401, "the `Bot ` prefix is required");
    assert_eq!(api.dc.invalid_request_count(), 3);
    let unknown = api.call("GET", "/no/such/route", None).await;
    assert_eq!(
        (unknown.status, &unknown.body),
        (404, &json!({"message": "404: Not Found", "code": 0}))
    );
    let me = api.call("GET", "/users/@me", None).await;
    assert_eq!(me.status, 200);
    assert_eq!(me.body["bot"], true);
    assert_eq!(id(&me.body), api.dc.bot_user_id());
    let gateway = api.send("GET", "/gateway", None, None).await;
    assert_eq!(
        gateway.body["url"],
        api.dc.gateway_url(),
        "GET /gateway needs no token"
    );
    let recorded = api.dc.requests();
    assert!(
        recorded
            .iter()
            .all(|r| !String::from_utf8_lossy(&r.body).contains(TOKEN))
    );
    assert!(
        recorded
            .iter()
            .flat_map(|r| &r.headers)
            .all(|(_, v)| !v.contains(TOKEN)),
        "the token is not kept"
    );
    assert_eq!(recorded.iter().filter(|r| r.has_valid_auth).count(), 2);
}

#[tokio::test]
async fn message_content_is_limited_to_2000_characters_and_must_not_be_empty() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("general");
    let fits = api
        .post_message(channel, json!({"content": "é".repeat(2000)}))
        .await;
    assert_eq!(
        fits.status, 200,
        "2000 characters (4000 bytes) fit: {}",
        fits.body
    );
    let long = api
        .post_message(channel, json!({"content": "a".repeat(2001)}))
        .await;
    assert_eq!(long.status, 400);
    assert_eq!(
        long.body,
        json!({"code": 50035, "errors": {"content": {"_errors": [{"code": "BASE_TYPE_MAX_LENGTH", "message": "Must be 2000 or fewer in length."}]}}, "message": "Invalid Form Body"})
    );
    let empty = api
        .post_message(channel, json!({"content": "", "embeds": []}))
        .await;
    assert_eq!(
        (empty.status, &empty.body),
        (
            400,
            &json!({"code": 50006, "message": "Cannot send an empty message"})
        )
    );
    let not_json = api
        .http
        .post(api.url(&format!("/channels/{channel}/messages")))
        .header("authorization", format!("Bot {TOKEN}"))
        .header("content-type", "application/json")
        .body("{\"content\": ")
        .send()
        .await
        .unwrap();
    let not_json = Api::answer(not_json).await;
    assert_eq!(
        (not_json.status, not_json.body["code"].as_u64()),
        (400, Some(50109))
    );
    let unknown = api.post_message(1234, json!({"content": "x"})).await;
    assert_eq!(
        (unknown.status, &unknown.body),
        (404, &json!({"code": 10003, "message": "Unknown Channel"}))
    );
    assert_eq!(
        api.dc.messages(channel).len(),
        1,
        "only the valid message was stored"
    );
}

#[tokio::test]
async fn allowed_mentions_decide_who_is_pinged() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("general");
    let user = api.dc.user("visitor");
    let content = format!("@everyone look <@{}>", user.id);
    let open = api.post_message(channel, json!({"content": content})).await;
    assert_eq!(open.body["mention_everyone"], true);
    assert_eq!(open.body["mentions"][0]["id"], user.id.to_string());
    let quiet = api
        .post_message(
            channel,
            json!({"content": content, "allowed_mentions": {"parse": []}}),
        )
        .await;
    assert_eq!(quiet.body["mention_everyone"], false);
    assert_eq!(quiet.body["mentions"], json!([]));
    let stored = api.dc.messages(channel);
    assert_eq!(
        stored[1].allowed_mentions,
        Some(json!({"parse": []})),
        "recorded as sent"
    );
    let both = api
        .post_message(channel, json!({"content": "x", "allowed_mentions": {"parse": ["users"], "users": [user.id.to_string()]}}))
        .await;
    assert_eq!(
        (both.status, both.body["code"].as_u64()),
        (400, Some(50035))
    );
    assert!(
        both.body["errors"]["allowed_mentions"].is_object(),
        "{}",
        both.body
    );
}

#[tokio::test]
async fn dms_to_users_who_refuse_them_are_403_50007() {
    let api = Api::start().await;
    let visitor = api.dc.user("visitor");
    let dm = api.open_dm(visitor.id).await;
    assert_eq!(
        api.open_dm(visitor.id).await,
        dm,
        "the same DM channel on repeat"
    );
    assert_eq!(api.dc.dm_channel_of(&visitor), Some(dm));
    assert_eq!(
        api.post_message(dm, json!({"content": "hi"})).await.status,
        200
    );
    api.dc.set_refuses_dms(&visitor, true);
    let refused = api.post_message(dm, json!({"content": "hi again"})).await;
    assert_eq!(
        (refused.status, &refused.body),
        (
            403,
            &json!({"code": 50007, "message": "Cannot send messages to this user"})
        )
    );
    let nobody = api
        .call(
            "POST",
            "/users/@me/channels",
            Some(json!({"recipient_id": "42"})),
        )
        .await;
    assert_eq!(nobody.body["code"], 50033);
}

#[tokio::test]
async fn replies_need_an_existing_message_unless_told_otherwise() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("general");
    let user = api.dc.user("visitor");
    let question = api.dc.user_sends(&user, channel, "question");
    let reply = api
        .post_message(
            channel,
            json!({"content": "answer", "message_reference": {"message_id": question.to_string()}}),
        )
        .await;
    assert_eq!(reply.body["type"], 19);
    assert_eq!(reply.body["referenced_message"]["content"], "question");
    assert_eq!(
        reply.body["mentions"][0]["id"],
        user.id.to_string(),
        "replies ping their author by default"
    );
    let dangling = api
        .post_message(
            channel,
            json!({"content": "x", "message_reference": {"message_id": "99"}}),
        )
        .await;
    assert_eq!(dangling.status, 400);
    assert_eq!(
        dangling.body["errors"]["message_reference"]["_errors"][0]["message"],
        "Unknown message"
    );
    let lenient = api
        .post_message(channel, json!({"content": "x", "message_reference": {"message_id": "99", "fail_if_not_exists": false}}))
        .await;
    assert_eq!(
        (lenient.status, lenient.body["type"].as_u64()),
        (200, Some(0))
    );
    assert!(lenient.body.get("message_reference").is_none());
}

#[tokio::test]
async fn files_travel_as_multipart_and_are_served_like_the_cdn() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("files");
    let upload = |bytes: Vec<u8>| {
        let form = reqwest::multipart::Form::new()
            .text(
                "payload_json",
                json!({"content": "see file", "attachments": [{"id": 0, "description": "notes"}]})
                    .to_string(),
            )
            .part(
                "files[0]",
                reqwest::multipart::Part::bytes(bytes)
                    .file_name("notes.txt")
                    .mime_str("text/plain")
                    .unwrap(),
            );
        api.http
            .post(api.url(&format!("/channels/{channel}/messages")))
            .header("authorization", format!("Bot {TOKEN}"))
            .multipart(form)
            .send()
    };
    let sent = Api::answer(upload(b"hello file".to_vec()).await.unwrap()).await;
    assert_eq!(sent.status, 200, "{}", sent.body);
    let attachment = &sent.body["attachments"][0];
    assert_eq!(
        (attachment["filename"].as_str(), attachment["size"].as_u64()),
        (Some("notes.txt"), Some(10))
    );
    assert_eq!(attachment["description"], "notes");
    let url = attachment["url"].as_str().unwrap();
    let fetched = api.http.get(url).send().await.unwrap();
    assert_eq!(fetched.bytes().await.unwrap().as_ref(), b"hello file");
    let too_big = Api::answer(upload(vec![0; 10 * 1024 * 1024 + 1]).await.unwrap()).await;
    assert_eq!(
        (too_big.status, &too_big.body),
        (
            413,
            &json!({"code": 40005, "message": "Request entity too large"})
        )
    );
    let visitor = api.dc.user("visitor");
    let from_user =
        api.dc
            .user_sends_file(&visitor, channel, "", "a.png", "image/png", vec![1, 2, 3]);
    let stored = api.dc.messages(channel);
    let theirs = stored.iter().find(|m| m.id == from_user).unwrap();
    let fetched = api
        .http
        .get(&theirs.attachments[0].url)
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.headers()["content-type"], "image/png");
}

#[tokio::test]
async fn message_history_pages_newest_first() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("history");
    let user = api.dc.user("visitor");
    let ids: Vec<u64> = (0..7)
        .map(|i| api.dc.user_sends(&user, channel, &format!("m{i}")))
        .collect();
    let page =
        |query: String| api.call("GET", format!("/channels/{channel}/messages{query}"), None);
    let ids_of = |answer: &Answer| {
        answer
            .body
            .as_array()
            .unwrap()
            .iter()
            .map(id)
            .collect::<Vec<_>>()
    };
    let newest = page("?limit=3".into()).await;
    assert_eq!(ids_of(&newest), vec![ids[6], ids[5], ids[4]]);
    let before = page(format!("?limit=2&before={}", ids[4])).await;
    assert_eq!(ids_of(&before), vec![ids[3], ids[2]]);
    let after = page(format!("?limit=2&after={}", ids[1])).await;
    assert_eq!(
        ids_of(&after),
        vec![ids[3], ids[2]],
        "the messages right after, newest first"
    );
    let everything = page(String::new()).await;
    assert_eq!(ids_of(&everything).len(), 7);
    let too_many = page("?limit=101".into()).await;
    assert_eq!(
        (too_many.status, too_many.body["code"].as_u64()),
        (400, Some(50035))
    );
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "snowflakes increase");
}
