use super::*;

// -----------------------------------------------------------------------------------
// Matrix → Telegram: plain bodies and escaping
// -----------------------------------------------------------------------------------

#[test]
fn plain_body_is_escaped_and_kept_verbatim() {
    let chunks = matrix_to_telegram_html("a < b && c > d\n  indented \"quoted\"", None);
    assert_eq!(
        chunks,
        vec!["a &lt; b &amp;&amp; c &gt; d\n  indented \"quoted\"".to_owned()]
    );
    assert_eq!(
        parse_telegram_html(&chunks[0]).0,
        "a < b && c > d\n  indented \"quoted\""
    );
}

#[test]
fn plain_body_is_trimmed_and_empty_body_sends_nothing() {
    assert_eq!(
        matrix_to_telegram_html("\n  hello \n", None),
        vec!["hello".to_owned()]
    );
    assert!(matrix_to_telegram_html("  \n ", None).is_empty());
    assert!(matrix_to_telegram_html("", None).is_empty());
}

#[test]
fn escaped_markup_in_matrix_html_stays_escaped_text() {
    assert_eq!(
        to_telegram("&lt;b&gt;not bold&lt;/b&gt; &amp;amp;"),
        "&lt;b&gt;not bold&lt;/b&gt; &amp;amp;"
    );
}

#[test]
fn html_entities_are_decoded_to_characters() {
    assert_eq!(
        to_telegram("caf&eacute; &#x1F600; a&nbsp;b"),
        "café 😀 a\u{A0}b"
    );
}

// -----------------------------------------------------------------------------------
// Matrix → Telegram: sanitising
// -----------------------------------------------------------------------------------

#[test]
fn image_with_event_handler_produces_nothing_executable() {
    let chunks = matrix_to_telegram_html("x", Some(r#"before <img src=x onerror=alert(1)> after"#));
    assert_eq!(chunks, vec!["before after".to_owned()]);
}

#[test]
fn script_and_style_are_removed_with_their_content() {
    assert_eq!(
        to_telegram("<script>alert(1)</script>hi<style>body{color:red}</style>!"),
        "hi!"
    );
    assert_eq!(to_telegram("<svg><script>alert(1)</script></svg>ok"), "ok");
}

#[test]
fn javascript_and_other_unsafe_links_lose_their_link_but_keep_their_text() {
    for href in [
        "javascript:alert(1)",
        "JaVaScRiPt:alert(1)",
        " javascript:alert(1)",
        "java&#x09;script:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:msgbox(1)",
        "/relative/path",
        "ftp://example.org/file",
    ] {
        let html = format!(r#"<a href="{href}">click</a>"#);
        assert_eq!(to_telegram(&html), "click", "href {href:?}");
    }
}

#[test]
fn event_handlers_and_styles_are_stripped_from_kept_tags() {
    assert_eq!(
        to_telegram(
            r#"<b onclick="alert(1)" style="color:red" class="x">bold</b> <a href="https://example.org/" onmouseover="alert(1)" target="_blank">l</a>"#
        ),
        r#"<b>bold</b> <a href="https://example.org/">l</a>"#
    );
}

#[test]
fn unsupported_elements_are_unwrapped_to_their_text() {
    assert_eq!(
        to_telegram(
            r##"<font color="red">red</font> <sup>up</sup> <span data-mx-color="#ff0000">col</span> <iframe src="https://evil.example"></iframe><details><summary>s</summary>d</details>"##
        ),
        "red up col sd"
    );
}

#[test]
fn matrix_html_with_tags_left_open_still_yields_balanced_output() {
    assert_eq!(to_telegram("<b>bold <i>both"), "<b>bold <i>both</i></b>");
    assert_eq!(to_telegram("<b>a<i>b</b>c</i>"), "<b>a<i>b</i></b><i>c</i>");
}

// -----------------------------------------------------------------------------------
// Matrix → Telegram: formatting
// -----------------------------------------------------------------------------------

#[test]
fn inline_formatting_maps_to_telegram_tags() {
    assert_eq!(
        to_telegram(
            "<strong>b</strong> <b>b</b> <em>i</em> <i>i</i> <u>u</u> <ins>u</ins> <s>s</s> <del>s</del> <strike>s</strike> <code>c</code>"
        ),
        "<b>b</b> <b>b</b> <i>i</i> <i>i</i> <u>u</u> <u>u</u> <s>s</s> <s>s</s> <s>s</s> <code>c</code>"
    );
}

#[test]
fn allowed_link_schemes_are_kept_and_normalised() {
    assert_eq!(
        to_telegram(
            r#"<a href="http://a.example/?x=1&amp;y=&quot;2 3&quot;">h</a> <a href="mailto:me@example.org">m</a> <a href="tg://resolve?domain=x">t</a>"#
        ),
        r#"<a href="http://a.example/?x=1&amp;y=%222%203%22">h</a> <a href="mailto:me@example.org">m</a> <a href="tg://resolve?domain=x">t</a>"#
    );
}

#[test]
fn matrix_spoilers_become_telegram_spoilers() {
    assert_eq!(
        to_telegram("<span data-mx-spoiler>secret</span>"),
        "<tg-spoiler>secret</tg-spoiler>"
    );
    assert_eq!(
        to_telegram(r#"<span data-mx-spoiler="plot">twist</span>"#),
        "(plot) <tg-spoiler>twist</tg-spoiler>"
    );
    assert_eq!(
        to_telegram("<tg-spoiler>t</tg-spoiler>"),
        "<tg-spoiler>t</tg-spoiler>"
    );
}

#[test]
fn code_block_keeps_language_and_whitespace() {
    assert_eq!(
        to_telegram(
            "<pre><code class=\"language-rust\">fn main() {\n    println!(\"&lt;hi&gt;\");\n}\n</code></pre>"
        ),
        "<pre><code class=\"language-rust\">fn main() {\n    println!(\"&lt;hi&gt;\");\n}</code></pre>"
    );
    assert_eq!(
        to_telegram("x<pre>  a\n\n  b</pre>"),
        "x\n\n<pre>  a\n\n  b</pre>"
    );
}

#[test]
fn code_class_other_than_a_language_is_dropped() {
    assert_eq!(
        to_telegram(r#"<pre><code class="hljs">x</code></pre>"#),
        "<pre>x</pre>"
    );
    assert_eq!(
        to_telegram(r#"<pre><code class="language-&quot;onload=x">x</code></pre>"#),
        "<pre>x</pre>"
    );
    // Telegram allows no language on inline code.
    assert_eq!(
        to_telegram(r#"<code class="language-rust">x</code>"#),
        "<code>x</code>"
    );
}

#[test]
fn nesting_telegram_forbids_is_flattened_to_text() {
    assert_eq!(
        to_telegram("<code>a <b>b</b> c</code>"),
        "<code>a b c</code>"
    );
    assert_eq!(to_telegram("<pre>a <i>b</i></pre>"), "<pre>a b</pre>");
    assert_eq!(
        to_telegram(r#"<a href="https://e.example/"><code>x</code> <b>y</b></a>"#),
        r#"<a href="https://e.example/">x <b>y</b></a>"#
    );
    assert_eq!(
        to_telegram("<blockquote>outer<blockquote>inner</blockquote></blockquote>"),
        "<blockquote>outer\n\ninner</blockquote>"
    );
}

#[test]
fn bold_italic_and_code_nest_where_telegram_allows() {
    assert_eq!(
        to_telegram(
            r#"<b>bold <i>both <a href="https://e.example/">link <s>x</s></a></i> <code>c</code></b>"#
        ),
        r#"<b>bold <i>both <a href="https://e.example/">link <s>x</s></a></i> <code>c</code></b>"#
    );
}

// -----------------------------------------------------------------------------------
// Matrix → Telegram: layout
// -----------------------------------------------------------------------------------

#[test]
fn paragraphs_and_line_breaks_become_newlines() {
    assert_eq!(to_telegram("<p>one</p>\n<p>two</p>\n"), "one\n\ntwo");
    assert_eq!(to_telegram("a<br>b<br/><br />c"), "a\nb\n\nc");
    assert_eq!(to_telegram("<div>a</div><div>b</div>"), "a\nb");
}

#[test]
fn source_whitespace_collapses_like_in_a_browser() {
    assert_eq!(
        to_telegram("<p>\n   several\n   words   <b> bold </b>  end\n</p>"),
        "several words <b>bold</b> end"
    );
}

#[test]
fn a_space_after_a_no_break_space_is_kept() {
    // A no-break space is text, not collapsible whitespace (found by the property tests:
    // the space after it used to be dropped).
    assert_eq!(to_telegram("a&nbsp; b &nbsp;c"), "a\u{A0} b \u{A0}c");
}

#[test]
fn block_breaks_stay_outside_styles() {
    assert_eq!(
        to_telegram("<p>intro</p><blockquote><p>quoted</p><p>more</p></blockquote><p>after</p>"),
        "intro\n\n<blockquote>quoted\n\nmore</blockquote>\n\nafter"
    );
}

#[test]
fn unordered_lists_become_bullet_lines() {
    assert_eq!(
        to_telegram(
            "<p>Shopping:</p>\n<ul>\n<li>eggs</li>\n<li><b>milk</b></li>\n</ul>\n<p>thanks</p>"
        ),
        "Shopping:\n\n• eggs\n• <b>milk</b>\n\nthanks"
    );
}

#[test]
fn ordered_lists_are_numbered_from_their_start() {
    assert_eq!(to_telegram("<ol><li>a</li><li>b</li></ol>"), "1. a\n2. b");
    assert_eq!(
        to_telegram(r#"<ol start="7"><li>g</li><li>h</li></ol>"#),
        "7. g\n8. h"
    );
}

#[test]
fn nested_and_loose_lists_are_indented_and_kept_tight_to_their_marker() {
    assert_eq!(
        to_telegram("<ul><li>a<ol><li>a1</li><li>a2</li></ol></li><li><p>b</p></li></ul>"),
        "• a\n  1. a1\n  2. a2\n• b"
    );
}

#[test]
fn headings_become_bold_lines() {
    assert_eq!(
        to_telegram("<h1>Title</h1><p>text</p><h3>Sub <i>it</i></h3>more"),
        "<b>Title</b>\n\ntext\n\n<b>Sub <i>it</i></b>\n\nmore"
    );
}

#[test]
fn tables_become_rows_of_cells() {
    assert_eq!(
        to_telegram("<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>"),
        "k | v\na | 1"
    );
}

#[test]
fn custom_emoji_images_become_their_alt_text() {
    assert_eq!(
        to_telegram(
            r#"hi <img data-mx-emoticon src="mxc://e.example/abc" alt=":wave:" title=":wave:">"#
        ),
        "hi :wave:"
    );
}

#[test]
fn reply_fallback_is_removed_entirely() {
    let html = r##"<mx-reply><blockquote><a href="https://matrix.to/#/!room:e.example/$event">In reply to</a> <a href="https://matrix.to/#/@bob:e.example">@bob:e.example</a><br>original <b>secret</b></blockquote></mx-reply>my <b>reply</b>"##;
    let body = "> <@bob:e.example> original secret\n\nmy reply";
    assert_eq!(
        matrix_to_telegram_html(body, Some(html)),
        vec!["my <b>reply</b>".to_owned()]
    );
}

#[test]
fn body_is_used_without_its_reply_fallback_when_the_html_shows_nothing() {
    let html =
        r#"<mx-reply><blockquote>quoted</blockquote></mx-reply><img src="mxc://e.example/x">"#;
    let body = "> <@bob:e.example> quoted\n> more\n\nphoto.png";
    assert_eq!(
        matrix_to_telegram_html(body, Some(html)),
        vec!["photo.png".to_owned()]
    );
    assert_eq!(
        matrix_to_telegram_html("a > b", Some("<p> </p>")),
        vec!["a &gt; b".to_owned()]
    );
}

// -----------------------------------------------------------------------------------
