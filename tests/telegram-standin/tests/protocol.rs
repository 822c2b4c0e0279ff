//! The stand-in refuses and succeeds like the Telegram Bot API does, seen from a plain HTTP
//! client (and, at the end, from teloxide itself).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use telegram_standin::StandIn;
use tokio::sync::mpsc;

const TOKEN: &str = "123456789:AAE-test_token";

/// A stand-in plus an HTTP client that calls it the way bots do.
struct Api {
    tg: StandIn,
    http: reqwest::Client,
}

impl Api {
    async fn start() -> Api {
        let tg = StandIn::start(TOKEN).await.expect("stand-in starts");
        let http = reqwest::Client::builder()
            .no_proxy()
            .build()
            .expect("client");
        Api { tg, http }
    }

    fn url(&self, method: &str) -> String {
        format!("{}bot{}/{}", self.tg.api_url(), TOKEN, method)
    }

    /// POSTs JSON parameters; returns the HTTP status and the envelope.
    async fn call(&self, method: &str, params: Value) -> (u16, Value) {
        let response = self
            .http
            .post(self.url(method))
            .json(&params)
            .send()
            .await
            .expect("request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON envelope"))
    }

    /// Calls a method that must succeed; returns `result`.
    async fn ok(&self, method: &str, params: Value) -> Value {
        let (status, body) = self.call(method, params).await;
        assert_eq!(
            (status, &body["ok"]),
            (200, &json!(true)),
            "{method} failed: {body}"
        );
        body["result"].clone()
    }

    /// Calls a method that must fail; checks the envelope agrees with the HTTP status and
    /// returns (status, description).
    async fn err(&self, method: &str, params: Value) -> (u16, String) {
        let (status, body) = self.call(method, params).await;
        assert_eq!(
            body["ok"],
            json!(false),
            "{method} unexpectedly succeeded: {body}"
        );
        assert_eq!(
            body["error_code"],
            json!(status),
            "error_code matches the HTTP status"
        );
        (
            status,
            body["description"]
                .as_str()
                .expect("description")
                .to_owned(),
        )
    }
}

/// Just enough of a PNG for its dimensions to be read.
fn tiny_png() -> Vec<u8> {
    let mut png = b"\x89PNG\r\n\x1a\n\0\0\0\x0dIHDR".to_vec();
    png.extend_from_slice(&4u32.to_be_bytes());
    png.extend_from_slice(&3u32.to_be_bytes());
    png.extend_from_slice(&[8, 6, 0, 0, 0, 0, 0, 0, 0]);
    png
}

#[tokio::test]
async fn wrong_token_is_unauthorized_and_unknown_method_is_not_found() {
    let api = Api::start().await;
    let response = api
        .http
        .post(format!("{}bot123456789:WRONG/getMe", api.tg.api_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 401);
    assert_eq!(
        response.json::<Value>().await.unwrap(),
        json!({"ok": false, "error_code": 401, "description": "Unauthorized"})
    );
    let (status, body) = api.call("getMee", json!({})).await;
    assert_eq!(
        (status, body),
        (
            404,
            json!({"ok": false, "error_code": 404, "description": "Not Found"})
        )
    );
}

#[tokio::test]
async fn method_names_are_case_insensitive_and_get_me_is_complete() {
    let api = Api::start().await;
    for name in ["getMe", "GetMe", "getme", "GETME"] {
        let me = api.ok(name, json!({})).await;
        assert_eq!(
            me["id"],
            json!(123456789),
            "the bot id is the token's prefix"
        );
        for field in [
            "is_bot",
            "first_name",
            "username",
            "can_join_groups",
            "can_read_all_group_messages",
            "supports_inline_queries",
            "can_connect_to_business",
            "has_main_web_app",
        ] {
            assert!(me.get(field).is_some(), "getMe lacks {field}: {me}");
        }
    }
    // GET with query parameters works too.
    let response = api.http.get(api.url("getMe")).send().await.unwrap();
    assert_eq!(response.status().as_u16(), 200);
}

#[tokio::test]
async fn offset_confirms_updates_for_good_and_unconfirmed_ones_come_back() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", Some("ann"));
    api.tg.user_sends(&ann, "first");
    api.tg.user_sends(&ann, "second");

    let updates = api.ok("getUpdates", json!({})).await;
    let ids: Vec<i64> = updates
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["update_id"].as_i64().unwrap())
        .collect();
    assert_eq!(ids.len(), 2);
    assert!(ids[0] < ids[1], "update_id strictly increases");
    assert_eq!(updates[0]["message"]["text"], "first");
    assert_eq!(updates[0]["message"]["chat"]["id"], 1001);

    // Not confirmed yet: the same two come back.
    assert_eq!(api.ok("getUpdates", json!({})).await, updates);
    // limit caps the batch.
    assert_eq!(
        api.ok("getUpdates", json!({"limit": 1}))
            .await
            .as_array()
            .unwrap()
            .len(),
        1
    );

    // Confirming the first: it never comes back, even without an offset.
    let rest = api.ok("getUpdates", json!({"offset": ids[0] + 1})).await;
    assert_eq!(rest[0]["update_id"], ids[1]);
    let again = api.ok("getUpdates", json!({})).await;
    assert_eq!(again.as_array().unwrap().len(), 1);
    assert_eq!(again[0]["update_id"], ids[1]);
    assert_eq!(api.tg.pending_updates(), 1);

    // A negative offset keeps only the last -offset updates.
    api.tg.user_sends(&ann, "third");
    let last = api.ok("getUpdates", json!({"offset": -1})).await;
    assert_eq!(last.as_array().unwrap().len(), 1);
    assert_eq!(last[0]["message"]["text"], "third");
    assert_eq!(api.tg.pending_updates(), 1);
}

#[tokio::test]
async fn long_poll_waits_for_the_timeout_or_returns_early_with_an_update() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", None);

    let started = Instant::now();
    let empty = api.ok("getUpdates", json!({"timeout": 1})).await;
    let waited = started.elapsed();
    assert_eq!(empty, json!([]));
    assert!(
        waited >= Duration::from_millis(900),
        "returned after {waited:?}, before the timeout"
    );
    assert!(waited < Duration::from_secs(10), "took {waited:?}");

    let tg = api.tg.clone();
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        tg.user_sends(&ann, "wake up");
    });
    let started = Instant::now();
    let updates = api.ok("getUpdates", json!({"timeout": 30})).await;
    assert_eq!(updates[0]["message"]["text"], "wake up");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "a long poll returns as soon as an update arrives"
    );
    sender.await.unwrap();
    // The record of each call says what its answer handed out.
    let polls: Vec<(u16, usize)> = api
        .tg
        .requests()
        .iter()
        .filter(|r| r.method_lower == "getupdates")
        .map(|r| (r.status, r.items))
        .collect();
    assert_eq!(polls, [(200, 0), (200, 1)]);
}

#[tokio::test]
async fn a_second_get_updates_terminates_the_first_with_409() {
    let api = Arc::new(Api::start().await);
    let first = {
        let api = api.clone();
        tokio::spawn(async move { api.err("getUpdates", json!({"timeout": 30})).await })
    };
    // Wait until the first long poll has reached the server.
    while !api
        .tg
        .requests()
        .iter()
        .any(|r| r.method_lower == "getupdates")
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(api.ok("getUpdates", json!({"timeout": 0})).await, json!([]));
    let (status, description) = first.await.unwrap();
    assert_eq!(status, 409);
    assert_eq!(
        description,
        "Conflict: terminated by other getUpdates request; make sure that only one bot instance is running"
    );
}

#[tokio::test]
async fn html_entities_are_measured_in_utf16_and_bad_html_is_refused() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", Some("ann"));
    let message = api
        .ok(
            "sendMessage",
            json!({"chat_id": 1001, "text": "👋 <b>Hi</b> <i>there</i> &lt;3 <a href=\"https://e.x/\">link</a>", "parse_mode": "HTML"}),
        )
        .await;
    assert_eq!(message["text"], "👋 Hi there <3 link");
    assert_eq!(
        message["entities"],
        json!([
            {"offset": 3, "length": 2, "type": "bold"},
            {"offset": 6, "length": 5, "type": "italic"},
            {"offset": 15, "length": 4, "type": "text_link", "url": "https://e.x/"},
        ])
    );
    assert_eq!(message["from"], api.tg.bot_user());
    assert_eq!(
        message["chat"],
        json!({"id": 1001, "first_name": "Ann", "username": "ann", "type": "private"})
    );
    assert!(message["date"].as_i64().unwrap() > 1_600_000_000);

    let sent = api.tg.sent(ann.id);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].parse_mode.as_deref(), Some("HTML"));
    assert_eq!(
        sent[0].entities,
        message["entities"].as_array().unwrap().clone()
    );

    for (text, expected) in [
        (
            "<b>oops",
            "Bad Request: can't parse entities: Can't find end tag corresponding to start tag \"b\"",
        ),
        (
            "a<br>b",
            "Bad Request: can't parse entities: Unsupported start tag \"br\" at byte offset 1",
        ),
        (
            "<b>x</i>",
            "Bad Request: can't parse entities: Unmatched end tag at byte offset 4, expected \"</b>\", found \"</i>\"",
        ),
    ] {
        let (status, description) = api
            .err(
                "sendMessage",
                json!({"chat_id": 1001, "text": text, "parse_mode": "HTML"}),
            )
            .await;
        assert_eq!((status, description.as_str()), (400, expected));
    }
    let (_, description) = api
        .err(
            "sendMessage",
            json!({"chat_id": 1001, "text": "Price: 5.00", "parse_mode": "MarkdownV2"}),
        )
        .await;
    assert_eq!(
        description,
        "Bad Request: can't parse entities: Character '.' is reserved and must be escaped with the preceding '\\'"
    );
    assert_eq!(
        api.tg.sent(ann.id).len(),
        1,
        "refused messages are not delivered"
    );
}

/// `date_time` (a newer entity type, with `unix_time` and `date_time_format`) passes through
/// both ways, so bots can be tested against entity types their library does not know.
#[tokio::test]
async fn date_time_entities_carry_their_time_both_ways() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", None);
    let sent = api
        .ok(
            "sendMessage",
            json!({"chat_id": 1001, "text": "see you at 22:45", "entities": [
                {"type": "date_time", "offset": 11, "length": 5, "unix_time": 1647531900, "date_time_format": "t"}
            ]}),
        )
        .await;
    assert_eq!(
        sent["entities"],
        json!([{"type": "date_time", "offset": 11, "length": 5, "unix_time": 1647531900, "date_time_format": "t"}])
    );
    let (status, description) = api
        .err(
            "sendMessage",
            json!({"chat_id": 1001, "text": "when?", "entities": [{"type": "date_time", "offset": 0, "length": 4}]}),
        )
        .await;
    assert_eq!(
        (status, description.as_str()),
        (
            400,
            "Bad Request: can't parse MessageEntity: Field \"unix_time\" must be of type Number"
        )
    );

    api.tg.user_sends_with(
        &ann,
        "Tomorrow at noon, really",
        vec![
            json!({"type": "date_time", "offset": 0, "length": 16, "unix_time": 1700000000}),
            json!({"type": "bold", "offset": 18, "length": 6}),
        ],
        None,
    );
    let updates = api.ok("getUpdates", json!({})).await;
    assert_eq!(
        updates[0]["message"]["entities"],
        json!([
            {"type": "date_time", "offset": 0, "length": 16, "unix_time": 1700000000},
            {"type": "bold", "offset": 18, "length": 6}
        ])
    );
}

#[tokio::test]
async fn text_must_be_one_to_4096_characters() {
    let api = Api::start().await;
    api.tg.user(1001, "Ann", None);
    api.ok(
        "sendMessage",
        json!({"chat_id": 1001, "text": "a".repeat(4096)}),
    )
    .await;
    let (status, description) = api
        .err(
            "sendMessage",
            json!({"chat_id": 1001, "text": "a".repeat(4097)}),
        )
        .await;
    assert_eq!(
        (status, description.as_str()),
        (400, "Bad Request: message is too long")
    );
    for text in ["", "   ", "<b></b>"] {
        let (_, description) = api
            .err(
                "sendMessage",
                json!({"chat_id": 1001, "text": text, "parse_mode": "HTML"}),
            )
            .await;
        assert_eq!(
            description, "Bad Request: message text is empty",
            "for {text:?}"
        );
    }
}

#[tokio::test]
async fn unknown_chats_are_not_found() {
    let api = Api::start().await;
    let (status, description) = api
        .err("sendMessage", json!({"chat_id": 4242, "text": "hi"}))
        .await;
    assert_eq!(
        (status, description.as_str()),
        (400, "Bad Request: chat not found")
    );
    let (_, description) = api.err("sendMessage", json!({"text": "hi"})).await;
    assert_eq!(description, "Bad Request: chat_id is empty");
    // A user who wrote to the bot becomes a known chat; chat_id may be a string.
    let bob = telegram_standin::TgUser {
        id: 77,
        first_name: "Bob".into(),
        username: None,
        language_code: None,
    };
    api.tg.user_sends(&bob, "hello");
    api.ok("sendMessage", json!({"chat_id": "77", "text": "hi Bob"}))
        .await;
    let chat = api.ok("getChat", json!({"chat_id": 77})).await;
    assert_eq!(chat["type"], "private");
}

#[tokio::test]
async fn replies_must_point_at_an_existing_message() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", None);
    let question = api.tg.user_sends(&ann, "question?");

    let (status, description) = api
        .err(
            "sendMessage",
            json!({"chat_id": 1001, "text": "a", "reply_parameters": {"message_id": 999}}),
        )
        .await;
    assert_eq!(
        (status, description.as_str()),
        (400, "Bad Request: message to be replied not found")
    );
    let (_, description) = api
        .err(
            "sendMessage",
            json!({"chat_id": 1001, "text": "a", "reply_to_message_id": 999}),
        )
        .await;
    assert_eq!(description, "Bad Request: message to be replied not found");

    let lenient = api
        .ok(
            "sendMessage",
            json!({"chat_id": 1001, "text": "a", "reply_parameters": {"message_id": 999, "allow_sending_without_reply": true}}),
        )
        .await;
    assert!(lenient.get("reply_to_message").is_none());

    let reply = api
        .ok("sendMessage", json!({"chat_id": 1001, "text": "answer", "reply_parameters": {"message_id": question}}))
        .await;
    assert_eq!(reply["reply_to_message"]["message_id"], question);
    assert_eq!(reply["reply_to_message"]["text"], "question?");
    assert!(
        reply["message_id"].as_i64().unwrap() > question,
        "message ids increase per chat"
    );

    // A user's reply carries the full replied-to message.
    let user_reply = api.tg.user_sends_with(
        &ann,
        "thanks",
        vec![],
        Some(reply["message_id"].as_i64().unwrap()),
    );
    let updates = api.ok("getUpdates", json!({})).await;
    let last = &updates.as_array().unwrap().last().unwrap()["message"];
    assert_eq!(last["message_id"], user_reply);
    assert_eq!(last["reply_to_message"]["text"], "answer");
    assert_eq!(last["reply_to_message"]["from"]["is_bot"], true);
}

#[tokio::test]
async fn callback_queries_round_trip_and_can_be_answered_once() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", None);
    let keyboard = json!({"inline_keyboard": [[{"text": "Claim", "callback_data": "claim:7"}, {"text": "Site", "url": "https://e.x/"}]]});
    let message = api
        .ok(
            "sendMessage",
            json!({"chat_id": 1001, "text": "New visitor", "reply_markup": keyboard}),
        )
        .await;
    assert_eq!(message["reply_markup"], keyboard);
    let message_id = message["message_id"].as_i64().unwrap();

    let query_id = api.tg.user_presses(&ann, message_id, "claim:7");
    let updates = api.ok("getUpdates", json!({})).await;
    let query = &updates[0]["callback_query"];
    assert_eq!(query["id"], query_id);
    assert_eq!(query["data"], "claim:7");
    assert_eq!(query["from"]["id"], 1001);
    assert_eq!(query["message"]["message_id"], message_id);
    assert!(query["chat_instance"].is_string());

    api.ok(
        "answerCallbackQuery",
        json!({"callback_query_id": query_id, "text": "Claimed"}),
    )
    .await;
    let (status, description) = api
        .err(
            "answerCallbackQuery",
            json!({"callback_query_id": query_id}),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        description,
        "Bad Request: query is too old and response timeout expired or query ID is invalid"
    );
    assert_eq!(
        api.tg.answered_callbacks(),
        vec![(query_id, Some("Claimed".to_owned()))]
    );

    let (_, description) = api
        .err(
            "sendMessage",
            json!({"chat_id": 1001, "text": "x", "reply_markup": {"inline_keyboard": [[{"text": "t", "callback_data": "d".repeat(65)}]]}}),
        )
        .await;
    assert_eq!(description, "Bad Request: BUTTON_DATA_INVALID");
}

#[tokio::test]
async fn edits_are_checked_like_telegram() {
    let api = Api::start().await;
    api.tg.user(1001, "Ann", None);
    let keyboard = json!({"inline_keyboard": [[{"text": "Claim", "callback_data": "c"}]]});
    let message = api
        .ok(
            "sendMessage",
            json!({"chat_id": 1001, "text": "v1", "reply_markup": keyboard}),
        )
        .await;
    let id = message["message_id"].as_i64().unwrap();

    let (_, description) = api
        .err(
            "editMessageText",
            json!({"chat_id": 1001, "message_id": id, "text": "v1", "reply_markup": keyboard}),
        )
        .await;
    assert_eq!(
        description,
        "Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message"
    );
    let (_, description) = api
        .err(
            "editMessageText",
            json!({"chat_id": 1001, "message_id": 999, "text": "x"}),
        )
        .await;
    assert_eq!(description, "Bad Request: message to edit not found");

    let edited = api
        .ok(
            "editMessageText",
            json!({"chat_id": 1001, "message_id": id, "text": "v2"}),
        )
        .await;
    assert_eq!(edited["text"], "v2");
    assert!(edited["edit_date"].is_i64());
    assert!(
        edited.get("reply_markup").is_none(),
        "an edit without reply_markup drops the keyboard"
    );
    let sent = api.tg.sent(1001);
    assert_eq!(
        (sent[0].text.as_deref(), sent[0].edited),
        (Some("v2"), true)
    );

    let with_markup = api
        .ok(
            "editMessageReplyMarkup",
            json!({"chat_id": 1001, "message_id": id, "reply_markup": keyboard}),
        )
        .await;
    assert_eq!(with_markup["reply_markup"], keyboard);

    assert_eq!(
        api.ok("deleteMessage", json!({"chat_id": 1001, "message_id": id}))
            .await,
        json!(true)
    );
    assert!(api.tg.sent(1001).is_empty());
    let (_, description) = api
        .err("deleteMessage", json!({"chat_id": 1001, "message_id": id}))
        .await;
    assert_eq!(description, "Bad Request: message to delete not found");
}

#[tokio::test]
async fn flood_control_holds_until_retry_after_has_passed() {
    let api = Api::start().await;
    api.tg.user(1001, "Ann", None);
    api.tg.rate_limit_next("sendMessage", Some(1001), 1, 2);

    let (status, body) = api
        .call("sendMessage", json!({"chat_id": 1001, "text": "one"}))
        .await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 2", "parameters": {"retry_after": 2}})
    );
    // Ignoring retry_after does not help.
    let (status, body) = api
        .call("sendMessage", json!({"chat_id": 1001, "text": "one"}))
        .await;
    assert_eq!(status, 429);
    assert!(body["parameters"]["retry_after"].as_u64().unwrap() >= 1);
    assert!(api.tg.sent(1001).is_empty());

    tokio::time::sleep(Duration::from_millis(2100)).await;
    api.ok("sendMessage", json!({"chat_id": 1001, "text": "one"}))
        .await;
    assert_eq!(api.tg.sent(1001).len(), 1);

    let statuses: Vec<u16> = api
        .tg
        .requests()
        .iter()
        .filter(|r| r.method_lower == "sendmessage")
        .map(|r| r.status)
        .collect();
    assert_eq!(statuses, vec![429, 429, 200]);

    api.tg.fail_next("getMe", 502, "Bad Gateway");
    assert_eq!(
        api.err("getMe", json!({})).await,
        (502, "Bad Gateway".to_owned())
    );
    api.ok("getMe", json!({})).await;
}

#[tokio::test]
async fn a_bot_api_that_is_away_answers_502_and_keeps_what_users_send() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", None);
    api.tg.set_down(true);
    assert_eq!(
        api.err("sendMessage", json!({"chat_id": 1001, "text": "x"}))
            .await,
        (502, "Bad Gateway".to_owned())
    );
    assert_eq!(
        api.err("getUpdates", json!({})).await,
        (502, "Bad Gateway".to_owned())
    );
    api.tg.user_sends(&ann, "while it was away");
    assert!(api.tg.sent(1001).is_empty(), "nothing was carried out");
    api.tg.set_down(false);
    let updates = api.ok("getUpdates", json!({})).await;
    assert_eq!(updates[0]["message"]["text"], "while it was away");
}

#[tokio::test]
async fn flood_control_can_strike_in_the_middle_of_a_burst() {
    let api = Api::start().await;
    api.tg.user(1001, "Ann", None);
    api.tg.user(1002, "Bob", None);
    // The third message to Ann is refused, as when a long text's third part trips the limit.
    api.tg.rate_limit_after("sendMessage", Some(1001), 2, 1, 1);
    for text in ["part 1", "part 2"] {
        api.ok("sendMessage", json!({"chat_id": 1001, "text": text}))
            .await;
    }
    api.ok(
        "sendMessage",
        json!({"chat_id": 1002, "text": "Bob is not limited"}),
    )
    .await;
    let (status, body) = api
        .call("sendMessage", json!({"chat_id": 1001, "text": "part 3"}))
        .await;
    assert_eq!(status, 429);
    assert_eq!(
        body,
        json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}})
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    api.ok("sendMessage", json!({"chat_id": 1001, "text": "part 3"}))
        .await;
    let sent = api.tg.sent(1001);
    let texts: Vec<_> = sent.iter().filter_map(|m| m.text.as_deref()).collect();
    assert_eq!(texts, ["part 1", "part 2", "part 3"]);
    // When each message was accepted, in milliseconds: the refused one went a second later.
    let times: Vec<i64> = sent.iter().map(|m| m.received_at_ms).collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");
    assert!(times[2] - times[1] >= 1000, "{times:?}");
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!((now_ms - 5_000..=now_ms).contains(&times[0]), "{times:?}");
    assert_eq!(sent[0].edited_at_ms, None);
}

#[tokio::test]
async fn per_chat_send_interval_is_enforced_when_enabled() {
    let api = Api::start().await;
    api.tg.user(1001, "Ann", None);
    api.tg.user(1002, "Bob", None);
    api.tg.min_interval_per_chat(Some(Duration::from_secs(5)));
    api.ok("sendMessage", json!({"chat_id": 1001, "text": "one"}))
        .await;
    let (status, body) = api
        .call("sendMessage", json!({"chat_id": 1001, "text": "two"}))
        .await;
    assert_eq!(status, 429);
    assert!(body["parameters"]["retry_after"].as_u64().unwrap() >= 1);
    api.ok(
        "sendMessage",
        json!({"chat_id": 1002, "text": "other chat"}),
    )
    .await;
}

type Delivery = (Option<String>, Value);

/// A webhook receiver on 127.0.0.1 that answers 500 to its first `fail_first` deliveries.
async fn webhook_receiver(fail_first: usize) -> (String, mpsc::UnboundedReceiver<Delivery>) {
    use axum::http::{HeaderMap, StatusCode};
    let (tx, rx) = mpsc::unbounded_channel::<Delivery>();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(
            move |headers: HeaderMap, axum::Json(update): axum::Json<Value>| {
                let tx = tx.clone();
                let seen = seen.clone();
                async move {
                    let secret = headers
                        .get("x-telegram-bot-api-secret-token")
                        .map(|v| v.to_str().unwrap().to_owned());
                    let _ = tx.send((secret, update));
                    if seen.fetch_add(1, Ordering::SeqCst) < fail_first {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::OK
                    }
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, rx)
}

async fn next_delivery(rx: &mut mpsc::UnboundedReceiver<Delivery>) -> Delivery {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("a webhook delivery")
        .expect("open")
}

#[tokio::test]
async fn webhooks_get_updates_in_order_with_the_secret_and_block_get_updates() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", None);
    let (url, mut deliveries) = webhook_receiver(1).await;

    let (_, description) = api
        .err(
            "setWebhook",
            json!({"url": url, "secret_token": "not allowed!"}),
        )
        .await;
    assert_eq!(
        description,
        "Bad Request: secret token contains unallowed characters"
    );

    let (status, body) = api
        .call(
            "setWebhook",
            json!({"url": url, "secret_token": "s3cret_-X"}),
        )
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"ok": true, "result": true, "description": "Webhook was set"})
        )
    );
    let (status, description) = api.err("getUpdates", json!({})).await;
    assert_eq!(status, 409);
    assert_eq!(
        description,
        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first"
    );

    api.tg.user_sends(&ann, "one");
    api.tg.user_sends(&ann, "two");
    // The receiver fails the first attempt; the same update is retried before the next one.
    let (secret, first_try) = next_delivery(&mut deliveries).await;
    assert_eq!(secret.as_deref(), Some("s3cret_-X"));
    let (_, retry) = next_delivery(&mut deliveries).await;
    let (_, second) = next_delivery(&mut deliveries).await;
    assert_eq!(first_try, retry);
    assert_eq!(retry["message"]["text"], "one");
    assert_eq!(second["message"]["text"], "two");
    assert!(second["update_id"].as_i64() > retry["update_id"].as_i64());

    let deadline = Instant::now() + Duration::from_secs(10);
    while api.tg.pending_updates() > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let info = api.ok("getWebhookInfo", json!({})).await;
    assert_eq!(info["url"], url);
    assert_eq!(info["pending_update_count"], 0);
    assert_eq!(info["has_custom_certificate"], false);
    assert!(info["last_error_message"].as_str().unwrap().contains("500"));

    api.ok("deleteWebhook", json!({})).await;
    assert_eq!(api.ok("getWebhookInfo", json!({})).await["url"], "");
    assert_eq!(api.ok("getUpdates", json!({})).await, json!([]));
}

#[tokio::test]
async fn files_upload_and_download() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", None);
    let png = tiny_png();

    let form = reqwest::multipart::Form::new()
        .text("chat_id", "1001")
        .text("caption", "<b>look</b>")
        .text("parse_mode", "HTML")
        .text(
            "reply_markup",
            r#"{"inline_keyboard":[[{"text":"ok","callback_data":"ok"}]]}"#,
        )
        .part(
            "photo",
            reqwest::multipart::Part::bytes(png.clone()).file_name("p.png"),
        );
    let response = api
        .http
        .post(api.url("sendPhoto"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let message = response.json::<Value>().await.unwrap()["result"].clone();
    let photo = &message["photo"][0];
    assert_eq!(
        (photo["width"].as_u64(), photo["height"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(message["caption"], "look");
    assert_eq!(
        message["caption_entities"],
        json!([{"offset": 0, "length": 4, "type": "bold"}])
    );
    assert_eq!(
        message["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
        "ok"
    );
    let sent = api.tg.sent(1001);
    assert_eq!(
        (sent[0].kind.as_str(), sent[0].file_bytes.as_ref()),
        ("photo", Some(&png))
    );

    let file = api
        .ok("getFile", json!({"file_id": photo["file_id"]}))
        .await;
    assert_eq!(file["file_size"], png.len());
    let path = file["file_path"].as_str().unwrap();
    let download = format!("{}file/bot{}/{}", api.tg.api_url(), TOKEN, path);
    assert_eq!(
        api.http
            .get(&download)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        png
    );
    // teloxide sends the '/' in file_path percent-encoded.
    let encoded = format!(
        "{}file/bot{}/{}",
        api.tg.api_url(),
        TOKEN,
        path.replace('/', "%2F")
    );
    assert_eq!(
        api.http
            .get(&encoded)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        png
    );

    // A document through attach://, then re-sent by file_id.
    let form = reqwest::multipart::Form::new()
        .text("chat_id", "1001")
        .text("document", "attach://blob")
        .part(
            "blob",
            reqwest::multipart::Part::bytes(b"transcript".to_vec()).file_name("log.txt"),
        );
    let response = api
        .http
        .post(api.url("sendDocument"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let document = response.json::<Value>().await.unwrap()["result"]["document"].clone();
    assert_eq!(document["file_name"], "log.txt");
    let again = api
        .ok(
            "sendDocument",
            json!({"chat_id": 1001, "document": document["file_id"]}),
        )
        .await;
    assert_eq!(again["document"]["file_id"], document["file_id"]);

    // Refusals.
    let form = reqwest::multipart::Form::new()
        .text("chat_id", "1001")
        .part(
            "photo",
            reqwest::multipart::Part::bytes(b"not an image".to_vec()).file_name("x.png"),
        );
    let body: Value = api
        .http
        .post(api.url("sendPhoto"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["description"], "Bad Request: IMAGE_PROCESS_FAILED");
    let (_, description) = api.err("sendPhoto", json!({"chat_id": 1001})).await;
    assert_eq!(description, "Bad Request: there is no photo in the request");
    let (_, description) = api
        .err(
            "sendPhoto",
            json!({"chat_id": 1001, "photo": document["file_id"]}),
        )
        .await;
    assert_eq!(description, "Bad Request: type of file mismatch");

    // A user's photo can be fetched too.
    api.tg.user_sends_photo(&ann, png.clone(), Some("from Ann"));
    let updates = api.ok("getUpdates", json!({})).await;
    let user_photo = &updates[0]["message"]["photo"][0];
    let file = api
        .ok("getFile", json!({"file_id": user_photo["file_id"]}))
        .await;
    let url = format!(
        "{}file/bot{}/{}",
        api.tg.api_url(),
        TOKEN,
        file["file_path"].as_str().unwrap()
    );
    assert_eq!(
        api.http
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        png
    );
}

#[tokio::test]
async fn form_and_query_parameters_are_accepted_and_every_request_is_recorded() {
    let api = Api::start().await;
    api.tg.user(1001, "Ann", None);
    let response = api
        .http
        .post(api.url("sendMessage"))
        .form(&[
            ("chat_id", "1001"),
            ("text", "via form"),
            (
                "reply_markup",
                r#"{"inline_keyboard":[[{"text":"a","callback_data":"b"}]]}"#,
            ),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let response = api
        .http
        .get(api.url("sendMessage"))
        .query(&[("chat_id", "1001"), ("text", "via query")])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let texts: Vec<_> = api
        .tg
        .sent(1001)
        .into_iter()
        .map(|m| m.text.unwrap())
        .collect();
    assert_eq!(texts, ["via form", "via query"]);
    assert_eq!(
        api.tg.sent(1001)[0].reply_markup.as_ref().unwrap()["inline_keyboard"][0][0]["text"],
        "a"
    );

    let requests = api.tg.requests();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        requests[0].content_type.as_deref(),
        Some("application/x-www-form-urlencoded")
    );
    assert!(String::from_utf8_lossy(&requests[0].body).contains("via+form"));
    assert!(requests[1].query.as_deref().unwrap().contains("via+query"));
    assert!(requests.iter().all(|r| r.status == 200));
}

/// teloxide 0.17, unmodified, works against the stand-in: getMe, an HTML message, one round of
/// long polling, and its own polling dispatcher.
#[tokio::test]
async fn teloxide_client_and_dispatcher_work_against_the_standin() {
    use teloxide::prelude::*;
    use teloxide::types::ParseMode;

    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", Some("ann"));
    let bot = Bot::new(TOKEN).set_api_url(api.tg.api_url().parse().unwrap());

    let me = bot
        .get_me()
        .await
        .expect("getMe deserializes into teloxide's Me");
    assert_eq!(me.username(), "switchboard_test_bot");

    let sent = bot
        .send_message(ChatId(ann.id), "Hello <b>Ann</b> 👋")
        .parse_mode(ParseMode::Html)
        .await
        .expect("sendMessage");
    assert_eq!(sent.text(), Some("Hello Ann 👋"));
    assert_eq!(sent.entities().unwrap()[0].offset, 6);
    assert_eq!(api.tg.sent(ann.id)[0].parse_mode.as_deref(), Some("HTML"));

    api.tg.user_sends(&ann, "hi bot");
    let updates = bot
        .get_updates()
        .offset(0)
        .timeout(5)
        .await
        .expect("getUpdates");
    assert_eq!(updates.len(), 1);
    let teloxide::types::UpdateKind::Message(message) = &updates[0].kind else {
        panic!("expected a message update, got {:?}", updates[0].kind)
    };
    assert_eq!(message.text(), Some("hi bot"));
    assert_eq!(message.chat.id, ChatId(1001));
    // Confirm it, as a polling loop would.
    let next = bot
        .get_updates()
        .offset(updates[0].id.as_offset())
        .timeout(0)
        .await
        .unwrap();
    assert!(next.is_empty());

    // The full long-polling dispatcher, echoing messages back.
    let handler = Update::filter_message().endpoint(|bot: Bot, msg: Message| async move {
        bot.send_message(
            msg.chat.id,
            format!("echo: {}", msg.text().unwrap_or_default()),
        )
        .await?;
        respond(())
    });
    let mut dispatcher = Dispatcher::builder(bot, handler).build();
    let shutdown = dispatcher.shutdown_token();
    let running = tokio::spawn(async move { dispatcher.dispatch().await });
    api.tg.user_sends(&ann, "ping");
    let messages = api
        .tg
        .wait_for_sent(
            ann.id,
            |m| m.iter().any(|m| m.text.as_deref() == Some("echo: ping")),
            Duration::from_secs(30),
        )
        .await
        .unwrap();
    assert_eq!(messages.len(), 2);
    shutdown.shutdown().expect("dispatcher is running").await;
    running.await.unwrap();
    assert_eq!(
        api.tg.pending_updates(),
        0,
        "the dispatcher confirmed what it handled"
    );
}

/// teloxide's multipart uploads, file downloads, callback answers and edits, and the errors it
/// recognises (so the bridge's error handling sees what it would see in production).
#[tokio::test]
async fn teloxide_uploads_downloads_answers_callbacks_and_sees_real_errors() {
    use teloxide::ApiError;
    use teloxide::RequestError;
    use teloxide::net::Download;
    use teloxide::prelude::*;
    use teloxide::types::{InlineKeyboardButton, InlineKeyboardMarkup, InputFile, UpdateKind};

    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", None);
    let bot = Bot::new(TOKEN).set_api_url(api.tg.api_url().parse().unwrap());

    let photo = bot
        .send_photo(ChatId(ann.id), InputFile::memory(tiny_png()))
        .caption("pic")
        .await
        .unwrap();
    let size = photo.photo().unwrap().last().unwrap().clone();
    assert_eq!((size.width, size.height), (4, 3));
    let file = bot.get_file(size.file.id.clone()).await.unwrap();
    let mut downloaded = Vec::new();
    bot.download_file(&file.path, &mut downloaded)
        .await
        .unwrap();
    assert_eq!(downloaded, tiny_png());
    let document = bot
        .send_document(
            ChatId(ann.id),
            InputFile::memory(b"hello".to_vec()).file_name("notes.txt"),
        )
        .await
        .unwrap();
    assert_eq!(
        document.document().unwrap().file_name.as_deref(),
        Some("notes.txt")
    );
    assert_eq!(
        api.tg.sent(ann.id)[1].file_bytes.as_deref(),
        Some(&b"hello"[..])
    );

    let keyboard = InlineKeyboardMarkup::new([[InlineKeyboardButton::callback("Claim", "claim")]]);
    let message = bot
        .send_message(ChatId(ann.id), "visitor waiting")
        .reply_markup(keyboard)
        .await
        .unwrap();
    let query_id = api.tg.user_presses(&ann, i64::from(message.id.0), "claim");
    let updates = bot.get_updates().await.unwrap();
    let UpdateKind::CallbackQuery(query) = &updates.last().unwrap().kind else {
        panic!("expected a callback query, got {:?}", updates.last())
    };
    assert_eq!(query.id.0, query_id);
    assert_eq!(query.data.as_deref(), Some("claim"));
    bot.answer_callback_query(query.id.clone())
        .text("Claimed")
        .await
        .unwrap();
    assert_eq!(
        api.tg.answered_callbacks(),
        vec![(query_id, Some("Claimed".to_owned()))]
    );

    let edited = bot
        .edit_message_text(ChatId(ann.id), message.id, "claimed by you")
        .await
        .unwrap();
    assert_eq!(edited.text(), Some("claimed by you"));
    let again = bot
        .edit_message_text(ChatId(ann.id), message.id, "claimed by you")
        .await
        .unwrap_err();
    assert!(
        matches!(again, RequestError::Api(ApiError::MessageNotModified)),
        "{again:?}"
    );
    let unknown = bot.send_message(ChatId(999), "x").await.unwrap_err();
    assert!(
        matches!(unknown, RequestError::Api(ApiError::ChatNotFound)),
        "{unknown:?}"
    );
    let html = bot
        .send_message(ChatId(ann.id), "<b>x")
        .parse_mode(teloxide::types::ParseMode::Html)
        .await;
    assert!(
        matches!(html, Err(RequestError::Api(ApiError::CantParseEntities(_)))),
        "{html:?}"
    );
    api.tg.rate_limit_next("sendMessage", None, 1, 1);
    let limited = bot.send_message(ChatId(ann.id), "x").await.unwrap_err();
    assert!(
        matches!(limited, RequestError::RetryAfter(s) if s.seconds() == 1),
        "{limited:?}"
    );
}

#[tokio::test]
async fn stopping_ends_long_polls_and_closes_the_port() {
    let api = Arc::new(Api::start().await);
    let poll = {
        let api = api.clone();
        tokio::spawn(async move { api.call("getUpdates", json!({"timeout": 30})).await })
    };
    while !api
        .tg
        .requests()
        .iter()
        .any(|r| r.method_lower == "getupdates")
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let stopped_at = Instant::now();
    api.tg.stop();
    let (status, body) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("poll ends")
        .unwrap();
    assert_eq!((status, body), (200, json!({"ok": true, "result": []})));
    assert!(stopped_at.elapsed() < Duration::from_secs(10));
    tokio::time::sleep(Duration::from_millis(200)).await;
    let fresh = reqwest::Client::builder().no_proxy().build().unwrap();
    assert!(
        fresh.get(api.url("getMe")).send().await.is_err(),
        "no longer listening"
    );
}

#[tokio::test]
async fn a_hung_chat_answers_nothing_until_released_and_a_call_given_up_is_never_carried_out() {
    let api = Api::start().await;
    api.tg.user(1001, "Ann", None);
    api.tg.user(1002, "Bob", None);
    api.tg.hang(Some(1001));
    // A client that gives up on the hung chat: nothing is sent.
    let gave_up = tokio::time::timeout(
        Duration::from_millis(300),
        api.call("sendMessage", json!({"chat_id": 1001, "text": "lost"})),
    )
    .await;
    assert!(gave_up.is_err(), "a hung chat does not answer");
    // Another chat is served meanwhile.
    api.ok(
        "sendMessage",
        json!({"chat_id": 1002, "text": "Bob is served"}),
    )
    .await;
    // A call that waits is carried out once the chat is released.
    let waiting = api.call("sendMessage", json!({"chat_id": 1001, "text": "kept"}));
    let release = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(api.tg.sent(1001).is_empty(), "nothing went out while hung");
        api.tg.release();
    };
    let ((status, body), ()) = tokio::join!(waiting, release);
    assert_eq!((status, &body["ok"]), (200, &json!(true)), "{body}");
    let texts: Vec<String> = api
        .tg
        .sent(1001)
        .iter()
        .filter_map(|m| m.text.clone())
        .collect();
    assert_eq!(texts, ["kept"], "the call given up was never carried out");

    // Hanging everything leaves getUpdates alone.
    api.tg.hang(None);
    let hung = tokio::time::timeout(Duration::from_millis(300), api.call("getMe", json!({}))).await;
    assert!(hung.is_err());
    api.ok("getUpdates", json!({"timeout": 0})).await;
    api.tg.release();
    api.ok("getMe", json!({})).await;
}
