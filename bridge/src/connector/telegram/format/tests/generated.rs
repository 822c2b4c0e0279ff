use super::*;

// -----------------------------------------------------------------------------------
// Generated inputs
// -----------------------------------------------------------------------------------

/// A small deterministic generator (xorshift), so these tests need no extra crate
/// and fail the same way every run.
struct Xorshift(u64);

impl Xorshift {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[test]
fn generated_matrix_html_always_gives_valid_covering_chunks() {
    // Fragments mixing every element we handle, broken markup, references, astral
    // characters and whitespace; documents are random sequences of them.
    const FRAGMENTS: &[&str] = &[
        "<b>",
        "</b>",
        "<i>",
        "</i>",
        "<u>",
        "</u>",
        "<del>",
        "</del>",
        "<code>",
        "</code>",
        "<pre>",
        "</pre>",
        "<pre><code class=\"language-rust\">",
        "</code></pre>",
        "<a href=\"https://e.example/?a=1&amp;b=2\">",
        "<a href=\"javascript:alert(1)\">",
        "</a>",
        "<blockquote>",
        "</blockquote>",
        "<span data-mx-spoiler>",
        "</span>",
        "<p>",
        "</p>",
        "<br>",
        "<hr>",
        "<ul>",
        "<ol start=\"3\">",
        "<li>",
        "</li>",
        "</ul>",
        "</ol>",
        "<h2>",
        "</h2>",
        "<mx-reply>",
        "</mx-reply>",
        "<script>",
        "</script>",
        "<img src=x onerror=alert(1)>",
        "<table><tr><td>",
        "</td><td>",
        "</td></tr></table>",
        "<b",
        "</",
        "<",
        ">",
        "&",
        "&amp;",
        "&lt;",
        "&#128512;",
        "&bogus;",
        "word ",
        "longerword",
        " ",
        "\n",
        "\n\n",
        "  \t",
        "😀",
        "👨\u{200D}👩\u{200D}👧",
        "你好",
        "e\u{301}",
        "\u{A0}",
    ];
    let mut rng = Xorshift(0x5eed_cafe_f00d_1234);
    for _ in 0..400 {
        let len = 1 + rng.below(60);
        let html: String = (0..len)
            .map(|_| FRAGMENTS[rng.below(FRAGMENTS.len())])
            .collect();
        let styled = from_matrix_html(&html, &TELEGRAM).trimmed();
        let whole = render_html(&styled, &TelegramHtml);
        let (plain, _) = parse_telegram_html(&whole);
        assert_eq!(plain, styled.text, "for {html:?}");
        for max in [7, 23, 64] {
            let chunks: Vec<String> = split(&styled, max, char::len_utf16)
                .iter()
                .map(|chunk| render_html(chunk, &TelegramHtml))
                .collect();
            assert_chunks_cover(&chunks, &plain, max);
        }
        // And the public function never panics and never emits an invalid chunk.
        for chunk in matrix_to_telegram_html("body", Some(&html)) {
            parse_telegram_html(&chunk);
            assert!(
                !chunk.contains("script") && !chunk.contains("onerror"),
                "{chunk:?}"
            );
        }
    }
}

#[test]
fn generated_telegram_entities_always_give_well_formed_matrix_html() {
    let text = "a😀b 你好\nc <d> & e\nfgh ijk";
    let units = utf16_len(text);
    let mut rng = Xorshift(0x1234_5678_9abc_def1);
    for _ in 0..500 {
        let entities: Vec<MessageEntity> = (0..1 + rng.below(6))
            .map(|_| {
                let kind = match rng.below(9) {
                    0 => MessageEntityKind::Bold,
                    1 => MessageEntityKind::Italic,
                    2 => MessageEntityKind::Code,
                    3 => MessageEntityKind::Pre {
                        language: Some("c++".to_owned()),
                    },
                    4 => MessageEntityKind::Blockquote,
                    5 => MessageEntityKind::Spoiler,
                    6 => MessageEntityKind::TextLink {
                        url: url("https://e.example/"),
                    },
                    7 => MessageEntityKind::Mention,
                    _ => MessageEntityKind::Strikethrough,
                };
                MessageEntity::new(kind, rng.below(units + 2), rng.below(units + 2))
            })
            .collect();
        let (body, html) = telegram_to_matrix(text, &entities);
        assert_eq!(body, text);
        if let Some(html) = html {
            assert_well_formed_matrix_html(&html);
            // The visible text survives: strip the tags and it reads the same.
            let visible: String = html_tokens(&html.replace("<br>", "\n"))
                .into_iter()
                .filter_map(|t| match t {
                    HtmlToken::Text(t) => Some(t),
                    _ => None,
                })
                .collect();
            assert_eq!(
                visible.replace('\n', ""),
                text.replace('\n', ""),
                "{entities:?}"
            );
        }
    }
}

#[test]
fn deeply_nested_and_very_long_input_is_handled() {
    // A Matrix event is at most 64 KiB; fill it with nesting, then with tiny elements.
    let nested = format!("{}x{}", "<b><i>".repeat(4000), "</i></b>".repeat(4000));
    assert_eq!(
        matrix_to_telegram_html("x", Some(&nested)),
        vec!["<b><i>".repeat(4000) + "x" + &"</i></b>".repeat(4000)]
    );
    let many = "<pre>a</pre><blockquote>b</blockquote><b>c</b> ".repeat(1300);
    let chunks = matrix_to_telegram_html("x", Some(&many));
    assert!(chunks.len() > 1);
    for chunk in &chunks {
        parse_telegram_html(chunk);
        assert!(telegram_html_plain_len(chunk) <= TELEGRAM_MAX_TEXT);
    }
}

// -----------------------------------------------------------------------------------
