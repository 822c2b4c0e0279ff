//! Discord markdown → [`StyledText`].
//!
//! Discord's client parses messages with a rule-based parser in the manner of
//! `simple-markdown`: at each position the rules are tried in a fixed order, each rule
//! matching a pattern at that position (emphasis by the *first* closing delimiter after
//! it, not by CommonMark's delimiter runs), and where `*…*`, `**…**` and `__…__` compete
//! the longest match wins. This reader follows those rules, so a responder's message reads
//! here as it shows in their client. Inline formatting stays within one line (what our
//! renderer writes; Discord users rarely stretch emphasis over line breaks); code blocks
//! may span lines.
//!
//! What is read: `\` escapes; ```` ```lang ```` code blocks; `` `code` ``; `**bold**`,
//! `*italic*`, `_italic_`, `__underline__`, `~~strike~~`, `||spoiler||`; `[text](url)`,
//! `<url>` and bare URLs (http and https only); at a line's start `> ` quotes, `>>> ` (the
//! rest of the message is quoted), `#`/`##`/`###` headings (bold), `-# ` subtext (plain)
//! and `- `/`* `/`+ `/`1. ` list items; mentions, custom emoji, slash commands and
//! timestamps as readable text. Nothing is copied into HTML: the caller renders the
//! [`StyledText`] with the shared Matrix renderer.

use chrono::DateTime;

use super::DISCORD_LINK_SCHEMES;
use crate::format::{Span, Style, StyledText, checked_link, is_valid_language};

/// How deeply emphasis may nest before its delimiters are read as text: keeps hostile
/// input (thousands of `*`) from making the recursive search cubic.
const MAX_DEPTH: usize = 12;

/// Something a Discord message refers to by ID, which is shown as readable text instead.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mention<'a> {
    /// `<@123>` or `<@!123>`.
    User(u64),
    /// `<@&123>`.
    Role(u64),
    /// `<#123>`.
    Channel(u64),
    /// `<:name:123>` or `<a:name:123>` (animated).
    Emoji { name: &'a str },
    /// `</name:123>`, a slash command.
    Command { name: &'a str },
}

impl Mention<'_> {
    /// The text shown when the caller has no name for it: never an ID, so nothing about
    /// the Discord server leaks into the visitor's room.
    pub fn fallback(&self) -> String {
        match self {
            Mention::User(_) => "@user".to_owned(),
            Mention::Role(_) => "@role".to_owned(),
            Mention::Channel(_) => "#channel".to_owned(),
            Mention::Emoji { name } => format!(":{name}:"),
            Mention::Command { name } => format!("/{name}"),
        }
    }
}

pub(super) struct Reader<'n> {
    out: StyledText,
    names: &'n dyn Fn(&Mention<'_>) -> Option<String>,
    /// Inside a link's text: links do not nest.
    in_link: bool,
    depth: usize,
}

impl<'n> Reader<'n> {
    pub(super) fn new(names: &'n dyn Fn(&Mention<'_>) -> Option<String>) -> Self {
        Reader {
            out: StyledText::default(),
            names,
            in_link: false,
            depth: 0,
        }
    }

    pub(super) fn finish(mut self) -> StyledText {
        self.out.spans.retain(|span| span.start < span.end);
        self.out
    }

    fn push(&mut self, text: &str) {
        self.out.text.push_str(text);
    }

    /// Closes a span opened at `start` (text offset) here. Spans close inner first; the
    /// new one goes before the spans inside it, so spans over the same text are listed
    /// (and rendered) outer first.
    fn span(&mut self, style: Style, start: usize) {
        let end = self.out.text.len();
        if start < end {
            let spans = &mut self.out.spans;
            let at = spans
                .iter()
                .position(|span| span.start >= start)
                .unwrap_or(spans.len());
            spans.insert(at, Span { style, start, end });
        }
    }

    /// A message, or the content of a quote: a sequence of lines.
    pub(super) fn blocks(&mut self, src: &str, in_quote: bool) {
        let mut pos = 0;
        loop {
            let end_of_line = line_end(src, pos);
            let line = &src[pos..end_of_line];
            if !in_quote {
                if let Some(offset) = quote_rest_prefix(line) {
                    let start = self.out.text.len();
                    self.blocks(&src[pos + offset..], true);
                    self.span(Style::Blockquote { expandable: false }, start);
                    return;
                }
                if quote_prefix(line).is_some() {
                    // Consecutive `> ` lines, without their markers, are read as one
                    // document (a code block may run over them).
                    let mut content = String::new();
                    let mut at = pos;
                    let end = loop {
                        let end = line_end(src, at);
                        let Some(offset) = quote_prefix(&src[at..end]) else {
                            break at - 1;
                        };
                        if at > pos {
                            content.push('\n');
                        }
                        content.push_str(&src[at + offset..end]);
                        if end == src.len() {
                            break end;
                        }
                        at = end + 1;
                    };
                    let start = self.out.text.len();
                    self.blocks(&content, true);
                    self.span(Style::Blockquote { expandable: false }, start);
                    if end >= src.len() {
                        return;
                    }
                    self.push("\n");
                    pos = end + 1;
                    continue;
                }
            }
            let next = self.line(src, pos, end_of_line);
            if next >= src.len() {
                return;
            }
            self.push("\n");
            pos = next + 1;
        }
    }

    /// One line from `pos` to `end` with its line-start syntax; returns where reading
    /// stopped (the line's end, or a later one if a code block ran on).
    fn line(&mut self, src: &str, pos: usize, end: usize) -> usize {
        let line = &src[pos..end];
        if let Some(offset) = heading(line) {
            let start = self.out.text.len();
            let next = self.inline(src, pos + offset, end, true);
            self.span(Style::Bold, start);
            return next;
        }
        if let Some(offset) = line
            .strip_prefix("-# ")
            .and_then(|_| content_after(line, 3))
        {
            return self.inline(src, pos + offset, end, true);
        }
        if let Some((indent, marker, offset)) = list_item(line) {
            self.push(indent);
            if marker.ends_with('.') {
                self.push(marker);
                self.push(" ");
            } else {
                self.push("• ");
            }
            return self.inline(src, pos + offset, end, true);
        }
        self.inline(src, pos, end, true)
    }

    /// Inline markdown in `src[pos..end]`. At the top level of a line (`top`), a code
    /// block may continue past `end`, and the line then ends at the first newline after
    /// it. Returns where reading stopped.
    pub(super) fn inline(&mut self, src: &str, mut pos: usize, mut end: usize, top: bool) -> usize {
        while pos < end {
            let rest = &src[pos..end];
            let c = rest.chars().next().expect("pos < end");
            let read = match c {
                '\\' => rest[1..]
                    .chars()
                    .next()
                    .filter(|&e| !e.is_ascii_alphanumeric() && !e.is_whitespace())
                    .map(|e| {
                        let mut buf = [0; 4];
                        self.push(e.encode_utf8(&mut buf));
                        1 + e.len_utf8()
                    }),
                '`' => {
                    let bound = if top { &src[pos..] } else { rest };
                    match self.code_block(bound) {
                        Some(len) => {
                            if top {
                                end = line_end(src, pos + len);
                            }
                            Some(len)
                        }
                        None => Some(self.inline_code(rest)),
                    }
                }
                '<' => self.angle(rest),
                'h' if !self.in_link => self.bare_url(rest),
                '[' if !self.in_link => self.masked_link(src, pos, end),
                '*' | '_' => self.emphasis(src, pos, end),
                '~' => self.delimited(src, pos, end, "~~", Style::Strikethrough),
                '|' => self.delimited(src, pos, end, "||", Style::Spoiler),
                _ => None,
            };
            pos += read.unwrap_or_else(|| {
                let mut buf = [0; 4];
                self.push(c.encode_utf8(&mut buf));
                c.len_utf8()
            });
        }
        pos
    }

    /// Reads `src[start..end]` as the content of `style`.
    fn styled(&mut self, src: &str, start: usize, end: usize, style: Style) {
        let at = self.out.text.len();
        self.depth += 1;
        self.inline(src, start, end, false);
        self.depth -= 1;
        self.span(style, at);
    }

    /// `*em*` against `**strong**`, or `_em_` against `__underline__`: the longer match
    /// wins, emphasis on a tie (Discord's order of preference).
    fn emphasis(&mut self, src: &str, pos: usize, end: usize) -> Option<usize> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        let rest = &src[pos..end];
        let (em, double, double_style) = if rest.starts_with('*') {
            (em_star(rest), closed(rest, "**", b'*'), Style::Bold)
        } else {
            (
                em_underscore(rest),
                closed(rest, "__", b'_'),
                Style::Underline,
            )
        };
        match (em, double) {
            (Some(e), Some(d)) if d > e => {
                self.styled(src, pos + 2, pos + d - 2, double_style);
                Some(d)
            }
            (Some(e), _) => {
                self.styled(src, pos + 1, pos + e - 1, Style::Italic);
                Some(e)
            }
            (None, Some(d)) => {
                self.styled(src, pos + 2, pos + d - 2, double_style);
                Some(d)
            }
            (None, None) => None,
        }
    }

    /// `~~…~~` and `||…||`: up to the first closing pair after at least one character.
    fn delimited(
        &mut self,
        src: &str,
        pos: usize,
        end: usize,
        delimiter: &str,
        style: Style,
    ) -> Option<usize> {
        if self.depth >= MAX_DEPTH {
            return None;
        }
        let len = closed(&src[pos..end], delimiter, 0)?;
        self.styled(src, pos + 2, pos + len - 2, style);
        Some(len)
    }

    /// `` `code` `` with a fence of n backticks, closed by exactly n; an unclosed fence is
    /// text. Returns the bytes read (the whole fence when it is text).
    fn inline_code(&mut self, rest: &str) -> usize {
        let n = rest.len() - rest.trim_start_matches('`').len();
        let body = &rest[n..];
        let mut at = body.chars().next().map_or(body.len(), char::len_utf8);
        while at < body.len() {
            let Some(found) = body[at..].find('`') else {
                break;
            };
            let run_start = at + found;
            let run = body[run_start..].len() - body[run_start..].trim_start_matches('`').len();
            if run == n {
                let mut code = &body[..run_start];
                // Discord drops one space that only separates the content from a fence
                // backtick, so `` `` `x` `` `` can show backticks at its edges.
                if let Some(inner) = code.strip_prefix(' ')
                    && inner.trim_start_matches(' ').starts_with('`')
                {
                    code = inner;
                }
                if let Some(inner) = code.strip_suffix(' ')
                    && inner.trim_end_matches(' ').ends_with('`')
                {
                    code = inner;
                }
                let start = self.out.text.len();
                self.push(code);
                self.span(Style::Code, start);
                return n + run_start + n;
            }
            at = run_start + run;
        }
        self.push(&rest[..n]);
        n
    }

    /// A ```` ```lang ```` code block at the start of `rest`, closed within it.
    fn code_block(&mut self, rest: &str) -> Option<usize> {
        let (language, content, len) = code_block(rest)?;
        if !self.out.text.is_empty() && !self.out.text.ends_with('\n') {
            self.push("\n");
        }
        let start = self.out.text.len();
        self.push(content);
        self.span(
            Style::Pre {
                language: language
                    .filter(|l| is_valid_language(l))
                    .map(|l| l.to_ascii_lowercase()),
            },
            start,
        );
        if rest[len..].starts_with(|c| c != '\n') {
            self.push("\n");
        }
        Some(len)
    }

    /// `<@123>`, `<#123>`, `<:emoji:123>`, `</command:123>`, `<t:1700000000:R>`, `<url>`.
    fn angle(&mut self, rest: &str) -> Option<usize> {
        let close = rest.find('>')?;
        let inner = &rest[1..close];
        let id = |s: &str| {
            (!s.is_empty() && s.len() <= 20 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<u64>().ok())
                .flatten()
        };
        let word = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        };
        let mention = if let Some(n) = inner.strip_prefix("@&") {
            id(n).map(Mention::Role)
        } else if let Some(n) = inner.strip_prefix('@') {
            id(n.strip_prefix('!').unwrap_or(n)).map(Mention::User)
        } else if let Some(n) = inner.strip_prefix('#') {
            id(n).map(Mention::Channel)
        } else if let Some(emoji) = inner.strip_prefix(':').or_else(|| inner.strip_prefix("a:")) {
            emoji
                .split_once(':')
                .filter(|(name, n)| word(name) && id(n).is_some())
                .map(|(name, _)| Mention::Emoji { name })
        } else if let Some(command) = inner.strip_prefix('/') {
            command
                .rsplit_once(':')
                .filter(|(name, n)| {
                    id(n).is_some()
                        && name.split(' ').all(|w| {
                            !w.is_empty()
                                && w.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
                        })
                })
                .map(|(name, _)| Mention::Command { name })
        } else {
            None
        };
        if let Some(mention) = mention {
            let shown = (self.names)(&mention).unwrap_or_else(|| mention.fallback());
            self.push(&shown);
            return Some(close + 1);
        }
        if let Some(stamp) = inner.strip_prefix("t:") {
            let (seconds, style) = stamp.split_once(':').unwrap_or((stamp, "f"));
            let time = seconds
                .parse::<i64>()
                .ok()
                .filter(|_| style.len() == 1 && "tTdDfFR".contains(style))
                .and_then(|s| DateTime::from_timestamp(s, 0))?;
            self.push(&time.format("%Y-%m-%d %H:%M UTC").to_string());
            return Some(close + 1);
        }
        if self.in_link || !(inner.starts_with("http://") || inner.starts_with("https://")) {
            return None;
        }
        if inner.contains(char::is_whitespace) {
            return None;
        }
        let href = checked_link(inner, DISCORD_LINK_SCHEMES)?;
        let start = self.out.text.len();
        self.push(inner);
        self.span(Style::Link { href }, start);
        Some(close + 1)
    }

    /// A URL written out: `https?://`, then up to whitespace or `<`, less trailing
    /// punctuation; at least two characters after the `//`.
    fn bare_url(&mut self, rest: &str) -> Option<usize> {
        let after = rest
            .strip_prefix("https://")
            .or_else(|| rest.strip_prefix("http://"))?;
        let run = after
            .find(|c: char| c.is_whitespace() || c == '<')
            .unwrap_or(after.len());
        let kept = after[..run].trim_end_matches(['.', ',', ':', ';', '"', '\'', ')', ']']);
        if kept.chars().count() < 2 {
            return None;
        }
        let url = &rest[..rest.len() - after.len() + kept.len()];
        let href = checked_link(url, DISCORD_LINK_SCHEMES)?;
        let start = self.out.text.len();
        self.push(url);
        self.span(Style::Link { href }, start);
        Some(url.len())
    }

    /// `[text](url)` or `[text](<url>)`, for http and https targets.
    fn masked_link(&mut self, src: &str, pos: usize, end: usize) -> Option<usize> {
        let rest = &src[pos..end];
        let mut depth = 0usize;
        let mut close = None;
        let mut chars = rest.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => {
                    chars.next();
                }
                '[' => depth += 1,
                ']' if depth == 0 => {
                    close = Some(i);
                    break;
                }
                ']' => depth -= 1,
                _ => {}
            }
        }
        let close = close.filter(|&c| c > 1)?;
        let target = rest[close + 1..].strip_prefix('(')?;
        let target_start = rest.len() - target.len();
        let trimmed = target.trim_start_matches(' ');
        let (href, after) = if let Some(angled) = trimmed.strip_prefix('<') {
            let gt = angled.find('>')?;
            (&angled[..gt], &angled[gt + 1..])
        } else {
            let stop = trimmed
                .find(|c: char| c == ')' || c.is_whitespace())
                .unwrap_or(trimmed.len());
            (&trimmed[..stop], &trimmed[stop..])
        };
        let after = after.trim_start_matches(' ').strip_prefix(')')?;
        if href.contains(char::is_whitespace) {
            return None;
        }
        let href = checked_link(href, DISCORD_LINK_SCHEMES)?;
        let consumed = target_start + (target.len() - after.len());
        let at = self.out.text.len();
        self.in_link = true;
        self.depth += 1;
        self.inline(src, pos + 1, pos + close, false);
        self.depth -= 1;
        self.in_link = false;
        self.span(Style::Link { href }, at);
        Some(consumed)
    }
}

/// The offset of the end of the line containing `pos`.
fn line_end(src: &str, pos: usize) -> usize {
    src[pos..].find('\n').map_or(src.len(), |i| pos + i)
}

/// `>>> `: everything from here on is quoted. Returns the offset of the content.
fn quote_rest_prefix(line: &str) -> Option<usize> {
    let trimmed = line.trim_start_matches(' ');
    let rest = trimmed.strip_prefix(">>>")?;
    rest.starts_with(' ').then(|| line.len() - rest.len() + 1)
}

/// `> ` (not `>>>`): a quoted line. Returns the offset of the content: one space after
/// the `>` is part of the marker, as in Discord.
fn quote_prefix(line: &str) -> Option<usize> {
    let trimmed = line.trim_start_matches(' ');
    let rest = trimmed.strip_prefix('>')?;
    (rest.starts_with(' ') && !trimmed.starts_with(">>> ")).then(|| line.len() - rest.len() + 1)
}

/// The offset of a line's content after a marker of `marker_len` bytes and spaces, if
/// there is content.
fn content_after(line: &str, marker_len: usize) -> Option<usize> {
    let content = line[marker_len..].trim_start_matches(' ');
    (!content.is_empty()).then(|| line.len() - content.len())
}

/// `# `, `## ` or `### ` with content: the offset of the content.
fn heading(line: &str) -> Option<usize> {
    let level = line.len() - line.trim_start_matches('#').len();
    ((1..=3).contains(&level) && line[level..].starts_with(' '))
        .then(|| content_after(line, level))
        .flatten()
}

/// `- `, `* `, `+ ` or `12. ` after optional indentation, with content: the indentation,
/// the marker and the offset of the content.
fn list_item(line: &str) -> Option<(&str, &str, usize)> {
    let body = line.trim_start_matches(' ');
    let indent = &line[..line.len() - body.len()];
    let digits = body.len() - body.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    let marker_len = if body.starts_with(['-', '*', '+']) {
        1
    } else if (1..=9).contains(&digits) && body[digits..].starts_with('.') {
        digits + 1
    } else {
        return None;
    };
    if !body[marker_len..].starts_with(' ') {
        return None;
    }
    let offset = content_after(line, indent.len() + marker_len)?;
    Some((indent, &body[..marker_len], offset))
}

/// `rest` starts with `delimiter` and has it again after at least one character, not
/// followed by `not_after` (0 for none). Returns the length of the whole match.
fn closed(rest: &str, delimiter: &str, not_after: u8) -> Option<usize> {
    let body = rest.strip_prefix(delimiter)?;
    let first = body.chars().next()?.len_utf8();
    let bytes = rest.as_bytes();
    let d = delimiter.len();
    (d + first..rest.len())
        .filter(|&j| bytes[j..].starts_with(delimiter.as_bytes()))
        .find(|&j| not_after == 0 || bytes.get(j + d) != Some(&not_after))
        .map(|j| j + d)
}

/// `*em*`: no space after the opening `*`, no space before the closing one, `**` pairs
/// and escapes allowed inside, the closing `*` not followed by another. Returns the length.
fn em_star(rest: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    let body = rest.strip_prefix('*')?;
    if body.starts_with(char::is_whitespace) {
        return None;
    }
    let mut i = 1;
    let mut tokens = 0;
    loop {
        if tokens > 0 && bytes.get(i) == Some(&b'*') && bytes.get(i + 1) != Some(&b'*') {
            return Some(i + 1);
        }
        let at = &rest[i..];
        let c = at.chars().next()?;
        i += if at.starts_with("**") {
            2
        } else if c == '\\' {
            1 + at[1..].chars().next()?.len_utf8()
        } else if c.is_whitespace() {
            let space = at.len() - at.trim_start().len();
            let next = &at[space..];
            let d = next.chars().next()?;
            space
                + if next.starts_with("**") {
                    2
                } else if d == '\\' {
                    1 + next[1..].chars().next()?.len_utf8()
                } else if d != '*' {
                    d.len_utf8()
                } else {
                    return None;
                }
        } else if c != '*' {
            c.len_utf8()
        } else {
            return None;
        };
        tokens += 1;
    }
}

/// `_em_`: `__` pairs and escapes allowed inside; the closing `_` ends a word (is not
/// followed by a letter, digit or `_`). Returns the length.
fn em_underscore(rest: &str) -> Option<usize> {
    let bytes = rest.as_bytes();
    rest.strip_prefix('_')?;
    let mut i = 1;
    let mut tokens = 0;
    loop {
        if tokens > 0
            && bytes.get(i) == Some(&b'_')
            && !bytes
                .get(i + 1)
                .is_some_and(|&b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Some(i + 1);
        }
        let at = &rest[i..];
        let c = at.chars().next()?;
        i += if at.starts_with("__") {
            2
        } else if c == '\\' {
            1 + at[1..].chars().next()?.len_utf8()
        } else if c != '_' {
            c.len_utf8()
        } else {
            return None;
        };
        tokens += 1;
    }
}

/// A code block at the start of `rest`: ```` ``` ````, an optional language ending its
/// line, blank lines, content starting with something other than a newline, blank
/// lines, ```` ``` ````. Returns the language, the content and the length.
fn code_block(rest: &str) -> Option<(Option<&str>, &str, usize)> {
    let body = rest.strip_prefix("```")?;
    let with_language = body.find('\n').filter(|&n| {
        n > 0
            && body[..n]
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_+-.#".contains(&b))
    });
    let attempt = |skip: usize| {
        let content = body[skip..].trim_start_matches('\n');
        let first = content.chars().next()?.len_utf8();
        let close = first + content[first..].find("```")?;
        let start = rest.len() - content.len();
        Some((content[..close].trim_end_matches('\n'), start + close + 3))
    };
    if let Some(n) = with_language
        && let Some((content, len)) = attempt(n + 1)
    {
        return Some((Some(&body[..n]), content, len));
    }
    attempt(0).map(|(content, len)| (None, content, len))
}

/// The text a reader sees of one line of inline markdown (no line-start syntax).
pub(super) fn inline_text(line: &str) -> String {
    let names = |_: &Mention<'_>| None;
    let mut reader = Reader::new(&names);
    reader.inline(line, 0, line.len(), false);
    reader.out.text
}
