//! Cutting styled text into chunks within a platform's length limit.
//!
//! A text longer than the limit is split at a paragraph break (blank line), else a line
//! break, else a space — a paragraph or line break is only used if it falls in the second
//! half of the chunk, so chunks stay reasonably full — and only as a last resort inside a
//! word (still between characters, so never inside a UTF-16 surrogate pair, and not before
//! a combining mark or inside a ZWJ emoji sequence). The whitespace at a split point is
//! dropped, so the chunks' texts, concatenated with that whitespace put back, are the whole
//! text. Splitting happens on the plain text before any markup is written, so a split
//! never falls inside a tag or a character reference; a style that spans the split point
//! is clipped to each chunk, so the renderer closes it at the end of one chunk and reopens
//! it at the start of the next and every chunk is valid on its own.

use super::StyledText;

/// Splits trimmed styled text into chunks of at most `max_units` each, where a char
/// counts `units(c)` (e.g. `char::len_utf16` for Telegram's UTF-16 code units, `|_| 1`
/// for a limit in characters, `char::len_utf8` for bytes). Chunks are trimmed and never
/// empty. A single char (or cluster, see the module docs) longer than `max_units` is
/// still a chunk of its own: splitting always progresses.
pub fn split(styled: &StyledText, max_units: usize, units: fn(char) -> usize) -> Vec<StyledText> {
    let text = styled.text.as_str();
    let mut chunks = Vec::new();
    let mut start = 0;
    loop {
        start += text[start..].len() - text[start..].trim_start().len();
        if start >= text.len() {
            break;
        }
        let limit = fit(text, start, max_units, units);
        if limit == text.len() {
            chunks.push(styled.slice(start..limit).trimmed());
            break;
        }
        let (end, next) = split_point(text, start, limit);
        chunks.push(styled.slice(start..end).trimmed());
        start = next;
    }
    chunks
}

/// The largest char boundary `limit` such that `text[start..limit]` is at most
/// `max_units`, but at least one char past `start` so splitting progresses.
fn fit(text: &str, start: usize, max_units: usize, units: fn(char) -> usize) -> usize {
    let mut used = 0;
    for (i, c) in text[start..].char_indices() {
        used += units(c);
        if used > max_units {
            return if i == 0 {
                start + c.len_utf8()
            } else {
                start + i
            };
        }
    }
    text.len()
}

/// Where to cut `text[start..]` when only `text[start..limit]` fits: returns the end of
/// this chunk and the start of the next one (the whitespace between them is dropped).
fn split_point(text: &str, start: usize, limit: usize) -> (usize, usize) {
    // A break only counts if this chunk keeps at least half of what would fit.
    let half = start + (limit - start) / 2;
    let mut paragraph = None;
    let mut line = None;
    let mut word = None;

    // Walk the whitespace runs starting within (start, limit]; a run may extend past
    // `limit`, which is fine because the whitespace itself is dropped.
    let mut chars = text[start..]
        .char_indices()
        .map(|(i, c)| (start + i, c))
        .peekable();
    while let Some((i, c)) = chars.next() {
        if i > limit {
            break;
        }
        if !c.is_whitespace() {
            continue;
        }
        let mut newlines = usize::from(c == '\n');
        let mut run_end = i + c.len_utf8();
        while let Some(&(j, d)) = chars.peek() {
            if !d.is_whitespace() {
                break;
            }
            newlines += usize::from(d == '\n');
            run_end = j + d.len_utf8();
            chars.next();
        }
        if i == start {
            continue;
        }
        word = Some((i, run_end));
        if i >= half && newlines >= 1 {
            line = Some((i, run_end));
        }
        if i >= half && newlines >= 2 {
            paragraph = Some((i, run_end));
        }
    }
    paragraph.or(line).or(word).unwrap_or_else(|| {
        let cut = grapheme_safe_cut(text, start, limit);
        (cut, cut)
    })
}

/// Moves a mid-word cut back so that it does not separate a character from a combining
/// mark, variation selector, skin-tone modifier or zero-width joiner that belongs to it
/// (unless the whole chunk is one such cluster).
fn grapheme_safe_cut(text: &str, start: usize, limit: usize) -> usize {
    let mut cut = limit;
    while cut > start {
        let next = text[cut..].chars().next();
        let prev = text[..cut].chars().next_back();
        let joined = next.is_some_and(is_cluster_continuation) || prev == Some('\u{200D}');
        if !joined {
            return cut;
        }
        cut -= prev.map_or(0, char::len_utf8);
    }
    limit
}

/// Whether `c` continues the grapheme cluster before it (the cases that matter for chat
/// text; a full segmentation would need the Unicode tables of `unicode-segmentation`).
pub fn is_cluster_continuation(c: char) -> bool {
    matches!(c,
        '\u{0300}'..='\u{036F}'       // combining diacritical marks
        | '\u{1AB0}'..='\u{1AFF}'
        | '\u{1DC0}'..='\u{1DFF}'
        | '\u{20D0}'..='\u{20FF}'
        | '\u{FE00}'..='\u{FE0F}'     // variation selectors
        | '\u{FE20}'..='\u{FE2F}'
        | '\u{200D}'                  // zero-width joiner
        | '\u{1F3FB}'..='\u{1F3FF}'   // skin-tone modifiers
        | '\u{E0020}'..='\u{E007F}'   // tag characters (flag sequences)
    )
}
