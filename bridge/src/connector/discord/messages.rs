//! What the bot's own messages look like: an offer with its buttons, the topic menu for
//! someone starting a conversation. Pure builders of Discord message bodies.

use serde_json::{Value, json};

use super::DiscordConnector;
use crate::connector::Offer;
use crate::format::truncate_chars as truncate;

/// The custom ID of the topic menu; its one value is the topic's ID.
pub(super) const TOPIC_MENU: &str = "topic";

/// Text of Switchboard's own, escaped so it shows as written.
fn plain(text: &str) -> String {
    DiscordConnector::plain(text)
}

/// An offer's text and its two buttons.
pub(super) fn offer_message(offer: &Offer) -> Value {
    let mut text = format!(
        "**New conversation** about **{}** from {}",
        plain(&offer.topic_name),
        plain(&offer.visitor_alias)
    );
    if let Some(language) = &offer.language {
        text.push_str(&format!("\nLanguage: {}", plain(language)));
    }
    let quoted = offer
        .summary
        .as_deref()
        .map(|s| truncate(s, 1200))
        .or_else(|| offer.first_message.as_deref().map(|m| truncate(m, 800)));
    if let Some(quoted) = quoted {
        for line in plain(&quoted).lines() {
            text.push_str("\n> ");
            text.push_str(line);
        }
    }
    json!({
        "content": text,
        "components": [{"type": 1, "components": [
            {"type": 2, "style": 3, "label": "Accept", "custom_id": format!("accept:{}", offer.offer_id)},
            {"type": 2, "style": 4, "label": "Decline", "custom_id": format!("decline:{}", offer.offer_id)},
        ]}],
    })
}

/// `text` and a menu of the topics (a string select, `custom_id` [`TOPIC_MENU`], one value
/// per topic ID). Discord allows 25 options of at most 100 characters each: a topic beyond
/// that, or with a longer ID, is left out with a warning.
pub(super) fn topic_menu(text: &str, topics: &[(String, String)]) -> Value {
    let options: Vec<Value> = topics
        .iter()
        .filter(|(id, _)| {
            let fits = (1..=100).contains(&id.chars().count());
            if !fits {
                tracing::warn!(topic = %id, "discord: a topic ID over 100 characters is not in the menu");
            }
            fits
        })
        .take(25)
        // 99 and the ellipsis: Discord's 100.
        .map(|(id, name)| json!({"label": truncate(name, 99), "value": id}))
        .collect();
    json!({
        "content": plain(text),
        "components": [{"type": 1, "components": [
            {"type": 3, "custom_id": TOPIC_MENU, "placeholder": "Choose a topic",
             "min_values": 1, "max_values": 1, "options": options},
        ]}],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_topic_menu_offers_each_topic_by_id_within_discords_limits() {
        let mut topics: Vec<(String, String)> = (0..30)
            .map(|i| (format!("t{i}"), format!("Topic {i}")))
            .collect();
        topics.insert(0, ("x".repeat(101), "Too long".into()));
        topics.insert(1, ("billing".into(), "B".repeat(150)));
        let menu = topic_menu("What about?", &topics);
        let select = &menu["components"][0]["components"][0];
        assert_eq!(
            (select["type"].as_u64(), select["custom_id"].as_str()),
            (Some(3), Some(TOPIC_MENU))
        );
        let options = select["options"].as_array().unwrap();
        assert_eq!(options.len(), 25);
        assert_eq!(
            options[0]["value"], "billing",
            "the over-long ID is left out"
        );
        assert_eq!(options[0]["label"].as_str().unwrap().chars().count(), 100);
        assert_eq!(options[1], json!({"label": "Topic 0", "value": "t0"}));
    }
}
