//! Rate limits and faults: 429s for a client that ignores the bucket headers, armed faults that
//! fire once each, and an enforced nonce.

use super::*;

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
