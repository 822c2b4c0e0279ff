use super::*;

// -----------------------------------------------------------------------------------
// Telegram → Matrix
// -----------------------------------------------------------------------------------

#[test]
fn text_without_formatting_entities_has_no_formatted_body() {
    let text = "hi @bob #tag $USD /start@bot me@e.example +1 555 0100 e.example";
    let entities = [
        MessageEntity::new(MessageEntityKind::Mention, 3, 4),
        MessageEntity::new(MessageEntityKind::Hashtag, 8, 4),
        MessageEntity::new(MessageEntityKind::Cashtag, 13, 4),
        MessageEntity::new(MessageEntityKind::BotCommand, 18, 10),
        MessageEntity::new(MessageEntityKind::Email, 29, 12),
        MessageEntity::new(MessageEntityKind::PhoneNumber, 42, 11),
        MessageEntity::new(MessageEntityKind::Url, 54, 9),
    ];
    assert_eq!(telegram_to_matrix(text, &entities), (text.to_owned(), None));
    assert_eq!(
        telegram_to_matrix("plain\ntext", &[]),
        ("plain\ntext".to_owned(), None)
    );
}

#[test]
fn formatting_entities_map_to_matrix_html() {
    let text = "b i u s spoiler code";
    let entities = [
        MessageEntity::bold(0, 1),
        MessageEntity::italic(2, 1),
        MessageEntity::underline(4, 1),
        MessageEntity::strikethrough(6, 1),
        MessageEntity::spoiler(8, 7),
        MessageEntity::code(16, 4),
    ];
    assert_eq!(
        formatted(text, &entities),
        "<strong>b</strong> <em>i</em> <u>u</u> <del>s</del> <span data-mx-spoiler>spoiler</span> <code>code</code>"
    );
}

#[test]
fn pre_blocks_keep_language_and_newlines() {
    let text = "see:\nfn main() {\n  x < y\n}";
    let entities = [MessageEntity::pre(Some("rust".to_owned()), 5, 21)];
    assert_eq!(
        formatted(text, &entities),
        "see:<pre><code class=\"language-rust\">fn main() {\n  x &lt; y\n}</code></pre>"
    );
    let entities = [MessageEntity::pre(None, 5, 21)];
    assert_eq!(
        formatted(text, &entities),
        "see:<pre><code>fn main() {\n  x &lt; y\n}</code></pre>"
    );
    let entities = [MessageEntity::pre(Some("\"><script>".to_owned()), 5, 21)];
    assert!(formatted(text, &entities).starts_with("see:<pre><code>fn"));
}

#[test]
fn links_and_urls_become_anchors() {
    let text = "docs and https://e.example/x?a=1&b=2";
    let entities = [
        MessageEntity::text_link(url("https://docs.example/\"q\""), 0, 4),
        MessageEntity::new(MessageEntityKind::Url, 9, 27),
    ];
    assert_eq!(
        formatted(text, &entities),
        r#"<a href="https://docs.example/%22q%22">docs</a> and <a href="https://e.example/x?a=1&amp;b=2">https://e.example/x?a=1&amp;b=2</a>"#
    );
}

#[test]
fn javascript_and_tg_links_do_not_become_matrix_links() {
    let text = "click me";
    for href in ["javascript:alert(1)", "tg://user?id=42", "data:text/html,x"] {
        let entities = [MessageEntity::text_link(url(href), 0, 8)];
        assert_eq!(
            telegram_to_matrix(text, &entities),
            (text.to_owned(), None),
            "{href}"
        );
    }
    let entities = [
        MessageEntity::text_link(url("javascript:alert(1)"), 0, 5),
        MessageEntity::bold(6, 2),
    ];
    assert_eq!(formatted(text, &entities), "click <strong>me</strong>");
}

#[test]
fn markup_in_telegram_text_is_escaped() {
    let text = "<script>alert('x')</script> & <img src=x onerror=alert(1)>";
    let entities = [MessageEntity::bold(0, 27)];
    assert_eq!(
        formatted(text, &entities),
        "<strong>&lt;script&gt;alert('x')&lt;/script&gt;</strong> &amp; &lt;img src=x onerror=alert(1)&gt;"
    );
}

#[test]
fn utf16_offsets_after_emoji_and_cjk_land_on_the_right_characters() {
    // 😀 is 2 UTF-16 units (4 bytes), 你好 are 1 unit each (3 bytes each).
    let text = "😀你好 bold 👍🏽 it";
    let entities = [
        MessageEntity::bold(5, 4),
        MessageEntity::italic(10, 4),
        MessageEntity::underline(15, 2),
    ];
    assert_eq!(
        formatted(text, &entities),
        "😀你好 <strong>bold</strong> <em>👍🏽</em> <u>it</u>"
    );
}

#[test]
fn newlines_outside_code_blocks_become_line_breaks() {
    let text = "line one\nline two\n\nquote\nmore";
    let entities = [
        MessageEntity::bold(0, 4),
        MessageEntity::new(MessageEntityKind::Blockquote, 19, 10),
    ];
    assert_eq!(
        formatted(text, &entities),
        "<strong>line</strong> one<br>line two<br><blockquote>quote<br>more</blockquote>"
    );
    let entities = [MessageEntity::new(
        MessageEntityKind::ExpandableBlockquote,
        0,
        8,
    )];
    assert_eq!(
        formatted(text, &entities),
        "<blockquote>line one</blockquote>line two<br><br>quote<br>more"
    );
}

#[test]
fn nested_entities_nest_in_html() {
    // Telegram sends `<b>bold <i>both</i> bold</b>` as two bold pieces around italic,
    // or as one bold entity containing italic; both must come out nested.
    let text = "bold both bold";
    let one = [MessageEntity::bold(0, 14), MessageEntity::italic(5, 4)];
    assert_eq!(
        formatted(text, &one),
        "<strong>bold <em>both</em> bold</strong>"
    );
    // Same range: any order is well formed; code goes innermost, the rest keep their order.
    let same_range = [
        MessageEntity::code(0, 14),
        MessageEntity::italic(0, 14),
        MessageEntity::bold(0, 14),
    ];
    assert_eq!(
        formatted(text, &same_range),
        "<em><strong><code>bold both bold</code></strong></em>"
    );
    let in_link = [
        MessageEntity::text_link(url("https://e.example/"), 0, 14),
        MessageEntity::bold(5, 4),
    ];
    assert_eq!(
        formatted(text, &in_link),
        r#"<a href="https://e.example/">bold <strong>both</strong> bold</a>"#
    );
}

#[test]
fn overlapping_entities_produce_well_formed_html() {
    let text = "abcdefgh";
    let entities = [MessageEntity::bold(0, 5), MessageEntity::italic(3, 5)];
    assert_eq!(
        formatted(text, &entities),
        "<strong>abc<em>de</em></strong><em>fgh</em>"
    );
    let entities = [
        MessageEntity::bold(0, 4),
        MessageEntity::italic(2, 4),
        MessageEntity::underline(1, 6),
        MessageEntity::strikethrough(5, 3),
    ];
    let html = formatted(text, &entities);
    assert_eq!(
        html,
        "<strong>a<u>b<em>cd</em></u></strong><u><em>e<del>f</del></em><del>g</del></u><del>h</del>"
    );
}

#[test]
fn out_of_range_offsets_are_clamped_not_trusted() {
    let text = "😀ab";
    let entities = [
        MessageEntity::bold(1, 2),     // starts inside the surrogate pair
        MessageEntity::italic(3, 100), // runs past the end
        MessageEntity::code(50, 5),    // entirely outside
        MessageEntity::underline(usize::MAX, usize::MAX),
    ];
    assert_eq!(formatted(text, &entities), "😀<strong>a</strong><em>b</em>");
}

// -----------------------------------------------------------------------------------
// Round trips
// -----------------------------------------------------------------------------------

/// Matrix HTML → Telegram HTML → (what Telegram parses it into) → Matrix HTML.
fn round_trip(html: &str) -> String {
    let telegram = to_telegram(html);
    let (text, entities) = parse_telegram_html(&telegram);
    formatted(&text, &entities)
}

#[test]
fn round_trip_keeps_bold_italic_code_pre_and_links() {
    let html = concat!(
        "<p><strong>Bold</strong>, <em>italic</em>, <code>x &lt; y</code> and ",
        r#"<a href="https://example.org/path?q=1&amp;r=2">a link</a>.</p>"#,
        "<pre><code class=\"language-python\">def f():\n    return 1\n</code></pre>",
        "<p><u>u</u> <del>s</del> <span data-mx-spoiler>sp</span></p>",
    );
    assert_eq!(
        round_trip(html),
        concat!(
            "<strong>Bold</strong>, <em>italic</em>, <code>x &lt; y</code> and ",
            r#"<a href="https://example.org/path?q=1&amp;r=2">a link</a>.<br>"#,
            "<pre><code class=\"language-python\">def f():\n    return 1</code></pre><br>",
            "<u>u</u> <del>s</del> <span data-mx-spoiler>sp</span>",
        )
    );
}

#[test]
fn round_trip_keeps_nesting_and_offsets_after_astral_characters() {
    let html = "😀 你好 <b>bold <i>both 👍</i></b> <blockquote>q <b>b</b></blockquote>";
    assert_eq!(
        round_trip(html),
        "😀 你好 <strong>bold <em>both 👍</em></strong><br><blockquote>q <strong>b</strong></blockquote>"
    );
}

#[test]
fn round_trip_from_telegram_side_is_stable() {
    // Telegram entities → Matrix HTML → Telegram HTML → entities: the same entities.
    let text = "😀 bold code\nblock\nlink";
    let entities = vec![
        MessageEntity::bold(3, 4),
        MessageEntity::code(8, 4),
        MessageEntity::pre(Some("sh".to_owned()), 13, 5),
        MessageEntity::text_link(url("https://e.example/"), 19, 4),
    ];
    let (body, html) = telegram_to_matrix(text, &entities);
    let back = matrix_to_telegram_html(&body, html.as_deref());
    assert_eq!(back.len(), 1);
    let (text_back, mut entities_back) = parse_telegram_html(&back[0]);
    // The pre block is its own paragraph on the Matrix side, so it gains blank lines.
    assert_eq!(text_back, "😀 bold code\n\nblock\n\nlink");
    entities_back.sort_by_key(|e| e.offset);
    assert_eq!(
        entities_back,
        vec![
            MessageEntity::bold(3, 4),
            MessageEntity::code(8, 4),
            MessageEntity::pre(Some("sh".to_owned()), 14, 5),
            MessageEntity::text_link(url("https://e.example/"), 21, 4),
        ]
    );
}

// -----------------------------------------------------------------------------------
