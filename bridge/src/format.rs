//! One message model for every platform.
//!
//! Every platform carries formatting its own way: Matrix as an HTML subset
//! (`formatted_body`, format `org.matrix.custom.html`), Telegram as plain text plus
//! entity ranges (received) or a small HTML dialect (sent), Discord as Markdown, e-mail as
//! HTML or plain text. Everything goes through one intermediate form, [`StyledText`]: the
//! plain text exactly as a reader sees it, plus styled byte ranges ([`Span`]s) over it.
//! Plain text + ranges is what Telegram itself uses; it makes splitting a long message a
//! matter of cutting a string and clipping ranges; and each platform needs only a reader
//! into it and a renderer out of it.
//!
//! The platform-neutral parts live here:
//! - [`matrix_html`]: Matrix HTML → [`StyledText`] (sanitised by ammonia, then laid out
//!   as a browser would: lists, headings, quotes, whitespace), keeping to what the target
//!   platform can show ([`Target`]);
//! - [`split`]: cutting styled text into chunks within a platform's limit, measured in the
//!   platform's own unit (UTF-16 code units for Telegram, characters for Discord, …);
//! - [`render_html`]: [`StyledText`] → HTML in a dialect ([`HtmlDialect`]); the Matrix
//!   dialect is here, other platforms bring their own;
//! - [`sanitise`]: [`sanitise_matrix_html`], the Matrix spec's allow-list, for HTML that
//!   came from a remote platform and is about to be posted into a room.
//!
//! Platform renderers live beside their connector (`connector/telegram/format.rs`).
//!
//! Safety does not rest on escaping alone: untrusted Matrix HTML is first sanitised by
//! `ammonia` (a real HTML5 parser), and the HTML written in either direction is
//! *generated* from `Style` values and escaped text, never copied from the input, so no
//! attribute or tag we did not write can reach a client.
//!
//! Everything here is pure: no I/O, no logging, no clock.

use std::ops::Range;

pub mod matrix_html;
pub mod render_html;
pub mod sanitise;

pub mod split;

pub use matrix_html::{Open, Target, from_matrix_html, from_matrix_message};
pub use render_html::{HtmlDialect, MatrixHtml, render_html, to_matrix_html};
pub use sanitise::sanitise_matrix_html;

pub use split::split;

/// URL schemes the Matrix spec lets `<a href>` use in `formatted_body`.
pub const MATRIX_LINK_SCHEMES: &[&str] = &["http", "https", "ftp", "mailto", "magnet"];

/// A formatting both sides understand. Link targets and languages have been checked
/// before a `Style` is built, so rendering only has to escape them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Style {
    Bold,
    Italic,
    Underline,
    Strikethrough,
    Spoiler,
    Code,
    Pre { language: Option<String> },
    Link { href: String },
    Blockquote { expandable: bool },
}

impl Style {
    /// Which of two styles covering exactly the same text is written outermost: blocks
    /// outside inline styles, and `code` innermost since nothing may sit inside it.
    pub fn nesting_rank(&self) -> u8 {
        match self {
            Style::Blockquote { .. } => 0,
            Style::Pre { .. } => 1,
            Style::Link { .. } => 2,
            Style::Bold
            | Style::Italic
            | Style::Underline
            | Style::Strikethrough
            | Style::Spoiler => 3,
            Style::Code => 4,
        }
    }

    /// Rendered as a block: starts and ends its own line.
    pub fn is_block(&self) -> bool {
        matches!(self, Style::Pre { .. } | Style::Blockquote { .. })
    }
}

/// A style over `text[start..end]` (byte offsets, always on char boundaries).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Span {
    pub style: Style,
    pub start: usize,
    pub end: usize,
}

/// Plain text plus the styles over it; spans may nest or overlap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StyledText {
    pub text: String,
    pub spans: Vec<Span>,
}

impl StyledText {
    pub fn plain(text: &str) -> Self {
        StyledText {
            text: text.to_owned(),
            spans: Vec::new(),
        }
    }

    /// The part of this text in `range` (byte offsets on char boundaries), with spans
    /// clipped to it; spans left empty are dropped.
    pub fn slice(&self, range: Range<usize>) -> StyledText {
        let spans = self
            .spans
            .iter()
            .filter_map(|span| {
                let start = span.start.max(range.start);
                let end = span.end.min(range.end);
                (start < end).then(|| Span {
                    style: span.style.clone(),
                    start: start - range.start,
                    end: end - range.start,
                })
            })
            .collect();
        StyledText {
            text: self.text[range].to_owned(),
            spans,
        }
    }

    /// Each character as `f` rewrites it (given the character after it, if any) or drops it,
    /// with every span moved to hold what became of the characters it held: text cleaned
    /// after reading keeps its styles in place (cleaning `text` alone would leave the spans
    /// pointing past it).
    pub fn map_chars(&self, mut f: impl FnMut(char, Option<char>) -> Option<char>) -> StyledText {
        let mut text = String::with_capacity(self.text.len());
        // Where each old character boundary lands in the new text, by old byte offset.
        let mut moved = vec![0; self.text.len() + 1];
        let mut chars = self.text.char_indices().peekable();
        while let Some((at, c)) = chars.next() {
            moved[at] = text.len();
            if let Some(c) = f(c, chars.peek().map(|&(_, next)| next)) {
                text.push(c);
            }
        }
        moved[self.text.len()] = text.len();
        let spans = self
            .spans
            .iter()
            .filter_map(|span| {
                let (start, end) = (moved[span.start], moved[span.end]);
                (start < end).then(|| Span {
                    style: span.style.clone(),
                    start,
                    end,
                })
            })
            .collect();
        StyledText { text, spans }
    }

    /// Without leading and trailing whitespace, which platforms strip anyway and which
    /// would otherwise count against their length limits.
    pub fn trimmed(&self) -> StyledText {
        let start = self.text.len() - self.text.trim_start().len();
        let end = self.text.trim_end().len().max(start);
        self.slice(start..end)
    }
}

/// The language of a `class="language-x …"` attribute, if it is a plausible one.
pub fn code_language(class: &str) -> Option<&str> {
    class
        .split_ascii_whitespace()
        .find_map(|class| class.strip_prefix("language-"))
        .filter(|language| is_valid_language(language))
}

/// Language names are identifiers like `rust`, `c++`, `objective-c`, `c#`; anything else
/// is not worth carrying into an attribute.
pub fn is_valid_language(language: &str) -> bool {
    (1..=32).contains(&language.len())
        && language
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '#' | '.' | '_'))
}

/// `href` as a normalised absolute URL, if it is one with one of `schemes`. Normalising
/// (as by the `url` crate: percent-encoding spaces and quotes, dropping tabs and newlines)
/// keeps a platform from rejecting the whole message over a sloppy link.
pub fn checked_link(href: &str, schemes: &[&str]) -> Option<String> {
    let url = ammonia::Url::parse(href).ok()?;
    schemes.contains(&url.scheme()).then(|| url.into())
}

/// `s` cut after its first `max_chars` characters, with "…" where it was cut (so a cut
/// text is `max_chars + 1` characters long; offers quote the start of a visitor's message,
/// not all of it).
pub fn truncate_chars(s: &str, max_chars: usize) -> String {
    match s.char_indices().nth(max_chars) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// The length of `text` in UTF-16 code units (Telegram's and JavaScript's unit).
pub fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

#[cfg(test)]
pub(crate) mod tests;
