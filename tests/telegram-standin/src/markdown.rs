//! `parse_mode=MarkdownV2` (and the legacy `Markdown`), following "Formatting options" and the
//! error messages of TDLib's parsers, which the real server returns verbatim.
//!
//! The point that matters most for a client: in MarkdownV2 every one of
//! `_ * [ ] ( ) ~ ` > # + - = | { } . !` outside an entity marker must be escaped with `\`,
//! otherwise the whole message is refused.

use crate::text::{Entity, Formatted, TextBuilder};

const RESERVED: &str = "_*[]()~`>#+-=|{}.!";

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    Pre,
    TextUrl,
    CustomEmoji,
}

impl Kind {
    /// The name TDLib prints in "Can't find end of ... entity".
    fn name(self) -> &'static str {
        match self {
            Kind::Bold => "Bold",
            Kind::Italic => "Italic",
            Kind::Underline => "Underline",
            Kind::Strikethrough => "Strikethrough",
            Kind::Spoiler => "Spoiler",
            Kind::Code => "Code",
            Kind::Pre => "Pre",
            Kind::TextUrl => "TextUrl",
            Kind::CustomEmoji => "CustomEmoji",
        }
    }
}

struct Open {
    kind: Kind,
    byte_offset: usize,
    start: usize,
    language: Option<String>,
}

/// An open block quotation (`>` lines); block quotations cannot nest, so at most one is open.
struct Quote {
    start: usize,
    expandable: bool,
}

/// Parses MarkdownV2. The error is the detail after `Bad Request: can't parse entities: `.
pub(crate) fn parse_v2(input: &str) -> Result<Formatted, String> {
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let mut out = TextBuilder::default();
    let mut stack: Vec<Open> = Vec::new();
    let mut entities = Vec::new();
    let mut quote: Option<Quote> = None;
    let mut i = 0;
    while i < chars.len() {
        let (byte, c) = chars[i];
        let in_code = matches!(stack.last().map(|o| o.kind), Some(Kind::Code | Kind::Pre));
        let line_start = i == 0 || at(i - 1) == Some('\n');

        if line_start && !in_code {
            let starts_expandable = c == '*' && at(i + 1) == Some('*') && at(i + 2) == Some('>');
            if c == '>' || starts_expandable {
                if quote.is_none() {
                    quote = Some(Quote {
                        start: out.utf16,
                        expandable: false,
                    });
                }
                i += if starts_expandable { 3 } else { 1 };
                continue;
            } else if let Some(q) = quote.take() {
                // The quotation ended with the previous line; its final newline is not part of it.
                close_quote(q, out.utf16.saturating_sub(1), &mut entities);
            }
        }
        // `||` at the end of a quoted line marks the quotation as expandable.
        if quote.is_some()
            && c == '|'
            && at(i + 1) == Some('|')
            && matches!(at(i + 2), None | Some('\n'))
            && !in_code
            && !matches!(stack.last().map(|o| o.kind), Some(Kind::Spoiler))
        {
            if let Some(q) = quote.as_mut() {
                q.expandable = true;
            }
            i += 2;
            continue;
        }
        if c == '\\' && at(i + 1).is_some_and(|n| (1..=126).contains(&(n as u32))) {
            out.push(at(i + 1).expect("checked"));
            i += 2;
            continue;
        }
        if in_code && c != '`' {
            out.push(c);
            i += 1;
            continue;
        }
        if !RESERVED.contains(c) {
            out.push(c);
            i += 1;
            continue;
        }

        let top = stack.last().map(|o| o.kind);
        let ends = match top {
            Some(Kind::Bold) => c == '*',
            Some(Kind::Italic) => c == '_' && at(i + 1) != Some('_'),
            Some(Kind::Underline) => c == '_' && at(i + 1) == Some('_'),
            Some(Kind::Strikethrough) => c == '~',
            Some(Kind::Spoiler) => c == '|' && at(i + 1) == Some('|'),
            Some(Kind::Code) => c == '`',
            Some(Kind::Pre) => c == '`' && at(i + 1) == Some('`') && at(i + 2) == Some('`'),
            Some(Kind::TextUrl | Kind::CustomEmoji) => c == ']',
            None => false,
        };
        if in_code && !ends {
            return Err(reserved(c));
        }
        if !ends {
            let (kind, used) = match c {
                '_' if at(i + 1) == Some('_') => (Kind::Underline, 2),
                '_' => (Kind::Italic, 1),
                '*' => (Kind::Bold, 1),
                '~' => (Kind::Strikethrough, 1),
                '|' if at(i + 1) == Some('|') => (Kind::Spoiler, 2),
                '[' => (Kind::TextUrl, 1),
                '!' if at(i + 1) == Some('[') => (Kind::CustomEmoji, 2),
                '`' if at(i + 1) == Some('`') && at(i + 2) == Some('`') => (Kind::Pre, 3),
                '`' => (Kind::Code, 1),
                _ => return Err(reserved(c)),
            };
            i += used;
            let mut language = None;
            if kind == Kind::Pre {
                // "```lang\n": the word right after the fence names the language.
                let mut j = i;
                while at(j).is_some_and(|ch| !ch.is_whitespace() && ch != '`') {
                    j += 1;
                }
                if j > i && at(j).is_some_and(|ch| ch != '`') {
                    language = Some(chars[i..j].iter().map(|&(_, ch)| ch).collect());
                    i = j;
                }
                if at(i) == Some('\n') {
                    i += 1;
                }
            }
            stack.push(Open {
                kind,
                byte_offset: byte,
                start: out.utf16,
                language,
            });
            continue;
        }

        let open = stack.pop().expect("ends implies an open entity");
        i += match open.kind {
            Kind::Underline | Kind::Spoiler => 2,
            Kind::Pre => 3,
            _ => 1,
        };
        let length = out.utf16 - open.start;
        let mut entity = Entity::new("", open.start, length);
        entity.kind = match open.kind {
            Kind::Bold => "bold",
            Kind::Italic => "italic",
            Kind::Underline => "underline",
            Kind::Strikethrough => "strikethrough",
            Kind::Spoiler => "spoiler",
            Kind::Code => "code",
            Kind::Pre => {
                entity.language = open.language;
                "pre"
            }
            Kind::TextUrl | Kind::CustomEmoji => {
                if at(i) != Some('(') {
                    if open.kind == Kind::CustomEmoji {
                        return Err("Custom emoji entity must contain a tg://emoji URL".into());
                    }
                    // "[text]" with no URL part makes no link.
                    continue;
                }
                let url_byte = chars[i].0;
                i += 1;
                let mut url = String::new();
                loop {
                    match at(i) {
                        None => {
                            return Err(format!(
                                "Can't find end of a URL at byte offset {url_byte}"
                            ));
                        }
                        Some(')') => {
                            i += 1;
                            break;
                        }
                        Some('\\') if at(i + 1).is_some() => {
                            url.push(at(i + 1).expect("checked"));
                            i += 2;
                        }
                        Some(ch) => {
                            url.push(ch);
                            i += 1;
                        }
                    }
                }
                if open.kind == Kind::CustomEmoji {
                    let id = url
                        .strip_prefix("tg://emoji?id=")
                        .filter(|id| !id.is_empty() && id.bytes().all(|b| b.is_ascii_digit()));
                    match id {
                        Some(id) => entity.custom_emoji_id = Some(id.to_owned()),
                        None => {
                            return Err("Custom emoji entity must contain a tg://emoji URL".into());
                        }
                    }
                    "custom_emoji"
                } else {
                    entity.url = Some(url);
                    "text_link"
                }
            }
        }
        .to_owned();
        if length > 0 {
            entities.push(entity);
        }
    }
    if let Some(open) = stack.pop() {
        return Err(format!(
            "Can't find end of {} entity at byte offset {}",
            open.kind.name(),
            open.byte_offset
        ));
    }
    if let Some(q) = quote.take() {
        close_quote(q, out.utf16, &mut entities);
    }
    entities.sort_by_key(|e| (e.offset, std::cmp::Reverse(e.length)));
    Ok(Formatted {
        text: out.text,
        entities,
    })
}

fn close_quote(q: Quote, end: usize, entities: &mut Vec<Entity>) {
    if end > q.start {
        let kind = if q.expandable {
            "expandable_blockquote"
        } else {
            "blockquote"
        };
        entities.push(Entity::new(kind, q.start, end - q.start));
    }
}

fn reserved(c: char) -> String {
    format!("Character '{c}' is reserved and must be escaped with the preceding '\\'")
}

/// Parses the legacy `Markdown` mode: `*bold*`, `_italic_`, `` `code` ``, ```` ```pre``` ````,
/// `[text](url)`; entities cannot nest and only `_ * ` [` can be escaped.
pub(crate) fn parse_legacy(input: &str) -> Result<Formatted, String> {
    let chars: Vec<(usize, char)> = input.char_indices().collect();
    let at = |i: usize| chars.get(i).map(|&(_, c)| c);
    let mut out = TextBuilder::default();
    let mut entities = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (byte, c) = chars[i];
        if c == '\\' && matches!(at(i + 1), Some('_' | '*' | '`' | '[')) {
            out.push(at(i + 1).expect("checked"));
            i += 2;
            continue;
        }
        if !matches!(c, '_' | '*' | '`' | '[') {
            out.push(c);
            i += 1;
            continue;
        }
        let is_pre = c == '`' && at(i + 1) == Some('`') && at(i + 2) == Some('`');
        let end_char = if c == '[' { ']' } else { c };
        i += if is_pre { 3 } else { 1 };
        let mut language = None;
        if is_pre {
            let mut j = i;
            while at(j).is_some_and(|ch| !ch.is_whitespace() && ch != '`') {
                j += 1;
            }
            if j > i && at(j) == Some('\n') {
                language = Some(chars[i..j].iter().map(|&(_, ch)| ch).collect());
                i = j + 1;
            }
        }
        let start = out.utf16;
        loop {
            match at(i) {
                None => {
                    return Err(format!(
                        "Can't find end of the entity starting at byte offset {byte}"
                    ));
                }
                Some(ch)
                    if ch == end_char
                        && (!is_pre || (at(i + 1) == Some('`') && at(i + 2) == Some('`'))) =>
                {
                    break;
                }
                Some(ch) => {
                    out.push(ch);
                    i += 1;
                }
            }
        }
        i += if is_pre { 3 } else { 1 };
        let length = out.utf16 - start;
        let mut entity = Entity::new(
            match c {
                '*' => "bold",
                '_' => "italic",
                '`' if is_pre => "pre",
                '`' => "code",
                _ => "text_link",
            },
            start,
            length,
        );
        entity.language = language;
        if c == '[' {
            if at(i) != Some('(') {
                continue;
            }
            let mut url = String::new();
            i += 1;
            while let Some(ch) = at(i) {
                i += 1;
                if ch == ')' {
                    break;
                }
                url.push(ch);
            }
            entity.url = Some(url);
        }
        if length > 0 {
            entities.push(entity);
        }
    }
    entities.sort_by_key(|e| (e.offset, std::cmp::Reverse(e.length)));
    Ok(Formatted {
        text: out.text,
        entities,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(f: &Formatted) -> Vec<(&str, usize, usize)> {
        f.entities
            .iter()
            .map(|e| (e.kind.as_str(), e.offset, e.length))
            .collect()
    }

    #[test]
    fn formats_and_escapes() {
        let f =
            parse_v2(r"*bold \*x* _it_ __u__ ~s~ ||sp|| `c\`d` [l](https://e.x/\)) end\.").unwrap();
        assert_eq!(f.text, "bold *x it u s sp c`d l end.");
        assert_eq!(
            kinds(&f),
            vec![
                ("bold", 0, 7),
                ("italic", 8, 2),
                ("underline", 11, 1),
                ("strikethrough", 13, 1),
                ("spoiler", 15, 2),
                ("code", 18, 3),
                ("text_link", 22, 1)
            ]
        );
        assert_eq!(f.entities[6].url.as_deref(), Some("https://e.x/)"));
    }

    #[test]
    fn pre_blocks_and_quotes() {
        let f = parse_v2("```rust\nfn x() {}\n```\n>quoted\n>more||\nafter").unwrap();
        assert_eq!(f.text, "fn x() {}\n\nquoted\nmore\nafter");
        assert_eq!(f.entities[0].language.as_deref(), Some("rust"));
        assert_eq!(
            kinds(&f),
            vec![("pre", 0, 10), ("expandable_blockquote", 11, 11)]
        );
    }

    #[test]
    fn refuses_unescaped_reserved_characters() {
        assert_eq!(
            parse_v2("Hello.").unwrap_err(),
            "Character '.' is reserved and must be escaped with the preceding '\\'"
        );
        assert_eq!(
            parse_v2("a-b").unwrap_err(),
            "Character '-' is reserved and must be escaped with the preceding '\\'"
        );
        assert_eq!(
            parse_v2("x *bold").unwrap_err(),
            "Can't find end of Bold entity at byte offset 2"
        );
    }

    #[test]
    fn legacy_markdown() {
        let f = parse_legacy("*b* _i_ [l](http://x.y) 1.5-2").unwrap();
        assert_eq!(f.text, "b i l 1.5-2");
        assert_eq!(
            kinds(&f),
            vec![("bold", 0, 1), ("italic", 2, 1), ("text_link", 4, 1)]
        );
        assert!(
            parse_legacy("*open")
                .unwrap_err()
                .starts_with("Can't find end of the entity")
        );
    }
}
