//! Linking with a code, and slash commands.

use super::*;

/// A responder links their Discord account with a one-time code through the `/start` slash
/// command, and `/conversations` and `/end` work as slash commands too: each interaction is
/// answered within Discord's 3 seconds, the answer itself arrives as a message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_responder_links_with_a_code_and_uses_slash_commands() -> anyhow::Result<()> {
    let env = TestEnv::from_env();
    let slot = Slot::load(&env, 6)?;
    let dc = DiscordStandIn::start(TOKEN).await?;
    let kai = dc.user("kai");
    let config = format!(
        "{}\n[[responders]]\nid = \"kai\"\ndisplay_name = \"Kai\"\ntopics = [\"support\"]\n\n{TOPICS}",
        discord_section(&dc, None)
    );
    let sb = Switchboard::start(&env, &slot, &config).await?;
    wait_for("the slash commands registered", || async {
        Ok((!dc.commands().is_empty()).then_some(()))
    })
    .await?;
    let code = sb
        .link_code(&env, "discord", "kai")?
        .map_err(anyhow::Error::msg)?;

    let dm = dc.user_opens_dm(&kai);
    let slash =
        |name: &str, options: serde_json::Value| dc.user_runs_command(&kai, dm, name, options);
    let answered = |i: discord_standin::Interaction| {
        let dc = dc.clone();
        async move {
            dc.wait_for_interaction_response(&i, Duration::from_secs(3))
                .await
                .context("a slash command was not answered within 3 seconds")
        }
    };
    let answer = answered(slash("start", serde_json::json!({"code": "WRONGCODE1"}))).await?;
    assert_eq!(answer["type"], 4, "{answer}");
    wait_messages(&dc, dm, "the refusal of a wrong code", |m| {
        m.iter()
            .any(|m| m.content.contains("unknown, expired or already used"))
    })
    .await?;
    answered(slash("start", serde_json::json!({"code": code}))).await?;
    wait_messages(&dc, dm, "the link confirmation", |m| {
        m.iter().any(|m| m.content.starts_with("Linked."))
    })
    .await?;

    // Linked: Kai gets offers now.
    let mut v = Visitor::guest(&env, &sb.base).await?;
    v.start("support").await?;
    v.send("Where is my parcel?").await?;
    accept(&dc, &kai, "parcel").await?;
    answered(slash("conversations", serde_json::json!({}))).await?;
    wait_messages(&dc, dm, "the list of conversations", |m| {
        m.iter()
            .any(|m| m.content.contains("Your conversations (1)"))
    })
    .await?;
    answered(slash("end", serde_json::json!({}))).await?;
    wait_for("the conversation ended", || async {
        let store = sb.store().await?;
        Ok(store
            .active_assignments_for_address("discord", &kai.id.to_string())
            .await?
            .is_empty()
            .then_some(()))
    })
    .await?;
    Ok(())
}
