use super::*;

// -----------------------------------------------------------------------------------
// Matrix → Telegram: splitting
// -----------------------------------------------------------------------------------

#[test]
fn long_message_with_formatting_across_split_points_gives_valid_chunks() {
    // ~10 000 characters in paragraphs of sentences, with one bold run and one
    // link that each span several thousand characters, so splits fall inside them.
    let sentence = "The quick brown fox jumps over the lazy dog & <friends>. ";
    let mut html = String::new();
    let mut plain = String::new();
    for p in 0..20 {
        let mut paragraph = String::new();
        for _ in 0..9 {
            paragraph.push_str(sentence);
        }
        let paragraph = paragraph.trim_end().to_owned();
        let escaped = paragraph
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        let open = match p {
            3 => "<p><b>",
            11 => r#"<p><a href="https://example.org/a?b=1&amp;c=2">"#,
            _ => "<p>",
        };
        let close = match p {
            9 => "</b></p>",
            14 => "</a></p>",
            _ => "</p>",
        };
        html.push_str(&format!("{open}{escaped}{close}\n"));
        if p > 0 {
            plain.push_str("\n\n");
        }
        plain.push_str(&paragraph);
    }
    assert!(plain.chars().count() > 10_000);

    let chunks = matrix_to_telegram_html(&plain, Some(&html));
    assert_eq!(chunks.len(), 3);
    let parsed = assert_chunks_cover(&chunks, &plain, TELEGRAM_MAX_TEXT);

    // Paragraph breaks were preferred: every chunk ends with a whole sentence.
    for (text, _) in &parsed {
        assert!(
            text.ends_with("<friends>."),
            "chunk ends mid-paragraph: {:?}",
            &text[text.len() - 20..]
        );
    }
    // The bold run is closed at the end of the first chunk and reopened in the second.
    assert!(
        chunks[0].ends_with("</b>"),
        "{}",
        &chunks[0][chunks[0].len() - 30..]
    );
    assert!(chunks[1].starts_with("<b>"));
    assert!(
        parsed[1]
            .1
            .iter()
            .any(|e| e.kind == MessageEntityKind::Bold && e.offset == 0)
    );
    // And so is the link, with its href intact.
    let link = MessageEntityKind::TextLink {
        url: url("https://example.org/a?b=1&c=2"),
    };
    assert!(parsed[1].1.iter().any(|e| e.kind == link));
    assert!(parsed[2].1.iter().any(|e| e.kind == link && e.offset == 0));
}

#[test]
fn long_plain_body_splits_at_lines_then_words() {
    // Lines but no blank lines: split at a line break in the second half.
    let line = "0123456789 ".repeat(9) + "end";
    let body = vec![line.as_str(); 100].join("\n");
    let chunks = matrix_to_telegram_html(&body, None);
    let parsed = assert_chunks_cover(&chunks, &body, TELEGRAM_MAX_TEXT);
    assert!(parsed.iter().all(|(text, _)| text.ends_with("end")));

    // One long line: split between words.
    let words = "word ".repeat(2000);
    let chunks = matrix_to_telegram_html(&words, None);
    let parsed = assert_chunks_cover(&chunks, &words, TELEGRAM_MAX_TEXT);
    assert!(
        parsed
            .iter()
            .all(|(text, _)| text.ends_with("word") && text.starts_with("word"))
    );
}

#[test]
fn character_references_are_never_split() {
    let body = "&".repeat(10_000);
    let chunks = matrix_to_telegram_html(&body, None);
    assert_eq!(chunks.len(), 3);
    assert_chunks_cover(&chunks, &body, TELEGRAM_MAX_TEXT);
    assert!(
        chunks
            .iter()
            .all(|chunk| chunk.replace("&amp;", "").is_empty())
    );
    assert_eq!(telegram_html_plain_len(&chunks[0]), TELEGRAM_MAX_TEXT);
}

#[test]
fn surrogate_pairs_and_emoji_sequences_are_never_split() {
    // 3000 astral-plane emoji, 2 UTF-16 units each, no spaces.
    let body = "😀".repeat(3000);
    let chunks = matrix_to_telegram_html(&body, None);
    assert_chunks_cover(&chunks, &body, TELEGRAM_MAX_TEXT);
    assert_eq!(telegram_html_plain_len(&chunks[0]), TELEGRAM_MAX_TEXT);

    // A family emoji is 4 people joined by ZWJ (11 units); a cut is never inside it.
    let family = "👨\u{200D}👩\u{200D}👧\u{200D}👦";
    let body = family.repeat(1000);
    let chunks = matrix_to_telegram_html(&body, None);
    let parsed = assert_chunks_cover(&chunks, &body, TELEGRAM_MAX_TEXT);
    for (text, _) in parsed {
        assert_eq!(
            text.replace(family, ""),
            "",
            "chunk cut inside a ZWJ sequence"
        );
    }
}

#[test]
fn code_block_across_a_split_is_reopened_with_its_language() {
    let code: String = (0..600).map(|i| format!("let x{i} = {i};\n")).collect();
    let html = format!("<p>intro</p><pre><code class=\"language-rust\">{code}</code></pre>");
    let chunks = matrix_to_telegram_html("", Some(&html));
    assert!(chunks.len() >= 2);
    let parsed = assert_chunks_cover(
        &chunks,
        &format!("intro\n\n{}", code.trim_end()),
        TELEGRAM_MAX_TEXT,
    );
    let pre = MessageEntityKind::Pre {
        language: Some("rust".to_owned()),
    };
    for (text, entities) in &parsed[1..] {
        assert!(
            entities.iter().any(|e| e.kind == pre && e.offset == 0),
            "pre not reopened in {text:.40}"
        );
    }
}

#[test]
fn small_limits_split_styled_text_and_keep_tags_balanced() {
    // Exercise the splitter directly with a tiny limit and heavily nested styles.
    let styled = from_matrix_html(
        r#"<b>aa <i>bb <a href="https://e.example/">cc dd</a> ee</i> ff</b> gg"#,
        &TELEGRAM,
    );
    let chunks: Vec<String> = split(&styled, 5, char::len_utf16)
        .iter()
        .map(|c| render_html(c, &TelegramHtml))
        .collect();
    assert_eq!(
        chunks,
        vec![
            "<b>aa <i>bb</i></b>",
            // Styles covering the same text are written link-outermost.
            r#"<a href="https://e.example/"><b><i>cc dd</i></b></a>"#,
            "<b><i>ee</i> ff</b>",
            "gg",
        ]
    );
    assert_chunks_cover(&chunks, "aa bb cc dd ee ff gg", 5);
}

// -----------------------------------------------------------------------------------
