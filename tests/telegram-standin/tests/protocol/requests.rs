//! How requests are taken: the token and method names, form and query parameters (every request
//! recorded), and stopping, which ends long polls and closes the port.

use super::*;

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
