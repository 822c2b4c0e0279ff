//! Sending and editing messages as the Bot API checks them: entities measured in UTF-16, bad
//! HTML refused, date-time entities, text length, unknown chats, replies and edits.

use super::*;

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
