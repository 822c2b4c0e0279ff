//! Tests of Discord's formats through the public functions: what a responder sees of a
//! visitor's message, what a visitor sees of a responder's reply.

use super::*;

mod props;

/// The single Discord message for a Matrix message that fits in one.
fn discord(html: &str) -> String {
    let parts = to_discord("fallback body", Some(html), None);
    assert_eq!(parts.len(), 1, "expected one part, got {parts:?}");
    parts.into_iter().next().expect("one part")
}

/// The single Discord message for a plain-text Matrix message.
fn discord_plain(body: &str) -> String {
    let parts = to_discord(body, None, None);
    assert_eq!(parts.len(), 1, "expected one part, got {parts:?}");
    parts.into_iter().next().expect("one part")
}

/// The Matrix HTML of a Discord message that has formatting.
fn matrix_html(content: &str) -> String {
    from_discord(content).1.expect("formatting expected")
}

fn body(content: &str) -> String {
    from_discord(content).0
}

// Matrix → Discord
// -----------------------------------------------------------------------------------

#[test]
fn inline_styles_are_written_as_discord_markdown() {
    assert_eq!(
        discord(
            "<strong>b</strong> <em>i</em> <u>u</u> <del>s</del> \
             <span data-mx-spoiler>x</span> <code>c</code>"
        ),
        "**b** *i* __u__ ~~s~~ ||x|| `c`"
    );
}

#[test]
fn nested_styles_stay_nested_and_spaces_stay_outside_the_markers() {
    assert_eq!(
        discord("<strong>bold <em>both</em></strong>"),
        "**bold *both***"
    );
    assert_eq!(discord("<strong><em>both</em></strong>"), "***both***");
    assert_eq!(discord("a<strong> spaced </strong>b"), "a **spaced** b");
}

#[test]
fn code_with_a_backtick_gets_a_double_fence() {
    assert_eq!(discord("<code>a`b</code>"), "``a`b``");
    assert_eq!(discord("<code>`edge`</code>"), "`` `edge` ``");
    assert_eq!(body("`` `edge` ``"), "`edge`");
    // A run of backticks cannot be fenced without starting a code block: sent as text.
    assert_eq!(discord("<code>a``b</code>"), "a\\`\\`b");
}

#[test]
fn code_blocks_keep_a_checked_language() {
    assert_eq!(
        discord("<pre><code class=\"language-rust\">fn main() {\n    *x = 1;\n}\n</code></pre>"),
        "```rust\nfn main() {\n    *x = 1;\n}\n```"
    );
    assert_eq!(
        discord("<pre><code class=\"language-&lt;x&gt;\">plain</code></pre>"),
        "```\nplain\n```"
    );
    // Nothing can escape ``` inside a code block: the block is sent as text.
    assert_eq!(discord("<pre>a ``` b</pre>"), "a \\`\\`\\` b");
}

#[test]
fn quotes_mark_every_line() {
    assert_eq!(
        discord("<blockquote>a<br>b <em>c</em></blockquote>after"),
        "> a\n> b *c*\n\nafter"
    );
    // Discord quotes cannot hold a code block: its text is quoted instead.
    assert_eq!(
        discord("<blockquote><pre>x = 1</pre></blockquote>"),
        "> x = 1"
    );
}

#[test]
fn links_are_masked_for_http_only_and_urls_are_written_in_angle_brackets() {
    assert_eq!(
        discord("<a href=\"https://e.example/a_(b)\">the site</a>"),
        "[the site](<https://e.example/a_(b)>)"
    );
    assert_eq!(
        discord("<a href=\"https://e.example/\">https://e.example/</a>"),
        "<https://e.example/>"
    );
    // Text that looks like another link is never masked.
    assert_eq!(
        discord("<a href=\"https://evil.example/\">https://bank.example/</a>"),
        "<https://bank.example/>"
    );
    assert_eq!(
        discord("<a href=\"mailto:a@e.example\">mail us</a>"),
        "mail us"
    );
    assert_eq!(
        discord_plain("see https://e.example/x_y, then"),
        "see <https://e.example/x_y>, then"
    );
}

#[test]
fn headings_and_lists_use_the_shared_layout() {
    assert_eq!(
        discord(
            "<h1>Title</h1><ul><li>one</li><li>two</li></ul><ol start=\"3\"><li>three</li></ol>"
        ),
        "**Title**\n\n• one\n• two\n\n3\\. three"
    );
}

#[test]
fn a_header_heads_the_first_part_only() {
    assert_eq!(
        to_discord("hi *there*", None, Some("Visitor 7F3A:")),
        vec!["**Visitor 7F3A:**\nhi \\*there\\*".to_owned()]
    );
    let long = "word ".repeat(900);
    let parts = to_discord(&long, None, Some("Visitor 7F3A:"));
    assert_eq!(parts.len(), 3);
    assert!(parts[0].starts_with("**Visitor 7F3A:**\nword"));
    assert!(parts[1..].iter().all(|part| !part.contains("Visitor")));
    assert_eq!(
        to_discord("  ", None, Some("Visitor 7F3A:")),
        vec!["**Visitor 7F3A:**"]
    );
    assert!(to_discord(" \n ", None, None).is_empty());
}

#[test]
fn visitor_text_shows_exactly_as_written() {
    let text = "**not bold** [x](http://evil) @everyone <@123> # no\n- no\n> no\n1. no\n-# no\n>>> no __u__ ~~s~~ ||sp|| `c` \\ _i_";
    let sent = discord_plain(text);
    assert_eq!(
        sent,
        "\\*\\*not bold\\*\\* \\[x\\](<http://evil>) @everyone \\<@123\\> \\# no\n\\- no\n\\> no\n1\\. no\n\\-\\# no\n\\>\\>\\> no \\_\\_u\\_\\_ \\~\\~s\\~\\~ \\|\\|sp\\|\\| \\`c\\` \\\\ \\_i\\_"
    );
    let (read, html) = from_discord(&sent);
    assert_eq!(read, text);
    // The only formatting is the link the visitor wrote out, shown as written.
    assert_eq!(
        html.as_deref(),
        Some(
            "**not bold** [x](<a href=\"http://evil/\">http://evil</a>) @everyone &lt;@123&gt; # no<br>- no<br>&gt; no<br>1. no<br>-# no<br>&gt;&gt;&gt; no __u__ ~~s~~ ||sp|| `c` \\ _i_"
        )
    );
}

#[test]
fn a_scheme_that_is_not_a_link_is_not_made_one() {
    // Too short for Discord to link: the `:` is escaped so it cannot become one.
    assert_eq!(discord_plain("https://a) x"), "https\\://a) x");
    assert_eq!(body("https\\://a) x"), "https://a) x");
}

#[test]
fn a_long_styled_message_is_split_into_valid_parts() {
    let words: String = (0..1250).map(|i| format!("w{i:04} ")).collect();
    let html = format!("<p><strong>{words}</strong></p><p><em>*{words}</em></p>");
    let parts = to_discord("", Some(&html), None);
    assert!(parts.len() >= 6, "{} parts", parts.len());
    let mut read = String::new();
    for part in &parts {
        assert!(part.chars().count() <= DISCORD_MAX_TEXT);
        assert!(part.starts_with('*') && part.ends_with('*'), "{part:.40}…");
        let (text, html) = from_discord(part);
        assert!(html.is_some_and(|html| html.starts_with("<strong>") || html.starts_with("<em>")));
        read.push_str(&text);
        read.push(' ');
    }
    let expected = format!("{words}\n\n*{words}");
    assert_eq!(
        read.split_whitespace().collect::<Vec<_>>(),
        expected.split_whitespace().collect::<Vec<_>>()
    );
}

#[test]
fn markup_counts_against_the_limit() {
    // Every character doubles when escaped.
    let parts = to_discord(&"*".repeat(5000), None, None);
    assert_eq!(parts.len(), 5);
    assert!(
        parts
            .iter()
            .all(|part| part.chars().count() <= DISCORD_MAX_TEXT)
    );
    assert_eq!(
        parts.iter().map(|part| body(part)).collect::<String>(),
        "*".repeat(5000)
    );
}

// Discord → Matrix
// -----------------------------------------------------------------------------------

#[test]
fn inline_markdown_becomes_matrix_html() {
    assert_eq!(
        from_discord("**b** *i* _i_ __u__ ~~s~~ ||sp|| `c`"),
        (
            "b i i u s sp c".to_owned(),
            Some(
                "<strong>b</strong> <em>i</em> <em>i</em> <u>u</u> <del>s</del> \
                 <span data-mx-spoiler>sp</span> <code>c</code>"
                    .to_owned()
            )
        )
    );
    assert_eq!(body("***both***"), "both");
    let html = matrix_html("***both***");
    assert!(html.contains("<strong>") && html.contains("<em>"), "{html}");
    assert_eq!(matrix_html("__*u and i*__"), "<u><em>u and i</em></u>");
}

#[test]
fn emphasis_follows_discords_rules_not_commonmark() {
    // No closing `*` after a space; no `_` emphasis inside a word.
    assert_eq!(from_discord("*a *").1, None);
    assert_eq!(from_discord("snake_case_name").1, None);
    assert_eq!(body("2 * 3 * 4"), "2 * 3 * 4");
    // HTML and entity references are text.
    assert_eq!(
        from_discord("<b>x</b> &amp;"),
        ("<b>x</b> &amp;".to_owned(), None)
    );
}

#[test]
fn code_blocks_keep_their_language_and_their_text() {
    assert_eq!(
        from_discord("look:\n```rust\nfn main() { **x** }\n```\ndone"),
        (
            "look:\nfn main() { **x** }\ndone".to_owned(),
            Some(
                "look:<pre><code class=\"language-rust\">fn main() { **x** }</code></pre>done"
                    .to_owned()
            )
        )
    );
    assert_eq!(
        matrix_html("```\nno language\n```"),
        "<pre><code>no language</code></pre>"
    );
    assert_eq!(body("a ```inline``` b"), "a \ninline\n b");
    assert_eq!(from_discord("``` unclosed").1, None);
}

#[test]
fn quotes_become_blockquotes() {
    assert_eq!(
        from_discord("> a\n> **b**\nc"),
        (
            "a\nb\nc".to_owned(),
            Some("<blockquote>a<br><strong>b</strong></blockquote>c".to_owned())
        )
    );
    assert_eq!(
        from_discord("x\n>>> a\n> b\nc"),
        (
            "x\na\n> b\nc".to_owned(),
            Some("x<blockquote>a<br>&gt; b<br>c</blockquote>".to_owned())
        )
    );
    assert_eq!(from_discord(">no space").1, None);
}

#[test]
fn links_masked_angled_and_bare_are_read_for_http_only() {
    assert_eq!(
        from_discord("[site](https://e.example/x) <https://f.example> https://g.example/y."),
        (
            "site https://f.example https://g.example/y.".to_owned(),
            Some(
                "<a href=\"https://e.example/x\">site</a> <a href=\"https://f.example/\">https://f.example</a> \
                 <a href=\"https://g.example/y\">https://g.example/y</a>."
                    .to_owned()
            )
        )
    );
    assert_eq!(
        matrix_html("[**bold** site](<https://e.example/a>)"),
        "<a href=\"https://e.example/a\"><strong>bold</strong> site</a>"
    );
    assert_eq!(
        from_discord("[x](javascript:alert(1)) [y](tg://z)"),
        ("[x](javascript:alert(1)) [y](tg://z)".to_owned(), None)
    );
}

#[test]
fn line_start_syntax_is_read() {
    assert_eq!(
        from_discord("# Title\n## Sub\n#### not\n-# small\n- a\n* b\n  + c\n3. d\n-no"),
        (
            "Title\nSub\n#### not\nsmall\n• a\n• b\n  • c\n3. d\n-no".to_owned(),
            Some(
                "<strong>Title</strong><br><strong>Sub</strong><br>#### not<br>small<br>• a<br>• b<br>  • c<br>3. d<br>-no"
                    .to_owned()
            )
        )
    );
}

#[test]
fn escapes_are_resolved() {
    assert_eq!(
        from_discord("\\*not\\* \\_x\\_ \\\\ \\a \\<@1\\>"),
        ("*not* _x_ \\ \\a <@1>".to_owned(), None)
    );
}

#[test]
fn mentions_and_emoji_become_readable_text_without_ids() {
    let content =
        "<@123> <@!456> <@&7> <#8> <:blob:9> <a:wave:10> </ask sub:11> <t:1700000000:R> <@x>";
    let (text, html) = from_discord(content);
    assert_eq!(
        text,
        "@user @user @role #channel :blob: :wave: /ask sub 2023-11-14 22:13 UTC <@x>"
    );
    assert_eq!(html, None);
    let names = |mention: &Mention<'_>| match mention {
        Mention::User(123) => Some("@Alice".to_owned()),
        _ => None,
    };
    assert_eq!(
        from_discord_with_names("hi <@123>, <@124>", &names).0,
        "hi @Alice, @user"
    );
}

#[test]
fn styles_discord_would_misread_give_way_and_the_text_still_arrives() {
    // `*a***b**` would show a stray `**`: the italic is written with underscores.
    assert_eq!(discord("<em>a</em><strong>b</strong>"), "_a_**b**");
    assert_eq!(discord("<em>a<strong>b</strong></em>"), "*a**b***");
    // A code span holding `**` inside bold: the bold would close inside it.
    let sent = discord("<strong>x <code>a**b</code></strong>");
    assert_eq!(body(&sent), "x a**b");
    assert!(matrix_html(&sent).contains("<code>a**b</code>"));
}

#[test]
fn hostile_markdown_is_read_in_reasonable_time() {
    let started = std::time::Instant::now();
    for content in ["*".repeat(4000), "**a".repeat(1300), "*_~|`[".repeat(700)] {
        let (text, _) = from_discord(&content);
        assert!(!text.is_empty());
    }
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}

#[test]
fn a_long_message_is_written_in_reasonable_time() {
    let started = std::time::Instant::now();
    let html = format!("<p>{}</p>", "<strong>word</strong> *x* ".repeat(4000));
    let parts = to_discord("", Some(&html), None);
    assert!(parts.len() > 20);
    assert!(started.elapsed() < std::time::Duration::from_secs(5));
}
