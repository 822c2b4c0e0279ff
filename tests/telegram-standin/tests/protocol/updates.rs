//! Updates: the offset confirms them for good, long polling, a second `getUpdates` ending the
//! first with 409, callback queries, and webhooks in order with their secret.

use super::*;

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
