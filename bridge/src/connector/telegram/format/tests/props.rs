//! Properties of the Telegram renderer on generated input (proptest).

use proptest::prelude::*;

use super::*;
use crate::format::sanitise_matrix_html;
use crate::format::tests::{html_soup, tricky_text};

fn entity_kind() -> impl Strategy<Value = MessageEntityKind> {
    prop_oneof![
        Just(MessageEntityKind::Bold),
        Just(MessageEntityKind::Italic),
        Just(MessageEntityKind::Underline),
        Just(MessageEntityKind::Strikethrough),
        Just(MessageEntityKind::Spoiler),
        Just(MessageEntityKind::Code),
        prop::option::of(prop::sample::select(vec!["rust", "c++", "\"><x>", ""])).prop_map(|l| {
            MessageEntityKind::Pre {
                language: l.map(str::to_owned),
            }
        }),
        Just(MessageEntityKind::Blockquote),
        Just(MessageEntityKind::ExpandableBlockquote),
        prop::sample::select(vec![
            "https://e.example/a?b=1&c=<2>",
            "tg://user?id=1",
            "javascript:x"
        ])
        .prop_map(|u| MessageEntityKind::TextLink { url: url(u) }),
        Just(MessageEntityKind::Url),
        Just(MessageEntityKind::Mention),
        Just(MessageEntityKind::Hashtag),
        Just(MessageEntityKind::BotCommand),
        Just(MessageEntityKind::Email),
    ]
}

/// A Telegram text and entities over it, in range or not (Telegram's offsets are UTF-16
/// units and are not to be trusted).
fn telegram_message() -> impl Strategy<Value = (String, Vec<MessageEntity>)> {
    tricky_text(120).prop_flat_map(|text| {
        let units = utf16_len(&text);
        let offset = prop_oneof![
            8 => 0..units + 4,
            1 => Just(usize::MAX),
            1 => Just(usize::MAX / 2),
        ];
        let entity = (entity_kind(), offset.clone(), offset)
            .prop_map(|(kind, offset, length)| MessageEntity::new(kind, offset, length));
        (Just(text), prop::collection::vec(entity, 0..8))
    })
}

/// Whitespace as HTML treats it (runs collapse to one space), and none at the ends:
/// the changes to a text that Matrix HTML's layout and Telegram's trimming make.
fn normalised(text: &str) -> String {
    text.split([' ', '\t', '\n', '\r', '\x0C'])
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .trim()
        .to_owned()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_entities_give_well_formed_matrix_html((text, entities) in telegram_message()) {
        let (body, html) = telegram_to_matrix(&text, &entities);
        prop_assert_eq!(&body, &text);
        if let Some(html) = html {
            assert_well_formed_matrix_html(&html);
        }
    }

    #[test]
    fn any_html_gives_valid_telegram_texts_within_the_limit(html in html_soup()) {
        for chunk in matrix_to_telegram_html("body", Some(&html)) {
            parse_telegram_html(&chunk);
            prop_assert!(telegram_html_plain_len(&chunk) <= TELEGRAM_MAX_TEXT);
            prop_assert!(!chunk.is_empty());
        }
    }

    #[test]
    fn arbitrary_strings_never_panic(html in any::<String>(), text in any::<String>()) {
        let _ = matrix_to_telegram_html(&text, Some(&html));
        let _ = matrix_to_telegram_html(&html, None);
        let _ = telegram_html_plain_len(&html);
        let _ = telegram_to_matrix(&text, &[MessageEntity::bold(1, 3), MessageEntity::code(2, 9)]);
    }

    #[test]
    fn telegram_to_matrix_and_back_keeps_the_text((text, entities) in telegram_message()) {
        // As a responder's message is posted (sanitised) and would be sent on again.
        let (body, html) = telegram_to_matrix(&text, &entities);
        let html = html.map(|html| sanitise_matrix_html(&html));
        let chunks = matrix_to_telegram_html(&body, html.as_deref());
        let plain: Vec<String> = chunks.iter().map(|chunk| parse_telegram_html(chunk).0).collect();
        let blocks = entities.iter().any(|e| {
            matches!(
                e.kind,
                MessageEntityKind::Pre { .. }
                    | MessageEntityKind::Blockquote
                    | MessageEntityKind::ExpandableBlockquote
            )
        });
        if blocks {
            // A code block or quote starts and ends its own line in Matrix HTML (Telegram
            // shows it that way too), so line breaks may appear at its edges.
            let letters = |s: &str| s.split_whitespace().collect::<String>();
            prop_assert_eq!(letters(&plain.join(" ")), letters(&text), "via {:?}", html);
        } else {
            prop_assert_eq!(normalised(&plain.join(" ")), normalised(&text), "via {:?}", html);
        }
    }
}
