//! The stand-in refuses and succeeds like Discord does, seen from a plain HTTP client, a raw
//! WebSocket client (`gateway` below), and serenity itself (`serenity_client` below).

#[path = "protocol/gateway.rs"]
mod gateway;
#[path = "protocol/serenity_client.rs"]
mod serenity_client;

use std::time::Duration;

use discord_standin::{DiscordStandIn, Fault, Route};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

pub const TOKEN: &str = "MTEyMzQ1Njc4OTAxMjM0NTY3OA.test.bot-token";

/// A stand-in plus an HTTP client that calls it the way bots do.
pub struct Api {
    pub dc: DiscordStandIn,
    pub http: reqwest::Client,
}

/// An answer: status, headers and JSON body (`Null` for empty bodies).
pub struct Answer {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Answer {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

impl Api {
    pub async fn start() -> Api {
        let dc = DiscordStandIn::start(TOKEN).await.expect("stand-in starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Api { dc, http }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}/api/v10{path}", self.dc.base_url())
    }

    async fn answer(response: reqwest::Response) -> Answer {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let bytes = response.bytes().await.expect("body");
        let body = if bytes.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("JSON body")
        };
        Answer {
            status,
            headers,
            body,
        }
    }

    /// A request with the bot's `Authorization` header.
    pub async fn call(&self, method: &str, path: impl Into<String>, body: Option<Value>) -> Answer {
        self.send(method, path, body, Some(&format!("Bot {TOKEN}")))
            .await
    }

    pub async fn send(
        &self,
        method: &str,
        path: impl Into<String>,
        body: Option<Value>,
        auth: Option<&str>,
    ) -> Answer {
        let path: String = path.into();
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("method");
        let mut request = self.http.request(method, self.url(&path));
        if let Some(auth) = auth {
            request = request.header("authorization", auth);
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        Self::answer(request.send().await.expect("request")).await
    }

    /// A request that must succeed with 200; returns the body.
    pub async fn ok(&self, method: &str, path: impl Into<String>, body: Value) -> Value {
        let path: String = path.into();
        let answer = self.call(method, &path, Some(body)).await;
        assert_eq!(answer.status, 200, "{method} {path}: {}", answer.body);
        answer.body
    }

    pub async fn post_message(&self, channel: u64, body: Value) -> Answer {
        self.call("POST", format!("/channels/{channel}/messages"), Some(body))
            .await
    }

    pub async fn open_dm(&self, user: u64) -> u64 {
        let dm = self
            .ok(
                "POST",
                "/users/@me/channels",
                json!({"recipient_id": user.to_string()}),
            )
            .await;
        dm["id"].as_str().unwrap().parse().unwrap()
    }
}

fn id(value: &Value) -> u64 {
    value["id"]
        .as_str()
        .expect("id is a string snowflake")
        .parse()
        .expect("snowflake")
}

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
async fn buttons_are_checked_and_pressable() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("offers");
    let bad = api
        .post_message(
            channel,
            json!({"content": "offer", "components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "Take"}]}]}),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert_eq!(
        bad.body["errors"]["components"]["0"]["components"]["0"]["custom_id"]["_errors"][0]["code"],
        "BASE_TYPE_REQUIRED"
    );
    let link_with_id = api
        .post_message(channel, json!({"components": [{"type": 1, "components": [
            {"type": 2, "style": 5, "label": "Docs", "url": "https://example.org", "custom_id": "x"}]}]}))
        .await;
    assert_eq!(link_with_id.status, 400, "a link button has no custom_id");
    let good = api
        .post_message(
            channel,
            json!({"content": "offer", "components": [{"type": 1, "components": [
            {"type": 2, "style": 3, "label": "Take", "custom_id": "take:1"}]}]}),
        )
        .await;
    assert_eq!(good.status, 200, "{}", good.body);
    assert_eq!(
        good.body["components"][0]["components"][0]["custom_id"],
        "take:1"
    );
    let responder = api.dc.user("responder");
    let press = api
        .dc
        .user_presses(&responder, channel, id(&good.body), "take:1");
    assert_eq!(press.payload["type"], 3);
    assert_eq!(
        press.payload["member"]["user"]["id"],
        responder.id.to_string()
    );
    assert_eq!(press.payload["message"]["id"], good.body["id"]);
}

#[tokio::test]
async fn string_selects_are_checked_and_pickable() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("topics");
    let no_options = api
        .post_message(
            channel,
            json!({"content": "pick", "components": [{"type": 1, "components": [
            {"type": 3, "custom_id": "topic", "options": []}]}]}),
        )
        .await;
    assert_eq!(no_options.status, 400, "a select needs 1 to 25 options");
    let beside_a_button = api
        .post_message(
            channel,
            json!({"content": "pick", "components": [{"type": 1, "components": [
            {"type": 3, "custom_id": "topic", "options": [{"label": "A", "value": "a"}]},
            {"type": 2, "style": 1, "label": "B", "custom_id": "b"}]}]}),
        )
        .await;
    assert_eq!(
        beside_a_button.body["errors"]["components"]["0"]["components"]["_errors"][0]["code"],
        "COMPONENT_LAYOUT_WIDTH_EXCEEDED",
        "a select fills its row: {}",
        beside_a_button.body
    );
    let good = api
        .post_message(
            channel,
            json!({"content": "pick", "components": [{"type": 1, "components": [
            {"type": 3, "custom_id": "topic", "options": [
                {"label": "Support", "value": "support"},
                {"label": "Billing", "value": "billing"}]}]}]}),
        )
        .await;
    assert_eq!(good.status, 200, "{}", good.body);
    let visitor = api.dc.user("visitor");
    let pick = api
        .dc
        .user_selects(&visitor, channel, id(&good.body), "topic", &["billing"]);
    assert_eq!(pick.kind, 3);
    assert_eq!(
        pick.payload["data"],
        json!({"custom_id": "topic", "component_type": 3, "values": ["billing"]})
    );
    assert_eq!(pick.payload["message"]["id"], good.body["id"]);
    // Discord's client offers only the options, as many as the select allows.
    for values in [&["refunds"][..], &["support", "billing"][..], &[][..]] {
        let refused = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            api.dc
                .user_selects(&visitor, channel, id(&good.body), "topic", values)
        }));
        assert!(refused.is_err(), "{values:?} was picked");
    }
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
async fn a_client_that_ignores_bucket_headers_gets_429s() {
    let api = Api::start().await;
    let busy = api.dc.create_text_channel("busy");
    let other = api.dc.create_text_channel("other");
    let mut bucket = None;
    for left in (0..5).rev() {
        let sent = api.post_message(busy, json!({"content": "x"})).await;
        assert_eq!(sent.status, 200);
        assert_eq!(sent.header("x-ratelimit-limit"), Some("5"));
        assert_eq!(
            sent.header("x-ratelimit-remaining"),
            Some(left.to_string().as_str())
        );
        let reset_after: f64 = sent
            .header("x-ratelimit-reset-after")
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset_after > 0.0 && reset_after <= 5.0);
        assert!(
            sent.header("x-ratelimit-reset")
                .unwrap()
                .parse::<f64>()
                .unwrap()
                > 1.7e9
        );
        bucket = sent.header("x-ratelimit-bucket").map(str::to_owned);
    }
    let limited = api.post_message(busy, json!({"content": "x"})).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.body["message"], "You are being rate limited.");
    assert_eq!(limited.body["global"], false);
    let retry_after = limited.body["retry_after"].as_f64().unwrap();
    assert!(retry_after > 4.0 && retry_after <= 5.0, "{retry_after}");
    assert_eq!(limited.header("retry-after"), Some("5"));
    assert_eq!(limited.header("x-ratelimit-scope"), Some("user"));
    assert_eq!(api.dc.messages(busy).len(), 5);
    let elsewhere = api.post_message(other, json!({"content": "x"})).await;
    assert_eq!(elsewhere.status, 200, "the limit is per channel");
    assert_eq!(
        elsewhere.header("x-ratelimit-bucket").map(str::to_owned),
        bucket,
        "same route, same bucket"
    );
    assert_eq!(api.dc.invalid_request_count(), 1);

    api.dc.set_global_limit(2, Duration::from_secs(1));
    let mut statuses = Vec::new();
    for _ in 0..3 {
        let me = api.call("GET", "/users/@me", None).await;
        statuses.push(me.status);
        if me.status == 429 {
            assert_eq!(me.body["global"], true);
            assert_eq!(me.header("x-ratelimit-global"), Some("true"));
            assert_eq!(me.header("x-ratelimit-scope"), Some("global"));
        }
    }
    assert_eq!(statuses, [200, 200, 429]);
}

#[tokio::test]
async fn armed_faults_fire_once_each() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("general");
    api.dc.fail_next(
        Route::CreateMessage {
            channel_id: Some(channel),
        },
        Fault::ServerError(500),
    );
    api.dc.fail_next(
        Route::Any,
        Fault::RateLimited {
            retry_after: 1.5,
            global: true,
        },
    );
    let failed = api.post_message(channel, json!({"content": "x"})).await;
    assert_eq!(
        (failed.status, &failed.body),
        (
            500,
            &json!({"message": "500: Internal Server Error", "code": 0})
        )
    );
    let limited = api.call("GET", "/users/@me", None).await;
    assert_eq!(
        (limited.status, limited.header("retry-after")),
        (429, Some("2"))
    );
    assert_eq!(limited.body["retry_after"], 1.5);
    assert_eq!(
        api.post_message(channel, json!({"content": "x"}))
            .await
            .status,
        200
    );
    api.dc.fail_next(
        Route::CreateMessage { channel_id: None },
        Fault::CloseConnection,
    );
    let closed = api
        .http
        .post(api.url(&format!("/channels/{channel}/messages")))
        .header("authorization", format!("Bot {TOKEN}"))
        .json(&json!({"content": "lost"}))
        .send()
        .await;
    assert!(
        closed.is_err(),
        "the connection closes without an answer: {closed:?}"
    );
    assert_eq!(
        api.dc.messages(channel).len(),
        1,
        "the request was not carried out"
    );
    api.dc.set_down(true);
    assert_eq!(api.call("GET", "/users/@me", None).await.status, 502);
}

/// `enforce_nonce`: a repeat of a nonce returns the first message instead of making a second;
/// without it, the same nonce makes two. A late answer comes after the request was carried
/// out, so a client that timed out and retries with the nonce still gets one message.
#[tokio::test]
async fn an_enforced_nonce_makes_one_message_and_a_late_answer_lands_first() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("general");
    let first = api
        .post_message(
            channel,
            json!({"content": "a", "nonce": "n-1", "enforce_nonce": true}),
        )
        .await;
    let again = api
        .post_message(
            channel,
            json!({"content": "a", "nonce": "n-1", "enforce_nonce": true}),
        )
        .await;
    assert_eq!((first.status, again.status), (200, 200));
    assert_eq!(
        first.body["id"], again.body["id"],
        "the first message is returned"
    );
    assert_eq!(api.dc.messages(channel).len(), 1);
    // Not enforced: a nonce is only echoed.
    for _ in 0..2 {
        api.post_message(channel, json!({"content": "b", "nonce": "n-2"}))
            .await;
    }
    assert_eq!(api.dc.messages(channel).len(), 3);
    let refused = api
        .post_message(
            channel,
            json!({"content": "c", "nonce": "n-3", "enforce_nonce": "yes"}),
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.body);

    // Another channel: five messages a channel in five seconds is the bucket's limit.
    let channel = api.dc.create_text_channel("late");
    api.dc.fail_next(
        Route::CreateMessage {
            channel_id: Some(channel),
        },
        Fault::AnswerLate(Duration::from_secs(5)),
    );
    let body = json!({"content": "late", "nonce": "n-4", "enforce_nonce": true});
    let timed_out = api
        .http
        .post(api.url(&format!("/channels/{channel}/messages")))
        .header("authorization", format!("Bot {TOKEN}"))
        .timeout(Duration::from_millis(300))
        .json(&body)
        .send()
        .await;
    assert!(timed_out.is_err(), "the answer came in time: {timed_out:?}");
    assert_eq!(
        api.dc.messages(channel).len(),
        1,
        "the request was carried out before the answer"
    );
    let retried = api.post_message(channel, body).await;
    assert_eq!(retried.status, 200);
    assert_eq!(
        api.dc.messages(channel).len(),
        1,
        "the retry made no second message"
    );
}

#[tokio::test]
async fn threads_are_created_archived_unarchived_and_capped() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("conversations");
    let create = |name: Value, kind: u64| {
        api.call("POST", format!("/channels/{channel}/threads"), Some(json!({"name": name, "type": kind, "invitable": false, "auto_archive_duration": 1440})))
    };
    let thread = create(json!("visitor 1"), 12).await;
    assert_eq!(thread.status, 200, "{}", thread.body);
    assert_eq!(thread.body["type"], 12);
    assert_eq!(thread.body["thread_metadata"]["invitable"], false);
    assert_eq!(
        thread.body["member"]["user_id"],
        api.dc.bot_user_id().to_string()
    );
    let thread_id = id(&thread.body);
    let long = create(json!("n".repeat(101)), 12).await;
    assert!(long.body["errors"]["name"].is_object(), "{}", long.body);
    let nested = api
        .call(
            "POST",
            format!("/channels/{thread_id}/threads"),
            Some(json!({"name": "x", "type": 12})),
        )
        .await;
    assert_eq!(
        nested.body["code"], 50024,
        "private threads only in text channels"
    );

    let responder = api.dc.user("responder");
    let path = |user: u64| format!("/channels/{thread_id}/thread-members/{user}");
    assert_eq!(api.call("PUT", path(4242), None).await.body["code"], 10013);
    assert_eq!(api.call("PUT", path(responder.id), None).await.status, 204);
    let members = api
        .call("GET", format!("/channels/{thread_id}/thread-members"), None)
        .await;
    assert_eq!(members.body.as_array().unwrap().len(), 2);
    let listed = api.dc.threads();
    assert_eq!(listed[0].members, vec![api.dc.bot_user_id(), responder.id]);

    let archived = api
        .call(
            "PATCH",
            format!("/channels/{thread_id}"),
            Some(json!({"archived": true})),
        )
        .await;
    assert_eq!(archived.body["thread_metadata"]["archived"], true);
    assert_eq!(
        api.call("PUT", path(responder.id), None).await.body["code"],
        50083
    );
    assert_eq!(
        api.post_message(thread_id, json!({"content": "back"}))
            .await
            .status,
        200
    );
    assert!(
        !api.dc.threads()[0].archived,
        "a message unarchives the thread"
    );

    api.dc.set_active_thread_limit(1);
    let over = create(json!("visitor 2"), 11).await;
    assert_eq!(
        (over.status, &over.body),
        (
            400,
            &json!({"code": 160006, "message": "Maximum number of active threads reached"})
        )
    );
}

#[tokio::test]
async fn webhooks_post_into_threads_of_their_channel_without_the_bot_token() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("relay");
    let other = api.dc.create_text_channel("elsewhere");
    let named = api
        .call(
            "POST",
            format!("/channels/{channel}/webhooks"),
            Some(json!({"name": "Discord relay"})),
        )
        .await;
    assert_eq!(named.status, 400, "names may not contain \"discord\"");
    assert!(named.body["errors"]["name"].is_object());
    let hook = api
        .ok(
            "POST",
            format!("/channels/{channel}/webhooks"),
            json!({"name": "Relay"}),
        )
        .await;
    let (hook_id, token) = (id(&hook), hook["token"].as_str().unwrap().to_owned());
    let thread = api
        .ok(
            "POST",
            format!("/channels/{channel}/threads"),
            json!({"name": "t", "type": 11}),
        )
        .await;
    let foreign = api
        .ok(
            "POST",
            format!("/channels/{other}/threads"),
            json!({"name": "f", "type": 11}),
        )
        .await;
    let execute = |query: String, body: Value| {
        api.send(
            "POST",
            format!("/webhooks/{hook_id}/{token}{query}"),
            Some(body),
            None,
        )
    };
    let posted = execute(format!("?wait=true&thread_id={}", id(&thread)), json!({"content": "from visitor", "username": "Visitor 7", "allowed_mentions": {"parse": []}})).await;
    assert_eq!(posted.status, 200, "{}", posted.body);
    assert_eq!(posted.body["webhook_id"], hook_id.to_string());
    assert_eq!(posted.body["author"]["username"], "Visitor 7");
    assert_eq!(posted.body["channel_id"], thread["id"]);
    let stored = api.dc.messages(id(&thread));
    assert_eq!(
        (stored[0].webhook_id, stored[0].webhook_username.as_deref()),
        (Some(hook_id), Some("Visitor 7"))
    );
    let wrong_thread = execute(
        format!("?wait=true&thread_id={}", id(&foreign)),
        json!({"content": "x"}),
    )
    .await;
    assert_eq!(wrong_thread.body["code"], 10003);
    let bad_name = execute(String::new(), json!({"content": "x", "username": "clyde"})).await;
    assert_eq!(bad_name.status, 400);
    let no_wait = execute(String::new(), json!({"content": "fire and forget"})).await;
    assert_eq!(no_wait.status, 204);
    let wrong_token = api
        .send(
            "POST",
            format!("/webhooks/{hook_id}/nope"),
            Some(json!({"content": "x"})),
            None,
        )
        .await;
    assert_eq!(wrong_token.body["code"], 10015);
    let edit = api
        .send(
            "PATCH",
            format!(
                "/webhooks/{hook_id}/{token}/messages/{}?thread_id={}",
                id(&posted.body),
                id(&thread)
            ),
            Some(json!({"content": "edited"})),
            None,
        )
        .await;
    assert_eq!(edit.status, 200, "{}", edit.body);
    assert!(api.dc.messages(id(&thread))[0].edited);
}

#[tokio::test]
async fn an_interaction_is_answered_once_and_within_3_seconds() {
    let api = Api::start().await;
    let channel = api.dc.create_text_channel("offers");
    let offer = api
        .ok(
            "POST",
            format!("/channels/{channel}/messages"),
            json!({"content": "new visitor", "components": [{"type": 1, "components": [
            {"type": 2, "style": 1, "label": "Take", "custom_id": "take"}]}]}),
        )
        .await;
    let responder = api.dc.user("responder");
    let callback = |i: &discord_standin::Interaction, body: Value| {
        api.send(
            "POST",
            format!("/interactions/{}/{}/callback", i.id, i.token),
            Some(body),
            None,
        )
    };
    let late = api.dc.user_presses(&responder, channel, id(&offer), "take");
    let prompt = api.dc.user_presses(&responder, channel, id(&offer), "take");
    let update = json!({"type": 7, "data": {"content": "taken", "components": []}});
    assert_eq!(callback(&prompt, update.clone()).await.status, 204);
    assert_eq!(
        api.dc.messages(channel)[0].content,
        "taken",
        "UPDATE_MESSAGE edits the offer"
    );
    assert_eq!(api.dc.interaction_response(&prompt), Some(update));
    let again = callback(&prompt, json!({"type": 6})).await;
    assert_eq!(
        (again.status, &again.body),
        (
            400,
            &json!({"code": 40060, "message": "Interaction has already been acknowledged"})
        )
    );
    let followup = api
        .send(
            "POST",
            format!("/webhooks/{}/{}", api.dc.application_id(), prompt.token),
            Some(json!({"content": "done", "flags": 64})),
            None,
        )
        .await;
    assert_eq!(
        (followup.status, followup.body["flags"].as_u64()),
        (200, Some(64))
    );
    assert_eq!(
        api.dc.messages(channel).len(),
        1,
        "ephemeral follow-ups are not in the channel"
    );

    tokio::time::sleep(Duration::from_millis(3100)).await;
    let too_late = callback(&late, json!({"type": 6})).await;
    assert_eq!(
        (too_late.status, &too_late.body),
        (
            404,
            &json!({"code": 10062, "message": "Unknown interaction"})
        )
    );
    assert_eq!(api.dc.interaction_response(&late), None);
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

#[tokio::test]
async fn commands_are_validated_overwritten_and_runnable() {
    let api = Api::start().await;
    let app = api.dc.application_id();
    let path = format!("/applications/{app}/guilds/{}/commands", api.dc.guild_id());
    let bad = api
        .call(
            "PUT",
            &path,
            Some(json!([{"name": "Take", "description": "take one"}])),
        )
        .await;
    assert_eq!(bad.status, 400);
    assert!(bad.body["errors"]["0"]["name"].is_object(), "{}", bad.body);
    let no_description = api
        .call(
            "PUT",
            &path,
            Some(json!([{"name": "take", "description": ""}])),
        )
        .await;
    assert_eq!(no_description.status, 400);
    let command = json!([{"name": "take", "description": "Take a conversation", "options": [
        {"type": 4, "name": "number", "description": "which one", "required": true}]}]);
    let first = api.ok("PUT", &path, command.clone()).await;
    let again = api.ok("PUT", &path, command).await;
    assert_eq!(first[0]["id"], again[0]["id"], "a command keeps its id");
    assert_eq!(api.dc.commands().len(), 1);
    let channel = api.dc.create_text_channel("general");
    let user = api.dc.user("responder");
    let run = api
        .dc
        .user_runs_command(&user, channel, "take", json!({"number": 3}));
    assert_eq!(
        run.payload["data"]["options"],
        json!([{"name": "number", "type": 4, "value": 3}])
    );
    assert_eq!(run.payload["data"]["id"], first[0]["id"]);
}
