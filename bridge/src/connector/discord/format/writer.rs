//! [`StyledText`] → Discord markdown.
//!
//! Markdown has no closing tags to keep a style from leaking and no way to say "this is
//! text": every character that could start markup is escaped, and each line is written
//! on its own (inline styles closed at its end and reopened on the next), so a style can
//! never run past the line it was meant for. Two things are atomic — inline code and
//! written-out URLs (sent as `<url>`, which also stops Discord from fetching a preview of
//! a visitor's link) — and a style that covers part of one is clipped to leave it out.
//!
//! Discord's emphasis rules depend on the characters around a delimiter (`*a***b**`
//! is not what it seems), so each written line is read back with [`inline_text`] and,
//! if any markup would show as text, written again with fewer styles: without italics,
//! then with only code and links, then as escaped text alone. The text always arrives;
//! at worst some of its formatting does not.

use std::cmp::Reverse;
use std::ops::Range;

use super::reader::inline_text;
use super::{DISCORD_LINK_SCHEMES, DISCORD_MAX_TEXT};
use crate::format::{Style, StyledText, checked_link, is_valid_language, split};

/// The longest link target written as a masked link. A longer one would crowd the
/// message out of its 2000 characters (and repeat in every part the link spans); its
/// text is sent without the link.
const MAX_HREF: usize = 512;

/// Escaped wherever it appears in text: Discord's inline syntax, and the line-start
/// markers (`#` heading, `-` list and `-#` subtext, `+` list, `>` quote), which are cheap
/// to escape everywhere and then cannot begin any line.
const ESCAPED: &[char] = &[
    '\\', '*', '_', '~', '|', '`', '<', '>', '#', '-', '+', '[', ']',
];

/// Splits styled text into parts and writes each as Discord markdown within
/// [`DISCORD_MAX_TEXT`] characters, markup included.
///
/// The shared splitter measures plain text, and markup adds to it. Parts are taken one
/// at a time from the front: the splitter's first chunk at the full limit, and if its
/// markdown is too long, again with a limit reduced in proportion, until it fits; the
/// rest of the text then starts the next part, so every part but the last stays nearly
/// full. A chunk of one character always fits (at most a link of [`MAX_HREF`] and a code
/// fence around it), so this ends.
pub(super) fn render_parts(styled: &StyledText) -> Vec<String> {
    let mut parts = Vec::new();
    let mut rest = styled.trimmed();
    while !rest.text.is_empty() {
        let mut limit = DISCORD_MAX_TEXT;
        let (chunk, written) = loop {
            // The first chunk depends only on the first `limit + 1` characters; splitting
            // no more than those keeps long messages linear.
            let prefix = rest
                .text
                .char_indices()
                .nth(limit + 1)
                .map_or(rest.text.len(), |(i, _)| i);
            let chunk = split(&rest.slice(0..prefix), limit, |_| 1)
                .into_iter()
                .next()
                .expect("trimmed non-empty text gives a chunk");
            let written = render(&chunk);
            let len = written.chars().count();
            if len <= DISCORD_MAX_TEXT {
                break (chunk, written);
            }
            let chars = chunk.text.chars().count();
            if chars <= 1 {
                // Not reachable with the limits above; kept so the loop always ends.
                break (
                    StyledText::plain(&chunk.text),
                    render(&StyledText::plain(&chunk.text)),
                );
            }
            // `chars * MAX / len < chars` as `len > MAX`: every retry is smaller.
            limit = (chars * DISCORD_MAX_TEXT / len).clamp(1, chars - 1);
        };
        parts.push(written);
        // The chunk is `rest`'s text from its first character on (`rest` is trimmed).
        rest = rest.slice(chunk.text.len()..rest.text.len()).trimmed();
    }
    parts
}

/// One part as Discord markdown, without a length limit.
pub(super) fn render(styled: &StyledText) -> String {
    let text = styled.text.as_str();
    let mut lines: Vec<Range<usize>> = Vec::new();
    let mut start = 0;
    for (i, _) in text.match_indices('\n') {
        lines.push(start..i);
        start = i + 1;
    }
    lines.push(start..text.len());

    let covers = |line: &Range<usize>, span: &crate::format::Span| {
        if line.is_empty() {
            span.start <= line.start && line.start < span.end
        } else {
            span.start < line.end && span.end > line.start
        }
    };
    let quoted: Vec<bool> = lines
        .iter()
        .map(|line| {
            styled
                .spans
                .iter()
                .any(|span| matches!(span.style, Style::Blockquote { .. }) && covers(line, span))
        })
        .collect();
    // Code blocks cover whole lines; one inside a quote is written as quoted text.
    let pre: Vec<Option<Option<&str>>> = lines
        .iter()
        .zip(&quoted)
        .map(|(line, &quoted)| {
            if quoted {
                return None;
            }
            styled.spans.iter().find_map(|span| match &span.style {
                Style::Pre { language } if covers(line, span) => Some(
                    language
                        .as_deref()
                        .filter(|language| is_valid_language(language)),
                ),
                _ => None,
            })
        })
        .collect();

    let mut out = String::with_capacity(text.len() + text.len() / 8);
    let mut i = 0;
    while i < lines.len() {
        if i > 0 {
            out.push('\n');
        }
        if let Some(language) = pre[i] {
            let mut group_last = i;
            while group_last + 1 < lines.len() && pre[group_last + 1].is_some() {
                group_last += 1;
            }
            // A code block's first and last lines must have text (Discord drops blank
            // ones; they are written as empty lines around it), and nothing can escape a
            // ``` inside it.
            let mut last = group_last;
            let mut first = i;
            while first <= last && lines[first].is_empty() {
                first += 1;
            }
            while last > first && lines[last].is_empty() {
                last -= 1;
            }
            let code = (first <= last).then(|| &text[lines[first].start..lines[last].end]);
            if let Some(code) = code.filter(|code| !code.contains("```")) {
                for _ in i..first {
                    out.push('\n');
                }
                out.push_str("```");
                out.push_str(language.unwrap_or(""));
                out.push('\n');
                out.push_str(code);
                out.push_str("\n```");
                for _ in last..group_last {
                    out.push('\n');
                }
                i = group_last + 1;
                continue;
            }
        }
        if quoted[i] {
            out.push_str("> ");
        }
        out.push_str(&render_line(styled, lines[i].clone()));
        i += 1;
    }
    out
}

/// How much formatting a line is written with; each level drops what might have made
/// the one before it read back wrongly.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Level {
    Full,
    /// Italics as `_x_`, which do not merge with a `**` beside them (`*a***b**` does).
    UnderscoreItalic,
    NoItalic,
    CodeAndLinks,
    Plain,
}

/// One line's inline markdown, the first [`Level`] whose reading gives back the text.
fn render_line(styled: &StyledText, line: Range<usize>) -> String {
    let text = &styled.text[line.clone()];
    let mut written = String::new();
    for level in [
        Level::Full,
        Level::UnderscoreItalic,
        Level::NoItalic,
        Level::CodeAndLinks,
        Level::Plain,
    ] {
        written = write_line(styled, line.clone(), level);
        if inline_text(&written) == text {
            break;
        }
    }
    written
}

/// An inline piece of a line: a style over a range of it (offsets within the line).
#[derive(Clone, Debug)]
struct Piece {
    style: Style,
    range: Range<usize>,
}

fn write_line(styled: &StyledText, line: Range<usize>, level: Level) -> String {
    let text = &styled.text[line.clone()];
    let mut pieces: Vec<Piece> = styled
        .spans
        .iter()
        .filter(|span| !span.style.is_block())
        .filter(|span| match span.style {
            Style::Italic => level < Level::NoItalic,
            Style::Code | Style::Link { .. } => level < Level::Plain,
            _ => level < Level::CodeAndLinks,
        })
        .filter_map(|span| {
            let start = span.start.max(line.start) - line.start;
            let end = span.end.min(line.end).saturating_sub(line.start);
            shrink(text, start..end).map(|range| Piece {
                style: span.style.clone(),
                range,
            })
        })
        .collect();

    // Code: content with a run of backticks cannot be fenced without ``` (Discord's code
    // block), so it is sent as text.
    pieces.retain(|piece| piece.style != Style::Code || !text[piece.range.clone()].contains("``"));
    // Links: http(s) only, of a reasonable length, not overlapping, and never masking
    // text that itself looks like a link (Discord refuses those; a URL as its own text
    // is written out below).
    pieces.retain_mut(|piece| match &piece.style {
        Style::Link { href } => match checked_link(href, DISCORD_LINK_SCHEMES) {
            Some(href) if href.len() <= MAX_HREF && !text[piece.range.clone()].contains("://") => {
                piece.style = Style::Link { href };
                true
            }
            _ => false,
        },
        _ => true,
    });
    pieces = merge(pieces);
    let mut links_end = 0;
    pieces.sort_by_key(|piece| (piece.range.start, Reverse(piece.range.end)));
    pieces.retain(|piece| {
        if !matches!(piece.style, Style::Link { .. }) {
            return true;
        }
        let keep = piece.range.start >= links_end;
        if keep {
            links_end = piece.range.end;
        }
        keep
    });

    // Atomic pieces: code, and URLs outside code.
    let mut atoms: Vec<Range<usize>> = pieces
        .iter()
        .filter(|piece| piece.style == Style::Code)
        .map(|piece| piece.range.clone())
        .collect();
    let urls: Vec<Range<usize>> = urls(text)
        .into_iter()
        .filter(|url| {
            !atoms
                .iter()
                .any(|code| code.start < url.end && url.start < code.end)
        })
        .collect();
    atoms.extend(urls.iter().cloned());
    let mut clipped = Vec::with_capacity(pieces.len());
    for mut piece in pieces {
        if piece.style != Style::Code {
            for atom in &atoms {
                let inside = piece.range.start <= atom.start && atom.end <= piece.range.end;
                if inside || atom.end <= piece.range.start || piece.range.end <= atom.start {
                    continue;
                }
                if atom.start <= piece.range.start {
                    piece.range.start = atom.end.min(piece.range.end);
                } else {
                    piece.range.end = atom.start;
                }
            }
            match shrink(text, piece.range.clone()) {
                Some(range) => piece.range = range,
                None => continue,
            }
        }
        clipped.push(piece);
    }
    for url in urls {
        clipped.push(Piece {
            style: Style::Link {
                href: String::new(),
            },
            range: url,
        });
    }
    write_pieces(text, clipped, level == Level::UnderscoreItalic)
}

/// `range` without whitespace at its ends, if anything is left: emphasis next to a
/// space does not open or close in Discord.
fn shrink(text: &str, range: Range<usize>) -> Option<Range<usize>> {
    if range.start >= range.end {
        return None;
    }
    let inner = &text[range.clone()];
    let start = range.start + (inner.len() - inner.trim_start().len());
    let end = range.start + inner.trim_end().len();
    (start < end).then_some(start..end)
}

/// Pieces of the same style that overlap or touch, as one.
fn merge(mut pieces: Vec<Piece>) -> Vec<Piece> {
    pieces.sort_by_key(|piece| piece.range.start);
    let mut merged: Vec<Piece> = Vec::with_capacity(pieces.len());
    for piece in pieces {
        match merged
            .iter_mut()
            .rev()
            .find(|kept| kept.style == piece.style && kept.range.end >= piece.range.start)
        {
            Some(kept) => kept.range.end = kept.range.end.max(piece.range.end),
            None => merged.push(piece),
        }
    }
    merged
}

/// URLs written out in `text` that Discord would show as links, as it finds them
/// (`https?://`, up to whitespace or `<`, less trailing punctuation), without `>` so they
/// can be written as `<url>`.
fn urls(text: &str) -> Vec<Range<usize>> {
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = text[from..].find("http").map(|i| from + i) {
        let rest = &text[at..];
        let scheme = if rest.starts_with("https://") {
            8
        } else if rest.starts_with("http://") {
            7
        } else {
            from = at + 4;
            continue;
        };
        let after = &rest[scheme..];
        let run = after
            .find(|c: char| c.is_whitespace() || c == '<' || c == '>')
            .unwrap_or(after.len());
        let kept = after[..run].trim_end_matches(['.', ',', ':', ';', '"', '\'', ')', ']']);
        let end = at + scheme + kept.len();
        if kept.chars().count() >= 2 && checked_link(&text[at..end], DISCORD_LINK_SCHEMES).is_some()
        {
            found.push(at..end);
            from = end;
        } else {
            from = at + scheme;
        }
    }
    found
}

/// Writes a line's pieces, well nested: pieces that overlap without nesting are closed
/// and reopened around each other. A `Link` with an empty href is a written-out URL.
/// Italics are written `_x_` with `underscore_italic`.
fn write_pieces(text: &str, mut pieces: Vec<Piece>, underscore_italic: bool) -> String {
    // Outer pieces first: earlier start, then longer, then links outermost and italics
    // innermost (so `***x***` reads as bold around italic).
    let rank = |style: &Style| match style {
        Style::Link { .. } => 0,
        Style::Spoiler => 1,
        Style::Strikethrough => 2,
        Style::Underline => 3,
        Style::Bold => 4,
        Style::Italic => 5,
        _ => 6,
    };
    pieces.sort_by_key(|piece| {
        (
            piece.range.start,
            Reverse(piece.range.end),
            rank(&piece.style),
        )
    });
    let mut points: Vec<usize> = pieces
        .iter()
        .flat_map(|piece| [piece.range.start, piece.range.end])
        .chain([0, text.len()])
        .collect();
    points.sort_unstable();
    points.dedup();

    let mut out = String::with_capacity(text.len() + 16);
    let mut open: Vec<&Piece> = Vec::new();
    let mut next = 0;
    let mut line_start = true;
    for (k, &pos) in points.iter().enumerate() {
        if let Some(first) = open.iter().position(|piece| piece.range.end <= pos) {
            for piece in open[first..].iter().rev() {
                out.push_str(&close(&piece.style, underscore_italic));
            }
            let continuing: Vec<&Piece> = open
                .drain(first..)
                .filter(|piece| piece.range.end > pos)
                .collect();
            for piece in continuing {
                out.push_str(opening(&piece.style, underscore_italic));
                open.push(piece);
            }
        }
        let mut atom = None;
        while let Some(piece) = pieces.get(next).filter(|piece| piece.range.start == pos) {
            match &piece.style {
                Style::Code => atom = Some(piece),
                Style::Link { href } if href.is_empty() => atom = Some(piece),
                style => {
                    out.push_str(opening(style, underscore_italic));
                    open.push(piece);
                }
            }
            next += 1;
        }
        let Some(&to) = points.get(k + 1) else {
            break;
        };
        let segment = &text[pos..to];
        match atom {
            Some(piece) if piece.style == Style::Code => write_code(segment, &mut out),
            Some(_) => {
                out.push('<');
                out.push_str(segment);
                out.push('>');
            }
            None => escape(segment, line_start && out.is_empty(), &mut out),
        }
        line_start = false;
    }
    debug_assert!(open.is_empty());
    out
}

fn opening(style: &Style, underscore_italic: bool) -> &'static str {
    match style {
        Style::Italic if underscore_italic => "_",
        Style::Bold => "**",
        Style::Italic => "*",
        Style::Underline => "__",
        Style::Strikethrough => "~~",
        Style::Spoiler => "||",
        Style::Link { .. } => "[",
        _ => "",
    }
}

fn close(style: &Style, underscore_italic: bool) -> String {
    match style {
        // `<…>` keeps `)` and `(` in the target from ending the link early; the target
        // was normalised by `checked_link`, so it has no `>` or space.
        Style::Link { href } => format!("](<{href}>)"),
        style => opening(style, underscore_italic).to_owned(),
    }
}

/// Inline code: one backtick, or two when the code has one (runs of two or more were
/// turned into text before); a space keeps a backtick at the edge off the fence.
fn write_code(code: &str, out: &mut String) {
    let fence = if code.contains('`') { "``" } else { "`" };
    out.push_str(fence);
    if code.starts_with('`') {
        out.push(' ');
    }
    out.push_str(code);
    if code.ends_with('`') {
        out.push(' ');
    }
    out.push_str(fence);
}

/// Text shown as written: markup characters escaped, `://` broken up so Discord does not
/// link what we did not (`\:`), and at the very start of a line, the `.` of a number
/// (`1.` would start a list).
fn escape(text: &str, at_line_start: bool, out: &mut String) {
    let mut number_start = at_line_start;
    let mut chars = text.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        if number_start && c == ' ' {
            out.push(c);
            continue;
        }
        if number_start && c.is_ascii_digit() {
            let digits = text[i..].len()
                - text[i..]
                    .trim_start_matches(|d: char| d.is_ascii_digit())
                    .len();
            out.push_str(&text[i..i + digits]);
            for _ in 1..digits {
                chars.next();
            }
            if text[i + digits..].starts_with('.') {
                out.push('\\');
            }
            number_start = false;
            continue;
        }
        number_start = false;
        if ESCAPED.contains(&c) || (c == ':' && text[i + 1..].starts_with("//")) {
            out.push('\\');
        }
        out.push(c);
    }
}
