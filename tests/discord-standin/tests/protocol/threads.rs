//! Threads (created, archived, unarchived, capped) and webhooks posting into them.

use super::*;

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
