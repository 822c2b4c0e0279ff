//! Message formatting between Matrix and Telegram.
//!
//! Matrix carries formatting as an HTML subset (`formatted_body`, format
//! `org.matrix.custom.html`); Telegram carries it either as plain text plus
//! [`MessageEntity`] ranges (what we receive) or as a much smaller HTML dialect
//! sent with `parse_mode = HTML` (what we send). Both directions go through one
//! intermediate form, `StyledText`: the plain text exactly as a reader sees it,
//! plus styled byte ranges over it. Plain text + ranges is what Telegram itself
//! uses, it makes splitting a long message a matter of cutting a string and
//! clipping ranges, and it lets one renderer emit both HTML dialects.
//!
//! Safety does not rest on escaping alone: untrusted Matrix HTML is first
//! sanitised by `ammonia` (a real HTML5 parser), and the HTML we emit in either
//! direction is *generated* from `Style` values and escaped text, never copied
//! from the input, so no attribute or tag we did not write can reach a client.
//!
//! Everything here is pure: no I/O, no logging, no clock.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::sync::LazyLock;

use teloxide::types::{MessageEntity, MessageEntityKind};

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
    let styled = match formatted_body {
        Some(html) => {
            let styled = styled_from_matrix_html(html);
            if styled.text.is_empty() {
                // Nothing visible survived sanitising (e.g. only an image without alt
                // text): the plain body is the sender's own description of the message.
                let body = if contains_reply_fallback(html) {
                    strip_plain_reply_fallback(body)
                } else {
                    body
                };
                StyledText::plain(body)
            } else {
                styled
            }
        }
        None => StyledText::plain(body),
    };
    split_styled(&styled.trimmed(), TELEGRAM_MAX_TEXT)
        .iter()
        .map(|chunk| render_html(chunk, Flavour::Telegram))
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
    (text.to_owned(), Some(render_html(&styled, Flavour::Matrix)))
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
// The intermediate form
// ---------------------------------------------------------------------------------------

/// A formatting both sides understand. Link targets and languages have been checked
/// before a `Style` is built, so rendering only has to escape them.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Style {
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
    fn nesting_rank(&self) -> u8 {
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
    fn is_block(&self) -> bool {
        matches!(self, Style::Pre { .. } | Style::Blockquote { .. })
    }
}

/// A style over `text[start..end]` (byte offsets, always on char boundaries).
#[derive(Clone, Debug, PartialEq, Eq)]
struct Span {
    style: Style,
    start: usize,
    end: usize,
}

/// Plain text plus the styles over it; spans may nest or overlap.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct StyledText {
    text: String,
    spans: Vec<Span>,
}

impl StyledText {
    fn plain(text: &str) -> Self {
        StyledText {
            text: text.to_owned(),
            spans: Vec::new(),
        }
    }

    /// The part of this text in `range` (byte offsets on char boundaries), with spans
    /// clipped to it; spans left empty are dropped.
    fn slice(&self, range: Range<usize>) -> StyledText {
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

    /// Without leading and trailing whitespace, which Telegram would strip anyway and
    /// which would otherwise count against the length limit.
    fn trimmed(&self) -> StyledText {
        let start = self.text.len() - self.text.trim_start().len();
        let end = self.text.trim_end().len().max(start);
        self.slice(start..end)
    }
}

// ---------------------------------------------------------------------------------------
// Matrix HTML → StyledText
// ---------------------------------------------------------------------------------------

/// URL schemes Telegram accepts in `<a href>` (it rejects the whole message otherwise).
const TELEGRAM_LINK_SCHEMES: &[&str] = &["http", "https", "mailto", "tg"];

/// URL schemes the Matrix spec lets `<a href>` use in `formatted_body`.
const MATRIX_LINK_SCHEMES: &[&str] = &["http", "https", "ftp", "mailto", "magnet"];

/// The sanitiser for incoming Matrix HTML. Built once: the configuration is fixed.
///
/// It keeps the formatting Telegram can show plus the structural elements we turn into
/// text layout (paragraphs, lists, headings, tables); everything else is unwrapped to its
/// text by ammonia, or removed with its content for `script`, `style` and `mx-reply`.
static MATRIX_SANITIZER: LazyLock<ammonia::Builder<'static>> = LazyLock::new(|| {
    let tags: HashSet<&str> = [
        // Formatting with a Telegram equivalent.
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "code",
        "pre",
        "a",
        "blockquote",
        "tg-spoiler",
        "span",
        // Structure we lay out as text.
        "p",
        "div",
        "br",
        "hr",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "ul",
        "ol",
        "li",
        "img",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "th",
        "td",
        "caption",
    ]
    .into_iter()
    .collect();
    let tag_attributes: HashMap<&str, HashSet<&str>> = [
        ("a", ["href"].into_iter().collect()),
        ("code", ["class"].into_iter().collect()),
        ("ol", ["start"].into_iter().collect()),
        // Matrix custom emoji are images whose alt text is the shortcode; the source
        // (an mxc:// URL) is useless on Telegram and is not kept.
        ("img", ["alt"].into_iter().collect()),
        ("span", ["data-mx-spoiler"].into_iter().collect()),
    ]
    .into_iter()
    .collect();
    let mut builder = ammonia::Builder::empty();
    builder
        .tags(tags)
        .clean_content_tags(["script", "style", "mx-reply"].into_iter().collect())
        .tag_attributes(tag_attributes)
        .generic_attributes(HashSet::new())
        .url_schemes(TELEGRAM_LINK_SCHEMES.iter().copied().collect())
        .url_relative(ammonia::UrlRelative::Deny)
        .link_rel(None)
        .attribute_filter(|element, attribute, value| match (element, attribute) {
            ("code", "class") => {
                code_language(value).map(|lang| Cow::Owned(format!("language-{lang}")))
            }
            ("ol", "start") => value
                .trim()
                .parse::<u32>()
                .ok()
                .map(|n| Cow::Owned(n.to_string())),
            _ => Some(Cow::Borrowed(value)),
        });
    builder
});

/// Sanitises Matrix HTML and lays it out as Telegram-compatible styled text.
fn styled_from_matrix_html(html: &str) -> StyledText {
    let clean = MATRIX_SANITIZER.clean(html).to_string();
    let mut layout = Layout::default();
    for token in html_tokens(&clean) {
        match token {
            HtmlToken::Text(text) => layout.text(&text),
            HtmlToken::Start { name, attrs } => layout.start_element(&name, &attrs),
            HtmlToken::End { name } => layout.end_element(&name),
        }
    }
    layout.finish()
}

/// An element open during layout.
#[derive(Debug)]
struct Frame {
    name: String,
    /// Index into the output spans of the style this element opened, if any.
    span: Option<usize>,
    /// Line breaks wanted after the element (1 = new line, 2 = blank line).
    breaks_after: usize,
    /// A `<pre>`: whitespace inside is kept as written.
    preformatted: bool,
    /// Whether any text has been written inside this element yet.
    has_text: bool,
    /// A `<ul>`/`<ol>`: pop the list counter on close.
    list: bool,
}

#[derive(Debug)]
struct ListState {
    /// `Some(next number)` for `<ol>`, `None` for `<ul>`.
    next_number: Option<u64>,
}

/// Turns the token stream of *sanitised* HTML into styled text, doing what a browser's
/// layout would do with whitespace and block elements.
///
/// Line breaks and spaces are not written when an element asks for them but when the next
/// visible text (or styled element) arrives: that way a paragraph break before a blockquote
/// ends up outside the quote, runs of block boundaries produce one blank line rather than
/// several, and nothing dangles at the end.
#[derive(Debug, Default)]
struct Layout {
    out: StyledText,
    frames: Vec<Frame>,
    lists: Vec<ListState>,
    /// Collapsed whitespace waiting to become a single space.
    pending_space: bool,
    /// Newlines the text should end with before anything else is written.
    pending_breaks: usize,
    /// Just wrote a list marker: block breaks inside the item (`<li><p>`) must not push
    /// its text away from the marker.
    after_list_marker: bool,
    /// Cells seen so far in the current table row.
    row_cells: usize,
    /// Open `<pre>` elements (whitespace is kept inside them).
    pre_depth: usize,
    /// Open spans by kind, for Telegram's nesting rules.
    open_verbatim: usize,
    open_links: usize,
    open_quotes: usize,
}

impl Layout {
    fn start_element(&mut self, name: &str, attrs: &[(String, String)]) {
        let attr = |wanted: &str| {
            attrs
                .iter()
                .find(|(key, _)| key == wanted)
                .map(|(_, value)| value.as_str())
        };

        // Void elements: they have no end tag and open no frame.
        match name {
            "br" => {
                self.flush_breaks();
                self.pending_space = false;
                self.push_raw("\n");
                return;
            }
            "hr" => {
                self.request_breaks(2);
                return;
            }
            "img" => {
                if let Some(alt) = attr("alt") {
                    self.text(alt);
                }
                return;
            }
            _ => {}
        }

        let mut frame = Frame {
            name: name.to_owned(),
            span: None,
            breaks_after: 0,
            preformatted: false,
            has_text: false,
            list: false,
        };
        let style = match name {
            "b" | "strong" => Some(Style::Bold),
            "i" | "em" => Some(Style::Italic),
            "u" | "ins" => Some(Style::Underline),
            "s" | "strike" | "del" => Some(Style::Strikethrough),
            "tg-spoiler" => Some(Style::Spoiler),
            "span" => match attr("data-mx-spoiler") {
                Some(reason) => {
                    // Telegram spoilers carry no reason; show it the way Matrix clients
                    // do, in front of the hidden text.
                    let reason = reason.trim();
                    if !reason.is_empty() {
                        self.text(&format!("({reason}) "));
                    }
                    Some(Style::Spoiler)
                }
                None => None,
            },
            "code" => {
                if self.set_pre_language(attr("class")) {
                    None
                } else {
                    Some(Style::Code)
                }
            }
            "a" => attr("href")
                .and_then(|href| checked_link(href, TELEGRAM_LINK_SCHEMES))
                .map(|href| Style::Link { href }),
            "p" | "table" => {
                self.block(&mut frame, 2);
                None
            }
            "div" | "tr" | "caption" | "thead" | "tbody" | "tfoot" => {
                if name == "tr" {
                    self.row_cells = 0;
                }
                self.block(&mut frame, 1);
                None
            }
            "td" | "th" => {
                if self.row_cells > 0 {
                    self.text(" | ");
                }
                self.row_cells += 1;
                None
            }
            "h1" | "h2" | "h3" | "h4" | "h5" | "h6" => {
                self.block(&mut frame, 2);
                Some(Style::Bold)
            }
            "blockquote" => {
                self.block(&mut frame, 2);
                Some(Style::Blockquote { expandable: false })
            }
            "pre" => {
                self.block(&mut frame, 2);
                frame.preformatted = true;
                Some(Style::Pre { language: None })
            }
            "ul" | "ol" => {
                // A nested list continues its parent item on the next line; a top-level
                // list is a block of its own.
                let breaks = if self.lists.is_empty() { 2 } else { 1 };
                self.block(&mut frame, breaks);
                frame.list = true;
                let next_number =
                    (name == "ol").then(|| attr("start").and_then(|s| s.parse().ok()).unwrap_or(1));
                self.lists.push(ListState { next_number });
                None
            }
            "li" => {
                self.list_marker();
                frame.breaks_after = 1;
                None
            }
            // `span` without a spoiler, and anything else ammonia let through: transparent.
            _ => None,
        };
        if frame.preformatted {
            self.pre_depth += 1;
        }
        if let Some(style) = style
            && self.may_open(&style)
        {
            self.flush_breaks();
            self.flush_space();
            self.count_open(&style, 1);
            frame.span = Some(self.out.spans.len());
            let start = self.out.text.len();
            // The end is set when the element closes.
            self.out.spans.push(Span {
                style,
                start,
                end: usize::MAX,
            });
        }
        self.frames.push(frame);
    }

    fn end_element(&mut self, name: &str) {
        // Sanitised HTML is well formed, so this is normally the top frame; closing
        // everything above it keeps the span stack consistent regardless.
        let Some(position) = self.frames.iter().rposition(|frame| frame.name == name) else {
            return;
        };
        while self.frames.len() > position {
            let frame = self.frames.pop().expect("frames.len() > position >= 0");
            self.close(frame);
        }
    }

    fn close(&mut self, frame: Frame) {
        if let Some(index) = frame.span {
            if frame.preformatted {
                // Code blocks written in Markdown end with a newline that is not part
                // of the code; Telegram would show it as an empty last line.
                let start = self.out.spans[index].start;
                let kept = self.out.text[start..].trim_end_matches('\n').len();
                self.out.text.truncate(start + kept);
                // Only spans opened after this one can reach into the removed text.
                let len = self.out.text.len();
                for span in &mut self.out.spans[index..] {
                    span.start = span.start.min(len);
                    if span.end != usize::MAX {
                        span.end = span.end.min(len);
                    }
                }
            }
            self.out.spans[index].end = self.out.text.len();
            let style = self.out.spans[index].style.clone();
            self.count_open(&style, -1);
        }
        if frame.preformatted {
            self.pre_depth -= 1;
        }
        if frame.list {
            self.lists.pop();
        }
        self.request_breaks(frame.breaks_after);
    }

    fn finish(mut self) -> StyledText {
        while let Some(frame) = self.frames.pop() {
            self.close(frame);
        }
        self.out.spans.retain(|span| span.start < span.end);
        self.out
    }

    /// Writes text content: collapsed like HTML outside `<pre>`, verbatim inside.
    fn text(&mut self, text: &str) {
        if self.pre_depth > 0 {
            let mut text = text;
            // HTML drops a newline directly after `<pre>` (and serialisers add one back
            // when the content starts with a newline).
            if let Some(top) = self.frames.last()
                && top.preformatted
                && !top.has_text
            {
                text = text.strip_prefix('\n').unwrap_or(text);
            }
            if text.is_empty() {
                return;
            }
            self.flush_breaks();
            self.flush_space();
            self.push_raw(text);
            return;
        }
        for c in text.chars() {
            if is_html_whitespace(c) {
                self.pending_space = true;
            } else {
                self.flush_breaks();
                self.flush_space();
                let mut buf = [0; 4];
                self.push_raw(c.encode_utf8(&mut buf));
            }
        }
    }

    /// Appends to the output as is, marking the open elements as non-empty.
    fn push_raw(&mut self, text: &str) {
        self.out.text.push_str(text);
        self.after_list_marker = false;
        // A frame with text implies its ancestors have text too, so stop at the first
        // marked one: this keeps deeply nested input linear.
        for frame in self.frames.iter_mut().rev() {
            if frame.has_text {
                break;
            }
            frame.has_text = true;
        }
    }

    /// Starts a block element that wants `breaks` newlines before and after it.
    fn block(&mut self, frame: &mut Frame, breaks: usize) {
        self.request_breaks(breaks);
        frame.breaks_after = breaks;
    }

    fn request_breaks(&mut self, breaks: usize) {
        self.pending_breaks = self.pending_breaks.max(breaks);
    }

    /// Makes the text end with the pending number of newlines (never at the very start,
    /// and not between a list marker and its item's text).
    fn flush_breaks(&mut self) {
        if self.pending_breaks == 0 {
            return;
        }
        let wanted = std::mem::take(&mut self.pending_breaks);
        self.pending_space = false;
        if self.after_list_marker || self.out.text.is_empty() {
            return;
        }
        let present = self
            .out
            .text
            .chars()
            .rev()
            .take_while(|&c| c == '\n')
            .count();
        for _ in present..wanted {
            self.out.text.push('\n');
        }
    }

    fn flush_space(&mut self) {
        if std::mem::take(&mut self.pending_space)
            && self
                .out
                .text
                .chars()
                .next_back()
                .is_some_and(|c| !c.is_whitespace())
        {
            self.push_raw(" ");
        }
    }

    /// Starts a list item on its own line with its bullet or number, indented by depth.
    fn list_marker(&mut self) {
        self.after_list_marker = false;
        self.request_breaks(1);
        self.flush_breaks();
        let depth = self.lists.len().max(1);
        let marker = match self
            .lists
            .last_mut()
            .and_then(|list| list.next_number.as_mut())
        {
            Some(number) => {
                let marker = format!("{number}. ");
                *number += 1;
                marker
            }
            None => "• ".to_owned(),
        };
        let indent = "  ".repeat(depth - 1);
        self.push_raw(&format!("{indent}{marker}"));
        self.after_list_marker = true;
    }

    /// `<code class="language-x">` directly inside a `<pre>` that has no text yet gives
    /// the block its language (Telegram's own `<pre><code class>` convention). Returns
    /// whether this `<code>` belongs to a `<pre>` and so must not open a style of its own.
    fn set_pre_language(&mut self, class: Option<&str>) -> bool {
        let Some(top) = self.frames.last() else {
            return false;
        };
        if !top.preformatted {
            // `code` deeper inside a `pre` opens nothing either, via `may_open`.
            return false;
        }
        if let (false, Some(index), Some(language)) =
            (top.has_text, top.span, class.and_then(code_language))
        {
            self.out.spans[index].style = Style::Pre {
                language: Some(language.to_owned()),
            };
        }
        true
    }

    /// Telegram's nesting rules: nothing inside code/pre; only simple formatting inside a
    /// link; blockquotes don't nest. A style that may not open leaves its text in place.
    fn may_open(&self, style: &Style) -> bool {
        if self.open_verbatim > 0 {
            return false;
        }
        match style {
            Style::Bold
            | Style::Italic
            | Style::Underline
            | Style::Strikethrough
            | Style::Spoiler => true,
            Style::Link { .. } | Style::Code | Style::Pre { .. } => self.open_links == 0,
            Style::Blockquote { .. } => self.open_links == 0 && self.open_quotes == 0,
        }
    }

    /// Keeps the per-kind counts of open spans that `may_open` consults.
    fn count_open(&mut self, style: &Style, delta: isize) {
        let counter = match style {
            // Code and pre show their content verbatim; Telegram drops entities inside.
            Style::Code | Style::Pre { .. } => &mut self.open_verbatim,
            Style::Link { .. } => &mut self.open_links,
            Style::Blockquote { .. } => &mut self.open_quotes,
            _ => return,
        };
        *counter = counter.saturating_add_signed(delta);
    }
}

/// Whitespace that HTML collapses (not U+00A0, which is meant to stay).
fn is_html_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\r' | '\x0C')
}

/// The language of a `class="language-x …"` attribute, if it is a plausible one.
fn code_language(class: &str) -> Option<&str> {
    class
        .split_ascii_whitespace()
        .find_map(|class| class.strip_prefix("language-"))
        .filter(|language| is_valid_language(language))
}

/// Language names are identifiers like `rust`, `c++`, `objective-c`, `c#`; anything else
/// is not worth carrying into an attribute.
fn is_valid_language(language: &str) -> bool {
    (1..=32).contains(&language.len())
        && language
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '#' | '.' | '_'))
}

/// `href` as a normalised absolute URL, if it is one with one of `schemes`. A second check
/// after ammonia's for Matrix input, and the only one for Telegram input. Normalising
/// (percent-encoding spaces and quotes, dropping tabs and newlines) keeps Telegram from
/// rejecting the whole message over a sloppy link.
fn checked_link(href: &str, schemes: &[&str]) -> Option<String> {
    let url = ammonia::Url::parse(href).ok()?;
    schemes.contains(&url.scheme()).then(|| url.into())
}

fn contains_reply_fallback(html: &str) -> bool {
    html.to_ascii_lowercase().contains("<mx-reply")
}

/// `body` without its reply fallback: the leading `> ` quote lines and the blank line after.
fn strip_plain_reply_fallback(body: &str) -> &str {
    if !body.starts_with('>') {
        return body;
    }
    let mut rest = body;
    while rest.starts_with('>') {
        rest = rest.split_once('\n').map_or("", |(_, tail)| tail);
    }
    rest.strip_prefix('\n').unwrap_or(rest)
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

// ---------------------------------------------------------------------------------------
// Splitting
// ---------------------------------------------------------------------------------------

/// Splits trimmed styled text into chunks of at most `max_units` UTF-16 code units each
/// (see [`matrix_to_telegram_html`] for where splits fall). Chunks are trimmed and never
/// empty.
fn split_styled(styled: &StyledText, max_units: usize) -> Vec<StyledText> {
    let text = styled.text.as_str();
    let mut chunks = Vec::new();
    let mut start = 0;
    loop {
        start += text[start..].len() - text[start..].trim_start().len();
        if start >= text.len() {
            break;
        }
        let limit = fit_utf16(text, start, max_units);
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
/// `max_units` UTF-16 units, but at least one char past `start` so splitting progresses.
fn fit_utf16(text: &str, start: usize, max_units: usize) -> usize {
    let mut units = 0;
    for (i, c) in text[start..].char_indices() {
        units += c.len_utf16();
        if units > max_units {
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

fn is_cluster_continuation(c: char) -> bool {
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

// ---------------------------------------------------------------------------------------
// StyledText → HTML
// ---------------------------------------------------------------------------------------

/// Which HTML dialect to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flavour {
    /// Telegram's `parse_mode = HTML`: newlines are literal, a small fixed tag set.
    Telegram,
    /// Matrix `org.matrix.custom.html`: newlines are `<br>` outside `<pre>`.
    Matrix,
}

/// Writes styled text as HTML. Spans that overlap without nesting are closed and
/// reopened around each other, so the output is always well formed.
fn render_html(styled: &StyledText, flavour: Flavour) -> String {
    let text = styled.text.as_str();
    let mut spans: Vec<&Span> = styled
        .spans
        .iter()
        .filter(|span| span.start < span.end)
        .collect();
    // Outer spans first: earlier start, then longer, then block before inline.
    spans.sort_by_key(|span| (span.start, Reverse(span.end), span.style.nesting_rank()));

    let mut points: Vec<usize> = spans
        .iter()
        .flat_map(|span| [span.start, span.end])
        .collect();
    points.extend([0, text.len()]);
    points.sort_unstable();
    points.dedup();

    // Where a block (pre, blockquote) starts or ends; only Matrix output needs it.
    let mut block_edges: Vec<usize> = spans
        .iter()
        .filter(|span| flavour == Flavour::Matrix && span.style.is_block())
        .flat_map(|span| [span.start, span.end])
        .collect();
    block_edges.sort_unstable();

    let mut html = String::with_capacity(text.len() + text.len() / 4);
    let mut open: Vec<&Span> = Vec::new();
    let mut next_span = 0;
    for (k, &pos) in points.iter().enumerate() {
        // Close spans ending here, and re-open the spans that were inside them but go on.
        if let Some(first) = open.iter().position(|span| span.end <= pos) {
            for span in open[first..].iter().rev() {
                close_tag(&span.style, flavour, &mut html);
            }
            let continuing: Vec<&Span> =
                open.drain(first..).filter(|span| span.end > pos).collect();
            for span in continuing {
                open_tag(&span.style, flavour, &mut html);
                open.push(span);
            }
        }
        while let Some(&span) = spans.get(next_span).filter(|span| span.start == pos) {
            open_tag(&span.style, flavour, &mut html);
            open.push(span);
            next_span += 1;
        }
        if let Some(&next) = points.get(k + 1) {
            let in_pre = open
                .iter()
                .any(|span| matches!(span.style, Style::Pre { .. }));
            let mut piece = &text[pos..next];
            if flavour == Flavour::Matrix && !in_pre {
                // In HTML a block element already starts on a new line; a `<br>` for the
                // newline beside it would add an empty line Telegram did not show.
                let block_at = |at: usize| block_edges.binary_search(&at).is_ok();
                if block_at(pos) {
                    piece = piece.strip_prefix('\n').unwrap_or(piece);
                }
                if block_at(next) {
                    piece = piece.strip_suffix('\n').unwrap_or(piece);
                }
            }
            escape_text(piece, flavour, in_pre, &mut html);
        }
    }
    debug_assert!(
        open.is_empty(),
        "every span ends at or before the end of the text"
    );
    html
}

fn open_tag(style: &Style, flavour: Flavour, html: &mut String) {
    html.push_str(&tags(style, flavour).0);
}

fn close_tag(style: &Style, flavour: Flavour, html: &mut String) {
    html.push_str(tags(style, flavour).1);
}

/// The opening and closing markup of a style in one dialect. Attribute values are
/// escaped here; they were validated when the `Style` was built.
fn tags(style: &Style, flavour: Flavour) -> (Cow<'static, str>, &'static str) {
    use Flavour::{Matrix, Telegram};
    let fixed = |open: &'static str, close| (Cow::Borrowed(open), close);
    match (style, flavour) {
        (Style::Bold, Telegram) => fixed("<b>", "</b>"),
        (Style::Bold, Matrix) => fixed("<strong>", "</strong>"),
        (Style::Italic, Telegram) => fixed("<i>", "</i>"),
        (Style::Italic, Matrix) => fixed("<em>", "</em>"),
        (Style::Underline, _) => fixed("<u>", "</u>"),
        (Style::Strikethrough, Telegram) => fixed("<s>", "</s>"),
        (Style::Strikethrough, Matrix) => fixed("<del>", "</del>"),
        (Style::Spoiler, Telegram) => fixed("<tg-spoiler>", "</tg-spoiler>"),
        (Style::Spoiler, Matrix) => fixed("<span data-mx-spoiler>", "</span>"),
        (Style::Code, _) => fixed("<code>", "</code>"),
        // Both dialects give a code block its language this way.
        (
            Style::Pre {
                language: Some(language),
            },
            _,
        ) => (
            Cow::Owned(format!(
                "<pre><code class=\"language-{}\">",
                escape_attribute(language)
            )),
            "</code></pre>",
        ),
        (Style::Pre { language: None }, Telegram) => fixed("<pre>", "</pre>"),
        // Matrix clients style code blocks written as `<pre><code>`.
        (Style::Pre { language: None }, Matrix) => fixed("<pre><code>", "</code></pre>"),
        (Style::Link { href }, _) => (
            Cow::Owned(format!("<a href=\"{}\">", escape_attribute(href))),
            "</a>",
        ),
        (Style::Blockquote { expandable: true }, Telegram) => {
            fixed("<blockquote expandable>", "</blockquote>")
        }
        // Matrix has no collapsed quotes; the content matters more than the folding.
        (Style::Blockquote { .. }, _) => fixed("<blockquote>", "</blockquote>"),
    }
}

fn escape_text(text: &str, flavour: Flavour, in_pre: bool, html: &mut String) {
    for c in text.chars() {
        match c {
            '&' => html.push_str("&amp;"),
            '<' => html.push_str("&lt;"),
            '>' => html.push_str("&gt;"),
            '\n' if flavour == Flavour::Matrix && !in_pre => html.push_str("<br>"),
            c => html.push(c),
        }
    }
}

fn escape_attribute(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            c => escaped.push(c),
        }
    }
    escaped
}

fn utf16_len(text: &str) -> usize {
    text.chars().map(char::len_utf16).sum()
}

// ---------------------------------------------------------------------------------------
// A small tokenizer for simple, well-formed HTML
// ---------------------------------------------------------------------------------------

/// One piece of simple HTML, with character references already decoded.
#[derive(Clone, Debug, PartialEq, Eq)]
enum HtmlToken {
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

/// Tokenizes the two kinds of HTML this module reads: ammonia's serialised output
/// (canonical: quoted attributes, escaped text, no comments) and Telegram HTML (which we
/// wrote ourselves). It is not a general HTML parser and does not need to be: anything it
/// does not recognise as a tag is kept as text, which the renderers escape again.
fn html_tokens(html: &str) -> Vec<HtmlToken> {
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

    // -----------------------------------------------------------------------------------
    // Test helpers
    // -----------------------------------------------------------------------------------

    /// The single Telegram text for a message that fits in one chunk.
    fn to_telegram(html: &str) -> String {
        let chunks = matrix_to_telegram_html("fallback body", Some(html));
        assert_eq!(chunks.len(), 1, "expected one chunk, got {chunks:?}");
        let chunk = chunks.into_iter().next().expect("one chunk");
        parse_telegram_html(&chunk);
        chunk
    }

    /// What Telegram does with a `parse_mode = HTML` text: plain text plus entities
    /// (UTF-16 offsets). Panics on anything Telegram would reject — an unknown tag,
    /// an unescaped `<`, `>` or `&`, an unsupported named entity, unbalanced or crossed
    /// tags — so it doubles as a validity check for every chunk we produce.
    fn parse_telegram_html(html: &str) -> (String, Vec<MessageEntity>) {
        assert_escaped(html);
        let mut text = String::new();
        let mut units = 0;
        let mut entities = Vec::new();
        // (tag name, entity kind if any, start offset)
        let mut stack: Vec<(String, Option<MessageEntityKind>, usize)> = Vec::new();
        for token in html_tokens(html) {
            match token {
                HtmlToken::Text(t) => {
                    units += utf16_len(&t);
                    text.push_str(&t);
                }
                HtmlToken::Start { name, attrs } => {
                    let attr =
                        |key: &str| attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
                    let kind = match name.as_str() {
                        "b" | "strong" => MessageEntityKind::Bold,
                        "i" | "em" => MessageEntityKind::Italic,
                        "u" | "ins" => MessageEntityKind::Underline,
                        "s" | "strike" | "del" => MessageEntityKind::Strikethrough,
                        "tg-spoiler" => MessageEntityKind::Spoiler,
                        "a" => {
                            let href = attr("href").expect("a without href");
                            let url = ammonia::Url::parse(&href).expect("absolute link");
                            assert!(
                                TELEGRAM_LINK_SCHEMES.contains(&url.scheme()),
                                "scheme of {href}"
                            );
                            MessageEntityKind::TextLink { url }
                        }
                        "blockquote" if attr("expandable").is_some() => {
                            MessageEntityKind::ExpandableBlockquote
                        }
                        "blockquote" => MessageEntityKind::Blockquote,
                        "pre" => MessageEntityKind::Pre { language: None },
                        "code" => {
                            let in_pre = matches!(stack.last(), Some((n, _, start)) if n == "pre" && *start == units);
                            if in_pre {
                                let language = attr("class")
                                    .and_then(|c| c.strip_prefix("language-").map(str::to_owned));
                                if let Some((_, Some(MessageEntityKind::Pre { language: l }), _)) =
                                    stack.last_mut()
                                {
                                    *l = language;
                                }
                                stack.push((name, None, units));
                                continue;
                            }
                            MessageEntityKind::Code
                        }
                        other => panic!("Telegram does not support <{other}> in {html:?}"),
                    };
                    stack.push((name, Some(kind), units));
                }
                HtmlToken::End { name } => {
                    let (open, kind, start) = stack
                        .pop()
                        .unwrap_or_else(|| panic!("stray </{name}> in {html:?}"));
                    assert_eq!(open, name, "crossed tags in {html:?}");
                    if let Some(kind) = kind
                        && units > start
                    {
                        entities.push(MessageEntity::new(kind, start, units - start));
                    }
                }
            }
        }
        assert!(stack.is_empty(), "unclosed tags {stack:?} in {html:?}");
        (text, entities)
    }

    /// Every `&` starts a reference Telegram knows (the four named ones, or numeric), every
    /// `<` starts a tag and every `>` ends one: text characters are all escaped.
    fn assert_escaped(html: &str) {
        let mut rest = html;
        while let Some(amp) = rest.find('&') {
            rest = &rest[amp + 1..];
            let end = rest
                .find(';')
                .unwrap_or_else(|| panic!("unterminated & in {html:?}"));
            let name = &rest[..end];
            let numeric = name.strip_prefix('#').is_some_and(|n| {
                n.parse::<u32>().is_ok()
                    || n.strip_prefix('x')
                        .is_some_and(|h| u32::from_str_radix(h, 16).is_ok())
            });
            assert!(
                matches!(name, "lt" | "gt" | "amp" | "quot") || numeric,
                "&{name}; in {html:?}"
            );
        }
        let mut in_tag = false;
        for (i, c) in html.char_indices() {
            match c {
                '<' => {
                    assert!(!in_tag, "< inside a tag in {html:?}");
                    let next = html[i + 1..].trim_start_matches('/');
                    assert!(
                        next.starts_with(|c: char| c.is_ascii_alphabetic()),
                        "bare < in {html:?}"
                    );
                    in_tag = true;
                }
                '>' => {
                    assert!(in_tag, "bare > in {html:?}");
                    in_tag = false;
                }
                _ => {}
            }
        }
        assert!(!in_tag, "unterminated tag in {html:?}");
    }

    /// Checks that Matrix HTML we produced is well formed and uses only the elements and
    /// attributes we mean to write.
    fn assert_well_formed_matrix_html(html: &str) {
        assert_escaped(html);
        let mut stack = Vec::new();
        for token in html_tokens(html) {
            match token {
                HtmlToken::Text(_) => {}
                HtmlToken::Start { name, attrs } => {
                    let allowed: &[&str] = match name.as_str() {
                        "a" => &["href"],
                        "code" => &["class"],
                        "span" => &["data-mx-spoiler"],
                        "strong" | "em" | "u" | "del" | "pre" | "blockquote" | "br" => &[],
                        other => panic!("unexpected <{other}> in {html:?}"),
                    };
                    for (key, _) in &attrs {
                        assert!(
                            allowed.contains(&key.as_str()),
                            "attribute {key} on <{name}> in {html:?}"
                        );
                    }
                    if name != "br" {
                        stack.push(name);
                    }
                }
                HtmlToken::End { name } => {
                    assert_eq!(stack.pop(), Some(name), "crossed tags in {html:?}")
                }
            }
        }
        assert!(stack.is_empty(), "unclosed {stack:?} in {html:?}");
    }

    fn url(s: &str) -> ammonia::Url {
        ammonia::Url::parse(s).expect("test URL")
    }

    fn formatted(text: &str, entities: &[MessageEntity]) -> String {
        let (body, html) = telegram_to_matrix(text, entities);
        assert_eq!(body, text, "body is the plain text unchanged");
        let html = html.expect("formatting expected");
        assert_well_formed_matrix_html(&html);
        html
    }

    // -----------------------------------------------------------------------------------
    // Matrix → Telegram: plain bodies and escaping
    // -----------------------------------------------------------------------------------

    #[test]
    fn plain_body_is_escaped_and_kept_verbatim() {
        let chunks = matrix_to_telegram_html("a < b && c > d\n  indented \"quoted\"", None);
        assert_eq!(
            chunks,
            vec!["a &lt; b &amp;&amp; c &gt; d\n  indented \"quoted\"".to_owned()]
        );
        assert_eq!(
            parse_telegram_html(&chunks[0]).0,
            "a < b && c > d\n  indented \"quoted\""
        );
    }

    #[test]
    fn plain_body_is_trimmed_and_empty_body_sends_nothing() {
        assert_eq!(
            matrix_to_telegram_html("\n  hello \n", None),
            vec!["hello".to_owned()]
        );
        assert!(matrix_to_telegram_html("  \n ", None).is_empty());
        assert!(matrix_to_telegram_html("", None).is_empty());
    }

    #[test]
    fn escaped_markup_in_matrix_html_stays_escaped_text() {
        assert_eq!(
            to_telegram("&lt;b&gt;not bold&lt;/b&gt; &amp;amp;"),
            "&lt;b&gt;not bold&lt;/b&gt; &amp;amp;"
        );
    }

    #[test]
    fn html_entities_are_decoded_to_characters() {
        assert_eq!(
            to_telegram("caf&eacute; &#x1F600; a&nbsp;b"),
            "café 😀 a\u{A0}b"
        );
    }

    // -----------------------------------------------------------------------------------
    // Matrix → Telegram: sanitising
    // -----------------------------------------------------------------------------------

    #[test]
    fn image_with_event_handler_produces_nothing_executable() {
        let chunks =
            matrix_to_telegram_html("x", Some(r#"before <img src=x onerror=alert(1)> after"#));
        assert_eq!(chunks, vec!["before after".to_owned()]);
    }

    #[test]
    fn script_and_style_are_removed_with_their_content() {
        assert_eq!(
            to_telegram("<script>alert(1)</script>hi<style>body{color:red}</style>!"),
            "hi!"
        );
        assert_eq!(to_telegram("<svg><script>alert(1)</script></svg>ok"), "ok");
    }

    #[test]
    fn javascript_and_other_unsafe_links_lose_their_link_but_keep_their_text() {
        for href in [
            "javascript:alert(1)",
            "JaVaScRiPt:alert(1)",
            " javascript:alert(1)",
            "java&#x09;script:alert(1)",
            "data:text/html,<script>alert(1)</script>",
            "vbscript:msgbox(1)",
            "/relative/path",
            "ftp://example.org/file",
        ] {
            let html = format!(r#"<a href="{href}">click</a>"#);
            assert_eq!(to_telegram(&html), "click", "href {href:?}");
        }
    }

    #[test]
    fn event_handlers_and_styles_are_stripped_from_kept_tags() {
        assert_eq!(
            to_telegram(
                r#"<b onclick="alert(1)" style="color:red" class="x">bold</b> <a href="https://example.org/" onmouseover="alert(1)" target="_blank">l</a>"#
            ),
            r#"<b>bold</b> <a href="https://example.org/">l</a>"#
        );
    }

    #[test]
    fn unsupported_elements_are_unwrapped_to_their_text() {
        assert_eq!(
            to_telegram(
                r##"<font color="red">red</font> <sup>up</sup> <span data-mx-color="#ff0000">col</span> <iframe src="https://evil.example"></iframe><details><summary>s</summary>d</details>"##
            ),
            "red up col sd"
        );
    }

    #[test]
    fn matrix_html_with_tags_left_open_still_yields_balanced_output() {
        assert_eq!(to_telegram("<b>bold <i>both"), "<b>bold <i>both</i></b>");
        assert_eq!(to_telegram("<b>a<i>b</b>c</i>"), "<b>a<i>b</i></b><i>c</i>");
    }

    // -----------------------------------------------------------------------------------
    // Matrix → Telegram: formatting
    // -----------------------------------------------------------------------------------

    #[test]
    fn inline_formatting_maps_to_telegram_tags() {
        assert_eq!(
            to_telegram(
                "<strong>b</strong> <b>b</b> <em>i</em> <i>i</i> <u>u</u> <ins>u</ins> <s>s</s> <del>s</del> <strike>s</strike> <code>c</code>"
            ),
            "<b>b</b> <b>b</b> <i>i</i> <i>i</i> <u>u</u> <u>u</u> <s>s</s> <s>s</s> <s>s</s> <code>c</code>"
        );
    }

    #[test]
    fn allowed_link_schemes_are_kept_and_normalised() {
        assert_eq!(
            to_telegram(
                r#"<a href="http://a.example/?x=1&amp;y=&quot;2 3&quot;">h</a> <a href="mailto:me@example.org">m</a> <a href="tg://resolve?domain=x">t</a>"#
            ),
            r#"<a href="http://a.example/?x=1&amp;y=%222%203%22">h</a> <a href="mailto:me@example.org">m</a> <a href="tg://resolve?domain=x">t</a>"#
        );
    }

    #[test]
    fn matrix_spoilers_become_telegram_spoilers() {
        assert_eq!(
            to_telegram("<span data-mx-spoiler>secret</span>"),
            "<tg-spoiler>secret</tg-spoiler>"
        );
        assert_eq!(
            to_telegram(r#"<span data-mx-spoiler="plot">twist</span>"#),
            "(plot) <tg-spoiler>twist</tg-spoiler>"
        );
        assert_eq!(
            to_telegram("<tg-spoiler>t</tg-spoiler>"),
            "<tg-spoiler>t</tg-spoiler>"
        );
    }

    #[test]
    fn code_block_keeps_language_and_whitespace() {
        assert_eq!(
            to_telegram(
                "<pre><code class=\"language-rust\">fn main() {\n    println!(\"&lt;hi&gt;\");\n}\n</code></pre>"
            ),
            "<pre><code class=\"language-rust\">fn main() {\n    println!(\"&lt;hi&gt;\");\n}</code></pre>"
        );
        assert_eq!(
            to_telegram("x<pre>  a\n\n  b</pre>"),
            "x\n\n<pre>  a\n\n  b</pre>"
        );
    }

    #[test]
    fn code_class_other_than_a_language_is_dropped() {
        assert_eq!(
            to_telegram(r#"<pre><code class="hljs">x</code></pre>"#),
            "<pre>x</pre>"
        );
        assert_eq!(
            to_telegram(r#"<pre><code class="language-&quot;onload=x">x</code></pre>"#),
            "<pre>x</pre>"
        );
        // Telegram allows no language on inline code.
        assert_eq!(
            to_telegram(r#"<code class="language-rust">x</code>"#),
            "<code>x</code>"
        );
    }

    #[test]
    fn nesting_telegram_forbids_is_flattened_to_text() {
        assert_eq!(
            to_telegram("<code>a <b>b</b> c</code>"),
            "<code>a b c</code>"
        );
        assert_eq!(to_telegram("<pre>a <i>b</i></pre>"), "<pre>a b</pre>");
        assert_eq!(
            to_telegram(r#"<a href="https://e.example/"><code>x</code> <b>y</b></a>"#),
            r#"<a href="https://e.example/">x <b>y</b></a>"#
        );
        assert_eq!(
            to_telegram("<blockquote>outer<blockquote>inner</blockquote></blockquote>"),
            "<blockquote>outer\n\ninner</blockquote>"
        );
    }

    #[test]
    fn bold_italic_and_code_nest_where_telegram_allows() {
        assert_eq!(
            to_telegram(
                r#"<b>bold <i>both <a href="https://e.example/">link <s>x</s></a></i> <code>c</code></b>"#
            ),
            r#"<b>bold <i>both <a href="https://e.example/">link <s>x</s></a></i> <code>c</code></b>"#
        );
    }

    // -----------------------------------------------------------------------------------
    // Matrix → Telegram: layout
    // -----------------------------------------------------------------------------------

    #[test]
    fn paragraphs_and_line_breaks_become_newlines() {
        assert_eq!(to_telegram("<p>one</p>\n<p>two</p>\n"), "one\n\ntwo");
        assert_eq!(to_telegram("a<br>b<br/><br />c"), "a\nb\n\nc");
        assert_eq!(to_telegram("<div>a</div><div>b</div>"), "a\nb");
    }

    #[test]
    fn source_whitespace_collapses_like_in_a_browser() {
        assert_eq!(
            to_telegram("<p>\n   several\n   words   <b> bold </b>  end\n</p>"),
            "several words <b>bold</b> end"
        );
    }

    #[test]
    fn block_breaks_stay_outside_styles() {
        assert_eq!(
            to_telegram(
                "<p>intro</p><blockquote><p>quoted</p><p>more</p></blockquote><p>after</p>"
            ),
            "intro\n\n<blockquote>quoted\n\nmore</blockquote>\n\nafter"
        );
    }

    #[test]
    fn unordered_lists_become_bullet_lines() {
        assert_eq!(
            to_telegram(
                "<p>Shopping:</p>\n<ul>\n<li>eggs</li>\n<li><b>milk</b></li>\n</ul>\n<p>thanks</p>"
            ),
            "Shopping:\n\n• eggs\n• <b>milk</b>\n\nthanks"
        );
    }

    #[test]
    fn ordered_lists_are_numbered_from_their_start() {
        assert_eq!(to_telegram("<ol><li>a</li><li>b</li></ol>"), "1. a\n2. b");
        assert_eq!(
            to_telegram(r#"<ol start="7"><li>g</li><li>h</li></ol>"#),
            "7. g\n8. h"
        );
    }

    #[test]
    fn nested_and_loose_lists_are_indented_and_kept_tight_to_their_marker() {
        assert_eq!(
            to_telegram("<ul><li>a<ol><li>a1</li><li>a2</li></ol></li><li><p>b</p></li></ul>"),
            "• a\n  1. a1\n  2. a2\n• b"
        );
    }

    #[test]
    fn headings_become_bold_lines() {
        assert_eq!(
            to_telegram("<h1>Title</h1><p>text</p><h3>Sub <i>it</i></h3>more"),
            "<b>Title</b>\n\ntext\n\n<b>Sub <i>it</i></b>\n\nmore"
        );
    }

    #[test]
    fn tables_become_rows_of_cells() {
        assert_eq!(
            to_telegram(
                "<table><tr><th>k</th><th>v</th></tr><tr><td>a</td><td>1</td></tr></table>"
            ),
            "k | v\na | 1"
        );
    }

    #[test]
    fn custom_emoji_images_become_their_alt_text() {
        assert_eq!(
            to_telegram(
                r#"hi <img data-mx-emoticon src="mxc://e.example/abc" alt=":wave:" title=":wave:">"#
            ),
            "hi :wave:"
        );
    }

    #[test]
    fn reply_fallback_is_removed_entirely() {
        let html = r##"<mx-reply><blockquote><a href="https://matrix.to/#/!room:e.example/$event">In reply to</a> <a href="https://matrix.to/#/@bob:e.example">@bob:e.example</a><br>original <b>secret</b></blockquote></mx-reply>my <b>reply</b>"##;
        let body = "> <@bob:e.example> original secret\n\nmy reply";
        assert_eq!(
            matrix_to_telegram_html(body, Some(html)),
            vec!["my <b>reply</b>".to_owned()]
        );
    }

    #[test]
    fn body_is_used_without_its_reply_fallback_when_the_html_shows_nothing() {
        let html =
            r#"<mx-reply><blockquote>quoted</blockquote></mx-reply><img src="mxc://e.example/x">"#;
        let body = "> <@bob:e.example> quoted\n> more\n\nphoto.png";
        assert_eq!(
            matrix_to_telegram_html(body, Some(html)),
            vec!["photo.png".to_owned()]
        );
        assert_eq!(
            matrix_to_telegram_html("a > b", Some("<p> </p>")),
            vec!["a &gt; b".to_owned()]
        );
    }

    // -----------------------------------------------------------------------------------
    // Matrix → Telegram: splitting
    // -----------------------------------------------------------------------------------

    /// Asserts every chunk is valid and within `max`, and that the chunks' plain texts
    /// are `plain` in order with only whitespace dropped between them. Returns the
    /// parsed chunks.
    fn assert_chunks_cover(
        chunks: &[String],
        plain: &str,
        max: usize,
    ) -> Vec<(String, Vec<MessageEntity>)> {
        let mut rest = plain.trim();
        let parsed: Vec<_> = chunks
            .iter()
            .map(|chunk| parse_telegram_html(chunk))
            .collect();
        for (chunk, (text, _)) in chunks.iter().zip(&parsed) {
            assert!(!text.is_empty(), "empty chunk");
            assert_eq!(telegram_html_plain_len(chunk), utf16_len(text));
            assert!(
                telegram_html_plain_len(chunk) <= max,
                "chunk of {} units",
                telegram_html_plain_len(chunk)
            );
            assert_eq!(text.trim(), text, "chunks are trimmed");
            rest = rest
                .strip_prefix(text.as_str())
                .unwrap_or_else(|| panic!("chunk {text:?} out of order"));
            rest = rest.trim_start();
        }
        assert_eq!(rest, "", "all text is covered");
        parsed
    }

    #[test]
    fn long_message_with_formatting_across_split_points_gives_valid_chunks() {
        // ~10 000 characters in paragraphs of sentences, with one bold run and one
        // link that each span several thousand characters, so splits fall inside them.
        let sentence = "The quick brown fox jumps over the lazy dog & <friends>. ";
        let mut html = String::new();
        let mut plain = String::new();
        for p in 0..20 {
            let mut paragraph = String::new();
            for _ in 0..9 {
                paragraph.push_str(sentence);
            }
            let paragraph = paragraph.trim_end().to_owned();
            let escaped = paragraph
                .replace('&', "&amp;")
                .replace('<', "&lt;")
                .replace('>', "&gt;");
            let open = match p {
                3 => "<p><b>",
                11 => r#"<p><a href="https://example.org/a?b=1&amp;c=2">"#,
                _ => "<p>",
            };
            let close = match p {
                9 => "</b></p>",
                14 => "</a></p>",
                _ => "</p>",
            };
            html.push_str(&format!("{open}{escaped}{close}\n"));
            if p > 0 {
                plain.push_str("\n\n");
            }
            plain.push_str(&paragraph);
        }
        assert!(plain.chars().count() > 10_000);

        let chunks = matrix_to_telegram_html(&plain, Some(&html));
        assert_eq!(chunks.len(), 3);
        let parsed = assert_chunks_cover(&chunks, &plain, TELEGRAM_MAX_TEXT);

        // Paragraph breaks were preferred: every chunk ends with a whole sentence.
        for (text, _) in &parsed {
            assert!(
                text.ends_with("<friends>."),
                "chunk ends mid-paragraph: {:?}",
                &text[text.len() - 20..]
            );
        }
        // The bold run is closed at the end of the first chunk and reopened in the second.
        assert!(
            chunks[0].ends_with("</b>"),
            "{}",
            &chunks[0][chunks[0].len() - 30..]
        );
        assert!(chunks[1].starts_with("<b>"));
        assert!(
            parsed[1]
                .1
                .iter()
                .any(|e| e.kind == MessageEntityKind::Bold && e.offset == 0)
        );
        // And so is the link, with its href intact.
        let link = MessageEntityKind::TextLink {
            url: url("https://example.org/a?b=1&c=2"),
        };
        assert!(parsed[1].1.iter().any(|e| e.kind == link));
        assert!(parsed[2].1.iter().any(|e| e.kind == link && e.offset == 0));
    }

    #[test]
    fn long_plain_body_splits_at_lines_then_words() {
        // Lines but no blank lines: split at a line break in the second half.
        let line = "0123456789 ".repeat(9) + "end";
        let body = vec![line.as_str(); 100].join("\n");
        let chunks = matrix_to_telegram_html(&body, None);
        let parsed = assert_chunks_cover(&chunks, &body, TELEGRAM_MAX_TEXT);
        assert!(parsed.iter().all(|(text, _)| text.ends_with("end")));

        // One long line: split between words.
        let words = "word ".repeat(2000);
        let chunks = matrix_to_telegram_html(&words, None);
        let parsed = assert_chunks_cover(&chunks, &words, TELEGRAM_MAX_TEXT);
        assert!(
            parsed
                .iter()
                .all(|(text, _)| text.ends_with("word") && text.starts_with("word"))
        );
    }

    #[test]
    fn character_references_are_never_split() {
        let body = "&".repeat(10_000);
        let chunks = matrix_to_telegram_html(&body, None);
        assert_eq!(chunks.len(), 3);
        assert_chunks_cover(&chunks, &body, TELEGRAM_MAX_TEXT);
        assert!(
            chunks
                .iter()
                .all(|chunk| chunk.replace("&amp;", "").is_empty())
        );
        assert_eq!(telegram_html_plain_len(&chunks[0]), TELEGRAM_MAX_TEXT);
    }

    #[test]
    fn surrogate_pairs_and_emoji_sequences_are_never_split() {
        // 3000 astral-plane emoji, 2 UTF-16 units each, no spaces.
        let body = "😀".repeat(3000);
        let chunks = matrix_to_telegram_html(&body, None);
        assert_chunks_cover(&chunks, &body, TELEGRAM_MAX_TEXT);
        assert_eq!(telegram_html_plain_len(&chunks[0]), TELEGRAM_MAX_TEXT);

        // A family emoji is 4 people joined by ZWJ (11 units); a cut is never inside it.
        let family = "👨\u{200D}👩\u{200D}👧\u{200D}👦";
        let body = family.repeat(1000);
        let chunks = matrix_to_telegram_html(&body, None);
        let parsed = assert_chunks_cover(&chunks, &body, TELEGRAM_MAX_TEXT);
        for (text, _) in parsed {
            assert_eq!(
                text.replace(family, ""),
                "",
                "chunk cut inside a ZWJ sequence"
            );
        }
    }

    #[test]
    fn code_block_across_a_split_is_reopened_with_its_language() {
        let code: String = (0..600).map(|i| format!("let x{i} = {i};\n")).collect();
        let html = format!("<p>intro</p><pre><code class=\"language-rust\">{code}</code></pre>");
        let chunks = matrix_to_telegram_html("", Some(&html));
        assert!(chunks.len() >= 2);
        let parsed = assert_chunks_cover(
            &chunks,
            &format!("intro\n\n{}", code.trim_end()),
            TELEGRAM_MAX_TEXT,
        );
        let pre = MessageEntityKind::Pre {
            language: Some("rust".to_owned()),
        };
        for (text, entities) in &parsed[1..] {
            assert!(
                entities.iter().any(|e| e.kind == pre && e.offset == 0),
                "pre not reopened in {text:.40}"
            );
        }
    }

    #[test]
    fn small_limits_split_styled_text_and_keep_tags_balanced() {
        // Exercise the splitter directly with a tiny limit and heavily nested styles.
        let styled = styled_from_matrix_html(
            r#"<b>aa <i>bb <a href="https://e.example/">cc dd</a> ee</i> ff</b> gg"#,
        );
        let chunks: Vec<String> = split_styled(&styled, 5)
            .iter()
            .map(|c| render_html(c, Flavour::Telegram))
            .collect();
        assert_eq!(
            chunks,
            vec![
                "<b>aa <i>bb</i></b>",
                // Styles covering the same text are written link-outermost.
                r#"<a href="https://e.example/"><b><i>cc dd</i></b></a>"#,
                "<b><i>ee</i> ff</b>",
                "gg",
            ]
        );
        assert_chunks_cover(&chunks, "aa bb cc dd ee ff gg", 5);
    }

    // -----------------------------------------------------------------------------------
    // Telegram → Matrix
    // -----------------------------------------------------------------------------------

    #[test]
    fn text_without_formatting_entities_has_no_formatted_body() {
        let text = "hi @bob #tag $USD /start@bot me@e.example +1 555 0100 e.example";
        let entities = [
            MessageEntity::new(MessageEntityKind::Mention, 3, 4),
            MessageEntity::new(MessageEntityKind::Hashtag, 8, 4),
            MessageEntity::new(MessageEntityKind::Cashtag, 13, 4),
            MessageEntity::new(MessageEntityKind::BotCommand, 18, 10),
            MessageEntity::new(MessageEntityKind::Email, 29, 12),
            MessageEntity::new(MessageEntityKind::PhoneNumber, 42, 11),
            MessageEntity::new(MessageEntityKind::Url, 54, 9),
        ];
        assert_eq!(telegram_to_matrix(text, &entities), (text.to_owned(), None));
        assert_eq!(
            telegram_to_matrix("plain\ntext", &[]),
            ("plain\ntext".to_owned(), None)
        );
    }

    #[test]
    fn formatting_entities_map_to_matrix_html() {
        let text = "b i u s spoiler code";
        let entities = [
            MessageEntity::bold(0, 1),
            MessageEntity::italic(2, 1),
            MessageEntity::underline(4, 1),
            MessageEntity::strikethrough(6, 1),
            MessageEntity::spoiler(8, 7),
            MessageEntity::code(16, 4),
        ];
        assert_eq!(
            formatted(text, &entities),
            "<strong>b</strong> <em>i</em> <u>u</u> <del>s</del> <span data-mx-spoiler>spoiler</span> <code>code</code>"
        );
    }

    #[test]
    fn pre_blocks_keep_language_and_newlines() {
        let text = "see:\nfn main() {\n  x < y\n}";
        let entities = [MessageEntity::pre(Some("rust".to_owned()), 5, 21)];
        assert_eq!(
            formatted(text, &entities),
            "see:<pre><code class=\"language-rust\">fn main() {\n  x &lt; y\n}</code></pre>"
        );
        let entities = [MessageEntity::pre(None, 5, 21)];
        assert_eq!(
            formatted(text, &entities),
            "see:<pre><code>fn main() {\n  x &lt; y\n}</code></pre>"
        );
        let entities = [MessageEntity::pre(Some("\"><script>".to_owned()), 5, 21)];
        assert!(formatted(text, &entities).starts_with("see:<pre><code>fn"));
    }

    #[test]
    fn links_and_urls_become_anchors() {
        let text = "docs and https://e.example/x?a=1&b=2";
        let entities = [
            MessageEntity::text_link(url("https://docs.example/\"q\""), 0, 4),
            MessageEntity::new(MessageEntityKind::Url, 9, 27),
        ];
        assert_eq!(
            formatted(text, &entities),
            r#"<a href="https://docs.example/%22q%22">docs</a> and <a href="https://e.example/x?a=1&amp;b=2">https://e.example/x?a=1&amp;b=2</a>"#
        );
    }

    #[test]
    fn javascript_and_tg_links_do_not_become_matrix_links() {
        let text = "click me";
        for href in ["javascript:alert(1)", "tg://user?id=42", "data:text/html,x"] {
            let entities = [MessageEntity::text_link(url(href), 0, 8)];
            assert_eq!(
                telegram_to_matrix(text, &entities),
                (text.to_owned(), None),
                "{href}"
            );
        }
        let entities = [
            MessageEntity::text_link(url("javascript:alert(1)"), 0, 5),
            MessageEntity::bold(6, 2),
        ];
        assert_eq!(formatted(text, &entities), "click <strong>me</strong>");
    }

    #[test]
    fn markup_in_telegram_text_is_escaped() {
        let text = "<script>alert('x')</script> & <img src=x onerror=alert(1)>";
        let entities = [MessageEntity::bold(0, 27)];
        assert_eq!(
            formatted(text, &entities),
            "<strong>&lt;script&gt;alert('x')&lt;/script&gt;</strong> &amp; &lt;img src=x onerror=alert(1)&gt;"
        );
    }

    #[test]
    fn utf16_offsets_after_emoji_and_cjk_land_on_the_right_characters() {
        // 😀 is 2 UTF-16 units (4 bytes), 你好 are 1 unit each (3 bytes each).
        let text = "😀你好 bold 👍🏽 it";
        let entities = [
            MessageEntity::bold(5, 4),
            MessageEntity::italic(10, 4),
            MessageEntity::underline(15, 2),
        ];
        assert_eq!(
            formatted(text, &entities),
            "😀你好 <strong>bold</strong> <em>👍🏽</em> <u>it</u>"
        );
    }

    #[test]
    fn newlines_outside_code_blocks_become_line_breaks() {
        let text = "line one\nline two\n\nquote\nmore";
        let entities = [
            MessageEntity::bold(0, 4),
            MessageEntity::new(MessageEntityKind::Blockquote, 19, 10),
        ];
        assert_eq!(
            formatted(text, &entities),
            "<strong>line</strong> one<br>line two<br><blockquote>quote<br>more</blockquote>"
        );
        let entities = [MessageEntity::new(
            MessageEntityKind::ExpandableBlockquote,
            0,
            8,
        )];
        assert_eq!(
            formatted(text, &entities),
            "<blockquote>line one</blockquote>line two<br><br>quote<br>more"
        );
    }

    #[test]
    fn nested_entities_nest_in_html() {
        // Telegram sends `<b>bold <i>both</i> bold</b>` as two bold pieces around italic,
        // or as one bold entity containing italic; both must come out nested.
        let text = "bold both bold";
        let one = [MessageEntity::bold(0, 14), MessageEntity::italic(5, 4)];
        assert_eq!(
            formatted(text, &one),
            "<strong>bold <em>both</em> bold</strong>"
        );
        // Same range: any order is well formed; code goes innermost, the rest keep their order.
        let same_range = [
            MessageEntity::code(0, 14),
            MessageEntity::italic(0, 14),
            MessageEntity::bold(0, 14),
        ];
        assert_eq!(
            formatted(text, &same_range),
            "<em><strong><code>bold both bold</code></strong></em>"
        );
        let in_link = [
            MessageEntity::text_link(url("https://e.example/"), 0, 14),
            MessageEntity::bold(5, 4),
        ];
        assert_eq!(
            formatted(text, &in_link),
            r#"<a href="https://e.example/">bold <strong>both</strong> bold</a>"#
        );
    }

    #[test]
    fn overlapping_entities_produce_well_formed_html() {
        let text = "abcdefgh";
        let entities = [MessageEntity::bold(0, 5), MessageEntity::italic(3, 5)];
        assert_eq!(
            formatted(text, &entities),
            "<strong>abc<em>de</em></strong><em>fgh</em>"
        );
        let entities = [
            MessageEntity::bold(0, 4),
            MessageEntity::italic(2, 4),
            MessageEntity::underline(1, 6),
            MessageEntity::strikethrough(5, 3),
        ];
        let html = formatted(text, &entities);
        assert_eq!(
            html,
            "<strong>a<u>b<em>cd</em></u></strong><u><em>e<del>f</del></em><del>g</del></u><del>h</del>"
        );
    }

    #[test]
    fn out_of_range_offsets_are_clamped_not_trusted() {
        let text = "😀ab";
        let entities = [
            MessageEntity::bold(1, 2),     // starts inside the surrogate pair
            MessageEntity::italic(3, 100), // runs past the end
            MessageEntity::code(50, 5),    // entirely outside
            MessageEntity::underline(usize::MAX, usize::MAX),
        ];
        assert_eq!(formatted(text, &entities), "😀<strong>a</strong><em>b</em>");
    }

    // -----------------------------------------------------------------------------------
    // Round trips
    // -----------------------------------------------------------------------------------

    /// Matrix HTML → Telegram HTML → (what Telegram parses it into) → Matrix HTML.
    fn round_trip(html: &str) -> String {
        let telegram = to_telegram(html);
        let (text, entities) = parse_telegram_html(&telegram);
        formatted(&text, &entities)
    }

    #[test]
    fn round_trip_keeps_bold_italic_code_pre_and_links() {
        let html = concat!(
            "<p><strong>Bold</strong>, <em>italic</em>, <code>x &lt; y</code> and ",
            r#"<a href="https://example.org/path?q=1&amp;r=2">a link</a>.</p>"#,
            "<pre><code class=\"language-python\">def f():\n    return 1\n</code></pre>",
            "<p><u>u</u> <del>s</del> <span data-mx-spoiler>sp</span></p>",
        );
        assert_eq!(
            round_trip(html),
            concat!(
                "<strong>Bold</strong>, <em>italic</em>, <code>x &lt; y</code> and ",
                r#"<a href="https://example.org/path?q=1&amp;r=2">a link</a>.<br>"#,
                "<pre><code class=\"language-python\">def f():\n    return 1</code></pre><br>",
                "<u>u</u> <del>s</del> <span data-mx-spoiler>sp</span>",
            )
        );
    }

    #[test]
    fn round_trip_keeps_nesting_and_offsets_after_astral_characters() {
        let html = "😀 你好 <b>bold <i>both 👍</i></b> <blockquote>q <b>b</b></blockquote>";
        assert_eq!(
            round_trip(html),
            "😀 你好 <strong>bold <em>both 👍</em></strong><br><blockquote>q <strong>b</strong></blockquote>"
        );
    }

    #[test]
    fn round_trip_from_telegram_side_is_stable() {
        // Telegram entities → Matrix HTML → Telegram HTML → entities: the same entities.
        let text = "😀 bold code\nblock\nlink";
        let entities = vec![
            MessageEntity::bold(3, 4),
            MessageEntity::code(8, 4),
            MessageEntity::pre(Some("sh".to_owned()), 13, 5),
            MessageEntity::text_link(url("https://e.example/"), 19, 4),
        ];
        let (body, html) = telegram_to_matrix(text, &entities);
        let back = matrix_to_telegram_html(&body, html.as_deref());
        assert_eq!(back.len(), 1);
        let (text_back, mut entities_back) = parse_telegram_html(&back[0]);
        // The pre block is its own paragraph on the Matrix side, so it gains blank lines.
        assert_eq!(text_back, "😀 bold code\n\nblock\n\nlink");
        entities_back.sort_by_key(|e| e.offset);
        assert_eq!(
            entities_back,
            vec![
                MessageEntity::bold(3, 4),
                MessageEntity::code(8, 4),
                MessageEntity::pre(Some("sh".to_owned()), 14, 5),
                MessageEntity::text_link(url("https://e.example/"), 21, 4),
            ]
        );
    }

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
            let styled = styled_from_matrix_html(&html).trimmed();
            let whole = render_html(&styled, Flavour::Telegram);
            let (plain, _) = parse_telegram_html(&whole);
            assert_eq!(plain, styled.text, "for {html:?}");
            for max in [7, 23, 64] {
                let chunks: Vec<String> = split_styled(&styled, max)
                    .iter()
                    .map(|chunk| render_html(chunk, Flavour::Telegram))
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
    // Plain length and tokenizer
    // -----------------------------------------------------------------------------------

    #[test]
    fn plain_len_counts_utf16_units_of_the_displayed_text() {
        assert_eq!(
            telegram_html_plain_len("<b>bold</b> &lt;&gt;&amp;&quot;"),
            9
        );
        assert_eq!(
            telegram_html_plain_len("<a href=\"https://e.example/\">😀</a>"),
            2
        );
        assert_eq!(telegram_html_plain_len("&#128512;&#x4F60;"), 3);
        assert_eq!(
            telegram_html_plain_len("<pre><code class=\"language-rust\">a\nb</code></pre>"),
            3
        );
        assert_eq!(telegram_html_plain_len(""), 0);
    }

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
