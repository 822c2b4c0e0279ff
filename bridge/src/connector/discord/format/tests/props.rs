//! Properties of Discord's formats on generated input (proptest).

use proptest::prelude::*;

use super::*;
use crate::format::tests::{html_soup, tricky_char};

/// Pieces of Discord markdown, and of text that only looks like it, glued in any order.
fn markdown_soup(max: usize) -> impl Strategy<Value = String> {
    let fragment = prop_oneof![
        3 => tricky_char().prop_map(String::from),
        2 => prop::sample::select(vec![
            "**", "*", "__", "_", "~~", "||", "`", "``", "```", "```rust\n", "\\", "<", ">",
            "[", "]", "(", ")", "](", "](<", ":", "//", ".", "1", "-", "+", "#", "@", "|",
            "> ", ">>> ", "# ", "## ", "-# ", "- ", "* ", "1. ", "\n", "\n\n", " ", "  ",
            "<@123>", "<@!1>", "<@&2>", "<#3>", "<:e:4>", "<a:e:5>", "</c d:6>", "<t:1:R>",
            "<t:99999999999999:F>", "https://", "http://e.example/a_b", "https://e.example/(x)",
            "[x](https://e.example/)", "<https://e.example/>", "javascript:", "mailto:a@b",
            "@everyone", "é", "😀", "\u{200D}", "\u{301}",
        ])
        .prop_map(str::to_owned),
    ];
    prop::collection::vec(fragment, 0..max).prop_map(|fragments| fragments.concat())
}

fn style() -> impl Strategy<Value = Style> {
    prop_oneof![
        Just(Style::Bold),
        Just(Style::Italic),
        Just(Style::Underline),
        Just(Style::Strikethrough),
        Just(Style::Spoiler),
        Just(Style::Code),
        Just(Style::Pre { language: None }),
        Just(Style::Pre {
            language: Some("rust".into())
        }),
        Just(Style::Pre {
            language: Some("\"><x".into())
        }),
        prop::sample::select(vec![
            "https://e.example/",
            "https://e.example/a)b(c<d>e f",
            "mailto:a@e.example",
            "javascript:x",
        ])
        .prop_map(|href| Style::Link { href: href.into() }),
        any::<bool>().prop_map(|expandable| Style::Blockquote { expandable }),
    ]
}

/// Styled text over markdown-like text, spans anywhere on char boundaries.
fn styled_text(max: usize) -> impl Strategy<Value = StyledText> {
    markdown_soup(max).prop_flat_map(|text| {
        let mut boundaries: Vec<usize> = text.char_indices().map(|(i, _)| i).collect();
        boundaries.push(text.len());
        let point = prop::sample::select(boundaries);
        let span = (style(), point.clone(), point).prop_map(|(style, a, b)| Span {
            style,
            start: a.min(b),
            end: a.max(b),
        });
        (Just(text), prop::collection::vec(span, 0..10))
            .prop_map(|(text, spans)| StyledText { text, spans }.trimmed())
    })
}

fn assert_parts_fit(parts: &[String]) {
    for part in parts {
        assert!(!part.trim().is_empty(), "empty part in {parts:?}");
        assert!(
            part.chars().count() <= DISCORD_MAX_TEXT,
            "part of {} characters",
            part.chars().count()
        );
    }
}

/// Words of a text: what survives of it whatever whitespace a split drops.
fn words(text: &str) -> Vec<&str> {
    text.split_whitespace().collect()
}

/// Spans of read text lie inside it, on char boundaries, and render as HTML.
fn assert_read_well(content: &str) {
    let styled = discord_to_styled(content, &|_| None);
    for span in &styled.spans {
        assert!(span.start < span.end && span.end <= styled.text.len());
        assert!(styled.text.is_char_boundary(span.start));
        assert!(styled.text.is_char_boundary(span.end));
    }
    let (body, html) = from_discord(content);
    assert_eq!(body, styled.text);
    assert_eq!(html.is_some(), !styled.spans.is_empty());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn reading_any_string_never_panics(content in any::<String>()) {
        assert_read_well(&content);
    }

    #[test]
    fn reading_markdown_soup_gives_spans_inside_the_text(content in markdown_soup(60)) {
        assert_read_well(&content);
    }

    #[test]
    fn plain_visitor_text_arrives_exactly_as_written(text in markdown_soup(80)) {
        let parts = to_discord(&text, None, None);
        assert_parts_fit(&parts);
        let expected = text.trim();
        if expected.is_empty() {
            prop_assert!(parts.is_empty());
        } else {
            prop_assert_eq!(parts.len(), 1);
            prop_assert_eq!(from_discord(&parts[0]).0, expected);
        }
    }

    #[test]
    fn styled_text_arrives_with_all_its_characters(styled in styled_text(60)) {
        let parts = render_discord(&styled);
        assert_parts_fit(&parts);
        let read: String = parts.iter().map(|part| from_discord(part).0).collect();
        prop_assert_eq!(read, styled.text);
    }

    #[test]
    fn any_matrix_html_gives_parts_within_the_limit(html in html_soup(), header in markdown_soup(6)) {
        let parts = to_discord("body", Some(&html), Some(&header));
        assert_parts_fit(&parts);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn long_messages_split_within_the_limit_and_lose_no_word(
        styled in styled_text(60),
        copies in 20usize..120,
    ) {
        // Long text made of the generated text, its spans repeated with it.
        let mut long = StyledText::default();
        for _ in 0..copies {
            let offset = long.text.len() + 1;
            long.text.push('\n');
            long.text.push_str(&styled.text);
            long.spans.extend(styled.spans.iter().map(|span| Span {
                start: span.start + offset,
                end: span.end + offset,
                ..span.clone()
            }));
        }
        let long = long.trimmed();
        let parts = render_discord(&long);
        assert_parts_fit(&parts);
        let read: Vec<String> = parts.iter().map(|part| from_discord(part).0).collect();
        let read = read.join("\n");
        prop_assert_eq!(words(&read), words(&long.text));
    }
}
