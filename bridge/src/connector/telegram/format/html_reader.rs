//! A reader for Telegram's HTML dialect (`parse_mode = HTML`).
//!
//! Hand-written on purpose: Telegram's parser is not an HTML5 parser, so html5ever's
//! tokenizer (which reads Matrix HTML in `crate::format::matrix_html`) would count a
//! Telegram text differently. Telegram knows four named character references (`&lt;`,
//! `&gt;`, `&amp;`, `&quot;`) plus numeric ones, while HTML5 decodes over two thousand
//! names, some even without their `;`; HTML5 also turns every `\r\n` and `\r` into
//! `\n` before anything else, which changes a text's length. Telegram texts are what we
//! wrote ourselves, so this small reader is enough.

/// One piece of simple HTML, with character references already decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HtmlToken {
    Text(String),
    /// Element and attribute names are lower-cased; a valueless attribute has value "".
    Start {
        name: String,
        attrs: Vec<(String, String)>,
    },
    End {
        name: String,
    },
}

/// Tokenizes Telegram HTML (which we wrote ourselves). It is not a general HTML parser
/// and does not need to be: anything it does not recognise as a tag is kept as text.
pub fn html_tokens(html: &str) -> Vec<HtmlToken> {
    let mut tokens = Vec::new();
    let mut text = String::new();
    let mut rest = html;
    while let Some(lt) = rest.find('<') {
        decode_references(&rest[..lt], &mut text);
        rest = &rest[lt..];
        match parse_tag(rest) {
            Some((token, len)) => {
                if !text.is_empty() {
                    tokens.push(HtmlToken::Text(std::mem::take(&mut text)));
                }
                if let Some(token) = token {
                    tokens.push(token);
                }
                rest = &rest[len..];
            }
            None => {
                text.push('<');
                rest = &rest[1..];
            }
        }
    }
    decode_references(rest, &mut text);
    if !text.is_empty() {
        tokens.push(HtmlToken::Text(text));
    }
    tokens
}

/// Parses the tag at the start of `input` (which starts with `<`). Returns the token
/// (`None` for a comment) and the number of bytes consumed, or `None` if it is not a tag.
fn parse_tag(input: &str) -> Option<(Option<HtmlToken>, usize)> {
    if let Some(comment) = input.strip_prefix("<!--") {
        let end = comment.find("-->").map_or(input.len(), |i| 4 + i + 3);
        return Some((None, end));
    }
    let (closing, body) = match input[1..].strip_prefix('/') {
        Some(body) => (true, body),
        None => (false, &input[1..]),
    };
    if !body.starts_with(|c: char| c.is_ascii_alphabetic()) {
        return None;
    }
    let name_len = body
        .find(|c: char| c.is_whitespace() || c == '/' || c == '>')
        .unwrap_or(body.len());
    let name = body[..name_len].to_ascii_lowercase();
    let mut rest = &body[name_len..];
    let mut attrs = Vec::new();
    loop {
        rest = rest.trim_start();
        if let Some(after) = rest.strip_prefix('>') {
            rest = after;
            break;
        }
        if let Some(after) = rest.strip_prefix("/>") {
            rest = after;
            break;
        }
        if let Some(after) = rest.strip_prefix('/') {
            rest = after;
            continue;
        }
        if rest.is_empty() {
            return None;
        }
        let key_len = rest
            .find(|c: char| c.is_whitespace() || matches!(c, '=' | '>' | '/'))
            .unwrap_or(rest.len());
        let key = rest[..key_len].to_ascii_lowercase();
        rest = rest[key_len..].trim_start();
        let mut value = String::new();
        if let Some(after) = rest.strip_prefix('=') {
            rest = after.trim_start();
            let raw = match rest.chars().next() {
                Some(quote @ ('"' | '\'')) => {
                    let close = rest[1..].find(quote)?;
                    let raw = &rest[1..1 + close];
                    rest = &rest[close + 2..];
                    raw
                }
                _ => {
                    let len = rest
                        .find(|c: char| c.is_whitespace() || c == '>')
                        .unwrap_or(rest.len());
                    let raw = &rest[..len];
                    rest = &rest[len..];
                    raw
                }
            };
            decode_references(raw, &mut value);
        }
        attrs.push((key, value));
    }
    let consumed = input.len() - rest.len();
    let token = if closing {
        HtmlToken::End { name }
    } else {
        HtmlToken::Start { name, attrs }
    };
    Some((Some(token), consumed))
}

/// Appends `raw` to `out` with character references decoded: the named ones ammonia and
/// Telegram use, and numeric ones. Anything else is left as written.
fn decode_references(raw: &str, out: &mut String) {
    let mut rest = raw;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        rest = &rest[amp..];
        let decoded = rest[1..].find(';').filter(|&i| i <= 10).and_then(|i| {
            let name = &rest[1..1 + i];
            let c = match name {
                "amp" => Some('&'),
                "lt" => Some('<'),
                "gt" => Some('>'),
                "quot" => Some('"'),
                "apos" => Some('\''),
                "nbsp" => Some('\u{A0}'),
                _ => name.strip_prefix('#').and_then(|number| {
                    let code = match number.strip_prefix(['x', 'X']) {
                        Some(hex) => u32::from_str_radix(hex, 16).ok(),
                        None => number.parse().ok(),
                    };
                    code.and_then(char::from_u32)
                }),
            };
            c.map(|c| (c, i + 2))
        });
        match decoded {
            Some((c, len)) => {
                out.push(c);
                rest = &rest[len..];
            }
            None => {
                out.push('&');
                rest = &rest[1..];
            }
        }
    }
    out.push_str(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokenizer_reads_attributes_and_keeps_stray_brackets_as_text() {
        assert_eq!(
            html_tokens(r#"<A HREF="x&amp;y" data-x='1' flag>t</a> 1 < 2 <3"#),
            vec![
                HtmlToken::Start {
                    name: "a".into(),
                    attrs: vec![
                        ("href".into(), "x&y".into()),
                        ("data-x".into(), "1".into()),
                        ("flag".into(), "".into())
                    ],
                },
                HtmlToken::Text("t".into()),
                HtmlToken::End { name: "a".into() },
                HtmlToken::Text(" 1 < 2 <3".into()),
            ]
        );
    }
}
