//! Tests of the Telegram formats, through the public functions, with a reference parser
//! of Telegram's HTML dialect that also checks every text we produce is one Telegram
//! accepts.

use super::*;
use crate::format::from_matrix_html;

mod generated;
mod matrix_to_telegram;
mod props;
mod splitting;
mod telegram_to_matrix;

// -----------------------------------------------------------------------------------
// Test helpers
// -----------------------------------------------------------------------------------

/// The single Telegram text for a message that fits in one chunk.
fn to_telegram(html: &str) -> String {
    let chunks = matrix_to_telegram_html("fallback body", Some(html));
    assert_eq!(chunks.len(), 1, "expected one chunk, got {chunks:?}");
    let chunk = chunks.into_iter().next().expect("one chunk");
    parse_telegram_html(&chunk);
    chunk
}

/// What Telegram does with a `parse_mode = HTML` text: plain text plus entities
/// (UTF-16 offsets). Panics on anything Telegram would reject — an unknown tag,
/// an unescaped `<`, `>` or `&`, an unsupported named entity, unbalanced or crossed
/// tags — so it doubles as a validity check for every chunk we produce.
fn parse_telegram_html(html: &str) -> (String, Vec<MessageEntity>) {
    assert_escaped(html);
    let mut text = String::new();
    let mut units = 0;
    let mut entities = Vec::new();
    // (tag name, entity kind if any, start offset)
    let mut stack: Vec<(String, Option<MessageEntityKind>, usize)> = Vec::new();
    for token in html_tokens(html) {
        match token {
            HtmlToken::Text(t) => {
                units += utf16_len(&t);
                text.push_str(&t);
            }
            HtmlToken::Start { name, attrs } => {
                let attr = |key: &str| attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
                let kind = match name.as_str() {
                    "b" | "strong" => MessageEntityKind::Bold,
                    "i" | "em" => MessageEntityKind::Italic,
                    "u" | "ins" => MessageEntityKind::Underline,
                    "s" | "strike" | "del" => MessageEntityKind::Strikethrough,
                    "tg-spoiler" => MessageEntityKind::Spoiler,
                    "a" => {
                        let href = attr("href").expect("a without href");
                        let url = ammonia::Url::parse(&href).expect("absolute link");
                        assert!(
                            TELEGRAM_LINK_SCHEMES.contains(&url.scheme()),
                            "scheme of {href}"
                        );
                        MessageEntityKind::TextLink { url }
                    }
                    "blockquote" if attr("expandable").is_some() => {
                        MessageEntityKind::ExpandableBlockquote
                    }
                    "blockquote" => MessageEntityKind::Blockquote,
                    "pre" => MessageEntityKind::Pre { language: None },
                    "code" => {
                        let in_pre = matches!(stack.last(), Some((n, _, start)) if n == "pre" && *start == units);
                        if in_pre {
                            let language = attr("class")
                                .and_then(|c| c.strip_prefix("language-").map(str::to_owned));
                            if let Some((_, Some(MessageEntityKind::Pre { language: l }), _)) =
                                stack.last_mut()
                            {
                                *l = language;
                            }
                            stack.push((name, None, units));
                            continue;
                        }
                        MessageEntityKind::Code
                    }
                    other => panic!("Telegram does not support <{other}> in {html:?}"),
                };
                stack.push((name, Some(kind), units));
            }
            HtmlToken::End { name } => {
                let (open, kind, start) = stack
                    .pop()
                    .unwrap_or_else(|| panic!("stray </{name}> in {html:?}"));
                assert_eq!(open, name, "crossed tags in {html:?}");
                if let Some(kind) = kind
                    && units > start
                {
                    entities.push(MessageEntity::new(kind, start, units - start));
                }
            }
        }
    }
    assert!(stack.is_empty(), "unclosed tags {stack:?} in {html:?}");
    (text, entities)
}

/// Every `&` starts a reference Telegram knows (the four named ones, or numeric), every
/// `<` starts a tag and every `>` ends one: text characters are all escaped.
fn assert_escaped(html: &str) {
    let mut rest = html;
    while let Some(amp) = rest.find('&') {
        rest = &rest[amp + 1..];
        let end = rest
            .find(';')
            .unwrap_or_else(|| panic!("unterminated & in {html:?}"));
        let name = &rest[..end];
        let numeric = name.strip_prefix('#').is_some_and(|n| {
            n.parse::<u32>().is_ok()
                || n.strip_prefix('x')
                    .is_some_and(|h| u32::from_str_radix(h, 16).is_ok())
        });
        assert!(
            matches!(name, "lt" | "gt" | "amp" | "quot") || numeric,
            "&{name}; in {html:?}"
        );
    }
    let mut in_tag = false;
    for (i, c) in html.char_indices() {
        match c {
            '<' => {
                assert!(!in_tag, "< inside a tag in {html:?}");
                let next = html[i + 1..].trim_start_matches('/');
                assert!(
                    next.starts_with(|c: char| c.is_ascii_alphabetic()),
                    "bare < in {html:?}"
                );
                in_tag = true;
            }
            '>' => {
                assert!(in_tag, "bare > in {html:?}");
                in_tag = false;
            }
            _ => {}
        }
    }
    assert!(!in_tag, "unterminated tag in {html:?}");
}

/// Checks that Matrix HTML we produced is well formed and uses only the elements and
/// attributes we mean to write.
fn assert_well_formed_matrix_html(html: &str) {
    assert_escaped(html);
    let mut stack = Vec::new();
    for token in html_tokens(html) {
        match token {
            HtmlToken::Text(_) => {}
            HtmlToken::Start { name, attrs } => {
                let allowed: &[&str] = match name.as_str() {
                    "a" => &["href"],
                    "code" => &["class"],
                    "span" => &["data-mx-spoiler"],
                    "strong" | "em" | "u" | "del" | "pre" | "blockquote" | "br" => &[],
                    other => panic!("unexpected <{other}> in {html:?}"),
                };
                for (key, _) in &attrs {
                    assert!(
                        allowed.contains(&key.as_str()),
                        "attribute {key} on <{name}> in {html:?}"
                    );
                }
                if name != "br" {
                    stack.push(name);
                }
            }
            HtmlToken::End { name } => {
                assert_eq!(stack.pop(), Some(name), "crossed tags in {html:?}")
            }
        }
    }
    assert!(stack.is_empty(), "unclosed {stack:?} in {html:?}");
}

/// Asserts every chunk is valid and within `max`, and that the chunks' plain texts
/// are `plain` in order with only whitespace dropped between them. Returns the
/// parsed chunks.
fn assert_chunks_cover(
    chunks: &[String],
    plain: &str,
    max: usize,
) -> Vec<(String, Vec<MessageEntity>)> {
    let mut rest = plain.trim();
    let parsed: Vec<_> = chunks
        .iter()
        .map(|chunk| parse_telegram_html(chunk))
        .collect();
    for (chunk, (text, _)) in chunks.iter().zip(&parsed) {
        assert!(!text.is_empty(), "empty chunk");
        assert_eq!(telegram_html_plain_len(chunk), utf16_len(text));
        assert!(
            telegram_html_plain_len(chunk) <= max,
            "chunk of {} units",
            telegram_html_plain_len(chunk)
        );
        assert_eq!(text.trim(), text, "chunks are trimmed");
        rest = rest
            .strip_prefix(text.as_str())
            .unwrap_or_else(|| panic!("chunk {text:?} out of order"));
        rest = rest.trim_start();
    }
    assert_eq!(rest, "", "all text is covered");
    parsed
}

fn url(s: &str) -> ammonia::Url {
    ammonia::Url::parse(s).expect("test URL")
}

fn formatted(text: &str, entities: &[MessageEntity]) -> String {
    let (body, html) = telegram_to_matrix(text, entities);
    assert_eq!(body, text, "body is the plain text unchanged");
    let html = html.expect("formatting expected");
    assert_well_formed_matrix_html(&html);
    html
}

// Plain length and tokenizer
// -----------------------------------------------------------------------------------

#[test]
fn plain_len_counts_utf16_units_of_the_displayed_text() {
    assert_eq!(
        telegram_html_plain_len("<b>bold</b> &lt;&gt;&amp;&quot;"),
        9
    );
    assert_eq!(
        telegram_html_plain_len("<a href=\"https://e.example/\">😀</a>"),
        2
    );
    assert_eq!(telegram_html_plain_len("&#128512;&#x4F60;"), 3);
    assert_eq!(
        telegram_html_plain_len("<pre><code class=\"language-rust\">a\nb</code></pre>"),
        3
    );
    assert_eq!(telegram_html_plain_len(""), 0);
}
