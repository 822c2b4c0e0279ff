//! Limits and outages: flood control with `retry_after` (also in the middle of a burst), the
//! per-chat send interval, a Bot API that is away, and a hung chat.

use super::*;

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
