//! `parse_mode=HTML`, as "Formatting options" documents it and with the error messages the
//! real server gives (they come from TDLib's HTML parser and name byte offsets in the input).
//!
//! Supported: `b`/`strong`, `i`/`em`, `u`/`ins`, `s`/`strike`/`del`, `span class="tg-spoiler"`,
//! `tg-spoiler`, `a href`, `code`, `pre` (with a nested `code class="language-x"`),
//! `blockquote` (optionally `expandable`), `tg-emoji emoji-id`. Only `&lt; &gt; &amp; &quot;`
//! and numeric character references are decoded; any other `&...` stays as written.

use crate::text::{Entity, Formatted, TextBuilder, UserLookup};

const SUPPORTED_TAGS: &[&str] = &[
    "a",
    "b",
    "strong",
    "i",
    "em",
    "s",
    "strike",
    "del",
    "u",
    "ins",
    "tg-spoiler",
    "tg-emoji",
    "span",
    "pre",
    "code",
    "blockquote",
];

/// An open tag waiting for its end tag.
struct Open {
    tag: String,
    /// UTF-16 position in the output where the entity starts.
    start: usize,
    /// The one attribute that matters for this tag (href, class, emoji-id, expandable).
    argument: Option<String>,
    /// Set on a `pre` by a `code class="language-x"` directly inside it.
    language: Option<String>,
}

/// Parses HTML-styled text into plain text and entities. The error is the detail that follows
/// `Bad Request: can't parse entities: `.
pub(crate) fn parse(input: &str, users: UserLookup<'_>) -> Result<Formatted, String> {
    let bytes = input.as_bytes();
    let mut out = TextBuilder::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut entities: Vec<Entity> = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'&' => {
                let (decoded, used) = decode_entity(&input[i..]);
                match decoded {
                    Some(c) => out.push(c),
                    None => out.push('&'),
                }
                i += used;
            }
            b'<' if bytes.get(i + 1) == Some(&b'/') => {
                let begin = i;
                let Some(close) = input[i..].find('>') else {
                    return Err(format!("Unclosed end tag at byte offset {begin}"));
                };
                let name = input[i + 2..i + close].trim().to_ascii_lowercase();
                i += close + 1;
                let Some(open) = stack.pop() else {
                    return Err(format!("Unexpected end tag at byte offset {begin}"));
                };
                if open.tag != name {
                    return Err(format!(
                        "Unmatched end tag at byte offset {begin}, expected \"</{}>\", found \"</{name}>\"",
                        open.tag
                    ));
                }
                close_tag(open, out.utf16, &mut stack, &mut entities, users);
            }
            b'<' => {
                let begin = i;
                let (open, next) = parse_start_tag(input, begin, out.utf16)?;
                stack.push(open);
                i = next;
            }
            _ => {
                // Copy one whole UTF-8 character.
                let c = input[i..].chars().next().expect("i is on a char boundary");
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!(
            "Can't find end tag corresponding to start tag \"{}\"",
            open.tag
        ));
    }
    entities.sort_by_key(|e| (e.offset, std::cmp::Reverse(e.length)));
    Ok(Formatted {
        text: out.text,
        entities,
    })
}

/// Reads `<tag attr="v" ...>` starting at `begin`; returns the open tag and the index after `>`.
fn parse_start_tag(input: &str, begin: usize, position: usize) -> Result<(Open, usize), String> {
    let bytes = input.as_bytes();
    let unclosed = || format!("Unclosed start tag at byte offset {begin}");
    let mut i = begin + 1;
    while i < bytes.len() && !bytes[i].is_ascii_whitespace() && bytes[i] != b'>' {
        i += 1;
    }
    if i >= bytes.len() {
        return Err(unclosed());
    }
    let tag = input[begin + 1..i].to_ascii_lowercase();
    if !SUPPORTED_TAGS.contains(&tag.as_str()) {
        return Err(format!(
            "Unsupported start tag \"{tag}\" at byte offset {begin}"
        ));
    }
    let mut argument = None;
    loop {
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        match bytes.get(i) {
            None => return Err(unclosed()),
            Some(b'>') => {
                i += 1;
                break;
            }
            Some(_) => {}
        }
        let name_start = i;
        while i < bytes.len()
            && !bytes[i].is_ascii_whitespace()
            && bytes[i] != b'='
            && bytes[i] != b'>'
        {
            i += 1;
        }
        let attribute = input[name_start..i].to_ascii_lowercase();
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        if bytes.get(i) != Some(&b'=') {
            // Only `<blockquote expandable>` has an attribute without a value.
            if tag == "blockquote" && attribute == "expandable" {
                argument = Some("expandable".to_owned());
                continue;
            }
            return Err(format!(
                "Expected equal sign in declaration of an attribute of the tag \"{tag}\" at byte offset {begin}"
            ));
        }
        i += 1;
        while i < bytes.len() && bytes[i].is_ascii_whitespace() {
            i += 1;
        }
        let value = match bytes.get(i) {
            None => return Err(unclosed()),
            Some(&quote @ (b'"' | b'\'')) => {
                let Some(len) = input[i + 1..].find(quote as char) else {
                    return Err(unclosed());
                };
                let raw = &input[i + 1..i + 1 + len];
                i += len + 2;
                decode_all(raw)
            }
            Some(_) => {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'.' || bytes[i] == b'-')
                {
                    i += 1;
                }
                if i == start {
                    return Err(unclosed());
                }
                input[start..i].to_owned()
            }
        };
        let relevant = matches!(
            (tag.as_str(), attribute.as_str()),
            ("a", "href") | ("code", "class") | ("span", "class") | ("tg-emoji", "emoji-id")
        );
        if relevant {
            argument = Some(value);
        }
    }
    if tag == "span" && argument.as_deref() != Some("tg-spoiler") {
        return Err(format!(
            "Tag \"span\" must have class \"tg-spoiler\" at byte offset {begin}"
        ));
    }
    if tag == "tg-emoji"
        && argument
            .as_deref()
            .is_none_or(|id| id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "Custom emoji entity must contain a valid custom emoji identifier at byte offset {begin}"
        ));
    }
    Ok((
        Open {
            tag,
            start: position,
            argument,
            language: None,
        },
        i,
    ))
}

/// Turns a closed tag into its entity (or, for `code` right inside `pre`, into the pre's language).
fn close_tag(
    open: Open,
    end: usize,
    stack: &mut [Open],
    entities: &mut Vec<Entity>,
    users: UserLookup<'_>,
) {
    let length = end - open.start;
    if open.tag == "code"
        && let Some(parent) = stack
            .last_mut()
            .filter(|p| p.tag == "pre" && p.start == open.start)
    {
        if let Some(lang) = open
            .argument
            .as_deref()
            .and_then(|c| c.strip_prefix("language-"))
        {
            parent.language = Some(lang.to_owned());
        }
        return;
    }
    if length == 0 {
        return;
    }
    let mut entity = Entity::new("", open.start, length);
    entity.kind = match open.tag.as_str() {
        "b" | "strong" => "bold",
        "i" | "em" => "italic",
        "u" | "ins" => "underline",
        "s" | "strike" | "del" => "strikethrough",
        "span" | "tg-spoiler" => "spoiler",
        "code" => "code",
        "pre" => {
            entity.language = open.language;
            "pre"
        }
        "blockquote" if open.argument.is_some() => "expandable_blockquote",
        "blockquote" => "blockquote",
        "tg-emoji" => {
            entity.custom_emoji_id = open.argument;
            "custom_emoji"
        }
        "a" => {
            let Some(href) = open.argument.filter(|h| !h.is_empty()) else {
                return;
            };
            if let Some(id) = href.strip_prefix("tg://user?id=") {
                // A mention of a user the server knows; unknown users get no entity.
                match id.parse().ok().and_then(users) {
                    Some(user) => {
                        entity.user = Some(user);
                        "text_mention"
                    }
                    None => return,
                }
            } else {
                entity.url = Some(href);
                "text_link"
            }
        }
        _ => return,
    }
    .to_owned();
    entities.push(entity);
}

/// Decodes one `&...;` at the start of `s`. Returns the character (None if it is not a
/// supported reference, in which case the `&` stands for itself) and how many bytes were used.
fn decode_entity(s: &str) -> (Option<char>, usize) {
    let Some(semi) = s[..s.len().min(12)].find(';') else {
        return (None, 1);
    };
    let name = &s[1..semi];
    let decoded = match name {
        "lt" => Some('<'),
        "gt" => Some('>'),
        "amp" => Some('&'),
        "quot" => Some('"'),
        _ => {
            let number =
                if let Some(hex) = name.strip_prefix("#x").or_else(|| name.strip_prefix("#X")) {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = name.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
            number.and_then(char::from_u32).filter(|c| *c != '\0')
        }
    };
    match decoded {
        Some(c) => (Some(c), semi + 1),
        None => (None, 1),
    }
}

/// Decodes references inside an attribute value.
fn decode_all(raw: &str) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < raw.len() {
        if raw.as_bytes()[i] == b'&' {
            let (c, used) = decode_entity(&raw[i..]);
            out.push(c.unwrap_or('&'));
            i += used;
        } else {
            let c = raw[i..].chars().next().expect("char boundary");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{Value, json};

    fn users(id: i64) -> Option<Value> {
        (id == 42).then(|| json!({"id": 42, "is_bot": false, "first_name": "Ann"}))
    }

    fn kinds(f: &Formatted) -> Vec<(String, usize, usize)> {
        f.entities
            .iter()
            .map(|e| (e.kind.clone(), e.offset, e.length))
            .collect()
    }

    #[test]
    fn nested_tags_and_utf16_offsets() {
        let f = parse(
            "😀 <b>bold <i>both</i></b> &lt;&amp;&#x41;&#66;&copy;",
            &users,
        )
        .unwrap();
        assert_eq!(f.text, "😀 bold both <&AB&copy;");
        assert_eq!(
            kinds(&f),
            vec![("bold".into(), 3, 9), ("italic".into(), 8, 4)]
        );
    }

    #[test]
    fn pre_with_language_and_links() {
        let f = parse(
            "<pre><code class=\"language-rust\">fn x() {}</code></pre><a href='https://e.x/?a=1&amp;b=2'>l</a><a href=\"tg://user?id=42\">m</a>",
            &users,
        )
        .unwrap();
        assert_eq!(f.entities[0].kind, "pre");
        assert_eq!(f.entities[0].language.as_deref(), Some("rust"));
        assert_eq!(f.entities[1].url.as_deref(), Some("https://e.x/?a=1&b=2"));
        assert_eq!(f.entities[2].kind, "text_mention");
    }

    #[test]
    fn spoilers_blockquotes_emoji() {
        let f = parse(
            "<span class=\"tg-spoiler\">a</span><tg-spoiler>b</tg-spoiler><blockquote expandable>c</blockquote><tg-emoji emoji-id=\"5368324170671202286\">👍</tg-emoji>",
            &users,
        )
        .unwrap();
        let k: Vec<_> = f.entities.iter().map(|e| e.kind.as_str()).collect();
        assert_eq!(
            k,
            vec![
                "spoiler",
                "spoiler",
                "expandable_blockquote",
                "custom_emoji"
            ]
        );
    }

    #[test]
    fn refuses_like_telegram() {
        assert_eq!(
            parse("a <br> b", &users).unwrap_err(),
            "Unsupported start tag \"br\" at byte offset 2"
        );
        assert_eq!(
            parse("<b>x", &users).unwrap_err(),
            "Can't find end tag corresponding to start tag \"b\""
        );
        assert_eq!(
            parse("<b>x</i>", &users).unwrap_err(),
            "Unmatched end tag at byte offset 4, expected \"</b>\", found \"</i>\""
        );
        assert_eq!(
            parse("x</b>", &users).unwrap_err(),
            "Unexpected end tag at byte offset 1"
        );
        assert_eq!(
            parse("1 < 2", &users).unwrap_err(),
            "Unsupported start tag \"\" at byte offset 2"
        );
        assert_eq!(
            parse("<b", &users).unwrap_err(),
            "Unclosed start tag at byte offset 0"
        );
        assert!(
            parse("<span>x</span>", &users)
                .unwrap_err()
                .starts_with("Tag \"span\" must have class")
        );
    }
}
