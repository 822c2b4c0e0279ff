//! Buttons, string selects, interactions answered once and within 3 seconds, and application
//! commands.

use super::*;

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
