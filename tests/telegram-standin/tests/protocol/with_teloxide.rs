//! teloxide itself against the stand-in: its client and dispatcher, uploads, downloads,
//! callback answers and real errors.

use super::*;

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
