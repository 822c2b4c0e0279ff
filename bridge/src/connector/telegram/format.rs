//! Telegram's formats: the HTML dialect we send (`parse_mode = HTML`) and the entities we
//! receive.
//!
//! Telegram carries formatting either as plain text plus [`MessageEntity`] ranges (what
//! we receive) or as a much smaller HTML dialect than Matrix's (what we send). Both go
//! through the shared model in [`crate::format`]: Matrix HTML is read into a
//! [`StyledText`] within what Telegram can show ([`TELEGRAM`]), split by UTF-16 length and
//! written in Telegram's dialect ([`TelegramHtml`]); entities become a [`StyledText`] that
//! is written as Matrix HTML.
//!
//! Everything here is pure: no I/O, no logging, no clock.

use std::borrow::Cow;

use teloxide::types::{MessageEntity, MessageEntityKind};

mod html_reader;
use html_reader::{HtmlToken, html_tokens};

use crate::format::render_html::escape_attribute;
use crate::format::{
    HtmlDialect, MATRIX_LINK_SCHEMES, Open, Span, Style, StyledText, Target, checked_link,
    from_matrix_message, is_valid_language, render_html, split, to_matrix_html, utf16_len,
};

/// Telegram's limit on a text message, counted in UTF-16 code units after entity parsing.
pub const TELEGRAM_MAX_TEXT: usize = 4096;

/// A Matrix message (plain `body`, optional `formatted_body` HTML) → one or more Telegram
/// HTML-mode texts (for `parse_mode = HTML`), each within [`TELEGRAM_MAX_TEXT`] once parsed.
///
/// - The HTML is sanitised first with `ammonia`, keeping only what Telegram supports:
///   `b`/`strong`, `i`/`em`, `u`/`ins`, `s`/`strike`/`del`, `code`, `pre` (with
///   `<code class="language-x">` for the language), `a href` (schemes `http`, `https`,
///   `mailto` and `tg` only), `blockquote`, and spoilers (`tg-spoiler`, or Matrix's
///   `<span data-mx-spoiler>`; a spoiler *reason* is kept as "(reason) " before it).
///   Links are normalised (as by the `url` crate: `https://a.example` gains a trailing `/`,
///   spaces and quotes are percent-encoded) so Telegram does not reject the message.
///   Every other element is unwrapped to its text; `script`, `style` and `mx-reply` are
///   removed with their content (Matrix reply fallbacks must not be relayed). Telegram's
///   nesting rules are enforced: nothing inside `code`/`pre`, only bold/italic/underline/
///   strikethrough/spoiler inside a link, no blockquote inside a blockquote.
/// - Structure Telegram lacks is mapped to text: whitespace collapses as in a browser;
///   `<br>` is a newline; paragraphs, headings, lists, `pre`, `blockquote`, `hr` and tables
///   are separated by a blank line; `<li>` becomes a `• ` line (`N. ` in an `<ol>`, honouring
///   `start`; nested lists are indented two spaces per level); `<h1>`–`<h6>` become a bold
///   line; `<img>` becomes its `alt` text (Matrix custom emoji); table cells are joined by
///   ` | `, one row a line.
/// - Text is escaped as Telegram requires (`&lt;` `&gt;` `&amp;`, and `&quot;` in attributes).
/// - With no `formatted_body`, `body` is sent as escaped plain text. If `formatted_body`
///   has no visible text at all, `body` is used instead (minus its plain reply fallback,
///   when the HTML carried an `<mx-reply>`).
/// - Leading and trailing whitespace is dropped (Telegram trims it anyway).
/// - A text longer than [`TELEGRAM_MAX_TEXT`] is split at a paragraph break (blank line),
///   else a line break, else a space — a paragraph or line break is only used if it falls in
///   the second half of the chunk, so chunks stay reasonably full — and only as a last resort
///   inside a word (still between characters, never inside a surrogate pair, and not before
///   a combining mark or inside a ZWJ emoji sequence). The whitespace at a split point is
///   dropped, so the chunks' plain texts, concatenated with that whitespace put back, are the
///   whole plain text. A split never falls inside a tag or a character reference (`&amp;`),
///   because splitting happens on the plain text before any HTML is written; a style that
///   spans the split point is closed at the end of one chunk and reopened at the start of
///   the next, so every chunk is valid on its own.
///
/// Returns an empty `Vec` when there is nothing visible to send (Telegram rejects empty
/// texts). The plain-text `body` reply fallback (`> <@alice:example.org> …` lines) is *not*
/// stripped when there is no `formatted_body`, since only the caller knows whether the event
/// is a reply; strip it first if the event has `m.relates_to.m.in_reply_to`.
pub fn matrix_to_telegram_html(body: &str, formatted_body: Option<&str>) -> Vec<String> {
    let styled = from_matrix_message(body, formatted_body, &TELEGRAM);
    split(&styled.trimmed(), TELEGRAM_MAX_TEXT, char::len_utf16)
        .iter()
        .map(|chunk| render_html(chunk, &TelegramHtml))
        .collect()
}

/// A Telegram message (text + entities, offsets and lengths in UTF-16 code units) →
/// Matrix `(body, Some(formatted_body))`, or `(body, None)` when there is no formatting.
///
/// Bold, italic, underline, strikethrough, spoiler (`<span data-mx-spoiler>`), code,
/// pre (with its language as `<pre><code class="language-x">`), text links, URLs written
/// with an `http`/`https`/`ftp`/`mailto`/`magnet` scheme, and (expandable) blockquotes map to
/// the Matrix HTML subset; newlines outside `pre` become `<br>` (except one directly beside
/// a `pre` or `blockquote`, which already starts its own line). Mentions, hashtags,
/// cashtags, bot commands, e-mail addresses, phone numbers, text mentions and custom emoji
/// stay plain text, as do links whose scheme Matrix clients should not follow
/// (`javascript:`, `tg://`, …). Overlapping entities are split into well-formed nested
/// elements. The HTML is generated, not copied: text is escaped and only the attributes
/// listed above are written.
///
/// `body` is `text` unchanged. Entity offsets that fall outside the text or inside a
/// surrogate pair are clamped rather than trusted.
pub fn telegram_to_matrix(text: &str, entities: &[MessageEntity]) -> (String, Option<String>) {
    let index = Utf16Index::new(text);
    let spans: Vec<Span> = entities
        .iter()
        .filter_map(|entity| {
            let start = index.byte_offset(entity.offset);
            let end = index.byte_offset(entity.offset.saturating_add(entity.length));
            if start >= end {
                return None;
            }
            let style = matrix_style_for(&entity.kind, &text[start..end])?;
            Some(Span { style, start, end })
        })
        .collect();
    if spans.is_empty() {
        return (text.to_owned(), None);
    }
    let styled = StyledText {
        text: text.to_owned(),
        spans,
    };
    (text.to_owned(), Some(to_matrix_html(&styled)))
}

/// The length of a Telegram HTML string's plain text, as Telegram would display it,
/// in UTF-16 code units: tags removed, character references (`&lt;`, `&#128512;`, …)
/// decoded. No trimming is applied (texts from [`matrix_to_telegram_html`] are already
/// trimmed).
pub fn telegram_html_plain_len(html: &str) -> usize {
    html_tokens(html)
        .iter()
        .map(|token| match token {
            HtmlToken::Text(text) => utf16_len(text),
            HtmlToken::Start { .. } | HtmlToken::End { .. } => 0,
        })
        .sum()
}

// ---------------------------------------------------------------------------------------
// Matrix → Telegram
// ---------------------------------------------------------------------------------------

/// URL schemes Telegram accepts in `<a href>` (it rejects the whole message otherwise).
pub const TELEGRAM_LINK_SCHEMES: &[&str] = &["http", "https", "mailto", "tg"];

/// What Telegram can show, for reading Matrix HTML.
pub const TELEGRAM: Target = Target {
    link_schemes: TELEGRAM_LINK_SCHEMES,
    may_open: telegram_may_open,
};

/// Telegram's nesting rules: nothing inside code/pre; only simple formatting inside a
/// link; blockquotes don't nest.
fn telegram_may_open(style: &Style, open: Open) -> bool {
    if open.verbatim > 0 {
        return false;
    }
    match style {
        Style::Bold | Style::Italic | Style::Underline | Style::Strikethrough | Style::Spoiler => {
            true
        }
        Style::Link { .. } | Style::Code | Style::Pre { .. } => open.links == 0,
        Style::Blockquote { .. } => open.links == 0 && open.quotes == 0,
    }
}

/// Telegram's `parse_mode = HTML`: newlines are literal, a small fixed tag set.
#[derive(Clone, Copy, Debug, Default)]
pub struct TelegramHtml;

impl HtmlDialect for TelegramHtml {
    fn tags(&self, style: &Style) -> (Cow<'static, str>, &'static str) {
        let fixed = |open: &'static str, close| (Cow::Borrowed(open), close);
        match style {
            Style::Bold => fixed("<b>", "</b>"),
            Style::Italic => fixed("<i>", "</i>"),
            Style::Underline => fixed("<u>", "</u>"),
            Style::Strikethrough => fixed("<s>", "</s>"),
            Style::Spoiler => fixed("<tg-spoiler>", "</tg-spoiler>"),
            Style::Code => fixed("<code>", "</code>"),
            // Telegram's way of giving a code block its language.
            Style::Pre {
                language: Some(language),
            } => (
                Cow::Owned(format!(
                    "<pre><code class=\"language-{}\">",
                    escape_attribute(language)
                )),
                "</code></pre>",
            ),
            Style::Pre { language: None } => fixed("<pre>", "</pre>"),
            Style::Link { href } => (
                Cow::Owned(format!("<a href=\"{}\">", escape_attribute(href))),
                "</a>",
            ),
            Style::Blockquote { expandable: true } => {
                fixed("<blockquote expandable>", "</blockquote>")
            }
            Style::Blockquote { expandable: false } => fixed("<blockquote>", "</blockquote>"),
        }
    }

    fn newline_is_br(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------
// Telegram entities → StyledText
// ---------------------------------------------------------------------------------------

/// The Matrix style for a Telegram entity over `text`, or `None` to leave it plain.
fn matrix_style_for(kind: &MessageEntityKind, text: &str) -> Option<Style> {
    Some(match kind {
        MessageEntityKind::Bold => Style::Bold,
        MessageEntityKind::Italic => Style::Italic,
        MessageEntityKind::Underline => Style::Underline,
        MessageEntityKind::Strikethrough => Style::Strikethrough,
        MessageEntityKind::Spoiler => Style::Spoiler,
        MessageEntityKind::Code => Style::Code,
        MessageEntityKind::Pre { language } => Style::Pre {
            language: language
                .as_deref()
                .filter(|l| is_valid_language(l))
                .map(str::to_owned),
        },
        MessageEntityKind::Blockquote => Style::Blockquote { expandable: false },
        MessageEntityKind::ExpandableBlockquote => Style::Blockquote { expandable: true },
        MessageEntityKind::TextLink { url } if MATRIX_LINK_SCHEMES.contains(&url.scheme()) => {
            Style::Link {
                href: url.as_str().to_owned(),
            }
        }
        // Telegram also marks bare `example.com` as a URL; without a scheme there is no
        // safe target, and Matrix clients linkify such text themselves.
        MessageEntityKind::Url => {
            return checked_link(text, MATRIX_LINK_SCHEMES).map(|href| Style::Link { href });
        }
        MessageEntityKind::TextLink { .. }
        | MessageEntityKind::Mention
        | MessageEntityKind::Hashtag
        | MessageEntityKind::Cashtag
        | MessageEntityKind::BotCommand
        | MessageEntityKind::Email
        | MessageEntityKind::PhoneNumber
        | MessageEntityKind::TextMention { .. }
        | MessageEntityKind::CustomEmoji { .. } => return None,
    })
}

/// Maps UTF-16 offsets (Telegram's unit) to byte offsets in a `str`.
struct Utf16Index {
    /// `(utf16 offset, byte offset)` of every char boundary, including the end.
    boundaries: Vec<(usize, usize)>,
}

impl Utf16Index {
    fn new(text: &str) -> Self {
        let mut boundaries = Vec::with_capacity(text.len() + 1);
        let mut units = 0;
        for (byte, c) in text.char_indices() {
            boundaries.push((units, byte));
            units += c.len_utf16();
        }
        boundaries.push((units, text.len()));
        Utf16Index { boundaries }
    }

    /// The byte offset of the first char boundary at or after UTF-16 offset `units`
    /// (so an offset inside a surrogate pair moves past the pair, and one beyond the
    /// text clamps to its end).
    fn byte_offset(&self, units: usize) -> usize {
        let i = self.boundaries.partition_point(|&(u, _)| u < units);
        self.boundaries
            .get(i)
            .map_or_else(|| self.boundaries.last().map_or(0, |b| b.1), |b| b.1)
    }
}

#[cfg(test)]
mod tests;
